//! An A2A 1.0 client: agent card discovery (cached), `SendMessage`, `GetTask`, `CancelTask`,
//! the streaming methods, and [`Client::send_and_follow`], which drives one message to a
//! terminal task within a deadline and cancels the task when it runs out. The card decides
//! the binding the requests travel on ([`super::transport::for_card`]): JSON-RPC
//! ([`super::jsonrpc`]) or HTTP+JSON ([`super::rest`]).
//!
//! `http://` and `https://` ([`super::tls`]: the system's CAs, an agent's own CA, mutual TLS),
//! with the credentials the card's security schemes ask for ([`super::auth`]), given in
//! [`ClientOptions`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), a2a::a2a::client::Error> {
//! use std::time::Duration;
//! use a2a::a2a::{Client, FollowOptions, Message};
//!
//! let agent = Client::new("http://127.0.0.1:8080")?;
//! let opts = FollowOptions::default().timeout(Duration::from_secs(30));
//! // The message id names the attempt, so a re-sent attempt is recognisable.
//! let reply = agent
//!     .send_and_follow(Message::user_text("wf-uid.task.1", "hello"), &opts, std::future::pending())
//!     .await?;
//! println!("{}", reply.output().text);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::transport::{self, Addressing, Transport};
use super::types::{
    AGENT_CARD_PATH, AgentCard, CancelTaskRequest, ErrorCode, GetExtendedAgentCardRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, Message, RpcError, SendMessageConfiguration, SendMessageRequest,
    SendMessageResponse, StreamResponse, SubscribeToTaskRequest, Task, TaskState,
};

/// Responses larger than this are refused (outputs beyond it belong in files, not replies).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The longest a poll of a running task waits on an agent's `Retry-After`.
const MAX_POLL_DEFERRAL: Duration = Duration::from_secs(600);
/// How much of an unexpected HTTP body is quoted in an error.
const QUOTE: usize = 512;

/// Errors of the A2A client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{url}: cannot reach the agent: {source}")]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: reading the response failed: {reason}")]
    Body { url: String, reason: String },
    #[error("{url}: no answer within {after:?}")]
    RequestTimeout { url: String, after: Duration },
    #[error("{url}: the agent answered HTTP {status}: {body}")]
    HttpStatus { url: String, status: u16, body: String },
    /// HTTP 429 or 503 with a valid `Retry-After`: the agent asks to be called again later.
    #[error("{url}: the agent answered HTTP {status} and asks to be called again after {}s: {body}", after.as_secs_f64())]
    Throttled { url: String, status: u16, after: Duration, body: String },
    #[error("{url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url}: {reason}")]
    TlsClosed { url: String, reason: String },
    #[error("{url}: the agent refused the credentials: HTTP {status}{}", challenge.as_ref().map(|c| format!(" (WWW-Authenticate: {c})")).unwrap_or_default())]
    Unauthorized { url: String, status: u16, challenge: Option<String> },
    #[error("{url}: {source}")]
    Auth {
        url: String,
        #[source]
        source: super::auth::Error,
    },
    #[error("{url}: the TLS settings are not usable: {source}")]
    TlsConfig {
        url: String,
        #[source]
        source: super::tls::Error,
    },
    #[error("{url}: {what} is not valid A2A 1.0 JSON: {source}")]
    Decode {
        url: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{url}: the agent card offers no interface a2a speaks (JSONRPC or HTTP+JSON, protocol version 1.x); it offers: {offered}"
    )]
    NoSupportedInterface { url: String, offered: String },
    #[error("{method} to {url} failed: {error}")]
    Rpc {
        method: String,
        url: String,
        #[source]
        error: RpcError,
    },
    #[error("{url}: {method} answered {got} instead of a stream of events")]
    UnexpectedReply { method: String, url: String, got: String },
    #[error("{url}: the agent card does not declare streaming, so {method} is not available")]
    StreamingNotSupported { url: String, method: String },
    #[error("{after:?} passed before the task finished; {cancel}")]
    Timeout { task_id: Option<String>, after: Duration, cancel: CancelOutcome },
    #[error("the caller cancelled the task; {cancel}")]
    Cancelled { task_id: Option<String>, cancel: CancelOutcome },
}

