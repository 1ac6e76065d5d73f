//! The v1 driver against a directory tree standing in for `/sys/fs/cgroup` (as youki's
//! libcgroups tests its drivers): what it writes to which control file of which hierarchy,
//! with no root and no kernel. The tree holds what the kernel would show; files the kernel
//! creates with a directory are written by the test where a case needs them.

use std::path::PathBuf;

use super::*;
use crate::node::cgroup::CpuQuota;

/// A v1 root: memory, pids and freezer hierarchies, cpu and cpuacct co-mounted as
/// `cpu,cpuacct` behind symbolic links (as systemd mounts them), and the mount table that
/// says so.
struct Root {
    dir: tempfile::TempDir,
    mounts: String,
}

impl Root {
    fn new() -> Root {
        Root::with(&["memory", "cpu,cpuacct", "pids", "freezer"])
    }

    fn with(hierarchies: &[&str]) -> Root {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = String::from("proc /proc proc rw 0 0\n");
        for h in hierarchies {
            let d = dir.path().join(h);
            std::fs::create_dir(&d).unwrap();
            let canon = d.canonicalize().unwrap();
            mounts.push_str(&format!("cgroup {} cgroup rw,nosuid,nodev,noexec,relatime,{h} 0 0\n", canon.display()));
            if h.contains(',') {
                for c in h.split(',') {
                    std::os::unix::fs::symlink(h, dir.path().join(c)).unwrap();
                }
            }
        }
        Root { dir, mounts }
    }

    fn driver(&self) -> CgroupV1 {
        CgroupV1::open_in(self.dir.path(), &self.mounts).unwrap()
    }

    fn file(&self, hierarchy: &str, cgroup: &str, file: &str) -> PathBuf {
        self.dir.path().join(hierarchy).join(cgroup).join(file)
    }

