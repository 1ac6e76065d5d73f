//! The server side of the sample agent (`a2a demo-agent`): a small A2A 1.0 JSON-RPC server
//! with a few deterministic skills (echo, uppercase, word count, sleep, allocate, fail, ask) and
//! fault injection, used by the quickstart, load and fault tests.
//!
//! Every task it runs is logged to stderr as one line
//! (`a2a-demo-agent: event=start task=… messageId=… skill=…`), so tests can prove a task ran
//! exactly once. A message id seen before returns the existing task instead of running again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::types::{
    AGENT_CARD_PATH, AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Artifact, BINDING_JSONRPC,
    CancelTaskRequest, ErrorCode, GetTaskRequest, JsonRpcResponse, Message, PROTOCOL_VERSION, Part, RequestId, Role,
    RpcError, SendMessageRequest, SendMessageResponse, SubscribeToTaskRequest, Task, TaskState, TaskStatus,
    VERSION_HEADER, method,
};
use crate::api::quantity::{Duration as DurationQ, Memory};

mod events;
mod list;
mod token;
mod wire;

use events::{Until, sse};
use turns::{continue_task, tck_skill};

/// One line on stderr, for the agent's log. A failed write (the log's reader gone) is
/// ignored: `eprintln!` would panic, and a panic while the task table is locked would poison
/// it and fail every later task.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// After `note!`, which it uses.
mod turns;

/// What the demo agent can do; each enabled skill is listed in its card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Skill {
    /// Answers with the message text.
    Echo,
    /// Answers with the text in upper case.
    Uppercase,
    /// Answers with the number of words.
    Wordcount,
    /// Sleeps for DURATION (default 1s): `sleep 2s`, or a data part `{"skill": "sleep", "sleep": "2s"}`.
    Sleep,
    /// Allocates SIZE and touches every page, keeps it HOLD long (default: not at all), frees
    /// it: `allocate 64Mi 1s` (a bare number is MiB), or a data part
    /// `{"skill": "allocate", "allocate": "64Mi", "hold": "1s"}`.
    Allocate,
    /// Always fails.
    Fail,
    /// Asks a question (the message text after `ask`, or a default one) and waits in
    /// `input-required`; the next message to the same task is the answer, which completes it.
    Ask,
}

impl Skill {
    pub const ALL: [Skill; 7] =
        [Skill::Echo, Skill::Uppercase, Skill::Wordcount, Skill::Sleep, Skill::Allocate, Skill::Fail, Skill::Ask];

    pub fn id(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Uppercase => "uppercase",
            Self::Wordcount => "wordcount",
            Self::Sleep => "sleep",
            Self::Allocate => "allocate",
            Self::Fail => "fail",
            Self::Ask => "ask",
        }
    }

    fn card(self) -> AgentSkill {
        let (name, description, example) = match self {
            Self::Echo => ("Echo", "Answers with the message text.", "echo hello"),
            Self::Uppercase => ("Uppercase", "Answers with the message text in upper case.", "uppercase hello"),
            Self::Wordcount => {
                ("Word count", "Answers with the number of words in the message.", "wordcount one two three")
            }
            Self::Sleep => ("Sleep", "Sleeps for the given duration, 1s by default (`sleep 2s`).", "sleep 250ms"),
            Self::Allocate => (
                "Allocate",
                "Allocates SIZE and touches every page, keeps it HOLD long (default: not at all), then frees it \
                     (`allocate 64Mi 1s`; a bare number is MiB).",
                "allocate 16Mi 100ms",
            ),
            Self::Fail => ("Fail", "Always fails the task.", "fail"),
            Self::Ask => (
                "Ask",
                "Asks the question after `ask` and waits in input-required; the next message to the \
                     task is the answer, which completes it.",
                "ask What is your name?",
            ),
        };
        AgentSkill {
            id: self.id().to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            tags: vec!["demo".to_owned(), self.id().to_owned()],
            examples: vec![example.to_owned()],
            ..Default::default()
        }
    }
}

