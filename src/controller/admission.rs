//! Admission: which agents fit in their ResourceBudgets (and every ancestor budget), decided
//! as a plain function over data so it is tested without a kernel or an API server.
//!
//! Rules (Kueue-like quota at admission, a systemd slice at run time):
//! - An agent's demand is its per-replica limit × replicas, for each resource its budget
//!   chain limits; without a limit its request counts, else nothing (the kernel still caps
//!   the budget's sum, since the budget is the agent's parent cgroup).
//! - Admitted agents stay admitted (no preemption); waiting agents are considered in
//!   priority order, then creation order, and each is admitted as soon as it fits
//!   (best-effort: a small low-priority agent may pass a big high-priority one that does not fit).
//! - A budget's `reserve` keeps that much host memory free: a new agent is not admitted when
//!   the host's available memory minus its memory demand would drop below it.

use std::collections::{BTreeMap, HashMap};

use crate::api::Priority;

/// Amounts in base units: bytes, millicores, pids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub memory: u64,
    pub cpu_millis: u64,
    pub pids: u64,
}

/// As budgets' status writes amounts: quantities for people beside the numbers.
impl From<Amounts> for crate::api::budget::Amounts {
    fn from(a: Amounts) -> Self {
        crate::api::budget::Amounts {
            memory: Some(crate::api::quantity::format_bytes(a.memory)),
            memory_bytes: a.memory,
            cpu: Some(crate::api::quantity::format_millicores(a.cpu_millis)),
            cpu_millicores: a.cpu_millis,
            pids: a.pids,
        }
    }
}

impl Amounts {
    fn add(self, o: Amounts) -> Amounts {
        Amounts {
            memory: self.memory.saturating_add(o.memory),
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            pids: self.pids.saturating_add(o.pids),
        }
    }
}

/// Limits of a budget; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    pub parent: Option<String>,
    pub limits: Limits,
    /// Host memory (bytes) this budget keeps free.
    pub reserve: Option<u64>,
}

/// An agent asking for room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `namespace/name`.
    pub key: String,
    pub budget: String,
    pub priority: Priority,
    /// Orders equal priorities: older first (creation time, then key).
    pub created: i64,
    /// Demand of all replicas together.
    pub demand: Amounts,
    /// Whether it was admitted before (it keeps its room).
    pub admitted: bool,
}

/// Why an agent waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    Pending { reason: &'static str, message: String },
}

/// The outcome for everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub verdicts: BTreeMap<String, Verdict>,
    /// Per budget: the sum of admitted demand in the budget and its children.
    pub allocated: BTreeMap<String, Amounts>,
    /// Per budget: agents admitted directly into it.
    pub agents: BTreeMap<String, u32>,
    /// Per budget: agents waiting for room in it, in the order they will be considered.
    pub pending: BTreeMap<String, Vec<String>>,
}

/// An agent's demand: its limits (else requests) × replicas. CPU given as a share of the
/// host counts with `host_cores` (locally); without it (on a cluster, where such CPU cannot
/// run) it counts as nothing.
pub fn demand(agent: &crate::api::Agent, host_cores: Option<u32>) -> Amounts {
    let r = &agent.spec.resources;
    let replicas = u64::from(agent.spec.replicas());
    let memory = r.limits.memory.as_ref().or(r.requests.memory.as_ref()).map_or(0, |m| m.value());
    let cpu = match (r.limits.cpu.as_ref().or(r.requests.cpu.as_ref()).map(|c| c.value()), host_cores) {
        (Some(crate::api::quantity::CpuAmount::Millicores(m)), _) => m,
        (Some(share), Some(cores)) => share.millicores(cores),
        _ => 0,
    };
    let pids = r.limits.pids.as_ref().or(r.requests.pids.as_ref()).map_or(0, |p| p.value());
    Amounts { memory: memory * replicas, cpu_millis: cpu * replicas, pids: pids * replicas }
}

