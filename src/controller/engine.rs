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
use super::dispatch::{Assignment, DispatchQueue, Queued, Target};
use super::outputs::{self, FIELD_MANAGER, Owner};
use super::plan;
use crate::a2a;
use crate::api::agent::{AgentPhase, Protocol};
use crate::api::workflow::{TaskPhase, WorkflowPhase, WorkflowSpec, WorkflowStatus};
use crate::api::{Agent, Workflow};

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
/// An annotation that asks the engine to re-run failed tasks (`a2a retry wf NAME`):
/// `NONCE` (every failed, skipped or cancelled task) or `NONCE:task,task`. A request is
/// done once the `Retried` condition's message equals it.
pub const RETRY_ANNOTATION: &str = "a2a.dev/retry";
/// The condition that records the last retry request handled.
pub const RETRIED_CONDITION: &str = "Retried";

pub use super::outputs::MAX_OUTPUT_IN_STATUS;

mod explain;

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
    #[error("the agent needs more input ({state}): {text}")]
    NeedsInput { state: &'static str, text: String },
    #[error("the agent ended the task as {state}")]
    EndedSilently { state: &'static str },
    #[error("{state}: {text}")]
    Ended { state: &'static str, text: String },
}

/// `namespace/name`.
pub type Key = (String, String);

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
    /// Whole outputs of tasks whose status holds only the first 64 KiB, for the templates of
    /// downstream tasks (read back from their ConfigMaps on first use; dropped at the end), by
    /// task name.
    full_outputs: HashMap<String, Arc<str>>,
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
        plan::align(&spec, &mut status);
        WorkflowState {
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
        }
    }

    /// Takes a new spec of the same workflow. The status is realigned to it by task name at
    /// once (so a position in the spec is the same task's position in the status), and the
    /// attempts of tasks the new spec no longer has are cancelled and forgotten: their
    /// outcomes are never recorded. Returns the names of those tasks.
    fn replace_spec(&mut self, spec: WorkflowSpec, generation: Option<i64>) -> Vec<Arc<str>> {
        self.index = plan::Index::new(&spec);
        self.spec = spec;
        self.generation = generation;
        if plan::align(&self.spec, &mut self.status) {
            // Every entry may have moved: indices noted for a patch mean nothing now.
            self.changed.take();
            self.touch_all();
            plan::settle(&mut self.status, Timestamp::now());
        }
        let index = &self.index;
        let gone = self.attempts.keep_only(|n| index.position(n).is_some());
        self.full_outputs.retain(|n, _| index.position(n).is_some());
        self.observe_generation();
        gone
    }

    /// Attempt `t` (token `token`) starts on `agent`: records the start and makes it the
    /// task's current attempt. `None` when the workflow is another (re-created) one, is being
    /// cancelled, or no longer has the task.
    fn begin(&mut self, t: &TaskRef, token: u64, agent: &str, now: Timestamp) -> Option<watch::Receiver<bool>> {
        if *t.uid != *self.uid || self.cancel_requested {
            return None;
        }
        let i = self.index.position(&t.task)?;
        let started = self.status.tasks[i].started_at;
        plan::record_start(&mut self.status, i, t.attempt, agent, now);
        if let Some(id) = &t.resume {
            // The same attempt, followed again: it keeps its id and start time.
            self.status.tasks[i].a2a_task_id = Some(id.clone());
            self.status.tasks[i].started_at = started.or(Some(crate::api::common::Time(now)));
        }
        self.touch(i);
        Some(self.attempts.start(&t.task, token))
    }

    /// Records the outcome of attempt `t` (token `token`) under its task's name, only if that
    /// attempt is still the task's current one. Returns whether it was recorded.
    fn record(&mut self, t: &TaskRef, token: u64, outcome: Result<Output, Error>, now: Timestamp) -> bool {
        if *t.uid != *self.uid || !self.attempts.end(&t.task, token) {
            return false;
        }
        let Some(i) = self.index.position(&t.task) else { return false };
        if self.status.tasks[i].phase != TaskPhase::Running {
            return false;
        }
        match outcome {
            Err(_) if self.cancel_requested => plan::record_cancelled(&mut self.status, i, now),
            Ok(Output { text, reference, whole }) => {
                plan::record_success(&mut self.status, i, text, now);
                self.status.tasks[i].output_ref = reference;
                match whole {
                    Some(whole) => self.full_outputs.insert(t.task.to_string(), whole),
                    None => self.full_outputs.remove(&*t.task),
                };
            }
            Err(e) => {
                plan::record_failure(&self.spec, &mut self.status, i, e.to_string(), now);
            }
        }
        self.touch(i);
        true
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
    agent: Agent,
    next_endpoint: usize,
}

#[derive(Default)]
struct State {
    workflows: HashMap<Key, WorkflowState>,
    agents: HashMap<Key, AgentView>,
    queue: DispatchQueue<TaskRef>,
    /// The queue or an agent changed: the reasons of queued tasks are looked at again.
    explain: bool,
}

/// Options of the engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// How often dirty statuses are written.
    pub flush_interval: Duration,
    pub stdio: Option<Arc<dyn StdioRunner>>,
    /// Only these namespaces (empty: all).
    pub namespace: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { flush_interval: Duration::from_millis(25), stdio: None, namespace: None }
    }
}

