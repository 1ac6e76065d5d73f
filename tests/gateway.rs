//! The host's A2A gateway, end to end: a real `a2a serve` running the official Python SDK's
//! echo agent, `a2a demo-agent` and an SDK agent that calls other agents, all reached
//! through the gateway over TLS verified by the server's CA.
//!
//! Needs what the node tests need (root, cgroups) and the Python SDK (`.venv`, see
//! tests/a2a_interop.rs).

mod common;
mod support;

use std::path::Path;
use std::time::Duration;

use a2a::a2a::auth::{Credentials, SecretText};
use a2a::a2a::client::Error as ClientError;
use a2a::a2a::tls::TlsOptions;
use a2a::a2a::{
    Client, ClientOptions, ErrorCode, FollowOptions, Message, SendMessageConfiguration, SendMessageResponse,
    StreamResponse, Task, TaskState,
};
use common::node::{Daemon, Scratch, apply, tear_down, wait_agent};
use futures::StreamExt;
use serde_json::{Value, json};

fn gateway_url(home: &Path) -> String {
    std::fs::read_to_string(home.join("gateway.url")).expect("gateway.url").trim().to_owned()
}

/// A client for `path` below the gateway, presenting `token`, trusting the server's CA only.
fn client(home: &Path, path: &str, token: &str) -> Client {
    let ca = std::fs::read(home.join("pki/ca.crt")).expect("ca.crt");
    let options = ClientOptions {
        tls: TlsOptions { ca_pem: Some(ca), ..Default::default() },
        credentials: Credentials { bearer: Some(SecretText::new(token)), ..Default::default() },
        ..Default::default()
    };
    Client::with_options(&format!("{}{path}", gateway_url(home)), options).expect("client")
}

fn admin_token(home: &Path) -> String {
    std::fs::read_to_string(home.join("token")).expect("token").trim().to_owned()
}

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

fn with_skill(id: &str, text: &str, skill: &str) -> Message {
    let mut m = Message::user_text(id, text);
    m.metadata = Some(json!({"a2a.dev/skill": skill}).as_object().cloned().unwrap_or_default());
    m
}

/// `returnImmediately`: the task comes back as soon as the agent has it.
fn now() -> Option<SendMessageConfiguration> {
    Some(SendMessageConfiguration { return_immediately: true, ..Default::default() })
}

fn follow() -> FollowOptions {
    FollowOptions::default().timeout(Duration::from_secs(60))
}

/// The agents: the SDK's echo agent (JSON-RPC, skill `echo`), the demo agent (HTTP+JSON
/// first; skills uppercase and sleep; one task at a time) and the SDK caller agent. The Python
/// agents are given the checkout, which they would not see if it lived under /tmp (agents
/// have a private /tmp).
fn agents_yaml() -> String {
    let root = support::root();
    let py = support::python();
    let (py, root) = (py.display(), root.display());
    format!(
        r#"apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: echo}}
spec:
  protocol: a2a
  command: ["{py}", "{root}/examples/python/echo_agent.py"]
  skills: [echo]
  user: root
  writablePaths: ["{root}"]
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: demo}}
spec:
  protocol: a2a
  command: ["a2a", "demo-agent", "--skill", "uppercase", "--skill", "sleep", "--binding", "http-json", "--binding", "jsonrpc"]
  maxConcurrentTasks: 1
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: caller}}
spec:
  protocol: a2a
  command: ["{py}", "{root}/tests/python/gateway_caller_agent.py"]
  user: root
  writablePaths: ["{root}"]
  maxConcurrentTasks: 8
"#
    )
}

async fn start(scratch: &Scratch) -> Daemon {
    let home = scratch.home();
    let daemon = Daemon::start(home, scratch.top(), &["--gateway-queue-timeout", "5s"]);
    apply(home, &agents_yaml());
    let client = daemon.client().await;
    for name in ["echo", "demo", "caller"] {
        wait_agent(&client, name, Duration::from_secs(90), |a| {
            a.status.as_ref().is_some_and(|s| s.ready_replicas == 1)
        })
        .await;
    }
    daemon
}

