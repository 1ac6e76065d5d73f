//! The three kinds of `a2a.dev/v1alpha1` — Agent, Workflow, ResourceBudget — with their
//! quantities, durations, CRDs and validation. Types and pure functions only: no I/O.

pub mod access;
pub mod agent;
pub mod budget;
pub mod common;
pub mod manifest;
pub mod objectmeta;
pub mod quantity;
pub mod ratelimit;
pub mod reply;
pub mod template;
pub mod update;
pub mod validate;
pub mod validate_refs;
pub mod workflow;
pub mod yaml;

pub use agent::{Agent, AgentSpec, AgentStatus};
pub use budget::{ResourceBudget, ResourceBudgetSpec, ResourceBudgetStatus};
pub use common::{API_VERSION, Condition, GROUP, Priority, ResourceAmounts, Time, VERSION};
pub use workflow::{Workflow, WorkflowSpec, WorkflowStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The budget agents are admitted into when they name none (local mode).
pub const DEFAULT_BUDGET: &str = "host";

/// The kinds a2a serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Agent,
    Workflow,
    ResourceBudget,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Agent, Kind::Workflow, Kind::ResourceBudget];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "Agent",
            Kind::Workflow => "Workflow",
            Kind::ResourceBudget => "ResourceBudget",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Agent => "agents",
            Kind::Workflow => "workflows",
            Kind::ResourceBudget => "resourcebudgets",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::ResourceBudget)
    }

    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The generated CustomResourceDefinition.
    pub fn crd(self) -> CustomResourceDefinition {
        let mut crd = match self {
            Kind::Agent => Agent::crd(),
            Kind::Workflow => Workflow::crd(),
            Kind::ResourceBudget => ResourceBudget::crd(),
        };
        for version in &mut crd.spec.versions {
            if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                tidy_schema(schema);
            }
        }
        crd
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drops the `null` that schemars lists among the values of an optional enum: `nullable`
/// already says it, and an API server would show it to users as an allowed value.
fn tidy_schema(schema: &mut JSONSchemaProps) {
    if let Some(values) = &mut schema.enum_ {
        values.retain(|v| !v.0.is_null());
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        tidy_schema(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &mut schema.items {
        tidy_schema(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &mut schema.additional_properties {
        tidy_schema(extra);
    }
}

/// One object of any a2a kind.
// Objects are few and long-lived; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Agent(Agent),
    Workflow(Workflow),
    ResourceBudget(ResourceBudget),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Agent(_) => Kind::Agent,
            Object::Workflow(_) => Kind::Workflow,
            Object::ResourceBudget(_) => Kind::ResourceBudget,
        }
    }

    pub fn metadata(&self) -> &kube::core::ObjectMeta {
        match self {
            Object::Agent(o) => &o.metadata,
            Object::Workflow(o) => &o.metadata,
            Object::ResourceBudget(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Object::Agent(o) => serde_json::to_value(o),
            Object::Workflow(o) => serde_json::to_value(o),
            Object::ResourceBudget(o) => serde_json::to_value(o),
        };
        // Serializing our own types into a JSON value has no failure mode (string keys only).
        v.unwrap_or_default()
    }
}

/// All CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    Kind::ALL.into_iter().map(Kind::crd).collect()
}

/// All CRDs as one multi-document YAML stream, as `a2a crd` prints and `crds/` holds.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // A CRD is plain data with string keys; YAML serialization cannot fail on it.
        out.push_str(&serde_yaml_ng::to_string(&crd).unwrap_or_default());
    }
    out
}
