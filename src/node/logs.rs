//! Agent logs: a relay per replica that owns the log files and bounds them at write time.
//!
//! An agent's stdout and stderr are the write end of a pipe. The read end belongs to a small
//! relay — this binary, executed as the hidden `a2a log-relay` — in a session of its own and
//! in a cgroup of its own ([`RELAY_CGROUP`] under the node's top), outside the agent's budget
//! and outside the daemon's cgroup. The relay appends what it reads to
//! `<replica>.log` and, before a write would take that file past its cap, renames
//! `<replica>.log.N-1` → `.N`, …, `<replica>.log` → `.1` and opens a new `<replica>.log`:
//! nothing is copied, so a replica never needs more than `max_files × max_bytes` of disk.
//! Where a write is cut and which files a rotation renames are plain functions
//! ([`rotation`]); the relay carries them out.
//!
//! The relay is independent of the daemon, as containerd's shim and conmon are: it outlives
//! a daemon that is killed or stopped (agents never get SIGPIPE, and never block on a full
//! pipe nobody reads), a restarted daemon has nothing to re-adopt, and the relay ends by
//! itself when the last process holding the pipe's write end (the agent and whatever it
//! forked) is gone. The relay, not the agent, opens the files, so agents running as other
//! users cannot read or replace them: files are 0600 and directories 0700.

use std::ffi::{CString, OsString};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::process::{WaitId, WaitIdOptions};

use super::cgroup::{self, CgroupDriver, CgroupLimits, CgroupPath, Layout};
use super::sys::{self, SpawnRequest};

/// The cgroup, under the node's top, that holds every replica's log relay. The dot keeps it
/// apart from any budget (budget names are DNS labels).
pub const RELAY_CGROUP: &str = "log.relays";

/// Set to `"true"` on an Agent to keep its logs when it is deleted (`a2a delete --keep-logs`).
pub const KEEP_LOGS_ANNOTATION: &str = "a2a.dev/keep-logs";

/// The default cap of one log file (kubelet's `containerLogMaxSize` is 10Mi).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// The default number of files per replica, the live one included.
pub const DEFAULT_MAX_FILES: u32 = 3;
/// The smallest cap accepted: one read from the pipe fits in a file.
pub const MIN_MAX_BYTES: u64 = 4096;
/// The largest number of files accepted.
pub const MAX_MAX_FILES: u32 = 100;

/// How much of a replica's output is kept on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// The cap of each file, in bytes.
    pub max_bytes: u64,
    /// How many files: the live one and `max_files - 1` rotated ones.
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_bytes: DEFAULT_MAX_BYTES, max_files: DEFAULT_MAX_FILES }
    }
}

