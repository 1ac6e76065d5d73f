//! Nested ResourceBudgets under `a2a serve` on the real kernel: a child's limit over its
//! parent's is clamped to the parent's, visibly (a condition and an Event), and enforced;
//! deleting nested budgets leaves no cgroup in any hierarchy; a budget's alerts fire from the
//! use the node measures.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::agent::AgentPhase;
use a2a::api::common::ConditionStatus;
use a2a::api::{Agent, ResourceBudget};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, tear_down};

async fn wait_for<K>(api: &Api<K>, name: &str, within: Duration, ok: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && ok(&o)
        {
            return o;
        }
        assert!(Instant::now() < deadline, "{name} never reached the expected state: {:#?}", api.get_opt(name).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The directories of cgroup `rel` in every hierarchy mounted under /sys/fs/cgroup (every v1
/// controller's, and the unified one).
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join(rel)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    if root.join(rel).is_dir() {
        out.push(root.join(rel));
    }
    out
}

fn phase(a: &Agent) -> Option<AgentPhase> {
    a.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_budget_over_its_parent_is_clamped_visibly_and_nested_budgets_leave_no_cgroup() {
    let scratch = Scratch::new("nested");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // The host budget has "60%" of the host's CPU; "team" asks for all of it (over its parent
    // only once the share is resolved, which no validation can see), "squad" for more memory
    // than "team" (applied apart, as a later edit would be).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let host_millis = cores * 600;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: team }}\nspec: {{ parent: host, limits: {{ cpu: \"{cores}\", memory: 256Mi }} }}\n"
        ),
    );
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: squad }\nspec: { parent: team, limits: { memory: 512Mi } }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: inner }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  budget: squad\n  resources: { limits: { cpu: 500m, memory: 64Mi } }\n",
    );
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    let clamped = |name: &'static str| {
        let budgets = budgets.clone();
        async move {
            let b = wait_for(&budgets, name, Duration::from_secs(20), |b| {
                b.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.type_ == "LimitsClamped" && c.status == ConditionStatus::True)
                })
            })
            .await;
            b.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "LimitsClamped")).expect("condition")
        }
    };
    let show = a2a::api::quantity::format_millicores;
    let team_cond = clamped("team").await;
    assert_eq!(team_cond.reason, "OverParent");
    assert_eq!(
        team_cond.message,
        format!(
            "limits.cpu {} is over budget \"host\"'s {}: {} is enforced",
            show(cores * 1000),
            show(host_millis),
            show(host_millis)
        )
    );
    let cond = clamped("squad").await;
    assert_eq!(cond.message, "limits.memory 512Mi is over budget \"team\"'s 256Mi: 256Mi is enforced");
    let host = wait_for(&budgets, "host", Duration::from_secs(10), |b| b.status.is_some()).await;
    let host_cond = host.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "LimitsClamped"));
    assert_eq!(host_cond.map(|c| c.status), Some(ConditionStatus::False), "host has no parent");

    // An Event says it too.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        if let Some(e) = list.items.iter().find(|e| {
            e.involved_object.name.as_deref() == Some("squad") && e.reason.as_deref() == Some("LimitsClamped")
        }) {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.message.as_deref(), Some(cond.message.as_str()));
            break;
        }
        assert!(Instant::now() < deadline, "no LimitsClamped event: {:#?}", list.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The kernel enforces the parent's limits on the child's cgroup.
    let team_dir = format!("{top}/host/team");
    let squad_dir = format!("{team_dir}/squad");
    let quota = host_millis * 100;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (cpu_file, cpu_want, mem_file) = if v2 {
        (
            format!("/sys/fs/cgroup/{team_dir}/cpu.max"),
            format!("{quota} 100000\n"),
            format!("/sys/fs/cgroup/{squad_dir}/memory.max"),
        )
    } else {
        (
            format!("/sys/fs/cgroup/cpu/{team_dir}/cpu.cfs_quota_us"),
            format!("{quota}\n"),
            format!("/sys/fs/cgroup/memory/{squad_dir}/memory.limit_in_bytes"),
        )
    };
    assert_eq!(std::fs::read_to_string(&cpu_file).expect("cpu quota"), cpu_want);
    assert_eq!(std::fs::read_to_string(&mem_file).expect("memory limit").trim(), (256u64 << 20).to_string());

    // Admission holds agents to the same limits: what fits in the declared limits of "team"
    // but not in what the kernel enforces waits.
    let agents: Api<Agent> = Api::namespaced(client.clone(), "default");
    wait_for(&agents, "inner", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: greedy }}\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  budget: squad\n  resources: {{ limits: {{ cpu: {host_millis}m }} }}\n"
        ),
    );
    let greedy = wait_for(&agents, "greedy", Duration::from_secs(10), |a| phase(a) == Some(AgentPhase::Pending)).await;
    let admitted = greedy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted")).cloned();
    let message = admitted.map(|c| c.message).unwrap_or_default();
    assert!(message.starts_with(&format!("needs {} cpu but budget", show(host_millis))), "{message}");

    // Deleting the parent first, then the child: nothing of either stays in any hierarchy.
    assert!(!cgroup_dirs(&squad_dir).is_empty());
    budgets.delete("team", &DeleteParams::default()).await.expect("delete team");
    wait_for(&agents, "inner", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Pending)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cgroup_dirs(&team_dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new(), "the parent's cgroup (and the child's) went");
    // The child budget, whose parent is gone, is not given a cgroup again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new(), "no cgroup is made again for the orphaned child");
    budgets.delete("squad", &DeleteParams::default()).await.expect("delete squad");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new());
    assert!(!cgroup_dirs(&format!("{top}/host")).is_empty(), "the host budget's cgroup stays");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_over_its_cpu_alert_threshold_fires_from_measured_use_with_an_event() {
    let scratch = Scratch::new("alerts");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // A busy loop held to 100m uses up to 20% of the budget's 500m: over the CPU alert's 4%
    // even on a loaded host, and far under the memory alert's 99%.
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: alarm }\nspec:\n  parent: host\n  limits: { memory: 64Mi, cpu: 500m }\n  alerts: [{ resource: memory, above: \"99%\" }, { resource: cpu, above: \"4%\" }]\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: spin }\nspec:\n  command: [sh, -c, \"while :; do :; done\"]\n  budget: alarm\n  resources: { limits: { cpu: 100m, memory: 64Mi } }\n",
    );
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    let firing = |b: &ResourceBudget| {
        b.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "AlertFiring" && c.status == ConditionStatus::True))
    };
    let b = wait_for(&budgets, "alarm", Duration::from_secs(60), firing).await;
    let s = b.status.expect("status");
    let cond =
        |t: &str| s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status, c.reason.clone(), c.message.clone()));
    assert_eq!(
        cond("AlertFiring"),
        Some((ConditionStatus::True, "ThresholdCrossed".into(), "cpu above 4%".into())),
        "the CPU alert is evaluated from the replicas' CPU; the memory alert does not fire"
    );
    assert_eq!(cond("Pressure").map(|c| (c.0, c.1)), Some((ConditionStatus::False, "Room".into())));
    let used = s.used.expect("used is measured");
    assert!(used.memory_bytes > 0, "{used:?}");
    assert!(used.cpu_millicores >= 20, "CPU use is measured locally: {used:?}");
    assert!(used.pids > 0, "{used:?}");
    assert_eq!(s.allocated.map(|a| (a.memory_bytes, a.cpu_millicores)), Some((64 << 20, 100)));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.involved_object.name.as_deref() == Some("alarm") && e.reason.as_deref() == Some("AlertFiring"))
        {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.message.as_deref(), Some("cpu use is above the 4% threshold"));
            break;
        }
        assert!(Instant::now() < deadline, "no AlertFiring event: {:#?}", list.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tear_down(daemon).await;
}
