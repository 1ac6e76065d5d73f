//! Request bodies in the Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which `kubectl create secret|configmap|namespace` sends for the built-in kinds and never
//! retries as JSON. The body is the magic `k8s\0` and a `runtime.Unknown` envelope
//! (`typeMeta`, `raw`), `raw` holding the object's own message as `k8s.io/api`'s
//! `generated.proto` defines it. Secrets, ConfigMaps and Namespaces are decoded into the JSON
//! the rest of the server takes; unknown fields are skipped, as protobuf readers do. Answers
//! are JSON, which those clients accept too.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::status::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf request body does not decode: {what}"))
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or_else(|| bad("a varint runs past the end"))?;
            self.at += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(bad("a varint is longer than 10 bytes"))
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ApiError> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| bad("a length does not fit"))?;
                let start = self.at;
                self.skip(len)?;
                Field::Bytes(&self.data[start..self.at])
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            other => return Err(bad(&format!("wire type {other} is not supported"))),
        };
        Ok(Some((tag >> 3, field)))
    }

    fn skip(&mut self, n: usize) -> Result<(), ApiError> {
        let end =
            self.at.checked_add(n).filter(|e| *e <= self.data.len()).ok_or_else(|| bad("a field runs past the end"))?;
        self.at = end;
        Ok(())
    }
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// A `map<string, string|bytes>` entry: key 1, value 2.
fn entry(b: &[u8], bytes: bool) -> Result<(String, Value), ApiError> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) if bytes => value = Value::String(STANDARD.encode(v)),
            (2, Field::Bytes(v)) => value = Value::String(text(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(map: &mut Value, field: &str, b: &[u8], bytes: bool) -> Result<(), ApiError> {
    let (k, v) = entry(b, bytes)?;
    if !map.get(field).is_some_and(Value::is_object) {
        map[field] = Value::Object(Map::new());
    }
    map[field][k] = v;
    Ok(())
}

fn push(map: &mut Value, field: &str, v: Value) {
    match map.get_mut(field).and_then(Value::as_array_mut) {
        Some(a) => a.push(v),
        None => map[field] = json!([v]),
    }
}

fn owner_reference(b: &[u8]) -> Result<Value, ApiError> {
    let mut o = json!({});
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(v)) => o["kind"] = json!(text(v)?),
            (3, Field::Bytes(v)) => o["name"] = json!(text(v)?),
            (4, Field::Bytes(v)) => o["uid"] = json!(text(v)?),
            (5, Field::Bytes(v)) => o["apiVersion"] = json!(text(v)?),
            (6, Field::Varint(v)) => o["controller"] = json!(v != 0),
            (7, Field::Varint(v)) => o["blockOwnerDeletion"] = json!(v != 0),
            _ => {}
        }
    }
    Ok(o)
}

/// `ObjectMeta`: what a client may set (the server sets uid, timestamps and generation).
fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut m = json!({});
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next()? {
        // Go's empty strings are sent as empty fields: they mean "not set".
        match (n, f) {
            (_, Field::Bytes([])) => {}
            (1, Field::Bytes(v)) => m["name"] = json!(text(v)?),
            (2, Field::Bytes(v)) => m["generateName"] = json!(text(v)?),
            (3, Field::Bytes(v)) => m["namespace"] = json!(text(v)?),
            (6, Field::Bytes(v)) => m["resourceVersion"] = json!(text(v)?),
            (11, Field::Bytes(v)) => insert_entry(&mut m, "labels", v, false)?,
            (12, Field::Bytes(v)) => insert_entry(&mut m, "annotations", v, false)?,
            (13, Field::Bytes(v)) => push(&mut m, "ownerReferences", owner_reference(v)?),
            (14, Field::Bytes(v)) => push(&mut m, "finalizers", json!(text(v)?)),
            _ => {}
        }
    }
    Ok(m)
}

/// Decodes a protobuf body for `res` into its JSON form.
pub fn decode(res: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with the k8s magic bytes"))?;
    let mut raw = None;
    let mut r = Reader::new(unknown);
    while let Some((n, f)) = r.next()? {
        if let (2, Field::Bytes(v)) = (n, f) {
            raw = Some(v);
        }
    }
    let raw = raw.ok_or_else(|| bad("the envelope holds no object"))?;
    let mut o = json!({"apiVersion": res.api_version(), "kind": res.kind});
    let mut r = Reader::new(raw);
    match (res.group, res.plural) {
        ("", "secrets") => {
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(v)) => o["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => insert_entry(&mut o, "data", v, true)?,
                    (3, Field::Bytes(v)) if !v.is_empty() => o["type"] = json!(text(v)?),
                    (4, Field::Bytes(v)) => insert_entry(&mut o, "stringData", v, false)?,
                    (5, Field::Varint(v)) => o["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
        }
        ("", "configmaps") => {
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(v)) => o["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => insert_entry(&mut o, "data", v, false)?,
                    (3, Field::Bytes(v)) => insert_entry(&mut o, "binaryData", v, true)?,
                    (4, Field::Varint(v)) => o["immutable"] = json!(v != 0),
                    _ => {}
                }
            }
        }
        ("", "namespaces") => {
            while let Some((n, f)) = r.next()? {
                match (n, f) {
                    (1, Field::Bytes(v)) => o["metadata"] = object_meta(v)?,
                    (2, Field::Bytes(v)) => {
                        let mut spec = json!({});
                        let mut s = Reader::new(v);
                        while let Some((n, f)) = s.next()? {
                            if let (1, Field::Bytes(v)) = (n, f) {
                                push(&mut spec, "finalizers", json!(text(v)?));
                            }
                        }
                        o["spec"] = spec;
                    }
                    _ => {}
                }
            }
        }
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "{MEDIA_TYPE} is accepted for secrets, configmaps and namespaces; send {} as JSON or YAML",
                res.qualified()
            )));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    #[test]
    fn a_secret_as_kubectl_create_sends_it_decodes_to_its_json() {
        let meta = [field(1, b"api"), field(3, b"team"), field(8, &[])].concat();
        let secret = [
            field(1, &meta),
            field(2, &entry("key", &[0, 255, b'x'])),
            field(3, b"Opaque"),
            field(4, &entry("plain", b"text")),
            vec![5 << 3, 1],
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret)].concat();
        let r = Resource::find("", "v1", "secrets").unwrap();
        let v = decode(r, &body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api", "namespace": "team"},
                   "data": {"key": "AP94"}, "type": "Opaque", "stringData": {"plain": "text"}, "immutable": true})
        );
        assert!(decode(r, &body[..body.len() - 3]).is_err());
        assert!(decode(r, b"{}").is_err());
    }
}
