//! Ownership of a cgroup top: a control plane stops processes and removes cgroups only under
//! a top it owns, and it owns a top only when the top says so.
//!
//! The record lives in the cgroup tree itself, on the top's directory (v2: its only one; v1:
//! its memory hierarchy's), so every control plane on the host sees it whatever its home:
//! - an owner record, the extended attribute `user.a2a.owner` (or `trusted.a2a.owner` where the
//!   kernel refuses `user.*` there): JSON naming the owner's home, its kind (`serve` or `run`)
//!   and its pid. It stays as long as the top does, so the agents a daemon leaves running for
//!   the next daemon stay claimed while no daemon runs;
//! - a lock, `flock(LOCK_EX)` on that directory, held by the running owner for its whole life
//!   (the kernel drops it when the process dies; agents never inherit it, the descriptor is
//!   close-on-exec).
//!
//! Whether a control plane may take a top is [`decide`], a plain function.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::{CgroupDriver, CgroupPath};

/// The extended attributes holding the owner record, in the order they are tried.
const RECORD_XATTRS: [&str; 2] = ["user.a2a.owner", "trusted.a2a.owner"];

/// What kind of control plane owns a top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `a2a serve`: its agents outlive it, for the next daemon of the same home to re-adopt.
    Serve,
    /// An embedded `a2a run`: it stops its agents when it ends.
    Run,
}

impl Kind {
    fn command(self) -> &'static str {
        match self {
            Kind::Serve => "a2a serve",
            Kind::Run => "a2a run",
        }
    }
}

/// Who owns a top, as recorded on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owner's home (`$A2A_HOME`, `--home` or `--state-dir`), absolute.
    pub home: PathBuf,
    pub kind: Kind,
    pub pid: u32,
}

impl Owner {
    /// This process as the owner, with `home` made absolute.
    pub fn me(home: &Path, kind: Kind) -> Owner {
        let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
        let home = home.canonicalize().unwrap_or(home);
        Owner { home, kind, pid: std::process::id() }
    }

    fn describe(&self, running: bool) -> String {
        format!(
            "{} with home {} (pid {}, {})",
            self.kind.command(),
            self.home.display(),
            self.pid,
            if running { "running" } else { "not running" }
        )
    }
}

/// Why a control plane may not take a top. Each is one line naming the owner and the
/// `--cgroup-top` to use instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup top {top:?} belongs to {owner}; pass --cgroup-top {suggest} to run this control plane beside it")]
    Owned { top: String, owner: String, suggest: String },
    #[error(
        "cgroup top {top:?} holds the agents of {owner}, kept for it to re-adopt: start that daemon to use them, or pass --cgroup-top {suggest}"
    )]
    DaemonAgents { top: String, owner: String, suggest: String },
    #[error(
        "cgroup top {top:?} holds {what} that no a2a control plane recorded as its own: remove them, or pass --cgroup-top {suggest}"
    )]
    Unrecorded { top: String, what: String, suggest: String },
    #[error("cgroup top {top:?}: cannot {action} {path}: {source}")]
    Io {
        top: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup top {top:?}: {source}")]
    Cgroup {
        top: String,
        #[source]
        source: super::cgroup::Error,
    },
}

/// What is known about a top when a control plane starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The owner record, if any.
    pub record: Option<Owner>,
    /// Whether another process holds the top's lock (its owner runs).
    pub locked: bool,
    /// Whether the top holds any child cgroup or process.
    pub occupied: bool,
}

/// The verdict of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The top is free or already ours: record us and go on.
    Take,
    /// The top is someone else's; the reason, to show.
    Refuse(Refusal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another control plane owns it (running or not).
    Owned { owner: Owner, running: bool },
    /// A daemon of the same home owns it and is down; its agents wait for it.
    DaemonAgents(Owner),
    /// Occupied, with no record.
    Unrecorded,
}

