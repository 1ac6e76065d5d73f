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

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use super::dispatch::{Assignment, DispatchQueue, Queued, Target};
use super::plan;
use crate::a2a;
use crate::api::agent::{AgentPhase, Protocol};
use crate::api::workflow::{TaskPhase, WorkflowPhase, WorkflowSpec, WorkflowStatus};
use crate::api::{Agent, Workflow};

/// An annotation that asks the engine to cancel a workflow (`a2a cancel wf NAME`).
pub const CANCEL_ANNOTATION: &str = "a2a.dev/cancel";
/// An annotation that asks the engine to re-run failed tasks (`a2a retry wf NAME`):
/// `NONCE` (every failed, skipped or cancelled task) or `NONCE:task,task`. A request is
/// done once the `Retried` condition's message equals it.
pub const RETRY_ANNOTATION: &str = "a2a.dev/retry";
/// The condition that records the last retry request handled.
pub const RETRIED_CONDITION: &str = "Retried";

/// At most this much of a task's output is kept in status.
pub const MAX_OUTPUT_IN_STATUS: usize = 64 * 1024;

/// Runs one task on a `stdio` agent: the message on stdin, the result from stdout.
pub trait StdioRunner: Send + Sync {
    fn run(&self, agent: &Agent, input: String) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// `namespace/name`.
pub type Key = (String, String);

/// One queued attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    pub workflow: Key,
    pub index: usize,
    pub attempt: u32,
    /// After a restart: the A2A task the attempt already has, to follow instead of send.
    pub resume: Option<String>,
}

struct WorkflowState {
    uid: String,
    spec: WorkflowSpec,
    status: WorkflowStatus,
    dirty: bool,
    /// Tasks queued or running, by index.
    busy: Busy,
    cancels: HashMap<usize, watch::Sender<bool>>,
    wake_at: Option<Timestamp>,
    /// Already followed after a restart (A2A task ids adopted from status).
    adopted: bool,
    /// The workflow carries the cancel annotation.
    cancel_requested: bool,
}

/// A set of task indices, as flags (checked for every task on every step).
#[derive(Default)]
struct Busy {
    flags: Vec<bool>,
}

impl Busy {
    fn contains(&self, i: &usize) -> bool {
        self.flags.get(*i).copied().unwrap_or(false)
    }

    /// Adds `i`; false when it was there already.
    fn insert(&mut self, i: usize) -> bool {
        if self.flags.len() <= i {
            self.flags.resize(i + 1, false);
        }
        !std::mem::replace(&mut self.flags[i], true)
    }

    fn remove(&mut self, i: &usize) {
        if let Some(f) = self.flags.get_mut(*i) {
            *f = false;
        }
    }

