//! The demo agent's HTTP+JSON binding (A2A 1.0 §11): each operation is an HTTP method on a
//! path, its request and result the same JSON as the JSON-RPC binding's params and result.
//! Task ids travel in the path, `GetTask`'s and `ListTasks`' parameters in the query, and
//! errors are HTTP statuses with an AIP-193 body whose `google.rpc.ErrorInfo` names the A2A
//! error. It only reads requests and writes answers; every operation is [`super::ops`],
//! shared with the JSON-RPC binding.
//!
//! | route                                   | operation                         |
//! |-----------------------------------------|-----------------------------------|
//! | `POST /message:send`                    | `SendMessage`                     |
//! | `POST /message:stream`                  | `SendStreamingMessage` (SSE)      |
//! | `GET /tasks/{id}`                       | `GetTask` (`?historyLength=`)     |
//! | `GET /tasks`                            | `ListTasks` (query in camelCase)  |
//! | `POST /tasks/{id}:cancel`               | `CancelTask`                      |
//! | `POST` or `GET /tasks/{id}:subscribe`   | `SubscribeToTask` (SSE)           |
//! | `/tasks/{id}/pushNotificationConfigs…`  | `PushNotificationNotSupported`    |
//! | `GET /extendedAgentCard`                | `UnsupportedOperation`            |

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::super::types::{CancelTaskRequest, ErrorCode, GetTaskRequest, RpcError, SubscribeToTaskRequest};
use super::events::{Framing, Until, sse};
use super::{Shared, ops, wire};

/// One route of the binding, read from the method and path.
#[derive(Debug, PartialEq)]
enum Route {
    SendMessage,
    SendStreamingMessage,
    GetTask(String),
    ListTasks,
    CancelTask(String),
    SubscribeToTask(String),
    PushNotificationConfig,
    ExtendedAgentCard,
}

/// Why a request matches no route: an unknown path, or a known one with another method.
#[derive(Debug, PartialEq)]
enum NoRoute {
    NotFound,
    MethodNotAllowed(&'static str),
}

/// The route for `method` and the raw (still percent-encoded) `path`. A `:verb` is read off
/// the raw segment, so an id whose encoding holds `%3A` stays an id.
fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allow = |allowed: &'static str, m: &[Method]| {
        if m.contains(method) { Ok(()) } else { Err(NoRoute::MethodNotAllowed(allowed)) }
    };
    let post = || allow("POST", &[Method::POST]);
    let get = || allow("GET", &[Method::GET]);
    let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| NoRoute::NotFound);
    match segments.as_slice() {
        ["message:send"] => post().map(|()| Route::SendMessage),
        ["message:stream"] => post().map(|()| Route::SendStreamingMessage),
        ["tasks"] => get().map(|()| Route::ListTasks),
        ["extendedAgentCard"] => get().map(|()| Route::ExtendedAgentCard),
        ["tasks", raw] if !raw.is_empty() => match raw.rsplit_once(':') {
            Some((id, "cancel")) if !id.is_empty() => {
                post()?;
                Ok(Route::CancelTask(decode(id)?))
            }
            // The specification's text says POST, `a2a.proto`'s annotation GET: both are served.
            Some((id, "subscribe")) if !id.is_empty() => {
                allow("GET, POST", &[Method::GET, Method::POST])?;
                Ok(Route::SubscribeToTask(decode(id)?))
            }
            Some(_) => Err(NoRoute::NotFound),
            None => {
                get()?;
                Ok(Route::GetTask(decode(raw)?))
            }
        },
        ["tasks", id, "pushNotificationConfigs", ..] if !id.is_empty() => Ok(Route::PushNotificationConfig),
        _ => Err(NoRoute::NotFound),
    }
}

