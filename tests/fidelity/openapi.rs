//! OpenAPI as clients ask for it: `kubectl explain` over v3 and over the v2 protobuf
//! document, `kubectl apply -f` of a `kind: List`, client-side apply of a ConfigMap, and the
//! v2 document read by the Python client and decoded as gnostic's `openapi.v2.Document`.

use prost::Message as _;

use a2a::apiserver::openapi::gnostic;

use crate::harness::Server;

const PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// What the kube-apiserver answers that Accept with: the spelling Go's mime parser reads.
const PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const AGENT: &str =
    "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: echo\nspec:\n  url: http://127.0.0.1:9/\n";

fn config_map(data: &[(&str, &str)]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n");
    for (k, v) in data {
        out.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    out
}

/// `kubectl explain` (OpenAPI v3) of an a2a kind's metadata and spec and of core kinds'
/// fields prints the published descriptions.
#[test]
fn kubectl_explain_prints_a2a_and_core_fields() {
    let s = Server::start();
    for k in s.kubectls() {
        let out = k.ok(&["explain", "agent.metadata"]);
        assert!(out.contains("FIELD: metadata <ObjectMeta>"), "{out}");
        assert!(out.contains("Standard object's metadata"), "{out}");
        assert!(out.contains("ownerReferences\t<[]OwnerReference>"), "{out}");
        let out = k.ok(&["explain", "agents.spec"]);
        assert!(out.contains("An AI agent that speaks A2A"), "{out}");
        let out = k.ok(&["explain", "configmap.data"]);
        assert!(out.contains("FIELD: data <map[string]string>"), "{out}");
        assert!(out.contains("Data contains the configuration data"), "{out}");
        let out = k.ok(&["explain", "namespace.spec.finalizers"]);
        assert!(out.contains("Finalizers is an opaque list of values"), "{out}");
        let out = k.ok(&["explain", "workflows", "--recursive"]);
        assert!(out.contains("creationTimestamp\t<string>"), "{out}");
    }
}

/// `kubectl explain --output=plaintext-openapiv2` reads the v2 document in its protobuf form:
/// the request asks for it and the answer carries it.
#[test]
fn kubectl_explain_over_openapi_v2_reads_the_protobuf_document() {
    let s = Server::start();
    let k = s.kubectl();
    for (what, expect) in [
        ("agents.spec", "An AI agent that speaks A2A"),
        ("agent.metadata.labels", "Map of string keys and values"),
        ("configmap.data", "Data contains the configuration data"),
        ("namespace.spec.finalizers", "Finalizers is an opaque list of values"),
    ] {
        let (ok, out, err) = k.run(&["explain", what, "--output=plaintext-openapiv2", "-v=8"]);
        assert!(ok, "explain {what}: {out}{err}");
        assert!(out.contains(expect), "explain {what}:\n{out}");
        assert!(err.contains(&format!("Accept: {PROTOBUF_ACCEPT}")), "explain {what} did not ask for protobuf");
        assert!(err.contains(&format!("Content-Type: {PROTOBUF_CONTENT_TYPE}")), "explain {what}: no protobuf answer");
    }
}

/// A backup written by `kubectl get ag,cm -o yaml` (a `kind: List`) comes back with
/// `kubectl apply -f`, which fetches the v2 document as protobuf first.
#[test]
fn kubectl_apply_of_a_list_restores_a_backup() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["apply", "-f", "-"], &format!("{AGENT}---\n{}", config_map(&[("mode", "fast")])));
    let backup = k.ok(&["get", "ag,cm", "-o", "yaml"]);
    assert!(backup.starts_with("apiVersion: v1\nitems:") && backup.contains("kind: List"), "{backup}");
    let file = s.home.path().join("backup.yaml");
    std::fs::write(&file, &backup).unwrap();
    k.ok(&["delete", "agent/echo", "configmap/settings"]);

    let (ok, out, err) = k.run(&["apply", "-f", file.to_str().unwrap(), "-v=8"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("agent.a2a.dev/echo created") && out.contains("configmap/settings created"), "{out}");
    assert!(err.contains(&format!("Accept: {PROTOBUF_ACCEPT}")), "apply of a List did not read /openapi/v2");
    assert_eq!(k.ok(&["get", "configmap", "settings", "-o", "jsonpath={.data.mode}"]), "fast");
    assert_eq!(k.ok(&["get", "agent", "echo", "-o", "jsonpath={.spec.url}"]), "http://127.0.0.1:9/");
}

