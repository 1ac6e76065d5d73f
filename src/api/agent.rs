//! The `Agent` kind: one AI agent, run locally as supervised processes or on a cluster as a
//! Deployment.
// clippy reads the repeated `printcolumn(type_ = ...)` keys of the derive as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, Priority, ResourceAmounts, Time, is_zero};

/// An AI agent that speaks A2A (or runs once per task over stdio).
///
/// Locally `command` says how to start it; on a cluster `image` does. An agent with `url`
/// runs elsewhere and is only probed and routed to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "a2a.dev",
    version = "v1alpha1",
    kind = "Agent",
    plural = "agents",
    namespaced,
    shortname = "ag",
    category = "a2a",
    status = "AgentStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "An AI agent run by a2a: local processes under cgroup limits, or a Deployment on a cluster.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready replicas out of desired"
    ),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.restarts"),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority", priority = 1),
    printcolumn(name = "Budget", type_ = "string", json_path = ".spec.budget", priority = 1),
    printcolumn(name = "Memory", type_ = "string", json_path = ".status.usage.memory", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    /// Local mode: the program and its leading arguments, as a list (`["python", "agent.py"]`).
    /// On a cluster it overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments after `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables for the agent's processes: a `value`, or one key of a Secret
    /// or ConfigMap (`valueFrom`). They win over `envFrom`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Every key of a Secret or ConfigMap as an environment variable (with an optional
    /// `prefix`); keys that are not variable names are skipped, and an Event says which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Secrets given to the agent as files (mode 0400, owned by the agent's user): locally
    /// on a tmpfs of the replica's own, on a cluster as a secret volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<SecretFiles>,
    /// Local mode: the directory the agent runs in (default: the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Local mode: the user to run as, `name` or `uid[:gid]`. Without it, a daemon running
    /// as root runs the agent as a uid of its own (allocated per agent from 61184-65519).
    /// `root` is possible, and the `Sandboxed` condition then says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Local mode: existing directories the agent may write (absolute paths). Everything
    /// else but its home and a private `/tmp` is read-only to it; file permissions still
    /// apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writable_paths: Vec<String>,
    /// Cluster mode: the container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// An agent that runs elsewhere: a2a probes its agent card and routes tasks to it but
    /// never starts it. Excludes `command` and `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: TLS toward an `https://` agent (an extra CA, a client certificate, the
    /// name to verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::access::AgentTls>,
    /// With `url`: credentials for the agent, matched against its card's security schemes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::access::AgentAuth>,
    /// `a2a` (default): the process serves A2A at `$A2A_PORT`. `stdio`: every task runs
    /// `command` once with the message on stdin; stdout is the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Processes (locally) or pods (cluster) to run; for `stdio` agents, concurrent runs.
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<u32>,
    /// Tasks one replica works on at once. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent_tasks: Option<u32>,
    /// Routing labels; merged with the skills of the agent card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// The port A2A is served on; 0 (default) lets a2a assign one per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<u32>,
    /// CPU, memory and pids requested and allowed, per replica.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Dispatch order and CPU weight. Default `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The ResourceBudget this agent is admitted into (locally, default `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// What to do when a replica exits. Default `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// The most A2A requests sent to this agent (all replicas together) in any window:
    /// `{requests: 60, per: 1m}`. Tasks over it wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<super::ratelimit::RateLimit>,
}

impl AgentSpec {
    pub fn replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }
    pub fn max_concurrent_tasks(&self) -> u32 {
        self.max_concurrent_tasks.unwrap_or(1)
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
    pub fn priority(&self) -> Priority {
        self.priority.unwrap_or_default()
    }
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart_policy.unwrap_or_default()
    }
    /// The budget name, `host` when none is given.
    pub fn budget(&self) -> &str {
        self.budget.as_deref().unwrap_or(super::DEFAULT_BUDGET)
    }
}

/// One environment variable: a literal `value`, or a key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

// Secrets and ConfigMaps referenced by an Agent, spelled as a Pod spells them. What they
// resolve to is decided in `crate::controller::config_refs`, for both modes.

/// Where an environment variable's value comes from: exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
}

/// One key of a Secret or ConfigMap in the Agent's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead of keeping the
    /// agent from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Every key of one Secret or ConfigMap (exactly one of the two), as variables.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvFromSource {
    /// Put before every key to make the variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ObjectSelector>,
}

/// A Secret or ConfigMap in the Agent's namespace, as a whole.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectSelector {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One Secret as a directory of files, one file per key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretFiles {
    pub secret_name: String,
    /// The directory the files appear in (absolute). Default `/run/secrets/<secretName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// The keys to give, and the relative path of each; default every key, named by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One key of a Secret as the file at `path` (relative to the mount path).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
}

impl SecretFiles {
    /// Where the files appear: `mountPath`, else `/run/secrets/<secretName>`.
    pub fn mount_path(&self) -> String {
        self.mount_path.clone().unwrap_or_else(|| format!("{SECRET_FILES_ROOT}/{}", self.secret_name))
    }
}

/// The directory secret files appear under when their `mountPath` is not given.
pub const SECRET_FILES_ROOT: &str = "/run/secrets";

/// Requests (what the agent is guaranteed) and limits (what the kernel enforces).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Guaranteed: memory protected from reclaim, CPU weight.
    #[serde(default, skip_serializing_if = "ResourceAmounts::is_empty")]
    pub requests: ResourceAmounts,
    /// Enforced by the kernel: memory (OOM kill above it), CPU quota, pids.
    #[serde(default, skip_serializing_if = "ResourceAmounts::is_empty")]
    pub limits: ResourceAmounts,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// How tasks reach the agent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A long-running A2A v1.0 server (JSON-RPC binding).
    #[default]
    A2a,
    /// One run of `command` per task, message on stdin, result on stdout.
    Stdio,
}

/// When a replica that exited is started again (with exponential backoff).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// What a2a observed of an agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AgentPhase>,
    /// Replicas that exist.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicas: u32,
    /// Replicas whose agent card answers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ready_replicas: u32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Restarts of all replicas since the agent was created.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
    /// Measured by the kernel (cgroup statistics) or metrics-server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The A2A URLs of the ready replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// From the agent card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    /// Local mode: one entry per replica, enough to re-adopt it after a daemon restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<Instance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Admitted`, `Throttled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AgentPhase {
    Pending,
    Starting,
    Running,
    Degraded,
    Failed,
    Stopped,
}

/// How a replica last ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    pub reason: TerminationReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub at: Time,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TerminationReason {
    Exited,
    Signaled,
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// It ended while no node watched it (the daemon was down): its exit status is lost.
    Unknown,
}

/// Resource use, summed over replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes, as a quantity (`123Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_bytes: u64,
    /// Cores in use, averaged over the last interval, as a quantity (`250m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpu_millicores: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pids: u64,
}

/// What the agent card says about the agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub streaming: bool,
    /// The agent's extended card (A2A `GetExtendedAgentCard`), which it shows to a2a's
    /// credentials, is summarised and used in place of its public card.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extended: bool,
}

/// One local replica.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub replica: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Kernel start time of `pid` (clock ticks since boot), so a reused pid is never adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// The cgroup path relative to the cgroup root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// The versioned hash (`v2:<sha256>`) of the spec fields that need a restart, as this
    /// replica was started with; a change of those fields restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// How it ended, for a replica that no longer runs and that its restart policy keeps
    /// stopped (then it has no `pid`): a restarted node does not start it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<Termination>,
}
