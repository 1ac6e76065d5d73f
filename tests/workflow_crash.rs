//! Crash safety of the workflow engine through the real daemon: `a2a serve` is SIGKILLed
//! while tasks run on its agents, a new daemon takes over, the workflow completes, and the
//! agents' own logs prove that every task ran exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, WorkflowPhase};

use common::node::{Daemon, Scratch, apply, events, get_wf, tear_down};

const MANIFESTS: &str = "apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: sleeper }
spec: { command: [a2a, demo-agent, --skill, sleep], replicas: 2, maxConcurrentTasks: 4 }
---
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: crashy }
spec:
  tasks:
    - { name: a1, agent: sleeper, message: sleep 2s }
    - { name: a2, agent: sleeper, message: sleep 2s }
    - { name: a3, agent: sleeper, message: sleep 2s }
    - { name: a4, agent: sleeper, message: sleep 2s }
    - { name: a5, agent: sleeper, message: sleep 2s }
    - { name: a6, agent: sleeper, message: sleep 2s }
    - { name: b1, agent: sleeper, dependsOn: [a1, a2, a3], message: sleep 2s }
    - { name: b2, agent: sleeper, dependsOn: [a4, a5, a6], message: sleep 2s }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_resumes_the_workflow_and_every_task_runs_exactly_once() {
    let scratch = Scratch::new("wfcrash");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, MANIFESTS);
    // Kill while the first level runs on the agents (their A2A task ids are in status).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = get_wf(&client, "crashy").await;
        let running = wf
            .status
            .as_ref()
            .map_or(0, |s| s.tasks.iter().filter(|t| t.phase == TaskPhase::Running && t.a2a_task_id.is_some()).count());
        if running == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the first level never ran: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(&client, "crashy").await;
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish after the restart: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = wf.status.clone().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "{status:#?}");
    assert!(status.tasks.iter().all(|t| t.attempts == 1), "no task needed a second attempt: {status:#?}");
    // The agents' logs: one start per task, each with the task's first-attempt messageId.
    let uid = wf.metadata.uid.clone().expect("uid");
    let starts = events(home, "sleeper", "start");
    let expected: BTreeMap<String, usize> =
        status.tasks.iter().map(|t| (a2a::controller::plan::message_id(&uid, &t.name, 1), 1)).collect();
    assert_eq!(starts, expected, "every task started exactly once on the agents");
    let ends = events(home, "sleeper", "end");
    assert_eq!(ends, expected, "every task ran to its end exactly once");
    tear_down(daemon).await;
}
