//! kube-rs against the embedded API server: the typed Api<Agent> verbs, status subresource,
//! finalizers, optimistic concurrency, server-side apply, and watches (resumed and compacted).

mod common;

use std::time::Duration;

use a2a::api::Agent;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;

use common::{agent, start, start_with};

fn rv(a: &Agent) -> String {
    a.metadata.resource_version.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_api_create_get_list_patch_delete() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let created = api.create(&PostParams::default(), &agent("alpha")).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());

    let got = api.get("alpha").await.unwrap();
    assert_eq!(got.spec.command, ["sleep", "100"]);
    assert_eq!(rv(&got), rv(&created));

    api.create(&PostParams::default(), &agent("beta")).await.unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list.items.iter().map(|a| a.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let selected = api.list(&ListParams::default().fields("metadata.name=beta").labels("team=test")).await.unwrap();
    assert_eq!(selected.items.len(), 1);
    assert!(api.list(&ListParams::default().labels("team=other")).await.unwrap().items.is_empty());

    // A second create of the same name is a 409 AlreadyExists.
    let err = api.create(&PostParams::default(), &agent("alpha")).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));

    // A spec change bumps generation; a status write does not, and the main resource ignores status.
    let patched = api
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.spec.replicas, Some(3));
    assert!(patched.status.is_none(), "status written through the main resource");
    let with_status = api
        .patch_status(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.metadata.generation, Some(2));
    assert_eq!(with_status.spec.replicas, Some(3), "spec written through /status");
    assert_eq!(serde_json::to_value(&with_status.status).unwrap()["phase"], "Running");

    // JSON patch.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 4}])).unwrap();
    let p = api.patch("alpha", &PatchParams::default(), &Patch::<()>::Json(jp)).await.unwrap();
    assert_eq!(p.spec.replicas, Some(4));

    // Optimistic concurrency: a replace with a stale resourceVersion is refused.
    let mut stale = created.clone();
    stale.spec.replicas = Some(7);
    let err = api.replace("alpha", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"));
    let mut fresh = api.get("alpha").await.unwrap();
    fresh.spec.replicas = Some(7);
    let replaced = api.replace("alpha", &PostParams::default(), &fresh).await.unwrap();
    assert_eq!(replaced.spec.replicas, Some(7));
    assert_eq!(replaced.metadata.generation, Some(4));

    // Delete without finalizers removes it.
    api.delete("beta", &DeleteParams::default()).await.unwrap();
    let err = api.get("beta").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test(flavor = "multi_thread")]
async fn finalizers_hold_deletion_until_removed() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let mut a = agent("held");
    a.metadata.finalizers = Some(vec!["a2a.dev/cleanup".into()]);
    api.create(&PostParams::default(), &a).await.unwrap();
    let deleted = api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = deleted.left().expect("the object, still present");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(api.get("held").await.unwrap().metadata.deletion_timestamp.is_some());
    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    let err = api.get("held").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_creates_then_merges() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let pp = PatchParams::apply("test").force();
    let first = api.patch("ssa", &pp, &Patch::Apply(common::agent_json("ssa"))).await.unwrap();
    assert_eq!(first.metadata.generation, Some(1));
    let mut again = common::agent_json("ssa");
    again["spec"]["skills"] = json!(["echo"]);
    let second = api.patch("ssa", &pp, &Patch::Apply(again.clone())).await.unwrap();
    assert_eq!(second.spec.skills, ["echo"]);
    assert_eq!(second.metadata.generation, Some(2));
    // Applying the same again changes nothing: same resourceVersion.
    let third = api.patch("ssa", &pp, &Patch::Apply(again)).await.unwrap();
    assert_eq!(rv(&third), rv(&second));
}

/// The managedFields entry of `manager` (and `operation`), as JSON.
fn entry(a: &Agent, manager: &str, operation: &str) -> Option<serde_json::Value> {
    a.metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some(manager) && e.operation.as_deref() == Some(operation))
        .map(|e| serde_json::to_value(e).unwrap())
}

fn limits(a: &Agent) -> serde_json::Value {
    serde_json::to_value(&a.spec.resources.limits).unwrap()
}

