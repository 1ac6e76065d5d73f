//! The local agent and budget controller: turns Agents and ResourceBudgets (read through
//! the API server) into cgroups and supervised processes, and writes what the kernel reports
//! back into status.
//!
//! One loop owns all state. It wakes on watch events, process exits (pidfd readiness),
//! probe results and one timer (restart backoffs, retries, the coalesced statistics sample);
//! each pass admits agents ([`crate::controller::admission`]), creates and removes budget
//! cgroups, starts, adopts, restarts or stops the replicas of the agents that an event named,
//! and queues statuses that changed for a writer task (several writes in flight, the latest
//! status per object). At idle it does nothing between samples: no pass per agent, no timer
//! per agent. Processes run in their own session, so they outlive the daemon; a restarted
//! daemon re-adopts them from `status.instances` (pid, its start time, cgroup) instead of
//! starting them again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use super::cgroup::{CgroupDriver, CgroupLimits, CgroupPath};
use super::process::AgentProcess;
use super::sandbox::Sandbox;
use crate::api::agent::{AgentPhase, AgentStatus, CardSummary, Instance, Termination, Usage};
use crate::api::budget::ResourceBudgetStatus;
use crate::api::common::{Time, set_condition};
use crate::api::quantity::{format_bytes, format_millicores};
use crate::api::{Agent, Condition, DEFAULT_BUDGET, ResourceBudget};
use crate::controller::admission::{self, Host, Verdict};
use crate::controller::budget_status::{BudgetFacts, budget_status};
use crate::controller::readiness;

mod api;
mod budgets;
mod config;
mod deadlines;
mod ending;
mod error;
pub(crate) mod facts;
mod probes;
mod refs;
mod replicas;
mod spawn;
mod stdio;
mod stopping;
mod throttle;
mod usage;
use api::{StatusBody, StatusQueue, WriteTarget, ensure_default_budget, watch_kind, write_statuses};
use budgets::set_limits_clamped;
pub use config::NodeConfig;
use deadlines::Deadlines;
pub use error::{Error, Result};
use spawn::{START_CONCURRENCY, StartJob};
pub use stdio::StdioTasks;

/// The cgroup, inside a budget with `backgroundCpu`, that caps its background agents
/// together. The dot keeps it apart from any budget (budget names are DNS labels).
pub const BACKGROUND_CGROUP: &str = "background.cpu";
/// Kernel statistics of every replica are read together this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// An agent whose replicas idle (see [`usage`]) is read at a doubling interval up to this,
/// as cAdvisor's dynamic housekeeping does for containers whose statistics do not change.
const IDLE_SAMPLE_MAX: Duration = Duration::from_secs(60);
/// Usage is written for replicas that have run at least this long (by the wall clock, so a
/// replica re-adopted after a restart of the daemon gets its usage at the first sample).
const USAGE_MIN_AGE: Duration = Duration::from_secs(2);
/// A started replica's first usage, when it is small, is written at a time drawn between
/// [`USAGE_MIN_AGE`] and this after its start: agents started together would otherwise all
/// get it at the same sample, one status write each (500 writes, ~190 ms of the control
/// plane's CPU at once on a 2-core VM). metrics-server reports a new pod's usage after its
/// 15–60 s resolution the same way.
const FIRST_USAGE_WITHIN: Duration = Duration::from_secs(60);
/// A usage change that is not material is still written after this long (kubelet reports
/// usage as metrics and never rewrites objects for it; here status is the only channel).
const USAGE_HEARTBEAT: Duration = Duration::from_secs(300);
/// A budget's pressure levels that moved while it stays under (or out of) pressure reach its
/// status together, this long after the first move: a level moves by a percent several times
/// a second on a loaded host, and each move was a status write.
const PRESSURE_LEVELS_EVERY: Duration = Duration::from_secs(1);
/// Status writes in flight at once (the store commits concurrent writes together).
const WRITES_IN_FLIGHT: usize = 32;
/// The status of an agent whose replica is being started waits for the start's outcome (a
/// few milliseconds: one write says admitted and running, not one write each), but no longer
/// than this. A start waits for its slot behind the others of its burst: with a hold of 1 s,
/// 309 of 500 agents applied together got a status saying admitted without a process, then
/// the one with it, 0.2–1 s later; the outcome of a start that runs comes within 5 s (the
/// status of one that fails, at once).
const START_STATUS_HOLD: Duration = Duration::from_secs(5);

/// The default budget: the single-host envelope of the original plan.
pub fn default_budget() -> ResourceBudget {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget",
        "metadata": {"name": DEFAULT_BUDGET, "labels": {"app.kubernetes.io/managed-by": "a2a"}},
        "spec": {"limits": {"memory": "8Gi", "cpu": "60%"}, "reserve": "512Mi"}
    }))
    .unwrap_or_default()
}

type Key = (String, String);

/// The field manager of the node's writes (status of Agents and ResourceBudgets).
pub const FIELD_MANAGER: &str = "a2a-node";

