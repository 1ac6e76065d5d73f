//! Agent processes: started directly into their cgroup, in their own session (they outlive
//! the daemon), watched through a pidfd (so a restarted daemon can watch processes it adopts),
//! stopped gracefully, and their ends classified (`Exited`, `Signaled`, `OOMKilled`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};

use super::cgroup::{self, CgroupDriver, CgroupPath};
use super::logs::{self, RelaySpec};
use super::sandbox::Confinement;
use super::sys::{self, Credentials, SpawnRequest};
use crate::api::Time;
use crate::api::agent::{Termination, TerminationReason};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error(transparent)]
    Relay(#[from] logs::Error),
    #[error("cannot open {path} to join the cgroup: {source}")]
    Join {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("pid {pid}: {what}: {source}")]
    Process {
        pid: u32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid} is not in cgroup {cgroup}")]
    NotInCgroup { pid: u32, cgroup: String },
    #[error("pid {pid} started at tick {found}, not {recorded} as recorded: the pid was reused by another process")]
    Recycled { pid: u32, recorded: u64, found: u64 },
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Log { .. } => "log",
            Error::Cgroup(e) => e.metric_label(),
            Error::Relay(e) => e.metric_label(),
            Error::Join { .. } => "join",
            Error::Spawn { .. } => "spawn",
            Error::User { .. } => "user",
            Error::Process { .. } => "process",
            Error::NotInCgroup { .. } => "not_in_cgroup",
            Error::Recycled { .. } => "recycled",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The PATH an agent gets when it does not inherit the daemon's environment.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to run one agent process. Printed with the environment's names only: its values may
/// come from Secrets.
#[derive(Clone)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the base environment (see `inherit_env`).
    pub env: Vec<(String, String)>,
    /// Start from the daemon's environment; otherwise from `PATH=`[`DEFAULT_PATH`] only.
    pub inherit_env: bool,
    pub working_dir: Option<PathBuf>,
    pub user: Option<RunAs>,
    /// stdout and stderr are appended here (parent directories are created, 0700; the
    /// file is 0600).
    pub log_file: PathBuf,
    /// Write `log_file` through a log relay, capped and rotated (what the node does);
    /// `None` appends directly, unbounded (for short-lived processes and tests).
    pub log_relay: Option<RelaySpec>,
    /// The agent's view of the system (mount namespace, capabilities); `None` runs it with
    /// the daemon's.
    pub confinement: Option<Confinement>,
    /// Execute this file instead of looking `program` up: the daemon's own binary, held open
    /// (`program` is then only `argv[0]`).
    pub exec_fd: Option<std::sync::Arc<OwnedFd>>,
}

impl std::fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("working_dir", &self.working_dir)
            .field("user", &self.user)
            .field("log_file", &self.log_file)
            .field("log_relay", &self.log_relay)
            .field("confinement", &self.confinement)
            .field("exec_fd", &self.exec_fd)
            .finish()
    }
}

impl ProcessSpec {
    pub fn new(program: impl Into<String>, log_file: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: false,
            working_dir: None,
            user: None,
            log_file: log_file.into(),
            log_relay: None,
            confinement: None,
            exec_fd: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// The credentials an agent runs with (`user:` in the Agent spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty: none of the daemon's are kept).
    pub groups: Vec<u32>,
}

impl RunAs {
    /// Resolves `name`, `uid` or `uid:gid` against `/etc/passwd` and `/etc/group`.
    pub fn resolve(user: &str) -> Result<Self> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        RunAs::resolve_in(user, &read("/etc/passwd"), &read("/etc/group"))
    }

