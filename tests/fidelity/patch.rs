//! Strategic merge patch of the built-in kinds, as kubectl sends it: `patch` (its default
//! type), `label`, `annotate`, `edit` and client-side `apply`. Custom resources take none,
//! as the kube-apiserver serves none for them.

use crate::harness::{Kubectl, Server};

fn data(k: &Kubectl, name: &str) -> String {
    k.ok(&["get", "configmap", name, "-o", "jsonpath={.data}"])
}

/// `kubectl patch cm x -p '{"data":{"a":null}}'`: null removes the key, the rest stays.
#[test]
fn kubectl_patch_defaults_to_strategic_and_null_deletes() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok(&["create", "configmap", "x", "--from-literal=a=1", "--from-literal=b=2"]);
        let out = k.ok(&["patch", "configmap", "x", "-p", r#"{"data":{"a":null,"c":"3"}}"#]);
        assert_eq!(out.trim(), "configmap/x patched");
        assert_eq!(data(&k, "x"), r#"{"b":"2","c":"3"}"#);
        k.ok(&["delete", "configmap", "x"]);
    }
}

/// `kubectl label` and `annotate` of a Namespace, adding and removing.
#[test]
fn kubectl_label_and_annotate_a_namespace() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok(&["create", "namespace", "team"]);
    k.ok(&["label", "namespace", "team", "tier=gold", "owner=ops"]);
    k.ok(&["annotate", "namespace", "team", "note=hello"]);
    k.ok(&["label", "namespace", "team", "owner-"]);
    assert_eq!(
        k.ok(&["get", "ns", "team", "-o", "jsonpath={.metadata.labels.tier},{.metadata.labels.owner}"]),
        "gold,"
    );
    assert_eq!(k.ok(&["get", "ns", "team", "-o", "jsonpath={.metadata.annotations.note}"]), "hello");
    // The lifecycle's finalizer is kept (lists are merged or kept, never lost to a label).
    assert_eq!(k.ok(&["get", "ns", "team", "-o", "jsonpath={.spec.finalizers}"]), r#"["kubernetes"]"#);
}

/// `kubectl edit` of a ConfigMap and of a Namespace, with an editor that rewrites the file.
#[test]
fn kubectl_edit_a_config_map_and_a_namespace() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok(&["create", "configmap", "e", "--from-literal=colour=red"]);
    k.ok(&["create", "namespace", "edited"]);
    let editor = s.home.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i -e 's/colour: red/colour: blue/' -e 's/^  name: edited$/  name: edited\\n  labels:\\n    edited: \"yes\"/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for target in [["configmap", "e"], ["namespace", "edited"]] {
        let out = k.command(&["edit", target[0], target[1]]).env("KUBE_EDITOR", &editor).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("edited"), "{}", String::from_utf8_lossy(&out.stdout));
    }
    assert_eq!(data(&k, "e"), r#"{"colour":"blue"}"#);
    assert_eq!(k.ok(&["get", "ns", "edited", "-o", "jsonpath={.metadata.labels.edited}"]), "yes");
}

/// Client-side `kubectl apply` of a ConfigMap, then again with a key removed and one
/// changed: the three-way patch through last-applied removes and changes just those.
#[test]
fn client_side_apply_of_a_config_map_merges_three_ways() {
    let s = Server::start();
    let k = s.kubectl();
    let first = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels:\n    a: \"1\"\ndata:\n  keep: k\n  gone: g\n  change: before\n";
    assert_eq!(k.ok_stdin(&["apply", "-f", "-"], first).trim(), "configmap/app created");
    // A change made by someone else, which apply leaves alone.
    k.ok(&["label", "configmap", "app", "other=x"]);
    let second = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels:\n    a: \"1\"\ndata:\n  keep: k\n  change: after\n";
    assert_eq!(k.ok_stdin(&["apply", "-f", "-"], second).trim(), "configmap/app configured");
    assert_eq!(data(&k, "app"), r#"{"change":"after","keep":"k"}"#);
    assert_eq!(k.ok(&["get", "cm", "app", "-o", "jsonpath={.metadata.labels}"]), r#"{"a":"1","other":"x"}"#);
    assert_eq!(k.ok_stdin(&["apply", "-f", "-"], second).trim(), "configmap/app unchanged");
}

/// `$patch` directives through `kubectl patch --type strategic`, and lists merged by key.
#[test]
fn strategic_directives_and_merge_keys() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok(&["create", "configmap", "d", "--from-literal=a=1", "--from-literal=b=2"]);
    let p = |patch: &str| k.ok(&["patch", "configmap", "d", "--type", "strategic", "-p", patch]);
    p(r#"{"data":{"$patch":"replace","z":"26"}}"#);
    assert_eq!(data(&k, "d"), r#"{"z":"26"}"#);
    p(r#"{"metadata":{"finalizers":["x/one","x/two"],"ownerReferences":[
        {"apiVersion":"v1","kind":"ConfigMap","name":"p1","uid":"u1"},
        {"apiVersion":"v1","kind":"ConfigMap","name":"p2","uid":"u2"}]}}"#);
    // ownerReferences merge by uid; finalizers merge as a set.
    p(r#"{"metadata":{"finalizers":["x/three"],"ownerReferences":[{"uid":"u2","name":"renamed"}]}}"#);
    assert_eq!(k.ok(&["get", "cm", "d", "-o", "jsonpath={.metadata.ownerReferences[*].name}"]), "p1 renamed");
    // A new element goes before those the patch did not name, as Kubernetes orders them.
    assert_eq!(k.ok(&["get", "cm", "d", "-o", "jsonpath={.metadata.finalizers}"]), r#"["x/three","x/one","x/two"]"#);
    p(
        r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["x/one"],"ownerReferences":[{"uid":"u1","$patch":"delete"}]}}"#,
    );
    assert_eq!(k.ok(&["get", "cm", "d", "-o", "jsonpath={.metadata.ownerReferences[*].name}"]), "renamed");
    assert_eq!(k.ok(&["get", "cm", "d", "-o", "jsonpath={.metadata.finalizers}"]), r#"["x/three","x/two"]"#);
    // A directive that does not exist: 422, as the kube-apiserver refuses a bad patch.
    let (ok, _, err) =
        k.run(&["patch", "configmap", "d", "--type", "strategic", "-p", r#"{"data":{"$patch":"frobnicate"}}"#]);
    assert!(!ok && err.contains("The request is invalid") && err.contains("frobnicate"), "{err}");
    p(r#"{"metadata":{"finalizers":null}}"#);
}

/// A strategic merge patch of a custom resource: the kube-apiserver's 415, naming the patch
/// types custom resources take.
#[test]
fn strategic_merge_patch_of_an_a2a_kind_is_415() {
    let s = Server::start();
    let k = s.kubectl();
    let agent =
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: echo\nspec:\n  url: http://127.0.0.1:9/\n";
    k.ok_stdin(&["create", "-f", "-"], agent);
    let (ok, _, err) = k.run(&["patch", "agent", "echo", "-p", r#"{"metadata":{"labels":{"a":"b"}}}"#]);
    assert!(!ok);
    assert!(
        err.contains(
            // kubectl's words around the server's.
            "application/strategic-merge-patch+json is not supported by a2a.dev/v1alpha1, Kind=Agent: the body of the \
             request was in an unknown format - accepted media types include: application/json-patch+json, \
             application/merge-patch+json, application/apply-patch+yaml"
        ),
        "{err}"
    );
    k.ok(&["patch", "agent", "echo", "--type", "merge", "-p", r#"{"metadata":{"labels":{"a":"b"}}}"#]);
}
