//! Cluster backend: what the `a2a` operator writes to Kubernetes for each kind.

pub mod workload;
