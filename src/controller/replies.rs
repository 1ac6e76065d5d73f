//! Questions mid-task, as pure functions over spec and status: which waiting task has an
//! answer to deliver (`spec.replies`), whether `a2a reply` may add one, and which waiting task
//! ran out of `inputTimeout`. The engine does the I/O: it sends the answer on the same A2A
//! task (its `taskId` and `contextId`) and follows the task to its next state.

use std::time::Duration;

use jiff::Timestamp;

use super::plan::Step;
use crate::api::common::Time;
use crate::api::reply::{self, ContentError};
use crate::api::workflow::{Reply, TaskPhase, WorkflowSpec, WorkflowStatus};

/// The reason of a task failed because its question was not answered in time.
pub const INPUT_TIMEOUT: &str = "InputTimeout";

/// A reply the engine took for task `index`: the task is Running again, the reply recorded as
/// delivered (`lastReply`), and the reply is to be sent on the A2A task `a2a_task_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    pub index: usize,
    pub reply: Reply,
    pub a2a_task_id: String,
    pub agent: String,
    pub attempt: u32,
}

/// Takes the next reply of every waiting task that has one: the task goes back to Running
/// and records the reply as its `lastReply` (so it is consumed once, also after a restart of
/// the engine that reads that status back).
pub fn take(spec: &WorkflowSpec, status: &mut WorkflowStatus, now: Timestamp) -> Vec<Taken> {
    if spec.replies.is_empty() {
        return Vec::new();
    }
    let mut taken = Vec::new();
    for (i, t) in status.tasks.iter_mut().enumerate() {
        if !t.phase.is_waiting() {
            continue;
        }
        let (Some(id), Some(agent)) = (t.a2a_task_id.clone(), t.agent.clone()) else { continue };
        let Some(r) = reply::next_reply(spec, &t.name, t.last_reply.as_deref()) else { continue };
        t.phase = TaskPhase::Running;
        t.last_reply = Some(r.id.clone());
        t.message = None;
        t.waiting_since = None;
        t.started_at = t.started_at.or(Some(Time(now)));
        taken.push(Taken { index: i, reply: r.clone(), a2a_task_id: id, agent, attempt: t.attempts.max(1) });
    }
    taken
}

/// Fails waiting tasks whose `inputTimeout` passed (reason `InputTimeout`, naming how long
/// they waited) and notes their A2A tasks as abandoned, to cancel on their agents; sets the
/// step's wake-up for the next one to pass. Not retried: a new attempt would ask again.
pub fn expire(spec: &WorkflowSpec, status: &mut WorkflowStatus, now: Timestamp, out: &mut Step) {
    for (i, task) in spec.tasks.iter().enumerate() {
        let Some(limit) = &task.input_timeout else { continue };
        let Some(t) = status.tasks.get_mut(i) else { continue };
        if !t.phase.is_waiting() {
            continue;
        }
        let since = t.waiting_since.map_or(now, |s| s.0);
        let end = since + jiff::SignedDuration::try_from(limit.value()).unwrap_or(jiff::SignedDuration::MAX);
        if now < end {
            out.wake_at = Some(out.wake_at.map_or(end, |w| w.min(end)));
            continue;
        }
        let waited = Duration::try_from(now.duration_since(since)).unwrap_or_default();
        let asked = t.message.take().unwrap_or_default();
        t.error = Some(format!(
            "no answer within inputTimeout {limit}: waited {} for \"{asked}\" ({:?})",
            human(waited),
            t.phase
        ));
        t.phase = TaskPhase::Failed;
        t.reason = Some(INPUT_TIMEOUT.to_owned());
        t.waiting_since = None;
        t.finished_at = Some(Time(now));
        out.abandoned.push(i);
        out.touched.push(i);
        out.changed = true;
    }
}

/// `2.3s`, `4m10s`: a wait in words.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 { format!("{}m{}s", secs / 60, secs % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}

/// Why `a2a reply` refuses an answer; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyRefused {
    #[error("workflow {workflow:?} has no task {task:?} (it has: {names})")]
    UnknownTask { workflow: String, task: String, names: String },
    #[error(
        "task {task:?} is not waiting for input (it is {phase}); only an InputRequired or AuthRequired task takes a reply"
    )]
    NotWaiting { task: String, phase: String },
    #[error("task {task:?} already has a reply on its way (id {id}); wait until the agent has it")]
    AlreadyReplied { task: String, id: String },
    #[error("the reply {0}")]
    Content(#[from] ContentError),
}

/// Whether a reply with this content may be added for `task` now: the task exists and waits
/// for input, no earlier reply to it is still undelivered, and the content is valid.
pub fn check(
    workflow: &str,
    spec: &WorkflowSpec,
    status: &WorkflowStatus,
    task: &str,
    message: Option<&str>,
    data: Option<&serde_json::Value>,
) -> Result<(), ReplyRefused> {
    if !spec.tasks.iter().any(|t| t.name == task) {
        let names: Vec<&str> = spec.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(ReplyRefused::UnknownTask {
            workflow: workflow.to_owned(),
            task: task.to_owned(),
            names: names.join(", "),
        });
    }
    let t = status.tasks.iter().find(|t| t.name == task);
    let phase = t.map_or(TaskPhase::Pending, |t| t.phase);
    if !phase.is_waiting() {
        let phase = match t.and_then(|t| t.error.as_deref()) {
            Some(e) if phase.is_terminal() => format!("{phase:?}: {e}"),
            _ => format!("{phase:?}"),
        };
        return Err(ReplyRefused::NotWaiting { task: task.to_owned(), phase });
    }
    if let Some(r) = reply::next_reply(spec, task, t.and_then(|t| t.last_reply.as_deref())) {
        return Err(ReplyRefused::AlreadyReplied { task: task.to_owned(), id: r.id.clone() });
    }
    reply::check_content(message, data)?;
    Ok(())
}

