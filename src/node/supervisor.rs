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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::cgroup::{CgroupDriver, CgroupLimits, CgroupPath, Layout};
use super::logs::{self, LogLimits, RelaySpec};
use super::process::{self, AgentProcess, ExitInfo, ProcessSpec};
use super::sandbox::Sandbox;
use crate::api::agent::{
    AgentPhase, AgentStatus, CardSummary, Instance, Protocol, RestartPolicy, Termination, TerminationReason, Usage,
};
use crate::api::budget::{AlertResource, ResourceBudgetStatus};
use crate::api::common::{ConditionStatus, Time, find_condition, set_condition};
use crate::api::quantity::{format_bytes, format_millicores};
use crate::api::{Agent, Condition, DEFAULT_BUDGET, ResourceBudget};
use crate::controller::admission::{self, Amounts, Candidate, Verdict};
use crate::controller::lifecycle::{self, Outcome, Restart};

mod budgets;
mod ending;
use budgets::set_limits_clamped;
use ending::{backoff, outcome_of, remove_in_background};

/// Backoff between restarts of a replica that keeps crashing: the first restart at once, then
/// `restart_backoff` doubling to 5m, reset after 10m of running (see [`lifecycle`]).
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
const RESTART_RESET_AFTER: Duration = Duration::from_secs(600);
/// The cgroup, inside a budget with `backgroundCpu`, that caps its background agents
/// together. The dot keeps it apart from any budget (budget names are DNS labels).
pub const BACKGROUND_CGROUP: &str = "background.cpu";
/// Kernel statistics of every replica are read together this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Usage is written for replicas that have run at least this long (by the wall clock, so a
/// replica re-adopted after a restart of the daemon gets its usage at the first sample).
const USAGE_MIN_AGE: Duration = Duration::from_secs(2);
/// A usage change that is not material is still written after this long (kubelet reports
/// usage as metrics and never rewrites objects for it; here status is the only channel).
const USAGE_HEARTBEAT: Duration = Duration::from_secs(300);
/// A `url` agent's card is fetched again this often once it answers (Kubernetes' default
/// probe period), and after this long when it does not.
const URL_PROBE_EVERY: Duration = Duration::from_secs(10);
const URL_PROBE_RETRY: Duration = Duration::from_secs(2);
/// Status writes in flight at once (the store commits concurrent writes together).
const WRITES_IN_FLIGHT: usize = 32;
/// The status of an agent whose replica is being started waits for the start's outcome (a
/// few milliseconds: one write says admitted and running, not one write each), but no longer
/// than this.
const START_STATUS_HOLD: Duration = Duration::from_secs(1);

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
    /// The binary executed as `a2a log-relay`: by default `/proc/self/exe`, the daemon's own
    /// binary even after an upgrade replaced (unlinked) it on disk, as runc re-executes
    /// itself; `a2a_exe` when the running binary is not a2a (tests, benches).
    pub log_relay_exe: PathBuf,
}

impl NodeConfig {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        NodeConfig {
            home: home.into(),
            layout: Layout::default(),
            a2a_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("a2a")),
            sandbox_dir: PathBuf::from(super::sandbox::DEFAULT_STATE_DIR),
            grace: Duration::from_secs(10),
            tick: Duration::from_secs(2),
            enforced: true,
            stop_on_shutdown: false,
            restart_backoff: Duration::from_secs(1),
            log_limits: LogLimits::default(),
            log_relay_exe: PathBuf::from("/proc/self/exe"),
        }
    }
}

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
        card: Option<CardSummary>,
    },
    /// A queued status write failed: written again later.
    WriteFailed(WriteTarget),
    /// A replica start the loop handed off has finished.
    Started {
        key: Key,
        replica: u32,
        result: Box<Result<Replica, String>>,
    },
}

/// The object a status write is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum WriteTarget {
    Agent(Key),
    Budget(String),
}

enum StatusBody {
    Agent(Box<AgentStatus>),
    Budget(Box<ResourceBudgetStatus>),
}

/// Statuses waiting to be written: the latest one per object. The loop queues; one writer
/// task drains the queue with up to [`WRITES_IN_FLIGHT`] writes at a time (never two for one
/// object at once), so a burst of starts is not serialised behind round trips and commits.
#[derive(Default)]
struct StatusQueue {
    pending: std::sync::Mutex<HashMap<WriteTarget, StatusBody>>,
    ready: tokio::sync::Notify,
    /// Set at shutdown: the writer ends once the queue is empty.
    closed: std::sync::atomic::AtomicBool,
}

impl StatusQueue {
    fn push(&self, target: WriteTarget, body: StatusBody) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(target, body);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<(WriteTarget, StatusBody)> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain().collect()
    }
}

/// Keys to look at again at a given time (restart backoffs, retries, url probes): one
/// timer for all of them, the earliest deadline per key.
#[derive(Default)]
struct Deadlines {
    by_time: BTreeSet<(Instant, Key)>,
    by_key: HashMap<Key, Instant>,
}

