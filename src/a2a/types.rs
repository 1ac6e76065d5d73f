//! The A2A 1.0 JSON-RPC binding as serde types: agent card, messages, parts, tasks, stream
//! events, request params and the JSON-RPC envelopes with their error codes.
//!
//! Reading is lenient (unknown fields are ignored; fields a proto3 JSON encoder leaves out
//! when empty default to empty), writing is strict (required fields are always written, the
//! enum strings and part shapes are the 1.0 ones).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod envelope;

pub use envelope::*;

/// The protocol version this module speaks, sent in [`VERSION_HEADER`].
pub const PROTOCOL_VERSION: &str = "1.0";
/// The HTTP header that carries the protocol version of a request.
pub const VERSION_HEADER: &str = "A2A-Version";
/// Where an agent serves its card.
pub const AGENT_CARD_PATH: &str = "/.well-known/agent-card.json";
/// The `protocolBinding` of the JSON-RPC interface.
pub const BINDING_JSONRPC: &str = "JSONRPC";
/// The `protocolBinding` of the HTTP+JSON (REST) interface.
pub const BINDING_HTTP_JSON: &str = "HTTP+JSON";

/// JSON-RPC method names of the 1.0 binding.
pub mod method {
    pub const SEND_MESSAGE: &str = "SendMessage";
    pub const SEND_STREAMING_MESSAGE: &str = "SendStreamingMessage";
    pub const GET_TASK: &str = "GetTask";
    pub const LIST_TASKS: &str = "ListTasks";
    pub const CANCEL_TASK: &str = "CancelTask";
    pub const SUBSCRIBE_TO_TASK: &str = "SubscribeToTask";
    pub const GET_EXTENDED_AGENT_CARD: &str = "GetExtendedAgentCard";
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------
// Agent card

/// An agent's self-description, served at [`AGENT_CARD_PATH`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub supported_interfaces: Vec<AgentInterface>,
    #[serde(default)]
    pub capabilities: AgentCapabilities,
    #[serde(default)]
    pub default_input_modes: Vec<String>,
    #[serde(default)]
    pub default_output_modes: Vec<String>,
    #[serde(default)]
    pub skills: Vec<AgentSkill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AgentProvider>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Scheme name → scheme (`apiKeySecurityScheme`, `httpAuthSecurityScheme`, ...), kept
    /// as JSON; [`super::auth`] reads the parts a2a matches credentials against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub security_schemes: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_requirements: Vec<Value>,
}

impl AgentCard {
    /// The first interface with the JSON-RPC binding, if any.
    pub fn jsonrpc_interface(&self) -> Option<&AgentInterface> {
        self.supported_interfaces.iter().find(|i| i.protocol_binding.eq_ignore_ascii_case(BINDING_JSONRPC))
    }
}

/// One way to reach the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    #[serde(default)]
    pub url: String,
    /// `JSONRPC`, `GRPC` or `HTTP+JSON`.
    #[serde(default)]
    pub protocol_binding: String,
    #[serde(default)]
    pub protocol_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// What optional parts of the protocol the agent supports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    #[serde(default)]
    pub streaming: bool,
    #[serde(default)]
    pub push_notifications: bool,
    #[serde(default)]
    pub extensions: Vec<AgentExtension>,
    #[serde(default)]
    pub extended_agent_card: bool,
}

/// A protocol extension the agent supports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentExtension {
    #[serde(default)]
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

/// Who runs the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentProvider {
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub url: String,
}

/// Something the agent can do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_requirements: Vec<Value>,
}

// ---------------------------------------------------------------------------------------
// Messages and parts

/// Who wrote a message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    #[serde(rename = "ROLE_USER")]
    User,
    #[serde(rename = "ROLE_AGENT")]
    Agent,
    /// Missing or unknown (proto3 leaves the zero value out).
    #[default]
    #[serde(rename = "ROLE_UNSPECIFIED", other)]
    Unspecified,
}

/// One message of a conversation. Like every request type here, it also reads the proto
/// field names (`message_id`), as ProtoJSON parsers must.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    #[serde(alias = "message_id")]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(alias = "context_id")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(alias = "task_id")]
    pub task_id: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(alias = "reference_task_ids")]
    pub reference_task_ids: Vec<String>,
}

