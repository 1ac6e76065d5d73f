//! The few protobuf messages of `k8s.io/apimachinery` and `k8s.io/api` that clients send to
//! the computed APIs: the `DeleteOptions` helm's storage sends with each delete and the
//! access reviews `kubectl auth` sends. Read from the wire format directly (field numbers as in
//! the `generated.proto` files), turned into the JSON the rest of the server reads.

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// What every protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// One field's payload.
#[derive(Debug)]
pub enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf request body does not decode: {what}"))
}

fn varint(data: &[u8], at: &mut usize) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at).ok_or_else(|| bad("a varint runs past the end"))?;
        *at += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad("a varint is longer than 10 bytes"))
}

/// The fields of one message, in order.
pub fn fields(data: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let tag = varint(data, &mut at)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(data, &mut at)?),
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                if at + n > data.len() {
                    return Err(bad("a fixed-width field runs past the end"));
                }
                at += n;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(varint(data, &mut at)?).map_err(|_| bad("a length does not fit"))?;
                let end =
                    at.checked_add(n).filter(|e| *e <= data.len()).ok_or_else(|| bad("a field runs past the end"))?;
                let b = &data[at..end];
                at = end;
                Wire::Bytes(b)
            }
            other => return Err(bad(&format!("wire type {other} is not supported"))),
        };
        out.push((tag >> 3, wire));
    }
    Ok(out)
}

/// The object's own message out of the `k8s\0` + `runtime.Unknown` envelope.
pub fn unwrap(body: &[u8]) -> Result<&[u8], ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with k8s\\0"))?;
    for (n, w) in fields(rest)? {
        if let (2, Wire::Bytes(raw)) = (n, w) {
            return Ok(raw);
        }
    }
    Ok(&[])
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// A message whose fields are all strings (or nested messages read by `nested`), as a JSON
/// map keyed by the names given for each field number.
fn strings(msg: &[u8], names: &[(u64, &str)]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (n, w) in fields(msg)? {
        if let (Some((_, name)), Wire::Bytes(b)) = (names.iter().find(|(k, _)| *k == n), w) {
            out.insert((*name).to_string(), json!(text(b)?));
        }
    }
    Ok(out)
}

/// `DeleteOptions` (apimachinery `meta/v1`): gracePeriodSeconds 1, preconditions 2 (uid 1,
/// resourceVersion 2), orphanDependents 3, propagationPolicy 4, dryRun 5.
pub fn delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let msg = unwrap(body)?;
    let mut out = Map::new();
    for (n, w) in fields(msg)? {
        match (n, w) {
            (1, Wire::Varint(v)) => {
                out.insert("gracePeriodSeconds".into(), json!(v as i64));
            }
            (2, Wire::Bytes(b)) => {
                out.insert("preconditions".into(), Value::Object(strings(b, &[(1, "uid"), (2, "resourceVersion")])?));
            }
            (3, Wire::Varint(v)) => {
                out.insert("orphanDependents".into(), json!(v != 0));
            }
            (4, Wire::Bytes(b)) => {
                out.insert("propagationPolicy".into(), json!(text(b)?));
            }
            (5, Wire::Bytes(b)) => {
                let list = out.entry("dryRun").or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text(b)?));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

/// The `spec` of a `SelfSubjectAccessReview` (authorization `v1`): resourceAttributes 1
/// (namespace 1, verb 2, group 3, version 4, resource 5, subresource 6, name 7),
/// nonResourceAttributes 2 (path 1, verb 2).
pub fn access_review_spec(body: &[u8]) -> Result<Value, ApiError> {
    let mut spec = Map::new();
    for (n, w) in fields(unwrap(body)?)? {
        let (2, Wire::Bytes(s)) = (n, w) else { continue };
        for (n, w) in fields(s)? {
            match (n, w) {
                (1, Wire::Bytes(b)) => {
                    let names = [
                        (1, "namespace"),
                        (2, "verb"),
                        (3, "group"),
                        (4, "version"),
                        (5, "resource"),
                        (6, "subresource"),
                        (7, "name"),
                    ];
                    spec.insert("resourceAttributes".into(), Value::Object(strings(b, &names)?));
                }
                (2, Wire::Bytes(b)) => {
                    spec.insert(
                        "nonResourceAttributes".into(),
                        Value::Object(strings(b, &[(1, "path"), (2, "verb")])?),
                    );
                }
                _ => {}
            }
        }
    }
    Ok(Value::Object(spec))
}

/// The `spec` of a `SelfSubjectRulesReview`: namespace 1.
pub fn rules_review_spec(body: &[u8]) -> Result<Value, ApiError> {
    let mut spec = Map::new();
    for (n, w) in fields(unwrap(body)?)? {
        if let (2, Wire::Bytes(s)) = (n, w) {
            spec = strings(s, &[(1, "namespace")])?;
        }
    }
    Ok(Value::Object(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(raw: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(field(2, raw));
        out
    }

    #[test]
    fn delete_options_as_helm_sends_them_read_as_their_json() {
        let mut msg = field(4, b"Background");
        msg.extend([1 << 3, 0]);
        msg.extend(field(5, b"All"));
        let v = delete_options(&envelope(&msg)).unwrap();
        assert_eq!(v, json!({"propagationPolicy": "Background", "gracePeriodSeconds": 0, "dryRun": ["All"]}));
    }

    #[test]
    fn an_access_review_reads_its_resource_attributes() {
        let mut attrs = field(2, b"create");
        attrs.extend(field(3, b"a2a.dev"));
        attrs.extend(field(5, b"agents"));
        let v = access_review_spec(&envelope(&field(2, &field(1, &attrs)))).unwrap();
        assert_eq!(v, json!({"resourceAttributes": {"verb": "create", "group": "a2a.dev", "resource": "agents"}}));
        assert_eq!(access_review_spec(b"k8s\0\x12\x05ab").unwrap_err().code, 400);
    }
}
