//! The JSON-RPC 2.0 envelopes of the A2A binding: requests, responses, and the error object
//! with the JSON-RPC and A2A error codes.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON-RPC request id: a number or a string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

/// A JSON-RPC 2.0 request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JsonRpcRequest<P> {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    pub method: String,
    pub params: P,
}

impl<P> JsonRpcRequest<P> {
    pub fn new(id: i64, method: &str, params: P) -> Self {
        Self { jsonrpc: "2.0".to_owned(), id: Some(RequestId::Number(id)), method: method.to_owned(), params }
    }
}

/// A JSON-RPC 2.0 response: `result` or `error`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: Deserialize<'de>"))]
pub struct JsonRpcResponse<R> {
    pub jsonrpc: String,
    /// `null` when the request could not be read far enough to know its id.
    pub id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl<R> JsonRpcResponse<R> {
    pub fn success(id: Option<RequestId>, result: R) -> Self {
        Self { jsonrpc: "2.0".to_owned(), id, result: Some(result), error: None }
    }

    pub fn failure(id: Option<RequestId>, error: RpcError) -> Self {
        Self { jsonrpc: "2.0".to_owned(), id, result: None, error: Some(error) }
    }

    /// The result, or the error the peer answered with (an empty answer is an
    /// [`ErrorCode::InvalidAgentResponse`]).
    pub fn into_result(self) -> Result<R, RpcError> {
        match (self.result, self.error) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            (None, None) => {
                Err(RpcError::new(ErrorCode::InvalidAgentResponse, "the response has neither `result` nor `error`"))
            }
        }
    }
}

/// A JSON-RPC error object as sent on the wire.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RpcError {
    #[serde(with = "code_as_int")]
    pub code: ErrorCode,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// The JSON-RPC and A2A error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -32700: the request was not valid JSON.
    ParseError,
    /// -32600: the JSON was not a valid JSON-RPC request.
    InvalidRequest,
    /// -32601: the agent does not know the method.
    MethodNotFound,
    /// -32602: the params do not fit the method.
    InvalidParams,
    /// -32603: the agent failed internally.
    InternalError,
    /// -32001
    TaskNotFound,
    /// -32002
    TaskNotCancelable,
    /// -32003
    PushNotificationNotSupported,
    /// -32004
    UnsupportedOperation,
    /// -32005
    ContentTypeNotSupported,
    /// -32006
    InvalidAgentResponse,
    /// -32007
    ExtendedAgentCardNotConfigured,
    /// -32008
    ExtensionSupportRequired,
    /// -32009
    VersionNotSupported,
    /// Any other code (server-defined).
    Other(i64),
}

impl ErrorCode {
    const KNOWN: [(ErrorCode, i64, &'static str, &'static str); 14] = [
        (ErrorCode::ParseError, -32700, "ParseError", "the request is not valid JSON"),
        (ErrorCode::InvalidRequest, -32600, "InvalidRequest", "the request is not a valid JSON-RPC request"),
        (ErrorCode::MethodNotFound, -32601, "MethodNotFound", "the agent does not implement this method"),
        (ErrorCode::InvalidParams, -32602, "InvalidParams", "the request's params are invalid"),
        (ErrorCode::InternalError, -32603, "InternalError", "the agent failed internally"),
        (
            ErrorCode::TaskNotFound,
            -32001,
            "TaskNotFound",
            "the agent does not know this task (wrong id, or it expired)",
        ),
        (ErrorCode::TaskNotCancelable, -32002, "TaskNotCancelable", "the task can no longer be canceled"),
        (
            ErrorCode::PushNotificationNotSupported,
            -32003,
            "PushNotificationNotSupported",
            "the agent does not support push notifications",
        ),
        (ErrorCode::UnsupportedOperation, -32004, "UnsupportedOperation", "the agent does not support this operation"),
        (
            ErrorCode::ContentTypeNotSupported,
            -32005,
            "ContentTypeNotSupported",
            "the agent does not accept this content type",
        ),
        (ErrorCode::InvalidAgentResponse, -32006, "InvalidAgentResponse", "the agent's response is invalid"),
        (
            ErrorCode::ExtendedAgentCardNotConfigured,
            -32007,
            "ExtendedAgentCardNotConfigured",
            "the agent has no extended agent card",
        ),
        (
            ErrorCode::ExtensionSupportRequired,
            -32008,
            "ExtensionSupportRequired",
            "the agent requires an extension the client did not declare",
        ),
        (
            ErrorCode::VersionNotSupported,
            -32009,
            "VersionNotSupported",
            "the agent does not speak the requested A2A protocol version",
        ),
    ];

    /// The code for a number.
    pub fn from_code(code: i64) -> Self {
        Self::KNOWN.iter().find(|(_, n, _, _)| *n == code).map_or(Self::Other(code), |(c, _, _, _)| *c)
    }

    /// The number on the wire.
    pub fn code(self) -> i64 {
        match self {
            Self::Other(n) => n,
            known => Self::KNOWN.iter().find(|(c, _, _, _)| *c == known).map_or(0, |(_, n, _, _)| *n),
        }
    }

    /// The name in the specification, e.g. `TaskNotFound`.
    pub fn name(self) -> &'static str {
        self.entry().map_or("ServerError", |(_, _, name, _)| name)
    }

    /// The code named by a `google.rpc.ErrorInfo` `reason` (the name in UPPER_SNAKE_CASE,
    /// e.g. `TASK_NOT_FOUND`), as the HTTP+JSON binding reports errors. `None` for a reason
    /// A2A does not define.
    pub fn from_reason(reason: &str) -> Option<Self> {
        Self::KNOWN.iter().map(|(c, _, _, _)| *c).find(|c| c.reason() == reason)
    }

    /// The `google.rpc.ErrorInfo` `reason` of the code, e.g. `TASK_NOT_FOUND`.
    pub fn reason(self) -> String {
        let mut out = String::new();
        for (i, ch) in self.name().chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }

    /// What the code means, in a sentence.
    pub fn meaning(self) -> &'static str {
        self.entry().map_or("the agent reported an error", |(_, _, _, m)| m)
    }

    fn entry(self) -> Option<(ErrorCode, i64, &'static str, &'static str)> {
        Self::KNOWN.iter().find(|(c, _, _, _)| *c == self).copied()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name(), self.code(), self.meaning())
    }
}

mod code_as_int {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ErrorCode;

    pub fn serialize<S: Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(code.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        i64::deserialize(d).map(ErrorCode::from_code)
    }
}
