//! a2a: orchestrate AI agents the way Kubernetes orchestrates containers.
//!
//! Users declare Agents, Workflows and ResourceBudgets (`a2a.dev/v1alpha1`) in YAML; the
//! same manifests run on one host under cgroup limits or on a Kubernetes cluster.
#![deny(unsafe_code)]

pub mod a2a;
pub mod api;
pub mod apiserver;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod discovery;
pub mod gateway;
pub mod local;
pub mod membership;
pub mod metrics;
pub mod node;
#[cfg(test)]
mod status_parity;
pub mod telemetry;
pub mod traces;
