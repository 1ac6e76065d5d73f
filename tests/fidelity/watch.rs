//! Watches as kubectl and the Python client make them: `get -w`, `watch.Watch()` from a
//! resourceVersion, selectors, bookmarks, timeouts and 410 Gone.

use crate::harness::Server;
use crate::objects::{Running, agent, python};

/// `kubectl get -w --output-watch-events` prints the object, then each later change with its
/// event type (ADDED, MODIFIED, DELETED), for an a2a kind and for ConfigMaps.
#[test]
fn kubectl_get_watch_prints_every_change() {
    let s = Server::start();
    for k in s.kubectls() {
        for (kind, manifest) in
            [("agents", agent("w", "default", "")), ("configmaps", crate::objects::configmap("w", "default"))]
        {
            k.ok_stdin(&["create", "-f", "-"], &manifest);
            // -v=6 logs the watch request: the changes come after it.
            let mut w = Running::start(&k, &["get", kind, "-w", "--output-watch-events", "-v=6"]);
            w.expect("the listed object", |l| l.split_whitespace().take(2).eq(["ADDED", "w"]));
            w.expect("the watch request", |l| l.contains("watch=true") && l.contains("200 OK"));
            k.ok(&["label", kind, "w", "changed=yes"]);
            w.expect("the change", |l| l.split_whitespace().take(2).eq(["MODIFIED", "w"]));
            k.ok(&["delete", kind, "w"]);
            w.expect("the deletion", |l| l.split_whitespace().take(2).eq(["DELETED", "w"]));
        }
    }
}

/// `kubectl get -w --watch-only -l` shows only later changes of the objects the selector
/// matches.
#[test]
fn kubectl_watch_only_with_a_label_selector() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &agent("before", "default", "team: x"));
        let mut w =
            Running::start(&k, &["get", "ag", "-l", "team=x", "-w", "--watch-only", "--output-watch-events", "-v=6"]);
        w.expect("the watch request", |l| {
            l.contains("watch=true") && l.contains("labelSelector=team") && l.contains("200 OK")
        });
        k.ok_stdin(&["create", "-f", "-"], &agent("other", "default", "team: z"));
        k.ok_stdin(&["create", "-f", "-"], &agent("mine", "default", "team: x"));
        w.expect("the matching object", |l| l.split_whitespace().take(2).eq(["ADDED", "mine"]));
        k.ok(&["delete", "ag", "--all"]);
        w.expect("its deletion", |l| {
            l.split_whitespace().take(2).eq(["DELETED", "mine"]) || l.contains("DELETED   before")
        });
        let rows: Vec<&String> =
            w.seen.iter().filter(|l| l.starts_with("ADDED") || l.starts_with("MODIFIED")).collect();
        assert!(rows.iter().all(|l| l.contains("mine")), "{rows:?}");
        assert!(!w.seen.iter().any(|l| l.split_whitespace().nth(1) == Some("other")), "{:?}", w.seen);
    }
}

/// `watch.Watch().stream(...)` from a list's resourceVersion replays exactly the later
/// events in order, and `timeout_seconds` ends the stream cleanly.
#[test]
fn python_watch_from_a_resource_version_replays_later_events() {
    let s = Server::start();
    python(
        &s,
        r#"
co.create_namespaced_custom_object(*AG, agent("old"))
rv = co.list_namespaced_custom_object(*AG)["metadata"]["resourceVersion"]
co.create_namespaced_custom_object(*AG, agent("a"))
co.patch_namespaced_custom_object(*AG, "a", {"spec": {"replicas": 2}})
co.delete_namespaced_custom_object(*AG, "a")
seen = [(e["type"], e["object"]["metadata"]["name"]) for e in
        watch.Watch().stream(co.list_namespaced_custom_object, *AG, resource_version=rv, timeout_seconds=2)]
assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")], seen
# From "0" or none: the current state first, as ADDED.
w = watch.Watch()
for e in w.stream(co.list_namespaced_custom_object, *AG, timeout_seconds=2):
    assert (e["type"], e["object"]["metadata"]["name"]) == ("ADDED", "old"), e
    w.stop()
"#,
    );
}

