//! `a2a serve`: run the local control plane's API server until SIGTERM or SIGINT.

use std::path::PathBuf;

use clap::Args;

use super::values;
use crate::apiserver::{DEFAULT_PORT, default_home};
use crate::local::{ControlPlane, LocalOptions};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The port to serve HTTPS on, at the --listen address (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// The IP address to serve the API (and the host's A2A gateway) on. Default 127.0.0.1;
    /// an address of a LAN interface lets other hosts reach this one, and turns mDNS discovery
    /// on, on that interface only. The serving certificate names it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1", value_parser = listen_addr)]
    pub listen: std::net::IpAddr,
    /// This host's name among its peers (mDNS instance, TXT `node`). Default: the host name's
    /// first label. Letters, digits and '-', at most 63.
    #[arg(long, value_name = "NAME", value_parser = node_name)]
    pub node_name: Option<String>,
    /// Do not advertise or browse by mDNS, even with --listen on a LAN address.
    #[arg(long)]
    pub no_mdns: bool,
    /// Where the state, certificates, token, kubeconfig and audit log live.
    /// Default: $A2A_HOME, else ~/.a2a.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Where cgroups are mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Run agents without kernel-enforced limits when cgroups cannot be managed (every
    /// Agent's status then says so).
    #[arg(long)]
    pub allow_unenforced: bool,
    /// Serve the API only: no agents are run and no workflows dispatched (for tools and tests
    /// that need the API server alone).
    #[arg(long)]
    pub api_only: bool,
    /// The top cgroup directory a2a manages (one per daemon on a host).
    #[arg(long, value_name = "NAME", default_value = "a2a")]
    pub cgroup_top: String,
    /// The wait before restarting an agent replica that crashed again right after a restart
    /// (the first restart comes at once); it doubles on every further exit, up to 5m, and
    /// resets after 10m of running.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = values::duration)]
    pub restart_backoff: std::time::Duration,
    /// The cap of each agent replica's log file; past it the file is renamed (`.1`, `.2`, …)
    /// and a new one started.
    #[arg(long, value_name = "QUANTITY", default_value = "16Mi", value_parser = values::bytes)]
    pub agent_log_max_size: u64,
    /// How many log files each agent replica keeps, the live one included (2 to 100).
    #[arg(long, value_name = "N", default_value_t = crate::node::logs::DEFAULT_MAX_FILES)]
    pub agent_log_max_files: u32,
    /// The program run as each agent replica's log relay. Default: `a2a-log-relay` beside
    /// this binary, else this binary itself (`a2a log-relay`, a costlier start, with a
    /// warning). A file given here must exist and be executable, or the daemon does not start.
    #[arg(long, value_name = "PATH")]
    pub log_relay: Option<std::path::PathBuf>,
    /// Disk space the store keeps allocated (state/store.reserve) and gives back when the
    /// disk is full, to checkpoint and start again; writes are refused while it cannot be
    /// taken. 0 turns it off.
    #[arg(long, value_name = "SIZE", default_value = "64Mi", value_parser = values::bytes)]
    pub store_reserve: u64,
    /// The size at which audit.log is rotated (0: never).
    #[arg(long, value_name = "SIZE", default_value = "100Mi", value_parser = values::bytes)]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs (audit.log.1 ...) are kept.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub audit_log_maxbackup: usize,
    /// The most client connections served at once. Past it, a new connection takes the place
    /// of the one idle the longest, or is answered 503 when all are busy. Default: half the
    /// open-file limit (RLIMIT_NOFILE) less 32, between 16 and 4096.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// How long a request's headers may take to arrive (then 408, and the connection closes).
    #[arg(long, value_name = "DURATION", default_value = "32s", value_parser = values::positive_duration)]
    pub header_timeout: std::time::Duration,
    /// How long a connection with no request in flight stays open (watches are requests in
    /// flight for as long as they last).
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = values::positive_duration)]
    pub idle_timeout: std::time::Duration,
    /// The port, on the --listen address, of the host's A2A gateway (HTTPS; 0 picks a free one). Its URL is
    /// written to $A2A_HOME/gateway.url. Not with --api-only.
    #[arg(long, value_name = "PORT", default_value_t = crate::gateway::DEFAULT_PORT)]
    pub gateway_port: u16,
    /// How long a message sent through the gateway may wait in the dispatch queue for a slot
    /// of its agent before it is refused (503, saying why).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = values::positive_duration)]
    pub gateway_queue_timeout: std::time::Duration,
}

