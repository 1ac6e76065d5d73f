//! Traces: each workflow is a trace and each task attempt a span, exported over OTLP when the
//! OpenTelemetry SDK's environment variables ask for it (nothing runs otherwise); and the W3C
//! trace context a2a passes to agents, so that their own spans join the workflow's trace.
//!
//! Ids are derived, not held: the trace id from the Workflow's uid, a span id from the uid,
//! the task and the attempt. An engine restarted after a crash continues the same trace, and
//! an agent asked again for the same attempt sees the same parent span.
//!
//! The export is the OTLP/HTTP binary protocol: the `opentelemetry-proto` crate's messages,
//! encoded with prost and POSTed with the hyper client a2a already uses for agents. Spans are
//! queued (bounded: a full queue drops and counts), sent in batches, retried with backoff on
//! transient failures, and flushed when the engine stops.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, span, status};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

/// The W3C header (and A2A message metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Where a span sits: its trace, its own id, and whether it is recorded (exported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanContext {
    /// The `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&mut s, &self.trace_id);
        s.push('-');
        hex_into(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    /// Reads a `traceparent` value (version 00); `None` when it is not one.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        unhex(trace, &mut trace_id)?;
        unhex(span, &mut span_id)?;
        let mut f = [0; 1];
        unhex(flags, &mut f)?;
        let valid = trace_id != [0; 16] && span_id != [0; 8];
        valid.then_some(SpanContext { trace_id, span_id, sampled: f[0] & 1 == 1 })
    }
}

fn hex_into(s: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_into(&mut s, bytes);
    s
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 || !text.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

/// The first `N` bytes of SHA-256 over `parts` (each followed by a 0 byte), never all zero
/// (an all-zero id is invalid in W3C trace context).
fn derive<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
        ctx.update(&[0]);
    }
    let digest = ctx.finish();
    let mut id = [0; N];
    id.copy_from_slice(&digest.as_ref()[..N]);
    if id == [0; N] {
        id[N - 1] = 1;
    }
    id
}

/// The trace id of the workflow with this uid.
pub fn trace_id(workflow_uid: &str) -> [u8; 16] {
    derive(&[b"a2a.dev/trace", workflow_uid.as_bytes()])
}

/// The id of the workflow's root span.
pub fn workflow_span_id(workflow_uid: &str) -> [u8; 8] {
    derive(&[b"a2a.dev/workflow", workflow_uid.as_bytes()])
}

/// The id of the span of one attempt of a task; a reply delivered to a task that waited for
/// input is an exchange of its own (`reply` is the reply's id).
pub fn attempt_span_id(workflow_uid: &str, task: &str, attempt: u32, reply: Option<&str>) -> [u8; 8] {
    let attempt = attempt.to_string();
    match reply {
        None => derive(&[b"a2a.dev/attempt", workflow_uid.as_bytes(), task.as_bytes(), attempt.as_bytes()]),
        Some(r) => {
            derive(&[b"a2a.dev/reply", workflow_uid.as_bytes(), task.as_bytes(), attempt.as_bytes(), r.as_bytes()])
        }
    }
}

/// The context an attempt's requests carry: its span in the workflow's trace, sampled when
/// spans are exported.
pub fn attempt_context(workflow_uid: &str, task: &str, attempt: u32, reply: Option<&str>) -> SpanContext {
    SpanContext {
        trace_id: trace_id(workflow_uid),
        span_id: attempt_span_id(workflow_uid, task, attempt, reply),
        sampled: exporting(),
    }
}

tokio::task_local! {
    static CURRENT: SpanContext;
}

/// Runs `f` with `ctx` as the trace context of every A2A request it sends ([`inject`]).
pub async fn within<F: Future>(ctx: SpanContext, f: F) -> F::Output {
    CURRENT.scope(ctx, f).await
}

/// The trace context of the requests sent now, if any.
fn current() -> Option<SpanContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Adds the current trace context's `traceparent` header to an outgoing request.
pub(crate) fn inject(headers: &mut http::HeaderMap) {
    if let Some(c) = current()
        && let Ok(v) = http::HeaderValue::from_str(&c.traceparent())
    {
        headers.insert(TRACEPARENT, v);
    }
}

