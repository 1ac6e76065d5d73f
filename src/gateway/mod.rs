//! The host's A2A gateway: one A2A 1.0 endpoint over TLS (the API server's certificate, so
//! the kubeconfig's CA verifies it), in front of every agent a2a runs on the host.
//!
//! - `/agents/NAME/` (namespace `default`) and `/namespaces/NS/agents/NAME/` are each a whole
//!   A2A endpoint for one agent: requests go, as they are, to a Ready replica of the agent,
//!   with the agent's own token; its card, at `.well-known/agent-card.json` below, names the
//!   gateway in its interface URLs. Both bindings and SSE streams pass through.
//! - `/` (and `/namespaces/NS/`) is an endpoint for all of them: its card lists the skills of
//!   the Ready agents; a message is routed by the skill in its metadata key `a2a.dev/skill`
//!   to the least loaded agent with it; `GetTask`, `CancelTask` and `SubscribeToTask` go to
//!   the agent that holds the task, and `ListTasks` merges every agent's list.
//! - Callers present a bearer token: the administrator's, a named user's (authorized by
//!   [`crate::apiserver::authz`] as verbs on `agents` in API group `a2a.dev`), or an agent's
//!   gateway token ([`token`]), which lets it call the agents of its own namespace.
//! - A message (the operations that start work) is admitted through the workflow engine's
//!   dispatch queue ([`crate::controller::engine::Engine::admit_call`]) and holds one of the
//!   agent's slots until its answer (or stream) ends.
//! - Every call, refused or routed, is a line of the audit log: caller, verb, operation,
//!   namespace, target agent and status.

pub mod token;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::ResourceExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::a2a::types::{AGENT_CARD_PATH, BINDING_HTTP_JSON, BINDING_JSONRPC};
use crate::api::Priority;
use crate::api::agent::Protocol;
use crate::api::workflow::Placement;
use crate::apiserver::FrontDoor;
use crate::apiserver::audit::Entry;
use crate::apiserver::authz::{self, Subject};
use crate::controller::dispatch::Target;
use crate::controller::engine::remote::REMOTE_NAMESPACE;
use crate::controller::engine::{Admitted, CallRequest, Engine, NotAdmitted};
use token::TokenKey;
use wire::{Binding, Call, Refusal};

/// The gateway's port when none is given (the API server's is 7443).
pub const DEFAULT_PORT: u16 = 7444;
/// The file under `$A2A_HOME` that holds the gateway's URL.
pub const URL_FILE: &str = "gateway.url";
/// The message metadata key that names the skill a message sent to the root wants.
pub const SKILL_KEY: &str = "a2a.dev/skill";
/// The message metadata key that lets a message to the root run on a joined peer.
pub const PLACEMENT_KEY: &str = "a2a.dev/placement";
/// The message metadata key that sets a routed call's priority in the dispatch queue.
pub const PRIORITY_KEY: &str = "a2a.dev/priority";
/// What every agent a2a runs is given.
pub const URL_ENV: &str = "A2A_GATEWAY_URL";
pub const TOKEN_ENV: &str = "A2A_GATEWAY_TOKEN";
pub const CA_ENV: &str = "A2A_GATEWAY_CA";
/// Task ids the root remembers (which agent holds each), oldest forgotten first.
pub const ROUTES_KEPT: usize = 100_000;
/// How long an agent's card and token are used before they are read again.
const REREAD: Duration = Duration::from_secs(10);
/// The most a request body may hold.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("gateway: binding {addr}: {source} (another daemon's gateway? pass --gateway-port with a free port, or 0)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway: writing {}: {source}", path.display())]
    UrlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway: {0}")]
    Token(#[from] token::Error),
    #[error("gateway: TLS: {0}")]
    Tls(#[from] crate::apiserver::pki::Error),
}

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub bind: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// How long a message may wait in the dispatch queue for a slot before it is refused.
    pub queue_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway's socket, bound before agents start (they are told its URL).
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    pub async fn bind(config: &GatewayConfig) -> Result<Bound, Error> {
        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        Ok(Bound { listener, addr })
    }

    /// `https://ADDR:PORT` (the bound address: `--listen`, default 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Writes the URL to `$A2A_HOME/gateway.url` (for scripts).
    pub fn write_url(&self, home: &std::path::Path) -> Result<(), Error> {
        let path = home.join(URL_FILE);
        std::fs::write(&path, format!("{}\n", self.url())).map_err(|source| Error::UrlFile { path, source })
    }
}

/// What an agent process is given to call other agents through the gateway.
#[derive(Clone, Debug)]
pub struct AgentAccess {
    pub url: String,
    /// The CA that signed the gateway's certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// Where it is on this host (`$A2A_HOME/pki/ca.crt`), for agents that see the home.
    pub ca_path: PathBuf,
    pub key: TokenKey,
}

impl AgentAccess {
    /// The gateway token of agent `namespace/name` with uid `uid`.
    pub fn token(&self, namespace: &str, name: &str, uid: &str) -> String {
        self.key.mint(namespace, name, uid)
    }
}

