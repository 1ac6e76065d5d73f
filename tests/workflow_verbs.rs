//! `a2a cancel`, `a2a retry`, `a2a output`, `a2a logs` and `a2a describe wf` against the real
//! API server, the engine and demo agent processes, through the real binary.

mod common;
mod support;

use common::engine::{create_workflow, point_agent, ready_agent, start_engine};

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use kube::Api;
use kube::api::PostParams;
use support::AgentProcess;

async fn wait_wf(client: &kube::Client, name: &str, ok: impl Fn(&Workflow) -> bool) -> Workflow {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = api.get(name).await.expect("get workflow");
        if ok(&wf) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name} never got there: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase_is(p: WorkflowPhase) -> impl Fn(&Workflow) -> bool {
    move |w| w.status.as_ref().and_then(|s| s.phase) == Some(p)
}

fn tasks(wf: &Workflow) -> Vec<(String, TaskPhase, u32)> {
    wf.status
        .as_ref()
        .map(|s| s.tasks.iter().map(|t| (t.name.clone(), t.phase, t.attempts)).collect())
        .unwrap_or_default()
}

fn a2a(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a")).args(args).arg("--kubeconfig").arg(kubeconfig).output().expect("run a2a")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_tasks_on_the_agent_and_cancels_waiting_ones() {
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let slow = AgentProcess::demo(&["--skill", "sleep"]).await;
    ready_agent(&server.client, "slow", &slow.url, serde_json::json!({"maxConcurrentTasks": 1})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: long }\nspec:\n  tasks:\n\
         \x20   - { name: nap, agent: slow, message: sleep 30s }\n\
         \x20   - { name: queued, agent: slow, message: sleep 30s }\n\
         \x20   - { name: after, agent: slow, dependsOn: [nap], message: sleep 1s }\n",
    )
    .await;
    wait_wf(&server.client, "long", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.tasks.iter().any(|t| t.phase == TaskPhase::Running && t.a2a_task_id.is_some()))
    })
    .await;
    let out = a2a(&kc, &["cancel", "wf", "long"]);
    assert_eq!(text(&out.stdout), "workflow/long cancel requested\n", "{}", text(&out.stderr));
    let started = Instant::now();
    let wf = wait_wf(&server.client, "long", phase_is(WorkflowPhase::Cancelled)).await;
    assert!(started.elapsed() < Duration::from_secs(20), "the 30 s task did not hold the cancel");
    assert!(tasks(&wf).iter().all(|(_, p, _)| *p == TaskPhase::Cancelled), "{:?}", tasks(&wf));
    slow.wait_log("event=canceled").await;

    let again = a2a(&kc, &["cancel", "wf", "long"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(text(&again.stderr), "error: workflow \"long\" already Cancelled; nothing to cancel\n");
    let wrong = a2a(&kc, &["cancel", "agent", "slow"]);
    assert_eq!(text(&wrong.stderr), "error: `a2a cancel` works on workflows (wf), not agents\n");
    let missing = a2a(&kc, &["cancel", "wf", "nope"]);
    assert_eq!(text(&missing.stderr), "error: Workflow \"nope\" not found in namespace \"default\"\n");

    // describe shows one row per task.
    let d = a2a(&kc, &["describe", "wf", "long"]);
    let d = text(&d.stdout);
    assert!(d.contains("Tasks:\n  Task     Phase       Attempts"), "{d}");
    assert!(d.lines().any(|l| l.trim_start().starts_with("nap") && l.contains("Cancelled")), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_a_failed_task_and_what_it_skipped_and_output_prints_results() {
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let fail = AgentProcess::demo(&["--skill", "fail"]).await;
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(&server.client, "worker", &fail.url, serde_json::json!({"maxConcurrentTasks": 2})).await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"maxConcurrentTasks": 2})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: flaky }\nspec:\n  tasks:\n\
         \x20   - { name: first, agent: worker, message: hello }\n\
         \x20   - { name: second, agent: echo, dependsOn: [first], message: \"got {{ tasks.first.output }}\" }\n\
         \x20   - { name: side, agent: echo, message: side }\n",
    )
    .await;
    let wf = wait_wf(&server.client, "flaky", phase_is(WorkflowPhase::Failed)).await;
    assert_eq!(
        tasks(&wf),
        [
            ("first".into(), TaskPhase::Failed, 1),
            ("second".into(), TaskPhase::Skipped, 0),
            ("side".into(), TaskPhase::Succeeded, 1)
        ]
    );
    let out = a2a(&kc, &["output", "wf", "flaky", "first"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: task \"first\" has no output yet (Failed: "),
        "{}",
        text(&out.stderr)
    );

    let bad = a2a(&kc, &["retry", "wf", "flaky", "--task", "nope"]);
    assert_eq!(
        text(&bad.stderr),
        "error: --task nope: workflow \"flaky\" has no such task (it has: first, second, side)\n"
    );
    let done = a2a(&kc, &["retry", "wf", "flaky", "--task", "side"]);
    assert_eq!(
        text(&done.stderr),
        "error: --task side: the task is Succeeded; only failed, skipped or cancelled tasks are retried\n"
    );
    // The agent is fixed (now an echo agent answers for it); retry the failed task.
    point_agent(&server.client, "worker", &echo.url).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = a2a(&kc, &["retry", "wf", "flaky", "--task", "first"]);
    assert_eq!(text(&out.stdout), "workflow/flaky retry requested: first\n", "{}", text(&out.stderr));
    let wf = wait_wf(&server.client, "flaky", phase_is(WorkflowPhase::Succeeded)).await;
    assert_eq!(
        tasks(&wf),
        [
            ("first".into(), TaskPhase::Succeeded, 2),
            ("second".into(), TaskPhase::Succeeded, 1),
            ("side".into(), TaskPhase::Succeeded, 1)
        ],
        "the retried task's second attempt ran, and the task it had skipped"
    );
    let out = a2a(&kc, &["output", "wf", "flaky", "second"]);
    assert_eq!(text(&out.stdout), "got hello", "byte for byte when piped: {}", text(&out.stderr));
    let none = a2a(&kc, &["retry", "wf", "flaky"]);
    assert_eq!(text(&none.stderr), "error: workflow \"flaky\" has no failed, skipped or cancelled task to retry\n");
    let unknown = a2a(&kc, &["output", "wf", "flaky", "third"]);
    assert_eq!(
        text(&unknown.stderr),
        "error: workflow \"flaky\" has no task \"third\" (it has: first, second, side)\n"
    );
}