/// Puts the current trace context in an A2A message's metadata (key [`TRACEPARENT`]), for
/// agents that read the message rather than the HTTP headers.
pub fn annotate(metadata: &mut Option<serde_json::Map<String, serde_json::Value>>) {
    if let Some(c) = current() {
        metadata.get_or_insert_with(Default::default).insert(TRACEPARENT.into(), c.traceparent().into());
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// How a span ended.
#[derive(Clone, Debug, PartialEq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

/// What a span is to the process that records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    /// A request to another service (an attempt sent to an agent).
    Client,
}

/// A finished span, as a2a records it.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start: Timestamp,
    pub end: Timestamp,
    pub attributes: Vec<(&'static str, Value)>,
    pub status: SpanStatus,
}

/// Whether spans are exported (the exporter runs).
pub fn exporting() -> bool {
    EXPORTER.get().is_some_and(Option::is_some)
}

/// Records a finished span: built (by `make`) and queued only when spans are exported. A
/// full queue drops the span and counts it.
pub fn record(make: impl FnOnce() -> Span) {
    let Some(Some(e)) = EXPORTER.get() else { return };
    match e.spans.try_send(make()) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            if e.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    capacity = e.config.max_queue,
                    "trace export queue full: spans are dropped (a2a_trace_spans_dropped_total counts them)"
                );
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            e.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts of the exporter, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

struct Exporter {
    config: Config,
    spans: mpsc::Sender<Span>,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    stats: Stats,
}

static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();

/// Starts the exporter when the environment asks for one (once per process; later calls do
/// nothing). Needs a Tokio runtime. A configuration a2a cannot follow is logged as an error
/// and nothing is exported.
pub fn start_from_env() {
    EXPORTER.get_or_init(|| match Config::from_env(|k| std::env::var(k).ok()) {
        Ok(None) => None,
        Ok(Some(config)) => match start(config) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "traces are not exported");
                None
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "traces are not exported");
            None
        }
    });
}

/// Sends every span queued so far and waits for the export: at most the export timeout (and
/// a second), even when the exporter is still retrying an earlier batch.
pub async fn flush() {
    let Some(Some(e)) = EXPORTER.get() else { return };
    let (tx, rx) = oneshot::channel();
    let _ = tokio::time::timeout(e.config.export_timeout + Duration::from_secs(1), async {
        if e.flushes.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    })
    .await;
}

/// The exporter's counters, when it runs.
pub fn stats() -> Option<&'static Stats> {
    EXPORTER.get().and_then(Option::as_ref).map(|e| &e.stats)
}

/// Appends the exporter's series (only when it runs) in the text exposition format.
pub fn render_metrics(out: &mut String) {
    let Some(s) = stats() else { return };
    for (name, help, n) in [
        ("a2a_trace_spans_exported_total", "Spans the OTLP endpoint accepted.", &s.exported),
        ("a2a_trace_spans_dropped_total", "Spans dropped because the export queue was full.", &s.dropped),
        ("a2a_trace_spans_failed_total", "Spans whose export failed after its retries.", &s.failed),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", n.load(Ordering::Relaxed));
    }
}

