//! Durable object storage on redb: one global resourceVersion, group commit, and a bounded
//! in-memory history of events for resuming watches and serving paged lists.
//!
//! Every object lives twice: on disk (the truth that survives `SIGKILL`) and in an in-memory
//! index that serves reads. Writes are committed in groups, as PostgreSQL's backends flush
//! its WAL: a write queues itself, and if no commit is under way its own thread becomes the
//! leader and commits everything queued (on a multi-thread runtime, inside
//! `block_in_place`), with no hand-off to another thread and back; writes that arrive while a
//! commit is under way wait for the next one, which a commit thread runs as soon as the
//! current one ends. A commit checks the preconditions in order, appends the writes as one
//! record to the write-ahead log ([`super::wal`], one `fdatasync` for the whole group), and
//! only then updates the index, records the events, wakes watchers and answers each caller.
//! A write that was answered `Ok` is on disk. redb is not touched per batch: every
//! [`StoreConfig::checkpoint_every`] batches (or 4 MiB of log) the writes logged since the last
//! checkpoint go to redb in one durable transaction, which makes the log's records redundant,
//! and the log starts over; opening the store applies the records redb does not have yet. (A
//! redb commit per batch, even without its fsync, cost more CPU than the rest of a create.)
//!
//! Like the kube-apiserver's watch cache, an object version is held as its serialised JSON
//! ([`Stored`]) plus the few fields reads select on (labels, selectable fields, owners), never
//! as a parsed tree: a list concatenates bytes, a watch event writes them, and the history is
//! bounded by a count and by its total size in bytes.
//!
//! The history is also bounded by age, as the kube-apiserver's watch cache keeps about 75 s
//! of events ([`StoreConfig::history_window`]): past its newest
//! [`StoreConfig::history_min`] events it holds only what is younger than the window, so a
//! store that is written in a burst (500 agents applied, their starts) and then stays quiet
//! does not hold every version of that burst for as long as it runs. The commit thread drops
//! events that aged out even while nothing is written. A watch or a paged list from before
//! the history is [`Error::Gone`], as for events the count bound dropped: a client lists
//! again (watches that allow bookmarks get the current version every few seconds, so they
//! resume within the window).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::metrics::Metrics;
use super::reserve::Reserve;
use super::wal::{self, AppendError, Wal};

mod disk;
pub mod format;
mod health;
mod stored;

use disk::{ReplayError, apply, durable_rv, is_no_space, op_refs, replay, stored_rv};
pub use disk::{durable_version, measure_fsync, sealed_objects};
use health::Health;
pub use stored::Stored;
use stored::{Encoded, RV_PREFIX};

/// (resource, namespace, name) -> the object as JSON. Cluster-scoped objects have namespace "".
const OBJECTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("objects");
/// "rv" -> the last resourceVersion handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How many writes one transaction takes at most.
const MAX_BATCH: usize = 512;