impl Message {
    /// A user message with one text part.
    pub fn user_text(message_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(Role::User, message_id, vec![Part::text(text)])
    }

    /// A message with the given parts and no context or task.
    pub fn new(role: Role, message_id: impl Into<String>, parts: Vec<Part>) -> Self {
        Self {
            role,
            message_id: message_id.into(),
            context_id: None,
            task_id: None,
            parts,
            metadata: None,
            extensions: Vec::new(),
            reference_task_ids: Vec::new(),
        }
    }

    /// The text parts, joined by newlines.
    pub fn text(&self) -> String {
        join_text(&self.parts)
    }
}

/// The content of a part: exactly one of these.
#[derive(Clone, Debug, PartialEq)]
pub enum PartContent {
    Text(String),
    /// Structured data (any JSON value).
    Data(Value),
    /// Bytes, base64-encoded as on the wire.
    Raw(String),
    /// A reference to content elsewhere.
    Url(String),
}

/// A piece of a message or artifact. On the wire the content member (`text`, `data`, `raw`
/// or `url`) says which kind it is; there is no `kind` field in 1.0.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(try_from = "PartWire")]
pub struct Part {
    pub content: PartContent,
    pub metadata: Option<Map<String, Value>>,
    pub filename: Option<String>,
    pub media_type: Option<String>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Self::of(PartContent::Text(text.into()))
    }

    pub fn data(data: Value) -> Self {
        Self::of(PartContent::Data(data))
    }

    fn of(content: PartContent) -> Self {
        Self { content, metadata: None, filename: None, media_type: None }
    }

    /// The text, if this is a text part.
    pub fn as_text(&self) -> Option<&str> {
        match &self.content {
            PartContent::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The data, if this is a data part.
    pub fn as_data(&self) -> Option<&Value> {
        match &self.content {
            PartContent::Data(d) => Some(d),
            _ => None,
        }
    }
}

/// A part as it is written: borrowed from the part, never a copy of it (every message, task
/// and event serialises its parts, on both sides of every exchange).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartWireRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
}

impl Serialize for Part {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut w = PartWireRef {
            text: None,
            data: None,
            raw: None,
            url: None,
            metadata: self.metadata.as_ref(),
            filename: self.filename.as_deref(),
            media_type: self.media_type.as_deref(),
        };
        match &self.content {
            PartContent::Text(t) => w.text = Some(t),
            PartContent::Data(d) => w.data = Some(d),
            PartContent::Raw(r) => w.raw = Some(r),
            PartContent::Url(u) => w.url = Some(u),
        }
        w.serialize(serializer)
    }
}

/// A part as it is read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
}

/// Why a JSON object is not an A2A part (serde reports it as the decoding error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("a part must have one of `text`, `data`, `raw` or `url`; it has none")]
    NoContent,
    #[error("a part must have exactly one of `text`, `data`, `raw` or `url`; it has {}", .0.join(", "))]
    ManyContents(Vec<&'static str>),
}

impl TryFrom<PartWire> for Part {
    type Error = PartError;

    fn try_from(w: PartWire) -> Result<Self, PartError> {
        let mut found = Vec::new();
        let mut content = None;
        for (name, c) in [
            ("text", w.text.map(PartContent::Text)),
            ("data", w.data.map(PartContent::Data)),
            ("raw", w.raw.map(PartContent::Raw)),
            ("url", w.url.map(PartContent::Url)),
        ] {
            if let Some(c) = c {
                found.push(name);
                content = Some(c);
            }
        }
        match (content, found.len()) {
            (Some(content), 1) => {
                Ok(Part { content, metadata: w.metadata, filename: w.filename, media_type: w.media_type })
            }
            (_, 0) => Err(PartError::NoContent),
            _ => Err(PartError::ManyContents(found)),
        }
    }
}

fn join_text(parts: &[Part]) -> String {
    let texts: Vec<&str> = parts.iter().filter_map(Part::as_text).collect();
    texts.join("\n")
}

// ---------------------------------------------------------------------------------------
// Tasks

