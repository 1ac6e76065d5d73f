//! A namespace's life as the namespace controller runs it: created Active with the
//! `kubernetes` finalizer, Terminating while content (and content's finalizers) remain, the
//! content removed, then gone; creates into it refused meanwhile.

use crate::harness::Server;
use crate::objects::{Running, agent, configmap, eventually, namespace, python, secret, stream, workflow};

/// A new namespace is `Active`, carries the `kubernetes` finalizer in its spec, and takes
/// objects of every namespaced kind; `-n` scopes what kubectl lists.
#[test]
fn a_new_namespace_is_active_and_holds_objects() {
    let s = Server::start();
    for (i, k) in s.kubectls().into_iter().enumerate() {
        let ns = format!("team{i}");
        k.ok_stdin(&["create", "-f", "-"], &namespace(&ns));
        assert_eq!(
            k.ok(&["get", "ns", &ns, "-o", "jsonpath={.status.phase} {.spec.finalizers}"]),
            "Active [\"kubernetes\"]"
        );
        let row = k.ok(&["get", "ns", &ns, "--no-headers"]);
        assert!(row.split_whitespace().nth(1) == Some("Active"), "{row}");
        k.ok_stdin(
            &["create", "-f", "-"],
            &stream(&[agent("a", &ns, ""), workflow("w", &ns), configmap("c", &ns), secret("s", &ns)]),
        );
        assert_eq!(k.ok(&["get", "ag,wf,cm,secret", "-n", &ns, "-o", "name"]).lines().count(), 4);
        assert_eq!(k.ok(&["get", "ag,wf,cm,secret", "-o", "name"]).lines().count(), 0, "the default namespace");
        let all = k.ok(&["get", "ag", "-A", "--no-headers"]);
        assert!(all.lines().any(|l| l.starts_with(&ns)), "the NAMESPACE column: {all}");
    }
}

