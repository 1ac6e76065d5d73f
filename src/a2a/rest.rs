//! The HTTP+JSON binding of A2A 1.0: each operation is an HTTP method on a path below the
//! interface URL, with the same JSON shapes as the JSON-RPC binding's params and results
//! (without the envelope). Identifiers travel in the path, `GetTask`'s and `ListTasks`'
//! parameters in the query (camelCase), a tenant as the first path segment. Errors are HTTP
//! statuses with a `google.rpc.Status` body whose `google.rpc.ErrorInfo` `reason` names the
//! A2A error (`TASK_NOT_FOUND`); a2a reads that back into the same [`ErrorCode`] the
//! JSON-RPC binding reports, so callers see one error model whatever the binding.
//!
//! | operation              | request                           |
//! |------------------------|-----------------------------------|
//! | `SendMessage`          | `POST /message:send`              |
//! | `SendStreamingMessage` | `POST /message:stream` (SSE)      |
//! | `GetTask`              | `GET /tasks/{id}?historyLength=`  |
//! | `ListTasks`            | `GET /tasks?contextId=&status=…`  |
//! | `CancelTask`           | `POST /tasks/{id}:cancel`         |
//! | `SubscribeToTask`      | `POST /tasks/{id}:subscribe` (SSE)|
//! | `GetExtendedAgentCard` | `GET /extendedAgentCard`          |

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{Error, EventStream, Http, Result, http_status, invalid, quote, read_reply, read_response, send};
use super::sse::SseEvent;
use super::transport::{BoxFuture, Transport};
use super::types::{
    AgentCard, BINDING_HTTP_JSON, CancelTaskRequest, ErrorCode, GetExtendedAgentCardRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, PROTOCOL_VERSION, RpcError, SendMessageRequest, SendMessageResponse,
    StreamResponse, SubscribeToTaskRequest, Task, VERSION_HEADER, method,
};

/// The limit for each single non-blocking request (`GetTask`, `CancelTask`, opening a stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `@type` of the error detail that names the A2A error.
const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// What is escaped in a path segment or a query value: everything but RFC 3986's unreserved
/// characters, so a task id can never add a segment, a `:verb` or a query.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A2A over HTTP+JSON below one interface URL.
pub struct HttpJson {
    http: Http,
    /// The interface URL without a trailing `/`; the routes are appended to it.
    endpoint: String,
    /// The interface's tenant, used when a request names none.
    tenant: Option<String>,
}

impl std::fmt::Debug for HttpJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJson").field("endpoint", &self.endpoint).field("tenant", &self.tenant).finish()
    }
}

/// One HTTP request of the binding, before it is sent.
#[derive(Debug, PartialEq)]
struct Call {
    /// The A2A operation, for errors (`GetTask`).
    operation: &'static str,
    method: Method,
    url: String,
    /// The JSON body of a POST.
    body: Option<Vec<u8>>,
}

