//! A ResourceBudget's status from plain facts, the same in both modes: `allocated`, `used`,
//! and the `Pressure` and `AlertFiring` conditions, with the evaluation of its `alerts[]`.
//! The node measures use from the budget's cgroup (memory, pids) and its replicas' CPU; the
//! operator from metrics-server's pod metrics (memory, CPU). Each passes what it measured as
//! [`Use`]; what it did not measure stays unknown and is never taken for zero.
//!
//! - `allocated` is the sum of admitted agents' limits (admission's decision).
//! - `used` is measured use: present when anything was measured, with what was.
//! - `Pressure` is True when agents wait for room in the budget, or measured memory use is
//!   at 90% of the budget's memory limit or more.
//! - `AlertFiring` is True when any alert's resource is measured above its threshold; else
//!   Unknown when an alert's resource is not measured (nothing can be said), else False.

use crate::api::Condition;
use crate::api::budget::{Alert, AlertResource};
use crate::api::common::ConditionStatus;
use crate::api::quantity::{format_bytes, format_millicores};
use crate::controller::admission::{Amounts, Limits};

/// Measured use of a budget (its agents and its children's); `None`: not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Use {
    pub memory: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
}

impl Use {
    fn is_measured(&self) -> bool {
        self.memory.is_some() || self.cpu_millis.is_some() || self.pids.is_some()
    }
}

/// What a mode knows of one budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetFacts<'a> {
    /// Its own limits where agents run (a CPU share resolved locally).
    pub limits: Limits,
    /// Admitted agents' limits, summed over it and its children.
    pub allocated: Amounts,
    pub used: Use,
    /// Agents waiting for room in it.
    pub pending: usize,
    pub alerts: &'a [Alert],
}

/// One alert, evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertState {
    /// `memory`, `cpu` or `pids`.
    pub resource: &'static str,
    /// The threshold as written (`90%`).
    pub above: String,
    /// Whether measured use is above it; `None` when the resource is not measured.
    pub firing: Option<bool>,
}

/// What the facts mean.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSummary {
    pub allocated: crate::api::budget::Amounts,
    pub used: Option<crate::api::budget::Amounts>,
    pub pressure: Condition,
    pub alert_firing: Condition,
    /// Each alert that applies (its resource has a limit), for Events on a change.
    pub alerts: Vec<AlertState>,
}

/// Memory use at or above this share of the limit is pressure (in basis points).
const PRESSURE_AT: u64 = 9000;

/// The alerts of a budget against measured use: each alert whose resource has a limit, and
/// the `AlertFiring` condition they make.
pub fn evaluate_alerts(alerts: &[Alert], limits: &Limits, used: &Use) -> (Vec<AlertState>, Condition) {
    let mut states = Vec::new();
    for alert in alerts {
        let (resource, use_, limit) = match alert.resource {
            AlertResource::Memory => ("memory", used.memory, limits.memory),
            AlertResource::Cpu => ("cpu", used.cpu_millis, limits.cpu_millis),
            AlertResource::Pids => ("pids", used.pids, limits.pids),
        };
        // Without a limit there is no share to cross.
        let Some(limit) = limit.filter(|l| *l > 0) else { continue };
        let bp = u64::from(alert.above.value());
        let firing = use_.map(|u| u128::from(u) * 10_000 / u128::from(limit) >= u128::from(bp));
        states.push(AlertState { resource, above: alert.above.as_written().into_owned(), firing });
    }
    let firing: Vec<String> =
        states.iter().filter(|s| s.firing == Some(true)).map(|s| format!("{} above {}", s.resource, s.above)).collect();
    let unknown: Vec<&str> = states.iter().filter(|s| s.firing.is_none()).map(|s| s.resource).collect();
    let condition = if !firing.is_empty() {
        Condition::new("AlertFiring", true, "ThresholdCrossed", firing.join(", "))
    } else if !unknown.is_empty() {
        let mut c = Condition::new(
            "AlertFiring",
            false,
            "UseNotMeasured",
            format!("{} use is not measured: its alert cannot be evaluated", unknown.join(" and ")),
        );
        c.status = ConditionStatus::Unknown;
        c
    } else {
        Condition::new("AlertFiring", false, "BelowThresholds", "no alert threshold crossed")
    };
    (states, condition)
}

