//! The token a2a gives each agent it runs: under a real `a2a serve`, the demo agent it starts
//! refuses an A2A call without the token (401 and a Bearer challenge), while the workflow
//! engine, which presents it, runs a workflow on it; the token lives in a Secret the Agent owns.

mod common;

use std::time::{Duration, Instant};

use a2a::api::agent::AgentPhase;
use a2a::api::workflow::WorkflowPhase;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::node::{Daemon, Scratch, apply, get_wf, phase, tear_down, wait_agent};

/// One HTTP/1.1 request to `url` (`http://127.0.0.1:PORT/...`): (status, headers and body).
async fn request(url: &str, method: &str, path: &str, authorization: Option<&str>, body: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the agent");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nA2A-Version: 1.0\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

const GET_TASK: &str = r#"{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":"nope"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_a2a_runs_refuses_calls_without_its_token_while_workflows_reach_it() {
    let scratch = Scratch::new("token");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: guarded }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n---\napiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: hello }\nspec:\n  tasks:\n    - { name: hi, agent: guarded, message: hello through a2a }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(&client, "hello").await;
        let p = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(p, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed)) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = wf.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(WorkflowPhase::Succeeded), "the engine presents the token: {s:#?}");
    assert_eq!(s.tasks[0].output.as_deref(), Some("hello through a2a"));

    let agent =
        wait_agent(&client, "guarded", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Running)).await;
    let url = agent.status.as_ref().and_then(|s| s.endpoints.first().cloned()).expect("an endpoint");

    // Without the token, or with another one: 401 and a Bearer challenge.
    let (status, answer) = request(&url, "POST", "/", None, GET_TASK).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
    let (status, _) = request(&url, "POST", "/", Some("Bearer not-the-token"), GET_TASK).await;
    assert_eq!(status, 401);

    // The token is in the Secret the Agent owns; with it the call is answered.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = secrets.get("guarded-a2a-token").await.expect("the token Secret");
    assert_eq!(secret.owner_references()[0].uid, agent.uid().expect("uid"));
    assert_eq!(secret.type_.as_deref(), Some("a2a.dev/agent-token"));
    let token = String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("utf-8");
    let (status, answer) = request(&url, "POST", "/", Some(&format!("Bearer {token}")), GET_TASK).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("-32001"), "an A2A answer (TaskNotFound): {answer}");

    // The card stays public and says a bearer token is required.
    let (status, card) = request(&url, "GET", "/.well-known/agent-card.json", None, "").await;
    assert_eq!(status, 200, "{card}");
    assert!(card.contains(r#""a2aAgentToken":{"httpAuthSecurityScheme":{"#), "{card}");
    assert!(!card.contains(&token), "the card never carries the token");

    // The garbage collector removes the token with its Agent.
    let agents: Api<a2a::api::Agent> = Api::namespaced(client.clone(), "default");
    agents.delete("guarded", &Default::default()).await.expect("delete the agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while secrets.get_opt("guarded-a2a-token").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the token Secret outlived its Agent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tear_down(daemon).await;
}
