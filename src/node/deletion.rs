//! Deleting a local Agent: the object stays (with a `deletionTimestamp`) until the node has
//! stopped its processes and removed its logs, as a Pod stays until the kubelet has stopped
//! its containers. So `a2a delete --wait` and `kubectl delete` return when the processes are
//! gone, and an agent deleted while no daemon runs is stopped (and its logs removed or kept,
//! as its annotations say) by the next one, which still sees the object.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::logs;
use crate::api::Agent;
use crate::cluster::finalizer;

/// The finalizer that holds an Agent for the node until every process of it is gone. The
/// local API server creates an Agent the node will run with it (no write of its own per
/// agent); the node puts it on before a first start when it is missing (an Agent created
/// before, or through a server without a node), and removes it once the processes are gone.
pub const PROCESSES_FINALIZER: &str = "a2a.dev/local-processes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("adding the finalizer {PROCESSES_FINALIZER}: {0}")]
    Hold(#[source] kube::Error),
    #[error("removing the finalizer {PROCESSES_FINALIZER}: {0}")]
    Release(#[source] kube::Error),
    #[error("removing the logs of {namespace}/{agent}: {source}")]
    Logs {
        namespace: String,
        agent: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent is being deleted")]
    Deleting,
    #[error("the agent kept changing while the finalizer {PROCESSES_FINALIZER} was added")]
    Contended,
}

/// Puts the finalizer on `agent` (seen in the node's cache) unless it is there: a merge
/// patch of the whole list, guarded by the object's resourceVersion; on a conflict (another
/// writer, or another replica's start of the same agent) it is read again and retried.
pub async fn hold(client: &kube::Client, agent: &Agent) -> Result<(), Error> {
    let api: Api<Agent> = Api::namespaced(client.clone(), &agent.namespace().unwrap_or_default());
    let mut current = agent.clone();
    for _ in 0..5 {
        if finalizer::has(&current, PROCESSES_FINALIZER) {
            return Ok(());
        }
        if current.meta().deletion_timestamp.is_some() {
            return Err(Error::Deleting);
        }
        let mut finalizers = current.finalizers().to_vec();
        finalizers.push(PROCESSES_FINALIZER.to_owned());
        let patch = serde_json::json!({
            "metadata": {"finalizers": finalizers, "resourceVersion": current.resource_version()}
        });
        match api.patch(&current.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                current = api.get(&current.name_any()).await.map_err(Error::Hold)?;
            }
            Err(e) => return Err(Error::Hold(e)),
        }
    }
    Err(Error::Contended)
}

/// After every process of the deleted `agent` is gone: removes its logs unless its
/// annotations ask to keep them ([`logs::KEEP_LOGS_ANNOTATION`]), then the finalizer, which
/// lets the API server remove the object.
pub async fn release(client: &kube::Client, home: &std::path::Path, agent: &Agent) -> Result<(), Error> {
    let (ns, name) = (agent.namespace().unwrap_or_default(), agent.name_any());
    if !logs::keep_requested(agent.meta().annotations.as_ref()) {
        let (h, n, a) = (home.to_path_buf(), ns.clone(), name.clone());
        tokio::task::spawn_blocking(move || logs::remove_agent_logs(&h, &n, &a))
            .await
            .map_err(|e| Error::Logs { namespace: ns.clone(), agent: name.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| Error::Logs { namespace: ns.clone(), agent: name.clone(), source })?;
    }
    let api: Api<Agent> = Api::namespaced(client.clone(), &ns);
    finalizer::remove(&api, agent, PROCESSES_FINALIZER).await.map_err(Error::Release)
}
