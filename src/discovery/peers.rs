//! The peers table: the hosts mDNS found, bounded, with when each was last seen and whether it
//! is still there. The local API server answers `GET /apis/discovery.a2a.dev/v1alpha1/peers`
//! from it and `a2a peers` prints it.
//!
//! A peer is only *found*: `joined` is always `false` here. Work goes only to hosts that
//! joined this one and proved it with mutual TLS; mDNS answers are unauthenticated and
//! anyone on the link can send them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API group of the peers list.
pub const GROUP: &str = "discovery.a2a.dev";
pub const VERSION: &str = "v1alpha1";
pub const PLURAL: &str = "peers";
/// The path `a2a peers` reads.
pub const PATH: &str = "/apis/discovery.a2a.dev/v1alpha1/peers";

/// The most peers kept (gone ones are dropped first to make room); more are ignored and
/// logged, so a flood of announcements cannot grow the daemon's memory.
pub const MAX_PEERS: usize = 256;
/// How long a peer that left (goodbye or expired records) stays listed as `gone`.
pub const KEEP_GONE: Duration = Duration::from_secs(600);
/// The longest text kept of any advertised value.
const MAX_FIELD: usize = 255;

/// Whether a peer is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Its records are live (announced and not expired).
    Up,
    /// It said goodbye, or its records expired unanswered.
    Gone,
}

/// What a host advertises of its free room: the CPU and memory its `host` budget can still
/// admit (`None`: unlimited, or not advertised).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// One host found by mDNS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub node_name: String,
    /// The mDNS instance (`NODE._a2a._tcp.local.`).
    pub instance: String,
    pub addresses: Vec<String>,
    /// Where to reach it: its gateway's URL, else its API server's.
    pub url: String,
    /// Its API server's URL, when advertised.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_url: String,
    /// A short digest of the skills of its Ready agents (`none` when it has none).
    pub skills_digest: String,
    /// How many distinct skills that digest covers.
    pub skills: u32,
    pub room: Room,
    pub version: String,
    /// RFC 3339.
    pub last_seen: String,
    pub health: Health,
    /// Always false from mDNS: joining (mutual TLS) is what makes a peer usable.
    pub joined: bool,
    /// Its circuit breaker as this host sees it: `closed`, `open` or `half-open`.
    #[serde(default)]
    pub breaker: String,
    #[serde(skip)]
    seen_at: Option<SystemTime>,
}