impl LogLimits {
    /// Checked limits: a cap of at least [`MIN_MAX_BYTES`], 2 to [`MAX_MAX_FILES`] files (a
    /// single file could only be truncated, which loses the lines just written).
    pub fn new(max_bytes: u64, max_files: u32) -> Result<Self> {
        if max_bytes < MIN_MAX_BYTES {
            return Err(Error::Limits(format!(
                "a log file cap of {max_bytes} bytes is below the minimum of {MIN_MAX_BYTES}"
            )));
        }
        if !(2..=MAX_MAX_FILES).contains(&max_files) {
            return Err(Error::Limits(format!("{max_files} log files per replica: it must be 2 to {MAX_MAX_FILES}")));
        }
        Ok(LogLimits { max_bytes, max_files })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent log limits: {0}")]
    Limits(String),
    #[error("log {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("log relay cgroup: {0}")]
    Cgroup(#[from] cgroup::Error),
    #[error("cannot start the log relay {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Limits(_) => "log_limits",
            Error::Io { .. } => "log",
            Error::Cgroup(e) => e.metric_label(),
            Error::Spawn { .. } => "log_relay_spawn",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a replica's stdout and stderr reach its log files through a relay.
#[derive(Clone, Debug, PartialEq)]
pub struct RelaySpec {
    /// The a2a binary, run as `a2a log-relay` (`/proc/self/exe` from the daemon).
    pub exe: PathBuf,
    pub limits: LogLimits,
    /// The cgroup the relay joins ([`relay_cgroup`]); `None` leaves it in the daemon's.
    pub cgroup: Option<CgroupPath>,
}

/// The relays' cgroup under `layout`'s top.
pub fn relay_cgroup(layout: &Layout) -> Option<CgroupPath> {
    layout.top().child(RELAY_CGROUP).ok()
}

/// The directory under a home that holds every agent's logs.
pub const LOGS_DIR: &str = "logs";

/// Where one agent's logs live under a home: `<home>/logs/<namespace>/<agent>/`, one live
/// file per replica, `<replica>.log`, rotated to `<replica>.log.1` (the newest), `.2`, ….
/// The node's relays write there, `a2a logs` reads there, deleting the agent removes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentLogs {
    dir: PathBuf,
}

impl AgentLogs {
    pub fn new(home: &Path, namespace: &str, agent: &str) -> AgentLogs {
        AgentLogs { dir: home.join(LOGS_DIR).join(namespace).join(agent) }
    }

    /// The agent's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live log of `replica`.
    pub fn live(&self, replica: u32) -> PathBuf {
        self.dir.join(format!("{replica}.log"))
    }

    /// The replicas that have a live log, in order.
    pub fn replicas(&self) -> Vec<u32> {
        let mut found: Vec<u32> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort_unstable();
        found
    }
}

/// The rotated file `n` (1 is the newest) of the live log `path`: `<path>.<n>`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Whether `annotations` ask to keep an agent's logs after it is deleted.
pub fn keep_requested(annotations: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    annotations.and_then(|a| a.get(KEEP_LOGS_ANNOTATION)).is_some_and(|v| v == "true")
}

/// Creates the directories of `path` (0700; ones that exist are set to 0700 too, from the
/// `logs` directory down) and opens `path` for appending, 0600.
pub fn open_log(path: &Path) -> Result<File> {
    let err = |what, source| Error::Io { path: path.to_path_buf(), what, source };
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| err("create its directory", e))?;
        // Directories made before logs were private keep their old mode otherwise: the
        // file's own directory, and up to `logs` when it is within two levels.
        let chain: Vec<&Path> = dir.ancestors().take(3).collect();
        let upto = chain.iter().position(|d| d.file_name().is_some_and(|n| n == LOGS_DIR)).map_or(1, |i| i + 1);
        for d in &chain[..upto] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(|e| err("set mode 0700", e))?;
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| err("open", e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| err("set mode 0600", e))?;
    Ok(file)
}

/// Starts the relay of one replica, writing to `log_file`; returns the pipe's write end, to
/// become the agent's stdout and stderr. The relay is reaped by a thread of this process
/// when it ends (a restarted daemon is not its parent: init reaps it then).
pub(crate) fn start_relay(driver: &dyn CgroupDriver, spec: &RelaySpec, log_file: &Path) -> Result<OwnedFd> {
    let io_err = |what, source| Error::Io { path: log_file.to_path_buf(), what, source };
    let file = sys::above_stdio(OwnedFd::from(open_log(log_file)?)).map_err(|e| io_err("open", e))?;
    let (read, write) = sys::pipe().map_err(|e| io_err("create the pipe", e))?;
    let null = sys::dev_null().map_err(|e| io_err("open /dev/null", e))?;
    let join = match &spec.cgroup {
        Some(cg) => join_files(driver, cg)?,
        None => Vec::new(),
    };
    let join_args = join
        .iter()
        .map(|p| Ok([c"--join".to_owned(), CString::new(p.as_os_str().as_bytes())?]))
        .collect::<Result<Vec<_>, std::ffi::NulError>>()
        .map_err(|_| Error::Spawn {
            exe: spec.exe.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path holds a NUL byte"),
        })?;
    let spawn_err = |source| Error::Spawn { exe: spec.exe.clone(), source };
    let invalid = || spawn_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path holds a NUL byte"));
    let exe = CString::new(spec.exe.as_os_str().as_bytes()).map_err(|_| invalid())?;
    // As the binary is named on the command line (`ps` shows `a2a log-relay …`), whatever
    // path executes it.
    let mut argv = vec![
        c"a2a".to_owned(),
        c"log-relay".to_owned(),
        c"--max-bytes".to_owned(),
        CString::new(spec.limits.max_bytes.to_string()).map_err(|_| invalid())?,
        c"--max-files".to_owned(),
        CString::new(spec.limits.max_files.to_string()).map_err(|_| invalid())?,
    ];
    argv.extend(join_args.into_iter().flatten());
    argv.push(CString::new(log_file.as_os_str().as_bytes()).map_err(|_| invalid())?);
    let request = SpawnRequest {
        candidates: vec![exe],
        argv,
        envp: Vec::new(),
        dir: Some(c"/".to_owned()),
        // The relay joins its cgroup itself, once running (see `relay`): a cgroup v1
        // migration waits for an RCU grace period per hierarchy, which the agent's start
        // need not wait for.
        join: Vec::new(),
        user: None,
        // The relay is the daemon's helper, not an agent: it writes the daemon's log files
        // and joins its cgroup, so it keeps the daemon's view of the system.
        mounts: Vec::new(),
        drop_capabilities: false,
        exec_fd: None,
        stdio: [read, file, null],
    };
    let relay = sys::spawn(&request).map_err(spawn_err)?;
    reap_when_done(relay.pid);
    Ok(write)
}

/// The `cgroup.procs` files of the relays' cgroup; the cgroup is made (without limits) when
/// they are missing.
fn join_files(driver: &dyn CgroupDriver, cg: &CgroupPath) -> Result<Vec<PathBuf>> {
    let files = driver.procs_files(cg).ok().filter(|f| f.iter().all(|p| p.exists()));
    match files {
        Some(files) => Ok(files),
        None => {
            // No limits: the relays' memory is their buffers and the page cache of the logs.
            driver.ensure(cg, &CgroupLimits::default())?;
            Ok(driver.procs_files(cg)?)
        }
    }
}

/// How long an exited relay may stay a zombie when nothing wakes the reaper earlier.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Relays this process started and has not reaped yet, by pid (no descriptor each: a daemon
/// of 500 agents would otherwise hold 500 more), and one thread that reaps them.
struct Reaper {
    state: Mutex<ReaperState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct ReaperState {
    pids: Vec<u32>,
    /// Look now (a relay was added, or an agent ended and its relay is about to).
    soon: bool,
}

fn reaper() -> Option<&'static Reaper> {
    static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("log-relay-reaper".into())
                .stack_size(64 * 1024)
                .spawn(reap_forever)
                .ok()?;
            Some(Reaper { state: Mutex::new(ReaperState::default()), wake: std::sync::Condvar::new() })
        })
        .as_ref()
}

