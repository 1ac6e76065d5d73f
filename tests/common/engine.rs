//! Helpers for the workflow engine's tests: Agents marked ready at a URL as the agent
//! controller would mark them, Workflows created from YAML, and an engine in the test's
//! runtime.

use std::sync::Arc;

use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// Registers an Agent that a2a reaches at `url`, with the fields of `spec` (skills,
/// `maxConcurrentTasks` — 8 unless given —, `rateLimit`...), and marks it ready there.
pub async fn ready_agent(client: &kube::Client, name: &str, url: &str, spec: serde_json::Value) {
    let mut full = serde_json::json!({"url": url, "maxConcurrentTasks": 8});
    if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(spec.clone());
    }
    let agent: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": full
    }))
    .expect("agent");
    Api::<Agent>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &agent)
        .await
        .expect("create agent");
    point_agent(client, name, url).await;
}

/// Writes the status the agent controller writes for an agent ready at `url`.
pub async fn point_agent(client: &kube::Client, name: &str, url: &str) {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let status =
        serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [url]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
}

/// Creates the Workflow `yaml` holds in `default`.
pub async fn create_workflow(client: &kube::Client, yaml: &str) -> Workflow {
    let wf: Workflow = serde_yaml_ng::from_str(yaml).expect("workflow yaml");
    Api::<Workflow>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &wf)
        .await
        .expect("create workflow")
}

/// Runs an engine with the default configuration until the sender is used or dropped.
pub fn start_engine(client: &kube::Client) -> tokio::sync::oneshot::Sender<()> {
    let engine = Engine::new(client.clone(), EngineConfig::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&engine).run(async move {
        let _ = rx.await;
    }));
    tx
}
