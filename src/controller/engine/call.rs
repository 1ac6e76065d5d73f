//! Calls from outside the engine — the host's A2A gateway ([`crate::gateway`]) — admitted
//! through the same dispatch queue as workflow tasks: a call waits in line by its priority,
//! takes one of its agent's slots (`replicas × maxConcurrentTasks`), counts against the
//! agent's and its budgets' rate limits, and gives the slot back when it ends. A burst of
//! agent-to-agent calls therefore cannot push the host past what its workflows may use
//! either. A call that cannot be admitted in time is told why (the same reasons a queued
//! task shows in its status).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Engine, State, Work, lock};
use crate::api::{Agent, Priority};
use crate::controller::dispatch::{Queued, Target};
use crate::controller::rate::Permit;

/// What a caller asks to be admitted for.
#[derive(Clone, Debug)]
pub struct CallRequest {
    pub namespace: String,
    /// An agent by name, or any ready agent with a skill (the least loaded is chosen).
    pub target: Target,
    pub priority: Priority,
    /// How long the call may wait in line before it is refused.
    pub wait: Duration,
}

/// A call in line: where its assignment goes.
pub(super) struct Waiting {
    tx: oneshot::Sender<String>,
}

/// A slot of an agent, held by an admitted call until it is dropped.
pub struct Admitted {
    engine: Arc<Engine>,
    namespace: String,
    agent: String,
    id: u64,
    waited: Duration,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("namespace", &self.namespace).field("agent", &self.agent).finish()
    }
}

impl Admitted {
    /// The agent whose slot the call holds.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How long the call waited in line.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut st = lock(&self.engine.state);
        st.queue.release(&self.namespace, &self.agent);
        if let Some(p) = st.permits.remove(&self.id) {
            st.rates.answered(&p, Instant::now());
        }
        drop(st);
        self.engine.wake.notify_one();
    }
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum NotAdmitted {
    /// It can never be admitted as things are (no such agent, no agent with the skill, an
    /// agent its budget will not admit).
    #[error("{message}")]
    Never { reason: &'static str, message: String },
    /// It waited its whole allowance in line.
    #[error("no slot within {}s: {why}", waited.as_secs_f64())]
    TimedOut { waited: Duration, why: String },
    /// The engine stopped while the call waited.
    #[error("the workflow engine stopped while the call waited for a slot")]
    Stopped,
}

impl NotAdmitted {
    pub fn metric_label(&self) -> &'static str {
        match self {
            NotAdmitted::Never { .. } => "never",
            NotAdmitted::TimedOut { .. } => "timed_out",
            NotAdmitted::Stopped => "stopped",
        }
    }
}

impl Engine {
    /// Waits in the dispatch queue, behind everything of equal or higher priority, for a
    /// slot of the target's agent that its rate limits let start; the slot is held until the
    /// returned [`Admitted`] is dropped.
    pub async fn admit_call(self: &Arc<Self>, request: CallRequest) -> Result<Admitted, NotAdmitted> {
        let id = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        let since = Instant::now();
        {
            let mut st = lock(&self.state);
            let State { agents, queue, budgets, rates, calls, .. } = &mut *st;
            if let Some(s) =
                super::explain::why_waiting(agents, queue, budgets, rates, &request.namespace, &request.target)
                    .filter(|s| s.never)
            {
                return Err(NotAdmitted::Never { reason: s.reason, message: s.message });
            }
            calls.insert(id, Waiting { tx });
            queue.push(Queued {
                namespace: request.namespace.clone(),
                target: request.target.clone(),
                priority: request.priority,
                item: Work::Call(id),
            });
        }
        // A pass right here: a call that finds a free slot is admitted without waiting for the
        // dispatcher's turn. A pass that holds something for a rate limit leaves the timing of
        // the next one to the dispatcher.
        if self.dispatch_pass().is_some() {
            self.wake.notify_one();
        }
        let admitted = |agent: String| Admitted {
            engine: self.clone(),
            namespace: request.namespace.clone(),
            agent,
            id,
            waited: since.elapsed(),
        };
        match tokio::time::timeout(request.wait, &mut rx).await {
            Ok(Ok(agent)) => Ok(admitted(agent)),
            Ok(Err(_)) => Err(NotAdmitted::Stopped),
            Err(_) => {
                let mut st = lock(&self.state);
                st.calls.remove(&id);
                st.queue.retain(|w| *w != Work::Call(id));
                // Assigned between the deadline and the lock: it is admitted after all.
                if let Ok(agent) = rx.try_recv() {
                    drop(st);
                    return Ok(admitted(agent));
                }
                let State { agents, queue, budgets, rates, .. } = &*st;
                let why =
                    super::explain::why_waiting(agents, queue, budgets, rates, &request.namespace, &request.target)
                        .map(|s| s.message)
                        .unwrap_or_else(|| busy(&st, &request.namespace, &request.target));
                Err(NotAdmitted::TimedOut { waited: request.wait, why })
            }
        }
    }