/// The running engine.
pub struct Engine {
    client: kube::Client,
    config: EngineConfig,
    state: Mutex<State>,
    wake: Notify,
    flush: Notify,
    /// Workflows whose state machine must run; many requests make one step.
    to_step: Mutex<HashSet<Key>>,
    step: Notify,
    clients: Mutex<HashMap<String, a2a::Client>>,
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
            to_step: Mutex::new(HashSet::new()),
            step: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Runs until `shutdown` resolves; then writes what is dirty and returns.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let agents = tokio::spawn(self.clone().watch_agents());
        let workflows = tokio::spawn(self.clone().watch_workflows());
        let dispatcher = tokio::spawn(self.clone().dispatcher());
        let flusher = tokio::spawn(self.clone().flusher());
        let timer = tokio::spawn(self.clone().timer());
        let stepper = tokio::spawn(self.clone().stepper());
        shutdown.await;
        for t in [agents, workflows, dispatcher, timer, stepper] {
            t.abort();
        }
        flusher.abort();
        self.flush_all().await;
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
                    let k = key_of(&a);
                    let mut st = lock(&self.state);
                    st.agents.remove(&k);
                    st.queue.remove_agent(&k.0, &k.1);
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

    fn agent_changed(&self, a: Agent) {
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
        let next = st.agents.get(&k).map_or(0, |v| v.next_endpoint);
        st.agents.insert(k, AgentView { agent: a, next_endpoint: next });
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
                Ok(Some(full)) => return self.workflow_changed(full),
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
                    st.queue.retain(|t| t.workflow != k || !gone.contains(&t.task));
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
        let only: Vec<String> = match request.split_once(':') {
            Some((_, tasks)) => tasks.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
            None => Vec::new(),
        };
        let (ok, reason) = match plan::retry(&w.spec, &mut w.status, &only) {
            Ok(names) => {
                tracing::info!(workflow = %k.1, tasks = ?names, "retrying tasks on request");
                (true, "Requested")
            }
            Err(e) => {
                tracing::warn!(workflow = %k.1, error = %e, "retry request refused");
                (false, "Invalid")
            }
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
        st.queue.retain(|t| &t.workflow != k);
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
            // fifth of the time. Rounds of small steps take microseconds and never wait.
            let pause = (started.elapsed() * 4).min(MAX_STEP_PAUSE);
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
        let State { workflows, queue, agents, explain } = &mut *st;
        let Some(w) = workflows.get_mut(k) else { return };
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
            let (running, changed) = plan::cancel(&mut w.status, now);
            if changed {
                w.touch_all();
            }
            for &i in &running {
                w.attempts.cancel(&w.status.tasks[i].name);
            }
            // Queued attempts that have not started are dropped.
            w.attempts.drop_queued();
            queue.retain(|t| &t.workflow != k);
            drop(st);
            self.flush.notify_one();
            return;
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
        let uid: Arc<str> = Arc::from(w.uid.as_str());
        // Newly queued tasks get their reason (if they cannot be dispatched) on the next tick.
        *explain |= !step.ready.is_empty();
        for r in step.ready {
            let name: Arc<str> = Arc::from(r.name.as_str());
            if !w.attempts.queue(&name) {
                continue;
            }
            let task = &w.spec.tasks[r.index];
            let target = match (&task.agent, &task.skill) {
                (Some(a), _) => Target::Agent(a.clone()),
                (None, Some(s)) => Target::Skill(s.clone()),
                (None, None) => continue,
            };
            let agent = match &target {
                Target::Agent(a) => agents.get(&(k.0.clone(), a.clone())).map(|v| &v.agent),
                Target::Skill(_) => None,
            };
            let priority = plan::effective_priority(&r, agent);
            queue.push(Queued {
                namespace: k.0.clone(),
                target,
                priority,
                item: TaskRef { workflow: k.clone(), uid: uid.clone(), task: name, attempt: r.attempt, resume: None },
            });
        }
        for (name, attempt, agent, task_id) in resumes {
            // Back to the same agent (when it is known and ready again), first in line.
            let Some(agent) = agent else { continue };
            w.attempts.queue(&name);
            queue.push(Queued {
                namespace: k.0.clone(),
                target: Target::Agent(agent),
                priority: crate::api::Priority::Critical,
                item: TaskRef { workflow: k.clone(), uid: uid.clone(), task: name, attempt, resume: task_id },
            });
        }
        let finished =
            matches!(w.status.phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled));
        if finished {
            w.full_outputs = HashMap::new();
        }
        if finished && let (Some(ttl), Some(done)) = (&w.spec.ttl_after_finished, w.status.finished_at) {
            let at = done.0 + jiff::SignedDuration::try_from(ttl.value()).unwrap_or(jiff::SignedDuration::MAX);
            w.wake_at = Some(w.wake_at.map_or(at, |x| x.min(at)));
        }
        drop(st);
        self.wake.notify_one();
        self.flush.notify_one();
    }

