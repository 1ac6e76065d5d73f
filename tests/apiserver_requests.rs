//! What a request asks for, honoured or refused as the kube-apiserver does: the options of a
//! DELETE (dry runs, the three propagation policies, preconditions), the namespace lifecycle,
//! misspelt query parameters, writes to the all-namespaces path, labels and annotations, and
//! the stored size of an object.

mod common;

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};

use common::{agent_json, raw, start};

const AGENTS: &str = "/apis/a2a.dev/v1alpha1/namespaces/default/agents";

fn assert_status(code: u16, v: &Value, want_code: u16, reason: &str, message_part: &str) {
    assert_eq!(code, want_code, "{v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["code"], want_code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "message {message:?} lacks {message_part:?}");
}

async fn create(c: &kube::Client, path: &str, object: Value) -> Value {
    let (code, v) = raw(c, Method::POST, path, "application/json", object.to_string()).await;
    assert_eq!(code, 201, "{v}");
    v
}

async fn get(c: &kube::Client, path: &str) -> Option<Value> {
    let (code, v) = raw(c, Method::GET, path, "application/json", "").await;
    match code {
        200 => Some(v),
        404 => None,
        _ => panic!("GET {path}: {code} {v}"),
    }
}

/// Waits (up to 10 s) until `done` holds of the object at `path` (`None` when absent).
async fn wait_for(c: &kube::Client, path: &str, what: &str, done: impl Fn(&Option<Value>) -> bool) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get(c, path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {what} did not happen; last seen {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent owned by `owner` (blocking its deletion in the foreground when `block`).
fn dependent(name: &str, owner: &Value, block: bool) -> Value {
    let mut a = agent_json(name);
    a["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "a2a.dev/v1alpha1",
        "kind": "Agent",
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": block,
    }]);
    a
}

fn with_finalizer(mut object: Value) -> Value {
    object["metadata"]["finalizers"] = json!(["a2a.dev/test"]);
    object
}

async fn remove_finalizers(c: &kube::Client, path: &str) {
    let (code, v) =
        raw(c, Method::PATCH, path, "application/merge-patch+json", r#"{"metadata":{"finalizers":null}}"#).await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_deletes_from_the_body_or_the_query_keep_the_object() {
    let t = start().await;
    let c = &t.client;
    let a = create(c, AGENTS, agent_json("keep")).await;
    let path = format!("{AGENTS}/keep");
    // kubectl --dry-run=server and V1DeleteOptions(dry_run=["All"]) send it in the body.
    let (code, v) = raw(
        c,
        Method::DELETE,
        &path,
        "application/json",
        r#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Background","dryRun":["All"]}"#,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["name"], "keep");
    // In the query, with a body beside it, and without one.
    for body in ["", r#"{"propagationPolicy":"Foreground"}"#] {
        let (code, v) = raw(c, Method::DELETE, &format!("{path}?dryRun=All"), "application/json", body).await;
        assert_eq!(code, 200, "{v}");
    }
    // A dry run of an object with a finalizer shows it marked and leaves it unmarked.
    create(c, AGENTS, with_finalizer(agent_json("held"))).await;
    let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}/held?dryRun=All"), "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let held = get(c, &format!("{AGENTS}/held")).await.expect("still there");
    assert!(held["metadata"].get("deletionTimestamp").is_none(), "{held}");
    // A collection dry run.
    let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}?dryRun=All"), "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let now = get(c, &path).await.expect("the object survived every dry run");
    assert_eq!(now["metadata"]["resourceVersion"], a["metadata"]["resourceVersion"]);
    assert_eq!(get(c, AGENTS).await.unwrap()["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn misspelt_dry_runs_are_refused_and_write_nothing() {
    let t = start().await;
    let c = &t.client;
    create(c, AGENTS, agent_json("a")).await;
    for bad in ["true", "all", "Bogus"] {
        let (code, v) =
            raw(c, Method::POST, &format!("{AGENTS}?dryRun={bad}"), "application/json", agent_json("b").to_string())
                .await;
        assert_status(
            code,
            &v,
            422,
            "Invalid",
            &format!("CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{\"{bad}\"}}"),
        );
        assert_eq!(v["details"]["causes"][0]["field"], "dryRun", "{v}");
        let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}/a?dryRun={bad}"), "application/json", "").await;
        assert_status(code, &v, 422, "Invalid", "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun");
        let body = json!({"dryRun": [bad]}).to_string();
        let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}/a"), "application/json", body).await;
        assert_status(code, &v, 422, "Invalid", "dryRun: Unsupported value");
        let (code, v) = raw(
            c,
            Method::PATCH,
            &format!("{AGENTS}/a?dryRun={bad}"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        )
        .await;
        assert_status(code, &v, 422, "Invalid", "PatchOptions.meta.k8s.io");
        let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}?dryRun={bad}"), "application/json", "").await;
        assert_status(code, &v, 422, "Invalid", "DeleteOptions.meta.k8s.io");
    }
    let (code, v) =
        raw(c, Method::DELETE, &format!("{AGENTS}/a"), "application/json", r#"{"propagationPolicy":"Sideways"}"#).await;
    assert_status(code, &v, 422, "Invalid", "propagationPolicy: Unsupported value: \"Sideways\"");
    let (code, v) =
        raw(c, Method::DELETE, &format!("{AGENTS}/a?gracePeriodSeconds=soon"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "gracePeriodSeconds");
    let list = get(c, AGENTS).await.unwrap();
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["a"], "nothing was created or deleted");
    assert!(list["items"][0]["metadata"].get("labels").and_then(|l| l.get("x")).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn misspelt_list_and_watch_parameters_are_refused() {
    let t = start().await;
    let c = &t.client;
    create(c, AGENTS, agent_json("a")).await;
    let (code, v) =
        raw(c, Method::GET, &format!("{AGENTS}?resourceVersion=5&resourceVersionMatch=Bogus"), "application/json", "")
            .await;
    assert_status(
        code,
        &v,
        422,
        "Invalid",
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Bogus\"",
    );
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?resourceVersionMatch=Exact"), "application/json", "").await;
    assert_status(code, &v, 422, "Invalid", "resourceVersionMatch is forbidden unless resourceVersion is provided");
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?resourceVersion=abc"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid resourceVersion \"abc\"");
    for bad in ["abc", "-5"] {
        let (code, v) =
            raw(c, Method::GET, &format!("{AGENTS}?watch=true&timeoutSeconds={bad}"), "application/json", "").await;
        assert_status(code, &v, 400, "BadRequest", "timeoutSeconds");
    }
    let (code, v) = raw(c, Method::GET, &format!("{AGENTS}?watch=maybe"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "invalid value for watch: \"maybe\"");
    let (code, v) =
        raw(c, Method::GET, &format!("{AGENTS}?watch=1&allowWatchBookmarks=perhaps"), "application/json", "").await;
    assert_status(code, &v, 400, "BadRequest", "allowWatchBookmarks");
    // What is right is served: an exact version is the list as it was then.
    let first = get(c, AGENTS).await.unwrap();
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    create(c, AGENTS, agent_json("b")).await;
    let then = get(c, &format!("{AGENTS}?resourceVersion={rv}&resourceVersionMatch=Exact")).await.unwrap();
    assert_eq!(then["items"].as_array().map(Vec::len), Some(1), "{then}");
    assert_eq!(then["metadata"]["resourceVersion"], rv.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaced_kinds_are_not_created_on_the_all_namespaces_path() {
    let t = start().await;
    let c = &t.client;
    let (code, v) =
        raw(c, Method::POST, "/apis/a2a.dev/v1alpha1/agents", "application/json", agent_json("lost").to_string()).await;
    assert_status(code, &v, 404, "NotFound", "the server could not find the requested resource");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lost"}, "data": {"a": "b"}});
    let (code, v) = raw(c, Method::POST, "/api/v1/configmaps", "application/json", cm.to_string()).await;
    assert_status(code, &v, 405, "MethodNotAllowed", "does not allow this method");
    let (code, v) = raw(c, Method::DELETE, "/api/v1/configmaps", "application/json", "").await;
    assert_status(code, &v, 405, "MethodNotAllowed", "does not allow this method");
    for path in ["/apis/a2a.dev/v1alpha1/agents", "/api/v1/configmaps"] {
        let all = get(c, path).await.unwrap();
        assert_eq!(all["items"].as_array().map(Vec::len), Some(0), "{path}: {all}");
    }
    // The namespaced path still creates, and the cluster-scoped kinds keep theirs.
    create(c, AGENTS, agent_json("found")).await;
    let rb =
        json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "rb"}, "spec": {}});
    let (code, v) =
        raw(c, Method::POST, "/apis/a2a.dev/v1alpha1/resourcebudgets", "application/json", rb.to_string()).await;
    assert!(code == 201 || code == 422, "a ResourceBudget is still created (or validated) there: {code} {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_keeps_the_dependent_and_drops_its_owner_reference() {
    let t = start().await;
    let c = &t.client;
    let owner = create(c, AGENTS, agent_json("owner")).await;
    create(c, AGENTS, dependent("child", &owner, true)).await;
    let (code, v) =
        raw(c, Method::DELETE, &format!("{AGENTS}/owner"), "application/json", r#"{"propagationPolicy":"Orphan"}"#)
            .await;
    assert_eq!(code, 200, "{v}");
    assert!(get(c, &format!("{AGENTS}/owner")).await.is_none(), "the owner is gone");
    // The garbage collector would have had time to take the child: it must still be there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = get(c, &format!("{AGENTS}/child")).await.expect("the orphan stays");
    assert!(child["metadata"].get("ownerReferences").is_none(), "the reference to the deleted owner is gone: {child}");
    // orphanDependents=true (the deprecated spelling) in the query does the same.
    let owner = create(c, AGENTS, agent_json("owner2")).await;
    create(c, AGENTS, dependent("child2", &owner, false)).await;
    let (code, v) =
        raw(c, Method::DELETE, &format!("{AGENTS}/owner2?orphanDependents=true"), "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get(c, &format!("{AGENTS}/child2")).await.is_some(), "the orphan stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn foreground_holds_the_owner_until_its_blocking_dependents_are_gone() {
    let t = start().await;
    let c = &t.client;
    let owner = create(c, AGENTS, agent_json("owner")).await;
    // The dependent's own finalizer keeps it (marked) until it is removed.
    create(c, AGENTS, with_finalizer(dependent("child", &owner, true))).await;
    create(c, AGENTS, dependent("free", &owner, false)).await;
    let (code, v) =
        raw(c, Method::DELETE, &format!("{AGENTS}/owner"), "application/json", r#"{"propagationPolicy":"Foreground"}"#)
            .await;
    assert_eq!(code, 200, "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    assert_eq!(v["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{v}");
    let child_path = format!("{AGENTS}/child");
    wait_for(c, &child_path, "the dependent marked for deletion", |v| {
        v.as_ref().is_some_and(|v| v["metadata"]["deletionTimestamp"].is_string())
    })
    .await;
    wait_for(c, &format!("{AGENTS}/free"), "the non-blocking dependent deleted", Option::is_none).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = get(c, &format!("{AGENTS}/owner")).await.expect("the owner waits for its blocking dependent");
    assert_eq!(held["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{held}");
    remove_finalizers(c, &child_path).await;
    wait_for(c, &child_path, "the dependent gone", Option::is_none).await;
    wait_for(c, &format!("{AGENTS}/owner"), "the owner gone after its dependents", Option::is_none).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn background_deletes_the_owner_then_the_dependents_with_no_other_owner() {
    let t = start().await;
    let c = &t.client;
    let owner = create(c, AGENTS, agent_json("owner")).await;
    let other = create(c, AGENTS, agent_json("other")).await;
    create(c, AGENTS, dependent("child", &owner, false)).await;
    let mut shared = dependent("shared", &owner, false);
    shared["metadata"]["ownerReferences"].as_array_mut().unwrap().push(json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "name": "other", "uid": other["metadata"]["uid"],
    }));
    create(c, AGENTS, shared).await;
    // The default (no body), as kube-rs and the Python client send it.
    let (code, v) = raw(c, Method::DELETE, &format!("{AGENTS}/owner"), "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert!(get(c, &format!("{AGENTS}/owner")).await.is_none(), "the owner goes first, at once");
    wait_for(c, &format!("{AGENTS}/child"), "the dependent deleted", Option::is_none).await;
    let shared = wait_for(c, &format!("{AGENTS}/shared"), "the reference to the deleted owner dropped", |v| {
        v.as_ref().is_some_and(|v| v["metadata"]["ownerReferences"].as_array().is_some_and(|r| r.len() == 1))
    })
    .await
    .unwrap();
    assert_eq!(shared["metadata"]["ownerReferences"][0]["name"], "other", "{shared}");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_preconditions_from_the_body_are_409_as_the_kube_apiserver_words_them() {
    let t = start().await;
    let c = &t.client;
    let a = create(c, AGENTS, agent_json("a")).await;
    let path = format!("{AGENTS}/a");
    let (code, v) =
        raw(c, Method::DELETE, &path, "application/json", r#"{"preconditions":{"uid":"not-the-uid"}}"#).await;
    assert_status(
        code,
        &v,
        409,
        "Conflict",
        "Precondition failed: UID in precondition: not-the-uid, UID in object meta:",
    );
    let (code, v) =
        raw(c, Method::DELETE, &path, "application/json", r#"{"preconditions":{"resourceVersion":"1"}}"#).await;
    assert_status(code, &v, 409, "Conflict", "Precondition failed: ResourceVersion in precondition: 1");
    assert!(get(c, &path).await.is_some());
    let body =
        json!({"preconditions": {"uid": a["metadata"]["uid"], "resourceVersion": a["metadata"]["resourceVersion"]}});
    let (code, v) = raw(c, Method::DELETE, &path, "application/json", body.to_string()).await;
    assert_eq!(code, 200, "{v}");
    assert!(get(c, &path).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_namespace_terminates_until_its_content_is_gone() {
    let t = start().await;
    let c = &t.client;
    create(c, "/api/v1/namespaces", json!({"metadata": {"name": "doomed"}})).await;
    let in_ns = "/apis/a2a.dev/v1alpha1/namespaces/doomed/agents";
    create(c, in_ns, with_finalizer(agent_json("held"))).await;
    create(c, in_ns, agent_json("free")).await;
    let (code, v) = raw(c, Method::DELETE, "/api/v1/namespaces/doomed", "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Terminating", "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    assert_eq!(v["spec"]["finalizers"], json!(["kubernetes"]), "{v}");
    let ns = wait_for(c, "/api/v1/namespaces/doomed", "the namespace controller's conditions", |v| {
        v.as_ref().is_some_and(|v| {
            v["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "NamespaceContentRemaining"
                        && c["message"] == "Some resources are remaining: agents.a2a.dev has 1 resource instances"
                })
            })
        })
    })
    .await
    .unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    let conditions = ns["status"]["conditions"].as_array().unwrap();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap_or_else(|| panic!("no {t}: {ns}"));
    assert_eq!(find("NamespaceContentRemaining")["reason"], "SomeResourcesRemain");
    assert_eq!(find("NamespaceContentRemaining")["status"], "True");
    assert_eq!(
        find("NamespaceFinalizersRemaining")["message"],
        "Some content in the namespace has finalizers remaining: a2a.dev/test in 1 resource instances"
    );
    assert_eq!(find("NamespaceDeletionDiscoveryFailure")["status"], "False");
    assert_eq!(find("NamespaceDeletionContentFailure")["reason"], "ContentDeleted");
    assert!(get(c, &format!("{in_ns}/free")).await.is_none(), "content without finalizers is deleted");
    let held = get(c, &format!("{in_ns}/held")).await.expect("held by its finalizer");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    // Nothing new goes into a terminating namespace; a second delete answers it as it is.
    let (code, v) = raw(c, Method::POST, in_ns, "application/json", agent_json("late").to_string()).await;
    assert_status(
        code,
        &v,
        403,
        "Forbidden",
        "agents.a2a.dev \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated",
    );
    assert_eq!(v["details"]["causes"][0]["reason"], "NamespaceTerminating", "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.namespace", "{v}");
    let (code, v) = raw(c, Method::DELETE, "/api/v1/namespaces/doomed", "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Terminating");
    remove_finalizers(c, &format!("{in_ns}/held")).await;
    wait_for(c, "/api/v1/namespaces/doomed", "the empty namespace gone", Option::is_none).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_and_annotations_are_checked_as_apimachinery_checks_them() {
    let t = start().await;
    let c = &t.client;
    let long = "v".repeat(64);
    let cases = [
        (
            json!({"app": long}),
            format!("metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"),
        ),
        (
            json!({"app": "a b"}),
            "metadata.labels: Invalid value: \"a b\": a valid label must be an empty string".to_string(),
        ),
        (json!({"Bad.Prefix/app": "x"}), "prefix part a lowercase RFC 1123 subdomain".to_string()),
        (json!({"k".repeat(64): "x"}), "name part must be no more than 63 characters".to_string()),
    ];
    for (labels, part) in cases {
        for (path, object) in [
            (AGENTS.to_string(), agent_json("a")),
            (
                "/api/v1/namespaces/default/configmaps".to_string(),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            ),
        ] {
            let mut object = object;
            object["metadata"]["labels"] = labels.clone();
            let (code, v) = raw(c, Method::POST, &path, "application/json", object.to_string()).await;
            assert_status(code, &v, 422, "Invalid", &part);
        }
    }
    let mut big = agent_json("a");
    big["metadata"]["annotations"] = json!({"a": "x".repeat(200 * 1024), "b": "x".repeat(100 * 1024)});
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", big.to_string()).await;
    assert_status(code, &v, 422, "Invalid", "metadata.annotations: Too long: must have at most 262144 bytes");
    assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueTooLong", "{v}");
    // An update is checked the same way.
    create(c, AGENTS, agent_json("a")).await;
    let (code, v) = raw(
        c,
        Method::PATCH,
        &format!("{AGENTS}/a"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "no/slash"}}}).to_string(),
    )
    .await;
    assert_status(code, &v, 422, "Invalid", "metadata.labels: Invalid value: \"no/slash\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_etcds_limit_are_refused_and_not_stored() {
    let t = start().await;
    let c = &t.client;
    // 24,000 valid labels: a 2 MB body (under the 3 MiB request limit), over 1.5 MiB stored.
    let labels: serde_json::Map<String, Value> =
        (0..24_000).map(|i| (format!("label-{i:05}"), json!("v".repeat(60)))).collect();
    let mut big = agent_json("big");
    big["metadata"]["labels"] = Value::Object(labels.clone());
    let (code, v) = raw(c, Method::POST, AGENTS, "application/json", big.to_string()).await;
    assert_eq!(code, 500, "{v}");
    assert_eq!(v["kind"], "Status");
    assert!(v.get("reason").is_none(), "etcd's refusal has no reason: {v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("etcdserver: request is too large"), "{message}");
    assert!(message.contains("more than the limit of 1572864"), "{message}");
    assert!(get(c, &format!("{AGENTS}/big")).await.is_none());
    // Grown past the limit by a patch: refused, and the object stays as it was.
    let small = create(c, AGENTS, agent_json("grows")).await;
    let patch = json!({"metadata": {"labels": labels}}).to_string();
    let (code, v) = raw(c, Method::PATCH, &format!("{AGENTS}/grows"), "application/merge-patch+json", patch).await;
    assert_eq!(code, 500, "{v}");
    let now = get(c, &format!("{AGENTS}/grows")).await.unwrap();
    assert_eq!(now["metadata"]["resourceVersion"], small["metadata"]["resourceVersion"]);
}

/// The official Python client: `V1DeleteOptions(dry_run=["All"])` keeps the object.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_clients_dry_run_delete_keeps_the_object() {
    let t = start().await;
    let c = &t.client;
    create(c, AGENTS, agent_json("py")).await;
    let venv = std::env::var_os("A2A_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test-deps.sh", python.display());
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.CustomObjectsApi()
out = api.delete_namespaced_custom_object(
    "a2a.dev", "v1alpha1", "default", "agents", "py", body=client.V1DeleteOptions(dry_run=["All"]))
print(out["metadata"]["name"])
"#;
    let kubeconfig = t.server.kubeconfig().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg("-c").arg(script).arg(kubeconfig).output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python client failed:\n{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "py");
    assert!(get(c, &format!("{AGENTS}/py")).await.is_some(), "a dry run deleted the object");
}

/// An Agent stored without a namespace (as the all-namespaces path once allowed) can still be
/// found and deleted: its namespace segment is empty.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_stored_without_a_namespace_can_still_be_deleted() {
    use a2a::apiserver::store::{ObjectKey, Precondition, Write};
    let t = start().await;
    let c = &t.client;
    let mut lost = agent_json("lost");
    lost["metadata"]["uid"] = json!("0b7c6a4e-0000-4000-8000-000000000001");
    let key = ObjectKey::new("a2a.dev/agents", "", "lost");
    t.server.store().write(Write::Put { key, object: lost, precondition: Precondition::Absent }).await.unwrap();
    let all = get(c, "/apis/a2a.dev/v1alpha1/agents").await.unwrap();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all}");
    let path = "/apis/a2a.dev/v1alpha1/namespaces//agents/lost";
    assert!(get(c, path).await.is_some());
    let (code, v) = raw(c, Method::DELETE, path, "application/json", "").await;
    assert_eq!(code, 200, "{v}");
    let all = get(c, "/apis/a2a.dev/v1alpha1/agents").await.unwrap();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(0), "{all}");
    // Nothing new can be created there.
    let (code, v) = raw(
        c,
        Method::POST,
        "/apis/a2a.dev/v1alpha1/namespaces//agents",
        "application/json",
        agent_json("again").to_string(),
    )
    .await;
    assert!(code == 404 || code == 422, "{code} {v}");
}