impl Error {
    /// The A2A / JSON-RPC error code, when the agent answered with one.
    pub fn rpc_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rpc { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// The wait the agent asked for with `Retry-After` (on HTTP 429 or 503), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the agent was unreachable, overloaded or
    /// failed internally, or the deadline passed. False for mistakes in the request or the
    /// agent's card, which a retry repeats.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::TlsClosed { .. }
            | Self::Body { .. }
            | Self::RequestTimeout { .. }
            | Self::Timeout { .. }
            | Self::Throttled { .. } => true,
            Self::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            Self::Rpc { error, .. } => error.code == ErrorCode::InternalError,
            Self::Auth { source, .. } => source.is_retryable(),
            Self::Tls { .. } | Self::Unauthorized { .. } | Self::TlsConfig { .. } => false,
            Self::InvalidUrl { .. }
            | Self::Decode { .. }
            | Self::NoSupportedInterface { .. }
            | Self::UnexpectedReply { .. }
            | Self::StreamingNotSupported { .. }
            | Self::Cancelled { .. } => false,
        }
    }

    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Connect { .. } => "connect",
            Self::Body { .. } => "body",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::HttpStatus { .. } => "http_status",
            Self::Throttled { .. } => "throttled",
            Self::Tls { .. } => "tls",
            Self::TlsClosed { .. } => "tls_closed",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Auth { .. } => "auth",
            Self::TlsConfig { .. } => "tls_config",
            Self::Decode { .. } => "decode",
            Self::NoSupportedInterface { .. } => "no_supported_interface",
            Self::Rpc { .. } => "rpc",
            Self::UnexpectedReply { .. } => "unexpected_reply",
            Self::StreamingNotSupported { .. } => "streaming_not_supported",
            Self::Timeout { .. } => "timeout",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What happened to the `CancelTask` sent after a timeout or a cancellation.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The agent had not yet named a task, so there was nothing to cancel.
    NoTaskId,
    /// The agent answered `CancelTask` with the task in this state.
    Answered { task_id: String, state: TaskState },
    /// `CancelTask` failed.
    Failed { task_id: String, error: String },
}

impl std::fmt::Display for CancelOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoTaskId => f.write_str("no task id was known, so nothing was canceled"),
            Self::Answered { task_id, state } => {
                write!(f, "CancelTask {task_id} answered {state}")
            }
            Self::Failed { task_id, error } => write!(f, "CancelTask {task_id} failed: {error}"),
        }
    }
}

/// How [`Client::send_and_follow`] drives a task.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Deadline for the whole exchange (send + follow); then `CancelTask`. `None`: no limit.
    pub timeout: Option<Duration>,
    /// Send with `returnImmediately`, so the task id is known before the work is done.
    pub return_immediately: bool,
    /// Follow with `SubscribeToTask` when the card declares streaming (else poll `GetTask`).
    pub use_streaming: bool,
    /// First `GetTask` poll interval; doubles up to `poll_max`.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// Limit for each single non-blocking request (`GetTask`, `CancelTask`, the card).
    pub request_timeout: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            return_immediately: true,
            use_streaming: true,
            poll_initial: Duration::from_millis(20),
            poll_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl FollowOptions {
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn return_immediately(mut self, yes: bool) -> Self {
        self.return_immediately = yes;
        self
    }

    pub fn use_streaming(mut self, yes: bool) -> Self {
        self.use_streaming = yes;
        self
    }
}

/// A stream of events from `SubscribeToTask` or `SendStreamingMessage`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamResponse>> + Send>>;

/// The HTTP client every binding over HTTP shares (one connection pool per [`Client`]), and
/// the credentials it adds to each request once the card has chosen them.
#[derive(Clone)]
pub(crate) struct Http {
    pool: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    auth: Option<Arc<super::auth::Authorizer>>,
}

impl Http {
    /// A pool for `http://` and `https://` with `tls`, presenting no credentials.
    pub(crate) fn new(tls: &super::tls::TlsOptions) -> Result<Self, super::tls::Error> {
        let pool = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(super::tls::connector(tls)?);
        Ok(Http { pool, auth: None })
    }

    /// The same pool, presenting `auth` on every request.
    fn authorized(&self, auth: super::auth::Authorizer) -> Self {
        Http { pool: self.pool.clone(), auth: Some(Arc::new(auth)) }
    }
}

/// How a [`Client`] reaches its agent: TLS settings and the credentials to match against the
/// card's security schemes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    pub tls: super::tls::TlsOptions,
    pub credentials: super::auth::Credentials,
    /// Where requests go once the card has chosen the interface.
    pub addressing: Addressing,
}

/// A client for one agent, whatever binding its card offers. Cheap to clone; clones share
/// the connection pool, the card and the transport.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    credentials: super::auth::Credentials,
    base: String,
    addressing: Addressing,
    card: Mutex<Option<Discovered>>,
    /// Whether the agent answers `ListTasks`: [`LIST_UNKNOWN`] until learned (see
    /// [`Client::offers_list_tasks`]).
    lists: AtomicU8,
}

const LIST_UNKNOWN: u8 = 0;
const LIST_YES: u8 = 1;
const LIST_NO: u8 = 2;

/// The card as last read, and the transport it chose.
#[derive(Clone)]
struct Discovered {
    card: Arc<AgentCard>,
    transport: Arc<dyn Transport>,
    extended: ExtendedCard,
}

