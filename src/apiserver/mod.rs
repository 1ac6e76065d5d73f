//! The embedded Kubernetes-shaped API server behind `a2a serve`: the a2a kinds plus core
//! `namespaces` and `events` over the Kubernetes REST paths, stored durably in redb, served
//! over HTTPS on 127.0.0.1 (or the address `--listen` names) with a bearer token, with
//! discovery, OpenAPI, watch, `/metrics`, health endpoints and an audit log.
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
//! `pki/{ca.crt,ca.key,server.crt,server.key}`, `pki/secrets.key` (the key that encrypts
//! Secrets in the store, [`seal`]), `state/store.redb` (with its write-ahead log
//! `state/store.wal`, its format version `state/store.format` and the names of the keys its Secrets
//! are encrypted with, `state/sealed-keys`), `audit.log`, `users` (named users and the digests of
//! their tokens, [`users`]), `join-tokens` and `nodes` (the join tokens' digests and the hosts
//! that joined, [`join`]), `pki/node.{crt,key}` (the first host's own node certificate) or
//! `cluster/` (a joined host's membership, [`crate::membership`]). The home must belong to the
//! daemon's user and be writable by no one else ([`home`]); connections are bounded as [`conn`]
//! describes.

pub mod audit;
pub mod authz;
pub mod computed;
pub mod conn;
pub mod crds;
pub mod delete;
pub mod events;
pub mod handlers;
pub mod health;
pub mod home;
pub mod join;
pub mod last_applied;
pub mod lease;
pub mod managed;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod pki;
pub mod protobuf;
pub mod reserve;
pub mod resources;
pub mod review;
pub mod seal;
pub mod secret;
pub mod selector;
pub mod smp;
pub mod status;
pub mod store;
pub mod users;
pub mod wal;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

use audit::Audit;
use handlers::{RequestInfo, parse_path, verb_of};
use metrics::Metrics;
use status::{ApiError, json_response};
use store::{ObjectKey, Precondition, Store, StoreConfig, Write};

/// The port `a2a serve` listens on unless told otherwise (6443 is left to real clusters).
pub const DEFAULT_PORT: u16 = 7443;

/// The largest request body accepted (as Kubernetes: 3 MiB).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

