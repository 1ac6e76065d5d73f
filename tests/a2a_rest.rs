//! The HTTP+JSON (REST) binding against the official A2A Python SDK (a2a-sdk 1.3, protocol
//! 1.0) serving its REST routes: every operation a2a sends, the SDK's errors read back as
//! A2A errors, and a workflow run by `a2a run` against an agent whose card offers only
//! HTTP+JSON, with the same results as over JSON-RPC; and the same against `a2a demo-agent`
//! serving only HTTP+JSON, or only JSON-RPC.
//!
//! Needs a Python with the SDK: `$A2A_TEST_PYTHON`, else `.venv/bin/python` in the repository
//! root (`python3 -m venv .venv && .venv/bin/pip install 'a2a-sdk[http-server]' uvicorn`).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use a2a::a2a::types::{ErrorCode, ListTasksRequest};
use a2a::a2a::{
    Client, FollowOptions, Message, SendMessageConfiguration, SendMessageResponse, StreamResponse, Task, TaskState,
};
use futures::StreamExt;
use support::AgentProcess;

const AGENT: &str = "tests/python/streaming_agent.py";

async fn rest_agent() -> AgentProcess {
    AgentProcess::python(AGENT, &[("A2A_BINDING", "HTTP+JSON")]).await
}

async fn jsonrpc_agent() -> AgentProcess {
    AgentProcess::python(AGENT, &[("A2A_BINDING", "JSONRPC")]).await
}

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

fn opts() -> FollowOptions {
    FollowOptions::default().timeout(Duration::from_secs(30))
}

fn immediately() -> Option<SendMessageConfiguration> {
    Some(SendMessageConfiguration { return_immediately: true, ..Default::default() })
}

/// Folds a stream of events into the task it describes (the first event is the task).
async fn fold(mut events: a2a::a2a::EventStream) -> (Task, usize) {
    let mut folded: Option<Task> = None;
    let mut count = 0;
    while let Some(ev) = events.next().await {
        let ev = ev.expect("an event");
        count += 1;
        match (&mut folded, &ev) {
            (None, StreamResponse::Task(t)) => folded = Some(t.clone()),
            (Some(t), e) => t.apply(e),
            (None, other) => panic!("the first event should be the task, got {other:?}"),
        }
    }
    (folded.expect("at least one event"), count)
}

#[tokio::test]
async fn a_card_offering_only_http_json_is_spoken_over_rest_with_the_json_rpc_results() {
    let rest = rest_agent().await;
    let rpc = jsonrpc_agent().await;
    let (rest_client, rpc_client) = (rest.client(), rpc.client());
    assert_eq!(rest_client.transport().await.unwrap().binding(), "HTTP+JSON");
    assert_eq!(rpc_client.transport().await.unwrap().binding(), "JSONRPC");

    // SendMessage, blocking and with returnImmediately then followed: the same answers.
    for client in [&rest_client, &rpc_client] {
        let blocking = opts().return_immediately(false);
        let done = task(
            client
                .send_and_follow(Message::user_text("m-1", "hello big world"), &blocking, std::future::pending())
                .await
                .unwrap(),
        );
        assert_eq!(done.status.state, TaskState::Completed, "{}", client.base_url());
        assert_eq!(done.output().text, "HELLO\nBIG\nWORLD", "{}", client.base_url());
        let followed = task(
            client
                .send_and_follow(Message::user_text("m-2", "one two"), &opts(), std::future::pending())
                .await
                .unwrap(),
        );
        assert_eq!(followed.status.state, TaskState::Completed);
        assert_eq!(followed.output().text, "ONE\nTWO");
    }

    // GetTask and ListTasks see the task that was sent over REST.
    let sent =
        task(rest_client.send_message(Message::user_text("m-3", "listed task"), None).await.expect("SendMessage"));
    let got = rest_client.get_task(&sent.id).await.expect("GetTask");
    assert_eq!((got.id.as_str(), got.status.state), (sent.id.as_str(), TaskState::Completed));
    assert_eq!(got.output().text, "LISTED\nTASK");
    let page = rest_client
        .list_tasks(ListTasksRequest { context_id: Some(sent.context_id.clone()), ..Default::default() })
        .await
        .expect("ListTasks");
    assert_eq!(page.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [sent.id.as_str()], "{page:?}");
    assert_eq!(page.next_page_token, "", "one page only");
    let all = rest_client.list_tasks(ListTasksRequest::default()).await.expect("ListTasks");
    assert_eq!(all.tasks.len(), 3, "every task sent over REST: {all:?}");

    // The SDK's REST errors come back as the A2A errors JSON-RPC reports.
    let missing = rest_client.get_task("no-such-task").await.unwrap_err();
    assert_eq!(missing.rpc_code(), Some(ErrorCode::TaskNotFound), "{missing}");
    assert!(!missing.is_retryable());
    let rpc_missing = rpc_client.get_task("no-such-task").await.unwrap_err();
    assert_eq!(rpc_missing.rpc_code(), missing.rpc_code());
    let late = rest_client.cancel_task(&sent.id).await.unwrap_err();
    assert_eq!(late.rpc_code(), Some(ErrorCode::TaskNotCancelable), "{late}");
}

