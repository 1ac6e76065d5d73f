//! Automatic throttling under `a2a serve` on the real kernel: a CPU hog in a budget drives
//! the budget's pressure (PSI where the kernel keeps it, else throttled time) over its
//! threshold; dispatch to the budget's agents is then paced, its `background` agent frozen,
//! each change visible as a condition and an Event; when the hog goes, dispatch resumes at
//! full rate and the agent thaws.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use a2a::api::common::ConditionStatus;
use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, ResourceBudget};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, get_wf, tear_down, wait_agent};

async fn wait_budget(api: &Api<ResourceBudget>, name: &str, within: Duration, ok: impl Fn(&ResourceBudget) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && ok(&o)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached the expected state: {:#?}", api.get_opt(name).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition(b: &ResourceBudget, type_: &str) -> Option<ConditionStatus> {
    b.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status)
}

fn agent_condition(a: &Agent, type_: &str) -> Option<ConditionStatus> {
    a.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status)
}

/// The reasons of the Events recorded for object `name`, oldest first.
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut list: Vec<Event> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect();
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
}

async fn wait_events(client: &kube::Client, name: &str, reasons: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = event_reasons(client, name).await;
        if reasons.iter().all(|r| have.iter().any(|h| h == r)) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: events {have:?}, expected {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The moments a workflow's tasks started, in order (milliseconds since the epoch).
async fn run_workflow(client: &kube::Client, home: &Path, name: &str, tasks: usize) -> Vec<i64> {
    let list: String = (0..tasks).map(|i| format!("    - {{ name: t{i}, agent: worker, message: m{i} }}\n")).collect();
    apply(
        home,
        &format!("apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  tasks:\n{list}"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let wf = get_wf(client, name).await;
        if let Some(s) = &wf.status
            && s.phase == Some(WorkflowPhase::Succeeded)
        {
            let mut started: Vec<i64> =
                s.tasks.iter().filter_map(|t| t.started_at.map(|at| at.0.as_millisecond())).collect();
            started.sort_unstable();
            assert_eq!(started.len(), tasks, "{s:#?}");
            return started;
        }
        assert!(Instant::now() < deadline, "workflow {name} never succeeded: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The freezer state of an agent's first replica, from its cgroup: `FROZEN`/`THAWED` from a
/// v1 freezer, `1`/`0` from a cgroup2 `cgroup.freeze`.
fn freezer_state(a: &Agent) -> String {
    let cg = a.status.as_ref().and_then(|s| s.instances.first()).and_then(|i| i.cgroup.clone()).expect("cgroup");
    let v1 = Path::new("/sys/fs/cgroup/freezer").join(&cg).join("freezer.state");
    let v2 = Path::new("/sys/fs/cgroup").join(&cg).join("cgroup.freeze");
    let f = if v1.exists() { v1 } else { v2 };
    std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_hog_paces_dispatch_and_freezes_background_agents_until_it_stops() {
    let scratch = Scratch::new("throttle");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // Under pressure the budget's agents get 30 requests a minute: one every two seconds.
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: busy }\nspec:\n  parent: host\n  limits: { memory: 512Mi, cpu: \"1\" }\n  throttle: { cpu: \"40%\", requestsPerMinute: 30 }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: worker }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  budget: busy\n  resources: { limits: { cpu: 500m, memory: 128Mi } }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: sweeper }\nspec:\n  command: [sh, -c, \"while :; do sleep 0.1; done\"]\n  budget: busy\n  priority: background\n  resources: { limits: { cpu: 100m, memory: 32Mi } }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: spare }\nspec:\n  command: [sh, -c, \"while :; do sleep 0.1; done\"]\n  budget: busy\n  priority: background\n  resources: { limits: { cpu: 100m, memory: 32Mi } }\n",
    );
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    let ready = |a: &Agent| agent_condition(a, "Ready") == Some(ConditionStatus::True);
    wait_agent(&client, "worker", Duration::from_secs(60), ready).await;
    wait_agent(&client, "sweeper", Duration::from_secs(60), |a| common::node::pids(a).len() == 1).await;
    let spare = wait_agent(&client, "spare", Duration::from_secs(60), |a| common::node::pids(a).len() == 1).await;
    let spare_pid = common::node::pids(&spare)[0];
    wait_budget(&budgets, "busy", Duration::from_secs(30), |b| {
        condition(b, "Throttled") == Some(ConditionStatus::False)
    })
    .await;

    // Calm: nothing is paced.
    run_workflow(&client, home, "calm", 6).await;

    // A busy loop held to 50m by its own limit: runnable 95% of the time, stalled most of it.
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: hog }\nspec:\n  command: [sh, -c, \"while :; do :; done\"]\n  budget: busy\n  resources: { limits: { cpu: 50m, memory: 32Mi } }\n",
    );
    wait_budget(&budgets, "busy", Duration::from_secs(60), |b| {
        condition(b, "Throttled") == Some(ConditionStatus::True)
            && b.status.as_ref().and_then(|s| s.throttle.as_ref()).is_some_and(|t| !t.frozen.is_empty())
    })
    .await;
    let b = budgets.get("busy").await.expect("budget");
    let t = b.status.and_then(|s| s.throttle).expect("throttle status");
    assert!(t.pressure.iter().any(|p| p.starts_with("cpu ")), "{t:?}");
    assert!(t.requests_per_minute <= 30 && t.requests_per_minute >= 3, "{t:?}");
    assert_eq!(t.frozen, ["default/spare", "default/sweeper"]);
    wait_events(&client, "busy", &["ThrottlingStarted"]).await;
    let sweeper = wait_agent(&client, "sweeper", Duration::from_secs(30), |a| {
        agent_condition(a, "Frozen") == Some(ConditionStatus::True)
    })
    .await;
    wait_events(&client, "sweeper", &["Frozen"]).await;
    assert!(["FROZEN", "1"].contains(&freezer_state(&sweeper).as_str()), "{}", freezer_state(&sweeper));
    let pid = common::node::pids(&sweeper)[0];
    let worker = wait_agent(&client, "worker", Duration::from_secs(5), ready).await;
    assert!(["THAWED", "0"].contains(&freezer_state(&worker).as_str()), "only background agents are frozen");

    // Under pressure: the same six tasks start one pace apart (at most 30 a minute).
    let paced = run_workflow(&client, home, "paced", 6).await;
    for w in paced.windows(2) {
        assert!(w[1] - w[0] >= 1500, "dispatch is paced under pressure: {paced:?}");
    }

    // A frozen agent deleted under pressure stops (a frozen process takes no signal, not
    // even SIGKILL under the v1 freezer, until it is thawed).
    Api::<Agent>::namespaced(client.clone(), "default")
        .delete("spare", &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{spare_pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "the deleted frozen agent's process {spare_pid} still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The hog goes: pressure falls, throttling ends, the background agent thaws.
    Api::<Agent>::namespaced(client.clone(), "default").delete("hog", &DeleteParams::default()).await.expect("delete");
    wait_budget(&budgets, "busy", Duration::from_secs(90), |b| {
        condition(b, "Throttled") == Some(ConditionStatus::False)
            && b.status.as_ref().is_some_and(|s| s.throttle.is_none())
    })
    .await;
    wait_events(&client, "busy", &["ThrottlingStarted", "ThrottlingStopped"]).await;
    let sweeper = wait_agent(&client, "sweeper", Duration::from_secs(30), |a| {
        agent_condition(a, "Frozen") == Some(ConditionStatus::False)
    })
    .await;
    wait_events(&client, "sweeper", &["Frozen", "Thawed"]).await;
    assert!(["THAWED", "0"].contains(&freezer_state(&sweeper).as_str()), "{}", freezer_state(&sweeper));
    assert_eq!(common::node::pids(&sweeper), [pid], "the thawed agent is the same process");
    let resumed = run_workflow(&client, home, "resumed", 6).await;
    let wf = get_wf(&client, "resumed").await;
    assert!(
        wf.status.iter().flat_map(|s| &s.tasks).all(|t| !t.message.as_deref().unwrap_or_default().contains("pressure")),
        "no task waits on pressure any more: {resumed:?}"
    );
    tear_down(daemon).await;
}
