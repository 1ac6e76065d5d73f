//! Delivering a reply: the answer goes to the agent as a message on the same A2A task (its
//! `taskId` and `contextId`), on the replica that holds the task; the attempt then follows
//! the task as any other.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::attempt::{Answer, task_result};
use super::{Engine, Error, TaskRef};
use crate::a2a;
use crate::a2a::types::{ErrorCode, Message, Part, Role, SendMessageConfiguration, SendMessageResponse};
use crate::api::workflow::Reply;
use crate::controller::replies;

impl Engine {
    /// Sends `reply` on the A2A task `id`, found on one of the agent's `urls`. Returns the client of the
    /// replica that holds the task and, when the agent's answer already settles the attempt
    /// (a result, another question, a direct message), that answer; otherwise the task is to
    /// be followed. A task no longer waiting (the reply was delivered before a restart) is
    /// followed without sending again.
    pub(super) async fn deliver_reply(
        &self,
        t: &TaskRef,
        (target, urls): (&crate::api::Agent, &[String]),
        id: &str,
        reply: &Reply,
        timeout: Option<Duration>,
        mut cancelled: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(a2a::Client, Option<Result<Answer, Error>>), Error> {
        let mut not_found = None;
        for url in urls {
            let client = self.client_for(target, url).await?;
            let task = match client.get_task(id).await {
                Ok(task) => task,
                Err(e) if e.rpc_code() == Some(ErrorCode::TaskNotFound) => {
                    not_found = Some(e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if task.status.state.is_terminal() {
                return Ok((client, Some(task_result(&task))));
            }
            if !task.status.state.is_interrupted() {
                return Ok((client, None));
            }
            let mut parts = Vec::new();
            if let Some(text) = &reply.message {
                parts.push(Part::text(text.clone()));
            }
            if let Some(data) = &reply.data {
                parts.push(Part::data(data.clone()));
            }
            let mut message = Message::new(Role::User, replies::message_id(&t.uid, &t.task, &reply.id), parts);
            crate::traces::annotate(&mut message.metadata);
            message.task_id = Some(id.to_owned());
            message.context_id = (!task.context_id.is_empty()).then(|| task.context_id.clone());
            let config = SendMessageConfiguration { return_immediately: true, ..Default::default() };
            let sent = tokio::select! {
                r = client.send_message(message, Some(config)) => r?,
                () = &mut cancelled => return Err(Error::CancelledBeforeAnswer),
            };
            let answered = match sent {
                SendMessageResponse::Message(m) => return Ok((client, Some(Ok(Answer::Parts(m.parts))))),
                SendMessageResponse::Task(after) => after,
            };
            if answered.status.state.is_terminal() {
                return Ok((client, Some(task_result(&answered))));
            }
            // The answer to a message sent with returnImmediately may be the task as it was:
            // still asking the question just answered. Until the agent has moved on, its
            // state says nothing about the reply.
            let before = Fingerprint::of(&task);
            let moved = if Fingerprint::of(&answered) != before {
                answered
            } else {
                let wait = moved_on(&client, id, &before);
                tokio::select! {
                    r = async {
                        match timeout {
                            Some(d) => tokio::time::timeout(d, wait).await.unwrap_or(Err(Error::TimedOut(d))),
                            None => wait.await,
                        }
                    } => r?,
                    () = &mut cancelled => return Err(Error::Cancelled),
                }
            };
            let settled = moved.status.state.is_terminal() || moved.status.state.is_interrupted();
            return Ok(if settled { (client, Some(task_result(&moved))) } else { (client, None) });
        }
        match not_found {
            Some(e) => Err(e.into()),
            None => Err(Error::NoEndpoint(t.task.to_string())),
        }
    }
}

/// What tells one state of a waiting task from the next: its state, its status message and
/// time, and how much history and how many artifacts it has.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    state: a2a::types::TaskState,
    message: Option<String>,
    timestamp: Option<String>,
    history: usize,
    artifacts: usize,
}

impl Fingerprint {
    fn of(task: &a2a::types::Task) -> Self {
        Fingerprint {
            state: task.status.state,
            message: task.status.message.as_ref().map(|m| m.message_id.clone()),
            timestamp: task.status.timestamp.clone(),
            history: task.history.len(),
            artifacts: task.artifacts.len(),
        }
    }
}

/// Polls the task until it is no longer as it was before the reply.
async fn moved_on(client: &a2a::Client, id: &str, before: &Fingerprint) -> Result<a2a::types::Task, Error> {
    let mut wait = Duration::from_millis(20);
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
        let task = client.get_task(id).await?;
        if Fingerprint::of(&task) != *before {
            return Ok(task);
        }
    }
}
