//! One stored object version as the store holds it: its JSON exactly as served, and the
//! fields reads select on, extracted once when it was written.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::{Error, ObjectKey, Result};

/// The serialised JSON every stored version starts with; the resourceVersion digits follow.
pub(super) const RV_PREFIX: &[u8] = br#"{"metadata":{"resourceVersion":""#;

/// One version of one object: its JSON exactly as served and persisted, and the fields reads
/// select on, extracted once when it was written.
///
/// The JSON always starts with `{"metadata":{"resourceVersion":"N"`, so a new version of the
/// same content (a delete's last state) is the prefix, new digits and the unchanged tail.
#[derive(Debug)]
pub struct Stored {
    pub key: ObjectKey,
    pub resource_version: u64,
    pub(super) bytes: Bytes,
    /// Where the bytes after the resourceVersion digits start.
    pub(super) tail: usize,
    labels: Vec<(String, String)>,
    /// Every selectable field path of the resource with its value ("" when absent).
    fields: Vec<(&'static str, String)>,
    /// The uids in `metadata.ownerReferences`.
    owners: Vec<String>,
    /// What the log and the database hold instead of `bytes` for a sealed resource: the
    /// object encrypted ([`crate::apiserver::seal`]).
    pub(super) sealed: Option<Bytes>,
}

impl Stored {
    /// The bytes the log and the database take: sealed when the resource is.
    pub(super) fn durable(&self) -> &[u8] {
        self.sealed.as_deref().unwrap_or(&self.bytes)
    }

    /// The object as JSON.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The object parsed (for the verbs that change it or render it as a table).
    pub fn value(&self) -> serde_json::Result<Value> {
        serde_json::from_slice(&self.bytes)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of a selectable field ("" when the object has none or the path is not
    /// selectable on this resource).
    pub fn field(&self, path: &str) -> &str {
        match path {
            "metadata.name" => &self.key.name,
            "metadata.namespace" => &self.key.namespace,
            _ => self.fields.iter().find(|(p, _)| *p == path).map_or("", |(_, v)| v.as_str()),
        }
    }

    /// Whether `metadata.ownerReferences` names `uid`.
    pub fn owned_by(&self, uid: &str) -> bool {
        self.owners.iter().any(|o| o == uid)
    }

    pub(super) fn assemble(key: ObjectKey, version: u64, encoded: Encoded) -> Stored {
        let digits = version.to_string();
        let mut bytes = BytesMut::with_capacity(RV_PREFIX.len() + digits.len() + encoded.rest.len());
        bytes.put_slice(RV_PREFIX);
        bytes.put_slice(digits.as_bytes());
        bytes.put_slice(&encoded.rest);
        Stored {
            key,
            resource_version: version,
            bytes: bytes.freeze(),
            tail: RV_PREFIX.len() + digits.len(),
            labels: encoded.labels,
            fields: encoded.fields,
            owners: encoded.owners,
            sealed: None,
        }
    }

    /// The same object at another resourceVersion.
    pub fn at_version(&self, version: u64) -> Stored {
        let digits = version.to_string();
        let rest = &self.bytes[self.tail..];
        let mut bytes = BytesMut::with_capacity(RV_PREFIX.len() + digits.len() + rest.len());
        bytes.put_slice(RV_PREFIX);
        bytes.put_slice(digits.as_bytes());
        bytes.put_slice(rest);
        Stored {
            key: self.key.clone(),
            resource_version: version,
            bytes: bytes.freeze(),
            tail: RV_PREFIX.len() + digits.len(),
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            owners: self.owners.clone(),
            sealed: None,
        }
    }
}

/// An object serialised without its resourceVersion (done by the caller's task, so the
/// single writer thread only splices in the version), with its selection fields.
#[derive(Debug)]
pub(super) struct Encoded {
    /// Everything after the resourceVersion digits: `"` then the rest of metadata, `}`, the
    /// other top-level fields and the closing `}`.
    pub(super) rest: Vec<u8>,
    labels: Vec<(String, String)>,
    fields: Vec<(&'static str, String)>,
    owners: Vec<String>,
}

impl Encoded {
    pub(super) fn new(key: &ObjectKey, object: &Value) -> Result<Encoded> {
        let not_object = || Error::NotAnObject { key: key.to_string() };
        let map = object.as_object().ok_or_else(not_object)?;
        let meta = match map.get("metadata") {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(not_object()),
        };
        let mut rest = Vec::with_capacity(512);
        rest.push(b'"');
        // Writing a JSON value into a Vec cannot fail: every map key is a string.
        let field = |out: &mut Vec<u8>, k: &String, v: &Value| {
            out.push(b',');
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, v);
        };
        for (k, v) in meta.into_iter().flatten() {
            if k != "resourceVersion" {
                field(&mut rest, k, v);
            }
        }
        rest.push(b'}');
        for (k, v) in map {
            if k != "metadata" {
                field(&mut rest, k, v);
            }
        }
        rest.push(b'}');
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        let fields = crate::apiserver::resources::selectable_fields_of(&key.resource)
            .iter()
            .filter(|p| !matches!(**p, "metadata.name" | "metadata.namespace"))
            .map(|p| (*p, crate::apiserver::selector::field_string(object, p)))
            .collect();
        let owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|refs| refs.iter().filter_map(|r| Some(r.get("uid")?.as_str()?.to_string())).collect())
            .unwrap_or_default();
        Ok(Encoded { rest, labels, fields, owners })
    }
}
