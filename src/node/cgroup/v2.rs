//! The unified (v2) backend: one hierarchy at the root; controllers are enabled for each
//! subtree through `cgroup.subtree_control`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::limits::{CgroupLimits, v2_writes};
use super::{CgroupDriver, CgroupPath, CgroupStats, CgroupUsage, CgroupVersion, Error, Result, fs};

/// The controllers a2a needs in every cgroup it manages.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cgroup v2 driver rooted at a unified hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
}

impl CgroupV2 {
    /// Opens the unified hierarchy at `root`; refuses one without the memory, cpu and pids
    /// controllers (on a hybrid host they are bound to v1 hierarchies).
    pub fn open(root: &Path) -> Result<Self> {
        let controllers = fs::read(&root.join("cgroup.controllers"))?;
        let missing: Vec<&str> =
            CONTROLLERS.iter().copied().filter(|c| !controllers.split_whitespace().any(|have| have == *c)).collect();
        if !missing.is_empty() {
            return Err(Error::Unsupported {
                root: root.to_path_buf(),
                reason: format!(
                    "the cgroup2 hierarchy lacks the {} controller(s) (bound to cgroup v1?)",
                    missing.join(", ")
                ),
            });
        }
        Ok(CgroupV2 { root: root.to_path_buf() })
    }

    fn dir(&self, path: &CgroupPath) -> PathBuf {
        path.under(&self.root)
    }

    /// Makes the a2a controllers available to the children of `dir`.
    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let available = fs::read(&dir.join("cgroup.controllers"))?;
        let enabled = fs::read(&dir.join("cgroup.subtree_control"))?;
        let add: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if add.is_empty() {
            return Ok(());
        }
        fs::write(&dir.join("cgroup.subtree_control"), &add.join(" "))
    }

    /// Creates the missing ancestors of `path`, each with the controllers enabled below it.
    fn make_ancestors(&self, path: &CgroupPath) -> Result<()> {
        self.enable_controllers(&self.root)?;
        if let Some(parent) = path.parent() {
            for a in parent.ancestors_and_self() {
                let d = self.dir(&a);
                fs::mkdir(&d)?;
                self.enable_controllers(&d)?;
            }
        }
        Ok(())
    }

    fn apply(&self, dir: &Path, limits: &CgroupLimits) -> Result<()> {
        for w in v2_writes(limits) {
            let file = dir.join(w.file);
            if w.optional && !file.exists() {
                continue;
            }
            fs::write(&file, &w.value)?;
        }
        Ok(())
    }

    fn require(&self, path: &CgroupPath) -> Result<PathBuf> {
        let d = self.dir(path);
        if d.is_dir() { Ok(d) } else { Err(Error::NotFound { path: d }) }
    }
}