    /// [`RunAs::resolve`] over the given passwd and group file contents.
    pub fn resolve_in(user: &str, passwd: &str, group: &str) -> Result<Self> {
        let err = |reason: String| Error::User { user: user.to_owned(), reason };
        let (who, explicit_gid) = match user.split_once(':') {
            Some((u, g)) => {
                let gid = g.parse::<u32>().map_err(|_| err(format!("group {g:?} is not a numeric gid")))?;
                (u, Some(gid))
            }
            None => (user, None),
        };
        let entry = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid = f.get(2)?.parse::<u32>().ok()?;
            let gid = f.get(3)?.parse::<u32>().ok()?;
            (f.first() == Some(&who) || f.get(2) == Some(&who)).then(|| (f[0].to_owned(), uid, gid))
        });
        let (name, uid, gid) = match (entry, who.parse::<u32>()) {
            (Some(e), _) => e,
            // A numeric uid without a passwd entry runs with its own number as group.
            (None, Ok(uid)) => (String::new(), uid, uid),
            (None, Err(_)) => return Err(err("no such user in /etc/passwd".into())),
        };
        let gid = explicit_gid.unwrap_or(gid);
        let mut groups: Vec<u32> = if name.is_empty() {
            Vec::new()
        } else {
            group
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    let members = f.get(3)?;
                    members.split(',').any(|m| m == name).then(|| f.get(2)?.parse::<u32>().ok()).flatten()
                })
                .collect()
        };
        groups.retain(|g| *g != gid);
        groups.insert(0, gid);
        Ok(RunAs { uid, gid, groups })
    }
}

/// How a process ended, as far as it can be known. Both fields are `None` for an adopted
/// (non-child) process: only its parent can read its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Classifies an end: `OOMKilled` when the kernel's OOM killer killed a process of the cgroup
/// meanwhile (its `oom_kill` counter rose) and the process died of SIGKILL (or its status is
/// unknown), `Signaled` for other signals, `Exited` otherwise.
pub fn classify(exit: &ExitInfo, oom_kills_before: u64, oom_kills_after: u64, at: Time) -> Termination {
    let oom = oom_kills_after > oom_kills_before;
    let killed = exit.signal == Some(libc::SIGKILL);
    let unknown = exit.signal.is_none() && exit.code.is_none();
    let reason = if oom && (killed || unknown) {
        TerminationReason::OomKilled
    } else if exit.signal.is_some() {
        TerminationReason::Signaled
    } else {
        TerminationReason::Exited
    };
    Termination { reason, exit_code: exit.code, signal: exit.signal, at }
}

/// A running agent process: a child of this daemon or one adopted after a restart.
#[derive(Debug)]
pub struct AgentProcess {
    pid: u32,
    /// Kernel start time (clock ticks since boot, `/proc/PID/stat` field 22): with the pid,
    /// it names this process and no later one that reuses the pid.
    start_time: u64,
    pidfd: OwnedFd,
    /// Started by this daemon: its exit status can be read (an adopted one's cannot).
    own: bool,
    pipes: Option<Pipes>,
    exit: Option<ExitInfo>,
}

/// Starts `spec` inside `cgroup`: the child joins every hierarchy's `cgroup.procs` before it
/// executes, gets its own session, `no_new_privs`, the requested credentials, no inherited
/// descriptors beyond stdio, stdin from /dev/null and stdout/stderr appended to the log file
/// (through a log relay's pipe when `spec.log_relay` says so; see [`logs`]).
pub fn spawn(driver: &dyn CgroupDriver, cgroup: &CgroupPath, spec: &ProcessSpec) -> Result<AgentProcess> {
    let log_err = |source| Error::Log { path: spec.log_file.clone(), source };
    let log = match &spec.log_relay {
        Some(relay) => logs::start_relay(driver, relay, &spec.log_file)?,
        None => sys::above_stdio(OwnedFd::from(open_log(&spec.log_file)?)).map_err(log_err)?,
    };
    let log2 = log.try_clone().and_then(sys::above_stdio).map_err(log_err)?;
    let null = sys::dev_null().map_err(|source| spawn_error(spec, source))?;
    spawn_with(driver, cgroup, spec, [null, log, log2], None)
}

