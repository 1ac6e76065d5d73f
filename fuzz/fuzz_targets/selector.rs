//! Label and field selectors: parsed, then matched against a few objects.
#![no_main]
use a2a::apiserver::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

// The input is a label selector, a NUL byte, and a field selector.
fuzz_target!(|text: &str| {
    let (label, field) = text.split_once('\0').unwrap_or((text, ""));
    let objects = [
        json!({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "x", "tier": "web"}}}),
        json!({"metadata": {"name": "b", "labels": {}}, "status": {"phase": "Running"}}),
        json!({"metadata": {"name": label}}),
    ];
    if let Ok(s) = LabelSelector::parse(label) {
        for o in &objects {
            let _ = s.matches(o.pointer("/metadata/labels").and_then(|l| l.as_object()));
        }
    }
    if let Ok(s) = FieldSelector::parse(field, &["metadata.name", "metadata.namespace", "status.phase"]) {
        for o in &objects {
            let _ = s.matches(o);
        }
    }
});