impl Deadlines {
    fn at(&mut self, key: &Key, when: Instant) {
        if let Some(old) = self.by_key.get(key) {
            if *old <= when {
                return;
            }
            self.by_time.remove(&(*old, key.clone()));
        }
        self.by_key.insert(key.clone(), when);
        self.by_time.insert((when, key.clone()));
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns the keys due at `now`.
    fn due(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.by_time.first()
            && *t <= now
        {
            if let Some((_, k)) = self.by_time.pop_first() {
                self.by_key.remove(&k);
                out.push(k);
            }
        }
        out
    }
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
    throttling: bool,
    /// Bytes charged at the last sample.
    memory: u64,
    /// Failed readiness probes since the start.
    probes: u32,
}

#[derive(Default)]
struct AgentRuntime {
    replicas: BTreeMap<u32, Replica>,
    last_termination: Option<Termination>,
    card: Option<CardSummary>,
    /// Restarts before this daemon (from status), plus ours.
    restarts_base: u32,
    /// The last status queued for writing.
    written: Option<AgentStatus>,
    /// When a status with a different usage was last queued.
    usage_written_at: Option<Instant>,
    adopted: bool,
    url_ready: bool,
    url_probing: bool,
    /// When the url agent's card is fetched again.
    url_next_probe: Option<Instant>,
    last_error: Option<String>,
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
    /// Set when a node that stops its agents is stopping: no new process or cgroup is made.
    closing: std::sync::atomic::AtomicBool,
    /// Agents' uids, homes and views of the system.
    sandbox: Arc<Sandbox>,
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
}

fn key_of<K: Resource>(o: &K) -> Key {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

fn spec_hash(agent: &Agent) -> String {
    use std::hash::{Hash, Hasher};
    let s = &agent.spec;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&s.command, &s.args, &s.working_dir, &s.user, s.port, &s.writable_paths).hash(&mut h);
    for e in &s.env {
        (&e.name, &e.value).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// The port a replica starts with: the Agent's `port`; else (`port: 0`) the one it had,
/// while nothing else holds it; else a free one no other replica of this node has.
fn assign_port(job: &StartJob, used: &mut HashSet<u16>) -> Result<u16, String> {
    if let Some(p) = job.agent.spec.port.filter(|p| *p > 0) {
        return u16::try_from(p).map_err(|_| format!("port {p} out of range"));
    }
    if let Some(prev) = job.previous
        && std::net::TcpListener::bind(("127.0.0.1", prev.port)).is_ok()
    {
        return Ok(prev.port);
    }
    for _ in 0..64 {
        let p = free_port().map_err(|e| format!("no free port: {e}"))?;
        if used.insert(p) {
            return Ok(p);
        }
    }
    Err("no free port that no other replica has".into())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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
        let node = Arc::new(Node {
            client,
            driver,
            config,
            host_cores,
            tx,
            writes: StatusQueue::default(),
            stdio_runs: std::sync::Mutex::default(),
            start_slots: Arc::new(tokio::sync::Semaphore::new(START_CONCURRENCY)),
            closing: std::sync::atomic::AtomicBool::new(false),
            sandbox,
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
        let mut chain = vec![budget.to_owned()];
        let mut cur = budgets.get(budget)?.spec.parent.clone();
        while let Some(p) = cur {
            if chain.contains(&p) {
                return None;
            }
            chain.push(p.clone());
            cur = budgets.get(&p)?.spec.parent.clone();
        }
        chain.reverse();
        Some(chain)
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

    fn process_spec(&self, agent: &Agent, replica: u32, port: u16) -> Result<ProcessSpec, String> {
        let (ns, name) = key_of(agent);
        let s = &agent.spec;
        let program = match s.command.first().map(String::as_str) {
            Some("a2a") => self.config.a2a_exe.to_string_lossy().into_owned(),
            Some(p) => p.to_owned(),
            None => return Err("spec.command is required to run an agent locally".into()),
        };
        let log = logs::agent_dir(&self.config.home, &ns, &name).join(format!("{replica}.log"));
        let mut spec = ProcessSpec::new(program, log).args(s.command.iter().skip(1).chain(&s.args).cloned());
        spec.log_relay = Some(RelaySpec {
            exe: self.config.log_relay_exe.clone(),
            limits: self.config.log_limits,
            cgroup: self.config.enforced.then(|| logs::relay_cgroup(&self.config.layout)).flatten(),
        });
        for var in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(var) {
                spec = spec.env(var, v);
            }
        }
        // Its credentials, home and view of the system; the Agent's `env` still wins.
        self.sandbox.apply(&mut spec, &ns, &name, s)?;
        for e in &s.env {
            spec = spec.env(&e.name, &e.value);
        }
        spec = spec.env("A2A_PORT", port.to_string()).env("A2A_AGENT", &name).env("A2A_NAMESPACE", &ns);
        spec.working_dir = Some(match &s.working_dir {
            Some(d) => PathBuf::from(d),
            None => {
                let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                super::sandbox::default_working_dir(&cwd, &spec)
            }
        });
        Ok(spec)
    }

    /// Waits (without a thread) until `pid` ends, then reports it.
    fn watch_exit(&self, key: Key, replica: u32, p: &AgentProcess) {
        let pid = p.pid();
        let Ok(fd) = p.pidfd() else { return };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and refers to the
            // same pidfd until the AsyncFd is dropped, which is what registration requires.
            #[allow(unsafe_code)]
            let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            if let Ok(async_fd) = registered {
                let _ = async_fd.readable().await;
            }
            let _ = tx.send(NodeEvent::Exited { key, replica, pid });
        });
    }

    /// Fetches the agent card; a failure is reported only after `retry_after`, so an agent
    /// that never serves a card is probed with backoff, not in a busy loop.
    fn probe(&self, key: Key, replica: u32, pid: u32, url: String, retry_after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let card = match crate::a2a::Client::new(&url) {
                Ok(c) => match tokio::time::timeout(Duration::from_secs(2), c.refresh_agent_card()).await {
                    Ok(Ok(card)) => Some(CardSummary {
                        name: card.name.clone(),
                        version: card.version.clone(),
                        skills: card.skills.iter().map(|s| s.id.clone()).collect(),
                        streaming: card.capabilities.streaming,
                    }),
                    _ => None,
                },
                Err(_) => None,
            };
            if card.is_none() {
                tokio::time::sleep(retry_after).await;
            }
            let _ = tx.send(NodeEvent::Probed { key, replica, pid, card });
        });
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
            )),
            tokio::spawn(watch_kind::<ResourceBudget>(
                node.clone(),
                "budgets",
                |b| NodeEvent::Budget(Box::new(b)),
                |b| NodeEvent::BudgetGone(b.name_any()),
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
            budget_limits: HashMap::new(),
            clamps: BTreeMap::new(),
            budget_paths: BTreeMap::new(),
            doomed: BTreeSet::new(),
            budgets_dirty: true,
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
            if world.synced.len() == 2 && world.has_work() {
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
        if node.config.stop_on_shutdown {
            world.stop_everything(&node, &mut self.rx).await;
        }
    }
}

async fn ensure_default_budget(client: &kube::Client) {
    let api: Api<ResourceBudget> = Api::all(client.clone());
    match api.get_opt(DEFAULT_BUDGET).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(e) = api.create(&PostParams::default(), &default_budget()).await {
                tracing::warn!(error = %e, "could not create the default budget");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the default budget"),
    }
}

/// Drains the status queue: the latest status per object, several writes in flight.
async fn write_statuses(node: Arc<Node>) {
    loop {
        let batch = node.writes.take();
        if batch.is_empty() {
            if node.writes.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            node.writes.ready.notified().await;
            continue;
        }
        futures::stream::iter(batch)
            .for_each_concurrent(WRITES_IN_FLIGHT, |(target, body)| node.write_status(target, body))
            .await;
    }
}

impl Node {
    async fn write_status(&self, target: WriteTarget, body: StatusBody) {
        // Named in the objects' managedFields as the writer of their status.
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let (url, name, status) = match (&target, body) {
            (WriteTarget::Agent((ns, name)), StatusBody::Agent(status)) => {
                (Agent::url_path(&(), Some(ns)), name, serde_json::to_value(&status))
            }
            (WriteTarget::Budget(name), StatusBody::Budget(status)) => {
                (ResourceBudget::url_path(&(), None), name, serde_json::to_value(&status))
            }
            _ => return,
        };
        // The whole status is replaced (a JSON patch `add` of `/status`): a merge patch could
        // not clear what the new status leaves out (`instances` of stopped replicas). The
        // answer (the whole object) is not decoded: nothing here reads it, and the write comes
        // back through the watch anyway.
        let result = match status.map_err(kube::Error::SerdeError).and_then(|value| {
            let add =
                json_patch::AddOperation { path: json_patch::jsonptr::PointerBuf::from_tokens(["status"]), value };
            let patch = Patch::<()>::Json(json_patch::Patch(vec![json_patch::PatchOperation::Add(add)]));
            kube::core::Request::new(url)
                .patch_subresource("status", name, &params, &patch)
                .map_err(kube::Error::BuildRequest)
        }) {
            Ok(request) => self.client.request_text(request).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(target = ?target, error = %e, "status write");
            let _ = self.tx.send(NodeEvent::WriteFailed(target));
        }
    }
}

/// Feeds one kind's watch events into the loop; `InitDone` says the list is complete.
async fn watch_kind<K>(node: Arc<Node>, what: &'static str, apply: fn(K) -> NodeEvent, gone: fn(&K) -> NodeEvent)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let api: Api<K> = Api::all(node.client.clone());
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let sent = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => node.tx.send(apply(o)),
            Ok(watcher::Event::Delete(o)) => node.tx.send(gone(&o)),
            Ok(watcher::Event::InitDone) => node.tx.send(NodeEvent::Synced(what)),
            Ok(watcher::Event::Init) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "{what} watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

impl World {
    fn apply(&mut self, node: &Arc<Node>, ev: NodeEvent) {
        match ev {
            NodeEvent::Agent(a) => {
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
                }
                self.agents.insert(k, *a);
            }
            NodeEvent::AgentGone(k) => {
                self.agents.remove(&k);
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
                self.budget_written.remove(&n);
                self.alerts_firing.retain(|(b, _), _| *b != n);
                self.all_dirty = true;
                self.budgets_dirty = true;
            }
            NodeEvent::Synced(what) => {
                self.synced.insert(what);
                self.all_dirty = true;
            }
            NodeEvent::Exited { key, replica, pid } => {
                self.dirty.insert(key.clone());
                self.exited(node, &key, replica, pid);
            }
            NodeEvent::Probed { key, replica, pid, card } => {
                self.dirty.insert(key.clone());
                if let Some(rt) = self.runtime.get_mut(&key) {
                    if replica == u32::MAX {
                        rt.url_probing = false;
                        rt.url_ready = card.is_some();
                        let next = Instant::now() + if card.is_some() { URL_PROBE_EVERY } else { URL_PROBE_RETRY };
                        rt.url_next_probe = Some(next);
                        self.deadlines.at(&key, next);
                        if card.is_some() {
                            rt.card = card;
                        }
                    } else if let Some(r) = rt.replicas.get_mut(&replica).filter(|r| r.pid == pid) {
                        r.probing = false;
                        if card.is_some() {
                            r.ready = true;
                            rt.card = card;
                        }
                    }
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
            NodeEvent::Started { key, replica, result } => self.started(node, key, replica, *result),
        }
    }

    /// When the loop must wake without an event.
    fn next_wake(&self, node: &Node) -> Instant {
        let mut wake = self.next_sample;
        for t in [self.deadlines.next(), self.budget_retry].into_iter().flatten() {
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
        if self.budget_retry.is_some_and(|t| t <= now) {
            self.budget_retry = None;
            self.budgets_dirty = true;
        }
        if now >= self.next_sample {
            self.sample_all(node, now);
            self.next_sample = now + SAMPLE_EVERY;
            if std::mem::take(&mut self.busy_since_sample) {
                super::sys::release_free_heap();
            }
            // Budgets' `used` and alerts follow the same sample.
            self.budgets_dirty = true;
        }
    }

    fn has_work(&self) -> bool {
        self.all_dirty || self.budgets_dirty || !self.dirty.is_empty() || !self.doomed.is_empty()
    }

    /// Reads every running replica's usage (one coalesced pass, a few control files each,
    /// no allocation per file). Only agents whose status moves
    /// materially get a pass: a Throttled change, memory or cpu moved by 10% (and at least
    /// 4 MiB or 20m), or any change after [`USAGE_HEARTBEAT`].
    fn sample_all(&mut self, node: &Node, now: Instant) {
        let wall = jiff::Timestamp::now();
        for (k, rt) in &mut self.runtime {
            let mut changed = false;
            for r in rt.replicas.values_mut().filter(|r| r.process.is_some()) {
                let Ok(u) = node.driver.usage(&r.cgroup) else { continue };
                if let Some((t, usec)) = r.cpu {
                    let dt = now.duration_since(t).as_micros().max(1) as u64;
                    r.cpu_millis = u.cpu_usage_usec.saturating_sub(usec) * 1000 / dt;
                }
                r.cpu = Some((now, u.cpu_usage_usec));
                r.memory = u.memory_current;
                let throttling = u.nr_throttled > r.throttled && r.throttled > 0;
                changed |= throttling != r.throttling;
                r.throttling = throttling;
                r.throttled = u.nr_throttled;
            }
            let running = || rt.replicas.values().filter(|r| r.process.is_some());
            let (mem, cpu) = (running().map(|r| r.memory).sum::<u64>(), running().map(|r| r.cpu_millis).sum::<u64>());
            let written = rt.written.as_ref().and_then(|w| w.usage.as_ref());
            let moved = |new: u64, old: u64, floor: u64| new.abs_diff(old) >= floor.max(old / 10);
            // A process that has only just started has no usage worth a write yet (its memory
            // is its loading binary, its CPU has no interval); its agent's next sample writes it.
            let settled =
                running().any(|r| wall.duration_since(r.started_at.0).as_millis() >= USAGE_MIN_AGE.as_millis() as i128);
            let material = settled
                && match written {
                    None => true,
                    // Nothing sampled was written yet (the start's status says 0): the first
                    // sample is news however small.
                    Some(w) if w.memory_bytes == 0 && w.cpu_millicores == 0 => mem > 0 || cpu > 0,
                    Some(w) => moved(mem, w.memory_bytes, 4 << 20) || moved(cpu, w.cpu_millicores, 20),
                };
            let stale = written.is_some_and(|w| (w.memory_bytes, w.cpu_millicores) != (mem, cpu))
                && rt.usage_written_at.is_none_or(|t| now.duration_since(t) >= USAGE_HEARTBEAT);
            if changed || material || stale {
                self.dirty.insert(k.clone());
            }
        }
    }

    fn exited(&mut self, node: &Node, key: &Key, replica: u32, pid: u32) {
        let Some(rt) = self.runtime.get_mut(key) else { return };
        let Some(r) = rt.replicas.get_mut(&replica).filter(|r| r.pid == pid && r.process.is_some()) else { return };
        let info = r
            .process
            .as_mut()
            .and_then(|p| p.wait_timeout(Some(Duration::ZERO)).ok().flatten())
            .unwrap_or(ExitInfo { code: None, signal: None });
        let oom_after = node.driver.stats(&r.cgroup).map_or(r.oom_before, |s| s.oom_kills);
        let termination = process::classify(&info, r.oom_before, oom_after, Time::now());
        tracing::info!(agent = %key.1, replica, pid, reason = ?termination.reason, "agent replica exited");
        r.oom_before = oom_after;
        r.process = None;
        r.ready = false;
        let outcome = if info.code == Some(0) { Outcome::Succeeded } else { Outcome::Failed };
        let policy = self.agents.get(key).map_or(RestartPolicy::Always, |a| a.spec.restart_policy());
        let (restart, crashes) = lifecycle::after_exit(policy, outcome, r.started.elapsed(), r.crashes, &backoff(node));
        r.crashes = crashes;
        match restart {
            Restart::After(wait) => {
                let next_start = Instant::now() + wait;
                r.next_start = Some(next_start);
                self.deadlines.at(key, next_start);
            }
            Restart::Never => {
                r.next_start = None;
                r.ended = Some(termination.clone());
                // What the agent forked goes with it, and so does its cgroup.
                remove_in_background(node, r.cgroup.clone());
            }
        }
        rt.last_termination = Some(termination);
    }

    /// One pass: admission over every agent (a plain function, cheap), budget cgroups when
    /// budgets changed, the agents an event or deadline named (every agent when budgets
    /// changed), budget cgroups of deleted budgets, and budget statuses when they moved.
    async fn reconcile(&mut self, node: &Arc<Node>) {
        // /proc/meminfo is costly to read: only when someone asks to be admitted.
        let asking = self
            .agents
            .values()
            .any(|a| a.spec.url.is_none() && self.runtime.get(&key_of(a)).is_none_or(|rt| rt.replicas.is_empty()));
        let available = if asking { host_available_memory() } else { u64::MAX };
        let budgets: Vec<admission::Budget> = self
            .budgets
            .values()
            .map(|b| admission::Budget {
                name: b.name_any(),
                parent: b.spec.parent.clone(),
                limits: admission::Limits {
                    memory: b.spec.limits.memory.as_ref().map(|m| m.value()),
                    cpu_millis: b.spec.limits.cpu.as_ref().map(|c| c.value().millicores(node.host_cores)),
                    pids: b.spec.limits.pids.as_ref().map(|p| p.value()),
                },
                reserve: b.spec.reserve.as_ref().map(|r| r.value()),
            })
            .collect();
        let candidates: Vec<Candidate> = self
            .agents
            .values()
            .filter(|a| a.meta().deletion_timestamp.is_none() && a.spec.url.is_none())
            .map(|a| {
                let k = key_of(a);
                let running = self.runtime.get(&k).is_some_and(|rt| !rt.replicas.is_empty());
                Candidate {
                    key: format!("{}/{}", k.0, k.1),
                    budget: a.spec.budget().to_owned(),
                    priority: a.spec.priority(),
                    created: a.meta().creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
                    demand: admission::demand(a, Some(node.host_cores)),
                    admitted: running
                        || a.status
                            .as_ref()
                            .and_then(|s| find_condition(&s.conditions, "Admitted"))
                            .is_some_and(|c| c.status == ConditionStatus::True),
                }
            })
            .collect();
        let decision = admission::admit(&budgets, &candidates, available);
        let budgets_changed = self.budgets_dirty || self.all_dirty;
        if budgets_changed {
            self.ensure_budget_cgroups(node, &budgets);
        }

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
        if std::mem::take(&mut self.budgets_dirty) || summary_moved {
            self.write_budgets(node, &decision);
            self.last_decision = Some(decision);
        }
    }

    /// Hands the starts the pass decided to blocking threads, `START_CONCURRENCY` at a time,
    /// so the loop goes on with the next events while processes start; each result comes
    /// back as a `Started` event.
    fn hand_off_starts(&mut self, node: &Arc<Node>) {
        if self.starts.is_empty() {
            return;
        }
        // Ports are assigned here, one job after the other: two replicas never get the same
        // free port (a port is free again until the agent binds it).
        let mut used: HashSet<u16> = self
            .runtime
            .values()
            .flat_map(|rt| rt.replicas.values().map(|r| r.port))
            .chain(self.starting.values().map(|(port, ..)| *port))
            .collect();
        let budgets = Arc::new(self.budgets.clone());
        for job in std::mem::take(&mut self.starts) {
            let port = assign_port(&job, &mut used);
            let cgroup = node.replica_cgroup(&self.budgets, &job.agent, job.replica);
            let since = Instant::now();
            self.starting.insert((job.key.clone(), job.replica), (port.as_ref().map_or(0, |p| *p), cgroup, since));
            let (node, budgets) = (node.clone(), budgets.clone());
            tokio::spawn(async move {
                let (key, replica) = (job.key.clone(), job.replica);
                let slot = node.start_slots.clone().acquire_owned().await;
                // The agent's object stays until its processes are gone (see `deletion`); the
                // finalizer's write overlaps the start instead of delaying it.
                let unheld = (!crate::cluster::finalizer::has(&job.agent, super::deletion::PROCESSES_FINALIZER))
                    .then(|| job.agent.clone());
                let hold = async {
                    match unheld {
                        Some(agent) => super::deletion::hold(&node.client, &agent).await,
                        None => Ok(()),
                    }
                };
                let worker = node.clone();
                let start = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    port.and_then(|port| start_replica(&worker, &budgets, &job, port))
                });
                let (held, result) = tokio::join!(hold, start);
                if let Err(e) = held {
                    tracing::warn!(agent = %key.1, error = %e, "the agent's object may go before its processes");
                }
                let result = result.unwrap_or_else(|e| Err(format!("the start panicked: {e}")));
                let _ = node.tx.send(NodeEvent::Started { key, replica, result: Box::new(result) });
            });
        }
    }

    /// Records a finished start. An agent deleted (or scaled down) meanwhile has the new
    /// process stopped right away, or by its next pass.
    fn started(&mut self, node: &Arc<Node>, key: Key, i: u32, result: Result<Replica, String>) {
        self.starting.remove(&(key.clone(), i));
        self.dirty.insert(key.clone());
        let Some(rt) = self.runtime.get_mut(&key).filter(|_| self.agents.contains_key(&key)) else {
            if let Ok(mut r) = result {
                let node = node.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(mut p) = r.process.take() {
                        let _ = p.stop(node.config.grace);
                    }
                    let _ = node.driver.remove(&r.cgroup, Duration::from_secs(5));
                });
            }
            return;
        };
        match result {
            Ok(r) => {
                let restarted = rt.replicas.contains_key(&i);
                node.watch_exit(key.clone(), i, r.process.as_ref().expect("just started"));
                rt.replicas.insert(i, r);
                if restarted {
                    rt.restarts_base += 1;
                }
                rt.last_error = None;
            }
            Err(e) => {
                tracing::warn!(agent = %key.1, replica = i, error = %e, "could not start");
                rt.last_error = Some(e);
                // Tried again at the next tick.
                self.waiting.insert(key);
            }
        }
    }

    /// After a restart: stops the processes of cgroups that no agent or budget owns any more
    /// — agents (or budgets) deleted while the daemon was down, replicas beyond a lowered
    /// `replicas`, stdio runs the previous daemon left — gracefully (SIGTERM, SIGKILL after the
    /// grace period), and removes those cgroups. Runs once, after the first full pass, when
    /// every replica still wanted has been re-adopted; in the background, so the loop goes on.
    fn sweep_strays(&self, node: &Arc<Node>) {
        let mut keep: HashSet<CgroupPath> = HashSet::new();
        let mut leaves: HashSet<CgroupPath> = HashSet::new();
        for rt in self.runtime.values() {
            for r in rt.replicas.values() {
                keep.extend(r.cgroup.ancestors_and_self());
                leaves.insert(r.cgroup.clone());
            }
        }
        for cgroup in self.starting.values().filter_map(|(_, c, _)| c.as_ref()) {
            keep.extend(cgroup.ancestors_and_self());
            leaves.insert(cgroup.clone());
        }
        // The log relays outlive their agents' cgroups by design.
        leaves.extend(logs::relay_cgroup(&node.config.layout));
        for path in self.budget_paths.values() {
            keep.extend(path.ancestors_and_self());
            if let Ok(bg) = path.child(BACKGROUND_CGROUP) {
                keep.insert(bg);
            }
        }
        let top = node.config.layout.top();
        let mut strays = Vec::new();
        let mut dirs = vec![top.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(children) = node.driver.children(&dir) else { continue };
            for c in children {
                if leaves.contains(&c) {
                    continue;
                }
                if keep.contains(&c) {
                    dirs.push(c);
                } else {
                    strays.push(c);
                }
            }
        }
        let agents: HashSet<Key> = self.agents.keys().cloned().collect();
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            for path in strays {
                // A stdio run that started after the listing is not a stray.
                if node.stdio_runs.lock().is_ok_and(|runs| runs.contains(&path)) {
                    continue;
                }
                let pids = node.driver.pids(&path).unwrap_or_default();
                tracing::warn!(
                    cgroup = %path, processes = pids.len(),
                    "stopping a cgroup no agent or budget owns (deleted while the daemon was down)"
                );
                stop_cgroup(node.driver.as_ref(), &path, node.config.grace);
            }
            // Their processes stopped, agents deleted while the daemon was down give back
            // their uids and homes.
            node.sandbox.release_all_but(&agents);
        });
    }

    /// Removes the cgroups of deleted budgets once their agents are gone: the agents lose
    /// their admission with their budget (`BudgetNotFound`) and are stopped first; a cgroup
    /// still holding processes (a replica stopping, a stdio run) is tried again later.
    fn remove_doomed(&mut self, node: &Node) {
        let doomed = std::mem::take(&mut self.doomed);
        for path in doomed {
            match node.driver.pids(&path) {
                Ok(pids) if !pids.is_empty() => {
                    self.doomed.insert(path);
                    continue;
                }
                // Empty, or missing in some hierarchy: removing what remains is a no-op when
                // nothing does.
                _ => {
                    if let Err(e) = node.driver.remove(&path, Duration::from_millis(100)) {
                        tracing::warn!(cgroup = %path, error = %e, "removing a deleted budget's cgroup");
                        self.doomed.insert(path.clone());
                    }
                }
            }
            self.budget_limits.retain(|p, _| !p.ancestors_and_self().any(|a| a == path));
        }
    }

    async fn reconcile_agent(&mut self, node: &Node, k: &Key, verdict: Option<Verdict>) {
        let Some(agent) = self.agents.get(k).cloned() else {
            // Deleted: stop and clean up.
            self.waiting.remove(k);
            if let Some(mut rt) = self.runtime.remove(k) {
                stop_replicas(node, &mut rt, |_| true).await;
            }
            // Its processes are gone: its uid and home go too (awaited, so that an agent
            // created anew under the name starts after the release, not during it).
            let (sandbox, (ns, name)) = (node.sandbox.clone(), k.clone());
            let _ = tokio::task::spawn_blocking(move || sandbox.release(&ns, &name)).await;
            return;
        };
        let rt = self.runtime.entry(k.clone()).or_default();
        if !rt.adopted {
            rt.adopted = true;
            let status = agent.status.clone().unwrap_or_default();
            rt.restarts_base = status.restarts;
            rt.last_termination = status.last_termination.clone();
            rt.card = status.card.clone();
            adopt(node, k, rt, &status.instances, agent.spec.restart_policy());
        }
        if let Some(url) = &agent.spec.url {
            if !rt.url_probing && rt.url_next_probe.is_none_or(|t| t <= Instant::now()) {
                rt.url_probing = true;
                node.probe(k.clone(), u32::MAX, 0, url.clone(), Duration::ZERO);
            }
            let status = url_status(&agent, rt);
            write_agent(node, &agent, rt, status);
            return;
        }
        let admitted = matches!(verdict, Some(Verdict::Admitted));
        let desired = if admitted && agent.spec.protocol() == Protocol::A2a { agent.spec.replicas() } else { 0 };
        // Scale down, and stop everything of an agent that lost its admission.
        stop_replicas(node, rt, |i| i >= desired).await;
        if agent.meta().deletion_timestamp.is_some()
            && rt.replicas.is_empty()
            && !self.starting.keys().any(|(key, _)| key == k)
            && crate::cluster::finalizer::has(&agent, super::deletion::PROCESSES_FINALIZER)
        {
            let (client, home) = (node.client.clone(), node.config.home.clone());
            tokio::spawn(async move {
                if let Err(e) = super::deletion::release(&client, &home, &agent).await {
                    tracing::warn!(agent = %agent.name_any(), error = %e, "releasing a deleted agent");
                }
            });
            return;
        }
        let hash = spec_hash(&agent);
        let limits = CgroupLimits::for_agent(&agent.spec.resources, agent.spec.priority(), node.host_cores);
        let policy = agent.spec.restart_policy();
        // A command change restarts one replica at a time, when all others are ready.
        let all_ready = rt.replicas.values().filter(|r| r.ended.is_none()).all(|r| r.ready);
        let mut rolled = false;
        // Whether this pass decided a start for the agent (its status then waits, see below).
        let mut start_decided = false;
        for i in 0..desired {
            if self.starting.contains_key(&(k.clone(), i)) {
                continue;
            }
            let exists = rt.replicas.get(&i).is_some_and(|r| r.process.is_some());
            if exists {
                let r = rt.replicas.get_mut(&i).expect("checked above");
                if r.spec_hash != hash && all_ready && !rolled {
                    rolled = true;
                    if let Some(p) = r.process.as_mut() {
                        let _ = p.stop(node.config.grace);
                    }
                    r.process = None;
                    r.ready = false;
                    r.next_start = None;
                } else {
                    if r.limits != limits {
                        match node.driver.update(&r.cgroup, &limits) {
                            Ok(()) => r.limits = limits.clone(),
                            Err(e) => tracing::warn!(agent = %k.1, error = %e, "updating limits"),
                        }
                    }
                    continue;
                }
            }
            // An ended replica stays stopped unless its policy was edited to restart it.
            if let Some(t) = rt.replicas.get(&i).and_then(|r| r.ended.as_ref())
                && !lifecycle::starts_again(policy, outcome_of(t))
            {
                continue;
            }
            if let Some(t) = rt.replicas.get(&i).and_then(|r| r.next_start).filter(|t| *t > Instant::now()) {
                self.deadlines.at(k, t);
                continue;
            }
            // Started with the other starts of this pass, concurrently (see `hand_off_starts`).
            start_decided = true;
            self.starts.push(StartJob {
                key: k.clone(),
                replica: i,
                agent: agent.clone(),
                limits: limits.clone(),
                hash: hash.clone(),
                previous: rt.replicas.get(&i).map(|r| Previous {
                    port: r.port,
                    restarts: r.restarts,
                    crashes: r.crashes,
                }),
            });
        }
        // Probes for replicas not ready yet.
        for (i, r) in rt.replicas.iter_mut() {
            if r.process.is_some() && !r.ready && !r.probing {
                r.probing = true;
                // 20 ms after a start, doubling to 2 s for an agent that is slow to serve its card.
                let wait =
                    (Duration::from_millis(20) * 2u32.saturating_pow(r.probes.min(7))).min(Duration::from_secs(2));
                r.probes += 1;
                node.probe(k.clone(), *i, r.pid, format!("http://127.0.0.1:{}", r.port), wait);
            }
        }
        // A stdio agent needs only its cgroup parent (runs get their own cgroups): the budget's
        // cgroup, made with the budget's limits (ensuring it here with no limits would lift them).
        if admitted
            && agent.spec.protocol() == Protocol::Stdio
            && let Some(parent) = node.replica_cgroup(&self.budgets, &agent, 0).and_then(|p| p.parent())
            && !node.driver.exists(&parent)
        {
            rt.last_error = Some(format!("its budget's cgroup {parent} does not exist"));
        }
        // Agents that wait for room (host memory can free without any event) or failed to
        // start are looked at again every tick.
        if !admitted || rt.last_error.is_some() {
            self.waiting.insert(k.clone());
            self.deadlines.at(k, Instant::now() + node.config.tick);
        } else {
            self.waiting.remove(k);
        }
        // A start on its way: its outcome is the next status, unless it takes long.
        let now = Instant::now();
        let start_due = (0..desired)
            .filter_map(|i| self.starting.get(&(k.clone(), i)).map(|(.., since)| *since + START_STATUS_HOLD))
            .chain(start_decided.then_some(now + START_STATUS_HOLD))
            .min();
        if let Some(due) = start_due.filter(|due| *due > now) {
            self.deadlines.at(k, due);
            return;
        }
        let mut status = agent_status(node.config.enforced, &agent, rt, verdict.as_ref(), desired);
        set_condition(&mut status.conditions, node.sandbox.condition(&k.0, &k.1, &agent.spec));
        write_agent(node, &agent, rt, status);
    }

    fn write_budgets(&mut self, node: &Node, decision: &admission::Decision) {
        for (name, b) in &self.budgets {
            // From this node's last write, as for agents (see `base_status`).
            let mut status = self.budget_written.get(name).cloned().or_else(|| b.status.clone()).unwrap_or_default();
            let a = decision.allocated.get(name).copied().unwrap_or_default();
            status.allocated = Some(a.into());
            let used = node
                .budget_cgroup(&self.budgets, name)
                .and_then(|p| node.driver.stats(&p).ok())
                .map(|s| Amounts { memory: s.memory_current, cpu_millis: 0, pids: s.pids_current })
                .unwrap_or_default();
            status.used = Some(used.into());
            status.agents = decision.agents.get(name).copied().unwrap_or(0);
            status.pending = decision.pending.get(name).cloned().unwrap_or_default();
            status.observed_generation = b.meta().generation;
            let mem_limit = b.spec.limits.memory.as_ref().map(|m| m.value());
            let pressure =
                mem_limit.is_some_and(|l| l > 0 && used.memory * 100 / l >= 90) || !status.pending.is_empty();
            set_condition(
                &mut status.conditions,
                Condition::new(
                    "Pressure",
                    pressure,
                    if pressure { "NearLimit" } else { "Room" },
                    if status.pending.is_empty() {
                        format!("{} of memory in use", format_bytes(used.memory))
                    } else {
                        format!("{} agent(s) waiting for room", status.pending.len())
                    },
                ),
            );
            set_limits_clamped(node, b, &mut status, self.clamps.get(name).map(Vec::as_slice).unwrap_or_default());
            let mut firing = Vec::new();
            for alert in &b.spec.alerts {
                let (what, used_v, limit) = match alert.resource {
                    AlertResource::Memory => ("memory", used.memory, mem_limit),
                    AlertResource::Pids => ("pids", used.pids, b.spec.limits.pids.as_ref().map(|p| p.value())),
                    AlertResource::Cpu => ("cpu", 0, None),
                };
                let Some(limit) = limit.filter(|l| *l > 0) else { continue };
                let bp = u64::from(alert.above.value());
                let is_firing = used_v.saturating_mul(10_000) / limit >= bp;
                let was = self.alerts_firing.insert((name.clone(), what), is_firing).unwrap_or(false);
                if is_firing {
                    firing.push(format!("{what} above {}", alert.above));
                }
                if is_firing != was {
                    record_event(
                        node,
                        b,
                        if is_firing { "AlertFiring" } else { "AlertResolved" },
                        &format!(
                            "{what} use is {} the {} threshold",
                            if is_firing { "above" } else { "back below" },
                            alert.above
                        ),
                    );
                }
            }
            set_condition(
                &mut status.conditions,
                Condition::new(
                    "AlertFiring",
                    !firing.is_empty(),
                    if firing.is_empty() { "BelowThresholds" } else { "ThresholdCrossed" },
                    if firing.is_empty() { "no alert threshold crossed".to_owned() } else { firing.join(", ") },
                ),
            );
            let last = self.budget_written.get(name).or(b.status.as_ref());
            if last == Some(&status) {
                continue;
            }
            self.budget_written.insert(name.clone(), status.clone());
            node.writes.push(WriteTarget::Budget(name.clone()), StatusBody::Budget(Box::new(status)));
        }
    }
}

