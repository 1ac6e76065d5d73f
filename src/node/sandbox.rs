//! What an agent may touch when the daemon runs as root: a uid of its own (allocated per
//! agent as systemd's `DynamicUser=` does), a home of its own, a private `/tmp`, a read-only
//! view of the rest of the system except the paths its Agent lists, `$A2A_HOME` hidden, and
//! no capabilities. The plan is made here, in safe code; `sys` carries it out in the child.
//!
//! The uid registry is host-wide (every daemon on the host shares it, so two daemons never
//! hand out the same uid): under `<state>/uids/`, one file per uid in use, named by the uid
//! and naming its daemon's `$A2A_HOME` and the agent; the home of that uid is
//! `<state>/homes/<uid>`. The file, not the daemon's memory, is the record: a restarted daemon
//! finds its agents' uids there, so re-adopted processes and new replicas agree.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::process::{ProcessSpec, RunAs};
use super::sys::MountOp;
use crate::api::agent::AgentSpec;
use crate::api::common::Condition;

/// The uids agents get: systemd's range for `DynamicUser=` (61184–65519). It fits in the
/// 16 bits a container's user namespace commonly maps, and nothing else on a host allocates
/// from it; systemd's own dynamic users there are skipped (see [`DynamicUsers::allocate`]).
pub const UID_RANGE: RangeInclusive<u32> = 61184..=65519;

/// Where the host-wide registry and the agents' homes live.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/a2a";

/// Left as they are when the rest of the system becomes read-only: the API file systems, as
/// systemd's `ProtectSystem=strict` leaves them (their files' permissions protect them).
const KEEP: [&str; 2] = ["/dev", "/proc"];
/// Private per agent: a fresh tmpfs each (charged to the agent's memory cgroup).
const PRIVATE: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// Read-only inside `/proc`, as systemd's `ProtectKernelTunables=` makes them: an agent run
/// as `user: root` keeps uid 0's file permissions, and these answer to them.
const PROC_READ_ONLY: [&str; 2] = ["/proc/sys", "/proc/sysrq-trigger"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("every uid of {first}-{last} is taken: no uid for agent {agent}")]
    Exhausted { agent: String, first: u32, last: u32 },
    #[error("spec.writablePaths: {path}: {reason}")]
    WritablePath { path: String, reason: String },
    /// `spec.user` names no user of this host.
    #[error(transparent)]
    User(#[from] super::process::Error),
    /// The daemon could confine agents, but its uid registry cannot be used: agents do not
    /// start (never unconfined instead).
    #[error("agents cannot be confined: {0}")]
    Unconfinable(#[source] Arc<Error>),
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Io { .. } => "sandbox_io",
            Error::Exhausted { .. } => "uids_exhausted",
            Error::WritablePath { .. } => "writable_path",
            Error::User(e) => e.metric_label(),
            Error::Unconfinable(_) => "unconfinable",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { what, path: path.to_path_buf(), source }
}

/// Whether this process can confine agents: it is uid 0 with the capabilities the child
/// uses (mount namespaces, changing credentials and the bounding set). Without them (a
/// daemon of an ordinary user, `--allow-unenforced`) agents run as the daemon's user.
pub fn capable() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else { return false };
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.split_whitespace().map(str::to_owned).collect())
    };
    let uids: Vec<String> = field("Uid:").unwrap_or_default();
    let caps = field("CapEff:")
        .and_then(|v: Vec<String>| v.first().and_then(|h| u64::from_str_radix(h, 16).ok()))
        .unwrap_or(0);
    // CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_SYS_ADMIN (linux/capability.h).
    let needed = [6, 7, 8, 21];
    uids.get(1).is_some_and(|u| u == "0") && needed.iter().all(|c| caps & (1u64 << c) != 0)
}

/// The agent's view of the system, for [`super::process::ProcessSpec::confinement`]: every
/// mount read-only except `writable` (canonical directories), `hidden` covered by an empty
/// read-only tmpfs, and a private `/tmp`, `/var/tmp` and `/dev/shm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confinement {
    writable: Vec<PathBuf>,
    hidden: Vec<PathBuf>,
    private: Vec<PathBuf>,
    proc_read_only: Vec<PathBuf>,
    /// Secret files: directories of the replica's tmpfs, each mounted read-only at its path.
    files: Vec<super::secret_files::FileMount>,
}

/// One mount the plan makes on top of the read-only tree.
enum Layer {
    /// A tree copied before the tree became read-only, mounted back.
    Attach(usize),
    Tmpfs(&'static str),
}

impl Confinement {
    /// Whether `path` of the host is the same path in the agent's view: not under what it
    /// must not see, and, under a private directory (its own empty `/tmp`), only inside a
    /// writable path mounted there.
    pub fn sees(&self, path: &Path) -> bool {
        if self.hidden.iter().any(|h| path.starts_with(h)) {
            return false;
        }
        let private = PRIVATE.iter().any(|p| path.starts_with(p));
        !private || self.writable.iter().any(|w| path.starts_with(w))
    }

    /// The confinement of an agent that may write `writable` (its home, its writablePaths)
    /// and must not see `hidden`; the private directories are those this host has.
    pub fn new(writable: Vec<PathBuf>, hidden: Vec<PathBuf>) -> Self {
        let existing = |list: &[&str]| list.iter().map(PathBuf::from).filter(|p| p.exists()).collect();
        Confinement {
            writable,
            hidden,
            private: existing(&PRIVATE),
            proc_read_only: existing(&PROC_READ_ONLY),
            files: Vec::new(),
        }
    }

