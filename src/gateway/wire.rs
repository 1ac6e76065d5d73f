//! What a request to the gateway is, read from its binding (the A2A operation, its task id,
//! the skill its message names), and the answers the gateway makes itself, in the shape of
//! the binding the caller spoke.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The A2A binding a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    JsonRpc,
    HttpJson,
}

/// An A2A operation, as JSON-RPC names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub binding: Binding,
    /// `SendMessage`, `GetTask`, ... (`Unknown` when the gateway cannot tell).
    pub method: String,
    /// The JSON-RPC request id, echoed in the gateway's own answers.
    pub id: Value,
    /// The JSON-RPC params, or the HTTP+JSON body.
    pub params: Value,
    /// The task the operation is about (GetTask, CancelTask, SubscribeToTask), or that a
    /// message continues.
    pub task_id: Option<String>,
}

pub const SEND: &str = "SendMessage";
pub const STREAM: &str = "SendStreamingMessage";
pub const GET: &str = "GetTask";
pub const CANCEL: &str = "CancelTask";
pub const SUBSCRIBE: &str = "SubscribeToTask";
pub const LIST: &str = "ListTasks";
pub const EXTENDED_CARD: &str = "GetExtendedAgentCard";

impl Call {
    /// Reads a request: a JSON body with `jsonrpc` and `method` is JSON-RPC; anything else is
    /// the HTTP+JSON binding, named by its method and path (`rest`, below the endpoint).
    pub fn read(method: &Method, rest: &str, body: &[u8]) -> Call {
        if *method == Method::POST
            && let Ok(v) = serde_json::from_slice::<Value>(body)
            && v.get("jsonrpc").is_some()
        {
            let name = v.get("method").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
            let params = v.get("params").cloned().unwrap_or(Value::Null);
            let task_id = match name.as_str() {
                GET | CANCEL | SUBSCRIBE => params.get("id").and_then(Value::as_str).map(str::to_owned),
                SEND | STREAM => message_task(&params),
                _ => None,
            };
            return Call {
                binding: Binding::JsonRpc,
                method: name,
                id: v.get("id").cloned().unwrap_or(Value::Null),
                params,
                task_id,
            };
        }
        let params = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        let path = rest.trim_end_matches('/');
        // The tenant, when one leads the path, is the agent's business: the operation is
        // read from the path's end.
        let (name, task_id) = if path.ends_with("/message:send") {
            (SEND, message_task(&params))
        } else if path.ends_with("/message:stream") {
            (STREAM, message_task(&params))
        } else if path.ends_with("/extendedAgentCard") {
            (EXTENDED_CARD, None)
        } else if let Some((_, tail)) = path.rsplit_once("/tasks/") {
            let id = |s: &str| Some(percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned());
            if let Some(t) = tail.strip_suffix(":cancel") {
                (CANCEL, id(t))
            } else if let Some(t) = tail.strip_suffix(":subscribe") {
                (SUBSCRIBE, id(t))
            } else if tail.contains("/pushNotificationConfigs") {
                let t = tail.split('/').next().unwrap_or_default();
                let op = match *method {
                    Method::GET if tail.ends_with("/pushNotificationConfigs") => "ListTaskPushNotificationConfigs",
                    Method::GET => "GetTaskPushNotificationConfig",
                    Method::DELETE => "DeleteTaskPushNotificationConfig",
                    _ => "CreateTaskPushNotificationConfig",
                };
                (op, id(t))
            } else if *method == Method::GET && !tail.contains('/') {
                (GET, id(tail))
            } else {
                ("Unknown", None)
            }
        } else if path.ends_with("/tasks") || path == "tasks" {
            (LIST, None)
        } else {
            ("Unknown", None)
        };
        Call { binding: Binding::HttpJson, method: name.to_owned(), id: Value::Null, params, task_id }
    }

    /// The verb the authorizer sees: `get` for reads of one thing, `list` for lists, `create`
    /// for anything that makes or changes something (and anything unknown).
    pub fn verb(&self) -> &'static str {
        match self.method.as_str() {
            GET | SUBSCRIBE | EXTENDED_CARD | "GetTaskPushNotificationConfig" => "get",
            LIST | "ListTaskPushNotificationConfigs" => "list",
            _ => "create",
        }
    }

    /// It starts work on an agent: it needs a slot (admission).
    pub fn sends(&self) -> bool {
        self.method == SEND || self.method == STREAM
    }

    /// The message's metadata value `key`, when the operation sends one.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.params.get("message")?.get("metadata")?.get(key)?.as_str()
    }
}