/// What one history entry costs beyond its object's bytes (the event, key and index).
const EVENT_OVERHEAD: usize = 160;

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
    #[error("object {key} is not a JSON mapping with a metadata mapping")]
    NotAnObject { key: String },
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
    #[error("object {key} would be stored as {size} bytes, more than the limit of {limit}")]
    TooLarge { key: String, size: usize, limit: usize },
    #[error(transparent)]
    Log(#[from] wal::Error),
    /// Writes are refused until the disk has room for the store's reserve again.
    #[error(
        "the disk holding {} is full: the store refuses writes until {bytes} bytes are free \
         again for its reserve ({})",
        path.parent().unwrap_or(path).display(),
        path.display()
    )]
    OutOfSpace { path: PathBuf, bytes: u64 },
    /// The store's format version is newer than this a2a's, or unreadable.
    #[error(transparent)]
    Format(#[from] format::Error),
    /// A sealed object that cannot be sealed or opened ([`super::seal`]).
    #[error(transparent)]
    Seal(#[from] super::seal::Error),
}

/// The most bytes one stored object may take, as etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB): every object here could also be stored by a cluster.
pub const MAX_OBJECT_BYTES: usize = 3 * 512 * 1024;

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

/// A write after encoding, as the writer thread takes it.
enum Pending {
    Put { key: ObjectKey, encoded: Encoded, precondition: Precondition },
    Delete { key: ObjectKey, precondition: Precondition },
}

impl Pending {
    fn key(&self) -> &ObjectKey {
        match self {
            Pending::Put { key, .. } | Pending::Delete { key, .. } => key,
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
#[derive(Debug)]
pub struct Event {
    pub type_: EventType,
    /// The object after the change (for deletes: the last state, with the delete's version).
    pub object: Arc<Stored>,
    /// The object before the change (none for a create), for lists at an older version.
    pub prev: Option<Arc<Stored>>,
}

impl Event {
    pub fn resource_version(&self) -> u64 {
        self.object.resource_version
    }

    fn cost(&self) -> usize {
        self.object.bytes.len() + EVENT_OVERHEAD
    }
}

/// The start of a watch: the events to send first, then [`Store::events_after`] from
/// `resource_version` each time `notify` changes.
pub struct WatchStart {
    /// The current objects as ADDED (a watch from no version), or the events after the
    /// version asked for.
    pub initial: Vec<Arc<Event>>,
    pub notify: watch::Receiver<u64>,
    /// Every change up to this version is in `initial` (or older than the watch asked for).
    pub resource_version: u64,
}

/// Events of one resource after some version, as a watch reads them.
pub struct EventsAfter {
    pub events: Vec<Arc<Event>>,
    /// Every change up to this version has been looked at.
    pub scanned_to: u64,
    /// More events follow `scanned_to` already (read again without waiting).
    pub more: bool,
}

/// Tuning knobs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many recent events are kept for resuming watches and paged lists.
    pub history: usize,
    /// How many bytes of object versions the history holds at most.
    pub history_bytes: usize,
    /// Events older than this are dropped from the history, except the newest
    /// [`Self::history_min`]. Resuming a watch or a paged list is cheap only from inside it;
    /// from before it the client lists again.
    pub history_window: Duration,
    /// How many of the newest events are kept whatever their age (at most
    /// [`Self::history`]).
    pub history_min: usize,
    /// After how many logged batches redb is committed durably and the write-ahead log
    /// starts over (also when the log passes 4 MiB).
    pub checkpoint_every: usize,
    /// Bytes kept allocated in a reserve file beside the database (`<name>.reserve`), given
    /// back when the disk is full so that the store can still checkpoint and start; writes
    /// are refused while it cannot be taken. 0: no reserve.
    pub reserve_bytes: u64,
    /// The keys that encrypt the objects of [`super::seal::SEALED_RESOURCES`] in the log and
    /// the database; without them such objects are stored in the clear.
    pub sealer: Option<Arc<super::seal::Sealer>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 10_000,
            history_bytes: 64 * 1024 * 1024,
            history_window: DEFAULT_HISTORY_WINDOW,
            history_min: DEFAULT_HISTORY_MIN,
            checkpoint_every: 256,
            reserve_bytes: super::reserve::DEFAULT_BYTES,
            sealer: None,
        }
    }
}

/// How long events stay in the watch history: the kube-apiserver's watch cache keeps at
/// least 75 s of events (`eventFreshDuration`), what clients written for a cluster expect a
/// resume to find; a paged list's continue token lives as long.
pub const DEFAULT_HISTORY_WINDOW: Duration = Duration::from_secs(75);

/// The newest events kept whatever their age: the watch cache's smallest size (100).
pub const DEFAULT_HISTORY_MIN: usize = 100;

/// The log is checkpointed once it holds this many bytes of records.
const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// redb's page cache. Every read is served from memory (the objects and the history), so
/// redb reads pages only to apply a checkpoint; its default cache (1 GiB) kept every page it
/// ever touched, as much as the whole database (3.3 MiB of the daemon's heap at 500 agents).
/// Pages it reads again come from the kernel's page cache.
const REDB_CACHE_BYTES: usize = 1024 * 1024;

fn open_database(path: &Path) -> std::result::Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(REDB_CACHE_BYTES).create(path)
}

type Objects = BTreeMap<(String, String), Arc<Stored>>;

struct State {
    objects: HashMap<String, Objects>,
    resource_version: u64,
    history: VecDeque<Arc<Event>>,
    /// When each event of `history` was recorded, in the same order.
    recorded: VecDeque<Instant>,
    history_bytes: usize,
    /// Watches and lists at versions below this cannot be served.
    compacted: u64,
}

struct Shared {
    state: RwLock<State>,
    /// The last committed resourceVersion; watchers wait on it.
    committed: watch::Sender<u64>,
    history_limit: usize,
    history_bytes_limit: usize,
    history_window: Duration,
    history_min: usize,
    /// Bytes of events dropped from the history since the heap was last handed back.
    dropped: std::sync::atomic::AtomicUsize,
    health: Mutex<Health>,
}

