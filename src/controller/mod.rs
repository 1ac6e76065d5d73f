//! Controllers: the decisions (admission, the budget chain, agent and budget status, the
//! workflow state machine, dispatch order) as pure functions over data, used by the
//! reconcilers that run them against an API server — the local one (`a2a serve`) or a
//! Kubernetes cluster.

pub mod admission;
pub mod attempts;
pub mod budget_chain;
pub mod budget_status;
pub mod credentials;
pub mod dispatch;
pub mod engine;
pub mod events;
pub mod lifecycle;
pub mod outputs;
pub mod plan;
pub mod readiness;
pub mod rollout;
pub mod status;
pub mod stuck;