/// Like [`spawn`], but with stdin, stdout and stderr as pipes (for `stdio` agents, one run
/// per task); take them with [`AgentProcess::take_pipes`]. `spec.log_file` is not used.
pub fn spawn_piped(driver: &dyn CgroupDriver, cgroup: &CgroupPath, spec: &ProcessSpec) -> Result<AgentProcess> {
    let err = |source| spawn_error(spec, source);
    let (in_r, in_w) = sys::pipe().map_err(err)?;
    let (out_r, out_w) = sys::pipe().map_err(err)?;
    let (err_r, err_w) = sys::pipe().map_err(err)?;
    let ours = Pipes { stdin: File::from(in_w), stdout: File::from(out_r), stderr: File::from(err_r) };
    // The child's ends are closed here when `spawn_with` returns, so the reads see EOF when
    // the child exits.
    spawn_with(driver, cgroup, spec, [in_r, out_w, err_w], Some(ours))
}

fn spawn_error(spec: &ProcessSpec, source: std::io::Error) -> Error {
    Error::Spawn { program: spec.program.clone(), source }
}

fn spawn_with(
    driver: &dyn CgroupDriver,
    cgroup: &CgroupPath,
    spec: &ProcessSpec,
    stdio: [OwnedFd; 3],
    pipes: Option<Pipes>,
) -> Result<AgentProcess> {
    let join = driver
        .procs_files(cgroup)?
        .into_iter()
        .map(|path| {
            OpenOptions::new().write(true).open(&path).map(OwnedFd::from).map_err(|source| Error::Join { path, source })
        })
        .collect::<Result<Vec<_>>>()?;
    let env = environment(spec);
    let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let invalid = |what: &str| {
        spawn_error(spec, std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
    };
    let cstring = |s: &str, what: &str| CString::new(s).map_err(|_| invalid(what));
    let candidates = program_candidates(&spec.program, path_var, spec.working_dir.as_deref())
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(|_| invalid("the program path")))
        .collect::<Result<Vec<_>>>()?;
    let argv = std::iter::once(spec.program.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .map(|a| cstring(a, "an argument"))
        .collect::<Result<Vec<_>>>()?;
    let envp =
        env.iter().map(|(k, v)| cstring(&format!("{k}={v}"), "an environment variable")).collect::<Result<Vec<_>>>()?;
    let dir = match &spec.working_dir {
        Some(d) => Some(CString::new(d.as_os_str().as_bytes()).map_err(|_| invalid("the working directory"))?),
        None => None,
    };
    let user = spec.user.as_ref().map(|u| Credentials { uid: u.uid, gid: u.gid, groups: u.groups.clone() });
    let mounts = match &spec.confinement {
        Some(c) => c.mount_ops().map_err(invalid)?,
        None => Vec::new(),
    };
    let request = SpawnRequest {
        candidates,
        argv,
        envp,
        dir,
        join,
        user,
        mounts,
        drop_capabilities: spec.confinement.is_some(),
        exec_fd: spec.exec_fd.as_ref().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&**fd)),
        stdio,
    };
    let child = sys::spawn(&request).map_err(|source| spawn_error(spec, source))?;
    drop(request);
    // The child cannot be reaped before we wait for it, so its /proc entry is still there.
    let start_time = start_time(child.pid)?;
    Ok(AgentProcess { pid: child.pid, start_time, pidfd: child.pidfd, own: true, pipes, exit: None })
}

/// The environment a process starts with: the daemon's (or only `PATH`), then the spec's
/// variables, a later one replacing an earlier one of the same name.
fn environment(spec: &ProcessSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = if spec.inherit_env {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    } else {
        vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())]
    };
    for (k, v) in &spec.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The paths `execve` tries for `program`, as `execvp` searches: the name itself when it