/// The table. Cheap to share (`Arc`); every method takes the lock briefly.
#[derive(Debug, Default)]
pub struct PeerTable {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None`: discovery is off.
    me: Option<Me>,
    peers: BTreeMap<String, Peer>,
    ignored: u64,
    /// Nodes whose gateway answered over mutual TLS (members of this host's cluster).
    verified: BTreeMap<String, bool>,
    /// Each peer's breaker state, by node.
    breakers: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct Me {
    node_name: String,
    /// Our instance names (more than one after a name conflict renamed ours).
    instances: Vec<String>,
    interface_address: String,
}

/// Keeps printable text only (no terminal escapes from the network), at most [`MAX_FIELD`]
/// bytes.
pub fn clean(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_FIELD {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

fn number(v: Option<&String>) -> Option<u64> {
    v.and_then(|v| v.trim().parse::<u64>().ok())
}

impl Peer {
    /// A peer from a resolved service: its instance name, addresses and TXT properties
    /// (unknown keys are ignored; a malformed number is left out).
    pub fn from_txt(instance: &str, addresses: &[String], txt: &HashMap<String, String>, now: SystemTime) -> Peer {
        let get = |k: &str| txt.get(k).map(|v| clean(v)).unwrap_or_default();
        let node = match get("node") {
            n if n.is_empty() => clean(instance.split("._a2a.").next().unwrap_or(instance)),
            n => n,
        };
        let mut addresses: Vec<String> = addresses.iter().map(|a| clean(a)).collect();
        addresses.sort();
        addresses.dedup();
        addresses.truncate(16);
        Peer {
            node_name: node,
            instance: clean(instance),
            addresses,
            url: get("url"),
            api_url: get("api"),
            skills_digest: match get("skills") {
                s if s.is_empty() => "none".into(),
                s => s,
            },
            skills: number(txt.get("nskills")).map_or(0, |n| n.min(u32::MAX as u64) as u32),
            room: Room { cpu_millicores: number(txt.get("cpu")), memory_bytes: number(txt.get("mem")) },
            version: get("version"),
            last_seen: rfc3339(now),
            health: Health::Up,
            joined: false,
            breaker: String::new(),
            seen_at: Some(now),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()).unwrap_or_default()
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PeerTable {
    /// Discovery is on, advertising `instance` for `node_name` on the interface of
    /// `interface_address`: answers from this table say so.
    pub fn enable(&self, node_name: &str, instance: &str, interface_address: &str) {
        lock(&self.inner).me = Some(Me {
            node_name: node_name.to_string(),
            instances: vec![instance.to_lowercase()],
            interface_address: interface_address.to_string(),
        });
    }

    /// Our instance was renamed (another host on the link holds our name): the new name is
    /// ours too, not a peer.
    pub fn renamed(&self, instance: &str) {
        let key = instance.to_lowercase();
        let mut inner = lock(&self.inner);
        inner.peers.remove(&key);
        if let Some(me) = inner.me.as_mut()
            && !me.instances.contains(&key)
        {
            me.instances.push(key);
        }
    }

    /// Discovery stopped: the table empties.
    pub fn disable(&self) {
        let mut inner = lock(&self.inner);
        inner.me = None;
        inner.peers.clear();
    }

    /// A peer was resolved (found, or its records changed or were refreshed). Our own
    /// announcement is not a peer. Answers whether it was kept.
    pub fn seen(&self, peer: Peer) -> bool {
        let mut inner = lock(&self.inner);
        let key = peer.instance.to_lowercase();
        if inner.me.as_ref().is_some_and(|me| me.instances.contains(&key)) {
            return false;
        }
        if !inner.peers.contains_key(&key) && inner.peers.len() >= MAX_PEERS {
            prune(&mut inner, peer.seen_at.unwrap_or_else(SystemTime::now), Duration::ZERO);
            if inner.peers.len() >= MAX_PEERS {
                inner.ignored += 1;
                if inner.ignored.is_power_of_two() {
                    tracing::warn!(max = MAX_PEERS, ignored = inner.ignored, instance = %key,
                        "the peers table is full; ignoring a newly found host");
                }
                return false;
            }
        }
        inner.peers.insert(key, peer);
        true
    }

    /// A peer left (goodbye, or its records expired): it stays listed as `gone` for
    /// [`KEEP_GONE`].
    pub fn gone(&self, instance: &str, now: SystemTime) {
        let mut inner = lock(&self.inner);
        if let Some(p) = inner.peers.get_mut(&instance.to_lowercase()) {
            p.health = Health::Gone;
            p.seen_at = Some(now);
        }
        prune(&mut inner, now, KEEP_GONE);
    }

    /// Whether node `node`'s gateway answered over mutual TLS (a member of this host's
    /// cluster, its `joined`).
    pub fn set_joined(&self, node: &str, joined: bool) {
        lock(&self.inner).verified.insert(node.to_owned(), joined);
    }

    /// The peers' breaker states, by node.
    pub fn set_breakers(&self, states: BTreeMap<String, String>) {
        lock(&self.inner).breakers = states;
    }

    /// The peers, by node name.
    pub fn list(&self) -> Vec<Peer> {
        let mut inner = lock(&self.inner);
        prune(&mut inner, SystemTime::now(), KEEP_GONE);
        let mut out: Vec<Peer> = inner
            .peers
            .values()
            .cloned()
            .map(|mut p| {
                p.joined = inner.verified.get(&p.node_name).copied().unwrap_or(false);
                p.breaker = inner.breakers.get(&p.node_name).cloned().unwrap_or_else(|| "closed".into());
                p
            })
            .collect();
        out.sort_by(|a, b| a.node_name.cmp(&b.node_name).then_with(|| a.instance.cmp(&b.instance)));
        out
    }

    /// The answer of `GET .../peers`: a `PeerList`.
    pub fn document(&self) -> Value {
        let items = self.list();
        let inner = lock(&self.inner);
        let me = inner.me.clone();
        drop(inner);
        json!({
            "kind": "PeerList",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "discovery": if me.is_some() { "on" } else { "off" },
            "nodeName": me.as_ref().map(|m| m.node_name.clone()),
            "interfaceAddress": me.as_ref().map(|m| m.interface_address.clone()),
            "items": items,
        })
    }
}

/// Drops gone peers older than `keep`.
fn prune(inner: &mut Inner, now: SystemTime, keep: Duration) {
    inner.peers.retain(|_, p| {
        p.health == Health::Up
            || p.seen_at.is_some_and(|t| now.duration_since(t).unwrap_or_default() < keep && !keep.is_zero())
    });
}

/// Whether a request path is the peers list: `Some(None)` the list, `Some(Some(name))` one.
pub fn target(path: &str) -> Option<Option<String>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", GROUP, VERSION, PLURAL] => Some(None),
        ["apis", GROUP, VERSION, PLURAL, name] => Some(Some(name.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn peer(name: &str, now: SystemTime) -> Peer {
        Peer::from_txt(
            &format!("{name}._a2a._tcp.local."),
            &["10.0.0.2".into()],
            &txt(&[("node", name), ("url", "https://10.0.0.2:7443"), ("cpu", "500"), ("mem", "x"), ("version", "1")]),
            now,
        )
    }

    #[test]
    fn txt_fields_are_read_and_bad_numbers_left_out() {
        let p = peer("h2", SystemTime::now());
        assert_eq!(p.node_name, "h2");
        assert_eq!(p.url, "https://10.0.0.2:7443");
        assert_eq!(p.room, Room { cpu_millicores: Some(500), memory_bytes: None });
        assert_eq!(p.skills_digest, "none");
        assert!(!p.joined);
    }

    #[test]
    fn control_characters_from_the_network_are_replaced() {
        let p = Peer::from_txt("x._a2a._tcp.local.", &[], &txt(&[("node", "a\u{1b}[2Jb")]), SystemTime::now());
        assert_eq!(p.node_name, "a?[2Jb");
        assert_eq!(clean(&"y".repeat(1000)).len(), MAX_FIELD);
    }

    #[test]
    fn our_own_announcement_is_not_a_peer_and_gone_peers_expire() {
        let t = PeerTable::default();
        t.enable("h1", "h1._a2a._tcp.local.", "10.0.0.1");
        let now = SystemTime::now();
        assert!(!t.seen(peer("h1", now)));
        assert!(t.seen(peer("h2", now)));
        t.renamed("H1 (2)._a2a._tcp.local.");
        assert!(!t.seen(peer("h1 (2)", now)), "a renamed instance of ours is ours");
        t.gone("h2._a2a._tcp.local.", now);
        assert_eq!(t.list()[0].health, Health::Gone);
        t.gone("h2._a2a._tcp.local.", now - KEEP_GONE - Duration::from_secs(1));
        assert!(t.list().is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_gone_peers_make_room_first() {
        let t = PeerTable::default();
        let now = SystemTime::now();
        for i in 0..MAX_PEERS {
            assert!(t.seen(peer(&format!("h{i}"), now)));
        }
        assert!(!t.seen(peer("extra", now)), "a full table ignores a new host");
        t.gone("h7._a2a._tcp.local.", now);
        assert!(t.seen(peer("extra", now)), "a gone peer makes room");
        assert_eq!(t.list().len(), MAX_PEERS);
    }

    #[test]
    fn paths() {
        assert_eq!(target(PATH), Some(None));
        assert_eq!(target("/apis/discovery.a2a.dev/v1alpha1/peers/h2"), Some(Some("h2".into())));
        assert_eq!(target("/apis/a2a.dev/v1alpha1/agents"), None);
    }
}
