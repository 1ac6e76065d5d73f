//! Controllers: the decisions (admission, the budget chain, agent and budget status, the
//! workflow state machine, dispatch order) as pure functions over data, used by the
//! reconcilers that run them against an API server — the local one (`a2a serve`) or a
//! Kubernetes cluster.

pub mod admission;
pub mod alert_notify;
pub mod attempts;
pub mod budget_chain;
pub mod budget_status;
pub mod config_refs;
pub mod credentials;
pub mod dispatch;
pub mod engine;
pub mod events;
pub mod expand;
pub mod lifecycle;
pub mod offload;
pub mod outputs;
pub mod parts;
pub mod plan;
pub mod rate;
pub mod readiness;
pub mod replies;
pub mod rollout;
pub mod status;
pub mod stuck;