enum NodeEvent {
    Agent(Box<Agent>),
    AgentGone(Key),
    Budget(Box<ResourceBudget>),
    BudgetGone(String),
    /// A Secret or ConfigMap changed or went (see [`refs`]).
    Object(Box<refs::ObjectChange>),
    /// A watcher delivered its initial list.
    Synced(&'static str),
    Exited {
        key: Key,
        replica: u32,
        pid: u32,
    },
    Probed {
        key: Key,
        replica: u32,
        pid: u32,
        /// The card, or why it could not be read.
        card: Result<probes::ProbedCard, String>,
        /// The connection was refused (nothing listens on the port any more).
        refused: bool,
        /// The server answered over HTTP, only not with its card.
        answered: bool,
    },
    /// A queued status write failed: written again later.
    WriteFailed(WriteTarget),
    /// A replica start the loop handed off has finished.
    Started {
        key: Key,
        replica: u32,
        result: Box<Result<Replica>>,
    },
    /// A budget's pressure watch has a new reading.
    Pressure {
        budget: String,
        reading: crate::node::pressure::Reading,
    },
}

struct Replica {
    cgroup: CgroupPath,
    /// What was last written to the cgroup; rewriting unchanged CPU limits would reset the
    /// kernel's bandwidth accounting (writing the quota refills the period's runtime).
    limits: CgroupLimits,
    port: u16,
    process: Option<AgentProcess>,
    pid: u32,
    /// The kernel start time of `pid` (`status.instances[].pidStartTime`).
    start_time: Option<u64>,
    started_at: Time,
    started: Instant,
    ready: bool,
    probing: bool,
    spec_hash: String,
    restarts: u32,
    /// When it may start again after an exit.
    next_start: Option<Instant>,
    /// Restarts in a row without a healthy run between them (the backoff grows with them).
    crashes: u32,
    /// Set when it ended and its restart policy keeps it stopped: listed in status as ended,
    /// so that a restarted node does not start it again.
    ended: Option<Termination>,
    oom_before: u64,
    cpu: Option<(Instant, u64)>,
    cpu_millis: u64,
    throttled: u64,
    /// Time spent throttled at the last sample, microseconds.
    throttled_usec: u64,
    throttling: bool,
    /// Bytes charged at the last sample.
    memory: u64,
    /// Failed readiness probes since the start (or the last spec change).
    probes: u32,
    /// Its port was seen listening in the socket table (and no probe was refused since).
    listening: bool,
    /// When it may be probed next (see [`readiness`]).
    next_probe: Instant,
}

impl Replica {
    /// A replica with nothing observed yet: no process, not ready, no samples.
    fn new(cgroup: CgroupPath, port: u16, spec_hash: String, restarts: u32) -> Replica {
        Replica {
            cgroup,
            limits: CgroupLimits::default(),
            port,
            process: None,
            pid: 0,
            start_time: None,
            started_at: Time::now(),
            started: Instant::now(),
            ready: false,
            probing: false,
            spec_hash,
            restarts,
            next_start: None,
            crashes: 0,
            ended: None,
            oom_before: 0,
            cpu: None,
            cpu_millis: 0,
            throttled: 0,
            throttled_usec: 0,
            throttling: false,
            memory: 0,
            probes: 0,
            listening: false,
            next_probe: Instant::now(),
        }
    }
}

#[derive(Default)]
struct AgentRuntime {
    /// Boxed: a map's node holds room for 11 entries, and most agents have one replica (an
    /// unboxed `Replica` made that 4.4 KiB per agent).
    replicas: BTreeMap<u32, Box<Replica>>,
    last_termination: Option<Termination>,
    card: Option<CardSummary>,
    /// Restarts before this daemon (from status), plus ours.
    restarts_base: u32,
    /// The last status queued for writing.
    written: Option<AgentStatus>,
    /// When a status with a different usage was last queued.
    usage_written_at: Option<Instant>,
    /// A replica this node started is not measured yet: its first usage is written at the
    /// first sample from this time on (drawn, see [`usage`]), or sooner when it is busy.
    first_usage_at: Option<Instant>,
    /// Samples in a row that found its replicas idle, and when it is read next (none: at
    /// every sample).
    idle_samples: u32,
    sample_after: Option<Instant>,
    adopted: bool,
    url_ready: bool,
    url_probing: bool,
    /// When the url agent's card is fetched again.
    url_next_probe: Option<Instant>,
    /// Why the url agent's last probe failed.
    url_error: Option<String>,
    /// Why the url agent's public card is used though it offers an extended one.
    extended_unused: Option<String>,
    last_error: Option<String>,
    /// Starts that failed in a row (a missing program, a cgroup that cannot be made), and
    /// when the next may be tried: the restart backoff, so a start that cannot succeed is
    /// not retried in a busy loop; a new spec tries again at once.
    start_failures: u32,
    start_retry_at: Option<Instant>,
    /// Why its Secrets and ConfigMaps cannot be resolved, and what was reported of them.
    refs: refs::RefsReported,
    /// Its replicas are frozen by automatic throttling.
    frozen: bool,
}

/// The node controller.
pub struct Node {
    client: kube::Client,
    driver: Arc<dyn CgroupDriver>,
    config: NodeConfig,
    host_cores: u32,
    tx: mpsc::UnboundedSender<NodeEvent>,
    writes: StatusQueue,
    /// Cgroups of stdio runs in progress (added before the cgroup is made, removed after it
    /// is gone): the start-up sweep leaves them alone.
    stdio_runs: std::sync::Mutex<HashSet<CgroupPath>>,
    /// Bounds the replica starts in flight (see `START_CONCURRENCY`).
    start_slots: Arc<tokio::sync::Semaphore>,
    /// Token keys read or made by this node, by namespace, while the Secret watch has not
    /// brought them (see `agent_token`).
    token_keys: std::sync::Mutex<HashMap<String, (crate::controller::credentials::AgentTokenKey, std::time::Instant)>>,
    /// Held while a token key is read or made: once per namespace, whatever the starts.
    token_key_read: tokio::sync::Mutex<()>,
    /// Set when a node that stops its agents is stopping: no new process or cgroup is made.
    closing: std::sync::atomic::AtomicBool,
    /// Agents' uids, homes and views of the system.
    sandbox: Arc<Sandbox>,
    /// The Secrets and ConfigMaps agents may reference.
    objects: std::sync::RwLock<refs::ObjectCache>,
    /// Replicas' secret files.
    secret_files: super::secret_files::SecretFileStore,
    /// Budget alerts' webhooks.
    notifier: crate::controller::alert_notify::Notifier,
}

/// What the loop owns.
struct World {
    agents: HashMap<Key, Agent>,
    budgets: BTreeMap<String, ResourceBudget>,
    runtime: HashMap<Key, AgentRuntime>,
    budget_written: HashMap<String, ResourceBudgetStatus>,
    alerts_firing: HashMap<(String, &'static str), bool>,
    /// Agents to reconcile in the next pass (events name them); `all_dirty` for every agent
    /// (ticks, budget changes, deletions).
    dirty: BTreeSet<Key>,
    all_dirty: bool,
    /// Limits last written to each budget cgroup (and its background cgroup).
    budget_limits: HashMap<CgroupPath, CgroupLimits>,
    /// Per budget, its limits over its parent's that the kernel enforces at the parent's.
    clamps: BTreeMap<String, Vec<admission::Clamp>>,
    /// The cgroup each budget got, to remove it when the budget goes (or moves).
    budget_paths: BTreeMap<String, CgroupPath>,
    /// Budget cgroups to remove once no process is left in them.
    doomed: BTreeSet<CgroupPath>,
    /// Budgets changed: their cgroups are checked and their statuses recomputed.
    budgets_dirty: bool,
    /// Only what budget statuses show of the kernel moved (a sample, pressure levels): their
    /// statuses are recomputed from the last admission decision, with no pass over the
    /// agents; at `budget_status_at`, when set.
    budget_status_dirty: bool,
    budget_status_at: Option<Instant>,
    /// What admission decided last time, per budget (allocated, agents, pending): a change
    /// rewrites budget statuses.
    last_decision: Option<admission::Decision>,
    /// Agents to look at again at a given time.
    deadlines: Deadlines,
    /// Agents waiting for room or after a failed start: looked at every `tick`.
    waiting: BTreeSet<Key>,
    /// When every replica's statistics are read next.
    next_sample: Instant,
    /// When failed budget status writes are tried again.
    budget_retry: Option<Instant>,
    /// Whether anything happened since the last sample (then freed heap is handed back).
    busy_since_sample: bool,
    /// Nothing is decided before both caches hold the whole picture: admitting against a
    /// half-read list of budgets would stop agents that are fine.
    synced: BTreeSet<&'static str>,
    /// Whether the cgroups no agent or budget owns any more were looked for (once, after the
    /// first full pass has re-adopted every running replica).
    swept: bool,
    /// Replica starts the current pass decided (handed off at its end).
    starts: Vec<StartJob>,
    /// Replica starts in flight, with the port each got and when it was handed off: a pass
    /// leaves these replicas alone until their `Started` event arrives.
    starting: HashMap<(Key, u32), (u16, Option<CgroupPath>, Instant)>,
    /// Replicas that wait for their card: when the socket table is read next, and how many
    /// times it was read since the last start, exit or spec change (see [`readiness`]).
    next_listen_check: Option<Instant>,
    listen_checks: u32,
    /// Replicas that listen, by when they are probed next.
    probe_timer: BTreeSet<(Instant, Key, u32)>,
    /// Each budget's pressure watch (automatic throttling), and its last reading.
    watches: BTreeMap<String, crate::node::pressure::Watch>,
    pressure: BTreeMap<String, throttle::BudgetPressure>,
    /// Replica cgroups frozen under pressure, with their agent.
    frozen: BTreeMap<CgroupPath, Key>,
    /// Pressure or replicas changed: which replicas are frozen is decided again.
    freezes_dirty: bool,
}

fn key_of<K: Resource>(o: &K) -> Key {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

/// Host memory available now (bytes), from /proc/meminfo.
pub fn host_available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

impl Node {
    pub fn new(client: kube::Client, driver: Arc<dyn CgroupDriver>, config: NodeConfig) -> (Arc<Self>, NodeRunner) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let sandbox = Arc::new(Sandbox::new(&config.home, &config.sandbox_dir, &config.a2a_exe));
        let secret_files = super::secret_files::SecretFileStore::new(&config.sandbox_dir, &config.home);
        let notifier = crate::controller::alert_notify::Notifier::new(client.clone(), &config.external_url, "a2a-node");
        let node = Arc::new(Node {
            notifier,
            client,
            driver,
            config,
            host_cores,
            tx,
            writes: StatusQueue::default(),
            stdio_runs: std::sync::Mutex::default(),
            start_slots: Arc::new(tokio::sync::Semaphore::new(START_CONCURRENCY)),
            token_keys: std::sync::Mutex::default(),
            token_key_read: tokio::sync::Mutex::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            sandbox,
            objects: std::sync::RwLock::default(),
            secret_files,
        });
        (node.clone(), NodeRunner { node, rx })
    }

    pub fn driver(&self) -> &Arc<dyn CgroupDriver> {
        &self.driver
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The budget chain of `budget`, outermost first (`["host", "team"]`); `None` when a
    /// budget of it is missing or the parents form a cycle: such a budget gets no cgroup (a
    /// cgroup made for it would recreate its deleted parent's, which nothing would remove).
    fn chain(budgets: &BTreeMap<String, ResourceBudget>, budget: &str) -> Option<Vec<String>> {
        let chain = crate::controller::budget_chain::chain(|n| budgets.get(n), budget).ok()?;
        Some(chain.iter().rev().map(|b| b.name_any()).collect())
    }

    fn budget_cgroup(&self, budgets: &BTreeMap<String, ResourceBudget>, budget: &str) -> Option<CgroupPath> {
        let chain = Self::chain(budgets, budget)?;
        let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
        self.config.layout.budget(&refs).ok()
    }

    /// The cgroup of one replica (and of one stdio run slot).
    fn replica_cgroup(
        &self,
        budgets: &BTreeMap<String, ResourceBudget>,
        agent: &Agent,
        replica: u32,
    ) -> Option<CgroupPath> {
        let (ns, name) = key_of(agent);
        let mut chain = Self::chain(budgets, agent.spec.budget())?;
        // Background agents share the budget's `backgroundCpu` through one more cgroup level.
        let capped = budgets.get(agent.spec.budget()).is_some_and(|b| b.spec.background_cpu.is_some());
        if capped && agent.spec.priority() == crate::api::Priority::Background {
            chain.push(BACKGROUND_CGROUP.to_owned());
        }
        let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
        self.config.layout.replica(&refs, &ns, &name, replica).ok()
    }
}

/// Runs the node's loop; returned by [`Node::new`].
pub struct NodeRunner {
    node: Arc<Node>,
    rx: mpsc::UnboundedReceiver<NodeEvent>,
}

impl NodeRunner {
    /// Runs until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let node = self.node.clone();
        ensure_default_budget(&node.client).await;
        let watchers = [
            tokio::spawn(watch_kind::<Agent>(
                node.clone(),
                "agents",
                |a| NodeEvent::Agent(Box::new(a)),
                |a| NodeEvent::AgentGone(key_of(a)),
                Default::default(),
            )),
            tokio::spawn(watch_kind::<ResourceBudget>(
                node.clone(),
                "budgets",
                |b| NodeEvent::Budget(Box::new(b)),
                |b| NodeEvent::BudgetGone(b.name_any()),
                Default::default(),
            )),
            tokio::spawn(watch_kind::<k8s_openapi::api::core::v1::Secret>(
                node.clone(),
                "secrets",
                refs::ObjectChange::secret,
                refs::ObjectChange::secret_gone,
                Default::default(),
            )),
            tokio::spawn(watch_kind::<k8s_openapi::api::core::v1::ConfigMap>(
                node.clone(),
                "configmaps",
                refs::ObjectChange::config_map,
                refs::ObjectChange::config_map_gone,
                // Not the workflow engine's task outputs (up to 1 MiB each, never referenced
                // by agents): the cache holds what agents may use, not every output.
                kube::runtime::watcher::Config::default().labels(refs::NOT_TASK_OUTPUTS),
            )),
        ];
        let mut world = World {
            agents: HashMap::new(),
            budgets: BTreeMap::new(),
            runtime: HashMap::new(),
            budget_written: HashMap::new(),
            alerts_firing: HashMap::new(),
            synced: BTreeSet::new(),
            swept: false,
            starts: Vec::new(),
            starting: HashMap::new(),
            next_listen_check: None,
            listen_checks: 0,
            probe_timer: BTreeSet::new(),
            watches: BTreeMap::new(),
            pressure: BTreeMap::new(),
            frozen: BTreeMap::new(),
            freezes_dirty: true,
            budget_limits: HashMap::new(),
            clamps: BTreeMap::new(),
            budget_paths: BTreeMap::new(),
            doomed: BTreeSet::new(),
            budgets_dirty: true,
            budget_status_dirty: false,
            budget_status_at: None,
            last_decision: None,
            deadlines: Deadlines::default(),
            waiting: BTreeSet::new(),
            // The first full pass moves this to its end (re-adopted replicas get usage at once).
            next_sample: Instant::now() + SAMPLE_EVERY,
            budget_retry: None,
            busy_since_sample: true,
            dirty: BTreeSet::new(),
            all_dirty: true,
        };
        let writer = tokio::spawn(write_statuses(node.clone()));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let wake = world.next_wake(&node);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(wake.into()) => world.wake(&node, Instant::now()),
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        world.apply(&node, ev);
                        // Take whatever else is queued before reconciling once.
                        while let Ok(ev) = self.rx.try_recv() {
                            world.apply(&node, ev);
                        }
                    }
                    None => break,
                },
            }
            if world.synced.len() == watchers.len() && world.has_work() {
                world.reconcile(&node).await;
            }
        }
        for w in watchers {
            w.abort();
        }
        // What is queued still goes out (`a2a run` reports final states), briefly.
        node.writes.closed.store(true, std::sync::atomic::Ordering::Release);
        node.writes.ready.notify_one();
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), writer).await.is_err() {
            abort.abort();
        }
        world.thaw_all(&node);
        if node.config.stop_on_shutdown {
            world.stop_everything(&node, &mut self.rx).await;
        }
    }
}