/// The user the administrator's token (`$A2A_HOME/token`) authenticates as; named users
/// ([`users`]) authenticate as themselves, and [`authz`] decides what each may do.
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
    Home(#[from] home::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Audit(#[from] audit::Error),
    #[error(transparent)]
    Seal(#[from] seal::Error),
    #[error(transparent)]
    Users(#[from] users::Error),
    #[error(transparent)]
    Join(#[from] join::Error),
    #[error(transparent)]
    Membership(#[from] crate::membership::Error),
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
    /// How long events stay in that history, past its newest `watch_history_min`.
    pub watch_history_window: Duration,
    /// How many of the newest events are kept whatever their age.
    pub watch_history_min: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Bytes the store keeps in reserve for checkpointing and starting on a full disk.
    pub store_reserve_bytes: u64,
    /// When `audit.log` is rotated and how many rotated files are kept.
    pub audit_rotation: audit::Rotation,
    /// The cap on connections and the timeouts of slow or idle clients.
    pub connections: conn::ConnectionLimits,
    /// Certificate lifetimes and renewal.
    pub certificates: pki::CertPolicy,
    /// The hosts mDNS found (`GET /apis/discovery.a2a.dev/v1alpha1/peers`); empty when
    /// discovery is off.
    pub peers: Arc<crate::discovery::peers::PeerTable>,
    /// How often a joined host fetches the node certificates the first host revoked.
    pub revocation_refresh: Duration,
    /// The finalizer a new Agent that a local node will run is created with (the node's
    /// [`crate::node::deletion::PROCESSES_FINALIZER`], when a node serves this server): the
    /// create holds the object for the node, instead of a second write per agent before its
    /// first start. `None` (an API server without a node): created as sent.
    pub agent_finalizer: Option<&'static str>,
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
            watch_history_window: store::DEFAULT_HISTORY_WINDOW,
            watch_history_min: store::DEFAULT_HISTORY_MIN,
            bookmark_interval: Duration::from_secs(10),
            store_reserve_bytes: reserve::DEFAULT_BYTES,
            audit_rotation: audit::Rotation::default(),
            connections: conn::ConnectionLimits::default(),
            certificates: pki::CertPolicy::default(),
            peers: Arc::default(),
            revocation_refresh: Duration::from_secs(10),
            agent_finalizer: None,
        }
    }

    /// The finalizer new Agents a local node runs are created with (see
    /// [`ServerConfig::agent_finalizer`]).
    pub fn agent_finalizer(mut self, finalizer: Option<&'static str>) -> Self {
        self.agent_finalizer = finalizer;
        self
    }

    /// The address to listen on (default 127.0.0.1); the serving certificate names it.
    pub fn bind(mut self, ip: IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// The table `GET .../peers` answers from.
    pub fn peers(mut self, peers: Arc<crate::discovery::peers::PeerTable>) -> Self {
        self.peers = peers;
        self
    }

    pub fn revocation_refresh(mut self, every: Duration) -> Self {
        self.revocation_refresh = every;
        self
    }

    pub fn store_reserve_bytes(mut self, bytes: u64) -> Self {
        self.store_reserve_bytes = bytes;
        self
    }

    pub fn audit_rotation(mut self, rotation: audit::Rotation) -> Self {
        self.audit_rotation = rotation;
        self
    }

    pub fn connections(mut self, limits: conn::ConnectionLimits) -> Self {
        self.connections = limits;
        self
    }

    pub fn certificates(mut self, policy: pki::CertPolicy) -> Self {
        self.certificates = policy;
        self
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

    /// Events older than `window` leave the history, except the newest `min`.
    pub fn watch_history_window(mut self, window: Duration, min: usize) -> Self {
        self.watch_history_window = window;
        self.watch_history_min = min;
        self
    }

    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    store: Store,
    metrics: Arc<Metrics>,
    connections: Arc<conn::ConnectionMetrics>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
    token: Arc<str>,
    users: Arc<users::Users>,
    /// Join tokens and joined nodes ([`join`]).
    join: Arc<join::Join>,
    audit: Arc<Audit>,
    addr: SocketAddr,
    /// The garbage collector's and namespace lifecycle's bookkeeping (see [`delete`]).
    collector: Arc<delete::Collector>,
}

/// The server's entry point.
pub struct Server;

/// What another front door of the host (its A2A gateway) shares with the API server: the
/// serving certificate (so the kubeconfig's CA verifies it), who may call, and the audit log.
#[derive(Clone)]
pub struct FrontDoor {
    pub serving_cert: Arc<pki::ServingCert>,
    pub users: Arc<users::Users>,
    /// The administrator's token (`$A2A_HOME/token`).
    pub admin_token: Arc<str>,
    pub audit: Arc<Audit>,
    /// `$A2A_HOME/pki/ca.crt`.
    pub ca_path: PathBuf,
    /// The cluster's CA (PEM): client certificates it signed authenticate hosts.
    pub cluster_ca: String,
    /// Which node certificates are still accepted ([`join::Join::accepts`]).
    pub join: Arc<join::Join>,
}

impl FrontDoor {
    /// Who `token` belongs to: the administrator, a named user, or no one.
    pub fn authenticate(&self, token: &str) -> Option<authz::Subject> {
        if token_ok(token, &self.admin_token) {
            return Some(authz::Subject::masters(ADMIN_USER));
        }
        self.users.authenticate(token)
    }

    /// The node a verified client certificate names, if its certificate is still accepted.
    pub fn node(&self, peer: &join::PeerCertificate) -> Option<authz::Subject> {
        let node = peer.node()?;
        if self.join.accepts(node, &peer.serial) {
            return Some(authz::Subject::node(node));
        }
        tracing::warn!(node, serial = %peer.serial, "a client certificate of a node no longer accepted (deleted, renewed, or joined again)");
        None
    }
}

/// A running server.
pub struct ServerHandle {
    front_door: FrontDoor,
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

    /// `https://ADDR:PORT` (`https://127.0.0.1:PORT` unless told to listen elsewhere).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig written for this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// What the host's A2A gateway shares with the API server.
    pub fn front_door(&self) -> &FrontDoor {
        &self.front_door
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
    pub async fn start(mut config: ServerConfig) -> Result<ServerHandle> {
        let home = config.home.clone();
        // An address other than loopback is named in the serving certificate, so clients on
        // other hosts can verify it.
        let bind = config.bind;
        if !bind.is_loopback() && !bind.is_unspecified() && !config.certificates.ip_sans.contains(&bind) {
            config.certificates.ip_sans.push(bind);
        }
        home::prepare_home(&home)?;
        // A store written by a newer a2a is refused before anything in the home is written.
        store::format::inspect(&home.join("state").join("store.redb")).map_err(store::Error::from)?;
        // Refused here, before anything is written, as well as when opened.
        home::check_existing(&home.join("audit.log"), home::Kind::Public)?;
        let identity = pki::Identity::load_or_create(&home, &config.certificates)?;
        // Before the store or the serving certificate is touched: a store whose Secrets the key
        // file no longer opens is refused, with the home as it was (an identity that exists is
        // only read).
        pki::ensure_private_dir(&home.join("state"))?;
        let sealer = Arc::new(seal::Sealer::load_or_create(&home, &home.join("state").join("store.redb"))?);
        let serving_cert = identity.serving_cert(&home, &config.certificates)?;
        // Client certificates of the cluster's CA authenticate hosts: this host's own CA when
        // it is the first host, the CA it joined with otherwise (then its node certificate is
        // served to the hosts that ask for its node name).
        let membership = crate::membership::Membership::load(&home)?;
        let cluster_ca = match &membership {
            Some(m) => {
                serving_cert.set_node_certificate(&m.info.node_name, &m.cert_pem, m.key_pem())?;
                tracing::info!(node = %m.info.node_name, first_host = %m.info.server,
                    "a member of a cluster of hosts: accepting the certificates of its CA");
                m.ca_pem.clone()
            }
            None => identity.ca_pem.clone(),
        };
        let (tls, tls_refuse) = pki::Identity::server_configs_verifying(&serving_cert, Some(&cluster_ca))?;
        let state_dir = home.join("state");
        pki::ensure_private_dir(&state_dir)?;
        let metrics = Arc::new(Metrics::default());
        let store_path = state_dir.join("store.redb");
        let store = tokio::task::spawn_blocking({
            let metrics = metrics.clone();
            let store_config = StoreConfig {
                history: config.watch_history,
                history_bytes: config.watch_history_bytes,
                history_window: config.watch_history_window,
                history_min: config.watch_history_min,
                reserve_bytes: config.store_reserve_bytes,
                sealer: Some(sealer),
                ..StoreConfig::default()
            };
            move || Store::open(&store_path, store_config, metrics)
        })
        .await
        .map_err(|e| Error::Io { path: state_dir.clone(), source: std::io::Error::other(e.to_string()) })??;
        ensure_default_namespace(&store).await?;
        let moved = events::migrate(&store).await?;
        if moved > 0 {
            tracing::info!(moved, "events.k8s.io Events moved into the one Events store");
        }

        // The first host is a node too: its own certificate lets it call the hosts that joined
        // it, and be called by its node name (the host name). Issued once the store opened, so
        // a refused home is left as it was.
        let own_node = match &membership {
            Some(_) => None,
            None => crate::membership::default_node_name()
                .filter(|n| join::validate_node_name(n).is_ok())
                .and_then(|n| match crate::membership::first_host_certificate(&home, &identity.ca_pem, &n) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(node = %n, error = %e, "cannot issue this host's node certificate");
                        None
                    }
                })
                .and_then(|m| {
                    serving_cert.set_node_certificate(&m.info.node_name, &m.cert_pem, m.key_pem()).ok()?;
                    Some(m.info.node_name)
                }),
        };
        let membership_for_sync = membership.clone();
        let join = Arc::new(join::Join::open(&home, &identity.ca_pem, membership.map(|m| m.info.server), own_node)?);
        let state_join = join.clone();
        let state_config_refresh = config.revocation_refresh;
        let bind = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(bind).await.map_err(|source| Error::Bind { addr: bind, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr: bind, source })?;
        let kubeconfig = home.join("kubeconfig");
        pki::write_private(&kubeconfig, identity.kubeconfig(&format!("https://{addr}")).as_bytes())?;
        let users = Arc::new(users::Users::open(&home)?);
        let audit_path = home.join("audit.log");
        let audit = Arc::new(Audit::open(audit_path, config.audit_rotation, metrics.clone())?);

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let front_door = FrontDoor {
            serving_cert: serving_cert.clone(),
            users: users.clone(),
            admin_token: identity.token.clone().into(),
            audit: audit.clone(),
            ca_path: home.join("pki").join("ca.crt"),
            cluster_ca: cluster_ca.clone(),
            join: join.clone(),
        };
        let state = AppState {
            store: store.clone(),
            metrics,
            connections: Arc::new(conn::ConnectionMetrics::default()),
            config: Arc::new(config),
            shutdown: shutdown_rx.clone(),
            token: identity.token.clone().into(),
            users,
            join,
            audit: audit.clone(),
            addr,
            collector: Arc::default(),
        };
        let limits = state.config.connections.clone();
        let connection_metrics = state.connections.clone();
        let router = router(state);
        let acceptors = conn::Acceptors {
            serve: tokio_rustls::TlsAcceptor::from(tls),
            refuse: tokio_rustls::TlsAcceptor::from(tls_refuse),
            audit: Some(audit.clone()),
        };
        tokio::spawn(renew_certificates(serving_cert, shutdown_rx.clone()));
        if let Some(m) = membership_for_sync {
            tokio::spawn(follow_revocations(m, state_join, state_config_refresh, shutdown_rx.clone()));
        }
        tracing::info!(max_connections = limits.max_connections, "connection limit");
        let task =
            tokio::spawn(conn::serve(listener, acceptors, router, Arc::new(limits), connection_metrics, shutdown_rx));
        tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server listening");
        Ok(ServerHandle { front_door, addr, kubeconfig, store, shutdown: shutdown_tx, task, audit })
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
            "creationTimestamp": handlers::now(),
            "generation": 1,
        },
        "status": {"phase": "Active"},
    });
    match store.write(Write::Put { key, object: ns, precondition: Precondition::Absent }).await {
        Ok(_) | Err(store::Error::AlreadyExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// On a joined host: fetches from the first host, every `every`, the node certificates it no
/// longer accepts, so that they are refused here too; the last list is kept while the first
/// host cannot be reached.
async fn follow_revocations(
    membership: crate::membership::Membership,
    join: Arc<join::Join>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match crate::membership::revoked_serials(&membership).await {
            Ok(serials) => {
                if failing {
                    tracing::info!(first_host = %membership.info.server, "the first host's revocations are followed again");
                }
                failing = false;
                join.set_revoked_by_first_host(serials);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(first_host = %membership.info.server, error = %e,
                        "cannot fetch the node certificates the first host revoked; keeping the last list");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every.max(Duration::from_millis(100))) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Checks the serving certificate every `check_every` and renews it when due, until shutdown.
async fn renew_certificates(cert: Arc<pki::ServingCert>, mut shutdown: watch::Receiver<bool>) {
    let every = cert_check_interval(&cert);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let c = cert.clone();
        match tokio::task::spawn_blocking(move || c.renew_if_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "renewing the serving certificate failed; trying again later"),
            Err(e) => tracing::error!(error = %e, "renewing the serving certificate panicked"),
        }
    }
}

fn cert_check_interval(cert: &pki::ServingCert) -> Duration {
    cert.policy().check_every.max(Duration::from_millis(10))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/healthz/{check}", get(health::healthz_check))
        .route("/livez/{check}", get(health::livez_check))
        .route("/readyz/{check}", get(health::readyz_check))
        .route("/metrics", get(metrics_text))
        // With and without a trailing slash, as the kube-apiserver (the Python client asks
        // for `/version/` and `/apis/`).
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/api", get(api_versions))
        .route("/api/", get(api_versions))
        .route("/apis", get(api_group_list))
        .route("/apis/", get(api_group_list))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/", get(api_group))
        .route("/api/{version}", get(core_resources))
        .route("/api/{version}/", get(core_resources))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/apis/{group}/{version}/", get(group_resources))
        .route("/openapi/v2", get(openapi::serve_v2))
        .route("/openapi/v3", get(openapi::serve_v3_index))
        .route("/openapi/v3/api/{version}", get(openapi::serve_v3_core))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi::serve_v3_group))
        .route(join::CACERTS_PATH, get(cacerts))
        .route(join::JOIN_PATH, axum::routing::post(join_request))
        .route(join::RENEW_PATH, axum::routing::post(renew_request))
        .route(join::REVOKED_PATH, get(revoked))
        .fallback(resource_request)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The CA, to anyone: a joining host checks it against its token's pin.
async fn cacerts(State(state): State<AppState>) -> Response {
    let mut r = state.join.ca_pem().to_string().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The serials of node certificates this host no longer accepts, to anyone (serials are not
/// secret; joined hosts fetch them over TLS verified by the cluster's CA).
async fn revoked(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!({"serials": state.join.revoked_serials()}))
}

/// A host joining with a join token ([`join::serve_join`]).
async fn join_request(State(state): State<AppState>, headers: axum::http::HeaderMap, body: bytes::Bytes) -> Response {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let (mut response, who, node) = join::serve_join(&state.join, bearer, &body);
    response.extensions_mut().insert(who);
    response.extensions_mut().insert(RequestInfo {
        verb: "create",
        resource: "join".to_string(),
        namespace: String::new(),
        name: node,
    });
    response
}

/// A joined host renewing its certificate with its current one ([`join::serve_renew`]).
async fn renew_request(State(state): State<AppState>, req: Request) -> Response {
    let subject = req.extensions().get::<authz::Subject>().cloned();
    let limit = state.config.max_body_bytes;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(limit).into_response(),
    };
    let mut response =
        join::serve_renew(&state.join, subject.as_ref(), &body).unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RequestInfo {
        verb: "update",
        resource: "nodecertificate".to_string(),
        namespace: String::new(),
        name: subject.map(|s| s.user).unwrap_or_default(),
    });
    response
}

async fn version() -> Response {
    json_response(StatusCode::OK, &resources::version())
}

async fn api_group_list() -> Response {
    json_response(StatusCode::OK, &computed::with_groups(resources::api_group_list()))
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render(&state.store.counts(), state.store.history_size());
    state.connections.render(&mut body);
    crate::metrics::registry().render(&mut body);
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

async fn api_versions(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &resources::api_versions(&state.addr.to_string()))
}

async fn api_group(axum::extract::Path(group): axum::extract::Path<String>) -> Response {
    found(resources::api_group(&group).or_else(|| computed::api_group(&group)))
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
    found(resources::resource_list(&group, &version).or_else(|| computed::resource_list(&group, &version)))
}

/// Authenticates, authorizes ([`authz::authorize`], before any handler), then records metrics
/// and the audit log (writes and refusals, with the user and its groups).
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let public = health::is_health_path(&path)
        || matches!(
            path.as_str(),
            "/version" | "/version/" | join::CACERTS_PATH | join::JOIN_PATH | join::REVOKED_PATH
        );
    let subject = authenticate(&req, &state);
    let attributes = request_attributes(&method, req.uri());
    let mut refused = false;
    let response = match &subject {
        Some(s) if !authz::authorize(s, &attributes) && !public => {
            refused = true;
            authz::forbidden(s, &attributes).into_response()
        }
        Some(s) => {
            req.extensions_mut().insert(s.clone());
            next.run(req).await
        }
        None if public => next.run(req).await,
        None => ApiError::unauthorized().into_response(),
    };
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
        if let authz::Request::Resource { verb, resource, subresource, namespace, name, .. } = &attributes {
            info.verb = static_verb(verb);
            info.resource = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
            info.namespace = namespace.clone();
            info.name = name.clone();
        } else if let Ok(t) = parse_path(&path) {
            info.resource = t.resource.plural.to_string();
            info.namespace = t.namespace.unwrap_or_default();
            info.name = t.name.unwrap_or_default();
        }
        info
    });
    state.metrics.observe_request(info.verb, &info.resource, code, started.elapsed());
    // Another host's calls are all recorded, reads too (the other side records them as well).
    let from_node = subject.as_ref().is_some_and(|s| s.grant == authz::Grant::Node);
    if refused || from_node || matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let anonymous = ["system:unauthenticated".to_string()];
        let (user, groups) = match (response.extensions().get::<join::AuditedAs>(), &subject) {
            (Some(a), _) => (a.user.as_str(), &a.groups[..]),
            (None, Some(s)) => (s.user.as_str(), &s.groups[..]),
            (None, None) => ("system:anonymous", &anonymous[..]),
        };
        // A refused non-resource request is named by its path.
        let resource = if info.resource.is_empty() { path.clone() } else { info.resource.clone() };
        state.audit.record(&audit::Entry {
            user,
            groups,
            verb: info.verb,
            resource: &resource,
            namespace: &info.namespace,
            name: &info.name,
            code,
        });
    }
    response
}

