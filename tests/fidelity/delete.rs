//! `kubectl delete` with every option, and the Python client's preconditions and
//! deletecollection, as the kube-apiserver carries them out.

use crate::harness::Server;
use crate::objects::{Running, agent, eventually, one_of_each, python, stream};

fn owned(name: &str, owner_uid: &str, block: bool) -> String {
    agent(name, "default", "app: x").replace(
        "  labels:",
        &format!(
            "  ownerReferences:\n  - apiVersion: a2a.dev/v1alpha1\n    kind: Agent\n    name: owner\n    uid: \
             {owner_uid}\n    blockOwnerDeletion: {block}\n  labels:"
        ),
    )
}

fn with_finalizer(manifest: &str) -> String {
    manifest.replace("  labels:", "  finalizers: [example.com/hold]\n  labels:")
}

/// `--dry-run=server` on every kind answers "deleted (server dry run)" and deletes nothing.
#[test]
fn dry_run_server_deletes_nothing() {
    let s = Server::start();
    let all = one_of_each("default");
    s.kubectl().ok_stdin(&["create", "-f", "-"], &stream(&all.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()));
    for k in s.kubectls() {
        for (kind, name, _) in &all {
            let out = k.ok(&["delete", kind, name, "--dry-run=server"]);
            assert!(out.contains(&format!("\"{name}\" deleted")) && out.contains("(server dry run)"), "{out}");
            k.ok(&["get", kind, name]);
        }
        let out = k.ok(&["delete", "ag,cm", "--all", "--dry-run=server"]);
        assert!(out.contains("(server dry run)"), "{out}");
        assert_eq!(k.ok(&["get", "ag,cm", "-o", "name"]).lines().count(), 2);
    }
}

/// `--cascade=orphan` keeps the dependent and drops its ownerReference; the default
/// (background) cascade deletes it after the owner.
#[test]
fn cascade_orphan_keeps_and_background_deletes_the_dependent() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &agent("owner", "default", ""));
        let uid = k.ok(&["get", "agent", "owner", "-o", "jsonpath={.metadata.uid}"]);
        k.ok_stdin(&["create", "-f", "-"], &owned("child", &uid, true));
        k.ok(&["delete", "agent", "owner", "--cascade=orphan"]);
        assert_eq!(k.ok(&["get", "agent", "child", "-o", "jsonpath={.metadata.name}"]), "child");
        assert_eq!(k.ok(&["get", "agent", "child", "-o", "jsonpath={.metadata.ownerReferences}"]), "");
        k.ok(&["delete", "agent", "child"]);

        k.ok_stdin(&["create", "-f", "-"], &agent("owner", "default", ""));
        let uid = k.ok(&["get", "agent", "owner", "-o", "jsonpath={.metadata.uid}"]);
        k.ok_stdin(&["create", "-f", "-"], &owned("child", &uid, false));
        k.ok(&["delete", "agent", "owner", "--cascade=background"]);
        eventually(&k, &["get", "agent", "child"], "the dependent deleted", |ok, _| !ok);
    }
}

/// `--cascade=foreground`: the owner is marked (`foregroundDeletion` finalizer) while a
/// blocking dependent held by a finalizer stays; kubectl waits; once the dependent goes,
/// the owner goes and kubectl returns.
#[test]
fn cascade_foreground_waits_for_blocking_dependents() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &agent("owner", "default", ""));
        let uid = k.ok(&["get", "agent", "owner", "-o", "jsonpath={.metadata.uid}"]);
        k.ok_stdin(&["create", "-f", "-"], &with_finalizer(&owned("child", &uid, true)));
        let deleting = Running::start(&k, &["delete", "agent", "owner", "--cascade=foreground"]);
        eventually(
            &k,
            &["get", "agent", "owner", "-o", "jsonpath={.metadata.finalizers}"],
            "owner marked",
            |_, out| out.contains("foregroundDeletion"),
        );
        eventually(
            &k,
            &["get", "agent", "child", "-o", "jsonpath={.metadata.deletionTimestamp}"],
            "child marked",
            |_, out| !out.is_empty(),
        );
        k.ok(&["get", "agent", "owner"]);
        k.ok(&["patch", "agent", "child", "--type", "merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
        let (ok, out) = deleting.finish();
        assert!(ok && out.contains("\"owner\" deleted"), "{out}");
        let (ok, _, err) = k.run(&["get", "agent", "owner"]);
        assert!(!ok && err.contains("NotFound"), "{err}");
    }
}