    fn retain(&mut self, keep: impl Fn(&usize) -> bool) {
        for (i, f) in self.flags.iter_mut().enumerate() {
            if *f && !keep(&i) {
                *f = false;
            }
        }
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
    clients: Mutex<HashMap<String, a2a::Client>>,
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
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until `shutdown` resolves; then writes what is dirty and returns.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let agents = tokio::spawn(self.clone().watch_agents());
        let workflows = tokio::spawn(self.clone().watch_workflows());
        let dispatcher = tokio::spawn(self.clone().dispatcher());
        let flusher = tokio::spawn(self.clone().flusher());
        let timer = tokio::spawn(self.clone().timer());
        shutdown.await;
        for t in [agents, workflows, dispatcher, timer] {
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

    fn workflow_api(&self) -> Api<Workflow> {
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
        drop(st);
        self.wake.notify_one();
    }

    async fn watch_workflows(self: Arc<Self>) {
        let mut stream = watcher(self.workflow_api(), watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(w) | watcher::Event::InitApply(w)) => self.workflow_changed(w),
                Ok(watcher::Event::Delete(w)) => self.workflow_deleted(&key_of(&w)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "workflow watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn workflow_changed(self: &Arc<Self>, w: Workflow) {
        let k = key_of(&w);
        let uid = w.meta().uid.clone().unwrap_or_default();
        let mut st = lock(&self.state);
        let known = st.workflows.get(&k).is_some_and(|s| s.uid == uid);
        let annotations = w.metadata.annotations.clone().unwrap_or_default();
        if known {
            // Our own status writes come back here: only the spec is taken from the event.
            if let Some(s) = st.workflows.get_mut(&k) {
                s.spec = w.spec.clone();
            }
        } else {
            st.workflows.insert(
                k.clone(),
                WorkflowState {
                    uid,
                    spec: w.spec.clone(),
                    status: w.status.clone().unwrap_or_default(),
                    dirty: false,
                    busy: Busy::default(),
                    cancels: HashMap::new(),
                    wake_at: None,
                    adopted: false,
                    cancel_requested: false,
                },
            );
        }
        if let Some(s) = st.workflows.get_mut(&k) {
            s.cancel_requested = annotations.contains_key(CANCEL_ANNOTATION);
            if let Some(request) = annotations.get(RETRY_ANNOTATION) {
                Self::apply_retry(&k, s, request);
            }
        }
        drop(st);
        self.advance(&k);
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
        w.dirty = true;
    }

    fn workflow_deleted(&self, k: &Key) {
        let mut st = lock(&self.state);
        if let Some(w) = st.workflows.remove(k) {
            for tx in w.cancels.values() {
                let _ = tx.send(true);
            }
        }
        st.queue.retain(|t| &t.workflow != k);
    }

    /// Runs the state machine of one workflow and queues what became ready.
    fn advance(self: &Arc<Self>, k: &Key) {
        let now = Timestamp::now();
        let mut resumes = Vec::new();
        let mut st = lock(&self.state);
        let State { workflows, queue, agents } = &mut *st;
        let Some(w) = workflows.get_mut(k) else { return };
        if !w.adopted {
            w.adopted = true;
            // After a restart: tasks that were running are followed (or re-sent) as they were.
            for (i, t) in w.status.tasks.iter().enumerate() {
                if t.phase == TaskPhase::Running && !w.busy.contains(&i) {
                    resumes.push((i, t.attempts.max(1), t.agent.clone(), t.a2a_task_id.clone()));
                }
            }
        }
        if w.cancel_requested {
            let (running, changed) = plan::cancel(&mut w.status, now);
            w.dirty |= changed;
            for i in &running {
                if let Some(tx) = w.cancels.get(i) {
                    let _ = tx.send(true);
                }
            }
            // Queued attempts that have not started are dropped.
            w.busy.retain(|i| running.contains(i));
            queue.retain(|t| &t.workflow != k);
            drop(st);
            self.flush.notify_one();
            return;
        }
        let busy = &w.busy;
        let step = plan::step_except(&w.spec, &mut w.status, now, |i| busy.contains(&i));
        w.dirty |= step.changed;
        w.wake_at = step.wake_at;
        for i in step.cancel {
            if let Some(tx) = w.cancels.get(&i) {
                let _ = tx.send(true);
            }
        }
        for r in step.ready {
            if !w.busy.insert(r.index) {
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
                item: TaskRef { workflow: k.clone(), index: r.index, attempt: r.attempt, resume: None },
            });
        }
        for (i, attempt, agent, task_id) in resumes {
            // Back to the same agent (when it is known and ready again), first in line.
            let Some(agent) = agent else { continue };
            w.busy.insert(i);
            queue.push(Queued {
                namespace: k.0.clone(),
                target: Target::Agent(agent),
                priority: crate::api::Priority::Critical,
                item: TaskRef { workflow: k.clone(), index: i, attempt, resume: task_id },
            });
        }
        let finished =
            matches!(w.status.phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled));
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
                    self.advance(&k);
                }
            }
        }
    }

    /// Runs one attempt on `agent_name` and records the outcome (following the A2A task of an
    /// attempt started before a restart, when `t.resume` names one).
    async fn execute(self: Arc<Self>, t: TaskRef, agent_name: String) {
        let resume_id = t.resume.clone();
        let now = Timestamp::now();
        let (tx, mut rx) = watch::channel(false);
        // Record the start, and gather what the attempt needs.
        let prepared = {
            let mut st = lock(&self.state);
            let State { workflows, agents, .. } = &mut *st;
            let agent = agents.get_mut(&(t.workflow.0.clone(), agent_name.clone()));
            match (workflows.get_mut(&t.workflow), agent) {
                (Some(w), Some(view)) if !w.cancel_requested => {
                    let started = w.status.tasks.get(t.index).and_then(|s| s.started_at);
                    plan::record_start(&mut w.status, t.index, t.attempt, &agent_name, now);
                    if let Some(id) = &resume_id {
                        // The same attempt, followed again: it keeps its id and start time.
                        w.status.tasks[t.index].a2a_task_id = Some(id.clone());
                        w.status.tasks[t.index].started_at = started.or(Some(crate::api::common::Time(now)));
                    }
                    w.dirty = true;
                    w.cancels.insert(t.index, tx);
                    let message = plan::render_message(&w.spec, &w.status, t.index);
                    let task = &w.spec.tasks[t.index];
                    let timeout = task.timeout.as_ref().or(w.spec.timeout.as_ref()).map(|d| d.value());
                    let data = task.data.clone();
                    let mut endpoints = view.agent.status.as_ref().map(|s| s.endpoints.clone()).unwrap_or_default();
                    let endpoint = (!endpoints.is_empty()).then(|| {
                        view.next_endpoint = view.next_endpoint.wrapping_add(1);
                        let at = view.next_endpoint % endpoints.len();
                        // The chosen one first, then the others (where a resumed task may live).
                        endpoints.rotate_left(at);
                        endpoints.clone()
                    });
                    Some((
                        message,
                        timeout,
                        data,
                        endpoint,
                        view.agent.clone(),
                        plan::message_id(&w.uid, &task.name, t.attempt),
                    ))
                }
                _ => None,
            }
        };
        self.flush.notify_one();
        let outcome = match prepared {
            None => Err("the workflow or agent is gone".to_owned()),
            Some((Err(e), ..)) => Err(e),
            Some((Ok(message), timeout, data, endpoint, agent, message_id)) => {
                let cancelled = async move {
                    let _ = rx.wait_for(|c| *c).await;
                };
                match agent.spec.protocol() {
                    Protocol::Stdio => match &self.config.stdio {
                        Some(runner) => {
                            let run = runner.run(&agent, message);
                            match timeout {
                                Some(d) => tokio::select! {
                                    r = tokio::time::timeout(d, run) => r.unwrap_or_else(|_| Err(format!("timed out after {d:?}"))),
                                    () = cancelled => Err("cancelled".to_owned()),
                                },
                                None => tokio::select! {
                                    r = run => r,
                                    () = cancelled => Err("cancelled".to_owned()),
                                },
                            }
                        }
                        None => Err("stdio agents run only in local mode".to_owned()),
                    },
                    Protocol::A2a => match endpoint {
                        None => Err(format!("agent {:?} has no ready endpoint", agent_name)),
                        Some(urls) => {
                            self.a2a_attempt(&t, &urls, message_id, message, data, timeout, resume_id, cancelled).await
                        }
                    },
                }
            }
        };
        self.finish(&t, &agent_name, outcome);
    }

    #[allow(clippy::too_many_arguments)]
    async fn a2a_attempt(
        &self,
        t: &TaskRef,
        urls: &[String],
        message_id: String,
        text: String,
        data: Option<serde_json::Value>,
        timeout: Option<Duration>,
        resume_id: Option<String>,
        cancelled: impl Future<Output = ()>,
    ) -> Result<String, String> {
        let url = urls.first().map(String::as_str).unwrap_or_default();
        let mut client = self.client_for(url).map_err(|e| e.to_string())?;
        let opts = a2a::client::FollowOptions { timeout, ..Default::default() };
        let mut cancelled = std::pin::pin!(cancelled);
        let task_id = match resume_id {
            Some(id) => {
                // A resumed attempt lives on one replica of the agent: find the one that knows it.
                for other in urls.iter().skip(1) {
                    match client.get_task(&id).await {
                        Err(e) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotFound) => {
                            client = self.client_for(other).map_err(|e| e.to_string())?;
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
                    r = client.send_message(message, Some(config)) => r.map_err(|e| e.to_string())?,
                    () = &mut cancelled => return Err("cancelled before the agent answered".to_owned()),
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
                        if let Some(w) = lock(&self.state).workflows.get_mut(&t.workflow) {
                            w.status.tasks[t.index].a2a_task_id = Some(task.id.clone());
                            w.dirty = true;
                        }
                        self.flush.notify_one();
                        task.id
                    }
                }
            }
        };
        let task = client.follow_task(&task_id, &opts, cancelled).await.map_err(|e| e.to_string())?;
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

    fn finish(self: &Arc<Self>, t: &TaskRef, agent: &str, outcome: Result<String, String>) {
        let now = Timestamp::now();
        {
            let mut st = lock(&self.state);
            st.queue.release(&t.workflow.0, agent);
            if let Some(w) = st.workflows.get_mut(&t.workflow) {
                w.busy.remove(&t.index);
                w.cancels.remove(&t.index);
                if w.status.tasks.get(t.index).is_some_and(|s| s.phase == TaskPhase::Running) {
                    match outcome {
                        Err(_) if w.cancel_requested => plan::record_cancelled(&mut w.status, t.index, now),
                        Ok(mut output) => {
                            if output.len() > MAX_OUTPUT_IN_STATUS {
                                let mut cut = MAX_OUTPUT_IN_STATUS;
                                while !output.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                output.truncate(cut);
                                w.status.tasks[t.index].output_ref = Some("truncated to 64 KiB".to_owned());
                            }
                            plan::record_success(&mut w.status, t.index, output, now);
                        }
                        Err(e) => {
                            plan::record_failure(&w.spec, &mut w.status, t.index, e, now);
                        }
                    }
                    w.dirty = true;
                }
            }
        }
        self.advance(&t.workflow);
    }

    async fn flusher(self: Arc<Self>) {
        let mut pause = self.config.flush_interval;
        loop {
            self.flush.notified().await;
            tokio::time::sleep(pause).await;
            let started = std::time::Instant::now();
            self.flush_all().await;
            // Writing big statuses must not eat the engine: at most a fifth of the time.
            pause = self.config.flush_interval.max(started.elapsed() * 4);
        }
    }

    /// Writes every dirty status (one merge patch per workflow, many in flight at once).
    pub async fn flush_all(&self) {
        let dirty: Vec<(Key, WorkflowStatus)> = {
            let mut st = lock(&self.state);
            st.workflows
                .iter_mut()
                .filter(|(_, w)| w.dirty)
                .map(|(k, w)| {
                    w.dirty = false;
                    (k.clone(), w.status.clone())
                })
                .collect()
        };
        let writes = dirty.into_iter().map(|(k, status)| {
            let api: Api<Workflow> = Api::namespaced(self.client.clone(), &k.0);
            async move {
                let patch = serde_json::json!({ "status": status });
                let r = api.patch_status(&k.1, &PatchParams::default(), &Patch::Merge(&patch)).await;
                (k, r)
            }
        });
        let results = futures::stream::iter(writes).buffer_unordered(16).collect::<Vec<_>>().await;
        for (k, r) in results {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => self.workflow_deleted(&k),
                Err(e) => {
                    tracing::warn!(workflow = %k.1, error = %e, "status write failed; will retry");
                    if let Some(w) = lock(&self.state).workflows.get_mut(&k) {
                        w.dirty = true;
                    }
                }
            }
        }
    }

    /// The workflows the engine knows, for tests and `a2a run`.
    pub fn status_of(&self, namespace: &str, name: &str) -> Option<WorkflowStatus> {
        lock(&self.state).workflows.get(&(namespace.to_owned(), name.to_owned())).map(|w| w.status.clone())
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
fn task_result(task: &a2a::types::Task) -> Result<String, String> {
    use a2a::types::TaskState;
    let out = task.output();
    match task.status.state {
        TaskState::Completed => Ok(out.text),
        TaskState::InputRequired | TaskState::AuthRequired => {
            Err(format!("the agent needs more input ({}): {}", task.status.state.as_str(), out.text))
        }
        state => Err(if out.text.is_empty() {
            format!("the agent ended the task as {}", state.as_str())
        } else {
            format!("{}: {}", state.as_str(), out.text)
        }),
    }
}
