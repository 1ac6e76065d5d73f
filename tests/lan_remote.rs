//! Remote work between hosts: three `a2a serve --listen` in network namespaces on a bridge
//! (tests/support/netns.rs), h2 and h3 joined to h1, h4 on the LAN with the skill but not
//! joined (never given work). A workflow task with `placement: lan`
//! runs on the peer that has its skill, over mutual TLS with h1's node certificate (audited on
//! both hosts); killing that peer's control plane opens its breaker and the work completes
//! elsewhere, each task's result recorded once; the peer comes back and its breaker closes.
//!
//! Deadlines are generous (a loaded 2-core machine); nothing here is timed.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::Lan;

const PATIENCE: Duration = Duration::from_secs(120);

fn until(lan: &Lan, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{what}: not within {PATIENCE:?}\n{}", lan.logs());
}

fn run(lan: &Lan, i: usize, args: &[&str]) -> String {
    let out = lan.a2a(i, args);
    assert!(out.status.success(), "a2a {args:?} on h{i}: {}\n{}", String::from_utf8_lossy(&out.stderr), lan.logs());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(lan: &Lan, i: usize, name: &str, yaml: &str) {
    let path = lan.hosts[i - 1].home.join(name);
    std::fs::write(&path, yaml).unwrap();
    run(lan, i, &["apply", "-f", path.to_str().unwrap()]);
}

fn peers(lan: &Lan, i: usize) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&run(lan, i, &["peers", "-o", "json"])).expect("peers JSON");
    doc["items"].as_array().cloned().unwrap_or_default()
}

fn peer(lan: &Lan, i: usize, node: &str) -> Option<Value> {
    peers(lan, i).into_iter().find(|p| p["nodeName"] == node)
}

fn workflow(lan: &Lan, i: usize, name: &str) -> Value {
    serde_json::from_str(&run(lan, i, &["get", "wf", name, "-o", "json"])).expect("workflow JSON")
}

fn finished(w: &Value) -> bool {
    matches!(w["status"]["phase"].as_str(), Some("Succeeded" | "Failed" | "Error"))
}

fn audit(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `SendMessage` (JSON-RPC) to host `i`'s gateway root for skill `uppercase` with placement
/// `placement`, as its administrator, over TLS checked against its CA; the JSON answer.
fn gateway_send(lan: &Lan, i: usize, placement: &str, text: &str) -> Value {
    let home = &lan.hosts[i - 1].home;
    let url = std::fs::read_to_string(home.join("gateway.url")).expect("gateway.url");
    let token = std::fs::read_to_string(home.join("token")).expect("token");
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {"message": {
            "messageId": format!("m-{placement}"), "role": "ROLE_USER", "parts": [{"text": text}],
            "metadata": {"a2a.dev/skill": "uppercase", "a2a.dev/placement": placement},
        }},
    });
    let out = lan
        .command(i, Path::new("curl"))
        .args(["-sS", "--max-time", "120", "--cacert"])
        .arg(home.join("pki/ca.crt"))
        .args(["-H", "content-type: application/json", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .args(["--data-binary", &body.to_string(), url.trim()])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stderr), lan.logs()))
}

const AGENT: &str = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: upper }\nspec:\n  protocol: a2a\n  \
                     command: [a2a, demo-agent, --skill, uppercase]\n  maxConcurrentTasks: 4\n";

fn tasks_yaml(name: &str, n: usize) -> String {
    let mut y = format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  placement: lan\n  tasks:\n"
    );
    for k in 0..n {
        y.push_str(&format!("    - {{ name: t{k}, skill: uppercase, message: \"shout {name} {k}\" }}\n"));
    }
    y
}