/// How the demo agent behaves.
#[derive(Clone, Debug)]
pub struct DemoAgentConfig {
    /// Enabled skills; the first is used when a message names none.
    pub skills: Vec<Skill>,
    /// Fraction (0..=1) of tasks that fail on purpose.
    pub fail_rate: f64,
    /// Fraction (0..=1) of tasks during which the process exits (code 3).
    pub crash_rate: f64,
    /// Seed of the fault-injection dice (random when `None`).
    pub seed: Option<u64>,
    /// At most this many tasks are remembered; the oldest finished ones are forgotten first.
    pub max_tasks: usize,
    /// The URL the card advertises for the JSON-RPC interface; `None` builds it from each
    /// request's `Host` header.
    pub advertise_url: Option<String>,
    /// Reads the official A2A TCK's message-id prefixes (`tck-input-required-…` asks), so the
    /// TCK's multi-turn requirements reach the `ask` skill.
    pub tck_scenarios: bool,
    /// The token every A2A call must carry as `Authorization: Bearer` (a2a gives it to the
    /// agents it runs as `A2A_AGENT_TOKEN`); the card stays public and advertises it.
    pub token: Option<String>,
}

impl Default for DemoAgentConfig {
    fn default() -> Self {
        Self {
            skills: Skill::ALL.to_vec(),
            fail_rate: 0.0,
            crash_rate: 0.0,
            seed: None,
            max_tasks: 10_000,
            advertise_url: None,
            tck_scenarios: false,
            token: None,
        }
    }
}

/// The agent card the demo agent serves when reachable at `url` (its JSON-RPC endpoint).
pub fn agent_card(config: &DemoAgentConfig, url: &str) -> AgentCard {
    let modes = vec!["text/plain".to_owned(), "application/json".to_owned()];
    let mut card = AgentCard {
        name: "a2a-demo-agent".to_owned(),
        description: "The sample A2A agent that ships with a2a: echo, uppercase, word count, \
                      sleep, allocate, fail, ask."
            .to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        supported_interfaces: vec![AgentInterface {
            url: url.to_owned(),
            protocol_binding: BINDING_JSONRPC.to_owned(),
            protocol_version: PROTOCOL_VERSION.to_owned(),
            tenant: None,
        }],
        capabilities: AgentCapabilities {
            streaming: true,
            push_notifications: false,
            extensions: Vec::new(),
            extended_agent_card: false,
        },
        default_input_modes: modes.clone(),
        default_output_modes: modes,
        skills: config.skills.iter().map(|s| s.card()).collect(),
        ..Default::default()
    };
    token::advertise(&mut card, config.token.as_deref());
    card
}

/// Serves the demo agent on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DemoAgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app = router(config);
    note!(
        "a2a-demo-agent: listening on http://{addr}/ (A2A {PROTOCOL_VERSION}, JSONRPC at /, card at {AGENT_CARD_PATH})"
    );
    tokio::select! {
        r = axum::serve(listener, app) => r,
        () = shutdown => Ok(()),
    }
}

/// The demo agent's routes.
pub fn router(config: DemoAgentConfig) -> Router {
    let rng = match config.seed {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    };
    // The card is fixed for the life of the process: it was last modified when it started.
    let card_modified = jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let state =
        Arc::new(AgentState { config, card_modified, tasks: Mutex::new(Tasks::default()), rng: Mutex::new(rng) });
    let guarded = axum::middleware::from_fn_with_state(state.clone(), token::require);
    Router::new()
        .route("/", post(rpc_handler).route_layer(guarded))
        .route(AGENT_CARD_PATH, get(card_handler))
        .with_state(state)
}

struct AgentState {
    config: DemoAgentConfig,
    /// `Last-Modified` of the card, in HTTP date form.
    card_modified: String,
    tasks: Mutex<Tasks>,
    rng: Mutex<fastrand::Rng>,
}

#[derive(Default)]
struct Tasks {
    by_id: HashMap<String, Entry>,
    by_message: HashMap<String, String>,
    order: VecDeque<String>,
}

struct Entry {
    /// Every message this task was sent, so a re-sent one finds the task again.
    message_ids: Vec<String>,
    slot: Slot,
}

/// A running task is a watch channel its subscribers follow; a finished one is just the
/// task (a channel costs more memory than the task itself).
enum Slot {
    Live(watch::Sender<Task>),
    Done(Box<Task>),
}

impl Entry {
    fn snapshot(&self) -> Task {
        match &self.slot {
            Slot::Live(tx) => tx.borrow().clone(),
            Slot::Done(t) => (**t).clone(),
        }
    }

