//! `rateLimit`: how many A2A requests an Agent (or all the agents charged to a
//! ResourceBudget) may be sent in any window of time — `{requests: 60, per: 1m}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::Duration;

/// The most requests that may start in any window of `per`. Each `SendMessage` of an attempt
/// (a first try, a retry, a re-send after `Retry-After`) is one request; following a task
/// (`GetTask`, `SubscribeToTask`) is not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per window: 1 to 10000.
    #[schemars(range(min = 1, max = 10000))]
    pub requests: u32,
    /// The window, a positive duration (`1s`, `1m`, `1h`).
    pub per: Duration,
}

impl RateLimit {
    /// `2 requests per 3s`.
    pub fn describe(&self) -> String {
        let noun = if self.requests == 1 { "request" } else { "requests" };
        format!("{} {noun} per {}", self.requests, self.per)
    }
}

#[cfg(test)]
mod tests {
    fn errors(kind_and_spec: &str) -> Vec<String> {
        let value = serde_yaml_ng::from_str(kind_and_spec).expect("yaml");
        match crate::api::validate::validate(&value) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn agent(rate: &str) -> String {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: a }}\nspec: {{ url: 'http://x:1', rateLimit: {rate} }}\n"
        )
    }

    fn budget(rate: &str) -> String {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: b }}\nspec: {{ rateLimit: {rate} }}\n"
        )
    }

    #[test]
    fn a_rate_limit_needs_at_least_one_request_in_a_positive_window() {
        assert_eq!(errors(&agent("{ requests: 60, per: 1m }")), Vec::<String>::new());
        assert_eq!(errors(&budget("{ requests: 2, per: 3s }")), Vec::<String>::new());
        let cases = [
            ("{ requests: 0, per: 1m }", "spec.rateLimit.requests: 0 is below the minimum 1"),
            ("{ requests: 10001, per: 1m }", "spec.rateLimit.requests: 10001 is above the maximum 10000"),
            ("{ requests: 5, per: 0s }", "spec.rateLimit.per: 0s is not a positive duration"),
            ("{ requests: 5 }", "spec.rateLimit.per"),
            ("{ requests: 5, per: soon }", "spec.rateLimit.per"),
            ("{ requests: 5, per: 1m, burst: 3 }", "spec.rateLimit.burst"),
        ];
        for (rate, want) in cases {
            for text in [agent(rate), budget(rate)] {
                let got = errors(&text);
                assert!(got.iter().any(|e| e.contains(want)), "{rate}: {got:?} does not mention {want:?}");
            }
        }
    }
}
