//! Durable object storage on redb: one global resourceVersion, group commit, and a bounded
//! in-memory history of events for resuming watches.
//!
//! Every object lives twice: in redb (the truth that survives `SIGKILL`) and in an in-memory
//! index that serves reads. All writes go through one writer thread fed by a channel; it takes
//! every request waiting in the channel, checks their preconditions in order, writes them in
//! one redb transaction with [`redb::Durability::Immediate`] (one fsync for the whole batch),
//! and only then updates the index, records the events, wakes watchers and answers each
//! caller. A write that was answered `Ok` is on disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::metrics::Metrics;

/// (resource, namespace, name) -> the object as JSON. Cluster-scoped objects have namespace "".
const OBJECTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("objects");
/// "rv" -> the last resourceVersion handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How many writes one transaction takes at most.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object already exists")]
    AlreadyExists,
    #[error("object not found")]
    NotFound,
    #[error("the object has been modified (resourceVersion is now {current})")]
    Conflict { current: u64 },
    #[error("too old resource version: {requested} (the oldest still known is {oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("storage {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("stored object {key} in {path} is not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store is shut down")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an object lives. `namespace` is empty for cluster-scoped resources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `group/plural`, e.g. `a2a.dev/agents`, or `/namespaces` for the core group.
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(resource: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { resource: resource.into(), namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// What must hold for a write to happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there (create or replace; delete if present).
    None,
    /// The object must not exist (create).
    Absent,
    /// The object must exist, in any version.
    Exists,
    /// The object must exist with exactly this resourceVersion.
    ResourceVersion(u64),
}

/// One write.
#[derive(Clone, Debug)]
pub enum Write {
    /// Store `object` at `key`; the store sets `metadata.resourceVersion`.
    Put { key: ObjectKey, object: Value, precondition: Precondition },
    /// Remove the object at `key`.
    Delete { key: ObjectKey, precondition: Precondition },
}

impl Write {
    fn key(&self) -> &ObjectKey {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Clone, Debug)]
pub struct Event {
    pub type_: EventType,
    pub key: ObjectKey,
    /// The object after the change (for deletes: the last state, with the delete's version).
    pub object: Arc<Value>,
    pub resource_version: u64,
}

/// The start of a watch: the events to send first, then the live feed.
pub struct WatchStart {
    pub initial: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Events on `live` at or below this version are already in `initial` (or older).
    pub resource_version: u64,
}

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many recent events are kept for resuming watches.
    pub history: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { history: 10_000 }
    }
}

struct State {
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    resource_version: u64,
    history: VecDeque<Arc<Event>>,
    /// Watches from versions below this cannot be resumed.
    compacted: u64,
}

struct Shared {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<Event>>,
    history_limit: usize,
}

type Reply = oneshot::Sender<Result<Arc<Value>>>;

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writes: mpsc::Sender<(Write, Reply)>,
}

