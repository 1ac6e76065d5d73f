//! An A2A 1.0 client over the JSON-RPC binding: agent card discovery (cached), `SendMessage`,
//! `GetTask`, `CancelTask`, the SSE methods, and [`Client::send_and_follow`], which drives one
//! message to a terminal task within a deadline and cancels the task when it runs out.
//!
//! Plain `http://` only: agents are local processes or in-cluster Services.
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

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::types::{
    AGENT_CARD_PATH, AgentCard, CancelTaskRequest, ErrorCode, GetTaskRequest, JsonRpcRequest, JsonRpcResponse, Message,
    PROTOCOL_VERSION, RpcError, SendMessageConfiguration, SendMessageRequest, SendMessageResponse, StreamResponse,
    SubscribeToTaskRequest, Task, TaskState, VERSION_HEADER, method,
};

/// Responses larger than this are refused (outputs beyond it belong in files, not replies).
const MAX_BODY: usize = 64 * 1024 * 1024;
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
    #[error("{url}: {what} is not valid A2A 1.0 JSON: {source}")]
    Decode {
        url: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: the agent card offers no JSONRPC interface (it offers: {offered})")]
    NoJsonRpcInterface { url: String, offered: String },
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

    /// Whether trying again later may succeed: the agent was unreachable, overloaded or
    /// failed internally, or the deadline passed. False for mistakes in the request or the
    /// agent's card, which a retry repeats.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Body { .. } | Self::RequestTimeout { .. } | Self::Timeout { .. } => true,
            Self::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            Self::Rpc { error, .. } => error.code == ErrorCode::InternalError,
            Self::InvalidUrl { .. }
            | Self::Decode { .. }
            | Self::NoJsonRpcInterface { .. }
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
            Self::Decode { .. } => "decode",
            Self::NoJsonRpcInterface { .. } => "no_jsonrpc_interface",
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

type Http = HyperClient<HttpConnector, Full<Bytes>>;

/// A client for one agent. Cheap to clone; clones share the connection pool and the card.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: Http,
    base: String,
    card: Mutex<Option<Discovered>>,
    next_id: AtomicI64,
}

#[derive(Clone)]
struct Discovered {
    card: Arc<AgentCard>,
    endpoint: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.inner.base).finish()
    }
}