impl Shared {
    /// Drops the oldest events while the history is over its count or its bytes, or while
    /// it holds more than its minimum and the oldest is older than the window. Returns when
    /// the oldest event left (past the minimum) ages out, if any does.
    fn trim_history(&self, state: &mut State, now: Instant) -> Option<Instant> {
        loop {
            let len = state.history.len();
            if len <= 1 {
                return None;
            }
            let over = len > self.history_limit || state.history_bytes > self.history_bytes_limit;
            // A window too long to add to an instant never expires anything.
            let expires =
                (len > self.history_min).then(|| state.recorded[0].checked_add(self.history_window)).flatten();
            if !over && expires.is_none_or(|at| at > now) {
                return expires;
            }
            if let Some(old) = state.history.pop_front() {
                state.recorded.pop_front();
                state.history_bytes -= old.cost();
                state.compacted = old.resource_version();
                self.dropped.fetch_add(old.cost(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Drops the events that aged out; returns when the next one does.
    fn expire_history(&self) -> Option<Instant> {
        let now = Instant::now();
        {
            // Most wake-ups find nothing to drop: look under the read lock first.
            let state = read(&self.state);
            let len = state.history.len();
            if len <= self.history_min.max(1) {
                return None;
            }
            let at = state.recorded[0].checked_add(self.history_window)?;
            if at > now {
                return Some(at);
            }
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let next = self.trim_history(&mut state, now);
        // A burst's history leaves its room behind (tens of KiB at thousands of events).
        if state.history.capacity() > 4 * state.history.len().max(256) {
            state.history.shrink_to_fit();
            state.recorded.shrink_to_fit();
        }
        next
    }

    /// Once a burst's events (MiBs of object versions) have left the history, glibc keeps
    /// their pages free in its arenas; they are handed back to the kernel (at most every
    /// 10 s, when 1 MiB or more left), or the daemon's resident memory stays at the burst's
    /// peak.
    /// Returns whether a release is left for later (the wait before the next look).
    fn release_dropped(&self, last: &mut Instant) -> Option<Duration> {
        const RELEASE_AFTER: usize = 1024 * 1024;
        const RELEASE_EVERY: Duration = Duration::from_secs(10);
        if self.dropped.load(std::sync::atomic::Ordering::Relaxed) < RELEASE_AFTER {
            return None;
        }
        if last.elapsed() < RELEASE_EVERY {
            return Some(RELEASE_EVERY - last.elapsed());
        }
        self.dropped.store(0, std::sync::atomic::Ordering::Relaxed);
        crate::node::release_free_heap();
        *last = Instant::now();
        None
    }
}

type Reply = oneshot::Sender<Result<Arc<Stored>>>;

/// The writes waiting for a commit, and who commits them.
struct Queue {
    pending: Vec<(Pending, Reply)>,
    /// A commit is under way (by a request's thread or the commit thread), and whoever runs it
    /// looks at `pending` again before it stops: a write queued meanwhile is never stranded.
    busy: bool,
    /// The commit thread is to take over the commits (`busy` stays set until it is done).
    handed_off: bool,
    /// Every handle is gone: the commit thread finishes once no commit is under way.
    closed: bool,
}

/// Group commit: the queue, the writer (held only by whoever set `busy`), and the commit
/// thread's wake-up.
struct Committer {
    /// The database's path (for errors).
    writer_path: PathBuf,
    queue: Mutex<Queue>,
    wake: Condvar,
    writer: Mutex<Writer>,
    /// For the history's expiry between commits.
    shared: Arc<Shared>,
}

/// Closes the committer when the last [`Store`] handle is dropped.
struct Handle(Arc<Committer>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.queue().closed = true;
        self.0.wake.notify_all();
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    committer: Arc<Committer>,
    _handle: Arc<Handle>,
}

impl Store {
    /// Opens (or creates) the database file at `path` and starts the writer thread.
    ///
    /// A store in an older format is upgraded in place once its write-ahead log is applied
    /// ([`format`]); one in a newer format is refused before anything is opened or changed.
    pub fn open(path: &Path, config: StoreConfig, metrics: Arc<Metrics>) -> Result<Store> {
        let storage = |e: redb::Error| Error::Storage { path: path.to_path_buf(), source: Box::new(e) };
        let found = format::inspect(path)?;
        if found == format::Found::New {
            format::record(path, format::CURRENT)?;
        }
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
        // The reserve left by the last run is given back first: opening, replaying the log
        // and checkpointing it may need the room; it is taken again once they are done.
        let mut reserve = Reserve::new(path.with_extension("reserve"), config.reserve_bytes);
        reserve.release().map_err(|e| storage(redb::Error::Io(e)))?;
        let db = open_database(path).map_err(|e| storage(e.into()))?;
        {
            let tx = db.begin_write().map_err(|e| storage(e.into()))?;
            tx.open_table(OBJECTS).map_err(|e| storage(e.into()))?;
            tx.open_table(META).map_err(|e| storage(e.into()))?;
            tx.commit().map_err(|e| storage(e.into()))?;
        }
        let wal_path = path.with_extension("wal");
        let wal_error =
            |e: std::io::Error| Error::Storage { path: wal_path.clone(), source: Box::new(redb::Error::Io(e)) };
        let (mut wal, records) = Wal::open(&wal_path, durable_rv(&db).map_err(storage)?)?;
        replay(&db, &wal_path, records).map_err(|e| match e {
            ReplayError::Redb(e) => storage(e),
            ReplayError::Gap(message) => wal_error(std::io::Error::other(message)),
        })?;
        wal.reset().map_err(wal_error)?;
        if let format::Found::Format(version) = found
            && version < format::CURRENT
        {
            format::upgrade(path, &db, version)?;
        }
        if !reserve.take(true).map_err(|e| storage(redb::Error::Io(e)))? {
            tracing::warn!(
                reserve = %reserve.path().display(),
                bytes = reserve.bytes(),
                "the disk has no room for the store's reserve: writes are refused until it has"
            );
        }
        let mut objects: HashMap<String, Objects> = HashMap::new();
        let resource_version;
        {
            let tx = db.begin_read().map_err(|e| storage(e.into()))?;
            let meta = tx.open_table(META).map_err(|e| storage(e.into()))?;
            resource_version = meta.get("rv").map_err(|e| storage(e.into()))?.map(|v| v.value()).unwrap_or(0);
            let table = tx.open_table(OBJECTS).map_err(|e| storage(e.into()))?;
            for entry in table.iter().map_err(|e| storage(e.into()))? {
                let (k, v) = entry.map_err(|e| storage(e.into()))?;
                let (resource, namespace, name) = k.value();
                let key = ObjectKey::new(resource, namespace, name);
                let corrupt = |source| Error::Corrupt { path: path.to_path_buf(), key: key.to_string(), source };
                let bytes = v.value();
                let value: Value = if super::seal::is_sealed(bytes) {
                    let sealer = config.sealer.as_ref().ok_or_else(|| super::seal::Error::UnknownKey {
                        key: key.to_string(),
                        name: "(none loaded)".into(),
                        path: path.to_path_buf(),
                    })?;
                    serde_json::from_slice(&sealer.open(&key, bytes)?).map_err(corrupt)?
                } else {
                    serde_json::from_slice(bytes).map_err(corrupt)?
                };
                let encoded = Encoded::new(&key, &value)?;
                let stored = Stored::assemble(key.clone(), stored_rv(&value), encoded);
                objects.entry(key.resource).or_default().insert((key.namespace, key.name), Arc::new(stored));
            }
        }
        let (committed, _) = watch::channel(resource_version);
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects,
                resource_version,
                history: VecDeque::new(),
                recorded: VecDeque::new(),
                history_bytes: 0,
                compacted: resource_version,
            }),
            committed,
            history_limit: config.history.max(1),
            history_bytes_limit: config.history_bytes,
            history_window: config.history_window,
            history_min: config.history_min,
            dropped: std::sync::atomic::AtomicUsize::new(0),
            health: Mutex::new(Health { failed: None, reserve }),
        });
        let writer = Writer {
            db: Some(db),
            wal,
            path: path.to_path_buf(),
            shared: shared.clone(),
            metrics,
            checkpoint_every: config.checkpoint_every.max(1),
            sealer: config.sealer.clone(),
            since_checkpoint: 0,
            unapplied: Vec::new(),
            unapplied_rv: resource_version,
        };
        let committer = Arc::new(Committer {
            writer_path: path.to_path_buf(),
            queue: Mutex::new(Queue { pending: Vec::new(), busy: false, handed_off: false, closed: false }),
            wake: Condvar::new(),
            writer: Mutex::new(writer),
            shared: shared.clone(),
        });
        std::thread::Builder::new()
            .name("a2a-store-writer".into())
            .spawn({
                let committer = committer.clone();
                move || committer.run()
            })
            .map_err(|e| storage(redb::Error::Io(e)))?;
        let handle = Arc::new(Handle(committer.clone()));
        Ok(Store { shared, committer, _handle: handle })
    }

    /// Applies one write durably; returns the stored object (for deletes: the removed one,
    /// carrying the delete's resourceVersion).
    pub async fn write(&self, write: Write) -> Result<Arc<Stored>> {
        let pending = match write {
            Write::Put { key, object, precondition } => {
                let encoded = Encoded::new(&key, &object)?;
                drop(object);
                let size = RV_PREFIX.len() + 20 + encoded.rest.len();
                if size > MAX_OBJECT_BYTES {
                    return Err(Error::TooLarge { key: key.to_string(), size, limit: MAX_OBJECT_BYTES });
                }
                // The same bytes as the version the write was made from: nothing to write (as
                // kube-apiserver skips an update that changes nothing: no version, no event).
                if let Precondition::ResourceVersion(rv) = precondition
                    && let Some(current) = self.get(&key)
                    && current.resource_version == rv
                    && current.bytes[current.tail..] == encoded.rest[..]
                {
                    return Ok(current);
                }
                Pending::Put { key, encoded, precondition }
            }
            Write::Delete { key, precondition } => Pending::Delete { key, precondition },
        };
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.committer.queue();
            queue.pending.push((pending, reply));
            !std::mem::replace(&mut queue.busy, true)
        };
        if lead {
            // No commit under way: this thread commits what is queued (its own write first of
            // all) and the answer is ready when it returns. Blocking a worker for the fsync is
            // what `block_in_place` is for; a current-thread runtime has no other worker to
            // hand its tasks to, so there the commit thread does it.
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if multi_thread {
                tokio::task::block_in_place(|| self.committer.lead());
            } else {
                self.committer.hand_off(self.committer.queue());
            }
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Stored>> {
        let state = read(&self.shared.state);
        state.objects.get(&key.resource)?.get(&(key.namespace.clone(), key.name.clone())).cloned()
    }

    /// The objects of a resource (in one namespace, or all) after the key `after` (if given),
    /// sorted by namespace and name, as they were at resourceVersion `at` (default: now),
    /// with that resourceVersion. A version older than the history is [`Error::Gone`].
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        at: Option<u64>,
    ) -> Result<(Vec<Arc<Stored>>, u64)> {
        let state = read(&self.shared.state);
        let now = state.resource_version;
        let at = at.unwrap_or(now).min(now);
        if at < state.compacted {
            return Err(Error::Gone { requested: at, oldest: state.compacted });
        }
        let wanted = |ns: &str, name: &str| {
            namespace.is_none_or(|n| n == ns) && after.is_none_or(|(a_ns, a_name)| (ns, name) > (a_ns, a_name))
        };
        // What changed after `at`: each key's version at `at` is the `prev` of its earliest
        // later event (newest first, so the earliest one writes last).
        let mut then: BTreeMap<(&str, &str), Option<&Arc<Stored>>> = BTreeMap::new();
        for e in state.history.iter().rev().take_while(|e| e.resource_version() > at) {
            let k = &e.object.key;
            if k.resource == resource && wanted(&k.namespace, &k.name) {
                then.insert((k.namespace.as_str(), k.name.as_str()), e.prev.as_ref());
            }
        }
        let Some(map) = state.objects.get(resource) else {
            let items = then.into_values().flatten().cloned().collect();
            return Ok((items, at));
        };
        let lower = match (after, namespace) {
            (Some((ns, name)), _) => Bound::Excluded((ns.to_string(), name.to_string())),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let current = map
            .range((lower, Bound::Unbounded))
            .take_while(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .filter(|((ns, name), _)| wanted(ns, name));
        if then.is_empty() {
            return Ok((current.map(|(_, v)| v.clone()).collect(), at));
        }
        let mut merged: BTreeMap<(&str, &str), &Arc<Stored>> =
            current.map(|((ns, name), v)| ((ns.as_str(), name.as_str()), v)).collect();
        for (k, v) in then {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok((merged.into_values().cloned().collect(), at))
    }

    pub fn resource_version(&self) -> u64 {
        read(&self.shared.state).resource_version
    }

    /// Ok while the store takes writes: [`Error::OutOfSpace`] while the disk has no room for
    /// its reserve (tried again here at most twice a second), [`Error::Storage`] after a
    /// failure that stops writing until a restart.
    pub fn writable(&self) -> Result<()> {
        let path = self.committer.writer_path.as_path();
        self.shared.health.lock().unwrap_or_else(|p| p.into_inner()).check(path)
    }

    /// Number of stored objects per resource.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let state = read(&self.shared.state);
        let mut v: Vec<_> = state.objects.iter().map(|(r, m)| (r.clone(), m.len())).collect();
        v.sort();
        v
    }

    /// Events and bytes held in the watch history.
    pub fn history_size(&self) -> (usize, usize) {
        let state = read(&self.shared.state);
        (state.history.len(), state.history_bytes)
    }

    /// Starts a watch of `resource`. With `from` = None (or 0), the initial events are a
    /// synthetic ADDED for every current object; with `from` = Some(rv), every event after
    /// `rv` still in the history, or [`Error::Gone`] when some of them were compacted away.
    pub fn watch(&self, resource: &str, from: Option<u64>) -> Result<WatchStart> {
        // Subscribing before reading: a commit after this wakes the watcher, and one before
        // it is in what is read below.
        let notify = self.shared.committed.subscribe();
        let state = read(&self.shared.state);
        let now = state.resource_version;
        let initial = match from {
            None | Some(0) => state
                .objects
                .get(resource)
                .into_iter()
                .flat_map(|m| m.values())
                .map(|obj| Arc::new(Event { type_: EventType::Added, object: obj.clone(), prev: None }))
                .collect(),
            Some(rv) if rv < state.compacted => {
                return Err(Error::Gone { requested: rv, oldest: state.compacted });
            }
            Some(rv) => {
                let start = state.history.partition_point(|e| e.resource_version() <= rv);
                state.history.range(start..).filter(|e| e.object.key.resource == resource).cloned().collect()
            }
        };
        Ok(WatchStart { initial, notify, resource_version: now })
    }

    /// The events of `resource` after version `after`, looking at `max` events at most.
    /// [`Error::Gone`] when some of them were compacted away (the watcher fell too far behind).
    pub fn events_after(&self, resource: &str, after: u64, max: usize) -> Result<EventsAfter> {
        let state = read(&self.shared.state);
        if after >= state.resource_version {
            return Ok(EventsAfter { events: Vec::new(), scanned_to: after, more: false });
        }
        if after < state.compacted {
            return Err(Error::Gone { requested: after, oldest: state.compacted });
        }
        let start = state.history.partition_point(|e| e.resource_version() <= after);
        let end = (start + max).min(state.history.len());
        let events = state.history.range(start..end).filter(|e| e.object.key.resource == resource).cloned().collect();
        let (scanned_to, more) = if end < state.history.len() {
            (state.history[end - 1].resource_version(), true)
        } else {
            (state.resource_version, false)
        };
        Ok(EventsAfter { events, scanned_to, more })
    }
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    // A panic while holding the lock leaves consistent data (updates are applied after the
    // commit, field by field); keep serving.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    /// None only while it is being opened again after a failed checkpoint.
    db: Option<Database>,
    wal: Wal,
    path: PathBuf,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    checkpoint_every: usize,
    sealer: Option<Arc<super::seal::Sealer>>,
    /// Batches logged since the last durable redb commit.
    since_checkpoint: usize,
    /// The writes logged since then, in order, that redb does not have yet, and the
    /// resourceVersion of the last of them.
    unapplied: Vec<(bool, Arc<Stored>)>,
    unapplied_rv: u64,
}

/// The outcome of one write within a batch, before commit.
enum Staged {
    Put { object: Arc<Stored>, prev: Option<Arc<Stored>> },
    Delete { last: Arc<Stored>, prev: Arc<Stored> },
}

impl Committer {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing in the queue is left half-changed by a panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to a batch of the queued writes (the oldest first).
    fn take(queue: &mut Queue) -> Vec<(Pending, Reply)> {
        let n = queue.pending.len().min(MAX_BATCH);
        queue.pending.drain(..n).collect()
    }

    /// Commits one batch; the caller has set `busy`.
    fn commit(&self, mut batch: Vec<(Pending, Reply)>) {
        let mut writer = self.writer.lock().unwrap_or_else(|p| {
            // A commit panicked halfway: what is on disk is no longer known to match the index.
            let writer = p.into_inner();
            writer.fail("a commit panicked".to_owned());
            writer
        });
        writer.commit_batch(&mut batch);
    }

    /// A request's thread commits what is queued (its own write among it), then leaves what
    /// was queued meanwhile to the commit thread, so that no request waits on others' commits.
    fn lead(&self) {
        /// Whatever happens in the commit (even a panic), `busy` is passed on or cleared.
        struct Done<'a>(&'a Committer);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                // Nobody waits for `busy` to clear: the commit thread only waits for it once
                // every handle is gone, and a leader holds one.
                let mut queue = self.0.queue();
                if queue.pending.is_empty() {
                    queue.busy = false;
                } else {
                    self.0.hand_off(queue);
                }
            }
        }
        let done = Done(self);
        let batch = Self::take(&mut self.queue());
        self.commit(batch);
        drop(done);
    }

    /// Passes the commits (with `busy` set) to the commit thread.
    fn hand_off(&self, mut queue: MutexGuard<'_, Queue>) {
        queue.handed_off = true;
        drop(queue);
        self.wake.notify_all();
    }

    /// The commit thread: commits whatever is handed to it until the queue is empty; once
    /// every handle is gone and no commit is under way, makes redb hold everything (so the
    /// next open has nothing to replay) and ends.
    fn run(&self) {
        let mut released = Instant::now();
        let mut queue = self.queue();
        loop {
            if queue.handed_off {
                queue.handed_off = false;
                loop {
                    let batch = Self::take(&mut queue);
                    if batch.is_empty() {
                        queue.busy = false;
                        break;
                    }
                    drop(queue);
                    self.commit(batch);
                    queue = self.queue();
                }
            } else if queue.closed && !queue.busy {
                break;
            } else {
                // Between commits, events age out of the history on time: at the next one's
                // expiry, or a window from now when none is due (what a request's own commit
                // records meanwhile expires no sooner).
                drop(queue);
                let next = self.shared.expire_history();
                let release = self.shared.release_dropped(&mut released);
                queue = self.queue();
                if queue.handed_off || (queue.closed && !queue.busy) {
                    continue;
                }
                let wait = match next {
                    Some(at) => at.saturating_duration_since(Instant::now()),
                    None => self.shared.history_window.min(Duration::from_secs(3600)),
                };
                let wait = release.map_or(wait, |r| r.min(wait)).max(Duration::from_millis(10));
                queue = self.wake.wait_timeout(queue, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        drop(queue);
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if writer.health().failed.is_none() && writer.since_checkpoint > 0 {
            writer.checkpoint();
        }
    }
}

impl Writer {
    fn storage_error(&self, message: &str) -> Error {
        Error::Storage { path: self.path.clone(), source: Box::new(redb::Error::Io(std::io::Error::other(message))) }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.shared.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops all writing until a restart.
    fn fail(&self, why: String) {
        self.health().failed.get_or_insert(why);
    }

    fn commit_batch(&mut self, batch: &mut Vec<(Pending, Reply)>) {
        let refused = self.health().check(&self.path);
        if let Err(e) = refused {
            let message = e.to_string();
            let out_of_space = matches!(e, Error::OutOfSpace { .. });
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(if out_of_space {
                    Error::OutOfSpace { path: self.path.with_extension("reserve"), bytes: self.reserve_bytes() }
                } else {
                    self.storage_error(&message)
                }));
            }
            return;
        }
        let state = read(&self.shared.state);
        let mut rv = state.resource_version;
        // The view of the objects this batch has touched so far.
        let mut overlay: HashMap<ObjectKey, Option<Arc<Stored>>> = HashMap::new();
        let mut outcomes: Vec<(Reply, Result<Staged>)> = Vec::with_capacity(batch.len());
        for (write, reply) in batch.drain(..) {
            let key = write.key();
            let current = match overlay.get(key) {
                Some(v) => v.clone(),
                None => state
                    .objects
                    .get(&key.resource)
                    .and_then(|m| m.get(&(key.namespace.clone(), key.name.clone())))
                    .cloned(),
            };
            let outcome = stage(write, current, rv + 1, self.sealer.as_deref());
            if let Ok(staged) = &outcome {
                rv += 1;
                match staged {
                    Staged::Put { object, .. } => overlay.insert(object.key.clone(), Some(object.clone())),
                    Staged::Delete { last, .. } => overlay.insert(last.key.clone(), None),
                };
            }
            outcomes.push((reply, outcome));
        }
        drop(state);
        if overlay.is_empty() {
            // Every write in the batch failed its precondition.
            for (reply, outcome) in outcomes {
                if let Err(e) = outcome {
                    let _ = reply.send(Err(e));
                }
            }
            return;
        }
        let started = Instant::now();
        // What the batch writes, in order (the log and redb take the same).
        let writes: Vec<(bool, Arc<Stored>)> = outcomes
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Ok(Staged::Put { object, .. }) => Some((true, object.clone())),
                Ok(Staged::Delete { last, .. }) => Some((false, last.clone())),
                Err(_) => None,
            })
            .collect();
        let first_rv = rv + 1 - writes.len() as u64;
        let committed = self.wal.append(first_rv, &op_refs(&writes));
        self.metrics.observe_commit(started.elapsed(), writes.len());
        match committed {
            Ok(()) => {}
            Err(AppendError::NoSpace(e)) => {
                // Nothing of the batch is in the log: its writers are told so, and the store
                // makes what it has durable with the reserve's room, then takes no writes
                // until the disk has room again.
                tracing::error!(path = %self.wal.path().display(), error = %e, "the disk is full: the write-ahead log has no room for a commit");
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(Error::OutOfSpace {
                        path: self.path.with_extension("reserve"),
                        bytes: self.reserve_bytes(),
                    }));
                }
                self.release_reserve();
                if self.since_checkpoint > 0 {
                    self.checkpoint();
                }
                return;
            }
            Err(AppendError::Unknown(e)) => {
                let message = format!("{}: {e}", self.wal.path().display());
                tracing::error!(error = %message, "store commit failed; no more writes until restarted");
                for (reply, _) in outcomes {
                    let _ = reply.send(Err(self.storage_error(&message)));
                }
                self.fail(message);
                return;
            }
        }
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        for (reply, outcome) in outcomes {
            let (event, answer) = match outcome {
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
                Ok(Staged::Put { object, prev }) => {
                    let key = &object.key;
                    state
                        .objects
                        .entry(key.resource.clone())
                        .or_default()
                        .insert((key.namespace.clone(), key.name.clone()), object.clone());
                    let type_ = if prev.is_some() { EventType::Modified } else { EventType::Added };
                    (Event { type_, object: object.clone(), prev }, object)
                }
                Ok(Staged::Delete { last, prev }) => {
                    let key = &last.key;
                    if let Some(m) = state.objects.get_mut(&key.resource) {
                        m.remove(&(key.namespace.clone(), key.name.clone()));
                    }
                    (Event { type_: EventType::Deleted, object: last.clone(), prev: Some(prev) }, last)
                }
            };
            state.history_bytes += event.cost();
            state.history.push_back(Arc::new(event));
            state.recorded.push_back(now);
            let _ = reply.send(Ok(answer));
        }
        state.resource_version = rv;
        self.shared.trim_history(&mut state, now);
        drop(state);
        self.shared.committed.send_replace(rv);
        // redb gets the writes at the next checkpoint: the log holds them durably already.
        self.unapplied.extend(writes);
        self.unapplied_rv = rv;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every || self.wal.written() >= CHECKPOINT_BYTES {
            self.checkpoint();
        }
    }

    /// Applies the writes logged since the last checkpoint to redb in one durable
    /// transaction, then the log starts over. A failure stops all writing (redb's state is no
    /// longer known); the log still holds every answered write for the next start.
    fn checkpoint(&mut self) {
        let started = Instant::now();
        if let Err(e) = self.apply_unapplied() {
            if !is_no_space(&e) {
                tracing::error!(error = %e, "applying logged writes to redb failed; no more writes until restarted");
                self.fail(e.to_string());
                return;
            }
            // The disk is full: with the reserve's room the database is opened again (a failed
            // commit leaves it refusing every transaction) and takes the writes once more; the
            // log holds them meanwhile.
            tracing::error!(error = %e, "the disk is full: the database has no room for a checkpoint");
            self.release_reserve();
            self.db = None;
            let retried = open_database(&self.path).map_err(redb::Error::from).and_then(|db| {
                self.db = Some(db);
                self.apply_unapplied()
            });
            if let Err(e) = retried {
                tracing::error!(error = %e, "checkpointing with the reserve's room failed too; no more writes until restarted");
                self.fail(e.to_string());
                return;
            }
        }
        let writes = self.unapplied.len();
        self.unapplied.clear();
        self.since_checkpoint = 0;
        match self.wal.reset() {
            Ok(()) => tracing::debug!(elapsed = ?started.elapsed(), writes, "store checkpoint"),
            // redb holds everything the log does: the log going on from where it is loses nothing.
            Err(e) => tracing::warn!(error = %e, "cutting back the write-ahead log failed"),
        }
    }
}

