//! Backup and restore as people do it with kubectl: `get -o yaml` of what matters (a
//! `kind: List`), delete everything, `apply -f` the file.

use crate::harness::{Kubectl, Server};
use crate::objects::{agent, budget, configmap, eventually, file, namespace, stream, workflow};

/// Creates agents, a workflow, a budget and ConfigMaps in two namespaces, backs them up with
/// `kubectl get ag,wf,rb,cm -A -o yaml`, deletes them, restores with `apply_args` and
/// checks that specs, labels, annotations and data came back.
fn round_trip(s: &Server, k: &Kubectl, apply_args: &[&str]) {
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &stream(&[
            namespace("team"),
            agent("echo", "default", "app: x"),
            agent("helper", "team", "app: z"),
            workflow("flow", "team"),
            budget("pool"),
            configmap("settings", "team"),
        ]),
    );
    k.ok(&["annotate", "ag", "echo", "note=kept"]);
    k.ok(&["patch", "ag", "helper", "-n", "team", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    let before = k.ok(&["get", "ag,wf,rb,cm", "-A", "-o", "name"]);
    let backup = k.ok(&["get", "ag,wf,rb,cm", "-A", "-o", "yaml"]);
    assert!(backup.starts_with("apiVersion: v1\nitems:\n"), "{backup}");
    assert!(backup.contains("kind: List"), "{backup}");
    let path = file(s, "backup.yaml", &backup);

    k.ok(&["delete", "ag,wf,cm", "--all", "-A"]);
    k.ok(&["delete", "rb", "--all"]);
    eventually(k, &["get", "ag,wf,rb,cm", "-A", "-o", "name"], "everything deleted", |_, out| out.trim().is_empty());

    let mut args = vec!["apply"];
    args.extend_from_slice(apply_args);
    args.extend_from_slice(&["-f", &path]);
    let out = k.ok(&args);
    for name in ["agent.a2a.dev/echo", "agent.a2a.dev/helper", "workflow.a2a.dev/flow", "resourcebudget.a2a.dev/pool"] {
        assert!(out.contains(name), "{name} not restored:\n{out}");
    }
    assert_eq!(k.ok(&["get", "ag,wf,rb,cm", "-A", "-o", "name"]), before);
    assert_eq!(
        k.ok(&["get", "ag", "echo", "-o", "jsonpath={.metadata.labels.app} {.metadata.annotations.note}"]),
        "x kept"
    );
    assert_eq!(k.ok(&["get", "ag", "helper", "-n", "team", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert_eq!(k.ok(&["get", "wf", "flow", "-n", "team", "-o", "jsonpath={.spec.tasks[0].message}"]), "hello");
    assert_eq!(k.ok(&["get", "rb", "pool", "-o", "jsonpath={.spec.limits.memory}"]), "1Gi");
    assert_eq!(k.ok(&["get", "cm", "settings", "-n", "team", "-o", "jsonpath={.data.a}"]), "1");
    // Applied again, the backup's old resourceVersions conflict, as on a kube-apiserver
    // (a merge patch carrying metadata.resourceVersion is a precondition).
    let (ok, _, err) = k.run(&args);
    assert!(!ok && err.contains("the object has been modified"), "{err}");
    k.ok(&["delete", "ag,wf,cm", "--all", "-A"]);
    k.ok(&["delete", "rb", "--all"]);
    k.ok(&["delete", "ns", "team"]);
}

/// `kubectl apply -f backup.yaml` as typed: kubectl validates a `kind: List` against the
/// OpenAPI v2 document (`GET /openapi/v2`), so the restore needs it.
#[test]
fn backup_restores_with_apply() {
    let s = Server::start();
    for k in s.kubectls() {
        round_trip(&s, &k, &[]);
    }
}

/// `kubectl apply --server-side -f backup.yaml`.
#[test]
fn backup_restores_with_server_side_apply() {
    let s = Server::start();
    for k in s.kubectls() {
        round_trip(&s, &k, &["--server-side"]);
    }
}

/// `kubectl apply --validate=false -f backup.yaml`: the objects themselves are taken back
/// (the server checks them whatever kubectl does).
#[test]
fn backup_restores_with_apply_without_client_validation() {
    let s = Server::start();
    for k in s.kubectls() {
        round_trip(&s, &k, &["--validate=false"]);
    }
}
