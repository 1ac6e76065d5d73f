//! The workflow engine: watches Workflows and Agents through any Kubernetes-shaped API (the
//! local `a2a serve` or a cluster), runs each workflow's state machine ([`super::plan`]),
//! dispatches ready tasks by priority through [`super::dispatch`], talks A2A to agents, and
//! writes status back, coalesced.
//!
//! Crash safety rests on two facts: status is the only memory that matters, and every
//! attempt has a stable messageId (`<workflow uid>-<task>-<attempt>`). After a restart a task
//! that is Running with an A2A task id is followed with `GetTask`; one without an id is sent
//! again with the same messageId, which an agent recognises as the same attempt. Because of
//! that, status writes need not precede the A2A calls and can be batched.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use super::attempts::Attempts;
use super::dispatch::{DispatchQueue, Queued, Target};
use super::outputs;
use super::plan;
use crate::a2a;
use crate::api::agent::{AgentPhase, Protocol};
use crate::api::workflow::{TaskPhase, WorkflowPhase, WorkflowSpec, WorkflowStatus};
use crate::api::{Agent, Workflow};
pub(crate) use attempt::addressing;
use attempt::open_tasks;
pub use call::{Admitted, CallRequest, NotAdmitted};

/// A Workflow as the engine's watch reads it: only its metadata. Every status write of the
/// engine comes back through the watch; decoding a 10,000-task workflow each time would be
/// most of the engine's work. The whole object is read (GET) only when it is new to the
/// engine or its spec's generation changed.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct WatchedWorkflow {
    metadata: ObjectMeta,
}