/// Label and field selectors on watches, for custom objects and through the typed
/// CoreV1Api (whose events carry V1ConfigMap objects): an object leaving the selection by a
/// label change is seen as DELETED, as the kube-apiserver's watch cache sends it.
#[test]
fn python_watch_with_label_and_field_selectors() {
    let s = Server::start();
    python(
        &s,
        r#"
rv = co.list_namespaced_custom_object(*AG)["metadata"]["resourceVersion"]
co.create_namespaced_custom_object(*AG, agent("a", {"team": "x"}))
co.create_namespaced_custom_object(*AG, agent("b", {"team": "z"}))
co.patch_namespaced_custom_object(*AG, "a", {"metadata": {"labels": {"team": "z"}}})
seen = [(e["type"], e["object"]["metadata"]["name"]) for e in
        watch.Watch().stream(co.list_namespaced_custom_object, *AG, resource_version=rv, timeout_seconds=2, label_selector="team=x")]
assert seen == [("ADDED", "a"), ("DELETED", "a")], seen
seen = [(e["type"], e["object"]["metadata"]["name"]) for e in
        watch.Watch().stream(co.list_namespaced_custom_object, *AG, resource_version=rv, timeout_seconds=2, field_selector="metadata.name=b")]
assert seen == [("ADDED", "b")], seen
rv = core.list_namespaced_config_map("default").metadata.resource_version
for n in ("c1", "c2"):
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=n, labels={"n": n})))
seen = [(e["type"], type(e["object"]).__name__, e["object"].metadata.name) for e in
        watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2, field_selector="metadata.name!=c1")]
assert seen == [("ADDED", "V1ConfigMap", "c2")], seen
seen = [e["object"].metadata.name for e in
        watch.Watch().stream(core.list_config_map_for_all_namespaces, resource_version=rv, timeout_seconds=2, label_selector="n in (c1)")]
assert seen == ["c1"], seen
"#,
    );
}

/// `allow_watch_bookmarks=True`: a quiet watch gets BOOKMARK events whose object is the
/// kind with only `metadata.resourceVersion` (the server sends one every 10 s; the
/// kube-apiserver about every minute).
#[test]
fn python_watch_gets_bookmarks() {
    let s = Server::start();
    python(
        &s,
        r#"
co.create_namespaced_custom_object(*AG, agent("a"))
rv = co.list_namespaced_custom_object(*AG)["metadata"]["resourceVersion"]
w = watch.Watch()
bookmark = None
for e in w.stream(co.list_namespaced_custom_object, *AG, resource_version=rv, timeout_seconds=25, allow_watch_bookmarks=True):
    if e["type"] == "BOOKMARK":
        bookmark = e["object"]
        w.stop()
assert bookmark is not None, "no bookmark in 25 s"
assert bookmark["kind"] == "Agent" and bookmark["apiVersion"] == "a2a.dev/v1alpha1", bookmark
assert int(bookmark["metadata"]["resourceVersion"]) >= int(rv), bookmark
assert "name" not in bookmark["metadata"], bookmark
"#,
    );
}

/// A watch from a resourceVersion older than the server's history (here pushed out by 70
/// writes of 1 MB) ends in an ERROR event with the kube-apiserver's 410 Expired ("too old
/// resource version: 2 (N)"), which the Python client raises as ApiException(410); a new
/// list and watch from its resourceVersion works.
#[test]
fn python_watch_from_a_compacted_version_is_410() {
    let s = Server::start();
    python(
        &s,
        r#"
cm = core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="big"), data={"x": ""}))
old = cm.metadata.resource_version
for i in range(70):
    core.replace_namespaced_config_map("big", "default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="big"), data={"x": str(i % 10) * 1_000_000}))
e = refused(lambda: list(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5)))
assert e.status == 410, e
assert "too old resource version: %s" % old in str(e.reason), e.reason
rv = core.list_namespaced_config_map("default").metadata.resource_version
core.delete_namespaced_config_map("big", "default")
seen = [(e["type"], e["object"].metadata.name) for e in
        watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2)]
assert seen == [("DELETED", "big")], seen
"#,
    );
}

/// A watch on namespaces (CoreV1Api, cluster-scoped) follows a deletion as the namespace
/// controller carries it out: MODIFIED to `Terminating`, then DELETED.
#[test]
fn python_watch_follows_a_namespace_deletion() {
    let s = Server::start();
    python(
        &s,
        r#"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="short")))
co.create_namespaced_custom_object("a2a.dev", "v1alpha1", "short", "agents", agent("a", namespace="short"))
rv = core.list_namespace().metadata.resource_version
core.delete_namespace("short")
seen = []
w = watch.Watch()
for e in w.stream(core.list_namespace, resource_version=rv, field_selector="metadata.name=short", timeout_seconds=20):
    seen.append((e["type"], e["object"].status.phase))
    if e["type"] == "DELETED":
        w.stop()
assert seen[0] == ("MODIFIED", "Terminating"), seen
assert seen[-1][0] == "DELETED", seen
"#,
    );
}
