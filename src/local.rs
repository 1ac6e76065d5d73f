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
use crate::node::supervisor::{Node, NodeConfig, StdioTasks};

/// How to run the local control plane.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub home: PathBuf,
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
    /// Run the node controller and the workflow engine; `false` serves the API only.
    pub controllers: bool,
    /// The first wait before restarting an agent replica that exited (doubles per exit).
    pub restart_backoff: std::time::Duration,
    /// The API server's cap on connections and its timeouts.
    pub connections: crate::apiserver::conn::ConnectionLimits,
}

impl LocalOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        LocalOptions {
            home: home.into(),
            port: crate::apiserver::DEFAULT_PORT,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_top: "a2a".into(),
            allow_unenforced: false,
            stop_agents_on_exit: false,
            a2a_exe: None,
            controllers: true,
            restart_backoff: std::time::Duration::from_secs(1),
            connections: crate::apiserver::conn::ConnectionLimits::default(),
        }
    }
}

/// A running local control plane.
pub struct ControlPlane {
    pub server: ServerHandle,
    pub client: kube::Client,
    /// Whether the kernel enforces agent limits (false only with `--allow-unenforced`).
    pub enforced: bool,
    pub cgroup_version: Option<cgroup::CgroupVersion>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Picks the cgroup driver and proves it can create the top cgroup; without permission,
/// says so once and stops, unless unenforced running is allowed.
pub fn cgroup_driver(opts: &LocalOptions) -> Result<(Arc<dyn CgroupDriver>, bool), String> {
    let layout = Layout::with_top(&opts.cgroup_top).map_err(|e| e.to_string())?;
    let refuse = |why: String| {
        if opts.allow_unenforced {
            tracing::warn!("{why}; running agents WITHOUT kernel-enforced limits (--allow-unenforced)");
            Ok((Arc::new(Unenforced) as Arc<dyn CgroupDriver>, false))
        } else {
            Err(format!(
                "{why}. a2a needs to manage cgroups to enforce agent limits: run as root or in a delegated cgroup, \
                 or pass --allow-unenforced to run agents without limits"
            ))
        }
    };
    let driver: Arc<dyn CgroupDriver> = match cgroup::detect(&opts.cgroup_root) {
        Ok(d) => Arc::from(d),
        Err(e) => return refuse(format!("cannot use cgroups at {}: {e}", opts.cgroup_root.display())),
    };
    match driver.ensure(&layout.top(), &CgroupLimits::default()) {
        Ok(()) => Ok((driver, true)),
        Err(e) if e.is_permission_denied() => {
            refuse(format!("no permission to create cgroups under {}", opts.cgroup_root.display()))
        }
        Err(e) => refuse(format!("cannot create the a2a cgroup: {e}")),
    }
}

async fn client_for(kubeconfig: &std::path::Path) -> Result<kube::Client, String> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("client: {e}"))
}

impl ControlPlane {
    /// Starts the API server, the node and the engine.
    pub async fn start(opts: LocalOptions) -> Result<ControlPlane, String> {
        // The daemon's heap (`a2a serve` does this before its runtime starts; `a2a run` and
        // embedders get it here, for the arenas not created yet).
        crate::node::limit_malloc_arenas();
        if !opts.controllers {
            let server =
                Server::start(ServerConfig::new(&opts.home).port(opts.port).connections(opts.connections.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
            let client = client_for(server.kubeconfig()).await?;
            let (stop, _) = watch::channel(false);
            return Ok(ControlPlane { server, client, enforced: false, cgroup_version: None, stop, tasks: Vec::new() });
        }
        let (driver, enforced) = cgroup_driver(&opts)?;
        let server = Server::start(ServerConfig::new(&opts.home).port(opts.port).connections(opts.connections.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let client = client_for(server.kubeconfig()).await?;
        let (stop, stop_rx) = watch::channel(false);
        let stopped = move |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut config = NodeConfig::new(&opts.home);
        config.layout = Layout::with_top(&opts.cgroup_top).map_err(|e| e.to_string())?;
        config.enforced = enforced;
        config.stop_on_shutdown = opts.stop_agents_on_exit;
        if let Some(exe) = &opts.a2a_exe {
            config.a2a_exe = exe.clone();
        }
        config.restart_backoff = opts.restart_backoff;
        let version = enforced.then(|| driver.version());
        let (node, runner) = Node::new(client.clone(), driver, config);
        let engine = Engine::new(
            client.clone(),
            EngineConfig { stdio: Some(StdioTasks::new(node) as Arc<_>), ..EngineConfig::default() },
        );
        let tasks =
            vec![tokio::spawn(runner.run(stopped(stop_rx.clone()))), tokio::spawn(engine.run(stopped(stop_rx)))];
        Ok(ControlPlane { server, client, enforced, cgroup_version: version, stop, tasks })
    }

    /// Stops the engine and the node (which stops its agents if so configured), then the
    /// API server.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.server.shutdown().await;
    }
}