/// Starts serving on `bound` until `shutdown`.
pub fn serve(
    bound: Bound,
    config: &GatewayConfig,
    engine: Arc<Engine>,
    front: FrontDoor,
    key: TokenKey,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let url = bound.url();
    // Hosts of the cluster call with their node certificates (remote work); everyone else
    // with a bearer token.
    let (tls, refuse) =
        crate::apiserver::pki::Identity::server_configs_verifying(&front.serving_cert, Some(&front.cluster_ca))?;
    let gw = Arc::new(Gateway {
        engine,
        front,
        key,
        url,
        queue_timeout: config.queue_timeout,
        http: HyperClient::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build({
            // A request or answer split over two writes must not wait for the peer's delayed
            // ACK (Nagle's algorithm), as every other connection a2a makes.
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            c
        }),
        tokens: Mutex::new(HashMap::new()),
        cards: Mutex::new(HashMap::new()),
        routes: Arc::new(Mutex::new(Routes::default())),
    });
    let router = Router::new().fallback(handle).with_state(gw);
    let acceptors = crate::apiserver::conn::Acceptors {
        serve: tokio_rustls::TlsAcceptor::from(tls),
        refuse: tokio_rustls::TlsAcceptor::from(refuse),
        audit: None,
    };
    tracing::info!(url = %format!("https://{}", bound.addr), "A2A gateway listening");
    Ok(tokio::spawn(crate::apiserver::conn::serve(
        bound.listener,
        acceptors,
        router,
        Arc::new(crate::apiserver::conn::ConnectionLimits::default()),
        Arc::new(crate::apiserver::conn::ConnectionMetrics::default()),
        shutdown,
    )))
}

/// `(namespace, name)`.
type Key = (String, String);
/// A card: the uid of the agent it was read for, when, the card.
type CachedCard = (String, Instant, Arc<Value>);
/// Learns the id of the task an answer names.
type Record = Box<dyn Fn(&str) + Send + Sync>;

struct Gateway {
    engine: Arc<Engine>,
    front: FrontDoor,
    key: TokenKey,
    url: String,
    queue_timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
    /// Agents' own tokens by uid, with when they were read.
    tokens: Mutex<HashMap<String, (Instant, Option<String>)>>,
    /// Agents' cards by (namespace, name): the uid they were read for, when, the card.
    cards: Mutex<HashMap<Key, CachedCard>>,
    routes: Arc<Mutex<Routes>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which agent holds each task the root routed: (namespace, task id) → agent, bounded.
#[derive(Default)]
struct Routes {
    agents: HashMap<(String, String), String>,
    order: VecDeque<(String, String)>,
}

impl Routes {
    fn insert(&mut self, namespace: &str, task: &str, agent: &str) {
        let k = (namespace.to_owned(), task.to_owned());
        if self.agents.insert(k.clone(), agent.to_owned()).is_none() {
            self.order.push_back(k);
            while self.order.len() > ROUTES_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.agents.remove(&old);
                }
            }
        }
    }

    fn get(&self, namespace: &str, task: &str) -> Option<String> {
        self.agents.get(&(namespace.to_owned(), task.to_owned())).cloned()
    }
}

/// Where a request goes: the namespace, the agent (none: the root), and the path below.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    namespace: String,
    agent: Option<String>,
    rest: String,
}

impl Route {
    fn parse(path: &str) -> Result<Route, String> {
        let (namespace, tail) = match path.strip_prefix("/namespaces/") {
            Some(t) => {
                let (ns, tail) = t.split_once('/').unwrap_or((t, ""));
                (ns.to_owned(), format!("/{tail}"))
            }
            None => ("default".to_owned(), path.to_owned()),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !valid(&namespace) {
            return Err(format!("\"{namespace}\" is not a namespace name"));
        }
        match tail.strip_prefix("/agents/") {
            Some(t) => {
                let (name, rest) = t.split_once('/').map_or((t, String::from("/")), |(n, r)| (n, format!("/{r}")));
                if !valid(name) {
                    return Err(format!("\"{name}\" is not an agent name"));
                }
                Ok(Route { namespace, agent: Some(name.to_owned()), rest })
            }
            None => Ok(Route { namespace, agent: None, rest: tail }),
        }
    }

    /// The gateway URL of this endpoint (no trailing slash).
    fn base(&self, gateway: &str) -> String {
        let ns = if self.namespace == "default" { String::new() } else { format!("/namespaces/{}", self.namespace) };
        match &self.agent {
            Some(a) => format!("{gateway}{ns}/agents/{a}"),
            None => format!("{gateway}{ns}"),
        }
    }
}

/// The caller of one request, as the audit log names it.
struct Caller {
    subject: Subject,
    /// The agent whose gateway token it presented.
    agent: Option<(String, String)>,
}

async fn handle(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let route = match Route::parse(parts.uri.path()) {
        Ok(r) => r,
        Err(e) => {
            return Refusal::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("{e}: the gateway serves /, /agents/NAME/ and /namespaces/NS/agents/NAME/"),
            )
            .respond(Binding::HttpJson, &Value::Null);
        }
    };
    if parts.method == Method::GET && route.rest == AGENT_CARD_PATH {
        return gw.card(&route).await;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "REQUEST_TOO_LARGE",
                format!("the request body is over {} MiB, the most the gateway takes", MAX_BODY >> 20),
            )
            .respond(Binding::HttpJson, &Value::Null);
        }
    };
    let call = Call::read(&parts.method, &route.rest, &body);
    let node = parts
        .extensions
        .get::<Arc<crate::apiserver::join::PeerCertificate>>()
        .and_then(|peer| gw.front.node(peer))
        .map(|subject| Caller { subject, agent: None });
    let caller = match node.map_or_else(|| gw.authenticate(&parts.headers), Ok) {
        Ok(c) => c,
        Err(refusal) => {
            let anonymous = Subject {
                user: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
                grant: authz::Grant::role(authz::Role::View, Some("")),
            };
            let target = route.agent.clone().unwrap_or_default();
            gw.audit(&anonymous, &call, &route.namespace, &target, refusal.status);
            return refusal.respond(call.binding, &call.id);
        }
    };
    let resp = match &route.agent {
        Some(agent) => gw.to_agent(&caller, &route, agent, &parts, body, &call).await,
        None => gw.at_root(&caller, &route, &parts, body, &call).await,
    };
    match resp {
        Ok((resp, agent)) => {
            gw.audit(&caller.subject, &call, &route.namespace, &agent, resp.status());
            resp
        }
        Err((refusal, agent)) => {
            gw.audit(&caller.subject, &call, &route.namespace, &agent, refusal.status);
            refusal.respond(call.binding, &call.id)
        }
    }
}

