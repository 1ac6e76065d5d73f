//! Remote work: tasks whose placement allows it run on a joined peer that has their skill.
//!
//! - A peer is found by mDNS ([`super::peers::PeerTable`]) but used only once its gateway
//!   answered over mutual TLS: its certificate must be one the cluster's CA issued for its
//!   node name, and this host presents its own node certificate (the peer's gateway maps it to
//!   `system:node:NAME` and audits the call with it).
//! - The TXT record carries only a digest of the skills: the skills themselves are read from
//!   the peer's gateway card (its root card lists the skills of its Ready agents), again when
//!   the digest changes, and every [`CARD_REFRESH`] anyway.
//! - Among the peers with the skill and a breaker that lets work through
//!   ([`super::breaker`]), the one with the most advertised free CPU room (then memory; then
//!   the fewest tasks this host has in flight on it) takes the task.
//! - A task goes to the peer's gateway root, routed there by its skill (message metadata
//!   `a2a.dev/skill`), and is followed until it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::{Breakers, Transition};
use super::peers::{PeerTable, Room};
use crate::a2a;

/// How often the peers' cards are read again, whatever their digests say.
pub const CARD_REFRESH: Duration = Duration::from_secs(30);
/// How often the peers table is looked at for new peers or changed digests.
const SCAN: Duration = Duration::from_secs(1);
/// How long reading a peer's card may take.
const CARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How a peer ranks for a task: its free CPU room, its free memory, and (reversed) the tasks
/// this host has in flight on it; the highest wins.
type Rank = (u64, u64, std::cmp::Reverse<u32>);

/// Why a peer could not take a task: counted against its breaker, and the task goes back to
/// the queue.
#[derive(Debug, thiserror::Error)]
#[error("peer {node}: {error}")]
pub struct PeerFailure {
    pub node: String,
    pub error: String,
}

/// What this host knows of one peer's gateway.
struct Known {
    url: String,
    digest: String,
    read_at: Instant,
    skills: BTreeSet<String>,
    client: a2a::Client,
}

