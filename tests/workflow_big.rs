//! Big workflows: a `forEach` task expanded at run time (over a literal list, a count, or an
//! upstream task's JSON array output), and a workflow of 10,000 tasks whose object stays far
//! under etcd's limit because each task's status is kept beside it, in ConfigMaps it owns.

mod common;
mod support;

use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use common::engine::{create_workflow, ready_agent, start_engine};
use kube::Api;
use support::AgentProcess;

/// Waits until the stored workflow is finished; returns it as stored (tasks not read back).
async fn finished(client: &kube::Client, name: &str, within: Duration) -> Workflow {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + within;
    loop {
        let wf = api.get(name).await.expect("get workflow");
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(WorkflowPhase::is_terminal) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name} did not finish in {within:?}: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stored object's JSON, as a client receives it.
async fn raw(client: &kube::Client, name: &str) -> serde_json::Value {
    use kube::Resource;
    let path = format!("{}/{name}", Workflow::url_path(&(), Some("default")));
    let text = client.request_text(http::Request::get(path).body(Vec::new()).expect("request")).await.expect("get");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_expands_a_list_a_count_and_an_upstream_json_array() {
    let server = common::start().await;
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"maxConcurrentTasks": 8})).await;
    let _engine = start_engine(&server.client);
    create_workflow(
        &server.client,
        r#"
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: fan }
spec:
  tasks:
    - { name: plan, agent: echo, message: '["oslo", {"city": "rome"}]' }
    - name: visit
      agent: echo
      message: "visit {{ item }} ({{ index }})"
      forEach: { task: plan }
    - name: words
      agent: echo
      message: "say {{ item.word }}"
      forEach: { items: [{ word: one }, { word: two }, { word: three }] }
    - name: join
      agent: echo
      message: done
      dependsOn: [visit, words]
    - { name: notalist, agent: echo, message: '{"a": 1}' }
    - { name: never, agent: echo, message: "x {{ item }}", forEach: { task: notalist } }
"#,
    )
    .await;
    let mut wf = finished(&server.client, "fan", Duration::from_secs(120)).await;
    a2a::controller::offload::fill(&server.client, &mut wf).await.expect("tasks");
    let status = wf.status.expect("status");
    let task = |name: &str| status.tasks.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(task("visit[0]").output.as_deref(), Some("visit oslo (0)"));
    assert_eq!(task("visit[1]").output.as_deref(), Some(r#"visit {"city":"rome"} (1)"#));
    assert!(!status.tasks.iter().any(|t| t.name == "visit[2]" || t.name == "visit"), "{status:#?}");
    assert_eq!(task("words[2]").output.as_deref(), Some("say three"));
    assert_eq!(task("join").phase, TaskPhase::Succeeded, "runs after every expansion");
    let join_started = task("join").started_at.expect("started");
    for n in ["visit[0]", "visit[1]", "words[0]", "words[1]", "words[2]"] {
        assert!(task(n).finished_at.expect("finished") <= join_started, "{n} ends before join starts");
    }
    let never = task("never");
    assert_eq!((never.phase, never.reason.as_deref()), (TaskPhase::Failed, Some("ForEachInvalid")));
    assert!(never.error.as_deref().unwrap_or_default().contains("not an array (it is an object)"), "{never:#?}");
    assert_eq!(status.phase, Some(WorkflowPhase::Failed));
}

#[test]
fn for_each_errors_name_the_field() {
    let wf = serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad"},
        "spec": {"tasks": [
            {"name": "a", "agent": "x", "message": "m {{ item }}", "forEach": {"items": [1], "count": 2}},
            {"name": "b", "agent": "x", "message": "{{ item }}"},
            {"name": "c", "agent": "x", "message": "m", "forEach": {"task": "ghost"}},
            {"name": "d", "agent": "x", "message": "{{ tasks.a.output }}", "dependsOn": ["a"]},
        ]}
    });
    let errors = a2a::api::validate::validate(&wf).expect_err("invalid");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |field: &str, words: &str| {
        assert!(text.iter().any(|e| e.starts_with(field) && e.contains(words)), "{field}: {words} in {text:#?}")
    };
    has("spec.tasks[0].forEach", "exactly one of items");
    has("spec.tasks[1].message", "are for a task with forEach");
    has("spec.tasks[2].forEach.task", "unknown task \"ghost\"");
    has("spec.tasks[3].message", "runs once per item");
}

