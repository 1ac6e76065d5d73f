//! The `ResourceBudget` kind: a share of the host (or cluster) that agents are admitted into
//! and that the kernel enforces on their sum.
// clippy reads the repeated `printcolumn(type_ = ...)` keys of the derive as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, ResourceAmounts, is_zero};
use super::quantity::{Cpu, Memory, Percent};

/// A budget of memory, CPU and pids for a group of agents. Budgets nest like cgroups.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "a2a.dev",
    version = "v1alpha1",
    kind = "ResourceBudget",
    plural = "resourcebudgets",
    shortname = "rb",
    category = "a2a",
    status = "ResourceBudgetStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A budget of memory, CPU and pids that agents are admitted into and the kernel enforces on their sum.",
    printcolumn(name = "Memory", type_ = "string", json_path = ".spec.limits.memory"),
    printcolumn(name = "CPU", type_ = "string", json_path = ".spec.limits.cpu"),
    printcolumn(name = "Allocated-Mem", type_ = "string", json_path = ".status.allocated.memory"),
    printcolumn(name = "Used-Mem", type_ = "string", json_path = ".status.used.memory", priority = 1),
    printcolumn(name = "Agents", type_ = "integer", json_path = ".status.agents"),
    printcolumn(name = "Parent", type_ = "string", json_path = ".spec.parent", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceBudgetSpec {
    /// The most all agents in this budget (and its children) may use together.
    #[serde(default, skip_serializing_if = "ResourceAmounts::is_empty")]
    pub limits: ResourceAmounts,
    /// The enclosing budget; its limits bound this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Host memory always left free: agents are not admitted when the host would drop below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<Memory>,
    /// The CPU all `background` agents of this budget may use together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_cpu: Option<Cpu>,
    /// Thresholds whose crossing records an Event, sets the `AlertFiring` condition and, with
    /// `notify`, calls a webhook in Alertmanager's format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// The most A2A requests sent to all agents charged to this budget (and its child
    /// budgets) together, in any window: `{requests: 600, per: 1m}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<super::ratelimit::RateLimit>,
    /// Automatic throttling under pressure (local mode): above a threshold, dispatch to this
    /// budget's agents slows and its `background` agents are frozen until pressure falls.
    /// On by default; `{enabled: false}` turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
}

/// When a budget counts as under pressure, and how far dispatch slows then.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throttle {
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The share of time some of the budget's tasks wait for CPU (PSI `some`) above which it
    /// is under pressure. Default `40%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Percent>,
    /// The same for memory (reclaim, swap-in, refaults). Default `20%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Percent>,
    /// The same for I/O. Default: I/O pressure is not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<Percent>,
    /// Requests per minute sent to the budget's agents together at the threshold; the rate
    /// falls with pressure to a tenth of it at 100%. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Whether `background` agents are frozen under pressure. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_background: Option<bool>,
}

/// The default `throttle.cpu`, in hundredths of a percent.
pub const DEFAULT_THROTTLE_CPU: u32 = 4000;
/// The default `throttle.memory`, in hundredths of a percent.
pub const DEFAULT_THROTTLE_MEMORY: u32 = 2000;
/// The default `throttle.requestsPerMinute`.
pub const DEFAULT_THROTTLE_RATE: u32 = 600;

impl ResourceBudgetSpec {
    /// Whether automatic throttling is on.
    pub fn throttle_enabled(&self) -> bool {
        self.throttle.as_ref().and_then(|t| t.enabled).unwrap_or(true)
    }

    /// Thresholds in hundredths of a percent (cpu, memory, io); `None`: not watched.
    pub fn throttle_thresholds(&self) -> [Option<u32>; 3] {
        let t = self.throttle.clone().unwrap_or_default();
        [
            Some(t.cpu.map_or(DEFAULT_THROTTLE_CPU, |p| p.value())),
            Some(t.memory.map_or(DEFAULT_THROTTLE_MEMORY, |p| p.value())),
            t.io.map(|p| p.value()),
        ]
    }

    pub fn throttle_rate(&self) -> u32 {
        self.throttle.as_ref().and_then(|t| t.requests_per_minute).unwrap_or(DEFAULT_THROTTLE_RATE)
    }

    pub fn freeze_background(&self) -> bool {
        self.throttle.as_ref().and_then(|t| t.freeze_background).unwrap_or(true)
    }
}

/// Automatic throttling in effect (see [`Throttle`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleStatus {
    /// When the budget entered pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<super::common::Time>,
    /// What is over its threshold, with the level measured: `cpu 62%`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pressure: Vec<String>,
    /// Requests per minute now allowed to the budget's agents together.
    pub requests_per_minute: u32,
    /// Agents frozen (`namespace/name`), which get no requests until pressure falls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

/// Fires when measured use of `resource` is above `above` of the budget's limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alert {
    pub resource: AlertResource,
    /// A share of the limit: `"90%"`.
    pub above: Percent,
    /// A webhook called when the alert fires and when it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<AlertNotify>,
}

/// Where an alert is sent: an Alertmanager webhook receiver (`POST`, payload version 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertNotify {
    /// `http://` or `https://` URL the payload is posted to.
    pub url: String,
    /// A key of a Secret whose value is sent as `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<NotifySecretRef>,
    /// A key of a Secret holding a CA bundle (PEM) trusted for an `https://` URL in addition
    /// to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<NotifySecretRef>,
}

/// A key of a Secret. Budgets belong to no namespace, so the Secret's is named (default:
/// `default`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifySecretRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
}

impl NotifySecretRef {
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertResource {
    Memory,
    Cpu,
    Pids,
}

/// What is admitted into, and used of, a budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceBudgetStatus {
    /// The sum of admitted agents' limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Amounts>,
    /// Measured use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Amounts>,
    /// Admitted agents.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub agents: u32,
    /// Agents waiting for room, `namespace/name`, in admission order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Present while automatic throttling slows dispatch to its agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleStatus>,
    /// `Pressure`, `AlertFiring`, `Throttled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Amounts as written in status: quantities for people, numbers for machines.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpu_millicores: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pids: u64,
}