/// Reaps the relay `pid` (a child of this process) once it exits.
fn reap_when_done(pid: u32) {
    let Some(r) = reaper() else {
        tracing::warn!("no reaper thread: an exited log relay stays a zombie until the daemon exits");
        return;
    };
    r.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pids.push(pid);
}

/// An agent ended: its relay ends once it has written what was left in the pipe, and is
/// reaped shortly after rather than at the next periodic look.
pub(crate) fn reap_soon() {
    if let Some(r) = reaper() {
        r.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).soon = true;
        r.wake.notify_one();
    }
}

fn reap_forever() {
    // The thread starts inside `reaper()`'s initialisation: wait until it is done.
    let r = loop {
        if let Some(r) = reaper() {
            break r;
        }
    };
    let mut state = r.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let soon = std::mem::take(&mut state.soon);
        if soon {
            // Give the relay of the agent that just ended the moment it needs to drain.
            drop(state);
            std::thread::sleep(std::time::Duration::from_millis(50));
            state = r.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.pids.retain(|pid| {
            let Some(p) = i32::try_from(*pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
            // A child's pid is not reused before it is reaped, so the pid names the relay.
            !matches!(
                rustix::process::waitid(WaitId::Pid(p), WaitIdOptions::EXITED | WaitIdOptions::NOHANG),
                Ok(Some(_)) | Err(_)
            )
        });
        state = r
            .wake
            .wait_timeout_while(state, REAP_EVERY, |s| !s.soon)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// `a2a log-relay`: joins its cgroup (writes itself into each `join` file), then copies stdin
/// to the log file open on stdout (`path`), rotating by renames at `limits`. Runs until
/// stdin's last writer is gone; a failed write drops those bytes (counted, and said in the
/// log once writing works again) and reading goes on, so the agent never blocks on a relay
/// that gave up, nor gets SIGPIPE. A cgroup it cannot join is said in the log too.
pub fn relay(path: &Path, limits: LogLimits, join: &[PathBuf]) -> std::io::Result<()> {
    let mut input = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let current = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let size = current.metadata().map_or(0, |m| m.len());
    let mut out = RotatingLog {
        path: path.to_path_buf(),
        limits,
        file: Some(current),
        size,
        dropped: 0,
        on_stdout: true,
        ends_line: true,
    };
    for procs in join {
        if let Err(e) = std::fs::write(procs, "0") {
            let note = format!("a2a log-relay: cannot join the cgroup of {}: {e}\n", procs.display());
            out.write(note.as_bytes());
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write(&buf[..n]);
    }
}

/// The live log file and its rotation.
struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    /// `None` after a failed rotation: opened again at the next write.
    file: Option<File>,
    size: u64,
    /// Bytes that could not be written since the last successful write.
    dropped: u64,
    /// Keep the live file on standard output too (the relay process).
    on_stdout: bool,
    /// The live file is empty or ends with a line end.
    ends_line: bool,
}

impl RotatingLog {
    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.file.is_none() && !self.reopen() {
                self.dropped += data.len() as u64;
                return;
            }
            if self.dropped > 0 {
                let note = format!(
                    "a2a log-relay: {} bytes of output were lost (the log could not be written)\n",
                    self.dropped
                );
                self.dropped = 0;
                self.put(note.as_bytes());
            }
            match placement(data, self.size, self.limits.max_bytes, self.ends_line) {
                Placement::Fits => {
                    self.put(data);
                    return;
                }
                Placement::ThenRotate(cut) => {
                    self.put(&data[..cut]);
                    data = &data[cut..];
                    self.rotate();
                }
            }
        }
    }

    fn put(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            self.dropped += data.len() as u64;
            return;
        };
        match file.write_all(data) {
            Ok(()) => {
                self.size += data.len() as u64;
                self.ends_line = data.last() == Some(&b'\n');
            }
            Err(_) => {
                self.dropped += data.len() as u64;
                // The size is unknown after a short write: read it again.
                self.size = file.metadata().map_or(self.size, |m| m.len());
            }
        }
    }

    /// Carries out the [`rotation`] of the live file, then opens a new live file (0600).
    fn rotate(&mut self) {
        let plan = rotation(&self.path, self.limits.max_files);
        for (from, to) in &plan.shift {
            let _ = std::fs::rename(from, to);
        }
        let (live, first) = &plan.live;
        if std::fs::rename(live, first).is_err() {
            // The directory is gone (the agent was deleted) or not writable: start the file
            // over rather than grow it past its cap.
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
            self.size = 0;
            self.ends_line = true;
            return;
        }
        self.file = None;
        self.reopen();
    }

    fn reopen(&mut self) -> bool {
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.path);
        match opened {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.ends_line = true;
                // Standard output follows the live file, so `/proc/PID/fd/1` names it.
                if self.on_stdout {
                    let _ = rustix::stdio::dup2_stdout(&f);
                }
                self.file = Some(f);
                true
            }
            Err(_) => false,
        }
    }
}

