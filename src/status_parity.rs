//! The same facts give the same status in both modes: each case goes through the node's own
//! fact gathering (its admission input from the cached objects, its replicas, its budget
//! cgroup's statistics) and the operator's own (its admission input, the Agent's workload,
//! the Deployment and its pods, metrics-server's pod metrics), and the statuses they write
//! are compared.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::agent::AgentPhase;
use crate::api::common::{ConditionStatus, find_condition};
use crate::api::{Agent, Condition, ResourceBudget};
use crate::cluster::budget::Measured;
use crate::cluster::workload::{WorkloadConfig, workload};
use crate::controller::admission::{self, Amounts, Host, Verdict};
use crate::controller::budget_status::{BudgetFacts, budget_status};
use crate::controller::status::agent_status;
use crate::node::cgroup::CgroupStats;
use crate::node::supervisor::facts::{self as node, ReplicaView};

const MI: u64 = 1 << 20;
/// The host the node runs on in these cases.
const CORES: u32 = 4;

fn agent(name: &str, replicas: u32, budget: &str, limits: Value) -> Agent {
    serde_json::from_value(json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": name, "namespace": "team", "uid": format!("u-{name}"), "generation": 1,
            "creationTimestamp": "2026-11-24T00:00:00Z"},
        "spec": {"image": "ghcr.io/x/agent:1", "command": ["python3", "agent.py"], "replicas": replicas,
            "budget": budget, "resources": {"limits": limits}}
    }))
    .expect("agent")
}

fn budget(name: &str, parent: Option<&str>, limits: Value, alerts: Value) -> ResourceBudget {
    serde_json::from_value(json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget",
        "metadata": {"name": name, "generation": 1},
        "spec": {"limits": limits, "parent": parent, "alerts": alerts}
    }))
    .expect("budget")
}

/// What runs of the agent: replicas ready, running but not ready, crash-looping.
#[derive(Clone, Copy)]
struct Observed {
    ready: u32,
    unready: u32,
    crashing: u32,
}

/// The node's verdict, through its own admission input.
fn node_verdict(budgets: &[ResourceBudget], a: &Agent) -> Option<Verdict> {
    let map: BTreeMap<String, ResourceBudget> = budgets.iter().map(|b| (b.name_any(), b.clone())).collect();
    let input = node::admission_input(&map, [a], |_| false, CORES);
    admission::decide(&input, u64::MAX).verdicts.get(&key(a)).cloned()
}

fn cluster_verdict(budgets: &[ResourceBudget], a: &Agent) -> Verdict {
    let input = crate::cluster::agent::admission_input(budgets, std::slice::from_ref(a));
    admission::decide(&input, u64::MAX).verdicts[&key(a)].clone()
}

fn key(a: &Agent) -> String {
    format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any())
}

/// (phase, Admitted (status, reason), Ready (status, reason)) the node writes.
type Said = (AgentPhase, (ConditionStatus, String), (ConditionStatus, String));

fn said(phase: AgentPhase, admitted: &Condition, ready: &Condition) -> Said {
    (phase, (admitted.status, admitted.reason.clone()), (ready.status, ready.reason.clone()))
}

fn on_node(budgets: &[ResourceBudget], a: &Agent, seen: Observed) -> Said {
    let verdict = node_verdict(budgets, a);
    // The node runs only what was admitted.
    let seen =
        if matches!(verdict, Some(Verdict::Admitted)) { seen } else { Observed { ready: 0, unready: 0, crashing: 0 } };
    let views =
        std::iter::repeat_n(ReplicaView { running: true, ready: true, ..Default::default() }, seen.ready as usize)
            .chain(std::iter::repeat_n(ReplicaView { running: true, ..Default::default() }, seen.unready as usize))
            .chain(std::iter::repeat_n(ReplicaView { restarting: true, ..Default::default() }, seen.crashing as usize));
    let s = agent_status(&node::agent_facts(a, verdict.as_ref(), views, None));
    said(s.phase, &s.admitted, &s.ready)
}

fn on_cluster(budgets: &[ResourceBudget], a: &Agent, seen: Observed) -> Said {
    let verdict = cluster_verdict(budgets, a);
    let admitted = matches!(verdict, Verdict::Admitted);
    let built = workload(a, admitted, &WorkloadConfig::default());
    // A Deployment scaled to 0 when not admitted has no pods.
    let seen = if admitted { seen } else { Observed { ready: 0, unready: 0, crashing: 0 } };
    let pod = |ready: bool, state: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"name": "agent", "image": "x", "imageID": "", "ready": ready, "restartCount": 0, "state": state}]}}))
        .expect("pod")
    };
    let pods: Vec<Pod> = std::iter::repeat_n(pod(true, json!({"running": {}})), seen.ready as usize)
        .chain(std::iter::repeat_n(pod(false, json!({"running": {}})), seen.unready as usize))
        .chain(std::iter::repeat_n(
            pod(false, json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}})),
            seen.crashing as usize,
        ))
        .collect();
    let pods_n = i32::try_from(pods.len()).expect("few");
    let deployment = DeploymentStatus {
        replicas: Some(pods_n),
        ready_replicas: Some(i32::try_from(seen.ready).expect("few")),
        ..Default::default()
    };
    let status =
        crate::cluster::agent::desired_status(a, &verdict, built.as_ref().map(|_| ()), Some(&deployment), &pods);
    let find = |t: &str| find_condition(&status.conditions, t).cloned().expect("condition");
    said(status.phase.expect("phase"), &find("Admitted"), &find("Ready"))
}

