//! A real client's latency while a slowloris holds the API server: `a2a serve` with 512
//! descriptors (`prlimit --nofile=512`), 1,000 TLS connections opened and left idle, then
//! kube-rs lists namespaces, each time over a new connection of its own (the worst case: it
//! must take an idle connection's place). Printed: the same request on the quiet server first,
//! then under the load (p50, p90, max).
//!
//! `cargo bench --bench connections` (A2A_BENCH_N requests, default 50; A2A_BENCH_IDLE idle
//! connections, default 1000).

#[path = "../tests/common/tls.rs"]
#[allow(dead_code)]
mod tls;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn fresh_client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Latencies of `n` lists, each from a new client (a new connection).
async fn latencies(kubeconfig: &Path, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client = fresh_client(kubeconfig).await;
        let started = Instant::now();
        let list =
            tokio::time::timeout(Duration::from_secs(60), Api::<Namespace>::all(client).list(&ListParams::default()))
                .await
                .expect("answered within 60 s")
                .expect("served");
        out.push(started.elapsed());
        assert!(!list.items.is_empty());
    }
    out.sort();
    out
}

fn summary(d: &[Duration]) -> String {
    let ms = |i: usize| d[i.min(d.len() - 1)].as_secs_f64() * 1e3;
    format!("p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms", ms(d.len() / 2), ms(d.len() * 9 / 10), ms(d.len() - 1))
}

fn main() {
    let n: usize = std::env::var("A2A_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let flood: usize = std::env::var("A2A_BENCH_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    tls::raise_nofile(flood as u64 + 1024);
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=512")
        .arg("--")
        .arg(PathBuf::from(env!("CARGO_BIN_EXE_a2a")))
        .args(["serve", "--api-only", "--port", "0", "--header-timeout", "10m", "--idle-timeout", "10m", "--home"])
        .arg(home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit and a2a serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("https://")).expect("the URL").to_string();
    let kubeconfig = home.path().join("kubeconfig");
    let addr = tls::addr_of(&url);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let quiet = latencies(&kubeconfig, n).await;
        println!("report: quiet server, list over a new connection: {}", summary(&quiet));

        let connector = tls::connector(&kubeconfig, &[b"http/1.1"]);
        let mut idle = Vec::new();
        let started = Instant::now();
        while idle.len() < flood && started.elapsed() < Duration::from_secs(120) {
            let batch = futures::future::join_all((0..50).map(|_| tls::connect(&connector, addr))).await;
            idle.extend(batch.into_iter().flatten());
        }
        let loaded = latencies(&kubeconfig, n).await;
        println!(
            "report: {} idle TLS connections opened against 512 descriptors, list over a new connection: {}",
            idle.len(),
            summary(&loaded)
        );
        let goal = if loaded[loaded.len() / 2] < Duration::from_secs(1) { "met" } else { "NOT met" };
        println!("report: goal p50 under 1 s: {goal}");
    });
    let _ = child.kill();
    let _ = child.wait();
}