    /// Adds secret files to the view: each `source` read-only at its `target`, under a
    /// private tmpfs at `/run/secrets` for the targets there.
    pub fn add_files(&mut self, files: Vec<super::secret_files::FileMount>) {
        self.files.extend(files);
    }

    /// The steps, in order, that the child takes to set up this view (see the module
    /// comment). Mounts go on in path order, so a mount below another is made after it; a
    /// mount point inside a fresh tmpfs is created first.
    pub(crate) fn mount_ops(&self) -> Result<Vec<MountOp>, &'static str> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| "a mount path contains a NUL byte");
        let mut ops = vec![MountOp::Unshare];
        let mut layers: Vec<(PathBuf, Layer)> = Vec::new();
        let kept = KEEP.iter().map(PathBuf::from).chain(self.writable.iter().cloned());
        for (slot, path) in kept.enumerate() {
            ops.push(MountOp::Clone { path: c(&path)?, slot });
            layers.push((path, Layer::Attach(slot)));
        }
        let first_file_slot = KEEP.len() + self.writable.len();
        for (i, f) in self.files.iter().enumerate() {
            ops.push(MountOp::Clone { path: c(&f.source)?, slot: first_file_slot + i });
            layers.push((f.target.clone(), Layer::Attach(first_file_slot + i)));
        }
        let run_secrets = Path::new(crate::api::agent::SECRET_FILES_ROOT);
        let under_run_secrets = self.files.iter().any(|f| f.target.starts_with(run_secrets));
        if under_run_secrets {
            layers.push((run_secrets.to_path_buf(), Layer::Tmpfs("mode=0755,size=64k,nr_inodes=1024")));
        }
        ops.push(MountOp::ReadOnlyTree(c(Path::new("/"))?));
        for p in &self.private {
            layers.push((p.clone(), Layer::Tmpfs("mode=1777")));
        }
        for p in &self.hidden {
            layers.push((p.clone(), Layer::Tmpfs("mode=0700,size=1m,nr_inodes=1024")));
        }
        // Shallower first; at one path the tmpfs first, so a listed path stays what it is.
        layers.sort_by_key(|(p, l)| (p.components().count(), matches!(l, Layer::Attach(_))));
        let mut tmpfs_roots: Vec<&Path> = Vec::new();
        for (path, layer) in &layers {
            if let Some(root) =
                tmpfs_roots.iter().filter(|r| path.starts_with(r) && path != *r).max_by_key(|r| r.as_os_str().len())
            {
                let below: Vec<&Path> = path.ancestors().take_while(|a| a != root).collect();
                for dir in below.into_iter().rev() {
                    ops.push(MountOp::Mkdir(c(dir)?));
                }
            }
            match layer {
                Layer::Attach(slot) => ops.push(MountOp::Attach { slot: *slot, path: c(path)? }),
                Layer::Tmpfs(options) => {
                    ops.push(MountOp::Tmpfs { path: c(path)?, options: CString::new(*options).expect("no NUL") });
                    tmpfs_roots.push(path);
                }
            }
        }
        for p in &self.hidden {
            ops.push(MountOp::ReadOnly(c(p)?));
        }
        if under_run_secrets {
            ops.push(MountOp::ReadOnly(c(run_secrets)?));
        }
        for f in &self.files {
            ops.push(MountOp::ReadOnly(c(&f.target)?));
        }
        for p in &self.proc_read_only {
            ops.push(MountOp::ReadOnlyBind(c(p)?));
        }
        Ok(ops)
    }
}

/// Checks and resolves an Agent's `writablePaths` for the host: each an existing directory
/// (symlinks resolved, so the mount lands where the agent will look), none inside a hidden
/// one (`$A2A_HOME`, the uid registry) and none holding one.
pub fn writable_paths(listed: &[String], hidden: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in listed {
        let err = |reason: String| Error::WritablePath { path: p.clone(), reason };
        let real = fs::canonicalize(p).map_err(|e| err(format!("cannot resolve it: {e}")))?;
        if !real.is_dir() {
            return Err(err("not a directory".into()));
        }
        if let Some(h) = hidden.iter().find(|h| real.starts_with(h) || h.starts_with(&real)) {
            return Err(err(format!("overlaps {}, which agents must not see", h.display())));
        }
        out.push(real);
    }
    Ok(out)
}

/// An agent's dynamic identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicUser {
    pub uid: u32,
    /// Its home, `<state>/homes/<uid>`, mode 0700, owned by the uid.
    pub home: PathBuf,
}

/// The host-wide registry of agent uids (see the module comment), as one daemon uses it.
#[derive(Debug)]
pub struct DynamicUsers {
    state: PathBuf,
    /// This daemon's `$A2A_HOME`, as written in its registry files.
    owner: String,
    range: RangeInclusive<u32>,
    /// This daemon's agents and their uids, as the registry holds them.
    known: Mutex<HashMap<(String, String), u32>>,
    /// The last scan of the uids processes run with, and when it was made (see
    /// [`SCAN_SHARED_FOR`]).
    scanned: Mutex<Option<(std::time::Instant, Arc<HashSet<u32>>)>>,
    /// Held by the one allocation that scans anew; the others meanwhile use the last scan.
    scanning: Mutex<()>,
}