fn want(phase: AgentPhase, admitted: (bool, &str), ready: (bool, &str)) -> Said {
    let st = |b: bool| if b { ConditionStatus::True } else { ConditionStatus::False };
    (phase, (st(admitted.0), admitted.1.to_owned()), (st(ready.0), ready.1.to_owned()))
}

#[test]
fn both_modes_say_the_same_of_an_agent_observed_the_same() {
    let team = budget("team", None, json!({"memory": "1Gi", "cpu": "2"}), json!([]));
    let seen = |ready, unready, crashing| Observed { ready, unready, crashing };
    let mem = |m: &str| json!({"memory": m});
    type Row = (&'static str, Agent, Observed, Said);
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        ("replicas 0", agent("a", 0, "team", mem("256Mi")), seen(0, 0, 0),
            want(AgentPhase::Stopped, (true, "Admitted"), (false, "ScaledToZero"))),
        ("all ready", agent("a", 2, "team", mem("256Mi")), seen(2, 0, 0),
            want(AgentPhase::Running, (true, "Admitted"), (true, "AllReplicasReady"))),
        ("starting", agent("a", 2, "team", mem("256Mi")), seen(0, 2, 0),
            want(AgentPhase::Starting, (true, "Admitted"), (false, "Starting"))),
        ("some crashing", agent("a", 2, "team", mem("256Mi")), seen(1, 0, 1),
            want(AgentPhase::Degraded, (true, "Admitted"), (false, "CrashLoopBackOff"))),
        ("all crashing", agent("a", 1, "team", mem("256Mi")), seen(0, 0, 1),
            want(AgentPhase::Starting, (true, "Admitted"), (false, "CrashLoopBackOff"))),
        ("not admitted", agent("a", 2, "team", mem("1Gi")), seen(0, 0, 0),
            want(AgentPhase::Pending, (false, "ExceedsBudgetLimit"), (false, "NotAdmitted"))),
        ("CPU in cores over the budget", agent("a", 1, "team", json!({"cpu": "3"})), seen(0, 0, 0),
            want(AgentPhase::Pending, (false, "ExceedsBudgetLimit"), (false, "NotAdmitted"))),
        ("a missing budget", agent("a", 1, "gone", mem("1Mi")), seen(0, 0, 0),
            want(AgentPhase::Pending, (false, "BudgetNotFound"), (false, "NotAdmitted"))),
    ];
    for (what, a, observed, want) in table {
        let budgets = [team.clone()];
        assert_eq!(on_node(&budgets, &a, observed), want, "{what}: local mode");
        assert_eq!(on_cluster(&budgets, &a, observed), want, "{what}: cluster mode");
    }
}

#[test]
fn cpu_as_a_share_of_the_host_is_read_by_one_function_in_both_modes() {
    // Both modes resolve `cpu: 50%` through `admission::cpu_millis` with where they run:
    // half of the node's 4 cores (2000m) locally, so over a 1-core budget; on a cluster no
    // host has that share's size, so the agent waits (and its pods cannot be built), with
    // the same reason its workload gives, instead of counting as zero as it used to.
    let small = budget("small", None, json!({"cpu": "1"}), json!([]));
    let roomy = budget("roomy", None, json!({"cpu": "3"}), json!([]));
    let over = agent("a", 1, "small", json!({"cpu": "50%"}));
    let fits = agent("a", 1, "roomy", json!({"cpu": "50%"}));
    assert_eq!(
        on_node(std::slice::from_ref(&small), &over, Observed { ready: 1, unready: 0, crashing: 0 }),
        want(AgentPhase::Pending, (false, "ExceedsBudgetLimit"), (false, "NotAdmitted"))
    );
    assert_eq!(
        on_node(std::slice::from_ref(&roomy), &fits, Observed { ready: 1, unready: 0, crashing: 0 }),
        want(AgentPhase::Running, (true, "Admitted"), (true, "AllReplicasReady"))
    );
    let cluster = on_cluster(std::slice::from_ref(&roomy), &fits, Observed { ready: 0, unready: 0, crashing: 0 });
    assert_eq!(cluster, want(AgentPhase::Failed, (false, "UnsupportedQuantity"), (false, "UnsupportedQuantity")));
    match cluster_verdict(std::slice::from_ref(&roomy), &fits) {
        Verdict::Pending { message, .. } => assert_eq!(
            message,
            "spec.resources.limits.cpu: 50% is a share of the host, which cannot be counted against a budget on a cluster; use cores or millicores"
        ),
        Verdict::Admitted => panic!("a share of the host was admitted on a cluster"),
    }
    // A budget limited by a share of the host admits no one on a cluster, and says why.
    let shared = budget("shared", None, json!({"cpu": "60%"}), json!([]));
    match cluster_verdict(&[shared], &agent("b", 1, "shared", json!({"cpu": "100m"}))) {
        Verdict::Pending { reason, message } => assert_eq!(
            (reason, message.as_str()),
            (
                "UnsupportedQuantity",
                "ResourceBudget \"shared\": spec.limits.cpu: 60% is a share of the host, which cannot be counted against a budget on a cluster; use cores or millicores"
            )
        ),
        Verdict::Admitted => panic!("admitted under a budget whose limit cannot be counted"),
    }
}

