//! The embedded Kubernetes-shaped API server behind `a2a serve`: the a2a kinds plus core
//! `namespaces` and `events` over the Kubernetes REST paths, stored durably in redb, served
//! over HTTPS on 127.0.0.1 with a bearer token, with discovery, OpenAPI, watch, `/metrics`,
//! health endpoints and an audit log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), a2a::apiserver::Error> {
//! let config = a2a::apiserver::ServerConfig::new("/tmp/a2a-home").port(0);
//! let server = a2a::apiserver::Server::start(config).await?;
//! println!("listening on {}, kubeconfig {}", server.addr(), server.kubeconfig().display());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Files under the home directory (all 0600, directories 0700): `kubeconfig`, `token`,
//! `pki/{ca.crt,ca.key,server.crt,server.key}`, `state/store.redb` (with its write-ahead log
//! `state/store.wal`), `audit.log`.

pub mod handlers;
pub mod managed;
pub mod metrics;
pub mod pki;
pub mod resources;
pub mod selector;
pub mod status;
pub mod store;
pub mod wal;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use handlers::{RequestInfo, parse_path, verb_of};
use metrics::Metrics;
use status::{ApiError, json_response};
use store::{ObjectKey, Precondition, Store, StoreConfig, Write};

/// The port `a2a serve` listens on unless told otherwise (6443 is left to real clusters).
pub const DEFAULT_PORT: u16 = 7443;

/// The largest request body accepted (as Kubernetes: 3 MiB).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

/// The user every valid token authenticates as.
pub const ADMIN_USER: &str = "a2a-admin";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `$A2A_HOME`, else `~/.a2a`.
pub fn default_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("A2A_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".a2a"))
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub home: PathBuf,
    pub bind: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub max_body_bytes: usize,
    /// Events kept for resuming watches and serving paged lists.
    pub watch_history: usize,
    /// Bytes of object versions those events may hold at most.
    pub watch_history_bytes: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
}

impl ServerConfig {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        ServerConfig {
            home: home.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            max_body_bytes: DEFAULT_MAX_BODY,
            watch_history: 10_000,
            watch_history_bytes: 64 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
        }
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    pub fn watch_history(mut self, events: usize) -> Self {
        self.watch_history = events;
        self
    }

    pub fn watch_history_bytes(mut self, bytes: usize) -> Self {
        self.watch_history_bytes = bytes;
        self
    }

    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }
}

/// How long the audit writer lets lines gather after a write.
const AUDIT_PAUSE: Duration = Duration::from_millis(10);

/// JSON lines of every mutating request, written by a thread of their own so that no
/// request waits on the file: a line is handed over before the answer is sent, and
/// [`Audit::close`] (on shutdown) returns once every line handed over is written.
struct Audit {
    path: PathBuf,
    /// `None` once closed; lines recorded after that (only from connections still open past
    /// the shutdown grace period) are written directly.
    lines: Mutex<Option<std::sync::mpsc::Sender<Vec<u8>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    file: Arc<Mutex<std::fs::File>>,
}

impl Audit {
    fn open(path: PathBuf) -> Result<Audit> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        let file = Arc::new(Mutex::new(file));
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let writer = std::thread::Builder::new()
            .name("a2a-audit".into())
            .spawn({
                let (file, path) = (file.clone(), path.clone());
                move || {
                    let mut out = Vec::new();
                    while let Ok(line) = rx.recv() {
                        // Everything waiting goes out in one write.
                        out.extend_from_slice(&line);
                        while let Ok(line) = rx.try_recv() {
                            out.extend_from_slice(&line);
                        }
                        Audit::write(&file, &path, &out);
                        out.clear();
                        // Lines sent while this thread is not waiting cost their senders no
                        // wake-up: under a stream of writes, one wake-up per pause, not one
                        // per request.
                        std::thread::sleep(AUDIT_PAUSE);
                    }
                }
            })
            .map_err(|source| Error::Io { path: path.clone(), source })?;
        Ok(Audit { path, lines: Mutex::new(Some(tx)), writer: Mutex::new(Some(writer)), file })
    }

    fn write(file: &Mutex<std::fs::File>, path: &Path, bytes: &[u8]) {
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(bytes) {
            tracing::error!(path = %path.display(), error = %e, "writing the audit log");
        }
    }

    fn record(&self, user: &str, info: &RequestInfo, code: u16) {
        // Written straight from the fields (no JSON tree per request), in this order.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: jiff::Timestamp,
            user: &'a str,
            verb: &'a str,
            resource: &'a str,
            namespace: &'a str,
            name: &'a str,
            code: u16,
        }
        let mut line = serde_json::to_vec(&Line {
            time: jiff::Timestamp::now(),
            user,
            verb: info.verb,
            resource: &info.resource,
            namespace: &info.namespace,
            name: &info.name,
            code,
        })
        .unwrap_or_default();
        line.push(b'\n');
        // Only a closed log (or a writer thread that died) leaves the line to write here.
        let unsent = match self.lines.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.send(line).err().map(|e| e.0),
            None => Some(line),
        };
        if let Some(line) = unsent {
            Audit::write(&self.file, &self.path, &line);
        }
    }

    /// Writes every line recorded so far and stops the writer thread.
    fn close(&self) {
        drop(self.lines.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the audit log writer panicked");
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    metrics: Arc<Metrics>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
    token: Arc<str>,
    audit: Arc<Audit>,
    addr: SocketAddr,
}

/// The server's entry point.
pub struct Server;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    store: Store,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    audit: Arc<Audit>,
}

