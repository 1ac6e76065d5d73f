use std::time::Duration;

use serde_json::json;

use super::*;
use crate::apiserver::wal::OpRef;

fn obj(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": {"n": 1}})
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("a2a.dev/agents", "default", name)
}

fn open_with(dir: &Path, history: usize, history_bytes: usize) -> Store {
    let config = StoreConfig { history, history_bytes, ..StoreConfig::default() };
    Store::open(&dir.join("state.redb"), config, Arc::new(Metrics::default())).unwrap()
}

fn open(dir: &Path) -> Store {
    open_with(dir, 4, 1 << 20)
}

async fn put(store: &Store, name: &str) -> Arc<Stored> {
    store.write(Write::Put { key: key(name), object: obj(name), precondition: Precondition::None }).await.unwrap()
}

fn names(items: &[Arc<Stored>]) -> Vec<String> {
    items.iter().map(|s| s.key.name.clone()).collect()
}

#[tokio::test]
async fn writes_survive_reopen_and_versions_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a =
        store.write(Write::Put { key: key("a"), object: obj("a"), precondition: Precondition::Absent }).await.unwrap();
    assert_eq!(a.value().unwrap()["metadata"]["resourceVersion"], "1");
    drop(store);
    // The writer thread exits when the last handle is gone; give it a moment to release
    // the file lock.
    let store = loop {
        match Store::open(&dir.path().join("state.redb"), StoreConfig::default(), Arc::new(Metrics::default())) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let got = store.get(&key("a")).unwrap();
    assert_eq!(got.resource_version, 1);
    assert_eq!(got.value().unwrap(), a.value().unwrap());
    assert_eq!(got.label("app"), Some("a"));
    let b =
        store.write(Write::Put { key: key("b"), object: obj("b"), precondition: Precondition::Absent }).await.unwrap();
    assert_eq!(b.value().unwrap()["metadata"]["resourceVersion"], "2");
}

#[test]
fn stored_json_is_the_object_with_its_version_and_selection_fields() {
    let k = ObjectKey::new("/events", "default", "e1");
    let object = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e1", "namespace": "default", "resourceVersion": "99", "labels": {"a": "b"},
                     "ownerReferences": [{"uid": "u-1"}, {"uid": "u-2"}]},
        "involvedObject": {"kind": "Agent", "name": "w", "resourceVersion": "7"},
        "count": 3,
    });
    let stored = Stored::assemble(k.clone(), 12, Encoded::new(&k, &object).unwrap());
    let mut want = object.clone();
    want["metadata"]["resourceVersion"] = json!("12");
    assert_eq!(stored.value().unwrap(), want);
    assert!(stored.bytes().starts_with(br#"{"metadata":{"resourceVersion":"12","#));
    assert_eq!(stored.label("a"), Some("b"));
    assert_eq!(stored.field("involvedObject.name"), "w");
    assert_eq!(stored.field("involvedObject.uid"), "");
    assert_eq!(stored.field("metadata.namespace"), "default");
    assert!(stored.owned_by("u-2") && !stored.owned_by("u-3"));
    let later = stored.at_version(1234);
    want["metadata"]["resourceVersion"] = json!("1234");
    assert_eq!(later.value().unwrap(), want);
    // Metadata holding only the version still makes valid JSON.
    let bare = Stored::assemble(k.clone(), 5, Encoded::new(&k, &json!({"metadata": {}})).unwrap());
    assert_eq!(bare.value().unwrap(), json!({"metadata": {"resourceVersion": "5"}}));
    assert!(matches!(Encoded::new(&k, &json!([1])), Err(Error::NotAnObject { .. })));
    assert!(matches!(Encoded::new(&k, &json!({"metadata": 1})), Err(Error::NotAnObject { .. })));
}

#[tokio::test]
async fn preconditions_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let put = |p| Write::Put { key: key("a"), object: obj("a"), precondition: p };
    assert!(matches!(store.write(put(Precondition::Exists)).await, Err(Error::NotFound)));
    store.write(put(Precondition::Absent)).await.unwrap();
    assert!(matches!(store.write(put(Precondition::Absent)).await, Err(Error::AlreadyExists)));
    assert!(matches!(store.write(put(Precondition::ResourceVersion(7))).await, Err(Error::Conflict { current: 1 })));
    // The same bytes as version 1: nothing is written, no version, no event.
    let same = store.write(put(Precondition::ResourceVersion(1))).await.unwrap();
    assert_eq!(same.resource_version, 1);
    assert_eq!(store.resource_version(), 1);
    let mut changed = obj("a");
    changed["spec"] = json!({"replicas": 2});
    let v = store
        .write(Write::Put { key: key("a"), object: changed, precondition: Precondition::ResourceVersion(1) })
        .await
        .unwrap();
    assert_eq!(v.resource_version, 2);
}

