//! `a2a demo-agent` through our A2A client: skills, re-sent messages, protocol errors,
//! cancellation and fault injection.

mod support;

use std::time::Duration;

use a2a::a2a::client::Error;
use a2a::a2a::{CancelOutcome, ErrorCode, FollowOptions, Message, Part, SendMessageResponse, Task, TaskState};
use serde_json::json;
use support::AgentProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

fn opts() -> FollowOptions {
    FollowOptions::default().timeout(Duration::from_secs(20))
}

async fn run(agent: &AgentProcess, id: &str, text: &str) -> Task {
    task(agent.client().send_and_follow(Message::user_text(id, text), &opts(), std::future::pending()).await.unwrap())
}

/// POSTs `body` to the agent with raw HTTP/1.1, so headers are exactly as given.
async fn raw_post(agent: &AgentProcess, headers: &str, body: &str) -> serde_json::Value {
    let addr = agent.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn each_skill_answers_as_documented() {
    let agent = AgentProcess::demo(&[]).await;
    let card = agent.client().agent_card().await.unwrap();
    let skills: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(skills, ["echo", "uppercase", "wordcount", "sleep", "allocate", "fail", "ask", "data", "file"]);
    assert_eq!(card.supported_interfaces[0].url, format!("{}/", agent.url));

    assert_eq!(run(&agent, "e", "hello there").await.output().text, "hello there");
    assert_eq!(run(&agent, "u", "uppercase: hello").await.output().text, "HELLO");
    let wc = run(&agent, "w", "wordcount one two three").await.output();
    assert_eq!((wc.text.as_str(), wc.data), ("3", vec![json!({"words": 3})]));
    assert_eq!(run(&agent, "s", "sleep 50ms").await.output().text, "slept 50ms");
    let alloc = run(&agent, "a", "allocate 8Mi").await.output().text;
    assert_eq!(alloc, "allocated 8Mi (2048 pages)");
    let failed = run(&agent, "f", "fail").await;
    assert_eq!(failed.status.state, TaskState::Failed);
    assert_eq!(failed.output().text, "the fail skill always fails");

    // A data part can carry the arguments.
    let mut m = Message::user_text("d", "sleep");
    m.parts.push(Part::data(json!({"sleep": "20ms"})));
    let t = task(agent.client().send_and_follow(m, &opts(), std::future::pending()).await.unwrap());
    assert_eq!(t.output().text, "slept 20ms");
}

#[tokio::test]
async fn only_the_chosen_skills_are_offered_and_the_first_is_the_default() {
    let agent = AgentProcess::demo(&["--skill", "uppercase", "--skill", "wordcount"]).await;
    let card = agent.client().agent_card().await.unwrap();
    let skills: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(skills, ["uppercase", "wordcount"]);
    assert_eq!(run(&agent, "1", "echo hi").await.output().text, "ECHO HI");
    assert_eq!(run(&agent, "2", "wordcount a b").await.output().text, "2");
}

#[tokio::test]
async fn a_resent_message_id_returns_the_same_task_and_runs_once() {
    let agent = AgentProcess::demo(&[]).await;
    let first = run(&agent, "wf-1.task-a.1", "echo once").await;
    let second = run(&agent, "wf-1.task-a.1", "echo once").await;
    assert_eq!(first.id, second.id);
    let log = agent.wait_log("event=duplicate").await;
    assert_eq!(log.matches("event=start").count(), 1, "{log}");
    assert_eq!(log.matches(&format!("event=end task={}", first.id)).count(), 1, "{log}");
}

#[tokio::test]
async fn protocol_errors_carry_the_a2a_codes() {
    let agent = AgentProcess::demo(&[]).await;
    let get = r#"{"jsonrpc":"2.0","id":5,"method":"GetTask","params":{"id":"x"}}"#;
    let no_version = raw_post(&agent, "", get).await;
    assert_eq!(no_version["error"]["code"], -32009, "{no_version}");
    assert_eq!(no_version["id"], 5);
    let old = raw_post(&agent, "A2A-Version: 0.3\r\n", get).await;
    assert_eq!(old["error"]["code"], -32009, "{old}");
    let v = "A2A-Version: 1.0\r\n";
    let send03 = r#"{"jsonrpc":"2.0","id":6,"method":"message/send","params":{}}"#;
    assert_eq!(raw_post(&agent, v, send03).await["error"]["code"], -32601);
    assert_eq!(raw_post(&agent, v, "{not json").await["error"]["code"], -32700);
    let bad_params =
        r#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"parts":[{"kind":"text"}]}}}"#;
    let bad = raw_post(&agent, v, bad_params).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("`text`, `data`, `raw` or `url`"), "{bad}");

    let client = agent.client();
    let missing = client.get_task("nope").await.unwrap_err();
    assert_eq!(missing.rpc_code(), Some(ErrorCode::TaskNotFound), "{missing}");
    let done = run(&agent, "c", "echo x").await;
    let late = client.cancel_task(&done.id).await.unwrap_err();
    assert_eq!(late.rpc_code(), Some(ErrorCode::TaskNotCancelable), "{late}");
}

#[tokio::test]
async fn a_timeout_or_a_cancellation_cancels_the_task_on_the_agent() {
    let agent = AgentProcess::demo(&[]).await;
    let client = agent.client();
    let short = FollowOptions::default().timeout(Duration::from_millis(500));
    let err = client
        .send_and_follow(Message::user_text("slow-1", "sleep 30s"), &short, std::future::pending())
        .await
        .unwrap_err();
    let Error::Timeout { task_id: Some(id), cancel, .. } = &err else {
        panic!("expected a timeout with a task id, got {err}");
    };
    assert!(matches!(cancel, CancelOutcome::Answered { state: TaskState::Canceled, .. }), "{err}");
    agent.wait_log(&format!("event=canceled task={id}")).await;
    assert_eq!(client.get_task(id).await.unwrap().status.state, TaskState::Canceled);

    let stop = tokio::time::sleep(Duration::from_millis(300));
    let err = client.send_and_follow(Message::user_text("slow-2", "sleep 30s"), &opts(), stop).await.unwrap_err();
    let Error::Cancelled { task_id: Some(id), .. } = &err else {
        panic!("expected a cancellation with a task id, got {err}");
    };
    agent.wait_log(&format!("event=canceled task={id}")).await;
}

#[tokio::test]
async fn injected_failures_fail_tasks_and_injected_crashes_end_the_process() {
    let failing = AgentProcess::demo(&["--fail-rate", "1"]).await;
    let t = run(&failing, "x", "echo hi").await;
    assert_eq!(t.status.state, TaskState::Failed);
    assert!(t.output().text.contains("injected failure"), "{:?}", t.output());

    let mut crashing = AgentProcess::demo(&["--crash-rate", "1"]).await;
    let err = crashing
        .client()
        .send_and_follow(Message::user_text("y", "echo hi"), &opts(), std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. } | Error::Body { .. }), "{err}");
    let status = crashing.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(crashing.log().contains("event=crash"), "{}", crashing.log());
}

#[tokio::test]
async fn rates_outside_zero_to_one_are_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["demo-agent", "--fail-rate", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1.5 is not between 0 and 1"), "{err}");
}
