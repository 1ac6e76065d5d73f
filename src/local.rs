//! Local mode wiring: the API server, the node (agents under cgroups) and the workflow
//! engine in one process — what `a2a serve` runs as a daemon and `a2a run` embeds.

use std::path::PathBuf;
use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

use crate::apiserver::{Server, ServerConfig, ServerHandle};
use crate::controller::engine::{Engine, EngineConfig};
use crate::node::cgroup::unenforced::Unenforced;
use crate::node::cgroup::{self, CgroupDriver, CgroupLimits, Layout};
use crate::node::ownership::{self, Ownership};
use crate::node::supervisor::{Node, NodeConfig, StdioTasks};

/// Why the local control plane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Server(#[from] crate::apiserver::Error),
    #[error("reading {}: {source}", path.display())]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {}: {source}", path.display())]
    LoadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Ownership(#[from] ownership::Error),
    #[error(
        "{0}. a2a needs to manage cgroups to enforce agent limits: run as root or in a delegated cgroup, \
         or pass --allow-unenforced to run agents without limits"
    )]
    CgroupsUnavailable(#[source] CgroupsUnavailable),
    #[error(
        "this process is not the a2a binary: set LocalOptions::a2a_exe to it \
         (it runs the agents' log relays and `a2a …` agents)"
    )]
    NotTheA2aBinary,
    #[error(transparent)]
    Discovery(#[from] crate::discovery::Error),
    #[error(transparent)]
    LogRelay(#[from] crate::node::logs::Error),
    #[error(transparent)]
    Gateway(#[from] crate::gateway::Error),
    #[error("creating the run's state directory {}: {source}", dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why cgroups cannot be managed here (agents then run unenforced only when allowed to).
#[derive(Debug, thiserror::Error)]
pub enum CgroupsUnavailable {
    #[error("cannot use cgroups at {}: {source}", root.display())]
    Detect {
        root: PathBuf,
        #[source]
        source: cgroup::Error,
    },
    #[error("no permission to create cgroups under {}", root.display())]
    PermissionDenied { root: PathBuf },
    #[error("cannot create the a2a cgroup: {0}")]
    Top(#[source] cgroup::Error),
}

/// How to run the local control plane.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The control plane's home: agent logs go under it, and it names the control plane as
    /// the owner of its cgroup top.
    pub home: PathBuf,
    /// Keep the API server's state (store, certificates, kubeconfig, audit log) in a
    /// directory of this run's own, `<home>/runs/<pid>`, removed when it stops, instead of in
    /// `home` (`a2a run`: it starts only what its files declare, never what earlier runs or a
    /// daemon of the same home left in the store).
    pub scoped_state: bool,
    /// 0 picks a free port.
    pub port: u16,
    pub cgroup_root: PathBuf,
    /// The top cgroup directory (`a2a`).
    pub cgroup_top: String,
    /// Run agents without kernel limits when cgroups cannot be managed.
    pub allow_unenforced: bool,
    /// Stop the agents when the control plane stops (`a2a run`), instead of leaving them for
    /// the next daemon to adopt (`a2a serve`).
    pub stop_agents_on_exit: bool,
    /// The binary `command: ["a2a", ...]` runs (default: this process's executable).
    pub a2a_exe: Option<PathBuf>,
    /// The agents' log relay program (`a2a serve --log-relay`); default: `a2a-log-relay`
    /// beside the a2a binary, else the a2a binary itself (see
    /// [`RelayProgram::find`](crate::node::logs::RelayProgram::find)).
    pub log_relay: Option<PathBuf>,
    /// Run the node controller and the workflow engine; `false` serves the API only.
    pub controllers: bool,
    /// The wait before the second restart in a row of an agent replica (the first comes at
    /// once; doubles per further exit).
    pub restart_backoff: std::time::Duration,
    /// The cap and number of each agent replica's log files.
    pub log_limits: crate::node::logs::LogLimits,
    /// Bytes the store keeps in reserve for a full disk.
    pub store_reserve_bytes: u64,
    /// When the audit log is rotated and how many rotated files are kept.
    pub audit_rotation: crate::apiserver::audit::Rotation,
    /// The API server's cap on connections and its timeouts.
    pub connections: crate::apiserver::conn::ConnectionLimits,
    /// The address served on (`a2a serve --listen`, default 127.0.0.1): the API server binds
    /// to it, and so does the host's A2A gateway (see [`ControlPlane::listen_ip`]).
    pub listen: std::net::IpAddr,
    /// This host's name among its peers (default: the host name's first label).
    pub node_name: Option<String>,
    /// Advertise and browse by mDNS when `listen` is not loopback ([`crate::discovery`]);
    /// `false` turns it off (`--no-mdns`).
    pub mdns: bool,
    /// Run the host's A2A gateway (with the controllers only); `None`: no gateway.
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

impl LocalOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        LocalOptions {
            home: home.into(),
            scoped_state: false,
            port: crate::apiserver::DEFAULT_PORT,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_top: "a2a".into(),
            allow_unenforced: false,
            stop_agents_on_exit: false,
            a2a_exe: None,
            log_relay: None,
            controllers: true,
            restart_backoff: std::time::Duration::from_secs(1),
            log_limits: crate::node::logs::LogLimits::default(),
            store_reserve_bytes: crate::apiserver::reserve::DEFAULT_BYTES,
            audit_rotation: crate::apiserver::audit::Rotation::default(),
            connections: crate::apiserver::conn::ConnectionLimits::default(),
            listen: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            node_name: None,
            mdns: true,
            gateway: None,
        }
    }

    /// Whether mDNS discovery runs: asked for, and `listen` is not loopback.
    pub fn discovery_wanted(&self) -> bool {
        self.mdns && crate::discovery::wanted(self.listen)
    }

    /// The node name, checked: `--node-name`, else the host name (which must then be a valid
    /// node name only when discovery needs it).
    fn checked_node_name(&self) -> Result<Option<String>, Error> {
        match &self.node_name {
            Some(n) => {
                crate::discovery::check_node_name(n)?;
                Ok(Some(n.clone()))
            }
            None if self.discovery_wanted() => Ok(Some(crate::discovery::default_node_name()?)),
            None => Ok(crate::discovery::default_node_name().ok()),
        }
    }

    /// The API server's configuration, its state kept under `home`.
    fn server_config(&self, home: &std::path::Path) -> ServerConfig {
        ServerConfig::new(home)
            .port(self.port)
            .store_reserve_bytes(self.store_reserve_bytes)
            .audit_rotation(self.audit_rotation)
            .connections(self.connections.clone())
            .bind(self.listen)
            .agent_finalizer(self.controllers.then_some(crate::node::deletion::PROCESSES_FINALIZER))
    }
}

/// A running local control plane.
pub struct ControlPlane {
    pub server: ServerHandle,
    pub client: kube::Client,
    /// Whether the kernel enforces agent limits (false only with `--allow-unenforced`).
    pub enforced: bool,
    pub cgroup_version: Option<cgroup::CgroupVersion>,
    /// The A2A gateway's URL, when it runs.
    pub gateway_url: Option<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The cgroup top this control plane owns, released once its node has stopped.
    ownership: Option<Ownership>,
    /// The run's own state directory, removed at the end (see [`LocalOptions::scoped_state`]).
    scoped_state: Option<PathBuf>,
    /// The hosts mDNS found (empty when discovery is off).
    pub peers: Arc<crate::discovery::peers::PeerTable>,
    /// This host's node name (None: no valid host name and none given).
    pub node_name: Option<String>,
    discovery: Option<crate::discovery::Discovery>,
}

/// Picks the cgroup driver, proves it can create the top cgroup and takes ownership of the
/// top (refused, in one line naming the owner, when another control plane owns it); without
/// permission, says so once and stops, unless unenforced running is allowed.
pub fn cgroup_driver(opts: &LocalOptions) -> Result<(Arc<dyn CgroupDriver>, bool, Ownership), Error> {
    let (driver, enforced) = usable_driver(opts)?;
    let layout = Layout::with_top(&opts.cgroup_top)?;
    let kind = if opts.stop_agents_on_exit { ownership::Kind::Run } else { ownership::Kind::Serve };
    let owned = ownership::claim(driver.as_ref(), &layout.top(), ownership::Owner::me(&opts.home, kind))?;
    Ok((driver, enforced, owned))
}

fn usable_driver(opts: &LocalOptions) -> Result<(Arc<dyn CgroupDriver>, bool), Error> {
    let layout = Layout::with_top(&opts.cgroup_top)?;
    let refuse = |why: CgroupsUnavailable| {
        if opts.allow_unenforced {
            tracing::warn!("{why}; running agents WITHOUT kernel-enforced limits (--allow-unenforced)");
            Ok((Arc::new(Unenforced) as Arc<dyn CgroupDriver>, false))
        } else {
            Err(Error::CgroupsUnavailable(why))
        }
    };
    let root = || opts.cgroup_root.clone();
    let driver: Arc<dyn CgroupDriver> = match cgroup::detect(&opts.cgroup_root) {
        Ok(d) => Arc::from(d),
        Err(source) => return refuse(CgroupsUnavailable::Detect { root: root(), source }),
    };
    match driver.ensure(&layout.top(), &CgroupLimits::default()) {
        Ok(()) => Ok((driver, true)),
        Err(e) if e.is_permission_denied() => refuse(CgroupsUnavailable::PermissionDenied { root: root() }),
        Err(e) => refuse(CgroupsUnavailable::Top(e)),
    }
}

/// The control plane's own client of its API server: one HTTP/2 connection carries every
/// watch and write of the node and the engine. Over HTTP/1.1 each open watch held a
/// connection of its own, and each burst of status writes left more in the pool: ~40
/// connections at 500 agents, each with its TLS and HTTP buffers on both ends (~3 MB).
async fn client_for(kubeconfig: &std::path::Path) -> Result<kube::Client, Error> {
    use kube::client::ConfigExt;
    let path = || kubeconfig.to_owned();
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|source| Error::ReadKubeconfig { path: path(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::LoadKubeconfig { path: path(), source })?;
    let tls = config.rustls_client_config().map_err(Error::Client)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    // The server pings every 30 s; a connection that stops answering is given up as soon.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .http2_keep_alive_timeout(std::time::Duration::from_secs(15))
        .build(https);
    // As kube's own stack: the base URL, retries of 429/503/504, the token.
    let retry =
        config.default_retry.then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(Error::Client)?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

impl ControlPlane {
    /// Starts the API server, the node and the engine.
    pub async fn start(opts: LocalOptions) -> Result<ControlPlane, Error> {
        // The daemon's heap (`a2a serve` does this before its runtime starts; `a2a run` and
        // embedders get it here, for the arenas not created yet).
        crate::node::limit_malloc_arenas();
        // Checked before anything is started or written.
        let node_name = opts.checked_node_name()?;
        let peers = Arc::new(crate::discovery::peers::PeerTable::default());
        if !opts.controllers {
            let server = Server::start(opts.server_config(&opts.home).peers(peers.clone())).await?;
            let client = client_for(server.kubeconfig()).await?;
            let discovery = match start_discovery(&opts, &server, &client, &peers, node_name.as_deref()).await {
                Ok(d) => d,
                Err(e) => {
                    server.shutdown().await;
                    return Err(e);
                }
            };
            let (stop, _) = watch::channel(false);
            return Ok(ControlPlane {
                server,
                client,
                enforced: false,
                cgroup_version: None,
                gateway_url: None,
                stop,
                tasks: Vec::new(),
                ownership: None,
                scoped_state: None,
                peers,
                node_name,
                discovery,
            });
        }
        // The agents' log relay, chosen once (before anything is started: a `--log-relay`
        // that cannot be used changes nothing).
        let log_relay = match opts.a2a_exe.is_some() || running_binary_is_a2a() {
            true => Some(crate::node::logs::RelayProgram::find(opts.a2a_exe.as_deref(), opts.log_relay.as_deref())?),
            false => None,
        };
        let (driver, enforced, owned) = cgroup_driver(&opts)?;
        let scoped_state = if opts.scoped_state { Some(scoped_state_dir(&opts.home)?) } else { None };
        let state_home = scoped_state.clone().unwrap_or_else(|| opts.home.clone());
        // The gateway's port before anything is started or written: a port in use is refused
        // with the home as it was. It serves on the control plane's own address (`--listen`).
        let bound = match &opts.gateway {
            Some(gc) => Some(
                crate::gateway::Bound::bind(&crate::gateway::GatewayConfig { bind: opts.listen, ..gc.clone() }).await?,
            ),
            None => None,
        };
        let server = Server::start(opts.server_config(&state_home).peers(peers.clone())).await?;
        let client = client_for(server.kubeconfig()).await?;
        let discovery = match start_discovery(&opts, &server, &client, &peers, node_name.as_deref()).await {
            Ok(d) => d,
            Err(e) => {
                server.shutdown().await;
                return Err(e);
            }
        };
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut config = NodeConfig::new(&opts.home);
        config.layout = Layout::with_top(&opts.cgroup_top)?;
        config.enforced = enforced;
        config.stop_on_shutdown = opts.stop_agents_on_exit;
        match &opts.a2a_exe {
            Some(exe) => config.a2a_exe = exe.clone(),
            // The log relays (and `a2a …` agents) re-execute this process's binary: an
            // embedder that is not the a2a binary would start itself once per replica.
            None if !running_binary_is_a2a() => return Err(Error::NotTheA2aBinary),
            None => {}
        }
        if let Some(program) = log_relay {
            config.log_relay = program;
        }
        config.restart_backoff = opts.restart_backoff;
        config.log_limits = opts.log_limits;
        config.external_url = server.url();
        // The gateway's URL and token key before the node: the agents are told them.
        let gateway = match (bound, &opts.gateway) {
            (Some(bound), Some(gc)) => {
                bound.write_url(&state_home)?;
                let key = crate::gateway::token::TokenKey::load_or_create(&state_home)
                    .map_err(crate::gateway::Error::from)?;
                let front = server.front_door().clone();
                let ca_pem = std::fs::read(&front.ca_path).unwrap_or_default();
                config.gateway = Some(crate::gateway::AgentAccess {
                    url: bound.url(),
                    ca_pem,
                    ca_path: front.ca_path.clone(),
                    key: key.clone(),
                });
                Some((bound, gc.clone(), key, front))
            }
            _ => None,
        };
        let version = enforced.then(|| driver.version());
        let (node, runner) = Node::new(client.clone(), driver, config);
        // Remote work needs discovery (to find peers) and this host's node identity.
        let remote = match (&discovery, &node_name) {
            (Some(_), Some(n)) => Some(crate::discovery::remote::RemoteWork::new(
                n,
                state_home.clone(),
                peers.clone(),
                Some(server.front_door().audit.clone()),
            )),
            _ => None,
        };
        let engine = Engine::new(
            client.clone(),
            EngineConfig {
                stdio: Some(StdioTasks::new(node) as Arc<_>),
                remote: remote.clone(),
                ..EngineConfig::default()
            },
        );
        let mut gateway_url = None;
        let mut tasks = Vec::new();
        if let Some((bound, gc, key, front)) = gateway {
            gateway_url = Some(bound.url());
            tasks.push(crate::gateway::serve(bound, &gc, engine.clone(), front, key, stop_rx.clone())?);
        }
        if let Some(r) = remote {
            tasks.push(tokio::spawn(r.run(stop_rx.clone())));
        }
        tasks.push(tokio::spawn(runner.run(stopped(stop_rx.clone()))));
        tasks.push(tokio::spawn(engine.run(stopped(stop_rx))));
        Ok(ControlPlane {
            server,
            client,
            enforced,
            cgroup_version: version,
            gateway_url,
            stop,
            tasks,
            ownership: Some(owned),
            scoped_state,
            peers,
            node_name,
            discovery,
        })
    }

    /// The address the control plane serves on (`--listen`): the host's A2A gateway binds
    /// its own listener to this address too.
    pub fn listen_ip(&self) -> std::net::IpAddr {
        self.server.addr().ip()
    }

    /// Stops the engine and the node (which stops its agents if so configured), then the
    /// API server.
    pub async fn stop(self) {
        // Goodbye first: peers drop this host while it still answers.
        if let Some(d) = self.discovery {
            d.stop().await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.server.shutdown().await;
        drop(self.ownership);
        if let Some(dir) = self.scoped_state
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the run's state");
        }
    }
}

/// Starts mDNS discovery when [`LocalOptions::discovery_wanted`].
async fn start_discovery(
    opts: &LocalOptions,
    server: &ServerHandle,
    client: &kube::Client,
    peers: &Arc<crate::discovery::peers::PeerTable>,
    node_name: Option<&str>,
) -> Result<Option<crate::discovery::Discovery>, Error> {
    let (true, Some(node_name)) = (opts.discovery_wanted(), node_name) else { return Ok(None) };
    let config = crate::discovery::Config {
        node_name: node_name.to_string(),
        listen: server.addr().ip(),
        api_url: server.url(),
        home: opts.home.clone(),
        client: client.clone(),
    };
    Ok(Some(crate::discovery::Discovery::start(config, peers.clone()).await?))
}

/// A new state directory for this run, `<home>/runs/<pid>`; those of runs that ended without
/// removing theirs (killed) go first.
fn scoped_state_dir(home: &std::path::Path) -> Result<PathBuf, Error> {
    let runs = home.join("runs");
    if let Ok(entries) = std::fs::read_dir(&runs) {
        for e in entries.flatten() {
            let alive = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = runs.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Ok(dir),
        Err(source) => Err(Error::StateDir { dir, source }),
    }
}

static RUNNING_BINARY_IS_A2A: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Declares that this process is the a2a binary, whatever its file is named or whether an
/// upgrade has since removed it: `main` calls it first. Embedders do not, and must then set
/// [`LocalOptions::a2a_exe`].
pub fn declare_a2a_binary() {
    RUNNING_BINARY_IS_A2A.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn running_binary_is_a2a() -> bool {
    RUNNING_BINARY_IS_A2A.load(std::sync::atomic::Ordering::Relaxed)
}