/// holds a `/`, else each directory of the child's `PATH` (an empty entry is the working
/// directory; relative ones are taken from it, as the child resolves them after `chdir`).
fn program_candidates(program: &str, path: Option<&str>, dir: Option<&Path>) -> Vec<PathBuf> {
    if program.contains('/') {
        return vec![PathBuf::from(program)];
    }
    if program.is_empty() {
        return Vec::new();
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|d| {
            let d = if d.is_empty() { "." } else { d };
            match dir {
                Some(base) if !d.starts_with('/') => base.join(d).join(program),
                _ => Path::new(d).join(program),
            }
        })
        .collect()
}

/// The parent's ends of a `stdio` process's pipes.
#[derive(Debug)]
pub struct Pipes {
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

/// The kernel start time of `pid` (clock ticks since boot), from `/proc/PID/stat`.
pub fn start_time(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|source| Error::Process { pid, what: "read /proc/PID/stat", source })?;
    parse_start_time(&stat).ok_or_else(|| Error::Process {
        pid,
        what: "parse /proc/PID/stat",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, stat.chars().take(200).collect::<String>()),
    })
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and `)`, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    Ok(logs::open_log(path)?)
}

fn to_pid(pid: u32) -> Result<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| Error::Process {
        pid,
        what: "not a valid pid",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn open_pidfd(pid: u32) -> Result<OwnedFd> {
    rustix::process::pidfd_open(to_pid(pid)?, PidfdFlags::empty()).map_err(|e| Error::Process {
        pid,
        what: "pidfd_open",
        source: e.into(),
    })
}

impl AgentProcess {
    /// Watches a process this daemon did not start (one found in `cgroup` after a restart).
    /// Checked *after* the pidfd is open (so they are checks of the process the pidfd holds):
    /// the pid is in the cgroup, and, when `recorded_start` is known, it started at that
    /// kernel tick — a pid the kernel gave to another process meanwhile (even one forked
    /// inside the same cgroup) is refused with [`Error::Recycled`].
    pub fn adopt(
        driver: &dyn CgroupDriver,
        cgroup: &CgroupPath,
        pid: u32,
        recorded_start: Option<u64>,
    ) -> Result<Self> {
        let pidfd = open_pidfd(pid)?;
        let found = start_time(pid)?;
        if let Some(recorded) = recorded_start
            && recorded != found
        {
            return Err(Error::Recycled { pid, recorded, found });
        }
        if !driver.pids(cgroup)?.contains(&pid) {
            return Err(Error::NotInCgroup { pid, cgroup: cgroup.to_string() });
        }
        Ok(AgentProcess { pid, start_time: found, pidfd, own: false, pipes: None, exit: None })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The kernel start time of the process (clock ticks since boot): recorded in
    /// `status.instances[].pidStartTime` and checked on re-adoption.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// A second descriptor for the process's pidfd: it becomes readable when the process
    /// ends, so an async runtime can wait for many processes without a thread each.
    pub fn pidfd(&self) -> Result<OwnedFd> {
        self.pidfd.try_clone().map_err(|source| Error::Process { pid: self.pid, what: "dup pidfd", source })
    }

    /// The pipes of a process started with [`spawn_piped`] (once).
    pub fn take_pipes(&mut self) -> Option<Pipes> {
        self.pipes.take()
    }

    /// Whether this daemon started it (and so can read its exit status).
    pub fn is_child(&self) -> bool {
        self.own
    }

    /// Waits up to `timeout` (forever when `None`) for the process to end.
    pub fn wait_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<ExitInfo>> {
        if let Some(e) = self.exit {
            return Ok(Some(e));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|l| Timespec { tv_sec: l.as_secs() as i64, tv_nsec: i64::from(l.subsec_nanos()) });
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::Process { pid: self.pid, what: "poll pidfd", source: e.into() });
                }
            }
        }
        let info = if self.own {
            let status = loop {
                match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED) {
                    Err(rustix::io::Errno::INTR) => continue,
                    other => break other,
                }
            };
            match status {
                Ok(Some(s)) => ExitInfo { code: s.exit_status(), signal: s.terminating_signal() },
                Ok(None) => ExitInfo { code: None, signal: None },
                Err(e) => return Err(Error::Process { pid: self.pid, what: "wait", source: e.into() }),
            }
        } else {
            ExitInfo { code: None, signal: None }
        };
        self.exit = Some(info);
        logs::reap_soon();
        Ok(Some(info))
    }

    /// Sends `signal` to the process's group (it leads its own session and group).
    pub fn signal_group(&self, signal: Signal) -> Result<()> {
        match rustix::process::kill_process_group(to_pid(self.pid)?, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Process { pid: self.pid, what: "signal process group", source: e.into() }),
        }
    }

    /// Graceful stop: SIGTERM to the group, SIGKILL to the group after `grace` if the
    /// process has not ended. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitInfo> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        self.signal_group(Signal::TERM)?;
        let ended = self.wait_timeout(Some(grace))?;
        // Also reaches group members that ignored SIGTERM after the leader left.
        self.signal_group(Signal::KILL)?;
        match ended {
            Some(e) => Ok(e),
            None => self.wait_timeout(None)?.ok_or_else(|| Error::Process {
                pid: self.pid,
                what: "wait after SIGKILL",
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_spec_prints_its_environment_s_names_not_its_values() {
        let spec = ProcessSpec::new("agent", "/l").env("OPENAI_API_KEY", "sk-never-shown");
        let shown = format!("{spec:?}");
        assert!(shown.contains("OPENAI_API_KEY") && !shown.contains("sk-never-shown"), "{shown}");
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nagent:x:1001:1001::/home/agent:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nagent:x:1001:\ndocker:x:998:agent,bob\nwheel:x:10:bob\n";

    #[test]
    fn users_resolve_by_name_uid_and_uid_gid() {
        let a = RunAs::resolve_in("agent", PASSWD, GROUP).unwrap();
        assert_eq!(a, RunAs { uid: 1001, gid: 1001, groups: vec![1001, 998] });
        assert_eq!(RunAs::resolve_in("1001", PASSWD, GROUP).unwrap(), a);
        let n = RunAs::resolve_in("4242:100", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid, n.groups), (4242, 100, vec![100]));
        let e = RunAs::resolve_in("ghost", PASSWD, GROUP).unwrap_err().to_string();
        assert!(e.contains("ghost") && e.contains("no such user"), "{e}");
        let e = RunAs::resolve_in("agent:staff", PASSWD, GROUP).unwrap_err().to_string();
        assert!(e.contains("numeric gid"), "{e}");
    }

    #[test]
    fn start_time_is_field_22_even_when_the_command_name_holds_spaces_and_parens() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time("4242 (x) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
        // This test's own process: a number, and the same on every read.
        let me = std::process::id();
        assert_eq!(start_time(me).unwrap(), start_time(me).unwrap());
        assert_eq!(start_time(u32::MAX).unwrap_err().metric_label(), "process");
    }

    #[test]
    fn terminations_are_classified_by_the_oom_counter_and_signal() {
        let at = Time::now();
        let killed = ExitInfo { code: None, signal: Some(libc::SIGKILL) };
        assert_eq!(classify(&killed, 0, 1, at).reason, TerminationReason::OomKilled);
        assert_eq!(classify(&killed, 1, 1, at).reason, TerminationReason::Signaled);
        let term = ExitInfo { code: None, signal: Some(libc::SIGTERM) };
        assert_eq!(classify(&term, 0, 1, at).reason, TerminationReason::Signaled);
        let exited = ExitInfo { code: Some(3), signal: None };
        let t = classify(&exited, 0, 0, at);
        assert_eq!((t.reason, t.exit_code), (TerminationReason::Exited, Some(3)));
        let adopted = ExitInfo { code: None, signal: None };
        assert_eq!(classify(&adopted, 2, 3, at).reason, TerminationReason::OomKilled);
        assert_eq!(classify(&adopted, 3, 3, at).reason, TerminationReason::Exited);
    }
}