type Outcome = Result<(Response, String), (Refusal, String)>;

impl Gateway {
    fn audit(&self, subject: &Subject, call: &Call, namespace: &str, agent: &str, status: StatusCode) {
        self.front.audit.record(&Entry {
            user: &subject.user,
            groups: &subject.groups,
            verb: call.verb(),
            resource: &format!("agents/{}", call.method),
            namespace,
            name: agent,
            code: status.as_u16(),
        });
    }

    /// Who presented the bearer token: the administrator, a named user, or an agent.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let unauthenticated = |why: &str| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                format!(
                    "{why}: the gateway takes the token of a user (a2a user create), the administrator's ($A2A_HOME/token) or an agent's $A2A_GATEWAY_TOKEN as Authorization: Bearer"
                ),
            )
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("no bearer token"))?;
        if token::is_gateway_token(given) {
            let id =
                self.key.verify(given).ok_or_else(|| unauthenticated("the gateway token is not one this host made"))?;
            let current = self.engine.agent(&id.namespace, &id.name).and_then(|a| a.uid());
            if current.as_deref() != Some(id.uid.as_str()) {
                return Err(unauthenticated(&format!(
                    "the gateway token of agent \"{}\" in namespace \"{}\" belongs to an agent that no longer exists",
                    id.name, id.namespace
                )));
            }
            let subject = Subject {
                user: format!("system:agent:{}:{}", id.namespace, id.name),
                groups: vec!["system:agents".into(), "system:authenticated".into()],
                grant: authz::Grant::role(authz::Role::Edit, Some(&id.namespace)),
            };
            return Ok(Caller { subject, agent: Some((id.namespace, id.name)) });
        }
        let subject = self.front.authenticate(given).ok_or_else(|| unauthenticated("the bearer token is not known"))?;
        Ok(Caller { subject, agent: None })
    }

    /// Whether the caller may make `call` on agent `namespace/agent` ("" before it is chosen).
    fn authorize(&self, caller: &Caller, call: &Call, namespace: &str, agent: &str) -> Result<(), Refusal> {
        let request = authz::Request::resource(call.verb(), crate::api::GROUP, "agents", namespace, agent);
        let ok = match &caller.agent {
            // An agent calls the agents of its own namespace, and no other.
            Some((ns, _)) => ns == namespace,
            // A host of the cluster sends the tasks it places here (remote work): the node
            // role may call agents through the gateway, and nothing else of the API.
            None if caller.subject.grant == authz::Grant::Node => true,
            None => authz::authorize(&caller.subject, &request),
        };
        if ok {
            return Ok(());
        }
        let target = if agent.is_empty() { "agents".to_owned() } else { format!("agent \"{agent}\"") };
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "User \"{}\" cannot {} {target} in namespace \"{namespace}\" through the gateway ({}: verb \"{}\" on \
                 resource \"agents\" in API group \"{}\")",
                caller.subject.user,
                call.method,
                call.method,
                call.verb(),
                crate::api::GROUP
            ),
        ))
    }

    /// The agent `namespace/name`, if the gateway can route to it.
    fn routable(&self, namespace: &str, name: &str) -> Result<Arc<crate::api::Agent>, Refusal> {
        let not_found = || {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "AGENT_NOT_FOUND",
                format!("no agent \"{name}\" in namespace \"{namespace}\""),
            )
        };
        let agent = self.engine.agent(namespace, name).ok_or_else(not_found)?;
        if agent.spec.url.is_some() || agent.spec.protocol() != Protocol::A2a {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "AGENT_NOT_ROUTED",
                format!(
                    "agent \"{name}\" in namespace \"{namespace}\" is not an A2A server a2a runs on this host (its spec has \
                     a url, or protocol stdio): the gateway routes only to agents it runs"
                ),
            ));
        }
        Ok(agent)
    }

    /// The agent's own token (read from its Secret, kept for [`REREAD`]).
    async fn agent_token(&self, agent: &crate::api::Agent) -> Option<String> {
        let uid = agent.uid().unwrap_or_default();
        if let Some((at, t)) = lock(&self.tokens).get(&uid)
            && at.elapsed() < REREAD
        {
            return t.clone();
        }
        let options = crate::controller::credentials::client_options(self.engine.client(), agent).await.ok()?;
        let token = options.credentials.bearer.map(|t| t.expose().to_owned());
        lock(&self.tokens).insert(uid, (Instant::now(), token.clone()));
        token
    }

    /// The agent's card as it serves it (kept for [`REREAD`]).
    async fn agent_card(&self, agent: &crate::api::Agent) -> Result<Arc<Value>, Refusal> {
        let (ns, name, uid) =
            (agent.namespace().unwrap_or_default(), agent.name_any(), agent.uid().unwrap_or_default());
        let key = (ns.clone(), name.clone());
        if let Some((u, at, card)) = lock(&self.cards).get(&key)
            && *u == uid
            && at.elapsed() < REREAD
        {
            return Ok(card.clone());
        }
        let unavailable = |why: String| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AGENT_UNAVAILABLE",
                format!("agent \"{name}\" in namespace \"{ns}\": {why}"),
            )
            .retry_after(1)
        };
        let endpoint =
            self.engine.next_endpoint(&ns, &name).ok_or_else(|| unavailable("it has no Ready replica".into()))?;
        let url = format!("{}{AGENT_CARD_PATH}", endpoint.trim_end_matches('/'));
        let req = hyper::Request::get(&url).body(Full::new(Bytes::new())).map_err(|e| unavailable(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| unavailable(format!("its card at {url} did not answer in 10s")))?
            .map_err(|e| unavailable(format!("reading its card at {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("its card at {url} answered {}", resp.status())));
        }
        let body = resp.into_body().collect().await.map_err(|e| unavailable(e.to_string()))?.to_bytes();
        let card: Value =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("its card at {url} is not JSON: {e}")))?;
        let card = Arc::new(card);
        lock(&self.cards).insert(key, (uid, Instant::now(), card.clone()));
        Ok(card)
    }

    /// A card (an agent's, or the root's) as the gateway serves it: public, as A2A cards are.
    async fn card(&self, route: &Route) -> Response {
        let base = route.base(&self.url);
        let result = match &route.agent {
            Some(name) => match self.routable(&route.namespace, name) {
                Ok(agent) => self.agent_card(&agent).await.map(|card| agent_card_through(&card, &base)),
                Err(e) => Err(e),
            },
            None => Ok(self.root_card(&route.namespace, &base).await),
        };
        match result {
            Ok(card) => wire::json_response(Binding::HttpJson, &Value::Null, card),
            Err(e) => e.respond(Binding::HttpJson, &Value::Null),
        }
    }

    /// The root's card: the skills of the namespace's Ready agents (each tagged with its
    /// agent), both bindings, streaming.
    async fn root_card(&self, namespace: &str, base: &str) -> Value {
        let mut skills = Vec::new();
        for agent in self.engine.ready_agents(namespace) {
            if self.routable(namespace, &agent.name_any()).is_err() {
                continue;
            }
            for skill in self.skills_of(&agent).await {
                skills.push(skill);
            }
        }
        json!({
            "name": format!("a2a gateway ({namespace})"),
            "description": format!(
                "The A2A gateway of this host: a message is routed by the skill named in its metadata key \
                 \"{SKILL_KEY}\" to a Ready agent of namespace \"{namespace}\" with it; each agent is also at \
                 {base}/agents/NAME/."
            ),
            "version": env!("CARGO_PKG_VERSION"),
            "supportedInterfaces": [
                {"url": format!("{base}/"), "protocolBinding": BINDING_JSONRPC, "protocolVersion": "1.0"},
                {"url": base, "protocolBinding": BINDING_HTTP_JSON, "protocolVersion": "1.0"},
            ],
            "capabilities": {"streaming": true},
            "securitySchemes": security_schemes(),
            "securityRequirements": [{"schemes": {"gateway": {"list": []}}}, {"schemes": {"node": {"list": []}}}],
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": skills,
        })
    }

    /// An agent's skills as its card lists them (its declared skill ids when the card cannot
    /// be read), each tagged `agent:NAME`.
    async fn skills_of(&self, agent: &crate::api::Agent) -> Vec<Value> {
        let name = agent.name_any();
        let tag = format!("agent:{name}");
        let from_card = match self.agent_card(agent).await {
            Ok(card) => card.get("skills").and_then(Value::as_array).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut skills: Vec<Value> = if from_card.is_empty() {
            agent.spec.skills.iter().map(|s| json!({"id": s, "name": s, "description": s, "tags": []})).collect()
        } else {
            from_card
        };
        for s in &mut skills {
            if let Some(tags) = s.get_mut("tags").and_then(Value::as_array_mut) {
                tags.push(json!(tag));
            } else if let Some(o) = s.as_object_mut() {
                o.insert("tags".into(), json!([tag]));
            }
        }
        skills
    }

    /// The skills of the namespace's Ready agents: `skill (agent, ...)`, sorted.
    fn skill_list(&self, namespace: &str) -> Vec<(String, Vec<String>)> {
        let mut by_skill: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for agent in self.engine.ready_agents(namespace) {
            let mut skills: Vec<String> = agent.spec.skills.clone();
            if let Some(card) = agent.status.as_ref().and_then(|s| s.card.as_ref()) {
                skills.extend(card.skills.iter().cloned());
            }
            skills.sort();
            skills.dedup();
            for s in skills {
                by_skill.entry(s).or_default().push(agent.name_any());
            }
        }
        by_skill.into_iter().collect()
    }

    /// A request to `/agents/NAME/...`: authorized, admitted when it sends, then forwarded.
    async fn to_agent(
        &self,
        caller: &Caller,
        route: &Route,
        name: &str,
        parts: &axum::http::request::Parts,
        body: Bytes,
        call: &Call,
    ) -> Outcome {
        let ns = &route.namespace;
        let fail = |r: Refusal| (r, name.to_owned());
        self.authorize(caller, call, ns, name).map_err(fail)?;
        let agent = self.routable(ns, name).map_err(fail)?;
        let admitted = match call.sends() {
            true => Some(self.admit(call, ns, Target::Agent(name.to_owned())).await.map_err(fail)?),
            false => None,
        };
        let resp = self.forward(&agent, &route.rest, parts, body, admitted, None).await.map_err(fail)?;
        Ok((resp, name.to_owned()))
    }

    /// Waits for a slot in the dispatch queue.
    async fn admit(&self, call: &Call, namespace: &str, target: Target) -> Result<Admitted, Refusal> {
        let priority = match call.metadata(PRIORITY_KEY) {
            None => Priority::Normal,
            Some(p) => serde_json::from_value(json!(p)).map_err(|_| {
                Refusal::a2a(
                    StatusCode::BAD_REQUEST,
                    -32602,
                    "INVALID_PRIORITY",
                    format!(
                        "message metadata \"{PRIORITY_KEY}\" is \"{p}\": a priority is one of critical, high, normal, low, \
                         background"
                    ),
                )
            })?,
        };
        let request = CallRequest { namespace: namespace.to_owned(), target, priority, wait: self.queue_timeout };
        self.engine.admit_call(request).await.map_err(|e| match e {
            NotAdmitted::Never { reason, message } => {
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_ADMITTED", format!("not admitted: {message}"))
                    .meta("reason", reason)
            }
            e @ NotAdmitted::TimedOut { .. } => {
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_ADMITTED", format!("not admitted: {e}"))
                    .retry_after(1)
            }
            e @ NotAdmitted::Stopped => Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_ADMITTED", e.to_string()),
        })
    }

    /// Sends the request, as it came, to a Ready replica of `agent` at `path` below its
    /// endpoint, with the agent's own token; the answer streams back. The slot `admitted`
    /// holds is given back when the answer ends; `record` learns the task the answer names.
    async fn forward(
        &self,
        agent: &crate::api::Agent,
        path: &str,
        parts: &axum::http::request::Parts,
        body: Bytes,
        admitted: Option<Admitted>,
        record: Option<Record>,
    ) -> Result<Response, Refusal> {
        let (ns, name) = (agent.namespace().unwrap_or_default(), agent.name_any());
        let unavailable = |why: String| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                "AGENT_UNAVAILABLE",
                format!("agent \"{name}\" in namespace \"{ns}\": {why}"),
            )
        };
        let endpoint = self.engine.next_endpoint(&ns, &name).ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AGENT_UNAVAILABLE",
                format!("agent \"{name}\" in namespace \"{ns}\" has no Ready replica"),
            )
            .retry_after(1)
        })?;
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{}{path}{query}", endpoint.trim_end_matches('/'));
        let mut req = hyper::Request::builder().method(parts.method.clone()).uri(&url);
        for (k, v) in &parts.headers {
            if !hop_by_hop(k) && k != header::AUTHORIZATION && k != header::HOST && k != header::CONTENT_LENGTH {
                req = req.header(k, v);
            }
        }
        if let Some(token) = self.agent_token(agent).await {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| unavailable(e.to_string()))?;
        let resp = self.http.request(req).await.map_err(|e| unavailable(format!("{url}: {e}")))?;
        let (mut head, incoming) = resp.into_parts();
        for name in ["connection", "keep-alive", "proxy-authenticate", "trailer", "transfer-encoding", "upgrade"] {
            head.headers.remove(name);
        }
        let mut tap = record.map(Tap::new);
        let mut held = admitted;
        let stream = incoming.into_data_stream().map(move |chunk| {
            if let (Ok(bytes), Some(t)) = (&chunk, tap.as_mut())
                && t.feed(bytes)
            {
                tap = None;
            }
            if chunk.is_err() {
                held.take();
            }
            chunk
        });
        Ok(Response::from_parts(head, Body::from_stream(stream)))
    }

    /// A request to the root: routed by skill (messages) or by task (the task operations).
    async fn at_root(
        &self,
        caller: &Caller,
        route: &Route,
        parts: &axum::http::request::Parts,
        body: Bytes,
        call: &Call,
    ) -> Outcome {
        let ns = &route.namespace;
        let root = |r: Refusal| (r, String::new());
        match call.method.as_str() {
            wire::SEND | wire::STREAM => {
                self.authorize(caller, call, ns, "").map_err(root)?;
                let placement = placement_of(call).map_err(root)?;
                // A message continuing a task goes to the agent that holds it.
                let held = call.task_id.as_deref().and_then(|t| self.routes_get(ns, t));
                // A call another host sent here is never sent on (no loops).
                let from_host = caller.subject.grant == authz::Grant::Node;
                if held.is_none() && !from_host && placement != Placement::Local {
                    match self.to_peer(call, ns, placement).await {
                        Ok(Some(done)) => return Ok(done),
                        Ok(None) => {}
                        Err(r) => return Err(root(r)),
                    }
                }
                let target = match held {
                    Some(agent) => Target::Agent(agent),
                    None => Target::Skill(self.skill_of(call, ns).map_err(root)?),
                };
                let admitted = self.admit(call, ns, target).await.map_err(root)?;
                let name = admitted.agent().to_owned();
                let fail = |r: Refusal| (r, name.clone());
                self.authorize(caller, call, ns, &name).map_err(fail)?;
                let agent = self.routable(ns, &name).map_err(fail)?;
                let path = self.interface_path(&agent, call.binding, &route.rest).await.map_err(fail)?;
                let recorder = self.recorder(ns, &name);
                let resp =
                    self.forward(&agent, &path, parts, body, Some(admitted), Some(recorder)).await.map_err(fail)?;
                Ok((resp, name))
            }
            wire::GET | wire::CANCEL | wire::SUBSCRIBE => {
                let task = call.task_id.clone().unwrap_or_default();
                let name = self.routes_get(ns, &task).ok_or_else(|| {
                    root(Refusal::a2a(
                        StatusCode::NOT_FOUND,
                        -32001,
                        "TASK_NOT_FOUND",
                        format!("task \"{task}\" was not routed through this gateway's root in namespace \"{ns}\" (or is forgotten): ask its agent at /agents/NAME/"),
                    ).meta("taskId", task.clone()))
                })?;
                let fail = |r: Refusal| (r, name.clone());
                self.authorize(caller, call, ns, &name).map_err(fail)?;
                let agent = self.routable(ns, &name).map_err(fail)?;
                let path = self.interface_path(&agent, call.binding, &route.rest).await.map_err(fail)?;
                let resp = self.forward(&agent, &path, parts, body, None, None).await.map_err(fail)?;
                Ok((resp, name))
            }
            wire::LIST => {
                self.authorize(caller, call, ns, "").map_err(root)?;
                Ok((self.list_all(ns, call, parts).await, String::new()))
            }
            wire::EXTENDED_CARD => {
                self.authorize(caller, call, ns, "").map_err(root)?;
                let card = self.root_card(ns, &route.base(&self.url)).await;
                Ok((wire::json_response(call.binding, &call.id, card), String::new()))
            }
            other => Err(root(Refusal::a2a(
                StatusCode::NOT_FOUND,
                -32601,
                "METHOD_NOT_FOUND",
                format!("the gateway's root does not serve {other}: send it to an agent at /agents/NAME/"),
            ))),
        }
    }

    /// A message to the root whose placement lets it leave the host: sent to a joined peer's
    /// gateway root (the same peer choice, breakers and mutual TLS as remote tasks) when
    /// placement is `lan`, or `any` with no Ready agent here that has the skill. `None`: it
    /// stays here (no peer can take it, or the peer failed and an agent here has the skill).
    async fn to_peer(
        &self,
        call: &Call,
        ns: &str,
        placement: Placement,
    ) -> Result<Option<(Response, String)>, Refusal> {
        let Some(skill) = call.metadata(SKILL_KEY) else { return Ok(None) };
        let Some(remote) = self.engine.remote() else { return Ok(None) };
        if ns != REMOTE_NAMESPACE {
            return Ok(None);
        }
        let here = self.skill_list(ns).iter().any(|(s, _)| s == skill);
        if placement == Placement::Any && here {
            return Ok(None);
        }
        if call.method == wire::STREAM {
            if here {
                return Ok(None);
            }
            return Err(Refusal::a2a(
                StatusCode::BAD_REQUEST,
                -32004,
                "STREAMING_TO_PEER_UNSUPPORTED",
                format!(
                    "no Ready agent here has skill \"{skill}\", and a streaming message is not sent to a peer: send \
                     it with SendMessage (message:send)"
                ),
            ));
        }
        let message: crate::a2a::types::Message =
            serde_json::from_value(call.params.get("message").cloned().unwrap_or(Value::Null)).map_err(|e| {
                Refusal::a2a(
                    StatusCode::BAD_REQUEST,
                    -32602,
                    "INVALID_MESSAGE",
                    format!("the message is not valid: {e}"),
                )
            })?;
        let Some(node) = remote.pick(skill) else { return Ok(None) };
        let opts = crate::a2a::client::FollowOptions { return_immediately: false, ..Default::default() };
        match remote.send(&node, skill, message, &opts, std::future::pending()).await {
            Ok(Ok(answer)) => {
                let result = serde_json::to_value(&answer).unwrap_or(Value::Null);
                let agent = format!("{}{node}", crate::controller::engine::remote::PEER_PREFIX);
                Ok(Some((wire::json_response(call.binding, &call.id, result), agent)))
            }
            Ok(Err(e)) => Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "PEER_UNANSWERED",
                format!("peer {node}, skill \"{skill}\": {e}"),
            )),
            Err(f) if here => {
                tracing::warn!(peer = %f.node, error = %f.error, %skill, "a peer failed a gateway call: an agent here takes it");
                Ok(None)
            }
            Err(f) => Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "PEER_FAILED",
                format!("{f}; no Ready agent here has skill \"{skill}\""),
            )),
        }
    }

    fn routes_get(&self, namespace: &str, task: &str) -> Option<String> {
        lock(&self.routes).get(namespace, task)
    }

    fn recorder(&self, namespace: &str, agent: &str) -> Record {
        let (routes, ns, agent) = (self.routes.clone(), namespace.to_owned(), agent.to_owned());
        Box::new(move |task| lock(&routes).insert(&ns, task, &agent))
    }

    /// The skill a message to the root names, or the invalid-params error that lists them.
    fn skill_of(&self, call: &Call, namespace: &str) -> Result<String, Refusal> {
        let skills = self.skill_list(namespace);
        let listed = if skills.is_empty() {
            "none (no agent is Ready)".to_owned()
        } else {
            skills.iter().map(|(s, agents)| format!("{s} ({})", agents.join(", "))).collect::<Vec<_>>().join(", ")
        };
        let names: Vec<String> = skills.iter().map(|(s, _)| s.clone()).collect();
        let refuse = |why: String| {
            Refusal::a2a(
                StatusCode::BAD_REQUEST,
                -32602,
                "SKILL_REQUIRED",
                format!("{why}; the skills here are: {listed}"),
            )
            .meta("skills", names.join(","))
        };
        match call.metadata(SKILL_KEY) {
            None => Err(refuse(format!(
                "a message sent to the gateway's root must name the skill it wants in its metadata key \"{SKILL_KEY}\""
            ))),
            Some(s) if !skills.iter().any(|(k, _)| k == s) => {
                Err(refuse(format!("no Ready agent in namespace \"{namespace}\" has skill \"{s}\"")))
            }
            Some(s) => Ok(s.to_owned()),
        }
    }

    /// Where the agent serves `binding`, with the root's `rest` below it.
    async fn interface_path(&self, agent: &crate::api::Agent, binding: Binding, rest: &str) -> Result<String, Refusal> {
        let card = self.agent_card(agent).await?;
        let want = match binding {
            Binding::JsonRpc => BINDING_JSONRPC,
            Binding::HttpJson => BINDING_HTTP_JSON,
        };
        let path = card
            .get("supportedInterfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("protocolBinding").and_then(Value::as_str).is_some_and(|b| b.eq_ignore_ascii_case(want)))
            .and_then(|i| i.get("url").and_then(Value::as_str))
            .map(url_path)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "BINDING_NOT_SERVED",
                    format!("agent \"{}\" does not serve the {want} binding: call it over another", agent.name_any()),
                )
            })?;
        Ok(match binding {
            Binding::JsonRpc => path,
            Binding::HttpJson => format!("{}{rest}", path.trim_end_matches('/')),
        })
    }

    /// `ListTasks` at the root: every Ready agent's list (over JSON-RPC, with the caller's
    /// parameters), merged newest first. Agents that do not list are left out.
    async fn list_all(&self, namespace: &str, call: &Call, parts: &axum::http::request::Parts) -> Response {
        let mut params = match call.binding {
            Binding::JsonRpc => call.params.clone(),
            Binding::HttpJson => query_params(parts.uri.query().unwrap_or_default()),
        };
        if let Some(o) = params.as_object_mut() {
            o.remove("pageToken");
        } else {
            params = json!({});
        }
        let page = params.get("pageSize").and_then(Value::as_u64).unwrap_or(50).clamp(1, 100) as usize;
        let mut tasks: Vec<Value> = Vec::new();
        for agent in self.engine.ready_agents(namespace) {
            if self.routable(namespace, &agent.name_any()).is_err() {
                continue;
            }
            let Ok(path) = self.interface_path(&agent, Binding::JsonRpc, "/").await else { continue };
            let Some(endpoint) = self.engine.next_endpoint(namespace, &agent.name_any()) else { continue };
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": wire::LIST, "params": params});
            let mut req = hyper::Request::post(format!("{}{path}", endpoint.trim_end_matches('/')))
                .header(header::CONTENT_TYPE, "application/json")
                .header(crate::a2a::types::VERSION_HEADER, "1.0");
            if let Some(token) = self.agent_token(&agent).await {
                req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else { continue };
            let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), self.http.request(req)).await else {
                continue;
            };
            let Ok(bytes) = resp.into_body().collect().await.map(|b| b.to_bytes()) else { continue };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { continue };
            for t in v.pointer("/result/tasks").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = t.get("id").and_then(Value::as_str) {
                    lock(&self.routes).insert(namespace, id, &agent.name_any());
                }
                tasks.push(t.clone());
            }
        }
        let stamp = |t: &Value| t.pointer("/status/timestamp").and_then(Value::as_str).unwrap_or_default().to_owned();
        tasks.sort_by_key(|t| std::cmp::Reverse(stamp(t)));
        let total = tasks.len();
        tasks.truncate(page);
        let result = json!({"tasks": tasks, "nextPageToken": "", "pageSize": page, "totalSize": total});
        wire::json_response(call.binding, &call.id, result)
    }
}

