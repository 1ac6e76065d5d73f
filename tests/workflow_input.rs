//! A task whose agent asks for input (A2A `TASK_STATE_INPUT_REQUIRED`, or `_AUTH_REQUIRED`)
//! is not a failure: the workflow task waits as InputRequired (AuthRequired) with the
//! question in its status, is neither retried nor polled, holds the tasks after it, and is
//! cancelled on its agent with the workflow. Against the official Python SDK agent, through
//! the real local API server, the engine and `a2a run`.

mod common;
mod support;

use common::engine::{create_workflow, ready_agent, start_engine};

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, TaskStatus, WorkflowPhase};
use a2a::controller::engine::CANCEL_ANNOTATION;
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::AgentProcess;

const AGENT: &str = "tests/python/streaming_agent.py";

fn task<'a>(wf: &'a Workflow, name: &str) -> &'a TaskStatus {
    wf.status.as_ref().and_then(|s| s.tasks.iter().find(|t| t.name == name)).expect("task status")
}

/// Waits until `done` holds for the stored workflow; returns it.
async fn wait_for(client: &kube::Client, name: &str, what: &str, done: impl Fn(&Workflow) -> bool) -> Workflow {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = api.get(name).await.expect("get workflow");
        if done(&wf) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name}: {what} did not happen in 30s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_agent_asks_waits_with_the_question_and_is_neither_retried_nor_polled() {
    let server = common::start().await;
    let agent = AgentProcess::python(AGENT, &[]).await;
    ready_agent(&server.client, "asker", &agent.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: ask }\nspec:\n  retry: { limit: 2, backoff: { initial: 10ms } }\n  tasks:\n\
         \x20   - { name: where, agent: asker, message: \"ask which city should I plan for?\" }\n\
         \x20   - { name: plan, agent: asker, dependsOn: [where], message: \"plan {{ tasks.where.output }}\" }\n\
         \x20   - { name: key, agent: asker, message: \"login which API key may I use?\" }\n\
         \x20   - { name: free, agent: asker, message: hello }\n",
    )
    .await;
    let wf = wait_for(&server.client, "ask", "both questions", |wf| {
        wf.status.as_ref().is_some_and(|s| s.tasks.iter().filter(|t| t.phase.is_waiting()).count() == 2)
            && task(wf, "free").phase == TaskPhase::Succeeded
    })
    .await;
    let status = wf.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Running), "waiting is not an end: {status:#?}");
    assert_eq!(status.progress.as_deref(), Some("1/4"));
    let asked = task(&wf, "where");
    assert_eq!(asked.phase, TaskPhase::InputRequired);
    assert_eq!(asked.message.as_deref(), Some("which city should I plan for?"));
    assert_eq!((asked.attempts, asked.error.as_deref()), (1, None), "not a failure, not retried");
    let a2a_id = asked.a2a_task_id.clone().expect("the A2A task that waits is kept");
    let key = task(&wf, "key");
    assert_eq!(key.phase, TaskPhase::AuthRequired);
    assert_eq!(key.message.as_deref(), Some("which API key may I use?"));
    assert_eq!(task(&wf, "plan").phase, TaskPhase::Pending, "what depends on the answer waits");

    // Nothing more is sent or polled while the tasks wait.
    let log = agent.log();
    assert_eq!(log.matches("asked task=").count(), 2, "each question was asked once:\n{log}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = agent.log();
    assert_eq!(
        later.matches("get task=").count(),
        log.matches("get task=").count(),
        "the waiting tasks are not polled:\n{later}"
    );
    assert_eq!(later.matches("start task=").count(), 3, "nothing was re-sent:\n{later}");
    assert!(later.contains(&format!("asked task={a2a_id}")), "{later}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_cancels_the_waiting_task_on_its_http_json_agent() {
    let server = common::start().await;
    let agent = AgentProcess::python(AGENT, &[("A2A_BINDING", "HTTP+JSON")]).await;
    ready_agent(&server.client, "asker", &agent.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: asking }\nspec:\n  tasks:\n\
         \x20   - { name: where, agent: asker, message: \"ask which city?\" }\n\
         \x20   - { name: plan, agent: asker, dependsOn: [where], message: plan }\n",
    )
    .await;
    let wf = wait_for(&server.client, "asking", "the question", |wf| {
        wf.status.as_ref().is_some_and(|s| s.tasks.iter().any(|t| t.name == "where" && t.phase.is_waiting()))
    })
    .await;
    let a2a_id = task(&wf, "where").a2a_task_id.clone().expect("an A2A task id");
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let cancel = serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}});
    api.patch("asking", &PatchParams::default(), &Patch::Merge(&cancel)).await.expect("annotate");
    let wf = wait_for(&server.client, "asking", "the cancel", |wf| {
        wf.status.as_ref().and_then(|s| s.phase) == Some(WorkflowPhase::Cancelled)
    })
    .await;
    assert_eq!(task(&wf, "where").phase, TaskPhase::Cancelled);
    assert_eq!(task(&wf, "plan").phase, TaskPhase::Cancelled);
    agent.wait_log(&format!("cancel task={a2a_id}")).await;
}

fn run(home: &Path, file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["run", "-f"])
        .arg(file)
        .args(["--cgroup-top", &format!("a2a-test-input-{}", std::process::id())])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

#[tokio::test]
async fn a2a_run_ends_when_the_workflow_waits_for_input_and_says_what_is_asked() {
    let agent = AgentProcess::python(AGENT, &[]).await;
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: asker }}\nspec: {{ url: \"{}/\" }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: trip }}\nspec:\n  tasks:\n\
             \x20   - {{ name: where, agent: asker, message: \"ask which city?\" }}\n\
             \x20   - {{ name: plan, agent: asker, dependsOn: [where], message: plan }}\n\
             \x20   - {{ name: free, agent: asker, message: hi there }}\n",
            agent.url
        ),
    )
    .expect("write the workflow");
    let out = run(home.path(), &file);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("workflow trip: Running (1/3), waiting for input"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("where")).unwrap_or_default();
    assert!(row.contains("InputRequired") && row.contains("asks: which city?"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("plan") && l.contains("Pending")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("free") && l.contains("Succeeded")), "{stdout}");
    assert!(stderr.contains("trip/where: InputRequired on asker: which city?"), "{stderr}");
    assert!(
        stdout.contains("to answer: run on a terminal, where a2a run asks; or run on `a2a serve` and answer with `a2a reply trip where -m TEXT`"),
        "{stdout}"
    );
}
