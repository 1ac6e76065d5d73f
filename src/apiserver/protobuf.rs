//! The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`) of the built-in
//! kinds served: Namespaces, ConfigMaps, Secrets, Events (core and `events.k8s.io`), Leases,
//! their Lists, `Status` (errors) and `DeleteOptions`, both ways; and the access reviews
//! `kubectl auth` sends, read.
//!
//! client-go's typed clients (`kubectl create namespace|configmap|secret`, Helm's release
//! storage, leader election) send these kinds as protobuf and prefer protobuf answers. A body
//! is the magic `k8s\0` and a `runtime.Unknown` envelope (`typeMeta`, `raw`,
//! `contentEncoding`, `contentType`), `raw` holding the object's own message as
//! `k8s.io/api`'s `generated.proto` defines it. A watch in protobuf
//! (`;stream=watch`) is a sequence of frames, each a 4-byte big-endian length and a
//! `WatchEvent` message (no magic, no envelope), whose `object.raw` is an enveloped object.
//!
//! The codec is hand-written and driven by tables of fields (number, JSON name, type) copied
//! from the `generated.proto` files, rather than prost messages: the rest of the server holds
//! objects as JSON, so a prost struct would need a conversion from and to JSON per message
//! on top of its own code, where a table gives both directions from one description, and the
//! round-trip test walks every entry. kube-rs's `k8s-pb` describes itself as not ready.
//!
//! Go writes its zero values as fields; reading, a zero string, number or bool is "not set"
//! (omitted from the JSON, as Go's `omitempty` would), except for fields Go holds as pointers
//! (`immutable`, a Lease's spec...), where a zero is a value. Unknown fields are skipped, as
//! protobuf readers do. The a2a kinds are custom resources, which Kubernetes serves as JSON
//! only: a protobuf body for them is refused with the kube-apiserver's 415.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::status::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// What every protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// The type of one field.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    I32,
    I64,
    Bool,
    /// `metav1.Time`: `{seconds, nanos}`; RFC 3339 in whole seconds in JSON.
    Time,
    /// `metav1.MicroTime`: the same message; six fractional digits in JSON.
    MicroTime,
    Msg(&'static [F]),
    /// `map<string, string>` (or `bytes` values, base64 in JSON).
    Map {
        bytes: bool,
    },
    /// `metav1.FieldsV1`: `{raw}` holding the JSON of a field set.
    FieldsV1,
}

/// One field of a message.
struct F {
    n: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// Held by Go as a pointer: a zero value is a value.
    ptr: bool,
}

const fn f(n: u64, name: &'static str, ty: Ty) -> F {
    F { n, name, ty, repeated: false, ptr: false }
}
const fn rep(n: u64, name: &'static str, ty: Ty) -> F {
    F { n, name, ty, repeated: true, ptr: false }
}
const fn ptr(n: u64, name: &'static str, ty: Ty) -> F {
    F { n, name, ty, repeated: false, ptr: true }
}

use Ty::{Bool, FieldsV1, I32, I64, MicroTime, Msg, Str, Time};

const OWNER_REFERENCE: &[F] = &[
    f(1, "kind", Str),
    f(3, "name", Str),
    f(4, "uid", Str),
    f(5, "apiVersion", Str),
    ptr(6, "controller", Bool),
    ptr(7, "blockOwnerDeletion", Bool),
];
const MANAGED_FIELDS_ENTRY: &[F] = &[
    f(1, "manager", Str),
    f(2, "operation", Str),
    f(3, "apiVersion", Str),
    f(4, "time", Time),
    f(6, "fieldsType", Str),
    f(7, "fieldsV1", FieldsV1),
    f(8, "subresource", Str),
];
const OBJECT_META: &[F] = &[
    f(1, "name", Str),
    f(2, "generateName", Str),
    f(3, "namespace", Str),
    f(4, "selfLink", Str),
    f(5, "uid", Str),
    f(6, "resourceVersion", Str),
    f(7, "generation", I64),
    f(8, "creationTimestamp", Time),
    f(9, "deletionTimestamp", Time),
    ptr(10, "deletionGracePeriodSeconds", I64),
    f(11, "labels", Ty::Map { bytes: false }),
    f(12, "annotations", Ty::Map { bytes: false }),
    rep(13, "ownerReferences", Msg(OWNER_REFERENCE)),
    rep(14, "finalizers", Str),
    rep(17, "managedFields", Msg(MANAGED_FIELDS_ENTRY)),
];
const LIST_META: &[F] =
    &[f(1, "selfLink", Str), f(2, "resourceVersion", Str), f(3, "continue", Str), ptr(4, "remainingItemCount", I64)];