/// The verb as the metrics and the audit log name it.
fn static_verb(verb: &str) -> &'static str {
    authz::ALL_VERBS.iter().copied().find(|v| *v == verb).unwrap_or("other")
}

/// Who the request is: a node, by a client certificate of the cluster's CA (verified in the
/// TLS handshake; on the first host it must also be the certificate recorded for the node), or
/// whoever the bearer token belongs to (the administrator, a named user), or no one.
fn authenticate(req: &Request, state: &AppState) -> Option<authz::Subject> {
    if let Some(peer) = req.extensions().get::<Arc<join::PeerCertificate>>()
        && let Some(node) = peer.node()
    {
        if state.join.accepts(node, &peer.serial) {
            return Some(authz::Subject::node(node));
        }
        tracing::warn!(node, serial = %peer.serial, "a client certificate of a node no longer accepted (deleted, renewed, or joined again)");
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    let given = given.trim();
    if token_ok(given, &state.token) {
        return Some(authz::Subject::masters(ADMIN_USER));
    }
    state.users.authenticate(given)
}

fn token_ok(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    // Compare in constant time for equal lengths.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The authorizer's view of a request (the kube-apiserver's RequestInfo): the resource, its
/// namespace and name and the verb, or a non-resource path.
fn request_attributes(method: &Method, uri: &axum::http::Uri) -> authz::Request {
    let path = uri.path();
    let q: HashMap<String, String> = Query::try_from_uri(uri).map(|Query(q)| q).unwrap_or_default();
    let watch = params::flag(&q, "watch").unwrap_or(false);
    let verb = |named: bool| match (method, named) {
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) if watch => "watch",
        (&Method::GET | &Method::HEAD, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "other",
    };
    // The reviews, users, join tokens, nodes, peers and CRDs are served under groups of
    // their own: a request under any other group (every create of an Agent) skips their
    // path checks.
    let mut segs = path.trim_matches('/').split('/');
    let own_group = match (segs.next(), segs.next()) {
        (Some("apis"), Some(group)) => matches!(
            group,
            "authorization.k8s.io"
                | "authentication.k8s.io"
                | authz::USERS_GROUP
                | crate::discovery::peers::GROUP
                | crds::GROUP
        ),
        _ => true,
    };
    if !own_group && let Ok(t) = parse_path(path) {
        return resource_attributes(method, &t, &q, verb);
    }
    if let Some(plural) = review::plural_of(path) {
        let group = review::REVIEWS.iter().find(|r| r.2 == plural).map(|r| r.0).unwrap_or_default();
        return authz::Request::resource(verb(false), group, plural, "", "");
    }
    if let Some(name) = users::target(path) {
        let n = name.unwrap_or_default();
        return authz::Request::resource(verb(!n.is_empty()), authz::USERS_GROUP, "users", "", &n);
    }
    for (plural, target) in [("jointokens", join::tokens_target(path)), ("nodes", join::nodes_target(path))] {
        if let Some(name) = target {
            let n = name.unwrap_or_default();
            return authz::Request::resource(verb(!n.is_empty()), authz::USERS_GROUP, plural, "", &n);
        }
    }
    if let Some(name) = crate::discovery::peers::target(path) {
        use crate::discovery::peers::{GROUP, PLURAL};
        let n = name.unwrap_or_default();
        return authz::Request::resource(verb(!n.is_empty()), GROUP, PLURAL, "", &n);
    }
    if let Some(named) = crds::target(path) {
        let (name, status) = named.unwrap_or_default();
        let r = authz::Request::resource(verb(!name.is_empty()), crds::GROUP, crds::PLURAL, "", &name);
        return if status { r.subresource("status") } else { r };
    }
    if let Ok(t) = parse_path(path) {
        return resource_attributes(method, &t, &q, verb);
    }
    authz::Request::non_resource(&method.as_str().to_ascii_lowercase(), path)
}

/// The authorizer's view of a request for one of the resources' table.
fn resource_attributes(
    method: &Method,
    t: &handlers::Target,
    q: &HashMap<String, String>,
    verb: impl Fn(bool) -> &'static str,
) -> authz::Request {
    let verb = verb_of(method, t, q).unwrap_or_else(|_| verb(t.name.is_some()));
    let name = t.name.clone().unwrap_or_default();
    // A namespace is in itself, as the kube-apiserver's request info has it.
    let namespace = if t.resource.group.is_empty() && t.resource.plural == "namespaces" {
        name.clone()
    } else {
        t.namespace.clone().unwrap_or_default()
    };
    let r = authz::Request::resource(verb, t.resource.group, t.resource.plural, &namespace, &name);
    if t.status { r.subresource("status") } else { r }
}

async fn resource_request(State(state): State<AppState>, req: Request) -> Response {
    let accept = protobuf::Accept::of(req.headers());
    let target = parse_path(req.uri().path());
    let served = target.as_ref().is_ok_and(|t| protobuf::serves(t.resource));
    let mut info = RequestInfo::default();
    let result = match protobuf::not_acceptable(accept, served || target.is_err()) {
        Some(e) => Err(e),
        None => dispatch(&state, req, target, &mut info).await,
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let mut response = protobuf::respond(response, accept, served, info.verb == "watch").await;
    response.extensions_mut().insert(info);
    response
}

async fn dispatch(
    state: &AppState,
    req: Request,
    target: Result<handlers::Target, ApiError>,
    info: &mut RequestInfo,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    if let Some((verb, resource)) = computed::claims(&parts) {
        info.verb = verb;
        info.resource = resource.to_string();
        let limits = &state.config.connections;
        let body =
            tokio::time::timeout(limits.body_timeout, read_body(&parts.headers, body, state.config.max_body_bytes))
                .await
                .map_err(|_| ApiError::new(408, "Timeout", "the request body did not arrive in time"))??;
        return computed::serve(state, &parts, &body).await;
    }
    let t = target?;
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    info.resource = if t.status { format!("{}/status", t.resource.plural) } else { t.resource.plural.to_string() };
    info.namespace = t.namespace.clone().unwrap_or_default();
    info.name = t.name.clone().unwrap_or_default();
    info.verb = verb_of(&parts.method, &t, &q)?;
    params::check_write_options(info.verb, &q)?;
    let limits = &state.config.connections;
    let body = tokio::time::timeout(limits.body_timeout, read_body(&parts.headers, body, state.config.max_body_bytes))
        .await
        .map_err(|_| {
            ApiError::new(408, "Timeout", format!("the request body did not arrive within {:?}", limits.body_timeout))
        })??;
    match info.verb {
        "get" => state.get(&t, &parts.headers, &q).await,
        "list" => state.list(&t, &parts.headers, &q).await,
        "watch" => state.watch(&t, &parts.headers, &q).await,
        "create" => {
            let object = write_body(&t, &parts.headers, &body).await?;
            state.create(&t, object, &parts.headers, &q, info).await
        }
        "update" => {
            let object = write_body(&t, &parts.headers, &body).await?;
            state.update(&t, object, &parts.headers, &q).await
        }
        "patch" => state.patch(&t, &parts.headers, &body, &q, info).await,
        "delete" => state.delete(&t, &protobuf::delete_body_as_json(&parts.headers, body)?, &q).await,
        "deletecollection" => {
            state.delete_collection(&t, &protobuf::delete_body_as_json(&parts.headers, body)?, &q).await
        }
        _ => Err(ApiError::method_not_allowed("unsupported verb")),
    }
}

/// The object a create or an update sends: JSON, YAML, or (built-in kinds) protobuf.
async fn write_body(
    t: &handlers::Target,
    headers: &axum::http::HeaderMap,
    body: &bytes::Bytes,
) -> Result<Value, ApiError> {
    if protobuf::body_is_protobuf(headers) {
        return protobuf::decode(t.resource, body);
    }
    let yaml = handlers::body_is_yaml(headers)?;
    let object = handlers::parse_body_off_thread(body, yaml).await?;
    match lease::decode_error(&object) {
        Some(e) if t.resource.plural == "leases" => Err(e),
        _ => Ok(object),
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
