//! Hosts on a LAN find each other by mDNS: three `a2a serve --listen` in network namespaces
//! on a bridge (tests/support/netns.rs), `a2a peers` on each, skills digests that follow the
//! agents, a clean stop's goodbye; and what `--listen` and `--node-name` refuse.
//!
//! Deadlines are generous (a loaded 2-core machine); the time discovery takes is measured by
//! benches/discovery.rs, not here.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::Lan;

const PATIENCE: Duration = Duration::from_secs(60);

/// `a2a peers -o json` on host `i`.
fn peers(lan: &Lan, i: usize) -> Value {
    let out = lan.a2a(i, &["peers", "-o", "json"]);
    assert!(out.status.success(), "a2a peers on h{i}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("peers JSON")
}

/// The peers of host `i` by node name.
fn listed(lan: &Lan, i: usize) -> Vec<Value> {
    peers(lan, i)["items"].as_array().cloned().unwrap_or_default()
}

fn find<'a>(items: &'a [Value], node: &str) -> Option<&'a Value> {
    items.iter().find(|p| p["nodeName"] == node)
}

/// Waits until `ok` holds, checking every 200 ms; fails with `what` and the daemons' logs.
fn until(lan: &Lan, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {PATIENCE:?}\n{}", lan.logs());
}

fn up_nodes(items: &[Value]) -> BTreeSet<String> {
    items.iter().filter(|p| p["health"] == "up").filter_map(|p| p["nodeName"].as_str().map(str::to_string)).collect()
}

fn digest_of(skills: &[&str]) -> String {
    a2a::discovery::advert::digest(&skills.iter().map(|s| s.to_string()).collect())
}