impl World {
    fn apply(&mut self, node: &Arc<Node>, ev: NodeEvent) {
        match ev {
            NodeEvent::Agent(mut a) => {
                // Field ownership is the API server's business: kept here it would be one
                // more tree of small allocations per agent, for as long as the agent lives.
                a.metadata.managed_fields = None;
                let k = key_of(&*a);
                // Our own status writes come back as events: only a new spec, metadata
                // change or deletion needs a pass for this agent.
                let changed = self.agents.get(&k).is_none_or(|old| {
                    old.metadata.generation != a.metadata.generation
                        || old.metadata.deletion_timestamp != a.metadata.deletion_timestamp
                        || old.metadata.uid != a.metadata.uid
                });
                if changed {
                    self.dirty.insert(k.clone());
                    // A new spec may serve its card: its replicas are probed afresh.
                    if let Some(rt) = self.runtime.get_mut(&k) {
                        rt.start_failures = 0;
                        rt.start_retry_at = None;
                        let now = Instant::now();
                        for r in rt.replicas.values_mut() {
                            r.probes = 0;
                            r.next_probe = now;
                        }
                        self.restart_listen_checks(now);
                    }
                }
                self.agents.insert(k, *a);
            }
            NodeEvent::AgentGone(k) => {
                self.agents.remove(&k);
                crate::metrics::registry().agent_gone(&k.0, &k.1);
                self.freezes_dirty = true;
                self.dirty.insert(k);
                // Freed room may admit the agents that wait for it.
                self.dirty.extend(self.waiting.iter().cloned());
                self.budgets_dirty = true;
            }
            NodeEvent::Budget(b) => {
                let name = b.name_any();
                if self.budgets.get(&name).is_none_or(|old| old.metadata.generation != b.metadata.generation) {
                    self.all_dirty = true;
                    self.budgets_dirty = true;
                }
                self.budgets.insert(name, *b);
            }
            NodeEvent::BudgetGone(n) => {
                self.budgets.remove(&n);
                crate::metrics::registry().budget_gone(&n);
                self.budget_written.remove(&n);
                self.alerts_firing.retain(|(b, _), _| *b != n);
                node.notifier.forget(&n);
                self.all_dirty = true;
                self.budgets_dirty = true;
            }
            NodeEvent::Object(change) => self.object_changed(node, *change),
            NodeEvent::Synced(what) => {
                self.synced.insert(what);
                self.all_dirty = true;
            }
            NodeEvent::Exited { key, replica, pid } => {
                self.dirty.insert(key.clone());
                self.exited(node, &key, replica, pid);
            }
            NodeEvent::Probed { key, replica, pid, card, refused, answered } => {
                if replica == u32::MAX {
                    self.dirty.insert(key.clone());
                    if let Some(rt) = self.runtime.get_mut(&key) {
                        rt.url_probing = false;
                        let (ready, next) = readiness::external_after_probe(
                            card.is_ok(),
                            Instant::now(),
                            &readiness::Schedule::default(),
                        );
                        rt.url_ready = ready;
                        rt.url_next_probe = Some(next);
                        self.deadlines.at(&key, next);
                        match card {
                            Ok(card) => {
                                if card.extended_unused.is_some() && card.extended_unused != rt.extended_unused {
                                    let why = card.extended_unused.as_deref().unwrap_or_default();
                                    tracing::warn!(agent = %key.1, namespace = %key.0, %why, "the agent offers an extended agent card; a2a uses its public card");
                                }
                                rt.card = Some(card.summary);
                                rt.extended_unused = card.extended_unused;
                                rt.url_error = None;
                            }
                            Err(e) => rt.url_error = Some(e),
                        }
                    }
                } else {
                    self.probed(key, replica, pid, card.ok().map(|c| c.summary), refused, answered);
                }
            }
            NodeEvent::WriteFailed(WriteTarget::Agent(k)) => {
                if let Some(rt) = self.runtime.get_mut(&k) {
                    // Compared against nothing, the next pass writes it again.
                    rt.written = None;
                    self.deadlines.at(&k, Instant::now() + node.config.tick);
                }
            }
            NodeEvent::WriteFailed(WriteTarget::Budget(n)) => {
                self.budget_written.remove(&n);
                self.budget_retry = Some(Instant::now() + node.config.tick);
            }
            NodeEvent::Started { key, replica, result } => {
                self.freezes_dirty = true;
                self.started(node, key, replica, *result);
            }
            NodeEvent::Pressure { budget, reading } => self.pressure_changed(node, budget, reading),
        }
    }