/// Every request that is not the card or a JSON-RPC `POST /`.
pub(super) async fn handler(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = match route(&method, uri.path()) {
        Ok(r) => r,
        Err(NoRoute::NotFound) => {
            let e = RpcError::new(ErrorCode::MethodNotFound, format!("no A2A operation at {method} {}", uri.path()));
            return error_reply(e);
        }
        Err(NoRoute::MethodNotAllowed(allowed)) => {
            let e = RpcError::new(ErrorCode::MethodNotFound, format!("{} takes {allowed}, not {method}", uri.path()));
            let mut r = error_body(StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED", e);
            if let Ok(v) = allowed.parse() {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
    };
    match serve(&state, route, uri.query().unwrap_or(""), &headers, &body).await {
        Ok(r) => r,
        Err(e) => error_reply(e),
    }
}

async fn serve(
    state: &Shared,
    route: Route,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RpcError> {
    ops::check_version(headers).map_err(|e| wire::error(ErrorCode::VersionNotSupported, e.to_string(), &[]))?;
    let query = query_object(query)?;
    match route {
        Route::SendMessage => {
            let p = json_body(headers, body, "SendMessage")?;
            Ok(json_reply(&ops::send_message(state, p).await?))
        }
        Route::SendStreamingMessage => {
            let p = json_body(headers, body, "SendStreamingMessage")?;
            Ok(sse(Framing::Bare, ops::send_streaming_message(state, p)?, Until::Settled))
        }
        Route::GetTask(id) => {
            let mut p: GetTaskRequest = from_query(query, "GetTask")?;
            p.id = id;
            Ok(json_reply(&ops::get_task(state, p)?))
        }
        Route::ListTasks => Ok(json_reply(&ops::list_tasks(state, from_query(query, "ListTasks")?)?)),
        Route::CancelTask(id) => {
            let mut p: CancelTaskRequest = if body.trim_ascii().is_empty() {
                CancelTaskRequest::default()
            } else {
                json_body(headers, body, "CancelTask")?
            };
            p.id = id;
            Ok(json_reply(&ops::cancel_task(state, p)?))
        }
        Route::SubscribeToTask(id) => {
            let rx = ops::subscribe_to_task(state, SubscribeToTaskRequest { id, tenant: None })?;
            Ok(sse(Framing::Bare, rx, Until::Terminal))
        }
        Route::PushNotificationConfig => Err(ops::no_push_notifications()),
        Route::ExtendedAgentCard => Err(ops::no_extended_agent_card()),
    }
}

/// A POST body: JSON (a request without `Content-Type` is read as JSON) of the operation's
/// request type.
fn json_body<P: DeserializeOwned>(headers: &HeaderMap, body: &[u8], operation: &str) -> Result<P, RpcError> {
    wire::check_content_type(headers)
        .map_err(|e| wire::error(ErrorCode::ContentTypeNotSupported, e.to_string(), &[]))?;
    if !body.trim_ascii_start().starts_with(b"{") {
        let e =
            serde_json::from_slice::<Value>(body).err().map_or("it is not a JSON object".to_owned(), |e| e.to_string());
        return Err(RpcError::new(ErrorCode::ParseError, format!("the {operation} body is not a JSON object: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{operation} request: {e}")))
}

/// The query as a JSON object: ProtoJSON names (`historyLength`), with numbers and booleans
/// read as such so the operation's request type takes them. A name given twice is refused.
fn query_object(query: &str) -> Result<Map<String, Value>, RpcError> {
    let mut out = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned()).map_err(|_| {
                RpcError::new(ErrorCode::InvalidParams, format!("query parameter {pair:?} is not UTF-8 once decoded"))
            })
        };
        let (k, v) = (decode(k)?, decode(v)?);
        let value = match k.as_str() {
            "historyLength" | "pageSize" => v.parse::<i64>().map(Value::from).map_err(|_| {
                RpcError::new(ErrorCode::InvalidParams, format!("query parameter {k} must be an integer, not {v:?}"))
            })?,
            "includeArtifacts" => v.parse::<bool>().map(Value::from).map_err(|_| {
                RpcError::new(ErrorCode::InvalidParams, format!("query parameter {k} must be true or false, not {v:?}"))
            })?,
            _ => Value::String(v),
        };
        if out.insert(k.clone(), value).is_some() {
            return Err(RpcError::new(ErrorCode::InvalidParams, format!("query parameter {k} is given twice")));
        }
    }
    Ok(out)
}

fn from_query<P: DeserializeOwned>(query: Map<String, Value>, operation: &str) -> Result<P, RpcError> {
    serde_json::from_value(Value::Object(query))
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("{operation} query: {e}")))
}

fn json_reply<R: Serialize>(result: &R) -> Response {
    match serde_json::to_vec(result) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error_reply(RpcError::new(ErrorCode::InternalError, format!("encoding the response failed: {e}"))),
    }
}

