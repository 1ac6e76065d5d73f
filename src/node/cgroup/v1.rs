//! The legacy/hybrid (v1) backend: one hierarchy per controller under the root
//! (`<root>/memory`, `<root>/cpu`, `<root>/pids`, and `cpuacct`/`freezer` when present); the
//! same relative path is created in each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::limits::{CgroupLimits, Controller, v1_writes};
use super::{CgroupDriver, CgroupPath, CgroupStats, CgroupUsage, CgroupVersion, Error, Result, fs};

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cgroup v1 driver over the controller hierarchies mounted under a root.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    memory: PathBuf,
    cpu: PathBuf,
    pids: PathBuf,
    cpuacct: Option<PathBuf>,
    freezer: Option<PathBuf>,
    /// The unified (cgroup2) hierarchy of a hybrid host, at `<root>/unified`: it holds no
    /// controller but has per-cgroup pressure files (PSI) and `cgroup.freeze`, so a2a makes
    /// every cgroup there too.
    unified: Option<PathBuf>,
    /// Every distinct hierarchy (co-mounted controllers such as `cpu,cpuacct` appear once).
    hierarchies: Vec<PathBuf>,
}

impl CgroupV1 {
    /// Finds the memory, cpu and pids hierarchies (required) and cpuacct and freezer
    /// (optional) under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        Self::open_in(root, &mounts)
    }

    /// [`Self::open`] with the mount table given (the text of `/proc/self/mounts`), so that
    /// the driver can be pointed at any directory tree.
    fn open_in(root: &Path, mounts: &str) -> Result<Self> {
        let find = |name: &str| {
            let dir = root.join(name);
            is_v1_mount_of(mounts, &dir, name).then_some(dir)
        };
        let memory = find("memory");
        let cpu = find("cpu");
        let pids = find("pids");
        let (Some(memory), Some(cpu), Some(pids)) = (memory.clone(), cpu.clone(), pids.clone()) else {
            let missing: Vec<&str> = [("memory", &memory), ("cpu", &cpu), ("pids", &pids)]
                .iter()
                .filter(|(_, d)| d.is_none())
                .map(|(n, _)| *n)
                .collect();
            return Err(Error::Unsupported {
                root: root.to_path_buf(),
                reason: format!("no cgroup v1 hierarchy for the {} controller(s)", missing.join(", ")),
            });
        };
        let cpuacct = find("cpuacct");
        let freezer = find("freezer");
        let unified = Some(root.join("unified")).filter(|d| is_cgroup2_mount(mounts, d));
        let mut hierarchies: Vec<PathBuf> = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        for d in [Some(&memory), Some(&cpu), Some(&pids), cpuacct.as_ref(), freezer.as_ref(), unified.as_ref()]
            .into_iter()
            .flatten()
        {
            let canon = d.canonicalize().map_err(|source| Error::Read { path: d.clone(), source })?;
            if !seen.contains(&canon) {
                seen.push(canon);
                hierarchies.push(d.clone());
            }
        }
        Ok(CgroupV1 { memory, cpu, pids, cpuacct, freezer, unified, hierarchies })
    }

    fn hierarchy(&self, c: Controller) -> &Path {
        match c {
            Controller::Memory => &self.memory,
            Controller::Cpu => &self.cpu,
            Controller::Pids => &self.pids,
        }
    }

    fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| path.under(h)).collect()
    }

    fn mkdir_all(&self, path: &CgroupPath) -> Result<()> {
        for a in path.ancestors_and_self() {
            for h in &self.hierarchies {
                let d = a.under(h);
                if fs::mkdir(&d)? && h == &self.memory {
                    // Parent limits only bound children with hierarchical accounting (always
                    // on since Linux 5.x; older kernels need it set before children exist).
                    let f = d.join("memory.use_hierarchy");
                    if f.exists() && fs::read_u64(&f)? == 0 {
                        fs::write(&f, "1")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        let writes = v1_writes(limits);
        for w in &writes {
            let file = path.under(self.hierarchy(w.controller)).join(w.file);
            if w.optional && !file.exists() {
                continue;
            }
            match fs::write(&file, &w.value) {
                // The kernel keeps memsw ≥ memory at every moment: when raising the memory
                // limit above the current memsw limit, raise memsw first.
                Err(Error::Write { source, .. })
                    if w.file == "memory.limit_in_bytes" && source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    let memsw = writes.iter().find(|m| m.file == "memory.memsw.limit_in_bytes");
                    let memsw_file = file.with_file_name("memory.memsw.limit_in_bytes");
                    match memsw {
                        Some(m) if memsw_file.exists() => {
                            fs::write(&memsw_file, &m.value)?;
                            fs::write(&file, &w.value)?;
                        }
                        _ => {
                            return Err(Error::Write { path: file, data: w.value.clone(), source });
                        }
                    }
                }
                other => other?,
            }
        }
        Ok(())
    }

    fn require(&self, path: &CgroupPath) -> Result<()> {
        for d in self.dirs(path) {
            if !d.is_dir() {
                return Err(Error::NotFound { path: d });
            }
        }
        Ok(())
    }

    fn all_pids(&self, path: &CgroupPath) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for d in self.dirs(path) {
            if d.is_dir() {
                pids.extend(fs::procs_recursive(&d)?);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn set_freezer(&self, path: &CgroupPath, state: &'static str) -> Result<PathBuf> {
        let Some(h) = &self.freezer else {
            return Err(Error::Unsupported {
                root: self.memory.clone(),
                reason: "no cgroup v1 freezer hierarchy is mounted".into(),
            });
        };
        let f = path.under(h).join("freezer.state");
        fs::write(&f, state)?;
        Ok(f)
    }
}

/// Whether `dir` is a cgroup2 mount, per `mounts`.
fn is_cgroup2_mount(mounts: &str, dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    mounts.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 3 && f[2] == "cgroup2" && Path::new(f[1]) == canon
    })
}

/// Whether `dir` (after following symlinks such as `cpu -> cpu,cpuacct`) is a cgroup v1 mount
/// with `controller` bound to it, per `mounts` (the text of `/proc/self/mounts`).
fn is_v1_mount_of(mounts: &str, dir: &Path, controller: &str) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return false;
    };
    mounts.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 4 && f[2] == "cgroup" && Path::new(f[1]) == canon && f[3].split(',').any(|o| o == controller)
    })
}

