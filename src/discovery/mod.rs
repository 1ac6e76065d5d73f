//! Hosts that find each other on a LAN: each `a2a serve --listen ADDR` (ADDR not loopback)
//! advertises `_a2a._tcp.local.` by mDNS/DNS-SD (RFC 6762/6763) on the interface of ADDR
//! only, and browses for the others into a bounded [`peers::PeerTable`].
//!
//! - Instance: the node name (`--node-name`, default the host name's first label); SRV target
//!   `a2a-NODE.local.` (not the machine's own `NODE.local.`, which avahi may already answer),
//!   at the port of the advertised URL, with ADDR as its address.
//! - TXT: see [`advert`]. It is announced again when the skills of the Ready agents, the
//!   room of the `host` budget or the gateway's URL change: at most once per
//!   [`MIN_REANNOUNCE`], [`DEBOUNCE`] after the first change (a burst of agent updates is one
//!   announcement).
//! - A clean stop sends goodbye packets (TTL 0), so peers drop the host at once; a host that
//!   dies is dropped when its records expire unanswered (SRV and address TTL 120 s, queried
//!   again from 80 % of it).
//!
//! mDNS only *finds* hosts. Nothing here is authenticated; work goes only to hosts that joined
//! and prove it with mutual TLS.

pub mod advert;
pub mod breaker;
pub mod peers;
pub mod remote;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::{Notify, watch};

use crate::api::{Agent, DEFAULT_BUDGET, ResourceBudget};
use advert::Advert;
use peers::{Peer, PeerTable};

/// The DNS-SD service type hosts advertise.
pub const SERVICE_TYPE: &str = "_a2a._tcp.local.";
/// The wait after a change before announcing it (changes within it are announced together).
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// The shortest time between two announcements of a changed TXT record.
pub const MIN_REANNOUNCE: Duration = Duration::from_secs(1);
/// How often the gateway's URL file is read again.
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--node-name {name:?}: {why}")]
    NodeName { name: String, why: String },
    #[error(
        "the host name {0:?} is not a valid node name (letters, digits and '-', at most 63); pass --node-name NAME"
    )]
    HostName(String),
    #[error("mDNS on {addr}: {message} (--no-mdns serves without discovery)")]
    Mdns { addr: IpAddr, message: String },
}

/// Checks a node name: a DNS label (letters, digits, `-`, 1 to 63 characters, not starting
/// or ending with `-`), as Kubernetes node names and mDNS host labels are.
pub fn check_node_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::NodeName { name: name.to_string(), why: why.to_string() });
    if name.is_empty() || name.len() > 63 {
        return bad("a node name has 1 to 63 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return bad("a node name has letters, digits and '-' only");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("a node name does not start or end with '-'");
    }
    Ok(())
}

/// The default node name: the host name's first label, lower-cased.
pub fn default_node_name() -> Result<String, Error> {
    // The kernel's host name (of this UTS namespace), as `uname -n` prints it.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let first = host.split('.').next().unwrap_or_default().to_ascii_lowercase();
    check_node_name(&first).map_err(|_| Error::HostName(host))?;
    Ok(first)
}

/// Whether `--listen ADDR` turns discovery on (by default): any address but loopback and
/// the unspecified one.
pub fn wanted(listen: IpAddr) -> bool {
    !listen.is_loopback() && !listen.is_unspecified()
}

/// What discovery needs from the control plane.
#[derive(Clone)]
pub struct Config {
    pub node_name: String,
    /// The address served on; mDNS runs on its interface only.
    pub listen: IpAddr,
    /// The API server's URL.
    pub api_url: String,
    /// Where `gateway.url` is read from.
    pub home: PathBuf,
    pub client: kube::Client,
}

/// Discovery running: stop it with [`Discovery::stop`] (goodbye packets).
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    table: Arc<PeerTable>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn mdns_error(addr: IpAddr) -> impl Fn(mdns_sd::Error) -> Error {
    move |e| Error::Mdns { addr, message: e.to_string() }
}

/// The advertised URL: the gateway's (first line of `$A2A_HOME/gateway.url`, when it is an
/// `https://` or `http://` URL), else the API server's.
pub fn advertised_url(home: &std::path::Path, api_url: &str) -> String {
    match std::fs::read_to_string(home.join("gateway.url")) {
        Ok(text) => {
            let line = text.lines().next().unwrap_or_default().trim();
            if (line.starts_with("https://") || line.starts_with("http://")) && line.len() < 200 {
                line.to_string()
            } else {
                api_url.to_string()
            }
        }
        Err(_) => api_url.to_string(),
    }
}