impl Client {
    /// A client for the agent at `base_url` (e.g. `http://127.0.0.1:8080`); the card is
    /// fetched from `base_url` + [`AGENT_CARD_PATH`] on first use.
    pub fn new(base_url: &str) -> Result<Self> {
        let base = check_url(base_url)?.trim_end_matches('/').to_owned();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http =
            HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Self { inner: Arc::new(Inner { http, base, card: Mutex::new(None), next_id: AtomicI64::new(1) }) })
    }

    /// The base URL the client was made for.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The agent card, fetched once and then cached.
    pub async fn agent_card(&self) -> Result<Arc<AgentCard>> {
        Ok(self.discovered().await?.card)
    }

    /// Fetches the agent card again (e.g. after the agent restarted) and caches it.
    pub async fn refresh_agent_card(&self) -> Result<Arc<AgentCard>> {
        let url = format!("{}{AGENT_CARD_PATH}", self.inner.base);
        let req = Request::get(&url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| invalid(&url, e))?;
        let (status, body) = read_reply(&url, self.send(&url, req, Some(Duration::from_secs(30)))).await?;
        if !status.is_success() {
            return Err(http_status(&url, status, &body));
        }
        let card: AgentCard = serde_json::from_slice(&body).map_err(|source| Error::Decode {
            url: url.clone(),
            what: "the agent card".into(),
            source,
        })?;
        let endpoint = match card.jsonrpc_interface() {
            Some(i) => self.resolve(&i.url)?,
            None => {
                let offered: Vec<String> =
                    card.supported_interfaces.iter().map(|i| format!("{} at {}", i.protocol_binding, i.url)).collect();
                return Err(Error::NoJsonRpcInterface {
                    url,
                    offered: if offered.is_empty() { "nothing".into() } else { offered.join(", ") },
                });
            }
        };
        let d = Discovered { card: Arc::new(card), endpoint };
        if let Ok(mut slot) = self.inner.card.lock() {
            *slot = Some(d.clone());
        }
        Ok(d.card)
    }

    /// `SendMessage`. Without `returnImmediately` the agent answers when the task is terminal
    /// or interrupted, so no request timeout applies here.
    pub async fn send_message(
        &self,
        message: Message,
        configuration: Option<SendMessageConfiguration>,
    ) -> Result<SendMessageResponse> {
        let params = SendMessageRequest { message, configuration, metadata: None, tenant: None };
        self.call(method::SEND_MESSAGE, &params, None).await
    }

    /// `GetTask`.
    pub async fn get_task(&self, task_id: &str) -> Result<Task> {
        let params = GetTaskRequest { id: task_id.to_owned(), ..Default::default() };
        self.call(method::GET_TASK, &params, Some(Duration::from_secs(30))).await
    }

    /// `CancelTask`; the answer is the task as the agent left it.
    pub async fn cancel_task(&self, task_id: &str) -> Result<Task> {
        let params = CancelTaskRequest { id: task_id.to_owned(), ..Default::default() };
        self.call(method::CANCEL_TASK, &params, Some(Duration::from_secs(30))).await
    }

    /// `SubscribeToTask`: the task's events until it is terminal. Needs `streaming` in the card.
    pub async fn subscribe_to_task(&self, task_id: &str) -> Result<EventStream> {
        let params = SubscribeToTaskRequest { id: task_id.to_owned(), tenant: None };
        self.stream(method::SUBSCRIBE_TO_TASK, &params).await
    }

    /// `SendStreamingMessage`: sends a message and streams the task's events.
    pub async fn send_streaming_message(
        &self,
        message: Message,
        configuration: Option<SendMessageConfiguration>,
    ) -> Result<EventStream> {
        let params = SendMessageRequest { message, configuration, metadata: None, tenant: None };
        self.stream(method::SEND_STREAMING_MESSAGE, &params).await
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
                .map_err(|_| Error::RequestTimeout { url: self.inner.base.clone(), after: opts.request_timeout })??;
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
            task.apply(&event);
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

    fn resolve(&self, url: &str) -> Result<String> {
        if url.starts_with('/') {
            return Ok(format!("{}{url}", self.inner.base));
        }
        check_url(url).map(str::to_owned)
    }

    fn rpc_request(&self, endpoint: &str, body: Vec<u8>, accept: &str) -> Result<Request<Full<Bytes>>> {
        Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept)
            .header(VERSION_HEADER, HeaderValue::from_static(PROTOCOL_VERSION))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(endpoint, e))
    }

    fn encode<P: Serialize>(&self, method: &str, params: &P) -> Result<(i64, Vec<u8>)> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&JsonRpcRequest::new(id, method, params)).map_err(|source| Error::Decode {
            url: self.inner.base.clone(),
            what: format!("the {method} request"),
            source,
        })?;
        Ok((id, body))
    }

    async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let endpoint = self.discovered().await?.endpoint;
        let (_, body) = self.encode(method, params)?;
        let req = self.rpc_request(&endpoint, body, "application/json")?;
        let (status, body) = read_reply(&endpoint, self.send(&endpoint, req, timeout)).await?;
        decode_rpc(method, &endpoint, status, &body)
    }

    async fn stream<P: Serialize>(&self, method: &str, params: &P) -> Result<EventStream> {
        let d = self.discovered().await?;
        if !d.card.capabilities.streaming {
            return Err(Error::StreamingNotSupported { url: d.endpoint, method: method.to_owned() });
        }
        let endpoint = d.endpoint;
        let (_, body) = self.encode(method, params)?;
        let req = self.rpc_request(&endpoint, body, "text/event-stream")?;
        let resp = self.send(&endpoint, req, Some(Duration::from_secs(30))).await?;
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            // An upfront error (or a server that does not stream) answers with plain JSON.
            let body = collect(&endpoint, resp.into_body()).await?;
            let one: StreamResponse = decode_rpc(method, &endpoint, status, &body)?;
            return Ok(Box::pin(futures::stream::iter([Ok(one)])));
        }
        let state = SseState {
            body: resp.into_body(),
            decoder: SseDecoder::default(),
            ready: VecDeque::new(),
            endpoint,
            method: method.to_owned(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_event)))
    }

    async fn send(
        &self,
        url: &str,
        req: Request<Full<Bytes>>,
        timeout: Option<Duration>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let fut = self.inner.http.request(req);
        let res = match timeout {
            Some(after) => tokio::time::timeout(after, fut)
                .await
                .map_err(|_| Error::RequestTimeout { url: url.to_owned(), after })?,
            None => fut.await,
        };
        res.map_err(|source| Error::Connect { url: url.to_owned(), source })
    }
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
        Some("http") => {}
        Some("https") => {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: "https agents are not supported yet; use http:// (local or in-cluster)".into(),
            });
        }
        _ => {
            return Err(Error::InvalidUrl { url: url.to_owned(), reason: "expected an absolute http:// URL".into() });
        }
    }
    if parsed.host().is_none() {
        return Err(Error::InvalidUrl { url: url.to_owned(), reason: "the URL has no host".into() });
    }
    Ok(url)
}

fn invalid(url: &str, e: http::Error) -> Error {
    Error::InvalidUrl { url: url.to_owned(), reason: e.to_string() }
}

async fn read_reply(
    url: &str,
    resp: impl Future<Output = Result<http::Response<hyper::body::Incoming>>>,
) -> Result<(StatusCode, Bytes)> {
    let resp = resp.await?;
    let status = resp.status();
    Ok((status, collect(url, resp.into_body()).await?))
}

async fn collect(url: &str, body: hyper::body::Incoming) -> Result<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::Body { url: url.to_owned(), reason: e.to_string() })
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE)]);
    let ellipsis = if body.len() > QUOTE { "…" } else { "" };
    format!("{:?}{ellipsis}", text.trim())
}

