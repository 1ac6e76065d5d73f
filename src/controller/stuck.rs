//! Why queued work is not dispatched, said in the task's own status entry: the agent does
//! not exist, it is not admitted (with the admission message), it has no ready replica, or
//! no Ready agent has the skill. A task waiting only for a free slot of a ready agent is not
//! stuck and gets no reason. An agent that can never be admitted (its demand exceeds a
//! budget's whole limit) makes the task fail at once instead of waiting forever.

use std::collections::BTreeSet;

use super::admission::EXCEEDS_BUDGET_LIMIT;
use crate::api::Agent;
use crate::api::common::{ConditionStatus, find_condition};

pub const AGENT_NOT_FOUND: &str = "AgentNotFound";
pub const AGENT_NOT_ADMITTED: &str = "AgentNotAdmitted";
pub const NO_READY_REPLICA: &str = "NoReadyReplica";
pub const NO_AGENT_WITH_SKILL: &str = "NoAgentWithSkill";
/// A task failed because the agent it needs can never be admitted.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// Why a task waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    pub reason: &'static str,
    pub message: String,
    /// It can never run while the budgets stay as they are: the task fails now.
    pub never: bool,
}

/// What the engine knows of an agent.
#[derive(Clone, Copy, Debug)]
pub struct AgentFacts<'a> {
    pub name: &'a str,
    pub agent: &'a Agent,
    /// It has a ready replica with task slots (busy or not).
    pub ready: bool,
    pub skills: &'a BTreeSet<String>,
}

/// Why a task for the agent `name` (in `namespace`) waits; `None` when the agent is ready.
pub fn for_agent(namespace: &str, name: &str, facts: Option<AgentFacts<'_>>) -> Option<Stuck> {
    let Some(f) = facts else {
        return Some(Stuck {
            reason: AGENT_NOT_FOUND,
            message: format!("agent {name:?} does not exist in namespace {namespace:?}"),
            never: false,
        });
    };
    if f.ready {
        return None;
    }
    let (why, never) = not_ready(f);
    let reason = match (never, why.admitted) {
        (true, _) => UNSCHEDULABLE,
        (false, false) => AGENT_NOT_ADMITTED,
        (false, true) => NO_READY_REPLICA,
    };
    Some(Stuck { reason, message: format!("agent {name:?} {}", why.text), never })
}

/// Why a task for any Ready agent with `skill` waits; `None` when there is one.
/// `candidates` are the agents of the namespace (any skills).
pub fn for_skill<'a>(
    namespace: &str,
    skill: &str,
    candidates: impl IntoIterator<Item = AgentFacts<'a>>,
) -> Option<Stuck> {
    let with: Vec<AgentFacts<'a>> = candidates.into_iter().filter(|f| f.skills.contains(skill)).collect();
    if with.iter().any(|f| f.ready) {
        return None;
    }
    let whys: Vec<(String, bool)> = with
        .iter()
        .take(5)
        .map(|f| {
            let (why, never) = not_ready(*f);
            (format!("{:?} {}", f.name, why.text), never)
        })
        .collect();
    let detail = if with.is_empty() {
        "no agent there offers it".to_owned()
    } else {
        let more =
            if with.len() > whys.len() { format!("; and {} more", with.len() - whys.len()) } else { String::new() };
        format!("{}{more}", whys.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join("; "))
    };
    let never = !with.is_empty() && with.iter().all(|f| not_ready(*f).1);
    Some(Stuck {
        reason: if never { UNSCHEDULABLE } else { NO_AGENT_WITH_SKILL },
        message: format!("no Ready agent in namespace {namespace:?} has skill {skill:?} ({detail})"),
        never,
    })
}

struct NotReady {
    /// Admitted (or not subject to admission): only its replicas are missing.
    admitted: bool,
    text: String,
}