fn gitops_agent(labels: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "a2a.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "gitops", "labels": labels},
        "spec": {"command": ["sleep", "100"], "replicas": 2, "resources": {"limits": limits}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_removes_fields_and_labels_dropped_from_the_configuration() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let pp = PatchParams::apply("gitops");
    let full = gitops_agent(json!({"team": "test", "tier": "a"}), json!({"pids": 100, "cpu": "1"}));
    let first = api.patch("gitops", &pp, &Patch::Apply(&full)).await.unwrap();
    assert_eq!(first.metadata.labels.as_ref().unwrap().get("tier").map(String::as_str), Some("a"));
    assert_eq!(limits(&first), json!({"pids": 100, "cpu": "1"}));
    let owned = entry(&first, "gitops", "Apply").expect("the applier's entry");
    assert_eq!(owned["fieldsType"], "FieldsV1");
    assert_eq!(owned["apiVersion"], "a2a.dev/v1alpha1");
    assert_eq!(owned["fieldsV1"]["f:spec"]["f:resources"]["f:limits"]["f:pids"], json!({}));
    assert_eq!(owned["fieldsV1"]["f:metadata"]["f:labels"]["f:tier"], json!({}));
    assert_eq!(owned["fieldsV1"]["f:spec"]["f:command"], json!({}), "a list is one atomic leaf");

    // `limits.pids` and the `tier` label deleted from the file, applied again: gone.
    let trimmed = gitops_agent(json!({"team": "test"}), json!({"cpu": "1"}));
    let second = api.patch("gitops", &pp, &Patch::Apply(&trimmed)).await.unwrap();
    assert_eq!(limits(&second), json!({"cpu": "1"}));
    let labels = second.metadata.labels.clone().unwrap();
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["team"]);
    assert_eq!(second.metadata.generation, Some(2));
    let owned = entry(&second, "gitops", "Apply").unwrap();
    assert!(owned["fieldsV1"]["f:spec"]["f:resources"]["f:limits"].get("f:pids").is_none(), "{owned}");
    assert_eq!(limits(&api.get("gitops").await.unwrap()), json!({"cpu": "1"}), "stored as answered");

    // The same configuration again changes nothing, not even the entry's time.
    let third = api.patch("gitops", &pp, &Patch::Apply(&trimmed)).await.unwrap();
    assert_eq!(rv(&third), rv(&second));
    assert_eq!(third.metadata.managed_fields, second.metadata.managed_fields);

    // A field another manager also applied stays when this one stops applying it.
    let shared = json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "gitops"},
        "spec": {"resources": {"limits": {"cpu": "1"}}}});
    api.patch("gitops", &PatchParams::apply("tuner"), &Patch::Apply(&shared)).await.unwrap();
    let fourth =
        api.patch("gitops", &pp, &Patch::Apply(gitops_agent(json!({"team": "test"}), json!({})))).await.unwrap();
    assert_eq!(limits(&fourth), json!({"cpu": "1"}), "still applied by \"tuner\"");

    // The list and the watch carry managedFields as the get does.
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].metadata.managed_fields, fourth.metadata.managed_fields);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_appliers_of_one_field_conflict_until_one_forces() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let mut config = common::agent_json("shared");
    config["spec"]["replicas"] = json!(2);
    api.patch("shared", &PatchParams::apply("alice"), &Patch::Apply(&config)).await.unwrap();
    let before = api.get("shared").await.unwrap();

    config["spec"]["replicas"] = json!(3);
    let err = api.patch("shared", &PatchParams::apply("bob"), &Patch::Apply(&config)).await.unwrap_err();
    let kube::Error::Api(status) = err else { panic!("{err:?}") };
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(status.message, "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
    let (code, raw) = common::raw(
        &t.client,
        axum::http::Method::PATCH,
        "/apis/a2a.dev/v1alpha1/namespaces/default/agents/shared?fieldManager=bob",
        "application/apply-patch+yaml",
        serde_json::to_vec(&config).unwrap(),
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        raw["details"]["causes"],
        json!([{"type": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"}])
    );
    let unchanged = api.get("shared").await.unwrap();
    assert_eq!(rv(&unchanged), rv(&before), "a conflict writes nothing");
    assert_eq!(unchanged.spec.replicas, Some(2));

    // The same value is no conflict: both own the field.
    config["spec"]["replicas"] = json!(2);
    let both = api.patch("shared", &PatchParams::apply("bob"), &Patch::Apply(&config)).await.unwrap();
    assert!(entry(&both, "alice", "Apply").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());
    assert!(entry(&both, "bob", "Apply").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_some());

    // Forced, bob's value wins and alice no longer owns the field; her next apply conflicts.
    config["spec"]["replicas"] = json!(3);
    let forced = api.patch("shared", &PatchParams::apply("bob").force(), &Patch::Apply(&config)).await.unwrap();
    assert_eq!(forced.spec.replicas, Some(3));
    assert!(entry(&forced, "alice", "Apply").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    config["spec"]["replicas"] = json!(2);
    let err = api.patch("shared", &PatchParams::apply("alice"), &Patch::Apply(&config)).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.message == "Apply failed with 1 conflict: conflict with \"bob\": .spec.replicas"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_by_another_manager_takes_the_field_and_the_next_apply_conflicts() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let mut config = common::agent_json("edited");
    config["spec"]["replicas"] = json!(2);
    api.patch("edited", &PatchParams::apply("gitops"), &Patch::Apply(&config)).await.unwrap();
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let edited = api.patch("edited", &edit, &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    let update = entry(&edited, "kubectl-edit", "Update").expect("an Update entry");
    assert_eq!(update["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    assert!(update["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(entry(&edited, "gitops", "Apply").unwrap()["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    let err = api.patch("edited", &PatchParams::apply("gitops"), &Patch::Apply(&config)).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409
            && s.message == "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using a2a.dev/v1alpha1: .spec.replicas"),
        "{err:?}"
    );

    // A status write is an Update on the status subresource, and touches nothing of the spec.
    let node = PatchParams { field_manager: Some("a2a-node".into()), ..Default::default() };
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/status", "value": {"phase": "Running"}}])).unwrap();
    let with_status = api.patch_status("edited", &node, &Patch::<()>::Json(jp)).await.unwrap();
    let status_entry = entry(&with_status, "a2a-node", "Update").unwrap();
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(status_entry["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
    // Writing the same status again changes nothing.
    let same = api.patch_status("edited", &node, &Patch::Merge(json!({"status": {"phase": "Running"}}))).await.unwrap();
    assert_eq!(rv(&same), rv(&with_status));

    // The manager of a write without fieldManager is the User-Agent's product.
    let (code, updated) = {
        let req = http::Request::builder()
            .method("PATCH")
            .uri("/apis/a2a.dev/v1alpha1/namespaces/default/agents/edited")
            .header("content-type", "application/merge-patch+json")
            .header("user-agent", "kubectl/v1.32.0 (linux/amd64) kubernetes/abcdef")
            .body(kube::client::Body::from(br#"{"metadata":{"labels":{"edited":"yes"}}}"#.to_vec()))
            .unwrap();
        let resp = t.client.send(req).await.unwrap();
        let code = resp.status().as_u16();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice::<Agent>(&body).unwrap())
    };
    assert_eq!(code, 200);
    let kubectl = entry(&updated, "kubectl", "Update").expect("an entry for kubectl");
    assert_eq!(kubectl["fieldsV1"], json!({"f:metadata": {"f:labels": {"f:edited": {}}}}));

    // managedFields written by a client replace the recorded ones; `[{}]` clears them.
    let mut reset = api.get("edited").await.unwrap();
    reset.metadata.managed_fields = Some(vec![Default::default()]);
    let resetter = PostParams { field_manager: Some("resetter".into()), ..Default::default() };
    let cleared = api.replace("edited", &resetter, &reset).await.unwrap();
    let left: Vec<_> = cleared.metadata.managed_fields.iter().flatten().map(|e| e.manager.clone()).collect();
    assert!(left.iter().all(|m| m.as_deref() == Some("resetter")), "{left:?}");
    // Bad entries are refused, naming the field.
    let (code, status) = common::raw(
        &t.client,
        axum::http::Method::PATCH,
        "/apis/a2a.dev/v1alpha1/namespaces/default/agents/edited",
        "application/merge-patch+json",
        serde_json::to_vec(&json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Replace", "fieldsV1": {"f:spec": {}}}]}})).unwrap(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.managedFields[0].operation");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_get_422_with_field_paths_and_nothing_is_written() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let mut bad = common::agent_json("bad");
    bad["spec"]["replicas"] = json!(-1);
    bad["spec"]["bogus"] = json!(true);
    let (code, status) = common::raw(
        &t.client,
        axum::http::Method::POST,
        "/apis/a2a.dev/v1alpha1/namespaces/default/agents",
        "application/json",
        serde_json::to_vec(&bad).unwrap(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"spec.replicas") && fields.contains(&"spec.bogus"), "{status}");
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_watcher_sees_creates_updates_and_deletes() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    api.create(&PostParams::default(), &agent("before")).await.unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            api.create(&PostParams::default(), &agent("after")).await.unwrap();
            api.delete("before", &DeleteParams::default()).await.unwrap();
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("watcher events in time")
            .unwrap()
            .unwrap();
        match ev {
            watcher::Event::InitApply(a) => seen.push(format!("init {}", a.metadata.name.unwrap())),
            watcher::Event::Apply(a) => seen.push(format!("apply {}", a.metadata.name.unwrap())),
            watcher::Event::Delete(a) => seen.push(format!("delete {}", a.metadata.name.unwrap())),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
    writer.await.unwrap();
    assert_eq!(seen, ["init before", "apply after", "delete before"]);
}

fn summarize(ev: WatchEvent<Agent>) -> Option<String> {
    match ev {
        WatchEvent::Added(a) => Some(format!("ADDED {} {}", a.metadata.name.unwrap(), a.spec.replicas.unwrap_or(1))),
        WatchEvent::Modified(a) => {
            Some(format!("MODIFIED {} {}", a.metadata.name.unwrap(), a.spec.replicas.unwrap_or(1)))
        }
        WatchEvent::Deleted(a) => Some(format!("DELETED {}", a.metadata.name.unwrap())),
        WatchEvent::Bookmark(_) => None,
        WatchEvent::Error(e) => Some(format!("ERROR {}", e.code)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumed_from_an_old_version_gets_every_later_event_exactly_once() {
    let t = start_with(|c| c.bookmark_interval(Duration::from_millis(50))).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let a = api.create(&PostParams::default(), &agent("a")).await.unwrap();
    let from = rv(&a);
    api.create(&PostParams::default(), &agent("b")).await.unwrap();
    api.create(&PostParams::default(), &agent("c")).await.unwrap();
    api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await.unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();

    let mut stream = api.watch(&WatchParams::default(), &from).await.unwrap().boxed();
    let later = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            api.create(&PostParams::default(), &agent("d")).await.unwrap();
        })
    };
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < 5 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next()).await.expect("events in time").unwrap().unwrap();
        events.extend(summarize(ev));
    }
    later.await.unwrap();
    // Nothing more (only bookmarks) for a while: no duplicates.
    let quiet = tokio::time::Instant::now() + Duration::from_millis(400);
    while let Ok(Some(ev)) = tokio::time::timeout_at(quiet, stream.try_next()).await.map(|r| r.unwrap()) {
        events.extend(summarize(ev));
    }
    assert_eq!(events, ["ADDED b 1", "ADDED c 1", "MODIFIED a 2", "DELETED b", "ADDED d 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_a_compacted_version_gets_410_expired() {
    let t = start_with(|c| c.watch_history(3)).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let first = api.create(&PostParams::default(), &agent("x0")).await.unwrap();
    for i in 1..6 {
        api.create(&PostParams::default(), &agent(&format!("x{i}"))).await.unwrap();
    }
    expect_expired(&api, &first).await;
    // kube-runtime's watcher recovers from that by listing again.
    assert_eq!(listed_by_a_watcher(&api).await.len(), 6);
}

/// A watch from `from`'s version gets one ERROR event: 410 `Expired`.
async fn expect_expired(api: &Api<Agent>, from: &Agent) {
    let mut stream = api.watch(&WatchParams::default(), &rv(from)).await.unwrap().boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    match ev {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{}", e.message);
            assert!(e.message.contains("too old resource version"), "{}", e.message);
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

/// The names kube-runtime's watcher lists before its first `InitDone`.
async fn listed_by_a_watcher(api: &Api<Agent>) -> Vec<String> {
    let mut w = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut names = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), w.try_next()).await.unwrap().unwrap() {
        match ev {
            watcher::Event::InitApply(a) => names.push(a.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn events_older_than_the_history_window_are_dropped_and_a_resume_from_them_gets_410() {
    // Past its newest 2 events, the history keeps only what is younger than 300 ms.
    let t = start_with(|c| c.watch_history_window(Duration::from_millis(300), 2)).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let first = api.create(&PostParams::default(), &agent("y0")).await.unwrap();
    let mut last = first.clone();
    for i in 1..5 {
        last = api.create(&PostParams::default(), &agent(&format!("y{i}"))).await.unwrap();
    }
    // Nothing is written meanwhile: the events age out all the same, and the metrics say so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, text) = common::raw(&t.client, axum::http::Method::GET, "/metrics", "", "").await;
        assert_eq!(code, 200);
        let text = text.as_str().unwrap().to_owned();
        let events = text.lines().find_map(|l| l.strip_prefix("a2a_store_watch_history_events ")).unwrap();
        if events == "2" {
            let bytes = text.lines().find_map(|l| l.strip_prefix("a2a_store_watch_history_bytes ")).unwrap();
            assert!(bytes.parse::<usize>().unwrap() > 0, "{bytes}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the history still holds {events} events");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_expired(&api, &first).await;
    // A resume from the newest event still works, and a watcher that lists again sees all.
    let mut stream = api.watch(&WatchParams::default(), &rv(&last)).await.unwrap().boxed();
    api.create(&PostParams::default(), &agent("y5")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    match ev {
        WatchEvent::Added(a) => assert_eq!(a.metadata.name.as_deref(), Some("y5")),
        other => panic!("expected y5 added, got {other:?}"),
    }
    assert_eq!(listed_by_a_watcher(&api).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn paged_lists_are_one_consistent_snapshot() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        api.create(&PostParams::default(), &agent(name)).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |l: &kube::core::ObjectList<Agent>| -> Vec<String> {
        l.items.iter().map(|a| a.metadata.name.clone().unwrap()).collect()
    };
    assert_eq!(names(&first), ["p1", "p2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");
    let snapshot_rv = first.metadata.resource_version.clone();

    // Changes after the first page do not show in the rest of it.
    api.delete("p3", &DeleteParams::default()).await.unwrap();
    api.patch("p4", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    api.create(&PostParams::default(), &agent("p6")).await.unwrap();

    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(&second), ["p3", "p4"]);
    assert_eq!(second.items[1].spec.replicas, None, "p4 as it was at the snapshot");
    assert_eq!(second.metadata.resource_version, snapshot_rv);
    assert_eq!(second.metadata.remaining_item_count, Some(1));
    let third = api
        .list(&ListParams::default().limit(2).continue_token(second.metadata.continue_.as_ref().unwrap()))
        .await
        .unwrap();
    assert_eq!(names(&third), ["p5"]);
    assert!(third.metadata.continue_.is_none());
    assert!(third.metadata.remaining_item_count.is_none());

    // A fresh list sees the changes; selectors page too.
    assert_eq!(names(&api.list(&ListParams::default()).await.unwrap()), ["p1", "p2", "p4", "p5", "p6"]);
    let page = api.list(&ListParams::default().labels("team=test").limit(4)).await.unwrap();
    assert_eq!(names(&page), ["p1", "p2", "p4", "p5"]);
    assert_eq!(page.metadata.remaining_item_count, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continue_token_older_than_the_history_is_410_expired() {
    let t = start_with(|c| c.watch_history(3)).await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    for i in 0..4 {
        api.create(&PostParams::default(), &agent(&format!("e{i}"))).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    for i in 4..8 {
        api.create(&PostParams::default(), &agent(&format!("e{i}"))).await.unwrap();
    }
    let err = api.list(&ListParams::default().limit(1).continue_token(&token)).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{}", s.message);
            assert!(s.message.contains("continue parameter is too old"), "{}", s.message);
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    // Starting over works.
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_collection_removes_what_the_selectors_match() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    for name in ["keep", "drop1", "drop2", "held"] {
        let mut a = agent(name);
        if name != "keep" {
            a.metadata.labels.get_or_insert_default().insert("tier".into(), "scratch".into());
        }
        if name == "held" {
            a.metadata.finalizers = Some(vec!["a2a.dev/test".into()]);
        }
        api.create(&PostParams::default(), &a).await.unwrap();
    }
    let out =
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=scratch")).await.unwrap();
    let deleted = out.left().expect("the list of deleted objects");
    let mut names: Vec<String> = deleted.items.iter().map(|a| a.metadata.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["drop1", "drop2", "held"]);
    let left: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.into_iter().map(|a| a.metadata.name.unwrap()).collect();
    assert_eq!(left, ["held", "keep"]);
    assert!(api.get("held").await.unwrap().metadata.deletion_timestamp.is_some(), "finalizers still hold it");
    // A field selector narrows it to one object.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().fields("metadata.name=keep")).await.unwrap();
    assert!(matches!(api.get("keep").await.unwrap_err(), kube::Error::Api(s) if s.code == 404));
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_runtime_recorder_publishes_events_k8s_io_events() {
    use k8s_openapi::api::events::v1::Event as EventV1;
    use kube::Resource as _;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let agent = api.create(&PostParams::default(), &agent("recorded")).await.unwrap();
    let reporter = Reporter { controller: "a2a-test".into(), instance: Some("test-1".into()) };
    let recorder = Recorder::new(t.client.clone(), reporter);
    let event = Event {
        type_: EventType::Warning,
        reason: "Throttled".into(),
        note: Some("cpu limit reached".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = agent.object_ref(&());
    // The first publish creates the Event; the same one again patches its series.
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let events: Api<EventV1> = Api::namespaced(t.client.clone(), "default");
    let list = events.list(&ListParams::default().fields("regarding.name=recorded")).await.unwrap();
    assert_eq!(list.items.len(), 1, "{:?}", list.items);
    let e = &list.items[0];
    assert_eq!(e.note.as_deref(), Some("cpu limit reached"));
    assert_eq!(e.reporting_controller.as_deref(), Some("a2a-test"));
    assert_eq!(e.regarding.as_ref().and_then(|r| r.kind.as_deref()), Some("Agent"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert!(events.list(&ListParams::default().fields("regarding.name=other")).await.unwrap().items.is_empty());

    // Discovery names the group, and an Event without what the API requires is refused.
    let (code, groups) = common::raw(&t.client, axum::http::Method::GET, "/apis", "application/json", "").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "a2a.dev",
            "events.k8s.io",
            "coordination.k8s.io",
            "apiextensions.k8s.io",
            "authorization.k8s.io",
            "authentication.k8s.io"
        ]
    );
    let (code, status) = common::raw(
        &t.client,
        axum::http::Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "application/json",
        r#"{"metadata": {"name": "bare"}, "type": "Sideways"}"#,
    )
    .await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    for f in ["eventTime", "reportingController", "reportingInstance", "action", "reason", "type"] {
        assert!(fields.contains(&f), "no cause for {f}: {status}");
    }
}

/// Core and events.k8s.io Events are one resource in two versions, as in the kube-apiserver:
/// a write through either is read, listed, selected and watched through both, each in its
/// own shape, with the same uid and resourceVersion.
#[tokio::test(flavor = "multi_thread")]
async fn events_are_one_store_read_and_watched_through_both_versions() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as EventV1;

    let t = start().await;
    let core: Api<CoreEvent> = Api::namespaced(t.client.clone(), "default");
    let v1: Api<EventV1> = Api::namespaced(t.client.clone(), "default");
    let from = core.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut core_watch =
        core.watch(&WatchParams::default().fields("involvedObject.name=echo"), &from).await.unwrap().boxed();
    let mut v1_watch = v1.watch(&WatchParams::default().fields("regarding.name=echo"), &from).await.unwrap().boxed();

    let through_v1: EventV1 = serde_json::from_value(json!({
        "metadata": {"name": "echo.v1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/writer",
        "reportingInstance": "writer-1", "action": "Start", "reason": "Noted", "type": "Warning",
        "regarding": {"kind": "Agent", "name": "echo", "namespace": "default"}, "note": "from events/v1",
    }))
    .unwrap();
    v1.create(&PostParams::default(), &through_v1).await.unwrap();
    let through_core: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "echo.core"},
        "involvedObject": {"kind": "Agent", "name": "echo", "namespace": "default"},
        "reason": "Tested", "message": "from core/v1", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "example"},
    }))
    .unwrap();
    core.create(&PostParams::default(), &through_core).await.unwrap();

    // Each watch sees both writes, in its own version.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen_core = Vec::new();
    while seen_core.len() < 2 {
        match tokio::time::timeout_at(deadline, core_watch.try_next()).await.expect("in time").unwrap().unwrap() {
            WatchEvent::Added(e) => seen_core.push((e.metadata.name.unwrap(), e.message.unwrap_or_default())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen_core,
        [("echo.v1".to_string(), "from events/v1".to_string()), ("echo.core".into(), "from core/v1".into())]
    );
    let mut seen_v1 = Vec::new();
    while seen_v1.len() < 2 {
        match tokio::time::timeout_at(deadline, v1_watch.try_next()).await.expect("in time").unwrap().unwrap() {
            WatchEvent::Added(e) => seen_v1.push((e.metadata.name.unwrap(), e.note.unwrap_or_default())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen_v1,
        [("echo.v1".to_string(), "from events/v1".to_string()), ("echo.core".into(), "from core/v1".into())]
    );

    // One object: the same uid and resourceVersion through both versions.
    let (a, b) = (core.get("echo.v1").await.unwrap(), v1.get("echo.v1").await.unwrap());
    assert_eq!(a.metadata.uid, b.metadata.uid);
    assert_eq!(a.metadata.resource_version, b.metadata.resource_version);
    assert_eq!(a.reporting_component.as_deref(), Some("example.com/writer"));
    let c = v1.get("echo.core").await.unwrap();
    assert_eq!(c.deprecated_count, Some(1));
    assert_eq!(c.deprecated_source.and_then(|s| s.component).as_deref(), Some("example"));

    // Field selectors in each version's own names.
    let names = |l: Vec<String>| {
        let mut l = l;
        l.sort();
        l
    };
    let core_named = |fields: &'static str| {
        let core = core.clone();
        async move {
            core.list(&ListParams::default().fields(fields))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    let v1_named = |fields: &'static str| {
        let v1 = v1.clone();
        async move {
            v1.list(&ListParams::default().fields(fields))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names(core_named("involvedObject.name=echo,involvedObject.kind=Agent").await), ["echo.core", "echo.v1"]);
    assert_eq!(core_named("reportingComponent=example.com/writer").await, ["echo.v1"]);
    assert_eq!(core_named("type=Normal").await, ["echo.core"]);
    assert_eq!(names(v1_named("regarding.name=echo,regarding.kind=Agent").await), ["echo.core", "echo.v1"]);
    assert_eq!(v1_named("reportingController=example.com/writer").await, ["echo.v1"]);
    assert_eq!(v1_named("type=Warning,reason=Noted").await, ["echo.v1"]);
    assert!(v1_named("regarding.name=other").await.is_empty());

    // A merge patch through events.k8s.io/v1 in its own names; a delete through core.
    let patched =
        v1.patch("echo.core", &PatchParams::default(), &Patch::Merge(json!({"note": "patched"}))).await.unwrap();
    assert_eq!(patched.note.as_deref(), Some("patched"));
    assert_eq!(core.get("echo.core").await.unwrap().message.as_deref(), Some("patched"));
    core.delete("echo.v1", &DeleteParams::default()).await.unwrap();
    assert!(matches!(v1.get("echo.v1").await.unwrap_err(), kube::Error::Api(s) if s.code == 404));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_patches_change_only_status_and_a_patch_that_changes_nothing_writes_nothing() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    let created = api.create(&PostParams::default(), &agent("gamma")).await.unwrap();
    let status_path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents/gamma/status";
    let json_patch = |ops: serde_json::Value| -> Patch<()> { Patch::Json(serde_json::from_value(ops).unwrap()) };

    // A JSON patch of status alone: status changes, spec and generation do not.
    let running = api
        .patch_status(
            "gamma",
            &PatchParams::default(),
            &json_patch(json!([{"op": "add", "path": "/status", "value": {"phase": "Running", "restarts": 1}}])),
        )
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&running.status).unwrap()["phase"], "Running");
    assert_eq!(running.spec.command, created.spec.command);
    assert_eq!(running.metadata.generation, created.metadata.generation);
    assert!(rv(&running).parse::<u64>().unwrap() > rv(&created).parse::<u64>().unwrap());

    // `test` operations see the stored object, resourceVersion included.
    let guarded = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv(&running)},
        {"op": "replace", "path": "/status/phase", "value": "Degraded"}
    ]);
    let degraded = api.patch_status("gamma", &PatchParams::default(), &json_patch(guarded.clone())).await.unwrap();
    assert_eq!(serde_json::to_value(&degraded.status).unwrap()["phase"], "Degraded");
    // The same guard again is stale now: 422, nothing written.
    let (code, answer) = common::raw(
        &t.client,
        axum::http::Method::PATCH,
        status_path,
        "application/json-patch+json",
        guarded.to_string(),
    )
    .await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(rv(&api.get("gamma").await.unwrap()), rv(&degraded));

    // A status that fails validation is refused whole.
    let (code, answer) = common::raw(
        &t.client,
        axum::http::Method::PATCH,
        status_path,
        "application/merge-patch+json",
        json!({"status": {"phase": "Bogus", "restarts": 5}}).to_string(),
    )
    .await;
    assert_eq!(code, 422, "{answer}");
    let now = api.get("gamma").await.unwrap();
    assert_eq!(rv(&now), rv(&degraded));
    assert_eq!(serde_json::to_value(&now.status).unwrap()["restarts"], 1);

    // A patch that leaves the object as it is makes no new version.
    let same = api
        .patch_status("gamma", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Degraded"}})))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&degraded));

    // Through /status, operations on anything but status are ignored, as on kube-apiserver.
    let mixed = api
        .patch_status(
            "gamma",
            &PatchParams::default(),
            &json_patch(json!([
                {"op": "add", "path": "/spec/replicas", "value": 9},
                {"op": "replace", "path": "/status/phase", "value": "Running"}
            ])),
        )
        .await
        .unwrap();
    assert_eq!(mixed.spec.replicas, created.spec.replicas);
    assert_eq!(serde_json::to_value(&mixed.status).unwrap()["phase"], "Running");
    assert_eq!(mixed.metadata.generation, created.metadata.generation);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_patches_applied_in_place_record_the_managers_status_entry() {
    let t = start().await;
    let api: Api<Agent> = Api::namespaced(t.client.clone(), "default");
    api.create(&PostParams::default(), &agent("delta")).await.unwrap();
    let as_manager = |m: &str| PatchParams { field_manager: Some(m.into()), ..Default::default() };
    let json_patch = |ops: serde_json::Value| -> Patch<()> { Patch::Json(serde_json::from_value(ops).unwrap()) };
    let endpoints = json!(["http://127.0.0.1:1", "http://127.0.0.1:2"]);

    // A merge patch of status: the node's entry owns what it set.
    let set = api
        .patch_status(
            "delta",
            &as_manager("node"),
            &Patch::Merge(json!({"status": {"phase": "Running", "endpoints": endpoints}})),
        )
        .await
        .unwrap();
    let node = entry(&set, "node", "Update").expect("the node's entry");
    assert_eq!(node["subresource"], "status");
    assert_eq!(node["fieldsV1"], json!({"f:status": {"f:endpoints": {}, "f:phase": {}}}));

    // Replacing a list element with what it holds changes nothing: no version, same entries.
    let same = api
        .patch_status(
            "delta",
            &as_manager("engine"),
            &json_patch(json!([{"op": "replace", "path": "/status/endpoints/1", "value": "http://127.0.0.1:2"}])),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&set));
    assert!(entry(&same, "engine", "Update").is_none());

    // Replacing it with something else changes the list, which is one field: it moves to the
    // engine's entry; the node keeps the phase.
    let moved = api
        .patch_status(
            "delta",
            &as_manager("engine"),
            &json_patch(json!([{"op": "replace", "path": "/status/endpoints/1", "value": "http://127.0.0.1:3"}])),
        )
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&moved.status).unwrap()["endpoints"][1], "http://127.0.0.1:3");
    let engine = entry(&moved, "engine", "Update").expect("the engine's entry");
    assert_eq!(engine["subresource"], "status");
    assert_eq!(engine["fieldsV1"], json!({"f:status": {"f:endpoints": {}}}));
    assert_eq!(entry(&moved, "node", "Update").unwrap()["fieldsV1"], json!({"f:status": {"f:phase": {}}}));

    // A merge patch removing a field takes it out of every entry.
    let removed = api
        .patch_status("delta", &as_manager("node"), &Patch::Merge(json!({"status": {"endpoints": null}})))
        .await
        .unwrap();
    assert!(entry(&removed, "engine", "Update").is_none(), "{:?}", removed.metadata.managed_fields);
    assert_eq!(entry(&removed, "node", "Update").unwrap()["fieldsV1"], json!({"f:status": {"f:phase": {}}}));
}