/// Takes over the replicas listed in status: re-adopts those whose process still runs in its
/// cgroup; keeps those listed as ended stopped (unless the policy now restarts them); and
/// treats one whose process is gone as ended with its exit status lost — started again at once
/// unless its policy is `Never` (see [`lifecycle`]).
fn adopt(node: &Node, k: &Key, rt: &mut AgentRuntime, instances: &[Instance], policy: RestartPolicy) {
    for inst in instances {
        let (Some(cgroup), Some(port)) = (inst.cgroup.as_deref(), inst.port) else { continue };
        let Ok(path) = CgroupPath::parse(cgroup) else { continue };
        let Some(pid) = inst.pid.and_then(|p| u32::try_from(p).ok()) else {
            if let Some(t) = &inst.termination {
                rt.replicas.insert(inst.replica, Replica::gone(path, port, inst, Some(t.clone())));
            }
            continue;
        };
        match AgentProcess::adopt(node.driver.as_ref(), &path, pid, inst.pid_start_time) {
            Ok(p) => {
                tracing::info!(agent = %k.1, replica = inst.replica, pid, "re-adopted a running replica");
                node.watch_exit(k.clone(), inst.replica, &p);
                let oom_before = node.driver.stats(&path).map_or(0, |s| s.oom_kills);
                rt.replicas.insert(
                    inst.replica,
                    Replica {
                        cgroup: path,
                        // Unknown after a restart: the first pass writes the current limits once.
                        limits: CgroupLimits { pids_max: Some(u64::MAX), ..Default::default() },
                        port,
                        start_time: Some(p.start_time()),
                        process: Some(p),
                        pid,
                        started_at: inst.started_at.unwrap_or_else(Time::now),
                        started: Instant::now(),
                        ready: inst.ready,
                        probing: false,
                        spec_hash: inst.spec_hash.clone().unwrap_or_default(),
                        restarts: inst.restarts,
                        next_start: None,
                        crashes: 0,
                        ended: None,
                        oom_before,
                        cpu: None,
                        cpu_millis: 0,
                        throttled: 0,
                        throttling: false,
                        memory: 0,
                        probes: 0,
                    },
                );
            }
            Err(e) => {
                let lost =
                    Termination { reason: TerminationReason::Unknown, exit_code: None, signal: None, at: Time::now() };
                let restart = lifecycle::starts_again(policy, Outcome::Unknown);
                tracing::info!(
                    agent = %k.1, replica = inst.replica, pid, error = %e, restart,
                    "its process ended while no node watched it"
                );
                // Whatever is left in its cgroup goes (a start makes the cgroup anew anyway).
                if !restart {
                    remove_in_background(node, path.clone());
                }
                rt.replicas.insert(inst.replica, Replica::gone(path, port, inst, (!restart).then(|| lost.clone())));
                rt.last_termination = Some(lost);
            }
        }
    }
}

