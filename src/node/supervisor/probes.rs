//! Tasks that watch a replica and report to the loop: its exit (pidfd readiness) and its
//! readiness probe (a fetch of its agent card); and when the loop probes: a replica whose
//! port does not listen yet is looked up in the socket table, all of them in one read, and
//! a replica that listens is probed at once, then with backoff ([`readiness`]).

use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::{Key, Node, NodeEvent, Replica, World};
use crate::a2a::client::Error as E;
use crate::a2a::{AGENT_CARD_PATH, ExtendedCard};
use crate::api::Agent;
use crate::api::agent::CardSummary;
use crate::controller::{credentials, readiness};
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

    /// Fetches the agent card and reports it (or why not) at once; the loop decides when to
    /// probe again. An agent that runs elsewhere (`external`) is reached with its TLS
    /// settings and credentials, and a configured credential is tried with one authenticated
    /// call, so its status says when the certificate or the credentials are refused.
    pub(super) fn probe(&self, key: Key, replica: u32, pid: u32, url: String, external: Option<Agent>) {
        let (tx, client) = (self.tx.clone(), self.client.clone());
        tokio::spawn(async move {
            let (card, refused) =
                match tokio::time::timeout(PROBE_TIMEOUT, fetch_card(&client, &url, external.as_ref())).await {
                    Ok(Ok(card)) => (Ok(card), false),
                    Ok(Err(Failure { message, refused, .. })) => (Err(message), refused),
                    Err(_) => (Err(format!("{url}: no answer within {PROBE_TIMEOUT:?}")), false),
                };
            let _ = tx.send(NodeEvent::Probed { key, replica, pid, card, refused, answered: false });
        });
    }
}

/// Probes a replica now.
fn launch(node: &Node, key: &Key, i: u32, r: &mut Replica) {
    r.probing = true;
    let (tx, client, key, pid, port) = (node.tx.clone(), node.client.clone(), key.clone(), r.pid, r.port);
    tokio::spawn(async move {
        let url = format!("http://127.0.0.1:{port}");
        let probe = async {
            card_path_answers(port).await?;
            fetch_card(&client, &url, None).await
        };
        let (card, refused, answered) = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(card)) => (Ok(card), false, false),
            Ok(Err(Failure { message, refused, answered })) => (Err(message), refused, answered),
            Err(_) => (Err(format!("{url}: no answer within {PROBE_TIMEOUT:?}")), false, false),
        };
        let _ = tx.send(NodeEvent::Probed { key, replica: i, pid, card, refused, answered });
    });
}

/// Whether a replica's card path answers with a success, read from the status line of one
/// plain `GET` (no HTTP client made, no body read): a replica that listens but serves no card
/// costs one connection per probe, and only one that answers is read with the A2A client.
async fn card_path_answers(port: u16) -> Result<(), Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = format!("http://127.0.0.1:{port}");
    let io = |e: std::io::Error| Failure {
        refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
        answered: false,
        message: format!("{url}: {e}"),
    };
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(io)?;
    let request = format!(
        "GET {AGENT_CARD_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.map_err(io)?;
    // `HTTP/1.1 200` is 12 bytes.
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match conn.read(&mut head[got..]).await.map_err(io)? {
            0 => break,
            n => got += n,
        }
    }
    let status = std::str::from_utf8(&head[..got])
        .ok()
        .and_then(|h| h.strip_prefix("HTTP/1."))
        .and_then(|h| h.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(()),
        Some(code) => Err(Failure {
            message: format!("{url}{AGENT_CARD_PATH}: the agent answered HTTP {code}"),
            refused: false,
            answered: true,
        }),
        None => Err(format!("{url}{AGENT_CARD_PATH}: not an HTTP/1 answer").into()),
    }
}

impl World {
    /// A replica waits for its card (see [`readiness::replica_probe_due`]): probed now when
    /// it listens and its wait is over, at the end of its wait when it listens, else at the
    /// next look at the socket table.
    pub(super) fn await_card(&mut self, node: &Node, key: &Key, i: u32, now: Instant) {
        let Some(r) = self.runtime.get_mut(key).and_then(|rt| rt.replicas.get_mut(&i)) else { return };
        if !r.listening {
            let first = now + readiness::listen_check_after(0, &readiness::Schedule::default());
            self.next_listen_check.get_or_insert(first);
        } else if r.next_probe <= now {
            launch(node, key, i, r);
        } else {
            self.probe_timer.insert((r.next_probe, key.clone(), i));
        }
    }

    /// A start, exit or spec change: the socket table is read soon again, and then at the
    /// doubling interval.
    pub(super) fn restart_listen_checks(&mut self, now: Instant) {
        self.listen_checks = 0;
        let first = now + readiness::listen_check_after(0, &readiness::Schedule::default());
        self.next_listen_check = Some(self.next_listen_check.map_or(first, |t| t.min(first)));
    }

