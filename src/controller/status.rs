//! An Agent's status from plain facts: its phase, the `Admitted` and `Ready` conditions and
//! the replica counts, the same in both modes. The node (processes and cgroups) and the
//! operator (a Deployment and its pods) each gather [`AgentFacts`] from what they observe and
//! call [`agent_status`]; neither derives a phase or a condition on its own.
//!
//! The rules, in order (the first that applies decides):
//! 1. The agent cannot run as specified (`failure`): `Failed`, Ready=False with its reason.
//! 2. Not admitted into its budget: `Pending`, Ready=False `NotAdmitted`.
//! 3. A referenced Secret, ConfigMap or key is missing (`config_error`) and nothing runs:
//!    `Pending`, Ready=False with kubelet's reason `CreateContainerConfigError` and a message
//!    naming it. With replicas still running (they keep their configuration, as containers
//!    do), the rules below apply and the error is the reason of a Ready=False.
//! 4. `replicas: 0`: `Stopped`, Ready=False `ScaledToZero` — nothing can be sent to it, so
//!    it is not ready, as a Deployment scaled to zero has no ready endpoint.
//! 5. A stdio agent runs its command once per task: `Running`, Ready=True `StdioReady`.
//! 6. All replicas ready: `Running`, Ready=True `AllReplicasReady`.
//! 7. Nothing runs, nothing waits to restart, and a replica ended for good (its restart
//!    policy keeps it stopped): `Stopped`, Ready=False `Exited`.
//! 8. Some ready: `Degraded`; none ready: `Starting` — Ready=False, with the reason
//!    `CrashLoopBackOff` when replicas wait to start again after crashing, else
//!    `ReplicasNotReady` / `Starting`, or the reason a stuck rollout (`stuck`) or a missing
//!    reference (`config_error`) gives.
//!
//! `Throttled` is derived where the mode observes throttling (the node); the conditions only
//! one mode has (the node's `Enforced` and `Sandboxed`, the Deployment's `Progressing` and
//! `ReplicaFailure` mirrored on a cluster) stay with that mode.

use crate::api::Condition;
use crate::api::agent::AgentPhase;
use crate::controller::admission::Verdict;

/// Why an agent cannot run (reason, message), as its Ready condition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

/// What a mode observed of one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// `spec.replicas`.
    pub replicas: u32,
    /// The admission verdict; `None` before admission looked at the agent.
    pub admission: Option<Verdict>,
    /// `protocol: stdio`: no long-running replica; each task runs the command.
    pub stdio: bool,
    /// It cannot run as specified, or its start failed.
    pub failure: Option<Failure>,
    /// Replicas whose process (pod) exists.
    pub running: u32,
    /// Of those, replicas that serve their agent card (pass their readiness probe).
    pub ready: u32,
    /// Replicas waiting to start again after they crashed.
    pub crashing: u32,
    /// Nothing runs and every replica's restart policy keeps it stopped after it ended.
    pub ended: bool,
    /// A referenced Secret or ConfigMap (or a key of it) is missing: no replica can start.
    pub config_error: Option<Failure>,
    /// Why the replicas do not come up, as the platform says it (a Deployment whose pods
    /// cannot be created, or whose rollout passed its deadline).
    pub stuck: Option<Failure>,
    /// Whether the kernel throttles a replica at its CPU limit; `None` where that is not
    /// observed (a cluster: metrics-server does not report throttling).
    pub throttled: Option<bool>,
}

/// What the facts mean.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSummary {
    pub phase: AgentPhase,
    /// `Admitted` and `Ready` (observed generation left to the caller).
    pub admitted: Condition,
    pub ready: Condition,
    /// `Throttled`, where throttling is observed.
    pub throttled: Option<Condition>,
    /// `status.replicas`, `status.readyReplicas`, `status.ready` (`ready/desired`).
    pub replicas: u32,
    pub ready_replicas: u32,
    pub ready_text: String,
}

/// The reason of an agent with `replicas: 0`.
pub const SCALED_TO_ZERO: &str = "ScaledToZero";

