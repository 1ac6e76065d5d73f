//! A2A round trips between our client and the demo agent's server, in one process over
//! loopback: latency of one blocking `SendMessage` and throughput with concurrent senders.
//!
//! `cargo bench --bench a2a_roundtrip` (add `-- 20000 64` for tasks and concurrency).
//! With `A2A_BENCH_URL=http://...` the same runs go to that agent instead (e.g. an official
//! SDK agent, to compare its JSON-RPC and HTTP+JSON bindings through our client); its card
//! chooses the binding, and the answer must be a completed task. `A2A_BENCH_BINDING=http-json`
//! (or `jsonrpc`) has the in-process demo agent serve only that binding.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use a2a::a2a::server::{self, DemoAgentConfig};
use a2a::a2a::{Client, Message, SendMessageResponse, TaskState};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let tasks: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let url = match std::env::var("A2A_BENCH_URL") {
            Ok(url) => url,
            Err(_) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr: SocketAddr = listener.local_addr().expect("addr");
                let mut config = DemoAgentConfig { skills: vec![server::Skill::Echo], ..Default::default() };
                match std::env::var("A2A_BENCH_BINDING").as_deref() {
                    Err(_) => {}
                    Ok("jsonrpc") => config.bindings = vec![server::Binding::Jsonrpc],
                    Ok("http-json") => config.bindings = vec![server::Binding::HttpJson],
                    Ok(other) => panic!("A2A_BENCH_BINDING must be jsonrpc or http-json, not {other:?}"),
                }
                tokio::spawn(server::serve(listener, config, std::future::pending()));
                format!("http://{addr}")
            }
        };
        let client = Client::new(&url).expect("client");
        client.agent_card().await.expect("card");
        println!("agent {url}, binding {}", client.transport().await.expect("transport").binding());

        let sequential = tasks.min(2_000);
        let mut lat = Vec::with_capacity(sequential);
        for i in 0..sequential {
            let t0 = Instant::now();
            send(&client, format!("seq-{i}")).await;
            lat.push(t0.elapsed());
        }
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "sequential SendMessage (blocking, echo): p50 {:?}  p99 {:?}  max {:?}",
            pct(0.50),
            pct(0.99),
            lat[lat.len() - 1]
        );

        let t0 = Instant::now();
        let per = tasks / concurrency;
        let mut handles = Vec::new();
        for w in 0..concurrency {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..per {
                    send(&client, format!("par-{w}-{i}")).await;
                }
            }));
        }
        for h in handles {
            h.await.expect("sender");
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{} SendMessage with {concurrency} concurrent senders: {:.0} tasks/s ({:?} total)",
            per * concurrency,
            (per * concurrency) as f64 / secs,
            Duration::from_secs_f64(secs)
        );
    });
}

async fn send(client: &Client, id: String) {
    match client.send_message(Message::user_text(id, "ping"), None).await {
        Ok(SendMessageResponse::Task(t)) if t.status.state == TaskState::Completed => {}
        other => panic!("unexpected answer: {other:?}"),
    }
}
