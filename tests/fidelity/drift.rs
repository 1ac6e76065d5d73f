//! Where a2a serve once answered differently from the kube-apiserver in ways that make GitOps
//! tools see changes that are not there; each check is what the kube-apiserver does.

use crate::harness::{Kubectl, Server};

const AGENT: &str =
    "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: echo\nspec:\n  url: http://127.0.0.1:9/\n";

fn json(k: &Kubectl, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&k.ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn whole_seconds(t: &str) -> bool {
    t.len() == 20 && !t.contains('.') && t.parse::<jiff::Timestamp>().is_ok_and(|t| t.subsec_nanosecond() == 0)
}

/// `kubectl diff` of an object just made by `kubectl create` from the same file shows nothing
/// (exit 0): no `annotations: {}`, no lost resourceVersion.
#[test]
fn kubectl_diff_of_a_created_object_shows_nothing() {
    let s = Server::start();
    for k in s.kubectls() {
        let _ = k.run(&["delete", "agent", "echo"]);
        k.ok_stdin(&["create", "-f", "-"], AGENT);
        let (ok, out, err) = k.run_stdin(&["diff", "-f", "-"], AGENT);
        assert!(ok && out.is_empty(), "{} diff of an unchanged object:\n{out}{err}", k.bin.display());
        let (ok, out, err) = k.run_stdin(&["diff", "--server-side", "-f", "-"], AGENT);
        assert!(ok && out.is_empty(), "server-side diff of an unchanged object:\n{out}{err}");
    }
}

/// `kubectl apply` then `kubectl apply --server-side` with a changed value: no conflict; the
/// fields move to the `kubectl` Apply manager and the last-applied annotation follows the
/// applied configuration.
#[test]
fn client_side_then_server_side_apply_hands_the_fields_over() {
    let s = Server::start();
    let k = s.kubectl();
    let v1 = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: team\n  labels: {tier: one}\nspec:\n  url: http://127.0.0.1:9/\n";
    k.ok_stdin(&["apply", "-f", "-"], v1);
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], &v1.replace("tier: one", "tier: two"));
    assert!(out.contains("serverside-applied"), "{out}");
    let v = json(&k, &["get", "agent", "team", "-o", "json", "--show-managed-fields"]);
    assert_eq!(v["metadata"]["labels"]["tier"], "two");
    let entries = v["metadata"]["managedFields"].as_array().unwrap();
    let apply =
        entries.iter().find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply").expect("an Apply entry");
    assert!(apply["fieldsV1"]["f:metadata"]["f:labels"].get("f:tier").is_some(), "{entries:?}");
    assert!(apply["fieldsV1"]["f:spec"].get("f:url").is_some(), "{entries:?}");
    let csa = entries.iter().find(|e| e["manager"] == "kubectl-client-side-apply");
    assert!(csa.is_none_or(|e| e["fieldsV1"]["f:spec"].get("f:url").is_none()), "{entries:?}");
    let last = v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap();
    assert!(last.contains("\"tier\":\"two\""), "{last}");
    // Another manager's field still conflicts: the hand-over is only from last-applied.
    k.ok(&["label", "agent", "team", "owner=ops"]);
    let (ok, _, err) =
        k.run_stdin(&["apply", "--server-side", "-f", "-"], &v1.replace("tier: one", "tier: two, owner: dev"));
    assert!(!ok && err.contains("conflict"), "{err}");
}

/// Lists: `resourceVersionMatch=Exact` answers the state at that version; without a
/// resourceVersion it is a 422; a resourceVersion that is not a number is refused (400).
#[test]
fn list_resource_versions_are_honoured_and_checked() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["create", "-f", "-"], AGENT);
    let path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents";
    let rv = json(&k, &["get", "--raw", path])["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    k.ok_stdin(&["create", "-f", "-"], &AGENT.replace("name: echo", "name: later"));
    let at = json(&k, &["get", "--raw", &format!("{path}?resourceVersion={rv}&resourceVersionMatch=Exact")]);
    let names: Vec<&str> =
        at["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(at["metadata"]["resourceVersion"], rv.as_str());
    let (ok, _, err) = k.run(&["get", "--raw", &format!("{path}?resourceVersionMatch=Exact")]);
    assert!(!ok && err.contains("resourceVersionMatch is forbidden unless resourceVersion is provided"), "{err}");
    let (ok, _, err) = k.run(&["get", "--raw", &format!("{path}?resourceVersion=abc")]);
    assert!(!ok && err.contains("(BadRequest)") && err.contains("abc"), "{err}");
}

/// A custom resource's update (PUT) without `metadata.resourceVersion` is refused as the
/// kube-apiserver refuses it; a ConfigMap's unconditional update is accepted, as there.
#[test]
fn a_custom_resource_update_needs_a_resource_version_but_a_configmap_does_not() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["create", "-f", "-"], AGENT);
    // `kubectl replace -f` fills the version in from a GET; `--raw` sends the object as it is.
    let path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents/echo";
    let body = r#"{"apiVersion":"a2a.dev/v1alpha1","kind":"Agent","metadata":{"name":"echo","namespace":"default"},"spec":{"url":"http://127.0.0.1:10/"}}"#;
    let (ok, _, err) = k.run_stdin(&["replace", "--raw", path, "-f", "-"], body);
    assert!(!ok, "{err}");
    assert!(err.contains("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"), "{err}");
    k.ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"a":"2"}}"#;
    k.ok_stdin(&["replace", "--raw", "/api/v1/namespaces/default/configmaps/settings", "-f", "-"], cm);
    assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"]), "2");
}

