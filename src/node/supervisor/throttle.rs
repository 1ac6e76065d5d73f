//! Automatic throttling on the node: one pressure watch per budget ([`crate::node::pressure`]),
//! and what pressure does. While a budget is under pressure its status carries `throttle`
//! (the paced request rate the workflow engine applies to its agents, and the agents frozen)
//! and the `Throttled` condition; its `background` agents (and those of its child budgets)
//! are frozen and thawed when pressure falls, with an Event on the budget for each start and
//! end of throttling and on the agent for each freeze and thaw. Nothing stays frozen when the
//! budget, the agent or the node goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::{Key, Node, NodeEvent, World, record_event};
use crate::api::budget::{ResourceBudgetStatus, ThrottleStatus};
use crate::api::common::{Time, find_condition, set_condition};
use crate::api::{Condition, Priority};
use crate::node::cgroup::CgroupPath;
use crate::node::pressure::{self, Reading, WatchConfig};

/// A budget's pressure as the loop knows it.
#[derive(Clone, Debug)]
pub(super) struct BudgetPressure {
    pub reading: Reading,
    pub since: Time,
}

impl World {
    /// Starts a watch for every budget with a cgroup and throttling on, and stops the others
    /// (their pressure is forgotten: what they froze thaws at the next pass).
    pub(super) fn ensure_pressure_watches(&mut self, node: &Arc<Node>, paths: &BTreeMap<String, CgroupPath>) {
        let mut wanted = BTreeMap::new();
        for (name, path) in paths {
            let Some(b) = self.budgets.get(name) else { continue };
            if !b.spec.throttle_enabled() {
                continue;
            }
            let limits = crate::controller::admission::budget_limits(
                &b.spec,
                crate::controller::admission::Host::Local { cores: node.host_cores },
            )
            .unwrap_or_default();
            wanted.insert(
                name.clone(),
                WatchConfig {
                    budget: name.clone(),
                    cgroup: path.clone(),
                    pressure_dir: node.driver.pressure_dir(path),
                    thresholds: b.spec.throttle_thresholds(),
                    memory_limit: limits.memory,
                },
            );
        }
        self.watches.retain(|name, w| wanted.get(name) == Some(&w.config));
        self.pressure.retain(|name, _| self.watches.contains_key(name));
        for (name, config) in wanted {
            if self.watches.contains_key(&name) {
                continue;
            }
            let tx = node.tx.clone();
            let report = move |budget: &str, reading: Reading| {
                let _ = tx.send(NodeEvent::Pressure { budget: budget.to_owned(), reading });
            };
            match pressure::watch(config, node.driver.clone(), report) {
                Ok(w) => {
                    self.watches.insert(name, w);
                }
                Err(e) => tracing::warn!(budget = %name, error = %e, "cannot start the pressure watch"),
            }
        }
        self.freezes_dirty = true;
    }

    /// A watch's new reading: Events when throttling starts or ends, and a pass that
    /// rewrites the budget's status and freezes or thaws its background agents.
    pub(super) fn pressure_changed(&mut self, node: &Node, budget: String, reading: Reading) {
        if !self.watches.contains_key(&budget) {
            return;
        }
        let was = self.pressure.get(&budget).is_some_and(|p| p.reading.under);
        if let Some(b) = self.budgets.get(&budget)
            && was != reading.under
        {
            if reading.under {
                let rate = pressure::paced_rate(b.spec.throttle_rate(), &b.spec.throttle_thresholds(), &reading);
                let msg = format!(
                    "{} pressure ({}) is over its threshold; dispatch to its agents slows to {rate} requests per minute{}",
                    reading.signal,
                    reading.describe_over(),
                    if b.spec.freeze_background() { " and its background agents are frozen" } else { "" }
                );
                tracing::info!(budget = %budget, "{msg}");
                record_event(node, b, "ThrottlingStarted", &msg);
            } else {
                let msg =
                    "pressure fell below its thresholds; dispatch resumes at full rate and background agents thaw";
                tracing::info!(budget = %budget, "{msg}");
                record_event(node, b, "ThrottlingStopped", msg);
            }
        }
        let since = match self.pressure.get(&budget) {
            Some(p) if p.reading.under && reading.under => p.since,
            _ => Time::now(),
        };
        let entered_or_left = was != reading.under;
        self.pressure.insert(budget, BudgetPressure { reading, since });
        if entered_or_left {
            self.budgets_dirty = true;
            self.freezes_dirty = true;
        } else {
            // Only its levels moved: which agents are frozen stays, and its status shows the
            // new levels (and the rate they pace dispatch to) within a second, coalesced.
            let at = Instant::now() + super::PRESSURE_LEVELS_EVERY;
            self.budget_status_at = Some(self.budget_status_at.map_or(at, |t| t.min(at)));
        }
    }

    /// Whether the agent's budget, or a budget enclosing it, is under pressure and freezes
    /// background agents.
    fn freezes(&self, budget: &str) -> bool {
        let Some(chain) = Node::chain(&self.budgets, budget) else { return false };
        chain.iter().any(|b| {
            self.pressure.get(b).is_some_and(|p| p.reading.under)
                && self.budgets.get(b).is_some_and(|b| b.spec.freeze_background())
        })
    }

