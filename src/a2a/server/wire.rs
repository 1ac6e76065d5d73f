//! What the demo agent checks and adds on the wire around a JSON-RPC call: the request's
//! `Content-Type` and `id`, `historyLength`, the `google.rpc.ErrorInfo` every A2A error
//! carries, and the card's URL and `ETag`.

use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use super::super::types::{ErrorCode, RequestId, RpcError};

/// The `domain` of every A2A `ErrorInfo`.
const ERROR_DOMAIN: &str = "a2a-protocol.org";

/// Why a request is refused before its method runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Content-Type {0:?} is not supported; JSON-RPC requests are application/json")]
    ContentType(String),
    #[error("the request id must be a string, an integer or null, not {0}")]
    RequestId(Value),
    #[error("historyLength must be zero or more, not {0}")]
    HistoryLength(i32),
    #[error("the Host header is missing or is not a host[:port]")]
    Host,
}

/// A request without `Content-Type` is read as JSON; one that names another type is refused.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = v.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(Error::ContentType(text.to_owned()))
    }
}

/// The request id: JSON-RPC allows a string, a number or null (an integer here).
pub fn request_id(id: Option<Value>) -> Result<Option<RequestId>, Error> {
    match id {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| Error::RequestId(v)),
    }
}

/// A `historyLength` the caller may ask for: absent, or zero or more.
pub fn history_length(n: Option<i32>) -> Result<Option<usize>, Error> {
    n.map(|n| usize::try_from(n).map_err(|_| Error::HistoryLength(n))).transpose()
}

/// An error with the `ErrorInfo` A2A errors carry; `metadata` names what it is about.
pub fn error(code: ErrorCode, message: impl Into<String>, metadata: &[(&str, &str)]) -> RpcError {
    let mut e = RpcError::new(code, message);
    if let Some(info) = error_info(code, metadata) {
        e.data = Some(Value::Array(vec![info]));
    }
    e
}

/// Adds the `ErrorInfo` to an A2A error that has none yet.
pub fn with_error_info(mut e: RpcError) -> RpcError {
    if e.data.is_none()
        && let Some(info) = error_info(e.code, &[])
    {
        e.data = Some(Value::Array(vec![info]));
    }
    e
}

/// `google.rpc.ErrorInfo` for an A2A error code (the JSON-RPC codes have none): `reason` is
/// the error's name in UPPER_SNAKE_CASE, e.g. `TASK_NOT_FOUND`.
fn error_info(code: ErrorCode, metadata: &[(&str, &str)]) -> Option<Value> {
    let n = code.code();
    if !(-32099..=-32000).contains(&n) || matches!(code, ErrorCode::Other(_)) {
        return None;
    }
    let metadata: Map<String, Value> = metadata.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    Some(json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": upper_snake(code.name()),
        "domain": ERROR_DOMAIN,
        "metadata": metadata,
    }))
}

fn upper_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `http://HOST/` for the `Host` the request came by; a `Host` that is not a plain
/// `host[:port]` (or `[v6]:port`) is refused rather than echoed into the card.
pub fn host_url(headers: &HeaderMap) -> Result<String, Error> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).ok_or(Error::Host)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
    if host.is_empty() || host.len() > 260 || !host.chars().all(allowed) {
        return Err(Error::Host);
    }
    Ok(format!("http://{host}/"))
}

/// A strong `ETag` for a body: FNV-1a over its bytes, stable across runs and builds.
pub fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Whether `If-None-Match` names `etag` (or `*`).
pub fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a2a_errors_carry_error_info_named_in_upper_snake_case() {
        let e = error(ErrorCode::TaskNotFound, "no task", &[("taskId", "t1")]);
        let info = &e.data.unwrap()[0];
        assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
        assert_eq!(info["reason"], "TASK_NOT_FOUND");
        assert_eq!(info["domain"], "a2a-protocol.org");
        assert_eq!(info["metadata"]["taskId"], "t1");
        let e = with_error_info(RpcError::new(ErrorCode::PushNotificationNotSupported, "x"));
        assert_eq!(e.data.unwrap()[0]["reason"], "PUSH_NOTIFICATION_NOT_SUPPORTED");
        let reasons: Vec<String> = (-32009..=-32001)
            .rev()
            .map(|n| error(ErrorCode::from_code(n), "", &[]).data.unwrap()[0]["reason"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            reasons,
            [
                "TASK_NOT_FOUND",
                "TASK_NOT_CANCELABLE",
                "PUSH_NOTIFICATION_NOT_SUPPORTED",
                "UNSUPPORTED_OPERATION",
                "CONTENT_TYPE_NOT_SUPPORTED",
                "INVALID_AGENT_RESPONSE",
                "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
                "EXTENSION_SUPPORT_REQUIRED",
                "VERSION_NOT_SUPPORTED",
            ]
        );
        // Plain JSON-RPC errors, and codes A2A does not define, have no A2A reason.
        assert!(error(ErrorCode::from_code(-32050), "x", &[]).data.is_none());
        assert!(error(ErrorCode::InvalidParams, "x", &[]).data.is_none());
    }

    #[test]
    fn content_type_must_be_json_when_given() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        for ok in ["application/json", "Application/JSON; charset=utf-8", "application/a2a+json"] {
            h.insert(header::CONTENT_TYPE, ok.parse().unwrap());
            assert!(check_content_type(&h).is_ok(), "{ok}");
        }
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(check_content_type(&h).unwrap_err().to_string().contains("text/plain"));
    }

    #[test]
    fn request_ids_are_strings_integers_or_null() {
        assert_eq!(request_id(Some(json!(7))).unwrap(), Some(RequestId::Number(7)));
        assert_eq!(request_id(Some(json!("a"))).unwrap(), Some(RequestId::String("a".into())));
        assert_eq!(request_id(Some(Value::Null)).unwrap(), None);
        assert!(request_id(Some(json!({"a": 1}))).is_err());
        assert!(request_id(Some(json!([1]))).is_err());
    }

    #[test]
    fn history_length_is_not_negative() {
        assert_eq!(history_length(None).unwrap(), None);
        assert_eq!(history_length(Some(0)).unwrap(), Some(0));
        assert!(history_length(Some(-1)).unwrap_err().to_string().contains("-1"));
    }

    #[test]
    fn the_card_url_comes_from_a_plain_host_header() {
        let mut h = HeaderMap::new();
        assert!(host_url(&h).is_err());
        h.insert(header::HOST, "agent.example:8080".parse().unwrap());
        assert_eq!(host_url(&h).unwrap(), "http://agent.example:8080/");
        h.insert(header::HOST, "[::1]:9".parse().unwrap());
        assert_eq!(host_url(&h).unwrap(), "http://[::1]:9/");
        h.insert(header::HOST, "evil/path?x".parse().unwrap());
        assert!(host_url(&h).is_err());
    }

    #[test]
    fn if_none_match_revalidates_the_etag() {
        let tag = etag(b"card");
        assert_eq!(tag, etag(b"card"));
        assert_ne!(tag, etag(b"card2"));
        let mut h = HeaderMap::new();
        assert!(!matches_etag(&h, &tag));
        h.insert(header::IF_NONE_MATCH, format!("\"x\", {tag}").parse().unwrap());
        assert!(matches_etag(&h, &tag));
    }
}
