//! Types shared by the three kinds: resources, priorities, conditions, timestamps.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::quantity::{Cpu, Memory, Pids};

/// The API group of every a2a kind.
pub const GROUP: &str = "a2a.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// `GROUP/VERSION`.
pub const API_VERSION: &str = "a2a.dev/v1alpha1";

/// An amount of each resource a2a accounts for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    /// CPU: cores (`2`, `1.5`), millicores (`500m`), or a share of the host (`"60%"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Memory in bytes: `512Mi`, `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
}

impl ResourceAmounts {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.pids.is_none()
    }
}

/// Scheduling priority: orders dispatch and maps to CPU weight. `background` work is
/// also capped by its budget's `backgroundCpu`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
    Background,
}

impl Priority {
    /// Higher runs first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::Critical => 4,
            Priority::High => 3,
            Priority::Normal => 2,
            Priority::Low => 1,
            Priority::Background => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time, written as RFC 3339 (`2026-11-24T05:25:32Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub jiff::Timestamp);

impl Time {
    pub fn now() -> Self {
        Time(jiff::Timestamp::now())
    }

    /// Now in whole seconds, as Kubernetes writes `metav1.Time` (conditions'
    /// `lastTransitionTime`).
    pub fn now_in_seconds() -> Self {
        let t = jiff::Timestamp::now();
        Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Milliseconds: task durations are often shorter than a second. (Kubernetes clients
        // parse fractional RFC 3339 seconds.)
        write!(f, "{}", self.0.round(jiff::Unit::Millisecond).unwrap_or(self.0))
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse::<jiff::Timestamp>()
            .map(Time)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Time")
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// `True`, `False` or `Unknown`, as in Kubernetes conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation about an object, in the shape of Kubernetes `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect observed: `Ready`, `Admitted`, `Throttled`, `Pressure`, `AlertFiring`...
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// A CamelCase word for machines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_owned(),
            status: if status { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: Some(Time::now_in_seconds()),
            observed_generation: None,
        }
    }
}

/// Sets `cond` in `conditions`, keeping `lastTransitionTime` when the status did not change.
/// Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(old) => {
            if old.status == cond.status {
                cond.last_transition_time = old.last_transition_time;
            }
            let changed = old.status != cond.status
                || old.reason != cond.reason
                || old.message != cond.message
                || old.observed_generation != cond.observed_generation;
            *old = cond;
            changed
        }
        None => {
            conditions.push(cond);
            true
        }
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Serde helper: skip a number when it is zero.
pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[cfg(test)]
mod condition_time_tests {
    use super::*;

    #[test]
    fn a_condition_changes_at_a_whole_second_as_kubernetes_writes_it() {
        let c = Condition::new("Ready", true, "Running", "up");
        let t = c.last_transition_time.unwrap().to_string();
        assert!(t.ends_with('Z') && !t.contains('.') && t.len() == 20, "{t}");
    }
}
