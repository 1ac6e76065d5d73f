//! The CLI details kubectl users expect, through the real binary against a real local API
//! server: `a2a get events` (and `-w`), `a2a validate` skipping other tools' kinds, the
//! retry request the CLI writes, and the demo agent's `allocate` as its help describes it.

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use a2a::a2a::{FollowOptions, Message, Part, SendMessageResponse};
use a2a::api::common::ConditionStatus;
use a2a::api::workflow::{RetryRequest, TaskPhase};
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use k8s_openapi::api::core::v1::{Event, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::AgentProcess;

fn a2a(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a")).args(args).arg("--kubeconfig").arg(kubeconfig).output().expect("run a2a")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An Event about Agent `agent`, named `<agent>.1`: `[type, reason, message]`, last seen
/// `ago` seconds ago, `count` times over ten minutes.
fn event(ns: &str, agent: &str, [type_, reason, message]: [&str; 3], ago: i64, count: i32) -> Event {
    let at = |secs: i64| Time(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs));
    Event {
        metadata: ObjectMeta { name: Some(format!("{agent}.1")), namespace: Some(ns.into()), ..Default::default() },
        involved_object: ObjectReference {
            api_version: Some("a2a.dev/v1alpha1".into()),
            kind: Some("Agent".into()),
            name: Some(agent.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        count: Some(count),
        first_timestamp: Some(at(ago + 600)),
        last_timestamp: Some(at(ago)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_lists_core_events_in_kubectls_columns() {
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    let other =
        Namespace { metadata: ObjectMeta { name: Some("other".into()), ..Default::default() }, ..Default::default() };
    namespaces.create(&PostParams::default(), &other).await.expect("namespace");
    for (ns, e) in [
        ("default", event("default", "writer", ["Normal", "Started", "replica 0 started"], 30, 1)),
        ("default", event("default", "reader", ["Warning", "BackOff", "replica 0 restarts in 2s"], 300, 3)),
        ("other", event("other", "helper", ["Normal", "Started", "replica 0 started"], 10, 1)),
    ] {
        let api: Api<Event> = Api::namespaced(server.client.clone(), ns);
        api.create(&PostParams::default(), &e).await.expect("create event");
    }

    let out = a2a(&kc, &["get", "events"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{table}");
    // Oldest first; a repeated event says how often and since when.
    assert!(lines[1].starts_with("5m (x3 over 15m)"), "{table}");
    assert!(lines[1].contains("Warning") && lines[1].contains("agent/reader"), "{table}");
    assert!(lines[1].ends_with("replica 0 restarts in 2s"), "{table}");
    let age: u64 = lines[2].split_whitespace().next().and_then(|a| a.strip_suffix('s')?.parse().ok()).unwrap_or(0);
    assert!((30..120).contains(&age), "seen 30 s ago: {table}");
    assert!(lines[2].contains("Started") && lines[2].contains("agent/writer"), "{table}");

    let all = text(&a2a(&kc, &["get", "ev", "-A"]).stdout);
    assert!(all.starts_with("NAMESPACE   LAST SEEN"), "{all}");
    assert_eq!(all.lines().count(), 4, "{all}");
    assert!(all.lines().any(|l| l.starts_with("other") && l.contains("agent/helper")), "{all}");

    let selected = a2a(&kc, &["get", "events", "--field-selector", "involvedObject.name=writer", "-o", "name"]);
    assert_eq!(text(&selected.stdout), "event/writer.1\n", "{}", text(&selected.stderr));

    let json: serde_json::Value =
        serde_json::from_slice(&a2a(&kc, &["get", "events", "-o", "json"]).stdout).expect("json");
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(2));
    let yaml = text(&a2a(&kc, &["get", "events", "writer.1", "-n", "default", "-o", "yaml"]).stdout);
    let one: serde_json::Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
    assert_eq!((one["kind"].as_str(), one["reason"].as_str()), (Some("Event"), Some("Started")), "{yaml}");

    let none = a2a(&kc, &["get", "events", "-n", "empty"]);
    assert_eq!(
        (none.status.code(), text(&none.stderr).as_str()),
        (Some(0), "No resources found in empty namespace.\n")
    );
    let missing = a2a(&kc, &["get", "events", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        "error: Error from server (NotFound): events \"nope\" not found in namespace \"default\"\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_each_change_under_one_header() {
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["get", "agents", "-w", "--kubeconfig"])
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("a2a get -w");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch starts after the (empty) list; an agent created until then is listed instead.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agents: Api<Agent> = Api::namespaced(server.client.clone(), "default");
    for name in ["first", "second"] {
        agents.create(&PostParams::default(), &common::agent(name)).await.expect("create agent");
    }
    let mut lines = Vec::new();
    while lines.len() < 3 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("{e}: the watch printed only {lines:?}"),
        }
    }
    child.kill().expect("stop the watch");
    let _ = child.wait();
    assert!(lines[0].starts_with("NAME"), "{lines:?}");
    assert!(lines[1].starts_with("first"), "{lines:?}");
    assert!(lines[2].starts_with("second"), "{lines:?}");
}

#[test]
fn validate_skips_other_tools_kinds_and_passes_the_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["validate", "-R", "-f", "examples"])
        .current_dir(root)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "skipped: examples/gitops/argocd-application.yaml Application/agents: not an a2a kind (argoproj.io/v1alpha1)\n\
         skipped: examples/gitops/flux-kustomization.yaml GitRepository/agents: not an a2a kind (source.toolkit.fluxcd.io/v1)\n\
         skipped: examples/gitops/flux-kustomization.yaml Kustomization/agents: not an a2a kind (kustomize.toolkit.fluxcd.io/v1)\n"
    );
    assert!(text(&out.stdout).ends_with(" documents valid, 3 skipped (not a2a kinds)\n"), "{}", text(&out.stdout));

    // A skipped document does not hide a mistake in an a2a one.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mixed.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: {}\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: x }\nspec: { comand: [x] }\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_a2a")).arg("validate").arg("-f").arg(&file).output().expect("validate");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let f = file.display();
    assert!(stderr.starts_with(&format!("skipped: {f} Deployment/web: not an a2a kind (apps/v1)\n")), "{stderr}");
    assert!(stderr.contains(&format!("{f}: document 2 (Agent/x): spec.comand: unknown field")), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_writes_a_typed_request_the_engine_takes_and_the_old_text_form_still_works() {
    let server = common::start().await;
    let kc = server.server.kubeconfig().to_path_buf();
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let wf: Workflow = serde_yaml_ng::from_str(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: flaky }\nspec:\n  tasks:\n\
         \x20   - { name: first, agent: a, message: one }\n\
         \x20   - { name: second, agent: a, dependsOn: [first], message: two }\n\
         \x20   - { name: side, agent: a, message: three }\n",
    )
    .expect("workflow");
    api.create(&PostParams::default(), &wf).await.expect("create");
    // What the engine writes when `first` failed: `second` skipped because of it.
    let status = serde_json::json!({"status": {"phase": "Failed", "tasks": [
        {"name": "first", "phase": "Failed", "attempts": 1, "error": "boom"},
        {"name": "second", "phase": "Skipped"},
        {"name": "side", "phase": "Succeeded", "attempts": 1}
    ]}});
    api.patch_status("flaky", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");

    let refused = a2a(&kc, &["retry", "wf", "flaky", "--task", "first", "--task", "side"]);
    assert_eq!(
        text(&refused.stderr),
        "error: --task side: the task is Succeeded; only failed, skipped or cancelled tasks are retried\n"
    );
    let annotations = |wf: Workflow| wf.metadata.annotations.unwrap_or_default();
    assert!(!annotations(api.get("flaky").await.expect("get")).contains_key("a2a.dev/retry"), "nothing was asked");

    let out = a2a(&kc, &["retry", "wf", "flaky", "--task", "first"]);
    assert_eq!(text(&out.stdout), "workflow/flaky retry requested: first\n", "{}", text(&out.stderr));
    let written = annotations(api.get("flaky").await.expect("get"));
    let request = RetryRequest::parse(&written["a2a.dev/retry"]).expect("a typed request");
    assert_eq!(request.tasks, ["first"]);
    assert!(written["a2a.dev/retry"].starts_with('{'), "JSON: {}", written["a2a.dev/retry"]);

    // The engine takes the request: the tasks go back to Pending (agent `a` does not exist, so
    // they stay there) and the Retried condition records the request handled.
    let engine = Engine::new(server.client.clone(), EngineConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&engine).run(async move {
        let _ = stopped.await;
    }));
    let wf = retried(&api, &written["a2a.dev/retry"]).await;
    let phases: Vec<_> = wf.status.expect("status").tasks.iter().map(|t| (t.name.clone(), t.phase)).collect();
    assert_eq!(
        phases,
        [
            ("first".into(), TaskPhase::Pending),
            ("second".into(), TaskPhase::Pending),
            ("side".into(), TaskPhase::Succeeded)
        ]
    );
    // A request in the text form earlier versions wrote is still taken; one that is neither
    // is refused, with the reason in the engine's log.
    for (request, taken) in [("1700000000000", ConditionStatus::True), ("{not json", ConditionStatus::False)] {
        let patch = serde_json::json!({"metadata": {"annotations": {"a2a.dev/retry": request}}});
        api.patch("flaky", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
        let wf = retried(&api, request).await;
        let c = wf.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Retried").expect("Retried");
        assert_eq!(c.status, taken, "{request}: {c:?}");
    }
    let _ = stop.send(());
}

/// Waits until the engine has handled the retry request `request`.
async fn retried(api: &Api<Workflow>, request: &str) -> Workflow {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wf = api.get("flaky").await.expect("get");
        let handled = wf
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Retried" && c.message == request));
        if handled {
            return wf;
        }
        assert!(std::time::Instant::now() < deadline, "the engine never handled {request}: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_demo_agents_allocate_does_what_its_help_says() {
    let help = Command::new(env!("CARGO_BIN_EXE_a2a")).args(["demo-agent", "--help"]).output().expect("help");
    let help = text(&help.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let data_form = r#"{"skill": "allocate", "allocate": "64Mi", "hold": "1s"}"#;
    assert!(help.contains("`allocate 64Mi 1s` (a bare number is MiB)"), "{help}");
    assert!(help.contains(data_form), "{help}");

    // The first skill offered is echo: only what the help says selects allocate.
    let agent = AgentProcess::demo(&[]).await;
    let opts = FollowOptions::default().timeout(Duration::from_secs(20));
    let send = |id: &str, message: Message| {
        let client = agent.client();
        let opts = opts.clone();
        let id = id.to_owned();
        async move {
            match client.send_and_follow(message, &opts, std::future::pending()).await.expect(&id) {
                SendMessageResponse::Task(t) => t.output().text,
                SendMessageResponse::Message(m) => panic!("{id}: a message, not a task: {m:?}"),
            }
        }
    };
    assert_eq!(send("text", Message::user_text("a1", "allocate 2 50ms")).await, "allocated 2Mi (512 pages)");
    let mut data = Message::user_text("a2", "");
    data.parts = vec![Part::data(serde_json::json!({"skill": "allocate", "allocate": "4Mi", "hold": "50ms"}))];
    assert_eq!(send("data", data).await, "allocated 4Mi (1024 pages)");
}