    fn read(&self, hierarchy: &str, cgroup: &str, file: &str) -> String {
        let p = self.file(hierarchy, cgroup, file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn write(&self, hierarchy: &str, cgroup: &str, file: &str, data: &str) {
        let p = self.file(hierarchy, cgroup, file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

const LEAF: &str = "a2a/host/default.web.0";

fn path(p: &str) -> CgroupPath {
    CgroupPath::parse(p).unwrap()
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_max: Some(64 << 20),
        memory_low: Some(16 << 20),
        cpu_quota: Some(CpuQuota::from_millicores(200)),
        cpu_shares: Some(512),
        pids_max: Some(32),
        oom_group: true,
    }
}

#[test]
fn open_finds_the_hierarchies_once_and_names_the_missing_ones() {
    let root = Root::new();
    let driver = root.driver();
    assert_eq!(driver.version(), CgroupVersion::V1);
    // cpu and cpuacct are one hierarchy: a process joins it once.
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    let files = driver.procs_files(&path(LEAF)).unwrap();
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(root.dir.path()).unwrap().display().to_string()).collect();
    assert_eq!(
        names,
        [
            format!("memory/{LEAF}/cgroup.procs"),
            format!("cpu/{LEAF}/cgroup.procs"),
            format!("pids/{LEAF}/cgroup.procs"),
            format!("freezer/{LEAF}/cgroup.procs"),
        ]
    );

    let partial = Root::with(&["memory", "cpu,cpuacct"]);
    let e = CgroupV1::open_in(partial.dir.path(), &partial.mounts).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("pids controller"), "{e}");
    // A directory that is not a cgroup mount of that controller is not taken for one.
    let e = CgroupV1::open_in(root.dir.path(), "proc /proc proc rw 0 0\n").unwrap_err();
    assert!(e.to_string().contains("memory, cpu, pids"), "{e}");
}

#[test]
fn create_writes_each_limit_to_its_hierarchy() {
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &limits()).unwrap();
    for h in ["memory", "cpu", "pids", "freezer"] {
        for a in ["a2a", "a2a/host", LEAF] {
            assert!(root.dir.path().join(h).join(a).is_dir(), "{h}/{a}");
        }
    }
    assert_eq!(root.read("memory", LEAF, "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(root.read("memory", LEAF, "memory.soft_limit_in_bytes"), (16u64 << 20).to_string());
    // Without swap accounting there is no memsw file, and none is made up.
    assert!(!root.file("memory", LEAF, "memory.memsw.limit_in_bytes").exists());
    assert_eq!(root.read("cpu", LEAF, "cpu.cfs_period_us"), "100000");
    assert_eq!(root.read("cpu", LEAF, "cpu.cfs_quota_us"), "20000");
    assert_eq!(root.read("cpu", LEAF, "cpu.shares"), "512");
    assert_eq!(root.read("pids", LEAF, "pids.max"), "32");
    // Budgets above it are created without limits.
    assert!(!root.file("memory", "a2a/host", "memory.limit_in_bytes").exists());
}

#[test]
fn update_lifts_unset_limits_and_keeps_memsw_with_memory() {
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &limits()).unwrap();
    // With swap accounting, the kernel shows memsw: it follows the memory limit.
    root.write("memory", LEAF, "memory.memsw.limit_in_bytes", "9223372036854771712");
    driver.update(&path(LEAF), &limits()).unwrap();
    assert_eq!(root.read("memory", LEAF, "memory.memsw.limit_in_bytes"), (64u64 << 20).to_string());
    driver.update(&path(LEAF), &CgroupLimits::default()).unwrap();
    assert_eq!(root.read("memory", LEAF, "memory.limit_in_bytes"), "-1");
    assert_eq!(root.read("memory", LEAF, "memory.memsw.limit_in_bytes"), "-1");
    assert_eq!(root.read("memory", LEAF, "memory.soft_limit_in_bytes"), "-1");
    assert_eq!(root.read("cpu", LEAF, "cpu.cfs_quota_us"), "-1");
    assert_eq!(root.read("cpu", LEAF, "cpu.shares"), "1024");
    assert_eq!(root.read("pids", LEAF, "pids.max"), "max");

    let e = driver.update(&path("a2a/host/default.gone.0"), &limits()).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("default.gone.0"), "{e}");
}

#[test]
fn processes_join_every_hierarchy_and_are_listed_from_them() {
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    driver.add_process(&path(LEAF), 4242).unwrap();
    for h in ["memory", "cpu", "pids", "freezer"] {
        assert_eq!(root.read(h, LEAF, "cgroup.procs"), "4242", "{h}");
    }
    // A child cgroup's processes count for its parent.
    root.write("memory", "a2a/host/default.web.0/sub", "cgroup.procs", "7\n4242\n");
    assert_eq!(driver.pids(&path(LEAF)).unwrap(), [7, 4242]);
    driver.create(&path("a2a/host/default.web.1"), &CgroupLimits::default()).unwrap();
    let children: Vec<String> = driver.children(&path("a2a/host")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(children, ["a2a/host/default.web.0", "a2a/host/default.web.1"]);
}

#[test]
fn a_leftover_cgroup_in_use_is_refused_with_its_processes() {
    // (Removing and making anew an unused leftover needs a cgroupfs, where a directory with
    // control files can be removed: the kernel tests cover it.)
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    std::fs::remove_file(root.file("pids", LEAF, "pids.max")).unwrap();
    for h in ["memory", "cpu", "pids", "freezer"] {
        root.write(h, LEAF, "cgroup.procs", "");
    }
    root.write("pids", LEAF, "cgroup.procs", "99\n");
    let e = driver.create(&path(LEAF), &limits()).unwrap_err();
    assert!(matches!(e, Error::InUse { .. }) && e.to_string().contains("[99]"), "{e}");
    root.write("pids", LEAF, "cgroup.procs", "");
    root.write("cpu", &format!("{LEAF}/sub"), "cgroup.procs", "");
    let e = driver.create(&path(LEAF), &limits()).unwrap_err();
    assert!(e.to_string().contains("child cgroups") && e.to_string().contains("cpu"), "{e}");
    // Nothing was written to the cgroup it refused.
    assert!(!root.file("pids", LEAF, "pids.max").exists());
}

#[test]
fn stats_are_read_from_each_hierarchy_in_its_units() {
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    root.write("memory", LEAF, "memory.usage_in_bytes", "1048576\n");
    root.write("memory", LEAF, "memory.max_usage_in_bytes", "2097152\n");
    root.write("memory", LEAF, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    root.write("cpuacct", LEAF, "cpuacct.usage", "5000000\n");
    root.write("cpu", LEAF, "cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 3000000\n");
    root.write("pids", LEAF, "pids.current", "3\n");
    let stats = driver.stats(&path(LEAF)).unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            memory_current: 1 << 20,
            memory_peak: Some(2 << 20),
            oom_kills: 2,
            cpu_usage_usec: 5000,
            nr_periods: 10,
            nr_throttled: 4,
            throttled_usec: 3000,
            pids_current: 3,
        }
    );
    let usage = driver.usage(&path(LEAF)).unwrap();
    assert_eq!((usage.memory_current, usage.cpu_usage_usec, usage.nr_throttled), (1 << 20, 5000, 4));
}

#[test]
fn freezing_writes_the_freezer_state_and_waits_for_it() {
    let root = Root::new();
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    // The file reads back what was written, as the kernel's does once the group is frozen.
    driver.freeze(&path(LEAF)).unwrap();
    assert_eq!(root.read("freezer", LEAF, "freezer.state"), "FROZEN");
    driver.thaw(&path(LEAF)).unwrap();
    assert_eq!(root.read("freezer", LEAF, "freezer.state"), "THAWED");

    let no_freezer = Root::with(&["memory", "cpu,cpuacct", "pids"]);
    let driver = no_freezer.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    let e = driver.freeze(&path(LEAF)).unwrap_err();
    assert!(e.to_string().contains("freezer"), "{e}");
}