/// Headers that belong to one connection, not to the request.
/// The placement a message to the root names in its metadata key [`PLACEMENT_KEY`]:
/// `local` (the default), `lan` or `any`.
fn placement_of(call: &Call) -> Result<Placement, Refusal> {
    let given = call.params.get("message").and_then(|m| m.get("metadata")).and_then(|m| m.get(PLACEMENT_KEY));
    match given {
        None => Ok(Placement::Local),
        Some(Value::String(s)) if s == "local" => Ok(Placement::Local),
        Some(Value::String(s)) if s == "lan" => Ok(Placement::Lan),
        Some(Value::String(s)) if s == "any" => Ok(Placement::Any),
        Some(other) => Err(Refusal::a2a(
            StatusCode::BAD_REQUEST,
            -32602,
            "INVALID_PLACEMENT",
            format!("message metadata \"{PLACEMENT_KEY}\" is {other}: a placement is one of local, lan, any"),
        )),
    }
}

fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The path (and query) of a URL, or the URL itself when it is a path.
fn url_path(url: &str) -> String {
    if url.starts_with('/') {
        return url.to_owned();
    }
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        .unwrap_or_else(|| "/".into())
}

/// How callers authenticate to the gateway, for its cards.
fn security_schemes() -> Value {
    json!({
        "gateway": {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "a user's token (a2a user create), the administrator's, or an agent's $A2A_GATEWAY_TOKEN",
        }},
        "node": {"mtlsSecurityScheme": {
            "description": "a host of the same cluster: its node certificate, issued by the cluster's CA",
        }},
    })
}

