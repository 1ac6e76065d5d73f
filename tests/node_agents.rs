//! Agents under `a2a serve` on the real kernel: OOM kills reported as such, budgets enforced
//! by admission, re-adoption after the daemon is SIGKILLed, and nothing left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::{AgentPhase, TerminationReason};
use a2a::api::common::ConditionStatus;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, phase, pids, tear_down, wait_agent};

fn agent_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n{extra}---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_its_memory_limit_is_oom_killed_and_its_neighbour_is_untouched() {
    let scratch = Scratch::new("oom");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        &format!(
            "{}apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: hog }}\nspec:\n  command: [python3, -c, \"b = b'x' * (256 << 20); import time; time.sleep(60)\"]\n  restartPolicy: Never\n  resources: {{ limits: {{ memory: 64Mi }} }}\n",
            agent_yaml("calm", "  resources: { limits: { memory: 64Mi } }\n")
        ),
    );
    let calm = wait_agent(&client, "calm", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Running)).await;
    let hog = wait_agent(&client, "hog", Duration::from_secs(20), |a| {
        a.status
            .as_ref()
            .and_then(|s| s.last_termination.as_ref())
            .is_some_and(|t| t.reason == TerminationReason::OomKilled)
    })
    .await;
    let t = hog.status.as_ref().and_then(|s| s.last_termination.clone()).expect("termination");
    assert_eq!(t.signal, Some(9), "the kernel's OOM killer sends SIGKILL");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calm_after = wait_agent(&client, "calm", Duration::from_secs(5), |_| true).await;
    assert_eq!(pids(&calm_after), pids(&calm), "the neighbour kept its process");
    assert_eq!(phase(&calm_after), Some(AgentPhase::Running));
    assert_eq!(calm_after.status.as_ref().map(|s| s.restarts), Some(0));
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_fit_waits_and_starts_when_room_frees() {
    let scratch = Scratch::new("admit");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: tiny }}\nspec: {{ parent: host, limits: {{ memory: 100Mi }} }}\n---\n{}",
            agent_yaml("first", "  budget: tiny\n  resources: { limits: { memory: 64Mi } }\n")
        ),
    );
    wait_agent(&client, "first", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Running)).await;
    apply(home, &agent_yaml("second", "  budget: tiny\n  resources: { limits: { memory: 64Mi } }\n"));
    let second =
        wait_agent(&client, "second", Duration::from_secs(10), |a| phase(a) == Some(AgentPhase::Pending)).await;
    let admitted =
        second.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted")).expect("Admitted");
    assert_eq!(admitted.reason, "InsufficientQuota");
    assert_eq!(admitted.message, "needs 64Mi memory but budget \"tiny\" has 36Mi of 100Mi left");
    assert!(pids(&second).is_empty(), "nothing runs while it waits");
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    api.delete("first", &DeleteParams::default()).await.expect("delete first");
    wait_agent(&client, "second", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Running)).await;
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_readopts_its_running_agents() {
    let scratch = Scratch::new("adopt");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let names = ["a1", "a2", "a3", "a4", "a5"];
    apply(home, &names.iter().map(|n| agent_yaml(n, "")).collect::<String>());
    let mut before = Vec::new();
    for n in names {
        before.push(pids(
            &wait_agent(&client, n, Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await,
        ));
    }
    daemon.kill9();
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // Status is current again: the same processes, ready, no restarts. (How soon is a
    // benchmark's question; the deadline is generous so a loaded machine does not fail it.)
    for (n, old) in names.iter().zip(&before) {
        let a = wait_agent(&client, n, Duration::from_secs(30), |a| {
            phase(a) == Some(AgentPhase::Running) && pids(a) == *old
        })
        .await;
        assert_eq!(a.status.as_ref().map(|s| s.restarts), Some(0), "{n} was not restarted");
    }
    for (n, old) in names.iter().zip(&before) {
        for pid in old {
            assert!(Path::new(&format!("/proc/{pid}")).exists(), "{n}: pid {pid} still runs");
        }
    }
    // Re-adopted replicas have run for a while: the first sample (1 s after the start)
    // writes their usage, read from their cgroups.
    for n in names {
        let a = wait_agent(&client, n, Duration::from_secs(30), |a| {
            a.status.as_ref().and_then(|s| s.usage.as_ref()).is_some_and(|u| u.memory_bytes > 0)
        })
        .await;
        let usage = a.status.and_then(|s| s.usage).expect("usage");
        assert!(usage.memory.as_deref().is_some_and(|m| !m.is_empty()), "{n}: {usage:?}");
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_agent_at_its_cpu_limit_is_throttled_and_background_agents_share_background_cpu() {
    let scratch = Scratch::new("cpu");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let busy = "  command: [sh, -c, \"while :; do :; done\"]\n";
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: desk }}\nspec: {{ parent: host, limits: {{ cpu: \"1\" }}, backgroundCpu: 100m }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: spin }}\nspec:\n{busy}  budget: desk\n  resources: {{ limits: {{ cpu: 200m }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: idx }}\nspec:\n{busy}  budget: desk\n  priority: background\n"
        ),
    );
    // Kernel statistics are sampled every 10 s: two samples show throttling rising.
    let spin = wait_agent(&client, "spin", Duration::from_secs(45), |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Throttled" && c.status == a2a::api::common::ConditionStatus::True)
        })
    })
    .await;
    let cond =
        spin.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Throttled")).expect("Throttled");
    assert_eq!(cond.reason, "CPUQuotaReached");
    // Its usage is the kernel's: the busy loop, capped at its 200m by the CFS quota.
    let usage = spin.status.as_ref().and_then(|s| s.usage.clone()).expect("usage");
    assert!((1..=260).contains(&usage.cpu_millicores), "{usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    // The background agent runs inside the budget's background cgroup, whose quota is 100m.
    let idx = wait_agent(&client, "idx", Duration::from_secs(20), |a| !pids(a).is_empty()).await;
    let cgroup = idx.status.as_ref().and_then(|s| s.instances.first()).and_then(|i| i.cgroup.clone()).expect("cgroup");
    assert_eq!(cgroup, format!("{top}/host/desk/background.cpu/default.idx.0"));
    let quota_file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        (format!("/sys/fs/cgroup/{top}/host/desk/background.cpu/cpu.max"), "10000 100000\n")
    } else {
        (format!("/sys/fs/cgroup/cpu/{top}/host/desk/background.cpu/cpu.cfs_quota_us"), "10000\n")
    };
    assert_eq!(std::fs::read_to_string(&quota_file.0).expect("quota file"), quota_file.1);
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_pid_that_now_names_another_process_is_not_adopted() {
    let scratch = Scratch::new("recycled");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, &agent_yaml("solo", ""));
    let a = wait_agent(&client, "solo", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    let mut instances = a.status.clone().expect("status").instances;
    let old = u32::try_from(instances[0].pid.expect("pid")).expect("pid");
    // The status names the process by pid and kernel start time.
    let started = a2a::node::process::start_time(old).expect("start time");
    assert_eq!(instances[0].pid_start_time, Some(started));
    daemon.kill9();

    // While no node runs (the API server alone), record another start time for that pid: what
    // the status says when the kernel has given the pid to a newer process.
    let api_only = Daemon::start(home, top, &["--api-only"]);
    let api: Api<Agent> = Api::namespaced(api_only.client().await, "default");
    instances[0].pid_start_time = Some(started + 1);
    let patch = serde_json::json!({ "status": { "instances": instances } });
    api.patch_status("solo", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch status");
    drop(api_only);

    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let a = wait_agent(&client, "solo", Duration::from_secs(30), |a| {
        phase(a) == Some(AgentPhase::Running) && !pids(a).is_empty() && pids(a) != [old as i32]
    })
    .await;
    let new = u32::try_from(pids(&a)[0]).expect("pid");
    let inst = &a.status.as_ref().expect("status").instances[0];
    assert_eq!(inst.pid_start_time, Some(a2a::node::process::start_time(new).expect("start time")));
    // The process the pid named was not adopted: its cgroup was reset, which ended it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{old}")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!Path::new(&format!("/proc/{old}")).exists(), "pid {old} was not left running beside the new one");
    tear_down(daemon).await;
}

/// The directories of cgroup `rel` (relative to the root) in every hierarchy that has it.
fn cgroup_dirs(rel: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join(rel)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    if root.join(rel).is_dir() {
        out.push(root.join(rel));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_budget_stops_its_agents_and_its_cgroup_goes_from_every_hierarchy() {
    let scratch = Scratch::new("budget-gone");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: team }}\nspec: {{ parent: host, limits: {{ memory: 256Mi }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: squad }}\nspec: {{ parent: team, limits: {{ memory: 128Mi }} }}\n---\n{}{}",
            agent_yaml("member", "  budget: team\n  resources: { limits: { memory: 64Mi } }\n"),
            agent_yaml("inner", "  budget: squad\n  resources: { limits: { memory: 64Mi } }\n"),
        ),
    );
    let member =
        wait_agent(&client, "member", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    wait_agent(&client, "inner", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    let team = format!("{top}/host/team");
    let hierarchies = cgroup_dirs(&team).len();
    assert!(hierarchies >= 1, "the budget has a cgroup");
    assert_eq!(cgroup_dirs(&format!("{team}/squad")).len(), hierarchies, "the child budget too");

    let budgets: Api<a2a::api::ResourceBudget> = Api::all(client.clone());
    budgets.delete("team", &DeleteParams::default()).await.expect("delete budget");
    // Its agents (and the child budget's) lose their admission and stop...
    let member_after = wait_agent(&client, "member", Duration::from_secs(20), |a| {
        phase(a) == Some(AgentPhase::Pending) && pids(a).is_empty()
    })
    .await;
    let admitted = member_after
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted"))
        .expect("Admitted");
    assert_eq!(admitted.reason, "BudgetNotFound");
    wait_agent(&client, "inner", Duration::from_secs(20), |a| {
        phase(a) == Some(AgentPhase::Pending) && pids(a).is_empty()
    })
    .await;
    for pid in pids(&member) {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} was stopped");
    }
    // ...then the budget's cgroup (with its child budget's) goes from every hierarchy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cgroup_dirs(&team).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cgroup_dirs(&team), Vec::<std::path::PathBuf>::new(), "the deleted budget's cgroup is removed");
    assert!(!cgroup_dirs(&format!("{top}/host")).is_empty(), "its parent budget's cgroup stays");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_deleted_while_the_daemon_was_down_is_stopped_when_it_comes_back() {
    let scratch = Scratch::new("sweep");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, &format!("{}{}", agent_yaml("kept", ""), agent_yaml("gone", "")));
    let kept = wait_agent(&client, "kept", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    let gone = wait_agent(&client, "gone", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    let gone_cgroup = gone.status.as_ref().expect("status").instances[0].cgroup.clone().expect("cgroup");
    // The node's status writes are named in managedFields.
    let managers = kept.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers.iter().any(|m| m.manager.as_deref() == Some("a2a-node") && m.subresource.as_deref() == Some("status")),
        "{managers:#?}"
    );
    assert!(!cgroup_dirs(&gone_cgroup).is_empty(), "{gone_cgroup} exists");
    daemon.kill9();

    // While no node runs (the API server alone), the agent is deleted: its process outlives
    // the daemon and nothing is there to stop it yet.
    let api_only = Daemon::start(home, top, &["--api-only"]);
    let api: Api<Agent> = Api::namespaced(api_only.client().await, "default");
    api.delete("gone", &DeleteParams::default()).await.expect("delete");
    drop(api_only);
    for pid in pids(&gone) {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still runs while no node runs");
    }

    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // The agent that still exists is re-adopted, not restarted...
    let again = wait_agent(&client, "kept", Duration::from_secs(5), |a| {
        phase(a) == Some(AgentPhase::Running) && pids(a) == pids(&kept)
    })
    .await;
    assert_eq!(again.status.as_ref().map(|s| s.restarts), Some(0));
    // ...and the deleted one's process is stopped and its cgroup removed from every hierarchy.
    let deadline = Instant::now() + Duration::from_secs(15);
    while (!cgroup_dirs(&gone_cgroup).is_empty()
        || pids(&gone).iter().any(|p| Path::new(&format!("/proc/{p}")).exists()))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids(&gone) {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} of the deleted agent was stopped");
    }
    assert_eq!(cgroup_dirs(&gone_cgroup), Vec::<std::path::PathBuf>::new(), "{gone_cgroup} is removed");
    for pid in pids(&kept) {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} of the kept agent runs on");
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_agent_gets_its_first_status_with_its_started_process() {
    use futures::StreamExt;
    let scratch = Scratch::new("first-status");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let config = kube::runtime::watcher::Config::default().fields("metadata.name=solo");
    let mut events = kube::runtime::watcher(api, config).boxed();
    while !matches!(events.next().await, Some(Ok(kube::runtime::watcher::Event::InitDone))) {}
    apply(home, &agent_yaml("solo", ""));
    // Every status the node wrote, in order, until the agent is Running.
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("Running within 30s");
        let Some(Ok(kube::runtime::watcher::Event::Apply(a))) = next else { continue };
        let Some(status) = a.status.clone() else { continue };
        seen.push(status);
        if phase(&a) == Some(AgentPhase::Running) {
            break;
        }
    }
    // Admission and the start are one write: no status says admitted without its process.
    let first = &seen[0];
    assert!(first.conditions.iter().any(|c| c.type_ == "Admitted" && c.status == ConditionStatus::True), "{seen:#?}");
    assert_eq!((first.replicas, first.instances.len()), (1, 1), "{seen:#?}");
    assert!(first.instances[0].pid.is_some(), "{seen:#?}");
    tear_down(daemon).await;
}

/// Agents applied together start a few at a time, the last ones seconds after their apply:
/// each still gets one status write for its start, carrying its process (none saying only
/// admitted before it; one saying its start failed, then tried again, is news of its own), and
/// that status says nothing of usage until a sample measured it (no `0` that says nothing was
/// read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_started_together_get_one_status_write_each_for_their_start() {
    use futures::StreamExt;
    use std::collections::BTreeMap;
    const N: usize = 64;
    let scratch = Scratch::new("start-burst");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let config = kube::runtime::watcher::Config::default().labels("burst=yes");
    let mut events = kube::runtime::watcher(api, config).boxed();
    while !matches!(events.next().await, Some(Ok(kube::runtime::watcher::Event::InitDone))) {}
    let yaml: String = (0..N)
        .map(|i| {
            format!(
                "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: b{i}, labels: {{ burst: \"yes\" }} }}\nspec:\n  command: [sleep, \"3600\"]\n---\n"
            )
        })
        .collect();
    apply(home, &yaml);
    // Every status the node wrote for each agent, in order, until each has its process.
    let mut seen: BTreeMap<String, Vec<a2a::api::agent::AgentStatus>> = BTreeMap::new();
    let running = |seen: &BTreeMap<String, Vec<a2a::api::agent::AgentStatus>>| {
        seen.values().filter(|s| s.last().is_some_and(|s| s.replicas == 1)).count()
    };
    while running(&seen) < N {
        let next = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {N} running within 60 s: {seen:#?}", running(&seen)));
        let Some(Ok(kube::runtime::watcher::Event::Apply(a))) = next else { continue };
        let Some(status) = a.status.clone() else { continue };
        let name = a.metadata.name.clone().unwrap_or_default();
        let statuses = seen.entry(name).or_default();
        // Up to the one with its process (later ones, its usage, are not the start's); a
        // watch may deliver the same version again (a relist): only new ones count.
        if statuses.last().is_none_or(|s| s.replicas != 1 && *s != status) {
            statuses.push(status);
        }
    }
    for (name, statuses) in &seen {
        // A start that failed (and is tried again) is news of its own; none other comes first.
        let failed = |s: &a2a::api::agent::AgentStatus| {
            s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "StartFailed")
        };
        let before: Vec<_> = statuses[..statuses.len() - 1].iter().filter(|s| !failed(s)).collect();
        assert!(before.is_empty(), "{name}: one status write for its start: {statuses:#?}");
        let first = statuses.last().expect("running");
        assert_eq!((first.replicas, first.instances.len()), (1, 1), "{name}: {first:#?}");
        assert!(first.instances[0].pid.is_some(), "{name}: {first:#?}");
        assert_eq!(first.usage, None, "{name}: no usage before a sample read it: {first:#?}");
    }
    tear_down(daemon).await;
}

/// An Agent the node will run is created already held for its processes (the node makes no
/// write of its own for it before the first start); one that runs elsewhere (`url`) or once
/// per task (`protocol: stdio`) is created as sent. One held so that never started (its budget
/// does not exist) still goes when deleted: the node releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_node_runs_is_created_held_for_its_processes() {
    let scratch = Scratch::new("held");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let held =
        |a: &Agent| a.metadata.finalizers.iter().flatten().any(|f| f == a2a::node::deletion::PROCESSES_FINALIZER);
    let create = async |name: &str, spec: serde_json::Value| -> Agent {
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": spec
        }))
        .expect("agent");
        api.create(&Default::default(), &agent).await.unwrap_or_else(|e| panic!("create {name}: {e}"))
    };
    // What the create answers is the object as stored by the create, before any node write.
    let runs = create("runs", serde_json::json!({"command": ["a2a", "demo-agent", "--skill", "echo"]})).await;
    assert!(held(&runs), "{:?}", runs.metadata.finalizers);
    let elsewhere = create("elsewhere", serde_json::json!({"url": "http://127.0.0.1:9/"})).await;
    assert!(!held(&elsewhere), "{:?}", elsewhere.metadata.finalizers);
    let per_task = create("per-task", serde_json::json!({"protocol": "stdio", "command": ["cat"]})).await;
    assert!(!held(&per_task), "{:?}", per_task.metadata.finalizers);
    let waiting = create(
        "waiting",
        serde_json::json!({"command": ["a2a", "demo-agent", "--skill", "echo"], "budget": "nowhere"}),
    )
    .await;
    assert!(held(&waiting), "{:?}", waiting.metadata.finalizers);
    wait_agent(&client, "runs", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;

    for name in ["runs", "waiting"] {
        api.delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut left = Vec::new();
    while Instant::now() < deadline {
        left = Vec::new();
        for name in ["runs", "waiting"] {
            if api.get_opt(name).await.expect("get").is_some() {
                left.push(name);
            }
        }
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "still there 30 s after their deletion: {left:?}");
    tear_down(daemon).await;
}

/// The node and the engine reach their API server over one HTTP/2 connection, whatever they
/// watch and however many status writes a start makes at once: over HTTP/1.1 each watch held
/// a connection and each burst of writes left more open (9 at idle, 40 at 500 agents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_reaches_its_api_server_over_one_connection() {
    let scratch = Scratch::new("one-connection");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let yaml: String = names
        .iter()
        .map(|n| format!("apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {n} }}\nspec:\n  command: [sleep, \"600\"]\n---\n"))
        .collect();
    apply(home, &yaml);
    for n in &names {
        // `sleep` serves no card: its process runs, the agent stays Starting.
        wait_agent(&client, n, Duration::from_secs(60), |a| !pids(a).is_empty()).await;
    }
    // The server's own count of the connections it serves: the control plane's one, and
    // this test's client's (its pool may hold two). Over HTTP/1.1 every open watch needs a
    // connection of its own: there would be more connections than watches.
    let (code, text) = common::raw(&client, axum::http::Method::GET, "/metrics", "", "").await;
    assert_eq!(code, 200);
    let text = text.as_str().expect("metrics as text").to_owned();
    let open: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("a2a_apiserver_connections "))
        .unwrap_or_else(|| panic!("no a2a_apiserver_connections in\n{text}"))
        .parse()
        .expect("a number");
    let watchers: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("a2a_apiserver_watchers "))
        .expect("watchers")
        .parse()
        .expect("a number");
    assert!(watchers >= 4.0, "the node's and the engine's watches are open: {watchers}");
    assert!(open < watchers && open <= 3.0, "{open} connections served, {watchers} watches among them");
    tear_down(daemon).await;
}