/// Deleting a namespace with content held by a finalizer: kubectl shows it `Terminating`,
/// the namespace controller's conditions name what remains, a create into it is refused
/// ("unable to create new content in namespace doomed because it is being terminated"),
/// the rest of its content goes, and once the finalizer is removed the namespace is gone.
#[test]
fn a_deleted_namespace_terminates_until_its_content_is_gone() {
    let s = Server::start();
    for k in s.kubectls() {
        let held = agent("held", "doomed", "").replace("  labels:", "  finalizers: [a2a.dev/test]\n  labels:");
        k.ok_stdin(
            &["apply", "--server-side", "-f", "-"],
            &stream(&[namespace("doomed"), held, agent("free", "doomed", ""), configmap("c", "doomed")]),
        );
        let out = k.ok(&["delete", "namespace", "doomed", "--wait=false"]);
        assert!(out.contains("namespace \"doomed\" deleted"), "{out}");
        let row = k.ok(&["get", "ns", "doomed", "--no-headers"]);
        assert!(row.contains("Terminating"), "{row}");
        eventually(
            &k,
            &[
                "get",
                "ns",
                "doomed",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"NamespaceContentRemaining\")].message}",
            ],
            "the namespace controller's condition",
            |_, out| out == "Some resources are remaining: agents.a2a.dev has 1 resource instances",
        );
        let finalizers = k.ok(&[
            "get",
            "ns",
            "doomed",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}",
        ]);
        assert_eq!(
            finalizers,
            "Some content in the namespace has finalizers remaining: a2a.dev/test in 1 resource instances"
        );
        eventually(&k, &["get", "ag,cm", "-n", "doomed", "-o", "name"], "the free content gone", |_, out| {
            out.trim() == "agent.a2a.dev/held"
        });
        let (ok, _, err) = k.run_stdin(&["create", "-f", "-"], &configmap("late", "doomed"));
        assert!(!ok, "a create into a terminating namespace was accepted");
        assert!(
            err.contains("unable to create new content in namespace doomed because it is being terminated"),
            "{err}"
        );
        // -v=6 logs kubectl wait's first GET: the namespace is still there when it starts.
        let mut waiting = Running::start(&k, &["wait", "--for=delete", "namespace/doomed", "--timeout=30s", "-v=6"]);
        waiting.expect("kubectl wait's first look", |l| {
            l.contains("GET") && l.contains("namespaces") && l.contains("200")
        });
        k.ok(&["patch", "agent", "held", "-n", "doomed", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
        let (ok, out) = waiting.finish();
        assert!(ok && out.contains("namespace/doomed condition met"), "{out}");
        let (ok, _, err) = k.run(&["get", "ns", "doomed"]);
        assert!(!ok && err.contains("namespaces \"doomed\" not found"), "{err}");
    }
}

/// The same refusal as the Python client sees it: 403 Forbidden, reason `Forbidden`, with a
/// `NamespaceTerminating` cause on `metadata.namespace`; an update of what is left is still
/// served (so finalizers can be removed).
#[test]
fn python_create_into_a_terminating_namespace_is_forbidden() {
    let s = Server::start();
    python(
        &s,
        r#"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="ending")))
held = agent("held", namespace="ending")
held["metadata"]["finalizers"] = ["a2a.dev/test"]
G = ("a2a.dev", "v1alpha1", "ending", "agents")
co.create_namespaced_custom_object(*G, held)
ns = core.delete_namespace("ending")
for _ in range(300):
    if core.read_namespace("ending").status.phase == "Terminating":
        break
    time.sleep(0.1)
assert core.read_namespace("ending").metadata.deletion_timestamp is not None
for create in (lambda: co.create_namespaced_custom_object(*G, agent("late", namespace="ending")),
               lambda: core.create_namespaced_config_map("ending", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late")))):
    e = refused(create)
    b = body(e)
    assert e.status == 403 and b["reason"] == "Forbidden", b
    assert "because it is being terminated" in b["message"], b
    causes = b["details"]["causes"]
    assert any(c.get("reason") == "NamespaceTerminating" and c.get("field") == "metadata.namespace" for c in causes), causes
co.patch_namespaced_custom_object(*G, "held", {"metadata": {"labels": {"still": "served"}}})
co.patch_namespaced_custom_object(*G, "held", {"metadata": {"finalizers": None}})
for _ in range(300):
    try:
        core.read_namespace("ending")
    except ApiException as e:
        assert e.status == 404, e
        break
    time.sleep(0.1)
else:
    raise AssertionError("the namespace is still there")
"#,
    );
}

/// A create into a namespace that does not exist is a 404 `namespaces "nope" not found`, as
/// from the kube-apiserver's NamespaceLifecycle admission; `default` cannot be deleted
/// (403); and a deleted namespace can be created again, empty and with a new uid.
#[test]
fn missing_default_and_recreated_namespaces() {
    let s = Server::start();
    for k in s.kubectls() {
        let (ok, _, err) = k.run_stdin(&["create", "-f", "-"], &agent("a", "nope", ""));
        assert!(!ok && err.contains("namespaces \"nope\" not found"), "{err}");
        let (ok, _, err) = k.run(&["delete", "ns", "default"]);
        assert!(!ok && err.contains("Forbidden"), "{err}");
        assert!(err.contains("this namespace may not be deleted"), "{err}");
        k.ok_stdin(&["create", "-f", "-"], &stream(&[namespace("again"), configmap("c", "again")]));
        let uid = k.ok(&["get", "ns", "again", "-o", "jsonpath={.metadata.uid}"]);
        k.ok(&["delete", "ns", "again"]);
        k.ok_stdin(&["create", "-f", "-"], &namespace("again"));
        assert_ne!(k.ok(&["get", "ns", "again", "-o", "jsonpath={.metadata.uid}"]), uid);
        let (_, out, err) = k.run(&["get", "cm", "-n", "again", "-o", "name"]);
        assert!(out.is_empty(), "content came back: {out}{err}");
        k.ok(&["delete", "ns", "again"]);
    }
}

/// Deleting a namespace removes the objects of every namespaced kind in it and nothing
/// outside it (other namespaces, cluster-scoped ResourceBudgets).
#[test]
fn namespace_deletion_removes_every_namespaced_kind_only() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(
            &["create", "-f", "-"],
            &stream(&[
                namespace("gone"),
                agent("a", "gone", ""),
                workflow("w", "gone"),
                configmap("c", "gone"),
                secret("s", "gone"),
                agent("stays", "default", ""),
                crate::objects::budget("team"),
            ]),
        );
        k.ok(&["delete", "ns", "gone"]);
        let (ok, _, err) = k.run(&["get", "ns", "gone"]);
        assert!(!ok && err.contains("not found"), "{err}");
        assert_eq!(k.ok(&["get", "ag,wf,cm,secret", "-A", "-o", "name"]).trim(), "agent.a2a.dev/stays");
        k.ok(&["get", "rb", "team"]);
        k.ok(&["delete", "ag", "stays"]);
        k.ok(&["delete", "rb", "team"]);
    }
}