/// Derives an agent's phase and conditions from `facts` (see the module docs for the rules).
pub fn agent_status(facts: &AgentFacts) -> AgentSummary {
    let admitted = match &facts.admission {
        Some(Verdict::Admitted) => Condition::new("Admitted", true, "Admitted", "fits in its budget"),
        Some(Verdict::Pending { reason, message }) => Condition::new("Admitted", false, reason, message.clone()),
        None => Condition::new("Admitted", false, "Unknown", "not considered yet"),
    };
    let is_admitted = matches!(facts.admission, Some(Verdict::Admitted));
    let desired = facts.replicas;
    let ready = facts.ready;
    let counted = format!("{ready}/{desired} replicas ready");
    let not_ready =
        |phase: AgentPhase, reason: &str, message: String| match facts.config_error.as_ref().or(facts.stuck.as_ref()) {
            Some(s) => (phase, s.reason.clone(), format!("{message}: {}", s.message)),
            None => (phase, reason.to_owned(), message),
        };
    let (phase, reason, message) = if let Some(f) = &facts.failure {
        (AgentPhase::Failed, f.reason.clone(), f.message.clone())
    } else if !is_admitted {
        (AgentPhase::Pending, "NotAdmitted".to_owned(), "waiting for room in its budget".to_owned())
    } else if let Some(e) = facts.config_error.as_ref().filter(|_| desired > 0 && (facts.stdio || facts.running == 0)) {
        (AgentPhase::Pending, e.reason.clone(), e.message.clone())
    } else if desired == 0 {
        (AgentPhase::Stopped, SCALED_TO_ZERO.to_owned(), "replicas is 0: nothing can be sent to it".to_owned())
    } else if facts.stdio {
        (AgentPhase::Running, "StdioReady".to_owned(), "runs its command once per task".to_owned())
    } else if ready >= desired {
        (AgentPhase::Running, "AllReplicasReady".to_owned(), counted)
    } else if facts.running == 0 && facts.crashing == 0 && facts.ended {
        (
            AgentPhase::Stopped,
            "Exited".to_owned(),
            "the process ended and its restart policy does not restart it".to_owned(),
        )
    } else {
        let phase = if ready > 0 { AgentPhase::Degraded } else { AgentPhase::Starting };
        if facts.crashing > 0 {
            not_ready(phase, "CrashLoopBackOff", format!("{counted}, {} restarting after a crash", facts.crashing))
        } else if ready > 0 {
            not_ready(phase, "ReplicasNotReady", counted)
        } else {
            not_ready(phase, "Starting", counted)
        }
    };
    let ready_cond = Condition::new("Ready", phase == AgentPhase::Running, &reason, message);
    // A stdio agent's slots are all ready once it may run: each task starts its own process.
    let ready_replicas = if facts.stdio && is_admitted && facts.failure.is_none() && facts.config_error.is_none() {
        desired
    } else {
        ready
    };
    let throttled = facts.throttled.map(|t| {
        Condition::new(
            "Throttled",
            t,
            if t { "CPUQuotaReached" } else { "BelowQuota" },
            if t { "the kernel is throttling it at its cpu limit" } else { "not throttled" },
        )
    });
    AgentSummary {
        phase,
        admitted,
        ready: ready_cond,
        throttled,
        replicas: facts.running,
        ready_replicas,
        ready_text: format!("{ready_replicas}/{desired}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ConditionStatus;

    fn facts(replicas: u32, running: u32, ready: u32) -> AgentFacts {
        AgentFacts { replicas, admission: Some(Verdict::Admitted), running, ready, ..Default::default() }
    }

    #[test]
    fn the_phase_and_ready_follow_the_facts() {
        let pending = Verdict::Pending { reason: "InsufficientQuota", message: "no room".into() };
        let fail = |r: &str| Failure { reason: r.into(), message: "m".into() };
        type Row = (&'static str, AgentFacts, AgentPhase, bool, &'static str);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("scaled to zero", facts(0, 0, 0), AgentPhase::Stopped, false, "ScaledToZero"),
            ("stdio at zero slots", AgentFacts { stdio: true, ..facts(0, 0, 0) }, AgentPhase::Stopped, false, "ScaledToZero"),
            ("all ready", facts(2, 2, 2), AgentPhase::Running, true, "AllReplicasReady"),
            ("some ready", facts(2, 2, 1), AgentPhase::Degraded, false, "ReplicasNotReady"),
            ("none ready yet", facts(2, 2, 0), AgentPhase::Starting, false, "Starting"),
            ("one crashing", AgentFacts { crashing: 1, ..facts(2, 1, 1) }, AgentPhase::Degraded, false, "CrashLoopBackOff"),
            ("all crashing", AgentFacts { crashing: 2, ..facts(2, 0, 0) }, AgentPhase::Starting, false, "CrashLoopBackOff"),
            ("ended for good", AgentFacts { ended: true, ..facts(1, 0, 0) }, AgentPhase::Stopped, false, "Exited"),
            ("not admitted", AgentFacts { admission: Some(pending), ..facts(1, 0, 0) }, AgentPhase::Pending, false, "NotAdmitted"),
            ("not looked at", AgentFacts { admission: None, ..facts(1, 0, 0) }, AgentPhase::Pending, false, "NotAdmitted"),
            ("cannot run", AgentFacts { failure: Some(fail("MissingImage")), admission: None, ..facts(1, 0, 0) }, AgentPhase::Failed, false, "MissingImage"),
            ("stuck rollout", AgentFacts { stuck: Some(fail("FailedCreate")), ..facts(2, 0, 0) }, AgentPhase::Starting, false, "FailedCreate"),
            ("stdio", AgentFacts { stdio: true, ..facts(3, 0, 0) }, AgentPhase::Running, true, "StdioReady"),
            ("secret missing", AgentFacts { config_error: Some(fail("CreateContainerConfigError")), ..facts(1, 0, 0) }, AgentPhase::Pending, false, "CreateContainerConfigError"),
            ("secret missing, stdio", AgentFacts { stdio: true, config_error: Some(fail("CreateContainerConfigError")), ..facts(1, 0, 0) }, AgentPhase::Pending, false, "CreateContainerConfigError"),
            ("secret gone while running", AgentFacts { config_error: Some(fail("CreateContainerConfigError")), ..facts(2, 1, 1) }, AgentPhase::Degraded, false, "CreateContainerConfigError"),
            ("secret gone, all ready", AgentFacts { config_error: Some(fail("CreateContainerConfigError")), ..facts(1, 1, 1) }, AgentPhase::Running, true, "AllReplicasReady"),
            ("secret missing, not admitted", AgentFacts { config_error: Some(fail("CreateContainerConfigError")), admission: None, ..facts(1, 0, 0) }, AgentPhase::Pending, false, "NotAdmitted"),
        ];
        for (what, f, phase, ready, reason) in table {
            let s = agent_status(&f);
            assert_eq!(
                (s.phase, s.ready.status == ConditionStatus::True, s.ready.reason.as_str()),
                (phase, ready, reason),
                "{what}"
            );
        }
    }

    #[test]
    fn counts_and_messages_say_how_many_are_ready() {
        let s = agent_status(&AgentFacts { crashing: 1, ..facts(3, 2, 2) });
        assert_eq!((s.replicas, s.ready_replicas, s.ready_text.as_str()), (2, 2, "2/3"));
        assert_eq!(s.ready.message, "2/3 replicas ready, 1 restarting after a crash");
        let stuck = Failure { reason: "FailedCreate".into(), message: "exceeded quota".into() };
        let s = agent_status(&AgentFacts { stuck: Some(stuck), ..facts(2, 0, 0) });
        assert_eq!(s.ready.message, "0/2 replicas ready: exceeded quota");
        let s = agent_status(&AgentFacts { stdio: true, ..facts(4, 0, 0) });
        assert_eq!((s.ready_replicas, s.ready_text.as_str()), (4, "4/4"), "a stdio agent's slots are ready");
        assert_eq!(agent_status(&facts(0, 0, 0)).ready.message, "replicas is 0: nothing can be sent to it");
        assert_eq!(agent_status(&AgentFacts::default()).admitted.reason, "Unknown");
        assert_eq!(agent_status(&AgentFacts::default()).throttled, None, "not observed: no condition");
        let t = agent_status(&AgentFacts { throttled: Some(true), ..facts(1, 1, 1) }).throttled.expect("observed");
        assert_eq!((t.status, t.reason.as_str()), (ConditionStatus::True, "CPUQuotaReached"));
    }
}
