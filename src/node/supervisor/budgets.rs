//! Budget cgroups: the limits the kernel can enforce for each budget, written in an order v1
//! accepts, and the `LimitsClamped` condition that says when a budget's own limit is not it.

use std::collections::BTreeMap;

use super::{BACKGROUND_CGROUP, Node, World, record_event};
use crate::api::Condition;
use crate::api::ResourceBudget;
use crate::api::budget::ResourceBudgetStatus;
use crate::api::common::{ConditionStatus, find_condition, set_condition};
use crate::controller::admission;
use crate::node::cgroup::{CgroupLimits, CgroupPath, CpuQuota};

impl World {
    /// Budget cgroups with the limits the kernel can enforce: a child's limit over its
    /// parent's is clamped to it (see [`admission::enforced_limits`]; the budget's status says
    /// so). Limits are written only when they changed: first deepest first, so a lowered parent
    /// never sits below a child's old CPU quota (v1 refuses that), then outermost first for what
    /// is left, so a raised child never exceeds its parent's old quota. A budget that is gone
    /// (or moved under another parent, or whose chain is broken) leaves its old cgroup to
    /// [`World::remove_doomed`].
    pub(super) fn ensure_budget_cgroups(&mut self, node: &Node, budgets: &[admission::Budget]) {
        let enforced = admission::enforced_limits(budgets);
        let mut names: Vec<(usize, &String)> =
            self.budgets.keys().filter_map(|n| Node::chain(&self.budgets, n).map(|c| (c.len(), n))).collect();
        names.sort();
        let mut paths = BTreeMap::new();
        let mut wanted: Vec<(String, CgroupPath, CgroupLimits)> = Vec::new();
        self.clamps.clear();
        for (_, name) in names {
            let (Some(path), Some((limits, clamps))) = (node.budget_cgroup(&self.budgets, name), enforced.get(name))
            else {
                continue;
            };
            paths.insert(name.clone(), path.clone());
            self.clamps.insert(name.clone(), clamps.clone());
            let mut cg = CgroupLimits::for_budget(&self.budgets[name].spec.limits, node.host_cores);
            cg.memory_max = limits.memory;
            cg.cpu_quota = limits.cpu_millis.map(CpuQuota::from_millicores);
            cg.pids_max = limits.pids;
            wanted.push((name.clone(), path.clone(), cg));
            if let Some(bg) = &self.budgets[name].spec.background_cpu
                && let Ok(bg_path) = path.child(BACKGROUND_CGROUP)
            {
                let millis = bg.value().millicores(node.host_cores).min(limits.cpu_millis.unwrap_or(u64::MAX));
                let cap = CgroupLimits { cpu_quota: Some(CpuQuota::from_millicores(millis)), ..Default::default() };
                wanted.push((name.clone(), bg_path, cap));
            }
        }
        wanted.retain(|(_, p, l)| self.budget_limits.get(p) != Some(l) || !node.driver.exists(p));
        for (_, p, l) in wanted.iter().rev() {
            if node.driver.exists(p) && node.driver.update(p, l).is_ok() {
                self.budget_limits.insert(p.clone(), l.clone());
            }
        }
        for (name, p, l) in &wanted {
            if self.budget_limits.get(p) == Some(l) {
                continue;
            }
            match node.driver.ensure(p, l) {
                Ok(()) => {
                    self.budget_limits.insert(p.clone(), l.clone());
                }
                Err(e) => tracing::warn!(budget = %name, cgroup = %p, error = %e, "budget cgroup"),
            }
        }
        for (name, old) in std::mem::replace(&mut self.budget_paths, paths.clone()) {
            if paths.get(&name) != Some(&old) {
                self.doomed.insert(old);
            }
        }
        // A cgroup that is (or holds) a live budget's stays.
        self.doomed.retain(|d| !paths.values().any(|p| p.ancestors_and_self().any(|a| a == *d)));
    }
}

/// Sets `LimitsClamped` on a budget's status from its clamps, with a Warning Event when it
/// becomes true or its message changes: a limit over the parent's is never silently
/// unenforced.
pub(super) fn set_limits_clamped(
    node: &Node,
    b: &ResourceBudget,
    status: &mut ResourceBudgetStatus,
    clamps: &[admission::Clamp],
) {
    let clamped = !clamps.is_empty();
    let note = clamps.iter().map(admission::Clamp::message).collect::<Vec<_>>().join("; ");
    let was = find_condition(&status.conditions, "LimitsClamped").map(|c| (c.status, c.message.clone()));
    set_condition(
        &mut status.conditions,
        Condition::new(
            "LimitsClamped",
            clamped,
            if clamped { "OverParent" } else { "WithinParent" },
            if clamped { note.clone() } else { "its limits are within its parent's".to_owned() },
        ),
    );
    if clamped && was.is_none_or(|(s, m)| s != ConditionStatus::True || m != note) {
        record_event(node, b, "LimitsClamped", &note);
    }
}