impl CgroupDriver for CgroupV1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        if self.dirs(path).iter().any(|d| d.exists()) {
            // A leftover directory would carry old counters (oom_kill, failcnt): reset it.
            let pids = self.all_pids(path)?;
            if !pids.is_empty() {
                return Err(Error::InUse {
                    path: path.under(&self.memory),
                    reason: format!("it holds processes {pids:?}"),
                });
            }
            for d in self.dirs(path) {
                if d.exists() && !fs::child_dirs(&d)?.is_empty() {
                    return Err(Error::InUse { path: d, reason: "it has child cgroups".into() });
                }
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            for d in self.dirs(path) {
                fs::rmdir_tree(&d, deadline)?;
            }
        }
        self.mkdir_all(path)?;
        self.apply(path, limits)
    }

    fn ensure(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        self.mkdir_all(path)?;
        self.apply(path, limits)
    }

    fn update(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        self.require(path)?;
        self.apply(path, limits)
    }

    fn exists(&self, path: &CgroupPath) -> bool {
        self.dirs(path).iter().all(|d| d.is_dir())
    }

    fn procs_files(&self, path: &CgroupPath) -> Result<Vec<PathBuf>> {
        self.require(path)?;
        Ok(self.dirs(path).iter().map(|d| d.join("cgroup.procs")).collect())
    }

    fn add_process(&self, path: &CgroupPath, pid: u32) -> Result<()> {
        for f in self.procs_files(path)? {
            fs::write(&f, &pid.to_string())?;
        }
        Ok(())
    }

    fn children(&self, path: &CgroupPath) -> Result<Vec<CgroupPath>> {
        self.require(path)?;
        fs::child_paths(path, &path.under(&self.memory))
    }

    fn pids(&self, path: &CgroupPath) -> Result<Vec<u32>> {
        self.require(path)?;
        self.all_pids(path)
    }

    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats> {
        self.require(path)?;
        let mem = path.under(&self.memory);
        let cpu_stat = path.under(&self.cpu).join("cpu.stat");
        let cpu_usage_usec = match &self.cpuacct {
            Some(h) => fs::read_u64(&path.under(h).join("cpuacct.usage"))? / 1000,
            None => 0,
        };
        let [nr_periods, nr_throttled, throttled_ns] = fs::read_with(&cpu_stat, |s| {
            fs::parse_keys(&cpu_stat, s, ["nr_periods", "nr_throttled", "throttled_time"])
        })?;
        Ok(CgroupStats {
            memory_current: fs::read_u64(&mem.join("memory.usage_in_bytes"))?,
            memory_peak: fs::read_u64_opt(&mem.join("memory.max_usage_in_bytes"))?,
            oom_kills: fs::read_key(&mem.join("memory.oom_control"), "oom_kill")?,
            cpu_usage_usec,
            nr_periods,
            nr_throttled,
            throttled_usec: throttled_ns / 1000,
            pids_current: fs::read_u64(&path.under(&self.pids).join("pids.current"))?,
        })
    }

    fn usage(&self, path: &CgroupPath) -> Result<CgroupUsage> {
        let cpu_stat = path.under(&self.cpu).join("cpu.stat");
        let [nr_throttled, throttled_ns] =
            fs::read_with(&cpu_stat, |s| fs::parse_keys(&cpu_stat, s, ["nr_throttled", "throttled_time"]))?;
        Ok(CgroupUsage {
            memory_current: fs::read_u64(&path.under(&self.memory).join("memory.usage_in_bytes"))?,
            cpu_usage_usec: match &self.cpuacct {
                Some(h) => fs::read_u64(&path.under(h).join("cpuacct.usage"))? / 1000,
                None => 0,
            },
            nr_throttled,
            throttled_usec: throttled_ns / 1000,
        })
    }

    fn freeze(&self, path: &CgroupPath) -> Result<()> {
        self.require(path)?;
        if self.freezer.is_none()
            && let Some(u) = &self.unified
        {
            return super::v2::freeze_dir(&path.under(u));
        }
        let f = self.set_freezer(path, "FROZEN")?;
        if fs::wait_until(FREEZE_TIMEOUT, || Ok(fs::read(&f)?.trim() == "FROZEN"))? {
            Ok(())
        } else {
            Err(Error::Timeout { path: f, state: "FROZEN", waited: FREEZE_TIMEOUT })
        }
    }

    fn thaw(&self, path: &CgroupPath) -> Result<()> {
        self.require(path)?;
        if self.freezer.is_none()
            && let Some(u) = &self.unified
        {
            return fs::write(&path.under(u).join("cgroup.freeze"), "0");
        }
        self.set_freezer(path, "THAWED").map(|_| ())
    }

    fn pressure_dir(&self, path: &CgroupPath) -> Option<PathBuf> {
        self.unified.as_ref().map(|u| path.under(u)).filter(|d| d.join("cpu.pressure").exists())
    }

    fn kill_all(&self, path: &CgroupPath) -> Result<()> {
        // v1 has no cgroup.kill: signal each process. Freezing first stops a fork bomb from
        // adding processes between listing and signalling; SIGKILL lands on thaw.
        let frozen = self.freezer.is_some() && self.set_freezer(path, "FROZEN").is_ok();
        let mem = path.under(&self.memory);
        let result = self.all_pids(path).and_then(|pids| pids.into_iter().try_for_each(|p| fs::sigkill(p, &mem)));
        if frozen {
            self.set_freezer(path, "THAWED")?;
        }
        result
    }

    fn record_dir(&self, path: &CgroupPath) -> Option<PathBuf> {
        Some(path.under(&self.memory))
    }

    fn remove(&self, path: &CgroupPath, timeout: Duration) -> Result<()> {
        if !self.dirs(path).iter().any(|d| d.exists()) {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let empty = fs::wait_until(timeout, || {
            let pids = self.all_pids(path)?;
            if !pids.is_empty() {
                self.kill_all(path)?;
            }
            Ok(pids.is_empty())
        })?;
        if !empty {
            return Err(Error::StillPopulated {
                pids: self.all_pids(path)?,
                path: path.under(&self.memory),
                waited: timeout,
            });
        }
        for d in self.dirs(path) {
            fs::rmdir_tree(&d, deadline)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
