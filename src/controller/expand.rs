//! `forEach`: a task run once per item, expanded when the engine takes the spec (a literal
//! `items` list, or `count`) or when the upstream task it runs over has succeeded (`task`: its
//! output's JSON array). Expansion `i` of task `T` is the task `T[i]`, with the item for
//! `{{ item }}` and `{{ index }}`; a task that depends on `T` depends on every expansion.
//! Until its upstream task has succeeded, a `forEach.task` task stands as itself (it waits
//! for that task, so it is never dispatched as such).

use std::collections::HashMap;

use serde_json::Value;

use crate::api::validate::MAX_FOR_EACH;
use crate::api::workflow::{TaskPhase, TaskStatus, WorkflowSpec, WorkflowTask};

/// The reason of a `forEach` task whose upstream output is not a JSON array.
pub const FOR_EACH_INVALID: &str = "ForEachInvalid";

/// A spec with its `forEach` tasks expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct Expanded {
    pub spec: WorkflowSpec,
    /// `forEach` tasks still waiting for their upstream task: (task, upstream task).
    pub waiting: Vec<(String, String)>,
    /// `forEach` tasks whose upstream output cannot be expanded: (task, why).
    pub invalid: Vec<(String, String)>,
}

/// Whether `spec` has a `forEach` task.
pub fn has_for_each(spec: &WorkflowSpec) -> bool {
    spec.tasks.iter().any(|t| t.for_each.is_some())
}

/// Expands `declared`'s `forEach` tasks, reading upstream outputs from `status` (whatever its
/// order). `None` when the spec has none.
pub fn expand(declared: &WorkflowSpec, status: &[TaskStatus]) -> Option<Expanded> {
    if !has_for_each(declared) {
        return None;
    }
    let by_name: HashMap<&str, &TaskStatus> = status.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut names_of: HashMap<&str, Vec<String>> = HashMap::new();
    let mut tasks: Vec<WorkflowTask> = Vec::with_capacity(declared.tasks.len());
    let (mut waiting, mut invalid) = (Vec::new(), Vec::new());
    for t in &declared.tasks {
        let Some(f) = &t.for_each else {
            tasks.push(t.clone());
            continue;
        };
        let mut deps = t.depends_on.clone();
        if let Some(source) = &f.task
            && !deps.contains(source)
        {
            deps.push(source.clone());
        }
        let items: Result<Option<Vec<Value>>, String> = if let Some(items) = &f.items {
            Ok(Some(items.clone()))
        } else if let Some(count) = f.count {
            Ok(Some((0..count).map(Value::from).collect()))
        } else if let Some(source) = &f.task {
            match by_name.get(source.as_str()) {
                Some(s) if s.phase == TaskPhase::Succeeded => array_of(s).map(Some),
                _ => Ok(None),
            }
        } else {
            Ok(Some(Vec::new()))
        };
        match items {
            Ok(Some(items)) => {
                let names: Vec<String> = (0..items.len()).map(|i| format!("{}[{i}]", t.name)).collect();
                let base = WorkflowTask { for_each: None, depends_on: Vec::new(), ..t.clone() };
                for (i, (item, name)) in items.into_iter().zip(&names).enumerate() {
                    tasks.push(WorkflowTask {
                        name: name.clone(),
                        depends_on: deps.clone(),
                        item: Some((i, item)),
                        ..base.clone()
                    });
                }
                names_of.insert(t.name.as_str(), names);
            }
            other => {
                match other {
                    Err(why) => invalid.push((t.name.clone(), why)),
                    _ => waiting.push((t.name.clone(), f.task.clone().unwrap_or_default())),
                }
                tasks.push(WorkflowTask { depends_on: deps, ..t.clone() });
            }
        }
    }
    if !names_of.is_empty() {
        for t in &mut tasks {
            if t.depends_on.iter().any(|d| names_of.contains_key(d.as_str())) {
                t.depends_on = t
                    .depends_on
                    .iter()
                    .flat_map(|d| names_of.get(d.as_str()).cloned().unwrap_or_else(|| vec![d.clone()]))
                    .collect();
            }
        }
    }
    Some(Expanded { spec: WorkflowSpec { tasks, ..declared.clone() }, waiting, invalid })
}

