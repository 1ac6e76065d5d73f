//! Cgroup driver: one trait ([`CgroupDriver`]) with a v1 (legacy/hybrid) and a v2 (unified)
//! backend, chosen by inspecting the filesystem under a root that is a parameter.
//!
//! Control files are written directly (not through a library) so that every I/O error names
//! the file and the data written, stale directories are detected, and both versions share one
//! code shape: a backend turns [`CgroupLimits`] into [`ControlWrite`]s (a pure function, see
//! [`limits`]) and applies them.

mod fs;
pub mod limits;
pub mod unenforced;
mod v1;
mod v2;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use limits::{CgroupLimits, ControlWrite, CpuQuota};
pub use v1::CgroupV1;
pub use v2::CgroupV2;

/// Where cgroup hierarchies are mounted unless told otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Errors of the cgroup driver. I/O errors carry the path and, for writes, the data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable cgroup hierarchy under {root}: {reason}")]
    Unsupported { root: PathBuf, reason: String },
    #[error("cannot write {data:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        data: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create cgroup directory {path}: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup directory {path}: {source}")]
    Rmdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {content:?}: {reason}")]
    Parse { path: PathBuf, content: String, reason: String },
    #[error("cgroup {path} already exists and is in use: {reason}")]
    InUse { path: PathBuf, reason: String },
    #[error("cgroup {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cannot signal pid {pid} of cgroup {path}: {source}")]
    Signal {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path} still holds processes {pids:?} after {waited:?}")]
    StillPopulated { path: PathBuf, pids: Vec<u32>, waited: Duration },
    #[error("cgroup {path} did not reach state {state} within {waited:?}")]
    Timeout { path: PathBuf, state: &'static str, waited: Duration },
}

impl Error {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Unsupported { .. } => "unsupported",
            Error::Write { .. } => "write",
            Error::Read { .. } => "read",
            Error::Mkdir { .. } => "mkdir",
            Error::Rmdir { .. } => "rmdir",
            Error::Parse { .. } => "parse",
            Error::InUse { .. } => "in_use",
            Error::NotFound { .. } => "not_found",
            Error::InvalidPath { .. } => "invalid_path",
            Error::Signal { .. } => "signal",
            Error::StillPopulated { .. } => "still_populated",
            Error::Timeout { .. } => "timeout",
        }
    }
}

impl Error {
    /// Whether the kernel refused for lack of privilege (not root, no delegation): the
    /// daemon then stops with a clear message or runs unenforced only when allowed to.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            Error::Write { source, .. }
            | Error::Read { source, .. }
            | Error::Mkdir { source, .. }
            | Error::Rmdir { source, .. }
            | Error::Signal { source, .. } => {
                source.kind() == std::io::ErrorKind::PermissionDenied || source.raw_os_error() == Some(libc::EPERM)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cgroup API version a driver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller.
    V1,
    /// Unified: one hierarchy, controllers enabled per subtree.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// A cgroup's path relative to the root (and, in v1, to each controller's hierarchy):
/// non-empty components without `/`, `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPath(Vec<String>);

impl CgroupPath {
    /// Parses `a2a/host/default.web.0`.
    pub fn parse(path: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPath { path: path.to_owned(), reason: reason.to_owned() };
        if path.starts_with('/') {
            return Err(invalid("must be relative to the cgroup root"));
        }
        let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
        for p in &parts {
            if p.is_empty() {
                return Err(invalid("has an empty component"));
            }
            if p == "." || p == ".." {
                return Err(invalid("has a `.` or `..` component"));
            }
            if p.contains('\0') || p.contains('\n') {
                return Err(invalid("has a NUL or newline character"));
            }
            // Names the kernel reserves for control files.
            if p.starts_with("cgroup.") {
                return Err(invalid("has a component starting with `cgroup.`"));
            }
        }
        Ok(CgroupPath(parts))
    }

    /// This path with one more component.
    pub fn child(&self, name: &str) -> Result<Self> {
        CgroupPath::parse(&format!("{self}/{name}"))
    }

    /// The enclosing cgroup, if any.
    pub fn parent(&self) -> Option<CgroupPath> {
        (self.0.len() > 1).then(|| CgroupPath(self.0[..self.0.len() - 1].to_vec()))
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or_default()
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// Every prefix of this path, shortest first, ending with the path itself.
    pub fn ancestors_and_self(&self) -> impl Iterator<Item = CgroupPath> + '_ {
        (1..=self.0.len()).map(|n| CgroupPath(self.0[..n].to_vec()))
    }

    /// The directory of this cgroup under `hierarchy`.
    pub fn under(&self, hierarchy: &Path) -> PathBuf {
        let mut p = hierarchy.to_path_buf();
        p.extend(&self.0);
        p
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// The a2a cgroup layout: `<top>/<budget>[/<child budget>]/<namespace>.<agent>.<replica>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    top: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { top: "a2a".into() }
    }
}

impl Layout {
    /// A layout under another top directory (tests use a unique one).
    pub fn with_top(top: &str) -> Result<Self> {
        let p = CgroupPath::parse(top)?;
        if p.components().len() != 1 {
            return Err(Error::InvalidPath {
                path: top.to_owned(),
                reason: "the layout's top must be one directory name".into(),
            });
        }
        Ok(Layout { top: top.to_owned() })
    }

    /// The top cgroup itself.
    pub fn top(&self) -> CgroupPath {
        CgroupPath(vec![self.top.clone()])
    }

    /// A budget's cgroup; `chain` lists budgets outermost first (`["host", "team-a"]`).
    pub fn budget(&self, chain: &[&str]) -> Result<CgroupPath> {
        let mut p = self.top();
        if chain.is_empty() {
            return Err(Error::InvalidPath {
                path: p.to_string(),
                reason: "a budget path needs at least one budget name".into(),
            });
        }
        for b in chain {
            check_name(b, "budget")?;
            p = p.child(b)?;
        }
        Ok(p)
    }

    /// One agent replica's cgroup, inside its budget.
    pub fn replica(&self, budget_chain: &[&str], namespace: &str, agent: &str, replica: u32) -> Result<CgroupPath> {
        check_name(namespace, "namespace")?;
        check_name(agent, "agent")?;
        self.budget(budget_chain)?.child(&format!("{namespace}.{agent}.{replica}"))
    }
}

/// Kubernetes names (DNS labels and subdomains) cannot hold `/`; a `.` in a namespace would
/// make `<namespace>.<agent>.<replica>` ambiguous, so it is refused there.
fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !(what == "namespace" && name.contains('.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidPath {
            path: name.to_owned(),
            reason: format!("not a valid {what} name (lowercase letters, digits, `-`, `.`)"),
        })
    }
}