/// How long one scan of every process's uids serves the allocations that follow it. A scan
/// reads `/proc/<pid>/status` of every process of the host (the kernel renders each whole
/// file), so a scan per allocation made starting N new agents cost O(N × processes): with
/// 500 agents, their relays and the host's other processes, most of the 15.6 s of CPU of a
/// 500-agent apply (7.0 s with this sharing). A uid the scan missed would be one a
/// process outside every a2a registry took in the last second from a2a's own range; the
/// uids a2a hands out are claimed in the registry, which is read on every allocation.
const SCAN_SHARED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// One registry file: whose uid it is.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    owner: String,
    namespace: String,
    name: String,
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let mut owner = None;
        let mut agent = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("home", v)) => owner = Some(v.to_owned()),
                Some(("agent", v)) => agent = v.split_once('/').map(|(n, a)| (n.to_owned(), a.to_owned())),
                _ => {}
            }
        }
        let (namespace, name) = agent?;
        Some(Entry { owner: owner?, namespace, name })
    }

    fn render(&self) -> String {
        format!("home={}\nagent={}/{}\n", self.owner, self.namespace, self.name)
    }
}

impl DynamicUsers {
    /// Opens (creating) the registry under `state` for the daemon whose home is `a2a_home`,
    /// and reads which uids this daemon's agents hold.
    pub fn open(state: &Path, a2a_home: &Path, range: RangeInclusive<u32>) -> Result<Self> {
        let owner = fs::canonicalize(a2a_home).map_err(io("resolve", a2a_home))?.to_string_lossy().into_owned();
        let users = DynamicUsers {
            state: state.to_path_buf(),
            owner,
            range,
            known: Mutex::default(),
            scanned: Mutex::default(),
            scanning: Mutex::default(),
        };
        for (dir, mode) in [(state.to_path_buf(), 0o755), (users.registry(), 0o700), (users.homes(), 0o755)] {
            fs::DirBuilder::new().recursive(true).mode(mode).create(&dir).map_err(io("create", &dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(io("set the mode of", &dir))?;
        }
        let mut known = HashMap::new();
        let mut busy: Option<HashSet<u32>> = None;
        let _lock = users.lock()?;
        for (uid, entry) in users.entries()? {
            if entry.owner == users.owner {
                known.insert((entry.namespace, entry.name), uid);
            } else if !Path::new(&entry.owner).exists() && !busy.get_or_insert_with(uids_in_use).contains(&uid) {
                // Left by a daemon whose home is gone (a test's, a removed install): freed
                // now rather than when an allocation happens upon it.
                let _ = fs::remove_file(users.registry().join(uid.to_string()));
                let _ = remove_tree(&users.home_of(uid));
            }
        }
        *users.known.lock().unwrap_or_else(|e| e.into_inner()) = known;
        Ok(users)
    }

    /// The registry directory, hidden from agents.
    pub fn registry(&self) -> PathBuf {
        self.state.join("uids")
    }

    fn homes(&self) -> PathBuf {
        self.state.join("homes")
    }

    fn home_of(&self, uid: u32) -> PathBuf {
        self.homes().join(uid.to_string())
    }

    fn entries(&self) -> Result<Vec<(u32, Entry)>> {
        let dir = self.registry();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io("list", &dir))?.flatten() {
            let Some(uid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(entry) = fs::read_to_string(e.path()).ok().as_deref().and_then(Entry::parse) {
                out.push((uid, entry));
            }
        }
        Ok(out)
    }

    /// The uid agent `namespace/name` holds, if it has one.
    pub fn uid_of(&self, namespace: &str, name: &str) -> Option<u32> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(&(namespace.to_owned(), name.to_owned())).copied()
    }

    /// The agent's uid and home: the one it holds, else a free one. The first candidate is
    /// a hash of the daemon's home and the agent's name (so an agent tends to get the same
    /// uid again after it was deleted and created anew), then the range in order. A uid is
    /// free when no registry file claims it (a claim of a daemon whose home is gone, with no
    /// process left, is taken over), no passwd or group entry and no systemd dynamic user
    /// has it, and no process runs with it. The claim is the exclusive creation of its file
    /// under a lock the host's daemons share.
    pub fn allocate(&self, namespace: &str, name: &str) -> Result<DynamicUser> {
        // The scan of the host's processes is made before the host-wide lock is taken, not
        // under it: made under it (tens of milliseconds with a thousand processes on a busy
        // host), it held every other start of every daemon of the host waiting behind it.
        let busy = match self.uid_of(namespace, name) {
            Some(_) => Arc::default(),
            None => self.recent_uids_in_use(),
        };
        let _lock = self.lock()?;
        if let Some(uid) = self.uid_of(namespace, name) {
            return Ok(DynamicUser { uid, home: self.ensure_home(uid)? });
        }
        let me = Entry { owner: self.owner.clone(), namespace: namespace.to_owned(), name: name.to_owned() };
        let (first, last) = (*self.range.start(), *self.range.end());
        let span = u64::from(last - first) + 1;
        let start = fnv1a(format!("{}\n{namespace}/{name}", self.owner).as_bytes()) % span;
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = fs::read_to_string("/etc/group").unwrap_or_default();
        for i in 0..span {
            let uid = first + ((start + i) % span) as u32;
            let file = self.registry().join(uid.to_string());
            if let Ok(text) = fs::read_to_string(&file) {
                match Entry::parse(&text) {
                    Some(e) if e == me => {
                        self.remember(&me, uid);
                        return Ok(DynamicUser { uid, home: self.ensure_home(uid)? });
                    }
                    Some(e) if Path::new(&e.owner).exists() => continue,
                    // A claim of a daemon that is gone (its home removed), or unreadable.
                    _ => {}
                }
            }
            if in_database(uid, &passwd) || in_database(uid, &group) {
                continue;
            }
            if Path::new("/run/systemd/dynamic-uid").join(uid.to_string()).exists() {
                continue;
            }
            if busy.contains(&uid) {
                continue;
            }
            // Free: a stale claim and its home go, then the claim is ours.
            let _ = fs::remove_file(&file);
            remove_tree(&self.home_of(uid))?;
            let mut f =
                OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).map_err(io("create", &file))?;
            // Not synced: the claim guards against the host's other daemons, which see the
            // file as soon as it exists; a crash of the host that lost it also ended every
            // process that ran with the uid, and a home left owned by it is remade on the
            // next allocation (`ensure_home`). A sync here, under the host-wide lock, put one
            // journal commit per agent in a row in front of every start.
            f.write_all(me.render().as_bytes()).map_err(io("write", &file))?;
            self.remember(&me, uid);
            return Ok(DynamicUser { uid, home: self.ensure_home(uid)? });
        }
        Err(Error::Exhausted { agent: format!("{namespace}/{name}"), first, last })
    }

