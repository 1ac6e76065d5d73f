//! What recording the per-task metrics costs dispatch: the same workflow of N independent
//! tasks run with the metrics registry recording (as always in real use) and with recording
//! switched off, alternately over several rounds in one process, so a load that changes
//! meanwhile touches both alike. The local API server and the engine run in this process, a
//! trivial A2A agent (the demo agent's echo skill) on loopback in a child process.
//!
//! Also printed: the time of the recording calls themselves (one `task_dispatched` and one
//! `task_ended` per task, as the engine makes them), next to the time one task takes.
//!
//! `cargo bench --bench metrics_overhead` (or `-- N ROUNDS`; default 2000 6).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use a2a::a2a::server::{self, DemoAgentConfig, Skill};
use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

const AGENT_CHILD_ENV: &str = "A2A_BENCH_METRICS_AGENT";

fn main() {
    if std::env::var_os(AGENT_CHILD_ENV).is_some() {
        return agent_child();
    }
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(2_000);
    let rounds = args.get(1).copied().unwrap_or(6);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let (_server, client) = common::api_server(home.path()).await;
        let (addr, _child) = spawn_agent().await;
        register_agent(&client, &format!("http://{addr}/")).await;
        let engine = Engine::new(client.clone(), EngineConfig::default());
        tokio::spawn(engine.clone().run(std::future::pending()));
        let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("{n} independent tasks per workflow, {rounds} rounds of each; load before: {}", load());

        // A warm-up workflow, not counted (connections, allocator).
        run_one(&api, &engine, "warm-up", n.min(500)).await;
        let registry = a2a::metrics::registry();
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternating which goes first cancels a drift within a round.
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for recording in order {
                registry.set_recording(recording);
                let name = format!("r{round}-{}", if recording { "on" } else { "off" });
                let secs = run_one(&api, &engine, &name, n).await;
                let rate = n as f64 / secs;
                if recording { on.push(rate) } else { off.push(rate) }
            }
        }
        registry.set_recording(true);
        // Each round's pair ran back to back: its ratio cancels the load of that moment.
        let mut paired: Vec<f64> = on.iter().zip(&off).map(|(a, b)| (b - a) / b * 100.0).collect();
        let paired_m = median(&mut paired);
        let (on_m, off_m) = (median(&mut on), median(&mut off));
        println!("metrics off: {off_m:.0} tasks/s (median; rounds {})", fmt(&off));
        println!("metrics on:  {on_m:.0} tasks/s (median; rounds {})", fmt(&on));
        println!("cost of recording: {:.1}% of throughput (medians)", (off_m - on_m) / off_m * 100.0);
        println!("cost of recording, round by round: median {paired_m:.1}% (rounds {})", fmt1(&paired));

        // The calls alone, against the series of 100 workflows.
        let calls = 1_000_000u32;
        let t0 = Instant::now();
        for i in 0..calls {
            let wf = format!("wf-{}", i % 100);
            registry.task_dispatched("default", &wf, Duration::from_micros(300));
            registry.task_ended("default", &wf, "succeeded", "Completed", Some(Duration::from_millis(2)));
        }
        let per_task = t0.elapsed() / calls;
        println!(
            "recording calls: {per_task:?} per task (incl. formatting the workflow name), {:.2}% of one task at {on_m:.0} tasks/s",
            per_task.as_secs_f64() * on_m * 100.0
        );
        println!("load after: {}", load());
    });
}

fn fmt(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
}

fn fmt1(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(", ")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One workflow of `n` tasks, from create to Succeeded, in seconds; then deleted.
async fn run_one(api: &Api<Workflow>, engine: &Engine, name: &str, n: usize) -> f64 {
    let tasks: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("t{i}"), "agent": "echo", "message": format!("task {i}")}))
        .collect();
    let wf: Workflow = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name}, "spec": {"tasks": tasks}
    }))
    .expect("workflow");
    let t0 = Instant::now();
    api.create(&PostParams::default(), &wf).await.expect("create");
    loop {
        match engine.phase_of("default", name) {
            Some(WorkflowPhase::Succeeded) => break,
            Some(WorkflowPhase::Failed | WorkflowPhase::Cancelled) => {
                panic!("workflow {name} did not succeed: {:?}", engine.status_of("default", name))
            }
            _ => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    api.delete(name, &DeleteParams::default()).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(300)).await;
    secs
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

/// Starts the agent in a child process (this binary again), which prints its address.
async fn spawn_agent() -> (SocketAddr, tokio::process::Child) {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut child = tokio::process::Command::new(exe)
        .env(AGENT_CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Its log line per task would cost both sides alike and bury the result.
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("the agent's address").expect("the agent's address");
    (first.trim().parse().expect("an address"), child)
}

/// The child process: the demo agent's echo skill.
fn agent_child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        use std::io::Write;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = DemoAgentConfig { skills: vec![Skill::Echo], max_tasks: 5_000, ..Default::default() };
        let app = server::router(config);
        println!("{addr}");
        let _ = std::io::stdout().flush();
        let _ = axum::serve(listener, app).await;
    });
}
