//! The calls Argo CD and Flux make of a cluster, replayed with the clients they are built on
//! (client-go, through kubectl 1.32; the official Python client), against the whole daemon
//! with a real agent: discovery, the OpenAPI v2 document in protobuf, server-side apply with a
//! server dry run under their field managers, list then watch from the list's
//! resourceVersion, and health read from status as kstatus (Flux) and Argo CD's condition
//! checks read it. Neither tool can be installed here.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::node::{Daemon, Scratch, tear_down};
use crate::harness::root;

const APP: &str = "apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata:
  name: synced
  namespace: default
  labels: { app.kubernetes.io/instance: team }
spec:
  command: [a2a, demo-agent, --skill, echo]
  skills: [echo]
";

fn kubectl(home: &Path, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut c = Command::new(std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()));
    c.arg("--kubeconfig")
        .arg(home.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("kubectl");
    let stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        let mut stdin = stdin;
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(home: &Path, args: &[&str], input: Option<&str>) -> String {
    let (ok, out, err) = kubectl(home, args, input);
    assert!(ok, "kubectl {args:?} failed:\n{out}{err}");
    out
}

fn agent(home: &Path) -> Value {
    serde_json::from_str(&ok(home, &["get", "agent", "synced", "-o", "json"], None)).expect("JSON")
}

/// kstatus's reading of a custom resource (what Flux waits on): Current when the status
/// speaks of this generation and its Ready condition is True.
fn current(obj: &Value) -> bool {
    let status = &obj["status"];
    let ready =
        status["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
    status["observedGeneration"] == obj["metadata"]["generation"] && ready
}

fn wait_current(home: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = agent(home);
        if current(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "the agent never became Current: {}", a["status"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_argo_cd_and_flux_make_are_met() {
    let scratch = Scratch::new("gitops");
    let home = scratch.home().to_path_buf();
    let daemon = Daemon::start(&home, scratch.top(), &[]);
    let h = home.clone();
    tokio::task::spawn_blocking(move || replay(&h)).await.expect("the replay");
    tear_down(daemon).await;
}

fn replay(home: &Path) {
    // Discovery: every group and resource, as the cluster cache loads them.
    let versions = ok(home, &["api-versions"], None);
    for gv in ["a2a.dev/v1alpha1", "v1"] {
        assert!(versions.lines().any(|l| l == gv), "{gv} missing from api-versions:\n{versions}");
    }
    let resources = ok(home, &["api-resources", "-o", "name"], None);
    assert!(resources.lines().any(|l| l == "agents.a2a.dev"), "{resources}");

    // The OpenAPI v2 document, in the protobuf form client-go's discovery asks for.
    let (done, out, log) = kubectl(home, &["explain", "agents.spec", "--output=plaintext-openapiv2", "-v=8"], None);
    assert!(done, "explain over OpenAPI v2 failed:\n{out}{log}");
    assert!(log.contains("/openapi/v2"), "the v2 document was not fetched:\n{log}");
    assert!(
        log.contains("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
        "not asked in protobuf:\n{log}"
    );
    assert!(out.contains("KIND:") && out.contains("Agent"), "{out}");

    // Argo CD's diff: a server-side apply with a server dry run, under its field manager,
    // answers the object as it would be and creates nothing.
    let dry = ok(
        home,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=argocd-controller",
            "-f",
            "-",
            "-o",
            "json",
            "--show-managed-fields",
        ],
        Some(APP),
    );
    let dry: Value = serde_json::from_str(&dry).expect("JSON");
    assert_eq!(dry["spec"]["skills"][0], "echo", "{dry}");
    let managers: Vec<&str> = dry["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["argocd-controller"], "{dry}");
    let (found, _, err) = kubectl(home, &["get", "agent", "synced"], None);
    assert!(!found && err.contains("NotFound"), "a dry run created the agent: {err}");

    // Flux's apply: server-side, forced, under its manager; then Argo CD's sync of the same
    // file changes nothing.
    ok(
        home,
        &["apply", "--server-side", "--force-conflicts", "--field-manager=kustomize-controller", "-f", "-"],
        Some(APP),
    );
    let applied = agent(home);
    let again = ok(
        home,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=kustomize-controller",
            "-f",
            "-",
            "-o",
            "json",
        ],
        Some(APP),
    );
    let again: Value = serde_json::from_str(&again).expect("JSON");
    // The node writes the agent's status meanwhile, so the resourceVersion may move; what the
    // sync would write is the same: the same spec, the same generation.
    assert_eq!(again["spec"], applied["spec"], "a no-op sync changed the spec");
    assert_eq!(again["metadata"]["generation"], applied["metadata"]["generation"], "a no-op sync is a new generation");

    // List, then watch from the list's resourceVersion, as the cluster cache and
    // controller-runtime's informers do: a change made after the list arrives as MODIFIED.
    let script = r#"
import sys, threading, subprocess
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
api = client.CustomObjectsApi()
listed = api.list_cluster_custom_object("a2a.dev", "v1alpha1", "agents", label_selector="app.kubernetes.io/instance=team")
print("listed", ",".join(i["metadata"]["name"] for i in listed["items"]))
rv = listed["metadata"]["resourceVersion"]
def change():
    api.patch_namespaced_custom_object("a2a.dev", "v1alpha1", "default", "agents", "synced",
        {"metadata": {"labels": {"gitops": "synced"}}})
threading.Timer(0.5, change).start()
w = watch.Watch()
for ev in w.stream(api.list_cluster_custom_object, "a2a.dev", "v1alpha1", "agents",
                   resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=20):
    labels = ev["object"]["metadata"].get("labels", {})
    if ev["type"] == "MODIFIED" and labels.get("gitops") == "synced":
        print("watched MODIFIED", ev["object"]["metadata"]["name"])
        w.stop()
"#;
    let python = root().join(".venv/bin/python");
    let out = Command::new(python).arg("-c").arg(script).arg(home.join("kubeconfig")).output().expect("python");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("listed synced") && stdout.contains("watched MODIFIED synced"), "{stdout}{stderr}");

    // Health: Current once the node has run the agent and its card answered.
    let a = wait_current(home);
    assert_eq!(a["status"]["phase"], "Running", "{}", a["status"]);
    // A new spec is a new generation: not Current until the status speaks of it.
    ok(
        home,
        &["patch", "agent", "synced", "--type", "merge", "-p", r#"{"spec":{"skills":["echo","summarize"]}}"#],
        None,
    );
    let edited = agent(home);
    assert_eq!(edited["metadata"]["generation"], 2, "{edited}");
    let a = wait_current(home);
    assert_eq!(a["status"]["observedGeneration"], 2, "{}", a["status"]);
}