impl HttpJson {
    pub(crate) fn new(http: Http, endpoint: String, tenant: Option<String>) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        HttpJson { http, endpoint, tenant }
    }

    /// `{endpoint}[/{tenant}]{path}[?query]`; `path` is already escaped.
    fn url(&self, tenant: Option<&str>, path: &str, query: &[(String, String)]) -> String {
        let mut url = self.endpoint.clone();
        if let Some(t) = tenant.or(self.tenant.as_deref()).filter(|t| !t.is_empty()) {
            url.push('/');
            url.extend(utf8_percent_encode(t, COMPONENT));
        }
        url.push_str(path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.extend(utf8_percent_encode(k, COMPONENT));
            url.push('=');
            url.extend(utf8_percent_encode(v, COMPONENT));
        }
        url
    }

    fn send_call(&self, operation: &'static str, request: &SendMessageRequest, path: &str) -> Result<Call> {
        let url = self.url(request.tenant.as_deref(), path, &[]);
        let body = body_without(operation, &url, request, &["tenant"])?;
        Ok(Call { operation, method: Method::POST, url, body: Some(body) })
    }

    fn get_call(&self, request: &GetTaskRequest) -> Result<Call> {
        let path = format!("/tasks/{}", segment(&request.id));
        let url = self.url(request.tenant.as_deref(), &path, &query_of(request, &["id", "tenant"]));
        Ok(Call { operation: method::GET_TASK, method: Method::GET, url, body: None })
    }

    fn list_call(&self, request: &ListTasksRequest) -> Result<Call> {
        let url = self.url(request.tenant.as_deref(), "/tasks", &query_of(request, &["tenant"]));
        Ok(Call { operation: method::LIST_TASKS, method: Method::GET, url, body: None })
    }

    fn cancel_call(&self, request: &CancelTaskRequest) -> Result<Call> {
        let path = format!("/tasks/{}:cancel", segment(&request.id));
        let url = self.url(request.tenant.as_deref(), &path, &[]);
        let body = body_without(method::CANCEL_TASK, &url, request, &["id", "tenant"])?;
        Ok(Call { operation: method::CANCEL_TASK, method: Method::POST, url, body: Some(body) })
    }

    fn subscribe_call(&self, request: &SubscribeToTaskRequest) -> Result<Call> {
        let path = format!("/tasks/{}:subscribe", segment(&request.id));
        let url = self.url(request.tenant.as_deref(), &path, &[]);
        Ok(Call { operation: method::SUBSCRIBE_TO_TASK, method: Method::POST, url, body: None })
    }

    fn extended_card_call(&self, request: &GetExtendedAgentCardRequest) -> Result<Call> {
        let url = self.url(request.tenant.as_deref(), "/extendedAgentCard", &[]);
        Ok(Call { operation: method::GET_EXTENDED_AGENT_CARD, method: Method::GET, url, body: None })
    }

    fn http_request(&self, call: &Call, accept: &'static str) -> Result<Request<Full<Bytes>>> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&call.url)
            .header(header::ACCEPT, accept)
            .header(VERSION_HEADER, HeaderValue::from_static(PROTOCOL_VERSION));
        if call.body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = call.body.clone().map(Bytes::from).unwrap_or_default();
        req.body(Full::new(body)).map_err(|e| invalid(&call.url, e))
    }

    async fn unary<R: DeserializeOwned>(&self, call: Result<Call>, timeout: Option<Duration>) -> Result<R> {
        let call = call?;
        let req = self.http_request(&call, "application/json")?;
        let (status, body) = read_reply(&call.url, send(&self.http, &call.url, req, timeout)).await?;
        decode_reply(call.operation, &call.url, status, &body)
    }

    async fn stream(&self, call: Result<Call>) -> Result<EventStream> {
        let call = call?;
        let req = self.http_request(&call, "text/event-stream")?;
        let resp = send(&self.http, &call.url, req, Some(REQUEST_TIMEOUT)).await?;
        let status = resp.status();
        if !super::sse::is_event_stream(resp.headers()) {
            // An upfront error (or a server that does not stream) answers with plain JSON.
            let (_, body) = read_response(&call.url, resp).await?;
            let one: StreamResponse = decode_reply(call.operation, &call.url, status, &body)?;
            return Ok(Box::pin(futures::stream::iter([Ok(one)])));
        }
        if !status.is_success() {
            let (_, body) = read_response(&call.url, resp).await?;
            return Err(reply_error(call.operation, &call.url, status, &body));
        }
        Ok(super::sse::events(resp.into_body(), call.url, call.operation.to_owned(), decode_event))
    }
}

impl Transport for HttpJson {
    fn binding(&self) -> &'static str {
        BINDING_HTTP_JSON
    }

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<SendMessageResponse>> {
        Box::pin(async move { self.unary(self.send_call(method::SEND_MESSAGE, &request, "/message:send"), None).await })
    }

    fn send_streaming_message(&self, request: SendMessageRequest) -> BoxFuture<'_, Result<EventStream>> {
        Box::pin(async move {
            self.stream(self.send_call(method::SEND_STREAMING_MESSAGE, &request, "/message:stream")).await
        })
    }

    fn get_task(&self, request: GetTaskRequest) -> BoxFuture<'_, Result<Task>> {
        Box::pin(async move { self.unary(self.get_call(&request), Some(REQUEST_TIMEOUT)).await })
    }

    fn list_tasks(&self, request: ListTasksRequest) -> BoxFuture<'_, Result<ListTasksResponse>> {
        Box::pin(async move { self.unary(self.list_call(&request), Some(REQUEST_TIMEOUT)).await })
    }

    fn cancel_task(&self, request: CancelTaskRequest) -> BoxFuture<'_, Result<Task>> {
        Box::pin(async move { self.unary(self.cancel_call(&request), Some(REQUEST_TIMEOUT)).await })
    }

    fn subscribe_to_task(&self, request: SubscribeToTaskRequest) -> BoxFuture<'_, Result<EventStream>> {
        Box::pin(async move { self.stream(self.subscribe_call(&request)).await })
    }

    fn get_extended_agent_card(&self, request: GetExtendedAgentCardRequest) -> BoxFuture<'_, Result<AgentCard>> {
        Box::pin(async move { self.unary(self.extended_card_call(&request), Some(REQUEST_TIMEOUT)).await })
    }
}