/// The JSON array a succeeded task's output is: its data part, else its text; at most
/// `MAX_FOR_EACH` items, the bound a spelled-out `items` list has.
fn array_of(s: &TaskStatus) -> Result<Vec<Value>, String> {
    let items = output_array(s)?;
    if items.len() > MAX_FOR_EACH as usize {
        return Err(format!(
            "the output of task {:?} is an array of {} items, more than the {MAX_FOR_EACH} a forEach runs",
            s.name,
            items.len()
        ));
    }
    Ok(items)
}

fn output_array(s: &TaskStatus) -> Result<Vec<Value>, String> {
    if let Some(Value::Array(items)) = &s.data {
        return Ok(items.clone());
    }
    if s.output_ref.is_some() {
        return Err(format!(
            "the output of task {:?} is longer than the 64 KiB a forEach reads; make it shorter or return the array as a data part",
            s.name
        ));
    }
    let text = s.output.as_deref().unwrap_or_default();
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => Err(format!(
            "the output of task {:?} is JSON but not an array (it is {}); forEach needs an array",
            s.name,
            match other {
                Value::Object(_) => "an object",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
        Err(e) => Err(format!("the output of task {:?} is not a JSON array: {e}", s.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> WorkflowSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn items_expand_at_once_and_dependents_wait_for_every_expansion() {
        let s = spec(serde_json::json!({"tasks": [
            {"name": "fan", "agent": "a", "message": "do {{ item }}", "forEach": {"items": ["x", "y"]}},
            {"name": "join", "agent": "a", "message": "done", "dependsOn": ["fan"]},
        ]}));
        let e = expand(&s, &[]).expect("has forEach");
        let names: Vec<&str> = e.spec.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fan[0]", "fan[1]", "join"]);
        assert_eq!(e.spec.tasks[1].item, Some((1, Value::from("y"))));
        assert_eq!(e.spec.tasks[2].depends_on, ["fan[0]", "fan[1]"]);
        assert!(e.waiting.is_empty() && e.invalid.is_empty());
    }

    #[test]
    fn a_task_over_an_upstream_output_waits_for_it_then_expands() {
        let s = spec(serde_json::json!({"tasks": [
            {"name": "plan", "agent": "a", "message": "list"},
            {"name": "fan", "agent": "a", "message": "{{ item.city }}", "forEach": {"task": "plan"}},
            {"name": "join", "agent": "a", "message": "done", "dependsOn": ["fan"]},
        ]}));
        let e = expand(&s, &[TaskStatus::pending("plan")]).expect("has forEach");
        assert_eq!(e.waiting, [("fan".to_owned(), "plan".to_owned())]);
        assert_eq!(e.spec.tasks[1].depends_on, ["plan"], "waits for its upstream task");
        let mut done = TaskStatus::pending("plan");
        done.phase = TaskPhase::Succeeded;
        done.output = Some(r#"[{"city": "Oslo"}, {"city": "Rome"}, {"city": "Lima"}]"#.into());
        let e = expand(&s, std::slice::from_ref(&done)).expect("has forEach");
        assert_eq!(e.spec.tasks.len(), 5);
        assert_eq!(e.spec.tasks[4].depends_on, ["fan[0]", "fan[1]", "fan[2]"]);
        done.output = Some("{\"a\": 1}".into());
        let e = expand(&s, &[done]).expect("has forEach");
        assert_eq!(e.invalid.len(), 1);
        assert!(e.invalid[0].1.contains("not an array (it is an object)"), "{}", e.invalid[0].1);
    }

    #[test]
    fn an_upstream_array_past_the_item_bound_fails_the_task_instead_of_expanding() {
        let s = spec(serde_json::json!({"tasks": [
            {"name": "plan", "agent": "a", "message": "list"},
            {"name": "fan", "agent": "a", "message": "{{ item }}", "forEach": {"task": "plan"}},
        ]}));
        let mut done = TaskStatus::pending("plan");
        done.phase = TaskPhase::Succeeded;
        done.data = Some(Value::Array(vec![Value::from(0); MAX_FOR_EACH as usize + 1]));
        let e = expand(&s, &[done]).expect("has forEach");
        assert_eq!(e.spec.tasks.len(), 2, "nothing expanded");
        assert_eq!(e.invalid.len(), 1);
        assert!(e.invalid[0].1.contains("100001 items, more than the 100000"), "{}", e.invalid[0].1);
    }
}
