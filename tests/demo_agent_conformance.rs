//! `a2a demo-agent` on the points of A2A 1.0 the official TCK checks: multi-turn tasks (the
//! `ask` skill), SubscribeToTask on finished tasks, ErrorInfo in errors, ListTasks, the
//! card's caching headers and URL, and malformed requests. The official Python SDK's client
//! drives the multi-turn flow too.

mod support;

use std::time::Duration;

use a2a::a2a::{ErrorCode, Message, SendMessageResponse, StreamResponse, Task, TaskState};
use futures::StreamExt;
use serde_json::{Value, json};
use support::AgentProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw HTTP/1.1 exchange: the status line and headers, and the body.
struct Raw {
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}\n{}", self.head, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `method path` with exactly the given extra header lines (each ending in CRLF).
async fn raw(url: &str, method: &str, path: &str, headers: &str, body: &str) -> Raw {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp)).await.unwrap().unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    Raw { head: head.to_owned(), body: body.to_owned() }
}

/// A JSON-RPC call with the usual headers; the answer's `result` or `error` object.
async fn rpc(agent: &AgentProcess, method: &str, params: Value) -> Value {
    let addr = agent.url.trim_start_matches("http://");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let headers = format!("Host: {addr}\r\nContent-Type: application/json\r\nA2A-Version: 1.0\r\n");
    let r = raw(&agent.url, "POST", "/", &headers, &body).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
    r.json()
}

fn user(id: &str, text: &str) -> Value {
    json!({"role": "ROLE_USER", "messageId": id, "parts": [{"text": text}]})
}