/// `--grace-period` (custom resources and ConfigMaps have no graceful deletion, so it is
/// accepted and changes nothing) and `--force --grace-period=0` ("force deleted").
#[test]
fn grace_period_and_force() {
    let s = Server::start();
    for k in s.kubectls() {
        for (kind, name, manifest) in one_of_each("default").into_iter().filter(|(k, _, _)| *k != "namespace") {
            k.ok_stdin(&["create", "-f", "-"], &manifest);
            let out = k.ok(&["delete", kind, name, "--grace-period=30"]);
            assert!(out.contains(&format!("\"{name}\" deleted")), "{out}");
            k.ok_stdin(&["create", "-f", "-"], &manifest);
            let (ok, out, err) = k.run(&["delete", kind, name, "--grace-period=0", "--force"]);
            assert!(ok && out.contains(&format!("\"{name}\" force deleted")), "{out}{err}");
            assert!(err.contains("Immediate deletion does not wait for confirmation"), "{err}");
            let (ok, _, _) = k.run(&["get", kind, name]);
            assert!(!ok, "{kind} left after a forced delete");
        }
    }
}

/// `--wait` (the default) returns once an object held by a finalizer is gone; `--wait=false`
/// returns at once and leaves it marked; `--timeout` gives up with kubectl's error.
#[test]
fn wait_follows_the_finalizer() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &with_finalizer(&agent("held", "default", "")));
        let out = k.ok(&["delete", "agent", "held", "--wait=false"]);
        assert!(out.contains("\"held\" deleted"), "{out}");
        let marked = k.ok(&["get", "agent", "held", "-o", "jsonpath={.metadata.deletionTimestamp}"]);
        assert!(!marked.is_empty(), "not marked for deletion");
        let (ok, _, err) = k.run(&["delete", "agent", "held", "--timeout=2s"]);
        assert!(!ok && err.contains("timed out waiting"), "{err}");
        // -v=6 logs each request: the finalizer goes only after kubectl's DELETE was answered.
        let mut waiting = Running::start(&k, &["delete", "agent", "held", "-v=6"]);
        waiting.expect("kubectl's DELETE", |l| l.contains("DELETE") && l.contains("/agents/held"));
        k.ok(&["patch", "agent", "held", "--type", "merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
        let (ok, out) = waiting.finish();
        assert!(ok, "{out}");
        let (ok, _, err) = k.run(&["get", "agent", "held"]);
        assert!(!ok && err.contains("NotFound"), "{err}");
    }
}

/// `delete -l` deletes what the selector matches, in the namespace asked for, and nothing
/// else; `delete --all` empties one namespace and leaves the others.
#[test]
fn by_label_selector_and_all() {
    let s = Server::start();
    for k in s.kubectls() {
        let objects = stream(&[
            crate::objects::namespace("other"),
            agent("a", "default", "team: x"),
            agent("b", "default", "team: z"),
            agent("c", "other", "team: x"),
            crate::objects::configmap("cx", "default").replace("metadata:", "metadata:\n  labels: {team: x}"),
        ]);
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &objects);
        let out = k.ok(&["delete", "ag,cm", "-l", "team=x"]);
        assert!(out.contains("agent.a2a.dev \"a\" deleted") && out.contains("configmap \"cx\" deleted"), "{out}");
        assert!(!out.contains("\"b\"") && !out.contains("\"c\""), "{out}");
        assert_eq!(k.ok(&["get", "ag", "-A", "-o", "name"]).lines().count(), 2);
        let out = k.ok(&["delete", "ag", "-l", "team in (x,z)", "-n", "other"]);
        assert!(out.contains("\"c\" deleted") && !out.contains("\"b\""), "{out}");
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &objects);
        let out = k.ok(&["delete", "ag", "--all", "-n", "default"]);
        assert!(out.contains("\"a\" deleted") && out.contains("\"b\" deleted") && !out.contains("\"c\""), "{out}");
        assert_eq!(k.ok(&["get", "ag", "-A", "-o", "name"]).trim(), "agent.a2a.dev/c");
        let (ok, out, err) = k.run(&["delete", "ag", "-l", "team=nobody"]);
        assert!(ok && format!("{out}{err}").contains("No resources found"), "{out}{err}");
        k.ok(&["delete", "ns", "other"]);
        k.ok(&["delete", "cm", "--all"]);
    }
}

