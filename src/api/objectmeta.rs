//! The rules apimachinery applies to every object's labels and annotations, with its words:
//! label keys and annotation keys are qualified names (an optional DNS-subdomain prefix of at
//! most 253 characters and `/`, then a name of at most 63 of `[-A-Za-z0-9_.]` that starts and
//! ends with a letter or digit); label values are empty or such a name; annotations together
//! hold at most 256 KiB.

use serde_json::{Map, Value};

use super::validate::FieldError;

/// The most bytes an object's annotations (keys and values) may hold together.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
                             '.', and must start and end with an alphanumeric character";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let examples: String = examples.iter().map(|e| format!("'{e}', ")).collect::<Vec<_>>().join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{fmt}')")
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub(crate) fn is_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// apimachinery's `IsQualifiedName`: what is wrong with a label or annotation key.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_subdomain(prefix) {
                    errs.push(format!("prefix part {}", regex_error(SUBDOMAIN_MSG, SUBDOMAIN_FMT, &["example.com"])));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// apimachinery's `IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_name(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character",
            &format!("({LABEL_KEY_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Checks `metadata.labels` and `metadata.annotations` of an object's metadata mapping.
/// Errors are on `metadata.labels` / `metadata.annotations` with the bad key or value quoted,
/// as the kube-apiserver reports them (`metadata.labels: Invalid value: "x": must be ...`).
pub fn check_labels_and_annotations(meta: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    if let Some(Value::Object(labels)) = meta.get("labels") {
        for (k, v) in labels {
            for e in qualified_name_errors(k) {
                errors.push(FieldError::new("metadata.labels", format!("{}: {e}", quoted(k))));
            }
            match v {
                Value::String(v) => {
                    for e in label_value_errors(v) {
                        errors.push(FieldError::new("metadata.labels", format!("{}: {e}", quoted(v))));
                    }
                }
                Value::Null => {}
                other => errors.push(FieldError::new(
                    format!("metadata.labels.{k}"),
                    format!("values must be strings (quote it), got {}", super::quantity::json_type_name(other)),
                )),
            }
        }
    }
    if let Some(Value::Object(annotations)) = meta.get("annotations") {
        let mut total = 0usize;
        for (k, v) in annotations {
            for e in qualified_name_errors(&k.to_ascii_lowercase()) {
                errors.push(FieldError::new("metadata.annotations", format!("{}: {e}", quoted(k))));
            }
            total += k.len();
            match v {
                Value::String(v) => total += v.len(),
                Value::Null => {}
                other => errors.push(FieldError::new(
                    format!("metadata.annotations.{k}"),
                    format!("values must be strings (quote it), got {}", super::quantity::json_type_name(other)),
                )),
            }
        }
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errors.push(FieldError::new(
                "metadata.annotations",
                format!("Too long: must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(meta: Value) -> Vec<String> {
        let mut errors = Vec::new();
        check_labels_and_annotations(meta.as_object().unwrap(), &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn label_values_and_keys_follow_apimachinery() {
        assert!(check(json!({"labels": {"app": "web", "example.com/tier": "", "a.b_c-d": "X.y_z-1"}})).is_empty());
        let long = "v".repeat(64);
        assert_eq!(
            check(json!({"labels": {"app": long}})),
            vec![format!("metadata.labels: \"{long}\": must be no more than 63 characters")]
        );
        let errs = check(json!({"labels": {"app": "has space"}}));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("metadata.labels: \"has space\": a valid label must be an empty string"),
            "{errs:?}"
        );
        let errs = check(json!({"labels": {"Bad_Prefix/x": "v", &"k".repeat(64): "v", "a/b/c": "v"}}));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("prefix part a lowercase RFC 1123 subdomain")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("name part must be no more than 63 characters")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("a valid label key must consist")), "{errs:?}");
        let prefix = format!("{}.com/x", "p".repeat(250));
        assert!(check(json!({"labels": {prefix: "v"}}))[0].contains("prefix part must be no more than 253 characters"));
    }

    #[test]
    fn annotations_may_hold_256_kib_in_all() {
        assert!(check(json!({"annotations": {"Mixed.Case/Key": "x".repeat(1000)}})).is_empty());
        let half = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT / 2);
        assert_eq!(
            check(json!({"annotations": {"a": half, "b": half}})),
            vec!["metadata.annotations: Too long: must have at most 262144 bytes".to_string()]
        );
    }
}