/// A path segment with everything but unreserved characters escaped.
fn segment(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// The request as JSON, without the members the path carries.
fn body_without<T: Serialize>(operation: &str, url: &str, request: &T, path_members: &[&str]) -> Result<Vec<u8>> {
    let encode = |source| Error::Decode { url: url.to_owned(), what: format!("the {operation} request"), source };
    let mut value = serde_json::to_value(request).map_err(encode)?;
    if let Value::Object(map) = &mut value {
        for m in path_members {
            map.remove(*m);
        }
    }
    serde_json::to_vec(&value).map_err(encode)
}

/// The request's scalar members as query parameters (camelCase, as they are named in JSON),
/// without the members the path carries.
fn query_of<T: Serialize>(request: &T, path_members: &[&str]) -> Vec<(String, String)> {
    let Ok(Value::Object(map)) = serde_json::to_value(request) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(k, _)| !path_members.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            Value::Number(n) => Some((k, n.to_string())),
            Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect()
}

/// A successful answer decoded as `R`, or the error the status and body describe.
fn decode_reply<R: DeserializeOwned>(operation: &str, url: &str, status: StatusCode, body: &[u8]) -> Result<R> {
    if !status.is_success() {
        return Err(reply_error(operation, url, status, body));
    }
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        url: url.to_owned(),
        what: format!("the {operation} response"),
        source,
    })
}

/// The error of a failed request: the A2A error its `google.rpc.ErrorInfo` names (the same
/// [`Error::Rpc`] the JSON-RPC binding gives), else the HTTP status and the start of the body
/// (a proxy or gateway in the way answers without A2A details).
fn reply_error(operation: &str, url: &str, status: StatusCode, body: &[u8]) -> Error {
    match a2a_error(body) {
        Some(error) => Error::Rpc { method: operation.to_owned(), url: url.to_owned(), error },
        None => http_status(url, status, body),
    }
}

/// The A2A error in an AIP-193 error body (`{"error": {"code", "status", "message",
/// "details": [ErrorInfo…]}}`), when its first `ErrorInfo` names an A2A reason.
fn a2a_error(body: &[u8]) -> Option<RpcError> {
    let payload: Value = serde_json::from_slice(body).ok()?;
    let status = payload.get("error")?;
    let details = status.get("details")?.as_array()?;
    let info = details.iter().find(|d| d.get("@type").and_then(Value::as_str) == Some(ERROR_INFO))?;
    let code = ErrorCode::from_reason(info.get("reason")?.as_str()?)?;
    let message = status.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some(RpcError { code, message, data: Some(Value::Array(details.clone())) })
}

