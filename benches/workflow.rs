//! The workflow engine's speed, in one process: the local API server, the engine, and a
//! trivial A2A agent (the demo agent's echo skill) on loopback.
//!
//! - latency from `apply` (the create request) to the first `SendMessage` reaching the agent,
//!   over many one-task workflows (p50/p99);
//! - dispatch throughput: one workflow of N independent tasks, from create to Succeeded;
//! - memory: the process RSS growth while a 10,000-task workflow runs.
//!
//! `cargo bench --bench workflow` (or `-- 200 5000 10000 10000` for the three sizes and the
//! API server's watch history, which keeps that many events, each a whole object: with a
//! 10,000-task workflow most of the RSS growth is that history, not the engine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::a2a::server::{self, DemoAgentConfig, Skill};
use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use a2a::apiserver::{Server, ServerConfig};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let runs = args.first().copied().unwrap_or(200);
    let throughput_tasks = args.get(1).copied().unwrap_or(5_000);
    let memory_tasks = args.get(2).copied().unwrap_or(10_000);
    let watch_history = args.get(3).copied().unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let server = Server::start(ServerConfig::new(home.path()).port(0).watch_history(watch_history)).await.expect("api server");
        let kc = Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
        let client = kube::Client::try_from(config).expect("client");

        // The agent, counting every JSON-RPC request that reaches it.
        let (sent_tx, sent_rx) = watch::channel(0u64);
        let sent_tx = Arc::new(sent_tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        // The agent forgets finished tasks beyond max_tasks; on a loaded machine more than 1,000
        // may finish while one task's GetTask is on its way, and a forgotten task fails.
        let agent_config = DemoAgentConfig { skills: vec![Skill::Echo], max_tasks: 5_000, ..Default::default() };
        let counter = sent_tx.clone();
        let app = server::router(agent_config, addr).layer(tower::util::MapRequestLayer::new(
            move |req: axum::http::Request<axum::body::Body>| {
                if req.method() == axum::http::Method::POST {
                    counter.send_modify(|n| *n += 1);
                }
                req
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/");
        register_agent(&client, &url).await;

        let engine = Engine::new(client.clone(), EngineConfig::default());
        tokio::spawn(engine.clone().run(std::future::pending()));
        let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
        tokio::time::sleep(Duration::from_millis(300)).await;

        // (a) apply → first SendMessage on the wire.
        let mut lat = Vec::with_capacity(runs);
        for i in 0..runs {
            let name = format!("lat-{i}");
            let mut rx = sent_rx.clone();
            let before = *rx.borrow_and_update();
            let wf = workflow(&name, 1);
            let t0 = Instant::now();
            api.create(&PostParams::default(), &wf).await.expect("create");
            rx.wait_for(|n| *n > before).await.expect("agent counter");
            lat.push(t0.elapsed());
            // Let it finish, so its follow-up requests are not counted for the next one.
            wait_done(&engine, &name).await;
            api.delete(&name, &DeleteParams::default()).await.expect("delete");
        }
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "apply → first SendMessage ({runs} workflows): p50 {:?}  p99 {:?}  max {:?}",
            pct(0.50),
            pct(0.99),
            lat[lat.len() - 1]
        );

        // (b) dispatch throughput.
        let wf = workflow("throughput", throughput_tasks);
        let t0 = Instant::now();
        api.create(&PostParams::default(), &wf).await.expect("create");
        wait_done(&engine, "throughput").await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "dispatch throughput: {throughput_tasks} independent tasks in {secs:.2}s = {:.0} tasks/s",
            throughput_tasks as f64 / secs
        );
        api.delete("throughput", &DeleteParams::default()).await.expect("delete");
        tokio::time::sleep(Duration::from_millis(500)).await;

        // (c) memory of a big workflow.
        let (rss0, _) = rss();
        let wf = workflow("memory", memory_tasks);
        let t0 = Instant::now();
        api.create(&PostParams::default(), &wf).await.expect("create");
        let mut peak = rss0;
        let engine2 = engine.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(rss().0);
                if engine2.phase_of("default", "memory") == Some(WorkflowPhase::Succeeded) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        wait_done(&engine, "memory").await;
        peak = peak.max(sampler.await.unwrap_or(0));
        let (rss1, hwm) = rss();
        println!(
            "{memory_tasks}-task workflow (API server watch history {watch_history}): ran in {:.2}s; RSS {} MiB before, {} MiB after (+{} MiB), peak while running +{} MiB (process high-water mark {} MiB)",
            t0.elapsed().as_secs_f64(),
            rss0 >> 10,
            rss1 >> 10,
            rss1.saturating_sub(rss0) >> 10,
            peak.saturating_sub(rss0) >> 10,
            hwm >> 10
        );
    });
}

/// (VmRSS, VmHWM) in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn workflow(name: &str, tasks: usize) -> Workflow {
    let tasks: Vec<serde_json::Value> = (0..tasks)
        .map(|i| serde_json::json!({"name": format!("t{i}"), "agent": "echo", "message": format!("task {i}")}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name}, "spec": {"tasks": tasks}
    }))
    .expect("workflow")
}

async fn register_agent(client: &kube::Client, url: &str) {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let agent: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "echo"},
        "spec": {"url": url, "maxConcurrentTasks": 256}
    }))
    .expect("agent");
    api.create(&PostParams::default(), &agent).await.expect("create agent");
    let status =
        serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [url]}});
    api.patch_status("echo", &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
}

async fn wait_done(engine: &Engine, name: &str) {
    loop {
        // The phase alone: copying a big workflow's status every millisecond would be
        // measured as engine time.
        match engine.phase_of("default", name) {
            Some(WorkflowPhase::Succeeded) => return,
            Some(WorkflowPhase::Failed | WorkflowPhase::Cancelled) => {
                panic!("workflow {name} did not succeed: {:?}", engine.status_of("default", name))
            }
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}