    /// The dispatcher gave call `id` a slot of `agent`: the caller gets it, or, gone, gives
    /// it back.
    pub(super) fn call_admitted(&self, id: u64, namespace: String, agent: String, permit: Option<Permit>) {
        let mut st = lock(&self.state);
        let waiting = st.calls.remove(&id);
        if let Some(p) = permit {
            st.permits.insert(id, p);
        }
        let refused = match waiting {
            Some(w) => w.tx.send(agent.clone()).is_err(),
            None => true,
        };
        if refused {
            st.queue.release(&namespace, &agent);
            if let Some(p) = st.permits.remove(&id) {
                st.rates.forget(&p);
            }
            drop(st);
            self.wake.notify_one();
        }
    }

    /// The Agent `namespace/name` as the engine last saw it.
    pub fn agent(&self, namespace: &str, name: &str) -> Option<Arc<Agent>> {
        lock(&self.state).agents.get(&(namespace.to_owned(), name.to_owned())).map(|v| v.agent.clone())
    }

    /// The Agents of `namespace` with a ready slot capacity (> 0), by name.
    /// Joined peers that may take work whose placement lets it leave the host.
    pub fn remote(&self) -> Option<Arc<crate::discovery::remote::RemoteWork>> {
        self.config.remote.clone()
    }

    pub fn ready_agents(&self, namespace: &str) -> Vec<Arc<Agent>> {
        let st = lock(&self.state);
        let mut out: Vec<(String, Arc<Agent>)> = st
            .agents
            .iter()
            .filter(|((ns, name), _)| ns == namespace && st.queue.agent(ns, name).is_some_and(|s| s.ready))
            .map(|((_, name), v)| (name.clone(), v.agent.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, a)| a).collect()
    }

    /// One endpoint of agent `namespace/name`'s ready replicas, in turn (round robin).
    pub fn next_endpoint(&self, namespace: &str, name: &str) -> Option<String> {
        let mut st = lock(&self.state);
        let view = st.agents.get_mut(&(namespace.to_owned(), name.to_owned()))?;
        let endpoints = view.agent.status.as_ref().map(|s| &s.endpoints).filter(|e| !e.is_empty())?;
        view.next_endpoint = view.next_endpoint.wrapping_add(1);
        Some(endpoints[view.next_endpoint % endpoints.len()].clone())
    }

    /// The engine's API client (the gateway reads agents' token Secrets with it).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

/// A call that waits only for slots: whose are full.
fn busy(st: &State, namespace: &str, target: &Target) -> String {
    match target {
        Target::Agent(name) => match st.queue.agent(namespace, name) {
            Some(s) => format!(
                "agent \"{name}\" in namespace \"{namespace}\" has all {} of its slots busy \
                 (replicas × maxConcurrentTasks), and {} requests queued before or with this one",
                s.capacity,
                st.queue.len()
            ),
            None => format!("agent \"{name}\" in namespace \"{namespace}\" is not known to the workflow engine"),
        },
        Target::Skill(skill) => format!(
            "every ready agent with skill \"{skill}\" in namespace \"{namespace}\" has all its slots busy \
             (replicas × maxConcurrentTasks)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::{AgentSpec, AgentStatus};

    fn agent(name: &str, max: u32, skills: &[&str]) -> Agent {
        let spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "protocol": "a2a", "command": ["x"], "maxConcurrentTasks": max, "skills": skills,
        }))
        .expect("spec");
        let mut a = Agent::new(name, spec);
        a.metadata.namespace = Some("default".into());
        a.metadata.uid = Some(format!("uid-{name}"));
        a.status = Some(AgentStatus {
            ready_replicas: 1,
            endpoints: vec![format!("http://127.0.0.1:1/{name}")],
            ..Default::default()
        });
        a
    }

