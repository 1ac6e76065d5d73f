//! `a2a crd`: the CustomResourceDefinitions, generated from the Rust types.

/// The YAML stream of all CRDs.
pub fn run() -> String {
    crate::api::crds_yaml()
}
