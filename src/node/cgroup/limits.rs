//! Mapping from a2a resources to kernel limits, and from kernel limits to control-file
//! writes for each cgroup version. Pure functions: no I/O.
//!
//! | a2a                         | v2                         | v1                                          |
//! |-----------------------------|----------------------------|---------------------------------------------|
//! | `limits.memory`             | `memory.max`, `memory.swap.max = 0` | `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` (same value) |
//! | `requests.memory`           | `memory.low`               | `memory.soft_limit_in_bytes`                |
//! | `limits.cpu`                | `cpu.max` (100 ms period)  | `cpu.cfs_quota_us` + `cpu.cfs_period_us`    |
//! | `requests.cpu`, `priority`  | `cpu.weight`               | `cpu.shares`                                |
//! | `limits.pids`               | `pids.max`                 | `pids.max`                                  |
//!
//! Every write is emitted every time (an unset limit writes "unlimited"), so applying the same
//! limits twice is a no-op and removing a limit from a spec lifts it in the kernel.

use crate::api::agent::Resources;
use crate::api::{Priority, ResourceAmounts};

/// The CFS period a2a uses: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts.
pub const CPU_MIN_QUOTA_US: u64 = 1_000;
/// `cpu.shares` bounds (v1).
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// `cpu.shares` of one core's worth of request at normal priority (the v1 default).
pub const DEFAULT_SHARES: u64 = 1024;

/// A CPU bandwidth limit: `quota_us` of CPU time per `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The quota for `millicores` thousandths of a core per [`CPU_PERIOD_US`].
    pub fn from_millicores(millicores: u64) -> Self {
        let quota_us = millicores.saturating_mul(CPU_PERIOD_US).div_ceil(1000).max(CPU_MIN_QUOTA_US);
        CpuQuota { quota_us, period_us: CPU_PERIOD_US }
    }
}

/// The limits of one cgroup, in kernel units. `None` means unlimited (or the kernel default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit, bytes; the OOM killer acts above it. Swap is denied when set.
    pub memory_max: Option<u64>,
    /// Memory protected from reclaim (v2) / soft limit (v1), bytes.
    pub memory_low: Option<u64>,
    pub cpu_quota: Option<CpuQuota>,
    /// Relative CPU weight in v1 `cpu.shares` units; v2 converts it (see [`Self::cpu_weight`]).
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<u64>,
    /// v2 `memory.oom.group`: an OOM kill takes every process of the cgroup, so an agent
    /// never limps on with one of its processes gone (v1 has no equivalent).
    pub oom_group: bool,
}

impl CgroupLimits {
    /// The limits of one agent replica. `host_cores` resolves CPU given as a host share.
    pub fn for_agent(resources: &Resources, priority: Priority, host_cores: u32) -> Self {
        let limits = &resources.limits;
        let requests = &resources.requests;
        let request_millis = requests.cpu.as_ref().map(|c| c.value().millicores(host_cores));
        CgroupLimits {
            memory_max: limits.memory.as_ref().map(|m| m.value()),
            memory_low: requests.memory.as_ref().map(|m| m.value()),
            cpu_quota: limits.cpu.as_ref().map(|c| CpuQuota::from_millicores(c.value().millicores(host_cores))),
            cpu_shares: Some(shares(request_millis, priority)),
            pids_max: limits.pids.as_ref().map(|p| p.value()),
            oom_group: true,
        }
    }

    /// The limits of a budget's cgroup: the kernel caps the sum of its agents with them.
    /// CPU weight stays at the kernel default, so a budget competes like any other service.
    pub fn for_budget(limits: &ResourceAmounts, host_cores: u32) -> Self {
        CgroupLimits {
            memory_max: limits.memory.as_ref().map(|m| m.value()),
            memory_low: None,
            cpu_quota: limits.cpu.as_ref().map(|c| CpuQuota::from_millicores(c.value().millicores(host_cores))),
            cpu_shares: None,
            pids_max: limits.pids.as_ref().map(|p| p.value()),
            // A budget's OOM kill must pick one agent, not every agent of the budget.
            oom_group: false,
        }
    }

    /// The v2 `cpu.weight` (1..=10000) for these shares, with the conversion Kubernetes uses
    /// (`1 + (shares - 2) * 9999 / 262142`); the kernel default 100 when unset.
    pub fn cpu_weight(&self) -> u64 {
        match self.cpu_shares {
            None => 100,
            Some(s) => {
                let s = s.clamp(MIN_SHARES, MAX_SHARES);
                (1 + (s - MIN_SHARES) * 9999 / (MAX_SHARES - MIN_SHARES)).clamp(1, 10_000)
            }
        }
    }
}