/// Which of an agent's cards a [`Client`] uses: A2A lets an agent show authenticated callers
/// an extended card (more skills, other interfaces), declared by
/// `capabilities.extendedAgentCard` in its public card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtendedCard {
    /// The public card declares no extended card.
    NotOffered,
    /// The extended card, read with the client's credentials, is used in place of the public one.
    InUse,
    /// The agent offers one, but the public card is used: why.
    Unused(String),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.inner.base).finish()
    }
}

impl Client {
    /// A client for the agent at `base_url` (e.g. `http://127.0.0.1:8080`); the card is
    /// fetched from `base_url` + [`AGENT_CARD_PATH`] on first use, and names the binding
    /// (see [`transport::for_card`]). This is the one way a2a makes an A2A client.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_options(base_url, ClientOptions::default())
    }

    /// A client that sends every request through `base_url`, an address a2a chose for an
    /// agent it runs (its Service on a cluster, its port on this host): the card still chooses
    /// the binding and the interface's path, but not the host (see [`Addressing::Base`]).
    pub fn through(base_url: &str) -> Result<Self> {
        Self::with_options(base_url, ClientOptions { addressing: Addressing::Base, ..Default::default() })
    }

    /// A client for the agent at `base_url` that talks TLS and presents credentials as
    /// `options` say (which credentials go is decided by the card, [`super::auth`]), and
    /// addresses the agent as `options.addressing` says.
    pub fn with_options(base_url: &str, mut options: ClientOptions) -> Result<Self> {
        let base = check_url(base_url)?.trim_end_matches('/').to_owned();
        let http = Http::new(&options.tls).map_err(|source| Error::TlsConfig { url: base.clone(), source })?;
        options.credentials.client_certificate = options.tls.client_certificate.is_some();
        let (credentials, addressing) = (options.credentials, options.addressing);
        let lists = AtomicU8::new(LIST_UNKNOWN);
        Ok(Self { inner: Arc::new(Inner { http, credentials, base, addressing, card: Mutex::new(None), lists }) })
    }

    /// The base URL the client was made for.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The agent card in use, fetched once and then cached: the extended card when the agent
    /// offers one and shows it to this client's credentials, else the public card (see
    /// [`Client::extended_card`]).
    pub async fn agent_card(&self) -> Result<Arc<AgentCard>> {
        Ok(self.discovered().await?.card)
    }

    /// Whether the card in use is the agent's extended card, and why not when the agent
    /// offers one (reading the card first if needed).
    pub async fn extended_card(&self) -> Result<ExtendedCard> {
        Ok(self.discovered().await?.extended)
    }

    /// Fetches the agent card again (e.g. after the agent restarted) and caches it. When the
    /// public card declares `capabilities.extendedAgentCard` and the client presents
    /// credentials the card accepts, the extended card is fetched with them
    /// (`GetExtendedAgentCard`) and used in place of the public one: its skills, its
    /// interfaces (the binding) and its security schemes. An extended card that cannot be
    /// had leaves the public card in use; [`Client::extended_card`] says why.
    pub async fn refresh_agent_card(&self) -> Result<Arc<AgentCard>> {
        let url = format!("{}{AGENT_CARD_PATH}", self.inner.base);
        let req = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| invalid(&url, e))?;
        let (status, body) = read_reply(&url, send(&self.inner.http, &url, req, Some(Duration::from_secs(30)))).await?;
        if !status.is_success() {
            return Err(http_status(&url, status, &body));
        }
        let card: AgentCard = serde_json::from_slice(&body).map_err(|source| Error::Decode {
            url: url.clone(),
            what: "the agent card".into(),
            source,
        })?;
        let (auth, transport) = self.plan(&card)?;
        let extended = if !card.capabilities.extended_agent_card {
            ExtendedCard::NotOffered
        } else if let Some(missing) = auth.missing() {
            ExtendedCard::Unused(missing.to_string())
        } else if !auth.authenticates() {
            ExtendedCard::Unused(
                "it is shown to authenticated callers, and a2a presents no credentials to this agent (spec.auth of the Agent)"
                    .into(),
            )
        } else {
            match self.read_extended_card(&transport).await {
                Ok(d) => {
                    tracing::debug!(url = %self.inner.base, "using the extended agent card");
                    return Ok(self.cache(d));
                }
                Err(e) => ExtendedCard::Unused(e.to_string()),
            }
        };
        if let ExtendedCard::Unused(why) = &extended {
            tracing::debug!(url = %self.inner.base, %why, "the agent offers an extended card; using the public one");
        }
        Ok(self.cache(Discovered { card: Arc::new(card), transport, extended }))
    }

    /// The credentials `card` asks for and the transport it chooses.
    fn plan(&self, card: &AgentCard) -> Result<(super::auth::Authorizer, Arc<dyn Transport>)> {
        let auth = super::auth::plan(card, &self.inner.credentials, &self.inner.http)
            .map_err(|source| Error::Auth { url: self.inner.base.clone(), source })?;
        let http = self.inner.http.authorized(auth.clone());
        let transport = transport::for_card(card, &self.inner.base, &http, self.inner.addressing)?;
        Ok((auth, transport))
    }

    /// `GetExtendedAgentCard` over the public card's `transport`, and what the extended card
    /// chooses in turn. An extended card asking for credentials a2a lacks is refused: with
    /// the public one, the agent is at least reachable.
    async fn read_extended_card(&self, transport: &Arc<dyn Transport>) -> Result<Discovered> {
        let card = transport.get_extended_agent_card(GetExtendedAgentCardRequest::default()).await?;
        let (auth, transport) = self.plan(&card)?;
        if let Some(missing) = auth.missing() {
            return Err(Error::Auth { url: self.inner.base.clone(), source: missing });
        }
        Ok(Discovered { card: Arc::new(card), transport, extended: ExtendedCard::InUse })
    }

    fn cache(&self, d: Discovered) -> Arc<AgentCard> {
        if let Ok(mut slot) = self.inner.card.lock() {
            *slot = Some(d.clone());
        }
        // Another card may be another agent: what it answers is learned again.
        self.inner.lists.store(LIST_UNKNOWN, Ordering::Relaxed);
        d.card
    }

    /// The transport the agent card chose (reading the card first if needed).
    pub async fn transport(&self) -> Result<Arc<dyn Transport>> {
        Ok(self.discovered().await?.transport)
    }

    /// `SendMessage`. Without `returnImmediately` the agent answers when the task is terminal
    /// or interrupted, so no request timeout applies here.
    pub async fn send_message(
        &self,
        message: Message,
        configuration: Option<SendMessageConfiguration>,
    ) -> Result<SendMessageResponse> {
        let request = SendMessageRequest { message, configuration, metadata: None, tenant: None };
        self.transport().await?.send_message(request).await
    }

    /// `GetTask`.
    pub async fn get_task(&self, task_id: &str) -> Result<Task> {
        let request = GetTaskRequest { id: task_id.to_owned(), ..Default::default() };
        self.transport().await?.get_task(request).await
    }

    /// `ListTasks`: one page of the agent's tasks (see [`ListTasksRequest`] for the filters).
    pub async fn list_tasks(&self, request: ListTasksRequest) -> Result<ListTasksResponse> {
        self.transport().await?.list_tasks(request).await
    }

    /// Whether the agent answers `ListTasks`. A 1.0 card does not say (no capability names
    /// it), so it is learned once per client with one `ListTasks` of a context nobody uses
    /// (`pageSize` 1) and remembered until the card is read again: a page is a yes;
    /// `MethodNotFound`, `UnsupportedOperation` or an HTTP 404, 405 or 501 is a no. Another
    /// failure (the agent unreachable, overloaded) is a no for now and asked again next time.
    pub async fn offers_list_tasks(&self) -> bool {
        match self.inner.lists.load(Ordering::Relaxed) {
            LIST_YES => return true,
            LIST_NO => return false,
            _ => {}
        }
        let probe = ListTasksRequest {
            context_id: Some(LIST_PROBE_CONTEXT.to_owned()),
            page_size: Some(1),
            ..Default::default()
        };
        let learned = match self.list_tasks(probe).await {
            Ok(_) => Some(true),
            Err(e) if unsupported(&e) => Some(false),
            Err(e) => {
                tracing::debug!(agent = %self.inner.base, error = %e, "ListTasks probe failed; asking again later");
                None
            }
        };
        if let Some(yes) = learned {
            tracing::debug!(agent = %self.inner.base, offers = yes, "learned whether the agent answers ListTasks");
            self.inner.lists.store(if yes { LIST_YES } else { LIST_NO }, Ordering::Relaxed);
        }
        learned.unwrap_or(false)
    }

    /// The task of context `context_id` (a context a2a chose for one message, so it holds at
    /// most one task), found with `ListTasks`; `None` when the agent has none. A task of
    /// another context (an agent that ignores the filter) is never taken for it.
    pub async fn find_task_by_context(&self, context_id: &str) -> Result<Option<Task>> {
        let request = ListTasksRequest {
            context_id: Some(context_id.to_owned()),
            page_size: Some(10),
            include_artifacts: Some(true),
            ..Default::default()
        };
        let page = self.list_tasks(request).await.inspect_err(|e| {
            if unsupported(e) {
                self.inner.lists.store(LIST_NO, Ordering::Relaxed);
            }
        })?;
        Ok(page.tasks.into_iter().find(|t| t.context_id == context_id))
    }

    /// `CancelTask`; the answer is the task as the agent left it.
    pub async fn cancel_task(&self, task_id: &str) -> Result<Task> {
        let request = CancelTaskRequest { id: task_id.to_owned(), ..Default::default() };
        self.transport().await?.cancel_task(request).await
    }

    /// `SubscribeToTask`: the task's events until it is terminal. Needs `streaming` in the card.
    pub async fn subscribe_to_task(&self, task_id: &str) -> Result<EventStream> {
        let request = SubscribeToTaskRequest { id: task_id.to_owned(), tenant: None };
        let method = super::types::method::SUBSCRIBE_TO_TASK;
        self.streaming(method).await?.subscribe_to_task(request).await
    }

    /// `SendStreamingMessage`: sends a message and streams the task's events.
    pub async fn send_streaming_message(
        &self,
        message: Message,
        configuration: Option<SendMessageConfiguration>,
    ) -> Result<EventStream> {
        let request = SendMessageRequest { message, configuration, metadata: None, tenant: None };
        let method = super::types::method::SEND_STREAMING_MESSAGE;
        self.streaming(method).await?.send_streaming_message(request).await
    }

    /// The transport, when the card declares streaming (which `method` needs).
    async fn streaming(&self, method: &str) -> Result<Arc<dyn Transport>> {
        let d = self.discovered().await?;
        if !d.card.capabilities.streaming {
            let url = d.transport.endpoint().to_owned();
            return Err(Error::StreamingNotSupported { url, method: method.to_owned() });
        }
        Ok(d.transport)
    }

    /// Sends `message` and follows the task until it is terminal or interrupted (input or auth
    /// required). When `opts.timeout` passes or `cancelled` resolves first, sends `CancelTask`
    /// for the task (if the agent named one yet) and returns [`Error::Timeout`] or
    /// [`Error::Cancelled`]. The message id is the caller's: re-sending an attempt must reuse it.
    pub async fn send_and_follow(
        &self,
        message: Message,
        opts: &FollowOptions,
        cancelled: impl Future<Output = ()>,
    ) -> Result<SendMessageResponse> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let cancelled = std::pin::pin!(cancelled);
        let mut cancelled = cancelled;
        let configuration = opts
            .return_immediately
            .then(|| SendMessageConfiguration { return_immediately: true, ..Default::default() });
        let sent = tokio::select! {
            r = self.send_message(message, configuration) => r?,
            () = sleep_until(deadline) => return Err(self.stopped(None, opts, true).await),
            () = &mut cancelled => return Err(self.stopped(None, opts, false).await),
        };
        let task = match sent {
            SendMessageResponse::Message(m) => return Ok(SendMessageResponse::Message(m)),
            SendMessageResponse::Task(t) if is_settled(t.status.state) => {
                return Ok(SendMessageResponse::Task(t));
            }
            SendMessageResponse::Task(t) => t,
        };
        let id = task.id.clone();
        tokio::select! {
            r = self.follow(task, opts) => r.map(SendMessageResponse::Task),
            () = sleep_until(deadline) => Err(self.stopped(Some(id), opts, true).await),
            () = &mut cancelled => Err(self.stopped(Some(id), opts, false).await),
        }
    }

    /// Sends `message` with `SendStreamingMessage` and follows the task on the same
    /// connection until it is terminal or interrupted: one request for the whole exchange.
    /// `on_task` is called once with the task id, as soon as the first event names it. A
    /// stream that ends early (the connection lost) is followed by id with `GetTask`; one
    /// that ends before naming a task is an error. Deadline and cancellation as
    /// [`Client::send_and_follow`]; `on_answered` is called when the agent answered the
    /// request (the stream opened, or the request failed).
    pub async fn stream_and_follow(
        &self,
        message: Message,
        opts: &FollowOptions,
        cancelled: impl Future<Output = ()>,
        mut on_answered: impl FnMut(),
        mut on_task: impl FnMut(&str),
    ) -> Result<SendMessageResponse> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let mut cancelled = std::pin::pin!(cancelled);
        let mut events = tokio::select! {
            r = self.send_streaming_message(message, None) => {
                on_answered();
                r?
            }
            () = sleep_until(deadline) => return Err(self.stopped(None, opts, true).await),
            () = &mut cancelled => return Err(self.stopped(None, opts, false).await),
        };
        let mut task: Option<Task> = None;
        let ended = loop {
            let event = tokio::select! {
                e = events.next() => e,
                () = sleep_until(deadline) => return Err(self.stopped(task.map(|t| t.id), opts, true).await),
                () = &mut cancelled => return Err(self.stopped(task.map(|t| t.id), opts, false).await),
            };
            let event = match event {
                None => break None,
                Some(Err(e)) => break Some(e),
                Some(Ok(event)) => event,
            };
            let current = match (&mut task, event) {
                (None, StreamResponse::Message(m)) => return Ok(SendMessageResponse::Message(m)),
                (Some(_), StreamResponse::Message(_)) => continue,
                (None, event) => {
                    let Some(id) = event_task_id(&event) else { continue };
                    on_task(&id);
                    let mut first = Task { id, ..Default::default() };
                    first.absorb(event);
                    task.insert(first)
                }
                (Some(t), event) => {
                    t.absorb(event);
                    t
                }
            };
            if is_settled(current.status.state) {
                return Ok(SendMessageResponse::Task(task.unwrap_or_default()));
            }
        };
        let Some(task) = task else {
            return Err(ended.unwrap_or_else(|| Error::Body {
                url: self.inner.base.clone(),
                reason: "the event stream of SendStreamingMessage ended before it named a task".into(),
            }));
        };
        if let Some(e) = ended {
            tracing::debug!(task = %task.id, error = %e, "event stream failed; following the task by id");
        }
        let id = task.id.clone();
        tokio::select! {
            r = self.follow(task, opts) => r.map(SendMessageResponse::Task),
            () = sleep_until(deadline) => Err(self.stopped(Some(id), opts, true).await),
            () = &mut cancelled => Err(self.stopped(Some(id), opts, false).await),
        }
    }

    /// Sends `message` with a blocking `SendMessage` (no `returnImmediately`): the agent
    /// answers when the task is terminal or interrupted, one request for the whole exchange.
    /// The message should carry a `contextId` of its own: when the deadline passes or
    /// `cancelled` resolves first, the task is found by it with `ListTasks` and cancelled.
    /// `on_answered` is called when the agent answered (or the request failed).
    pub async fn send_and_wait(
        &self,
        message: Message,
        opts: &FollowOptions,
        cancelled: impl Future<Output = ()>,
        mut on_answered: impl FnMut(),
    ) -> Result<SendMessageResponse> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let context = message.context_id.clone();
        let find = async |context: Option<String>| match context {
            Some(c) => match tokio::time::timeout(opts.request_timeout, self.find_task_by_context(&c)).await {
                Ok(Ok(task)) => task.map(|t| t.id),
                _ => None,
            },
            None => None,
        };
        let sent = tokio::select! {
            r = self.send_message(message, None) => {
                on_answered();
                r?
            }
            () = sleep_until(deadline) => return Err(self.stopped(find(context).await, opts, true).await),
            () = cancelled => return Err(self.stopped(find(context).await, opts, false).await),
        };
        match sent {
            SendMessageResponse::Task(t) if !is_settled(t.status.state) => {
                // An agent that answers before the end: followed as any other task.
                let id = t.id.clone();
                tokio::select! {
                    r = self.follow(t, opts) => r.map(SendMessageResponse::Task),
                    () = sleep_until(deadline) => Err(self.stopped(Some(id), opts, true).await),
                }
            }
            other => Ok(other),
        }
    }

    /// Follows a task known by id (e.g. after a restart) until it is terminal or interrupted,
    /// with the same deadline and cancellation rules as [`Client::send_and_follow`].
    pub async fn follow_task(
        &self,
        task_id: &str,
        opts: &FollowOptions,
        cancelled: impl Future<Output = ()>,
    ) -> Result<Task> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let id = Some(task_id.to_owned());
        tokio::select! {
            r = async {
                let task = self.get_task(task_id).await?;
                if is_settled(task.status.state) {
                    return Ok(task);
                }
                self.follow(task, opts).await
            } => r,
            () = sleep_until(deadline) => Err(self.stopped(id, opts, true).await),
            () = cancelled => Err(self.stopped(id, opts, false).await),
        }
    }

    async fn follow(&self, mut task: Task, opts: &FollowOptions) -> Result<Task> {
        if opts.use_streaming && self.agent_card().await?.capabilities.streaming {
            match self.follow_stream(&mut task).await {
                Ok(true) => return Ok(task),
                Ok(false) => {
                    tracing::debug!(task = %task.id, "event stream ended early; polling GetTask")
                }
                Err(e) => {
                    tracing::debug!(task = %task.id, error = %e, "SubscribeToTask failed; polling GetTask")
                }
            }
        }
        let mut wait = opts.poll_initial;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(opts.poll_max);
            let fresh = tokio::time::timeout(opts.request_timeout, self.get_task(&task.id))
                .await
                .map_err(|_| Error::RequestTimeout { url: self.inner.base.clone(), after: opts.request_timeout })?;
            // A throttled poll is asked again when the agent says (the task runs on meanwhile).
            let fresh = match fresh {
                Err(e) if let Some(after) = e.retry_after() => {
                    wait = after.clamp(opts.poll_initial, MAX_POLL_DEFERRAL);
                    tracing::debug!(task = %task.id, ?wait, "GetTask throttled; polling again after Retry-After");
                    continue;
                }
                other => other?,
            };
            if is_settled(fresh.status.state) {
                return Ok(fresh);
            }
        }
    }

    /// Applies subscription events to `task`; true when it reached a settled state.
    async fn follow_stream(&self, task: &mut Task) -> Result<bool> {
        let mut events = self.subscribe_to_task(&task.id).await?;
        while let Some(event) = events.next().await {
            let event = event?;
            if let StreamResponse::Message(_) = event {
                continue;
            }
            task.absorb(event);
            if is_settled(task.status.state) {
                // A terminal status event may come before the final artifacts are
                // aggregated; the task itself is the authority.
                if let Ok(full) = self.get_task(&task.id).await {
                    *task = full;
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn stopped(&self, task_id: Option<String>, opts: &FollowOptions, timeout: bool) -> Error {
        let cancel = match &task_id {
            None => CancelOutcome::NoTaskId,
            Some(id) => match tokio::time::timeout(opts.request_timeout, self.cancel_task(id)).await {
                Ok(Ok(t)) => CancelOutcome::Answered { task_id: id.clone(), state: t.status.state },
                Ok(Err(e)) => CancelOutcome::Failed { task_id: id.clone(), error: e.to_string() },
                Err(_) => CancelOutcome::Failed {
                    task_id: id.clone(),
                    error: format!("no answer within {:?}", opts.request_timeout),
                },
            },
        };
        match (timeout, opts.timeout) {
            (true, Some(after)) => Error::Timeout { task_id, after, cancel },
            _ => Error::Cancelled { task_id, cancel },
        }
    }

    async fn discovered(&self) -> Result<Discovered> {
        let cached = self.inner.card.lock().ok().and_then(|c| c.clone());
        if let Some(d) = cached {
            return Ok(d);
        }
        self.refresh_agent_card().await?;
        let cached = self.inner.card.lock().ok().and_then(|c| c.clone());
        cached.ok_or_else(|| Error::Body {
            url: self.inner.base.clone(),
            reason: "the agent card cache is unavailable".into(),
        })
    }
}

/// Sends one HTTP request with the credentials of `http`, within `timeout` when one is given.
/// A 401 when an OAuth2 token was presented fetches a new token and tries once more; a 401
/// or 403 that remains is [`Error::Unauthorized`], naming the agent's challenge.
pub(crate) async fn send(
    http: &Http,
    url: &str,
    mut req: Request<Full<Bytes>>,
    timeout: Option<Duration>,
) -> Result<http::Response<hyper::body::Incoming>> {
    // Requests an attempt sends carry its span in the workflow's trace.
    crate::traces::inject(req.headers_mut());
    let Some(auth) = &http.auth else {
        return send_raw(http, url, req, timeout).await;
    };
    let again = auth.refreshes().then(|| copy(&req));
    let authorize = |req| async { auth.apply(req).await.map_err(|source| Error::Auth { url: url.to_owned(), source }) };
    let mut resp = send_raw(http, url, authorize(req).await?, timeout).await?;
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(again) = again
    {
        auth.invalidate().await;
        tracing::debug!(%url, "the agent answered 401; fetching a new OAuth2 token and trying once more");
        resp = send_raw(http, url, authorize(again).await?, timeout).await?;
    }
    if matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect());
        return Err(Error::Unauthorized { url: url.to_owned(), status: resp.status().as_u16(), challenge });
    }
    Ok(resp)
}

/// Sends one HTTP request as it is, within `timeout` when one is given.
pub(crate) async fn send_raw(
    http: &Http,
    url: &str,
    req: Request<Full<Bytes>>,
    timeout: Option<Duration>,
) -> Result<http::Response<hyper::body::Incoming>> {
    let host = req.uri().host().unwrap_or_default().to_owned();
    let tls = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let fut = http.pool.request(req);
    let res = match timeout {
        Some(after) => {
            tokio::time::timeout(after, fut).await.map_err(|_| Error::RequestTimeout { url: url.to_owned(), after })?
        }
        None => fut.await,
    };
    res.map_err(|source| match super::tls::failure(&source, &host, tls) {
        Some(super::tls::Failure::Refused(reason)) => Error::Tls { url: url.to_owned(), reason },
        Some(super::tls::Failure::Closed(reason)) => Error::TlsClosed { url: url.to_owned(), reason },
        None => Error::Connect { url: url.to_owned(), source },
    })
}

/// A copy of a request (its body is in memory), to send again.
fn copy(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut c = Request::new(req.body().clone());
    *c.method_mut() = req.method().clone();
    *c.uri_mut() = req.uri().clone();
    *c.headers_mut() = req.headers().clone();
    c
}

/// An interface URL of the card, resolved against the agent's base URL when relative.
pub(crate) fn resolve(base: &str, url: &str) -> Result<String> {
    if url.starts_with('/') {
        return Ok(format!("{base}{url}"));
    }
    check_url(url).map(str::to_owned)
}

/// The context of the one `ListTasks` that learns whether an agent answers it.
const LIST_PROBE_CONTEXT: &str = "a2a-list-tasks-probe";

/// Whether an error says the agent does not offer the method at all.
fn unsupported(e: &Error) -> bool {
    match e {
        Error::Rpc { error, .. } => matches!(error.code, ErrorCode::MethodNotFound | ErrorCode::UnsupportedOperation),
        Error::HttpStatus { status, .. } => matches!(status, 404 | 405 | 501),
        _ => false,
    }
}

/// The task an event of a stream is about.
fn event_task_id(event: &StreamResponse) -> Option<String> {
    let id = match event {
        StreamResponse::Task(t) => &t.id,
        StreamResponse::StatusUpdate(u) => &u.task_id,
        StreamResponse::ArtifactUpdate(u) => &u.task_id,
        StreamResponse::Message(_) => return None,
    };
    (!id.is_empty()).then(|| id.clone())
}

fn is_settled(state: TaskState) -> bool {
    state.is_terminal() || state.is_interrupted()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn check_url(url: &str) -> Result<&str> {
    let parsed: http::Uri =
        url.parse().map_err(|e| Error::InvalidUrl { url: url.to_owned(), reason: format!("{e}") })?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: "expected an absolute http:// or https:// URL".into(),
            });
        }
    }
    if parsed.host().is_none() {
        return Err(Error::InvalidUrl { url: url.to_owned(), reason: "the URL has no host".into() });
    }
    Ok(url)
}