/// One SSE event of an HTTP+JSON stream: the A2A event itself, or (as an `error` event) an
/// AIP-193 error body.
fn decode_event(operation: &str, url: &str, ev: &SseEvent) -> Result<StreamResponse> {
    if ev.event == "error" {
        return Err(match a2a_error(ev.data.as_bytes()) {
            Some(error) => Error::Rpc { method: operation.to_owned(), url: url.to_owned(), error },
            None => Error::UnexpectedReply {
                method: operation.to_owned(),
                url: url.to_owned(),
                got: format!("an SSE error event {}", quote(ev.data.as_bytes())),
            },
        });
    }
    serde_json::from_str(&ev.data).map_err(|source| Error::Decode {
        url: url.to_owned(),
        what: format!("an event of the {operation} stream"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::a2a::types::{Message, SendMessageConfiguration, TaskState};

    fn transport(endpoint: &str, tenant: Option<&str>) -> HttpJson {
        let http = Http::new(&crate::a2a::tls::TlsOptions::default()).expect("http");
        HttpJson::new(http, endpoint.to_owned(), tenant.map(str::to_owned))
    }

    fn body(call: &Call) -> Value {
        serde_json::from_slice(call.body.as_deref().expect("a body")).expect("JSON")
    }

    #[test]
    fn each_operation_is_its_method_and_path_below_the_interface_url() {
        let t = transport("http://h:9/a2a/", None);
        let send = SendMessageRequest {
            message: Message::user_text("m-1", "hi"),
            configuration: Some(SendMessageConfiguration { return_immediately: true, ..Default::default() }),
            metadata: None,
            tenant: None,
        };
        let c = t.send_call(method::SEND_MESSAGE, &send, "/message:send").unwrap();
        assert_eq!((c.method.clone(), c.url.as_str()), (Method::POST, "http://h:9/a2a/message:send"));
        assert_eq!(
            body(&c),
            json!({"message": {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "hi"}]},
                   "configuration": {"returnImmediately": true}}),
            "the body is SendMessageRequest as JSON-RPC's params are"
        );
        let c = t.send_call(method::SEND_STREAMING_MESSAGE, &send, "/message:stream").unwrap();
        assert_eq!(c.url, "http://h:9/a2a/message:stream");

        let get = GetTaskRequest { id: "t-1".into(), history_length: Some(3), tenant: None };
        let c = t.get_call(&get).unwrap();
        assert_eq!(
            (c.method.clone(), c.url.as_str(), c.body.is_none()),
            (Method::GET, "http://h:9/a2a/tasks/t-1?historyLength=3", true)
        );

        let cancel = CancelTaskRequest { id: "t-1".into(), ..Default::default() };
        let c = t.cancel_call(&cancel).unwrap();
        assert_eq!((c.method.clone(), c.url.as_str()), (Method::POST, "http://h:9/a2a/tasks/t-1:cancel"));
        assert_eq!(body(&c), json!({}), "the id travels in the path only");

        let c = t.subscribe_call(&SubscribeToTaskRequest { id: "t-1".into(), tenant: None }).unwrap();
        assert_eq!((c.method.clone(), c.url.as_str()), (Method::POST, "http://h:9/a2a/tasks/t-1:subscribe"));

        let list = ListTasksRequest {
            context_id: Some("c 1".into()),
            status: Some(TaskState::InputRequired),
            page_size: Some(10),
            include_artifacts: Some(true),
            ..Default::default()
        };
        let c = t.list_call(&list).unwrap();
        assert_eq!(c.method, Method::GET);
        assert_eq!(
            c.url,
            "http://h:9/a2a/tasks?contextId=c%201&includeArtifacts=true&pageSize=10&status=TASK_STATE_INPUT_REQUIRED"
        );

        let c = t.extended_card_call(&GetExtendedAgentCardRequest::default()).unwrap();
        assert_eq!(
            (c.method.clone(), c.url.as_str(), c.body.is_none()),
            (Method::GET, "http://h:9/a2a/extendedAgentCard", true)
        );
        let c = transport("http://h:9", Some("acme")).extended_card_call(&GetExtendedAgentCardRequest::default());
        assert_eq!(c.unwrap().url, "http://h:9/acme/extendedAgentCard", "below the interface's tenant");
    }

    #[test]
    fn ids_and_tenants_are_escaped_and_the_tenant_leads_the_path() {
        let t = transport("http://h:9", Some("acme"));
        let c = t.get_call(&GetTaskRequest { id: "a/b:cancel?x".into(), ..Default::default() }).unwrap();
        assert_eq!(c.url, "http://h:9/acme/tasks/a%2Fb%3Acancel%3Fx", "an id cannot add a segment, verb or query");
        let c = t.cancel_call(&CancelTaskRequest {
            id: "t".into(),
            tenant: Some("other one".into()),
            ..Default::default()
        });
        assert_eq!(c.unwrap().url, "http://h:9/other%20one/tasks/t:cancel", "the request's tenant wins");
    }

    #[test]
    fn an_error_info_reason_becomes_the_same_a2a_error_as_over_json_rpc() {
        let body = br#"{"error":{"code":404,"status":"NOT_FOUND","message":"Task not found",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"TASK_NOT_FOUND",
            "domain":"a2a-protocol.org","metadata":{"taskId":"t-9"}}]}}"#;
        let e = decode_reply::<Task>("GetTask", "http://h/tasks/t-9", StatusCode::NOT_FOUND, body).unwrap_err();
        assert_eq!(e.rpc_code(), Some(ErrorCode::TaskNotFound));
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("GetTask to http://h/tasks/t-9 failed: TaskNotFound (-32001"), "{e}");
        assert!(e.to_string().ends_with(": Task not found"), "{e}");

        let body = br#"{"error":{"code":500,"status":"INTERNAL","message":"boom",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INTERNAL_ERROR"}]}}"#;
        let e = decode_reply::<Task>("GetTask", "http://h/", StatusCode::INTERNAL_SERVER_ERROR, body).unwrap_err();
        assert_eq!(e.rpc_code(), Some(ErrorCode::InternalError));
        assert!(e.is_retryable(), "an internal error is retryable whatever the binding");
    }

    #[test]
    fn an_error_without_an_a2a_reason_is_its_http_status_retryable_when_5xx_or_429() {
        for (status, retryable) in [(503, true), (429, true), (502, true), (400, false), (404, false)] {
            let status = StatusCode::from_u16(status).unwrap();
            let e = decode_reply::<Task>("GetTask", "http://h/", status, b"<html>busy</html>").unwrap_err();
            assert_eq!(e.metric_label(), "http_status");
            assert_eq!(e.is_retryable(), retryable, "{status}");
        }
        let unknown = br#"{"error":{"code":400,"message":"x","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SOMETHING_ELSE"}]}}"#;
        let e = decode_reply::<Task>("GetTask", "http://h/", StatusCode::BAD_REQUEST, unknown).unwrap_err();
        assert_eq!(e.rpc_code(), None);
        assert!(e.to_string().contains("HTTP 400"), "{e}");
    }

    #[test]
    fn a_success_that_is_not_the_expected_shape_is_a_decode_error_naming_the_operation() {
        let e = decode_reply::<Task>("GetTask", "http://h/", StatusCode::OK, b"[1]").unwrap_err();
        assert_eq!(e.metric_label(), "decode");
        assert!(e.to_string().contains("the GetTask response is not valid A2A 1.0 JSON"), "{e}");
        let ok: SendMessageResponse = decode_reply(
            "SendMessage",
            "http://h/",
            StatusCode::OK,
            br#"{"task":{"id":"t","contextId":"c","status":{"state":"TASK_STATE_WORKING"}}}"#,
        )
        .unwrap();
        assert!(matches!(ok, SendMessageResponse::Task(t) if t.status.state == TaskState::Working));
    }

    #[test]
    fn stream_events_are_bare_a2a_events_and_an_error_event_keeps_its_reason() {
        let ev = SseEvent {
            event: "message".into(),
            data: r#"{"statusUpdate":{"taskId":"t","contextId":"c","status":{"state":"TASK_STATE_COMPLETED"}}}"#.into(),
        };
        let got = decode_event("SubscribeToTask", "http://h/", &ev).unwrap();
        assert!(matches!(got, StreamResponse::StatusUpdate(u) if u.status.state == TaskState::Completed));
        let ev = SseEvent {
            event: "error".into(),
            data: r#"{"error":{"code":400,"status":"FAILED_PRECONDITION","message":"terminal",
                "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"UNSUPPORTED_OPERATION"}]}}"#
                .into(),
        };
        let e = decode_event("SubscribeToTask", "http://h/", &ev).unwrap_err();
        assert_eq!(e.rpc_code(), Some(ErrorCode::UnsupportedOperation));
        let ev = SseEvent { event: "error".into(), data: "gone".into() };
        let e = decode_event("SubscribeToTask", "http://h/", &ev).unwrap_err();
        assert_eq!(e.metric_label(), "unexpected_reply");
    }
}