/// The life-cycle state of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TaskState {
    #[serde(rename = "TASK_STATE_SUBMITTED")]
    Submitted,
    #[serde(rename = "TASK_STATE_WORKING")]
    Working,
    #[serde(rename = "TASK_STATE_COMPLETED")]
    Completed,
    #[serde(rename = "TASK_STATE_FAILED")]
    Failed,
    #[serde(rename = "TASK_STATE_CANCELED")]
    Canceled,
    #[serde(rename = "TASK_STATE_REJECTED")]
    Rejected,
    #[serde(rename = "TASK_STATE_INPUT_REQUIRED")]
    InputRequired,
    #[serde(rename = "TASK_STATE_AUTH_REQUIRED")]
    AuthRequired,
    /// Missing or unknown (proto3 leaves the zero value out; newer peers may add states).
    #[default]
    #[serde(rename = "TASK_STATE_UNSPECIFIED", other)]
    Unspecified,
}

impl TaskState {
    /// Completed, failed, canceled or rejected: the task will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled | Self::Rejected)
    }

    /// Input or auth required: the task waits for the client.
    pub fn is_interrupted(self) -> bool {
        matches!(self, Self::InputRequired | Self::AuthRequired)
    }

    /// The wire string, e.g. `TASK_STATE_COMPLETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "TASK_STATE_UNSPECIFIED",
            Self::Submitted => "TASK_STATE_SUBMITTED",
            Self::Working => "TASK_STATE_WORKING",
            Self::Completed => "TASK_STATE_COMPLETED",
            Self::Failed => "TASK_STATE_FAILED",
            Self::Canceled => "TASK_STATE_CANCELED",
            Self::Rejected => "TASK_STATE_REJECTED",
            Self::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            Self::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's current state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    #[serde(default)]
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// A unit of work an agent does for a message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub context_id: String,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub history: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Task {
    /// The task's result: the parts of its artifacts, else those of its status message.
    pub fn output(&self) -> Output {
        let artifact_parts: Vec<&Part> = self.artifacts.iter().flat_map(|a| &a.parts).collect();
        if artifact_parts.is_empty() {
            let parts: Vec<&Part> = self.status.message.iter().flat_map(|m| &m.parts).collect();
            Output::from_parts(parts)
        } else {
            Output::from_parts(artifact_parts)
        }
    }
}

/// An output of a task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    #[serde(default)]
    pub artifact_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
}

/// The text and data a task or message produced.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Output {
    /// The text parts, joined by newlines.
    pub text: String,
    /// The data parts, in order.
    pub data: Vec<Value>,
}

impl Output {
    fn from_parts(parts: Vec<&Part>) -> Self {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p.as_text()).collect();
        Output { text: texts.join("\n"), data: parts.iter().filter_map(|p| p.as_data()).cloned().collect() }
    }
}

// ---------------------------------------------------------------------------------------
// Results and stream events

/// The result of `SendMessage`: a task, or a direct message reply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum SendMessageResponse {
    Task(Task),
    Message(Message),
}

impl SendMessageResponse {
    /// The result text and data (see [`Task::output`]; a message reply's own parts).
    pub fn output(&self) -> Output {
        match self {
            Self::Task(t) => t.output(),
            Self::Message(m) => Output::from_parts(m.parts.iter().collect()),
        }
    }
}

/// One event of an SSE stream (`SendStreamingMessage`, `SubscribeToTask`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum StreamResponse {
    Task(Task),
    Message(Message),
    StatusUpdate(TaskStatusUpdateEvent),
    ArtifactUpdate(TaskArtifactUpdateEvent),
}

