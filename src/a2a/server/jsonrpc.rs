//! The demo agent's JSON-RPC binding: one `POST /` per request, the method and its params in a
//! JSON-RPC 2.0 envelope, errors as JSON-RPC error objects (with HTTP 200, as the official
//! SDKs expect). It only reads the envelope and writes the answer; every operation is
//! [`super::ops`], shared with the HTTP+JSON binding.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::super::types::{
    CancelTaskRequest, ErrorCode, GetTaskRequest, JsonRpcResponse, RequestId, RpcError, SendMessageRequest,
    SubscribeToTaskRequest, method,
};
use super::events::{Framing, Until, sse};
use super::{Shared, list, ops, wire};

/// A JSON-RPC failure before or while running a method.
struct Failure {
    id: Option<RequestId>,
    error: RpcError,
}

fn fail(id: &Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure { id: id.clone(), error: wire::error(code, message, &[]) }
}

fn json_reply<R: Serialize>(resp: &JsonRpcResponse<R>) -> Response {
    match serde_json::to_vec(resp) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response failed: {e}")).into_response(),
    }
}

fn failure_reply(f: Failure) -> Response {
    json_reply(&JsonRpcResponse::<()>::failure(f.id, wire::with_error_info(f.error)))
}

/// `POST /`: one JSON-RPC request.
pub(super) async fn handler(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    match dispatch(&state, &headers, &body).await {
        Ok(resp) => resp,
        Err(f) => failure_reply(f),
    }
}

/// A JSON-RPC request as read off the wire: `params` stays raw text until the method is known,
/// so the body is parsed once, straight into the method's parameter type.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default, borrow)]
    params: Option<&'a serde_json::value::RawValue>,
}

async fn dispatch(state: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, Failure> {
    let none = None;
    wire::check_content_type(headers).map_err(|e| fail(&none, ErrorCode::ContentTypeNotSupported, e.to_string()))?;
    // Only an object is a request (serde would also read a struct from an array).
    let object = body.trim_ascii_start().starts_with(b"{");
    let request: Envelope = match serde_json::from_slice(body).map_err(|e| e.to_string()) {
        Ok(e) if object => e,
        r => {
            let e = r.err().unwrap_or_else(|| "the body is not a JSON object".to_owned());
            // Not an object of that shape: JSON that is no request at all, or not JSON.
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| fail(&none, ErrorCode::ParseError, format!("the body is not JSON: {e}")))?;
            let id = v.get("id").and_then(|v| serde_json::from_value(v.clone()).ok());
            return Err(fail(&id, ErrorCode::InvalidRequest, format!("not a JSON-RPC request: {e}")));
        }
    };
    let id = wire::request_id(request.id).map_err(|e| fail(&none, ErrorCode::InvalidRequest, e.to_string()))?;
    if request.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err(fail(&id, ErrorCode::InvalidRequest, "`jsonrpc` must be \"2.0\""));
    }
    let Some(method) = request.method.as_ref().and_then(Value::as_str) else {
        return Err(fail(&id, ErrorCode::InvalidRequest, "`method` is missing or not a string"));
    };
    ops::check_version(headers).map_err(|e| fail(&id, ErrorCode::VersionNotSupported, e.to_string()))?;
    let params = request.params.map_or("null", |p| p.get());
    let answer = |r: Result<Response, RpcError>| r.map_err(|error| Failure { id: id.clone(), error });
    match method {
        method::SEND_MESSAGE => {
            let p: SendMessageRequest = parse_params(&id, method, params)?;
            let r = ops::send_message(state, p).await;
            answer(r.map(|resp| json_reply(&JsonRpcResponse::success(id.clone(), resp))))
        }
        method::GET_TASK => {
            let p: GetTaskRequest = parse_params(&id, method, params)?;
            answer(ops::get_task(state, p).map(|t| json_reply(&JsonRpcResponse::success(id.clone(), t))))
        }
        method::LIST_TASKS => {
            let p: list::ListTasksRequest = parse_params(&id, method, params)?;
            answer(ops::list_tasks(state, p).map(|page| json_reply(&JsonRpcResponse::success(id.clone(), page))))
        }
        method::CANCEL_TASK => {
            let p: CancelTaskRequest = parse_params(&id, method, params)?;
            answer(ops::cancel_task(state, p).map(|t| json_reply(&JsonRpcResponse::success(id.clone(), t))))
        }
        method::SUBSCRIBE_TO_TASK => {
            let p: SubscribeToTaskRequest = parse_params(&id, method, params)?;
            answer(ops::subscribe_to_task(state, p).map(|rx| sse(Framing::JsonRpc(id.clone()), rx, Until::Terminal)))
        }
        method::SEND_STREAMING_MESSAGE => {
            let p: SendMessageRequest = parse_params(&id, method, params)?;
            answer(
                ops::send_streaming_message(state, p).map(|rx| sse(Framing::JsonRpc(id.clone()), rx, Until::Settled)),
            )
        }
        method::GET_EXTENDED_AGENT_CARD => answer(Err(ops::no_extended_agent_card())),
        m if m.contains("PushNotification") => answer(Err(ops::no_push_notifications())),
        other => Err(fail(
            &id,
            ErrorCode::MethodNotFound,
            format!("unknown method {other:?} (A2A 1.0 names methods like SendMessage, GetTask)"),
        )),
    }
}

fn parse_params<P: DeserializeOwned>(id: &Option<RequestId>, method: &str, params: &str) -> Result<P, Failure> {
    serde_json::from_str(params).map_err(|e| fail(id, ErrorCode::InvalidParams, format!("{method} params: {e}")))
}
