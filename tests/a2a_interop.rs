//! Interop with the official A2A Python SDK (a2a-sdk 1.3, protocol 1.0): our client against
//! SDK agents, and the SDK's client against `a2a demo-agent`.
//!
//! Needs a Python with the SDK: `$A2A_TEST_PYTHON`, else `.venv/bin/python` in the repository
//! root (`python3 -m venv .venv && .venv/bin/pip install 'a2a-sdk[http-server]' uvicorn`).

mod support;

use std::time::Duration;

use a2a::a2a::client::Error;
use a2a::a2a::{CancelOutcome, FollowOptions, Message, SendMessageResponse, StreamResponse, Task, TaskState};
use futures::StreamExt;
use support::AgentProcess;

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

fn opts() -> FollowOptions {
    FollowOptions::default().timeout(Duration::from_secs(30))
}

#[tokio::test]
async fn our_client_gets_the_answer_of_the_python_sdk_echo_agent() {
    let agent = AgentProcess::python("examples/python/echo_agent.py", &[]).await;
    let client = agent.client();
    let card = client.agent_card().await.unwrap();
    assert_eq!(card.name, "python-echo");
    assert_eq!(card.skills[0].id, "echo");

    // Blocking SendMessage: the SDK answers with the finished task.
    let blocking = opts().return_immediately(false);
    let done = task(
        client
            .send_and_follow(Message::user_text("m-1", "hello A2A"), &blocking, std::future::pending())
            .await
            .unwrap(),
    );
    assert_eq!(done.status.state, TaskState::Completed);
    assert_eq!(done.output().text, "echo: hello A2A");

    // returnImmediately: the task comes back unfinished and is followed to the end.
    let followed = task(
        client.send_and_follow(Message::user_text("m-2", "second"), &opts(), std::future::pending()).await.unwrap(),
    );
    assert_eq!(followed.status.state, TaskState::Completed);
    assert_eq!(followed.output().text, "echo: second");
    let again = client.get_task(&followed.id).await.unwrap();
    assert_eq!(again.output().text, "echo: second");
}

#[tokio::test]
async fn our_client_follows_the_python_streaming_agent_over_sse() {
    let agent = AgentProcess::python("tests/python/streaming_agent.py", &[]).await;
    let client = agent.client();
    assert!(client.agent_card().await.unwrap().capabilities.streaming);

    // SendStreamingMessage: every chunk arrives as an event; folding them gives the answer.
    let mut events = client.send_streaming_message(Message::user_text("s-1", "hello big world"), None).await.unwrap();
    let mut folded: Option<Task> = None;
    let mut appended = 0;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        match (&mut folded, &ev) {
            (None, StreamResponse::Task(t)) => folded = Some(t.clone()),
            (Some(t), e) => {
                if let StreamResponse::ArtifactUpdate(u) = e
                    && u.append
                {
                    appended += 1;
                }
                t.apply(e);
            }
            (None, other) => panic!("the first event should be the task, got {other:?}"),
        }
    }
    let folded = folded.expect("no events");
    assert_eq!(folded.status.state, TaskState::Completed);
    assert_eq!(folded.output().text, "HELLO\nBIG\nWORLD");
    assert_eq!(appended, 2, "two chunks are appended to the first");

    // SubscribeToTask on a task sent with returnImmediately streams it to the end.
    let config = a2a::a2a::SendMessageConfiguration { return_immediately: true, ..Default::default() };
    let started = task(client.send_message(Message::user_text("s-3", "a b c"), Some(config)).await.unwrap());
    assert!(!started.status.state.is_terminal(), "{:?}", started.status);
    let mut sub = client.subscribe_to_task(&started.id).await.unwrap();
    let mut state = started.clone();
    while let Some(ev) = sub.next().await {
        state.apply(&ev.unwrap());
    }
    assert_eq!(state.status.state, TaskState::Completed);
    assert!(state.output().text.ends_with("C"), "the subscription carried the last chunk: {:?}", state.output());

    // send_and_follow with returnImmediately follows the task with SubscribeToTask.
    let followed = task(
        client.send_and_follow(Message::user_text("s-2", "one two"), &opts(), std::future::pending()).await.unwrap(),
    );
    assert_eq!(followed.status.state, TaskState::Completed);
    assert_eq!(followed.output().text, "ONE\nTWO");
}

#[tokio::test]
async fn our_client_follows_a_task_the_python_agent_finishes_later() {
    let agent = AgentProcess::python("tests/python/deferred_agent.py", &[("DEFERRED_SECONDS", "1")]).await;
    let client = agent.client();
    assert!(!client.agent_card().await.unwrap().capabilities.streaming);

    // The agent answers a blocking SendMessage with a task that is still working...
    let first = task(client.send_message(Message::user_text("d-1", "first"), None).await.unwrap());
    assert_eq!(first.status.state, TaskState::Working);

    // ...and send_and_follow polls GetTask until it is done.
    let blocking = opts().return_immediately(false);
    let done = task(
        client.send_and_follow(Message::user_text("d-2", "hello"), &blocking, std::future::pending()).await.unwrap(),
    );
    assert_eq!(done.status.state, TaskState::Completed);
    assert_eq!(done.output().text, "deferred: hello");
    agent.wait_log(&format!("completed task={}", done.id)).await;
}

#[tokio::test]
async fn a_timeout_cancels_the_task_on_the_python_agent() {
    let agent = AgentProcess::python("tests/python/streaming_agent.py", &[]).await;
    let client = agent.client();
    let short = FollowOptions::default().timeout(Duration::from_secs(2));
    let err =
        client.send_and_follow(Message::user_text("t-1", "slow 30"), &short, std::future::pending()).await.unwrap_err();
    let Error::Timeout { task_id: Some(id), cancel, .. } = &err else {
        panic!("expected a timeout with a task id, got {err}");
    };
    assert_eq!(cancel, &CancelOutcome::Answered { task_id: id.clone(), state: TaskState::Canceled }, "{err}");
    agent.wait_log(&format!("cancel task={id}")).await;
    assert_eq!(client.get_task(id).await.unwrap().status.state, TaskState::Canceled);
}

#[test]
fn the_python_sdk_client_is_answered_correctly_by_the_demo_agent() {
    let python = support::python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(AgentProcess::demo(&[]));
    let out = std::process::Command::new(python)
        .arg(support::root().join("tests/python/sdk_client.py"))
        .arg(&agent.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["card"]["name"], "a2a-demo-agent");
    assert_eq!(seen["card"]["streaming"], true);
    assert_eq!(
        seen["card"]["skills"],
        serde_json::json!(["echo", "uppercase", "wordcount", "sleep", "allocate", "fail", "ask", "data", "file"])
    );
    assert_eq!(seen["send"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(seen["send"]["text"], "HELLO FROM PYTHON");
    assert_eq!(seen["get"], seen["send"], "GetTask returns the same task");
    assert_eq!(seen["stream"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(seen["stream"]["text"], "4");
    assert_eq!(seen["stream"]["events"][0], "task");
    assert_eq!(seen["cancel"]["state"], "TASK_STATE_CANCELED");
    assert_eq!(seen["missing"], "TaskNotFoundError");
    let log = agent.log();
    let id = seen["send"]["id"].as_str().unwrap();
    assert_eq!(log.matches(&format!("event=start task={id}")).count(), 1, "{log}");
}
