//! Agent logs: a relay per replica that owns the log files and bounds them at write time.
//!
//! An agent's stdout and stderr are the write end of a pipe. The read end belongs to a small
//! relay — the `a2a-log-relay` binary installed beside `a2a` (its code is [`mod@relay`], which
//! needs nothing else of a2a), or the a2a binary itself as the hidden `a2a log-relay` when
//! that is missing ([`RelayProgram`]) — in a session of its own and in a cgroup of its own
//! ([`RELAY_CGROUP`] under the node's top), outside the agent's budget and outside the
//! daemon's cgroup. The relay appends what it reads to `<replica>.log` and, before a write
//! would take that file past its cap, renames `<replica>.log.N-1` → `.N`, …, `<replica>.log`
//! → `.1` and opens a new `<replica>.log`: nothing is copied, so a replica never needs more
//! than `max_files × max_bytes` of disk.
//! Where a write is cut and which files a rotation renames are plain functions
//! ([`rotation`]); the relay carries them out.
//!
//! The relay is independent of the daemon, as containerd's shim and conmon are: it outlives
//! a daemon that is killed or stopped (agents never get SIGPIPE, and never block on a full
//! pipe nobody reads), a restarted daemon has nothing to re-adopt, and the relay ends by
//! itself when the last process holding the pipe's write end (the agent and whatever it
//! forked) is gone. The relay, not the agent, opens the files, so agents running as other
//! users cannot read or replace them: files are 0600 and directories 0700.

use std::ffi::CString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::fd::OwnedFd;
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

pub mod relay;

pub use relay::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, LogLimits, MAX_MAX_FILES, MIN_MAX_BYTES, Rotation, relay, rotated, rotation,
};

impl LogLimits {
    /// Checked limits: a cap of at least [`MIN_MAX_BYTES`], 2 to [`MAX_MAX_FILES`] files (a
    /// single file could only be truncated, which loses the lines just written).
    pub fn new(max_bytes: u64, max_files: u32) -> Result<Self> {
        relay::checked_limits(max_bytes, max_files).map_err(Error::Limits)
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
    #[error("cannot use {} as the log relay: {source}", path.display())]
    Program {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
            Error::Program { .. } => "log_relay_program",
            Error::Spawn { .. } => "log_relay_spawn",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a replica's stdout and stderr reach its log files through a relay.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    /// The program run as the relay.
    pub program: RelayProgram,
    pub limits: LogLimits,
    /// The cgroup the relay joins ([`relay_cgroup`]); `None` leaves it in the daemon's.
    pub cgroup: Option<CgroupPath>,
}

/// The file name of the small relay binary, installed beside `a2a` (`cargo install` installs
/// both).
pub const RELAY_BINARY: &str = "a2a-log-relay";

/// The program a node runs as each replica's log relay, chosen once when the node starts
/// ([`RelayProgram::find`]): the small `a2a-log-relay` (its start costs about a third of the
/// CPU the a2a binary's does, above an empty program's), or the a2a binary itself as
/// `a2a log-relay`.
#[derive(Clone, Debug)]
pub struct RelayProgram {
    /// The file, as `ps`, `/proc/PID/exe` and errors name it.
    path: PathBuf,
    /// The file held open (`O_PATH`) since it was chosen, executed through the descriptor:
    /// an upgrade that replaces it on disk while the daemon runs does not change what the
    /// daemon starts (the relay speaks the daemon's own arguments), as `/proc/self/exe`
    /// does for the a2a binary.
    fd: Option<std::sync::Arc<OwnedFd>>,
    /// The a2a binary, run with the hidden `log-relay` verb.
    a2a_verb: bool,
}

impl RelayProgram {
    /// The a2a binary `exe` (`/proc/self/exe`: the daemon's own), run as `a2a log-relay`.
    pub fn a2a(exe: &Path) -> RelayProgram {
        RelayProgram { path: exe.to_path_buf(), fd: None, a2a_verb: true }
    }

    /// The small relay binary at `path`, opened now; an error when it is not an executable
    /// regular file.
    pub fn small(path: &Path) -> Result<RelayProgram> {
        let err = |source| Error::Program { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(err)?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "not an executable file")));
        }
        let fd =
            rustix::fs::open(path, rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
                .map_err(|e| err(e.into()))?;
        Ok(RelayProgram { path: path.to_path_buf(), fd: Some(std::sync::Arc::new(fd)), a2a_verb: false })
    }

    /// The relay of a node whose agents' `a2a` is the binary `a2a_exe` (`None`: this
    /// process, which is a2a): `explicit` when given (`a2a serve --log-relay`; an error when
    /// it cannot be used, nothing else is tried), else [`RELAY_BINARY`] beside the a2a
    /// binary, else the a2a binary itself as `a2a log-relay`, said once in a warning: agents
    /// start as before, each relay's start costing more.
    pub fn find(a2a_exe: Option<&Path>, explicit: Option<&Path>) -> Result<RelayProgram> {
        if let Some(path) = explicit {
            return RelayProgram::small(path);
        }
        let (beside, fallback) = match a2a_exe {
            Some(exe) => (exe.with_file_name(RELAY_BINARY), exe.to_path_buf()),
            // `/proc/self/exe`: the daemon's own binary, even once an upgrade removed it.
            None => match std::env::current_exe() {
                Ok(me) => (me.with_file_name(RELAY_BINARY), PathBuf::from("/proc/self/exe")),
                Err(_) => return Ok(RelayProgram::a2a(Path::new("/proc/self/exe"))),
            },
        };
        match RelayProgram::small(&beside) {
            Ok(small) => Ok(small),
            Err(e) => {
                tracing::warn!(
                    "{e}; each agent's log relay runs the a2a binary itself (`a2a log-relay`), a costlier \
                     start: install {RELAY_BINARY} beside a2a (`cargo install` installs both) or pass \
                     `--log-relay PATH`"
                );
                Ok(RelayProgram::a2a(&fallback))
            }
        }
    }

    /// The file run as the relay.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is the a2a binary (`a2a log-relay`) rather than [`RELAY_BINARY`].
    pub fn is_a2a(&self) -> bool {
        self.a2a_verb
    }
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
    let program = &spec.program;
    let spawn_err = |source| Error::Spawn { exe: program.path.clone(), source };
    let invalid = || spawn_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path holds a NUL byte"));
    let join_args = join
        .iter()
        .map(|p| Ok([c"--join".to_owned(), CString::new(p.as_os_str().as_bytes())?]))
        .collect::<Result<Vec<_>, std::ffi::NulError>>()
        .map_err(|_| invalid())?;
    let exe = CString::new(program.path.as_os_str().as_bytes()).map_err(|_| invalid())?;
    // As the program is named on the command line (`ps` shows `a2a-log-relay …`, or
    // `a2a log-relay …`), whatever path executes it.
    let mut argv = if program.a2a_verb {
        vec![c"a2a".to_owned(), c"log-relay".to_owned()]
    } else {
        vec![CString::new(RELAY_BINARY).map_err(|_| invalid())?]
    };
    argv.extend([
        c"--max-bytes".to_owned(),
        CString::new(spec.limits.max_bytes.to_string()).map_err(|_| invalid())?,
        c"--max-files".to_owned(),
        CString::new(spec.limits.max_files.to_string()).map_err(|_| invalid())?,
    ]);
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
        exec_fd: program.fd.as_ref().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&**fd)),
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

    fn log_in(dir: &Path, limits: LogLimits) -> relay::RotatingLog {
        let path = dir.join("0.log");
        let file = open_log(&path).unwrap();
        relay::RotatingLog::new(&path, limits, file, false)
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
