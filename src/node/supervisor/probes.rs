//! Tasks that watch a replica and report to the loop: its exit (pidfd readiness) and its
//! readiness probe (a fetch of its agent card).

use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::{Key, Node, NodeEvent};
use crate::api::agent::CardSummary;
use crate::node::process::AgentProcess;

impl Node {
    /// Waits (without a thread) until `pid` ends, then reports it.
    pub(super) fn watch_exit(&self, key: Key, replica: u32, p: &AgentProcess) {
        let pid = p.pid();
        let Ok(fd) = p.pidfd() else { return };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and refers to the
            // same pidfd until the AsyncFd is dropped, which is what registration requires.
            #[allow(unsafe_code)]
            let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            if let Ok(async_fd) = registered {
                let _ = async_fd.readable().await;
            }
            let _ = tx.send(NodeEvent::Exited { key, replica, pid });
        });
    }

    /// Fetches the agent card; a failure is reported only after `retry_after`, so an agent
    /// that never serves a card is probed with backoff, not in a busy loop.
    pub(super) fn probe(&self, key: Key, replica: u32, pid: u32, url: String, retry_after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Read as the engine will send: through the replica's own address (a2a chose it),
            // so a card naming another host is Ready exactly when the engine can reach it.
            let card = match crate::a2a::Client::through(&url) {
                Ok(c) => match tokio::time::timeout(Duration::from_secs(2), c.refresh_agent_card()).await {
                    Ok(Ok(card)) => Some(CardSummary {
                        name: card.name.clone(),
                        version: card.version.clone(),
                        skills: card.skills.iter().map(|s| s.id.clone()).collect(),
                        streaming: card.capabilities.streaming,
                    }),
                    _ => None,
                },
                Err(_) => None,
            };
            if card.is_none() {
                tokio::time::sleep(retry_after).await;
            }
            let _ = tx.send(NodeEvent::Probed { key, replica, pid, card });
        });
    }
}
