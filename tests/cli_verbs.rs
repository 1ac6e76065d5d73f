//! The kubectl-like verbs end to end: `a2a serve` as a daemon, the `a2a` CLI against it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn a2a(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn apply_get_describe_diff_delete_round_trip() {
    let home = tempfile::tempdir().expect("tempdir");
    let _daemon = common::Daemon::spawn(home.path());
    let h = home.path();

    let first = a2a(h, &["apply", "-f", "examples/quickstart.yaml"]);
    assert!(first.status.success(), "{}", err(&first));
    assert_eq!(
        out(&first),
        "resourcebudget/quickstart created\nagent/writer created\nagent/counter created\nagent/shouter created\nworkflow/quickstart created\n"
    );
    let again = a2a(h, &["apply", "-f", "examples/quickstart.yaml"]);
    assert_eq!(
        out(&again),
        "resourcebudget/quickstart unchanged\nagent/writer unchanged\nagent/counter unchanged\nagent/shouter unchanged\nworkflow/quickstart unchanged\n"
    );

    let table = a2a(h, &["get", "agents"]);
    assert!(table.status.success(), "{}", err(&table));
    let text = out(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("PHASE") && lines[0].contains("AGE"), "{lines:?}");
    let names: Vec<&str> = lines[1..].iter().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["counter", "shouter", "writer"]);
    let wide = a2a(h, &["get", "ag", "-o", "wide"]);
    assert!(
        out(&wide).lines().next().is_some_and(|l| l.contains("PRIORITY") && l.contains("BUDGET")),
        "{}",
        out(&wide)
    );
    assert_eq!(out(&a2a(h, &["get", "wf", "-o", "name"])), "workflow/quickstart\n");
    let all = a2a(h, &["get", "wf", "-A"]);
    assert!(out(&all).starts_with("NAMESPACE"), "{}", out(&all));
    let yaml = a2a(h, &["get", "agent", "writer", "-o", "yaml"]);
    let obj: serde_json::Value = serde_yaml_ng::from_str(&out(&yaml)).expect("yaml");
    assert_eq!(obj["spec"]["replicas"], 2);
    assert!(obj["metadata"].get("managedFields").is_none());
    let rb = a2a(h, &["get", "rb"]);
    assert!(out(&rb).contains("quickstart"), "{}", out(&rb));

    let missing = a2a(h, &["get", "agent", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(err(&missing), "error: Agent \"nope\" not found in namespace \"default\"\n");

    let describe = a2a(h, &["describe", "agent", "writer"]);
    assert!(describe.status.success(), "{}", err(&describe));
    let d = out(&describe);
    assert!(d.starts_with("Name:         writer\nNamespace:    default\n"), "{d}");
    assert!(d.contains("Spec:\n") && d.contains("  replicas: 2"), "{d}");
    assert!(d.contains("Events:"), "{d}");

    // diff: no change, then a change.
    let same = a2a(h, &["diff", "-f", "examples/quickstart.yaml"]);
    assert_eq!(same.status.code(), Some(0), "{}{}", out(&same), err(&same));
    assert!(out(&same).is_empty());
    let changed_file = h.join("changed.yaml");
    let text = std::fs::read_to_string("examples/quickstart.yaml").expect("read").replace("replicas: 2", "replicas: 3");
    std::fs::write(&changed_file, text).expect("write");
    let diff = a2a(h, &["diff", "-f", changed_file.to_str().expect("utf-8")]);
    assert_eq!(diff.status.code(), Some(1), "{}", err(&diff));
    let d = out(&diff);
    assert!(d.contains("--- live/agent/writer") && d.contains("-  replicas: 2") && d.contains("+  replicas: 3"), "{d}");
    let applied = a2a(h, &["apply", "-f", changed_file.to_str().expect("utf-8")]);
    assert!(out(&applied).contains("agent/writer configured\n"), "{}", out(&applied));
    assert!(out(&applied).contains("agent/counter unchanged\n"));

    // Server-side dry run changes nothing.
    let dry = a2a(h, &["apply", "--dry-run=server", "-f", "examples/stdio-agent.yaml"]);
    assert!(dry.status.success(), "{}", err(&dry));
    assert!(out(&dry).contains("agent/rev created (server dry run)"), "{}", out(&dry));
    assert_eq!(a2a(h, &["get", "agent", "rev"]).status.code(), Some(1), "nothing was stored");

    let deleted = a2a(h, &["delete", "-f", "examples/quickstart.yaml", "--wait"]);
    assert!(deleted.status.success(), "{}", err(&deleted));
    assert_eq!(out(&deleted).lines().count(), 5);
    let none = a2a(h, &["get", "agents"]);
    assert!(out(&none).is_empty());
    assert_eq!(err(&none), "No resources found in default namespace.\n");
}

#[test]
fn prune_deletes_what_the_files_no_longer_hold() {
    let home = tempfile::tempdir().expect("tempdir");
    let _daemon = common::Daemon::spawn(home.path());
    let h = home.path();
    let agent = |name: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: {name}\n  labels: {{ app: demo }}\nspec:\n  command: [sleep, \"60\"]\n"
        )
    };
    let file = h.join("set.yaml");
    std::fs::write(&file, format!("{}---\n{}", agent("a"), agent("b"))).expect("write");
    let f = file.to_str().expect("utf-8");
    assert!(a2a(h, &["apply", "-f", f]).status.success());
    std::fs::write(&file, agent("a")).expect("write");
    let pruned = a2a(h, &["apply", "-f", f, "--prune", "-l", "app=demo"]);
    assert!(pruned.status.success(), "{}", err(&pruned));
    assert_eq!(out(&pruned), "agent/a unchanged\nagent/b pruned\n");
    let missing_selector = a2a(h, &["apply", "-f", f, "--prune"]);
    assert_eq!(missing_selector.status.code(), Some(2), "clap requires -l with --prune");
}

