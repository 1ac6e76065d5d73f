//! Outputs keep every part: data parts become JSON that templates address (`{{ tasks.x.data
//! .field.0 }}`), file parts are stored byte for byte beside the workflow and read back with
//! `a2a output --file`, and `--list` shows them all. Against the demo agent's `data` and
//! `file` skills, through the real local API server, the engine and the CLI.

mod common;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, TaskStatus, WorkflowPhase};
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::AgentProcess;

fn task<'a>(wf: &'a Workflow, name: &str) -> &'a TaskStatus {
    wf.status.as_ref().and_then(|s| s.tasks.iter().find(|t| t.name == name)).expect("task status")
}

/// `a2a ARGS --kubeconfig K`: exit success, stdout bytes, stderr.
fn a2a(kubeconfig: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .expect("run a2a");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_file_parts_reach_templates_and_a2a_output_byte_for_byte() {
    let server = common::start().await;
    let kubeconfig = server.server.kubeconfig().to_path_buf();
    let agent = AgentProcess::demo(&[]).await;
    let agents: Api<Agent> = Api::namespaced(server.client.clone(), "default");
    let spec: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "demo"},
        "spec": {"url": agent.url, "maxConcurrentTasks": 4}
    }))
    .expect("agent");
    agents.create(&PostParams::default(), &spec).await.expect("create agent");
    let status = serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [agent.url]}});
    agents.patch_status("demo", &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
    let engine = Engine::new(server.client.clone(), EngineConfig::default());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&engine).run(async move {
        let _ = rx.await;
    }));
    let yaml = r#"
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: parts }
spec:
  tasks:
    - { name: trip, agent: demo, message: 'data {"trip": {"city": "Paris", "stops": ["Lyon", {"at": "Dijon"}], "nights": 3}}' }
    - { name: blob, agent: demo, message: "file all.bin 1000000" }
    - name: use
      agent: demo
      dependsOn: [trip, blob]
      message: "echo {{ tasks.trip.data.trip.city }} via {{ tasks.trip.data.trip.stops.1.at }} for {{ tasks.trip.data.trip.nights }} nights; {{ tasks.blob.output }}; {{ tasks.trip.data.trip.stops }}"
    - { name: missing, agent: demo, dependsOn: [trip], message: "echo {{ tasks.trip.data.trip.hotel }}" }
