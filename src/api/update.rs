//! What an update may change in an object already stored, beside what the object itself
//! must satisfy ([`super::validate`]).
//!
//! A Workflow's tasks and what shapes their attempts are its template: like a Kubernetes
//! Job's `spec.template`, they are fixed once the workflow has started, because the engine
//! has dispatched attempts of those tasks, recorded their outputs and passed them down. A
//! changed task list would leave status describing tasks that no longer exist, or outputs
//! that a different message produced. What only steers the run (`parallelism`,
//! `activeDeadline`, `priority`, `ttlAfterFinished`) stays mutable. A finished workflow is
//! run again by deleting and re-creating it (`a2a run` does that).

use serde_json::Value;

use super::Kind;
use super::validate::FieldError;

/// Workflow spec fields fixed once the workflow has started.
pub const WORKFLOW_FIXED_ONCE_STARTED: [&str; 5] = ["tasks", "params", "retry", "timeout", "budget"];

/// Whether a Workflow whose status is `status` has started: Running or finished, or Pending
/// with any task dispatched.
pub fn workflow_started(status: Option<&Value>) -> bool {
    let Some(status) = status else { return false };
    match status.get("phase").and_then(Value::as_str) {
        None | Some("Pending") => status.get("tasks").and_then(Value::as_array).is_some_and(|tasks| {
            tasks.iter().any(|t| {
                t.get("phase").and_then(Value::as_str).is_some_and(|p| p != "Pending")
                    || t.get("attempts").and_then(Value::as_u64).unwrap_or(0) > 0
            })
        }),
        Some(_) => true,
    }
}

/// The problems with replacing `old` by `new` (both whole objects of `kind`, as stored).
pub fn check_update(kind: Kind, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if kind == Kind::Workflow {
        let replies = |o: &Value| o.get("spec").and_then(|s| s.get("replies")).cloned();
        errors.extend(super::reply::check_append_only(replies(old).as_ref(), replies(new).as_ref()));
    }
    if kind == Kind::Workflow && workflow_started(old.get("status")) {
        let phase = old.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
        for field in WORKFLOW_FIXED_ONCE_STARTED {
            if old.get("spec").and_then(|s| s.get(field)) != new.get("spec").and_then(|s| s.get(field)) {
                errors.push(FieldError::new(
                    format!("spec.{field}"),
                    format!(
                        "field is immutable once the workflow has started (it is {phase}); only parallelism, \
                         activeDeadline, priority, ttlAfterFinished and replies (appended) may change. To run a different workflow, \
                         delete this one and create it again"
                    ),
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wf(spec: Value, status: Value) -> Value {
        json!({ "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": { "name": "w" }, "spec": spec, "status": status })
    }

    const TASKS: &str =
        r#"[{"name": "a", "agent": "e", "message": "sleep 3s"}, {"name": "b", "agent": "e", "message": "sleep 4s"}]"#;

    fn tasks() -> Value {
        serde_json::from_str(TASKS).expect("json")
    }

    #[test]
    fn a_started_workflow_refuses_changes_to_its_template_and_names_each_field() {
        let old = wf(json!({ "tasks": tasks(), "params": { "x": "1" } }), json!({ "phase": "Running" }));
        let mut new = old.clone();
        new["spec"]["tasks"] = json!([tasks()[1]]);
        new["spec"]["params"]["x"] = json!("2");
        new["spec"]["timeout"] = json!("5s");
        let errors = check_update(Kind::Workflow, &old, &new);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.tasks", "spec.params", "spec.timeout"]);
        assert!(errors[0].message.starts_with("field is immutable once the workflow has started (it is Running)"));
    }

    #[test]
    fn what_steers_a_run_stays_mutable_and_an_unstarted_workflow_may_change_freely() {
        let old = wf(json!({ "tasks": tasks() }), json!({ "phase": "Running" }));
        let mut new = old.clone();
        for (k, v) in [
            ("parallelism", json!(2)),
            ("activeDeadline", json!("1h")),
            ("priority", json!("high")),
            ("ttlAfterFinished", json!("1m")),
        ] {
            new["spec"][k] = v;
        }
        assert_eq!(check_update(Kind::Workflow, &old, &new), []);
        let pending = wf(
            json!({ "tasks": tasks() }),
            json!({ "phase": "Pending", "tasks": [{ "name": "a", "phase": "Pending" }] }),
        );
        let mut edited = pending.clone();
        edited["spec"]["tasks"] = json!([tasks()[0]]);
        assert_eq!(check_update(Kind::Workflow, &pending, &edited), [], "nothing dispatched yet");
        let unseen = wf(json!({ "tasks": tasks() }), Value::Null);
        assert_eq!(check_update(Kind::Workflow, &unseen, &edited), []);
    }

    #[test]
    fn pending_with_a_task_dispatched_and_finished_count_as_started() {
        let dispatched = json!({ "phase": "Pending", "tasks": [{ "name": "a", "phase": "Running", "attempts": 1 }] });
        assert!(workflow_started(Some(&dispatched)));
        assert!(workflow_started(Some(&json!({ "phase": "Succeeded" }))));
        assert!(!workflow_started(Some(&json!({ "phase": "Pending" }))));
        assert!(!workflow_started(None));
    }
}
