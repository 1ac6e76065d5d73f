//! The server side of the sample agent (`a2a demo-agent`): a small A2A 1.0 server, over the
//! JSON-RPC and the HTTP+JSON binding alike (one implementation of each operation in `ops`,
//! two thin bindings in `jsonrpc` and `rest`), with a few deterministic skills (echo,
//! uppercase, word count, sleep, allocate, fail, ask, data, file) and fault injection, used by the
//! quickstart, load and fault tests and the official TCK.
//!
//! Every task it runs is logged to stderr as one line
//! (`a2a-demo-agent: event=start task=… messageId=… skill=…`), so tests can prove a task ran
//! exactly once. A message id seen before returns the existing task instead of running again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::types::{
    AGENT_CARD_PATH, AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Artifact, BINDING_HTTP_JSON,
    BINDING_JSONRPC, ErrorCode, Message, PROTOCOL_VERSION, Part, Role, RpcError, Task, TaskState, TaskStatus,
    VERSION_HEADER,
};
use crate::api::quantity::{Duration as DurationQ, Memory};

mod events;
mod jsonrpc;
mod list;
mod ops;
mod rest;
mod token;
mod wire;

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
mod parts;
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
    /// Answers with a DataPart: the JSON after `data` (`data {"city": "Paris"}`), or the
    /// message's own data part.
    Data,
    /// Answers with a FilePart of raw bytes: `file NAME [SIZE]` gives SIZE bytes (default
    /// 256) counting 0, 1, … 255, 0, …, named NAME, media type `application/octet-stream`.
    File,
}

impl Skill {
    pub const ALL: [Skill; 9] = [
        Skill::Echo,
        Skill::Uppercase,
        Skill::Wordcount,
        Skill::Sleep,
        Skill::Allocate,
        Skill::Fail,
        Skill::Ask,
        Skill::Data,
        Skill::File,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Uppercase => "uppercase",
            Self::Wordcount => "wordcount",
            Self::Sleep => "sleep",
            Self::Allocate => "allocate",
            Self::Fail => "fail",
            Self::Ask => "ask",
            Self::Data => "data",
            Self::File => "file",
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
            Self::Data => (
                "Data",
                "Answers with a data part: the JSON after `data`, or the message's data part.",
                r#"data {"city": "Paris"}"#,
            ),
            Self::File => (
                "File",
                "Answers with a file part of SIZE raw bytes (default 256) counting 0..255, named NAME.",
                "file all.bin 256",
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

/// An A2A protocol binding the demo agent can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Binding {
    /// JSON-RPC 2.0: `POST /`.
    Jsonrpc,
    /// HTTP+JSON (REST): `POST /message:send`, `GET /tasks/{id}`, ...
    HttpJson,
}

impl Binding {
    /// The card's `protocolBinding` for it.
    pub fn protocol_binding(self) -> &'static str {
        match self {
            Binding::Jsonrpc => BINDING_JSONRPC,
            Binding::HttpJson => BINDING_HTTP_JSON,
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
    /// The URL the card advertises for both interfaces; `None` builds it from each
    /// request's `Host` header.
    pub advertise_url: Option<String>,
    /// Reads the official A2A TCK's message-id prefixes (`tck-input-required-…` asks), so the
    /// TCK's multi-turn requirements reach the `ask` skill.
    pub tck_scenarios: bool,
    /// The bindings served, in the card's order (the client's preference); by default
    /// JSON-RPC, then HTTP+JSON.
    pub bindings: Vec<Binding>,
    /// The token every A2A call must carry as `Authorization: Bearer` (a2a gives it to the
    /// agents it runs as `A2A_AGENT_TOKEN`); the card stays public and advertises it.
    pub token: Option<String>,
    /// The card declares streaming (the streaming methods answer either way).
    pub streaming: bool,
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
            bindings: vec![Binding::Jsonrpc, Binding::HttpJson],
            token: None,
            streaming: true,
        }
    }
}

/// The agent card the demo agent serves when reachable at `url`, where it serves both the
/// JSON-RPC and the HTTP+JSON binding.
pub fn agent_card(config: &DemoAgentConfig, url: &str) -> AgentCard {
    let modes = vec!["text/plain".to_owned(), "application/json".to_owned()];
    let mut card = AgentCard {
        name: "a2a-demo-agent".to_owned(),
        description: "The sample A2A agent that ships with a2a: echo, uppercase, word count, \
                      sleep, allocate, fail, ask."
            .to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        // Both bindings at the one URL, in the configured order (JSON-RPC first by default).
        supported_interfaces: config
            .bindings
            .iter()
            .map(|binding| AgentInterface {
                url: url.to_owned(),
                protocol_binding: binding.protocol_binding().to_owned(),
                protocol_version: PROTOCOL_VERSION.to_owned(),
                tenant: None,
            })
            .collect(),
        capabilities: AgentCapabilities {
            streaming: config.streaming,
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
    let bindings: Vec<&str> = config.bindings.iter().map(|b| b.protocol_binding()).collect();
    let bindings = bindings.join(" and ");
    let app = router(config);
    note!(
        "a2a-demo-agent: listening on http://{addr}/ (A2A {PROTOCOL_VERSION}, {bindings} at /, card at {AGENT_CARD_PATH})"
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
    // Both bindings share the interface URL: JSON-RPC is `POST /`, every other route is
    // HTTP+JSON's. The card is discovery, open to all; the agent's token, when it has one, is
    // one layer on `a2a`, in front of both bindings.
    let mut a2a = Router::new();
    if state.config.bindings.contains(&Binding::Jsonrpc) {
        a2a = a2a.route("/", post(jsonrpc::handler));
    }
    if state.config.bindings.contains(&Binding::HttpJson) {
        a2a = a2a.fallback(rest::handler);
    }
    let a2a = a2a.layer(axum::middleware::from_fn_with_state(state.clone(), token::require));
    Router::new().route(AGENT_CARD_PATH, get(card_handler)).merge(a2a).with_state(state)
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

/// Why the demo agent refuses a request or fails a task; the text reaches the caller (as an
/// A2A error's message, over either binding, or the failed task's status message).
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
    #[error("data: {0}")]
    DataSkill(String),
    #[error("file: {0}")]
    FileSkill(String),
    #[error("injected failure (--fail-rate)")]
    InjectedFailure,
}

fn task_not_found(task_id: &str) -> RpcError {
    wire::error(ErrorCode::TaskNotFound, format!("no task {task_id:?}"), &[("taskId", task_id)])
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
        Skill::Data => parts::data(&input.text, input.data.as_ref()),
        Skill::File => parts::file(&input.text),
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
}
