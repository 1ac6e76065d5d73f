//! What the node observes, as the facts the shared core decides from: admission's input
//! from the cached objects, an agent's replicas as [`AgentFacts`], a budget's measured use
//! as [`Use`]. The node derives no phase, condition or pressure of its own.

use std::collections::BTreeMap;

use kube::Resource;

use super::Replica;
use crate::api::agent::Protocol;
use crate::api::common::{ConditionStatus, find_condition};
use crate::api::{Agent, ResourceBudget};
use crate::controller::admission::{self, Asking, Host, Verdict};
use crate::controller::budget_chain;
use crate::controller::budget_status::Use;
use crate::controller::status::{AgentFacts, Failure};
use crate::node::cgroup::CgroupStats;

/// One replica as status sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplicaView {
    /// Its process runs.
    pub running: bool,
    /// It serves its agent card.
    pub ready: bool,
    /// It exited and waits for its restart (backoff).
    pub restarting: bool,
    /// It ended and its restart policy keeps it stopped.
    pub ended: bool,
    /// The kernel throttled it at its CPU limit during the last sample.
    pub throttling: bool,
}

impl Replica {
    pub(super) fn view(&self) -> ReplicaView {
        let running = self.process.is_some();
        ReplicaView {
            running,
            ready: running && self.ready,
            restarting: !running && self.ended.is_none() && self.next_start.is_some(),
            ended: !running && self.ended.is_some(),
            throttling: running && self.throttling,
        }
    }
}

/// Admission's input from the node's caches: every agent that runs here (not deleting, not
/// an external `url`) asks for room; one that has replicas (`has_replicas`), or was
/// admitted before, holds its room.
pub(crate) fn admission_input<'a>(
    budgets: &'a BTreeMap<String, ResourceBudget>,
    agents: impl IntoIterator<Item = &'a Agent>,
    has_replicas: impl Fn(&Agent) -> bool,
    host_cores: u32,
) -> admission::Input {
    let asking =
        agents.into_iter().filter(|a| a.meta().deletion_timestamp.is_none() && a.spec.url.is_none()).map(|a| {
            let running = has_replicas(a);
            let was = a
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Admitted"))
                .is_some_and(|c| c.status == ConditionStatus::True);
            Asking { agent: a, admitted: running || was }
        });
    admission::input(budgets.values(), asking, Host::Local { cores: host_cores })
}

/// An agent's facts from its replicas. A start that failed is a fact only while the agent
/// is admitted (a waiting agent starts nothing).
pub(crate) fn agent_facts(
    agent: &Agent,
    verdict: Option<&Verdict>,
    replicas: impl IntoIterator<Item = ReplicaView>,
    last_error: Option<&str>,
) -> AgentFacts {
    let admitted = matches!(verdict, Some(Verdict::Admitted));
    let mut facts = AgentFacts {
        replicas: agent.spec.replicas(),
        admission: verdict.cloned(),
        stdio: agent.spec.protocol() == Protocol::Stdio,
        failure: last_error
            .filter(|_| admitted)
            .map(|e| Failure { reason: "StartFailed".to_owned(), message: e.to_owned() }),
        ..AgentFacts::default()
    };
    for r in replicas {
        facts.running += u32::from(r.running);
        facts.ready += u32::from(r.ready);
        facts.crashing += u32::from(r.restarting);
        facts.ended |= r.ended;
        facts.throttled = Some(facts.throttled.unwrap_or(false) || r.throttling);
    }
    // Throttling is observed on this node whether or not anything runs.
    facts.throttled.get_or_insert(false);
    facts
}

/// The fact of an agent whose Secrets or ConfigMaps cannot be resolved (`message` names the
/// missing object or key, never a value).
pub(crate) fn config_error(message: String) -> Failure {
    Failure { reason: crate::controller::config_refs::CONFIG_ERROR_REASON.to_owned(), message }
}

/// A budget's measured use: memory and pids from its cgroup (which holds its children's),
/// CPU as the sum of its replicas' sampled rates (`cpu`); nothing when its cgroup cannot be
/// read (unenforced, or not made yet).
pub(crate) fn budget_use(stats: Option<&CgroupStats>, cpu_millis: u64) -> Use {
    match stats {
        Some(s) => Use { memory: Some(s.memory_current), cpu_millis: Some(cpu_millis), pids: Some(s.pids_current) },
        None => Use::default(),
    }
}

/// Per budget, the CPU its agents' running replicas use (`(budget, millicores)` per agent, at
/// the last sample), counted in the budget and every ancestor, as the cgroup tree counts
/// memory.
pub(crate) fn budget_cpu<'a>(
    budgets: &BTreeMap<String, ResourceBudget>,
    per_agent: impl IntoIterator<Item = (&'a str, u64)>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (budget, cpu) in per_agent {
        let Ok(chain) = budget_chain::chain(|n| budgets.get(n), budget) else { continue };
        for b in chain {
            let slot = out.entry(b.metadata.name.clone().unwrap_or_default()).or_insert(0u64);
            *slot = slot.saturating_add(cpu);
        }
    }
    out
}