#[tokio::test]
async fn concurrent_writers_are_all_committed_with_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("o{i}");
            s.write(Write::Put { key: key(&name), object: obj(&name), precondition: Precondition::Absent }).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let v = t.await.unwrap().unwrap();
        versions.push(stored_rv(&v.value().unwrap()));
    }
    versions.sort();
    assert_eq!(versions, (1..=64).collect::<Vec<_>>());
    assert_eq!(store.list("a2a.dev/agents", Some("default"), None, None).unwrap().0.len(), 64);
}

/// On a multi-thread runtime the first writer commits on its own thread while the others
/// queue behind it for the commit thread: every write lands once, in one order, across
/// checkpoints, and all of them are there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_leading_their_own_commits_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { checkpoint_every: 3, ..StoreConfig::default() };
    let store = Store::open(&dir.path().join("state.redb"), config, Arc::new(Metrics::default())).unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for round in 0..8 {
                let name = format!("o{i}-{round}");
                let put = Write::Put { key: key(&name), object: obj(&name), precondition: Precondition::Absent };
                versions.push(s.write(put).await.unwrap().resource_version);
            }
            versions
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one writer's versions go up: {mine:?}");
        versions.extend(mine);
    }
    versions.sort();
    assert_eq!(versions, (1..=256).collect::<Vec<_>>());
    drop(store);
    let store = loop {
        match Store::open(&dir.path().join("state.redb"), StoreConfig::default(), Arc::new(Metrics::default())) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert_eq!(store.list("a2a.dev/agents", Some("default"), None, None).unwrap().0.len(), 256);
    assert_eq!(store.resource_version(), 256);
}

#[tokio::test]
async fn watch_resumes_from_history_and_reports_gone_when_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["a", "b", "c", "d", "e", "f"] {
        store
            .write(Write::Put { key: key(name), object: obj(name), precondition: Precondition::Absent })
            .await
            .unwrap();
    }
    // History keeps 4 events: versions 3..=6.
    let w = store.watch("a2a.dev/agents", Some(3)).unwrap();
    let names: Vec<_> = w.initial.iter().map(|e| e.object.key.name.clone()).collect();
    assert_eq!(names, ["d", "e", "f"]);
    assert!(matches!(store.watch("a2a.dev/agents", Some(1)), Err(Error::Gone { requested: 1, oldest: 2 })));
    let all = store.watch("a2a.dev/agents", None).unwrap();
    assert_eq!(all.initial.len(), 6);
    let after = store.events_after("a2a.dev/agents", 4, 1).unwrap();
    assert_eq!(names_of(&after.events), ["e"]);
    assert!(after.more);
    assert_eq!(after.scanned_to, 5);
    let after = store.events_after("a2a.dev/agents", 5, 100).unwrap();
    assert_eq!(names_of(&after.events), ["f"]);
    assert!(!after.more);
    assert!(store.events_after("a2a.dev/agents", 6, 100).unwrap().events.is_empty());
    assert!(store.events_after("a2a.dev/events", 4, 100).unwrap().events.is_empty());
    assert!(matches!(store.events_after("a2a.dev/agents", 1, 10), Err(Error::Gone { .. })));
}

fn names_of(events: &[Arc<Event>]) -> Vec<String> {
    events.iter().map(|e| e.object.key.name.clone()).collect()
}

#[tokio::test]
async fn history_is_bounded_by_bytes_as_well_as_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), 1000, 4096);
    let big =
        |name: &str| json!({"metadata": {"name": name, "namespace": "default"}, "status": {"blob": "x".repeat(1500)}});
    for name in ["a", "b", "c", "d", "e"] {
        store.write(Write::Put { key: key(name), object: big(name), precondition: Precondition::None }).await.unwrap();
    }
    let (events, bytes) = store.history_size();
    assert!(bytes <= 4096, "{bytes} bytes in the history");
    assert_eq!(events, 2);
    // Resuming from before the kept events is Gone; from the kept ones works.
    assert!(matches!(store.watch("a2a.dev/agents", Some(2)), Err(Error::Gone { requested: 2, oldest: 3 })));
    assert_eq!(store.watch("a2a.dev/agents", Some(3)).unwrap().initial.len(), 2);
}