/// Why the environment's trace settings cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?}: a2a exports traces over OTLP with the protocol http/protobuf only")]
    Protocol { var: &'static str, value: String },
    #[error("{var}={value:?}: a2a exports traces with \"otlp\" or not at all (\"none\")")]
    Exporter { var: &'static str, value: String },
    #[error("{var}={value:?}: expected {what}")]
    Invalid { var: &'static str, value: String, what: &'static str },
    #[error("{var}: reading {path}: {source}")]
    File {
        var: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the OTLP endpoint's TLS settings: {0}")]
    Tls(#[from] crate::a2a::tls::Error),
}

/// The exporter's settings, read from the OpenTelemetry SDK's environment variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the batches are POSTed (`…/v1/traces`).
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// Resource attributes; `service.name` among them.
    pub resource: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_queue: usize,
    pub max_batch: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    pub tls: crate::a2a::tls::TlsOptions,
}

impl Config {
    /// The settings `var` gives, or `None` when nothing is to be exported: no OTLP endpoint
    /// set, `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, ConfigError> {
        let get = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(v) = get("OTEL_TRACES_EXPORTER") {
            let names: Vec<&str> = v.split(',').map(str::trim).collect();
            if names.iter().all(|n| n.eq_ignore_ascii_case("none")) {
                return Ok(None);
            }
            if !names.iter().any(|n| n.eq_ignore_ascii_case("otlp")) {
                return Err(ConfigError::Exporter { var: "OTEL_TRACES_EXPORTER", value: v });
            }
        }
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => e,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<http::Uri>().is_err()
        {
            let var = if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
            } else {
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            };
            return Err(ConfigError::Invalid { var, value: endpoint, what: "an http:// or https:// URL" });
        }
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(var) {
                if p != "http/protobuf" {
                    return Err(ConfigError::Protocol { var, value: p });
                }
                break;
            }
        }
        for var in ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"] {
            if let Some(c) = get(var) {
                if c != "none" {
                    return Err(ConfigError::Invalid { var, value: c, what: "none (a2a does not compress)" });
                }
                break;
            }
        }
        let mut headers = Vec::new();
        for var in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(v) = get(var) {
                for (k, v) in pairs(var, &v)? {
                    headers.retain(|(h, _): &(String, String)| !h.eq_ignore_ascii_case(&k));
                    headers.push((k, v));
                }
            }
        }
        for (k, v) in &headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(v).is_err() {
                return Err(ConfigError::Invalid {
                    var: "OTEL_EXPORTER_OTLP_HEADERS",
                    value: k.clone(),
                    what: "HTTP header names and values",
                });
            }
        }
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
            None => Vec::new(),
        };
        let service = get("OTEL_SERVICE_NAME")
            .or_else(|| resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| "a2a".to_owned());
        resource.retain(|(k, _)| k != "service.name" && k != "service.version");
        resource.insert(0, ("service.name".into(), service));
        resource.insert(1, ("service.version".into(), env!("CARGO_PKG_VERSION").into()));
        let millis = |vars: &[&'static str], default: u64| -> Result<Duration, ConfigError> {
            for &var in vars {
                if let Some(v) = get(var) {
                    return v.parse::<u64>().map(Duration::from_millis).map_err(|_| ConfigError::Invalid {
                        var,
                        value: v,
                        what: "milliseconds",
                    });
                }
            }
            Ok(Duration::from_millis(default))
        };
        let count = |var: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or(ConfigError::Invalid {
                    var,
                    value: v,
                    what: "a positive number",
                }),
            }
        };
        let file = |var: &'static str| -> Result<Option<Vec<u8>>, ConfigError> {
            let v = get(&var.replace("OTLP_", "OTLP_TRACES_")).or_else(|| get(var));
            v.map(|path| std::fs::read(&path).map_err(|source| ConfigError::File { var, path, source })).transpose()
        };
        let mut tls =
            crate::a2a::tls::TlsOptions { ca_pem: file("OTEL_EXPORTER_OTLP_CERTIFICATE")?, ..Default::default() };
        if let (Some(chain_pem), Some(key_pem)) =
            (file("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?, file("OTEL_EXPORTER_OTLP_CLIENT_KEY")?)
        {
            tls.client_certificate = Some(crate::a2a::tls::ClientCertificate { chain_pem, key_pem });
        }
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        Ok(Some(Config {
            endpoint,
            headers,
            resource,
            timeout: millis(&["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"], 10_000)?,
            max_queue,
            max_batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.min(max_queue),
            schedule_delay: millis(&["OTEL_BSP_SCHEDULE_DELAY"], 5_000)?.max(Duration::from_millis(1)),
            export_timeout: millis(&["OTEL_BSP_EXPORT_TIMEOUT"], 30_000)?,
            tls,
        }))
    }
}

/// `k=v,k2=v2` with percent-encoded values, as the OpenTelemetry variables write lists.
fn pairs(var: &'static str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(ConfigError::Invalid {
                var,
                value: item.to_owned(),
                what: "key=value pairs separated by commas",
            });
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s.trim()).decode_utf8_lossy().into_owned();
        out.push((decode(k), decode(v)));
    }
    Ok(out)
}

fn start(config: Config) -> Result<Exporter, ConfigError> {
    let connector = crate::a2a::tls::connector(&config.tls)?;
    let pool: HyperClient<_, Full<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
    let (spans, rx) = mpsc::channel(config.max_queue);
    let (flushes, flush_rx) = mpsc::channel(4);
    tracing::info!(endpoint = %config.endpoint, "exporting traces over OTLP");
    let batcher = Batcher { config: config.clone(), pool };
    tokio::spawn(batcher.run(rx, flush_rx));
    Ok(Exporter { config, spans, flushes, stats: Stats::default() })
}

struct Batcher<C> {
    config: Config,
    pool: HyperClient<C, Full<Bytes>>,
}