/// Deleting what is not there: NotFound (`agents.a2a.dev "ghost" not found`), and nothing
/// with `--ignore-not-found`.
#[test]
fn not_found_and_ignore_not_found() {
    let s = Server::start();
    for k in s.kubectls() {
        let (ok, _, err) = k.run(&["delete", "agent", "ghost"]);
        assert!(!ok && err.contains("agents.a2a.dev \"ghost\" not found"), "{err}");
        let (ok, out, err) = k.run(&["delete", "agent", "ghost", "--ignore-not-found"]);
        assert!(ok && out.is_empty() && err.is_empty(), "{out}{err}");
    }
}

/// The Python client's `V1DeleteOptions` preconditions: a uid or resourceVersion that does
/// not match is a 409 Conflict with the kube-apiserver's "Precondition failed" words, and
/// the matching ones delete; `propagation_policy` and `dry_run` ride along.
#[test]
fn python_preconditions_and_options() {
    let s = Server::start();
    python(
        &s,
        r#"
a = co.create_namespaced_custom_object(*AG, agent("p"))
uid, rv = a["metadata"]["uid"], a["metadata"]["resourceVersion"]
for pre in (client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000"),
            client.V1Preconditions(resource_version=str(int(rv) + 100))):
    e = refused(co.delete_namespaced_custom_object, *AG, "p", body=client.V1DeleteOptions(preconditions=pre))
    assert e.status == 409, e
    b = body(e)
    assert b["reason"] == "Conflict" and "Precondition failed" in b["message"], b
co.delete_namespaced_custom_object(*AG, "p", body=client.V1DeleteOptions(dry_run=["All"], propagation_policy="Foreground"))
assert co.get_namespaced_custom_object(*AG, "p")["metadata"]["uid"] == uid
e = refused(co.delete_namespaced_custom_object, *AG, "p", body=client.V1DeleteOptions(propagation_policy="Sideways"))
assert e.status == 422, e
out = co.delete_namespaced_custom_object(*AG, "p", body=client.V1DeleteOptions(
    preconditions=client.V1Preconditions(uid=uid, resource_version=rv), grace_period_seconds=0))
e = refused(co.get_namespaced_custom_object, *AG, "p")
assert e.status == 404, e
# The same on a ConfigMap, through the typed client.
cm = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
e = refused(core.delete_namespaced_config_map, "c", "default",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")))
assert e.status == 409 and "Precondition failed" in body(e)["message"], body(e)
core.delete_namespaced_config_map("c", "default", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=cm.metadata.uid)))
"#,
    );
}

/// DeleteCollection through the Python client: custom objects and ConfigMaps, by label
/// selector, with a dry run that deletes nothing; the namespaces collection cannot be
/// deleted (405, as on a kube-apiserver, which serves no deletecollection for namespaces).
#[test]
fn python_delete_collection() {
    let s = Server::start();
    python(
        &s,
        r#"
for n, team in (("a", "x"), ("b", "x"), ("c", "y")):
    co.create_namespaced_custom_object(*AG, agent(n, {"team": team}))
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=n, labels={"team": team})))
co.delete_collection_namespaced_custom_object(*AG, label_selector="team=x", dry_run="All")
assert len(co.list_namespaced_custom_object(*AG)["items"]) == 3
co.delete_collection_namespaced_custom_object(*AG, label_selector="team=x")
names = sorted(i["metadata"]["name"] for i in co.list_namespaced_custom_object(*AG)["items"])
assert names == ["c"], names
core.delete_collection_namespaced_config_map("default", label_selector="team=x")
names = sorted(c.metadata.name for c in core.list_namespaced_config_map("default").items)
assert names == ["c"], names
core.delete_collection_namespaced_config_map("default", field_selector="metadata.name=c")
assert core.list_namespaced_config_map("default").items == []
e = refused(core.api_client.call_api, "/api/v1/namespaces", "DELETE", auth_settings=["BearerToken"], response_type="object")
assert e.status == 405, e
"#,
    );
}
