//! Tasks per second through a2a against an agent written with the official A2A Python SDK
//! (`examples/python/echo_agent.py`), against the floor measured in the same run: the same
//! agent called directly.
//!
//! - direct: N blocking JSON-RPC `SendMessage` requests (one HTTP POST each, a2a's own client
//!   used as a plain HTTP client: no card-driven follow-up, no `GetTask`), C in flight;
//! - a2a: one workflow of N independent tasks on a `url` Agent with `maxConcurrentTasks: C`,
//!   run by the engine and the local API server in this process, from create to Succeeded.
//!
//! For the agent's card declaring streaming (a2a sends `SendStreamingMessage`), not declaring
//! it (a blocking `SendMessage` in a context stored first), and neither streaming nor
//! `ListTasks` (`SendMessage` with `returnImmediately`, then `GetTask`: the two requests every
//! task cost before), interleaved over several rounds so a load that changes meanwhile touches
//! all alike (direct and a2a take turns going first, since the agent's task store only
//! grows). The streaming card is also called directly with `SendStreamingMessage` (read to
//! the end of the stream): the same protocol as a2a's, to tell the agent's cost of streaming
//! from a2a's own.
//!
//! Each round also prints the CPU time per task of this process (engine, API server and the
//! direct client) and of the agent, the share of the wall time the agent was on a CPU (an
//! agent below 100% while a2a runs waits for a2a), and the engine's status writes per task.
//! The Python SDK comes from `.venv` (`scripts/test-deps.sh`) or `$A2A_TEST_PYTHON`.
//!
//! `cargo bench --bench dispatch_real` (or `-- N C ROUNDS`; default 1000 16 3).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::a2a::Client;
use a2a::a2a::types::{Message, Part, Role, SendMessageResponse, TaskState};
use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(1_000);
    let c = args.get(1).copied().unwrap_or(16);
    let rounds = args.get(2).copied().unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let (_server, client) = common::api_server(home.path()).await;
        let engine = Engine::new(client.clone(), EngineConfig::default());
        tokio::spawn(engine.clone().run(std::future::pending()));

        let streaming = PyAgent::start(true, true).await;
        let blocking = PyAgent::start(false, true).await;
        let polled = PyAgent::start(false, false).await;
        register_agent(&client, "streaming", &streaming.url, c).await;
        register_agent(&client, "blocking", &blocking.url, c).await;
        register_agent(&client, "polled", &polled.url, c).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("{n} tasks, {c} in flight, {rounds} rounds; load before: {}", load());

        let (mut streamed_rates, mut streamed_ratios) = (Vec::new(), Vec::new());
        let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> =
            ["streaming", "blocking", "polled"].into_iter().map(|card| (card, vec![], vec![])).collect();
        for round in 0..rounds {
            for (card, direct_rates, a2a_rates) in &mut results {
                let agent = match *card {
                    "streaming" => &streaming,
                    "blocking" => &blocking,
                    _ => &polled,
                };
                // The agent keeps every task it ran (its store only grows, and its garbage
                // collector's passes with it): direct and a2a take turns going first.
                let mut direct_run = None;
                let mut a2a_run = None;
                for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                    let (cpu, agent_cpu) = (Cpu::of(None), Cpu::of(Some(agent.child.id())));
                    if which == 0 {
                        let rate = direct(&agent.url, n, c).await;
                        direct_run = Some((rate, cpu.per_task(n), agent_cpu.per_task(n), agent_cpu.busy(n as f64 / rate)));
                    } else {
                        let writes = engine.status_writes();
                        let rate = through_a2a(&client, &engine, card, &format!("{card}-{round}"), n).await;
                        let written = engine.status_writes();
                        let cost = (cpu.per_task(n), agent_cpu.per_task(n), agent_cpu.busy(n as f64 / rate));
                        a2a_run = Some((rate, cost, written.rounds - writes.rounds, written.objects - writes.objects, written.bytes - writes.bytes));
                    }
                }
                let (Some((direct, d_cpu, d_agent, d_busy)), Some((through, a2a_cost, rounds_written, objects, bytes))) =
                    (direct_run, a2a_run)
                else {
                    unreachable!("both ran")
                };
                println!(
                    "round {round}, card {card:9}: direct {direct:6.1} tasks/s, a2a {through:6.1} tasks/s, a2a/direct {:.2} (load {})",
                    through / direct,
                    load()
                );
                println!(
                    "  CPU per task: direct: this process {d_cpu:.0} µs, agent {d_agent:.0} µs (agent busy {:.0}%); a2a: this process {:.0} µs, agent {:.0} µs (agent busy {:.0}%)",
                    d_busy * 100.0,
                    a2a_cost.0,
                    a2a_cost.1,
                    a2a_cost.2 * 100.0
                );
                println!(
                    "  a2a status writes: {rounds_written} rounds, {:.3} objects and {:.0} B per task",
                    objects as f64 / n as f64,
                    bytes as f64 / n as f64
                );
                if *card == "streaming" {
                    // The same protocol straight from a client: SendStreamingMessage read to the end.
                    let agent_cpu = Cpu::of(Some(agent.child.id()));
                    let streamed = direct_streamed(&agent.url, n, c).await;
                    println!(
                        "  direct, streamed (SendStreamingMessage): {streamed:6.1} tasks/s, agent {:.0} µs per task; a2a/direct streamed {:.2}",
                        agent_cpu.per_task(n),
                        through / streamed
                    );
                    streamed_rates.push(streamed);
                    streamed_ratios.push(through / streamed);
                }
                direct_rates.push(direct);
                a2a_rates.push(through);
            }
        }
        for (card, direct, through) in &results {
            let ratios: Vec<f64> = direct.iter().zip(through).map(|(d, a)| a / d).collect();
            println!(
                "card {card:9}: direct {} tasks/s, a2a {} tasks/s, a2a/direct {}",
                range(direct),
                range(through),
                range(&ratios)
            );
        }
        if !streamed_rates.is_empty() {
            println!(
                "card streaming: direct, streamed {} tasks/s, a2a/direct streamed {}",
                range(&streamed_rates),
                range(&streamed_ratios)
            );
        }
        drop((streaming, blocking, polled));
    });
}