/// Decides admission for all `candidates`. `host_available` is the host's available memory
/// in bytes right now (it already accounts for agents that run).
pub fn admit(budgets: &[Budget], candidates: &[Candidate], host_available: u64) -> Decision {
    let by_name: HashMap<&str, &Budget> = budgets.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut decision = Decision::default();
    for b in budgets {
        decision.allocated.insert(b.name.clone(), Amounts::default());
        decision.agents.insert(b.name.clone(), 0);
    }
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        b.admitted
            .cmp(&a.admitted)
            .then(b.priority.rank().cmp(&a.priority.rank()))
            .then(a.created.cmp(&b.created))
            .then(a.key.cmp(&b.key))
    });
    let mut new_memory: u64 = 0;
    for c in order {
        let verdict = match chain(&by_name, &c.budget) {
            Err(e) => Verdict::Pending { reason: "BudgetNotFound", message: e.to_string() },
            Ok(chain) => match fits(&chain, &decision.allocated, c.demand) {
                Some((reason, message)) if !c.admitted => Verdict::Pending { reason, message },
                _ => {
                    let reserve = chain.iter().filter_map(|b| b.reserve).max().unwrap_or(0);
                    let after = host_available.saturating_sub(new_memory).saturating_sub(c.demand.memory);
                    if !c.admitted && c.demand.memory > 0 && after < reserve {
                        Verdict::Pending {
                            reason: "HostMemoryReserve",
                            message: format!(
                                "admitting it would leave {} of host memory free, below the reserve of {}",
                                crate::api::quantity::format_bytes(after),
                                crate::api::quantity::format_bytes(reserve)
                            ),
                        }
                    } else {
                        if !c.admitted {
                            new_memory = new_memory.saturating_add(c.demand.memory);
                        }
                        for b in &chain {
                            let slot = decision.allocated.entry(b.name.clone()).or_default();
                            *slot = slot.add(c.demand);
                        }
                        *decision.agents.entry(c.budget.clone()).or_default() += 1;
                        Verdict::Admitted
                    }
                }
            },
        };
        if matches!(verdict, Verdict::Pending { .. }) {
            decision.pending.entry(c.budget.clone()).or_default().push(c.key.clone());
        }
        decision.verdicts.insert(c.key.clone(), verdict);
    }
    decision
}

/// A limit of a budget over its parent's (after resolving `%`): the kernel cannot enforce more
/// than the parent's, and a v1 kernel refuses a CPU quota above the parent's outright, so the
/// budget's cgroup gets the parent's (clamped), and the budget says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clamp {
    /// `memory`, `cpu` or `pids`.
    pub resource: &'static str,
    /// What the budget declares.
    pub declared: u64,
    /// The ancestor whose limit binds, and that limit (what the kernel enforces).
    pub by: String,
    pub enforced: u64,
}

impl Clamp {
    /// `limits.cpu 2 is over budget "team"'s 1: 1 is enforced`.
    pub fn message(&self) -> String {
        use crate::api::quantity::{format_bytes, format_millicores};
        let show = |v: u64| match self.resource {
            "memory" => format_bytes(v),
            "cpu" => format_millicores(v),
            _ => v.to_string(),
        };
        format!(
            "limits.{} {} is over budget {:?}'s {}: {} is enforced",
            self.resource,
            show(self.declared),
            self.by,
            show(self.enforced),
            show(self.enforced)
        )
    }
}

/// What the kernel enforces for each budget whose chain is whole: its own limits, each
/// clamped to the smallest limit of its ancestors, with the clamps made. Budgets with a
/// missing parent or in a cycle get nothing (they have no cgroup; their agents wait with
/// `BudgetNotFound`).
pub fn enforced_limits(budgets: &[Budget]) -> BTreeMap<String, (Limits, Vec<Clamp>)> {
    let by_name: HashMap<&str, &Budget> = budgets.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut out = BTreeMap::new();
    for b in budgets {
        let Ok(chain) = chain(&by_name, &b.name) else { continue };
        let mut limits = b.limits;
        let mut clamps = Vec::new();
        {
            let mut bind = |resource: &'static str, own: &mut Option<u64>, of: fn(&Limits) -> Option<u64>| {
                // The tightest ancestor limit, and whose it is (the outermost on a tie).
                let tightest =
                    chain[1..].iter().rev().filter_map(|a| of(&a.limits).map(|l| (l, &a.name))).min_by_key(|(l, _)| *l);
                if let (Some(declared), Some((limit, by))) = (*own, tightest)
                    && declared > limit
                {
                    *own = Some(limit);
                    clamps.push(Clamp { resource, declared, by: by.clone(), enforced: limit });
                }
            };
            bind("memory", &mut limits.memory, |l| l.memory);
            bind("cpu", &mut limits.cpu_millis, |l| l.cpu_millis);
            bind("pids", &mut limits.pids, |l| l.pids);
        }
        out.insert(b.name.clone(), (limits, clamps));
    }
    out
}