const OBJECT_REFERENCE: &[F] = &[
    f(1, "kind", Str),
    f(2, "namespace", Str),
    f(3, "name", Str),
    f(4, "uid", Str),
    f(5, "apiVersion", Str),
    f(6, "resourceVersion", Str),
    f(7, "fieldPath", Str),
];
const EVENT_SOURCE: &[F] = &[f(1, "component", Str), f(2, "host", Str)];
const EVENT_SERIES: &[F] = &[f(1, "count", I32), f(2, "lastObservedTime", MicroTime)];
const EVENT: &[F] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    f(2, "involvedObject", Msg(OBJECT_REFERENCE)),
    f(3, "reason", Str),
    f(4, "message", Str),
    f(5, "source", Msg(EVENT_SOURCE)),
    f(6, "firstTimestamp", Time),
    f(7, "lastTimestamp", Time),
    f(8, "count", I32),
    f(9, "type", Str),
    f(10, "eventTime", MicroTime),
    f(11, "series", Msg(EVENT_SERIES)),
    f(12, "action", Str),
    f(13, "related", Msg(OBJECT_REFERENCE)),
    f(14, "reportingComponent", Str),
    f(15, "reportingInstance", Str),
];
const EVENT_V1: &[F] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    f(2, "eventTime", MicroTime),
    f(3, "series", Msg(EVENT_SERIES)),
    f(4, "reportingController", Str),
    f(5, "reportingInstance", Str),
    f(6, "action", Str),
    f(7, "reason", Str),
    f(8, "regarding", Msg(OBJECT_REFERENCE)),
    f(9, "related", Msg(OBJECT_REFERENCE)),
    f(10, "note", Str),
    f(11, "type", Str),
    f(12, "deprecatedSource", Msg(EVENT_SOURCE)),
    f(13, "deprecatedFirstTimestamp", Time),
    f(14, "deprecatedLastTimestamp", Time),
    f(15, "deprecatedCount", I32),
];
const NAMESPACE_CONDITION: &[F] = &[
    f(1, "type", Str),
    f(2, "status", Str),
    f(4, "lastTransitionTime", Time),
    f(5, "reason", Str),
    f(6, "message", Str),
];
const NAMESPACE_SPEC: &[F] = &[rep(1, "finalizers", Str)];
const NAMESPACE_STATUS: &[F] = &[f(1, "phase", Str), rep(2, "conditions", Msg(NAMESPACE_CONDITION))];
const NAMESPACE: &[F] =
    &[f(1, "metadata", Msg(OBJECT_META)), f(2, "spec", Msg(NAMESPACE_SPEC)), f(3, "status", Msg(NAMESPACE_STATUS))];
const CONFIG_MAP: &[F] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    f(2, "data", Ty::Map { bytes: false }),
    f(3, "binaryData", Ty::Map { bytes: true }),
    ptr(4, "immutable", Bool),
];
const SECRET: &[F] = &[
    f(1, "metadata", Msg(OBJECT_META)),
    f(2, "data", Ty::Map { bytes: true }),
    f(3, "type", Str),
    f(4, "stringData", Ty::Map { bytes: false }),
    ptr(5, "immutable", Bool),
];
const LEASE_SPEC: &[F] = &[
    ptr(1, "holderIdentity", Str),
    ptr(2, "leaseDurationSeconds", I32),
    f(3, "acquireTime", MicroTime),
    f(4, "renewTime", MicroTime),
    ptr(5, "leaseTransitions", I32),
    ptr(6, "strategy", Str),
    ptr(7, "preferredHolder", Str),
];
const LEASE: &[F] = &[f(1, "metadata", Msg(OBJECT_META)), f(2, "spec", Msg(LEASE_SPEC))];
const STATUS_CAUSE: &[F] = &[f(1, "reason", Str), f(2, "message", Str), f(3, "field", Str)];
const STATUS_DETAILS: &[F] = &[
    f(1, "name", Str),
    f(2, "group", Str),
    f(3, "kind", Str),
    rep(4, "causes", Msg(STATUS_CAUSE)),
    f(5, "retryAfterSeconds", I32),
    f(6, "uid", Str),
];
const STATUS: &[F] = &[
    f(1, "metadata", Msg(LIST_META)),
    f(2, "status", Str),
    f(3, "message", Str),
    f(4, "reason", Str),
    f(5, "details", Msg(STATUS_DETAILS)),
    f(6, "code", I32),
];
const PRECONDITIONS: &[F] = &[ptr(1, "uid", Str), ptr(2, "resourceVersion", Str)];
const DELETE_OPTIONS: &[F] = &[
    ptr(1, "gracePeriodSeconds", I64),
    f(2, "preconditions", Msg(PRECONDITIONS)),
    ptr(3, "orphanDependents", Bool),
    ptr(4, "propagationPolicy", Str),
    rep(5, "dryRun", Str),
    ptr(6, "ignoreStoreReadErrorWithClusterBreakingPotential", Bool),
];

