//! Patch documents: JSON patches (RFC 6902) read without serde's double buffering, and JSON
//! merge patches (RFC 7386) applied by moving values rather than copying them. Strategic
//! merge patches are [`crate::apiserver::smp`]'s.

use serde_json::{Map, Value};

use crate::apiserver::status::ApiError;

/// Parses a JSON patch (RFC 6902). `json_patch::Patch` reads each operation through serde's
/// buffering of internally tagged enums (every value parsed twice: a status write's whole
/// status); each operation is read here into a plain struct instead. Anything that does not
/// read cleanly that way is parsed again the usual way, whose error is the one reported, so
/// what is accepted and what an error says do not change.
pub fn parse_json_patch(body: &[u8]) -> Result<json_patch::Patch, ApiError> {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{
        AddOperation, CopyOperation, MoveOperation, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
    };

    #[derive(serde::Deserialize)]
    struct Operation {
        op: String,
        path: String,
        from: Option<String>,
        // Present, even as `null` (a value to add), or absent.
        #[serde(default, deserialize_with = "present")]
        value: Option<Value>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        <Value as serde::Deserialize>::deserialize(d).map(Some)
    }
    let fast = || -> Option<json_patch::Patch> {
        // Checked first: serde_json skips an unknown field without checking its bytes, and
        // what is not UTF-8 is not JSON (the usual reading refuses it).
        std::str::from_utf8(body).ok()?;
        let ops: Vec<Operation> = serde_json::from_slice(body).ok()?;
        let mut out = Vec::with_capacity(ops.len());
        for o in ops {
            let path = PointerBuf::parse(o.path).ok()?;
            let from = || o.from.clone().and_then(|f| PointerBuf::parse(f).ok());
            out.push(match o.op.as_str() {
                "add" => PatchOperation::Add(AddOperation { path, value: o.value? }),
                "remove" => PatchOperation::Remove(RemoveOperation { path }),
                "replace" => PatchOperation::Replace(ReplaceOperation { path, value: o.value? }),
                "move" => PatchOperation::Move(MoveOperation { from: from()?, path }),
                "copy" => PatchOperation::Copy(CopyOperation { from: from()?, path }),
                "test" => PatchOperation::Test(TestOperation { path, value: o.value? }),
                _ => return None,
            });
        }
        Some(json_patch::Patch(out))
    };
    match fast() {
        Some(patch) => Ok(patch),
        None => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not a valid JSON patch: {e}"))),
    }
}

/// Whether a JSON patch operation changes nothing outside `/status` (`test` and the source
/// of `copy` only read).
pub(super) fn changes_only_status(op: &json_patch::PatchOperation) -> bool {
    use json_patch::PatchOperation as Op;
    let in_status = |p: &str| p == "/status" || p.starts_with("/status/");
    match op {
        Op::Add(o) => in_status(o.path.as_str()),
        Op::Remove(o) => in_status(o.path.as_str()),
        Op::Replace(o) => in_status(o.path.as_str()),
        Op::Move(o) => in_status(o.from.as_str()) && in_status(o.path.as_str()),
        Op::Copy(o) => in_status(o.path.as_str()),
        Op::Test(_) => true,
    }
}

/// A JSON merge patch (RFC 7386) applied by moving the patch's values into `doc`, not
/// copying them: a whole-status patch of a big Workflow is megabytes of small values. Answers
/// what it replaced or removed, moved out to the same paths (in maps holding only those), which
/// is all the write's accounting needs of the old version ([`managed::Before::Displaced`]).
pub fn merge_owned(doc: &mut Value, patch: Value) -> Option<Value> {
    let Value::Object(fields) = patch else {
        return Some(std::mem::replace(doc, patch));
    };
    if !doc.is_object() {
        let old = std::mem::replace(doc, Value::Object(Map::new()));
        merge_owned(doc, Value::Object(fields)); // into an empty map: nothing displaced
        return Some(old);
    }
    let mut displaced = Map::new();
    if let Value::Object(target) = doc {
        for (key, value) in fields {
            let old = if value.is_null() {
                target.remove(&key)
            } else if let Some(slot) = target.get_mut(&key) {
                merge_owned(slot, value)
            } else {
                // Absent before: the placeholder it displaces is no old value.
                let mut slot = Value::Null;
                merge_owned(&mut slot, value);
                target.insert(key, slot);
                continue;
            };
            if let Some(old) = old {
                displaced.insert(key, old);
            }
        }
    }
    (!displaced.is_empty()).then_some(Value::Object(displaced))
}