/// Client-side `kubectl apply` of a ConfigMap: the second apply changes one key and adds
/// one, the third removes one; last-applied follows.
#[test]
fn client_side_apply_of_a_config_map_changes_keys() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["apply", "-f", "-"], &config_map(&[("a", "1"), ("b", "2")]));
    let out = k.ok_stdin(&["apply", "-f", "-"], &config_map(&[("a", "10"), ("b", "2"), ("c", "3")]));
    assert_eq!(out.trim(), "configmap/settings configured");
    assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]), r#"{"a":"10","b":"2","c":"3"}"#);
    k.ok_stdin(&["apply", "-f", "-"], &config_map(&[("a", "10"), ("c", "3")]));
    assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]), r#"{"a":"10","c":"3"}"#);
    let last = k.ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        r#"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}"#,
    ]);
    assert!(last.contains(r#""data":{"a":"10","c":"3"}"#), "{last}");
}

/// The Python client reads `/openapi/v2` as JSON, and as protobuf that decodes to
/// gnostic's `openapi.v2.Document` with the same definitions; a repeated request with the
/// ETag gets 304, one naming no served media type 406.
#[test]
fn the_v2_document_reads_as_json_and_decodes_as_protobuf() {
    let s = Server::start();
    let out_file = s.home.path().join("openapi-v2.pb");
    let script = format!(
        r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.ApiClient()
def get(accept, etag=None):
    headers = {{"Accept": accept}}
    if etag:
        headers["If-None-Match"] = etag
    try:
        r = api.call_api("/openapi/v2", "GET", header_params=headers, auth_settings=["BearerToken"],
                         _preload_content=False, _return_http_data_only=True)
        return r.status, r.headers, r.data
    except client.exceptions.ApiException as e:
        return e.status, e.headers, b""
status, headers, data = get("application/json")
doc = json.loads(data)
print(status, headers["Content-Type"], doc["swagger"], len(doc["definitions"]))
agent = doc["definitions"]["dev.a2a.v1alpha1.Agent"]
print(agent["properties"]["metadata"]["$ref"])
print(doc["paths"]["/api/v1/namespaces/{{namespace}}/configmaps/{{name}}"]["patch"]["x-kubernetes-action"])
status, _, _ = get("application/json", headers["ETag"])
print(status)
print(get("text/html")[0])
status, headers, data = get("{PROTOBUF_ACCEPT}")
open("{}", "wb").write(data)
print(status, headers["Content-Type"])
"#,
        out_file.display()
    );
    let (ok, out, err) = s.python(&script);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let first: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(first[..3], ["200", "application/json", "2.0"], "{out}");
    let definitions: usize = first[3].parse().unwrap();
    assert_eq!(lines[1], "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert_eq!(lines[2], "patch");
    assert_eq!(lines[3], "304", "If-None-Match with the ETag");
    assert_eq!(lines[4], "406", "an Accept naming nothing served");
    assert_eq!(lines[5], format!("200 {PROTOBUF_CONTENT_TYPE}"));

    let bytes = std::fs::read(&out_file).unwrap();
    let doc = gnostic::Document::decode(bytes.as_slice()).unwrap();
    assert_eq!(doc.swagger, "2.0");
    let defs = &doc.definitions.unwrap().additional_properties;
    assert_eq!(defs.len(), definitions);
    let agent = defs.iter().find(|d| d.name == "dev.a2a.v1alpha1.Agent").unwrap().value.clone().unwrap();
    let gvk = agent.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").unwrap();
    assert_eq!(gvk.value.as_ref().unwrap().yaml, r#"[{"group":"a2a.dev","kind":"Agent","version":"v1alpha1"}]"#);
    let props = agent.properties.unwrap().additional_properties;
    let metadata = props.iter().find(|p| p.name == "metadata").unwrap().value.as_ref().unwrap();
    assert_eq!(metadata.r#ref, "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
}

/// Client-side `kubectl apply` reads from the OpenAPI that custom resources take no strategic
/// merge patch and sends an Agent a JSON merge patch, as it does to a cluster; a ConfigMap
/// gets a strategic merge patch.
#[test]
fn client_side_apply_chooses_the_patch_type_the_openapi_lists() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["apply", "-f", "-"], &format!("{AGENT}---\n{}", config_map(&[("a", "1")])));
    let labelled = AGENT.replace("  name: echo\n", "  name: echo\n  labels:\n    tier: gold\n");
    let changed = format!("{labelled}---\n{}", config_map(&[("a", "2")]));
    let (ok, out, err) = k.run_stdin(&["apply", "-f", "-", "-v=8"], &changed);
    assert!(ok, "{out}{err}");
    // The request headers kubectl logs right after each request line.
    let patch_type = |path: &str| {
        let lines: Vec<&str> = err.lines().collect();
        let at = lines.iter().position(|l| l.contains("PATCH https://") && l.contains(path));
        let at = at.unwrap_or_else(|| panic!("no PATCH of {path}:\n{err}"));
        lines[at..].iter().find_map(|l| l.split("Content-Type: ").nth(1)).unwrap_or_default().trim().to_owned()
    };
    assert_eq!(patch_type("/agents/echo"), "application/merge-patch+json");
    assert_eq!(patch_type("/configmaps/settings"), "application/strategic-merge-patch+json");
    assert_eq!(k.ok(&["get", "agent", "echo", "-o", "jsonpath={.metadata.labels.tier}"]), "gold");
    assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"]), "2");
}
