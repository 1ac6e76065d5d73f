//! The fidelity suite: the tools people already use with Kubernetes (the real kubectl 1.32,
//! kubectl 1.35 when `scripts/test-deps.sh` has fetched it, the official Python client and
//! helm 4) against `a2a serve`, each check comparing with what the kube-apiserver does.
//! Every check is one test; `docs/kubernetes-compatibility.md` gives the count and names what
//! is deliberately different. Each area is a module.

mod auth;
mod backup;
#[path = "../common/mod.rs"]
mod common;
mod crds;
mod delete;
mod discovery;
mod drift;
mod gitops;
mod harness;
mod helm;
mod leases;
mod lifecycle;
mod namespaces;
mod objects;
mod openapi;
mod patch;
mod protobuf;
mod python;
mod watch;