    /// When the loop must wake without an event.
    fn next_wake(&self, node: &Node) -> Instant {
        let mut wake = self.next_sample;
        let probe = self.probe_timer.first().map(|(t, ..)| *t);
        let timers = [self.deadlines.next(), self.budget_retry, self.next_listen_check, probe, self.budget_status_at];
        for t in timers.into_iter().flatten() {
            wake = wake.min(t);
        }
        if !self.doomed.is_empty() {
            wake = wake.min(Instant::now() + node.config.tick);
        }
        wake
    }

    /// Timer work: agents whose deadline came, and the periodic sample of every replica.
    fn wake(&mut self, node: &Node, now: Instant) {
        self.dirty.extend(self.deadlines.due(now));
        if self.next_listen_check.is_some_and(|t| t <= now) {
            self.check_listening(node, now);
        }
        self.probes_due(node, now);
        if self.budget_retry.is_some_and(|t| t <= now) {
            self.budget_retry = None;
            self.budgets_dirty = true;
        }
        if self.budget_status_at.is_some_and(|t| t <= now) {
            self.budget_status_at = None;
            self.budget_status_dirty = true;
        }
        if now >= self.next_sample {
            self.sample_all(node, now);
            self.next_sample = now + SAMPLE_EVERY;
            if std::mem::take(&mut self.busy_since_sample) {
                super::sys::release_free_heap();
            }
            // Budgets' `used` and alerts follow the same sample.
            self.budget_status_dirty = true;
        }
    }