fn port_of(url: &str) -> Option<u16> {
    url.parse::<http::Uri>().ok()?.port_u16()
}

/// The agents and budgets seen by the watches, and who waits for a change.
#[derive(Default)]
struct Seen {
    agents: Mutex<BTreeMap<(String, String), Agent>>,
    host_budget: Mutex<Option<ResourceBudget>>,
    changed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Seen {
    fn advert(&self, url: String, cores: u32) -> Advert {
        let agents = lock(&self.agents);
        let skills = advert::offered_skills(agents.values());
        drop(agents);
        let room = advert::room(lock(&self.host_budget).as_ref(), cores);
        Advert { skills, room, url }
    }
}

impl Discovery {
    /// Starts advertising and browsing on `config.listen`'s interface; found hosts go into
    /// `table`.
    pub async fn start(config: Config, table: Arc<PeerTable>) -> Result<Discovery, Error> {
        check_node_name(&config.node_name)?;
        let addr = config.listen;
        let err = mdns_error(addr);
        let daemon = ServiceDaemon::new().map_err(&err)?;
        // Only the interface of the address served on: never loopback or other links.
        daemon.disable_interface(IfKind::All).map_err(&err)?;
        daemon.enable_interface(IfKind::Addr(addr)).map_err(&err)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let seen = Arc::new(Seen::default());
        let url = advertised_url(&config.home, &config.api_url);
        let first = seen.advert(url, cores);
        let info = service_info(&config, &first).map_err(&err)?;
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(&err)?;
        table.enable(&config.node_name, &fullname, &addr.to_string());
        let monitor = daemon.monitor().map_err(&err)?;
        let events = daemon.browse(SERVICE_TYPE).map_err(&err)?;
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(browse(events, table.clone(), stop_rx.clone())),
            tokio::spawn(conflicts(monitor, config.node_name.clone(), table.clone(), stop_rx.clone())),
            tokio::spawn(watch_agents(config.client.clone(), seen.clone(), stop_rx.clone())),
            tokio::spawn(watch_budget(config.client.clone(), seen.clone(), stop_rx.clone())),
            tokio::spawn(announce(daemon.clone(), config.clone(), seen, first, cores, stop_rx)),
        ];
        tracing::info!(node = %config.node_name, %addr, service = SERVICE_TYPE, "mDNS discovery on");
        Ok(Discovery { daemon, fullname, table, stop, tasks })
    }

    /// Stops browsing and announcing, says goodbye (peers drop this host at once) and ends
    /// the mDNS thread.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await;
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await;
        }
        self.table.disable();
        tracing::info!("mDNS discovery stopped (goodbye sent)");
    }
}

fn service_info(config: &Config, advert: &Advert) -> Result<ServiceInfo, mdns_sd::Error> {
    let port = port_of(&advert.url).or_else(|| port_of(&config.api_url)).unwrap_or(0);
    let host = format!("a2a-{}.local.", config.node_name.to_ascii_lowercase());
    let props = advert::txt(&config.node_name, &config.api_url, advert);
    let mut info = ServiceInfo::new(SERVICE_TYPE, &config.node_name, &host, config.listen, port, &props[..])?;
    info.set_interfaces(vec![IfKind::Addr(config.listen)]);
    Ok(info)
}

/// Found and lost hosts into the table.
async fn browse(events: mdns_sd::Receiver<ServiceEvent>, table: Arc<PeerTable>, mut stop: watch::Receiver<bool>) {
    loop {
        let event = tokio::select! {
            e = events.recv_async() => match e { Ok(e) => e, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            ServiceEvent::ServiceResolved(r) => {
                let addresses: Vec<String> = r.get_addresses().iter().map(|a| a.to_ip_addr().to_string()).collect();
                let txt: HashMap<String, String> = r
                    .get_properties()
                    .iter()
                    .take(32)
                    .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_string()))
                    .collect();
                let peer = Peer::from_txt(r.get_fullname(), &addresses, &txt, SystemTime::now());
                tracing::debug!(node = %peer.node_name, url = %peer.url, "peer seen");
                table.seen(peer);
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                tracing::debug!(instance = %fullname, "peer gone");
                table.gone(&fullname, SystemTime::now());
            }
            _ => {}
        }
    }
}

