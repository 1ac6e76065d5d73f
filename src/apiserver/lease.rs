//! Leases (`coordination.k8s.io/v1`): what leader election (client-go's and kube-rs's lease
//! locks, the operator's among them) reads and renews. Validated as the kube-apiserver
//! validates them; `acquireTime` and `renewTime` are `MicroTime`s, stored with microseconds
//! (`2026-01-02T03:04:05.123456Z`) whatever precision and offset the client wrote.

use serde_json::Value;

use crate::api::validate::FieldError;

/// A Lease body whose spec fields have the wrong JSON type: the 400 the kube-apiserver
/// answers when it cannot decode the body, in its words.
pub fn decode_error(object: &Value) -> Option<crate::apiserver::status::ApiError> {
    let spec = object.get("spec").filter(|s| !s.is_null())?;
    let kind = |v: &Value| match v {
        Value::String(_) => "string".to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::Bool(_) => "bool".to_string(),
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
        Value::Null => "null".to_string(),
    };
    let wrong = |what: String, field: &str, go: &str| {
        let message = format!(
            "Lease in version \"v1\" cannot be handled as a Lease: json: cannot unmarshal {what} into Go struct \
             field {field} of type {go}"
        );
        Some(crate::apiserver::status::ApiError::bad_request(message))
    };
    let Some(spec) = spec.as_object() else {
        return wrong(kind(spec), "Lease.spec", "v1.LeaseSpec");
    };
    for (field, go) in [
        ("holderIdentity", "string"),
        ("strategy", "v1.CoordinatedLeaseStrategy"),
        ("preferredHolder", "string"),
        ("leaseDurationSeconds", "int32"),
        ("leaseTransitions", "int32"),
        ("acquireTime", "v1.MicroTime"),
        ("renewTime", "v1.MicroTime"),
    ] {
        let Some(v) = spec.get(field).filter(|v| !v.is_null()) else { continue };
        let fits = match go {
            "int32" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            _ => v.is_string(),
        };
        if !fits {
            return wrong(kind(v), &format!("LeaseSpec.spec.{field}"), go);
        }
    }
    None
}

/// Checks the spec's types and bounds, and writes its MicroTimes in the API's form.
pub fn admit(object: &mut Value, errors: &mut Vec<FieldError>) {
    let Some(spec) = object.get_mut("spec") else { return };
    let Some(spec) = spec.as_object_mut() else {
        if !spec.is_null() {
            errors.push(FieldError::new("spec", format!("{spec}: expected a mapping")));
        }
        return;
    };
    for field in ["holderIdentity", "strategy", "preferredHolder"] {
        if let Some(v) = spec.get(field)
            && !(v.is_string() || v.is_null())
        {
            errors.push(FieldError::new(format!("spec.{field}"), format!("{v}: expected a string")));
        }
    }
    for (field, min) in [("leaseDurationSeconds", 1), ("leaseTransitions", 0)] {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
                None => {
                    errors.push(FieldError::new(format!("spec.{field}"), format!("{v}: expected a 32-bit integer")))
                }
                Some(n) if n < min => errors.push(FieldError::new(
                    format!("spec.{field}"),
                    if min == 1 {
                        format!("{n}: must be greater than 0")
                    } else {
                        format!("{n}: must be greater than or equal to 0")
                    },
                )),
                Some(_) => {}
            },
        }
    }
    for field in ["acquireTime", "renewTime"] {
        match spec.get_mut(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_str().and_then(micro_time) {
                Some(t) => *v = Value::String(t),
                None => errors.push(FieldError::new(
                    format!("spec.{field}"),
                    format!("{v}: expected an RFC 3339 time (a MicroTime)"),
                )),
            },
        }
    }
    let set = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if set(spec.get("preferredHolder")) && !set(spec.get("strategy")) {
        errors.push(FieldError::new("spec.strategy", "\"\": Strategy must be set if preferredHolder is set"));
    }
}

/// An RFC 3339 time as a `MicroTime` is written: UTC, six fractional digits.
pub fn micro_time(text: &str) -> Option<String> {
    let t = text.parse::<jiff::Timestamp>().ok()?;
    Some(t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wrong_types_are_the_decode_error_of_the_kube_apiserver() {
        let e = decode_error(&json!({"spec": {"leaseDurationSeconds": "15"}})).unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "Lease in version \"v1\" cannot be handled as a Lease: json: cannot unmarshal string into Go struct \
                 field LeaseSpec.spec.leaseDurationSeconds of type int32"
            )
        );
        assert!(
            decode_error(&json!({"spec": {"leaseTransitions": 3000000000u64}}))
                .unwrap()
                .message
                .contains("number 3000000000")
        );
        assert!(decode_error(&json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).is_none());
        assert!(decode_error(&json!({"metadata": {}})).is_none());
    }

    #[test]
    fn micro_times_keep_microseconds_in_utc() {
        assert_eq!(micro_time("2026-01-02T03:04:05.123456+01:00").as_deref(), Some("2026-01-02T02:04:05.123456Z"));
        assert_eq!(micro_time("2026-01-02T03:04:05Z").as_deref(), Some("2026-01-02T03:04:05.000000Z"));
        assert_eq!(micro_time("2026-01-02T03:04:05.1234567Z").as_deref(), Some("2026-01-02T03:04:05.123456Z"));
        assert_eq!(micro_time("yesterday"), None);
    }

    #[test]
    fn lease_specs_are_checked_as_the_kube_apiserver_checks_them() {
        let mut ok = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                                     "renewTime": "2026-01-02T03:04:05.5Z"}});
        let mut errors = Vec::new();
        admit(&mut ok, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ok["spec"]["renewTime"], "2026-01-02T03:04:05.500000Z");
        let mut bad = json!({"spec": {"holderIdentity": 3, "leaseDurationSeconds": 0, "leaseTransitions": -1,
                                      "acquireTime": "soon", "preferredHolder": "b"}});
        admit(&mut bad, &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.holderIdentity",
                "spec.leaseDurationSeconds",
                "spec.leaseTransitions",
                "spec.acquireTime",
                "spec.strategy"
            ]
        );
        assert_eq!(errors[1].message, "0: must be greater than 0");
    }
}
