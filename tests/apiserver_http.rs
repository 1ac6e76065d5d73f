//! Bad input against the API server: each gets the right `Status` code and message, nothing
//! is written, and the server keeps serving. Plus discovery, events, namespaces, the audit
//! log, file modes, and `/metrics` checked by promtool.

mod common;

use std::os::unix::fs::PermissionsExt;

use a2a::api::Agent;
use axum::http::Method;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use common::{agent, agent_json, client_from, raw, start, start_with};

const AGENTS: &str = "/apis/a2a.dev/v1alpha1/namespaces/default/agents";

async fn assert_still_serving(client: &kube::Client) {
    let (code, v) = raw(client, Method::GET, AGENTS, "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["kind"], "AgentList");
}

fn assert_status(code: u16, v: &Value, want_code: u16, reason: &str, message_part: &str) {
    assert_eq!(code, want_code, "{v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["code"], want_code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "message {message:?} lacks {message_part:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_400_and_change_nothing() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", "{\"kind\": ").await;
    assert_status(code, &v, 400, "BadRequest", "not valid JSON");
    let (code, v) = raw(c, Method::POST, AGENTS, "application/yaml", "kind: [unclosed").await;
    assert_status(code, &v, 400, "BadRequest", "not valid YAML");
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", "[1, 2]").await;
    assert_status(code, &v, 400, "BadRequest", "must be a Agent object");
    let mut wf = agent_json("x");
    wf["kind"] = json!("Workflow");
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", wf.to_string()).await;
    assert_status(code, &v, 400, "BadRequest", "does not match the expected kind");
    let mut other_ns = agent_json("x");
    other_ns["metadata"]["namespace"] = json!("elsewhere");
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", other_ns.to_string()).await;
    assert_status(code, &v, 400, "BadRequest", "does not match the namespace");
    // A patch that is not JSON, and an apply without a field manager.
    let api: Api<Agent> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &agent("a")).await.unwrap();
    let (code, v) = raw(c, Method::PATCH, &format!("{AGENTS}/a"), "application/merge-patch+json", "{nope").await;
    assert_status(code, &v, 400, "BadRequest", "not valid JSON");
    let (code, v) = raw(c, Method::PATCH, &format!("{AGENTS}/a"), "application/apply-patch+yaml", "spec: {}").await;
    assert_status(code, &v, 400, "BadRequest", "requires the fieldManager");
    let (code, v) = raw(
        c,
        Method::PATCH,
        &format!("{AGENTS}/a"),
        "application/json-patch+json",
        r#"[{"op": "remove", "path": "/spec/nothing"}]"#,
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);
    assert_eq!(
        api.get("a").await.unwrap().metadata.resource_version,
        api.list(&ListParams::default()).await.unwrap().items[0].metadata.resource_version
    );
    assert_still_serving(c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_resources_methods_and_media_types() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::GET, "/apis/a2a.dev/v1alpha1/namespaces/default/pods", "application/json", "").await;
    assert_status(code, &v, 404, "NotFound", "could not find the requested resource");
    let (code, v) = raw(c, Method::GET, "/apis/other.io/v1/things", "application/json", "").await;
    assert_status(code, &v, 404, "NotFound", "could not find");
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}/missing"), "application/json", "").await;
    assert_status(code, &v, 404, "NotFound", "agents.a2a.dev \"missing\" not found");
    let (code, v) = raw(
        c,
        Method::POST,
        "/apis/a2a.dev/v1alpha1/namespaces/nowhere/agents",
        "application/json",
        agent_json("x").to_string(),
    )
    .await;
    assert_status(code, &v, 404, "NotFound", "namespaces \"nowhere\" not found");
    let (code, v) = raw(c, Method::PUT, AGENTS, "application/json", "{}").await;
    assert_status(code, &v, 405, "MethodNotAllowed", "not supported");
    let (code, v) = raw(c, Method::POST, AGENTS, "text/plain", "hello").await;
    assert_status(code, &v, 415, "UnsupportedMediaType", "text/plain");
    let api: Api<Agent> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &agent("a")).await.unwrap();
    let (code, v) = raw(c, Method::PATCH, &format!("{AGENTS}/a"), "application/strategic-merge-patch+json", "{}").await;
    // As the kube-apiserver answers for custom resources: the patch types they take.
    assert_status(code, &v, 415, "UnsupportedMediaType", "application/merge-patch+json, application/apply-patch+yaml");
    assert_still_serving(c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413() {
    let t = start_with(|c| c.max_body_bytes(64 * 1024)).await;
    let mut big = agent_json("big");
    big["metadata"]["annotations"] = json!({"blob": "x".repeat(100 * 1024)});
    let (code, v) = raw(&t.client, Method::POST, AGENTS, "application/json", big.to_string()).await;
    assert_status(code, &v, 413, "RequestEntityTooLarge", "Request entity too large: limit is 65536");
    assert_still_serving(&t.client).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_selectors_and_versions_are_400() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?labelSelector=app%20in%20(a"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid labelSelector");
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?labelSelector=a%3Db%20c"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid label value");
    let (code, v) =
        raw(c, Method::GET, &format!("{AGENTS}?fieldSelector=spec.command%3Dx"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "field label not supported: spec.command");
    let (code, v) =
        raw(c, Method::GET, &format!("{AGENTS}?watch=true&resourceVersion=abc"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid resourceVersion");
    assert_still_serving(c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_resource_versions_are_409_conflicts() {
    let t = start().await;
    let c = &t.client;
    let api: Api<Agent> = Api::namespaced(c.clone(), "default");
    let first = api.create(&PostParams::default(), &agent("a")).await.unwrap();
    let mut second = first.clone();
    second.spec.replicas = Some(2);
    api.replace("a", &PostParams::default(), &second).await.unwrap();
    let mut stale = serde_json::to_value(&first).unwrap();
    stale["spec"]["replicas"] = json!(5);
    let (code, v) = raw(c, Method::PUT, &format!("{AGENTS}/a"), "application/json", stale.to_string()).await;
    assert_status(code, &v, 409, "Conflict", "the object has been modified");
    let patch = json!({"metadata": {"resourceVersion": first.metadata.resource_version}, "spec": {"replicas": 6}});
    let (code, v) =
        raw(c, Method::PATCH, &format!("{AGENTS}/a"), "application/merge-patch+json", patch.to_string()).await;
    assert_status(code, &v, 409, "Conflict", "the object has been modified");
    let opts = json!({"preconditions": {"resourceVersion": first.metadata.resource_version}});
    let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}/a"), "application/json", opts.to_string()).await;
    assert_status(code, &v, 409, "Conflict", "");
    assert_eq!(api.get("a").await.unwrap().spec.replicas, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_invalid_tokens_are_401_and_audited() {
    let t = start().await;
    for token in ["", "not-the-token"] {
        let anon = client_from(t.server.kubeconfig(), Some(token)).await;
        let (code, v) = raw(&anon, Method::GET, AGENTS, "application/json", "").await;
        assert_status(code, &v, 401, "Unauthorized", "Unauthorized");
        let (code, v) = raw(&anon, Method::POST, AGENTS, "application/json", agent_json("sneaky").to_string()).await;
        assert_status(code, &v, 401, "Unauthorized", "Unauthorized");
    }
    // Health needs no token.
    let anon = client_from(t.server.kubeconfig(), Some("")).await;
    let (code, v) = raw(&anon, Method::GET, "/healthz", "text/plain", "").await;
    assert_eq!((code, v), (200, json!("ok")));
    assert_still_serving(&t.client).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
    api.create(&PostParams::default(), &agent("real")).await.unwrap();

    // The log is written off the request path; a clean shutdown writes every line.
    let common::TestServer { home, server, .. } = t;
    server.shutdown().await;
    let audit = std::fs::read_to_string(home.path().join("audit.log")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let denied: Vec<_> = lines.iter().filter(|l| l["code"] == 401).collect();
    assert_eq!(denied.len(), 2, "{audit}");
    assert_eq!(denied[0]["user"], "system:anonymous");
    assert_eq!(denied[0]["verb"], "create");
    let ok = lines.iter().find(|l| l["code"] == 201).expect("the create is audited");
    assert_eq!(ok["user"], "a2a-admin");
    assert_eq!(ok["resource"], "agents");
    assert_eq!(ok["namespace"], "default");
    assert_eq!(ok["name"], "real");
    assert!(ok["time"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok());
    // Reads are not audited.
    assert!(lines.iter().all(|l| l["verb"] != "list"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_mutating_request_is_in_the_audit_log_after_a_clean_shutdown() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                api.create(&PostParams::default(), &agent(&format!("a{w}-{i}"))).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A refused write is audited too.
    assert!(api.create(&PostParams::default(), &agent("a0-0")).await.is_err());
    let common::TestServer { home, server, .. } = t;
    server.shutdown().await;
    let audit = std::fs::read_to_string(home.path().join("audit.log")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut created: Vec<String> =
        lines.iter().filter(|l| l["code"] == 201).map(|l| l["name"].as_str().unwrap().to_string()).collect();
    created.sort();
    let mut want: Vec<String> = (0..8).flat_map(|w| (0..25).map(move |i| format!("a{w}-{i}"))).collect();
    want.sort();
    assert_eq!(created, want);
    assert_eq!(lines.iter().filter(|l| l["code"] == 409 && l["name"] == "a0-0").count(), 1, "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn private_files_are_0600() {
    let t = start().await;
    for f in ["kubeconfig", "token", "audit.log", "pki/ca.key", "pki/server.key", "state/store.redb"] {
        let mode = std::fs::metadata(t.home.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
    }
    let kc = std::fs::read_to_string(t.server.kubeconfig()).unwrap();
    let kc: Value = serde_yaml_ng::from_str(&kc).unwrap();
    assert_eq!(kc["current-context"], "a2a");
    assert_eq!(kc["contexts"][0]["context"]["namespace"], "default");
    assert_eq!(kc["clusters"][0]["cluster"]["server"], t.server.url());
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_namespaces_and_events() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::GET, "/version", "", "").await;
    assert_eq!((code, v["minor"].as_str()), (200, Some("32")));
    let (_, v) = raw(c, Method::GET, "/apis", "", "").await;
    assert_eq!(v["groups"][0]["versions"][0]["version"], "v1alpha1");
    let (_, v) = raw(c, Method::GET, "/apis/a2a.dev/v1alpha1", "", "").await;
    let wf = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "workflows").unwrap().clone();
    assert_eq!(wf["shortNames"], json!(["wf"]));
    assert_eq!(wf["singularName"], "workflow");
    assert!(wf["verbs"].as_array().unwrap().contains(&json!("watch")));
    let (_, v) = raw(c, Method::GET, "/openapi/v3/apis/a2a.dev/v1alpha1", "", "").await;
    let path = &v["paths"]["/apis/a2a.dev/v1alpha1/resourcebudgets/{name}"]["patch"];
    assert_eq!(path["x-kubernetes-group-version-kind"]["kind"], "ResourceBudget");
    assert!(v["components"]["schemas"]["dev.a2a.v1alpha1.Agent"]["properties"]["spec"].is_object());

    let (code, v) = raw(c, Method::GET, "/api/v1/namespaces/default", "", "").await;
    assert_eq!((code, &v["status"]["phase"]), (200, &json!("Active")));
    let (code, v) = raw(
        c,
        Method::POST,
        "/api/v1/namespaces",
        "application/json",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}).to_string(),
    )
    .await;
    assert_eq!(code, 201, "{v}");

    let api: Api<Agent> = Api::namespaced(c.clone(), "team-a");
    let a = api.create(&PostParams::default(), &agent("x")).await.unwrap();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": "x."},
        "involvedObject": {"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "namespace": "team-a",
                           "name": "x", "uid": a.metadata.uid},
        "type": "Normal", "reason": "Started", "message": "started 1 replica", "count": 1,
        "source": {"component": "a2a"},
    });
    let (code, v) =
        raw(c, Method::POST, "/api/v1/namespaces/team-a/events", "application/json", event.to_string()).await;
    assert_eq!(code, 201, "{v}");
    assert!(v["metadata"]["name"].as_str().unwrap().starts_with("x."));
    let sel = format!(
        "/api/v1/namespaces/team-a/events?fieldSelector=involvedObject.name%3Dx,involvedObject.namespace%3Dteam-a,involvedObject.kind%3DAgent,involvedObject.uid%3D{}",
        a.metadata.uid.unwrap()
    );
    let (_, v) = raw(c, Method::GET, &sel, "", "").await;
    assert_eq!(v["kind"], "EventList");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["reason"], "Started");
    let (_, v) =
        raw(c, Method::GET, "/api/v1/namespaces/team-a/events?fieldSelector=involvedObject.name%3Dother", "", "").await;
    assert!(v["items"].as_array().unwrap().is_empty());
    let (code, v) = raw(
        c,
        Method::POST,
        "/api/v1/namespaces/team-a/events",
        "application/json",
        json!({"metadata": {"name": "e"}, "message": "no subject"}).to_string(),
    )
    .await;
    assert_status(code, &v, 422, "Invalid", "involvedObject");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_requests() {
    let promtool = common::promtool();
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    api.create(&PostParams::default(), &agent("m")).await.unwrap();
    let _ = api.get("missing").await;
    let (code, text) = raw(&t.client, Method::GET, "/metrics", "", "").await;
    assert_eq!(code, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains(r#"a2a_apiserver_requests_total{verb="create",resource="agents",code="201"} 1"#), "{text}");
    assert!(text.contains(r#"a2a_apiserver_requests_total{verb="get",resource="agents",code="404"} 1"#), "{text}");
    assert!(text.contains(r#"a2a_store_objects{resource="a2a.dev/agents"} 1"#), "{text}");
    assert!(text.contains("a2a_store_commit_duration_seconds_count"), "{text}");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_namespace_or_an_owner_cascades_and_default_stays() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::DELETE, "/api/v1/namespaces/default", "application/json", "").await;
    assert_status(code, &v, 403, "Forbidden", "may not be deleted");
    let (code, _) = raw(
        c,
        Method::POST,
        "/api/v1/namespaces",
        "application/json",
        json!({"metadata": {"name": "gone"}}).to_string(),
    )
    .await;
    assert_eq!(code, 201);
    let in_ns: Api<Agent> = Api::namespaced(c.clone(), "gone");
    in_ns.create(&PostParams::default(), &agent("a")).await.unwrap();
    let api: Api<Agent> = Api::namespaced(c.clone(), "default");
    let owner = api.create(&PostParams::default(), &agent("owner")).await.unwrap();
    let mut child = agent("child");
    child.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "a2a.dev/v1alpha1".into(),
        kind: "Agent".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..Default::default()
    }]);
    api.create(&PostParams::default(), &child).await.unwrap();
    let (code, _) = raw(c, Method::DELETE, "/api/v1/namespaces/gone", "application/json", "").await;
    assert_eq!(code, 200);
    api.delete("owner", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left_in_ns = in_ns.list(&ListParams::default()).await.unwrap().items.len();
        let child_left = api.get_opt("child").await.unwrap().is_some();
        if left_in_ns == 0 && !child_left {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cascade did not finish: {left_in_ns} in namespace, child left: {child_left}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paging_parameters_are_400() {
    let t = start().await;
    let c = &t.client;
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?limit=-1"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid limit \"-1\"");
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?limit=1&continue=%%%"), "application/json", "").await;
    assert_eq!(code, 400, "{v}");
    let (code, v) =
        raw(c, Method::GET, &format!("{AGENTS}?limit=1&continue=bm90LWpzb24"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "continue key is not valid");
    // A valid token with a resourceVersion beside it.
    let api: Api<Agent> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &agent("a")).await.unwrap();
    api.create(&PostParams::default(), &agent("b")).await.unwrap();
    let token = api.list(&ListParams::default().limit(1)).await.unwrap().metadata.continue_.unwrap();
    let path = format!("{AGENTS}?limit=1&continue={token}&resourceVersion=5");
    let (code, v) = raw(c, Method::GET, &path, "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "specifying resource version is not allowed when using continue");
    // Namespaces cannot be deleted as a collection.
    let (code, v) = raw(c, Method::DELETE, "/api/v1/namespaces", "application/json", "").await;
    assert_status(code, &v, 405, "MethodNotAllowed", "deletecollection is not supported on namespaces");
    assert_still_serving(c).await;
}