impl CgroupDriver for CgroupV2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        self.make_ancestors(path)?;
        let dir = self.dir(path);
        if !fs::mkdir(&dir)? {
            // A leftover directory would carry old counters (oom_kill, peak): reset it.
            let pids = fs::procs_recursive(&dir)?;
            if !pids.is_empty() {
                return Err(Error::InUse { path: dir, reason: format!("it holds processes {pids:?}") });
            }
            if !fs::child_dirs(&dir)?.is_empty() {
                return Err(Error::InUse { path: dir, reason: "it has child cgroups".into() });
            }
            fs::rmdir_tree(&dir, Instant::now() + Duration::from_secs(1))?;
            fs::mkdir(&dir)?;
        }
        self.apply(&dir, limits)
    }

    fn ensure(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        self.make_ancestors(path)?;
        let dir = self.dir(path);
        fs::mkdir(&dir)?;
        self.apply(&dir, limits)
    }

    fn update(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        let dir = self.require(path)?;
        self.apply(&dir, limits)
    }

    fn exists(&self, path: &CgroupPath) -> bool {
        self.dir(path).is_dir()
    }

    fn procs_files(&self, path: &CgroupPath) -> Result<Vec<PathBuf>> {
        Ok(vec![self.require(path)?.join("cgroup.procs")])
    }

    fn add_process(&self, path: &CgroupPath, pid: u32) -> Result<()> {
        fs::write(&self.require(path)?.join("cgroup.procs"), &pid.to_string())
    }

    fn children(&self, path: &CgroupPath) -> Result<Vec<CgroupPath>> {
        fs::child_paths(path, &self.require(path)?)
    }

    fn pids(&self, path: &CgroupPath) -> Result<Vec<u32>> {
        fs::procs_recursive(&self.require(path)?)
    }

    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats> {
        let d = self.require(path)?;
        let cpu = d.join("cpu.stat");
        let [cpu_usage_usec, nr_periods, nr_throttled, throttled_usec] = fs::read_with(&cpu, |s| {
            fs::parse_keys(&cpu, s, ["usage_usec", "nr_periods", "nr_throttled", "throttled_usec"])
        })?;
        Ok(CgroupStats {
            memory_current: fs::read_u64(&d.join("memory.current"))?,
            memory_peak: fs::read_u64_opt(&d.join("memory.peak"))?,
            oom_kills: fs::read_key(&d.join("memory.events"), "oom_kill")?,
            cpu_usage_usec,
            nr_periods,
            nr_throttled,
            throttled_usec,
            pids_current: fs::read_u64(&d.join("pids.current"))?,
        })
    }

    fn usage(&self, path: &CgroupPath) -> Result<CgroupUsage> {
        let d = self.dir(path);
        let cpu = d.join("cpu.stat");
        let [cpu_usage_usec, nr_throttled, throttled_usec] =
            fs::read_with(&cpu, |s| fs::parse_keys(&cpu, s, ["usage_usec", "nr_throttled", "throttled_usec"]))?;
        Ok(CgroupUsage {
            memory_current: fs::read_u64(&d.join("memory.current"))?,
            cpu_usage_usec,
            nr_throttled,
            throttled_usec,
        })
    }

    fn freeze(&self, path: &CgroupPath) -> Result<()> {
        freeze_dir(&self.require(path)?)
    }

    fn pressure_dir(&self, path: &CgroupPath) -> Option<PathBuf> {
        Some(self.dir(path)).filter(|d| d.join("cpu.pressure").exists())
    }

    fn thaw(&self, path: &CgroupPath) -> Result<()> {
        fs::write(&self.require(path)?.join("cgroup.freeze"), "0")
    }

    fn kill_all(&self, path: &CgroupPath) -> Result<()> {
        let d = self.require(path)?;
        let kill = d.join("cgroup.kill");
        if kill.exists() {
            return fs::write(&kill, "1");
        }
        // Before Linux 5.14: signal each process; a frozen group cannot fork meanwhile.
        fs::write(&d.join("cgroup.freeze"), "1")?;
        let result = fs::procs_recursive(&d).and_then(|pids| pids.into_iter().try_for_each(|p| fs::sigkill(p, &d)));
        fs::write(&d.join("cgroup.freeze"), "0")?;
        result
    }

    fn record_dir(&self, path: &CgroupPath) -> Option<PathBuf> {
        Some(self.dir(path))
    }

    fn remove(&self, path: &CgroupPath, timeout: Duration) -> Result<()> {
        let d = self.dir(path);
        if !d.is_dir() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        self.kill_all(path)?;
        let empty = fs::wait_until(timeout, || Ok(fs::procs_recursive(&d)?.is_empty()))?;
        if !empty {
            return Err(Error::StillPopulated { pids: fs::procs_recursive(&d)?, path: d, waited: timeout });
        }
        fs::rmdir_tree(&d, deadline)
    }
}

/// Freezes the cgroup2 directory `d` and waits until the kernel says it is frozen.
pub(super) fn freeze_dir(d: &Path) -> Result<()> {
    fs::write(&d.join("cgroup.freeze"), "1")?;
    let events = d.join("cgroup.events");
    if fs::wait_until(FREEZE_TIMEOUT, || Ok(fs::read_key(&events, "frozen")? == 1))? {
        Ok(())
    } else {
        Err(Error::Timeout { path: d.to_path_buf(), state: "frozen", waited: FREEZE_TIMEOUT })
    }
}

#[cfg(test)]
mod tests;