pub(crate) fn invalid(url: &str, e: http::Error) -> Error {
    Error::InvalidUrl { url: url.to_owned(), reason: e.to_string() }
}

pub(crate) async fn read_reply(
    url: &str,
    resp: impl Future<Output = Result<http::Response<hyper::body::Incoming>>>,
) -> Result<(StatusCode, Bytes)> {
    read_response(url, resp.await?).await
}

/// The status and body of an answer; a 429 or 503 with `Retry-After` is [`Error::Throttled`].
pub(crate) async fn read_response(
    url: &str,
    resp: http::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, Bytes)> {
    let status = resp.status();
    let retry_after = retry_after_of(url, status, resp.headers());
    let body = collect(url, resp.into_body()).await?;
    if let Some(after) = retry_after {
        return Err(Error::Throttled { url: url.to_owned(), status: status.as_u16(), after, body: quote(&body) });
    }
    Ok((status, body))
}

/// The wait a 429 or 503 answer asks for with `Retry-After`. It takes precedence over
/// whatever error the body holds: the agent is not failing the request, it defers it. A
/// header a2a cannot read is logged and ignored (the answer is then an ordinary error).
pub(crate) fn retry_after_of(url: &str, status: StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers.get(header::RETRY_AFTER)?;
    let parsed = value
        .to_str()
        .map_err(|_| super::retry_after::ParseError::Invalid {
            value: String::from_utf8_lossy(value.as_bytes()).into(),
        })
        .and_then(|v| super::retry_after::parse(v, jiff::Timestamp::now()));
    match parsed {
        Ok(after) => Some(after),
        Err(e) => {
            tracing::debug!(%url, status = status.as_u16(), error = %e, "Retry-After ignored");
            None
        }
    }
}