/// 10,000 short tasks, declared as one `forEach`: the object stays under 1 MiB and its status
/// under 64 KiB; every task's status is read back from beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_keep_the_object_small_and_their_status_beside_it() {
    let server = common::start().await;
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"maxConcurrentTasks": 64})).await;
    let _engine = start_engine(&server.client);
    create_workflow(
        &server.client,
        r#"
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: big }
spec:
  tasks:
    - { name: t, agent: echo, message: "task {{ index }}", forEach: { count: 10000 } }
    - { name: stuck, agent: ghost, message: "never runs" }
"#,
    )
    .await;
    // The summary names the stuck task and its reason while the rest run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = raw(&server.client, "big").await;
        let stuck = &v["status"]["stuck"];
        if stuck[0]["reason"] == "AgentNotFound" {
            assert_eq!(stuck[0]["tasks"], serde_json::json!(["stuck"]), "{stuck}");
            assert_eq!(stuck[0]["count"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "no stuck summary: {}", v["status"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Done when 10,000 succeeded: the stuck one waits for ever, so the workflow stays Running.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let v = raw(&server.client, "big").await;
        if v["status"]["taskCounts"]["Succeeded"] == 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {}", v["status"]["taskCounts"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The last status round is in once the summary says so; read it all.
    let v = raw(&server.client, "big").await;
    let object = serde_json::to_vec(&v).expect("json").len();
    let status = serde_json::to_vec(&v["status"]).expect("json").len();
    assert!(object < 1 << 20, "the object is {object} bytes");
    assert!(status < 64 << 10, "the status is {status} bytes");
    assert!(v["status"].get("tasks").is_none(), "no inline task list");
    assert_eq!(v["status"]["taskStatusRef"]["tasks"], 10_001);
    // Phases no task is in any more are gone from the counts.
    assert_eq!(v["status"]["taskCounts"], serde_json::json!({"Succeeded": 10_000, "Pending": 1}));
    let mut wf: Workflow = serde_json::from_value(v).expect("workflow");
    a2a::controller::offload::fill(&server.client, &mut wf).await.expect("tasks beside it");
    let tasks = &wf.status.as_ref().expect("status").tasks;
    assert_eq!(tasks.len(), 10_001);
    assert_eq!(tasks[9_999].name, "t[9999]");
    assert_eq!(tasks[9_999].output.as_deref(), Some("task 9999"));
    assert_eq!(tasks.iter().filter(|t| t.phase == TaskPhase::Succeeded).count(), 10_000);
    // The real kubectl shows the summary in the object and the entries in the ConfigMaps
    // beside it: 21 ranges of 500 tasks, one chunk each (the outputs are short).
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(common::kubectl_bin())
            .arg("--kubeconfig")
            .arg(server.server.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let yaml = kubectl(&["get", "workflow", "big", "-o", "yaml"]);
    assert!(yaml.contains("taskStatusRef:") && yaml.contains("Succeeded: 10000"), "{yaml}");
    assert!(!yaml.contains("task 9999"), "no task output in the object");
    let ranges = kubectl(&["get", "configmaps", "-o", "name"]);
    let ranges: Vec<&str> = ranges.lines().filter(|l| l.starts_with("configmap/big.status-")).collect();
    assert_eq!(ranges.len(), 21, "{ranges:?}");
    let last = kubectl(&["get", "configmap", "big.status-19-0", "-o", "jsonpath={.data.output}"]);
    assert!(last.contains("t[9999]") && last.contains("task 9999"), "{last}");
}