impl<C> Batcher<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    async fn run(self, mut spans: mpsc::Receiver<Span>, mut flushes: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut batch: Vec<Span> = Vec::new();
        let mut tick = tokio::time::interval(self.config.schedule_delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                s = spans.recv() => match s {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= self.config.max_batch {
                            self.export(std::mem::take(&mut batch)).await;
                        }
                    }
                    None => {
                        self.export(std::mem::take(&mut batch)).await;
                        return;
                    }
                },
                _ = tick.tick() => self.export(std::mem::take(&mut batch)).await,
                Some(done) = flushes.recv() => {
                    while let Ok(s) = spans.try_recv() {
                        batch.push(s);
                        if batch.len() >= self.config.max_batch {
                            self.export(std::mem::take(&mut batch)).await;
                        }
                    }
                    self.export(std::mem::take(&mut batch)).await;
                    let _ = done.send(());
                }
            }
        }
    }

    /// Sends one batch, retrying transient failures (no answer, 429, 502, 503, 504) with
    /// backoff until the export timeout; a batch that still fails is counted and dropped.
    async fn export(&self, batch: Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = Bytes::from(request(&self.config.resource, batch).encode_to_vec());
        let stats = stats();
        let deadline = tokio::time::Instant::now() + self.config.export_timeout;
        let mut wait = Duration::from_millis(200);
        loop {
            let outcome = self.send(body.clone()).await;
            let retry_after = match outcome {
                Ok(rejected) => {
                    if let Some(s) = stats {
                        s.exported.fetch_add(n.saturating_sub(rejected), Ordering::Relaxed);
                        s.failed.fetch_add(rejected, Ordering::Relaxed);
                    }
                    return;
                }
                Err(Failure::Permanent(why)) => {
                    tracing::warn!(endpoint = %self.config.endpoint, spans = n, error = %why, "trace export refused; the spans are dropped");
                    break;
                }
                Err(Failure::Transient(why, after)) => {
                    tracing::debug!(endpoint = %self.config.endpoint, error = %why, "trace export failed; retrying");
                    after
                }
            };
            let pause = retry_after.unwrap_or(wait);
            if tokio::time::Instant::now() + pause > deadline {
                tracing::warn!(endpoint = %self.config.endpoint, spans = n, timeout = ?self.config.export_timeout, "trace export kept failing; the spans are dropped");
                break;
            }
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        if let Some(s) = stats {
            s.failed.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// One POST; `Ok` with the number of spans the endpoint says it rejected.
    async fn send(&self, body: Bytes) -> Result<u64, Failure> {
        let mut req = http::Request::post(&self.config.endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        for (k, v) in &self.config.headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                req.headers_mut().insert(k, v);
            }
        }
        let answer = tokio::time::timeout(self.config.timeout, async {
            let resp = self.pool.request(req).await.map_err(|e| Failure::Transient(e.to_string(), None))?;
            let status = resp.status();
            let after = crate::a2a::client::retry_after_of(&self.config.endpoint, status, resp.headers());
            let body = resp.into_body().collect().await.map_err(|e| Failure::Transient(e.to_string(), None))?;
            Ok::<_, Failure>((status, after, body.to_bytes()))
        })
        .await
        .map_err(|_| Failure::Transient(format!("no answer within {:?}", self.config.timeout), None))??;
        let (status, after, body) = answer;
        if status.is_success() {
            let rejected = ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .filter(|p| p.rejected_spans > 0)
                .map(|p| {
                    tracing::warn!(endpoint = %self.config.endpoint, rejected = p.rejected_spans, message = %p.error_message, "the OTLP endpoint rejected spans");
                    p.rejected_spans.max(0) as u64
                });
            return Ok(rejected.unwrap_or(0));
        }
        let why = format!("HTTP {}: {}", status.as_u16(), crate::a2a::client::quote(&body));
        if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
            Err(Failure::Transient(why, after))
        } else {
            Err(Failure::Permanent(why))
        }
    }
}

enum Failure {
    /// Worth trying again (after the endpoint's `Retry-After` when it gave one).
    Transient(String, Option<Duration>),
    Permanent(String),
}

fn nanos(t: Timestamp) -> u64 {
    u64::try_from(t.as_nanosecond()).unwrap_or(0)
}