const RESOURCE_ATTRIBUTES: &[F] = &[
    f(1, "namespace", Str),
    f(2, "verb", Str),
    f(3, "group", Str),
    f(4, "version", Str),
    f(5, "resource", Str),
    f(6, "subresource", Str),
    f(7, "name", Str),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[f(1, "path", Str), f(2, "verb", Str)];
const ACCESS_REVIEW_SPEC: &[F] = &[
    f(1, "resourceAttributes", Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Msg(NON_RESOURCE_ATTRIBUTES)),
];
const ACCESS_REVIEW: &[F] = &[f(1, "metadata", Msg(OBJECT_META)), f(2, "spec", Msg(ACCESS_REVIEW_SPEC))];
const RULES_REVIEW_SPEC: &[F] = &[f(1, "namespace", Str)];
const RULES_REVIEW: &[F] = &[f(1, "metadata", Msg(OBJECT_META)), f(2, "spec", Msg(RULES_REVIEW_SPEC))];
const SELF_REVIEW: &[F] = &[f(1, "metadata", Msg(OBJECT_META))];

/// A list kind's message: `metadata` (ListMeta) and `items`.
macro_rules! lists {
    ($($list:ident = $item:ident;)*) => {
        $(const $list: &[F] = &[f(1, "metadata", Msg(LIST_META)), rep(2, "items", Msg($item))];)*
    };
}
lists! {
    NAMESPACE_LIST = NAMESPACE;
    CONFIG_MAP_LIST = CONFIG_MAP;
    SECRET_LIST = SECRET;
    EVENT_LIST = EVENT;
    EVENT_V1_LIST = EVENT_V1;
    LEASE_LIST = LEASE;
}

/// The message of a kind served in protobuf, by apiVersion and kind.
fn message(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "NamespaceList") => NAMESPACE_LIST,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "ConfigMapList") => CONFIG_MAP_LIST,
        ("v1", "Secret") => SECRET,
        ("v1", "SecretList") => SECRET_LIST,
        ("v1", "Event") => EVENT,
        ("v1", "EventList") => EVENT_LIST,
        ("events.k8s.io/v1", "Event") => EVENT_V1,
        ("events.k8s.io/v1", "EventList") => EVENT_V1_LIST,
        ("coordination.k8s.io/v1", "Lease") => LEASE,
        ("coordination.k8s.io/v1", "LeaseList") => LEASE_LIST,
        ("v1", "Status") => STATUS,
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => DELETE_OPTIONS,
        // Requests only: the access reviews `kubectl auth` sends (answered in JSON).
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => RULES_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_REVIEW,
        _ => return None,
    })
}

/// Whether `res` is served in protobuf (the built-in kinds).
pub fn serves(res: &Resource) -> bool {
    message(&res.api_version(), res.kind).is_some()
}

// ---------------------------------------------------------------------------------------
// Reading

/// One field as read: its number and its payload.
enum Wire<'a> {
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

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ApiError> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| bad("a length does not fit"))?;
                let start = self.at;
                self.skip(len)?;
                Wire::Bytes(&self.data[start..self.at])
            }
            5 => {
                self.skip(4)?;
                Wire::Fixed
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

fn time_of(b: &[u8], micro: bool) -> Result<Option<String>, ApiError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut r = Reader::new(b);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Varint(v)) => seconds = v as i64,
            (2, Wire::Varint(v)) => nanos = i64::from(v as i32),
            _ => {}
        }
    }
    if seconds == 0 && nanos == 0 {
        return Ok(None); // Go's zero time
    }
    let t = jiff::Timestamp::new(seconds, nanos as i32).map_err(|e| bad(&format!("a time is out of range: {e}")))?;
    Ok(Some(format_time(t, micro)))
}