    /// [`uids_in_use`], scanned at most once per [`SCAN_SHARED_FOR`]: one caller scans anew
    /// while the others go on with the last scan (they wait only for the first).
    fn recent_uids_in_use(&self) -> Arc<HashSet<u32>> {
        let last = || self.scanned.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, uids)) = last()
            && at.elapsed() < SCAN_SHARED_FOR
        {
            return uids;
        }
        let _scanning = match (self.scanning.try_lock(), last()) {
            (Ok(guard), _) => guard,
            (Err(_), Some((_, uids))) => return uids,
            (Err(_), None) => self.scanning.lock().unwrap_or_else(|e| e.into_inner()),
        };
        // Another caller may have scanned while this one waited for the first scan.
        if let Some((at, uids)) = last()
            && at.elapsed() < SCAN_SHARED_FOR
        {
            return uids;
        }
        let uids = Arc::new(uids_in_use());
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), uids.clone()));
        uids
    }

    /// Gives the agent's uid back and removes its home, once no process runs with it (an
    /// agent deleted while a process of it still runs keeps the uid; the next call, or the
    /// next daemon's [`DynamicUsers::release_all_but`], frees it). Returns the uid released.
    pub fn release(&self, namespace: &str, name: &str) -> Result<Option<u32>> {
        let _lock = self.lock()?;
        let Some(uid) = self.uid_of(namespace, name) else { return Ok(None) };
        // Processes stopped by a signal may take a moment to leave (children of theirs are
        // killed with their cgroup).
        // One scan when none is left (the common case), not two.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut busy = uids_in_use().contains(&uid);
        while busy && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            busy = uids_in_use().contains(&uid);
        }
        if busy {
            tracing::warn!(agent = %name, uid, "a process still runs with the deleted agent's uid; it stays allocated");
            return Ok(None);
        }
        remove_tree(&self.home_of(uid))?;
        let file = self.registry().join(uid.to_string());
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &file)(e)),
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_owned(), name.to_owned()));
        Ok(Some(uid))
    }

    /// Releases the uids of this daemon's agents that are not in `keep` (deleted while the
    /// daemon was down).
    pub fn release_all_but(&self, keep: &HashSet<(String, String)>) {
        let gone: Vec<(String, String)> = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.keys().filter(|k| !keep.contains(*k)).cloned().collect()
        };
        for (ns, name) in gone {
            if let Err(e) = self.release(&ns, &name) {
                tracing::warn!(agent = %name, error = %e, "releasing the uid of a deleted agent");
            }
        }
    }

    fn remember(&self, e: &Entry, uid: u32) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert((e.namespace.clone(), e.name.clone()), uid);
    }

    /// The home of `uid`, made if missing: mode 0700, owned by the uid (and its group,
    /// which has the same number).
    fn ensure_home(&self, uid: u32) -> Result<PathBuf> {
        let home = self.home_of(uid);
        match fs::symlink_metadata(&home) {
            Ok(m) if m.is_dir() && m.uid() == uid => return Ok(home),
            // Anything else at that path is not this uid's: it goes.
            Ok(_) => remove_tree(&home)?,
            Err(_) => {}
        }
        fs::DirBuilder::new().mode(0o700).create(&home).map_err(io("create", &home))?;
        std::os::unix::fs::chown(&home, Some(uid), Some(uid)).map_err(io("change the owner of", &home))?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).map_err(io("set the mode of", &home))?;
        Ok(home)
    }

    /// An exclusive lock on the registry, shared by every daemon of the host (`flock`).
    fn lock(&self) -> Result<fs::File> {
        let path = self.state.join("uids.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| io("lock", &path)(e.into()))?;
        Ok(f)
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io("remove", path)),
        Err(_) => Ok(()),
    }
}

/// Whether a passwd or group file (`name:x:id:...`) has an entry with id `id`.
fn in_database(id: u32, file: &str) -> bool {
    file.lines().any(|l| l.split(':').nth(2).and_then(|f| f.parse::<u32>().ok()) == Some(id))
}

