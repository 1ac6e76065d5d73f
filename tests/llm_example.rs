//! `examples/llm/`, end to end: the LLM-backed agent (official A2A Python SDK) run by
//! `a2a run` from the example's own manifest, against the example's fake OpenAI-compatible
//! server on a free port (nothing leaves the machine). The workflow research → draft → review
//! runs its first two tasks on the model's answers and stops with the review's question for a
//! human; the server saw the key as `Authorization: Bearer <key>` and the configured model.
//! The answer to that question, sent to the same A2A task, finishes the review with the model.
//! Applied to `a2a serve`, the question waits in the Workflow's status.
//!
//! Needs a Python with the SDK, as the other interop tests (`tests/support`).

mod common;
mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use a2a::a2a::{Message, SendMessageResponse, Task, TaskState};
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use common::node::{Daemon, Scratch, apply, get_wf, tear_down};
use serde_json::Value;
use support::AgentProcess;

/// The example's fake Chat Completions server, killed when dropped.
struct FakeModel {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT/v1`.
    url: String,
    /// Where it records each request, one JSON line each.
    record: PathBuf,
}

impl FakeModel {
    fn start(dir: &Path, key: &str) -> Self {
        let record = dir.join("requests.jsonl");
        let mut child = Command::new(support::python())
            .arg(support::root().join("examples/llm/fake_openai.py"))
            .args(["--port", "0", "--key", key, "--record"])
            .arg(&record)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fake model server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its first line");
        let url = line.trim().rsplit_once(' ').map(|(_, u)| u.to_owned()).unwrap_or_default();
        assert!(url.starts_with("http://127.0.0.1:"), "fake-openai said {line:?}");
        FakeModel { child, url, record }
    }

    /// The requests it received.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a recorded request"))
            .collect()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `examples/llm/agent.yaml` as committed, pointed at `model` and run by the test's Python;
/// the key stays where the example takes it from, the `llm-provider` Secret.
fn example_manifest(model: &FakeModel, model_name: &str) -> String {
    let text = std::fs::read_to_string(support::root().join("examples/llm/agent.yaml")).expect("the example");
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("YAML");
        if v["kind"] == "Agent" {
            let spec = &mut v["spec"];
            let env = spec["env"].as_sequence_mut().expect("the example's env");
            let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
            assert_eq!(names, ["OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_API_KEY"], "the example's settings");
            assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["name"], "llm-provider", "the key comes from a Secret");
            env[0]["value"] = model.url.clone().into();
            env[1]["value"] = model_name.into();
            assert_eq!(spec["command"][0], ".venv/bin/python", "the example runs the repository's venv");
            spec["command"][0] = support::python().display().to_string().into();
            // The test's Python may live where only root can read (a venv under /root).
            spec["user"] = "root".into();
            // The agent's /tmp is private: a checkout under /tmp is in its view as a path it
            // may write, like a test's scratch directory.
            spec["writablePaths"] = vec![serde_yaml_ng::Value::from(env!("CARGO_MANIFEST_DIR"))].into();
        }
        docs.push(serde_yaml_ng::to_string(&v).expect("YAML"));
    }
    docs.join("---\n")
}

/// The Secret the example's key comes from, as a manifest beside the example's.
fn provider_secret(key: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: llm-provider\nstringData:\n  api-key: {key}\n")
}

fn run(home: &Path, files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .arg("run")
        .args(files.iter().flat_map(|f| [std::ffi::OsStr::new("-f"), f.as_os_str()]))
        .args(["--output", "--cgroup-top", &format!("a2a-test-llm-run-{}", std::process::id())])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

#[test]
fn the_llm_example_researches_and_drafts_with_the_model_then_asks_a_human_to_decide() {
    let home = tempfile::tempdir().expect("tempdir");
    let key = format!("sk-test-{}-not-a-real-key", std::process::id());
    let model_name = format!("fake-model-{}", std::process::id());
    let model = FakeModel::start(home.path(), &key);
    let file = home.path().join("llm.yaml");
    std::fs::write(&file, example_manifest(&model, &model_name)).expect("write the manifest");
    let secret = home.path().join("provider-secret.yaml");
    std::fs::write(&secret, provider_secret(&key)).expect("write the Secret");

    let out = run(home.path(), &[&file, &secret]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let logs = std::fs::read_to_string(home.path().join("logs/default/llm-writer/0.log")).unwrap_or_default();
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nagent log:\n{logs}");
    // `a2a run` ends, exit 1, when the workflow can go no further without an answer.
    assert_eq!(out.status.code(), Some(1), "{context}");
    assert!(stdout.starts_with("workflow llm-article: Running (2/3), waiting for input"), "{context}");
    let question = "Should the article name the vendors it compares?";
    let review = stdout.lines().find(|l| l.starts_with("review")).unwrap_or_default();
    assert!(review.contains("InputRequired") && review.contains(&format!("asks: {question}")), "{context}");
    assert!(stderr.contains(&format!("llm-article/review: InputRequired on llm-writer: {question}")), "{context}");

    // The outputs are the model's answers, each built on the one before.
    let notes = format!("Research notes ({model_name}): three facts about local-first software.");
    assert!(stdout.contains(&format!("--- research\n{notes}\n")), "{context}");
    assert!(stdout.contains(&format!("--- draft\nDraft ({model_name}) built from: {notes}\n")), "{context}");

    // Three completions, each with the key as a bearer token and the configured model.
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for r in &requests {
        assert_eq!(r["path"], "/v1/chat/completions", "{r}");
        assert_eq!(r["authorization"], format!("Bearer {key}"), "{r}");
        assert_eq!(r["body"]["model"], model_name.as_str(), "{r}");
    }
    let user = |i: usize| requests[i]["body"]["messages"][1]["content"].as_str().unwrap_or_default().to_owned();
    assert_eq!(user(0), "local-first software", "the workflow's param reached the model");
    assert_eq!(user(1), notes, "the draft was asked for with the research output");
    assert!(user(2).starts_with(&format!("Draft ({model_name})")), "the review got the draft: {}", user(2));
    assert!(!stdout.contains(&key) && !stderr.contains(&key), "the key is never printed");
}

fn task(resp: SendMessageResponse) -> Task {
    match resp {
        SendMessageResponse::Task(t) => t,
        SendMessageResponse::Message(m) => panic!("expected a task, got the message {m:?}"),
    }
}

#[tokio::test]
async fn the_review_asks_its_question_and_the_answer_to_the_same_task_finishes_it_with_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "sk-test-review";
    let model = FakeModel::start(dir.path(), key);
    let env = [("OPENAI_BASE_URL", model.url.as_str()), ("OPENAI_MODEL", "fake-reviewer"), ("OPENAI_API_KEY", key)];
    let agent = AgentProcess::python("examples/llm/agent.py", &env).await;
    let client = agent.client();
    let card = client.agent_card().await.expect("card");
    let skills: Vec<&str> = card.skills.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(skills, ["research", "draft", "review"]);

    let asked =
        task(client.send_message(Message::user_text("r-1", "review: Local-first apps sync."), None).await.unwrap());
    assert_eq!(asked.status.state, TaskState::InputRequired, "{}", agent.log());
    let question = asked.status.message.as_ref().map(Message::text).unwrap_or_default();
    assert_eq!(question, "Should the article name the vendors it compares?");

    let mut answer = Message::user_text("r-2", "Yes, name them.");
    answer.task_id = Some(asked.id.clone());
    answer.context_id = Some(asked.context_id.clone());
    let done = task(client.send_message(answer, None).await.unwrap());
    assert_eq!(done.status.state, TaskState::Completed, "{}", agent.log());
    let output = done.artifacts.iter().flat_map(|a| a.parts.iter()).filter_map(|p| p.as_text()).collect::<String>();
    assert_eq!(output, "Final text (fake-reviewer), as decided: Yes, name them.");

    // The second completion had the draft, the question and the answer.
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let user = requests[1]["body"]["messages"][1]["content"].as_str().unwrap_or_default();
    assert!(
        user.contains("Local-first apps sync.") && user.contains(&question) && user.ends_with("Yes, name them."),
        "{user}"
    );
}

#[tokio::test]
async fn a_refused_key_fails_the_task_with_the_providers_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = FakeModel::start(dir.path(), "sk-right");
    let env = [("OPENAI_BASE_URL", model.url.as_str()), ("OPENAI_MODEL", "fake"), ("OPENAI_API_KEY", "sk-wrong")];
    let agent = AgentProcess::python("examples/llm/agent.py", &env).await;
    let failed = task(agent.client().send_message(Message::user_text("f-1", "research: x"), None).await.unwrap());
    assert_eq!(failed.status.state, TaskState::Failed, "{}", agent.log());
    let why = failed.status.message.as_ref().map(Message::text).unwrap_or_default();
    assert!(why.contains("HTTP 401") && why.contains("Incorrect API key"), "{why}");
    assert_eq!(model.requests()[0]["authorization"], "Bearer sk-wrong");
}

#[tokio::test]
async fn applied_to_a2a_serve_the_review_waits_with_its_question_until_a2a_reply_answers_it() {
    let scratch = Scratch::new("llm");
    let key = format!("sk-test-{}-serve", std::process::id());
    let model = FakeModel::start(scratch.home(), &key);
    let daemon = Daemon::start(scratch.home(), scratch.top(), &[]);
    let created = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["create", "secret", "generic", "llm-provider", "--from-literal", &format!("api-key={key}")])
        .env("A2A_HOME", scratch.home())
        .output()
        .expect("a2a create secret");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    apply(scratch.home(), &example_manifest(&model, "fake-served"));
    let client = daemon.client().await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(&client, "llm-article").await;
        let review = wf.status.as_ref().and_then(|s| s.tasks.iter().find(|t| t.name == "review")).cloned();
        if review.is_some_and(|t| t.phase == TaskPhase::InputRequired) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the review did not ask within 60s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = wf.status.expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Running), "a question is no failure");
    let review = status.tasks.iter().find(|t| t.name == "review").expect("review");
    assert_eq!(review.message.as_deref(), Some("Should the article name the vendors it compares?"));
    assert!(review.a2a_task_id.is_some(), "the A2A task that waits is kept, to be answered");
    let draft = status.tasks.iter().find(|t| t.name == "draft").expect("draft");
    assert_eq!(draft.phase, TaskPhase::Succeeded);
    assert!(draft.output.as_deref().unwrap_or_default().starts_with("Draft (fake-served) built from: Research notes"));
    assert!(model.requests().iter().all(|r| r["authorization"] == format!("Bearer {key}").as_str()));
    answer_the_review(scratch.home(), &client, &model, "fake-served").await;
    tear_down(daemon).await;
}

/// The human's side of the example: `a2a reply` answers the review's question, and the
/// workflow finishes with the model's final text, which follows the answer.
async fn answer_the_review(home: &Path, client: &kube::Client, model: &FakeModel, model_name: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["reply", "llm-article", "review", "-m", "Yes, name them."])
        .env("A2A_HOME", home)
        .output()
        .expect("a2a reply");
    assert!(out.status.success(), "a2a reply: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(client, "llm-article").await;
        if wf.status.as_ref().and_then(|s| s.phase) == Some(WorkflowPhase::Succeeded) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish within 60s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = wf.status.expect("status");
    let review = status.tasks.iter().find(|t| t.name == "review").expect("review");
    let expected = format!("Final text ({model_name}), as decided: Yes, name them.");
    assert_eq!(review.output.as_deref(), Some(expected.as_str()));
    let last = model.requests().pop().expect("the decision's completion");
    let user = last["body"]["messages"][1]["content"].as_str().unwrap_or_default().to_owned();
    assert!(user.contains("Should the article name the vendors it compares?") && user.ends_with("Yes, name them."));
}