#[test]
fn three_hosts_find_each_other_follow_skills_and_see_a_host_leave() {
    let mut lan = Lan::new(3);
    for i in 1..=3 {
        let url = lan.start(i, &[]);
        assert!(url.starts_with(&format!("https://10.77.0.{i}:")), "{url}");
    }
    let others = |i: usize| -> BTreeSet<String> { (1..=3).filter(|j| *j != i).map(|j| format!("h{j}")).collect() };
    // Up, and advertising the room of the host budget (which the node creates just after
    // the daemon starts: the TXT record is announced again then).
    until(&lan, "every host lists the two others, up, with their room", || {
        (1..=3).all(|i| {
            let items = listed(&lan, i);
            up_nodes(&items) == others(i) && items.iter().all(|p| p["room"]["memoryBytes"].is_u64())
        })
    });

    for i in 1..=3 {
        let doc = peers(&lan, i);
        assert_eq!(doc["discovery"], "on");
        assert_eq!(doc["nodeName"], format!("h{i}"));
        let items = doc["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 2, "h{i}: {items:?}");
        for j in (1..=3).filter(|j| *j != i) {
            let p = find(&items, &format!("h{j}")).expect("peer listed");
            assert_eq!(p["version"], env!("CARGO_PKG_VERSION"), "{p}");
            assert_eq!(p["skillsDigest"], "none", "no agent runs yet: {p}");
            assert_eq!(p["joined"], false, "mDNS only finds hosts: {p}");
            assert_eq!(p["addresses"], serde_json::json!([format!("10.77.0.{j}")]), "{p}");
            let url = lan.hosts[j - 1].url.clone().unwrap_or_default();
            let gateway = std::fs::read_to_string(lan.hosts[j - 1].home.join("gateway.url")).unwrap_or_default();
            assert_eq!(p["url"], gateway.trim(), "the gateway's URL is advertised: {p}");
            assert_eq!(p["apiUrl"], url, "{p}");
            // The default host budget (8Gi, 60% of the cores) with nothing admitted.
            assert_eq!(p["room"]["memoryBytes"], 8u64 << 30, "{p}");
            assert!(p["room"]["cpuMillicores"].as_u64().is_some_and(|c| c > 0), "{p}");
        }
    }

    // The table on h2 names both others.
    let out = lan.a2a(2, &["peers"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.starts_with("NODE"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("h1 ")) && table.lines().any(|l| l.starts_with("h3 ")), "{table}");

    // An agent with a skill becomes Ready on h1: the others see h1's digest change.
    let manifest = lan.hosts[0].home.join("agent.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: adder }\nspec:\n  protocol: stdio\n  \
         command: [cat]\n  skills: [lan-sum]\n  resources: { limits: { memory: 64Mi } }\n",
    )
    .expect("manifest");
    let out = lan.a2a(1, &["apply", "-f", manifest.to_str().unwrap_or_default()]);
    assert!(out.status.success(), "apply: {}", String::from_utf8_lossy(&out.stderr));
    let want = digest_of(&["lan-sum"]);
    // Its 64Mi are admitted into the host budget: the room advertised shrinks by as much.
    let room = (8u64 << 30) - (64 << 20);
    until(&lan, "h2 and h3 see h1's new skills digest and room", || {
        [2, 3].iter().all(|&i| {
            find(&listed(&lan, i), "h1").is_some_and(|p| {
                p["skillsDigest"] == want.as_str() && p["skills"] == 1 && p["room"]["memoryBytes"] == room
            })
        })
    });

    // A gateway's URL, once written to the home, is what h1 advertises as its URL.
    let api = lan.hosts[0].url.clone().unwrap_or_default();
    std::fs::write(lan.hosts[0].home.join("gateway.url"), "https://10.77.0.1:8443\n").expect("gateway.url");
    until(&lan, "h2 sees h1's gateway URL", || {
        find(&listed(&lan, 2), "h1")
            .is_some_and(|p| p["url"] == "https://10.77.0.1:8443" && p["apiUrl"] == api.as_str())
    });
    // h1's own digest is not listed on h1 (a host is not its own peer).
    assert!(find(&listed(&lan, 1), "h1").is_none());

    // A clean stop says goodbye: h3 is gone (or dropped) on h1 and h2.
    lan.stop(3);
    until(&lan, "h1 and h2 no longer list h3 as up", || {
        [1, 2].iter().all(|&i| find(&listed(&lan, i), "h3").is_none_or(|p| p["health"] == "gone"))
    });
    // The others are still up.
    assert_eq!(up_nodes(&listed(&lan, 1)), BTreeSet::from(["h2".to_string()]));
}

#[test]
fn the_peers_list_needs_a_user_with_view_or_above() {
    let mut lan = Lan::new(1);
    lan.start(1, &[]);
    let kubeconfig = lan.hosts[0].home.join("viewer.kubeconfig");
    let out = lan.a2a(
        1,
        &["user", "create", "viewer", "--role", "view", "--write-kubeconfig", kubeconfig.to_str().unwrap_or_default()],
    );
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    let out = lan.a2a(1, &["peers", "-o", "json", "--kubeconfig", kubeconfig.to_str().unwrap_or_default()]);
    assert!(out.status.success(), "a view user lists peers: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["kind"], "PeerList");
    assert_eq!(doc["items"], serde_json::json!([]), "alone on its LAN");
    // A user bound to a namespace reads no cluster-wide list, as with nodes.
    let bound = lan.hosts[0].home.join("bound.kubeconfig");
    let out = lan.a2a(
        1,
        &["user", "create", "bound", "--role", "view", "-n", "team", "--write-kubeconfig", bound.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lan.a2a(1, &["peers", "--kubeconfig", bound.to_str().unwrap_or_default()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("forbidden"), "{err}");
    // The wrong token is refused.
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let forged = lan.hosts[0].home.join("forged.kubeconfig");
    let token = text.lines().find_map(|l| l.trim().strip_prefix("token: ")).expect("token line");
    std::fs::write(&forged, text.replace(token, "not-a-token")).expect("write");
    let out = lan.a2a(1, &["peers", "--kubeconfig", forged.to_str().unwrap_or_default()]);
    assert!(!out.status.success(), "a bad token is refused");
}

#[test]
fn listen_and_node_name_refuse_bad_input_and_change_nothing() {
    let home = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(["serve", "--api-only", "--port", "0", "--home"])
            .arg(home.path())
            .args(args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--listen", "0.0.0.0"]);
    assert!(err.contains("0.0.0.0 is every address"), "{err}");
    let err = run(&["--listen", "eth0"]);
    assert!(err.contains("\"eth0\" is not an IP address"), "{err}");
    let err = run(&["--listen", "224.0.0.251"]);
    assert!(err.contains("multicast"), "{err}");
    let err = run(&["--node-name=-h1"]);
    assert!(err.contains("'-h1'") && err.contains("does not start or end with '-'"), "{err}");
    let err = run(&["--node-name", "a.b"]);
    assert!(err.contains("letters, digits and '-'"), "{err}");
    assert_eq!(std::fs::read_dir(home.path()).expect("home").count(), 0, "nothing was written");
}

#[test]
fn an_address_of_no_interface_is_refused_and_loopback_or_no_mdns_keeps_discovery_off() {
    let mut lan = Lan::new(2);
    // 10.77.0.9 is on no interface of the namespace.
    let out = lan
        .command(1, std::path::Path::new(env!("CARGO_BIN_EXE_a2a")))
        .args(["serve", "--api-only", "--port", "0", "--listen", "10.77.0.9", "--node-name", "x", "--home"])
        .arg(&lan.hosts[0].home)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot listen on 10.77.0.9"), "{err}");
    // On loopback: served, discovery off, and `a2a peers` says so.
    lan.start_on(1, "127.0.0.1", &[]);
    let out = lan.a2a(1, &["peers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("mDNS discovery is off"), "{text}");
    // On a LAN address with --no-mdns: served there, and quiet.
    let url = lan.start(2, &["--no-mdns"]);
    assert!(url.starts_with("https://10.77.0.2:"), "{url}");
    let doc = peers(&lan, 2);
    assert_eq!(doc["discovery"], "off", "{doc}");
    assert!(!lan.log(2).contains("mDNS discovery on"), "{}", lan.log(2));
}

#[test]
fn a_host_killed_without_a_goodbye_is_marked_gone_when_its_records_expire() {
    let mut lan = Lan::new(2);
    lan.start(1, &[]);
    lan.start(2, &[]);
    until(&lan, "h1 lists h2", || find(&listed(&lan, 1), "h2").is_some_and(|p| p["health"] == "up"));
    let killed = Instant::now();
    lan.kill(2);
    // The SRV and address records live 120 s (RFC 6762's host TTL); the browser queries again
    // from 80 % of it and, unanswered, drops them at the end.
    let deadline = Duration::from_secs(240);
    while killed.elapsed() < deadline {
        if find(&listed(&lan, 1), "h2").is_none_or(|p| p["health"] == "gone") {
            eprintln!("h2 marked gone {:?} after it was killed", killed.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("h2 still listed up {deadline:?} after it was killed\n{}", lan.logs());
}

#[test]
fn hosts_on_ipv6_addresses_find_each_other() {
    let mut lan = Lan::new(2);
    for i in 1..=2 {
        let ip6 = lan.hosts[i - 1].ip6.clone();
        let url = lan.start_on(i, &ip6, &[]);
        assert!(url.starts_with(&format!("https://[{ip6}]:")), "{url}");
    }
    until(&lan, "each lists the other by its IPv6 address", || {
        [(1, "h2", "fd77::2"), (2, "h1", "fd77::1")].iter().all(|(i, node, addr)| {
            find(&listed(&lan, *i), node)
                .is_some_and(|p| p["health"] == "up" && p["addresses"] == serde_json::json!([addr]))
        })
    });
}
