//! The switch from client-side to server-side apply, as the kube-apiserver's
//! `lastAppliedManager` makes it: the first server-side apply over an object that
//! `kubectl apply` (client-side) manages would conflict with the `kubectl-client-side-apply`
//! manager on every field; the conflicts are waived, and the fields handed over, when each
//! conflicting field is one the `kubectl.kubernetes.io/last-applied-configuration` annotation
//! holds with the value the object has (the annotation is up to date). kubectl then moves the
//! client-side manager's remaining entries to its own (its csaupgrade step).

use serde_json::Value;

use super::managed::{Conflict, Scope, display_path, fields_of};

pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether every conflict of an apply over `live` is one the last-applied annotation hands
/// over.
pub fn hands_over(live: &Value, conflicts: &[Conflict]) -> bool {
    let Some(text) = live.pointer("/metadata/annotations").and_then(|a| a.get(ANNOTATION)).and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else { return false };
    let handed: Vec<String> = fields_of(&last, Scope::of(false, false))
        .paths()
        .into_iter()
        .filter(|p| value_at(&last, p).is_some() && value_at(&last, p) == value_at(live, p))
        .map(|p| display_path(&p))
        .collect();
    !conflicts.is_empty() && conflicts.iter().all(|c| handed.contains(&c.path))
}

/// After a server-side apply by kubectl's own manager (`kubectl`), an object that has the
/// last-applied annotation gets the applied configuration in it, as the kube-apiserver's
/// `lastAppliedUpdater` keeps it, so that a later client-side apply compares with what was
/// really applied last.
pub fn sync(manager: &str, object: &mut Value, config: &Value) {
    if manager != "kubectl" {
        return;
    }
    let Some(annotations) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else {
        return;
    };
    if !annotations.contains_key(ANNOTATION) {
        return;
    }
    let mut applied = config.clone();
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(ANNOTATION);
        }
        if meta.get("annotations").and_then(Value::as_object).is_some_and(serde_json::Map::is_empty) {
            meta.remove("annotations");
        }
    }
    annotations.insert(ANNOTATION.into(), Value::String(applied.to_string()));
}

/// The value at a field set path (`f:spec`, `f:url`).
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, p| cur.get(p.strip_prefix("f:")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(last: &Value, labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels, "annotations": {ANNOTATION: last.to_string()}},
               "spec": {"url": "http://x/"}})
    }

    fn conflict(path: &str) -> Conflict {
        Conflict { manager: "\"kubectl-client-side-apply\"".into(), path: path.into() }
    }

    #[test]
    fn conflicts_on_fields_last_applied_with_the_live_value_are_handed_over() {
        let last = json!({"metadata": {"name": "a", "labels": {"x": "one"}}, "spec": {"url": "http://x/"}});
        assert!(hands_over(
            &live(&last, json!({"x": "one"})),
            &[conflict(".metadata.labels.x"), conflict(".spec.url")]
        ));
        // Changed since (by another writer): the annotation is stale, the conflict stays.
        assert!(!hands_over(&live(&last, json!({"x": "two"})), &[conflict(".metadata.labels.x")]));
        // A field the annotation does not hold.
        assert!(!hands_over(&live(&last, json!({"x": "one"})), &[conflict(".spec.other")]));
        assert!(!hands_over(&json!({"metadata": {}}), &[conflict(".spec.url")]));
    }
}