fn audit_lines(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["resource"].as_str().is_some_and(|r| r.starts_with("agents/") && r != "agents/status"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_and_the_root_are_whole_a2a_endpoints_over_both_bindings() {
    let scratch = Scratch::new("gw-proto");
    let daemon = start(&scratch).await;
    let home = scratch.home();
    let token = admin_token(home);
    let gw = gateway_url(home);
    assert!(gw.starts_with("https://127.0.0.1:"), "{gw}");

    // The SDK agent's card, through the gateway: its interfaces name the gateway.
    let echo = client(home, "/agents/echo", &token);
    let card = echo.agent_card().await.expect("echo's card through the gateway");
    assert_eq!(card.name, "python-echo");
    assert_eq!(card.supported_interfaces[0].url, format!("{gw}/agents/echo/"));
    // JSON-RPC, blocking, then streaming (SSE passed through), then the task operations.
    let done = task(
        echo.send_and_follow(Message::user_text("g-1", "hello gateway"), &follow(), std::future::pending())
            .await
            .expect("send through the gateway"),
    );
    assert_eq!((done.status.state, done.output().text.as_str()), (TaskState::Completed, "echo: hello gateway"));
    assert_eq!(echo.get_task(&done.id).await.expect("get").output().text, "echo: hello gateway");
    let mut events = echo.send_streaming_message(Message::user_text("g-2", "streamed"), None).await.expect("stream");
    let mut folded: Option<Task> = None;
    while let Some(ev) = events.next().await {
        match (&mut folded, ev.expect("event")) {
            (None, StreamResponse::Task(t)) => folded = Some(t),
            (Some(t), e) => t.apply(&e),
            (None, other) => panic!("the first event should be the task, got {other:?}"),
        }
    }
    let streamed = folded.expect("events");
    assert_eq!((streamed.status.state, streamed.output().text.as_str()), (TaskState::Completed, "echo: streamed"));
    let listed = echo.list_tasks(Default::default()).await.expect("list");
    assert!(listed.tasks.iter().any(|t| t.id == streamed.id), "the agent's list through the gateway");

    // The demo agent over HTTP+JSON (its card's first binding).
    let demo = client(home, "/agents/demo", &token);
    let upper = task(
        demo.send_and_follow(Message::user_text("g-3", "uppercase shout"), &follow(), std::future::pending())
            .await
            .expect("HTTP+JSON through the gateway"),
    );
    assert_eq!(demo.transport().await.expect("transport").binding(), "HTTP+JSON");
    assert_eq!(upper.output().text, "SHOUT");

    // The root: its card aggregates the skills; a message without a skill is refused with
    // the list; with one it goes to the agent that has it.
    let root = client(home, "", &token);
    let card = root.agent_card().await.expect("the root's card");
    let mut skills: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    skills.sort_unstable();
    assert_eq!(skills, ["echo", "relay", "sleep", "uppercase"]);
    let e = root.send_message(Message::user_text("g-4", "no skill"), None).await.unwrap_err();
    match &e {
        ClientError::Rpc { error, .. } => {
            assert_eq!(error.code, ErrorCode::InvalidParams, "{e}");
            assert!(error.message.contains("echo (echo)") && error.message.contains("uppercase (demo)"), "{e}");
        }
        other => panic!("expected invalid params, got {other}"),
    }
    let e = root.send_message(with_skill("g-5", "x", "juggle"), None).await.unwrap_err();
    assert!(e.to_string().contains("no Ready agent in namespace \"default\" has skill \"juggle\""), "{e}");
    let routed = task(
        root.send_and_follow(with_skill("g-6", "routed", "echo"), &follow(), std::future::pending())
            .await
            .expect("routed by skill"),
    );
    assert_eq!(routed.output().text, "echo: routed", "the skill echo is the SDK agent's");
    // The root knows which agent holds the task.
    assert_eq!(root.get_task(&routed.id).await.expect("get at the root").output().text, "echo: routed");
    let e = root.get_task("no-such-task").await.unwrap_err();
    assert!(matches!(&e, ClientError::Rpc { error, .. } if error.code == ErrorCode::TaskNotFound), "{e}");
    // Subscribe and cancel through the root, on the demo agent's sleeping tasks.
    let running = task(root.send_message(with_skill("g-7", "sleep 2s", "sleep"), now()).await.expect("sleep"));
    assert!(!running.status.state.is_terminal(), "{:?}", running.status.state);
    let mut sub = root.subscribe_to_task(&running.id).await.expect("subscribe at the root");
    let mut last = None;
    while let Some(ev) = sub.next().await {
        if let StreamResponse::StatusUpdate(u) = ev.expect("event") {
            last = Some(u.status.state);
        }
    }
    assert_eq!(last, Some(TaskState::Completed), "the subscription follows the task to its end");
    let long = task(root.send_message(with_skill("g-8", "sleep 60s", "sleep"), now()).await.expect("sleep"));
    let cancelled = root.cancel_task(&long.id).await.expect("cancel at the root");
    assert_eq!(cancelled.status.state, TaskState::Canceled);
    let all = root.list_tasks(Default::default()).await.expect("list at the root");
    for id in [&routed.id, &running.id, &long.id] {
        assert!(all.tasks.iter().any(|t| &t.id == id), "the root's list merges every agent's: {id} missing");
    }
    tear_down(daemon).await;
}

/// A raw HTTPS request to the gateway (for answers the client turns into errors).
async fn raw(home: &Path, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let ca = std::fs::read(home.join("pki/ca.crt")).expect("ca.crt");
    let connector = a2a::a2a::tls::connector(&TlsOptions { ca_pem: Some(ca), ..Default::default() }).expect("tls");
    let http: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let mut req = http::Request::post(format!("{}{path}", gateway_url(home)))
        .header("content-type", "application/json")
        .header("A2A-Version", "1.0");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = http.request(req.body(body.to_string().into()).unwrap()).await.expect("request");
    let status = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn send(id: &str, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
        "role": "ROLE_USER", "messageId": id, "parts": [{"text": text}]}}})
}

