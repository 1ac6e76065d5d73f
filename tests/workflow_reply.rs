//! Answering an agent's question mid-workflow: `a2a reply` appends to `spec.replies`, the
//! engine sends the answer on the same A2A task (its taskId and contextId), once, also across
//! engine restarts, and the workflow goes on with the answer in downstream templates. A reply
//! that cannot be taken is refused and changes nothing. `inputTimeout` fails a task whose
//! question is not answered, while its `timeout` does not run during the wait. `a2a run` on a
//! terminal asks inline. Against the official Python SDK agent and the demo agent, through the
//! real local API server, the engine and the CLI.

mod common;
mod support;

use common::engine::{create_workflow, ready_agent, start_engine};

use std::path::Path;
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, TaskStatus, WorkflowPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::AgentProcess;

const PY_AGENT: &str = "tests/python/streaming_agent.py";

fn task<'a>(wf: &'a Workflow, name: &str) -> &'a TaskStatus {
    wf.status.as_ref().and_then(|s| s.tasks.iter().find(|t| t.name == name)).expect("task status")
}

async fn get(client: &kube::Client, name: &str) -> Workflow {
    Api::<Workflow>::namespaced(client.clone(), "default").get(name).await.expect("get workflow")
}

async fn wait_for(client: &kube::Client, name: &str, what: &str, done: impl Fn(&Workflow) -> bool) -> Workflow {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = get(client, name).await;
        if done(&wf) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name}: {what} did not happen in 30s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(wf: &Workflow) -> bool {
    wf.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal)
}