    /// Freezes the running replicas of background agents in budgets under pressure, and
    /// thaws every other replica frozen before; each agent's change is an Event.
    pub(super) fn apply_freezes(&mut self, node: &Node) {
        if !std::mem::take(&mut self.freezes_dirty) {
            return;
        }
        let mut wanted: BTreeMap<CgroupPath, Key> = BTreeMap::new();
        for (k, a) in &self.agents {
            if a.spec.priority() != Priority::Background || !self.freezes(a.spec.budget()) {
                continue;
            }
            if let Some(rt) = self.runtime.get(k) {
                for r in rt.replicas.values().filter(|r| r.process.is_some()) {
                    wanted.insert(r.cgroup.clone(), k.clone());
                }
            }
        }
        let mut changed: BTreeMap<Key, bool> = BTreeMap::new();
        for (cg, k) in self.frozen.clone() {
            if wanted.contains_key(&cg) {
                continue;
            }
            if let Err(e) = node.driver.thaw(&cg)
                && node.driver.exists(&cg)
            {
                tracing::warn!(cgroup = %cg, error = %e, "cannot thaw");
                continue;
            }
            self.frozen.remove(&cg);
            changed.insert(k, false);
        }
        for (cg, k) in wanted {
            if self.frozen.contains_key(&cg) {
                continue;
            }
            match node.driver.freeze(&cg) {
                Ok(()) => {
                    self.frozen.insert(cg, k.clone());
                    changed.insert(k, true);
                }
                Err(e) => tracing::warn!(cgroup = %cg, error = %e, "cannot freeze"),
            }
        }
        for (k, _) in changed {
            let now_frozen = self.frozen.values().any(|f| *f == k);
            let Some(rt) = self.runtime.get_mut(&k) else { continue };
            if rt.frozen == now_frozen {
                continue;
            }
            rt.frozen = now_frozen;
            self.dirty.insert(k.clone());
            self.budgets_dirty = true;
            if let Some(a) = self.agents.get(&k) {
                let (reason, msg) = if now_frozen {
                    ("Frozen", format!("frozen while budget {:?} is under pressure", a.spec.budget()))
                } else {
                    ("Thawed", "thawed: pressure fell".to_owned())
                };
                record_event(node, a, reason, &msg);
            }
        }
    }

    /// Thaws everything this node froze (at shutdown: nothing is left frozen).
    pub(super) fn thaw_all(&mut self, node: &Node) {
        for (cg, _) in std::mem::take(&mut self.frozen) {
            if let Err(e) = node.driver.thaw(&cg)
                && node.driver.exists(&cg)
            {
                tracing::warn!(cgroup = %cg, error = %e, "cannot thaw at shutdown");
            }
        }
        self.watches.clear();
    }

    /// Sets a budget's `throttle` status and `Throttled` condition from its pressure.
    pub(super) fn set_throttle_status(&self, name: &str, status: &mut ResourceBudgetStatus) {
        let Some(b) = self.budgets.get(name) else { return };
        let under = self.pressure.get(name).filter(|p| p.reading.under);
        status.throttle = under.map(|p| {
            let frozen: BTreeSet<String> = self
                .frozen
                .values()
                .filter(|k| {
                    self.agents
                        .get(*k)
                        .and_then(|a| Node::chain(&self.budgets, a.spec.budget()))
                        .is_some_and(|c| c.iter().any(|b| b == name))
                })
                .map(|k| format!("{}/{}", k.0, k.1))
                .collect();
            ThrottleStatus {
                since: Some(p.since),
                pressure: p.reading.over.iter().map(|(r, bp)| format!("{r} {}", pressure::percent(*bp))).collect(),
                requests_per_minute: pressure::paced_rate(
                    b.spec.throttle_rate(),
                    &b.spec.throttle_thresholds(),
                    &p.reading,
                ),
                frozen: frozen.into_iter().collect(),
            }
        });
        let condition = match (&status.throttle, self.watches.get(name)) {
            (Some(t), _) => Some(Condition::new(
                "Throttled",
                true,
                "Pressure",
                format!(
                    "{} over its threshold: dispatch slowed to {} requests per minute",
                    t.pressure.join(", "),
                    t.requests_per_minute
                ),
            )),
            (None, Some(w)) => Some(Condition::new(
                "Throttled",
                false,
                "BelowThresholds",
                format!(
                    "pressure is watched ({}) and below its thresholds",
                    if w.config.pressure_dir.is_some() { "PSI" } else { "cgroup v1 throttled time and memory use" }
                ),
            )),
            // Off, or no cgroup: a condition said before stays only if it was false.
            (None, None) => find_condition(&status.conditions, "Throttled")
                .is_some()
                .then(|| Condition::new("Throttled", false, "Off", "automatic throttling is off for this budget")),
        };
        if let Some(c) = condition {
            set_condition(&mut status.conditions, c);
        }
    }
}
