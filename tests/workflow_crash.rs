//! Crash safety of the workflow engine through the real daemon: `a2a serve` is SIGKILLed
//! while tasks run on its agents, a new daemon takes over, the workflow completes, and the
//! agents' own logs prove that every task ran exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, WorkflowPhase};

use common::node::{Daemon, Scratch, apply, events, get_wf, tear_down};

/// The agent runs with `ARGS` after `--skill sleep`.
const MANIFESTS: &str = "apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: sleeper }
spec: { command: [a2a, demo-agent, --skill, sleep ARGS], replicas: 2, maxConcurrentTasks: 4 }
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

/// The demo agent declares streaming: each task is one SendStreamingMessage, whose task id is
/// kept from the first event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_resumes_the_workflow_and_every_task_runs_exactly_once() {
    crash_and_resume("wfcrash", MANIFESTS, "", |t| t.a2a_task_id.is_some()).await;
}

/// The agent's card declares no streaming: each task is one blocking SendMessage in a context
/// stored before it is sent; the new daemon finds the tasks by their contexts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_finds_blocking_tasks_by_their_contexts_and_every_task_runs_exactly_once() {
    crash_and_resume("wfcrashb", MANIFESTS, ", --no-streaming", |t| t.a2a_context_id.is_some()).await;
}

/// A workflow of more than 100 tasks keeps each task's status beside it (ConfigMaps it owns):
/// the new daemon reads it back from there, and `a2a describe` and `a2a output` read it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_resumes_a_workflow_whose_task_status_is_kept_beside_it() {
    let manifests = format!(
        "{MANIFESTS}    - {{ name: more, agent: sleeper, dependsOn: [b1, b2], message: 'sleep 10ms', forEach: {{ count: 110 }} }}\n"
    );
    let (scratch, wf) = crash_and_resume("wfcrasho", &manifests, "", |t| t.a2a_task_id.is_some()).await;
    let status = wf.status.as_ref().expect("status");
    assert_eq!(status.tasks.len(), 118);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(args)
            .env("A2A_HOME", scratch.home())
            .output()
            .expect("a2a");
        assert!(out.status.success(), "a2a {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let daemon = Daemon::start(scratch.home(), scratch.top(), &[]);
    let _client = daemon.client().await;
    let described = cli(&["describe", "wf", "crashy"]);
    assert!(described.contains("taskStatusRef"), "{described}");
    assert!(described.contains("more[109]"), "the tasks' table is read from beside the workflow: {described}");
    assert_eq!(cli(&["output", "crashy", "more[7]"]).trim(), "slept 10ms");
    tear_down(daemon).await;
}

/// Kills the daemon once the first level's six tasks run on the agents (their messages in the
/// agents' logs, and what a restart needs, `kept`, in status), starts another, and checks
/// that every task ran exactly once.
async fn crash_and_resume(
    scratch: &str,
    manifests: &str,
    args: &str,
    kept: impl Fn(&a2a::api::workflow::TaskStatus) -> bool,
) -> (Scratch, a2a::api::Workflow) {
    let scratch = Scratch::new(scratch);
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, &manifests.replace(" ARGS", args));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut wf = get_wf(&client, "crashy").await;
        a2a::controller::offload::fill(&client, &mut wf).await.expect("the tasks' status");
        let running = wf
            .status
            .as_ref()
            .map_or(0, |s| s.tasks.iter().filter(|t| t.phase == TaskPhase::Running && kept(t)).count());
        let received = std::fs::exists(home.join("logs/default/sleeper")).unwrap_or(false)
            && events(home, "sleeper", "start").len() == 6;
        if running == 6 && received {
            break;
        }
        assert!(Instant::now() < deadline, "the first level never ran: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let wf = loop {
        let mut wf = get_wf(&client, "crashy").await;
        a2a::controller::offload::fill(&client, &mut wf).await.expect("the tasks' status");
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
    (scratch, wf)
}