fn message_task(params: &Value) -> Option<String> {
    params.get("message")?.get("taskId")?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// An error the gateway answers itself.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: StatusCode,
    /// The JSON-RPC code, when the error is an A2A one (an answer with HTTP 200 over JSON-RPC).
    pub rpc_code: Option<i64>,
    /// `google.rpc.ErrorInfo` reason, UPPER_SNAKE_CASE.
    pub reason: &'static str,
    pub message: String,
    pub metadata: serde_json::Map<String, Value>,
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            rpc_code: None,
            reason,
            message: message.into(),
            metadata: serde_json::Map::new(),
            retry_after: None,
        }
    }

    /// An A2A error: over JSON-RPC it is a JSON-RPC error with `code` (HTTP 200).
    pub fn a2a(status: StatusCode, code: i64, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { rpc_code: Some(code), ..Refusal::new(status, reason, message) }
    }

    pub fn meta(mut self, key: &str, value: impl Into<Value>) -> Refusal {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Refusal {
        self.retry_after = Some(secs);
        self
    }

    fn info(&self, domain: &str) -> Value {
        json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": self.reason,
            "domain": domain,
            "metadata": self.metadata,
        })
    }

    /// The answer, in the shape of `binding` (`id` echoed over JSON-RPC).
    pub fn respond(&self, binding: Binding, id: &Value) -> Response {
        let domain = if self.rpc_code.is_some() { "a2a-protocol.org" } else { "a2a.dev" };
        let (status, body) = match (binding, self.rpc_code) {
            (Binding::JsonRpc, Some(code)) => (
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": code, "message": self.message, "data": [self.info(domain)],
                }}),
            ),
            _ => (
                self.status,
                json!({"error": {
                    "code": self.status.as_u16(),
                    "status": grpc_status(self.status),
                    "message": self.message,
                    "details": [self.info(domain)],
                }}),
            ),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"a2a-gateway\""));
        }
        resp
    }
}

/// The `google.rpc.Code` name of an HTTP status (AIP-193).
fn grpc_status(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "FAILED_PRECONDITION",
        413 => "RESOURCE_EXHAUSTED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A JSON answer of the gateway's own (a card, a merged task list).
pub fn json_response(binding: Binding, id: &Value, result: Value) -> Response {
    let body = match binding {
        Binding::JsonRpc => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Binding::HttpJson => result,
    };
    let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The id of the task an answer (or a stream event) is about: a Task (`id` and `status`), a
/// `task` member, or a status or artifact update's `taskId`; JSON-RPC's `result` is looked in.
pub fn task_id_of(v: &Value) -> Option<String> {
    let v = v.get("result").unwrap_or(v);
    let s = |x: &Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(t) = v.get("task") {
        return t.get("id").and_then(s);
    }
    for update in ["statusUpdate", "artifactUpdate"] {
        if let Some(u) = v.get(update) {
            return u.get("taskId").and_then(s);
        }
    }
    if v.get("status").is_some() {
        return v.get("id").and_then(s);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_rpc_call_is_read_from_its_body_and_a_rest_call_from_its_path() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"taskId":"t1","metadata":{"a2a.dev/skill":"echo"}}}}"#;
        let c = Call::read(&Method::POST, "/", body);
        assert_eq!((c.binding, c.method.as_str(), c.task_id.as_deref()), (Binding::JsonRpc, SEND, Some("t1")));
        assert_eq!(c.metadata("a2a.dev/skill"), Some("echo"));
        assert_eq!(c.id, json!(7));
        assert!(c.sends());
        let c =
            Call::read(&Method::POST, "/", br#"{"jsonrpc":"2.0","id":"x","method":"GetTask","params":{"id":"t2"}}"#);
        assert_eq!((c.method.as_str(), c.task_id.as_deref(), c.verb()), (GET, Some("t2"), "get"));

        let rest = |m: Method, p: &str| {
            let c = Call::read(&m, p, b"");
            let verb = c.verb();
            (c.method, c.task_id, verb)
        };
        assert_eq!(rest(Method::GET, "/tasks/a%2Fb"), (GET.into(), Some("a/b".into()), "get"));
        assert_eq!(rest(Method::POST, "/tasks/t:cancel"), (CANCEL.into(), Some("t".into()), "create"));
        assert_eq!(rest(Method::POST, "/tasks/t:subscribe"), (SUBSCRIBE.into(), Some("t".into()), "get"));
        assert_eq!(rest(Method::GET, "/tasks"), (LIST.into(), None, "list"));
        assert_eq!(rest(Method::GET, "/tenant-1/tasks"), (LIST.into(), None, "list"));
        assert_eq!(rest(Method::POST, "/message:stream"), (STREAM.into(), None, "create"));
        assert_eq!(rest(Method::GET, "/extendedAgentCard"), (EXTENDED_CARD.into(), None, "get"));
        assert_eq!(
            rest(Method::DELETE, "/tasks/t/pushNotificationConfigs/c"),
            ("DeleteTaskPushNotificationConfig".into(), Some("t".into()), "create")
        );
        assert_eq!(rest(Method::PUT, "/whatever").2, "create", "what is not known needs the most");
    }

    #[test]
    fn the_task_of_an_answer_is_found_in_every_shape() {
        assert_eq!(task_id_of(&json!({"result": {"task": {"id": "a"}}})), Some("a".into()));
        assert_eq!(task_id_of(&json!({"task": {"id": "b", "status": {}}})), Some("b".into()));
        assert_eq!(task_id_of(&json!({"statusUpdate": {"taskId": "c"}})), Some("c".into()));
        assert_eq!(task_id_of(&json!({"result": {"id": "d", "status": {"state": "x"}}})), Some("d".into()));
        assert_eq!(task_id_of(&json!({"message": {"messageId": "m"}})), None);
    }

    #[test]
    fn an_a2a_error_is_json_rpc_over_json_rpc_and_aip_193_over_http_json() {
        let r = Refusal::a2a(StatusCode::BAD_REQUEST, -32602, "SKILL_REQUIRED", "name a skill").meta("skills", "a,b");
        let resp = r.respond(Binding::JsonRpc, &json!(3));
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = r.respond(Binding::HttpJson, &Value::Null);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = Refusal::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no").respond(Binding::JsonRpc, &json!(1));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "who is not known is refused by HTTP status");
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
