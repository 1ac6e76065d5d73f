//! How the node runs.

use std::path::PathBuf;
use std::time::Duration;

use crate::node::cgroup::Layout;
use crate::node::logs::LogLimits;

/// How the node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `$A2A_HOME`: logs go under `logs/<namespace>/<agent>/<replica>.log`.
    pub home: PathBuf,
    pub layout: Layout,
    /// The binary that `command: ["a2a", ...]` runs (the running a2a).
    pub a2a_exe: PathBuf,
    /// The host-wide registry of agent uids and their homes (see `node::sandbox`).
    pub sandbox_dir: PathBuf,
    /// SIGTERM → SIGKILL grace when stopping a replica.
    pub grace: Duration,
    /// How often agents that wait (for room, after a failed start) are looked at again.
    pub tick: Duration,
    /// Whether cgroups enforce limits; `false` only with `--allow-unenforced`.
    pub enforced: bool,
    /// Stop every replica when the node shuts down (`a2a run`); `a2a serve` leaves them
    /// running for the next daemon to adopt.
    pub stop_on_shutdown: bool,
    /// The wait before restarting a replica that exited again right after a restart (the
    /// first restart comes at once); it doubles on every further exit (at most 5m) and resets
    /// after 10m of running. Default 1s.
    pub restart_backoff: Duration,
    /// Each replica's log files: their cap and number (default 16 MiB × 3), kept by a log
    /// relay per replica (see [`super::logs`]).
    pub log_limits: LogLimits,
    /// The program run as each replica's log relay: by default the daemon's own binary as
    /// `a2a log-relay` (`/proc/self/exe`, even after an upgrade replaced it on disk); the
    /// local control plane sets the small `a2a-log-relay` when it finds it
    /// ([`RelayProgram::find`](crate::node::logs::RelayProgram::find)).
    pub log_relay: crate::node::logs::RelayProgram,
    /// The API server's URL, as alert notifications link to it (`externalURL`).
    pub external_url: String,
    /// The host's A2A gateway, when it runs: every agent gets its URL, its CA and a gateway
    /// token of its own (see [`crate::gateway`]).
    pub gateway: Option<crate::gateway::AgentAccess>,
}

impl NodeConfig {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        NodeConfig {
            home: home.into(),
            layout: Layout::default(),
            a2a_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("a2a")),
            sandbox_dir: PathBuf::from(crate::node::sandbox::DEFAULT_STATE_DIR),
            grace: Duration::from_secs(10),
            tick: Duration::from_secs(2),
            enforced: true,
            stop_on_shutdown: false,
            restart_backoff: Duration::from_secs(1),
            log_limits: LogLimits::default(),
            log_relay: crate::node::logs::RelayProgram::a2a(std::path::Path::new("/proc/self/exe")),
            external_url: String::new(),
            gateway: None,
        }
    }
}
