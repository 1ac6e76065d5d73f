//! Tasks that watch a replica and report to the loop: its exit (pidfd readiness) and its
//! readiness probe (a fetch of its agent card).

use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::{Key, Node, NodeEvent};
use crate::a2a::ExtendedCard;
use crate::a2a::client::Error as E;
use crate::api::Agent;
use crate::api::agent::CardSummary;
use crate::controller::credentials;
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
    /// that never serves a card is probed with backoff, not in a busy loop. An agent that
    /// runs elsewhere (`external`) is reached with its TLS settings and credentials, and a
    /// configured credential is tried with one authenticated call, so its status says when
    /// the certificate or the credentials are refused.
    pub(super) fn probe(
        &self,
        key: Key,
        replica: u32,
        pid: u32,
        url: String,
        retry_after: Duration,
        external: Option<Agent>,
    ) {
        let (tx, client) = (self.tx.clone(), self.client.clone());
        tokio::spawn(async move {
            let card = tokio::time::timeout(PROBE_TIMEOUT, fetch_card(&client, &url, external.as_ref()))
                .await
                .unwrap_or_else(|_| Err(format!("{url}: no answer within {PROBE_TIMEOUT:?}")));
            if card.is_err() {
                tokio::time::sleep(retry_after).await;
            }
            let _ = tx.send(NodeEvent::Probed { key, replica, pid, card });
        });
    }
}

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a probe read of an agent's card.
#[derive(Debug)]
pub(super) struct ProbedCard {
    /// Of the card a2a uses: the extended one when the agent shows it to a2a's credentials.
    pub summary: CardSummary,
    /// Why the public card is used though the agent offers an extended one.
    pub extended_unused: Option<String>,
}

/// The card of the agent at `url`, or why it cannot be used.
async fn fetch_card(client: &kube::Client, url: &str, external: Option<&Agent>) -> Result<ProbedCard, String> {
    let options = match external {
        Some(agent) => credentials::client_options(client, agent).await.map_err(|e| e.to_string())?,
        // Read as the engine will send: through the replica's own address (a2a chose it), so
        // a card naming another host is Ready exactly when the engine can reach it.
        None => crate::a2a::ClientOptions { addressing: crate::a2a::transport::Addressing::Base, ..Default::default() },
    };
    let a2a = crate::a2a::Client::with_options(url, options).map_err(|e| e.to_string())?;
    let card = a2a.refresh_agent_card().await.map_err(|e| e.to_string())?;
    if external.and_then(|a| a.spec.auth.as_ref()).is_some_and(|a| !a.is_empty()) {
        // Any A2A answer (a task that is not found) says the credentials are accepted.
        if let Err(
            e @ (E::Unauthorized { .. } | E::Auth { .. } | E::Tls { .. } | E::TlsClosed { .. } | E::TlsConfig { .. }),
        ) = a2a.get_task(CREDENTIAL_CHECK_TASK).await
        {
            return Err(e.to_string());
        }
    }
    let extended = a2a.extended_card().await.map_err(|e| e.to_string())?;
    let summary = CardSummary {
        name: card.name.clone(),
        version: card.version.clone(),
        skills: card.skills.iter().map(|s| s.id.clone()).collect(),
        streaming: card.capabilities.streaming,
        extended: extended == ExtendedCard::InUse,
    };
    let extended_unused = match extended {
        ExtendedCard::Unused(why) => Some(why),
        ExtendedCard::NotOffered | ExtendedCard::InUse => None,
    };
    Ok(ProbedCard { summary, extended_unused })
}

/// The task id `GetTask` asks for to check credentials; no agent has it.
const CREDENTIAL_CHECK_TASK: &str = "a2a-credential-check";