fn format_time(t: jiff::Timestamp, micro: bool) -> String {
    let format = if micro { "%Y-%m-%dT%H:%M:%S.%6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
    t.strftime(format).to_string()
}

/// Reads one message into its JSON form.
fn read_message(fields: &[F], b: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    let mut r = Reader::new(b);
    while let Some((n, w)) = r.next()? {
        let Some(field) = fields.iter().find(|f| f.n == n) else { continue };
        let value = match (field.ty, w) {
            (Str, Wire::Bytes(v)) => Value::String(text(v)?),
            (I32, Wire::Varint(v)) => json!(v as i32),
            (I64, Wire::Varint(v)) => json!(v as i64),
            (Bool, Wire::Varint(v)) => json!(v != 0),
            (Time, Wire::Bytes(v)) => time_of(v, false)?.map_or(Value::Null, Value::String),
            (MicroTime, Wire::Bytes(v)) => time_of(v, true)?.map_or(Value::Null, Value::String),
            (Msg(inner), Wire::Bytes(v)) => Value::Object(read_message(inner, v)?),
            (FieldsV1, Wire::Bytes(v)) => {
                let mut raw: &[u8] = &[];
                let mut r = Reader::new(v);
                while let Some((n, w)) = r.next()? {
                    if let (1, Wire::Bytes(x)) = (n, w) {
                        raw = x;
                    }
                }
                if raw.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(raw).map_err(|_| bad("a fieldsV1 is not JSON"))?
                }
            }
            (Ty::Map { bytes }, Wire::Bytes(v)) => {
                let (mut key, mut value) = (String::new(), Value::String(String::new()));
                let mut r = Reader::new(v);
                while let Some((n, w)) = r.next()? {
                    match (n, w) {
                        (1, Wire::Bytes(k)) => key = text(k)?,
                        (2, Wire::Bytes(v)) if bytes => value = Value::String(STANDARD.encode(v)),
                        (2, Wire::Bytes(v)) => value = Value::String(text(v)?),
                        _ => {}
                    }
                }
                if let Value::Object(m) = out.entry(field.name).or_insert_with(|| json!({})) {
                    m.insert(key, value);
                }
                continue;
            }
            _ => return Err(bad(&format!("field {n} ({}) has the wrong wire type", field.name))),
        };
        if field.repeated {
            if let Value::Array(a) = out.entry(field.name).or_insert_with(|| json!([])) {
                a.push(value);
            }
            continue;
        }
        let zero = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Number(n) => n.as_i64() == Some(0),
            Value::Bool(b) => !b,
            Value::Object(m) => m.is_empty() && field.name == "metadata",
            Value::Array(_) => false,
        };
        if zero && (!field.ptr || value.is_null()) {
            out.remove(field.name);
        } else {
            out.insert(field.name.to_string(), value);
        }
    }
    Ok(out)
}

/// The `runtime.Unknown` of a body: its typeMeta (apiVersion, kind) and raw message.
fn unwrap_envelope(body: &[u8]) -> Result<(String, String, &[u8]), ApiError> {
    let unknown = body.strip_prefix(MAGIC).ok_or_else(|| bad("it does not start with the k8s magic bytes"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    let mut r = Reader::new(unknown);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(v)) => {
                let mut t = Reader::new(v);
                while let Some((n, w)) = t.next()? {
                    match (n, w) {
                        (1, Wire::Bytes(v)) => api_version = text(v)?,
                        (2, Wire::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(v)) => raw = Some(v),
            _ => {}
        }
    }
    Ok((api_version, kind, raw.ok_or_else(|| bad("the envelope holds no object"))?))
}

/// Decodes a protobuf body for `res` into its JSON form.
pub fn decode(res: &Resource, body: &[u8]) -> Result<Value, ApiError> {
    let api_version = res.api_version();
    let Some(fields) = message(&api_version, res.kind) else {
        // What the kube-apiserver answers for custom resources.
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json, \
             application/yaml",
        ));
    };
    let (_, _, raw) = unwrap_envelope(body)?;
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(api_version));
    o.insert("kind".into(), json!(res.kind));
    o.extend(read_message(fields, raw)?);
    Ok(Value::Object(o))
}

/// Decodes a protobuf `DeleteOptions` body into the JSON the delete handlers read.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ApiError> {
    let (_, _, raw) = unwrap_envelope(body)?;
    let mut o = read_message(DELETE_OPTIONS, raw)?;
    o.insert("kind".into(), json!("DeleteOptions"));
    o.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    Ok(Value::Object(o))
}

// ---------------------------------------------------------------------------------------
// Writing

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, n: u64, wire: u64) {
    varint(out, n << 3 | wire);
}