impl Store {
    /// Opens (or creates) the database file at `path` and starts the writer thread.
    pub fn open(path: &Path, config: StoreConfig, metrics: Arc<Metrics>) -> Result<Store> {
        let storage = |e: redb::Error| Error::Storage { path: path.to_path_buf(), source: Box::new(e) };
        // The database holds every object: private to the user (redb creates files 0644).
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let io = |e: std::io::Error| storage(redb::Error::Io(e));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        let db = Database::create(path).map_err(|e| storage(e.into()))?;
        {
            let tx = db.begin_write().map_err(|e| storage(e.into()))?;
            tx.open_table(OBJECTS).map_err(|e| storage(e.into()))?;
            tx.open_table(META).map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))?;
        }
        let mut objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>> = HashMap::new();
        let resource_version;
        {
            let tx = db.begin_read().map_err(|e| storage(e.into()))?;
            let meta = tx.open_table(META).map_err(|e| storage(e.into()))?;
            resource_version = meta.get("rv").map_err(|e| storage(e.into()))?.map(|v| v.value()).unwrap_or(0);
            let table = tx.open_table(OBJECTS).map_err(|e| storage(e.into()))?;
            for entry in table.iter().map_err(|e| storage(e.into()))? {
                let (k, v) = entry.map_err(|e| storage(e.into()))?;
                let (resource, namespace, name) = k.value();
                let value: Value = serde_json::from_slice(v.value()).map_err(|source| Error::Corrupt {
                    path: path.to_path_buf(),
                    key: format!("{resource}/{namespace}/{name}"),
                    source,
                })?;
                objects
                    .entry(resource.to_string())
                    .or_default()
                    .insert((namespace.to_string(), name.to_string()), Arc::new(value));
            }
        }
        let history_limit = config.history.max(1);
        let (events, _) = broadcast::channel(history_limit.max(1024));
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects,
                resource_version,
                history: VecDeque::with_capacity(history_limit.min(65_536)),
                compacted: resource_version,
            }),
            events,
            history_limit,
        });
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer { db, path: path.to_path_buf(), shared: shared.clone(), metrics };
        std::thread::Builder::new()
            .name("a2a-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage(redb::Error::Io(e)))?;
        Ok(Store { shared, writes: tx })
    }

    /// Applies one write durably; returns the stored object (for deletes: the removed one,
    /// carrying the delete's resourceVersion).
    pub async fn write(&self, write: Write) -> Result<Arc<Value>> {
        let (reply, answer) = oneshot::channel();
        self.writes.send((write, reply)).await.map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        let state = read(&self.shared.state);
        state.objects.get(&key.resource)?.get(&(key.namespace.clone(), key.name.clone())).cloned()
    }

    /// All objects of a resource (in one namespace, or all), sorted by namespace and name,
    /// with the store's current resourceVersion.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let state = read(&self.shared.state);
        let items = match state.objects.get(resource) {
            None => Vec::new(),
            Some(map) => match namespace {
                None => map.values().cloned().collect(),
                Some(ns) => map
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, state.resource_version)
    }

    pub fn resource_version(&self) -> u64 {
        read(&self.shared.state).resource_version
    }

    /// Number of stored objects per resource.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let state = read(&self.shared.state);
        let mut v: Vec<_> = state.objects.iter().map(|(r, m)| (r.clone(), m.len())).collect();
        v.sort();
        v
    }

    /// Starts a watch of `resource`. With `from` = None (or 0), the initial events are a
    /// synthetic ADDED for every current object; with `from` = Some(rv), every event after
    /// `rv` still in the history, or [`Error::Gone`] when some of them were compacted away.
    pub fn watch(&self, resource: &str, from: Option<u64>) -> Result<WatchStart> {
        let state = read(&self.shared.state);
        // Subscribing under the lock: the writer publishes under the write lock, so nothing
        // falls between the snapshot and the live feed.
        let live = self.shared.events.subscribe();
        let now = state.resource_version;
        let initial = match from {
            None | Some(0) => state
                .objects
                .get(resource)
                .into_iter()
                .flat_map(|m| m.iter())
                .map(|((ns, name), obj)| {
                    Arc::new(Event {
                        type_: EventType::Added,
                        key: ObjectKey::new(resource, ns.clone(), name.clone()),
                        object: obj.clone(),
                        resource_version: now,
                    })
                })
                .collect(),
            Some(rv) if rv < state.compacted => {
                return Err(Error::Gone { requested: rv, oldest: state.compacted });
            }
            Some(rv) => state
                .history
                .iter()
                .filter(|e| e.resource_version > rv && e.key.resource == resource)
                .cloned()
                .collect(),
        };
        Ok(WatchStart { initial, live, resource_version: now })
    }
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    // A panic while holding the lock leaves consistent data (updates are applied after the
    // commit, field by field); keep serving.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    db: Database,
    path: PathBuf,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