fn http_status(url: &str, status: StatusCode, body: &[u8]) -> Error {
    Error::HttpStatus { url: url.to_owned(), status: status.as_u16(), body: quote(body) }
}

fn decode_rpc<R: DeserializeOwned>(method: &str, url: &str, status: StatusCode, body: &[u8]) -> Result<R> {
    let rpc = |error| Error::Rpc { method: method.to_owned(), url: url.to_owned(), error };
    // One parse in the common case (a well-formed answer); the body is read again only to
    // find the most useful error.
    let source = match serde_json::from_slice::<JsonRpcResponse<R>>(body) {
        // A JSON-RPC error may come with any HTTP status; it says more than the status.
        Ok(resp) if resp.error.is_some() || status.is_success() => return resp.into_result().map_err(rpc),
        Ok(_) => return Err(http_status(url, status, body)),
        Err(e) => e,
    };
    if let Ok(JsonRpcResponse::<serde::de::IgnoredAny> { error: Some(error), .. }) = serde_json::from_slice(body) {
        return Err(rpc(error));
    }
    if !status.is_success() {
        return Err(http_status(url, status, body));
    }
    Err(Error::Decode { url: url.to_owned(), what: format!("the {method} response"), source })
}

struct SseState {
    body: hyper::body::Incoming,
    decoder: SseDecoder,
    ready: VecDeque<SseEvent>,
    endpoint: String,
    method: String,
    done: bool,
}

async fn next_event(mut s: SseState) -> Option<(Result<StreamResponse>, SseState)> {
    loop {
        if let Some(ev) = s.ready.pop_front() {
            let item = if ev.event == "error" {
                Err(Error::UnexpectedReply {
                    method: s.method.clone(),
                    url: s.endpoint.clone(),
                    got: format!("an SSE error event {}", quote(ev.data.as_bytes())),
                })
            } else {
                decode_rpc(&s.method, &s.endpoint, StatusCode::OK, ev.data.as_bytes())
            };
            return Some((item, s));
        }
        if s.done {
            return None;
        }
        match s.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    s.ready.extend(s.decoder.feed(&data));
                }
            }
            Some(Err(e)) => {
                s.done = true;
                let err = Error::Body { url: s.endpoint.clone(), reason: e.to_string() };
                return Some((Err(err), s));
            }
            None => {
                s.done = true;
                s.ready.extend(s.decoder.finish());
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Splits an SSE byte stream into events (W3C rules: `event:`/`data:` fields, comments,
/// a blank line ends an event, `\n`, `\r\n` or `\r` line ends).
#[derive(Default)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
    last_was_cr: bool,
}

impl SseDecoder {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.last_was_cr && b == b'\n' {
                self.last_was_cr = false;
                continue;
            }
            self.last_was_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(ev) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(ev);
                }
            } else {
                self.line.push(b);
            }
        }
        out
    }

    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&String::from_utf8_lossy(&line));
        }
        self.line_done("")
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() { "message".into() } else { event },
                data: data.join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_decoder_splits_events_across_chunks_and_line_endings() {
        let mut d = SseDecoder::default();
        let mut got = d.feed(b": keep-alive\r\ndata: {\"a\":");
        assert!(got.is_empty());
        got.extend(d.feed(b"1}\r\n\r\nevent: error\ndata: x\ndata: y\n\ndata: last"));
        got.extend(d.finish());
        assert_eq!(
            got,
            vec![
                SseEvent { event: "message".into(), data: "{\"a\":1}".into() },
                SseEvent { event: "error".into(), data: "x\ny".into() },
                SseEvent { event: "message".into(), data: "last".into() },
            ]
        );
    }

    #[test]
    fn urls_other_than_absolute_http_are_refused_with_the_reason() {
        let e = Client::new("https://agent.example/").unwrap_err();
        assert!(e.to_string().contains("https agents are not supported"), "{e}");
        let e = Client::new("localhost:8080").unwrap_err();
        assert!(e.to_string().contains("localhost:8080"), "{e}");
        assert!(Client::new("http://127.0.0.1:9").is_ok());
    }

    #[test]
    fn a_json_rpc_error_beats_the_http_status_and_keeps_its_code() {
        let body = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32009,"message":"A2A version 0.3 is not supported"}}"#;
        let e = decode_rpc::<Task>("GetTask", "http://h/", StatusCode::BAD_REQUEST, body).unwrap_err();
        assert_eq!(e.rpc_code(), Some(ErrorCode::VersionNotSupported));
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("GetTask to http://h/ failed: VersionNotSupported (-32009"), "{e}");
        let e = decode_rpc::<Task>("GetTask", "http://h/", StatusCode::BAD_GATEWAY, b"<html>").unwrap_err();
        assert_eq!(e.to_string(), "http://h/: the agent answered HTTP 502: \"<html>\"");
        assert!(e.is_retryable());
    }
}