/// The HTTP status and `google.rpc.Code` name of an error, as A2A 1.0 maps them.
fn status_of(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::TaskNotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ErrorCode::TaskNotCancelable => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
        ErrorCode::PushNotificationNotSupported | ErrorCode::UnsupportedOperation | ErrorCode::VersionNotSupported => {
            (StatusCode::BAD_REQUEST, "UNIMPLEMENTED")
        }
        ErrorCode::ContentTypeNotSupported => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "INVALID_ARGUMENT"),
        ErrorCode::InvalidAgentResponse => (StatusCode::BAD_GATEWAY, "INTERNAL"),
        ErrorCode::ExtendedAgentCardNotConfigured | ErrorCode::ExtensionSupportRequired => {
            (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION")
        }
        ErrorCode::ParseError | ErrorCode::InvalidRequest | ErrorCode::InvalidParams => {
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
        }
        ErrorCode::MethodNotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ErrorCode::InternalError | ErrorCode::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    }
}

fn error_reply(e: RpcError) -> Response {
    let (status, name) = status_of(e.code);
    error_body(status, name, e)
}

/// An AIP-193 error body: `{"error": {"code", "status", "message", "details"}}`, the details
/// holding the `ErrorInfo` of an A2A error.
fn error_body(status: StatusCode, name: &str, e: RpcError) -> Response {
    let e = wire::with_error_info(e);
    let details = match e.data {
        Some(Value::Array(d)) => d,
        _ => Vec::new(),
    };
    let body = json!({"error": {"code": status.as_u16(), "status": name, "message": e.message, "details": details}});
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_method_and_the_raw_path() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(r(Method::POST, "/message:send"), Ok(Route::SendMessage));
        assert_eq!(r(Method::POST, "/message:stream"), Ok(Route::SendStreamingMessage));
        assert_eq!(r(Method::GET, "/tasks"), Ok(Route::ListTasks));
        assert_eq!(r(Method::GET, "/tasks/t-1"), Ok(Route::GetTask("t-1".into())));
        assert_eq!(r(Method::POST, "/tasks/t-1:cancel"), Ok(Route::CancelTask("t-1".into())));
        assert_eq!(r(Method::POST, "/tasks/t-1:subscribe"), Ok(Route::SubscribeToTask("t-1".into())));
        assert_eq!(r(Method::GET, "/tasks/t-1:subscribe"), Ok(Route::SubscribeToTask("t-1".into())));
        assert_eq!(r(Method::GET, "/tasks/a%2Fb%3Acancel"), Ok(Route::GetTask("a/b:cancel".into())), "an escaped id");
        assert_eq!(r(Method::DELETE, "/tasks/t/pushNotificationConfigs/c"), Ok(Route::PushNotificationConfig));
        assert_eq!(r(Method::GET, "/message:send"), Err(NoRoute::MethodNotAllowed("POST")));
        assert_eq!(r(Method::POST, "/tasks/t-1"), Err(NoRoute::MethodNotAllowed("GET")));
        assert_eq!(r(Method::POST, "/tasks/t-1:archive"), Err(NoRoute::NotFound));
        assert_eq!(r(Method::GET, "/tasks/"), Err(NoRoute::NotFound));
        assert_eq!(r(Method::GET, "/nothing"), Err(NoRoute::NotFound));
    }

    #[test]
    fn query_values_are_typed_as_their_json_members() {
        let q = query_object("contextId=c%201&pageSize=2&includeArtifacts=true&status=TASK_STATE_WORKING").unwrap();
        assert_eq!(
            Value::Object(q),
            json!({"contextId": "c 1", "pageSize": 2, "includeArtifacts": true, "status": "TASK_STATE_WORKING"})
        );
        let e = query_object("pageSize=two").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert!(e.message.contains("pageSize"), "{e}");
        assert!(query_object("status=a&status=b").unwrap_err().message.contains("twice"));
    }

    #[test]
    fn errors_take_the_statuses_a2a_maps_them_to() {
        assert_eq!(status_of(ErrorCode::TaskNotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::TaskNotCancelable).0, StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorCode::UnsupportedOperation).0, StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::ContentTypeNotSupported).0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(status_of(ErrorCode::InvalidParams).0, StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::InternalError).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