"#;
    let mut wf: Workflow = serde_yaml_ng::from_str(yaml).expect("workflow yaml");
    // Data over 64 KiB is kept beside the workflow, and templates still read it.
    let pad = "x".repeat(100_000);
    let big = |name: &str, message: String, deps: &[&str]| a2a::api::workflow::WorkflowTask {
        name: name.into(),
        agent: Some("demo".into()),
        message,
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..Default::default()
    };
    wf.spec.tasks.push(big("bigdata", format!(r#"data {{"n": 7, "pad": "{pad}"}}"#), &[]));
    wf.spec.tasks.push(big("usebig", "echo n={{ tasks.bigdata.data.n }}".into(), &["bigdata"]));
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &wf).await.expect("create workflow");
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = api.get("parts").await.expect("get");
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal) {
            break wf;
        }
        assert!(Instant::now() < deadline, "not done in 60s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trip = task(&wf, "trip");
    assert_eq!(trip.phase, TaskPhase::Succeeded, "{:#?}", wf.status);
    assert_eq!(trip.output.as_deref(), Some("data"));
    assert_eq!(
        trip.data,
        Some(serde_json::json!({"trip": {"city": "Paris", "stops": ["Lyon", {"at": "Dijon"}], "nights": 3}}))
    );
    assert_eq!(
        task(&wf, "use").output.as_deref(),
        Some(r#"Paris via Dijon for 3 nights; all.bin (1000000 bytes); ["Lyon",{"at":"Dijon"}]"#)
    );
    let bigdata = task(&wf, "bigdata");
    assert_eq!(bigdata.data, None, "over 64 KiB: not in status");
    assert_eq!(bigdata.parts[1].stored.as_deref(), Some("parts.bigdata.data.output"));
    assert_eq!(task(&wf, "usebig").output.as_deref(), Some("n=7"), "{:#?}", task(&wf, "usebig"));
    let missing = task(&wf, "missing");
    assert_eq!(missing.phase, TaskPhase::Failed);
    assert_eq!(missing.error.as_deref(), Some("{{ tasks.trip.data.trip.hotel }} has no value"));

    // The parts, listed; the file, byte for byte, to a file and to stdout.
    let (ok, out, err) = a2a(&kubeconfig, &["output", "wf", "parts", "blob", "--list"]);
    let listing = String::from_utf8_lossy(&out);
    assert!(ok, "{err}");
    assert!(listing.lines().any(|l| l.starts_with("text") && l.contains("23")), "{listing}");
    let file_row = listing.lines().find(|l| l.starts_with("file")).unwrap_or_default();
    assert!(
        file_row.contains("all.bin") && file_row.contains("application/octet-stream") && file_row.contains("1000000"),
        "{listing}"
    );
    let expected: Vec<u8> = (0..1_000_000usize).map(|i| (i % 256) as u8).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("copy.bin");
    let (ok, _, err) = a2a(
        &kubeconfig,
        &["output", "wf", "parts", "blob", "--file", "all.bin", "-o", path.to_str().unwrap_or_default()],
    );
    assert!(ok && err.contains("wrote 1000000 bytes"), "{err}");
    assert!(std::fs::read(&path).expect("read the copy") == expected, "the file differs");
    let (ok, out, err) = a2a(&kubeconfig, &["output", "wf", "parts", "blob", "--file", "all.bin"]);
    assert!(ok, "{err}");
    assert!(out == expected, "stdout differs: {} bytes", out.len());
    let (ok, _, err) = a2a(&kubeconfig, &["output", "wf", "parts", "blob", "--file", "nope.bin"]);
    assert!(!ok && err.contains("task \"blob\" has no file \"nope.bin\" (its files: all.bin)"), "{err}");
    let (ok, out, _) = a2a(&kubeconfig, &["output", "parts", "blob"]);
    assert!(ok && out == b"all.bin (1000000 bytes)", "{}", String::from_utf8_lossy(&out));
}

/// A streamed answer (artifact chunks appended, from the official Python SDK) keeps its
/// parts in the order they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_artifact_chunks_are_kept_in_order() {
    let server = common::start().await;
    let agent = AgentProcess::python("tests/python/streaming_agent.py", &[]).await;
    let agents: Api<Agent> = Api::namespaced(server.client.clone(), "default");
    let spec: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "py"},
        "spec": {"url": agent.url}
    }))
    .expect("agent");
    agents.create(&PostParams::default(), &spec).await.expect("create agent");
    let status = serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [agent.url]}});
    agents.patch_status("py", &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
    let engine = Engine::new(server.client.clone(), EngineConfig::default());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&engine).run(async move {
        let _ = rx.await;
    }));
    let wf: Workflow = serde_yaml_ng::from_str(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: stream }\nspec:\n  tasks:\n\
         \x20   - { name: shout, agent: py, message: \"alpha beta gamma delta\" }\n",
    )
    .expect("workflow yaml");
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &wf).await.expect("create workflow");
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = api.get("stream").await.expect("get");
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal) {
            break wf;
        }
        assert!(Instant::now() < deadline, "not done in 60s: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = task(&wf, "shout");
    assert_eq!(t.output.as_deref(), Some("ALPHA\nBETA\nGAMMA\nDELTA"), "{:#?}", wf.status);
    let sizes: Vec<(&str, u64)> = t.parts.iter().map(|p| (p.kind.as_str(), p.bytes)).collect();
    assert_eq!(sizes, [("text", 5), ("text", 4), ("text", 5), ("text", 5)]);
}