/// A budget's status from `facts` (see the module docs).
pub fn budget_status(facts: &BudgetFacts) -> BudgetSummary {
    let used = facts.used;
    let near_limit = match (used.memory, facts.limits.memory) {
        (Some(u), Some(l)) if l > 0 => u128::from(u) * 10_000 / u128::from(l) >= u128::from(PRESSURE_AT),
        _ => false,
    };
    let pressure = facts.pending > 0 || near_limit;
    let message = match (facts.pending, used.memory) {
        (0, Some(m)) => format!("{} of memory in use", format_bytes(m)),
        (0, None) => "no agent waits for room; memory use is not measured".to_owned(),
        (n, _) => format!("{n} agent(s) waiting for room"),
    };
    let pressure = Condition::new("Pressure", pressure, if pressure { "NearLimit" } else { "Room" }, message);
    let (alerts, alert_firing) = evaluate_alerts(facts.alerts, &facts.limits, &used);
    let measured = used.is_measured().then(|| crate::api::budget::Amounts {
        memory: used.memory.map(format_bytes),
        memory_bytes: used.memory.unwrap_or(0),
        cpu: used.cpu_millis.map(format_millicores),
        cpu_millicores: used.cpu_millis.unwrap_or(0),
        pids: used.pids.unwrap_or(0),
    });
    BudgetSummary { allocated: facts.allocated.into(), used: measured, pressure, alert_firing, alerts }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn alert(resource: AlertResource, above: &str) -> Alert {
        Alert { resource, above: serde_json::from_value(serde_json::json!(above)).expect("percent"), notify: None }
    }

    #[test]
    fn alerts_fire_when_measured_use_crosses_their_share_of_the_limit() {
        let limits = Limits { memory: Some(1000 * MI), cpu_millis: Some(2000), pids: None };
        let mem = |mi: u64| Use { memory: Some(mi * MI), ..Default::default() };
        type Row = (&'static str, Vec<Alert>, Use, Vec<Option<bool>>, ConditionStatus, &'static str, &'static str);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("below", vec![alert(AlertResource::Memory, "90%")], mem(899), vec![Some(false)],
                ConditionStatus::False, "BelowThresholds", "no alert threshold crossed"),
            ("at the threshold fires", vec![alert(AlertResource::Memory, "90%")], mem(900), vec![Some(true)],
                ConditionStatus::True, "ThresholdCrossed", "memory above 90%"),
            ("a fractional threshold", vec![alert(AlertResource::Memory, "50.5%")], mem(505), vec![Some(true)],
                ConditionStatus::True, "ThresholdCrossed", "memory above 50.5%"),
            ("cpu measured", vec![alert(AlertResource::Cpu, "75%")], Use { cpu_millis: Some(1600), ..Default::default() }, vec![Some(true)],
                ConditionStatus::True, "ThresholdCrossed", "cpu above 75%"),
            ("cpu not measured", vec![alert(AlertResource::Cpu, "75%")], mem(10), vec![None],
                ConditionStatus::Unknown, "UseNotMeasured", "cpu use is not measured: its alert cannot be evaluated"),
            ("one firing beats one unknown", vec![alert(AlertResource::Cpu, "75%"), alert(AlertResource::Memory, "80%")], mem(950), vec![None, Some(true)],
                ConditionStatus::True, "ThresholdCrossed", "memory above 80%"),
            ("no limit, no alert", vec![alert(AlertResource::Pids, "10%")], Use { pids: Some(1000), ..Default::default() }, vec![],
                ConditionStatus::False, "BelowThresholds", "no alert threshold crossed"),
            ("no alerts", vec![], mem(1000), vec![], ConditionStatus::False, "BelowThresholds", "no alert threshold crossed"),
        ];
        for (what, alerts, used, firing, status, reason, message) in table {
            let (states, c) = evaluate_alerts(&alerts, &limits, &used);
            assert_eq!(states.iter().map(|s| s.firing).collect::<Vec<_>>(), firing, "{what}");
            assert_eq!((c.status, c.reason.as_str(), c.message.as_str()), (status, reason, message), "{what}");
        }
    }

    #[test]
    fn pressure_is_agents_waiting_or_memory_near_the_limit() {
        let limits = Limits { memory: Some(1000 * MI), ..Default::default() };
        let facts = |pending: usize, memory: Option<u64>| BudgetFacts {
            limits,
            pending,
            used: Use { memory: memory.map(|m| m * MI), ..Default::default() },
            ..Default::default()
        };
        let p = |f: &BudgetFacts| {
            let s = budget_status(f);
            (s.pressure.status, s.pressure.message)
        };
        assert_eq!(p(&facts(0, Some(100))), (ConditionStatus::False, "100Mi of memory in use".into()));
        assert_eq!(p(&facts(0, Some(900))), (ConditionStatus::True, "900Mi of memory in use".into()));
        assert_eq!(p(&facts(2, Some(1))), (ConditionStatus::True, "2 agent(s) waiting for room".into()));
        assert_eq!(
            p(&facts(0, None)),
            (ConditionStatus::False, "no agent waits for room; memory use is not measured".into())
        );
        assert_eq!(budget_status(&facts(0, None)).used, None, "nothing measured: no used at all");
        let used = budget_status(&facts(0, Some(128))).used.expect("measured");
        assert_eq!((used.memory.as_deref(), used.cpu.as_deref()), (Some("128Mi"), None), "cpu not measured: not 0");
    }
}