#[tokio::test]
async fn history_is_bounded_by_age_past_its_newest_events() {
    let dir = tempfile::tempdir().unwrap();
    let open_aged = |dir: &Path, window: Duration| {
        let config = StoreConfig { history_window: window, history_min: 2, ..StoreConfig::default() };
        Store::open(&dir.join("state.redb"), config, Arc::new(Metrics::default())).unwrap()
    };
    // Within the window, every event is kept: the minimum is not a cap.
    let young = tempfile::tempdir().unwrap();
    let store = open_aged(young.path(), Duration::from_secs(3600));
    for name in ["a", "b", "c", "d", "e"] {
        put(&store, name).await;
    }
    assert_eq!(store.history_size().0, 5);
    assert_eq!(names_of(&store.watch("a2a.dev/agents", Some(1)).unwrap().initial), ["b", "c", "d", "e"]);
    drop(store);

    // Past it, the history keeps its newest 2, with no write to trim it.
    let store = open_aged(dir.path(), Duration::from_millis(200));
    for name in ["a", "b", "c", "d", "e"] {
        put(&store, name).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.history_size().0 > 2 {
        assert!(Instant::now() < deadline, "the history still holds {:?}", store.history_size());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (events, bytes) = store.history_size();
    assert_eq!(events, 2);
    assert!(bytes > 0 && bytes < 2 * 1024, "{bytes} bytes for two events");
    // Resuming from before the kept events is Gone, for watches, watchers that fell behind
    // and lists; from the kept ones it works.
    assert!(matches!(store.watch("a2a.dev/agents", Some(1)), Err(Error::Gone { requested: 1, oldest: 3 })));
    assert!(matches!(store.events_after("a2a.dev/agents", 2, 10), Err(Error::Gone { requested: 2, oldest: 3 })));
    assert!(matches!(store.list("a2a.dev/agents", None, None, Some(2)), Err(Error::Gone { .. })));
    assert_eq!(names_of(&store.watch("a2a.dev/agents", Some(3)).unwrap().initial), ["d", "e"]);
    assert_eq!(names(&store.list("a2a.dev/agents", None, None, Some(3)).unwrap().0), ["a", "b", "c"]);
    // A write drops what aged out as it is recorded.
    put(&store, "f").await;
    assert_eq!(store.history_size().0, 2);
    assert!(matches!(store.watch("a2a.dev/agents", Some(3)), Err(Error::Gone { requested: 3, oldest: 4 })));
    assert_eq!(names_of(&store.watch("a2a.dev/agents", Some(4)).unwrap().initial), ["e", "f"]);
}

#[tokio::test]
async fn lists_at_an_older_version_see_that_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), 100, 1 << 20);
    for name in ["a", "b", "c", "d"] {
        put(&store, name).await;
    }
    let (first, at) = store.list("a2a.dev/agents", None, None, None).unwrap();
    assert_eq!((names(&first), at), (vec!["a".into(), "b".into(), "c".into(), "d".into()], 4));
    // After the snapshot: b is deleted, c modified, e created.
    store.write(Write::Delete { key: key("b"), precondition: Precondition::Exists }).await.unwrap();
    let mut c = obj("c");
    c["spec"]["n"] = json!(2);
    store.write(Write::Put { key: key("c"), object: c, precondition: Precondition::Exists }).await.unwrap();
    put(&store, "e").await;
    let (rest, at) = store.list("a2a.dev/agents", Some("default"), Some(("default", "a")), Some(4)).unwrap();
    assert_eq!(at, 4);
    assert_eq!(names(&rest), ["b", "c", "d"]);
    assert_eq!(rest[1].value().unwrap()["spec"]["n"], 1);
    assert_eq!(rest[1].resource_version, 3);
    let (now, at) = store.list("a2a.dev/agents", None, Some(("default", "a")), None).unwrap();
    assert_eq!((names(&now), at), (vec!["c".into(), "d".into(), "e".into()], 7));
    assert_eq!(now[0].value().unwrap()["spec"]["n"], 2);
    // Other namespaces and resources are not in it.
    assert!(store.list("a2a.dev/agents", Some("other"), None, Some(4)).unwrap().0.is_empty());
    assert!(store.list("a2a.dev/workflows", None, None, Some(4)).unwrap().0.is_empty());
}

#[tokio::test]
async fn lists_older_than_the_history_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["a", "b", "c", "d", "e", "f"] {
        put(&store, name).await;
    }
    assert!(matches!(store.list("a2a.dev/agents", None, None, Some(1)), Err(Error::Gone { requested: 1, oldest: 2 })));
    assert_eq!(store.list("a2a.dev/agents", None, None, Some(2)).unwrap().0.len(), 2);
}