pub(crate) async fn collect(url: &str, body: hyper::body::Incoming) -> Result<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::Body { url: url.to_owned(), reason: e.to_string() })
}

pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE)]);
    let ellipsis = if body.len() > QUOTE { "…" } else { "" };
    format!("{:?}{ellipsis}", text.trim())
}

pub(crate) fn http_status(url: &str, status: StatusCode, body: &[u8]) -> Error {
    Error::HttpStatus { url: url.to_owned(), status: status.as_u16(), body: quote(body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_that_the_method_is_missing_says_list_tasks_is_not_offered() {
        let rpc = |code| Error::Rpc { method: "ListTasks".into(), url: "u".into(), error: RpcError::new(code, "x") };
        let http = |status| Error::HttpStatus { url: "u".into(), status, body: String::new() };
        assert!(unsupported(&rpc(ErrorCode::MethodNotFound)));
        assert!(unsupported(&rpc(ErrorCode::UnsupportedOperation)));
        assert!(unsupported(&http(404)) && unsupported(&http(405)) && unsupported(&http(501)));
        assert!(!unsupported(&rpc(ErrorCode::InternalError)), "a failure decides nothing");
        assert!(!unsupported(&http(503)) && !unsupported(&http(401)));
    }

    #[test]
    fn urls_other_than_absolute_http_or_https_are_refused_with_the_reason() {
        let e = Client::new("ftp://agent.example/").unwrap_err();
        assert!(e.to_string().contains("expected an absolute http:// or https:// URL"), "{e}");
        let e = Client::new("localhost:8080").unwrap_err();
        assert!(e.to_string().contains("localhost:8080"), "{e}");
        assert!(Client::new("http://127.0.0.1:9").is_ok());
        assert!(Client::new("https://agent.example:8443/").is_ok());
    }
}
