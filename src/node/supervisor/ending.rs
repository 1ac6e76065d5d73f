//! How replicas and the node end: replicas listed in status whose process is gone, and the
//! stop of everything at the end of an `a2a run`.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Node, NodeEvent, Replica, World};
use crate::api::agent::{Instance, Termination};
use crate::api::common::Time;
use crate::node::cgroup::CgroupPath;

impl Replica {
    /// A replica listed in status whose process no longer runs: `ended` when its policy keeps
    /// it stopped, else it starts again at the next pass (counted as a restart).
    pub(super) fn gone(cgroup: CgroupPath, port: u16, inst: &Instance, ended: Option<Termination>) -> Replica {
        Replica {
            started_at: inst.started_at.unwrap_or_else(Time::now),
            ended,
            ..Replica::new(cgroup, port, inst.spec_hash.clone().unwrap_or_default(), inst.restarts)
        }
    }
}

/// Kills what is left in a cgroup and removes it, off the loop.
pub(super) fn remove_in_background(node: &Node, cgroup: CgroupPath) {
    let driver = node.driver.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = driver.remove(&cgroup, Duration::from_secs(5)) {
            tracing::warn!(cgroup = %cgroup, error = %e, "removing an ended replica's cgroup");
        }
    });
}

impl Node {
    /// Kills the stdio runs in progress and waits (briefly) until their threads have removed
    /// their cgroups; none starts after `closing` is set.
    pub(super) async fn stop_stdio_runs(&self) {
        let runs: Vec<CgroupPath> =
            self.stdio_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
        for cgroup in runs {
            let _ = self.driver.kill_all(&cgroup);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stdio_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl World {
    /// At the end of an `a2a run`: nothing new starts; starts already handed off are waited
    /// for (briefly) so that their processes are stopped with the others, not left behind;
    /// then every replica and stdio run is stopped and the whole cgroup tree removed.
    pub(super) async fn stop_everything(
        &mut self,
        node: &std::sync::Arc<Node>,
        rx: &mut mpsc::UnboundedReceiver<NodeEvent>,
    ) {
        node.closing.store(true, std::sync::atomic::Ordering::Release);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.starting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(NodeEvent::Started { key, replica, result })) => self.started(node, key, replica, *result),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.stop_all(node).await;
        node.stop_stdio_runs().await;
        // Nothing of ours runs any more: leave no cgroups behind either.
        if let Err(e) = node.driver.remove(&node.config.layout.top(), Duration::from_secs(5)) {
            tracing::warn!(error = %e, "removing the a2a cgroup tree");
        }
    }

    /// Stops every replica, all at once (each gets its grace period in parallel).
    async fn stop_all(&mut self, node: &Node) {
        let grace = node.config.grace;
        let stops = self.runtime.values_mut().flat_map(|rt| std::mem::take(&mut rt.replicas).into_values()).map(
            |mut r| async move {
                if let Some(mut p) = r.process.take() {
                    let _ = tokio::task::spawn_blocking(move || p.stop(grace)).await;
                }
                r.cgroup
            },
        );
        for cgroup in futures::future::join_all(stops).await {
            if let Err(e) = node.driver.remove(&cgroup, Duration::from_secs(5)) {
                tracing::warn!(cgroup = %cgroup, error = %e, "removing cgroup");
            }
        }
    }
}
