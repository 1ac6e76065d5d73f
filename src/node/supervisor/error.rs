//! Why the node could not start a replica or run a stdio task.

use crate::node::{cgroup, process, sandbox};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A node that stops its agents is stopping: nothing new starts.
    #[error("the control plane is stopping")]
    Stopping,
    /// The agent's budget chain is broken (a budget missing, a cycle) or a name is not a valid
    /// cgroup name.
    #[error("no valid cgroup path for this agent")]
    NoCgroupPath,
    #[error("port {0} out of range")]
    PortOutOfRange(u32),
    #[error("no free port: {0}")]
    NoFreePort(#[source] std::io::Error),
    #[error("no free port that no other replica has")]
    PortsTaken,
    #[error("spec.command is required to run an agent locally")]
    NoCommand,
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error(transparent)]
    SecretFiles(#[from] crate::node::secret_files::Error),
    /// A referenced Secret, ConfigMap or key is missing.
    #[error(transparent)]
    Refs(#[from] crate::controller::config_refs::Unresolved),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    /// The thread that started a replica or ran a task panicked.
    #[error("{what} panicked: {source}")]
    Panicked {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The agent's token could not be read or made.
    #[error(transparent)]
    Token(crate::controller::credentials::Error),
    #[error("no pipes to the stdio process")]
    NoPipes,
    #[error("reading stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("the run was OOM-killed at its memory limit")]
    OomKilled,
    #[error("exited with code {code}: {stderr}")]
    Exited { code: i32, stderr: String },
    #[error("killed by signal {signal}: {stderr}")]
    Signaled { signal: i32, stderr: String },
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Stopping => "stopping",
            Error::NoCgroupPath => "no_cgroup_path",
            Error::PortOutOfRange(_) | Error::NoFreePort(_) | Error::PortsTaken => "port",
            Error::NoCommand => "no_command",
            Error::Sandbox(e) => e.metric_label(),
            Error::Refs(_) => "config_refs",
            Error::SecretFiles(e) => e.metric_label(),
            Error::Cgroup(e) => e.metric_label(),
            Error::Process(e) => e.metric_label(),
            Error::Token(_) => "token",
            Error::Panicked { .. } => "panicked",
            Error::NoPipes | Error::Stdout(_) => "stdio",
            Error::OomKilled => "oom_killed",
            Error::Exited { .. } => "exited",
            Error::Signaled { .. } => "signaled",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