/// Where each task of workflow `name` on h1 ran, once it finished, every task Succeeded with
/// its own output, recorded once (one attempt counted).
fn ran_once(lan: &Lan, name: &str, n: usize) -> Vec<String> {
    let mut w = Value::Null;
    until(lan, &format!("workflow {name} finishes"), || {
        w = workflow(lan, 1, name);
        finished(&w)
    });
    assert_eq!(w["status"]["phase"], "Succeeded", "{w:#}\n{}", lan.logs());
    let tasks = w["status"]["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), n, "{w:#}");
    tasks
        .iter()
        .enumerate()
        .map(|(k, t)| {
            assert_eq!(t["phase"], "Succeeded", "{t}");
            assert_eq!(t["output"], format!("SHOUT {} {k}", name.to_uppercase()), "each result once, its own: {t}");
            assert_eq!(t["attempts"], 1, "a result recorded once, as one attempt: {t}");
            t["agent"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn lan_tasks_run_on_the_peer_with_the_skill_survive_its_death_and_its_breaker_closes_when_it_returns() {
    let mut lan = Lan::new(4);
    let first = lan.start(1, &[]);
    // h4 is on the LAN with the skill but never joined: another cluster's CA, never given work.
    lan.start(4, &[]);
    apply(&lan, 4, "agent.yaml", AGENT);
    // h2 and h3 join h1 before their daemons start (a2a join, in their namespaces).
    for i in 2..=3 {
        let token = run(&lan, 1, &["token", "create"]).trim().to_owned();
        let node = lan.hosts[i - 1].node.clone();
        run(&lan, i, &["join", &first, "--token", &token, "--node-name", &node]);
        lan.start(i, &[]);
    }
    // Only h2 has the skill at first.
    apply(&lan, 2, "agent.yaml", AGENT);
    until(&lan, "h1 verifies h2 over mutual TLS and learns its skill", || {
        peer(&lan, 1, "h2").is_some_and(|p| p["joined"] == true && p["skillsDigest"] != "none")
    });
    let h1_node_user = |home: &Path| {
        audit(home).into_iter().find(|l| {
            l["resource"] == "agents/SendMessage" && l["user"].as_str().is_some_and(|u| u.starts_with("system:node:"))
        })
    };

    until(&lan, "h1 sees h4 and its skill, and does not verify it", || {
        peer(&lan, 1, "h4").is_some_and(|p| p["skillsDigest"] != "none")
    });
    assert_eq!(peer(&lan, 1, "h4").expect("h4 listed")["joined"], false, "h4 is not of h1's cluster");

    // 1. placement: lan runs on h2.
    apply(&lan, 1, "w1.yaml", &tasks_yaml("w1", 3));
    let ran = ran_once(&lan, "w1", 3);
    assert!(ran.iter().all(|a| a == "peer/h2"), "every task ran on h2: {ran:?}");
    let line = h1_node_user(&lan.hosts[1].home).expect("h2's audit log has h1's node calling its gateway");
    assert_eq!(line["code"], 200, "{line}");
    assert!(
        audit(&lan.hosts[0].home).iter().any(|l| l["resource"] == "peers/SendMessage" && l["name"] == "h2/uppercase"),
        "h1 audits its calls to h2 too"
    );

    // 1b. A gateway call on h1 with placement lan is answered by h2 (h1 has no such agent);
    // an unknown placement is refused, naming it.
    let answer = gateway_send(&lan, 1, "lan", "shout through the gateway");
    assert_eq!(answer["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{answer:#}\n{}", lan.logs());
    assert!(answer.to_string().contains("SHOUT THROUGH THE GATEWAY"), "the peer's answer comes back: {answer:#}");
    let refused = gateway_send(&lan, 1, "nearby", "x");
    assert_eq!(refused["error"]["code"], -32602, "{refused:#}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("nearby")), "{refused:#}");
    assert!(
        audit(&lan.hosts[0].home).iter().any(|l| l["resource"] == "agents/SendMessage" && l["name"] == "peer/h2"),
        "h1 audits the gateway call as sent to h2"
    );
    assert!(
        audit(&lan.hosts[1].home)
            .iter()
            .filter(|l| l["resource"] == "agents/SendMessage"
                && l["user"].as_str().is_some_and(|u| u.starts_with("system:node:")))
            .count()
            >= 4,
        "h2 audits h1's node calling its gateway for the three tasks and the gateway call"
    );

    // 2. h1 and h3 get the skill too; h2's control plane dies (its agents live on).
    apply(&lan, 1, "agent.yaml", AGENT);
    apply(&lan, 3, "agent.yaml", AGENT);
    until(&lan, "h1 learns h3's skill", || {
        peer(&lan, 1, "h3").is_some_and(|p| p["joined"] == true && p["skillsDigest"] != "none")
    });
    lan.kill(2);
    apply(&lan, 1, "w2.yaml", &tasks_yaml("w2", 6));
    let ran = ran_once(&lan, "w2", 6);
    assert!(ran.iter().all(|a| a == "upper" || a == "peer/h3"), "completed on h1 or h3, not on the dead h2: {ran:?}");
    until(&lan, "h2's breaker is open on h1", || {
        peer(&lan, 1, "h2").is_some_and(|p| p["breaker"] == "open" || p["breaker"] == "half-open")
    });
    let table = run(&lan, 1, &["peers"]);
    assert!(table.contains("BREAKER"), "{table}");

    // 3. h2 comes back: the next lan tasks probe it and its breaker closes.
    lan.start(2, &[]);
    let mut round = 0;
    until(&lan, "h2's breaker closes on h1 after it returns", || {
        round += 1;
        let name = format!("w3-{round}");
        apply(&lan, 1, &format!("{name}.yaml"), &tasks_yaml(&name, 1));
        ran_once(&lan, &name, 1);
        peer(&lan, 1, "h2").is_some_and(|p| p["breaker"] == "closed")
    });
    assert!(
        audit(&lan.hosts[3].home).iter().all(|l| l["resource"] != "agents/SendMessage"),
        "h4, not of the cluster, was never sent anything"
    );
    assert!(
        audit(&lan.hosts[0].home).iter().all(|l| !l["name"].as_str().is_some_and(|n| n.starts_with("h4/"))),
        "nor did h1 try"
    );
    let events = run(&lan, 1, &["get", "events", "-o", "json"]);
    assert!(events.contains("PeerBreakerOpened") && events.contains("PeerBreakerClosed"), "{events}");
}