/// Where the next write to the live file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// All of it fits under the cap.
    Fits,
    /// The first `n` bytes (maybe none) go in the live file, which is then rotated.
    ThenRotate(usize),
}

/// Where `data` goes, for a live file of `size` bytes that `ends_line` (empty, or its last
/// byte a line end) under a cap of `max_bytes`: up to the last line end that fits, then a new
/// file. With no line end in the room left, a file that ends with a whole line is rotated
/// first; one that ends inside a line (a line longer than a file, or the pipe's chunks cut
/// lines) gets what fits, and the line goes on in the next file.
fn placement(data: &[u8], size: u64, max_bytes: u64, ends_line: bool) -> Placement {
    let room = usize::try_from(max_bytes.saturating_sub(size)).unwrap_or(usize::MAX);
    if data.len() <= room {
        return Placement::Fits;
    }
    Placement::ThenRotate(match data[..room].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if size > 0 && ends_line => 0,
        None => room,
    })
}

/// The renames of one rotation of the live log `path` kept as `max_files` files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// `.N-2` → `.N-1`, …, `.1` → `.2`, in this order (each rename frees the next one's
    /// target); a failed one only loses that older file.
    pub shift: Vec<(PathBuf, PathBuf)>,
    /// The live file → `.1`. When it fails (the directory is gone or not writable), the live
    /// file is emptied instead, so that it never grows past its cap.
    pub live: (PathBuf, PathBuf),
    /// The oldest file, `.N-1`, which the first rename replaces: its lines are gone. Nothing
    /// is deleted otherwise, and nothing is copied.
    pub drops: PathBuf,
}