/// A task's status changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusUpdateEvent {
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub context_id: String,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// A task produced (a chunk of) an artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TaskArtifactUpdateEvent {
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub context_id: String,
    #[serde(default)]
    pub artifact: Artifact,
    /// Append these parts to the artifact with the same id instead of replacing it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub append: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub last_chunk: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Task {
    /// [`Task::apply`] of an event the caller no longer needs: its parts are moved into the
    /// task, not copied (a client following a stream sees every message and artifact once).
    pub fn absorb(&mut self, event: StreamResponse) {
        match event {
            StreamResponse::Task(t) if t.id == self.id => *self = t,
            StreamResponse::StatusUpdate(u) if u.task_id == self.id => self.status = u.status,
            StreamResponse::ArtifactUpdate(u) if u.task_id == self.id => {
                let existing = self.artifacts.iter_mut().find(|a| a.artifact_id == u.artifact.artifact_id);
                match existing {
                    Some(a) if u.append => a.parts.extend(u.artifact.parts),
                    Some(a) => *a = u.artifact,
                    None => self.artifacts.push(u.artifact),
                }
            }
            _ => {}
        }
    }

    /// Applies a stream event that concerns this task (others are ignored).
    pub fn apply(&mut self, event: &StreamResponse) {
        match event {
            StreamResponse::Task(t) if t.id == self.id => *self = t.clone(),
            StreamResponse::StatusUpdate(u) if u.task_id == self.id => {
                self.status = u.status.clone();
            }
            StreamResponse::ArtifactUpdate(u) if u.task_id == self.id => {
                let existing = self.artifacts.iter_mut().find(|a| a.artifact_id == u.artifact.artifact_id);
                match existing {
                    Some(a) if u.append => a.parts.extend(u.artifact.parts.iter().cloned()),
                    Some(a) => *a = u.artifact.clone(),
                    None => self.artifacts.push(u.artifact.clone()),
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request params

/// Params of `SendMessage` and `SendStreamingMessage`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<SendMessageConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// How `SendMessage` should behave.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageConfiguration {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(alias = "accepted_output_modes")]
    pub accepted_output_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(alias = "history_length")]
    pub history_length: Option<i32>,
    /// Answer as soon as the task exists instead of when it is terminal or interrupted.
    #[serde(default, skip_serializing_if = "is_false")]
    #[serde(alias = "return_immediately")]
    pub return_immediately: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(alias = "task_push_notification_config")]
    pub task_push_notification_config: Option<Value>,
}

/// Params of `GetTask`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetTaskRequest {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(alias = "history_length")]
    pub history_length: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Params of `CancelTask`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CancelTaskRequest {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Params of `ListTasks` (in the HTTP+JSON binding, the query of `GET /tasks`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Only tasks in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i32>,
    /// RFC 3339: only tasks whose status changed after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_timestamp_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_artifacts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Result of `ListTasks`: one page, newest update first; `nextPageToken` is `""` on the last.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub next_page_token: String,
    #[serde(default)]
    pub page_size: i32,
    #[serde(default)]
    pub total_size: i32,
}

/// Params of `SubscribeToTask`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToTaskRequest {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Params of `GetExtendedAgentCard`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetExtendedAgentCardRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn send_message_request_from_the_spec_round_trips_exactly() {
        let wire = json!({"jsonrpc":"2.0","id":1,"method":"SendMessage",
            "params":{"message":{"role":"ROLE_USER","messageId":"m-1","parts":[{"text":"hello A2A"}]}}});
        let req: JsonRpcRequest<SendMessageRequest> = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(req.method, "SendMessage");
        assert_eq!(req.params.message.role, Role::User);
        assert_eq!(req.params.message.text(), "hello A2A");
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
        let built = JsonRpcRequest::new(
            1,
            method::SEND_MESSAGE,
            SendMessageRequest {
                message: Message::user_text("m-1", "hello A2A"),
                configuration: None,
                metadata: None,
                tenant: None,
            },
        );
        assert_eq!(serde_json::to_value(&built).unwrap(), wire);
    }

    #[test]
    fn send_message_response_from_the_spec_round_trips_and_yields_the_output() {
        let wire = json!({"jsonrpc":"2.0","id":1,"result":{"task":{"id":"t-1","contextId":"c-1",
            "status":{"state":"TASK_STATE_COMPLETED","timestamp":"2026-05-01T10:00:00Z"},
            "artifacts":[{"artifactId":"a-1","name":"echo","parts":[{"text":"echo: hello A2A"}]}],
            "history":[{"role":"ROLE_USER","messageId":"m-1","parts":[{"text":"hello A2A"}]}]}}});
        let resp: JsonRpcResponse<SendMessageResponse> = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&resp).unwrap(), wire);
        let result = resp.into_result().unwrap();
        let SendMessageResponse::Task(task) = &result else {
            panic!("expected a task, got {result:?}");
        };
        assert_eq!(task.status.state, TaskState::Completed);
        assert!(task.status.state.is_terminal());
        assert_eq!(result.output().text, "echo: hello A2A");
    }

    #[test]
    fn agent_card_round_trips_and_names_its_jsonrpc_interface() {
        let wire = json!({
            "name": "echo", "description": "Echoes", "version": "1.0.0",
            "supportedInterfaces": [
                {"url": "http://127.0.0.1:9/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                {"url": "http://127.0.0.1:9/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0", "tenant": "t"}
            ],
            "capabilities": {"streaming": true, "pushNotifications": false, "extensions": [], "extendedAgentCard": false},
            "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "echo", "name": "Echo", "description": "Echoes text", "tags": ["echo"], "examples": ["hi"]}]
        });
        let card: AgentCard = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&card).unwrap(), wire);
        let iface = card.jsonrpc_interface().unwrap();
        assert_eq!(iface.url, "http://127.0.0.1:9/");
        assert!(card.capabilities.streaming);
    }

    #[test]
    fn reading_ignores_unknown_fields_and_defaults_what_proto3_leaves_out() {
        let card: AgentCard = serde_json::from_value(json!({
            "name": "x", "supportedInterfaces": [{"url": "http://h/", "protocolBinding": "JSONRPC"}],
            "capabilities": {}, "futureField": {"a": 1}
        }))
        .unwrap();
        assert!(card.skills.is_empty());
        assert!(!card.capabilities.streaming);
        let task: Task = serde_json::from_value(json!({
            "id": "t", "status": {"state": "TASK_STATE_WORKING"}, "somethingNew": true
        }))
        .unwrap();
        assert_eq!(task.status.state, TaskState::Working);
        assert!(task.artifacts.is_empty());
        let later: TaskState = serde_json::from_value(json!("TASK_STATE_FROM_THE_FUTURE")).unwrap();
        assert_eq!(later, TaskState::Unspecified);
    }

    #[test]
    fn parts_are_told_apart_by_their_member() {
        let parts: Vec<Part> = serde_json::from_value(json!([
            {"text": "a"}, {"data": {"n": 1}}, {"raw": "aGk=", "mediaType": "text/plain", "filename": "f.txt"},
            {"url": "http://x/y"}
        ]))
        .unwrap();
        assert_eq!(parts[0].content, PartContent::Text("a".into()));
        assert_eq!(parts[1].content, PartContent::Data(json!({"n": 1})));
        assert_eq!(parts[2].content, PartContent::Raw("aGk=".into()));
        assert_eq!(parts[2].media_type.as_deref(), Some("text/plain"));
        assert_eq!(parts[3].content, PartContent::Url("http://x/y".into()));
        let text = serde_json::to_value(Part::text("a")).unwrap();
        assert_eq!(text, json!({"text": "a"}));
    }

    #[test]
    fn every_kind_of_part_is_written_as_it_was_read() {
        let wire = json!([
            {"text": "a", "metadata": {"k": "v"}},
            {"data": {"n": [1, 2]}, "mediaType": "application/json"},
            {"raw": "aGk=", "filename": "f.txt", "mediaType": "text/plain"},
            {"url": "http://x/y", "filename": "y"}
        ]);
        let parts: Vec<Part> = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parts).unwrap(), wire);
        // Members in the order the wire type declares them, as before.
        assert_eq!(
            serde_json::to_string(&parts[2]).unwrap(),
            r#"{"raw":"aGk=","filename":"f.txt","mediaType":"text/plain"}"#
        );
    }

    #[test]
    fn a_part_with_two_or_no_members_is_rejected_with_a_clear_message() {
        let two = serde_json::from_value::<Part>(json!({"text": "a", "data": 1})).unwrap_err();
        assert!(two.to_string().contains("exactly one of `text`, `data`, `raw` or `url`; it has text, data"), "{two}");
        let none = serde_json::from_value::<Part>(json!({"kind": "text"})).unwrap_err();
        assert!(none.to_string().contains("it has none"), "{none}");
    }

    #[test]
    fn every_error_code_maps_to_its_name_and_back() {
        let expected = [
            (-32700, "ParseError"),
            (-32600, "InvalidRequest"),
            (-32601, "MethodNotFound"),
            (-32602, "InvalidParams"),
            (-32603, "InternalError"),
            (-32001, "TaskNotFound"),
            (-32002, "TaskNotCancelable"),
            (-32003, "PushNotificationNotSupported"),
            (-32004, "UnsupportedOperation"),
            (-32005, "ContentTypeNotSupported"),
            (-32006, "InvalidAgentResponse"),
            (-32007, "ExtendedAgentCardNotConfigured"),
            (-32008, "ExtensionSupportRequired"),
            (-32009, "VersionNotSupported"),
        ];
        for (n, name) in expected {
            let code = ErrorCode::from_code(n);
            assert_eq!(code.name(), name);
            assert_eq!(code.code(), n);
            assert_eq!(ErrorCode::from_reason(&code.reason()), Some(code), "{}", code.reason());
        }
        assert_eq!(ErrorCode::TaskNotFound.reason(), "TASK_NOT_FOUND");
        assert_eq!(ErrorCode::ExtendedAgentCardNotConfigured.reason(), "EXTENDED_AGENT_CARD_NOT_CONFIGURED");
        assert_eq!(ErrorCode::from_reason("SOMETHING_ELSE"), None);
        assert_eq!(ErrorCode::from_code(-31999), ErrorCode::Other(-31999));
        assert_eq!(ErrorCode::Other(-31999).code(), -31999);
    }

    #[test]
    fn an_error_response_reads_as_a_typed_error_with_a_clear_message() {
        let resp: JsonRpcResponse<Task> = serde_json::from_value(json!({
            "jsonrpc": "2.0", "id": 7,
            "error": {"code": -32001, "message": "Task not found: t-9", "data": {"taskId": "t-9"}}
        }))
        .unwrap();
        let err = resp.into_result().unwrap_err();
        assert_eq!(err.code, ErrorCode::TaskNotFound);
        assert_eq!(
            err.to_string(),
            "TaskNotFound (-32001, the agent does not know this task (wrong id, or it expired)): Task not found: t-9"
        );
        let back = serde_json::to_value(&err).unwrap();
        assert_eq!(back["code"], json!(-32001));
    }

    #[test]
    fn stream_events_update_a_task() {
        let mut task: Task =
            serde_json::from_value(json!({"id": "t", "contextId": "c", "status": {"state": "TASK_STATE_SUBMITTED"}}))
                .unwrap();
        let events: Vec<StreamResponse> = serde_json::from_value(json!([
            {"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_WORKING"}}},
            {"artifactUpdate": {"taskId": "t", "contextId": "c", "artifact": {"artifactId": "a", "parts": [{"text": "one"}]}}},
            {"artifactUpdate": {"taskId": "t", "contextId": "c", "append": true, "lastChunk": true,
                "artifact": {"artifactId": "a", "parts": [{"text": "two"}]}}},
            {"statusUpdate": {"taskId": "other", "contextId": "c", "status": {"state": "TASK_STATE_FAILED"}}},
            {"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_COMPLETED"}}}
        ]))
        .unwrap();
        let mut absorbed = task.clone();
        for e in &events {
            task.apply(e);
        }
        assert_eq!(task.status.state, TaskState::Completed);
        assert_eq!(task.output().text, "one\ntwo");
        for e in events {
            absorbed.absorb(e);
        }
        assert_eq!(absorbed, task, "moved in or copied, the same task");
    }

    #[test]
    fn output_falls_back_to_the_status_message_and_collects_data() {
        let task: Task = serde_json::from_value(json!({"id": "t", "status": {
            "state": "TASK_STATE_COMPLETED",
            "message": {"role": "ROLE_AGENT", "messageId": "r", "parts": [{"text": "done"}, {"data": {"n": 3}}]}
        }}))
        .unwrap();
        let out = task.output();
        assert_eq!(out.text, "done");
        assert_eq!(out.data, vec![json!({"n": 3})]);
    }

    #[test]
    fn return_immediately_is_written_only_when_set() {
        let c = SendMessageConfiguration { return_immediately: true, ..Default::default() };
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"returnImmediately": true}));
        assert_eq!(serde_json::to_value(SendMessageConfiguration::default()).unwrap(), json!({}));
    }
}
