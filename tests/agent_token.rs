//! The token a2a gives each agent it runs: under a real `a2a serve`, the demo agent it starts
//! refuses an A2A call without the token (401 and a Bearer challenge), while the workflow
//! engine, which presents it, runs a workflow on it. The token is derived from the key of the
//! agent's namespace (the Secret `a2a-agent-token-key`) and the Agent's uid: an Agent made
//! again under the same name gets another, a replaced key gives the next start another, and
//! a malformed key fails the start with an error naming the Secret and the key.

mod common;

use std::time::{Duration, Instant};

use a2a::api::agent::AgentPhase;
use a2a::api::workflow::WorkflowPhase;
use a2a::controller::credentials::{AgentTokenKey, KEY_SECRET};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::node::{Daemon, Scratch, apply, get_wf, phase, pids, tear_down, wait_agent};

const PATIENCE: Duration = Duration::from_secs(60);

/// The token key of `namespace`, as its Secret holds it.
async fn key_of(client: &kube::Client, namespace: &str) -> AgentTokenKey {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(KEY_SECRET).await.expect("the key Secret");
    assert_eq!(secret.type_.as_deref(), Some("a2a.dev/agent-token-key"));
    let bytes = secret.data.expect("data")["key"].0.clone();
    assert_eq!(bytes.len(), 32, "32 random bytes");
    AgentTokenKey::from_data(namespace, Some(&bytes)).expect("a well-formed key")
}

/// The `A2A_AGENT_TOKEN` the process `pid` was started with.
fn token_in_environment(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the agent's environment");
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"A2A_AGENT_TOKEN="))
        .map(|t| String::from_utf8(t.to_vec()).expect("utf-8"))
        .expect("A2A_AGENT_TOKEN in the agent's environment")
}

/// The agent `name` once it runs a process other than `not`: it and that process's pid.
async fn running(client: &kube::Client, name: &str, not: Option<i32>) -> (a2a::api::Agent, i32) {
    let a = wait_agent(client, name, PATIENCE, |a| {
        phase(a) == Some(AgentPhase::Running)
            && pids(a).first().is_some_and(|p| Some(*p) != not)
            && a.status.as_ref().is_some_and(|s| !s.endpoints.is_empty())
    })
    .await;
    let pid = pids(&a)[0];
    (a, pid)
}