/// The plan of one rotation, which the relay carries out (renames only).
pub fn rotation(path: &Path, max_files: u32) -> Rotation {
    let last = max_files.max(2) - 1;
    Rotation {
        shift: (1..last).rev().map(|n| (rotated(path, n), rotated(path, n + 1))).collect(),
        live: (path.to_path_buf(), rotated(path, 1)),
        drops: rotated(path, last),
    }
}

/// Removes an agent's log directory (every replica's files), and the namespace directory
/// when it is left empty.
pub fn remove_agent_logs(home: &Path, namespace: &str, agent: &str) -> std::io::Result<()> {
    let logs = AgentLogs::new(home, namespace, agent);
    let dir = logs.dir();
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // A relay still draining may create a file while the directory empties: once more.
        Err(_) => std::fs::remove_dir_all(dir)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })?,
    }
    if let Some(ns) = dir.parent() {
        let _ = std::fs::remove_dir(ns);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path, limits: LogLimits) -> RotatingLog {
        let path = dir.join("0.log");
        let file = open_log(&path).unwrap();
        RotatingLog { path, limits, file: Some(file), size: 0, dropped: 0, on_stdout: false, ends_line: true }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn an_agents_logs_are_laid_out_by_namespace_agent_and_replica() {
        let home = tempfile::tempdir().unwrap();
        let logs = AgentLogs::new(home.path(), "default", "writer");
        assert_eq!(logs.live(1), home.path().join("logs/default/writer/1.log"));
        assert_eq!(rotated(&logs.live(1), 2), home.path().join("logs/default/writer/1.log.2"));
        assert!(logs.replicas().is_empty(), "no directory yet");
        for p in [logs.live(2), logs.live(0), rotated(&logs.live(3), 1)] {
            open_log(&p).unwrap();
        }
        assert_eq!(logs.replicas(), [0, 2], "live files only, in order");
        remove_agent_logs(home.path(), "default", "writer").unwrap();
        assert!(!logs.dir().exists() && !home.path().join("logs/default").exists());
    }

    #[test]
    fn a_write_past_the_cap_renames_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_in(dir.path(), LogLimits { max_bytes: 10, max_files: 3 });
        let live = dir.path().join("0.log");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        log.write(b"aaaa\nbbbb\n");
        let first = ino(&live);
        log.write(b"cc\n");
        // The full file was renamed, not copied: `.1` is the same inode.
        assert_eq!(ino(&rotated(&live, 1)), first);
        assert_eq!(read(&rotated(&live, 1)), "aaaa\nbbbb\n");
        assert_eq!(read(&live), "cc\n");
        // Split after the last whole line that fits.
        log.write(b"dddd\neeeeee\n");
        assert_eq!(read(&live), "eeeeee\n");
        assert_eq!(read(&rotated(&live, 1)), "cc\ndddd\n");
        assert_eq!(read(&rotated(&live, 2)), "aaaa\nbbbb\n");
        // More than max_files: the oldest goes; never a `.3`.
        log.write(b"ffffffffffffffffffffffff");
        assert!(!rotated(&live, 3).exists());
        for p in [live.clone(), rotated(&live, 1), rotated(&live, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 10, "{} over its cap", p.display());
        }
        // A line longer than a file is cut at the cap.
        assert_eq!(read(&rotated(&live, 1)), "ffffffffff");
        assert_eq!(read(&live), "ffff");
        // A line cut by the pipe's chunks at the cap goes on in the next file.
        log.write(b"gg\nhh");
        log.write(b"hh\n");
        assert_eq!(read(&rotated(&live, 1)), "ffffgg\nhhh");
        assert_eq!(read(&live), "h\n");
    }

    #[test]
    fn a_write_fills_the_file_up_to_a_whole_line_then_rotates() {
        type Row = (&'static str, &'static [u8], u64, u64, bool, Placement);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("it fits", b"abc\n", 0, 10, true, Placement::Fits),
            ("it fits exactly", b"abc\n", 6, 10, true, Placement::Fits),
            ("cut after the last line end that fits", b"dddd\neeeeee\n", 3, 10, true, Placement::ThenRotate(5)),
            ("no line end fits: a whole-line file rotates first", b"abcdefgh\n", 5, 10, true, Placement::ThenRotate(0)),
            ("no line end fits in an empty file: cut at the cap", b"ffffffffffffff", 0, 10, true, Placement::ThenRotate(10)),
            ("a file ending inside a line gets what fits", b"hhhhhh", 6, 10, false, Placement::ThenRotate(4)),
            ("a full file rotates before anything", b"x", 10, 10, true, Placement::ThenRotate(0)),
            ("a file over its cap (the cap was lowered) rotates", b"x\n", 50, 10, false, Placement::ThenRotate(0)),
        ];
        for (what, data, size, cap, ends_line, want) in table {
            assert_eq!(placement(data, size, cap, ends_line), want, "{what}");
        }
    }

    #[test]
    fn a_rotation_shifts_the_older_files_up_and_drops_the_oldest() {
        let live = Path::new("/logs/0.log");
        let f = |n: u32| rotated(live, n);
        let plan = rotation(live, 4);
        assert_eq!(plan.shift, vec![(f(2), f(3)), (f(1), f(2))]);
        assert_eq!(plan.live, (live.to_path_buf(), f(1)));
        assert_eq!(plan.drops, f(3));
        // Two files: the live one and `.1`, which the live one replaces.
        let plan = rotation(live, 2);
        assert!(plan.shift.is_empty());
        assert_eq!((plan.live, plan.drops), ((live.to_path_buf(), f(1)), f(1)));
    }

    #[test]
    fn log_files_are_0600_in_0700_directories() {
        let home = tempfile::tempdir().unwrap();
        let logs = home.path().join("logs");
        // A directory left by an older version with the old mode.
        DirBuilder::new().recursive(true).mode(0o755).create(logs.join("default")).unwrap();
        let path = logs.join("default/writer/0.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_log(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        for d in [logs.clone(), logs.join("default"), logs.join("default/writer")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        let mut log = log_in(path.parent().unwrap(), LogLimits { max_bytes: 4, max_files: 2 });
        log.write(b"x\ny\nz\n");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn limits_outside_their_range_are_refused_with_the_reason() {
        assert!(LogLimits::new(16 << 20, 3).is_ok());
        let e = LogLimits::new(100, 3).unwrap_err().to_string();
        assert!(e.contains("100 bytes") && e.contains("4096"), "{e}");
        let e = LogLimits::new(1 << 20, 1).unwrap_err().to_string();
        assert!(e.contains("2 to 100"), "{e}");
    }
}
