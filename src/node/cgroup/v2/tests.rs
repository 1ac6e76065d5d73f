//! The v2 driver against a directory tree standing in for a unified hierarchy (as youki's
//! libcgroups tests its drivers): which controllers it enables where, what it writes to which
//! control file, with no root and no kernel. The tree holds what the kernel would show; files
//! the kernel creates with a directory are written by the test where a case needs them.

use std::path::PathBuf;

use super::*;
use crate::node::cgroup::CpuQuota;

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// A unified root offering `controllers`, with the budget cgroups `a2a` and `a2a/host`
    /// already there (each listing the controllers its parent enabled for it).
    fn new(controllers: &str) -> Root {
        let root = Root { dir: tempfile::tempdir().unwrap() };
        root.write("", "cgroup.controllers", &format!("{controllers}\n"));
        root.write("", "cgroup.subtree_control", "\n");
        for a in ["a2a", "a2a/host"] {
            root.write(a, "cgroup.controllers", "cpu memory pids\n");
            root.write(a, "cgroup.subtree_control", "\n");
        }
        root
    }

    fn driver(&self) -> CgroupV2 {
        CgroupV2::open(self.dir.path()).unwrap()
    }

    fn file(&self, cgroup: &str, file: &str) -> PathBuf {
        self.dir.path().join(cgroup).join(file)
    }

    fn read(&self, cgroup: &str, file: &str) -> String {
        let p = self.file(cgroup, file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn write(&self, cgroup: &str, file: &str, data: &str) {
        let p = self.file(cgroup, file);
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
        cpu_quota: Some(CpuQuota::from_millicores(250)),
        cpu_shares: Some(2048),
        pids_max: Some(32),
        oom_group: true,
    }
}

#[test]
fn open_refuses_a_hierarchy_without_the_controllers_and_names_them() {
    let root = Root::new("cpuset cpu io memory hugetlb pids rdma misc");
    assert_eq!(root.driver().version(), CgroupVersion::V2);
    let hybrid = Root::new("cpuset io");
    let e = CgroupV2::open(hybrid.dir.path()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("memory, cpu, pids"), "{e}");
}

#[test]
fn create_enables_the_controllers_down_the_tree_and_writes_the_limits() {
    let root = Root::new("cpuset cpu io memory pids");
    // One controller is on already below `a2a`: only the others are asked for.
    root.write("a2a", "cgroup.subtree_control", "cpu\n");
    root.driver().create(&path(LEAF), &limits()).unwrap();
    assert_eq!(root.read("", "cgroup.subtree_control"), "+memory +cpu +pids");
    assert_eq!(root.read("a2a", "cgroup.subtree_control"), "+memory +pids");
    assert_eq!(root.read("a2a/host", "cgroup.subtree_control"), "+memory +cpu +pids");
    assert_eq!(root.read(LEAF, "memory.max"), (64u64 << 20).to_string());
    assert_eq!(root.read(LEAF, "memory.low"), (16u64 << 20).to_string());
    assert_eq!(root.read(LEAF, "cpu.max"), "25000 100000");
    // cpu.shares 2048 as Kubernetes converts it.
    assert_eq!(root.read(LEAF, "cpu.weight"), "79");
    assert_eq!(root.read(LEAF, "pids.max"), "32");
    // Files the kernel does not show (no swap accounting, before Linux 4.19) are not made up.
    assert!(!root.file(LEAF, "memory.swap.max").exists());
    assert!(!root.file(LEAF, "memory.oom.group").exists());
}

#[test]
fn update_writes_optional_files_when_present_and_lifts_unset_limits() {
    let root = Root::new("cpu memory pids");
    let driver = root.driver();
    driver.create(&path(LEAF), &limits()).unwrap();
    root.write(LEAF, "memory.swap.max", "max\n");
    root.write(LEAF, "memory.oom.group", "0\n");
    driver.update(&path(LEAF), &limits()).unwrap();
    assert_eq!(root.read(LEAF, "memory.swap.max"), "0", "a memory limit denies swap");
    assert_eq!(root.read(LEAF, "memory.oom.group"), "1");
    driver.update(&path(LEAF), &CgroupLimits::default()).unwrap();
    assert_eq!(root.read(LEAF, "memory.max"), "max");
    assert_eq!(root.read(LEAF, "memory.swap.max"), "max");
    assert_eq!(root.read(LEAF, "memory.low"), "0");
    assert_eq!(root.read(LEAF, "memory.oom.group"), "0");
    assert_eq!(root.read(LEAF, "cpu.max"), "max 100000");
    assert_eq!(root.read(LEAF, "cpu.weight"), "100");
    assert_eq!(root.read(LEAF, "pids.max"), "max");

    let e = driver.update(&path("a2a/host/default.gone.0"), &limits()).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }) && e.to_string().contains("default.gone.0"), "{e}");
}