fn bytes_field(out: &mut Vec<u8>, n: u64, b: &[u8]) {
    tag(out, n, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn time_message(s: &str, path: &str) -> Result<Vec<u8>, String> {
    let t = s.parse::<jiff::Timestamp>().map_err(|e| format!("{path}: {s:?} is not an RFC 3339 time: {e}"))?;
    let mut m = Vec::new();
    if t.as_second() != 0 {
        tag(&mut m, 1, 0);
        varint(&mut m, t.as_second() as u64);
    }
    if t.subsec_nanosecond() != 0 {
        tag(&mut m, 2, 0);
        varint(&mut m, t.subsec_nanosecond() as i64 as u64);
    }
    Ok(m)
}

fn write_value(out: &mut Vec<u8>, field: &F, v: &Value, path: &str) -> Result<(), String> {
    let wrong = || format!("{path}: {v} is not a valid {}", field.name);
    match field.ty {
        Str => bytes_field(out, field.n, v.as_str().ok_or_else(wrong)?.as_bytes()),
        I32 | I64 => {
            let n = v.as_i64().ok_or_else(wrong)?;
            tag(out, field.n, 0);
            varint(out, n as u64);
        }
        Bool => {
            tag(out, field.n, 0);
            varint(out, u64::from(v.as_bool().ok_or_else(wrong)?));
        }
        Time | MicroTime => bytes_field(out, field.n, &time_message(v.as_str().ok_or_else(wrong)?, path)?),
        Msg(inner) => {
            let mut m = Vec::new();
            write_message(&mut m, inner, v.as_object().ok_or_else(wrong)?, path)?;
            bytes_field(out, field.n, &m);
        }
        FieldsV1 => {
            let mut m = Vec::new();
            bytes_field(&mut m, 1, &serde_json::to_vec(v).unwrap_or_default());
            bytes_field(out, field.n, &m);
        }
        Ty::Map { bytes } => {
            for (k, x) in v.as_object().ok_or_else(wrong)? {
                let mut e = Vec::new();
                bytes_field(&mut e, 1, k.as_bytes());
                let s = x.as_str().ok_or_else(|| format!("{path}.{k}: {x} is not a string"))?;
                if bytes {
                    let b = STANDARD.decode(s).map_err(|_| format!("{path}.{k}: not base64"))?;
                    bytes_field(&mut e, 2, &b);
                } else {
                    bytes_field(&mut e, 2, s.as_bytes());
                }
                bytes_field(out, field.n, &e);
            }
        }
    }
    Ok(())
}

/// Writes the fields `fields` names, in field-number order; fields absent or null are left
/// out, and fields the table does not name are dropped.
fn write_message(out: &mut Vec<u8>, fields: &[F], o: &Map<String, Value>, path: &str) -> Result<(), String> {
    for field in fields {
        let Some(v) = o.get(field.name).filter(|v| !v.is_null()) else { continue };
        let path = format!("{path}.{}", field.name);
        if field.repeated {
            let items = v.as_array().ok_or_else(|| format!("{path}: {v} is not a list"))?;
            for item in items {
                write_value(out, field, item, &path)?;
            }
        } else {
            write_value(out, field, v, &path)?;
        }
    }
    Ok(())
}

/// The enveloped protobuf body of a JSON object of a kind served in protobuf; `None` for
/// other kinds (Tables, the a2a kinds), which stay JSON.
pub fn encode(object: &Value) -> Option<Result<Vec<u8>, String>> {
    let o = object.as_object()?;
    let api_version = o.get("apiVersion")?.as_str()?;
    let kind = o.get("kind")?.as_str()?;
    let fields = message(api_version, kind)?;
    let mut raw = Vec::new();
    if let Err(e) = write_message(&mut raw, fields, o, kind) {
        return Some(Err(e));
    }
    let mut type_meta = Vec::new();
    bytes_field(&mut type_meta, 1, api_version.as_bytes());
    bytes_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    bytes_field(&mut out, 1, &type_meta);
    bytes_field(&mut out, 2, &raw);
    // contentEncoding and contentType: empty, as Go writes them.
    bytes_field(&mut out, 3, b"");
    bytes_field(&mut out, 4, b"");
    Some(Ok(out))
}

/// One frame of a protobuf watch stream: the length, then a `WatchEvent` whose object is
/// `object` enveloped (or, for an object not served in protobuf, its JSON).
pub fn watch_frame(type_: &str, object: &Value) -> Result<Vec<u8>, String> {
    let raw = match encode(object) {
        Some(r) => r?,
        None => serde_json::to_vec(object).unwrap_or_default(),
    };
    let mut ext = Vec::new();
    bytes_field(&mut ext, 1, &raw);
    let mut event = Vec::new();
    bytes_field(&mut event, 1, type_.as_bytes());
    bytes_field(&mut event, 2, &ext);
    let mut frame = (event.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&event);
    Ok(frame)
}

// ---------------------------------------------------------------------------------------
// Negotiation

/// What a request's `Accept` asks for: JSON unless protobuf comes before every JSON type
/// (`application/vnd.kubernetes.protobuf,application/json` is client-go's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    Json,
    /// Protobuf preferred; `json_too` when JSON is acceptable as well.
    Protobuf {
        json_too: bool,
    },
}

impl Accept {
    pub fn of(headers: &axum::http::HeaderMap) -> Accept {
        let Some(accept) = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Accept::Json;
        };
        let mut proto_first = None;
        let mut json = false;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let params: Vec<String> = parts.map(|p| p.replace(' ', "").to_ascii_lowercase()).collect();
            if params.iter().any(|p| p == "q=0" || p.starts_with("as=")) {
                continue; // refused, or a Table / metadata view (JSON here)
            }
            match media.as_str() {
                MEDIA_TYPE if proto_first.is_none() => proto_first = Some(!json),
                "application/json" | "*/*" | "application/*" => json = true,
                _ => {}
            }
        }
        match proto_first {
            Some(true) => Accept::Protobuf { json_too: json },
            _ => Accept::Json,
        }
    }
}