/// Times the server writes (creationTimestamp, deletionTimestamp) are whole seconds;
/// managedFields times too. Marking an object for deletion bumps its generation; a finalizer
/// added while it is being deleted is refused.
#[test]
fn deletion_marks_with_whole_seconds_bumps_generation_and_takes_no_new_finalizers() {
    let s = Server::start();
    let k = s.kubectl();
    let held = AGENT.replace("  name: echo\n", "  name: echo\n  finalizers: [example.com/hold]\n");
    k.ok_stdin(&["create", "-f", "-"], &held);
    let v = json(&k, &["get", "agent", "echo", "-o", "json", "--show-managed-fields"]);
    assert!(whole_seconds(v["metadata"]["creationTimestamp"].as_str().unwrap()), "{v}");
    assert!(whole_seconds(v["metadata"]["managedFields"][0]["time"].as_str().unwrap()), "{v}");
    assert_eq!(v["metadata"]["generation"], 1);
    k.ok(&["delete", "agent", "echo", "--wait=false"]);
    let v = json(&k, &["get", "agent", "echo", "-o", "json"]);
    assert!(whole_seconds(v["metadata"]["deletionTimestamp"].as_str().unwrap()), "{v}");
    assert_eq!(v["metadata"]["generation"], 2);
    let (ok, _, err) = k.run(&[
        "patch",
        "agent",
        "echo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","x"]}}"#,
    ]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(
            r#"metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"x"}"#
        ),
        "{err}"
    );
    // Removing the finalizer is still allowed, and ends the deletion.
    k.ok(&["patch", "agent", "echo", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let (ok, _, err) = k.run(&["get", "agent", "echo"]);
    assert!(!ok && err.contains("(NotFound)"), "{err}");
}

/// A watch with `sendInitialEvents=true` (WatchList) sends the current objects as ADDED and
/// then a BOOKMARK annotated `k8s.io/initial-events-end: "true"`; it needs
/// `resourceVersionMatch=NotOlderThan` and `allowWatchBookmarks`, as the kube-apiserver checks.
#[test]
fn a_watch_list_ends_its_initial_events_with_a_bookmark() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["create", "-f", "-"], AGENT);
    k.ok_stdin(&["create", "-f", "-"], &AGENT.replace("name: echo", "name: other"));
    let (ok, out, err) = s.python(
        r#"
import sys, json
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents"
def watch(q):
    r = api.call_api(path, "GET", query_params=q, auth_settings=["BearerToken"], _preload_content=False,
                     _return_http_data_only=True)
    return [json.loads(l) for l in r.data.decode().splitlines() if l.strip()]
events = watch([("watch", "true"), ("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan"),
                ("allowWatchBookmarks", "true"), ("timeoutSeconds", "1")])
for e in events:
    print(e["type"], e["object"]["metadata"].get("name", ""), e["object"]["metadata"].get("annotations", {}).get("k8s.io/initial-events-end", ""))
for q in [[("watch", "true"), ("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan")],
          [("watch", "true"), ("sendInitialEvents", "true"), ("allowWatchBookmarks", "true")],
          [("sendInitialEvents", "true")]]:
    try:
        watch(q)
        print("accepted")
    except ApiException as e:
        print(e.status)
"#,
    );
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["ADDED echo ", "ADDED other ", "BOOKMARK  true"], "{out}");
    assert_eq!(lines[3..], ["422", "422", "422"], "{out}");
}

/// The discovery documents with a trailing slash are the same as without.
#[test]
fn discovery_paths_answer_with_a_trailing_slash() {
    let s = Server::start();
    let k = s.kubectl();
    for path in ["/version", "/api", "/apis", "/api/v1", "/apis/a2a.dev", "/apis/a2a.dev/v1alpha1"] {
        let without = json(&k, &["get", "--raw", path]);
        let with = json(&k, &["get", "--raw", &format!("{path}/")]);
        assert_eq!(with, without, "{path}/");
    }
}

/// `?verbose` lists each check and the verdict; each check answers alone; an unknown one is 404.
#[test]
fn health_endpoints_list_their_checks_when_verbose() {
    let s = Server::start();
    let k = s.kubectl();
    for (endpoint, checks) in [
        ("healthz", &["ping", "log"][..]),
        ("livez", &["ping", "log"]),
        ("readyz", &["ping", "log", "store", "shutdown"]),
    ] {
        let out = k.ok(&["get", "--raw", &format!("/{endpoint}?verbose")]);
        let mut want: Vec<String> = checks.iter().map(|c| format!("[+]{c} ok")).collect();
        want.push(format!("{endpoint} check passed"));
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
        assert_eq!(k.ok(&["get", "--raw", &format!("/{endpoint}")]), "ok");
        for c in checks {
            assert_eq!(k.ok(&["get", "--raw", &format!("/{endpoint}/{c}")]), "ok");
        }
    }
    let out = k.ok(&["get", "--raw", "/readyz?verbose&exclude=store"]);
    assert!(out.contains("[+]store excluded: ok") && !out.contains("[+]store ok"), "{out}");
    let (ok, _, err) = k.run(&["get", "--raw", "/readyz/nonexistent"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