/// Whether `me` may take a top in the state `found`:
/// - a running owner (the lock is held) keeps it, whoever asks;
/// - a top with no record is taken only when empty;
/// - a record of another home keeps it, running or not (its agents may run on);
/// - a record of the same home is ours: a daemon takes over from the daemon before it (and
///   cleans up after an `a2a run` of its home that was killed), a run takes over from a run
///   that was killed; but a run never takes a top its home's daemon left for re-adoption.
pub fn decide(me: &Owner, found: &Found) -> Claim {
    match &found.record {
        _ if found.locked => Claim::Refuse(Refusal::Owned {
            owner: found.record.clone().unwrap_or(Owner { home: PathBuf::from("?"), kind: Kind::Serve, pid: 0 }),
            running: true,
        }),
        None if found.occupied => Claim::Refuse(Refusal::Unrecorded),
        None => Claim::Take,
        Some(owner) if owner.home != me.home => Claim::Refuse(Refusal::Owned { owner: owner.clone(), running: false }),
        Some(owner) if me.kind == Kind::Run && owner.kind == Kind::Serve && found.occupied => {
            Claim::Refuse(Refusal::DaemonAgents(owner.clone()))
        }
        Some(_) => Claim::Take,
    }
}

/// A top a control plane owns: the lock is held until this is dropped. The record stays.
#[derive(Debug)]
pub struct Ownership {
    /// The locked directory (none without cgroups: `--allow-unenforced`).
    lock: Option<OwnedFd>,
    pub owner: Owner,
}

impl Ownership {
    /// Whether a top is held (false without cgroups).
    pub fn is_held(&self) -> bool {
        self.lock.is_some()
    }
}

/// A `--cgroup-top` for `home` that no other home suggests: `a2a-` and 8 hex digits of its path.
pub fn suggested_top(home: &Path) -> String {
    // FNV-1a: stable across builds and versions (unlike the std hasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in home.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    format!("a2a-{h:08x}")
}

/// Creates the top if needed, takes its lock, decides, and records `me` as its owner.
/// Without a cgroup directory (the unenforced driver) there is nothing to own: it succeeds
/// holding nothing.
pub fn claim(driver: &dyn CgroupDriver, top: &CgroupPath, me: Owner) -> Result<Ownership, Error> {
    let name = top.to_string();
    let Some(dir) = driver.record_dir(top) else {
        return Ok(Ownership { lock: None, owner: me });
    };
    let io = |action: &'static str, path: &Path, source: std::io::Error| Error::Io {
        top: name.clone(),
        action,
        path: path.to_path_buf(),
        source,
    };
    driver.ensure(top, &Default::default()).map_err(|source| Error::Cgroup { top: name.clone(), source })?;
    let fd = rustix::fs::open(
        &dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io("open", &dir, e.into()))?;
    let locked = match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => false,
        Err(rustix::io::Errno::WOULDBLOCK) => true,
        Err(e) => return Err(io("lock", &dir, e.into())),
    };
    let occupied = driver.pids(top).is_ok_and(|p| !p.is_empty()) || driver.children(top).is_ok_and(|c| !c.is_empty());
    let found = Found { record: read_record(&dir), locked, occupied };
    let suggest = suggested_top(&me.home);
    match decide(&me, &found) {
        Claim::Take => {
            write_record(&dir, &me).map_err(|e| io("record the owner on", &dir, e))?;
            Ok(Ownership { lock: Some(fd), owner: me })
        }
        Claim::Refuse(Refusal::Owned { owner, running }) => {
            let owner = if owner.pid == 0 {
                "another a2a control plane (running; its owner record is being written)".to_owned()
            } else {
                owner.describe(running)
            };
            Err(Error::Owned { top: name, owner, suggest })
        }
        Claim::Refuse(Refusal::DaemonAgents(owner)) => {
            Err(Error::DaemonAgents { top: name, owner: owner.describe(false), suggest })
        }
        Claim::Refuse(Refusal::Unrecorded) => {
            let pids = driver.pids(top).map(|p| p.len()).unwrap_or(0);
            let what = if pids > 0 { format!("{pids} process(es)") } else { "cgroups".to_owned() };
            Err(Error::Unrecorded { top: name, what, suggest })
        }
    }
}

