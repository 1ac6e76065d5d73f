//! Remote dispatch throughput between two hosts (needs root: network namespaces).
//!
//! `cargo bench --bench remote_dispatch [-- TASKS [ROUNDS]]` (default 100 tasks, at most 100 so the status lists them; 3 rounds): two
//! `a2a serve --listen` in network namespaces on a bridge (tests/support/netns.rs), h2 joined
//! to h1, the `a2a demo-agent` with skill `uppercase` (8 tasks at once) on h2 only. Each round
//! applies on h1 a workflow of TASKS independent tasks with `placement: lan` (every one runs on
//! h2 through its gateway, over mutual TLS) and times it from the apply to `Succeeded`
//! (`a2a get wf -o json` polled every 50 ms); then the same workflow with `placement: local`
//! applied on h2 itself, the baseline of the same agent without the network hop.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::Lan;
use serde_json::Value;

const AGENT: &str = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: upper }\nspec:\n  protocol: a2a\n  \
                     command: [a2a, demo-agent, --skill, uppercase]\n  maxConcurrentTasks: 8\n";

fn run(lan: &Lan, i: usize, args: &[&str]) -> String {
    let out = lan.a2a(i, args);
    assert!(out.status.success(), "a2a {args:?} on h{i}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(lan: &Lan, i: usize, name: &str, yaml: &str) {
    let path = lan.hosts[i - 1].home.join(name);
    std::fs::write(&path, yaml).expect("manifest");
    run(lan, i, &["apply", "-f", path.to_str().unwrap_or_default()]);
}

fn workflow(name: &str, placement: &str, n: usize) -> String {
    let mut y = format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  placement: {placement}\n  tasks:\n"
    );
    for k in 0..n {
        y.push_str(&format!("    - {{ name: t{k}, skill: uppercase, message: \"x {k}\" }}\n"));
    }
    y
}

/// Applies the workflow on host `i` and answers how long it took to succeed, and where its
/// first task ran.
fn timed(lan: &Lan, i: usize, name: &str, placement: &str, n: usize) -> (Duration, String) {
    let yaml = workflow(name, placement, n);
    let start = Instant::now();
    apply(lan, i, &format!("{name}.yaml"), &yaml);
    loop {
        let w: Value = serde_json::from_str(&run(lan, i, &["get", "wf", name, "-o", "json"])).unwrap_or_default();
        match w["status"]["phase"].as_str() {
            Some("Succeeded") => {
                return (start.elapsed(), w["status"]["tasks"][0]["agent"].as_str().unwrap_or_default().to_owned());
            }
            Some("Failed" | "Error") => panic!("{name} failed: {w:#}\n{}", lan.logs()),
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(600), "{name} did not finish\n{}", lan.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let tasks = args.first().copied().unwrap_or(100).min(100);
    let rounds = args.get(1).copied().unwrap_or(3);
    let mut lan = Lan::new(2);
    let first = lan.start(1, &[]);
    let token = run(&lan, 1, &["token", "create"]).trim().to_owned();
    run(&lan, 2, &["join", &first, "--token", &token, "--node-name", "h2"]);
    lan.start(2, &[]);
    apply(&lan, 2, "agent.yaml", AGENT);
    let start = Instant::now();
    loop {
        let doc: Value = serde_json::from_str(&run(&lan, 1, &["peers", "-o", "json"])).unwrap_or_default();
        let ready = doc["items"].as_array().is_some_and(|items| {
            items.iter().any(|p| p["nodeName"] == "h2" && p["joined"] == true && p["skillsDigest"] != "none")
        });
        if ready {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "h1 never verified h2\n{}", lan.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "remote dispatch: {tasks} tasks per workflow, {rounds} rounds (h1 -> h2 over mutual TLS; baseline local on h2)"
    );
    for r in 0..rounds {
        let (remote, at) = timed(&lan, 1, &format!("remote-{r}"), "lan", tasks);
        assert_eq!(at, "peer/h2", "the remote round ran on h2");
        let (local, _) = timed(&lan, 2, &format!("local-{r}"), "local", tasks);
        let rate = |d: Duration| tasks as f64 / d.as_secs_f64();
        println!(
            "round {r}: remote {:>7.1} tasks/s ({:.2} s)   local on h2 {:>7.1} tasks/s ({:.2} s)",
            rate(remote),
            remote.as_secs_f64(),
            rate(local),
            local.as_secs_f64()
        );
    }
}