/// `min–max (median)`.
fn range(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let (lo, hi, mid) = (v[0], v[v.len() - 1], v[v.len() / 2]);
    if hi > 10.0 {
        format!("{lo:.0}–{hi:.0} (median {mid:.0})")
    } else {
        format!("{lo:.2}–{hi:.2} (median {mid:.2})")
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU time (user + system) of this process or of a child since a point, to tell what a
/// task costs each side.
struct Cpu {
    pid: Option<u32>,
    ticks: u64,
}

impl Cpu {
    fn of(pid: Option<u32>) -> Self {
        Cpu { pid, ticks: Self::ticks(pid) }
    }

    /// utime + stime, in clock ticks (100 per second).
    fn ticks(pid: Option<u32>) -> u64 {
        let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
        fields.iter().sum()
    }

    fn seconds(&self) -> f64 {
        Self::ticks(self.pid).saturating_sub(self.ticks) as f64 / 100.0
    }

    /// µs of CPU per task since `of`.
    fn per_task(&self, n: usize) -> f64 {
        self.seconds() * 1e6 / n as f64
    }

    /// The share of `wall` seconds it was on a CPU.
    fn busy(&self, wall: f64) -> f64 {
        self.seconds() / wall
    }
}

/// N blocking `SendMessage` requests straight to the agent, `c` in flight: tasks per second.
async fn direct(url: &str, n: usize, c: usize) -> f64 {
    let client = Arc::new(Client::new(url).expect("client"));
    client.agent_card().await.expect("card");
    let t0 = Instant::now();
    let sends = (0..n).map(|i| {
        let client = client.clone();
        async move {
            let message = Message::new(
                Role::User,
                format!("direct-{i}-{}", t0.elapsed().as_nanos()),
                vec![Part::text(format!("task {i}"))],
            );
            match client.send_message(message, None).await.expect("SendMessage") {
                SendMessageResponse::Task(t) => assert_eq!(t.status.state, TaskState::Completed, "{t:?}"),
                SendMessageResponse::Message(_) => {}
            }
        }
    });
    futures::stream::iter(sends).buffer_unordered(c).collect::<Vec<()>>().await;
    n as f64 / t0.elapsed().as_secs_f64()
}

/// N `SendStreamingMessage` exchanges straight to the agent, each read to the end of its
/// stream, `c` in flight: tasks per second.
async fn direct_streamed(url: &str, n: usize, c: usize) -> f64 {
    let client = Arc::new(Client::new(url).expect("client"));
    client.agent_card().await.expect("card");
    let opts = a2a::a2a::client::FollowOptions::default();
    let t0 = Instant::now();
    let sends = (0..n).map(|i| {
        let (client, opts) = (client.clone(), opts.clone());
        async move {
            let message = Message::new(
                Role::User,
                format!("streamed-{i}-{}", t0.elapsed().as_nanos()),
                vec![Part::text(format!("task {i}"))],
            );
            match client.stream_and_follow(message, &opts, std::future::pending(), || {}, |_| {}).await {
                Ok(SendMessageResponse::Task(t)) => assert_eq!(t.status.state, TaskState::Completed, "{t:?}"),
                Ok(SendMessageResponse::Message(_)) => {}
                Err(e) => panic!("SendStreamingMessage: {e}"),
            }
        }
    });
    futures::stream::iter(sends).buffer_unordered(c).collect::<Vec<()>>().await;
    n as f64 / t0.elapsed().as_secs_f64()
}

/// One workflow of `n` independent tasks on Agent `agent`, from create to Succeeded: tasks
/// per second.
async fn through_a2a(client: &kube::Client, engine: &Engine, agent: &str, name: &str, n: usize) -> f64 {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let tasks: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("t{i}"), "agent": agent, "message": format!("task {i}")}))
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
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    api.delete(name, &DeleteParams::default()).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rate
}

async fn register_agent(client: &kube::Client, name: &str, url: &str, c: usize) {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let agent: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"url": url, "maxConcurrentTasks": c}
    }))
    .expect("agent");
    api.create(&PostParams::default(), &agent).await.expect("create agent");
    let status =
        serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [url]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
}

/// The official-SDK echo agent in a child process.
struct PyAgent {
    child: std::process::Child,
    url: String,
}

impl PyAgent {
    async fn start(streaming: bool, lists: bool) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python =
            std::env::var_os("A2A_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = std::process::Command::new(&python)
            .arg(root.join("examples/python/echo_agent.py"))
            .env("A2A_PORT", port.to_string())
            .env("A2A_STREAMING", if streaming { "1" } else { "0" })
            .env("A2A_LIST_TASKS", if lists { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // One line per task: not read here.
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (run scripts/test-deps.sh): {e}", python.display()));
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::new(&url).expect("client").refresh_agent_card().await.is_err() {
            assert!(Instant::now() < deadline, "the Python agent did not serve its card within 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        PyAgent { child, url }
    }
}

impl Drop for PyAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
