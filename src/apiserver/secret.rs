//! Core `v1` Secrets as the kube-apiserver admits them: `stringData` merged into `data` on
//! every write (and never stored or returned), `type` defaulted to `Opaque`, keys and sizes
//! checked, the keys each built-in type requires, and `immutable` Secrets and ConfigMaps
//! refusing changes to what they hold.
//!
//! No error names a value: a Secret's values are secret, so messages say which key is wrong
//! and why, never what it holds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::api::validate::FieldError;

/// The most bytes a Secret's or a ConfigMap's values may total (as Kubernetes: 1 MiB).
pub const MAX_TOTAL_BYTES: usize = 1 << 20;

/// Whether a key is a config key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub const CONFIG_KEY_MESSAGE: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (at most 253)";

/// Keys each built-in Secret type requires (one of them, for basic-auth).
fn required_keys(type_: &str) -> (&'static [&'static str], bool) {
    match type_ {
        "kubernetes.io/tls" => (&["tls.crt", "tls.key"], true),
        "kubernetes.io/dockercfg" => (&[".dockercfg"], true),
        "kubernetes.io/dockerconfigjson" => (&[".dockerconfigjson"], true),
        "kubernetes.io/ssh-auth" => (&["ssh-privatekey"], true),
        "kubernetes.io/basic-auth" => (&["username", "password"], false),
        _ => (&[], true),
    }
}

/// Merges `stringData` into `data` (base64), defaults `type`, and checks the Secret. The
/// object comes back without `stringData` whatever the outcome.
pub fn admit(object: &mut Value, errors: &mut Vec<FieldError>) {
    let Some(map) = object.as_object_mut() else { return };
    let string_data = map.remove("stringData");
    let mut data = match map.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            errors.push(FieldError::new("data", "expected an object of key: base64 value"));
            Map::new()
        }
    };
    let mut total = 0usize;
    for (key, value) in &data {
        let path = format!("data[{key}]");
        if !is_config_key(key) {
            errors.push(FieldError::new(path.clone(), CONFIG_KEY_MESSAGE));
        }
        match value {
            Value::String(v) => match STANDARD.decode(v) {
                Ok(bytes) => total += bytes.len(),
                Err(_) => errors.push(FieldError::new(path, "expected base64-encoded bytes (the value is not shown)")),
            },
            Value::Null => {}
            _ => errors.push(FieldError::new(path, "expected a base64 string")),
        }
    }
    data.retain(|_, v| !v.is_null());
    match string_data {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (key, value) in m {
                let path = format!("stringData[{key}]");
                if !is_config_key(&key) {
                    errors.push(FieldError::new(path.clone(), CONFIG_KEY_MESSAGE));
                }
                match value {
                    Value::String(v) => {
                        // A key in both: stringData wins, as in Kubernetes.
                        if let Some(Value::String(old)) = data.get(&key) {
                            total -= STANDARD.decode(old).map_or(0, |b| b.len());
                        }
                        total += v.len();
                        data.insert(key, Value::String(STANDARD.encode(v.as_bytes())));
                    }
                    _ => errors.push(FieldError::new(path, "expected a string")),
                }
            }
        }
        Some(_) => errors.push(FieldError::new("stringData", "expected an object of key: string value")),
    }
    if total > MAX_TOTAL_BYTES {
        errors.push(FieldError::new("data", format!("Too long: must have at most {MAX_TOTAL_BYTES} bytes")));
    }
    let type_ = match map.get("type") {
        None | Some(Value::Null) => "Opaque".to_string(),
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(_) => {
            errors.push(FieldError::new("type", "expected a non-empty string"));
            "Opaque".to_string()
        }
    };
    let (required, all) = required_keys(&type_);
    if all {
        for k in required.iter().filter(|k| !data.contains_key(**k)) {
            errors.push(FieldError::new(format!("data[{k}]"), format!("Required value: a {type_} Secret needs it")));
        }
    } else if !required.iter().any(|k| data.contains_key(*k)) {
        errors
            .push(FieldError::new("data", format!("Required value: a {type_} Secret needs {}", required.join(" or "))));
    }
    if let Some(v) = map.get("immutable")
        && !v.is_boolean()
        && !v.is_null()
    {
        errors.push(FieldError::new("immutable", "expected true or false"));
    }
    map.insert("type".into(), json!(type_));
    if !data.is_empty() {
        map.insert("data".into(), Value::Object(data));
    }
}