    /// Reads the socket table once for every replica that waits for its port to listen;
    /// those that listen now are probed (or wait out their backoff). When the table cannot be
    /// read, every port counts as listening: the probes' own backoff still applies.
    pub(super) fn check_listening(&mut self, node: &Node, now: Instant) {
        let ports = crate::node::sys::listening_tcp_ports();
        if let Err(e) = &ports {
            tracing::debug!(error = %e, "reading the socket table");
        }
        let mut now_listening = Vec::new();
        let mut waiting = false;
        for (key, rt) in &mut self.runtime {
            for (i, r) in &mut rt.replicas {
                if !readiness::replica_probe_due(r.process.is_some(), r.ready, r.probing) || r.listening {
                    continue;
                }
                if ports.as_ref().is_ok_and(|p| !p.contains(&r.port)) {
                    waiting = true;
                    continue;
                }
                r.listening = true;
                now_listening.push((key.clone(), *i));
            }
        }
        for (key, i) in now_listening {
            self.await_card(node, &key, i, now);
        }
        self.listen_checks = self.listen_checks.saturating_add(1);
        self.next_listen_check =
            waiting.then(|| now + readiness::listen_check_after(self.listen_checks, &readiness::Schedule::default()));
    }

    /// Probes the replicas whose wait is over.
    pub(super) fn probes_due(&mut self, node: &Node, now: Instant) {
        while let Some((t, ..)) = self.probe_timer.first()
            && *t <= now
        {
            let Some((_, key, i)) = self.probe_timer.pop_first() else { break };
            let due =
                self.runtime.get(&key).and_then(|rt| rt.replicas.get(&i)).is_some_and(|r| {
                    readiness::replica_probe_due(r.process.is_some(), r.ready, r.probing) && r.listening
                });
            if due {
                self.await_card(node, &key, i, now);
            }
        }
    }

    /// A replica's probe answered: Ready with its card (a pass writes its status); else
    /// probed again after its backoff (longer when its server answered without its card),
    /// or, when the connection was refused, once its port listens again. A failure changes
    /// no status, so it takes no pass.
    pub(super) fn probed(
        &mut self,
        key: Key,
        i: u32,
        pid: u32,
        card: Option<CardSummary>,
        refused: bool,
        answered: bool,
    ) {
        let Some(rt) = self.runtime.get_mut(&key) else { return };
        let Some(r) = rt.replicas.get_mut(&i).filter(|r| r.pid == pid) else { return };
        r.probing = false;
        let now = Instant::now();
        match card {
            Some(card) => {
                r.ready = true;
                rt.card = Some(card);
                self.dirty.insert(key);
            }
            None if r.process.is_some() && !r.ready => {
                r.probes = r.probes.saturating_add(1);
                r.next_probe = now
                    + readiness::replica_retry_after(
                        r.probes,
                        answered,
                        &readiness::Schedule::default(),
                        fastrand::f64(),
                    );
                if refused {
                    r.listening = false;
                    let first = now + readiness::listen_check_after(0, &readiness::Schedule::default());
                    self.next_listen_check.get_or_insert(first);
                } else {
                    self.probe_timer.insert((r.next_probe, key, i));
                }
            }
            None => {}
        }
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

/// Why a probe failed, whether the connection was refused, and whether the server answered
/// over HTTP (only not with its card).
struct Failure {
    message: String,
    refused: bool,
    answered: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, refused: false, answered: false }
    }
}

/// The card of the agent at `url`, or why it cannot be used.
async fn fetch_card(client: &kube::Client, url: &str, external: Option<&Agent>) -> Result<ProbedCard, Failure> {
    let options = match external {
        Some(agent) => credentials::client_options(client, agent).await.map_err(|e| e.to_string())?,
        // Read as the engine will send: through the replica's own address (a2a chose it), so
        // a card naming another host is Ready exactly when the engine can reach it.
        None => crate::a2a::ClientOptions { addressing: crate::a2a::transport::Addressing::Base, ..Default::default() },
    };
    let a2a = crate::a2a::Client::with_options(url, options).map_err(|e| e.to_string())?;
    let card = a2a.refresh_agent_card().await.map_err(|e| Failure {
        refused: matches!(e, E::Connect { .. }),
        answered: false,
        message: e.to_string(),
    })?;
    if external.and_then(|a| a.spec.auth.as_ref()).is_some_and(|a| !a.is_empty()) {
        // Any A2A answer (a task that is not found) says the credentials are accepted.
        if let Err(
            e @ (E::Unauthorized { .. } | E::Auth { .. } | E::Tls { .. } | E::TlsClosed { .. } | E::TlsConfig { .. }),
        ) = a2a.get_task(CREDENTIAL_CHECK_TASK).await
        {
            return Err(e.to_string().into());
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
