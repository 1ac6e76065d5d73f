//! The real kubectl (1.32, on the PATH) against `a2a serve` and the kubeconfig it writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Daemon;
use common::kubectl_bin;

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(daemon: &Daemon, home: &Path) -> Kubectl {
        Kubectl { kubeconfig: daemon.kubeconfig.clone(), cache: home.join("kube-cache") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl_bin());
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let Output { status, stdout, stderr } = self.command(args).output().unwrap();
        (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}{err}");
        out
    }
}

fn row<'a>(out: &'a str, first: &str) -> Option<&'a str> {
    out.lines().find(|l| l.split_whitespace().next() == Some(first))
}

#[test]
fn kubectl_gets_applies_and_deletes_the_quickstart() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(home.path());
    let k = Kubectl::new(&daemon, home.path());

    let (ok, out, err) = k.run(&["get", "agents"]);
    assert!(ok, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("No resources found in default namespace."), "{err}");

    let out = k.ok(&["apply", "--server-side", "-f", "examples/quickstart.yaml"]);
    for line in [
        "resourcebudget.a2a.dev/quickstart serverside-applied",
        "agent.a2a.dev/writer serverside-applied",
        "agent.a2a.dev/counter serverside-applied",
        "agent.a2a.dev/shouter serverside-applied",
        "workflow.a2a.dev/quickstart serverside-applied",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let out = k.ok(&["get", "agents"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PHASE", "READY", "RESTARTS", "AGE"], "{out}");
    for name in ["writer", "counter", "shouter"] {
        assert!(row(&out, name).is_some(), "no row for {name}:\n{out}");
    }
    // Short names and all namespaces.
    let out = k.ok(&["get", "wf", "-A"]);
    let r = row(&out, "default").unwrap_or_else(|| panic!("{out}"));
    assert!(r.contains("quickstart"), "{out}");
    assert!(out.starts_with("NAMESPACE"), "{out}");
    let out = k.ok(&["get", "rb", "quickstart", "-o", "jsonpath={.spec.limits.memory}"]);
    assert_eq!(out, "1Gi");
    let out = k.ok(&["get", "ag", "-l", "app.kubernetes.io/part-of=quickstart", "-o", "name"]);
    assert_eq!(out.lines().count(), 3, "{out}");

    // Applying again is accepted and changes nothing.
    let before = k.ok(&["get", "ag", "writer", "-o", "jsonpath={.metadata.resourceVersion}"]);
    k.ok(&["apply", "--server-side", "-f", "examples/quickstart.yaml"]);
    let after = k.ok(&["get", "ag", "writer", "-o", "jsonpath={.metadata.resourceVersion}"]);
    assert_eq!(before, after);

    let out = k.ok(&["describe", "agent", "writer"]);
    assert!(out.contains("Name:") && out.contains("writer"), "{out}");
    assert!(out.contains("Events:"), "{out}");

    let (ok, _, err) = k.run(&["get", "agent", "nope"]);
    assert!(!ok);
    assert!(err.contains(r#"Error from server (NotFound): agents.a2a.dev "nope" not found"#), "{err}");

    let out = k.ok(&["delete", "-f", "examples/quickstart.yaml"]);
    assert!(out.contains(r#"agent.a2a.dev "writer" deleted"#), "{out}");
    assert!(out.contains(r#"workflow.a2a.dev "quickstart" deleted"#), "{out}");
    let (_, out, err) = k.run(&["get", "agents,workflows"]);
    assert_eq!(out, "");
    assert!(err.contains("No resources found"), "{err}");
}

#[test]
fn kubectl_server_side_apply_removes_what_the_file_no_longer_says() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(home.path());
    let k = Kubectl::new(&daemon, home.path());
    let manifest = home.path().join("agent.yaml");
    let file = |labels: &str, limits: &str, replicas: u32| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: gitops\n  labels:\n{labels}spec:\n  \
             command: [sleep, \"100\"]\n  replicas: {replicas}\n  resources:\n    limits:\n{limits}"
        )
    };
    let path = manifest.to_str().unwrap();
    std::fs::write(&manifest, file("    team: test\n    tier: a\n", "      cpu: 500m\n      pids: 64\n", 1)).unwrap();
    k.ok(&["apply", "--server-side", "-f", path]);
    assert_eq!(k.ok(&["get", "ag", "gitops", "-o", "jsonpath={.spec.resources.limits.pids}"]), "64");

    // `pids` and the `tier` label deleted from the file: the next apply removes them.
    std::fs::write(&manifest, file("    team: test\n", "      cpu: 500m\n", 1)).unwrap();
    let out = k.ok(&["apply", "--server-side", "-f", path]);
    assert!(out.contains("agent.a2a.dev/gitops serverside-applied"), "{out}");
    assert_eq!(k.ok(&["get", "ag", "gitops", "-o", "jsonpath={.spec.resources.limits}"]), r#"{"cpu":"500m"}"#);
    assert_eq!(k.ok(&["get", "ag", "gitops", "-o", "jsonpath={.metadata.labels}"]), r#"{"team":"test"}"#);

    // kubectl hides managedFields unless asked; asked, it shows kubectl's Apply entry.
    let plain = k.ok(&["get", "ag", "gitops", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    let shown = k.ok(&["get", "ag", "gitops", "-o", "yaml", "--show-managed-fields"]);
    let obj: serde_json::Value = serde_yaml_ng::from_str(&shown).unwrap();
    let entries = obj["metadata"]["managedFields"].as_array().unwrap_or_else(|| panic!("{shown}"));
    let apply =
        entries.iter().find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply").expect("kubectl's entry");
    assert_eq!(apply["apiVersion"], "a2a.dev/v1alpha1");
    assert_eq!(apply["fieldsType"], "FieldsV1");
    let fields = &apply["fieldsV1"];
    assert_eq!(fields["f:spec"]["f:resources"]["f:limits"], serde_json::json!({"f:cpu": {}}), "{shown}");
    assert_eq!(fields["f:metadata"]["f:labels"], serde_json::json!({"f:team": {}}), "{shown}");

    // Another field manager applying another replica count conflicts, as kubectl reports it;
    // --force-conflicts takes the field over.
    std::fs::write(&manifest, file("    team: test\n", "      cpu: 500m\n", 3)).unwrap();
    let (ok, _, err) = k.run(&["apply", "--server-side", "--field-manager=other", "-f", path]);
    assert!(!ok);
    assert!(err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#), "{err}");
    assert_eq!(k.ok(&["get", "ag", "gitops", "-o", "jsonpath={.spec.replicas}"]), "1");
    k.ok(&["apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", path]);
    assert_eq!(k.ok(&["get", "ag", "gitops", "-o", "jsonpath={.spec.replicas}"]), "3");
    drop(daemon);
}

#[test]
fn kubectl_pages_through_chunks_and_deletes_all() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(home.path());
    let k = Kubectl::new(&daemon, home.path());
    let mut manifest = String::new();
    for i in 1..=5 {
        manifest.push_str(&format!(
            "---\napiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: chunk{i}\nspec:\n  command: [sleep, \"1\"]\n"
        ));
    }
    let path = home.path().join("agents.yaml");
    std::fs::write(&path, manifest).unwrap();
    k.ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]);

    // -v=6 logs every request: the pages are asked for with limit=2 and continue tokens.
    let (ok, out, err) = k.run(&["get", "agents", "--chunk-size=2", "-v=6"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(rows, ["chunk1", "chunk2", "chunk3", "chunk4", "chunk5"], "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("NAME")).count(), 1, "one header:\n{out}");
    let pages: Vec<&str> = err.lines().filter(|l| l.contains("GET ") && l.contains("limit=2")).collect();
    assert_eq!(pages.len(), 3, "three pages of two:\n{err}");
    assert_eq!(pages.iter().filter(|l| l.contains("continue=")).count(), 2, "{err}");
    let out = k.ok(&["get", "agents", "--chunk-size=2", "-o", "name"]);
    assert_eq!(out.lines().count(), 5, "{out}");

    let out = k.ok(&["delete", "agents", "--all"]);
    for i in 1..=5 {
        assert!(out.contains(&format!("agent.a2a.dev \"chunk{i}\" deleted")), "{out}");
    }
    let (ok, out, err) = k.run(&["get", "agents"]);
    assert!(ok && out.is_empty(), "{out}{err}");
    assert!(err.contains("No resources found"), "{err}");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let home = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::spawn(home.path());
    let pid = daemon.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "a2a serve did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
    // It starts again on the same home: the store was closed cleanly.
    let again = Daemon::spawn(home.path());
    assert!(again.url.starts_with("https://127.0.0.1:"));
}

fn agent_yaml(name: &str, namespace: &str, extra_metadata: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    \
         app: prune-test\n{extra_metadata}spec:\n  command: [sleep, \"100\"]\n"
    )
}

#[test]
fn kubectl_server_dry_runs_delete_and_prune_nothing() {
    let home = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(home.path());
    let k = Kubectl::new(&daemon, home.path());
    let keep = home.path().join("keep.yaml");
    std::fs::write(&keep, agent_yaml("keep", "default", "")).unwrap();
    k.ok(&["apply", "-f", keep.to_str().unwrap()]);

    let out = k.ok(&["delete", "agent", "keep", "--dry-run=server"]);
    assert!(out.contains("agent.a2a.dev \"keep\" deleted (server dry run)"), "{out}");
    assert_eq!(k.ok(&["get", "agent", "keep", "-o", "jsonpath={.metadata.name}"]), "keep");

    // `keep` is not in the applied file, so a prune would delete it: in a dry run it stays.
    let other = home.path().join("other.yaml");
    std::fs::write(&other, agent_yaml("other", "default", "")).unwrap();
    let out = k.ok(&[
        "apply",
        "--prune",
        "-l",
        "app=prune-test",
        "--prune-allowlist=a2a.dev/v1alpha1/Agent",
        "--dry-run=server",
        "-f",
        other.to_str().unwrap(),
    ]);
    assert!(out.contains("agent.a2a.dev/keep pruned (server dry run)"), "{out}");
    assert_eq!(k.ok(&["get", "agent", "keep", "-o", "jsonpath={.metadata.name}"]), "keep");
    let (ok, _, err) = k.run(&["get", "agent", "other"]);
    assert!(!ok && err.contains("not found"), "the dry-run apply created nothing: {err}");
}