    fn subscribe(&self) -> watch::Receiver<Task> {
        match &self.slot {
            Slot::Live(tx) => tx.subscribe(),
            // A closed channel still holds the final value, which is all there is to see.
            Slot::Done(t) => watch::channel((**t).clone()).1,
        }
    }

    fn state(&self) -> TaskState {
        match &self.slot {
            Slot::Live(tx) => tx.borrow().status.state,
            Slot::Done(t) => t.status.state,
        }
    }

    fn is_finished(&self) -> bool {
        match &self.slot {
            Slot::Live(tx) => tx.borrow().status.state.is_terminal(),
            Slot::Done(_) => true,
        }
    }
}

/// Replaces a finished task's channel by the task itself.
fn retire(state: &AgentState, task_id: &str) {
    let Ok(mut tasks) = state.tasks.lock() else {
        return;
    };
    if let Some(entry) = tasks.by_id.get_mut(task_id)
        && let Slot::Live(tx) = &entry.slot
    {
        let mut task = tx.borrow().clone();
        if task.status.state.is_terminal() {
            task.history.shrink_to_fit();
            task.artifacts.shrink_to_fit();
            entry.slot = Slot::Done(Box::new(task));
        }
    }
}

type Shared = Arc<AgentState>;

/// The card, with the interface URL the caller reached the agent by: `advertise_url` when
/// set, else `http://` and the request's `Host` (never the bind address, which may be
/// `0.0.0.0` or a pod IP nobody can reach). It may be cached for five minutes and is
/// revalidated by its `ETag`.
async fn card_handler(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let url = match &state.config.advertise_url {
        Some(url) => url.clone(),
        None => match wire::host_url(&headers) {
            Ok(url) => url,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
    };
    let card = agent_card(&state.config, &url);
    let body = match serde_json::to_vec(&card) {
        Ok(b) => b,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the card failed: {e}")).into_response();
        }
    };
    let etag = wire::etag(&body);
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "public, max-age=300".to_owned()),
        (header::LAST_MODIFIED, state.card_modified.clone()),
        // Without an advertised URL the card depends on the Host it was asked by.
        (header::VARY, "Host".to_owned()),
    ];
    if wire::matches_etag(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON-RPC failure before or while running a method.
struct Failure {
    id: Option<RequestId>,
    error: RpcError,
}

fn fail(id: &Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure { id: id.clone(), error: wire::error(code, message, &[]) }
}

fn json_reply<R: Serialize>(resp: &JsonRpcResponse<R>) -> Response {
    // JSON-RPC errors travel with HTTP 200, as the official SDKs expect.
    match serde_json::to_vec(resp) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the response failed: {e}"))
            .into_response(),
    }
}

fn failure_reply(f: Failure) -> Response {
    json_reply(&JsonRpcResponse::<()>::failure(f.id, wire::with_error_info(f.error)))
}