impl Resource for WatchedWorkflow {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Workflow")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(crate::api::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(crate::api::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("workflows")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An annotation that asks the engine to cancel a workflow (`a2a cancel wf NAME`).
pub const CANCEL_ANNOTATION: &str = "a2a.dev/cancel";
/// An annotation that asks the engine to re-run failed tasks (`a2a retry wf NAME`): a
/// [`crate::api::workflow::RetryRequest`] as JSON. A request is done once the `Retried`
/// condition's message equals it.
pub const RETRY_ANNOTATION: &str = "a2a.dev/retry";
/// The condition that records the last retry request handled.
pub const RETRIED_CONDITION: &str = "Retried";

pub use super::outputs::MAX_OUTPUT_IN_STATUS;
pub use flush::StatusWrites;

mod access;
mod attempt;
mod call;
mod explain;
mod flush;
mod parts;
pub(crate) mod remote;
mod reply;
mod throttle;
mod trace;

/// The longest a large workflow's next step waits for more finished tasks to join it.
const MAX_STEP_PAUSE: Duration = Duration::from_millis(5);

/// Why a stdio run failed, in the runner's own terms.
pub type StdioError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one task on a `stdio` agent: the message on stdin, the result from stdout.
pub trait StdioRunner: Send + Sync {
    fn run(&self, agent: &Agent, input: String) -> Pin<Box<dyn Future<Output = Result<String, StdioError>> + Send>>;
}

/// Why an attempt failed: the text becomes the task's `status.error`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the workflow or agent is gone")]
    Gone,
    #[error("the workflow is gone")]
    WorkflowGone,
    #[error("the whole output of task {task:?} cannot be read: {source}")]
    LoadOutput {
        task: String,
        #[source]
        source: outputs::LoadError,
    },
    #[error("the output ({bytes} bytes) could not be stored beside the workflow in ConfigMaps: {source}")]
    StoreOutput {
        bytes: usize,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Message(#[from] crate::api::template::RenderError),
    #[error("stdio agents run only in local mode")]
    StdioLocalOnly,
    #[error(transparent)]
    Stdio(StdioError),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("cancelled")]
    Cancelled,
    #[error("cancelled before the agent answered")]
    CancelledBeforeAnswer,
    #[error("agent {0:?} has no ready endpoint")]
    NoEndpoint(String),
    #[error(transparent)]
    A2a(#[from] a2a::client::Error),
    #[error(transparent)]
    Credentials(#[from] super::credentials::Error),
    #[error("the agent ended the task as {state}")]
    EndedSilently { state: &'static str },
    #[error("{state}: {text}")]
    Ended { state: &'static str, text: String },
    #[error(transparent)]
    Peer(#[from] crate::discovery::remote::PeerFailure),
    #[error("{why}; the last answer: {source}")]
    Deferred {
        why: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The reason, when the attempt failed in a way a retry repeats: the agent refused the
    /// credentials (401/403), its certificate does not verify, or the credentials the card
    /// asks for are not configured. The task fails at once, whatever its retry policy.
    pub fn permanent_reason(&self) -> Option<&'static str> {
        use a2a::client::Error as E;
        match self {
            Error::A2a(e @ E::Auth { .. }) if !e.is_retryable() => Some("AuthenticationFailed"),
            Error::A2a(E::Tls { .. } | E::TlsConfig { .. }) => Some("TLSError"),
            Error::A2a(E::Unauthorized { .. }) => Some("Unauthorized"),
            _ => None,
        }
    }
}

/// `namespace/name`.
pub type Key = (String, String);

/// An attempt whose start is recorded.
struct Begun {
    /// Resolves when the attempt is cancelled.
    cancelled: watch::Receiver<bool>,
    /// The attempt was started before and may have been sent (see `WorkflowState::begin`).
    sent_before: bool,
    /// This engine wrote the attempt's context ahead of its start (see
    /// `WorkflowState::reserved`): it is durable once status write round `.0` is.
    reserved: Option<u64>,
}

/// One queued attempt, naming its task (a task's position in the spec is not its identity:
/// an edit may move it while the attempt is in flight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    pub workflow: Key,
    /// The workflow's uid: an attempt of a deleted workflow never lands in a re-created one.
    pub uid: Arc<str>,
    pub task: Arc<str>,
    pub attempt: u32,
    /// After a restart: the A2A task the attempt already has, to follow instead of send.
    pub resume: Option<String>,
    /// An answer to the question the A2A task `resume` asked: sent on that task, which is then
    /// followed.
    pub reply: Option<Arc<crate::api::workflow::Reply>>,
}

/// What waits in the dispatch queue: an attempt of a workflow task, or a call from outside
/// the engine (the host's A2A gateway) that needs an agent slot ([`call`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    Task(TaskRef),
    /// An admission request, by its id.
    Call(u64),
}

impl Work {
    /// The workflow task, when this is one.
    pub fn task(&self) -> Option<&TaskRef> {
        match self {
            Work::Task(t) => Some(t),
            Work::Call(_) => None,
        }
    }
}

struct WorkflowState {
    uid: String,
    /// `metadata.generation` of the spec held (status writes do not change it).
    generation: Option<i64>,
    spec: WorkflowSpec,
    /// The spec's dependency structure and task positions, for steps.
    index: plan::Index,
    /// Always aligned with `spec`, task for task: the two are replaced together.
    status: WorkflowStatus,
    /// Something in `status` is not written yet.
    dirty: bool,
    /// The next write sends the whole status (first write, task list rebuilt, a patch refused);
    /// otherwise only the tasks in `changed` and the top-level fields are sent.
    rewrite: bool,
    changed: Marks,
    /// Attempts queued or running, by task name.
    attempts: Attempts,
    wake_at: Option<Timestamp>,
    /// Already followed after a restart (A2A task ids adopted from status).
    adopted: bool,
    /// The workflow carries the cancel annotation.
    cancel_requested: bool,
    /// Whole outputs of tasks whose status holds only the first 64 KiB (by task name), and data
    /// kept beside the workflow (by `TASK.data`), for the templates of downstream tasks (read
    /// back from their ConfigMaps on first use; dropped at the end).
    full_outputs: HashMap<String, Arc<str>>,
    /// How often the agent deferred each task's current attempt with `Retry-After`.
    deferrals: HashMap<Arc<str>, u32>,
    /// When each task's fresh attempt was queued, for the dispatch-latency histogram.
    queued_at: HashMap<Arc<str>, std::time::Instant>,
    /// The last status write that reached the store: every change made before status write
    /// number `written` began is durable.
    written: u64,
    /// The workflow's root span is recorded (it had finished when the engine took it, or
    /// finished since).
    trace_ended: bool,
    /// Queued attempts whose context this engine recorded ahead of their start, so that one
    /// durable status write serves the blocking sends of many (see `Engine::reserve_contexts`):
    /// by task name, (attempt, the status write round that makes the context durable). A
    /// context in the status without an entry here (after a restart) means the attempt may
    /// have been sent.
    reserved: HashMap<Arc<str>, (u32, u64)>,
    /// The spec as written when it has `forEach` tasks (`spec` is then its expansion).
    declared: Option<WorkflowSpec>,
    /// `forEach` tasks waiting for their upstream task: (task, upstream task).
    for_each_waiting: Vec<(String, String)>,
}

impl WorkflowState {
    /// `status.observedGeneration` says which spec the status is about: set when the engine
    /// takes a spec, written with the next flush (top-level fields go with every write).
    fn observe_generation(&mut self) {
        if self.generation.is_some() && self.status.observed_generation != self.generation {
            self.status.observed_generation = self.generation;
            self.dirty = true;
        }
    }

    fn new(uid: String, generation: Option<i64>, spec: WorkflowSpec, mut status: WorkflowStatus) -> Self {
        let (spec, declared, for_each_waiting, invalid) = match super::expand::expand(&spec, &status.tasks) {
            Some(e) => (e.spec, Some(spec), e.waiting, e.invalid),
            None => (spec, None, Vec::new(), Vec::new()),
        };
        plan::align(&spec, &mut status);
        let status_finished = status.phase.is_some_and(WorkflowPhase::is_terminal);
        let mut w = WorkflowState {
            uid,
            generation,
            index: plan::Index::new(&spec),
            spec,
            status,
            dirty: false,
            rewrite: true,
            changed: Marks::default(),
            attempts: Attempts::default(),
            wake_at: None,
            adopted: false,
            cancel_requested: false,
            full_outputs: HashMap::new(),
            deferrals: HashMap::new(),
            queued_at: HashMap::new(),
            written: 0,
            trace_ended: status_finished,
            reserved: HashMap::new(),
            declared,
            for_each_waiting,
        };
        w.for_each_failed(invalid);
        w
    }

    /// `forEach` tasks whose upstream output is not an array fail, saying why.
    fn for_each_failed(&mut self, invalid: Vec<(String, String)>) {
        let now = Timestamp::now();
        for (name, why) in invalid {
            if let Some(i) = self.index.position(&name)
                && !self.status.tasks[i].phase.is_terminal()
            {
                plan::record_final_failure(&mut self.status, i, super::expand::FOR_EACH_INVALID, why, now);
                self.touch(i);
            }
        }
    }

    /// Whether a `forEach` task's upstream task has succeeded since the spec was expanded.
    fn for_each_ready(&self) -> bool {
        self.for_each_waiting.iter().any(|(_, source)| {
            self.index.position(source).is_some_and(|j| self.status.tasks[j].phase == TaskPhase::Succeeded)
        })
    }

    /// Takes a new spec of the same workflow. The status is realigned to it by task name at
    /// once (so a position in the spec is the same task's position in the status), and the
    /// attempts of tasks the new spec no longer has are cancelled and forgotten: their
    /// outcomes are never recorded. Returns the names of those tasks.
    fn replace_spec(&mut self, spec: WorkflowSpec, generation: Option<i64>) -> Vec<Arc<str>> {
        let (spec, invalid) = match super::expand::expand(&spec, &self.status.tasks) {
            Some(e) => {
                self.declared = Some(spec);
                self.for_each_waiting = e.waiting;
                (e.spec, e.invalid)
            }
            None => {
                self.declared = None;
                self.for_each_waiting.clear();
                (spec, Vec::new())
            }
        };
        self.index = plan::Index::new(&spec);
        self.spec = spec;
        self.generation = generation;
        // Contexts recorded ahead stay in the status; an attempt that finds one without its
        // reservation looks for its task first, as after a restart.
        self.reserved.clear();
        if plan::align(&self.spec, &mut self.status) {
            // Every entry may have moved: indices noted for a patch mean nothing now.
            self.changed.take();
            self.touch_all();
            plan::settle(&mut self.status, Timestamp::now());
        }
        let index = &self.index;
        let gone = self.attempts.keep_only(|n| index.position(n).is_some());
        // Keys are task names, or `TASK.data` for data kept beside the workflow.
        self.full_outputs.retain(|n, _| index.position(n.split('.').next().unwrap_or(n)).is_some());
        self.observe_generation();
        self.for_each_failed(invalid);
        gone
    }

    /// Attempt `t` (token `token`) starts on `agent`: records the start and makes it the
    /// task's current attempt. `None` when the workflow is another (re-created) one, is being
    /// cancelled, or no longer has the task.
    ///
    /// `Begun::sent_before` says that this very attempt was started before (a restart, or a
    /// deferral): its message, with the context the status names, may have reached the agent.
    fn begin(&mut self, t: &TaskRef, token: u64, agent: &str, now: Timestamp) -> Option<Begun> {
        if *t.uid != *self.uid || self.cancel_requested {
            return None;
        }
        let i = self.index.position(&t.task)?;
        let started = self.status.tasks[i].started_at;
        // A context this engine recorded ahead for this very attempt: never sent.
        let reserved =
            self.reserved.remove(&t.task).filter(|(attempt, _)| *attempt == t.attempt).map(|(_, round)| round);
        let stored = self.status.tasks[i].a2a_context_id.take();
        let context = match stored {
            Some(c) if reserved.is_some() => Some(c),
            // This attempt's context, written with its start or ahead of it (the attempt number
            // is in the context): the message may have been sent.
            Some(c)
                if self.status.tasks[i].attempts == t.attempt
                    || c == plan::context_id(&self.uid, &t.task, t.attempt) =>
            {
                Some(c)
            }
            _ => None,
        };
        let reserved = reserved.filter(|_| context.is_some());
        plan::record_start(&mut self.status, i, t.attempt, agent, now);
        if let Some(id) = &t.resume {
            // The same attempt, followed again: it keeps its id and start time.
            self.status.tasks[i].a2a_task_id = Some(id.clone());
            self.status.tasks[i].started_at = started.or(Some(crate::api::common::Time(now)));
        }
        if let Some(queued) = self.queued_at.remove(&t.task) {
            crate::metrics::registry().task_dispatched(&t.workflow.0, &t.workflow.1, queued.elapsed());
        }
        let sent_before = context.is_some() && reserved.is_none() && t.resume.is_none() && t.reply.is_none();
        self.status.tasks[i].a2a_context_id = context;
        self.touch(i);
        Some(Begun { cancelled: self.attempts.start(&t.task, token), sent_before, reserved })
    }

    /// Records the outcome of attempt `t` (token `token`) under its task's name, only if that
    /// attempt is still the task's current one. Returns whether it was recorded.
    fn record(&mut self, t: &TaskRef, token: u64, outcome: Result<Outcome, Error>, now: Timestamp) -> bool {
        if *t.uid != *self.uid || !self.attempts.end(&t.task, token) {
            return false;
        }
        let Some(i) = self.index.position(&t.task) else { return false };
        if self.status.tasks[i].phase != TaskPhase::Running {
            return false;
        }
        let took = self.status.tasks[i].started_at.and_then(|s| Duration::try_from(now.duration_since(s.0)).ok());
        let (ns, wf) = &t.workflow;
        // Gathered only when spans are exported.
        let span = crate::traces::exporting().then(|| trace::AttemptSpan {
            workflow: &t.workflow,
            uid: &self.uid,
            task: &t.task,
            attempt: t.attempt,
            reply: t.reply.as_ref().map(|r| r.id.as_str()),
            agent: self.status.tasks[i].agent.clone(),
            skill: self.spec.tasks[i].skill.clone(),
            a2a_task_id: self.status.tasks[i].a2a_task_id.clone(),
            start: self.status.tasks[i].started_at.map_or(now, |s| s.0),
            end: now,
        });
        let error = match &outcome {
            Err(e) if span.is_some() => Some(e.to_string()),
            _ => None,
        };
        let ended = |outcome: &str, reason: &str| {
            crate::metrics::registry().task_ended(ns, wf, outcome, reason, took);
            if let Some(span) = &span {
                span.record(outcome, reason, error.as_deref());
            }
        };
        match outcome {
            Err(_) if self.cancel_requested => {
                ended("cancelled", "Cancelled");
                plan::record_cancelled(&mut self.status, i, now);
            }
            Ok(Outcome::Waiting(Waiting { phase, a2a_task_id, question })) => {
                ended("waiting", "InputRequired");
                // Nothing is sent or polled until the question is answered; a cancel
                // requested meanwhile finds the task waiting and cancels it on the agent.
                plan::record_waiting(&mut self.status, i, phase, a2a_task_id, question);
                self.status.tasks[i].waiting_since = Some(crate::api::common::Time(now));
            }
            Ok(Outcome::Done(Output { text, reference, whole, parts })) => {
                ended("succeeded", "Completed");
                plan::record_success(&mut self.status, i, text, now);
                self.status.tasks[i].output_ref = reference;
                let (data, listing) = parts.map(|p| (p.data, p.listing)).unwrap_or_default();
                self.status.tasks[i].data = data;
                self.status.tasks[i].parts = listing;
                match whole {
                    Some(whole) => self.full_outputs.insert(t.task.to_string(), whole),
                    None => self.full_outputs.remove(&*t.task),
                };
                // Data an earlier attempt kept beside the workflow is not this attempt's (the
                // key is only made when there may be some).
                if !self.full_outputs.is_empty() {
                    self.full_outputs.remove(&super::parts::data_key(&t.task));
                }
            }
            // A retry would present the same refused credentials or meet the same certificate.
            Err(e) => match e.permanent_reason() {
                Some(reason) => {
                    ended("failed", reason);
                    plan::record_final_failure(&mut self.status, i, reason, e.to_string(), now);
                }
                None => {
                    let retried = plan::record_failure(&self.spec, &mut self.status, i, e.to_string(), now);
                    if retried { ended("retried", "AttemptFailed") } else { ended("failed", "AttemptFailed") }
                }
            },
        }
        self.touch(i);
        true
    }

    /// Records the root span once the workflow has finished (once per engine: a workflow
    /// that `a2a retry` runs again keeps the span of its first end).
    fn end_trace(&mut self, k: &Key) {
        if !self.trace_ended && self.status.phase.is_some_and(WorkflowPhase::is_terminal) {
            self.trace_ended = true;
            trace::workflow_ended(k, &self.uid, &self.status);
        }
    }

    /// Task `i`'s status changed.
    fn touch(&mut self, i: usize) {
        self.dirty = true;
        self.changed.insert(i);
    }

    /// Many tasks may have changed: write the whole status.
    fn touch_all(&mut self) {
        self.dirty = true;
        self.rewrite = true;
    }
}

/// A set of task indices that remembers insertion order, with O(1) insert.
#[derive(Default)]
struct Marks {
    flags: Vec<bool>,
    list: Vec<usize>,
}

impl Marks {
    fn insert(&mut self, i: usize) {
        if self.flags.len() <= i {
            self.flags.resize(i + 1, false);
        }
        if !std::mem::replace(&mut self.flags[i], true) {
            self.list.push(i);
        }
    }

    fn take(&mut self) -> Vec<usize> {
        for &i in &self.list {
            self.flags[i] = false;
        }
        std::mem::take(&mut self.list)
    }
}

struct AgentView {
    /// Shared with the attempts that use it: an attempt takes the agent as it was when it
    /// started without copying its spec and card.
    agent: Arc<Agent>,
    next_endpoint: usize,
}

#[derive(Default)]
struct State {
    workflows: HashMap<Key, WorkflowState>,
    agents: HashMap<Key, AgentView>,
    queue: DispatchQueue<Work>,
    /// The queue or an agent changed: the reasons of queued tasks are looked at again.
    explain: bool,
    /// ResourceBudgets by name, for their rate limits.
    budgets: HashMap<String, crate::api::ResourceBudget>,
    /// The rate limits of agents and budgets, and the requests counted against them.
    rates: super::rate::RateLimits,
    /// The rate-limit permits of attempts whose request is not answered yet, by token.
    permits: HashMap<u64, super::rate::Permit>,
    /// The last dispatch pass held a task back for a rate limit.
    rate_held: bool,
    /// Calls waiting for a slot, by id: where their assignment goes.
    calls: HashMap<u64, call::Waiting>,
}

/// Options of the engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// How often dirty statuses are written.
    pub flush_interval: Duration,
    pub stdio: Option<Arc<dyn StdioRunner>>,
    /// Only these namespaces (empty: all).
    pub namespace: Option<String>,
    /// Joined peers that may take tasks whose placement lets them leave the host.
    pub remote: Option<Arc<crate::discovery::remote::RemoteWork>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { flush_interval: Duration::from_millis(25), stdio: None, namespace: None, remote: None }
    }
}

/// The running engine.
pub struct Engine {
    client: kube::Client,
    config: EngineConfig,
    state: Mutex<State>,
    wake: Notify,
    flush: Notify,
    /// The status writes attempts wait for before sending (see `flush::Durable`).
    durable: flush::Durable,
    /// Workflows whose state machine must run; many requests make one step.
    to_step: Mutex<HashSet<Key>>,
    step: Notify,
    /// A2A clients by endpoint, with the credentials they were made with (see `access`).
    clients: Mutex<HashMap<(String, String), access::Cached>>,
    /// Tells attempts apart (see [`Attempts`]).
    next_token: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop the engine: the data is still consistent per operation.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key_of<K: Resource>(o: &K) -> Key {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

impl Engine {
    pub fn new(client: kube::Client, config: EngineConfig) -> Arc<Self> {
        Arc::new(Engine {
            client,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            flush: Notify::new(),
            durable: flush::Durable::default(),
            to_step: Mutex::new(HashSet::new()),
            step: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Runs until `shutdown` resolves; then writes what is dirty and returns.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        crate::traces::start_from_env();
        let weak = Arc::downgrade(&self);
        crate::metrics::registry().add_engine(Box::new(move || weak.upgrade().map(|e| e.gauges())));
        let agents = tokio::spawn(self.clone().watch_agents());
        let workflows = tokio::spawn(self.clone().watch_workflows());
        let dispatcher = tokio::spawn(self.clone().dispatcher());
        let flusher = tokio::spawn(self.clone().flusher());
        let timer = tokio::spawn(self.clone().timer());
        let stepper = tokio::spawn(self.clone().stepper());
        let budgets = tokio::spawn(self.clone().watch_budgets());
        shutdown.await;
        for t in [agents, workflows, dispatcher, timer, stepper, budgets] {
            t.abort();
        }
        flusher.abort();
        self.flush_all().await;
        crate::traces::flush().await;
    }

    /// The queue and in-flight gauges of the metrics, as they are now.
    fn gauges(&self) -> crate::metrics::EngineGauges {
        let st = lock(&self.state);
        let mut g = crate::metrics::EngineGauges::default();
        for q in st.queue.iter() {
            let priority = format!("{:?}", q.priority).to_lowercase();
            *g.queued.entry((q.namespace.clone(), priority)).or_default() += 1;
        }
        for (k, slots) in st.queue.agents() {
            g.in_flight.insert(k.clone(), u64::from(slots.in_flight));
        }
        g
    }

    fn agent_api(&self) -> Api<Agent> {
        match &self.config.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    async fn watch_agents(self: Arc<Self>) {
        let mut stream = watcher(self.agent_api(), watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => self.agent_changed(a),
                Ok(watcher::Event::Delete(a)) => {
                    // Also on a cluster, where no node sees an agent go.
                    crate::metrics::registry().agent_gone(&a.namespace().unwrap_or_default(), &a.name_any());
                    self.forget_clients(&a.uid().unwrap_or_default());
                    let k = key_of(&a);
                    let mut st = lock(&self.state);
                    st.agents.remove(&k);
                    st.queue.remove_agent(&k.0, &k.1);
                    Self::configure_agent_rate(&mut st.rates, &k, None);
                    st.explain = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "agent watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn agent_changed(&self, mut a: Agent) {
        // Not read here; dropped rather than held for every agent (see the node's cache).
        a.metadata.managed_fields = None;
        let k = key_of(&a);
        let status = a.status.clone().unwrap_or_default();
        let ready_replicas = match a.spec.protocol() {
            // A stdio agent has no server: it is usable once admitted (its phase says so).
            Protocol::Stdio => {
                if matches!(status.phase, Some(AgentPhase::Running)) {
                    a.spec.replicas()
                } else {
                    0
                }
            }
            Protocol::A2a if status.endpoints.is_empty() => 0,
            Protocol::A2a => status.ready_replicas.max(1),
        };
        let capacity = ready_replicas.saturating_mul(a.spec.max_concurrent_tasks());
        let mut skills: BTreeSet<String> = a.spec.skills.iter().cloned().collect();
        if let Some(card) = &status.card {
            skills.extend(card.skills.iter().cloned());
        }
        let mut st = lock(&self.state);
        st.queue.set_agent(&k.0, &k.1, capacity > 0, capacity, skills);
        Self::configure_agent_rate(&mut st.rates, &k, Some(&a));
        let next = st.agents.get(&k).map_or(0, |v| v.next_endpoint);
        st.agents.insert(k, AgentView { agent: Arc::new(a), next_endpoint: next });
        st.explain = true;
        drop(st);
        self.wake.notify_one();
    }

    async fn watch_workflows(self: Arc<Self>) {
        let api: Api<WatchedWorkflow> = match &self.config.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) => self.workflow_seen(w).await,
                Ok(watcher::Event::Delete(w)) => self.workflow_deleted(&key_of(&w)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "workflow watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// A watch event: the annotations are taken as they are; the whole workflow is read only
    /// when it is new to the engine or its spec changed.
    async fn workflow_seen(self: &Arc<Self>, w: WatchedWorkflow) {
        let k = key_of(&w);
        let WatchedWorkflow { metadata } = w;
        let uid = metadata.uid.unwrap_or_default();
        let generation = metadata.generation;
        let current = {
            let st = lock(&self.state);
            st.workflows.get(&k).is_some_and(|s| s.uid == uid && generation.is_some() && s.generation == generation)
        };
        if current {
            self.annotations_changed(&k, &metadata.annotations.unwrap_or_default());
            return;
        }
        let api: Api<Workflow> = Api::namespaced(self.client.clone(), &k.0);
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=5 {
            match api.get_opt(&k.1).await {
                Ok(Some(mut full)) => {
                    // A restart: a big workflow's tasks are read back from beside it.
                    if let Err(e) = super::offload::fill(&self.client, &mut full).await {
                        if attempt < 5 {
                            tracing::warn!(workflow = %k.1, attempt, error = %e, "reading the tasks' status failed");
                            tokio::time::sleep(wait).await;
                            wait *= 2;
                            continue;
                        }
                        tracing::error!(workflow = %k.1, error = %e, "the tasks' status cannot be read; tasks not found in it start again");
                    }
                    return self.workflow_changed(full);
                }
                // Deleted meanwhile: the watch says so next.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(workflow = %k.1, attempt, error = %e, "reading the workflow failed");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }

    fn workflow_changed(self: &Arc<Self>, w: Workflow) {
        let k = key_of(&w);
        let Workflow { metadata, spec, status } = w;
        let uid = metadata.uid.unwrap_or_default();
        let generation = metadata.generation;
        let mut st = lock(&self.state);
        match st.workflows.get_mut(&k) {
            // Known, with an older spec: only the spec is taken (status is the engine's).
            Some(s) if s.uid == uid => {
                let gone = s.replace_spec(spec, generation);
                if !gone.is_empty() {
                    tracing::info!(workflow = %k.1, tasks = ?gone, "tasks left the spec; their attempts are cancelled");
                    st.queue.retain(|w| w.task().is_none_or(|t| t.workflow != k || !gone.contains(&t.task)));
                }
            }
            _ => {
                let mut s = WorkflowState::new(uid, generation, spec, status.unwrap_or_default());
                s.observe_generation();
                st.workflows.insert(k.clone(), s);
            }
        }
        drop(st);
        self.annotations_changed(&k, &metadata.annotations.unwrap_or_default());
    }

    /// Takes the cancel and retry requests a workflow's annotations make, and steps it.
    fn annotations_changed(self: &Arc<Self>, k: &Key, annotations: &std::collections::BTreeMap<String, String>) {
        if let Some(s) = lock(&self.state).workflows.get_mut(k) {
            s.cancel_requested = annotations.contains_key(CANCEL_ANNOTATION);
            if let Some(request) = annotations.get(RETRY_ANNOTATION) {
                Self::apply_retry(k, s, request);
            }
        }
        self.schedule(k);
    }

    /// Handles a retry request once: resets the tasks and records the request as handled.
    fn apply_retry(k: &Key, w: &mut WorkflowState, request: &str) {
        use crate::api::common::{Condition, find_condition};
        if find_condition(&w.status.conditions, RETRIED_CONDITION).is_some_and(|c| c.message == request) {
            return;
        }
        let refused = |e: &dyn std::error::Error| {
            tracing::warn!(workflow = %k.1, error = %e, "retry request refused");
            (false, "Invalid")
        };
        let (ok, reason) = match crate::api::workflow::RetryRequest::parse(request) {
            Ok(r) => match plan::retry(&w.spec, &mut w.status, &r.tasks) {
                Ok(names) => {
                    tracing::info!(workflow = %k.1, tasks = ?names, "retrying tasks on request");
                    (true, "Requested")
                }
                Err(e) => refused(&e),
            },
            Err(e) => refused(&e),
        };
        w.status.conditions.retain(|c| c.type_ != RETRIED_CONDITION);
        w.status.conditions.push(Condition::new(RETRIED_CONDITION, ok, reason, request));
        w.touch_all();
    }

    fn workflow_deleted(&self, k: &Key) {
        let mut st = lock(&self.state);
        if let Some(w) = st.workflows.remove(k) {
            w.attempts.cancel_all();
        }
        st.queue.retain(|w| w.task().is_none_or(|t| &t.workflow != k));
        crate::metrics::registry().workflow_gone(&k.0, &k.1);
    }

    /// Asks for `k`'s state machine to run soon. Requests made while a step is pending join
    /// it: a burst of finished tasks costs one pass over the workflow, not one per task.
    fn schedule(&self, k: &Key) {
        if lock(&self.to_step).insert(k.clone()) {
            self.step.notify_one();
        }
    }

    async fn stepper(self: Arc<Self>) {
        loop {
            self.step.notified().await;
            let started = std::time::Instant::now();
            let due: Vec<Key> = lock(&self.to_step).drain().collect();
            for k in due {
                self.advance(&k);
            }
            // A step costs O(tasks): after a costly round (a very large workflow, or very many
            // workflows), let finished tasks pile up meanwhile, so stepping takes at most a
            // tenth of the time. Slots a finished task frees do not wait for it (they wake the
            // dispatcher at once); tasks its end makes ready do. Rounds of small steps take
            // microseconds and never wait.
            let pause = (started.elapsed() * 9).min(MAX_STEP_PAUSE);
            if pause >= Duration::from_micros(250) {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Runs the state machine of one workflow and queues what became ready.
    fn advance(self: &Arc<Self>, k: &Key) {
        let now = Timestamp::now();
        let mut resumes = Vec::new();
        let mut st = lock(&self.state);
        let State { workflows, queue, agents, explain, .. } = &mut *st;
        let Some(w) = workflows.get_mut(k) else { return };
        // A `forEach` task's upstream task succeeded: expand it before anything is dispatched.
        if w.for_each_ready()
            && let Some(declared) = w.declared.clone()
        {
            let generation = w.generation;
            w.replace_spec(declared, generation);
        }
        if !w.adopted {
            w.adopted = true;
            // After a restart: tasks that were running are followed (or re-sent) as they were.
            for t in &w.status.tasks {
                if t.phase == TaskPhase::Running && !w.attempts.is_busy(&t.name) {
                    resumes.push((
                        Arc::<str>::from(t.name.as_str()),
                        t.attempts.max(1),
                        t.agent.clone(),
                        t.a2a_task_id.clone(),
                    ));
                }
            }
        }
        if w.cancel_requested {
            let cancelling = plan::cancel(&mut w.status, now);
            if cancelling.changed {
                w.touch_all();
            }
            for &i in &cancelling.running {
                w.attempts.cancel(&w.status.tasks[i].name);
            }
            let abandoned = open_tasks(&k.0, &w.status, &cancelling.abandoned, agents);
            // Queued attempts that have not started are dropped.
            w.attempts.drop_queued();
            queue.retain(|w| w.task().is_none_or(|t| &t.workflow != k));
            w.end_trace(k);
            drop(st);
            self.cancel_abandoned(abandoned);
            self.flush.notify_one();
            return;
        }
        // Answers to questions: the waiting tasks they answer run again on their A2A tasks.
        for taken in super::replies::take(&w.spec, &mut w.status, now) {
            w.touch(taken.index);
            let name: Arc<str> = Arc::from(w.spec.tasks[taken.index].name.as_str());
            w.attempts.queue(&name);
            tracing::info!(workflow = %k.1, task = %name, reply = %taken.reply.id, "delivering a reply");
            queue.push(Queued {
                namespace: k.0.clone(),
                target: Target::Agent(taken.agent),
                priority: crate::api::Priority::Critical,
                item: Work::Task(TaskRef {
                    workflow: k.clone(),
                    uid: Arc::from(w.uid.as_str()),
                    task: name,
                    attempt: taken.attempt,
                    resume: Some(taken.a2a_task_id),
                    reply: Some(Arc::new(taken.reply)),
                }),
            });
        }
        let (attempts, spec) = (&w.attempts, &w.spec);
        let queued = |i: usize| !attempts.is_empty() && attempts.is_busy(&spec.tasks[i].name);
        let step = plan::step_indexed(&w.spec, &w.index, true, &mut w.status, now, queued);
        w.dirty |= step.changed;
        w.rewrite |= step.realigned;
        for &i in &step.touched {
            w.changed.insert(i);
        }
        w.wake_at = step.wake_at;
        for i in step.cancel {
            w.attempts.cancel(&w.spec.tasks[i].name);
        }
        let abandoned = open_tasks(&k.0, &w.status, &step.abandoned, agents);
        let uid: Arc<str> = Arc::from(w.uid.as_str());
        // Newly queued tasks get their reason (if they cannot be dispatched) on the next tick.
        *explain |= !step.ready.is_empty();
        for r in step.ready {
            let name: Arc<str> = Arc::from(r.name.as_str());
            if !w.attempts.queue(&name) {
                continue;
            }
            w.queued_at.insert(name.clone(), std::time::Instant::now());
            let task = &w.spec.tasks[r.index];
            let target = match (&task.agent, &task.skill) {
                (Some(a), _) => Target::Agent(a.clone()),
                (None, Some(s)) => Target::Skill(s.clone()),
                (None, None) => continue,
            };
            let agent = match &target {
                Target::Agent(a) => agents.get(&(k.0.clone(), a.clone())).map(|v| &*v.agent),
                Target::Skill(_) => None,
            };
            let priority = plan::effective_priority(&r, agent);
            queue.push(Queued {
                namespace: k.0.clone(),
                target,
                priority,
                item: Work::Task(TaskRef {
                    workflow: k.clone(),
                    uid: uid.clone(),
                    task: name,
                    attempt: r.attempt,
                    resume: None,
                    reply: None,
                }),
            });
        }
        for (name, attempt, agent, task_id) in resumes {
            // Back to the same agent (when it is known and ready again), first in line.
            let Some(agent) = agent else { continue };
            // An attempt that was on a peer is sent again by its skill (execution at least once).
            let (target, task_id) = match agent.strip_prefix(remote::PEER_PREFIX) {
                Some(_) => match w.index.position(&name).and_then(|i| w.spec.tasks[i].skill.clone()) {
                    Some(skill) => (Target::Skill(skill), None),
                    None => continue,
                },
                None => (Target::Agent(agent), task_id),
            };
            w.attempts.queue(&name);
            queue.push(Queued {
                namespace: k.0.clone(),
                target,
                priority: crate::api::Priority::Critical,
                item: Work::Task(TaskRef {
                    workflow: k.clone(),
                    uid: uid.clone(),
                    task: name,
                    attempt,
                    resume: task_id,
                    reply: None,
                }),
            });
        }
        let finished = w.status.phase.is_some_and(WorkflowPhase::is_terminal);
        if finished {
            w.full_outputs = HashMap::new();
            w.end_trace(k);
        }
        if finished && let (Some(ttl), Some(done)) = (&w.spec.ttl_after_finished, w.status.finished_at) {
            let at = done.0 + jiff::SignedDuration::try_from(ttl.value()).unwrap_or(jiff::SignedDuration::MAX);
            w.wake_at = Some(w.wake_at.map_or(at, |x| x.min(at)));
        }
        drop(st);
        self.cancel_abandoned(abandoned);
        self.wake.notify_one();
        self.flush.notify_one();
    }

    async fn dispatcher(self: Arc<Self>) {
        // When a task held by a rate limit may go: the dispatcher wakes itself then.
        let mut opens: Option<std::time::Instant> = None;
        loop {
            match opens {
                Some(at) => tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                },
                None => self.wake.notified().await,
            }
            opens = self.dispatch_pass();
        }
    }

    /// One dispatch pass: what may go now is sent (attempts) or handed to its caller (calls);
    /// returns when a task held by a rate limit may go.
    fn dispatch_pass(self: &Arc<Self>) -> Option<std::time::Instant> {
        // `lan` tasks go to a peer first; `any` tasks only when no local agent took them.
        self.dispatch_remote(crate::api::workflow::Placement::Lan);
        let (assignments, next) = self.dispatch_now();
        for (a, permit) in assignments {
            match a.item {
                Work::Task(t) => {
                    let this = self.clone();
                    tokio::spawn(async move { this.execute(t, a.agent, permit).await });
                }
                Work::Call(id) => self.call_admitted(id, a.namespace, a.agent, permit),
            }
        }
        self.dispatch_remote(crate::api::workflow::Placement::Any);
        next
    }

    async fn timer(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.explain();
            self.remote_tick();
            let now = Timestamp::now();
            let due: Vec<(Key, bool)> = lock(&self.state)
                .workflows
                .iter()
                .filter(|(_, w)| w.wake_at.is_some_and(|t| t <= now))
                .map(|(k, w)| {
                    let expired = w.status.finished_at.is_some()
                        && w.spec.ttl_after_finished.as_ref().is_some_and(|ttl| {
                            w.status.finished_at.is_some_and(|f| {
                                f.0 + jiff::SignedDuration::try_from(ttl.value()).unwrap_or(jiff::SignedDuration::MAX)
                                    <= now
                            })
                        });
                    (k.clone(), expired)
                })
                .collect();
            for (k, expired) in due {
                if expired {
                    let api: Api<Workflow> = Api::namespaced(self.client.clone(), &k.0);
                    if let Err(e) = api.delete(&k.1, &DeleteParams::background()).await {
                        tracing::warn!(workflow = %k.1, error = %e, "ttlAfterFinished: delete failed");
                    }
                    if let Some(w) = lock(&self.state).workflows.get_mut(&k) {
                        w.wake_at = None;
                    }
                } else {
                    self.schedule(&k);
                }
            }
        }
    }

    /// The workflows the engine knows, for tests and `a2a run`.
    pub fn status_of(&self, namespace: &str, name: &str) -> Option<WorkflowStatus> {
        lock(&self.state).workflows.get(&(namespace.to_owned(), name.to_owned())).map(|w| w.status.clone())
    }

    /// The phase of a workflow the engine knows (cheap: no copy of its tasks).
    pub fn phase_of(&self, namespace: &str, name: &str) -> Option<WorkflowPhase> {
        lock(&self.state).workflows.get(&(namespace.to_owned(), name.to_owned())).and_then(|w| w.status.phase)
    }

    /// Keys of every known workflow.
    pub fn workflows(&self) -> Vec<Key> {
        lock(&self.state).workflows.keys().cloned().collect()
    }

    /// Names the workflow and agent of everything for logs.
    pub fn describe(w: &Workflow) -> String {
        format!("{}/{}", w.namespace().unwrap_or_default(), w.name_any())
    }
}

/// What an attempt came to, short of failing.
enum Outcome {
    /// The task's result.
    Done(Output),
    /// The agent holds the task and waits for the user.
    Waiting(Waiting),
}

/// An attempt the agent answered with `TASK_STATE_INPUT_REQUIRED` or `_AUTH_REQUIRED`.
#[derive(Debug, PartialEq)]
struct Waiting {
    /// InputRequired or AuthRequired.
    phase: TaskPhase,
    /// The A2A task that waits on the agent (a reply continues it).
    a2a_task_id: String,
    /// What the agent asks: the text of its status message.
    question: String,
}

/// A successful attempt's output as status keeps it.
struct Output {
    /// At most the first 64 KiB.
    text: String,
    /// Where the whole output lives when it is longer.
    reference: Option<String>,
    /// The whole output when it is longer, for downstream templates.
    whole: Option<Arc<str>>,
    /// The data and the list of parts, when the agent's answer had parts (not a stdio run).
    parts: Option<Box<KeptParts>>,
}

/// What status keeps of an output's parts beside its text.
struct KeptParts {
    /// The data parts' JSON, when it fits in status.
    data: Option<serde_json::Value>,
    listing: Vec<crate::api::workflow::OutputPart>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tasks: &[(&str, &str)]) -> WorkflowSpec {
        let tasks = tasks
            .iter()
            .map(|(name, message)| crate::api::workflow::WorkflowTask {
                name: (*name).into(),
                agent: Some("sleeper".into()),
                message: (*message).into(),
                ..Default::default()
            })
            .collect();
        WorkflowSpec { tasks, ..Default::default() }
    }

    fn task_ref(name: &str, attempt: u32) -> TaskRef {
        TaskRef {
            workflow: ("default".into(), "w".into()),
            uid: Arc::from("uid-1"),
            task: Arc::from(name),
            attempt,
            resume: None,
            reply: None,
        }
    }

    fn output(text: &str) -> Result<Outcome, Error> {
        Ok(Outcome::Done(Output { text: text.into(), reference: None, whole: None, parts: None }))
    }

    fn task<'a>(w: &'a WorkflowState, name: &str) -> Option<&'a crate::api::workflow::TaskStatus> {
        w.status.tasks.iter().find(|t| t.name == name)
    }

    #[test]
    fn a_result_is_never_recorded_under_another_tasks_name_when_the_task_list_changes_under_it() {
        let mut w = WorkflowState::new(
            "uid-1".into(),
            Some(1),
            spec(&[("a", "sleep 3s"), ("b", "sleep 4s")]),
            Default::default(),
        );
        let now = Timestamp::now();
        let (a, b) = (task_ref("a", 1), task_ref("b", 1));
        let rx_a = w.begin(&a, 1, "sleeper", now).expect("a starts").cancelled;
        w.begin(&b, 2, "sleeper", now).expect("b starts");
        // The spec loses `a`: `b` moves from position 1 to 0 while both attempts are in flight.
        let gone = w.replace_spec(spec(&[("b", "sleep 4s")]), Some(2));
        assert_eq!(gone, [Arc::<str>::from("a")]);
        assert!(*rx_a.borrow(), "the attempt of the removed task is cancelled");
        assert!(!w.record(&a, 1, output("slept 3s"), now), "a's result has no task to land in");
        let b_status = task(&w, "b").expect("b");
        assert_eq!(b_status.phase, TaskPhase::Running, "b is untouched by a's result");
        assert_eq!(b_status.output, None);
        assert!(task(&w, "a").is_none());
        assert!(w.record(&b, 2, output("slept 4s"), now));
        assert_eq!(task(&w, "b").and_then(|t| t.output.as_deref()), Some("slept 4s"));
        assert_eq!(w.status.progress.as_deref(), Some("0/1"), "progress counts the new spec's tasks");
    }

    #[test]
    fn results_follow_their_task_when_tasks_move_or_a_workflow_is_re_created() {
        let mut w = WorkflowState::new("uid-1".into(), Some(1), spec(&[("a", "x"), ("b", "y")]), Default::default());
        let now = Timestamp::now();
        w.begin(&task_ref("a", 1), 1, "sleeper", now).expect("a starts");
        w.begin(&task_ref("b", 1), 2, "sleeper", now).expect("b starts");
        // Reordered, with a new task in front: every position changes.
        assert!(w.replace_spec(spec(&[("c", "z"), ("b", "y"), ("a", "x")]), Some(2)).is_empty());
        assert!(w.record(&task_ref("a", 1), 1, output("A"), now));
        assert!(w.record(&task_ref("b", 1), 2, output("B"), now));
        let outputs: Vec<(&str, Option<&str>)> =
            w.status.tasks.iter().map(|t| (t.name.as_str(), t.output.as_deref())).collect();
        assert_eq!(outputs, [("c", None), ("b", Some("B")), ("a", Some("A"))]);
        // An attempt of a workflow that was deleted and created again under the same name.
        let mut again = WorkflowState::new("uid-2".into(), Some(1), spec(&[("a", "x")]), Default::default());
        assert!(again.begin(&task_ref("a", 1), 3, "sleeper", now).is_none(), "another workflow's attempt");
        assert!(!again.record(&task_ref("a", 1), 1, output("A"), now));
        assert_eq!(again.status.tasks[0].phase, TaskPhase::Pending);
    }
}