/// Why an agent's budget chain cannot be followed (the agent's `BudgetNotFound` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("ResourceBudget {0:?} does not exist")]
    Missing(String),
    #[error("ResourceBudget {child:?} names parent {parent:?}, which does not exist")]
    MissingParent { child: String, parent: String },
    #[error("ResourceBudget parents form a cycle through {0:?}")]
    Cycle(String),
}

/// The budget and its ancestors, innermost first; an error for a missing budget or a cycle.
fn chain<'a>(by_name: &HashMap<&str, &'a Budget>, name: &str) -> Result<Vec<&'a Budget>, ChainError> {
    let mut out: Vec<&Budget> = Vec::new();
    let mut cur = Some(name);
    while let Some(n) = cur {
        let Some(b) = by_name.get(n) else {
            return Err(match out.last() {
                None => ChainError::Missing(n.to_owned()),
                Some(child) => ChainError::MissingParent { child: child.name.clone(), parent: n.to_owned() },
            });
        };
        if out.iter().any(|seen| seen.name == b.name) {
            return Err(ChainError::Cycle(n.to_owned()));
        }
        out.push(b);
        cur = b.parent.as_deref();
    }
    Ok(out)
}

/// One resource to compare: limit, used, wanted, its name, how to show an amount.
type Check = (Option<u64>, u64, u64, &'static str, fn(u64) -> String);

/// The reason of an agent whose demand exceeds a budget's whole limit: it can never be
/// admitted while that limit holds, however much room others free (work sent to it fails at
/// once instead of waiting forever).
pub const EXCEEDS_BUDGET_LIMIT: &str = "ExceedsBudgetLimit";

/// `None` when `demand` fits in every budget of the chain; else why not (the reason:
/// [`EXCEEDS_BUDGET_LIMIT`], or `InsufficientQuota` when room may come free) and where.
fn fits(chain: &[&Budget], allocated: &BTreeMap<String, Amounts>, demand: Amounts) -> Option<(&'static str, String)> {
    use crate::api::quantity::{format_bytes, format_millicores};
    let checks = |b: &Budget| -> [Check; 3] {
        let used = allocated.get(&b.name).copied().unwrap_or_default();
        [
            (b.limits.memory, used.memory, demand.memory, "memory", format_bytes),
            (b.limits.cpu_millis, used.cpu_millis, demand.cpu_millis, "cpu", format_millicores),
            (b.limits.pids, used.pids, demand.pids, "pids", |n| n.to_string()),
        ]
    };
    // What can never fit anywhere in the chain is said first: waiting would not help.
    for b in chain {
        for (limit, _, want, what, show) in checks(b) {
            if let Some(limit) = limit
                && want > limit
            {
                let message = format!(
                    "needs {} {what}, more than budget {:?}'s whole limit of {}",
                    show(want),
                    b.name,
                    show(limit)
                );
                return Some((EXCEEDS_BUDGET_LIMIT, message));
            }
        }
    }
    for b in chain {
        for (limit, used, want, what, show) in checks(b) {
            if let Some(limit) = limit
                && want > 0
                && used.saturating_add(want) > limit
            {
                let message = format!(
                    "needs {} {what} but budget {:?} has {} of {} left",
                    show(want),
                    b.name,
                    show(limit.saturating_sub(used)),
                    show(limit)
                );
                return Some(("InsufficientQuota", message));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    fn budget(name: &str, parent: Option<&str>, memory: u64) -> Budget {
        Budget {
            name: name.into(),
            parent: parent.map(Into::into),
            limits: Limits { memory: Some(memory), ..Default::default() },
            reserve: None,
        }
    }

    fn agent(key: &str, budget: &str, memory: u64) -> Candidate {
        Candidate {
            key: key.into(),
            budget: budget.into(),
            priority: Priority::Normal,
            created: 0,
            demand: Amounts { memory, ..Default::default() },
            admitted: false,
        }
    }

    impl Candidate {
        fn priority(mut self, p: Priority) -> Self {
            self.priority = p;
            self
        }
        fn created(mut self, t: i64) -> Self {
            self.created = t;
            self
        }
        fn already_admitted(mut self) -> Self {
            self.admitted = true;
            self
        }
    }

    fn pending_reason(d: &Decision, key: &str) -> &'static str {
        match &d.verdicts[key] {
            Verdict::Pending { reason, .. } => reason,
            Verdict::Admitted => "Admitted",
        }
    }

    #[test]
    fn agents_that_fit_are_admitted_and_the_rest_wait_with_a_reason() {
        let budgets = [budget("host", None, 8 * GI), budget("team", Some("host"), GI)];
        let d =
            admit(&budgets, &[agent("ns/a", "team", 600 * MI), agent("ns/b", "team", 600 * MI).created(1)], 64 * GI);
        assert_eq!(d.verdicts["ns/a"], Verdict::Admitted);
        assert_eq!(
            d.verdicts["ns/b"],
            Verdict::Pending {
                reason: "InsufficientQuota",
                message: "needs 600Mi memory but budget \"team\" has 424Mi of 1Gi left".into()
            }
        );
        assert_eq!(d.allocated["team"].memory, 600 * MI);
        assert_eq!(d.allocated["host"].memory, 600 * MI, "a child's admissions count in its parent");
        assert_eq!(d.pending["team"], vec!["ns/b".to_owned()]);
        assert_eq!(d.agents["team"], 1);
    }

    #[test]
    fn a_demand_over_a_budgets_whole_limit_can_never_be_admitted_and_says_so() {
        // The team has room now, but the host above it could never hold the agent.
        let budgets = [budget("host", None, GI), budget("team", Some("host"), 4 * GI)];
        let d = admit(&budgets, &[agent("ns/big", "team", 2 * GI)], 64 * GI);
        assert_eq!(
            d.verdicts["ns/big"],
            Verdict::Pending {
                reason: EXCEEDS_BUDGET_LIMIT,
                message: "needs 2Gi memory, more than budget \"host\"'s whole limit of 1Gi".into()
            }
        );
    }

    #[test]
    fn parent_limits_bind_children_even_when_the_child_has_room() {
        let budgets = [budget("host", None, GI), budget("a", Some("host"), GI), budget("b", Some("host"), GI)];
        let d = admit(&budgets, &[agent("x/1", "a", 700 * MI), agent("x/2", "b", 700 * MI).created(1)], 64 * GI);
        assert_eq!(d.verdicts["x/1"], Verdict::Admitted);
        assert_eq!(pending_reason(&d, "x/2"), "InsufficientQuota");
    }

    #[test]
    fn higher_priority_gets_freed_room_first() {
        let budgets = [budget("host", None, GI)];
        let d = admit(
            &budgets,
            &[
                agent("ns/low", "host", 800 * MI).priority(Priority::Low).created(1),
                agent("ns/high", "host", 800 * MI).priority(Priority::High).created(2),
            ],
            64 * GI,
        );
        assert_eq!(d.verdicts["ns/high"], Verdict::Admitted);
        assert_eq!(pending_reason(&d, "ns/low"), "InsufficientQuota");
    }

    #[test]
    fn admitted_agents_keep_their_room_against_higher_priority() {
        let budgets = [budget("host", None, GI)];
        let d = admit(
            &budgets,
            &[
                agent("ns/old", "host", 800 * MI).priority(Priority::Background).already_admitted(),
                agent("ns/vip", "host", 800 * MI).priority(Priority::Critical),
            ],
            64 * GI,
        );
        assert_eq!(d.verdicts["ns/old"], Verdict::Admitted);
        assert_eq!(pending_reason(&d, "ns/vip"), "InsufficientQuota");
    }

    #[test]
    fn deleting_an_agent_admits_the_next_in_line() {
        let budgets = [budget("host", None, GI)];
        let waiting = agent("ns/next", "host", 800 * MI);
        let before =
            admit(&budgets, &[agent("ns/first", "host", 800 * MI).already_admitted(), waiting.clone()], 64 * GI);
        assert_eq!(pending_reason(&before, "ns/next"), "InsufficientQuota");
        let after = admit(&budgets, &[waiting], 64 * GI);
        assert_eq!(after.verdicts["ns/next"], Verdict::Admitted);
    }

    #[test]
    fn the_host_memory_reserve_holds_back_new_agents() {
        let mut host = budget("host", None, 8 * GI);
        host.reserve = Some(2 * GI);
        let d = admit(&[host], &[agent("ns/a", "host", GI), agent("ns/b", "host", GI).created(1)], 3 * GI + 512 * MI);
        assert_eq!(d.verdicts["ns/a"], Verdict::Admitted);
        assert_eq!(
            d.verdicts["ns/b"],
            Verdict::Pending {
                reason: "HostMemoryReserve",
                message: "admitting it would leave 1.5Gi of host memory free, below the reserve of 2Gi".into()
            }
        );
    }

    #[test]
    fn a_missing_budget_is_named() {
        let d = admit(&[budget("host", None, GI)], &[agent("ns/a", "nope", MI)], 64 * GI);
        assert_eq!(
            d.verdicts["ns/a"],
            Verdict::Pending { reason: "BudgetNotFound", message: "ResourceBudget \"nope\" does not exist".into() }
        );
        let d = admit(&[budget("team", Some("gone"), GI)], &[agent("ns/a", "team", MI)], 64 * GI);
        assert_eq!(
            d.verdicts["ns/a"],
            Verdict::Pending {
                reason: "BudgetNotFound",
                message: "ResourceBudget \"team\" names parent \"gone\", which does not exist".into()
            }
        );
    }

    #[test]
    fn a_child_budget_over_its_parent_is_clamped_to_the_tightest_ancestor() {
        let lim = |memory: Option<u64>, cpu: Option<u64>, pids: Option<u64>| Limits { memory, cpu_millis: cpu, pids };
        let b = |name: &str, parent: Option<&str>, limits: Limits| Budget {
            name: name.into(),
            parent: parent.map(Into::into),
            limits,
            reserve: None,
        };
        let budgets = [
            b("host", None, lim(Some(8 * GI), Some(1200), None)),
            b("team", Some("host"), lim(Some(GI), Some(2000), Some(100))),
            b("squad", Some("team"), lim(Some(2 * GI), Some(1500), Some(50))),
            b("free", Some("team"), lim(None, None, None)),
            b("fits", Some("host"), lim(Some(GI), Some(500), None)),
            b("orphan", Some("gone"), lim(Some(GI), None, None)),
        ];
        let e = enforced_limits(&budgets);
        type Row<'a> = (&'a str, Limits, Vec<(&'a str, u64, &'a str, u64)>);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("host", lim(Some(8 * GI), Some(1200), None), vec![]),
            // "2" cores over the host's "60%" of two: the host's 1200m is enforced.
            ("team", lim(Some(GI), Some(1200), Some(100)), vec![("cpu", 2000, "host", 1200)]),
            // Memory over its parent's; CPU over its grandparent's (its parent's is clamped too).
            ("squad", lim(Some(GI), Some(1200), Some(50)), vec![("memory", 2 * GI, "team", GI), ("cpu", 1500, "host", 1200)]),
            // No limit of its own: the kernel bounds it by its ancestors, nothing to clamp.
            ("free", lim(None, None, None), vec![]),
            ("fits", lim(Some(GI), Some(500), None), vec![]),
        ];
        for (name, limits, clamps) in table {
            let (got, got_clamps) = &e[name];
            assert_eq!(*got, limits, "{name}");
            let got_clamps: Vec<(&str, u64, &str, u64)> =
                got_clamps.iter().map(|c| (c.resource, c.declared, c.by.as_str(), c.enforced)).collect();
            assert_eq!(got_clamps, clamps, "{name}");
        }
        assert!(!e.contains_key("orphan"), "a budget whose parent is gone gets no limits (and no cgroup)");
        assert_eq!(e["team"].1[0].message(), "limits.cpu 2 is over budget \"host\"'s 1200m: 1200m is enforced");
    }

    #[test]
    fn cpu_and_pids_are_checked_like_memory() {
        let b = Budget {
            name: "host".into(),
            parent: None,
            limits: Limits { memory: None, cpu_millis: Some(1200), pids: Some(100) },
            reserve: None,
        };
        let mut a = agent("ns/a", "host", 0);
        a.demand = Amounts { memory: 0, cpu_millis: 1000, pids: 10 };
        let mut b2 = agent("ns/b", "host", 0).created(1);
        b2.demand = Amounts { memory: 0, cpu_millis: 500, pids: 10 };
        let d = admit(&[b], &[a, b2], 64 * GI);
        assert_eq!(
            d.verdicts["ns/b"],
            Verdict::Pending {
                reason: "InsufficientQuota",
                message: "needs 500m cpu but budget \"host\" has 200m of 1200m left".into()
            }
        );
    }
}
