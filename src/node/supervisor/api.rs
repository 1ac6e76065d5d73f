//! The node's side of the API server: the watches that feed the loop, the default budget,
//! and the writer that drains the status queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use super::{FIELD_MANAGER, Key, Node, NodeEvent, WRITES_IN_FLIGHT, default_budget};
use crate::api::agent::AgentStatus;
use crate::api::budget::ResourceBudgetStatus;
use crate::api::{Agent, DEFAULT_BUDGET, ResourceBudget};

/// The object a status write is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum WriteTarget {
    Agent(Key),
    Budget(String),
}

pub(super) enum StatusBody {
    Agent(Box<AgentStatus>),
    Budget(Box<ResourceBudgetStatus>),
}

/// Statuses waiting to be written: the latest one per object. The loop queues; one writer
/// task drains the queue with up to [`WRITES_IN_FLIGHT`] writes at a time (never two for one
/// object at once), so a burst of starts is not serialised behind round trips and commits.
#[derive(Default)]
pub(super) struct StatusQueue {
    pub(super) pending: std::sync::Mutex<HashMap<WriteTarget, StatusBody>>,
    pub(super) ready: tokio::sync::Notify,
    /// Set at shutdown: the writer ends once the queue is empty.
    pub(super) closed: std::sync::atomic::AtomicBool,
}

impl StatusQueue {
    pub(super) fn push(&self, target: WriteTarget, body: StatusBody) {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(target, body);
        self.ready.notify_one();
    }

    pub(super) fn take(&self) -> Vec<(WriteTarget, StatusBody)> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain().collect()
    }
}

pub(super) async fn ensure_default_budget(client: &kube::Client) {
    let api: Api<ResourceBudget> = Api::all(client.clone());
    match api.get_opt(DEFAULT_BUDGET).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            if let Err(e) = api.create(&PostParams::default(), &default_budget()).await {
                tracing::warn!(error = %e, "could not create the default budget");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the default budget"),
    }
}

/// Drains the status queue: the latest status per object, several writes in flight.
pub(super) async fn write_statuses(node: Arc<Node>) {
    loop {
        let batch = node.writes.take();
        if batch.is_empty() {
            if node.writes.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            node.writes.ready.notified().await;
            continue;
        }
        futures::stream::iter(batch)
            .for_each_concurrent(WRITES_IN_FLIGHT, |(target, body)| node.write_status(target, body))
            .await;
    }
}

impl Node {
    pub(super) async fn write_status(&self, target: WriteTarget, body: StatusBody) {
        // Named in the objects' managedFields as the writer of their status.
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let (url, name, status) = match (&target, body) {
            (WriteTarget::Agent((ns, name)), StatusBody::Agent(status)) => {
                (Agent::url_path(&(), Some(ns)), name, serde_json::to_value(&status))
            }
            (WriteTarget::Budget(name), StatusBody::Budget(status)) => {
                (ResourceBudget::url_path(&(), None), name, serde_json::to_value(&status))
            }
            _ => return,
        };
        // The whole status is replaced (a JSON patch `add` of `/status`): a merge patch could
        // not clear what the new status leaves out (`instances` of stopped replicas). The
        // answer (the whole object) is not decoded: nothing here reads it, and the write comes
        // back through the watch anyway.
        let result = match status.map_err(kube::Error::SerdeError).and_then(|value| {
            let add =
                json_patch::AddOperation { path: json_patch::jsonptr::PointerBuf::from_tokens(["status"]), value };
            let patch = Patch::<()>::Json(json_patch::Patch(vec![json_patch::PatchOperation::Add(add)]));
            kube::core::Request::new(url)
                .patch_subresource("status", name, &params, &patch)
                .map_err(kube::Error::BuildRequest)
        }) {
            Ok(request) => self.client.request_text(request).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(target = ?target, error = %e, "status write");
            let _ = self.tx.send(NodeEvent::WriteFailed(target));
        }
    }
}

/// Feeds one kind's watch events into the loop; `InitDone` says the list is complete.
pub(super) async fn watch_kind<K>(
    node: Arc<Node>,
    what: &'static str,
    apply: fn(K) -> NodeEvent,
    gone: fn(&K) -> NodeEvent,
    config: watcher::Config,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let api: Api<K> = Api::all(node.client.clone());
    let mut stream = watcher(api, config).boxed();
    while let Some(ev) = stream.next().await {
        let sent = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => node.tx.send(apply(o)),
            Ok(watcher::Event::Delete(o)) => node.tx.send(gone(&o)),
            Ok(watcher::Event::InitDone) => node.tx.send(NodeEvent::Synced(what)),
            Ok(watcher::Event::Init) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "{what} watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