/// The outcome of one write within a batch, before commit.
enum Staged {
    Put(ObjectKey, Arc<Value>, EventType, u64),
    Delete(ObjectKey, Arc<Value>, u64),
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<(Write, Reply)>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&self, batch: &mut Vec<(Write, Reply)>) {
        let state = read(&self.shared.state);
        let mut rv = state.resource_version;
        // The view of the objects this batch has touched so far.
        let mut overlay: HashMap<ObjectKey, Option<Arc<Value>>> = HashMap::new();
        let mut outcomes: Vec<(Reply, Result<Staged>)> = Vec::with_capacity(batch.len());
        for (write, reply) in batch.drain(..) {
            let key = write.key().clone();
            let current = match overlay.get(&key) {
                Some(v) => v.clone(),
                None => state
                    .objects
                    .get(&key.resource)
                    .and_then(|m| m.get(&(key.namespace.clone(), key.name.clone())))
                    .cloned(),
            };
            let outcome = stage(write, current.as_deref(), rv + 1);
            if let Ok(staged) = &outcome {
                rv += 1;
                match staged {
                    Staged::Put(k, v, _, _) => overlay.insert(k.clone(), Some(v.clone())),
                    Staged::Delete(k, _, _) => overlay.insert(k.clone(), None),
                };
            }
            outcomes.push((reply, outcome));
        }
        drop(state);
        if overlay.is_empty() {
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome.map(|_| Arc::new(Value::Null)));
            }
            return;
        }
        let started = Instant::now();
        let committed = self.persist(&outcomes, rv);
        self.metrics.observe_commit(started.elapsed(), overlay.len());
        if let Err(e) = committed {
            tracing::error!(error = %e, "store commit failed");
            let message = e.to_string();
            for (reply, _) in outcomes {
                let _ = reply.send(Err(Error::Storage {
                    path: self.path.clone(),
                    source: Box::new(redb::Error::Io(std::io::Error::other(message.clone()))),
                }));
            }
            return;
        }
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        let mut published = Vec::with_capacity(outcomes.len());
        for (reply, outcome) in outcomes {
            let answer = match outcome {
                Err(e) => Err(e),
                Ok(Staged::Put(key, object, type_, version)) => {
                    state
                        .objects
                        .entry(key.resource.clone())
                        .or_default()
                        .insert((key.namespace.clone(), key.name.clone()), object.clone());
                    published.push(Arc::new(Event { type_, key, object: object.clone(), resource_version: version }));
                    Ok(object)
                }
                Ok(Staged::Delete(key, object, version)) => {
                    if let Some(m) = state.objects.get_mut(&key.resource) {
                        m.remove(&(key.namespace.clone(), key.name.clone()));
                    }
                    published.push(Arc::new(Event {
                        type_: EventType::Deleted,
                        key,
                        object: object.clone(),
                        resource_version: version,
                    }));
                    Ok(object)
                }
            };
            let _ = reply.send(answer);
        }
        state.resource_version = rv;
        for event in published {
            state.history.push_back(event.clone());
            if state.history.len() > self.shared.history_limit
                && let Some(old) = state.history.pop_front()
            {
                state.compacted = old.resource_version;
            }
            // No receivers is fine.
            let _ = self.shared.events.send(event);
        }
    }

    fn persist(&self, outcomes: &[(Reply, Result<Staged>)], rv: u64) -> Result<(), redb::Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
        {
            let mut table = tx.open_table(OBJECTS)?;
            for (_, outcome) in outcomes {
                match outcome {
                    Ok(Staged::Put(key, object, _, _)) => {
                        // Serializing a JSON value cannot fail.
                        let bytes = serde_json::to_vec(object.as_ref()).unwrap_or_default();
                        table.insert(
                            (key.resource.as_str(), key.namespace.as_str(), key.name.as_str()),
                            bytes.as_slice(),
                        )?;
                    }
                    Ok(Staged::Delete(key, _, _)) => {
                        table.remove((key.resource.as_str(), key.namespace.as_str(), key.name.as_str()))?;
                    }
                    Err(_) => {}
                }
            }
            let mut meta = tx.open_table(META)?;
            meta.insert("rv", rv)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn stored_rv(object: &Value) -> u64 {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn stage(write: Write, current: Option<&Value>, version: u64) -> Result<Staged> {
    let precondition = match &write {
        Write::Put { precondition, .. } | Write::Delete { precondition, .. } => *precondition,
    };
    match (precondition, current) {
        (Precondition::Absent, Some(_)) => return Err(Error::AlreadyExists),
        (Precondition::Exists | Precondition::ResourceVersion(_), None) => {
            return Err(Error::NotFound);
        }
        (Precondition::ResourceVersion(want), Some(cur)) if stored_rv(cur) != want => {
            return Err(Error::Conflict { current: stored_rv(cur) });
        }
        _ => {}
    }
    match write {
        Write::Put { key, mut object, .. } => {
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(version.to_string()));
            }
            let type_ = if current.is_some() { EventType::Modified } else { EventType::Added };
            Ok(Staged::Put(key, Arc::new(object), type_, version))
        }
        Write::Delete { key, .. } => {
            let Some(cur) = current else {
                return Err(Error::NotFound);
            };
            let mut last = cur.clone();
            if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(version.to_string()));
            }
            Ok(Staged::Delete(key, Arc::new(last), version))
        }
    }
}