/// Name conflicts (RFC 6762 §9): another host on the link announced our instance or host name
/// with other data, and the mDNS responder renamed ours (`NODE (2)`, `a2a-NODE-2.local.`), as
/// avahi does. Said loudly: two hosts were given one node name.
async fn conflicts(
    events: mdns_sd::Receiver<mdns_sd::DaemonEvent>,
    node: String,
    table: Arc<PeerTable>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            e = events.recv_async() => match e { Ok(e) => e, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        if let mdns_sd::DaemonEvent::NameChange(change) = event {
            tracing::warn!(node = %node, original = %change.original, now = %change.new_name,
                "another host on the link uses this node name: mDNS renamed ours; give each host its own --node-name");
            if change.new_name.contains("._a2a._tcp.") {
                table.renamed(&change.new_name);
            }
        }
    }
}

async fn watch_agents(client: kube::Client, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    let api: Api<Agent> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            e = stream.next() => match e { Some(e) => e, None => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let key = |a: &Agent| (a.namespace().unwrap_or_default(), a.name_any());
        match event {
            Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) => {
                lock(&seen.agents).insert(key(&a), a);
            }
            Ok(watcher::Event::Delete(a)) => {
                lock(&seen.agents).remove(&key(&a));
            }
            Ok(watcher::Event::Init) => lock(&seen.agents).clear(),
            Ok(watcher::Event::InitDone) => {}
            Err(e) => {
                tracing::debug!(error = %e, "discovery: agent watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        seen.changed.notify_one();
    }
}

async fn watch_budget(client: kube::Client, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    let api: Api<ResourceBudget> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    loop {
        let event = tokio::select! {
            e = stream.next() => match e { Some(e) => e, None => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) if b.name_any() == DEFAULT_BUDGET => {
                *lock(&seen.host_budget) = Some(b);
            }
            Ok(watcher::Event::Delete(b)) if b.name_any() == DEFAULT_BUDGET => *lock(&seen.host_budget) = None,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "discovery: budget watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        seen.changed.notify_one();
    }
}

/// Announces the TXT record again when what it says changed: [`DEBOUNCE`] after a change, at
/// most once per [`MIN_REANNOUNCE`].
async fn announce(
    daemon: ServiceDaemon,
    config: Config,
    seen: Arc<Seen>,
    mut last: Advert,
    cores: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_at = Instant::now();
    loop {
        tokio::select! {
            () = seen.changed.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let wait = DEBOUNCE.max(MIN_REANNOUNCE.saturating_sub(last_at.elapsed()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = seen.advert(advertised_url(&config.home, &config.api_url), cores);
        if now == last {
            continue;
        }
        // The name was probed when first announced: an update is announced at once.
        let update = service_info(&config, &now).map(|mut info| {
            info.set_requires_probe(false);
            info
        });
        match update.and_then(|info| daemon.register(info)) {
            Ok(()) => {
                tracing::debug!(skills = %advert::digest(&now.skills), url = %now.url, "announced the changed TXT record");
                last = now;
                last_at = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "announcing the changed TXT record failed; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        assert!(check_node_name("h1").is_ok());
        assert!(check_node_name("build-box-2").is_ok());
        for bad in ["", "-a", "a-", "a.b", "a b", "ä", &"x".repeat(64)] {
            let e = check_node_name(bad).expect_err(bad).to_string();
            assert!(e.starts_with("--node-name"), "{e}");
        }
    }

    #[test]
    fn discovery_is_wanted_off_loopback_only() {
        assert!(wanted("10.0.0.1".parse().unwrap()));
        assert!(!wanted("127.0.0.1".parse().unwrap()));
        assert!(!wanted("::1".parse().unwrap()));
        assert!(!wanted("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn the_gateway_url_wins_when_present_and_sane() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(advertised_url(dir.path(), "https://10.0.0.1:7443"), "https://10.0.0.1:7443");
        std::fs::write(dir.path().join("gateway.url"), "https://10.0.0.1:8443\n").unwrap();
        assert_eq!(advertised_url(dir.path(), "https://10.0.0.1:7443"), "https://10.0.0.1:8443");
        assert_eq!(port_of("https://10.0.0.1:8443"), Some(8443));
        std::fs::write(dir.path().join("gateway.url"), "garbage").unwrap();
        assert_eq!(advertised_url(dir.path(), "https://10.0.0.1:7443"), "https://10.0.0.1:7443");
    }
}