    async fn dispatcher(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let assignments: Vec<Assignment<TaskRef>> = lock(&self.state).queue.dispatch();
            for a in assignments {
                let this = self.clone();
                tokio::spawn(async move { this.execute(a.item, a.agent).await });
            }
        }
    }

    async fn timer(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.explain();
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

    /// Runs one attempt on `agent_name` and records the outcome (following the A2A task of an
    /// attempt started before a restart, when `t.resume` names one).
    async fn execute(self: Arc<Self>, t: TaskRef, agent_name: String) {
        let resume_id = t.resume.clone();
        let token = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Record the start, and note the upstream outputs the message needs in whole.
        let started = {
            let now = Timestamp::now();
            let mut st = lock(&self.state);
            let State { workflows, agents, .. } = &mut *st;
            let known = agents.contains_key(&(t.workflow.0.clone(), agent_name.clone()));
            match workflows.get_mut(&t.workflow) {
                Some(w) if known => w.begin(&t, token, &agent_name, now).map(|rx| {
                    let i = w.index.position(&t.task).unwrap_or_default();
                    let needed: Vec<(String, u32)> = plan::long_outputs_used(&w.spec, &w.status, i)
                        .into_iter()
                        .map(|j| &w.status.tasks[j])
                        .filter(|s| !w.full_outputs.contains_key(&s.name))
                        .map(|s| (s.name.clone(), s.attempts))
                        .collect();
                    (rx, needed)
                }),
                _ => None,
            }
        };
        self.flush.notify_one();
        let outcome = match started {
            None => Err(Error::Gone),
            Some((rx, needed)) => match self.load_outputs(&t, needed).await {
                Err(e) => Err(e),
                Ok(()) => self.attempt(&t, token, &agent_name, resume_id, rx).await,
            },
        };
        let outcome = match outcome {
            Ok(text) if text.len() > MAX_OUTPUT_IN_STATUS => self.store_output(&t, text).await,
            Ok(text) => Ok(Output { text, reference: None, whole: None }),
            Err(e) => Err(e),
        };
        self.finish(&t, token, &agent_name, outcome);
    }

    /// Reads the whole outputs of upstream tasks `needed` from beside the workflow, into the
    /// workflow's cache.
    async fn load_outputs(&self, t: &TaskRef, needed: Vec<(String, u32)>) -> Result<(), Error> {
        let k = &t.workflow;
        for (name, attempt) in needed {
            let owner = Owner { namespace: &k.0, name: &k.1, uid: &t.uid };
            let (text, _) = match outputs::load(&self.client, &owner, &name, attempt).await {
                Ok(loaded) => loaded,
                Err(source) => return Err(Error::LoadOutput { task: name, source }),
            };
            if let Some(w) = lock(&self.state).workflows.get_mut(k).filter(|w| *w.uid == *t.uid) {
                w.full_outputs.insert(name, Arc::from(text));
            }
        }
        Ok(())
    }

    /// Keeps an output longer than status holds in ConfigMaps beside the workflow; the status
    /// then gets its first 64 KiB and a reference. A write that keeps failing fails the attempt
    /// (its output would be lost otherwise).
    async fn store_output(&self, t: &TaskRef, text: String) -> Result<Output, Error> {
        let (uid, task) = (t.uid.to_string(), t.task.to_string());
        let owner = Owner { namespace: &t.workflow.0, name: &t.workflow.1, uid: &uid };
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        let stored = loop {
            match outputs::store(&self.client, &owner, &task, t.attempt, &text).await {
                Ok(s) => break s,
                Err(e) if tries < 4 => {
                    tracing::warn!(workflow = %t.workflow.1, task = %task, error = %e, "storing a long output failed; retrying");
                    tries += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(source) => return Err(Error::StoreOutput { bytes: text.len(), source }),
            }
        };
        // The workflow may have gone meanwhile (its deletion cascaded before these existed).
        let gone = lock(&self.state)
            .workflows
            .get(&t.workflow)
            .is_none_or(|w| w.uid != uid || w.index.position(&task).is_none());
        if gone {
            outputs::remove(&self.client, &owner, &task).await;
            return Err(Error::WorkflowGone);
        }
        if let Some(n) = stored.original_bytes {
            tracing::warn!(workflow = %t.workflow.1, task = %task, bytes = n, kept = stored.bytes, "output over the cap was cut");
        }
        let reference = stored.describe(&t.workflow.1, &task);
        let head = outputs::prefix(&text, MAX_OUTPUT_IN_STATUS).to_owned();
        let mut whole = text;
        whole.truncate(stored.bytes);
        Ok(Output { text: head, reference: Some(reference), whole: Some(Arc::from(whole)) })
    }

    /// Sends (or follows) one attempt and waits for its result.
    async fn attempt(
        &self,
        t: &TaskRef,
        token: u64,
        agent_name: &str,
        resume_id: Option<String>,
        mut rx: watch::Receiver<bool>,
    ) -> Result<String, Error> {
        let prepared = {
            let mut st = lock(&self.state);
            let State { workflows, agents, .. } = &mut *st;
            let view = agents.get_mut(&(t.workflow.0.clone(), agent_name.to_owned()));
            let current = workflows.get(&t.workflow).filter(|w| w.attempts.is_current(&t.task, token));
            match (current.and_then(|w| Some((w, w.index.position(&t.task)?))), view) {
                (Some((w, i)), Some(view)) => {
                    let (full, tasks) = (&w.full_outputs, &w.status.tasks);
                    let message = plan::render_message_with(&w.spec, &w.status, i, |j| {
                        full.get(tasks[j].name.as_str()).map(|s| &**s)
                    });
                    let task = &w.spec.tasks[i];
                    let timeout = task.timeout.as_ref().or(w.spec.timeout.as_ref()).map(|d| d.value());
                    let data = task.data.clone();
                    let mut endpoints = view.agent.status.as_ref().map(|s| s.endpoints.clone()).unwrap_or_default();
                    let endpoint = (!endpoints.is_empty()).then(|| {
                        view.next_endpoint = view.next_endpoint.wrapping_add(1);
                        let at = view.next_endpoint % endpoints.len();
                        // The chosen one first, then the others (where a resumed task may live).
                        endpoints.rotate_left(at);
                        endpoints
                    });
                    let stdio = view.agent.spec.protocol() == Protocol::Stdio;
                    let agent = stdio.then(|| view.agent.clone());
                    Some((message, timeout, data, endpoint, agent, plan::message_id(&w.uid, &task.name, t.attempt)))
                }
                _ => None,
            }
        };
        let Some((message, timeout, data, endpoint, stdio_agent, message_id)) = prepared else {
            return Err(Error::Gone);
        };
        // A message too large to send (or a reference gone) fails the attempt with the reason.
        let message = message?;
        let cancelled = async move {
            let _ = rx.wait_for(|c| *c).await;
        };
        if let Some(agent) = stdio_agent {
            let Some(runner) = &self.config.stdio else {
                return Err(Error::StdioLocalOnly);
            };
            let run = async { runner.run(&agent, message).await.map_err(Error::Stdio) };
            return match timeout {
                Some(d) => tokio::select! {
                    r = tokio::time::timeout(d, run) => r.unwrap_or(Err(Error::TimedOut(d))),
                    () = cancelled => Err(Error::Cancelled),
                },
                None => tokio::select! {
                    r = run => r,
                    () = cancelled => Err(Error::Cancelled),
                },
            };
        }
        match endpoint {
            None => Err(Error::NoEndpoint(agent_name.to_owned())),
            Some(urls) => {
                self.a2a_attempt(t, token, &urls, message_id, message, data, timeout, resume_id, cancelled).await
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    async fn a2a_attempt(
        &self,
        t: &TaskRef,
        token: u64,
        urls: &[String],
        message_id: String,
        text: String,
        data: Option<serde_json::Value>,
        timeout: Option<Duration>,
        resume_id: Option<String>,
        cancelled: impl Future<Output = ()>,
    ) -> Result<String, Error> {
        let url = urls.first().map(String::as_str).unwrap_or_default();
        let mut client = self.client_for(url)?;
        let opts = a2a::client::FollowOptions { timeout, ..Default::default() };
        let mut cancelled = std::pin::pin!(cancelled);
        let task_id = match resume_id {
            Some(id) => {
                // A resumed attempt lives on one replica of the agent: find the one that knows it.
                for other in urls.iter().skip(1) {
                    match client.get_task(&id).await {
                        Err(e) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotFound) => {
                            client = self.client_for(other)?;
                        }
                        _ => break,
                    }
                }
                id
            }
            None => {
                let mut parts = vec![a2a::types::Part::text(text)];
                if let Some(d) = data {
                    parts.push(a2a::types::Part::data(d));
                }
                let message = a2a::types::Message::new(a2a::types::Role::User, message_id, parts);
                let config = a2a::types::SendMessageConfiguration { return_immediately: true, ..Default::default() };
                let sent = tokio::select! {
                    r = client.send_message(message, Some(config)) => r?,
                    () = &mut cancelled => return Err(Error::CancelledBeforeAnswer),
                };
                match sent {
                    a2a::types::SendMessageResponse::Message(m) => {
                        return Ok(a2a::types::SendMessageResponse::Message(m).output().text);
                    }
                    a2a::types::SendMessageResponse::Task(task) => {
                        if task.status.state.is_terminal() || task.status.state.is_interrupted() {
                            return task_result(&task);
                        }
                        // The id matters now: keep it, so a restart follows instead of re-sending.
                        if let Some(w) = lock(&self.state).workflows.get_mut(&t.workflow)
                            && w.attempts.is_current(&t.task, token)
                            && let Some(i) = w.index.position(&t.task)
                        {
                            w.status.tasks[i].a2a_task_id = Some(task.id.clone());
                            w.touch(i);
                        }
                        self.flush.notify_one();
                        task.id
                    }
                }
            }
        };
        let task = client.follow_task(&task_id, &opts, cancelled).await?;
        task_result(&task)
    }

    fn client_for(&self, url: &str) -> Result<a2a::Client, a2a::client::Error> {
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let c = a2a::Client::new(url)?;
        clients.insert(url.to_owned(), c.clone());
        Ok(c)
    }

    fn finish(self: &Arc<Self>, t: &TaskRef, token: u64, agent: &str, outcome: Result<Output, Error>) {
        let now = Timestamp::now();
        {
            let mut st = lock(&self.state);
            st.queue.release(&t.workflow.0, agent);
            if let Some(w) = st.workflows.get_mut(&t.workflow)
                && !w.record(t, token, outcome, now)
            {
                tracing::debug!(workflow = %t.workflow.1, task = %t.task, attempt = t.attempt, "outcome of a superseded attempt dropped");
            }
        }
        self.schedule(&t.workflow);
    }

    async fn flusher(self: Arc<Self>) {
        let mut pause = self.config.flush_interval;
        loop {
            self.flush.notified().await;
            tokio::time::sleep(pause).await;
            let started = std::time::Instant::now();
            self.flush_all().await;
            // Writing big statuses must not eat the engine (nor the API server that applies
            // them): at most a tenth of the time.
            pause = self.config.flush_interval.max(started.elapsed() * 9);
        }
    }

    /// Writes every dirty status, many workflows in flight at once. A workflow whose task list
    /// is as last written gets a JSON patch of the tasks that changed (guarded by a `test` of
    /// each task's name) and of the top-level fields, so a write costs what changed, not the
    /// size of the workflow; otherwise (first write, task list rebuilt, a refused patch) the
    /// whole status goes as a merge patch.
    pub async fn flush_all(&self) {
        let dirty: Vec<(Key, StatusWrite)> = {
            let mut st = lock(&self.state);
            st.workflows
                .iter_mut()
                .filter(|(_, w)| w.dirty)
                .filter_map(|(k, w)| {
                    w.dirty = false;
                    let changed = w.changed.take();
                    let write = if std::mem::take(&mut w.rewrite) {
                        status_merge_patch(&w.status)
                    } else {
                        status_json_patch(&mut w.status, &changed)
                    };
                    match write {
                        Ok(write) => Some((k.clone(), write)),
                        Err(e) => {
                            tracing::error!(workflow = %k.1, error = %e, "encoding the status failed");
                            None
                        }
                    }
                })
                .collect()
        };
        let writes = dirty.into_iter().map(|(k, write)| async move {
            let whole = write.whole;
            let r = self.write_status(&k, write).await;
            (k, whole, r)
        });
        let results = futures::stream::iter(writes).buffer_unordered(16).collect::<Vec<_>>().await;
        for (k, whole, r) in results {
            match r {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => self.workflow_deleted(&k),
                Err(e) => {
                    if whole {
                        tracing::warn!(workflow = %k.1, error = %e, "status write failed; will retry");
                    } else {
                        // The stored task list is not what the patch expects: send it all.
                        tracing::debug!(workflow = %k.1, error = %e, "status patch refused; writing the whole status");
                    }
                    if let Some(w) = lock(&self.state).workflows.get_mut(&k) {
                        w.touch_all();
                    }
                    self.flush.notify_one();
                }
            }
        }
    }

    /// Sends one status write. The answer (the whole workflow, megabytes for a big one) is
    /// read and dropped chunk by chunk, never held whole: the engine has its status already.
    async fn write_status(&self, k: &Key, write: StatusWrite) -> Result<(), kube::Error> {
        use http_body_util::BodyExt;
        let url = format!("{}/{}/status?fieldManager={FIELD_MANAGER}", Workflow::url_path(&(), Some(&k.0)), k.1);
        let req = http::Request::patch(url)
            .header(http::header::CONTENT_TYPE, write.content_type)
            .body(kube::client::Body::from(write.body))
            .map_err(kube::Error::HttpError)?;
        let res = self.client.send(req).await?;
        let code = res.status();
        let mut body = res.into_body();
        if code.is_success() {
            while let Some(frame) = body.frame().await {
                frame?;
            }
            return Ok(());
        }
        let text = body.collect().await?.to_bytes();
        let status = serde_json::from_slice::<kube::core::Status>(&text).unwrap_or_else(|_| {
            kube::core::Status::failure(String::from_utf8_lossy(&text).trim(), "the answer is not a Status")
                .with_code(code.as_u16())
        });
        Err(kube::Error::Api(status.boxed()))
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

/// The outcome of a finished A2A task.
fn task_result(task: &a2a::types::Task) -> Result<String, Error> {
    use a2a::types::TaskState;
    let out = task.output();
    match task.status.state {
        TaskState::Completed => Ok(out.text),
        TaskState::InputRequired | TaskState::AuthRequired => {
            Err(Error::NeedsInput { state: task.status.state.as_str(), text: out.text })
        }
        state if out.text.is_empty() => Err(Error::EndedSilently { state: state.as_str() }),
        state => Err(Error::Ended { state: state.as_str(), text: out.text }),
    }
}

/// A successful attempt's output as status keeps it.
struct Output {
    /// At most the first 64 KiB.
    text: String,
    /// Where the whole output lives when it is longer.
    reference: Option<String>,
    /// The whole output when it is longer, for downstream templates.
    whole: Option<Arc<str>>,
}

/// One encoded status write.
struct StatusWrite {
    content_type: &'static str,
    body: Vec<u8>,
    /// The whole status (a merge patch), not a JSON patch of what changed.
    whole: bool,
}

fn status_merge_patch(status: &WorkflowStatus) -> Result<StatusWrite, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        status: &'a WorkflowStatus,
    }
    let body = serde_json::to_vec(&Body { status })?;
    Ok(StatusWrite { content_type: "application/merge-patch+json", body, whole: true })
}

/// A JSON patch that replaces the tasks `changed` (after testing that each index still holds
/// the task of that name) and sets every top-level field that has a value. Fields that become
/// empty only do so through a rewrite (retry, cancel), which sends the whole status.
fn status_json_patch(status: &mut WorkflowStatus, changed: &[usize]) -> Result<StatusWrite, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Op<'a> {
        op: &'static str,
        path: String,
        value: OpValue<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum OpValue<'a> {
        Text(&'a str),
        Task(&'a crate::api::workflow::TaskStatus),
        Json(serde_json::Value),
    }
    let tasks = std::mem::take(&mut status.tasks);
    let top = serde_json::to_value(&*status);
    status.tasks = tasks;
    let mut ops = Vec::with_capacity(changed.len() * 2 + 6);
    if let serde_json::Value::Object(fields) = top? {
        for (name, value) in fields {
            ops.push(Op { op: "add", path: format!("/status/{name}"), value: OpValue::Json(value) });
        }
    }
    for &i in changed {
        let Some(t) = status.tasks.get(i) else { continue };
        ops.push(Op { op: "test", path: format!("/status/tasks/{i}/name"), value: OpValue::Text(&t.name) });
        ops.push(Op { op: "replace", path: format!("/status/tasks/{i}"), value: OpValue::Task(t) });
    }
    let body = serde_json::to_vec(&ops)?;
    Ok(StatusWrite { content_type: "application/json-patch+json", body, whole: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workflow::TaskStatus;

    fn status(names: &[&str]) -> WorkflowStatus {
        WorkflowStatus {
            phase: Some(WorkflowPhase::Running),
            progress: Some("0/3".into()),
            tasks: names.iter().map(|n| TaskStatus::pending(n)).collect(),
            ..Default::default()
        }
    }

    fn apply(doc: &mut serde_json::Value, write: &StatusWrite) -> Result<(), json_patch::PatchError> {
        let patch: json_patch::Patch = serde_json::from_slice(&write.body).expect("a JSON patch");
        json_patch::patch(doc, &patch)
    }

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
        }
    }

    fn output(text: &str) -> Result<Output, Error> {
        Ok(Output { text: text.into(), reference: None, whole: None })
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
        let rx_a = w.begin(&a, 1, "sleeper", now).expect("a starts");
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

    #[test]
    fn a_patch_of_the_changed_tasks_brings_the_stored_status_to_the_engines() {
        let mut st = status(&["a", "b", "c"]);
        let mut stored = serde_json::json!({ "status": st });
        st.tasks[1].phase = TaskPhase::Succeeded;
        st.tasks[1].output = Some("B".into());
        st.progress = Some("1/3".into());
        st.started_at = Some(crate::api::common::Time(Timestamp::UNIX_EPOCH));
        let write = status_json_patch(&mut st, &[1]).expect("encode");
        assert!(!write.whole);
        assert!(!String::from_utf8_lossy(&write.body).contains("\"c\""), "unchanged tasks are not sent");
        apply(&mut stored, &write).expect("applies");
        assert_eq!(stored, serde_json::json!({ "status": st }));
    }

    #[test]
    fn a_patch_is_refused_when_the_stored_task_list_differs() {
        let mut st = status(&["a", "b"]);
        let mut stored = serde_json::json!({ "status": status(&["b", "a"]) });
        st.tasks[1].phase = TaskPhase::Running;
        let write = status_json_patch(&mut st, &[1]).expect("encode");
        let before = stored.clone();
        assert!(apply(&mut stored, &write).is_err(), "the name test guards the index");
        assert_eq!(stored, before, "nothing applied");
        let whole = status_merge_patch(&st).expect("encode");
        assert!(whole.whole);
    }
}