/// Remote work of one host. Cheap to share behind an `Arc`.
pub struct RemoteWork {
    node_name: String,
    home: PathBuf,
    peers: Arc<PeerTable>,
    pub breakers: Arc<Breakers>,
    known: Mutex<BTreeMap<String, Known>>,
    in_flight: Mutex<HashMap<String, u32>>,
    /// Breaker transitions not yet reported as Events.
    transitions: Mutex<Vec<Transition>>,
    /// This host's audit log: every call to a peer is a line of it (the peer audits it too).
    audit: Option<Arc<crate::apiserver::audit::Audit>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RemoteWork {
    /// Remote work of the host `node_name` whose home (membership, node certificate) is `home`.
    pub fn new(
        node_name: &str,
        home: PathBuf,
        peers: Arc<PeerTable>,
        audit: Option<Arc<crate::apiserver::audit::Audit>>,
    ) -> Arc<RemoteWork> {
        Arc::new(RemoteWork {
            node_name: node_name.to_owned(),
            home,
            peers,
            breakers: Arc::new(Breakers::default()),
            known: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            transitions: Mutex::new(Vec::new()),
            audit,
        })
    }

    /// Reads the peers' cards as they appear or change, until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = tokio::time::sleep(SCAN) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The TLS this host uses toward `node`: its node certificate, the cluster's CA alone,
    /// and the node's name as the name the peer's certificate must carry.
    fn tls(&self, node: &str) -> Result<a2a::tls::TlsOptions, String> {
        let m = crate::membership::Membership::load_any(&self.home)
            .map_err(|e| e.to_string())?
            .ok_or("this host is not a member of a cluster (a2a join, or the first host's node certificate)")?;
        Ok(a2a::tls::TlsOptions {
            ca_pem: Some(m.ca_pem.clone().into_bytes()),
            client_certificate: Some(a2a::tls::ClientCertificate {
                chain_pem: m.cert_pem.clone().into_bytes(),
                key_pem: m.key_pem().as_bytes().to_vec(),
            }),
            server_name: Some(node.to_owned()),
            only_ca: true,
        })
    }

    async fn refresh(&self) {
        let mut up = BTreeSet::new();
        for p in self.peers.list() {
            if p.node_name == self.node_name || p.health != super::peers::Health::Up || p.url.is_empty() {
                continue;
            }
            up.insert(p.node_name.clone());
            let fresh = lock(&self.known)
                .get(&p.node_name)
                .is_some_and(|k| k.url == p.url && k.digest == p.skills_digest && k.read_at.elapsed() < CARD_REFRESH);
            if fresh {
                continue;
            }
            match self.read_card(&p.node_name, &p.url).await {
                Ok((client, skills)) => {
                    tracing::debug!(peer = %p.node_name, ?skills, "read the skills of a peer's gateway");
                    self.peers.set_joined(&p.node_name, true);
                    let known = Known {
                        url: p.url.clone(),
                        digest: p.skills_digest.clone(),
                        read_at: Instant::now(),
                        skills,
                        client,
                    };
                    lock(&self.known).insert(p.node_name.clone(), known);
                }
                Err(error) => {
                    tracing::debug!(peer = %p.node_name, %error, "a peer's gateway card could not be read over mutual TLS");
                    self.peers.set_joined(&p.node_name, false);
                    lock(&self.known).remove(&p.node_name);
                }
            }
        }
        // Peers gone from the table (their goodbye, or their records expired) take nothing.
        lock(&self.known).retain(|k, _| up.contains(k));
        self.peers.set_breakers(self.breakers.states().into_iter().map(|(k, s)| (k, s.as_str().to_owned())).collect());
    }

    async fn read_card(&self, node: &str, url: &str) -> Result<(a2a::Client, BTreeSet<String>), String> {
        let tls = self.tls(node)?;
        let client = a2a::Client::with_options(url, a2a::client::ClientOptions { tls, ..Default::default() })
            .map_err(|e| e.to_string())?;
        let card = tokio::time::timeout(CARD_TIMEOUT, client.agent_card())
            .await
            .map_err(|_| format!("no card within {CARD_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let skills = card.skills.iter().map(|s| s.id.clone()).collect();
        Ok((client, skills))
    }

    /// The peer that takes a task for `skill` now, with its right to send (its breaker's probe
    /// when half-open), or `None`.
    pub fn pick(&self, skill: &str) -> Option<String> {
        let rooms: HashMap<String, Room> = self.peers.list().into_iter().map(|p| (p.node_name, p.room)).collect();
        let candidates: Vec<String> = lock(&self.known)
            .iter()
            .filter(|(node, k)| k.skills.contains(skill) && self.breakers.available(node))
            .map(|(node, _)| node.clone())
            .collect();
        let in_flight = lock(&self.in_flight).clone();
        let mut ranked: Vec<(String, Rank)> = candidates
            .into_iter()
            .map(|n| {
                let room = rooms.get(&n).copied().unwrap_or_default();
                let key = (
                    room.cpu_millicores.unwrap_or(u64::MAX),
                    room.memory_bytes.unwrap_or(u64::MAX),
                    std::cmp::Reverse(in_flight.get(&n).copied().unwrap_or(0)),
                );
                (n, key)
            })
            .collect();
        // Most room first; then fewest in flight from here; then by name.
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (node, _) in ranked {
            let (ok, t) = self.breakers.take(&node);
            if let Some(t) = t {
                self.note(t);
            }
            if ok {
                *lock(&self.in_flight).entry(node.clone()).or_default() += 1;
                return Some(node);
            }
        }
        None
    }

    /// Sends `message` to `node`'s gateway, routed there by `skill`, and follows its task
    /// until it ends (or `opts.timeout`, or `cancelled`). The peer's breaker learns the
    /// outcome: an answer is a success (even a failed task), anything else a failure.
    pub async fn send(
        &self,
        node: &str,
        skill: &str,
        mut message: a2a::types::Message,
        opts: &a2a::client::FollowOptions,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<Result<a2a::types::SendMessageResponse, a2a::client::Error>, PeerFailure> {
        let client = lock(&self.known).get(node).map(|k| k.client.clone());
        let metadata = message.metadata.get_or_insert_with(Default::default);
        metadata.insert(crate::gateway::SKILL_KEY.to_owned(), serde_json::Value::String(skill.to_owned()));
        let r = match client {
            None => Err(PeerFailure { node: node.to_owned(), error: "no longer known (gone, or not verified)".into() }),
            Some(c) => match c.send_and_follow(message, opts, cancelled).await {
                Ok(r) => Ok(Ok(r)),
                // The task's own deadline, or the workflow's cancellation: not the peer's fault.
                Err(e @ (a2a::client::Error::Timeout { .. } | a2a::client::Error::Cancelled { .. })) => Ok(Err(e)),
                Err(e) => Err(PeerFailure { node: node.to_owned(), error: e.to_string() }),
            },
        };
        if let Some(n) = lock(&self.in_flight).get_mut(node) {
            *n = n.saturating_sub(1);
        }
        if let Some(audit) = &self.audit {
            // The code as the peer's gateway gave it is not known here: 200 for an answer,
            // 502 for a peer that failed.
            let code = if r.is_ok() { 200 } else { 502 };
            audit.record(&crate::apiserver::audit::Entry {
                user: &format!("{}{}", crate::apiserver::join::NODE_USER_PREFIX, self.node_name),
                groups: &[crate::apiserver::join::NODES_GROUP.to_owned()],
                verb: "create",
                resource: "peers/SendMessage",
                namespace: "default",
                name: &format!("{node}/{skill}"),
                code,
            });
        }
        let t = match &r {
            Ok(_) => self.breakers.success(node),
            Err(f) => self.breakers.failure(node, &f.error),
        };
        if let Some(t) = t {
            self.note(t);
        }
        self.peers.set_breakers(self.breakers.states().into_iter().map(|(k, s)| (k, s.as_str().to_owned())).collect());
        r
    }

    /// A task picked for `node` was not sent after all (its workflow went): its place and its
    /// breaker's probe are given back.
    pub fn abandon(&self, node: &str) {
        if let Some(n) = lock(&self.in_flight).get_mut(node) {
            *n = n.saturating_sub(1);
        }
        self.breakers.release(node);
    }

    fn note(&self, t: Transition) {
        tracing::info!(peer = %t.peer, from = %t.from, to = %t.to, why = %t.why, "peer breaker");
        crate::metrics::registry().peer_breaker(&t.peer, t.to.gauge());
        lock(&self.transitions).push(t);
    }

    /// The breaker transitions since the last call (for Events).
    pub fn take_transitions(&self) -> Vec<Transition> {
        std::mem::take(&mut *lock(&self.transitions))
    }
}