/// `a2a ARGS --kubeconfig K`: exit success, stdout, stderr.
async fn a2a(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--kubeconfig".to_owned(), kubeconfig.display().to_string()]);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        common::run_a2a(&refs)
    })
    .await
    .expect("a2a")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_continues_the_same_a2a_task_once_across_restarts_and_the_next_task_sees_the_answer() {
    let server = common::start().await;
    let kubeconfig = server.server.kubeconfig().to_path_buf();
    let agent = AgentProcess::python(PY_AGENT, &[]).await;
    ready_agent(&server.client, "asker", &agent.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: trip }\nspec:\n  tasks:\n\
         \x20   - { name: where, agent: asker, message: \"ask which city?\" }\n\
         \x20   - { name: plan, agent: asker, dependsOn: [where], message: \"plan {{ tasks.where.output }}\" }\n",
    )
    .await;
    let wf = wait_for(&server.client, "trip", "the question", |wf| {
        wf.status.as_ref().is_some_and(|s| s.tasks.iter().any(|t| t.name == "where" && t.phase.is_waiting()))
    })
    .await;
    let a2a_id = task(&wf, "where").a2a_task_id.clone().expect("the waiting A2A task");
    assert!(task(&wf, "where").waiting_since.is_some(), "since when it waits is recorded");

    // Replies that cannot be taken are refused, name what is wrong, and change nothing.
    let refusals: [(&[&str], &str); 6] = [
        (&["reply", "nowhere", "where", "-m", "x"], "Workflow \"nowhere\" not found in namespace \"default\""),
        (&["reply", "trip", "when", "-m", "x"], "workflow \"trip\" has no task \"when\" (it has: where, plan)"),
        (&["reply", "trip", "plan", "-m", "x"], "task \"plan\" is not waiting for input (it is Pending)"),
        (&["reply", "trip", "where", "-m", "  "], "the reply is empty"),
        (&["reply", "trip", "where", "--data", "{city: 1}"], "--data: not JSON: key must be a string"),
        (&["reply", "trip", "where", "--data", "[1]"], "the reply data must be a JSON object"),
    ];
    for (args, expected) in refusals {
        let (ok, stdout, stderr) = a2a(&kubeconfig, args).await;
        assert!(!ok && stderr.contains(expected), "{args:?}: stdout {stdout:?}, stderr {stderr:?}");
    }
    let (ok, _, stderr) = a2a(&kubeconfig, &["reply", "trip", "where"]).await;
    assert!(!ok && stderr.contains("--message") && stderr.contains("--data"), "no answer at all: {stderr}");
    let unchanged = get(&server.client, "trip").await;
    assert!(unchanged.spec.replies.is_empty(), "{:?}", unchanged.spec.replies);
    assert_eq!(unchanged.metadata.generation, wf.metadata.generation);

    // The engine is down when the reply is written: the engine that comes up delivers it.
    stop.send(()).expect("stop the engine");
    let (ok, stdout, stderr) = a2a(&kubeconfig, &["reply", "trip", "where", "-m", "Paris"]).await;
    assert!(ok, "stdout {stdout}, stderr {stderr}");
    assert!(stdout.contains("workflow/trip: reply 1 to task \"where\" recorded"), "{stdout}");
    let (ok, _, stderr) = a2a(&kubeconfig, &["reply", "trip", "where", "-m", "Rome"]).await;
    assert!(!ok && stderr.contains("task \"where\" already has a reply on its way (id 1)"), "{stderr}");
    // A written reply never changes nor goes: the API server refuses the update.
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let erase = serde_json::json!({"spec": {"replies": null}});
    let e = api.patch("trip", &PatchParams::default(), &Patch::Merge(&erase)).await.expect_err("append-only");
    assert!(e.to_string().contains("replies are append-only: 1 written replies would be removed"), "{e}");
    let stop = start_engine(&server.client);
    let wf = wait_for(&server.client, "trip", "the end", finished).await;
    let status = wf.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "{status:#?}");
    let answered = task(&wf, "where");
    assert_eq!(answered.output.as_deref(), Some("answered: Paris"));
    assert_eq!(answered.a2a_task_id.as_deref(), Some(a2a_id.as_str()), "the same A2A task went on");
    assert_eq!((answered.last_reply.as_deref(), answered.attempts), (Some("1"), 1));
    assert_eq!(task(&wf, "plan").output.as_deref(), Some("PLAN\nANSWERED:\nPARIS"), "the answer flowed down");
    let log = agent.wait_log(&format!("answer task={a2a_id}")).await;
    assert!(log.contains(&format!("messageId={}-where-reply-1", wf.metadata.uid.as_deref().unwrap_or_default())));

    // Restarted again, the engine does not deliver the consumed reply a second time.
    stop.send(()).expect("stop the engine");
    let _stop = start_engine(&server.client);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(agent.log().matches("answer task=").count(), 1, "{}", agent.log());
    let (ok, _, stderr) = a2a(&kubeconfig, &["reply", "trip", "where", "-m", "Rome"]).await;
    assert!(!ok && stderr.contains("task \"where\" is not waiting for input (it is Succeeded)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_reply_reaches_the_demo_agents_ask_skill_on_the_same_task() {
    let server = common::start().await;
    let kubeconfig = server.server.kubeconfig().to_path_buf();
    let agent = AgentProcess::demo(&[]).await;
    ready_agent(&server.client, "demo", &agent.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: greet }\nspec:\n  tasks:\n\
         \x20   - { name: name, agent: demo, message: \"ask What is your name?\" }\n\
         \x20   - { name: hello, agent: demo, dependsOn: [name], message: \"echo hello {{ tasks.name.output }}\" }\n",
    )
    .await;
    let wf = wait_for(&server.client, "greet", "the question", |wf| {
        wf.status.as_ref().is_some_and(|s| s.tasks.iter().any(|t| t.name == "name" && t.phase.is_waiting()))
    })
    .await;
    assert_eq!(task(&wf, "name").message.as_deref(), Some("What is your name?"));
    let a2a_id = task(&wf, "name").a2a_task_id.clone().expect("A2A task");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("answer.json");
    std::fs::write(&file, r#"{"first": "Ada", "last": "Lovelace"}"#).expect("write");
    let data = format!("@{}", file.display());
    let (ok, stdout, stderr) = a2a(&kubeconfig, &["reply", "greet", "name", "-m", "Ada", "--data", &data]).await;
    assert!(ok, "stdout {stdout}, stderr {stderr}");
    let wf = wait_for(&server.client, "greet", "the end", finished).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    assert_eq!(wf.spec.replies[0].data, Some(serde_json::json!({"first": "Ada", "last": "Lovelace"})));
    assert_eq!(task(&wf, "name").output.as_deref(), Some("Ada"));
    assert_eq!(task(&wf, "hello").output.as_deref(), Some("hello Ada"));
    agent.wait_log(&format!("event=end task={a2a_id}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_question_fails_its_task_after_input_timeout_and_timeout_does_not_run_meanwhile() {
    let server = common::start().await;
    let agent = AgentProcess::python(PY_AGENT, &[]).await;
    ready_agent(&server.client, "asker", &agent.url, serde_json::json!({"maxConcurrentTasks": 4})).await;
    let _stop = start_engine(&server.client);
    // `timeout` (300ms) is far shorter than the wait: it must not be what ends the task.
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: late }\nspec:\n  tasks:\n\
         \x20   - { name: where, agent: asker, message: \"ask which city?\", timeout: 300ms, inputTimeout: 2s }\n\
         \x20   - { name: plan, agent: asker, dependsOn: [where], message: plan }\n",
    )
    .await;
    let asked = wait_for(&server.client, "late", "the question", |wf| {
        wf.status.as_ref().is_some_and(|s| s.tasks.iter().any(|t| t.name == "where" && t.phase.is_waiting()))
    })
    .await;
    let a2a_id = task(&asked, "where").a2a_task_id.clone().expect("A2A task");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let still = get(&server.client, "late").await;
    assert_eq!(task(&still, "where").phase, TaskPhase::InputRequired, "past its timeout, still waiting");
    let wf = wait_for(&server.client, "late", "the end", finished).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Failed));
    let t = task(&wf, "where");
    assert_eq!((t.phase, t.reason.as_deref()), (TaskPhase::Failed, Some("InputTimeout")));
    let error = t.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("no answer within inputTimeout 2s: waited 2.") && error.contains("\"which city?\""),
        "{error}"
    );
    assert_eq!(task(&wf, "plan").phase, TaskPhase::Skipped);
    agent.wait_log(&format!("cancel task={a2a_id}")).await;
}