    /// An engine that knows `agents` and dispatches, with an API it never needs.
    fn engine(agents: Vec<Agent>) -> Arc<Engine> {
        let (client, _handle) = crate::cluster::testing::mock();
        let e = Engine::new(client, super::super::EngineConfig::default());
        for a in agents {
            e.agent_changed(a);
        }
        tokio::spawn(e.clone().dispatcher());
        e
    }

    fn call(target: Target, priority: Priority, wait_ms: u64) -> CallRequest {
        CallRequest { namespace: "default".into(), target, priority, wait: Duration::from_millis(wait_ms) }
    }

    #[tokio::test]
    async fn a_call_holds_a_slot_until_dropped_and_one_that_waits_too_long_is_told_why() {
        let e = engine(vec![agent("solo", 1, &["sum"])]);
        let first =
            e.admit_call(call(Target::Skill("sum".into()), Priority::Normal, 5_000)).await.expect("a free slot");
        assert_eq!(first.agent(), "solo");
        let err = e.admit_call(call(Target::Agent("solo".into()), Priority::Normal, 100)).await.unwrap_err();
        assert_eq!(err.metric_label(), "timed_out");
        assert!(err.to_string().contains("has all 1 of its slots busy"), "{err}");
        assert_eq!(lock(&e.state).queue.len(), 0, "the refused call left the queue");
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.admit_call(call(Target::Agent("solo".into()), Priority::Normal, 10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        let second = waiting.await.expect("join").expect("admitted once the slot is free");
        assert_eq!(lock(&e.state).queue.agent("default", "solo").map(|s| s.in_flight), Some(1));
        drop(second);
        assert_eq!(lock(&e.state).queue.agent("default", "solo").map(|s| s.in_flight), Some(0));
    }

    #[tokio::test]
    async fn a_waiting_call_of_higher_priority_goes_first() {
        let e = engine(vec![agent("solo", 1, &[])]);
        let held = e.admit_call(call(Target::Agent("solo".into()), Priority::Normal, 5_000)).await.expect("slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (n, (label, priority)) in [("low", Priority::Low), ("high", Priority::High)].into_iter().enumerate() {
            let (engine, tx) = (e.clone(), tx.clone());
            tokio::spawn(async move {
                let a =
                    engine.admit_call(call(Target::Agent("solo".into()), priority, 10_000)).await.expect("admitted");
                let _ = tx.send(label);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(a);
            });
            // Queued before the next one is.
            while lock(&e.state).queue.len() <= n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        drop(held);
        assert_eq!(rx.recv().await, Some("high"), "queued second, admitted first");
        assert_eq!(rx.recv().await, Some("low"));
    }

    #[tokio::test]
    async fn a_call_for_what_nobody_offers_waits_as_a_task_would_and_is_told_why() {
        // An agent may yet appear, as for a Workflow task: the wait ends it, with the reason.
        let e = engine(vec![agent("solo", 1, &["sum"])]);
        let err = e.admit_call(call(Target::Skill("juggle".into()), Priority::Normal, 100)).await.unwrap_err();
        assert!(err.to_string().contains("no Ready agent in namespace \"default\" has skill \"juggle\""), "{err}");
        let err = e.admit_call(call(Target::Agent("ghost".into()), Priority::Normal, 100)).await.unwrap_err();
        assert!(err.to_string().contains("ghost"), "{err}");
        assert_eq!(lock(&e.state).queue.len(), 0);
    }
}