/// What an update may not change in a Secret or a ConfigMap: the `type` of a Secret, and,
/// once `immutable` is true, the data and the flag itself.
pub fn check_update(plural: &str, current: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if plural == "secrets" && current.get("type") != new.get("type") {
        errors.push(FieldError::new("type", "field is immutable"));
    }
    if current.get("immutable") == Some(&Value::Bool(true)) {
        let fields: &[&str] = if plural == "secrets" { &["data"] } else { &["data", "binaryData"] };
        for f in fields {
            if current.get(*f) != new.get(*f) {
                errors.push(FieldError::new(*f, "field is immutable when `immutable` is set"));
            }
        }
        if new.get("immutable") != Some(&Value::Bool(true)) {
            errors.push(FieldError::new("immutable", "field is immutable when `immutable` is set"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(mut v: Value) -> (Value, Vec<String>) {
        let mut errors = Vec::new();
        admit(&mut v, &mut errors);
        (v, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn string_data_is_merged_into_data_and_wins_and_type_defaults_to_opaque() {
        let (v, errors) = admitted(json!({
            "data": {"a": "eA==", "b": "eQ=="},
            "stringData": {"b": "plain", "c": "z"},
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(v["data"], json!({"a": "eA==", "b": "cGxhaW4=", "c": "eg=="}));
        assert_eq!(v["type"], "Opaque");
        assert!(v.get("stringData").is_none());
    }

    #[test]
    fn errors_name_the_field_and_never_the_value() {
        let (v, errors) = admitted(json!({
            "data": {"bad key": "c2VjcmV0", "notb64": "hunter2!!"},
            "stringData": {"x": 5, "ok/no": "hunter3"},
            "type": "kubernetes.io/tls",
        }));
        assert_eq!(
            errors,
            [
                format!("data[bad key]: {CONFIG_KEY_MESSAGE}"),
                "data[notb64]: expected base64-encoded bytes (the value is not shown)".to_string(),
                format!("stringData[ok/no]: {CONFIG_KEY_MESSAGE}"),
                "stringData[x]: expected a string".to_string(),
                "data[tls.crt]: Required value: a kubernetes.io/tls Secret needs it".to_string(),
                "data[tls.key]: Required value: a kubernetes.io/tls Secret needs it".to_string(),
            ]
        );
        for e in &errors {
            assert!(!e.contains("hunter") && !e.contains("c2VjcmV0"), "{e}");
        }
        assert!(v.get("stringData").is_none());
    }

    #[test]
    fn the_values_total_at_most_one_mebibyte_decoded() {
        let big = STANDARD.encode(vec![0u8; MAX_TOTAL_BYTES]);
        let (_, errors) = admitted(json!({"data": {"a": big}}));
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = admitted(json!({"data": {"a": big}, "stringData": {"b": "x"}}));
        assert_eq!(errors, ["data: Too long: must have at most 1048576 bytes"]);
    }

    #[test]
    fn an_immutable_secret_keeps_its_data_and_a_secret_its_type() {
        let cur = json!({"type": "Opaque", "immutable": true, "data": {"a": "eA=="}});
        let same = cur.clone();
        assert!(check_update("secrets", &cur, &same).is_empty());
        let changed = json!({"type": "Opaque", "immutable": true, "data": {"a": "eQ=="}});
        let e = check_update("secrets", &cur, &changed);
        assert_eq!(e[0].to_string(), "data: field is immutable when `immutable` is set");
        let unset = json!({"type": "Opaque", "immutable": false, "data": {"a": "eA=="}});
        assert_eq!(check_update("secrets", &cur, &unset)[0].path, "immutable");
        let retyped = json!({"type": "x", "data": {}});
        assert_eq!(check_update("secrets", &json!({"type": "Opaque"}), &retyped)[0].path, "type");
        let cm = json!({"immutable": true, "binaryData": {"b": "AA=="}});
        assert_eq!(check_update("configmaps", &cm, &json!({"immutable": true}))[0].path, "binaryData");
    }
}