impl ServerHandle {
    /// The address it listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig written for this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Direct access to the store (for an in-process control plane).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting, ends watches, lets in-flight requests finish (up to 5 s), writes the
    /// last audit lines and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let audit = self.audit;
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    }
}

impl Server {
    /// Opens the store under `config.home`, creates the identity if missing, binds, writes
    /// the kubeconfig, and serves until [`ServerHandle::shutdown`].
    pub async fn start(config: ServerConfig) -> Result<ServerHandle> {
        let home = config.home.clone();
        pki::ensure_private_dir(&home)?;
        let identity = pki::Identity::load_or_create(&home)?;
        let tls = identity.server_config(&home)?;
        let state_dir = home.join("state");
        pki::ensure_private_dir(&state_dir)?;
        let metrics = Arc::new(Metrics::default());
        let store_path = state_dir.join("store.redb");
        let store = tokio::task::spawn_blocking({
            let metrics = metrics.clone();
            let store_config = StoreConfig {
                history: config.watch_history,
                history_bytes: config.watch_history_bytes,
                ..StoreConfig::default()
            };
            move || Store::open(&store_path, store_config, metrics)
        })
        .await
        .map_err(|e| Error::Io { path: state_dir.clone(), source: std::io::Error::other(e.to_string()) })??;
        ensure_default_namespace(&store).await?;

        let bind = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(bind).await.map_err(|source| Error::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: bind, source })?;
        let kubeconfig = home.join("kubeconfig");
        pki::write_private(&kubeconfig, identity.kubeconfig(&format!("https://{addr}")).as_bytes())?;
        let audit_path = home.join("audit.log");
        let audit = Arc::new(Audit::open(audit_path)?);

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = AppState {
            store: store.clone(),
            metrics,
            config: Arc::new(config),
            shutdown: shutdown_rx.clone(),
            token: identity.token.clone().into(),
            audit: audit.clone(),
            addr,
        };
        let router = router(state);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(serve(listener, acceptor, router, shutdown_rx));
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
        Ok(ServerHandle { addr, kubeconfig, store, shutdown: shutdown_tx, task, audit })
    }
}

async fn ensure_default_namespace(store: &Store) -> Result<()> {
    let key = ObjectKey::new("/namespaces", "", "default");
    if store.get(&key).is_some() {
        return Ok(());
    }
    let ns = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "default",
            "uid": handlers::new_uid(),
            "creationTimestamp": crate::api::Time::now().to_string(),
            "generation": 1,
        },
        "status": {"phase": "Active"},
    });
    match store.write(Write::Put { key, object: ns, precondition: Precondition::Absent }).await {
        Ok(_) | Err(store::Error::AlreadyExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("connections still open after 5s; closing");
        }
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ok_text))
        .route("/livez", get(ok_text))
        .route("/readyz", get(readyz))
        .route("/version", get(|| async { json_response(StatusCode::OK, &resources::version()) }))
        .route("/metrics", get(metrics_text))
        .route("/api", get(api_versions))
        .route("/apis", get(|| async { json_response(StatusCode::OK, &resources::api_group_list()) }))
        .route("/apis/{group}", get(api_group))
        .route("/api/{version}", get(core_resources))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/openapi/v3", get(|| async { json_response(StatusCode::OK, &resources::openapi_index()) }))
        .route("/openapi/v3/api/{version}", get(openapi_core))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi_group))
        .fallback(resource_request)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn ok_text() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    "ok".into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.store.counts(), state.store.history_size());
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