/// Why an agent is not ready, and whether it never can be.
fn not_ready(f: AgentFacts<'_>) -> (NotReady, bool) {
    let status = f.agent.status.as_ref();
    if let Some(c) = status.and_then(|s| find_condition(&s.conditions, "Admitted"))
        && c.status == ConditionStatus::False
    {
        let never = c.reason == EXCEEDS_BUDGET_LIMIT;
        let text = if never {
            format!("can never be admitted: {}", c.message)
        } else {
            format!("is not admitted: {}", c.message)
        };
        return (NotReady { admitted: false, text }, never);
    }
    let phase = status.and_then(|s| s.phase).map_or_else(|| "not started yet".to_owned(), |p| format!("{p:?}"));
    let (ready, replicas) =
        status.map_or((0, f.agent.spec.replicas()), |s| (s.ready_replicas, s.replicas.max(f.agent.spec.replicas())));
    // Why, when the node said more than that it is starting: a start that failed, a crash
    // loop, a missing Secret.
    let why = status
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .filter(|c| c.status == ConditionStatus::False && !matches!(c.reason.as_str(), "Starting" | "ReplicasNotReady"))
        .map(|c| format!(": {}", c.message))
        .unwrap_or_default();
    (
        NotReady { admitted: true, text: format!("has no ready replica ({phase}, {ready} of {replicas} ready{why})") },
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Condition;

    fn agent(status: serde_json::Value) -> Agent {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "x"},
            "spec": {"command": ["a2a", "demo-agent"], "replicas": 2}, "status": status
        }))
        .expect("agent")
    }

    fn facts<'a>(name: &'a str, agent: &'a Agent, ready: bool, skills: &'a BTreeSet<String>) -> AgentFacts<'a> {
        AgentFacts { name, agent, ready, skills }
    }

    #[test]
    fn each_reason_names_the_agent_and_what_it_lacks() {
        let none = BTreeSet::new();
        let missing = for_agent("default", "ghost", None).expect("stuck");
        assert_eq!(
            (missing.reason, missing.message.as_str(), missing.never),
            (AGENT_NOT_FOUND, "agent \"ghost\" does not exist in namespace \"default\"", false)
        );
        let mut waiting = agent(serde_json::json!({"phase": "Pending"}));
        let cond = Condition::new(
            "Admitted",
            false,
            "InsufficientQuota",
            "needs 1 cpu but budget \"host\" has 400m of 1200m left",
        );
        waiting.status.as_mut().expect("status").conditions.push(cond);
        let s = for_agent("default", "x", Some(facts("x", &waiting, false, &none))).expect("stuck");
        assert_eq!(s.reason, AGENT_NOT_ADMITTED);
        assert_eq!(s.message, "agent \"x\" is not admitted: needs 1 cpu but budget \"host\" has 400m of 1200m left");
        assert!(!s.never);
        let starting = agent(serde_json::json!({"phase": "Starting", "replicas": 2, "readyReplicas": 0}));
        let s = for_agent("default", "x", Some(facts("x", &starting, false, &none))).expect("stuck");
        assert_eq!(
            (s.reason, s.message.as_str()),
            (NO_READY_REPLICA, "agent \"x\" has no ready replica (Starting, 0 of 2 ready)")
        );
        assert_eq!(for_agent("default", "x", Some(facts("x", &starting, true, &none))), None, "ready: not stuck");
        let mut failed = agent(serde_json::json!({"phase": "Failed", "replicas": 2, "readyReplicas": 0}));
        let why = "cannot start \"examples/nope.py\": No such file or directory (os error 2)";
        failed.status.as_mut().expect("status").conditions.push(Condition::new("Ready", false, "StartFailed", why));
        let s = for_agent("default", "x", Some(facts("x", &failed, false, &none))).expect("stuck");
        assert_eq!(s.message, format!("agent \"x\" has no ready replica (Failed, 0 of 2 ready: {why})"));
    }

    #[test]
    fn an_agent_over_its_budgets_whole_limit_makes_the_task_fail_now() {
        let none = BTreeSet::new();
        let mut big = agent(serde_json::json!({"phase": "Pending"}));
        let cond = Condition::new(
            "Admitted",
            false,
            EXCEEDS_BUDGET_LIMIT,
            "needs 1500m cpu, more than budget \"host\"'s whole limit of 1200m",
        );
        big.status.as_mut().expect("status").conditions.push(cond);
        let s = for_agent("default", "x", Some(facts("x", &big, false, &none))).expect("stuck");
        assert_eq!(s.reason, UNSCHEDULABLE);
        assert!(s.never);
        assert_eq!(
            s.message,
            "agent \"x\" can never be admitted: needs 1500m cpu, more than budget \"host\"'s whole limit of 1200m"
        );
    }

    #[test]
    fn a_skill_is_stuck_only_while_no_agent_with_it_is_ready() {
        let sum: BTreeSet<String> = ["sum".to_owned()].into();
        let other: BTreeSet<String> = ["other".to_owned()].into();
        let starting = agent(serde_json::json!({"phase": "Starting", "replicas": 1}));
        let s = for_skill("default", "sum", [facts("a", &starting, true, &other)]).expect("stuck");
        assert_eq!(s.reason, NO_AGENT_WITH_SKILL);
        assert_eq!(s.message, "no Ready agent in namespace \"default\" has skill \"sum\" (no agent there offers it)");
        let s = for_skill("default", "sum", [facts("b", &starting, false, &sum)]).expect("stuck");
        assert!(s.message.ends_with("(\"b\" has no ready replica (Starting, 0 of 2 ready))"), "{}", s.message);
        assert_eq!(for_skill("default", "sum", [facts("b", &starting, true, &sum)]), None);
    }
}
