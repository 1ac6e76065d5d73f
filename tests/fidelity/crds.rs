//! The a2a CRDs under `apiextensions.k8s.io/v1`, as GitOps repositories that carry the
//! chart's CRDs see them on a cluster that has them installed.

use crate::harness::{Server, root};

fn chart_crds() -> String {
    root().join("charts/a2a/crds").display().to_string()
}

/// `kubectl get crd` lists the three; each is Established with its names accepted, and
/// `kubectl wait --for=condition=Established` returns at once.
#[test]
fn the_crds_are_listed_established_with_accepted_names() {
    let s = Server::start();
    let k = s.kubectl();
    let names = k.ok(&["get", "crd", "-o", "name"]);
    for n in ["agents.a2a.dev", "workflows.a2a.dev", "resourcebudgets.a2a.dev"] {
        assert!(names.lines().any(|l| l == format!("customresourcedefinition.apiextensions.k8s.io/{n}")), "{names}");
    }
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["get", "crd", "agents.a2a.dev", "-o", "json"])).unwrap();
    let conditions = v["status"]["conditions"].as_array().unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(conditions.iter().any(|c| c["type"] == t && c["status"] == "True"), "{t}: {conditions:?}");
    }
    assert_eq!(v["status"]["acceptedNames"]["kind"], "Agent");
    assert_eq!(v["status"]["acceptedNames"]["shortNames"], serde_json::json!(["ag"]));
    assert_eq!(v["status"]["storedVersions"], serde_json::json!(["v1alpha1"]));
    k.ok(&["wait", "--for=condition=Established", "crd/workflows.a2a.dev", "--timeout=30s"]);
}

/// uid, creationTimestamp and resourceVersion stay the same across a restart of the server
/// on the same home; the timestamp is in whole seconds.
#[test]
fn the_crds_identity_survives_a_restart() {
    let s = Server::start();
    let get = |s: &Server| {
        s.kubectl().ok(&[
            "get",
            "crd",
            "resourcebudgets.a2a.dev",
            "-o",
            "jsonpath={.metadata.uid} {.metadata.creationTimestamp} {.metadata.resourceVersion}",
        ])
    };
    let before = get(&s);
    let home = s.home;
    drop(s.daemon);
    let again = Server { daemon: crate::common::Daemon::spawn_with(home.path(), None, &[]), home };
    assert_eq!(get(&again), before);
    let created = before.split(' ').nth(1).unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
}

/// Applying the chart's CRDs, client-side, server-side (with and without a dry run) and by
/// replace, is accepted and changes nothing; `kubectl diff` then shows nothing.
#[test]
fn applying_the_charts_crds_is_a_no_op() {
    let s = Server::start();
    let k = s.kubectl();
    let dir = chart_crds();
    let before = k.ok(&["get", "crd", "-o", "yaml"]);
    let out = k.ok(&["apply", "--server-side", "--dry-run=server", "-f", &dir]);
    assert_eq!(out.matches("serverside-applied").count(), 3, "{out}");
    let out = k.ok(&["apply", "--server-side", "-f", &dir]);
    assert_eq!(out.matches("serverside-applied").count(), 3, "{out}");
    let out = k.ok(&["apply", "-f", &dir]);
    assert_eq!(out.matches("configured").count(), 3, "{out}");
    k.ok(&["replace", "-f", &dir]);
    let (ok, out, err) = k.run(&["diff", "--server-side", "-f", &dir]);
    assert!(ok, "kubectl diff found differences:\n{out}{err}");
    assert_eq!(k.ok(&["get", "crd", "-o", "yaml"]), before);
}

/// A different spec is refused with 422 Invalid naming the CRD; a create of one of them is
/// 409 AlreadyExists; a create of another CRD and any delete are 405 MethodNotAllowed.
#[test]
fn changing_creating_or_deleting_crds_is_refused() {
    let s = Server::start();
    let k = s.kubectl();
    let (ok, _, err) =
        k.run(&["patch", "crd", "agents.a2a.dev", "--type=merge", "-p", r#"{"spec":{"scope":"Cluster"}}"#]);
    // kubectl words a 422 as `The KIND "NAME" is invalid: CAUSES`.
    assert!(
        !ok && err.contains("The CustomResourceDefinition \"agents.a2a.dev\" is invalid: spec: Forbidden"),
        "{err}"
    );
    let (ok, _, err) = k.run(&["create", "-f", &chart_crds()]);
    assert!(!ok && err.matches("(AlreadyExists)").count() == 3, "{err}");
    let other = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object}\n";
    let (ok, _, err) = k.run_stdin(&["create", "-f", "-"], other);
    assert!(!ok && err.contains("(MethodNotAllowed)"), "{err}");
    let (ok, _, err) = k.run(&["delete", "crd", "agents.a2a.dev"]);
    assert!(!ok && err.contains("(MethodNotAllowed)"), "{err}");
    assert_eq!(
        k.ok(&["get", "crd", "agents.a2a.dev", "-o", "name"]).trim(),
        "customresourcedefinition.apiextensions.k8s.io/agents.a2a.dev"
    );
    let (ok, _, err) = k.run(&["get", "crd", "widgets.example.com"]);
    assert!(!ok && err.contains("(NotFound)"), "{err}");
}

/// The Python client's ApiextensionsV1Api lists and reads them.
#[test]
fn python_client_reads_the_crds() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.ApiextensionsV1Api()
print(",".join(sorted(c.metadata.name for c in api.list_custom_resource_definition().items)))
print(api.read_custom_resource_definition("workflows.a2a.dev").spec.names.short_names)
"#,
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out, "agents.a2a.dev,resourcebudgets.a2a.dev,workflows.a2a.dev\n['wf']\n");
}

/// A watch of the CRDs sends them as ADDED; as a WatchList it ends the initial events with the
/// `k8s.io/initial-events-end` bookmark; then nothing until its timeout.
#[test]
fn a_crd_watch_sends_the_crds_and_the_initial_events_bookmark() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys, json
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
r = api.call_api("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "GET",
                 query_params=[("watch", "true"), ("sendInitialEvents", "true"),
                               ("resourceVersionMatch", "NotOlderThan"), ("allowWatchBookmarks", "true"),
                               ("timeoutSeconds", "1")],
                 auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True)
for line in r.data.decode().splitlines():
    e = json.loads(line)
    m = e["object"]["metadata"]
    print(e["type"], m.get("name", ""), m.get("annotations", {}).get("k8s.io/initial-events-end", ""))
"#,
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ADDED agents.a2a.dev ", "ADDED workflows.a2a.dev ", "ADDED resourcebudgets.a2a.dev ", "BOOKMARK  true"],
        "{out}"
    );
}
