//! The JSON-RPC 2.0 binding of A2A 1.0: each operation is one POST of a JSON-RPC request to
//! the interface URL; the streaming ones answer with server-sent events.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::{Error, EventStream, Http, Result, http_status, invalid, quote, read_reply, read_response, send};
use super::sse::SseEvent;
use super::transport::{BoxFuture, Transport};
use super::types::{
    AgentCard, CancelTaskRequest, GetExtendedAgentCardRequest, GetTaskRequest, JsonRpcRequest, JsonRpcResponse,
    ListTasksRequest, ListTasksResponse, PROTOCOL_VERSION, SendMessageRequest, SendMessageResponse, StreamResponse,
    SubscribeToTaskRequest, Task, VERSION_HEADER, method,
};

/// The limit for each single non-blocking request (`GetTask`, `CancelTask`, opening a stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A2A over JSON-RPC at one endpoint.
pub struct JsonRpc {
    http: Http,
    /// The agent's base URL, for errors about the agent as a whole.
    base: String,
    endpoint: String,
    next_id: AtomicI64,
}

impl std::fmt::Debug for JsonRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRpc").field("endpoint", &self.endpoint).finish()
    }
}

impl JsonRpc {
    pub(crate) fn new(http: Http, base: &str, endpoint: String) -> Self {
        JsonRpc { http, base: base.to_owned(), endpoint, next_id: AtomicI64::new(1) }
    }

    fn rpc_request(&self, body: Vec<u8>, accept: &str) -> Result<Request<Full<Bytes>>> {
        let endpoint = &self.endpoint;
        Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept)
            .header(VERSION_HEADER, HeaderValue::from_static(PROTOCOL_VERSION))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(endpoint, e))
    }

    fn encode<P: Serialize>(&self, method: &str, params: &P) -> Result<(i64, Vec<u8>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&JsonRpcRequest::new(id, method, params)).map_err(|source| Error::Decode {
            url: self.base.clone(),
            what: format!("the {method} request"),
            source,
        })?;
        Ok((id, body))
    }

    async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let endpoint = &self.endpoint;
        let (_, body) = self.encode(method, params)?;
        let req = self.rpc_request(body, "application/json")?;
        let (status, body) = read_reply(endpoint, send(&self.http, endpoint, req, timeout)).await?;
        decode_rpc(method, endpoint, status, &body)
    }

    async fn stream<P: Serialize>(&self, method: &str, params: &P) -> Result<EventStream> {
        let endpoint = self.endpoint.clone();
        let (_, body) = self.encode(method, params)?;
        let req = self.rpc_request(body, "text/event-stream")?;
        let resp = send(&self.http, &endpoint, req, Some(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        if !super::sse::is_event_stream(resp.headers()) {
            // An upfront error (or a server that does not stream) answers with plain JSON.
            let (_, body) = read_response(&endpoint, resp).await?;
            let one: StreamResponse = decode_rpc(method, &endpoint, status, &body)?;
            return Ok(Box::pin(futures::stream::iter([Ok(one)])));
        }
        Ok(super::sse::events(resp.into_body(), endpoint, method.to_owned(), decode_event))
    }
}

impl Transport for JsonRpc {
    fn binding(&self) -> &'static str {
        super::types::BINDING_JSONRPC
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<SendMessageResponse>> {
        Box::pin(async move { self.call(method::SEND_MESSAGE, &request, None).await })
    }

    fn send_streaming_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<EventStream>> {
        Box::pin(async move { self.stream(method::SEND_STREAMING_MESSAGE, &request).await })
    }

    fn get_task(&self, request: GetTaskRequest) -> BoxFuture<'_, Result<Task>> {
        Box::pin(async move { self.call(method::GET_TASK, &request, Some(REQUEST_TIMEOUT)).await })
    }

    fn list_tasks(&self, request: ListTasksRequest) -> BoxFuture<'_, Result<ListTasksResponse>> {
        Box::pin(async move { self.call(method::LIST_TASKS, &request, Some(REQUEST_TIMEOUT)).await })
    }

    fn cancel_task(&self, request: CancelTaskRequest) -> BoxFuture<'_, Result<Task>> {
        Box::pin(async move { self.call(method::CANCEL_TASK, &request, Some(REQUEST_TIMEOUT)).await })
    }

    fn subscribe_to_task(&self, request: SubscribeToTaskRequest) -> BoxFuture<'_, Result<EventStream>> {
        Box::pin(async move { self.stream(method::SUBSCRIBE_TO_TASK, &request).await })
    }

    fn get_extended_agent_card(&self, request: GetExtendedAgentCardRequest) -> BoxFuture<'_, Result<AgentCard>> {
        Box::pin(async move { self.call(method::GET_EXTENDED_AGENT_CARD, &request, Some(REQUEST_TIMEOUT)).await })
    }
}

fn decode_rpc<R: DeserializeOwned>(method: &str, url: &str, status: StatusCode, body: &[u8]) -> Result<R> {
    let rpc = |error| Error::Rpc { method: method.to_owned(), url: url.to_owned(), error };
    // One parse in the common case (a well-formed answer); the body is read again only to
    // find the most useful error.
    let source = match serde_json::from_slice::<JsonRpcResponse<R>>(body) {
        // A JSON-RPC error may come with any HTTP status; it says more than the status.
        Ok(resp) if resp.error.is_some() || status.is_success() => return resp.into_result().map_err(rpc),
        Ok(_) => return Err(http_status(url, status, body)),
        Err(e) => e,
    };
    if let Ok(JsonRpcResponse::<serde::de::IgnoredAny> { error: Some(error), .. }) = serde_json::from_slice(body) {
        return Err(rpc(error));
    }
    if !status.is_success() {
        return Err(http_status(url, status, body));
    }
    Err(Error::Decode { url: url.to_owned(), what: format!("the {method} response"), source })
}

/// One SSE event of a JSON-RPC stream: a JSON-RPC response whose result is the A2A event.
fn decode_event(method: &str, url: &str, ev: &SseEvent) -> Result<StreamResponse> {
    if ev.event == "error" {
        return Err(Error::UnexpectedReply {
            method: method.to_owned(),
            url: url.to_owned(),
            got: format!("an SSE error event {}", quote(ev.data.as_bytes())),
        });
    }
    decode_rpc(method, url, StatusCode::OK, ev.data.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::a2a::types::ErrorCode;

    #[test]
    fn a_json_rpc_error_beats_the_http_status_and_keeps_its_code() {
        let body = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32009,"message":"A2A version 0.3 is not supported"}}"#;
        let e = decode_rpc::<Task>("GetTask", "http://h/", StatusCode::BAD_REQUEST, body).unwrap_err();
        assert_eq!(e.rpc_code(), Some(ErrorCode::VersionNotSupported));
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("GetTask to http://h/ failed: VersionNotSupported (-32009"), "{e}");
        let e = decode_rpc::<Task>("GetTask", "http://h/", StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert_eq!(e.to_string(), "http://h/: the agent answered HTTP 502: \"<html>\"");
        assert!(e.is_retryable());
    }
}