    fn has_work(&self) -> bool {
        self.all_dirty
            || self.budgets_dirty
            || self.budget_status_dirty
            || self.freezes_dirty
            || !self.dirty.is_empty()
            || !self.doomed.is_empty()
    }

    /// One pass: admission over every agent (a plain function, cheap), budget cgroups when
    /// budgets changed, the agents an event or deadline named (every agent when budgets
    /// changed), budget cgroups of deleted budgets, and budget statuses when they moved.
    async fn reconcile(&mut self, node: &Arc<Node>) {
        // Only the kernel's readings moved: admission is as it was (it changes with agents,
        // budgets and replicas, which set the other flags), so no pass over 500 agents.
        let only_readings = !(self.all_dirty
            || self.budgets_dirty
            || self.freezes_dirty
            || !self.dirty.is_empty()
            || !self.doomed.is_empty());
        if only_readings && let Some(decision) = self.last_decision.take() {
            self.budget_status_dirty = false;
            self.write_budgets(node, &decision);
            self.last_decision = Some(decision);
            return;
        }
        // /proc/meminfo is costly to read: only when someone asks to be admitted.
        let asking = self
            .agents
            .values()
            .any(|a| a.spec.url.is_none() && self.runtime.get(&key_of(a)).is_none_or(|rt| rt.replicas.is_empty()));
        let available = if asking { host_available_memory() } else { u64::MAX };
        let runtime = &self.runtime;
        let has_replicas = |a: &Agent| runtime.get(&key_of(a)).is_some_and(|rt| !rt.replicas.is_empty());
        let input = facts::admission_input(&self.budgets, self.agents.values(), has_replicas, node.host_cores);
        let decision = admission::decide(&input, available);
        let budgets_changed = self.budgets_dirty || self.all_dirty;
        if budgets_changed {
            self.ensure_budget_cgroups(node, &input.budgets);
            let paths = self.budget_paths.clone();
            self.ensure_pressure_watches(node, &paths);
        }
        // Before the agents' pass: a replica about to stop is thawed first.
        self.apply_freezes(node);

        let keys: BTreeSet<Key> = if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            self.agents.keys().chain(self.runtime.keys()).cloned().collect()
        } else {
            std::mem::take(&mut self.dirty)
        };
        self.busy_since_sample |= !keys.is_empty();
        for k in keys {
            let verdict = decision.verdicts.get(&format!("{}/{}", k.0, k.1)).cloned();
            self.reconcile_agent(node, &k, verdict).await;
        }
        self.hand_off_starts(node);
        self.remove_doomed(node);
        if !self.swept {
            self.swept = true;
            self.sweep_strays(node);
            // Re-adopted replicas get their usage now, not at the next periodic sample.
            self.next_sample = Instant::now();
        }
        let summary_moved = self.last_decision.as_ref().is_none_or(|d| {
            d.allocated != decision.allocated || d.agents != decision.agents || d.pending != decision.pending
        });
        let readings = std::mem::take(&mut self.budget_status_dirty);
        if std::mem::take(&mut self.budgets_dirty) || readings || summary_moved {
            self.write_budgets(node, &decision);
            self.last_decision = Some(decision);
        }
    }

    fn write_budgets(&mut self, node: &Node, decision: &admission::Decision) {
        let per_agent = self.runtime.iter().filter_map(|(k, rt)| {
            let cpu = rt.replicas.values().filter(|r| r.process.is_some()).map(|r| r.cpu_millis).sum();
            Some((self.agents.get(k)?.spec.budget(), cpu))
        });
        let cpu = facts::budget_cpu(&self.budgets, per_agent);
        for (name, b) in &self.budgets {
            // From this node's last write, as for agents (see `base_status`).
            let mut status = self.budget_written.get(name).cloned().or_else(|| b.status.clone()).unwrap_or_default();
            let stats = node.budget_cgroup(&self.budgets, name).and_then(|p| node.driver.stats(&p).ok());
            let pending = decision.pending.get(name).cloned().unwrap_or_default();
            let limits = admission::budget_limits(&b.spec, Host::Local { cores: node.host_cores }).unwrap_or_default();
            let summary = budget_status(&BudgetFacts {
                limits,
                allocated: decision.allocated.get(name).copied().unwrap_or_default(),
                used: facts::budget_use(stats.as_ref(), cpu.get(name).copied().unwrap_or(0)),
                pending: pending.len(),
                alerts: &b.spec.alerts,
            });
            crate::metrics::registry().budget(name, crate::metrics::budget_series(&limits, &summary));
            status.allocated = Some(summary.allocated);
            status.used = summary.used;
            status.agents = decision.agents.get(name).copied().unwrap_or(0);
            status.pending = pending;
            status.observed_generation = b.meta().generation;
            set_condition(&mut status.conditions, summary.pressure);
            self.set_throttle_status(name, &mut status);
            set_limits_clamped(node, b, &mut status, self.clamps.get(name).map(Vec::as_slice).unwrap_or_default());
            for alert in &summary.alerts {
                let is_firing = alert.firing == Some(true);
                let was = self.alerts_firing.insert((name.clone(), alert.resource), is_firing).unwrap_or(false);
                if is_firing != was {
                    record_event(
                        node,
                        b,
                        if is_firing { "AlertFiring" } else { "AlertResolved" },
                        &format!(
                            "{} use is {} the {} threshold",
                            alert.resource,
                            if is_firing { "above" } else { "back below" },
                            alert.above
                        ),
                    );
                }
            }
            node.notifier.observe(b, &summary.alerts, b.status.as_ref());
            set_condition(&mut status.conditions, summary.alert_firing);
            let last = self.budget_written.get(name).or(b.status.as_ref());
            if last == Some(&status) {
                continue;
            }
            self.budget_written.insert(name.clone(), status.clone());
            node.writes.push(WriteTarget::Budget(name.clone()), StatusBody::Budget(Box::new(status)));
        }
    }
}

