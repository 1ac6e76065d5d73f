//! Multi-turn tasks on the demo agent: a message naming a task answers that task's question
//! (the `ask` skill), and the official TCK's message ids that mean "ask".

use tokio::sync::watch;

use super::super::types::{Artifact, ErrorCode, Message, RpcError, Task, TaskState, TaskStatus};
use super::{Skill, Slot, Tasks, agent_status, new_id, now, task_not_found, wire};

/// Gives an interrupted task the message it waits for: the `ask` skill's answer completes it
/// (or, with `ask_again`, is recorded and the question asked again). A message for a
/// finished task, or for one that is working and asked nothing, is refused.
pub(super) fn continue_task(
    tasks: &mut Tasks,
    task_id: &str,
    message: Message,
    ask_again: bool,
) -> Result<watch::Receiver<Task>, RpcError> {
    let entry = tasks.by_id.get_mut(task_id).ok_or_else(|| task_not_found(task_id))?;
    let current = entry.snapshot();
    if let Some(context) = &message.context_id
        && *context != current.context_id
    {
        return Err(RpcError::new(
            ErrorCode::InvalidParams,
            format!("message.contextId {context:?} is not the context of task {task_id} ({:?})", current.context_id),
        ));
    }
    let state = current.status.state;
    let refuse = |why: String| Err(wire::error(ErrorCode::UnsupportedOperation, why, &[("taskId", task_id)]));
    if state.is_terminal() {
        return refuse(format!("task {task_id} is already {state}; a finished task takes no more messages"));
    }
    let Slot::Live(tx) = &entry.slot else {
        return refuse(format!("task {task_id} is already {state}; a finished task takes no more messages"));
    };
    if !state.is_interrupted() {
        return refuse(format!(
            "task {task_id} is {state}; it takes a message only when it asks for one (input-required)"
        ));
    }
    let message_id = message.message_id.clone();
    let mut answer = message;
    answer.context_id = Some(current.context_id.clone());
    let parts = answer.parts.clone();
    tx.send_modify(|t| {
        // The question becomes part of the conversation, followed by its answer.
        let question = t.status.message.take();
        if let Some(q) = &question {
            t.history.push(q.clone());
        }
        t.history.push(answer);
        if ask_again {
            let text = question.map_or_else(String::new, |q| q.text());
            t.status = agent_status(TaskState::InputRequired, &text);
            return;
        }
        t.artifacts.push(Artifact {
            artifact_id: new_id(),
            name: Some(Skill::Ask.id().to_owned()),
            parts,
            ..Default::default()
        });
        t.status = TaskStatus { state: TaskState::Completed, message: None, timestamp: Some(now()) };
    });
    let rx = tx.subscribe();
    let state = rx.borrow().status.state;
    if state.is_terminal() {
        entry.slot = Slot::Done(Box::new(rx.borrow().clone()));
    }
    entry.message_ids.push(message_id.clone());
    tasks.by_message.insert(message_id.clone(), task_id.to_owned());
    let event = if state.is_terminal() { "end" } else { "input-required" };
    note!("a2a-demo-agent: event={event} task={task_id} messageId={message_id} state={state}");
    Ok(rx)
}

/// The skill the official A2A TCK means by a message id: its prerequisite
/// `tck-input-required-…` messages need a task that asks, which is the `ask` skill; other
/// ids pick the skill as usual.
pub(super) fn tck_skill(enabled: &[Skill], message_id: &str) -> Option<Skill> {
    let asks = message_id.starts_with("tck-input-required-");
    (asks && enabled.contains(&Skill::Ask)).then_some(Skill::Ask)
}
