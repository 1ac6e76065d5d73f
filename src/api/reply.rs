//! The rules of `spec.replies`, the answers to agents' questions: what one reply must hold,
//! and that the list only grows (a reply once written is a message that may have been sent).

use serde_json::Value;

use super::validate::FieldError;
use super::workflow::{Reply, WorkflowSpec};

/// The most text plus JSON one reply may carry: a reply lives in the Workflow object, which
/// must stay well under the 1 MiB object limit with many of them.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The most replies one workflow may hold.
pub const MAX_REPLIES: usize = 1000;

/// What is wrong with the content of one reply (its text and data), before it is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("is empty: give the answer as text (-m) or data (--data)")]
    Empty,
    #[error("data must be a JSON object ({{\"key\": ...}}), not {found}")]
    NotAnObject { found: &'static str },
    #[error("is {bytes} bytes; a reply holds at most {} KiB of text and data", MAX_REPLY_BYTES >> 10)]
    TooLarge { bytes: usize },
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the text and data of a reply: at least one of them, data an object, not too large.
pub fn check_content(message: Option<&str>, data: Option<&Value>) -> Result<(), ContentError> {
    let text = message.filter(|m| !m.trim().is_empty());
    if text.is_none() && data.is_none() {
        return Err(ContentError::Empty);
    }
    if let Some(d) = data
        && !d.is_object()
    {
        return Err(ContentError::NotAnObject { found: json_kind(d) });
    }
    let bytes = message.map_or(0, str::len) + data.map_or(0, |d| d.to_string().len());
    if bytes > MAX_REPLY_BYTES {
        return Err(ContentError::TooLarge { bytes });
    }
    Ok(())
}

/// The problems with a workflow's `spec.replies`: ids unique and present, each naming a task
/// of the workflow, each with content.
pub fn check_replies(spec: &WorkflowSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.replies.len() > MAX_REPLIES {
        errors.push(FieldError::new(
            "spec.replies",
            format!("has {} replies; a workflow holds at most {MAX_REPLIES}", spec.replies.len()),
        ));
    }
    let mut seen = std::collections::HashMap::new();
    for (i, r) in spec.replies.iter().enumerate() {
        let path = format!("spec.replies[{i}]");
        if r.id.trim().is_empty() {
            errors.push(FieldError::new(format!("{path}.id"), "is empty"));
        } else if let Some(first) = seen.insert(r.id.as_str(), i) {
            errors.push(FieldError::new(
                format!("{path}.id"),
                format!("duplicate reply id {:?} (also spec.replies[{first}])", r.id),
            ));
        }
        // An expansion of a `forEach` task (`T[3]`) is answered by that name.
        let expansion_of = r
            .task
            .strip_suffix(']')
            .and_then(|t| t.split_once('['))
            .filter(|(_, i)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .map(|(t, _)| t);
        if !spec
            .tasks
            .iter()
            .any(|t| t.name == r.task || (t.for_each.is_some() && expansion_of == Some(t.name.as_str())))
        {
            errors.push(FieldError::new(format!("{path}.task"), format!("unknown task {:?}", r.task)));
        }
        if let Err(e) = check_content(r.message.as_deref(), r.data.as_ref()) {
            errors.push(FieldError::new(path, e.to_string()));
        }
    }
    errors
}

/// The problems with replacing the stored `old` replies by `new` ones (both as JSON): the
/// list only grows; a reply already written is never changed or removed.
pub fn check_append_only(old: Option<&Value>, new: Option<&Value>) -> Vec<FieldError> {
    let empty = Vec::new();
    let old = old.and_then(Value::as_array).unwrap_or(&empty);
    let new = new.and_then(Value::as_array).unwrap_or(&empty);
    let kept = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    if kept == old.len() {
        return Vec::new();
    }
    let message = if new.len() < old.len() && kept == new.len() {
        format!("replies are append-only: {} written replies would be removed", old.len() - new.len())
    } else {
        "replies are append-only: a written reply may not change (add a new one instead)".to_owned()
    };
    vec![FieldError::new(format!("spec.replies[{kept}]"), message)]
}

/// The replies to `task` in order.
pub fn replies_to<'a>(spec: &'a WorkflowSpec, task: &'a str) -> impl Iterator<Item = &'a Reply> + 'a {
    spec.replies.iter().filter(move |r| r.task == task)
}

/// The next reply to `task` not yet delivered: the first one after `last` (the task's
/// `status.lastReply`), or the first of all when none was delivered.
pub fn next_reply<'a>(spec: &'a WorkflowSpec, task: &'a str, last: Option<&str>) -> Option<&'a Reply> {
    let mut replies = replies_to(spec, task);
    match last {
        Some(id) if spec.replies.iter().any(|r| r.id == id) => {
            replies.by_ref().find(|r| r.id == id)?;
            replies.next()
        }
        _ => replies.next(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::workflow::WorkflowTask;

    fn spec(replies: &[(&str, &str)]) -> WorkflowSpec {
        let task = |n: &str| WorkflowTask {
            name: n.into(),
            agent: Some("a".into()),
            message: "m".into(),
            ..Default::default()
        };
        WorkflowSpec {
            tasks: vec![task("where"), task("plan")],
            replies: replies
                .iter()
                .map(|(id, t)| Reply { id: (*id).into(), task: (*t).into(), message: Some("x".into()), data: None })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn replies_are_delivered_in_order_one_after_the_last_delivered() {
        let s = spec(&[("1", "where"), ("2", "plan"), ("3", "where")]);
        assert_eq!(next_reply(&s, "where", None).map(|r| r.id.as_str()), Some("1"));
        assert_eq!(next_reply(&s, "where", Some("1")).map(|r| r.id.as_str()), Some("3"));
        assert_eq!(next_reply(&s, "where", Some("3")), None, "all delivered");
        assert_eq!(next_reply(&s, "plan", None).map(|r| r.id.as_str()), Some("2"));
        assert_eq!(next_reply(&spec(&[]), "where", None), None);
    }

    #[test]
    fn reply_content_needs_text_or_an_object_and_is_bounded() {
        assert_eq!(check_content(Some("  "), None), Err(ContentError::Empty));
        assert_eq!(check_content(None, None), Err(ContentError::Empty));
        assert_eq!(check_content(None, Some(&json!([1]))), Err(ContentError::NotAnObject { found: "an array" }));
        assert!(check_content(Some("Paris"), None).is_ok());
        assert!(check_content(None, Some(&json!({"city": "Paris"}))).is_ok());
        let big = "x".repeat(MAX_REPLY_BYTES + 1);
        assert_eq!(check_content(Some(&big), None), Err(ContentError::TooLarge { bytes: MAX_REPLY_BYTES + 1 }));
        assert_eq!(ContentError::Empty.to_string(), "is empty: give the answer as text (-m) or data (--data)");
    }

    #[test]
    fn replies_name_tasks_of_the_workflow_with_unique_ids() {
        let mut s = spec(&[("1", "where"), ("1", "nowhere")]);
        s.replies.push(Reply { id: "3".into(), task: "plan".into(), message: None, data: None });
        let errors: Vec<String> = check_replies(&s).iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "spec.replies[1].id: duplicate reply id \"1\" (also spec.replies[0])",
                "spec.replies[1].task: unknown task \"nowhere\"",
                "spec.replies[2]: is empty: give the answer as text (-m) or data (--data)",
            ]
        );
    }

    #[test]
    fn a_reply_may_name_an_expansion_of_a_for_each_task_only() {
        let mut s = spec(&[("1", "plan[3]"), ("2", "where[0]"), ("3", "plan[x]"), ("4", "plan[]")]);
        s.tasks[1].for_each = Some(crate::api::workflow::ForEach { count: Some(5), ..Default::default() });
        let errors: Vec<String> = check_replies(&s).iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "spec.replies[1].task: unknown task \"where[0]\"",
                "spec.replies[2].task: unknown task \"plan[x]\"",
                "spec.replies[3].task: unknown task \"plan[]\"",
            ]
        );
    }

    #[test]
    fn written_replies_may_not_change_or_go() {
        let a = json!({"id": "1", "task": "t", "message": "a"});
        let b = json!({"id": "2", "task": "t", "message": "b"});
        assert!(check_append_only(None, Some(&json!([a]))).is_empty());
        assert!(check_append_only(Some(&json!([a])), Some(&json!([a, b]))).is_empty());
        let removed = check_append_only(Some(&json!([a, b])), Some(&json!([a])));
        assert_eq!(
            removed[0].to_string(),
            "spec.replies[1]: replies are append-only: 1 written replies would be removed"
        );
        let changed = check_append_only(Some(&json!([a])), Some(&json!([b])));
        assert!(
            changed[0]
                .to_string()
                .starts_with("spec.replies[0]: replies are append-only: a written reply may not change")
        );
    }
}