#[test]
fn wait_for_a_condition_times_out_with_a_clear_message() {
    let home = tempfile::tempdir().expect("tempdir");
    let _daemon = common::Daemon::spawn(home.path());
    let h = home.path();
    assert!(a2a(h, &["apply", "-f", "examples/stdio-agent.yaml"]).status.success());
    let w = a2a(h, &["wait", "wf/reverse", "--for=condition=Never", "--timeout", "300ms"]);
    assert_eq!(w.status.code(), Some(1));
    assert_eq!(err(&w), "error: timed out after 300ms waiting for workflow/reverse --for=condition=Never\n");
    let bad = a2a(h, &["wait", "wf/reverse", "--for=ready"]);
    assert_eq!(err(&bad), "error: --for=ready: use condition=TYPE[=STATUS], phase=PHASE or delete\n");
}

#[test]
fn apply_again_removes_a_label_and_a_limit_dropped_from_the_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let _daemon = common::Daemon::spawn(home.path());
    let h = home.path();
    let file = h.join("agent.yaml");
    let manifest = |extra_label: &str, pids: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: pinned\n  labels:\n    team: test\n{extra_label}\
             spec:\n  command: [sleep, \"100\"]\n  resources:\n    limits:\n      cpu: 500m\n{pids}"
        )
    };
    let path = file.to_str().unwrap();
    std::fs::write(&file, manifest("    tier: a\n", "      pids: 64\n")).unwrap();
    let first = a2a(h, &["apply", "-f", path]);
    assert_eq!(out(&first), "agent/pinned created\n", "{}", err(&first));

    std::fs::write(&file, manifest("", "")).unwrap();
    let second = a2a(h, &["apply", "-f", path]);
    assert_eq!(out(&second), "agent/pinned configured\n", "{}", err(&second));
    let got = a2a(h, &["get", "agent", "pinned", "-o", "json"]);
    let obj: serde_json::Value = serde_json::from_str(&out(&got)).expect("json");
    assert_eq!(obj["metadata"]["labels"], serde_json::json!({"team": "test"}));
    assert_eq!(obj["spec"]["resources"]["limits"], serde_json::json!({"cpu": "500m"}));
    assert!(obj["metadata"].get("managedFields").is_none(), "a2a get hides managedFields");

    let third = a2a(h, &["apply", "-f", path]);
    assert_eq!(out(&third), "agent/pinned unchanged\n", "{}", err(&third));
}