/// The owner record on `dir`, if there is a readable one.
pub fn read_record(dir: &Path) -> Option<Owner> {
    RECORD_XATTRS.iter().find_map(|name| {
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::getxattr(dir, *name, &mut buf[..]).ok()?;
        serde_json::from_slice(&buf[..n]).ok()
    })
}

fn write_record(dir: &Path, me: &Owner) -> std::io::Result<()> {
    let value = serde_json::to_vec(me).map_err(std::io::Error::other)?;
    let mut last = None;
    for name in RECORD_XATTRS {
        match rustix::fs::setxattr(dir, name, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| std::io::Error::other("no extended attribute to write"), Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(home: &str, kind: Kind) -> Owner {
        Owner { home: home.into(), kind, pid: 42 }
    }

    #[test]
    fn who_may_take_a_top() {
        let serve_a = owner("/a", Kind::Serve);
        let run_a = owner("/a", Kind::Run);
        let serve_b = owner("/b", Kind::Serve);
        let run_b = owner("/b", Kind::Run);
        let found = |record: Option<&Owner>, locked, occupied| Found { record: record.cloned(), locked, occupied };
        let owned = |o: &Owner, running| Claim::Refuse(Refusal::Owned { owner: o.clone(), running });
        #[rustfmt::skip]
        let table: Vec<(&str, &Owner, Found, Claim)> = vec![
            ("a new top is taken", &serve_a, found(None, false, false), Claim::Take),
            ("an empty top without a record is taken", &run_a, found(None, false, false), Claim::Take),
            ("an occupied top without a record is refused", &serve_a, found(None, false, true), Claim::Refuse(Refusal::Unrecorded)),
            ("a running owner keeps it, same home", &serve_a, found(Some(&serve_a), true, true), owned(&serve_a, true)),
            ("a running owner keeps it, other home", &run_b, found(Some(&serve_a), true, true), owned(&serve_a, true)),
            ("a daemon of another home keeps it while down", &serve_b, found(Some(&serve_a), false, true), owned(&serve_a, false)),
            ("even when empty", &run_b, found(Some(&serve_a), false, false), owned(&serve_a, false)),
            ("a killed run of another home keeps it", &serve_b, found(Some(&run_a), false, true), owned(&run_a, false)),
            ("a daemon takes over from its home's daemon", &serve_a, found(Some(&serve_a), false, true), Claim::Take),
            ("a daemon cleans up after its home's killed run", &serve_a, found(Some(&run_a), false, true), Claim::Take),
            ("a run cleans up after its home's killed run", &run_a, found(Some(&run_a), false, true), Claim::Take),
            ("a run leaves its home's daemon's agents alone", &run_a, found(Some(&serve_a), false, true), Claim::Refuse(Refusal::DaemonAgents(serve_a.clone()))),
            ("a run may use its home's daemon's empty top", &run_a, found(Some(&serve_a), false, false), Claim::Take),
        ];
        let _ = run_b;
        for (what, me, found, want) in table {
            assert_eq!(decide(me, &found), want, "{what}");
        }
    }

    #[test]
    fn refusals_are_one_line_naming_the_owner_and_the_top_to_use() {
        let e = Error::Owned {
            top: "a2a".into(),
            owner: owner("/srv/a2a", Kind::Serve).describe(true),
            suggest: suggested_top(Path::new("/tmp/other")),
        }
        .to_string();
        assert_eq!(
            e,
            format!(
                "cgroup top \"a2a\" belongs to a2a serve with home /srv/a2a (pid 42, running); pass --cgroup-top {} to run this control plane beside it",
                suggested_top(Path::new("/tmp/other"))
            )
        );
        assert!(!e.contains('\n'));
        assert_ne!(suggested_top(Path::new("/a")), suggested_top(Path::new("/b")));
        assert_eq!(suggested_top(Path::new("/a")), suggested_top(Path::new("/a")));
        assert!(crate::node::cgroup::Layout::with_top(&suggested_top(Path::new("/a"))).is_ok());
    }
}