impl Writer {
    fn apply_unapplied(&self) -> Result<(), redb::Error> {
        let db = self.db.as_ref().ok_or_else(|| redb::Error::Io(std::io::Error::other("the database is not open")))?;
        apply(db, redb::Durability::Immediate, &op_refs(&self.unapplied), self.unapplied_rv)
    }
}

fn stage(
    write: Pending,
    current: Option<Arc<Stored>>,
    version: u64,
    sealer: Option<&super::seal::Sealer>,
) -> Result<Staged> {
    let precondition = match &write {
        Pending::Put { precondition, .. } | Pending::Delete { precondition, .. } => *precondition,
    };
    match (precondition, &current) {
        (Precondition::Absent, Some(_)) => return Err(Error::AlreadyExists),
        (Precondition::Exists | Precondition::ResourceVersion(_), None) => {
            return Err(Error::NotFound);
        }
        (Precondition::ResourceVersion(want), Some(cur)) if cur.resource_version != want => {
            return Err(Error::Conflict { current: cur.resource_version });
        }
        _ => {}
    }
    match write {
        Pending::Put { key, encoded, .. } => {
            let mut object = Stored::assemble(key, version, encoded);
            if let Some(sealer) = sealer
                && super::seal::is_sealed_resource(&object.key.resource)
            {
                object.sealed = Some(sealer.seal(&object.key, &object.bytes)?.into());
            }
            Ok(Staged::Put { object: Arc::new(object), prev: current })
        }
        Pending::Delete { .. } => {
            let Some(cur) = current else {
                return Err(Error::NotFound);
            };
            Ok(Staged::Delete { last: Arc::new(cur.at_version(version)), prev: cur })
        }
    }
}

#[cfg(test)]
mod tests;