/// `cpu.shares` for a CPU request (millicores; one core's worth when absent) scaled by
/// priority: critical ×4, high ×2, normal ×1, low ×½, background ×⅛.
pub fn shares(request_millicores: Option<u64>, priority: Priority) -> u64 {
    let base = request_millicores.map(|m| m.saturating_mul(1024) / 1000).unwrap_or(DEFAULT_SHARES);
    let scaled = match priority {
        Priority::Critical => base.saturating_mul(4),
        Priority::High => base.saturating_mul(2),
        Priority::Normal => base,
        Priority::Low => base / 2,
        Priority::Background => base / 8,
    };
    scaled.clamp(MIN_SHARES, MAX_SHARES)
}

/// The v1 hierarchy (or v2 controller) a control file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
}

/// One control-file write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist (e.g. swap accounting is off).
    pub optional: bool,
}

fn w(controller: Controller, file: &'static str, value: String) -> ControlWrite {
    ControlWrite { controller, file, value, optional: false }
}

fn opt_or(v: Option<u64>, unlimited: &str) -> String {
    v.map_or_else(|| unlimited.to_owned(), |v| v.to_string())
}

/// The v2 writes for `limits`, in order.
pub fn v2_writes(limits: &CgroupLimits) -> Vec<ControlWrite> {
    let cpu_max = match limits.cpu_quota {
        Some(q) => format!("{} {}", q.quota_us, q.period_us),
        None => format!("max {CPU_PERIOD_US}"),
    };
    vec![
        w(Controller::Memory, "memory.max", opt_or(limits.memory_max, "max")),
        ControlWrite {
            optional: true,
            ..w(Controller::Memory, "memory.swap.max", if limits.memory_max.is_some() { "0" } else { "max" }.to_owned())
        },
        w(Controller::Memory, "memory.low", limits.memory_low.unwrap_or(0).to_string()),
        ControlWrite {
            optional: true,
            ..w(Controller::Memory, "memory.oom.group", if limits.oom_group { "1" } else { "0" }.to_owned())
        },
        w(Controller::Cpu, "cpu.max", cpu_max),
        w(Controller::Cpu, "cpu.weight", limits.cpu_weight().to_string()),
        w(Controller::Pids, "pids.max", opt_or(limits.pids_max, "max")),
    ]
}

