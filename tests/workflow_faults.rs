//! Fault injection through the real daemon: 1,000 tasks against demo agents that exit
//! mid-task at a 2% rate; the node restarts them, the engine retries, and every task
//! completes.

mod common;

use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use kube::Api;

use common::node::{Daemon, Scratch, apply, events, get_wf, tear_down};

fn manifests(tasks: usize) -> String {
    let mut y = String::from(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: flaky }\n\
         spec: { command: [a2a, demo-agent, --skill, echo, --crash-rate, \"0.02\"], replicas: 4, maxConcurrentTasks: 8 }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: faults }\nspec:\n\
         \x20 retry: { limit: 30, backoff: { initial: 50ms, factor: 2, max: 1s } }\n  tasks:\n",
    );
    for i in 0..tasks {
        y.push_str(&format!("    - {{ name: t{i}, agent: flaky, message: \"task {i}\" }}\n"));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_complete_through_retries_while_agents_crash() {
    let scratch = Scratch::new("wffaults");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &["--restart-backoff", "100ms"]);
    let client = daemon.client().await;
    apply(home, &manifests(1000));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut wf = loop {
        let wf = get_wf(&client, "faults").await;
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)) {
            break wf;
        }
        assert!(
            Instant::now() < deadline,
            "the workflow did not finish: {:?}",
            wf.status.as_ref().and_then(|s| s.progress.clone())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A thousand tasks: their entries are kept beside the workflow, read back here.
    a2a::controller::offload::fill(&client, &mut wf).await.expect("the task entries beside the workflow");
    let status = wf.status.clone().expect("status");
    let failed: Vec<_> = status.tasks.iter().filter(|t| t.phase != TaskPhase::Succeeded).collect();
    assert!(failed.is_empty(), "tasks that did not succeed: {failed:#?}");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded));
    assert_eq!(status.progress.as_deref(), Some("1000/1000"));
    for (i, t) in status.tasks.iter().enumerate() {
        assert_eq!(t.output.as_deref(), Some(format!("task {i}").as_str()), "{} answered its own message", t.name);
    }
    // Faults really happened: agents crashed, were restarted, and tasks needed retries.
    let crashes: usize = events(home, "flaky", "crash").values().sum();
    assert!(crashes > 0, "no injected crash happened");
    let agent: a2a::api::Agent = Api::namespaced(client.clone(), "default").get("flaky").await.expect("get agent");
    let restarts = agent.status.as_ref().map_or(0, |s| s.restarts);
    assert!(restarts > 0, "the node restarted the crashed replicas");
    let retried = status.tasks.iter().filter(|t| t.attempts > 1).count();
    assert!(retried > 0, "some tasks needed a second attempt");
    // The attempt that succeeded is the one each task's status names, and it ran to its end.
    let uid = wf.metadata.uid.clone().expect("uid");
    let ends = events(home, "flaky", "end");
    for t in &status.tasks {
        let id = a2a::controller::plan::message_id(&uid, &t.name, t.attempts);
        assert_eq!(ends.get(&id), Some(&1), "{} attempt {} ended once on an agent", t.name, t.attempts);
    }
    eprintln!(
        "1000 tasks: {crashes} injected crashes, {restarts} restarts, {retried} tasks retried, {} attempts in all",
        status.tasks.iter().map(|t| t.attempts).sum::<u32>()
    );
    tear_down(daemon).await;
}