async fn api_versions(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &resources::api_versions(&state.addr.to_string()))
}

async fn api_group(axum::extract::Path(group): axum::extract::Path<String>) -> Response {
    found(resources::api_group(&group))
}

fn found(v: Option<Value>) -> Response {
    match v {
        Some(v) => json_response(StatusCode::OK, &v),
        None => ApiError::not_found_path().into_response(),
    }
}

async fn core_resources(axum::extract::Path(version): axum::extract::Path<String>) -> Response {
    found(resources::resource_list("", &version))
}

async fn group_resources(axum::extract::Path((group, version)): axum::extract::Path<(String, String)>) -> Response {
    found(resources::resource_list(&group, &version))
}

async fn openapi_core(axum::extract::Path(version): axum::extract::Path<String>) -> Response {
    found(resources::openapi_group("", &version))
}

async fn openapi_group(axum::extract::Path((group, version)): axum::extract::Path<(String, String)>) -> Response {
    found(resources::openapi_group(&group, &version))
}

/// Authenticates, then records metrics and (for writes) the audit log.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let public = matches!(path.as_str(), "/healthz" | "/livez" | "/readyz" | "/version");
    let authorized = public || token_ok(&req, &state.token);
    let response = if authorized { next.run(req).await } else { ApiError::unauthorized().into_response() };
    let code = response.status().as_u16();
    let info = response.extensions().get::<RequestInfo>().cloned().unwrap_or_else(|| {
        let mut info = RequestInfo {
            verb: match method {
                Method::GET => "get",
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "other",
            },
            ..Default::default()
        };
        if let Ok(t) = parse_path(&path) {
            info.resource = t.resource.plural.to_string();
            info.namespace = t.namespace.unwrap_or_default();
            info.name = t.name.unwrap_or_default();
        }
        info
    });
    state.metrics.observe_request(info.verb, &info.resource, code, started.elapsed());
    if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let user = if authorized && !public { ADMIN_USER } else { "system:anonymous" };
        state.audit.record(user, &info, code);
    }
    response
}

fn token_ok(req: &Request, token: &str) -> bool {
    let Some(given) =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    // Compare in constant time for equal lengths.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn resource_request(State(state): State<AppState>, req: Request) -> Response {
    let mut info = RequestInfo::default();
    let result = dispatch(&state, req, &mut info).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(info);
    response
}

async fn dispatch(state: &AppState, req: Request, info: &mut RequestInfo) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let t = parse_path(parts.uri.path())?;
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    info.resource = if t.status { format!("{}/status", t.resource.plural) } else { t.resource.plural.to_string() };
    info.namespace = t.namespace.clone().unwrap_or_default();
    info.name = t.name.clone().unwrap_or_default();
    info.verb = verb_of(&parts.method, &t, &q)?;
    let body = read_body(&parts.headers, body, state.config.max_body_bytes).await?;
    match info.verb {
        "get" => state.get(&t, &parts.headers, &q).await,
        "list" => state.list(&t, &parts.headers, &q).await,
        "watch" => state.watch(&t, &parts.headers, &q).await,
        "create" => {
            let yaml = handlers::body_is_yaml(&parts.headers)?;
            let object = handlers::parse_body_off_thread(&body, yaml).await?;
            state.create(&t, object, &parts.headers, &q, info).await
        }
        "update" => {
            let yaml = handlers::body_is_yaml(&parts.headers)?;
            let object = handlers::parse_body_off_thread(&body, yaml).await?;
            state.update(&t, object, &parts.headers, &q).await
        }
        "patch" => state.patch(&t, &parts.headers, &body, &q, info).await,
        "delete" => state.delete(&t, &body, &q).await,
        "deletecollection" => state.delete_collection(&t, &body, &q).await,
        _ => Err(ApiError::method_not_allowed("unsupported verb")),
    }
}

async fn read_body(headers: &axum::http::HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let declared_too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit);
    // An oversized body is still read (and dropped) up to a bound, so the client gets the
    // 413 instead of a connection reset in the middle of its upload.
    let drain_bound = limit.saturating_mul(16).max(64 * 1024 * 1024);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > drain_bound {
                break;
            }
            if !declared_too_large && seen <= limit {
                buf.extend_from_slice(&data);
            }
        }
    }
    if declared_too_large || seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf.freeze())
}
