//! Stuck work is not silent: through a real `a2a serve` (real agent processes, real
//! cgroups), each reason a task cannot be dispatched appears in the task's status entry, in
//! an Event and in `a2a run`'s progress, on a TTY and off one; work that can never run fails
//! and `a2a run` exits 1.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use common::node::{Daemon, Scratch, get_wf, tear_down};
use k8s_openapi::api::core::v1::Event;
use kube::Api;

/// Four tasks, each stuck for another reason; the agents that exist are made so that they
/// never get ready (`stuck-admit` waits for room behind `first` in a 100Mi budget; `mute`
/// runs but never serves its agent card).
const STUCK: &str = "apiVersion: a2a.dev/v1alpha1
kind: ResourceBudget
metadata: { name: BUDGET }
spec: { parent: host, limits: { memory: 100Mi } }
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: first }
spec: { command: [sleep, '300'], protocol: stdio, budget: BUDGET, priority: critical, resources: { limits: { memory: 64Mi } } }
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: crowded }
spec: { command: [a2a, demo-agent], budget: BUDGET, priority: low, resources: { limits: { memory: 64Mi } } }
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: mute }
spec: { command: [sleep, '300'] }
---
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: stuck }
spec:
  tasks:
    - { name: ghost, agent: nobody, message: hi }
    - { name: admit, agent: crowded, message: hi }
    - { name: replica, agent: mute, message: hi }
    - { name: skilled, skill: no-such-skill, message: hi }
";

const REASONS: [(&str, &str, &str); 4] = [
    ("ghost", "AgentNotFound", "agent \"nobody\" does not exist in namespace \"default\""),
    (
        "admit",
        "AgentNotAdmitted",
        "agent \"crowded\" is not admitted: needs 64Mi memory but budget \"BUDGET\" has 36Mi of 100Mi left",
    ),
    ("replica", "NoReadyReplica", "agent \"mute\" has no ready replica ("),
    ("skilled", "NoAgentWithSkill", "no Ready agent in namespace \"default\" has skill \"no-such-skill\""),
];

fn a2a_run(home: &Path, file: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_a2a"));
    cmd.args(["run", "-f"]).arg(file).args(extra).env("A2A_HOME", home).env_remove("A2A_KUBECONFIG");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stuck_reason_is_in_the_tasks_status_an_event_and_a2a_runs_output() {
    let scratch = Scratch::new("wfstuck");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let budget = format!("tiny-{}", std::process::id());
    let file = home.join("stuck.yaml");
    std::fs::write(&file, STUCK.replace("BUDGET", &budget)).expect("write");
    // Off a TTY: the reasons are lines on stderr.
    let run = a2a_run(home, &file, &["--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("a2a run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let wf = loop {
        let Some(wf) = Api::<Workflow>::namespaced(client.clone(), "default").get_opt("stuck").await.expect("get")
        else {
            assert!(Instant::now() < deadline, "a2a run never created the workflow");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let reasons = wf.status.as_ref().map_or(0, |s| s.tasks.iter().filter(|t| t.reason.is_some()).count());
        if reasons == REASONS.len() {
            break wf;
        }
        assert!(Instant::now() < deadline, "not every task says why it waits: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = wf.status.clone().expect("status");
    for (task, reason, message) in REASONS {
        let t = status.tasks.iter().find(|t| t.name == task).expect("task");
        let message = message.replace("BUDGET", &budget);
        assert_eq!(t.phase, TaskPhase::Pending);
        assert_eq!(t.reason.as_deref(), Some(reason), "{t:#?}");
        assert!(
            t.message.as_deref().is_some_and(|m| m.starts_with(&message)),
            "{task}: {:?} does not start with {message:?}",
            t.message
        );
    }
    // An Event for each reason, about the workflow.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        let found: Vec<String> = list
            .items
            .iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some("Workflow")
                    && e.involved_object.name.as_deref() == Some("stuck")
            })
            .filter_map(|e| e.reason.clone())
            .collect();
        if REASONS.iter().all(|(_, r, _)| found.iter().any(|f| f == r)) {
            break;
        }
        assert!(Instant::now() < deadline, "events missing: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run.wait_with_output().expect("a2a run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for (task, reason, message) in REASONS {
        let line = format!("stuck/{task}: Pending ({reason}): {}", message.replace("BUDGET", &budget));
        assert!(stderr.contains(&line), "{line:?} missing from:\n{stderr}");
    }
    // On a TTY (a pseudo-terminal from script(1)): the same reasons, above the progress bars.
    let cmd = format!("{} run -f {} --timeout 3s", env!("CARGO_BIN_EXE_a2a"), file.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&out.stdout);
    for (task, reason, _) in REASONS {
        assert!(
            screen.contains(&format!("stuck/{task}: Pending ({reason}): ")),
            "{task} missing on the TTY:\n{screen}"
        );
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_can_never_run_fails_fast_and_a2a_run_exits_1() {
    let scratch = Scratch::new("wfnever");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let budget = format!("small-{}", std::process::id());
    let file = home.join("never.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: {budget} }}\nspec: {{ parent: host, limits: {{ memory: 1Gi, cpu: 500m }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: huge }}\nspec: {{ command: [a2a, demo-agent], budget: {budget}, replicas: 3, resources: {{ limits: {{ memory: 64Mi, cpu: 500m }} }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: echo }}\nspec: {{ command: [a2a, demo-agent, --skill, echo] }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: never }}\nspec:\n  tasks:\n\
             \x20   - {{ name: big, agent: huge, message: hi, retry: {{ limit: 5 }} }}\n\
             \x20   - {{ name: after, agent: echo, dependsOn: [big], message: hi }}\n\
             \x20   - {{ name: fine, agent: echo, message: still runs }}\n"
        ),
    )
    .expect("write");
    let out = a2a_run(home, &file, &["--timeout", "60s"]).output().expect("a2a run");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("workflow never: Failed (3/3)"), "{stdout}");
    let why = format!(
        "agent \"huge\" can never be admitted: needs 1500m cpu, more than budget \"{budget}\"'s whole limit of 500m"
    );
    assert!(stderr.contains(&format!("never/big: Failed (Unschedulable): {why}")), "{stderr}");
    let wf = get_wf(&client, "never").await;
    let status = wf.status.expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Failed));
    let big = &status.tasks[0];
    assert_eq!(
        (big.phase, big.reason.as_deref(), big.attempts),
        (TaskPhase::Failed, Some("Unschedulable"), 0),
        "{big:#?}"
    );
    assert_eq!(big.error.as_deref(), Some(why.as_str()));
    assert_eq!(status.tasks[1].phase, TaskPhase::Skipped);
    assert_eq!(status.tasks[2].phase, TaskPhase::Succeeded);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&Default::default()).await.expect("events");
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unschedulable") && e.type_.as_deref() == Some("Warning")),
        "a Warning event says why the task failed"
    );
    tear_down(daemon).await;
}