/// An agent's card as seen through the gateway at `base`: every interface URL keeps its
/// path below the gateway's endpoint for the agent, and the security is the gateway's.
fn agent_card_through(card: &Value, base: &str) -> Value {
    let mut card = card.clone();
    if let Some(interfaces) = card.get_mut("supportedInterfaces").and_then(Value::as_array_mut) {
        for i in interfaces {
            if let Some(url) = i.get("url").and_then(Value::as_str) {
                let path = url_path(url);
                i["url"] = json!(format!("{base}{path}"));
            }
        }
    }
    if let Some(o) = card.as_object_mut() {
        o.insert("securitySchemes".into(), security_schemes());
        o.insert("securityRequirements".into(), json!([{"schemes": {"gateway": {"list": []}}}]));
        o.remove("security");
        o.remove("signatures");
    }
    card
}

/// An HTTP+JSON query (`contextId=x&pageSize=2`) as JSON-RPC params: numbers and booleans as
/// such, the rest as text.
fn query_params(query: &str) -> Value {
    let mut o = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        let value = match (v.parse::<u64>(), v.as_str()) {
            (Ok(n), _) => json!(n),
            (_, "true") => json!(true),
            (_, "false") => json!(false),
            _ => json!(v),
        };
        o.insert(k.to_owned(), value);
    }
    Value::Object(o)
}

