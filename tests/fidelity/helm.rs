//! helm 4 with its default (Secret) storage driver, packaging an agent team: a chart of
//! Agents, a Workflow and a ResourceBudget (`charts/agent-team`).

use crate::harness::{Server, root};

fn chart() -> String {
    root().join("charts/agent-team").display().to_string()
}

fn helm_ok(s: &Server, args: &[&str]) -> String {
    let (ok, out, err) = s.helm(args);
    assert!(ok, "helm {args:?} failed:\n{out}{err}");
    out
}

fn names(s: &Server, kind: &str) -> Vec<String> {
    let mut out: Vec<String> = s.kubectl().ok(&["get", kind, "-A", "-o", "name"]).lines().map(str::to_string).collect();
    out.sort();
    out
}

/// install, status, get manifest, upgrade, history, rollback, uninstall: each step's objects
/// and release records are as helm expects, and uninstall leaves nothing.
#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls_an_agent_team() {
    let s = Server::start();
    let chart = chart();
    let out = helm_ok(&s, &["install", "team", &chart, "--wait"]);
    assert!(out.contains("STATUS: deployed") && out.contains("REVISION: 1"), "{out}");
    assert_eq!(names(&s, "agents"), ["agent.a2a.dev/team-reviewer", "agent.a2a.dev/team-writer"]);
    assert_eq!(names(&s, "workflows"), ["workflow.a2a.dev/team-review"]);
    assert_eq!(names(&s, "resourcebudgets"), ["resourcebudget.a2a.dev/team-budget"]);
    let status = helm_ok(&s, &["status", "team"]);
    assert!(status.contains("STATUS: deployed"), "{status}");
    let manifest = helm_ok(&s, &["get", "manifest", "team"]);
    assert_eq!(manifest.matches("kind: Agent\n").count(), 2, "{manifest}");
    assert!(manifest.contains("kind: Workflow") && manifest.contains("kind: ResourceBudget"), "{manifest}");

    helm_ok(&s, &["upgrade", "team", &chart, "--set", "memory=2Gi", "--set", "writerUrl=http://127.0.0.1:9201/"]);
    let k = s.kubectl();
    assert_eq!(k.ok(&["get", "rb", "team-budget", "-o", "jsonpath={.spec.limits.memory}"]), "2Gi");
    assert_eq!(k.ok(&["get", "agent", "team-writer", "-o", "jsonpath={.spec.url}"]), "http://127.0.0.1:9201/");
    helm_ok(&s, &["rollback", "team", "1"]);
    assert_eq!(k.ok(&["get", "rb", "team-budget", "-o", "jsonpath={.spec.limits.memory}"]), "1Gi");
    let history = helm_ok(&s, &["history", "team", "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let states: Vec<(i64, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["revision"].as_i64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "superseded"), (2, "superseded"), (3, "deployed")]);
    assert_eq!(names(&s, "secrets").len(), 3, "one release record per revision");

    let out = helm_ok(&s, &["uninstall", "team", "--wait"]);
    assert!(out.contains("uninstalled"), "{out}");
    for kind in ["agents", "workflows", "resourcebudgets", "secrets"] {
        assert!(names(&s, kind).is_empty(), "{kind} left after uninstall: {:?}", names(&s, kind));
    }
    assert_eq!(helm_ok(&s, &["list", "-A", "-q"]).trim(), "");
}

/// `install --dry-run=server` renders and validates against the server without creating
/// anything; `upgrade --install` installs when the release is absent and upgrades after.
#[test]
fn helm_dry_run_and_upgrade_install() {
    let s = Server::start();
    let chart = chart();
    let out = helm_ok(&s, &["install", "trial", &chart, "--dry-run=server"]);
    assert!(out.contains("STATUS: pending-install") && out.contains("kind: Workflow"), "{out}");
    assert!(names(&s, "agents").is_empty() && names(&s, "secrets").is_empty(), "a dry run created objects");
    let out = helm_ok(&s, &["upgrade", "--install", "crew", &chart, "--namespace", "default"]);
    assert!(out.contains("REVISION: 1"), "{out}");
    let out = helm_ok(&s, &["upgrade", "--install", "crew", &chart, "--set", "topic=budgets"]);
    assert!(out.contains("REVISION: 2"), "{out}");
    let topic = s.kubectl().ok(&["get", "wf", "crew-review", "-o", "jsonpath={.spec.params.topic}"]);
    assert_eq!(topic, "budgets");
    helm_ok(&s, &["uninstall", "crew"]);
    assert!(names(&s, "workflows").is_empty() && names(&s, "secrets").is_empty());
}