fn answer_text(v: &Value) -> String {
    v.pointer("/result/task/artifacts/0/parts/0/text").and_then(Value::as_str).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authenticated_authorized_audited_and_agents_calls_are_admitted() {
    let scratch = Scratch::new("gw-auth");
    let daemon = start(&scratch).await;
    let home = scratch.home();
    let home_env = home.to_str().expect("utf-8 home");
    let a2a = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(args)
            .env("A2A_HOME", home_env)
            .output()
            .expect("a2a");
        assert!(out.status.success(), "a2a {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let viewer = a2a(&["user", "create", "viewer", "--role", "view"]);
    let other_ns = a2a(&["user", "create", "elsewhere", "--role", "edit", "--namespace", "team-b"]);
    let editor = a2a(&["user", "create", "editor", "--role", "edit", "--namespace", "default"]);

    // No token, a token nobody has, a forged gateway token: 401, saying what is accepted.
    let (status, body) = raw(home, "/agents/echo/", None, send("a-1", "x")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("no bearer token"), "{body}");
    assert_eq!(raw(home, "/agents/echo/", Some("nope"), send("a-2", "x")).await.0, 401);
    assert_eq!(raw(home, "/agents/echo/", Some("a2agw.ZGVmYXVsdC9lY2hvL3g.AAAA"), send("a-3", "x")).await.0, 401);
    // A view user reads but does not send; an edit user of another namespace does neither.
    let (status, body) = raw(home, "/agents/echo/", Some(&viewer), send("a-4", "x")).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("User \"viewer\" cannot SendMessage agent \"echo\" in namespace \"default\""), "{body}");
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}});
    assert_eq!(raw(home, "/agents/echo/", Some(&viewer), list.clone()).await.0, 200, "view may list");
    assert_eq!(raw(home, "/agents/echo/", Some(&other_ns), list).await.0, 403);
    let (status, body) = raw(home, "/agents/echo/", Some(&editor), send("a-5", "allowed")).await;
    assert_eq!((status, answer_text(&body).as_str()), (200, "echo: allowed"), "{body}");
    let audit = audit_lines(home);
    let seen =
        |user: &str, code: u64| audit.iter().any(|l| l["user"] == user && l["code"] == code && l["name"] == "echo");
    assert!(seen("system:anonymous", 401), "unauthenticated refusals are audited");
    assert!(seen("viewer", 403) && seen("elsewhere", 403), "refusals name the user");
    assert!(seen("editor", 200));

    // An agent calls another through A2A_GATEWAY_URL with its own gateway token.
    let (status, body) = raw(home, "/agents/caller/", Some(&editor), send("a-6", "echo via the gateway")).await;
    assert_eq!((status, answer_text(&body).as_str()), (200, "relayed: echo: via the gateway"), "{body}");
    let audit = audit_lines(home);
    assert!(
        audit.iter().any(|l| l["user"] == "system:agent:default:caller"
            && l["resource"] == "agents/SendMessage"
            && l["name"] == "echo"
            && l["code"] == 200),
        "the agent's call is audited with caller and target: {audit:#?}"
    );
    // Its token is for its own namespace only.
    let (_, body) =
        raw(home, "/agents/caller/", Some(&editor), send("a-7", "namespaces/team-b/agents/echo hello")).await;
    assert!(answer_text(&body).starts_with("refused: 403"), "{body}");

    // Admission: the demo agent takes one task at a time. Three calls from the caller at
    // once all go, one after the other; the demo agent never runs two at once.
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let home = home.to_path_buf();
            let editor = editor.clone();
            tokio::spawn(async move {
                raw(&home, "/agents/caller/", Some(&editor), send(&format!("b-{i}"), "demo sleep 300ms")).await
            })
        })
        .collect();
    for c in calls {
        let (status, body) = c.await.expect("join");
        assert_eq!(status, 200, "{body}");
        assert!(answer_text(&body).starts_with("relayed:"), "admitted in turn within the queue timeout: {body}");
    }
    let log = std::fs::read_to_string(home.join("logs/default/demo/0.log")).expect("demo log");
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("event=")))
        .filter(|e| *e == "event=start" || *e == "event=end")
        .collect();
    assert!(events.len() >= 6, "{log}");
    assert!(events.windows(2).all(|w| w[0] != w[1]), "never two tasks at once on a one-slot agent: {events:?}");
    // Of two calls at once for longer than the queue timeout (5s), one gets the slot and
    // the other is refused once its wait is over, saying why.
    let both: Vec<_> = (0..2)
        .map(|i| {
            let (home, editor) = (home.to_path_buf(), editor.clone());
            tokio::spawn(async move {
                raw(&home, "/agents/caller/", Some(&editor), send(&format!("c-{i}"), "demo sleep 12s")).await
            })
        })
        .collect();
    let mut texts = Vec::new();
    for c in both {
        texts.push(answer_text(&c.await.expect("join").1));
    }
    texts.sort();
    assert!(texts[0].starts_with("refused: 503 not admitted: no slot within 5s"), "{texts:?}");
    assert!(texts[0].contains("agent \"demo\" in namespace \"default\" has all 1 of its slots busy"), "{texts:?}");
    assert!(texts[1].starts_with("relayed:"), "{texts:?}");

    // The budgets' rate limits hold gateway calls as they hold workflow tasks: with the host
    // budget at one request per 10 minutes, a call soon waits out its allowance and is
    // refused, naming the budget.
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {name: host}\nspec:\n  rateLimit: {requests: 1, per: 10m}\n",
    );
    let mut refused = None;
    for i in 0..4 {
        let (status, body) = raw(home, "/agents/echo/", Some(&editor), send(&format!("d-{i}"), "held?")).await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let body = refused.expect("a call past the budget's rate limit is refused");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no slot within 5s") && message.contains("budget \"host\"") && message.contains("rateLimit"),
        "{body}"
    );
    tear_down(daemon).await;
}