/// Reads an answer as it streams by, until the task it names is known: a JSON body whole, an
/// SSE stream up to its first event; at most 1 MiB is looked at.
struct Tap {
    seen: Vec<u8>,
    record: Record,
}

impl Tap {
    fn new(record: Record) -> Tap {
        Tap { seen: Vec::new(), record }
    }

    /// Takes a chunk; true once the tap is done (the task is recorded, or will not be).
    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.seen.extend_from_slice(chunk);
        if self.seen.len() > 1 << 20 {
            return true;
        }
        let text = String::from_utf8_lossy(&self.seen);
        // An SSE stream: each complete event's data lines.
        if text.trim_start().starts_with("data:")
            || text.contains("\ndata:")
            || text.starts_with("event:")
            || text.starts_with(':')
        {
            for event in text.split("\n\n").filter(|e| !e.is_empty()) {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if let Ok(v) = serde_json::from_str::<Value>(&data)
                    && let Some(id) = wire::task_id_of(&v)
                {
                    (self.record)(&id);
                    return true;
                }
            }
            return false;
        }
        match serde_json::from_slice::<Value>(&self.seen) {
            Ok(v) => {
                if let Some(id) = wire::task_id_of(&v) {
                    (self.record)(&id);
                }
                true
            }
            Err(e) if e.is_eof() => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_the_namespace_the_agent_and_what_is_below() {
        let r = |p: &str| Route::parse(p).unwrap();
        assert_eq!(r("/"), Route { namespace: "default".into(), agent: None, rest: "/".into() });
        assert_eq!(
            r("/agents/echo/"),
            Route { namespace: "default".into(), agent: Some("echo".into()), rest: "/".into() }
        );
        assert_eq!(
            r("/agents/echo"),
            Route { namespace: "default".into(), agent: Some("echo".into()), rest: "/".into() }
        );
        assert_eq!(
            r("/namespaces/team-a/agents/w/tasks/1:cancel"),
            Route { namespace: "team-a".into(), agent: Some("w".into()), rest: "/tasks/1:cancel".into() }
        );
        assert_eq!(r("/namespaces/team-a/message:send").rest, "/message:send");
        assert!(Route::parse("/agents/Bad_Name/").unwrap_err().contains("not an agent name"));
        assert!(Route::parse("/namespaces//agents/x").is_err());
        assert_eq!(r("/namespaces/team-a/agents/w").base("https://g"), "https://g/namespaces/team-a/agents/w");
        assert_eq!(r("/agents/w/").base("https://g"), "https://g/agents/w");
    }

    #[test]
    fn an_agents_card_through_the_gateway_names_the_gateway() {
        let card = json!({"supportedInterfaces": [
            {"url": "http://127.0.0.1:9/", "protocolBinding": "JSONRPC"},
            {"url": "http://127.0.0.1:9/v1", "protocolBinding": "HTTP+JSON"},
        ], "securitySchemes": {"own": {}}});
        let c = agent_card_through(&card, "https://127.0.0.1:7444/agents/echo");
        assert_eq!(c["supportedInterfaces"][0]["url"], "https://127.0.0.1:7444/agents/echo/");
        assert_eq!(c["supportedInterfaces"][1]["url"], "https://127.0.0.1:7444/agents/echo/v1");
        assert!(c["securitySchemes"].get("own").is_none(), "the agent's own token never leaves the gateway");
    }

    #[test]
    fn the_tap_finds_the_task_in_a_body_or_the_first_event_of_a_stream() {
        let found = Arc::new(Mutex::new(Vec::<String>::new()));
        let tap = |found: &Arc<Mutex<Vec<String>>>| {
            let f = found.clone();
            Tap::new(Box::new(move |id| lock(&f).push(id.to_owned())))
        };
        let mut t = tap(&found);
        assert!(!t.feed(br#"{"jsonrpc":"2.0","result":{"task":{"id":"#));
        assert!(t.feed(br#""t1","status":{}}}}"#));
        let mut t = tap(&found);
        assert!(!t.feed(b"data: {\"result\": {\"task\": {\"id\""));
        assert!(t.feed(b": \"t2\"}}}\n\ndata: {}\n\n"));
        assert_eq!(*lock(&found), ["t1", "t2"]);
        let mut t = tap(&found);
        assert!(t.feed(b"not json"), "an answer that is not JSON ends the tap");
    }

    #[test]
    fn the_routes_table_forgets_the_oldest_task_first() {
        let mut r = Routes::default();
        for i in 0..ROUTES_KEPT + 2 {
            r.insert("default", &i.to_string(), "a");
        }
        assert_eq!(r.get("default", "0"), None);
        assert_eq!(r.get("default", "1"), None);
        assert_eq!(r.get("default", "2").as_deref(), Some("a"));
        assert_eq!(r.agents.len(), ROUTES_KEPT);
    }

    #[test]
    fn a_query_becomes_params() {
        assert_eq!(
            query_params("contextId=a%20b&pageSize=2&includeArtifacts=true"),
            json!({"contextId": "a b", "pageSize": 2, "includeArtifacts": true})
        );
    }

    #[test]
    fn a_placement_is_local_by_default_and_an_unknown_one_is_refused_by_name() {
        let call = |meta: Value| {
            let body =
                json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"metadata": meta}}});
            Call::read(&Method::POST, "/", body.to_string().as_bytes())
        };
        assert_eq!(placement_of(&call(json!({}))).ok(), Some(Placement::Local));
        assert_eq!(placement_of(&call(json!({PLACEMENT_KEY: "lan"}))).ok(), Some(Placement::Lan));
        assert_eq!(placement_of(&call(json!({PLACEMENT_KEY: "any"}))).ok(), Some(Placement::Any));
        let Err(refused) = placement_of(&call(json!({PLACEMENT_KEY: "nearby"}))) else { panic!("accepted") };
        assert_eq!(refused.rpc_code, Some(-32602));
        assert!(refused.message.contains("\"nearby\""), "{}", refused.message);
    }
}