#[tokio::test]
async fn cancel_task_over_rest_reaches_the_python_agent() {
    let agent = rest_agent().await;
    let client = agent.client();
    let working =
        task(client.send_message(Message::user_text("c-1", "slow 30"), immediately()).await.expect("SendMessage"));
    assert!(!working.status.state.is_terminal(), "{:?}", working.status);
    agent.wait_log(&format!("start task={}", working.id)).await;
    let canceled = client.cancel_task(&working.id).await.expect("CancelTask");
    assert_eq!(canceled.status.state, TaskState::Canceled);
    agent.wait_log(&format!("cancel task={}", working.id)).await;

    // A follow that runs out of time cancels the task over REST too.
    let err = client
        .send_and_follow(
            Message::user_text("c-2", "slow 30"),
            &FollowOptions::default().timeout(Duration::from_millis(500)),
            std::future::pending(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().ends_with("answered TASK_STATE_CANCELED"), "{err}");
}

#[tokio::test]
async fn send_streaming_message_and_subscribe_to_task_stream_over_rest() {
    let rest = rest_agent().await;
    let rpc = jsonrpc_agent().await;

    // SendStreamingMessage: one chunk per word, folded into the same task over both bindings.
    let (over_rest, rest_events) =
        fold(rest.client().send_streaming_message(Message::user_text("s-1", "hello big world"), None).await.unwrap())
            .await;
    let (over_rpc, rpc_events) =
        fold(rpc.client().send_streaming_message(Message::user_text("s-1", "hello big world"), None).await.unwrap())
            .await;
    assert_eq!(over_rest.status.state, TaskState::Completed);
    assert_eq!(over_rest.output(), over_rpc.output());
    assert_eq!(over_rest.output().text, "HELLO\nBIG\nWORLD");
    assert_eq!(rest_events, rpc_events, "the same events over both bindings");

    // SubscribeToTask: a running task's remaining events, to its end.
    let client = rest.client();
    let working =
        task(client.send_message(Message::user_text("s-2", "slow 1"), immediately()).await.expect("SendMessage"));
    let mut events = client.subscribe_to_task(&working.id).await.expect("SubscribeToTask");
    let mut followed = working.clone();
    while let Some(ev) = events.next().await {
        followed.apply(&ev.expect("an event"));
    }
    assert_eq!(followed.status.state, TaskState::Completed, "{:?}", followed.status);
    assert_eq!(followed.output().text, "DONE");

    // Subscribing to a finished task is an error, read as the A2A error it names.
    let err = match client.subscribe_to_task(&working.id).await {
        Err(e) => e,
        Ok(mut events) => match events.next().await {
            Some(Err(e)) => e,
            other => panic!("subscribing to a terminal task should fail, got {other:?}"),
        },
    };
    assert_eq!(err.rpc_code(), Some(ErrorCode::UnsupportedOperation), "{err}");
}

fn run(home: &Path, file: &Path) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let top = format!("a2a-test-rest-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["run", "-f"])
        .arg(file)
        .args(["--output", "--cgroup-top", &top])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

/// `a2a run` of a two-step workflow against an Agent that is only a `url`.
fn run_against(agent: &Client) -> (Output, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: shouter }}\nspec: {{ url: \"{}/\", skills: [shout] }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: loud }}\nspec:\n  tasks:\n\
             \x20   - {{ name: first, agent: shouter, message: one two three }}\n\
             \x20   - {{ name: second, agent: shouter, dependsOn: [first], message: \"again {{{{ tasks.first.output }}}}\" }}\n",
            agent.base_url()
        ),
    )
    .expect("write the workflow");
    let out = run(home.path(), &file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[tokio::test]
async fn a_workflow_runs_against_a_url_agent_that_offers_only_http_json() {
    let rest = rest_agent().await;
    let rpc = jsonrpc_agent().await;
    let (rest_out, rest_stdout) = run_against(&rest.client());
    assert_eq!(
        rest_out.status.code(),
        Some(0),
        "stdout:\n{rest_stdout}\nstderr:\n{}\nagent:\n{}",
        String::from_utf8_lossy(&rest_out.stderr),
        rest.log()
    );
    assert!(rest_stdout.starts_with("workflow loud: Succeeded (2/2)"), "{rest_stdout}");
    assert!(rest_stdout.contains("--- second\nAGAIN\nONE\nTWO\nTHREE\n"), "{rest_stdout}");
    assert_eq!(rest.log().matches("end task=").count(), 2, "each task ran once:\n{}", rest.log());

    let (rpc_out, rpc_stdout) = run_against(&rpc.client());
    assert_eq!(rpc_out.status.code(), Some(0), "{rpc_stdout}");
    let outputs = |s: &str| s.split_once("\n---").map(|(_, outputs)| outputs.to_owned()).unwrap_or_default();
    assert_eq!(outputs(&rest_stdout), outputs(&rpc_stdout), "the same outputs over both bindings");
    assert!(!outputs(&rest_stdout).is_empty(), "{rest_stdout}");
}

/// `a2a run` of a two-step workflow against an Agent that is only a `url`, the demo agent's
/// uppercase and word count skills.
fn run_demo_workflow(agent: &str) -> (Output, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: demo }}\nspec: {{ url: \"{agent}/\" }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: count }}\nspec:\n  tasks:\n\
             \x20   - {{ name: first, agent: demo, message: \"uppercase one two three\" }}\n\
             \x20   - {{ name: second, agent: demo, dependsOn: [first], message: \"wordcount {{{{ tasks.first.output }}}} four\" }}\n"
        ),
    )
    .expect("write the workflow");
    let out = run(home.path(), &file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[tokio::test]
async fn a_workflow_runs_over_http_json_against_the_demo_agent_as_over_json_rpc() {
    let rest = AgentProcess::demo(&["--binding", "http-json"]).await;
    let rpc = AgentProcess::demo(&["--binding", "jsonrpc"]).await;
    assert_eq!(rest.client().transport().await.expect("card").binding(), "HTTP+JSON");
    assert_eq!(rpc.client().transport().await.expect("card").binding(), "JSONRPC");

    let (rest_out, rest_stdout) = run_demo_workflow(&rest.url);
    let context = format!("stdout:\n{rest_stdout}\nstderr:\n{}", String::from_utf8_lossy(&rest_out.stderr));
    assert_eq!(rest_out.status.code(), Some(0), "{context}");
    assert!(rest_stdout.starts_with("workflow count: Succeeded (2/2)"), "{context}");
    assert!(rest_stdout.contains("--- first\nONE TWO THREE\n"), "{context}");
    assert!(rest_stdout.contains("--- second\n4\n"), "the second task read the first's output: {context}");
    assert_eq!(rest.log().matches("event=end").count(), 2, "each task ran once, over REST:\n{}", rest.log());
    assert_eq!(rpc.log().matches("event=start").count(), 0, "nothing went to the other agent");

    let (rpc_out, rpc_stdout) = run_demo_workflow(&rpc.url);
    assert_eq!(rpc_out.status.code(), Some(0), "{rpc_stdout}");
    let outputs = |s: &str| s.split_once("\n---").map(|(_, outputs)| outputs.to_owned()).unwrap_or_default();
    assert_eq!(outputs(&rest_stdout), outputs(&rpc_stdout), "the same outputs over both bindings");
}