/// Why `a2a serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot tell where to keep state: set A2A_HOME or HOME, or pass --home DIR")]
    NoHome,
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Signals(#[from] SignalError),
    #[error(transparent)]
    LogLimits(#[from] crate::node::logs::Error),
    /// The control plane's own account of what failed.
    #[error(transparent)]
    ControlPlane(crate::local::Error),
}

/// A signal handler that could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("{signal} handler: {source}")]
pub struct SignalError {
    signal: &'static str,
    #[source]
    source: std::io::Error,
}

/// A control plane that is serving: the top level says where it listens, then waits.
pub struct Serving {
    runtime: tokio::runtime::Runtime,
    plane: ControlPlane,
    signals: Signals,
}

impl Serving {
    /// The line that says where the server listens (it is ready when this is known).
    pub fn listening(&self) -> String {
        let gateway = self.plane.gateway_url.as_ref().map(|u| format!(", A2A gateway: {u}")).unwrap_or_default();
        format!(
            "a2a serve: listening on {} (kubeconfig: {}{gateway})",
            self.plane.server.url(),
            self.plane.server.kubeconfig().display()
        )
    }

    /// Serves until SIGTERM or SIGINT, then stops.
    pub fn wait(self) {
        let Serving { runtime, plane, signals } = self;
        runtime.block_on(async {
            signals.wait().await;
            stop(plane).await;
        });
    }

    /// Stops at once (the announcement could not be written).
    pub fn stop(self) {
        let Serving { runtime, plane, .. } = self;
        runtime.block_on(stop(plane));
    }
}

async fn stop(plane: ControlPlane) {
    tracing::info!("shutting down; agents keep running for the next daemon to adopt");
    plane.stop().await;
}

/// Starts the local control plane; it serves until [`Serving::wait`] sees a signal.
pub fn start(args: &ServeArgs) -> Result<Serving, Error> {
    let home = args.home.clone().or_else(default_home).ok_or(Error::NoHome)?;
    // Before any thread allocates: the arenas that exist stay.
    crate::node::limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    let (plane, signals) = runtime.block_on(async {
        // Handlers first: a signal that arrives once the server is announced must stop it
        // gracefully, not kill it.
        let signals = Signals::install()?;
        let mut opts = LocalOptions::new(&home);
        opts.port = args.port;
        opts.listen = args.listen;
        opts.node_name = args.node_name.clone();
        opts.mdns = !args.no_mdns;
        opts.cgroup_root = args.cgroup_root.clone();
        opts.allow_unenforced = args.allow_unenforced;
        opts.cgroup_top = args.cgroup_top.clone();
        opts.controllers = !args.api_only;
        opts.restart_backoff = args.restart_backoff;
        opts.log_limits = crate::node::logs::LogLimits::new(args.agent_log_max_size, args.agent_log_max_files)?;
        opts.log_relay = args.log_relay.clone();
        opts.store_reserve_bytes = args.store_reserve;
        opts.audit_rotation = crate::apiserver::audit::Rotation {
            max_bytes: args.audit_log_maxsize,
            max_backups: args.audit_log_maxbackup,
        };
        if let Some(n) = args.max_connections {
            opts.connections.max_connections = n as usize;
        }
        opts.connections.header_timeout = args.header_timeout;
        opts.connections.idle_timeout = args.idle_timeout;
        opts.gateway = Some(crate::gateway::GatewayConfig {
            port: args.gateway_port,
            queue_timeout: args.gateway_queue_timeout,
            ..Default::default()
        });
        let plane = ControlPlane::start(opts).await.map_err(Error::ControlPlane)?;
        match plane.cgroup_version {
            _ if args.api_only => tracing::info!("serving the API only: no agents run, no workflows are dispatched"),
            Some(v) => tracing::info!(cgroup = %v, "agent limits enforced by the kernel"),
            None => tracing::warn!("agent limits are NOT enforced (--allow-unenforced)"),
        }
        Ok::<_, Error>((plane, signals))
    })?;
    Ok(Serving { runtime, plane, signals })
}

/// `--listen`: one unicast IP address of this host (not 0.0.0.0: the certificate and mDNS
/// name the address served on).
pub fn listen_addr(s: &str) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address (e.g. 127.0.0.1, 192.168.1.10 or fd00::10)"))?;
    if ip.is_unspecified() {
        return Err(format!(
            "{ip} is every address, not one: name the address of the interface other hosts reach (e.g. 192.168.1.10)"
        ));
    }
    if ip.is_multicast() || ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return Err(format!("{ip} is a multicast or broadcast address, not one of this host's"));
    }
    Ok(ip)
}

/// `--node-name`: a DNS label.
pub fn node_name(s: &str) -> Result<String, String> {
    match crate::discovery::check_node_name(s) {
        Ok(()) => Ok(s.to_string()),
        Err(crate::discovery::Error::NodeName { why, .. }) => Err(why),
        Err(e) => Err(e.to_string()),
    }
}

/// SIGTERM and SIGINT, installed before they can arrive, awaited later.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals, SignalError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|source| SignalError { signal: "SIGTERM", source })?,
            int: signal(SignalKind::interrupt()).map_err(|source| SignalError { signal: "SIGINT", source })?,
        })
    }

    pub async fn wait(self) {
        self.received().await;
    }

    /// Waits for the first of them; returns its number (`libc::SIGTERM` or `libc::SIGINT`).
    pub async fn received(mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}
