//! The A2A operations of the demo agent, written once for both bindings: each takes the
//! request as the specification shapes it and answers with its result or an A2A error
//! ([`RpcError`]). The bindings ([`super::jsonrpc`], [`super::rest`]) only read requests off
//! the wire and write answers back, so an operation behaves the same whichever one carried it,
//! and a check that belongs to every request (a version, a credential) sits in front of both.

use axum::http::HeaderMap;
use tokio::sync::watch;

use super::super::types::{
    CancelTaskRequest, ErrorCode, GetTaskRequest, RpcError, SendMessageRequest, SendMessageResponse,
    SubscribeToTaskRequest, Task, VERSION_HEADER,
};
use super::{
    AgentState, Entry, Error, Shared, accept_message, cancel, internal, list, snapshot, subscribe, task_not_found,
    trim_history, wait_settled, wire,
};

/// The protocol version a request asks for (`A2A-Version`) must be 1.0; a request without
/// it is a 0.3 request.
pub(super) fn check_version(headers: &HeaderMap) -> Result<(), Error> {
    let Some(v) = headers.get(VERSION_HEADER) else {
        return Err(Error::VersionMissing);
    };
    let v = v.to_str().unwrap_or("").trim();
    let mut nums = v.split('.');
    let (major, minor) = (nums.next(), nums.next().unwrap_or("0"));
    if major == Some("1") && minor == "0" { Ok(()) } else { Err(Error::VersionUnsupported(v.to_owned())) }
}

fn invalid(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::InvalidParams, e.to_string())
}

/// `SendMessage`: waits until the task is finished or asks for input, unless the request
/// says `returnImmediately`.
pub(super) async fn send_message(state: &Shared, p: SendMessageRequest) -> Result<SendMessageResponse, RpcError> {
    let history_length = p.configuration.as_ref().and_then(|c| c.history_length);
    let history_length = wire::history_length(history_length).map_err(invalid)?;
    let immediately = p.configuration.as_ref().is_some_and(|c| c.return_immediately);
    let rx = accept_message(state, p.message)?;
    let task = if immediately { rx.borrow().clone() } else { wait_settled(rx).await };
    Ok(SendMessageResponse::Task(trim_history(task, history_length)))
}

/// `SendStreamingMessage`: the task to stream until it is finished or asks for input.
pub(super) fn send_streaming_message(state: &Shared, p: SendMessageRequest) -> Result<watch::Receiver<Task>, RpcError> {
    accept_message(state, p.message)
}

/// `GetTask`.
pub(super) fn get_task(state: &AgentState, p: GetTaskRequest) -> Result<Task, RpcError> {
    let history_length = wire::history_length(p.history_length).map_err(invalid)?;
    let task = snapshot(state, &p.id).ok_or_else(|| task_not_found(&p.id))?;
    Ok(trim_history(task, history_length))
}

/// `ListTasks`.
pub(super) fn list_tasks(state: &AgentState, p: list::ListTasksRequest) -> Result<list::ListTasksResponse, RpcError> {
    let query = list::Query::new(p).map_err(invalid)?;
    let tasks = state.tasks.lock().map_err(|_| internal("the task table"))?;
    query
        .page(tasks.by_id.values().map(Entry::snapshot))
        .map_err(|e| RpcError::new(ErrorCode::InternalError, e.to_string()))
}

/// `CancelTask`.
pub(super) fn cancel_task(state: &AgentState, p: CancelTaskRequest) -> Result<Task, RpcError> {
    cancel(state, &p.id)
}

/// `SubscribeToTask`: the task to stream until it is finished. A subscriber stays through
/// input-required: the answer comes by another request, and the subscriber sees the task end.
pub(super) fn subscribe_to_task(
    state: &AgentState,
    p: SubscribeToTaskRequest,
) -> Result<watch::Receiver<Task>, RpcError> {
    subscribe(state, &p.id)
}

/// The answer to `GetExtendedAgentCard`: the card declares none.
pub(super) fn no_extended_agent_card() -> RpcError {
    wire::error(ErrorCode::UnsupportedOperation, "the demo agent does not implement GetExtendedAgentCard", &[])
}

/// The answer to every push notification config operation: the card declares none.
pub(super) fn no_push_notifications() -> RpcError {
    wire::error(ErrorCode::PushNotificationNotSupported, "the demo agent does not send push notifications", &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_header_must_say_1_0() {
        let mut h = HeaderMap::new();
        assert!(check_version(&h).unwrap_err().to_string().contains("missing"));
        h.insert(VERSION_HEADER, "0.3".parse().unwrap());
        assert!(check_version(&h).unwrap_err().to_string().contains("\"0.3\""));
        h.insert(VERSION_HEADER, "1.0".parse().unwrap());
        assert!(check_version(&h).is_ok());
        h.insert(VERSION_HEADER, "1.0.1".parse().unwrap());
        assert!(check_version(&h).is_ok());
    }
}
