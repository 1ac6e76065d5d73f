//! Request bodies: JSON, or YAML when the content type says so, parsed off the serving
//! threads when that can take long.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use crate::api::yaml::{self, YamlError};
use crate::apiserver::status::ApiError;

/// Parses a request body as JSON, or YAML when the content type says so. YAML is bounded
/// in depth before it is parsed ([`crate::api::yaml`]); JSON by serde_json's recursion limit.
pub fn parse_body(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let parsed = if yaml {
        yaml::from_slice(body).map_err(|e| match e {
            YamlError::Syntax(e) => format!("the request body is not valid YAML: {e}"),
            e @ YamlError::NotFinite { .. } => format!("the request body is refused: {e}"),
            e @ (YamlError::TooDeep { .. } | YamlError::NotUtf8 { .. }) => format!("the request body {e}"),
        })
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| format!("the request body is not valid JSON: {e}"))
    };
    parsed.map_err(ApiError::bad_request)
}

/// [`parse_body`], off the threads that serve requests when it can take long.
pub async fn parse_body_off_thread(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    off_thread(body, yaml, move |b| parse_body(b, yaml)).await
}

/// JSON bodies up to this size are parsed on the thread serving the request (well under a
/// millisecond). YAML bodies (libyaml reads a few MB/s at the depth bound) and larger JSON
/// ones are parsed on the blocking pool, so that one slow body never holds up the requests,
/// health checks included, that share its thread.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

pub(super) async fn off_thread<T: Send + 'static>(
    body: &Bytes,
    yaml: bool,
    parse: impl FnOnce(&Bytes) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !yaml && body.len() <= INLINE_PARSE_BYTES {
        return parse(body);
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|e| ApiError::internal(format!("parsing the request body failed: {e}")))?
}

pub(super) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn body_is_yaml(headers: &HeaderMap) -> Result<bool, ApiError> {
    match media_type(headers).as_str() {
        "application/json" | "" | "*/*" => Ok(false),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(true),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types \
             include: application/json, application/yaml (got {other:?})"
        ))),
    }
}