/// `len` bytes of text with multi-byte characters and line ends, no template braces, not
/// starting with a demo-agent skill name.
fn long_text(len: usize, seed: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    let mut i = seed;
    while s.len() + 64 < len {
        s.push_str(&format!("line {i:06}: ünïcødé — ✓ the quick brown fox\n"));
        i += 1;
    }
    while s.len() < len - 1 {
        s.push('x');
    }
    s.push('\n');
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_over_64_kib_live_beside_the_workflow_whole_and_go_with_it() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, ListParams};
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let _stop = start_engine(&server.client);
    let big = long_text(200 * 1024, 0);
    let huge = long_text(900 * 1024, 50_000);
    let wf: Workflow = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "long"},
        "spec": {"tasks": [
            {"name": "big", "agent": "echo", "message": big},
            {"name": "huge", "agent": "echo", "message": huge},
            {"name": "copy", "agent": "echo", "dependsOn": ["big"], "message": "{{ tasks.big.output }}"},
        ]}
    }))
    .expect("workflow");
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &wf).await.expect("create");
    let done = wait_wf(&server.client, "long", phase_is(WorkflowPhase::Succeeded)).await;
    let status = done.status.expect("status");
    let big_status = &status.tasks[0];
    let head = big_status.output.as_deref().expect("output in status");
    assert!(head.len() <= 64 * 1024 && head.len() > 64 * 1024 - 4, "status holds the first 64 KiB: {}", head.len());
    assert!(big.starts_with(head));
    assert_eq!(
        big_status.output_ref.as_deref(),
        Some("204800 bytes in ConfigMap long.big.output-0 (a2a output wf long big)")
    );
    assert_eq!(
        status.tasks[1].output_ref.as_deref(),
        Some("921600 bytes in ConfigMaps long.huge.output-0..2 (a2a output wf long huge)")
    );

    // `a2a output` prints every byte; the downstream template got the whole output too.
    for (task, want) in [("big", &big), ("huge", &huge), ("copy", &big)] {
        let out = a2a(&kc, &["output", "wf", "long", task]);
        assert_eq!(out.status.code(), Some(0), "{task}: {}", text(&out.stderr));
        assert!(out.stdout == want.as_bytes(), "{task}: {} bytes printed, {} expected", out.stdout.len(), want.len());
    }
    let unknown = a2a(&kc, &["output", "wf", "long", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(text(&unknown.stderr), "error: workflow \"long\" has no task \"nope\" (it has: big, huge, copy)\n");
    let missing = a2a(&kc, &["output", "wf", "gone", "big"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("\"gone\" not found"), "{}", text(&missing.stderr));

    // A chunk that goes missing is an error that names it, not a short output.
    let cms: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let of_long = ListParams::default().labels("a2a.dev/workflow=long");
    assert_eq!(cms.list(&of_long).await.expect("list").items.len(), 1 + 3 + 1, "big, huge (3 chunks), copy");
    cms.delete("long.huge.output-1", &DeleteParams::default()).await.expect("delete a chunk");
    let broken = a2a(&kc, &["output", "wf", "long", "huge"]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(broken.stdout.is_empty());
    assert!(
        text(&broken.stderr).contains("ConfigMap long.huge.output-1 (part of the output) is missing"),
        "{}",
        text(&broken.stderr)
    );

    // Deleting the workflow deletes its ConfigMaps.
    api.delete("long", &DeleteParams::default()).await.expect("delete workflow");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = cms.list(&of_long).await.expect("list").items.len();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} ConfigMaps outlived their workflow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn logs_prints_follows_and_explains_a_missing_log() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("logs/default/writer");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("0.log"), "line one\nline two\n").expect("write");
    std::fs::write(dir.join("1.log"), "replica one\n").expect("write");
    let logs = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_a2a"))
            .arg("logs")
            .args(args)
            .env("A2A_HOME", home.path())
            .output()
            .expect("logs")
    };
    assert_eq!(text(&logs(&["writer"]).stdout), "line one\nline two\n");
    assert_eq!(text(&logs(&["writer", "--replica", "1"]).stdout), "replica one\n");
    let missing = logs(&["writer", "--replica", "2"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.starts_with("error: no log for agent \"writer\" replica 2 in namespace \"default\" ("), "{err}");
    assert!(err.ends_with("does not exist); replicas with logs: 0, 1\n"), "{err}");
    let other = logs(&["ghost", "-n", "team"]);
    assert!(text(&other.stderr).contains("only agents run by `a2a serve` or `a2a run` on this host have logs here"));

    // -f prints what is there, then what is appended.
    let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["logs", "writer", "-f"])
        .env("A2A_HOME", home.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("line one"));
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("line two"));
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("0.log")).expect("open");
    writeln!(f, "line three").expect("append");
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("line three"));
    let _ = child.kill();
    let _ = child.wait();
}