/// Runs `a2a run -f` on the trip workflow (asking which city) in a pseudo-terminal (stdin,
/// stdout and stderr), typing `keys` at the first prompt; returns what the terminal showed
/// and the exit code line (`EXIT n`).
async fn run_in_pty(agent: &AgentProcess, keys: &'static [u8], extra: &'static [&'static str]) -> String {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: asker }}\nspec: {{ url: \"{}/\" }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: trip }}\nspec:\n  tasks:\n\
             \x20   - {{ name: where, agent: asker, message: \"ask which city?\" }}\n\
             \x20   - {{ name: plan, agent: asker, dependsOn: [where], message: \"plan {{{{ tasks.where.output }}}}\" }}\n",
            agent.url
        ),
    )
    .expect("write the workflow");
    // pty.fork makes the child a session leader with the pty as its controlling terminal, so
    // ^C typed there is a SIGINT to it, as in a shell's foreground.
    let driver = r#"
import os, pty, sys, time, select
keys = bytes.fromhex(os.environ["KEYS"])
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
typed = False
deadline = time.time() + 90
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not typed and b"answer (Ctrl-D to stop answering)> " in out:
        time.sleep(0.2)
        os.write(fd, keys)
        typed = True
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.stdout.write("\nEXIT %d\n" % os.waitstatus_to_exitcode(status))
"#;
    let a2a_bin = env!("CARGO_BIN_EXE_a2a").to_owned();
    let top = format!("a2a-test-reply-{}", std::process::id());
    let home_dir = home.path().to_path_buf();
    let file_arg = file.display().to_string();
    let hex: String = keys.iter().map(|b| format!("{b:02x}")).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", driver, &a2a_bin, "run", "-f", &file_arg, "--output", "--cgroup-top", &top])
            .args(extra)
            .env("A2A_HOME", &home_dir)
            .env("KEYS", hex)
            .env_remove("A2A_KUBECONFIG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("python3 with pty")
    })
    .await
    .expect("driver");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `a2a run` on a terminal: it asks the agent's question, the answer typed goes to the agent,
/// and the run ends with the workflow done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2a_run_on_a_terminal_asks_the_question_inline_and_goes_on() {
    let agent = AgentProcess::python(PY_AGENT, &[]).await;
    let text = run_in_pty(&agent, b"Paris\n", &[]).await;
    assert!(text.contains("trip/where asks: which city?"), "{text}");
    assert!(text.contains("trip/where: reply 1 sent"), "{text}");
    assert!(text.contains("workflow trip: Succeeded (2/2)"), "{text}");
    assert!(text.contains("PLAN\r\nANSWERED:\r\nPARIS"), "the answer reached the next task: {text}");
    assert!(text.trim_end().ends_with("EXIT 0"), "{text}");
    agent.wait_log("answer task=").await;
}

/// At the prompt, Ctrl-D stops asking (the run ends as without a terminal, exit 1, saying
/// how to answer), Ctrl-C ends the run at once (exit 130, as a shell reports SIGINT), and
/// `--timeout` bounds the time at the prompt too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_prompt_ctrl_d_ends_the_run_waiting_and_ctrl_c_interrupts_it() {
    let agent = AgentProcess::python(PY_AGENT, &[]).await;
    let text = run_in_pty(&agent, b"\x04", &[]).await;
    assert!(text.contains("workflow trip: Running (0/2), waiting for input"), "{text}");
    assert!(text.contains("asks: which city?") && text.contains("to answer: run on a terminal"), "{text}");
    assert!(text.trim_end().ends_with("EXIT 1"), "{text}");
    let text = run_in_pty(&agent, b"\x03", &[]).await;
    assert!(text.contains("SIGINT"), "{text}");
    assert!(text.trim_end().ends_with("EXIT 130"), "{text}");
    // No answer at all: `--timeout` still ends the run.
    let text = run_in_pty(&agent, b"", &["--timeout", "3s"]).await;
    assert!(text.contains("timed out after 3s waiting for the workflows to finish"), "{text}");
    assert!(text.trim_end().ends_with("EXIT 1"), "{text}");
    assert_eq!(agent.log().matches("answer task=").count(), 0, "nothing was answered");
}