/// The messageId of a reply: stable, so an agent that sees it twice (the engine restarted
/// before it wrote that it sent it) can tell it is the same message.
pub fn message_id(workflow_uid: &str, task: &str, reply_id: &str) -> String {
    format!("{workflow_uid}-{task}-reply-{reply_id}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::quantity::Duration as Dur;
    use crate::api::workflow::{TaskStatus, WorkflowTask};

    fn spec() -> WorkflowSpec {
        let task = |n: &str| WorkflowTask {
            name: n.into(),
            agent: Some("a".into()),
            message: "m".into(),
            ..Default::default()
        };
        WorkflowSpec { tasks: vec![task("where"), task("plan")], ..Default::default() }
    }

    fn waiting(name: &str, since: Timestamp) -> TaskStatus {
        let mut t = TaskStatus::pending(name);
        t.phase = TaskPhase::InputRequired;
        t.attempts = 1;
        t.agent = Some("a".into());
        t.a2a_task_id = Some("t-1".into());
        t.message = Some("which city?".into());
        t.waiting_since = Some(Time(since));
        t
    }

    #[test]
    fn a_reply_is_taken_once_and_the_task_runs_again() {
        let now = Timestamp::now();
        let mut s = spec();
        s.replies.push(Reply { id: "1".into(), task: "where".into(), message: Some("Paris".into()), data: None });
        let mut status =
            WorkflowStatus { tasks: vec![waiting("where", now), TaskStatus::pending("plan")], ..Default::default() };
        let taken = take(&s, &mut status, now);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].index, taken[0].a2a_task_id.as_str(), taken[0].reply.id.as_str()), (0, "t-1", "1"));
        let t = &status.tasks[0];
        assert_eq!((t.phase, t.last_reply.as_deref(), t.message.as_deref()), (TaskPhase::Running, Some("1"), None));
        // The agent asks again: the same reply is not delivered twice.
        status.tasks[0] = TaskStatus { last_reply: Some("1".into()), ..waiting("where", now) };
        assert!(take(&s, &mut status, now).is_empty());
    }

    #[test]
    fn reply_validation_names_what_is_wrong() {
        let now = Timestamp::now();
        let mut s = spec();
        let status =
            WorkflowStatus { tasks: vec![waiting("where", now), TaskStatus::pending("plan")], ..Default::default() };
        let e = check("trip", &s, &status, "nowhere", Some("x"), None).unwrap_err();
        assert_eq!(e.to_string(), "workflow \"trip\" has no task \"nowhere\" (it has: where, plan)");
        let e = check("trip", &s, &status, "plan", Some("x"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "task \"plan\" is not waiting for input (it is Pending); only an InputRequired or AuthRequired task takes a reply"
        );
        let e = check("trip", &s, &status, "where", Some(" "), None).unwrap_err();
        assert_eq!(e.to_string(), "the reply is empty: give the answer as text (-m) or data (--data)");
        let e = check("trip", &s, &status, "where", None, Some(&json!("Paris"))).unwrap_err();
        assert_eq!(e.to_string(), "the reply data must be a JSON object ({\"key\": ...}), not a string");
        assert_eq!(check("trip", &s, &status, "where", Some("Paris"), None), Ok(()));
        s.replies.push(Reply { id: "7".into(), task: "where".into(), message: Some("Paris".into()), data: None });
        let e = check("trip", &s, &status, "where", Some("Rome"), None).unwrap_err();
        assert_eq!(e, ReplyRefused::AlreadyReplied { task: "where".into(), id: "7".into() });
    }

    #[test]
    fn an_unanswered_question_fails_its_task_after_input_timeout_and_not_before() {
        let asked = Timestamp::now();
        let mut s = spec();
        s.tasks[0].input_timeout = Some(serde_json::from_value::<Dur>(json!("2s")).expect("duration"));
        let mut status =
            WorkflowStatus { tasks: vec![waiting("where", asked), TaskStatus::pending("plan")], ..Default::default() };
        let mut step = Step::default();
        expire(&s, &mut status, asked + jiff::SignedDuration::from_secs(1), &mut step);
        assert_eq!(status.tasks[0].phase, TaskPhase::InputRequired);
        assert_eq!(step.wake_at, Some(asked + jiff::SignedDuration::from_secs(2)), "woken when it passes");
        let mut step = Step::default();
        expire(&s, &mut status, asked + jiff::SignedDuration::from_millis(2500), &mut step);
        let t = &status.tasks[0];
        assert_eq!((t.phase, t.reason.as_deref()), (TaskPhase::Failed, Some(INPUT_TIMEOUT)));
        assert_eq!(
            t.error.as_deref(),
            Some("no answer within inputTimeout 2s: waited 2.5s for \"which city?\" (InputRequired)")
        );
        assert_eq!(step.abandoned, [0], "its A2A task is cancelled on the agent");
    }
}