fn attribute(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Int(n) => any_value::Value::IntValue(n),
    };
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// The OTLP request for `spans`, under one resource and the `a2a` instrumentation scope.
fn request(resource: &[(String, String)], spans: Vec<Span>) -> ExportTraceServiceRequest {
    let spans = spans
        .into_iter()
        .map(|s| {
            let (code, message) = match s.status {
                SpanStatus::Unset => (status::StatusCode::Unset, String::new()),
                SpanStatus::Ok => (status::StatusCode::Ok, String::new()),
                SpanStatus::Error(m) => (status::StatusCode::Error, m),
            };
            opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: s.trace_id.to_vec(),
                span_id: s.span_id.to_vec(),
                parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
                // Sampled: the W3C flags a2a sends.
                flags: 0x1 | 0x100,
                name: s.name,
                kind: match s.kind {
                    SpanKind::Internal => span::SpanKind::Internal,
                    SpanKind::Client => span::SpanKind::Client,
                } as i32,
                start_time_unix_nano: nanos(s.start),
                end_time_unix_nano: nanos(s.end.max(s.start)),
                attributes: s.attributes.into_iter().map(|(k, v)| attribute(k, v)).collect(),
                status: Some(opentelemetry_proto::tonic::trace::v1::Status { message, code: code as i32 }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| attribute(k, Value::Str(v.clone()))).collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "a2a".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn nothing_is_exported_unless_an_endpoint_is_set_and_nothing_turns_it_off() {
        assert_eq!(Config::from_env(env(&[])).unwrap(), None);
        assert_eq!(Config::from_env(env(&[("OTEL_SERVICE_NAME", "x")])).unwrap(), None);
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")];
        let c = Config::from_env(env(&on)).unwrap().expect("exported");
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.resource[0], ("service.name".to_owned(), "a2a".to_owned()));
        let off = |extra: (&'static str, &'static str)| Config::from_env(env(&[on[0], extra])).unwrap();
        assert_eq!(off(("OTEL_SDK_DISABLED", "true")), None);
        assert_eq!(off(("OTEL_TRACES_EXPORTER", "none")), None);
        let c = off(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c.example/x")).expect("exported");
        assert_eq!(c.endpoint, "https://c.example/x", "the per-signal endpoint is taken as it is");
    }

    #[test]
    fn settings_a2a_cannot_follow_are_errors_naming_the_variable() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        let e = Config::from_env(env(&[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\": a2a exports traces over OTLP with the protocol http/protobuf only"
        );
        let e = Config::from_env(env(&[on, ("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert!(e.to_string().starts_with("OTEL_TRACES_EXPORTER=\"zipkin\""), "{e}");
        let e = Config::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")])).unwrap_err();
        assert!(e.to_string().contains("an http:// or https:// URL"), "{e}");
        let e = Config::from_env(env(&[on, ("OTEL_BSP_MAX_QUEUE_SIZE", "lots")])).unwrap_err();
        assert!(e.to_string().starts_with("OTEL_BSP_MAX_QUEUE_SIZE=\"lots\""), "{e}");
    }

    #[test]
    fn headers_and_resource_attributes_are_read_as_the_sdk_writes_them() {
        let c = Config::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, x-team=one"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=two"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=test"),
        ]))
        .unwrap()
        .expect("exported");
        assert_eq!(c.headers, [("api-key".to_owned(), "a b".to_owned()), ("x-team".to_owned(), "two".to_owned())]);
        assert_eq!(c.resource[0].1, "from-attrs");
        assert!(c.resource.contains(&("deployment.environment".to_owned(), "test".to_owned())));
    }

    #[test]
    fn ids_are_derived_so_a_restart_continues_the_same_trace() {
        let a = attempt_context("uid-1", "fetch", 1, None);
        assert_eq!(a, attempt_context("uid-1", "fetch", 1, None), "the same attempt, the same span");
        assert_ne!(a.span_id, attempt_context("uid-1", "fetch", 2, None).span_id);
        assert_ne!(a.span_id, attempt_context("uid-1", "fetch", 1, Some("r1")).span_id);
        assert_eq!(a.trace_id, trace_id("uid-1"));
        assert_ne!(a.trace_id, trace_id("uid-2"));
        let tp = a.traceparent();
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with(&format!("00-{}-{}-", hex(&a.trace_id), hex(&a.span_id))), "{tp}");
        assert_eq!(SpanContext::parse(&tp), Some(a));
        assert_eq!(SpanContext::parse("00-00000000000000000000000000000000-0102030405060708-01"), None);
        assert_eq!(SpanContext::parse("01-x"), None);
    }
}