/// Whether a request body is in protobuf.
pub fn body_is_protobuf(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|m| m.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// The body of a delete as JSON: client-go's typed clients send `DeleteOptions` in protobuf.
pub fn delete_body_as_json(headers: &axum::http::HeaderMap, body: bytes::Bytes) -> Result<bytes::Bytes, ApiError> {
    if !body_is_protobuf(headers) || body.is_empty() {
        return Ok(body);
    }
    let options = decode_delete_options(&body)?;
    Ok(bytes::Bytes::from(serde_json::to_vec(&options).unwrap_or_default()))
}

fn with_type(mut r: Response, body: Body, media: &'static str) -> Response {
    *r.body_mut() = body;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(media));
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r
}

/// A client that takes protobuf only, asking for a kind not served in protobuf (the a2a
/// kinds, custom resources): the kube-apiserver's 406, before anything is done.
pub fn not_acceptable(accept: Accept, served: bool) -> Option<ApiError> {
    (accept == Accept::Protobuf { json_too: false } && !served).then(|| {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    })
}

/// Answers in protobuf what was answered in JSON, when the client prefers protobuf and the
/// object is of a kind served in protobuf (`served`: the request's resource is). Errors stay
/// JSON when the client takes JSON too (client-go reads either); Tables and a2a kinds stay
/// JSON. A watch becomes a stream of frames.
pub async fn respond(response: Response, accept: Accept, served: bool, watch: bool) -> Response {
    let Accept::Protobuf { json_too } = accept else { return response };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let failed = response.status().is_client_error() || response.status().is_server_error();
    if !is_json || (failed && json_too) || (!failed && !served) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let response = Response::from_parts(parts, Body::empty());
    if watch && !failed {
        return with_type(response, Body::from_stream(watch_frames(body.into_data_stream())), WATCH_MEDIA_TYPE);
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return with_type(response, Body::empty(), "application/json");
    };
    let encoded = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| encode(&v)).and_then(Result::ok);
    match encoded {
        Some(b) => with_type(response, Body::from(b), MEDIA_TYPE),
        // Not a kind served in protobuf (a Table): as it was.
        None => with_type(response, Body::from(bytes), "application/json"),
    }
}