/// Copies the store's files while it runs: what a crash at this moment leaves on disk.
fn crash_copy(from: &Path, to: &Path) {
    for file in ["state.redb", "state.wal"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

#[tokio::test]
async fn a_crash_loses_no_acknowledged_write_with_or_without_checkpoints() {
    for checkpoint_every in [1000, 2] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { checkpoint_every, ..StoreConfig::default() };
        let store = Store::open(&dir.path().join("state.redb"), config, Arc::new(Metrics::default())).unwrap();
        for name in ["a", "b", "c", "d", "e"] {
            put(&store, name).await;
        }
        store.write(Write::Delete { key: key("b"), precondition: Precondition::Exists }).await.unwrap();
        let crashed = tempfile::tempdir().unwrap();
        crash_copy(dir.path(), crashed.path());
        let reopened =
            Store::open(&crashed.path().join("state.redb"), StoreConfig::default(), Arc::new(Metrics::default()))
                .unwrap();
        let (items, rv) = reopened.list("a2a.dev/agents", None, None, None).unwrap();
        assert_eq!(names(&items), ["a", "c", "d", "e"], "checkpoint every {checkpoint_every}");
        assert_eq!(rv, 6);
        assert_eq!(put(&reopened, "f").await.resource_version, 7);
        drop(store);
    }
}

#[tokio::test]
async fn a_log_that_skips_versions_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), 10, 1 << 20);
    put(&store, "a").await;
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    drop(store);
    // A record from version 5 on, while the database ends at 0 and the log has 1.
    let (mut wal, _) = Wal::open(&crashed.path().join("state.wal"), 0).unwrap();
    wal.append(1, &[OpRef::Delete { resource: "a2a.dev/agents", namespace: "default", name: "a" }]).unwrap();
    wal.append(5, &[OpRef::Delete { resource: "a2a.dev/agents", namespace: "default", name: "a" }]).unwrap();
    drop(wal);
    let err = Store::open(&crashed.path().join("state.redb"), StoreConfig::default(), Arc::new(Metrics::default()))
        .err()
        .expect("a gap in the log");
    let message = err.to_string();
    assert!(message.contains("continues at resourceVersion 5 but the database ends at 1"), "{message}");
}

/// The sealed objects of the store at `path`, read once the last handle's writer thread let
/// go of the file (it ends the store's last checkpoint after the handle is dropped).
async fn sealed_once_closed(path: &Path) -> Vec<String> {
    for _ in 0..500 {
        match sealed_objects(path) {
            Err(Error::Storage { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other.unwrap(),
        }
    }
    panic!("the store at {} was not let go of within 5 s", path.display());
}

/// Reopens the store at `path` once the last handle's writer thread let go of the file.
async fn reopen(path: &Path, config: StoreConfig) -> Result<Store> {
    for _ in 0..500 {
        match Store::open(path, config.clone(), Arc::new(Metrics::default())) {
            Err(Error::Storage { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
    Store::open(path, config, Arc::new(Metrics::default()))
}

#[tokio::test]
async fn secrets_are_sealed_in_the_log_and_the_database_and_need_their_key_to_open() {
    use crate::apiserver::seal::Sealer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let sealer = |line: &str| Some(Arc::new(Sealer::parse(Path::new("secrets.key"), line).unwrap()));
    let with_a =
        StoreConfig { sealer: sealer("key-a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), ..StoreConfig::default() };
    let store = Store::open(&path, with_a.clone(), Arc::new(Metrics::default())).unwrap();
    let secret = ObjectKey::new("/secrets", "default", "api");
    let object = json!({"metadata": {"name": "api", "namespace": "default"}, "data": {"k": "czNjcjN0LXZhbHVl"}});
    store.write(Write::Put { key: secret.clone(), object, precondition: Precondition::Absent }).await.unwrap();
    put(&store, "plain-agent").await;
    // Served in the clear; in the log (no checkpoint yet) only sealed, while other kinds are JSON.
    assert_eq!(store.get(&secret).unwrap().value().unwrap()["data"]["k"], "czNjcjN0LXZhbHVl");
    let wal = std::fs::read(path.with_extension("wal")).unwrap();
    let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!holds(&wal, b"czNjcjN0LXZhbHVl") && holds(&wal, b"k8s:enc:aesgcm:v1:key-a:"));
    assert!(holds(&wal, b"plain-agent"));
    drop(store);

    // Reopened: the log is applied to the database, which holds the Secret sealed too.
    let store = reopen(&path, with_a.clone()).await.unwrap();
    assert_eq!(store.get(&secret).unwrap().value().unwrap()["data"]["k"], "czNjcjN0LXZhbHVl");
    drop(store);
    assert_eq!(sealed_once_closed(&path).await, ["/secrets default/api"]);
    assert!(!holds(&std::fs::read(&path).unwrap(), b"czNjcjN0LXZhbHVl"));

    // A key file without key-a (a rotated-out key, a new key) does not open the store.
    let with_b =
        StoreConfig { sealer: sealer("key-b:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="), ..StoreConfig::default() };
    let e = reopen(&path, with_b).await.err().expect("opened without the Secret's key").to_string();
    assert!(e.contains("\"key-a\""), "{e}");
}