#[test]
fn ensure_keeps_a_budget_and_its_children() {
    let root = Root::new("cpu memory pids");
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    let budget = CgroupLimits { memory_max: Some(1 << 30), ..CgroupLimits::default() };
    driver.ensure(&path("a2a/host"), &budget).unwrap();
    assert_eq!(root.read("a2a/host", "memory.max"), (1u64 << 30).to_string());
    assert!(driver.exists(&path(LEAF)));
    let children: Vec<String> = driver.children(&path("a2a/host")).unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(children, [LEAF]);
}

#[test]
fn a_leftover_cgroup_in_use_is_refused_with_its_processes() {
    // (Removing and making anew an unused leftover needs a cgroupfs, where a directory with
    // control files can be removed: the kernel tests cover it.)
    let root = Root::new("cpu memory pids");
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    std::fs::remove_file(root.file(LEAF, "pids.max")).unwrap();
    root.write(LEAF, "cgroup.procs", "314\n");
    let e = driver.create(&path(LEAF), &limits()).unwrap_err();
    assert!(matches!(e, Error::InUse { .. }) && e.to_string().contains("[314]"), "{e}");
    root.write(LEAF, "cgroup.procs", "");
    root.write(&format!("{LEAF}/sub"), "cgroup.procs", "");
    let e = driver.create(&path(LEAF), &limits()).unwrap_err();
    assert!(e.to_string().contains("child cgroups"), "{e}");
    // Nothing was written to the cgroup it refused.
    assert!(!root.file(LEAF, "pids.max").exists());
}

#[test]
fn processes_and_stats_are_read_from_the_cgroup_files() {
    let root = Root::new("cpu memory pids");
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    driver.add_process(&path(LEAF), 4242).unwrap();
    assert_eq!(root.read(LEAF, "cgroup.procs"), "4242");
    assert_eq!(driver.procs_files(&path(LEAF)).unwrap(), [root.file(LEAF, "cgroup.procs")]);
    root.write(&format!("{LEAF}/worker"), "cgroup.procs", "17\n");
    assert_eq!(driver.pids(&path(LEAF)).unwrap(), [17, 4242]);

    root.write(LEAF, "memory.current", "1048576\n");
    root.write(LEAF, "memory.peak", "4194304\n");
    root.write(LEAF, "memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n");
    root.write(
        LEAF,
        "cpu.stat",
        "usage_usec 7000\nuser_usec 5000\nsystem_usec 2000\nnr_periods 20\nnr_throttled 5\nthrottled_usec 900\n",
    );
    root.write(LEAF, "pids.current", "2\n");
    assert_eq!(
        driver.stats(&path(LEAF)).unwrap(),
        CgroupStats {
            memory_current: 1 << 20,
            memory_peak: Some(4 << 20),
            oom_kills: 1,
            cpu_usage_usec: 7000,
            nr_periods: 20,
            nr_throttled: 5,
            throttled_usec: 900,
            pids_current: 2,
        }
    );
    let usage = driver.usage(&path(LEAF)).unwrap();
    assert_eq!((usage.memory_current, usage.cpu_usage_usec, usage.nr_throttled), (1 << 20, 7000, 5));
    // A file the kernel would have shown that is missing is an error naming it.
    std::fs::remove_file(root.file(LEAF, "pids.current")).unwrap();
    let e = driver.stats(&path(LEAF)).unwrap_err();
    assert!(e.to_string().contains("pids.current"), "{e}");
}

#[test]
fn freeze_waits_for_the_kernel_and_kill_uses_cgroup_kill() {
    let root = Root::new("cpu memory pids");
    let driver = root.driver();
    driver.create(&path(LEAF), &CgroupLimits::default()).unwrap();
    root.write(LEAF, "cgroup.events", "populated 1\nfrozen 1\n");
    driver.freeze(&path(LEAF)).unwrap();
    assert_eq!(root.read(LEAF, "cgroup.freeze"), "1");
    driver.thaw(&path(LEAF)).unwrap();
    assert_eq!(root.read(LEAF, "cgroup.freeze"), "0");
    root.write(LEAF, "cgroup.kill", "");
    driver.kill_all(&path(LEAF)).unwrap();
    assert_eq!(root.read(LEAF, "cgroup.kill"), "1");
}