/// Measures the disk's own fsync latency at `dir` (write 4 KiB + fdatasync, `rounds` times),
/// for comparing the store's commit latency with what the hardware allows.
pub fn measure_fsync(dir: &Path, rounds: usize) -> std::io::Result<Vec<Duration>> {
    use std::io::Write as _;
    let path = dir.join(".fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        out.push(t.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}})
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("a2a.dev/agents", "default", name)
    }

    fn open(dir: &Path) -> Store {
        Store::open(&dir.join("state.redb"), StoreConfig { history: 4 }, Arc::new(Metrics::default())).unwrap()
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_versions_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let a = store
            .write(Write::Put { key: key("a"), object: obj("a"), precondition: Precondition::Absent })
            .await
            .unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        drop(store);
        // The writer thread exits when the last handle is gone; give it a moment to release
        // the file lock.
        let store = loop {
            match Store::open(&dir.path().join("state.redb"), StoreConfig::default(), Arc::new(Metrics::default())) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert_eq!(store.get(&key("a")).unwrap()["metadata"]["resourceVersion"], "1");
        let b = store
            .write(Write::Put { key: key("b"), object: obj("b"), precondition: Precondition::Absent })
            .await
            .unwrap();
        assert_eq!(b["metadata"]["resourceVersion"], "2");
    }

    #[tokio::test]
    async fn preconditions_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let put = |p| Write::Put { key: key("a"), object: obj("a"), precondition: p };
        assert!(matches!(store.write(put(Precondition::Exists)).await, Err(Error::NotFound)));
        store.write(put(Precondition::Absent)).await.unwrap();
        assert!(matches!(store.write(put(Precondition::Absent)).await, Err(Error::AlreadyExists)));
        assert!(matches!(
            store.write(put(Precondition::ResourceVersion(7))).await,
            Err(Error::Conflict { current: 1 })
        ));
        let v = store.write(put(Precondition::ResourceVersion(1))).await.unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "2");
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
            versions.push(stored_rv(&v));
        }
        versions.sort();
        assert_eq!(versions, (1..=64).collect::<Vec<_>>());
        assert_eq!(store.list("a2a.dev/agents", Some("default")).0.len(), 64);
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
        let names: Vec<_> = w.initial.iter().map(|e| e.key.name.clone()).collect();
        assert_eq!(names, ["d", "e", "f"]);
        assert!(matches!(store.watch("a2a.dev/agents", Some(1)), Err(Error::Gone { requested: 1, oldest: 2 })));
        let all = store.watch("a2a.dev/agents", None).unwrap();
        assert_eq!(all.initial.len(), 6);
    }
}