/// Stops every process of `path` (and below) gracefully — SIGTERM, then SIGKILL after
/// `grace` — and removes the cgroup.
fn stop_cgroup(driver: &dyn CgroupDriver, path: &CgroupPath, grace: Duration) {
    let signal_all = |sig: rustix::process::Signal| {
        for pid in driver.pids(path).unwrap_or_default() {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    };
    signal_all(rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && driver.pids(path).is_ok_and(|p| !p.is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = driver.remove(path, Duration::from_secs(5)) {
        tracing::warn!(cgroup = %path, error = %e, "removing a stray cgroup");
    }
}

/// What a new start of a replica keeps from the one before it.
#[derive(Clone, Copy, Debug)]
struct Previous {
    port: u16,
    restarts: u32,
    crashes: u32,
}

/// One replica to start, decided by a pass and run with the others of the pass.
struct StartJob {
    key: Key,
    replica: u32,
    agent: Agent,
    limits: CgroupLimits,
    hash: String,
    previous: Option<Previous>,
}

/// How many replicas start at once. A start mostly waits on the kernel (cgroup migration
/// takes a global lock and an RCU grace period; exec), so starts overlap well even on two
/// cores; the bound keeps a burst from taking every blocking thread.
const START_CONCURRENCY: usize = 8;

fn start_replica(
    node: &Node,
    budgets: &BTreeMap<String, ResourceBudget>,
    job: &StartJob,
    port: u16,
) -> Result<Replica, String> {
    let StartJob { agent, replica: i, limits, hash, previous, .. } = job;
    let (i, previous) = (*i, *previous);
    if node.closing.load(std::sync::atomic::Ordering::Acquire) {
        return Err("the control plane is stopping".into());
    }
    let cgroup = node.replica_cgroup(budgets, agent, i).ok_or("no valid cgroup path for this agent")?;
    // A restart reuses its cgroup when nothing is left in it: remaking it costs an rmdir and a
    // mkdir in every hierarchy (five on v1) on the way of a crashed agent back to running. Its
    // OOM count carries over, as the new baseline; usage is sampled as differences anyway.
    let empty = |c: &CgroupPath| {
        node.driver.pids(c).is_ok_and(|p| p.is_empty()) && node.driver.children(c).is_ok_and(|c| c.is_empty())
    };
    let reused = previous.is_some()
        && node.driver.exists(&cgroup)
        && empty(&cgroup)
        && node.driver.update(&cgroup, limits).is_ok();
    // Otherwise a fresh cgroup (create remakes a leftover empty one), so counters start at zero.
    if !reused {
        match node.driver.create(&cgroup, limits) {
            // Leftovers of the previous run (children the agent forked): kill them, start clean.
            Err(super::cgroup::Error::InUse { .. }) => {
                node.driver.remove(&cgroup, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                node.driver.create(&cgroup, limits).map_err(|e| e.to_string())?;
            }
            other => other.map_err(|e| e.to_string())?,
        }
    }
    let oom_before = if reused { node.driver.stats(&cgroup).map_or(0, |s| s.oom_kills) } else { 0 };
    let spec = node.process_spec(agent, i, port)?;
    let p = process::spawn(node.driver.as_ref(), &cgroup, &spec).map_err(|e| e.to_string())?;
    tracing::info!(agent = %agent.name_any(), replica = i, pid = p.pid(), port, "started agent replica");
    Ok(Replica {
        cgroup,
        limits: limits.clone(),
        port,
        pid: p.pid(),
        start_time: Some(p.start_time()),
        process: Some(p),
        started_at: Time::now(),
        started: Instant::now(),
        ready: false,
        probing: false,
        spec_hash: hash.to_owned(),
        restarts: previous.as_ref().map_or(0, |r| r.restarts + 1),
        next_start: None,
        crashes: previous.as_ref().map_or(0, |r| r.crashes),
        ended: None,
        oom_before,
        cpu: None,
        cpu_millis: 0,
        throttled: 0,
        throttling: false,
        memory: 0,
        probes: 0,
    })
}

async fn stop_replicas(node: &Node, rt: &mut AgentRuntime, which: impl Fn(u32) -> bool) {
    let doomed: Vec<u32> = rt.replicas.keys().copied().filter(|i| which(*i)).collect();
    for i in doomed {
        if let Some(mut r) = rt.replicas.remove(&i) {
            if let Some(mut p) = r.process.take() {
                let grace = node.config.grace;
                let _ = tokio::task::spawn_blocking(move || p.stop(grace)).await;
            }
            if let Err(e) = node.driver.remove(&r.cgroup, Duration::from_secs(5)) {
                tracing::warn!(cgroup = %r.cgroup, error = %e, "removing cgroup");
            }
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

fn agent_status(
    enforced: bool,
    agent: &Agent,
    rt: &AgentRuntime,
    verdict: Option<&Verdict>,
    desired: u32,
) -> AgentStatus {
    let mut status = base_status(agent, rt);
    let generation = agent.meta().generation;
    let mut admitted = match verdict {
        Some(Verdict::Admitted) => Condition::new("Admitted", true, "Admitted", "fits in its budget"),
        Some(Verdict::Pending { reason, message }) => Condition::new("Admitted", false, reason, message.clone()),
        None => Condition::new("Admitted", false, "Unknown", "not considered yet"),
    };
    admitted.observed_generation = generation;
    set_condition(&mut status.conditions, admitted);
    let running: Vec<&Replica> = rt.replicas.values().filter(|r| r.process.is_some()).collect();
    let ready = running.iter().filter(|r| r.ready).count() as u32;
    let is_stdio = agent.spec.protocol() == Protocol::Stdio;
    let admitted_ok = matches!(verdict, Some(Verdict::Admitted));
    status.replicas = running.len() as u32;
    status.ready_replicas = if is_stdio && admitted_ok { agent.spec.replicas() } else { ready };
    let shown_desired = agent.spec.replicas();
    status.ready = Some(format!("{}/{shown_desired}", status.ready_replicas));
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
    status.usage = (!running.is_empty()).then(|| Usage {
        memory: Some(format_bytes(mem)),
        memory_bytes: mem,
        cpu: Some(format_millicores(cpu)),
        cpu_millicores: cpu,
        pids: 0,
    });
    let (phase, reason, message) = if !admitted_ok {
        (AgentPhase::Pending, "NotAdmitted", "waiting for room in its budget".to_owned())
    } else if let Some(e) = &rt.last_error {
        (AgentPhase::Failed, "StartFailed", e.clone())
    } else if is_stdio {
        (AgentPhase::Running, "StdioReady", "runs its command once per task".to_owned())
    } else if desired == 0 {
        (AgentPhase::Stopped, "ScaledToZero", "replicas is 0".to_owned())
    } else if ready >= desired {
        (AgentPhase::Running, "AllReplicasReady", format!("{ready}/{desired} replicas ready"))
    } else if ready > 0 {
        (AgentPhase::Degraded, "ReplicasNotReady", format!("{ready}/{desired} replicas ready"))
    } else if running.is_empty()
        && agent.spec.restart_policy() != RestartPolicy::Always
        && rt.last_termination.is_some()
    {
        (AgentPhase::Stopped, "Exited", "the process ended and its restart policy does not restart it".to_owned())
    } else {
        (AgentPhase::Starting, "Starting", format!("0/{desired} replicas ready"))
    };
    status.phase = Some(phase);
    let ok = matches!(phase, AgentPhase::Running);
    let mut ready_cond = Condition::new("Ready", ok, reason, message);
    ready_cond.observed_generation = generation;
    set_condition(&mut status.conditions, ready_cond);
    let throttling = running.iter().any(|r| r.throttling);
    set_condition(
        &mut status.conditions,
        Condition::new(
            "Throttled",
            throttling,
            if throttling { "CPUQuotaReached" } else { "BelowQuota" },
            if throttling { "the kernel is throttling it at its cpu limit" } else { "not throttled" },
        ),
    );
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
            if rt.url_ready {
                format!("{url} serves its agent card")
            } else {
                format!("{url} does not serve an agent card")
            },
        ),
    );
    status.observed_generation = agent.meta().generation;
    status
}

/// Queues the status for writing when it differs from the last one queued (or stored).
fn write_agent(node: &Node, agent: &Agent, rt: &mut AgentRuntime, status: AgentStatus) {
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
    let warning = matches!(reason, "OOMKilled" | "Signaled" | "AlertFiring" | "StartFailed" | "LimitsClamped");
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

/// Runs stdio tasks: each one is a fresh process in its own cgroup (the agent's limits),
/// the message on stdin, stdout the result; a non-zero exit fails with stderr.
pub struct StdioTasks {
    node: Arc<Node>,
    budgets: Arc<std::sync::Mutex<BTreeMap<String, ResourceBudget>>>,
    next: std::sync::atomic::AtomicU64,
}

impl StdioTasks {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(StdioTasks { node, budgets: Arc::default(), next: std::sync::atomic::AtomicU64::new(0) })
    }
}

impl crate::controller::engine::StdioRunner for StdioTasks {
    fn run(
        &self,
        agent: &Agent,
        input: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, crate::controller::engine::StdioError>> + Send>,
    > {
        let node = self.node.clone();
        let agent = agent.clone();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let budgets = self.budgets.lock().map(|b| b.clone()).unwrap_or_default();
        let run = async move {
            // Runs are numbered past any replica index, so they never share a replica's cgroup.
            let slot = 1_000_000 + u32::try_from(n % 1_000_000).unwrap_or(0);
            let api: Api<ResourceBudget> = Api::all(node.client.clone());
            let budgets = if budgets.is_empty() {
                api.list(&Default::default())
                    .await
                    .map(|l| l.items.into_iter().map(|b| (b.name_any(), b)).collect())
                    .unwrap_or_default()
            } else {
                budgets
            };
            let cgroup = node.replica_cgroup(&budgets, &agent, slot).ok_or("no valid cgroup path")?;
            let limits = CgroupLimits::for_agent(&agent.spec.resources, agent.spec.priority(), node.host_cores);
            tokio::task::spawn_blocking(move || {
                let track = |add: bool| {
                    let mut runs = node.stdio_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Checked under the lock `stop_stdio_runs` takes: a run either is seen there
                    // or never starts.
                    if add && node.closing.load(std::sync::atomic::Ordering::Acquire) {
                        return false;
                    }
                    if add {
                        runs.insert(cgroup.clone())
                    } else {
                        runs.remove(&cgroup)
                    };
                    true
                };
                if !track(true) {
                    return Err("the control plane is stopping".to_owned());
                }
                let result = node
                    .driver
                    .create(&cgroup, &limits)
                    .map_err(|e| e.to_string())
                    .and_then(|()| run_stdio(&node, &agent, &cgroup, input));
                let _ = node.driver.remove(&cgroup, Duration::from_secs(5));
                track(false);
                result
            })
            .await
            .map_err(|e| format!("stdio run panicked: {e}"))?
        };
        Box::pin(async move { run.await.map_err(Into::into) })
    }
}

fn run_stdio(node: &Node, agent: &Agent, cgroup: &CgroupPath, input: String) -> Result<String, String> {
    use std::io::{Read, Write};
    let spec = node.process_spec(agent, 0, 0)?;
    let mut p = process::spawn_piped(node.driver.as_ref(), cgroup, &spec).map_err(|e| e.to_string())?;
    let process::Pipes { mut stdin, mut stdout, mut stderr } = p.take_pipes().ok_or("no pipes to the stdio process")?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).map_err(|e| format!("reading stdout: {e}"))?;
    let _ = writer.join();
    let err = err_reader.join().unwrap_or_default();
    let oom_before = 0;
    let info = p.wait_timeout(None).map_err(|e| e.to_string())?.unwrap_or(ExitInfo { code: None, signal: None });
    let oom_after = node.driver.stats(cgroup).map_or(0, |s| s.oom_kills);
    let t = process::classify(&info, oom_before, oom_after, Time::now());
    match (info.code, t.reason) {
        (Some(0), _) => Ok(String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned()),
        (_, crate::api::agent::TerminationReason::OomKilled) => {
            Err("the run was OOM-killed at its memory limit".into())
        }
        (Some(code), _) => Err(format!("exited with code {code}: {}", err.trim())),
        (None, _) => Err(format!("killed by signal {}: {}", info.signal.unwrap_or(0), err.trim())),
    }
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
        let first = agent_status(true, &agent, &rt, Some(&Verdict::Admitted), 1);
        assert!(!first.conditions.is_empty());
        rt.written = Some(first.clone());
        std::thread::sleep(Duration::from_millis(5));
        let again = agent_status(true, &agent, &rt, Some(&Verdict::Admitted), 1);
        assert_eq!(again, first);
    }
}