/// A JSON watch stream (one event a line) as protobuf frames.
fn watch_frames(
    lines: impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static {
    use futures::StreamExt as _;
    let convert = |line: &[u8], out: &mut Vec<u8>| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(line) else { return };
        let type_ = event.get("type").and_then(Value::as_str).unwrap_or("ERROR");
        let object = event.get("object").cloned().unwrap_or(Value::Null);
        match watch_frame(type_, &object) {
            Ok(f) => out.extend_from_slice(&f),
            Err(e) => {
                let status = ApiError::internal(format!("the object cannot be written in protobuf: {e}")).to_status();
                if let Ok(f) = watch_frame("ERROR", &status) {
                    out.extend_from_slice(&f);
                }
            }
        }
    };
    futures::stream::unfold((Box::pin(lines), Vec::new(), false), move |(mut lines, mut pending, done)| async move {
        if done {
            return None;
        }
        loop {
            match lines.next().await {
                Some(Ok(chunk)) => {
                    pending.extend_from_slice(&chunk);
                    let Some(end) = pending.iter().rposition(|b| *b == b'\n') else { continue };
                    let rest = pending.split_off(end + 1);
                    let mut out = Vec::new();
                    for line in pending.split(|b| *b == b'\n') {
                        convert(line, &mut out);
                    }
                    if out.is_empty() {
                        pending = rest;
                        continue;
                    }
                    return Some((Ok(bytes::Bytes::from(out)), (lines, rest, false)));
                }
                Some(Err(e)) => return Some((Err(e), (lines, Vec::new(), true))),
                None => {
                    let mut out = Vec::new();
                    convert(&pending, &mut out);
                    return (!out.is_empty()).then(|| (Ok(bytes::Bytes::from(out)), (lines, Vec::new(), true)));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(object: Value) {
        let bytes = encode(&object).expect("served in protobuf").expect("encodes");
        let (api_version, kind, raw) = unwrap_envelope(&bytes).unwrap();
        assert_eq!(
            (api_version.as_str(), kind.as_str()),
            (object["apiVersion"].as_str().unwrap(), object["kind"].as_str().unwrap())
        );
        let mut back = read_message(message(&api_version, &kind).unwrap(), raw).unwrap();
        back.insert("apiVersion".into(), json!(api_version));
        back.insert("kind".into(), json!(kind));
        assert_eq!(Value::Object(back), object);
    }

    fn meta() -> Value {
        json!({
            "name": "n", "generateName": "g-", "namespace": "ns", "selfLink": "/x", "uid": "u-1",
            "resourceVersion": "42", "generation": 3, "creationTimestamp": "2026-01-02T03:04:05Z",
            "deletionTimestamp": "2026-01-02T03:04:06Z", "deletionGracePeriodSeconds": 0,
            "labels": {"a": "1", "b": ""}, "annotations": {"k": "v"},
            "ownerReferences": [{"kind": "Agent", "name": "o", "uid": "u-2", "apiVersion": "a2a.dev/v1alpha1",
                                 "controller": true, "blockOwnerDeletion": false}],
            "finalizers": ["f1", "f2"],
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:data": {"f:a": {}}}, "subresource": "status"}],
        })
    }

    #[test]
    fn every_field_of_every_kind_survives_a_round_trip() {
        let reference = json!({"kind": "Agent", "namespace": "ns", "name": "a", "uid": "u", "apiVersion": "a2a.dev/v1alpha1",
                               "resourceVersion": "7", "fieldPath": "spec"});
        let list_meta = json!({"selfLink": "/l", "resourceVersion": "9", "continue": "tok", "remainingItemCount": 0});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(), "data": {"a": "x", "e": ""},
                        "binaryData": {"b": "AP94"}, "immutable": false});
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(), "data": {"k": "AP94"},
                            "type": "Opaque", "stringData": {"s": "t"}, "immutable": true});
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(), "spec": {"finalizers": ["kubernetes"]},
                        "status": {"phase": "Terminating", "conditions": [{"type": "T", "status": "True",
                                   "lastTransitionTime": "2026-01-02T03:04:05Z", "reason": "R", "message": "M"}]}});
        let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": meta(), "involvedObject": reference,
                           "reason": "R", "message": "M", "source": {"component": "c", "host": "h"},
                           "firstTimestamp": "2026-01-02T03:04:05Z", "lastTimestamp": "2026-01-02T03:04:06Z",
                           "count": 2, "type": "Normal", "eventTime": "2026-01-02T03:04:05.123456Z",
                           "series": {"count": 4, "lastObservedTime": "2026-01-02T03:04:07.000001Z"},
                           "action": "A", "related": reference, "reportingComponent": "rc", "reportingInstance": "ri"});
        let event_v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta(),
                              "eventTime": "2026-01-02T03:04:05.123456Z",
                              "series": {"count": 4, "lastObservedTime": "2026-01-02T03:04:07.000001Z"},
                              "reportingController": "rc", "reportingInstance": "ri", "action": "A", "reason": "R",
                              "regarding": reference, "related": reference, "note": "N", "type": "Warning",
                              "deprecatedSource": {"component": "c", "host": "h"},
                              "deprecatedFirstTimestamp": "2026-01-02T03:04:05Z",
                              "deprecatedLastTimestamp": "2026-01-02T03:04:06Z", "deprecatedCount": 5});
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta(),
                           "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15,
                                    "acquireTime": "2026-01-02T03:04:05.123456Z", "renewTime": "2026-01-02T03:04:06.000001Z",
                                    "leaseTransitions": 0, "strategy": "OldestEmulationVersion", "preferredHolder": "you"}});
        for o in [&cm, &secret, &ns, &event, &event_v1, &lease] {
            round_trip(o.clone());
            // Items carry no type of their own in protobuf (nor in the kube-apiserver's JSON).
            let mut item = o.clone();
            item.as_object_mut().unwrap().retain(|k, _| k != "apiVersion" && k != "kind");
            let list = json!({"apiVersion": o["apiVersion"], "kind": format!("{}List", o["kind"].as_str().unwrap()),
                              "metadata": list_meta, "items": [item, item]});
            round_trip(list);
        }
        round_trip(json!({"apiVersion": "v1", "kind": "Status", "metadata": list_meta, "status": "Failure",
                          "message": "m", "reason": "Invalid", "code": 422,
                          "details": {"name": "n", "group": "g", "kind": "k", "uid": "u", "retryAfterSeconds": 1,
                                      "causes": [{"reason": "FieldValueInvalid", "message": "m", "field": "spec"}]}}));
        round_trip(json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                          "preconditions": {"uid": "u", "resourceVersion": "1"}, "orphanDependents": false,
                          "propagationPolicy": "Background", "dryRun": ["All"],
                          "ignoreStoreReadErrorWithClusterBreakingPotential": false}));
        // The access reviews `kubectl auth` sends.
        round_trip(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                          "metadata": {"name": "r"},
                          "spec": {"resourceAttributes": {"namespace": "ns", "verb": "create", "group": "a2a.dev",
                                   "version": "v1alpha1", "resource": "agents", "subresource": "status", "name": "a"},
                                   "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}));
        round_trip(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                          "spec": {"namespace": "ns"}}));
        round_trip(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                          "metadata": {"name": "me"}}));
        // Negative numbers are ten-byte varints.
        round_trip(json!({"apiVersion": "v1", "kind": "Status", "code": -1}));
    }

    #[test]
    fn a2a_kinds_and_tables_stay_json() {
        assert!(encode(&json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent"})).is_none());
        assert!(encode(&json!({"apiVersion": "meta.k8s.io/v1", "kind": "Table"})).is_none());
        let agents = Resource::find("a2a.dev", "v1alpha1", "agents").unwrap();
        let e = decode(agents, b"k8s\0").unwrap_err();
        assert_eq!(e.code, 415);
        assert!(!serves(agents));
    }

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(&mut out, n, payload);
        out
    }

    #[test]
    fn a_secret_as_kubectl_create_sends_it_decodes_to_its_json() {
        let entry = |k: &str, v: &[u8]| [field(1, k.as_bytes()), field(2, v)].concat();
        // Go writes empty strings and zero times as fields.
        let meta = [field(1, b"api"), field(3, b"team"), field(8, &[]), field(2, b"")].concat();
        let secret = [
            field(1, &meta),
            field(2, &entry("key", &[0, 255, b'x'])),
            field(3, b"Opaque"),
            field(4, &entry("plain", b"text")),
            vec![5 << 3, 1],
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &secret), field(3, b""), field(4, b"")].concat();
        let r = Resource::find("", "v1", "secrets").unwrap();
        let v = decode(r, &body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api", "namespace": "team"},
                   "data": {"key": "AP94"}, "type": "Opaque", "stringData": {"plain": "text"}, "immutable": true})
        );
        assert!(decode(r, &body[..body.len() - 7]).is_err());
        assert!(decode(r, b"{}").is_err());
    }

    #[test]
    fn watch_frames_are_length_prefixed_watch_events() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let frame = watch_frame("ADDED", &cm).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut r = Reader::new(&frame[4..]);
        let (n, Wire::Bytes(t)) = r.next().unwrap().unwrap() else { panic!() };
        assert_eq!((n, t), (1, &b"ADDED"[..]));
        let (n, Wire::Bytes(ext)) = r.next().unwrap().unwrap() else { panic!() };
        assert_eq!(n, 2);
        let (n, Wire::Bytes(raw)) = Reader::new(ext).next().unwrap().unwrap() else { panic!() };
        assert_eq!(n, 1);
        assert_eq!(raw, encode(&cm).unwrap().unwrap());
    }

    #[test]
    fn protobuf_only_is_not_acceptable_for_kinds_served_in_json() {
        let only = Accept::Protobuf { json_too: false };
        assert_eq!(not_acceptable(only, false).map(|e| e.code), Some(406));
        assert!(not_acceptable(only, true).is_none());
        assert!(not_acceptable(Accept::Protobuf { json_too: true }, false).is_none());
    }

    #[test]
    fn accept_prefers_what_comes_first() {
        let of = |a: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::ACCEPT, a.parse().unwrap());
            Accept::of(&h)
        };
        assert_eq!(of("application/vnd.kubernetes.protobuf,application/json"), Accept::Protobuf { json_too: true });
        assert_eq!(of("application/vnd.kubernetes.protobuf"), Accept::Protobuf { json_too: false });
        assert_eq!(of("application/json, application/vnd.kubernetes.protobuf"), Accept::Json);
        assert_eq!(of("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"), Accept::Json);
        assert_eq!(of("*/*"), Accept::Json);
        assert_eq!(Accept::of(&axum::http::HeaderMap::new()), Accept::Json);
    }
}
