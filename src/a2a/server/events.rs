//! The demo agent's SSE streams of task events (SendStreamingMessage, SubscribeToTask), framed
//! for either binding: each event in a JSON-RPC response envelope, or bare (HTTP+JSON).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::watch;

use super::super::types::{
    JsonRpcResponse, RequestId, StreamResponse, Task, TaskArtifactUpdateEvent, TaskStatusUpdateEvent,
};

/// When a stream of task events ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// At a terminal state or an interruption (SendStreamingMessage: the caller answers).
    Settled,
    /// At a terminal state only (SubscribeToTask).
    Terminal,
}

/// How each event is written.
#[derive(Clone)]
pub(super) enum Framing {
    /// As the result of a JSON-RPC response with this request id.
    JsonRpc(Option<RequestId>),
    /// As the `StreamResponse` itself (HTTP+JSON).
    Bare,
}

impl Framing {
    fn encode(&self, ev: StreamResponse) -> String {
        let body = match self {
            Framing::JsonRpc(id) => serde_json::to_string(&JsonRpcResponse::success(id.clone(), ev)),
            Framing::Bare => serde_json::to_string(&ev),
        };
        body.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Streams a task's events as SSE: the task first, then artifact and status updates, ending
/// as `until` says.
pub(super) fn sse(framing: Framing, rx: watch::Receiver<Task>, until: Until) -> Response {
    let stream = task_events(framing, rx, until);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn task_events(
    framing: Framing,
    rx: watch::Receiver<Task>,
    until: Until,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        framing: Framing,
        rx: watch::Receiver<Task>,
        last: Option<Task>,
        pending: VecDeque<StreamResponse>,
        done: bool,
    }
    let start = S { framing, rx, last: None, pending: VecDeque::new(), done: false };
    futures::stream::unfold(start, move |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                let body = s.framing.encode(ev);
                return Some((Ok(Event::default().data(body)), s));
            }
            if s.done {
                return None;
            }
            let current = match &s.last {
                None => s.rx.borrow_and_update().clone(),
                Some(_) => {
                    if s.rx.changed().await.is_err() {
                        s.done = true;
                        continue;
                    }
                    s.rx.borrow_and_update().clone()
                }
            };
            match &s.last {
                None => s.pending.push_back(StreamResponse::Task(current.clone())),
                Some(prev) => {
                    for a in current.artifacts.iter().skip(prev.artifacts.len()) {
                        s.pending.push_back(StreamResponse::ArtifactUpdate(TaskArtifactUpdateEvent {
                            task_id: current.id.clone(),
                            context_id: current.context_id.clone(),
                            artifact: a.clone(),
                            append: false,
                            last_chunk: true,
                            metadata: None,
                        }));
                    }
                    if prev.status != current.status {
                        s.pending.push_back(StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
                            task_id: current.id.clone(),
                            context_id: current.context_id.clone(),
                            status: current.status.clone(),
                            metadata: None,
                        }));
                    }
                }
            }
            let st = current.status.state;
            s.done = st.is_terminal() || (until == Until::Settled && st.is_interrupted());
            s.last = Some(current);
        }
    })
}