async fn rpc_handler(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
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
    check_version(headers).map_err(|e| fail(&id, ErrorCode::VersionNotSupported, e.to_string()))?;
    let params = request.params.map_or("null", |p| p.get());
    match method {
        method::SEND_MESSAGE => {
            let p: SendMessageRequest = parse_params(&id, method, params)?;
            let history_length = p.configuration.as_ref().and_then(|c| c.history_length);
            let history_length = wire::history_length(history_length).map_err(|e| invalid(&id, e))?;
            let immediately = p.configuration.as_ref().is_some_and(|c| c.return_immediately);
            let rx = accept_message(state, p.message).map_err(|e| Failure { id: id.clone(), error: e })?;
            let task = if immediately { rx.borrow().clone() } else { wait_settled(rx).await };
            let task = trim_history(task, history_length);
            Ok(json_reply(&JsonRpcResponse::success(id, SendMessageResponse::Task(task))))
        }
        method::GET_TASK => {
            let p: GetTaskRequest = parse_params(&id, method, params)?;
            let history_length = wire::history_length(p.history_length).map_err(|e| invalid(&id, e))?;
            let task = snapshot(state, &p.id).ok_or_else(|| not_found(&id, &p.id))?;
            Ok(json_reply(&JsonRpcResponse::success(id, trim_history(task, history_length))))
        }
        method::LIST_TASKS => {
            let p: list::ListTasksRequest = parse_params(&id, method, params)?;
            let query = list::Query::new(p).map_err(|e| invalid(&id, e))?;
            let page = {
                let tasks =
                    state.tasks.lock().map_err(|_| Failure { id: id.clone(), error: internal("the task table") })?;
                query.page(tasks.by_id.values().map(Entry::snapshot))
            };
            let page = page.map_err(|e| fail(&id, ErrorCode::InternalError, e.to_string()))?;
            Ok(json_reply(&JsonRpcResponse::success(id, page)))
        }
        method::CANCEL_TASK => {
            let p: CancelTaskRequest = parse_params(&id, method, params)?;
            let task = cancel(state, &p.id).map_err(|e| Failure { id: id.clone(), error: e })?;
            Ok(json_reply(&JsonRpcResponse::success(id, task)))
        }
        method::SUBSCRIBE_TO_TASK => {
            let p: SubscribeToTaskRequest = parse_params(&id, method, params)?;
            let rx = subscribe(state, &p.id).map_err(|e| Failure { id: id.clone(), error: e })?;
            // A subscriber stays through input-required: the answer to the question comes
            // by another request, and the subscriber sees the task finish.
            Ok(sse(id, rx, Until::Terminal))
        }
        method::SEND_STREAMING_MESSAGE => {
            let p: SendMessageRequest = parse_params(&id, method, params)?;
            let rx = accept_message(state, p.message).map_err(|e| Failure { id: id.clone(), error: e })?;
            Ok(sse(id, rx, Until::Settled))
        }
        method::GET_EXTENDED_AGENT_CARD => {
            Err(fail(&id, ErrorCode::UnsupportedOperation, format!("the demo agent does not implement {method}")))
        }
        m if m.contains("PushNotification") => {
            Err(fail(&id, ErrorCode::PushNotificationNotSupported, "the demo agent does not send push notifications"))
        }
        other => Err(fail(
            &id,
            ErrorCode::MethodNotFound,
            format!("unknown method {other:?} (A2A 1.0 names methods like SendMessage, GetTask)"),
        )),
    }
}

/// Why the demo agent refuses a request or fails a task; the text reaches the caller (as a
/// JSON-RPC error message or the failed task's status message).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {VERSION_HEADER} header is missing, which means protocol 0.3; this agent speaks {PROTOCOL_VERSION}")]
    VersionMissing,
    #[error("protocol version {0:?} is not supported; this agent speaks {PROTOCOL_VERSION}")]
    VersionUnsupported(String),
    #[error("data member {key:?} must be a duration, not {got}")]
    DataNotADuration { key: String, got: Value },
    #[error("{key}: {source}")]
    Duration {
        key: String,
        #[source]
        source: crate::api::quantity::Error,
    },
    #[error("data member \"allocate\" must be a size, not {0}")]
    DataNotASize(Value),
    #[error("say how much to allocate, e.g. `allocate 64Mi`")]
    NoSize,
    #[error("{0} MiB is too much")]
    TooManyMebibytes(u64),
    #[error("allocate: {0}")]
    Size(#[source] crate::api::quantity::Error),
    #[error("{0} bytes is too much")]
    TooManyBytes(u64),
    #[error("cannot allocate {bytes} bytes: {source}")]
    Allocation {
        bytes: u64,
        #[source]
        source: std::collections::TryReserveError,
    },
    #[error("the fail skill always fails")]
    FailSkill,
    #[error("injected failure (--fail-rate)")]
    InjectedFailure,
}

fn check_version(headers: &HeaderMap) -> Result<(), Error> {
    let Some(v) = headers.get(VERSION_HEADER) else {
        return Err(Error::VersionMissing);
    };
    let v = v.to_str().unwrap_or("").trim();
    let mut nums = v.split('.');
    let (major, minor) = (nums.next(), nums.next().unwrap_or("0"));
    if major == Some("1") && minor == "0" { Ok(()) } else { Err(Error::VersionUnsupported(v.to_owned())) }
}

fn parse_params<P: DeserializeOwned>(id: &Option<RequestId>, method: &str, params: &str) -> Result<P, Failure> {
    serde_json::from_str(params).map_err(|e| fail(id, ErrorCode::InvalidParams, format!("{method} params: {e}")))
}

fn not_found(id: &Option<RequestId>, task_id: &str) -> Failure {
    Failure { id: id.clone(), error: task_not_found(task_id) }
}

