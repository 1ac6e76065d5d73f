//! Protobuf bodies of the built-in kinds: what client-go's typed clients (kubectl create,
//! Helm's release storage, leader election) send and prefer to read. The kube-apiserver
//! answers such a client in protobuf, lists and watches included, and keeps custom
//! resources JSON-only.

use a2a::apiserver::protobuf;
use a2a::apiserver::resources::Resource;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::harness::Server;

const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf,application/json";

/// (status, Content-Type, body) of one request sent as client-go's typed clients send it.
fn send(
    s: &Server,
    method: Method,
    path: &str,
    accept: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::common::client_from(s.kubeconfig(), None).await;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("accept", accept)
            .header("content-type", content_type)
            .body(kube::client::Body::from(body))
            .unwrap();
        let resp = client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        let media = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (code, media, bytes)
    })
}

fn decode(plural: &str, body: &[u8]) -> Value {
    let group = if plural == "leases" { "coordination.k8s.io" } else { "" };
    protobuf::decode(Resource::find(group, "v1", plural).unwrap(), body).unwrap()
}

/// `kubectl create namespace|configmap|secret` send protobuf and read the protobuf answer:
/// `-o yaml` prints the object the server answered, decoded by client-go.
#[test]
fn kubectl_create_of_core_kinds_round_trips_protobuf() {
    let s = Server::start();
    for k in s.kubectls() {
        let out = k.ok(&["create", "namespace", "pb", "-o", "yaml", "-v=8"]);
        assert!(out.contains("name: pb") && out.contains("uid:") && out.contains("phase: Active"), "{out}");
        let (ok, out, err) = k.run(&[
            "create",
            "configmap",
            "c",
            "-n",
            "pb",
            "--from-literal=a=1",
            "--from-literal=b=",
            "-o",
            "yaml",
            "-v=8",
        ]);
        assert!(ok, "{out}{err}");
        assert!(out.contains("a: \"1\"") && out.contains("creationTimestamp:"), "{out}");
        // What the server answered, as kubectl logged it.
        assert!(err.contains("Content-Type: application/vnd.kubernetes.protobuf"), "{err}");
        let out = k.ok(&["create", "secret", "generic", "s", "-n", "pb", "--from-literal=k=hunter2", "-o", "yaml"]);
        assert!(out.contains("k: aHVudGVyMg=="), "{out}");
        assert_eq!(k.ok(&["get", "secret", "s", "-n", "pb", "-o", "jsonpath={.data.k}"]), "aHVudGVyMg==");
        k.ok(&["delete", "namespace", "pb", "--wait=false"]);
        // The next kubectl starts over once the namespace is gone.
        let _ = k.run(&["wait", "--for=delete", "namespace/pb", "--timeout=60s"]);
    }
}

/// get, list and create answer protobuf when it is preferred; an error stays a JSON Status
/// for a client that reads JSON too.
#[test]
fn get_list_and_create_answer_protobuf_when_preferred() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let (code, media, body) =
        send(&s, Method::GET, "/api/v1/namespaces/default/configmaps/c", PROTOBUF_FIRST, "", vec![]);
    assert_eq!((code, media.as_str()), (200, "application/vnd.kubernetes.protobuf"));
    assert!(body.starts_with(b"k8s\0"));
    let cm = decode("configmaps", &body);
    assert_eq!(cm["data"], json!({"a": "1"}), "{cm}");
    let (code, media, body) =
        send(&s, Method::GET, "/api/v1/namespaces/default/configmaps", PROTOBUF_FIRST, "", vec![]);
    assert_eq!((code, media.as_str()), (200, "application/vnd.kubernetes.protobuf"));
    assert!(body.windows(13).any(|w| w == b"ConfigMapList"), "the envelope names the list kind");
    // JSON first: JSON.
    let (_, media, _) =
        send(&s, Method::GET, "/api/v1/namespaces/default/configmaps/c", "application/json", "", vec![]);
    assert_eq!(media, "application/json");
    // A create in protobuf, answered in protobuf.
    let new = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"x": "y"}});
    let body = protobuf::encode(&new).unwrap().unwrap();
    let (code, media, body) =
        send(&s, Method::POST, "/api/v1/namespaces/default/configmaps", PROTOBUF_FIRST, protobuf::MEDIA_TYPE, body);
    assert_eq!((code, media.as_str()), (201, "application/vnd.kubernetes.protobuf"));
    assert!(decode("configmaps", &body)["metadata"]["uid"].is_string());
    // Not found: a JSON Status, which client-go reads.
    let (code, media, body) =
        send(&s, Method::GET, "/api/v1/namespaces/default/configmaps/nope", PROTOBUF_FIRST, "", vec![]);
    assert_eq!((code, media.as_str()), (404, "application/json"));
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["reason"], "NotFound");
    // A client that reads protobuf only gets the Status in protobuf.
    let (code, media, body) =
        send(&s, Method::GET, "/api/v1/namespaces/default/configmaps/nope", protobuf::MEDIA_TYPE, "", vec![]);
    assert_eq!((code, media.as_str()), (404, "application/vnd.kubernetes.protobuf"));
    assert!(body.starts_with(b"k8s\0") && body.windows(6).any(|w| w == b"Status"));
}

/// A watch in protobuf: length-prefixed `WatchEvent` frames, each object enveloped.
#[test]
fn watches_stream_protobuf_frames() {
    let s = Server::start();
    s.kubectl().ok(&["create", "configmap", "w", "--from-literal=a=1"]);
    let (code, media, body) = send(
        &s,
        Method::GET,
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1",
        "application/vnd.kubernetes.protobuf;stream=watch,application/json",
        "",
        vec![],
    );
    assert_eq!((code, media.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
    let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let event = &body[4..4 + len];
    // WatchEvent: field 1 the type, field 2 a RawExtension whose field 1 is the object.
    assert_eq!(&event[..7], b"\x0a\x05ADDED");
    let start = event.windows(4).position(|w| w == b"k8s\0").unwrap();
    assert_eq!(decode("configmaps", &event[start..])["data"], json!({"a": "1"}));
}

/// Custom resources take JSON only: a protobuf body is the kube-apiserver's 415, and a
/// client that prefers protobuf reads them as JSON.
#[test]
fn a2a_kinds_stay_json() {
    let s = Server::start();
    let (code, _, body) = send(
        &s,
        Method::POST,
        "/apis/a2a.dev/v1alpha1/namespaces/default/agents",
        PROTOBUF_FIRST,
        protobuf::MEDIA_TYPE,
        b"k8s\0".to_vec(),
    );
    assert_eq!(code, 415);
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert!(status["message"].as_str().unwrap().contains("accepted media types include: application/json"), "{status}");
    let (code, media, _) =
        send(&s, Method::GET, "/apis/a2a.dev/v1alpha1/namespaces/default/agents", PROTOBUF_FIRST, "", vec![]);
    assert_eq!((code, media.as_str()), (200, "application/json"));
    // Protobuf only: 406, as for custom resources on a cluster, and nothing is written.
    let agent = serde_json::to_vec(&json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "a"}, "spec": {"url": "http://127.0.0.1:9/"}}))
    .unwrap();
    let (code, _, body) = send(
        &s,
        Method::POST,
        "/apis/a2a.dev/v1alpha1/namespaces/default/agents",
        protobuf::MEDIA_TYPE,
        "application/json",
        agent,
    );
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
    let (ok, _, err) = s.kubectl().run(&["get", "agent", "a"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