fn endpoint(a: &a2a::api::Agent) -> String {
    a.status.as_ref().and_then(|s| s.endpoints.first().cloned()).expect("an endpoint")
}

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

    // The token is derived from the namespace's key and the Agent's uid; no Secret holds it.
    // The process was given it, and with it the call is answered.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert!(secrets.get_opt("guarded-a2a-token").await.expect("get").is_none(), "no token Secret per agent");
    let token = key_of(&client, "default").await.token("default", "guarded", &agent.uid().expect("uid"));
    let pid = pids(&agent)[0];
    assert_eq!(token_in_environment(pid), token, "the process has the token the engine presents");
    let (status, answer) = request(&url, "POST", "/", Some(&format!("Bearer {token}")), GET_TASK).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("-32001"), "an A2A answer (TaskNotFound): {answer}");

    // The card stays public and says a bearer token is required.
    let (status, card) = request(&url, "GET", "/.well-known/agent-card.json", None, "").await;
    assert_eq!(status, 200, "{card}");
    assert!(card.contains(r#""a2aAgentToken":{"httpAuthSecurityScheme":{"#), "{card}");
    assert!(!card.contains(&token), "the card never carries the token");

    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_bound_to_its_agent_and_to_its_namespaces_key() {
    let scratch = Scratch::new("token-bound");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let manifest = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: bound }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n";
    apply(home, manifest);
    let (first, first_pid) = running(&client, "bound", None).await;
    let first_token = token_in_environment(first_pid);
    let key = key_of(&client, "default").await;
    assert_eq!(first_token, key.token("default", "bound", &first.uid().expect("uid")));

    // Deleted and made again under the same name: another uid, so another token, and the
    // old one is refused.
    let agents: Api<a2a::api::Agent> = Api::namespaced(client.clone(), "default");
    agents.delete("bound", &DeleteParams::default()).await.expect("delete the agent");
    let deadline = Instant::now() + PATIENCE;
    while agents.get_opt("bound").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the agent was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply(home, manifest);
    let (second, second_pid) = running(&client, "bound", Some(first_pid)).await;
    assert_ne!(second.uid(), first.uid());
    let second_token = token_in_environment(second_pid);
    assert_ne!(second_token, first_token, "a re-created Agent gets another token");
    assert_eq!(second_token, key.token("default", "bound", &second.uid().expect("uid")));
    let url = endpoint(&second);
    let (status, _) = request(&url, "POST", "/", Some(&format!("Bearer {first_token}")), GET_TASK).await;
    assert_eq!(status, 401, "the earlier Agent's token is refused");

    // The key replaced (here by one of our own; deleting it has a new one made): the next
    // start of the agent gets the token derived from the new key.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets.delete(KEY_SECRET, &DeleteParams::default()).await.expect("delete the key");
    let new_key = [42u8; 32];
    let replacement: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY_SECRET},
        "type": "a2a.dev/agent-token-key", "data": {"key": b64(&new_key)}
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &replacement).await.expect("create the new key");
    // The node learns of the new key through its watch of Secrets; give it that moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = std::process::Command::new("kill").args(["-9", &second_pid.to_string()]).status();
    let (third, third_pid) = running(&client, "bound", Some(second_pid)).await;
    assert_eq!(third.uid(), second.uid(), "the same Agent, restarted");
    let third_token = token_in_environment(third_pid);
    let expected = AgentTokenKey::from_data("default", Some(&new_key)).expect("key").token(
        "default",
        "bound",
        &third.uid().expect("uid"),
    );
    assert_eq!(third_token, expected, "the restart got the token of the new key");
    assert_ne!(third_token, second_token);
    let url = endpoint(&third);
    let (status, answer) = request(&url, "POST", "/", Some(&format!("Bearer {third_token}")), GET_TASK).await;
    assert_eq!(status, 200, "{answer}");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_token_key_fails_the_start_naming_the_secret_and_the_key() {
    let scratch = Scratch::new("token-bad-key");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let short: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY_SECRET},
        "data": {"key": b64(b"too short")}
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &short).await.expect("create the short key");
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: keyless }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n",
    );
    let message = |a: &a2a::api::Agent| {
        a.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.reason == "StartFailed"))
            .map(|c| c.message.clone())
    };
    let a = wait_agent(&client, "keyless", PATIENCE, |a| message(a).is_some()).await;
    let text = message(&a).expect("a StartFailed condition");
    assert!(
        text.contains("key \"key\" of Secret default/a2a-agent-token-key has 9 bytes"),
        "the error names the Secret, the key and what is wrong: {text}"
    );
    assert!(pids(&a).is_empty(), "nothing started: {:?}", a.status);
    assert_eq!(
        secrets.get(KEY_SECRET).await.expect("get").data.expect("data")["key"].0,
        b"too short",
        "left as it was"
    );

    // A value that is not base64 never gets as far: the API server refuses it, by name.
    let refused = secrets
        .patch(
            KEY_SECRET,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"data": {"key": "not base64!"}})),
        )
        .await
        .expect_err("a value that is not base64 is refused");
    assert!(refused.to_string().contains("data[key]: Invalid value: expected base64-encoded bytes"), "{refused}");

    // Without the key at all: the same, naming the key.
    let mut keyless = secrets.get(KEY_SECRET).await.expect("get");
    keyless.data = Some(Default::default());
    secrets.replace(KEY_SECRET, &PostParams::default(), &keyless).await.expect("replace");
    let a = wait_agent(&client, "keyless", PATIENCE, |a| {
        message(a).is_some_and(|m| m.contains("Secret default/a2a-agent-token-key has no key \"key\""))
    })
    .await;
    assert!(pids(&a).is_empty(), "nothing started: {:?}", a.status);

    // Deleted: a new key is made and the agent starts.
    secrets.delete(KEY_SECRET, &DeleteParams::default()).await.expect("delete the key");
    let (a, pid) = running(&client, "keyless", None).await;
    let key = key_of(&client, "default").await;
    assert_eq!(token_in_environment(pid), key.token("default", "keyless", &a.uid().expect("uid")));

    // A key made short while the agent runs: a call to it fails, naming the Secret and the key.
    let mut short = secrets.get(KEY_SECRET).await.expect("get");
    short.data = Some([("key".to_owned(), k8s_openapi::ByteString(b"short".to_vec()))].into());
    secrets.replace(KEY_SECRET, &PostParams::default(), &short).await.expect("replace");
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: call }\nspec:\n  retry: { limit: 0 }\n  tasks:\n    - { name: hi, agent: keyless, message: hello }\n",
    );
    let deadline = Instant::now() + PATIENCE;
    let wf = loop {
        let wf = get_wf(&client, "call").await;
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal()) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = wf.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(WorkflowPhase::Failed), "{s:#?}");
    let task = format!("{:?}", s.tasks[0]);
    assert!(task.contains("key \\\"key\\\" of Secret default/a2a-agent-token-key has 5 bytes"), "{task}");
    tear_down(daemon).await;
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