/// The v1 writes for `limits`, in order. The v1 backend orders the memory and memsw limits at
/// run time (the kernel requires memsw ≥ memory at every moment).
pub fn v1_writes(limits: &CgroupLimits) -> Vec<ControlWrite> {
    let (period, quota) = match limits.cpu_quota {
        Some(q) => (q.period_us, q.quota_us.to_string()),
        None => (CPU_PERIOD_US, "-1".to_owned()),
    };
    vec![
        w(Controller::Memory, "memory.limit_in_bytes", opt_or(limits.memory_max, "-1")),
        ControlWrite {
            optional: true,
            ..w(Controller::Memory, "memory.memsw.limit_in_bytes", opt_or(limits.memory_max, "-1"))
        },
        w(Controller::Memory, "memory.soft_limit_in_bytes", opt_or(limits.memory_low, "-1")),
        // Lift the quota first: a new period is checked against the old quota.
        w(Controller::Cpu, "cpu.cfs_quota_us", "-1".to_owned()),
        w(Controller::Cpu, "cpu.cfs_period_us", period.to_string()),
        w(Controller::Cpu, "cpu.cfs_quota_us", quota),
        w(Controller::Cpu, "cpu.shares", limits.cpu_shares.unwrap_or(DEFAULT_SHARES).to_string()),
        w(Controller::Pids, "pids.max", opt_or(limits.pids_max, "max")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> Resources {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn value<'a>(writes: &'a [ControlWrite], file: &str) -> Vec<&'a str> {
        writes.iter().filter(|w| w.file == file).map(|w| w.value.as_str()).collect()
    }

    #[test]
    fn agent_limits_map_to_v2_files() {
        let r = resources("requests: {memory: 32Mi, cpu: 100m}\nlimits: {memory: 64Mi, cpu: 200m, pids: 16}");
        let l = CgroupLimits::for_agent(&r, Priority::Normal, 2);
        let ws = v2_writes(&l);
        assert_eq!(value(&ws, "memory.max"), ["67108864"]);
        assert_eq!(value(&ws, "memory.swap.max"), ["0"]);
        assert_eq!(value(&ws, "memory.low"), ["33554432"]);
        assert_eq!(value(&ws, "cpu.max"), ["20000 100000"]);
        // 100m → 102 shares → weight 1 + 100 * 9999 / 262142 = 4
        assert_eq!(value(&ws, "cpu.weight"), ["4"]);
        assert_eq!(value(&ws, "pids.max"), ["16"]);
        assert_eq!(value(&ws, "memory.oom.group"), ["1"]);
        let optional: Vec<&str> = ws.iter().filter(|w| w.optional).map(|w| w.file).collect();
        assert_eq!(optional, ["memory.swap.max", "memory.oom.group"]);
    }

    #[test]
    fn agent_limits_map_to_v1_files() {
        let r = resources("requests: {memory: 32Mi, cpu: 500m}\nlimits: {memory: 64Mi, cpu: '1.5', pids: 16}");
        let ws = v1_writes(&CgroupLimits::for_agent(&r, Priority::High, 2));
        assert_eq!(value(&ws, "memory.limit_in_bytes"), ["67108864"]);
        assert_eq!(value(&ws, "memory.memsw.limit_in_bytes"), ["67108864"]);
        assert_eq!(value(&ws, "memory.soft_limit_in_bytes"), ["33554432"]);
        assert_eq!(value(&ws, "cpu.cfs_period_us"), ["100000"]);
        assert_eq!(value(&ws, "cpu.cfs_quota_us"), ["-1", "150000"]);
        // 500m → 512 shares, ×2 for high priority
        assert_eq!(value(&ws, "cpu.shares"), ["1024"]);
        assert_eq!(value(&ws, "pids.max"), ["16"]);
    }

    #[test]
    fn unset_limits_write_unlimited_so_updates_lift_them() {
        let l = CgroupLimits::for_agent(&Resources::default(), Priority::Normal, 4);
        let v2 = v2_writes(&l);
        assert_eq!(value(&v2, "memory.max"), ["max"]);
        assert_eq!(value(&v2, "memory.swap.max"), ["max"]);
        assert_eq!(value(&v2, "memory.low"), ["0"]);
        assert_eq!(value(&v2, "cpu.max"), ["max 100000"]);
        assert_eq!(value(&v2, "pids.max"), ["max"]);
        let v1 = v1_writes(&l);
        assert_eq!(value(&v1, "memory.limit_in_bytes"), ["-1"]);
        assert_eq!(value(&v1, "cpu.cfs_quota_us"), ["-1", "-1"]);
        assert_eq!(value(&v1, "cpu.shares"), ["1024"]);
        assert_eq!(value(&v1, "pids.max"), ["max"]);
    }

    #[test]
    fn host_share_cpu_resolves_against_host_cores() {
        let b: ResourceAmounts = serde_yaml_ng::from_str("{memory: 8Gi, cpu: '60%'}").unwrap();
        let l = CgroupLimits::for_budget(&b, 4);
        // 60% of 4 cores = 2400m
        assert_eq!(l.cpu_quota, Some(CpuQuota { quota_us: 240_000, period_us: 100_000 }));
        assert_eq!(l.memory_max, Some(8 << 30));
        assert_eq!(l.cpu_shares, None);
        assert_eq!(value(&v2_writes(&l), "memory.oom.group"), ["0"]);
        assert_eq!(value(&v2_writes(&l), "cpu.weight"), ["100"]);
        assert_eq!(value(&v1_writes(&l), "cpu.shares"), ["1024"]);
    }

    #[test]
    fn priority_orders_cpu_weight() {
        let weights: Vec<u64> =
            [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background]
                .iter()
                .map(|p| shares(Some(1000), *p))
                .collect();
        assert_eq!(weights, [4096, 2048, 1024, 512, 128]);
        assert_eq!(shares(Some(1), Priority::Background), MIN_SHARES);
        assert_eq!(shares(Some(1_000_000), Priority::Critical), MAX_SHARES);
        let w = |s| CgroupLimits { cpu_shares: Some(s), ..Default::default() }.cpu_weight();
        assert_eq!(w(MIN_SHARES), 1);
        assert_eq!(w(MAX_SHARES), 10_000);
        assert!(w(4096) > w(1024));
    }

    #[test]
    fn tiny_cpu_limits_get_the_kernel_minimum_quota() {
        assert_eq!(CpuQuota::from_millicores(1).quota_us, CPU_MIN_QUOTA_US);
        assert_eq!(CpuQuota::from_millicores(200).quota_us, 20_000);
    }
}