/// The status a new one is computed from: the one this node wrote last, else the cached one.
/// The node is the only writer of an agent's status, and its own write may still be on its
/// way back through the watch: computed from the older cached status, conditions that did not
/// change would get a new `lastTransitionTime`, and the status would be written twice.
fn base_status(agent: &Agent, rt: &AgentRuntime) -> AgentStatus {
    rt.written.clone().or_else(|| agent.status.clone()).unwrap_or_default()
}

fn agent_status(enforced: bool, agent: &Agent, rt: &AgentRuntime, verdict: Option<&Verdict>) -> AgentStatus {
    let mut status = base_status(agent, rt);
    let generation = agent.meta().generation;
    let mut facts =
        facts::agent_facts(agent, verdict, rt.replicas.values().map(|r| r.view()), rt.last_error.as_deref());
    facts.config_error = rt.refs.error.clone().map(facts::config_error);
    let summary = crate::controller::status::agent_status(&facts);
    for mut c in [summary.admitted, summary.ready] {
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    let running: Vec<&Replica> = rt.replicas.values().filter(|r| r.process.is_some()).map(|r| &**r).collect();
    status.replicas = summary.replicas;
    status.ready_replicas = summary.ready_replicas;
    status.ready = Some(summary.ready_text);
    status.restarts = rt.restarts_base;
    status.last_termination = rt.last_termination.clone();
    status.card = rt.card.clone();
    status.endpoints = running.iter().filter(|r| r.ready).map(|r| format!("http://127.0.0.1:{}/", r.port)).collect();
    // Running replicas, and those that ended for good (so that a restarted node keeps them so).
    status.instances = rt
        .replicas
        .iter()
        .filter(|(_, r)| r.process.is_some() || r.ended.is_some())
        .map(|(i, r)| {
            let running = r.process.is_some();
            Instance {
                replica: *i,
                pid: running.then(|| i32::try_from(r.pid).ok()).flatten(),
                pid_start_time: if running { r.start_time } else { None },
                cgroup: Some(r.cgroup.to_string()),
                port: Some(r.port),
                started_at: Some(r.started_at),
                restarts: r.restarts,
                ready: r.ready,
                spec_hash: Some(r.spec_hash.clone()),
                termination: if running { None } else { r.ended.clone() },
            }
        })
        .collect();
    let mem: u64 = running.iter().map(|r| r.memory).sum();
    let cpu: u64 = running.iter().map(|r| r.cpu_millis).sum();
    // None until a sample read a running replica: no `0` that says nothing was measured.
    status.usage = running.iter().any(|r| r.cpu.is_some()).then(|| Usage {
        memory: Some(format_bytes(mem)),
        memory_bytes: mem,
        cpu: Some(format_millicores(cpu)),
        cpu_millicores: cpu,
        pids: 0,
    });
    status.phase = Some(summary.phase);
    if let Some(c) = summary.throttled {
        set_condition(&mut status.conditions, c);
    }
    if rt.frozen || crate::api::common::find_condition(&status.conditions, "Frozen").is_some() {
        let c = if rt.frozen {
            Condition::new("Frozen", true, "BudgetPressure", "frozen while its budget is under pressure")
        } else {
            Condition::new("Frozen", false, "Thawed", "not frozen")
        };
        set_condition(&mut status.conditions, c);
    }
    if !enforced {
        set_condition(
            &mut status.conditions,
            Condition::new(
                "Enforced",
                false,
                "Unenforced",
                "a2a runs with --allow-unenforced: the kernel does not enforce this agent's limits",
            ),
        );
    }
    status.observed_generation = generation;
    status
}

fn url_status(agent: &Agent, rt: &AgentRuntime) -> AgentStatus {
    let mut status = base_status(agent, rt);
    let url = agent.spec.url.clone().unwrap_or_default();
    status.phase = Some(if rt.url_ready { AgentPhase::Running } else { AgentPhase::Pending });
    status.endpoints = if rt.url_ready { vec![url.clone()] } else { Vec::new() };
    status.ready_replicas = u32::from(rt.url_ready);
    status.ready = Some(format!("{}/1", status.ready_replicas));
    status.card = rt.card.clone();
    set_condition(
        &mut status.conditions,
        Condition::new("Admitted", true, "External", "runs elsewhere; uses no budget"),
    );
    set_condition(
        &mut status.conditions,
        Condition::new(
            "Ready",
            rt.url_ready,
            if rt.url_ready { "CardAnswers" } else { "CardUnreachable" },
            match (&rt.url_error, rt.url_ready) {
                (_, true) => match &rt.extended_unused {
                    None => format!("{url} serves its agent card"),
                    Some(why) => format!("{url} serves its agent card; its extended agent card is not used: {why}"),
                },
                (Some(e), false) => e.clone(),
                (None, false) => format!("{url} does not serve an agent card"),
            },
        ),
    );
    status.observed_generation = agent.meta().generation;
    status
}

/// Queues the status for writing when it differs from the last one queued (or stored).
fn write_agent(node: &Node, agent: &Agent, rt: &mut AgentRuntime, status: AgentStatus) {
    let (ns, name) = key_of(agent);
    crate::metrics::registry().agent_status(
        &ns,
        &name,
        status.replicas,
        status.ready_replicas,
        u64::from(status.restarts),
    );
    let last = rt.written.as_ref().or(agent.status.as_ref());
    if last == Some(&status) {
        return;
    }
    if last.is_none_or(|l| l.usage != status.usage) {
        rt.usage_written_at = Some(Instant::now());
    }
    let old = agent.status.clone().unwrap_or_default();
    if status.last_termination != old.last_termination
        && let Some(t) = &status.last_termination
        && rt.written.as_ref().map(|w| &w.last_termination) != Some(&status.last_termination)
    {
        let (reason, note) = match t.reason {
            crate::api::agent::TerminationReason::OomKilled => {
                ("OOMKilled", "the kernel killed a replica for exceeding its memory limit".to_owned())
            }
            crate::api::agent::TerminationReason::Signaled => {
                ("Signaled", format!("a replica was killed by signal {}", t.signal.unwrap_or(0)))
            }
            crate::api::agent::TerminationReason::Exited => {
                ("Exited", format!("a replica exited with code {}", t.exit_code.map_or("?".into(), |c| c.to_string())))
            }
            crate::api::agent::TerminationReason::Unknown => (
                "ExitUnknown",
                "a replica's process ended while no node watched it; its exit status is lost".to_owned(),
            ),
        };
        record_event(node, agent, reason, &note);
    }
    rt.written = Some(status.clone());
    node.writes.push(WriteTarget::Agent(key_of(agent)), StatusBody::Agent(Box::new(status)));
}

/// Records a core v1 Event about `obj` (shown by `describe`), without waiting for it.
fn record_event<K: Resource<DynamicType = ()>>(node: &Node, obj: &K, reason: &str, message: &str) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    let ns = obj.meta().namespace.clone().unwrap_or_else(|| "default".into());
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let warning = matches!(
        reason,
        "OOMKilled"
            | "Signaled"
            | "AlertFiring"
            | "StartFailed"
            | "LimitsClamped"
            | crate::controller::config_refs::CONFIG_ERROR_REASON
            | "InvalidEnvironmentVariableNames"
    );
    let event = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}.", obj.meta().name.clone().unwrap_or_default())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: obj.meta().name.clone(),
            namespace: obj.meta().namespace.clone(),
            uid: obj.meta().uid.clone(),
            ..Default::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        source: Some(EventSource { component: Some("a2a-node".into()), host: None }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(node.client.clone(), &ns);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's own last write is the base of the next status: with it still on its way
    /// back through the watch, an unchanged agent's status comes out the same (no second
    /// write), its conditions keeping their `lastTransitionTime`.
    #[test]
    fn a_status_computed_again_before_the_watch_returns_it_is_the_same() {
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "a", "namespace": "default", "generation": 1},
            "spec": {"command": ["sleep", "100"]}
        }))
        .unwrap();
        let mut rt = AgentRuntime::default();
        let mut first = agent_status(true, &agent, &rt, Some(&Verdict::Admitted));
        assert!(!first.conditions.is_empty());
        // Written a while ago: computed from anything but this write, the conditions would
        // get the time of now.
        let then = Time(jiff::Timestamp::from_second(1_577_836_800).unwrap());
        for c in &mut first.conditions {
            c.last_transition_time = Some(then);
        }
        rt.written = Some(first.clone());
        let again = agent_status(true, &agent, &rt, Some(&Verdict::Admitted));
        assert_eq!(again, first);
    }
}
