//! An Agent's status on a cluster: the facts the operator reads from the Agent's Deployment
//! and pods, turned into status by the shared core ([`crate::controller::status`]).

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

use crate::api::agent::{AgentStatus, Termination, TerminationReason};
use crate::api::common::{ConditionStatus, Time, set_condition};
use crate::api::{Agent, Condition};
use crate::cluster::workload::{WorkloadError, service_url};
use crate::controller::admission::Verdict;
use crate::controller::status::{AgentFacts, Failure, agent_status};

/// What the cluster says of an agent, as facts: its admission, whether its workload could be
/// built, the Deployment's replica counts, the pods crashing, and why a rollout is stuck
/// (a failed pod creation — a ResourceQuota, a missing PriorityClass — or a passed progress
/// deadline, in the Deployment controller's words).
pub fn agent_facts(
    agent: &Agent,
    verdict: &Verdict,
    workload: Result<(), &WorkloadError>,
    deployment: Option<&DeploymentStatus>,
    pods: &[Pod],
) -> AgentFacts {
    let count = |n: Option<i32>| u32::try_from(n.unwrap_or(0)).unwrap_or(0);
    let stuck = deployment.and_then(|d| d.conditions.as_ref()).and_then(|cs| {
        cs.iter().find(|c| c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True")).or_else(
            || cs.iter().find(|c| c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("False")),
        )
    });
    // A pod whose container is in CrashLoopBackOff (or has just ended) waits to start again.
    let crashing = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state.as_ref().is_some_and(|s| {
                        s.terminated.is_some()
                            || s.waiting.as_ref().is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                    })
                })
            })
        })
        .count();
    // A pod whose container kubelet cannot create because a referenced Secret, ConfigMap or
    // key is missing: kubelet's reason and message (they name the object, never a value).
    let config_error = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            (w.reason.as_deref() == Some(crate::controller::config_refs::CONFIG_ERROR_REASON)).then(|| Failure {
                reason: crate::controller::config_refs::CONFIG_ERROR_REASON.to_owned(),
                message: w.message.clone().unwrap_or_else(|| "a referenced Secret or ConfigMap is missing".to_owned()),
            })
        })
    });
    AgentFacts {
        replicas: agent.spec.replicas(),
        config_error,
        admission: Some(verdict.clone()),
        stdio: false,
        failure: workload.err().map(|e| Failure { reason: e.reason().to_owned(), message: e.to_string() }),
        running: if workload.is_ok() { count(deployment.and_then(|d| d.replicas)) } else { 0 },
        ready: if workload.is_ok() { count(deployment.and_then(|d| d.ready_replicas)) } else { 0 },
        crashing: u32::try_from(crashing).unwrap_or(u32::MAX),
        // The pods of a Deployment always restart: none ends for good.
        ended: false,
        stuck: stuck.map(|c| Failure {
            reason: c.reason.clone().or_else(|| c.type_.clone()).unwrap_or_else(|| "DeploymentStuck".to_owned()),
            message: c.message.clone().unwrap_or_else(|| "the Deployment reports no message".to_owned()),
        }),
        // Throttling is not observed on a cluster.
        throttled: None,
    }
}

/// The status an Agent should have, from what was decided and what the cluster reports.
pub fn desired_status(
    agent: &Agent,
    verdict: &Verdict,
    workload: Result<(), &WorkloadError>,
    deployment: Option<&DeploymentStatus>,
    pods: &[Pod],
) -> AgentStatus {
    let mut status = agent.status.clone().unwrap_or_default();
    let generation = agent.meta().generation;
    let summary = agent_status(&agent_facts(agent, verdict, workload, deployment, pods));
    for mut c in [summary.admitted, summary.ready] {
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c);
    }
    status.replicas = summary.replicas;
    status.ready_replicas = summary.ready_replicas;
    status.ready = Some(summary.ready_text);
    // The Deployment's Progressing and ReplicaFailure conditions, mirrored as they are.
    for type_ in ["Progressing", "ReplicaFailure"] {
        let found = match workload {
            Ok(()) => deployment
                .and_then(|d| d.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(type_))),
            Err(_) => None,
        };
        match found {
            Some(c) => {
                let mut mirrored = Condition::new(
                    type_,
                    c.status.as_deref() == Some("True"),
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                );
                if !matches!(c.status.as_deref(), Some("True" | "False")) {
                    mirrored.status = ConditionStatus::Unknown;
                }
                mirrored.observed_generation = generation;
                set_condition(&mut status.conditions, mirrored);
            }
            None => status.conditions.retain(|c| c.type_ != type_),
        }
    }
    status.phase = Some(summary.phase);
    status.endpoints = if summary.ready_replicas > 0 { service_url(agent).into_iter().collect() } else { Vec::new() };
    // Restarts and the last termination come from the pods' container statuses.
    let mut restarts = 0u32;
    let mut last: Option<Termination> = None;
    for cs in pods.iter().filter_map(|p| p.status.as_ref()).flat_map(|s| s.container_statuses.iter().flatten()) {
        restarts = restarts.saturating_add(cs.restart_count.max(0) as u32);
        if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            let at = t.finished_at.as_ref().map_or_else(Time::now, |f| Time(f.0));
            let reason = match t.reason.as_deref() {
                Some("OOMKilled") => TerminationReason::OomKilled,
                _ if t.signal.is_some() => TerminationReason::Signaled,
                _ => TerminationReason::Exited,
            };
            if last.as_ref().is_none_or(|l| l.at < at) {
                last = Some(Termination { reason, exit_code: Some(t.exit_code), signal: t.signal, at });
            }
        }
    }
    status.restarts = restarts;
    if last.is_some() {
        status.last_termination = last;
    }
    status.observed_generation = generation;
    status
}
