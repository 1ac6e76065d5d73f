//! How soon hosts on a LAN find a host that starts (needs root: network namespaces).
//!
//! `cargo bench --bench discovery [-- ROUNDS]` (default 5 rounds): three `a2a serve --listen`
//! in network namespaces on a bridge (tests/support/netns.rs). h1 and h2 run throughout; each
//! round starts h3 and times, until both h1 and h2 list h3 as up (`a2a peers -o json` run
//! in their namespaces, polled every 20 ms), from
//! - the spawn of h3's `a2a serve` (what a person starting a host sees), and
//! - h3's "listening" line (mDNS alone: probing, announcing, the peers' tables).
//!
//! Between rounds h3 stops cleanly and the bench waits until both peers mark it gone. The
//! poll adds its own latency (one `a2a peers` is a process start and a TLS handshake, tens of
//! milliseconds on a loaded machine), printed beside the numbers.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::Lan;
use serde_json::Value;

fn h3_state(lan: &Lan, i: usize) -> Option<String> {
    let out = lan.a2a(i, &["peers", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
    let items = doc["items"].as_array()?.clone();
    items.iter().find(|p| p["nodeName"] == "h3").and_then(|p| p["health"].as_str().map(str::to_string))
}

/// Polls h1 and h2 (each in a thread) until `done` holds for h3 on both; answers when the
/// last one saw it, and the mean time one poll took.
fn wait_both(lan: &Lan, done: fn(Option<String>) -> bool, limit: Duration) -> Option<(Instant, Duration)> {
    std::thread::scope(|s| {
        let polls: Vec<_> = [1, 2]
            .map(|i| {
                s.spawn(move || {
                    let start = Instant::now();
                    let mut n = 0u32;
                    let mut spent = Duration::ZERO;
                    while start.elapsed() < limit {
                        let t = Instant::now();
                        let state = h3_state(lan, i);
                        spent += t.elapsed();
                        n += 1;
                        if done(state) {
                            return Some((Instant::now(), spent / n));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    None
                })
            })
            .into_iter()
            .collect();
        let seen: Vec<Option<(Instant, Duration)>> = polls.into_iter().map(|p| p.join().ok().flatten()).collect();
        let (a, b) = (seen[0]?, seen[1]?);
        Some((a.0.max(b.0), (a.1 + b.1) / 2))
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let rounds: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut lan = Lan::new(3);
    lan.start(1, &[]);
    lan.start(2, &[]);
    let limit = Duration::from_secs(60);
    let mut from_spawn = Vec::new();
    let mut from_ready = Vec::new();
    let mut poll = Vec::new();
    for round in 1..=rounds {
        let spawned = Instant::now();
        lan.start(3, &[]);
        let ready = Instant::now();
        let Some((seen, per_poll)) = wait_both(&lan, |s| s.as_deref() == Some("up"), limit) else {
            eprintln!("round {round}: h1 and h2 did not both list h3 within {limit:?}\n{}", lan.logs());
            std::process::exit(1);
        };
        from_spawn.push(seen - spawned);
        from_ready.push(seen - ready);
        poll.push(per_poll);
        println!(
            "round {round}: listed by both after {} from spawn, {} from its listening line (one poll {})",
            ms(seen - spawned),
            ms(seen - ready),
            ms(per_poll)
        );
        lan.stop(3);
        if wait_both(&lan, |s| s.as_deref() != Some("up"), limit).is_none() {
            eprintln!("round {round}: h3's goodbye was not seen within {limit:?}");
            std::process::exit(1);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "discovery, {rounds} rounds: from spawn median {} max {}; from the listening line median {} max {}; one poll {}",
        ms(median(&mut from_spawn.clone())),
        ms(max(&from_spawn)),
        ms(median(&mut from_ready.clone())),
        ms(max(&from_ready)),
        ms(median(&mut poll)),
    );
}
