//! Connecting to a control plane (the local `a2a serve` or any Kubernetes cluster) and the
//! resource names users type (`agents`, `agent`, `ag`...).

use std::path::PathBuf;

use clap::Args;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::api::{API_VERSION, GROUP, Kind, VERSION};

/// Errors of the client-side verbs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no a2a control plane: {path} does not exist; start one with `a2a serve` (or pass --kubeconfig for a cluster)"
    )]
    NoKubeconfig { path: String },
    #[error("cannot use kubeconfig {path}: {message}")]
    BadKubeconfig { path: String, message: String },
    #[error("cannot reach the control plane at {url}: {message}; is `a2a serve` running? Start it with `a2a serve`")]
    Unreachable { url: String, message: String },
    #[error("the server has no resource type {0:?}; a2a knows agents (ag), workflows (wf), resourcebudgets (rb)")]
    UnknownResource(String),
    #[error("{kind} {name:?} not found{}", namespace.as_ref().map(|n| format!(" in namespace {n:?}")).unwrap_or_default())]
    NotFound { kind: Kind, name: String, namespace: Option<String> },
    #[error("{0}")]
    Api(String),
    #[error("{0}")]
    Usage(String),
    #[error("invalid manifests:\n{0}")]
    Invalid(String),
    #[error("timed out after {0:?} {1}")]
    Timeout(std::time::Duration, String),
    /// A command that changes several objects stopped at `source`: `done` were changed before
    /// it (printed first, as kubectl does).
    #[error("{source}")]
    Partial {
        done: Vec<String>,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Turns a kube error into one a person can act on, with the server's Status message.
    pub fn from_kube(e: kube::Error, url: &str) -> Self {
        match e {
            kube::Error::Api(status) => Error::Api(format!(
                "Error from server ({}): {}",
                if status.reason.is_empty() { status.code.to_string() } else { status.reason.clone() },
                status.message
            )),
            kube::Error::HyperError(e) => Error::Unreachable { url: url.to_owned(), message: root_cause(&e) },
            kube::Error::Service(e) => Error::Unreachable { url: url.to_owned(), message: root_cause(e.as_ref()) },
            other => Error::Api(other.to_string()),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `--kubeconfig`, `--context`: which control plane to talk to.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The kubeconfig to use [default: $A2A_HOME/kubeconfig, written by `a2a serve`].
    #[arg(long, global = true, env = "A2A_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use [default: its current context].
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// `$A2A_HOME`, or `~/.a2a`.
pub fn a2a_home() -> PathBuf {
    if let Some(h) = std::env::var_os("A2A_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".a2a")
}

/// A connected client and the namespace its context selects.
pub struct Connection {
    pub client: Client,
    pub namespace: String,
    pub url: String,
}

impl ConnectArgs {
    pub async fn connect(&self) -> Result<Connection> {
        let path = self.kubeconfig.clone().unwrap_or_else(|| a2a_home().join("kubeconfig"));
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(Error::NoKubeconfig { path: shown });
        }
        let kubeconfig = Kubeconfig::read_from(&path)
            .map_err(|e| Error::BadKubeconfig { path: shown.clone(), message: root_cause(&e) })?;
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::BadKubeconfig { path: shown.clone(), message: root_cause(&e) })?;
        let url = config.cluster_url.to_string();
        let namespace = config.default_namespace.clone();
        let client =
            Client::try_from(config).map_err(|e| Error::BadKubeconfig { path: shown, message: root_cause(&e) })?;
        // One cheap request, so "nothing is listening" is said once and plainly.
        client.apiserver_version().await.map_err(|e| Error::from_kube(e, &url))?;
        Ok(Connection { client, namespace, url })
    }
}

/// Resolves what users type (`agents`, `agent`, `ag`, `Agent`, `agents.a2a.dev`) to a kind.
pub fn resolve_kind(word: &str) -> Result<Kind> {
    let w = word.to_ascii_lowercase();
    let w = w.strip_suffix(&format!(".{GROUP}")).unwrap_or(&w);
    Ok(match w {
        "agent" | "agents" | "ag" => Kind::Agent,
        "workflow" | "workflows" | "wf" => Kind::Workflow,
        "resourcebudget" | "resourcebudgets" | "rb" | "budget" | "budgets" => Kind::ResourceBudget,
        _ => return Err(Error::UnknownResource(word.to_owned())),
    })
}

/// The dynamic API resource of a kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource {
        group: GROUP.to_owned(),
        version: VERSION.to_owned(),
        api_version: API_VERSION.to_owned(),
        kind: kind.as_str().to_owned(),
        plural: kind.plural().to_owned(),
    }
}

/// The API for `kind` in `namespace` (`None`: all namespaces, or cluster-scoped).
pub fn dynamic_api(client: &Client, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource(kind);
    match (kind.namespaced(), namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// The API of a core `v1` Secret or ConfigMap in `namespace`.
pub fn config_api(client: &Client, kind: crate::api::manifest::ConfigKind, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: String::new(),
        version: "v1".to_owned(),
        api_version: "v1".to_owned(),
        kind: kind.as_str().to_owned(),
        plural: kind.plural().to_owned(),
    };
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Runs a client verb's future on a fresh current-thread runtime (the CLI is synchronous at
/// the top). Its requests go one after another: on one thread, kube-rs's buffer task, the
/// connection task and the verb wake each other without a thread switch, where a thread pool
/// made every request hop between three threads (about half of a local `get`'s latency).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    run_on(tokio::runtime::Builder::new_current_thread(), f)
}

/// Runs a future on a fresh multi-thread runtime: for verbs that run a control plane.
pub fn block_on_multi_thread<F: std::future::Future>(f: F) -> F::Output {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    run_on(builder, f)
}

fn run_on<F: std::future::Future>(mut builder: tokio::runtime::Builder, f: F) -> F::Output {
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}