/// Every uid (real, effective, saved, filesystem) some live process of the host runs with.
/// A zombie does not count: it runs nothing, and its parent (init, for an agent whose
/// daemon is gone) reaps it when it will.
fn uids_in_use() -> HashSet<u32> {
    let mut uids = HashSet::new();
    let Ok(dir) = fs::read_dir("/proc") else { return uids };
    for e in dir.flatten() {
        if !e.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        if let Ok(status) = fs::read_to_string(e.path().join("status"))
            && !status.lines().any(|l| l.starts_with("State:") && l.contains("Z (zombie)"))
            && let Some(line) = status.lines().find_map(|l| l.strip_prefix("Uid:"))
        {
            uids.extend(line.split_whitespace().filter_map(|u| u.parse::<u32>().ok()));
        }
    }
    uids
}

/// FNV-1a: a stable hash (the standard library's is randomly keyed per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// How an agent runs, as far as its identity goes, for the `Sandboxed` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A uid of its own from the registry (`None` until its first start allocates it).
    Dynamic(Option<u32>),
    /// `spec.user`, resolved to a non-zero uid.
    User { user: String, uid: u32 },
    /// `spec.user` resolved to uid 0.
    Root { user: String },
    /// The daemon cannot confine agents (not root): they run as the daemon's user.
    DaemonUser,
}

/// The `Sandboxed` condition of an agent that runs locally.
pub fn condition(identity: &Identity) -> Condition {
    const VIEW: &str =
        "no capabilities; the filesystem is read-only except its writablePaths and a private /tmp; $A2A_HOME is hidden";
    match identity {
        Identity::Dynamic(Some(uid)) => Condition::new(
            "Sandboxed",
            true,
            "DynamicUser",
            format!("runs as uid {uid}, its own; its home is writable; {VIEW}"),
        ),
        Identity::Dynamic(None) => Condition::new(
            "Sandboxed",
            true,
            "DynamicUser",
            format!("runs as a uid of its own, allocated at its first start; {VIEW}"),
        ),
        Identity::User { user, uid } => {
            Condition::new("Sandboxed", true, "User", format!("runs as uid {uid} (spec.user {user:?}); {VIEW}"))
        }
        Identity::Root { user } => Condition::new(
            "Sandboxed",
            false,
            "RunsAsRoot",
            format!(
                "spec.user {user:?} is root: the agent runs as uid 0 and can read every file root owns \
                 ({VIEW})"
            ),
        ),
        Identity::DaemonUser => Condition::new(
            "Sandboxed",
            false,
            "DaemonNotRoot",
            "a2a does not run as root: the agent runs as the daemon's own user and can read what the daemon can, \
             $A2A_HOME included",
        ),
    }
}

/// The node's side of confinement: the uid registry (when the daemon can confine agents),
/// the daemon's own binary held open, and how each agent was last started.
#[derive(Debug)]
pub struct Sandbox {
    /// `None`: the daemon cannot confine agents (see [`capable`]); `Some(Err)`: it could,
    /// but the registry cannot be used, and agents do not start (never unconfined instead).
    users: Option<Result<DynamicUsers, Arc<Error>>>,
    /// Covered by an empty read-only tmpfs in every agent's view.
    hidden: Vec<PathBuf>,
    /// The daemon's binary (`O_PATH`), which `command: [a2a, ...]` executes.
    exe: Option<Arc<OwnedFd>>,
    identities: Mutex<HashMap<(String, String), Identity>>,
}