fn task_not_found(task_id: &str) -> RpcError {
    wire::error(ErrorCode::TaskNotFound, format!("no task {task_id:?}"), &[("taskId", task_id)])
}

fn invalid(id: &Option<RequestId>, e: impl std::fmt::Display) -> Failure {
    fail(id, ErrorCode::InvalidParams, e.to_string())
}

fn trim_history(mut task: Task, history_length: Option<usize>) -> Task {
    if let Some(keep) = history_length {
        let len = task.history.len();
        if len > keep {
            task.history.drain(..len - keep);
        }
    }
    task
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn snapshot(state: &AgentState, task_id: &str) -> Option<Task> {
    let tasks = state.tasks.lock().ok()?;
    tasks.by_id.get(task_id).map(Entry::snapshot)
}

/// Follows a task that is still running (or waiting for input); a finished task has no
/// more events to follow.
fn subscribe(state: &AgentState, task_id: &str) -> Result<watch::Receiver<Task>, RpcError> {
    let tasks = state.tasks.lock().map_err(|_| internal("the task table"))?;
    let entry = tasks.by_id.get(task_id).ok_or_else(|| task_not_found(task_id))?;
    if entry.is_finished() {
        return Err(wire::error(
            ErrorCode::UnsupportedOperation,
            format!("task {task_id} is already {}; there is nothing left to subscribe to (use GetTask)", entry.state()),
            &[("taskId", task_id)],
        ));
    }
    Ok(entry.subscribe())
}

fn internal(what: &str) -> RpcError {
    RpcError::new(ErrorCode::InternalError, format!("{what} is unavailable"))
}

/// Takes a message: a re-sent one finds the task it created, one naming a task answers that
/// task's question, any other starts a new task.
fn accept_message(state: &Shared, message: Message) -> Result<watch::Receiver<Task>, RpcError> {
    let invalid = |m: &str| RpcError::new(ErrorCode::InvalidParams, m);
    if message.message_id.is_empty() {
        return Err(invalid("message.messageId is required"));
    }
    if message.parts.is_empty() {
        return Err(invalid("message.parts is empty"));
    }
    if message.role == Role::Unspecified {
        return Err(invalid("message.role is missing or unknown; a client's message has role ROLE_USER"));
    }
    let mut tasks = state.tasks.lock().map_err(|_| internal("the task table"))?;
    // The TCK names scenarios by message id and reuses an id for every task of a scenario,
    // so in that mode an id is no identity.
    let seen = if state.config.tck_scenarios { None } else { tasks.by_message.get(&message.message_id) };
    if let Some(entry) = seen.and_then(|id| tasks.by_id.get(id)) {
        let rx = entry.subscribe();
        note!("a2a-demo-agent: event=duplicate task={} messageId={}", rx.borrow().id, message.message_id);
        return Ok(rx);
    }
    match message.task_id.clone() {
        Some(task_id) => {
            // The TCK's multi-turn scenarios answer with `tck-input-required-…` to be asked again.
            let ask_again =
                state.config.tck_scenarios && tck_skill(&state.config.skills, &message.message_id) == Some(Skill::Ask);
            continue_task(&mut tasks, &task_id, message, ask_again)
        }
        None => start_task(state, &mut tasks, message),
    }
}

/// Creates the task for a new message and starts its work. The table holds at most
/// `max_tasks`: finished tasks make room, unfinished ones (a question nobody answers stays
/// unfinished forever) do not, and a full table refuses the message.
fn start_task(state: &Shared, tasks: &mut Tasks, message: Message) -> Result<watch::Receiver<Task>, RpcError> {
    let max = state.config.max_tasks.max(1);
    evict(tasks, max - 1);
    if tasks.by_id.len() >= max {
        return Err(RpcError::new(
            ErrorCode::InternalError,
            format!(
                "the agent holds {} unfinished tasks, its limit (--max-tasks); answer or cancel some first",
                tasks.by_id.len()
            ),
        ));
    }
    let (skill, input) = if state.config.tck_scenarios
        && let Some(skill) = tck_skill(&state.config.skills, &message.message_id)
    {
        // The TCK's text is not addressed to the skill: ask the default question.
        (skill, Input { text: String::new(), data: None })
    } else {
        pick_skill(&state.config.skills, &message)
    };
    let task_id = new_id();
    let context_id = message.context_id.clone().unwrap_or_else(new_id);
    let message_id = message.message_id.clone();
    let mut first = message;
    first.task_id = Some(task_id.clone());
    first.context_id = Some(context_id.clone());
    let task = Task {
        id: task_id.clone(),
        context_id,
        status: TaskStatus { state: TaskState::Submitted, message: None, timestamp: Some(now()) },
        artifacts: Vec::new(),
        history: vec![first],
        metadata: None,
    };
    let (tx, rx) = watch::channel(task);
    note!("a2a-demo-agent: event=start task={task_id} messageId={message_id} skill={}", skill.id());
    let (fail_roll, crash_roll) = match state.rng.lock() {
        Ok(mut rng) => (rng.f64(), rng.f64()),
        Err(_) => (1.0, 1.0),
    };
    tokio::spawn(run_task(
        Arc::clone(state),
        tx.clone(),
        Work {
            skill,
            input,
            inject_failure: fail_roll < state.config.fail_rate,
            inject_crash: crash_roll < state.config.crash_rate,
            message_id: message_id.clone(),
        },
    ));
    tasks.by_message.insert(message_id.clone(), task_id.clone());
    tasks.order.push_back(task_id.clone());
    tasks.by_id.insert(task_id, Entry { message_ids: vec![message_id], slot: Slot::Live(tx) });
    Ok(rx)
}

/// Forgets the oldest finished tasks beyond `max`.
fn evict(tasks: &mut Tasks, max: usize) {
    let mut scanned = 0;
    while tasks.by_id.len() > max && scanned < tasks.order.len() {
        let Some(id) = tasks.order.pop_front() else {
            break;
        };
        let finished = tasks.by_id.get(&id).is_some_and(Entry::is_finished);
        if finished {
            if let Some(e) = tasks.by_id.remove(&id) {
                for m in &e.message_ids {
                    tasks.by_message.remove(m);
                }
            }
        } else {
            tasks.order.push_back(id);
            scanned += 1;
        }
    }
}

fn cancel(state: &AgentState, task_id: &str) -> Result<Task, RpcError> {
    let mut tasks = state.tasks.lock().map_err(|_| internal("the task table"))?;
    let Some(entry) = tasks.by_id.get_mut(task_id) else {
        return Err(task_not_found(task_id));
    };
    let Slot::Live(tx) = &entry.slot else {
        return Err(not_cancelable(&entry.snapshot()));
    };
    let changed = tx.send_if_modified(|t| {
        if t.status.state.is_terminal() {
            return false;
        }
        t.status = agent_status(TaskState::Canceled, "canceled by the client");
        true
    });
    let task = tx.borrow().clone();
    if !changed {
        return Err(not_cancelable(&task));
    }
    note!("a2a-demo-agent: event=canceled task={task_id} messageId={}", entry.message_ids.join(","));
    // The worker sees the canceled state and stops; the table keeps only the task.
    entry.slot = Slot::Done(Box::new(task.clone()));
    Ok(task)
}

fn not_cancelable(task: &Task) -> RpcError {
    wire::error(
        ErrorCode::TaskNotCancelable,
        format!("task {} is already {}", task.id, task.status.state),
        &[("taskId", &task.id)],
    )
}

fn agent_status(state: TaskState, text: &str) -> TaskStatus {
    TaskStatus {
        state,
        message: Some(Message::new(Role::Agent, new_id(), vec![Part::text(text)])),
        timestamp: Some(now()),
    }
}

async fn wait_settled(mut rx: watch::Receiver<Task>) -> Task {
    let settled = |t: &Task| t.status.state.is_terminal() || t.status.state.is_interrupted();
    let waited = rx.wait_for(settled).await.map(|t| t.clone());
    // The sender lives in the task table, so an error means the task was just evicted.
    waited.unwrap_or_else(|_| rx.borrow().clone())
}

/// What a message asks for: the skill and its input.
#[derive(Debug, Clone, PartialEq)]
struct Input {
    text: String,
    data: Option<Value>,
}

fn pick_skill(enabled: &[Skill], message: &Message) -> (Skill, Input) {
    let text = message.text();
    let data = message.parts.iter().find_map(|p| p.as_data()).cloned();
    let default = enabled.first().copied().unwrap_or(Skill::Echo);
    let by_id = |id: &str| enabled.iter().copied().find(|s| s.id() == id);
    if let Some(s) = data.as_ref().and_then(|d| d.get("skill")).and_then(Value::as_str).and_then(by_id) {
        return (s, Input { text, data });
    }
    let trimmed = text.trim_start();
    let (first, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
    match by_id(&first.trim_end_matches(':').to_ascii_lowercase()) {
        Some(s) => (s, Input { text: rest.trim_start().to_owned(), data }),
        None => (default, Input { text, data }),
    }
}

/// One task's work and the faults to inject into it.
struct Work {
    skill: Skill,
    input: Input,
    inject_failure: bool,
    inject_crash: bool,
    message_id: String,
}

async fn run_task(state: Shared, tx: watch::Sender<Task>, work: Work) {
    let Work { skill, input, inject_failure, inject_crash, message_id } = work;
    let task_id = tx.borrow().id.clone();
    tx.send_if_modified(|t| {
        if t.status.state.is_terminal() {
            return false;
        }
        t.status = TaskStatus { state: TaskState::Working, message: None, timestamp: Some(now()) };
        true
    });
    if inject_crash {
        note!("a2a-demo-agent: event=crash task={task_id} messageId={message_id} (injected)");
        std::process::exit(3);
    }
    if skill == Skill::Ask && !inject_failure {
        let question = if input.text.trim().is_empty() { "What is your answer?" } else { input.text.trim() };
        let asked = tx.send_if_modified(|t| {
            if t.status.state.is_terminal() {
                return false;
            }
            t.status = agent_status(TaskState::InputRequired, question);
            true
        });
        if asked {
            note!("a2a-demo-agent: event=input-required task={task_id} messageId={message_id}");
        }
        return;
    }
    let result = if inject_failure {
        Err(Error::InjectedFailure)
    } else {
        // CancelTask marks the task canceled; that ends (and frees) the work in progress.
        let mut watched = tx.subscribe();
        tokio::select! {
            r = perform(skill, &input) => r,
            _ = watched.wait_for(|t| t.status.state.is_terminal()) => return,
        }
    };
    let (status, parts) = match result {
        Ok(parts) => (TaskStatus { state: TaskState::Completed, message: None, timestamp: Some(now()) }, Some(parts)),
        Err(reason) => (agent_status(TaskState::Failed, &reason.to_string()), None),
    };
    let final_state = status.state;
    let applied = tx.send_if_modified(|t| {
        if t.status.state.is_terminal() {
            return false;
        }
        if let Some(parts) = parts {
            t.artifacts.push(Artifact {
                artifact_id: new_id(),
                name: Some(skill.id().to_owned()),
                parts,
                ..Default::default()
            });
        }
        t.status = status;
        true
    });
    if applied {
        note!("a2a-demo-agent: event=end task={task_id} messageId={message_id} state={final_state}");
        retire(&state, &task_id);
    }
}

async fn perform(skill: Skill, input: &Input) -> Result<Vec<Part>, Error> {
    match skill {
        Skill::Echo => Ok(vec![Part::text(input.text.clone())]),
        Skill::Uppercase => Ok(vec![Part::text(input.text.to_uppercase())]),
        Skill::Wordcount => {
            let n = input.text.split_whitespace().count();
            Ok(vec![Part::text(n.to_string()), Part::data(json!({"words": n}))])
        }
        Skill::Sleep => {
            let d = duration_arg(input, "sleep", 0)?.unwrap_or(Duration::from_secs(1));
            tokio::time::sleep(d).await;
            Ok(vec![Part::text(format!("slept {d:?}"))])
        }
        Skill::Allocate => {
            let bytes = memory_arg(input)?;
            let hold = duration_arg(input, "hold", 1)?.unwrap_or(Duration::ZERO);
            let mut block: Vec<u8> = Vec::new();
            let len = usize::try_from(bytes).map_err(|_| Error::TooManyBytes(bytes))?;
            block.try_reserve_exact(len).map_err(|source| Error::Allocation { bytes, source })?;
            // Touch every page so the memory is resident and counts against the cgroup.
            block.resize(len, 0x5a);
            tokio::time::sleep(hold).await;
            let touched = block.iter().step_by(4096).filter(|b| **b == 0x5a).count();
            drop(block);
            Ok(vec![Part::text(format!("allocated {} ({touched} pages)", crate::api::quantity::format_bytes(bytes)))])
        }
        Skill::Fail => Err(Error::FailSkill),
        // Asking is a state of the task, not an output (see `run_task`).
        Skill::Ask => Ok(Vec::new()),
    }
}

/// A duration from data member `key`, else from the `index`-th word of the text.
fn duration_arg(input: &Input, key: &str, index: usize) -> Result<Option<Duration>, Error> {
    let from_data = input.data.as_ref().and_then(|d| d.get(key));
    let text = match from_data {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => format!("{n}s"),
        Some(other) => {
            return Err(Error::DataNotADuration { key: key.to_owned(), got: other.clone() });
        }
        None => match input.text.split_whitespace().nth(index) {
            Some(w) => w.to_owned(),
            None => return Ok(None),
        },
    };
    text.parse::<DurationQ>().map(|d| Some(d.value())).map_err(|source| Error::Duration { key: key.to_owned(), source })
}

/// Bytes from data member `allocate` or the first word; a bare number means MiB.
fn memory_arg(input: &Input) -> Result<u64, Error> {
    let text = match input.data.as_ref().and_then(|d| d.get("allocate")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(Error::DataNotASize(other.clone()));
        }
        None => input.text.split_whitespace().next().ok_or(Error::NoSize)?.to_owned(),
    };
    if let Ok(mib) = text.parse::<u64>() {
        return mib.checked_mul(1 << 20).ok_or(Error::TooManyMebibytes(mib));
    }
    text.parse::<Memory>().map(|m| m.value()).map_err(Error::Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::user_text("m", text)
    }

    #[test]
    fn a_leading_skill_word_picks_the_skill_and_is_stripped() {
        let all = Skill::ALL.to_vec();
        let (s, i) = pick_skill(&all, &msg("uppercase: hello there"));
        assert_eq!((s, i.text.as_str()), (Skill::Uppercase, "hello there"));
        let (s, i) = pick_skill(&all, &msg("hello there"));
        assert_eq!((s, i.text.as_str()), (Skill::Echo, "hello there"));
        // A skill that is not enabled is just a word.
        let (s, i) = pick_skill(&[Skill::Wordcount], &msg("sleep well"));
        assert_eq!((s, i.text.as_str()), (Skill::Wordcount, "sleep well"));
    }

    #[test]
    fn a_data_part_can_name_the_skill() {
        let mut m = msg("x y");
        m.parts.push(Part::data(json!({"skill": "wordcount"})));
        let (s, _) = pick_skill(&Skill::ALL, &m);
        assert_eq!(s, Skill::Wordcount);
    }

    #[tokio::test]
    async fn skills_produce_their_outputs() {
        let input = |t: &str| Input { text: t.to_owned(), data: None };
        let text = |parts: Vec<Part>| parts[0].as_text().unwrap_or_default().to_owned();
        assert_eq!(text(perform(Skill::Echo, &input("hi")).await.unwrap()), "hi");
        assert_eq!(text(perform(Skill::Uppercase, &input("hi")).await.unwrap()), "HI");
        let wc = perform(Skill::Wordcount, &input("a b  c")).await.unwrap();
        assert_eq!(text(wc.clone()), "3");
        assert_eq!(wc[1].as_data(), Some(&json!({"words": 3})));
        assert_eq!(text(perform(Skill::Sleep, &input("10ms")).await.unwrap()), "slept 10ms");
        let out = text(perform(Skill::Allocate, &input("2Mi")).await.unwrap());
        assert_eq!(out, "allocated 2Mi (512 pages)");
        let e = perform(Skill::Sleep, &input("soon")).await.unwrap_err().to_string();
        assert!(e.contains("soon"), "{e}");
        assert!(perform(Skill::Fail, &input("")).await.is_err());
    }

    #[test]
    fn version_header_must_say_1_0() {
        let mut h = HeaderMap::new();
        assert!(check_version(&h).unwrap_err().to_string().contains("missing"));
        h.insert(VERSION_HEADER, "0.3".parse().unwrap());
        assert!(check_version(&h).unwrap_err().to_string().contains("\"0.3\""));
        h.insert(VERSION_HEADER, "1.0".parse().unwrap());
        assert!(check_version(&h).is_ok());
        h.insert(VERSION_HEADER, "1.0.1".parse().unwrap());
        assert!(check_version(&h).is_ok());
    }
}