/// A budget's status fields both modes write: (allocated memory, used memory, Pressure,
/// AlertFiring) as (status, reason).
type BudgetSaid = (u64, Option<u64>, (ConditionStatus, String), (ConditionStatus, String));

#[test]
fn both_modes_say_the_same_of_a_budget_measured_the_same() {
    let org = budget("org", None, json!({"memory": "2Gi"}), json!([{"resource": "memory", "above": "40%"}]));
    let team = budget("team", Some("org"), json!({"memory": "1Gi"}), json!([{"resource": "memory", "above": "90%"}]));
    let budgets = vec![org, team];
    let mut big = agent("big", 1, "team", json!({"memory": "768Mi"}));
    big.metadata.creation_timestamp = Some(serde_json::from_value(json!("2026-11-24T01:00:00Z")).expect("time"));
    let agents = vec![agent("writer", 2, "team", json!({"memory": "256Mi"})), big];
    // writer's pods use 950Mi together: over team's 90% alert, and org's 40%.
    let use_mi = BTreeMap::from([("writer", 950u64)]);
    let cond = |c: &Condition| (c.status, c.reason.clone());

    // The node: its admission input, then each budget cgroup's statistics (a parent's count
    // its children's, as the kernel's do).
    let map: BTreeMap<String, ResourceBudget> = budgets.iter().map(|b| (b.name_any(), b.clone())).collect();
    let input = node::admission_input(&map, &agents, |_| false, CORES);
    let decision = admission::decide(&input, u64::MAX);
    let node_said: BTreeMap<String, BudgetSaid> = budgets
        .iter()
        .map(|b| {
            let name = b.name_any();
            let stats = CgroupStats { memory_current: 950 * MI, pids_current: 4, ..Default::default() };
            let s = budget_status(&BudgetFacts {
                limits: admission::budget_limits(&b.spec, Host::Local { cores: CORES }).expect("limits"),
                allocated: decision.allocated.get(&name).copied().unwrap_or_default(),
                used: node::budget_use(Some(&stats), 0),
                pending: decision.pending.get(&name).map_or(0, Vec::len),
                alerts: &b.spec.alerts,
            });
            (name, (s.allocated.memory_bytes, s.used.map(|u| u.memory_bytes), cond(&s.pressure), cond(&s.alert_firing)))
        })
        .collect();

    // The operator: metrics-server's pod metrics by agent, through its own status pass.
    let measured = Measured::Served(
        use_mi
            .iter()
            .map(|(a, m)| (("team".to_owned(), (*a).to_owned()), Amounts { memory: m * MI, ..Default::default() }))
            .collect(),
    );
    let cluster_said: BTreeMap<String, BudgetSaid> =
        crate::cluster::budget::budget_statuses(&budgets, &agents, &measured)
            .into_iter()
            .map(|(name, s)| {
                let c = |t: &str| cond(find_condition(&s.conditions, t).expect("condition"));
                let said = (
                    s.allocated.as_ref().map_or(0, |a| a.memory_bytes),
                    s.used.as_ref().map(|u| u.memory_bytes),
                    c("Pressure"),
                    c("AlertFiring"),
                );
                (name, said)
            })
            .collect();

    let firing = (ConditionStatus::True, "ThresholdCrossed".to_owned());
    let waiting = (ConditionStatus::True, "NearLimit".to_owned());
    // writer (512Mi) is admitted; big (768Mi) does not fit beside it and waits in team.
    let expected = BTreeMap::from([
        ("org".to_owned(), (512 * MI, Some(950 * MI), (ConditionStatus::False, "Room".to_owned()), firing.clone())),
        ("team".to_owned(), (512 * MI, Some(950 * MI), waiting, firing)),
    ]);
    assert_eq!(node_said, expected, "local mode");
    assert_eq!(cluster_said, expected, "cluster mode");
}