impl Sandbox {
    /// For a daemon whose home is `a2a_home`, keeping the registry under `state` and running
    /// `exe` for `a2a` commands (the running binary when it is this process's own).
    pub fn new(a2a_home: &Path, state: &Path, exe: &Path) -> Self {
        let users = capable().then(|| DynamicUsers::open(state, a2a_home, UID_RANGE).map_err(Arc::new));
        if let Some(Err(e)) = &users {
            tracing::error!(error = %e, "the agent uid registry cannot be used: agents will not start");
        }
        let mut hidden = vec![fs::canonicalize(a2a_home).unwrap_or_else(|_| a2a_home.to_path_buf())];
        if let Some(Ok(u)) = &users {
            hidden.push(u.registry());
            // Every daemon's replicas' secret files (see `secret_files`), each agent's own
            // reaching it only at its mountPath.
            let files = state.join("secrets");
            match fs::DirBuilder::new().recursive(true).mode(0o711).create(&files) {
                Ok(()) => hidden.push(files),
                Err(e) => tracing::warn!(path = %files.display(), error = %e, "cannot make the secret files directory"),
            }
        }
        let own = std::env::current_exe().ok().is_some_and(|me| me == exe);
        let path = if own { Path::new("/proc/self/exe") } else { exe };
        let exe = match rustix::fs::open(
            path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot hold the a2a binary open; `a2a` commands run it by path");
                None
            }
        };
        Sandbox { users, hidden, exe, identities: Mutex::default() }
    }

    /// Sets how agent `namespace/name` runs: its credentials (its own uid, or `spec.user`),
    /// its home, its view of the filesystem, and the daemon's binary for `a2a` commands.
    /// Called after the daemon's environment is in `spec` and before the Agent's own.
    pub fn apply(&self, spec: &mut ProcessSpec, namespace: &str, name: &str, agent: &AgentSpec) -> Result<()> {
        if agent.command.first().is_some_and(|c| c == "a2a") {
            spec.exec_fd = self.exe.clone();
        }
        let resolve = RunAs::resolve;
        let key = (namespace.to_owned(), name.to_owned());
        let Some(users) = &self.users else {
            if let Some(user) = &agent.user {
                spec.user = Some(resolve(user)?);
            }
            self.remember(key, Identity::DaemonUser);
            return Ok(());
        };
        let users = users.as_ref().map_err(|e| Error::Unconfinable(e.clone()))?;
        let mut writable = Vec::new();
        let identity = match &agent.user {
            Some(user) => {
                let run_as = resolve(user)?;
                let identity = if run_as.uid == 0 {
                    Identity::Root { user: user.clone() }
                } else {
                    Identity::User { user: user.clone(), uid: run_as.uid }
                };
                spec.user = Some(run_as);
                identity
            }
            None => {
                let d = users.allocate(namespace, name)?;
                spec.user = Some(RunAs { uid: d.uid, gid: d.uid, groups: vec![d.uid] });
                let user_name = format!("a2a-{namespace}-{name}");
                spec.env.push(("HOME".into(), d.home.to_string_lossy().into_owned()));
                spec.env.push(("USER".into(), user_name.clone()));
                spec.env.push(("LOGNAME".into(), user_name));
                writable.push(d.home);
                Identity::Dynamic(Some(d.uid))
            }
        };
        writable.extend(writable_paths(&agent.writable_paths, &self.hidden)?);
        spec.confinement = Some(Confinement::new(writable, self.hidden.clone()));
        self.remember(key, identity);
        Ok(())
    }

    fn remember(&self, key: (String, String), identity: Identity) {
        self.identities.lock().unwrap_or_else(|e| e.into_inner()).insert(key, identity);
    }

    /// The `Sandboxed` condition of a local agent: how it was last started, else how it
    /// will be.
    pub fn condition(&self, namespace: &str, name: &str, agent: &AgentSpec) -> Condition {
        let key = (namespace.to_owned(), name.to_owned());
        let known = self.identities.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let identity = known.unwrap_or_else(|| match (&self.users, &agent.user) {
            (None, _) => Identity::DaemonUser,
            (Some(_), Some(user)) => match RunAs::resolve(user) {
                Ok(r) if r.uid == 0 => Identity::Root { user: user.clone() },
                Ok(r) => Identity::User { user: user.clone(), uid: r.uid },
                Err(_) => Identity::User { user: user.clone(), uid: u32::MAX },
            },
            (Some(users), None) => Identity::Dynamic(users.as_ref().ok().and_then(|u| u.uid_of(namespace, name))),
        });
        condition(&identity)
    }

    /// After agent `namespace/name` was deleted and its processes stopped: its uid and home
    /// go (see [`DynamicUsers::release`]).
    pub fn release(&self, namespace: &str, name: &str) {
        self.identities.lock().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_owned(), name.to_owned()));
        if let Some(Ok(users)) = &self.users {
            match users.release(namespace, name) {
                Ok(Some(uid)) => tracing::info!(agent = %name, uid, "released the deleted agent's uid and home"),
                Ok(None) => {}
                Err(e) => tracing::warn!(agent = %name, error = %e, "releasing the deleted agent's uid"),
            }
        }
    }

    /// After a restart, once strays are stopped: releases the uids of agents deleted while
    /// the daemon was down.
    pub fn release_all_but(&self, keep: &HashSet<(String, String)>) {
        if let Some(Ok(users)) = &self.users {
            users.release_all_but(keep);
        }
    }
}

