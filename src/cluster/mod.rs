//! Cluster backend: what the `a2a` operator writes to Kubernetes for each kind, and the
//! reconcilers and leader election that run it.

pub mod agent;
pub mod budget;
pub mod finalizer;
pub mod lease;
pub mod operator;
#[cfg(test)]
pub(crate) mod testing;
pub mod workflow;
pub mod workload;