/// What the kernel counted for one cgroup (and its descendants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Bytes charged now.
    pub memory_current: u64,
    /// The most bytes ever charged, when the kernel tracks it.
    pub memory_peak: Option<u64>,
    /// Processes the kernel's OOM killer killed in this cgroup.
    pub oom_kills: u64,
    /// CPU time used, microseconds.
    pub cpu_usage_usec: u64,
    /// Enforcement periods elapsed under a quota.
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: u64,
    /// Time spent throttled, microseconds.
    pub throttled_usec: u64,
    /// Processes and threads now.
    pub pids_current: u64,
}

/// What the node samples from every replica periodically: the few numbers it reports,
/// read from as few files as the version allows (v2: two, v1: three).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub memory_current: u64,
    pub cpu_usage_usec: u64,
    pub nr_throttled: u64,
    /// Time spent throttled, microseconds.
    pub throttled_usec: u64,
}

/// One interface for cgroup v1 and v2. Paths are relative to the driver's root.
pub trait CgroupDriver: Send + Sync + fmt::Debug {
    fn version(&self) -> CgroupVersion;

    /// Creates a fresh cgroup with `limits`, creating missing ancestors without limits.
    /// An existing directory with no processes and no children is removed and made anew (so
    /// counters start at zero); one in use is refused with [`Error::InUse`].
    fn create(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()>;

    /// Creates the cgroup if missing, otherwise applies `limits` in place (for budgets,
    /// whose children must survive).
    fn ensure(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()>;

    /// Applies `limits` to an existing cgroup; unset limits go back to unlimited.
    fn update(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()>;

    fn exists(&self, path: &CgroupPath) -> bool;

    /// The files a process writes `0` to so that it joins this cgroup (one per hierarchy).
    fn procs_files(&self, path: &CgroupPath) -> Result<Vec<PathBuf>>;

    /// Moves a running process (all its threads) into the cgroup.
    fn add_process(&self, path: &CgroupPath, pid: u32) -> Result<()>;

    /// The child cgroups of `path` (e.g. a budget's replicas, to re-adopt after a restart).
    fn children(&self, path: &CgroupPath) -> Result<Vec<CgroupPath>>;

    /// The processes in this cgroup and its descendants.
    fn pids(&self, path: &CgroupPath) -> Result<Vec<u32>>;

    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats>;

    /// The subset of [`CgroupDriver::stats`] sampled periodically (memory, cpu time,
    /// throttled periods), read cheaply: no existence checks, one read per file.
    fn usage(&self, path: &CgroupPath) -> Result<CgroupUsage> {
        let s = self.stats(path)?;
        Ok(CgroupUsage {
            memory_current: s.memory_current,
            cpu_usage_usec: s.cpu_usage_usec,
            nr_throttled: s.nr_throttled,
            throttled_usec: s.throttled_usec,
        })
    }

    /// Stops every process of the cgroup until [`CgroupDriver::thaw`].
    fn freeze(&self, path: &CgroupPath) -> Result<()>;

    fn thaw(&self, path: &CgroupPath) -> Result<()>;

    /// The cgroup2 directory whose `cpu.pressure`, `memory.pressure` and `io.pressure` (PSI)
    /// describe this cgroup: its own on v2, its twin in the unified hierarchy on a hybrid
    /// host. `None` when the kernel keeps no pressure for it (v1 only, or PSI disabled).
    fn pressure_dir(&self, _path: &CgroupPath) -> Option<PathBuf> {
        None
    }

    /// Sends SIGKILL to every process of the cgroup and its descendants (does not wait).
    fn kill_all(&self, path: &CgroupPath) -> Result<()>;

    /// Kills what remains, waits until the cgroup is empty (up to `timeout`) and removes it
    /// and its descendants. A missing cgroup is not an error.
    fn remove(&self, path: &CgroupPath, timeout: Duration) -> Result<()>;

    /// The one directory that stands for the cgroup (v2: its directory; v1: the memory
    /// hierarchy's), where a2a keeps the owner record and lock of its top (see
    /// [`crate::node::ownership`]). `None` without cgroups.
    fn record_dir(&self, _path: &CgroupPath) -> Option<PathBuf> {
        None
    }
}

/// Inspects `root` and returns the driver for what is mounted there: v2 when `root` is a
/// unified hierarchy with the memory, cpu and pids controllers, v1 when `root/<controller>`
/// hierarchies exist (legacy or hybrid), an [`Error::Unsupported`] naming what is missing
/// otherwise.
pub fn detect(root: &Path) -> Result<Box<dyn CgroupDriver>> {
    if root.join("cgroup.controllers").exists() {
        return Ok(Box::new(CgroupV2::open(root)?));
    }
    match CgroupV1::open(root) {
        Ok(v1) => Ok(Box::new(v1)),
        Err(Error::Unsupported { reason, .. }) => Err(Error::Unsupported {
            root: root.to_path_buf(),
            reason: format!("no cgroup2 mount (no cgroup.controllers) and {reason}"),
        }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_replicas_inside_nested_budgets() {
        let l = Layout::default();
        let p = l.replica(&["host", "team-a"], "default", "web", 2).unwrap();
        assert_eq!(p.to_string(), "a2a/host/team-a/default.web.2");
        assert_eq!(p.parent().unwrap().to_string(), "a2a/host/team-a");
        let all: Vec<String> = p.ancestors_and_self().map(|p| p.to_string()).collect();
        assert_eq!(all, ["a2a", "a2a/host", "a2a/host/team-a", "a2a/host/team-a/default.web.2"]);
        assert_eq!(
            p.under(Path::new("/sys/fs/cgroup/memory")),
            PathBuf::from("/sys/fs/cgroup/memory/a2a/host/team-a/default.web.2")
        );
    }

    #[test]
    fn bad_paths_and_names_are_refused_with_the_reason() {
        for (p, why) in
            [("/abs", "relative"), ("a//b", "empty component"), ("a/../b", "`..`"), ("a/cgroup.procs", "cgroup.")]
        {
            let e = CgroupPath::parse(p).unwrap_err().to_string();
            assert!(e.contains(why), "{p}: {e}");
        }
        let l = Layout::default();
        let e = l.replica(&["host"], "my.ns", "web", 0).unwrap_err().to_string();
        assert!(e.contains("namespace"), "{e}");
        let e = l.budget(&["Host/x"]).unwrap_err().to_string();
        assert!(e.contains("budget"), "{e}");
        assert!(Layout::with_top("a/b").is_err());
    }

    #[test]
    fn permission_errors_are_recognised() {
        let denied = Error::Mkdir {
            path: "/sys/fs/cgroup/memory/a2a".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(denied.is_permission_denied());
        let busy = Error::Rmdir {
            path: "/sys/fs/cgroup/memory/a2a".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(!busy.is_permission_denied());
    }

    #[test]
    fn detect_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = detect(dir.path()).unwrap_err();
        assert_eq!(e.metric_label(), "unsupported");
        assert!(e.to_string().contains("memory"), "{e}");
    }
}