/// The directory an agent that names no `workingDir` starts in: the daemon's own when the
/// agent's user can reach it in its view of the system, else the agent's home (as systemd's
/// `WorkingDirectory=~`), else `/`. A daemon started from a checkout under `/root` thus still
/// starts its dynamic-uid agents; an explicit `workingDir` the agent cannot enter stays an
/// error that names it.
pub fn default_working_dir(daemon_cwd: &Path, spec: &ProcessSpec) -> PathBuf {
    let Some(user) = &spec.user else { return daemon_cwd.to_path_buf() };
    let seen = spec.confinement.as_ref().is_none_or(|c| c.sees(daemon_cwd));
    if seen && reachable(daemon_cwd, user) {
        return daemon_cwd.to_path_buf();
    }
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == "HOME")
        .map(|(_, home)| PathBuf::from(home))
        .filter(|home| reachable(home, user))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Whether `user` may search every directory from `/` down to `dir` (the `x` bit that applies
/// to it: owner, group or other, as the kernel checks them; uid 0 needs any `x` bit).
fn reachable(dir: &Path, user: &RunAs) -> bool {
    dir.ancestors().all(|d| match fs::metadata(d) {
        Ok(m) if m.is_dir() => {
            let mode = m.mode();
            if user.uid == 0 {
                mode & 0o111 != 0
            } else if m.uid() == user.uid {
                mode & 0o100 != 0
            } else if m.gid() == user.gid || user.groups.contains(&m.gid()) {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_agent_starts_where_its_user_can_reach_else_in_its_home() {
        let base = tempfile::tempdir().unwrap();
        let closed = base.path().join("closed");
        let open = base.path().join("open");
        let home = base.path().join("home");
        for d in [&closed, &open, &home] {
            fs::create_dir(d).unwrap();
        }
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let uid = 4_000_000_123;
        std::os::unix::fs::chown(&home, Some(uid), Some(uid)).unwrap();
        let mut spec = ProcessSpec::new("true", base.path().join("log"));
        spec.user = Some(RunAs { uid, gid: uid, groups: vec![uid] });
        spec.env.push(("HOME".into(), home.display().to_string()));
        // The base may sit under a closed directory (a temp dir under /root): then nothing
        // below it is reachable, and the fall-back is `/`.
        let base_open = reachable(base.path(), spec.user.as_ref().unwrap());
        let expect = |d: &Path| if base_open { d.to_path_buf() } else { PathBuf::from("/") };
        assert_eq!(default_working_dir(&open, &spec), expect(&open));
        assert_eq!(default_working_dir(&closed, &spec), expect(&home), "a closed directory falls back to the home");
        spec.user = None;
        assert_eq!(default_working_dir(&closed, &spec), closed, "the daemon's own user keeps its directory");
    }
    use super::*;

    fn ops(c: &Confinement) -> Vec<String> {
        c.mount_ops()
            .unwrap()
            .iter()
            .map(|op| match op {
                MountOp::Unshare => "unshare".to_owned(),
                MountOp::Clone { path, slot } => format!("clone {} #{slot}", path.to_str().unwrap()),
                MountOp::ReadOnlyTree(p) => format!("ro-tree {}", p.to_str().unwrap()),
                MountOp::ReadOnlyBind(p) => format!("ro-bind {}", p.to_str().unwrap()),
                MountOp::Tmpfs { path, .. } => format!("tmpfs {}", path.to_str().unwrap()),
                MountOp::Mkdir(p) => format!("mkdir {}", p.to_str().unwrap()),
                MountOp::Attach { slot, path } => format!("attach #{slot} {}", path.to_str().unwrap()),
                MountOp::ReadOnly(p) => format!("ro {}", p.to_str().unwrap()),
            })
            .collect()
    }

    fn confinement(writable: &[&str], hidden: &[&str]) -> Confinement {
        Confinement {
            writable: writable.iter().map(PathBuf::from).collect(),
            hidden: hidden.iter().map(PathBuf::from).collect(),
            private: vec!["/tmp".into(), "/dev/shm".into()],
            proc_read_only: vec!["/proc/sys".into()],
            files: Vec::new(),
        }
    }

    #[test]
    fn the_plan_copies_writable_trees_first_makes_everything_read_only_then_mounts_in_path_order() {
        let c = confinement(&["/var/lib/a2a/homes/61200", "/srv/data"], &["/root/.a2a"]);
        assert_eq!(
            ops(&c),
            [
                "unshare",
                "clone /dev #0",
                "clone /proc #1",
                "clone /var/lib/a2a/homes/61200 #2",
                "clone /srv/data #3",
                "ro-tree /",
                "tmpfs /tmp",
                "attach #0 /dev",
                "attach #1 /proc",
                "tmpfs /dev/shm",
                "tmpfs /root/.a2a",
                "attach #3 /srv/data",
                "attach #2 /var/lib/a2a/homes/61200",
                "ro /root/.a2a",
                "ro-bind /proc/sys",
            ]
        );
    }

    /// `$A2A_HOME` and a writable path under `/tmp` (a test's temporary directory) are
    /// reached through the private `/tmp`: their mount points are made in it first.
    #[test]
    fn mounts_below_a_fresh_tmpfs_get_their_mount_points_made_first() {
        let c = confinement(&["/tmp/t1/rw"], &["/tmp/t1/home"]);
        let got = ops(&c);
        let at = |s: &str| got.iter().position(|o| o == s).unwrap_or_else(|| panic!("{s} missing from {got:?}"));
        assert!(at("tmpfs /tmp") < at("mkdir /tmp/t1"));
        assert!(at("mkdir /tmp/t1") < at("mkdir /tmp/t1/home"));
        assert!(at("mkdir /tmp/t1/home") < at("tmpfs /tmp/t1/home"));
        assert!(at("mkdir /tmp/t1/rw") < at("attach #2 /tmp/t1/rw"));
        assert!(at("ro-tree /") < at("tmpfs /tmp"));
    }

    /// A checkout under `/tmp` is the same path in the agent's view only when a writable path
    /// brings it into the private `/tmp`; the hidden home never is.
    #[test]
    fn an_agent_sees_a_host_path_under_tmp_only_through_a_writable_path() {
        let c = confinement(&["/tmp/checkout"], &["/srv/a2a-home"]);
        assert!(c.sees(Path::new("/tmp/checkout/examples")));
        assert!(!c.sees(Path::new("/tmp/other")));
        assert!(!c.sees(Path::new("/srv/a2a-home/logs")));
        assert!(c.sees(Path::new("/root/checkout")));
    }

    /// Secret files: each directory of the replica's tmpfs taken before the tree becomes
    /// read-only, put at its path (under a private tmpfs at /run/secrets, its mount point made
    /// there), and read-only.
    #[test]
    fn secret_files_are_cloned_first_and_attached_read_only_at_their_paths() {
        let mut c = confinement(&["/srv/data"], &["/var/lib/a2a/secrets"]);
        let file = |source: &str, target: &str| super::super::secret_files::FileMount {
            source: source.into(),
            target: target.into(),
        };
        c.add_files(vec![
            file("/var/lib/a2a/secrets/t.default.a.0/0", "/run/secrets/openai"),
            file("/var/lib/a2a/secrets/t.default.a.0/1", "/etc/ssl/private"),
        ]);
        let got = ops(&c);
        let at = |s: &str| got.iter().position(|o| o == s).unwrap_or_else(|| panic!("{s} missing from {got:?}"));
        assert!(at("clone /var/lib/a2a/secrets/t.default.a.0/0 #3") < at("ro-tree /"));
        assert!(at("clone /var/lib/a2a/secrets/t.default.a.0/1 #4") < at("ro-tree /"));
        assert!(at("tmpfs /run/secrets") < at("mkdir /run/secrets/openai"));
        assert!(at("mkdir /run/secrets/openai") < at("attach #3 /run/secrets/openai"));
        assert!(at("attach #4 /etc/ssl/private") < at("ro /etc/ssl/private"));
        assert!(at("attach #3 /run/secrets/openai") < at("ro /run/secrets/openai"));
        assert!(at("ro /run/secrets") < at("ro /run/secrets/openai"));
        assert!(at("tmpfs /var/lib/a2a/secrets") > at("clone /var/lib/a2a/secrets/t.default.a.0/1 #4"), "hidden after");
    }

    #[test]
    fn writable_paths_must_be_directories_outside_what_agents_must_not_see() {
        let dir = tempfile::tempdir().unwrap();
        let rw = dir.path().join("rw");
        fs::create_dir(&rw).unwrap();
        fs::write(dir.path().join("file"), "x").unwrap();
        let hidden = vec![fs::canonicalize(dir.path()).unwrap().join("home")];
        let ok = writable_paths(&[rw.to_string_lossy().into()], &hidden).unwrap();
        assert_eq!(ok, [fs::canonicalize(&rw).unwrap()]);
        let e = writable_paths(&[dir.path().join("file").to_string_lossy().into()], &hidden).unwrap_err();
        assert!(e.to_string().ends_with("not a directory"), "{e}");
        let e = writable_paths(&[dir.path().join("nope").to_string_lossy().into()], &hidden).unwrap_err();
        assert!(e.to_string().contains("cannot resolve it"), "{e}");
        let e = writable_paths(&[dir.path().to_string_lossy().into()], &hidden).unwrap_err();
        assert!(e.to_string().contains("which agents must not see"), "{e}");
    }

    fn registry(state: &Path, home: &Path, range: RangeInclusive<u32>) -> DynamicUsers {
        DynamicUsers::open(state, home, range).unwrap()
    }

    /// Runs as root (the project's tests do): homes are chowned to the agents' uids.
    #[test]
    fn uids_are_per_agent_stable_across_daemons_distinct_across_homes_and_released() {
        let state = tempfile::tempdir().unwrap();
        let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let range = 4_000_000_000..=4_000_000_003;
        let a = registry(state.path(), home_a.path(), range.clone());
        let x = a.allocate("default", "x").unwrap();
        let y = a.allocate("default", "y").unwrap();
        assert_ne!(x.uid, y.uid);
        assert_eq!(a.allocate("default", "x").unwrap(), x, "the same agent keeps its uid");
        let m = fs::metadata(&x.home).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (x.uid, x.uid, 0o700));
        fs::write(x.home.join("kept"), "1").unwrap();
        // A daemon restarted on the same home finds the same uids; its home is kept.
        let again = registry(state.path(), home_a.path(), range.clone());
        assert_eq!(again.uid_of("default", "x"), Some(x.uid));
        assert_eq!(again.allocate("default", "x").unwrap(), x);
        assert!(x.home.join("kept").exists());
        // Another daemon's agent of the same name gets another uid.
        let b = registry(state.path(), home_b.path(), range.clone());
        let bx = b.allocate("default", "x").unwrap();
        assert!(bx.uid != x.uid && bx.uid != y.uid);
        let bz = b.allocate("default", "z").unwrap();
        let e = b.allocate("default", "w").unwrap_err();
        assert!(matches!(e, Error::Exhausted { .. }), "{e}");
        // Released: the file and home go, and the uid is free for another agent.
        assert_eq!(again.release("default", "x").unwrap(), Some(x.uid));
        assert!(!x.home.exists());
        assert_eq!(b.allocate("default", "w").unwrap().uid, x.uid);
        // A daemon whose home is gone leaves claims that are taken over.
        drop(home_b);
        let fresh = registry(state.path(), home_a.path(), range);
        for gone in [bx.uid, bz.uid, x.uid] {
            assert!(!state.path().join("uids").join(gone.to_string()).exists(), "the claim of uid {gone} is freed");
            assert!(!state.path().join("homes").join(gone.to_string()).exists());
        }
        assert!(state.path().join("uids").join(y.uid.to_string()).exists());
        let taken = fresh.allocate("default", "v").unwrap();
        assert!([bx.uid, bz.uid, x.uid].contains(&taken.uid), "{taken:?}");
        fresh.release_all_but(&HashSet::from([("default".to_owned(), "y".to_owned())]));
        assert_eq!(fresh.uid_of("default", "v"), None);
        assert_eq!(fresh.uid_of("default", "y"), Some(y.uid));
    }

    #[test]
    fn a_uid_in_the_user_database_is_skipped() {
        assert!(in_database(61200, "svc:x:61200:61200::/:/bin/false\n"));
        assert!(!in_database(61200, "root:x:0:0::/root:/bin/sh\n"));
        let me = uids_in_use();
        assert!(me.contains(&rustix::process::getuid().as_raw()));
    }

    #[test]
    fn the_condition_says_how_the_agent_runs() {
        let root = condition(&Identity::Root { user: "root".into() });
        assert_eq!((root.status, root.reason.as_str()), (crate::api::common::ConditionStatus::False, "RunsAsRoot"));
        let dynamic = condition(&Identity::Dynamic(Some(61200)));
        assert!(dynamic.message.starts_with("runs as uid 61200, its own"), "{}", dynamic.message);
    }
}