fn error_info(error: &Value) -> &Value {
    let info = &error["data"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{error}");
    assert_eq!(info["domain"], "a2a-protocol.org", "{error}");
    info
}

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

#[tokio::test]
async fn the_ask_skill_waits_for_the_answer_that_the_same_task_id_brings() {
    let agent = AgentProcess::demo(&[]).await;
    let asked = rpc(&agent, "SendMessage", json!({"message": user("q1", "ask What is your name?")})).await;
    let t = &asked["result"]["task"];
    assert_eq!(t["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{asked}");
    assert_eq!(t["status"]["message"]["parts"][0]["text"], "What is your name?", "{asked}");
    let (id, context) = (t["id"].as_str().unwrap(), t["contextId"].as_str().unwrap());

    // Another context for the same task is refused, and changes nothing.
    let mut wrong = user("q2", "Ada");
    wrong["taskId"] = json!(id);
    wrong["contextId"] = json!("another-context");
    let refused = rpc(&agent, "SendMessage", json!({"message": wrong})).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let still = rpc(&agent, "GetTask", json!({"id": id})).await;
    assert_eq!(still["result"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{still}");

    // The answer continues the same task (contextId may be left out) and completes it.
    let mut answer = user("q3", "Ada");
    answer["taskId"] = json!(id);
    let done = rpc(&agent, "SendMessage", json!({"message": answer})).await;
    let t = &done["result"]["task"];
    assert_eq!((t["id"].as_str(), t["contextId"].as_str()), (Some(id), Some(context)), "{done}");
    assert_eq!(t["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(t["artifacts"][0]["parts"][0]["text"], "Ada", "{done}");
    let history: Vec<&str> =
        t["history"].as_array().unwrap().iter().map(|m| m["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(history, ["ask What is your name?", "What is your name?", "Ada"], "{done}");

    // A finished task takes no more messages.
    let mut late = user("q4", "again");
    late["taskId"] = json!(id);
    let late = rpc(&agent, "SendMessage", json!({"message": late})).await;
    assert_eq!(late["error"]["code"], -32004, "{late}");
    assert_eq!(error_info(&late["error"])["reason"], "UNSUPPORTED_OPERATION");
    assert_eq!(error_info(&late["error"])["metadata"]["taskId"], id);

    // A task id the agent never made is TaskNotFound.
    let mut unknown = user("q5", "hello");
    unknown["taskId"] = json!("no-such-task");
    let unknown = rpc(&agent, "SendMessage", json!({"message": unknown})).await;
    assert_eq!(unknown["error"]["code"], -32001, "{unknown}");
    assert_eq!(error_info(&unknown["error"])["reason"], "TASK_NOT_FOUND");
    assert_eq!(error_info(&unknown["error"])["metadata"]["taskId"], "no-such-task");

    // A working task that asked nothing is not interrupted by a message.
    let sleeping = rpc(
        &agent,
        "SendMessage",
        json!({"message": user("s1", "sleep 30s"), "configuration": {"returnImmediately": true}}),
    )
    .await;
    let mut poke = user("s2", "hurry");
    poke["taskId"] = sleeping["result"]["task"]["id"].clone();
    let poke = rpc(&agent, "SendMessage", json!({"message": poke})).await;
    assert_eq!(poke["error"]["code"], -32004, "{poke}");
    assert!(poke["error"]["message"].as_str().unwrap().contains("input-required"), "{poke}");
}

#[tokio::test]
async fn subscribing_follows_an_asking_task_to_its_end_and_refuses_a_finished_one() {
    let agent = AgentProcess::demo(&[]).await;
    let client = agent.client();
    let asked = task(client.send_message(Message::user_text("a1", "ask Sure?"), None).await.unwrap());
    assert_eq!(asked.status.state, TaskState::InputRequired);
    let mut events = client.subscribe_to_task(&asked.id).await.unwrap();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(&first, StreamResponse::Task(t) if t.status.state == TaskState::InputRequired), "{first:?}");

    let mut answer = Message::user_text("a2", "yes");
    answer.task_id = Some(asked.id.clone());
    let done = task(client.send_message(answer, None).await.unwrap());
    assert_eq!(done.status.state, TaskState::Completed);
    // The subscriber stayed through input-required and sees the task end.
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(20), events.collect::<Vec<_>>()).await.unwrap();
    let last = rest.last().expect("events after the answer").as_ref().unwrap();
    assert!(matches!(last, StreamResponse::StatusUpdate(u) if u.status.state == TaskState::Completed), "{rest:?}");

    let again = rpc(&agent, "SubscribeToTask", json!({"id": asked.id})).await;
    assert_eq!(again["error"]["code"], -32004, "{again}");
    assert_eq!(error_info(&again["error"])["reason"], "UNSUPPORTED_OPERATION");
    let err = client.subscribe_to_task("no-such-task").await.err().expect("an unknown task is an error");
    assert_eq!(err.rpc_code(), Some(ErrorCode::TaskNotFound), "{err}");
}

#[tokio::test]
async fn list_tasks_filters_by_context_and_state_pages_newest_first_and_omits_artifacts() {
    let agent = AgentProcess::demo(&[]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut m = user(&format!("l{i}"), &format!("echo {i}"));
        m["contextId"] = json!("ctx-list");
        let r = rpc(&agent, "SendMessage", json!({"message": m})).await;
        ids.push(r["result"]["task"]["id"].as_str().unwrap().to_owned());
        // Distinct status times, so the order is by update.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut asking = user("l3", "ask Which?");
    asking["contextId"] = json!("ctx-list");
    rpc(&agent, "SendMessage", json!({"message": asking})).await;
    rpc(&agent, "SendMessage", json!({"message": user("other", "echo elsewhere")})).await;

    let page = |params: Value| {
        let agent = &agent;
        async move { rpc(agent, "ListTasks", params).await["result"].clone() }
    };
    let first = page(json!({"contextId": "ctx-list", "status": "TASK_STATE_COMPLETED", "pageSize": 2})).await;
    let listed = |p: &Value| {
        p["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(listed(&first), [ids[2].clone(), ids[1].clone()], "{first}");
    assert_eq!(first["totalSize"], 3);
    assert!(first["tasks"][0].get("artifacts").is_none(), "artifacts are left out by default: {first}");
    let token = first["nextPageToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let second =
        page(json!({"contextId": "ctx-list", "status": "TASK_STATE_COMPLETED", "pageSize": 2, "pageToken": token}))
            .await;
    assert_eq!(listed(&second), [ids[0].clone()], "{second}");
    assert_eq!(second["nextPageToken"], "", "the last page says so with an empty token");

    let with = page(json!({"contextId": "ctx-list", "includeArtifacts": true, "historyLength": 0})).await;
    assert_eq!(with["tasks"].as_array().unwrap().len(), 4, "{with}");
    assert_eq!(with["tasks"][0]["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "newest first: {with}");
    assert_eq!(with["tasks"][1]["artifacts"][0]["parts"][0]["text"], "2", "{with}");
    assert!(with["tasks"][1].get("history").is_none_or(|h| h == &json!([])), "{with}");
    // The proto field names are read too, as ProtoJSON allows.
    let snake = page(json!({"context_id": "ctx-list", "page_size": 1})).await;
    assert_eq!(snake["tasks"].as_array().unwrap().len(), 1, "{snake}");
    assert_eq!(snake["totalSize"], 4, "{snake}");

    let bad = rpc(&agent, "ListTasks", json!({"pageSize": 1000})).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("pageSize"), "{bad}");
}

#[tokio::test]
async fn malformed_requests_get_the_json_rpc_and_a2a_codes() {
    let agent = AgentProcess::demo(&[]).await;
    let addr = agent.url.trim_start_matches("http://").to_owned();
    let post = |content_type: &str, body: Value| {
        let headers = format!("Host: {addr}\r\nContent-Type: {content_type}\r\nA2A-Version: 1.0\r\n");
        let agent = &agent;
        async move { raw(&agent.url, "POST", "/", &headers, &body.to_string()).await.json() }
    };
    let get = json!({"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "x"}});

    let text = post("text/plain", get.clone()).await;
    assert_eq!(text["error"]["code"], -32005, "{text}");
    assert_eq!(error_info(&text["error"])["reason"], "CONTENT_TYPE_NOT_SUPPORTED");

    let mut object_id = get.clone();
    object_id["id"] = json!({"a": 1});
    let r = post("application/json", object_id).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert_eq!(r["id"], Value::Null, "{r}");

    let no_role = json!({"jsonrpc": "2.0", "id": 4, "method": "SendMessage",
        "params": {"message": {"messageId": "m", "parts": [{"text": "hi"}]}}});
    let r = post("application/json", no_role).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("role"), "{r}");

    let negative = json!({"jsonrpc": "2.0", "id": 5, "method": "GetTask", "params": {"id": "x", "historyLength": -1}});
    let r = post("application/json", negative).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let negative = json!({"jsonrpc": "2.0", "id": 6, "method": "SendMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": "n", "parts": [{"text": "hi"}]},
                   "configuration": {"historyLength": -3}}});
    let r = post("application/json", negative).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(!agent.log().contains("messageId=n "), "a refused message starts no task:\n{}", agent.log());

    // Every A2A error carries its ErrorInfo.
    let missing = post("application/json", get).await;
    assert_eq!(missing["error"]["code"], -32001, "{missing}");
    assert_eq!(error_info(&missing["error"])["metadata"]["taskId"], "x");
    let push = post("application/json", json!({"jsonrpc": "2.0", "id": 7, "method": "GetTaskPushNotificationConfig", "params": {"taskId": "x", "id": "y"}})).await;
    assert_eq!(error_info(&push["error"])["reason"], "PUSH_NOTIFICATION_NOT_SUPPORTED", "{push}");
}

#[tokio::test]
async fn the_card_names_the_url_it_was_reached_by_and_can_be_revalidated() {
    let agent = AgentProcess::demo(&["--host", "0.0.0.0"]).await;
    let card = raw(&agent.url, "GET", "/.well-known/agent-card.json", "Host: agent.example:8443\r\n", "").await;
    assert!(card.head.starts_with("HTTP/1.1 200"), "{}", card.head);
    assert_eq!(card.json()["supportedInterfaces"][0]["url"], "http://agent.example:8443/", "{}", card.body);
    assert_eq!(card.header("cache-control"), Some("public, max-age=300"), "{}", card.head);
    let modified = card.header("last-modified").expect("a Last-Modified");
    assert!(modified.ends_with(" GMT") && modified.len() == 29, "an HTTP date: {modified}");
    let etag = card.header("etag").expect("an ETag").to_owned();
    let revalidate = format!("Host: agent.example:8443\r\nIf-None-Match: {etag}\r\n");
    let again = raw(&agent.url, "GET", "/.well-known/agent-card.json", &revalidate, "").await;
    assert!(again.head.starts_with("HTTP/1.1 304"), "{}", again.head);
    assert!(again.body.is_empty());
    // Another Host is another card, with another ETag.
    let other = raw(&agent.url, "GET", "/.well-known/agent-card.json", "Host: 10.0.0.7:80\r\n", "").await;
    assert_eq!(other.json()["supportedInterfaces"][0]["url"], "http://10.0.0.7:80/");
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    let hostile = raw(&agent.url, "GET", "/.well-known/agent-card.json", "Host: a/b?c\r\n", "").await;
    assert!(hostile.head.starts_with("HTTP/1.1 400"), "{}", hostile.head);

    // An advertised URL (from the environment, as a Deployment sets it) wins over the Host.
    // Our client would follow that URL, so the card is read raw until the agent is up.
    let port = support::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["demo-agent", "--port", &port.to_string()])
        .env("A2A_ADVERTISE_URL", "https://agents.example/demo/")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let advertised = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let card = loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break raw(&advertised, "GET", "/.well-known/agent-card.json", "Host: 127.0.0.1\r\n", "").await;
        }
        assert!(std::time::Instant::now() < deadline, "the agent did not listen within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(card.json()["supportedInterfaces"][0]["url"], "https://agents.example/demo/");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["demo-agent", "--advertise-url", "ftp://x/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"ftp://x/\" is not an absolute http"), "{out:?}");
}

#[tokio::test]
async fn unanswered_questions_fill_the_task_table_only_up_to_max_tasks() {
    let agent = AgentProcess::demo(&["--max-tasks", "2"]).await;
    let first = rpc(&agent, "SendMessage", json!({"message": user("m1", "ask One?")})).await;
    rpc(&agent, "SendMessage", json!({"message": user("m2", "ask Two?")})).await;
    let full = rpc(&agent, "SendMessage", json!({"message": user("m3", "echo three")})).await;
    assert_eq!(full["error"]["code"], -32603, "{full}");
    assert!(full["error"]["message"].as_str().unwrap().contains("--max-tasks"), "{full}");
    assert!(!agent.log().contains("messageId=m3"), "a refused message starts no task:\n{}", agent.log());

    // An answered question is a finished task, which makes room.
    let mut answer = user("m4", "yes");
    answer["taskId"] = first["result"]["task"]["id"].clone();
    let done = rpc(&agent, "SendMessage", json!({"message": answer})).await;
    assert_eq!(done["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    let room = rpc(&agent, "SendMessage", json!({"message": user("m5", "echo five")})).await;
    assert_eq!(room["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{room}");
}

#[tokio::test]
async fn in_tck_mode_the_tck_input_required_prefix_asks_and_ids_repeat() {
    let agent = AgentProcess::demo(&["--tck-scenarios"]).await;
    let first =
        rpc(&agent, "SendMessage", json!({"message": user("tck-input-required-1a2b", "TCK prerequisite")})).await;
    assert_eq!(first["result"]["task"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{first}");
    let second =
        rpc(&agent, "SendMessage", json!({"message": user("tck-input-required-1a2b", "TCK prerequisite")})).await;
    assert_ne!(first["result"]["task"]["id"], second["result"]["task"]["id"], "the TCK reuses ids for new tasks");
    // A follow-up with the input-required id is recorded and asked again; another completes.
    let id = second["result"]["task"]["id"].clone();
    let mut again = user("tck-input-required-1a2b", "first answer");
    again["taskId"] = id.clone();
    let again = rpc(&agent, "SendMessage", json!({"message": again})).await;
    assert_eq!(again["result"]["task"]["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{again}");
    let mut last = user("tck-complete-task-1a2b", "last answer");
    last["taskId"] = id;
    let last = rpc(&agent, "SendMessage", json!({"message": last})).await;
    let t = &last["result"]["task"];
    assert_eq!(t["status"]["state"], "TASK_STATE_COMPLETED", "{last}");
    let said: Vec<&str> =
        t["history"].as_array().unwrap().iter().map(|m| m["parts"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(
        said,
        ["TCK prerequisite", "What is your answer?", "first answer", "What is your answer?", "last answer"]
    );

    let other = rpc(&agent, "SendMessage", json!({"message": user("tck-complete-task-1a2b", "hello")})).await;
    assert_eq!(other["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{other}");
    assert_eq!(other["result"]["task"]["artifacts"][0]["parts"][0]["text"], "hello", "{other}");
}

#[test]
fn the_python_sdk_client_answers_the_ask_skill_in_a_second_turn() {
    let python = support::python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(AgentProcess::demo(&[]));
    let out = std::process::Command::new(python)
        .arg(support::root().join("tests/python/sdk_ask.py"))
        .arg(&agent.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["asked"], json!({"state": "TASK_STATE_INPUT_REQUIRED", "question": "What is your name?"}));
    assert_eq!(seen["answered"]["same_task"], true, "{seen}");
    assert_eq!(seen["answered"]["state"], "TASK_STATE_COMPLETED", "{seen}");
    assert_eq!(seen["answered"]["answer"], "Ada", "{seen}");
    assert_eq!(seen["answered"]["history"], json!(["ask What is your name?", "What is your name?", "Ada"]));
    assert_eq!(seen["late"], "UnsupportedOperationError", "{seen}");
}

/// One HTTP+JSON request with the usual headers (and `extra` ones); a body makes it JSON.
async fn rest(agent: &AgentProcess, method: &str, path: &str, body: Option<Value>) -> Raw {
    rest_with(agent, method, path, "Content-Type: application/json\r\nA2A-Version: 1.0\r\n", body).await
}

async fn rest_with(agent: &AgentProcess, method: &str, path: &str, headers: &str, body: Option<Value>) -> Raw {
    let addr = agent.url.trim_start_matches("http://");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw(&agent.url, method, path, &format!("Host: {addr}\r\n{headers}"), &body).await
}

/// The `google.rpc.Status` of an HTTP+JSON error, checked to be AIP-193 shaped with the
/// HTTP status in `code`; its `ErrorInfo` reason, when it has one.
fn rest_error(r: &Raw, status: u16, name: &str) -> Option<String> {
    assert!(r.head.starts_with(&format!("HTTP/1.1 {status} ")), "{}\n{}", r.head, r.body);
    let e = r.json();
    assert_eq!(e["error"]["code"], status, "{e}");
    assert_eq!(e["error"]["status"], name, "{e}");
    assert!(!e["error"]["message"].as_str().unwrap_or_default().is_empty(), "{e}");
    let info = e["error"]["details"].as_array().and_then(|d| d.first()).cloned()?;
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{e}");
    assert_eq!(info["domain"], "a2a-protocol.org", "{e}");
    Some(info["reason"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_card_lists_both_bindings_at_one_url_json_rpc_first() {
    let agent = AgentProcess::demo(&["--advertise-url", "http://agent.team.svc:8080/"]).await;
    let card = rest(&agent, "GET", "/.well-known/agent-card.json", None).await.json();
    let interfaces: Vec<(&str, &str)> = card["supportedInterfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["protocolBinding"].as_str().unwrap(), i["url"].as_str().unwrap()))
        .collect();
    assert_eq!(interfaces, [("JSONRPC", "http://agent.team.svc:8080/"), ("HTTP+JSON", "http://agent.team.svc:8080/")]);

    let only_rest = AgentProcess::demo(&["--binding", "http-json"]).await;
    let card = rest(&only_rest, "GET", "/.well-known/agent-card.json", None).await.json();
    assert_eq!(card["supportedInterfaces"].as_array().map(Vec::len), Some(1), "{card}");
    assert_eq!(card["supportedInterfaces"][0]["protocolBinding"], "HTTP+JSON");
    // JSON-RPC is not served when not listed.
    let r = rest(&only_rest, "POST", "/", Some(json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask"}))).await;
    assert!(r.head.starts_with("HTTP/1.1 404"), "{}", r.head);
}

#[tokio::test]
async fn over_http_json_a_task_asks_is_answered_and_is_read_back_by_path_and_query() {
    let agent = AgentProcess::demo(&[]).await;
    let r = rest(&agent, "POST", "/message:send", Some(json!({"message": user("r1", "ask Which colour?")}))).await;
    assert!(r.head.starts_with("HTTP/1.1 200"), "{}\n{}", r.head, r.body);
    let asked = r.json()["task"].clone();
    assert_eq!(asked["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{asked}");
    assert_eq!(asked["status"]["message"]["parts"][0]["text"], "Which colour?");
    let (id, context) = (asked["id"].as_str().unwrap().to_owned(), asked["contextId"].as_str().unwrap().to_owned());

    let mut answer = user("r2", "blue");
    answer["taskId"] = json!(id);
    answer["contextId"] = json!("another-context");
    let r = rest(&agent, "POST", "/message:send", Some(json!({"message": answer.clone()}))).await;
    assert_eq!(rest_error(&r, 400, "INVALID_ARGUMENT"), None, "a wrong context is InvalidParams");
    answer["contextId"] = json!(context);
    let done = rest(&agent, "POST", "/message:send", Some(json!({"message": answer}))).await.json()["task"].clone();
    assert_eq!(done["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(done["artifacts"][0]["parts"][0]["text"], "blue");

    let got = rest(&agent, "GET", &format!("/tasks/{id}?historyLength=1"), None).await.json();
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["history"].as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got["history"][0]["parts"][0]["text"], "blue", "the newest turn is kept");

    let page = rest(&agent, "GET", &format!("/tasks?contextId={context}&status=TASK_STATE_COMPLETED&pageSize=5"), None)
        .await
        .json();
    assert_eq!(page["tasks"][0]["id"], json!(id), "{page}");
    assert_eq!(page["nextPageToken"], "", "{page}");
    assert!(page["tasks"][0].get("artifacts").is_none(), "artifacts only when asked: {page}");
    let page = rest(&agent, "GET", &format!("/tasks?contextId={context}&includeArtifacts=true"), None).await.json();
    assert_eq!(page["tasks"][0]["artifacts"][0]["parts"][0]["text"], "blue", "{page}");
}

#[tokio::test]
async fn over_http_json_errors_are_aip_193_bodies_with_the_statuses_a2a_maps_them_to() {
    let agent = AgentProcess::demo(&[]).await;
    let r = rest(&agent, "GET", "/tasks/no-such-task", None).await;
    assert_eq!(rest_error(&r, 404, "NOT_FOUND").as_deref(), Some("TASK_NOT_FOUND"));
    assert_eq!(r.json()["error"]["details"][0]["metadata"]["taskId"], "no-such-task");

    let done = rest(&agent, "POST", "/message:send", Some(json!({"message": user("e1", "echo hi")}))).await.json();
    let id = done["task"]["id"].as_str().unwrap().to_owned();
    let r = rest(&agent, "POST", &format!("/tasks/{id}:cancel"), None).await;
    assert_eq!(rest_error(&r, 409, "FAILED_PRECONDITION").as_deref(), Some("TASK_NOT_CANCELABLE"));
    let r = rest(&agent, "POST", &format!("/tasks/{id}:subscribe"), None).await;
    assert_eq!(rest_error(&r, 400, "UNIMPLEMENTED").as_deref(), Some("UNSUPPORTED_OPERATION"));
    let r = rest(&agent, "POST", &format!("/tasks/{id}/pushNotificationConfigs"), Some(json!({}))).await;
    assert_eq!(rest_error(&r, 400, "UNIMPLEMENTED").as_deref(), Some("PUSH_NOTIFICATION_NOT_SUPPORTED"));

    let r = rest(&agent, "GET", "/tasks?pageSize=many", None).await;
    assert_eq!(rest_error(&r, 400, "INVALID_ARGUMENT"), None);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("pageSize"), "{}", r.body);
    let r = rest(&agent, "GET", "/tasks?historyLength=-1", None).await;
    assert_eq!(rest_error(&r, 400, "INVALID_ARGUMENT"), None);

    let text = "Content-Type: text/plain\r\nA2A-Version: 1.0\r\n";
    let r = rest_with(&agent, "POST", "/message:send", text, Some(json!({"message": user("e2", "hi")}))).await;
    assert_eq!(rest_error(&r, 415, "INVALID_ARGUMENT").as_deref(), Some("CONTENT_TYPE_NOT_SUPPORTED"));
    let old = "Content-Type: application/json\r\n";
    let r = rest_with(&agent, "POST", "/message:send", old, Some(json!({"message": user("e3", "hi")}))).await;
    assert_eq!(rest_error(&r, 400, "UNIMPLEMENTED").as_deref(), Some("VERSION_NOT_SUPPORTED"));
    let r = rest(&agent, "POST", "/message:send", Some(json!({"message": {"messageId": "e4", "parts": []}}))).await;
    assert_eq!(rest_error(&r, 400, "INVALID_ARGUMENT"), None);

    let r = rest(&agent, "GET", "/message:send", None).await;
    assert_eq!(rest_error(&r, 405, "UNIMPLEMENTED"), None);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = rest(&agent, "POST", "/tasks/x:archive", None).await;
    assert_eq!(rest_error(&r, 404, "NOT_FOUND"), None);
}

#[tokio::test]
async fn over_http_json_streams_carry_bare_events_and_cancel_reaches_a_running_task() {
    let agent = AgentProcess::demo(&[]).await;
    let r = rest(&agent, "POST", "/message:stream", Some(json!({"message": user("s1", "sleep 50ms")}))).await;
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{}", r.head);
    let events: Vec<Value> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    assert!(events[0].get("task").is_some(), "the task first, without a JSON-RPC envelope: {events:?}");
    assert!(events.iter().all(|e| e.get("jsonrpc").is_none()), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED", "{events:?}");
    assert!(events.iter().any(|e| e["artifactUpdate"]["artifact"]["parts"][0]["text"] == "slept 50ms"), "{events:?}");

    let config = json!({"returnImmediately": true});
    let r = rest(
        &agent,
        "POST",
        "/message:send",
        Some(json!({"message": user("s2", "sleep 30s"), "configuration": config})),
    )
    .await
    .json();
    let id = r["task"]["id"].as_str().unwrap().to_owned();
    let cancelled = rest(&agent, "POST", &format!("/tasks/{id}:cancel"), Some(json!({}))).await.json();
    assert_eq!(cancelled["status"]["state"], "TASK_STATE_CANCELED", "{cancelled}");
    agent.wait_log(&format!("event=canceled task={id}")).await;
}
