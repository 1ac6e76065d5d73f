//! The workflow engine's speed and memory: the local API server and the engine in this
//! process, a trivial A2A agent (the demo agent's echo skill) on loopback.
//!
//! - latency from `apply` (the create request) to the first `SendMessage` reaching the agent,
//!   over many one-task workflows (p50/p99);
//! - dispatch throughput: one workflow of N independent tasks, from create to Succeeded;
//! - memory: the RSS growth of the orchestrator (API server + engine + A2A client) while a
//!   10,000-task workflow runs.
//!
//! The agent runs in a child process (this binary again), as agents do in real use, so the
//! RSS measured is the orchestrator's alone; the child's own growth is printed beside it.
//! `in-process` among the arguments serves the agent from this process instead (the
//! measure before: orchestrator and agent together).
//!
//! `cargo bench --bench workflow` (or `-- 200 5000 10000 10000 [in-process] [traced]` for the
//! three sizes and the API server's watch history in events). `traced` exports every span
//! over OTLP/HTTP to a receiver served from this process (`OTEL_EXPORTER_OTLP_ENDPOINT` names
//! it), to compare dispatch with and without the export.
//!
//! The throughput line also gives the process's CPU time per task (user + sys: the engine,
//! the API server and, with `in-process`, the agent), the heap allocations per task (counted
//! by this binary's allocator), the engine's status writes per task (objects and bytes), and
//! the load average, since on a shared machine the wall clock alone says little. With
//! `A2A_BENCH_PERF_FIFO=PATH` the bench writes `enable` and `disable` to that FIFO around the
//! throughput run, so that `perf record --control=fifo:PATH -D -1` profiles it alone.
//!
//! A shaped workflow instead, alone (the shapes `scripts/bench-peers.sh` runs against
//! Prefect): `-- layers 10 100` is 10 layers of 100 tasks, each task after the first layer
//! depending on tasks `i` and `i + 1` (mod the width) of the layer before; `-- fan 998` is one
//! task, 998 depending on it, and one depending on all 998. Printed: create → first
//! `SendMessage` on the wire, and create → Succeeded.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::a2a::server::{self, DemoAgentConfig, Skill};
use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use tokio::sync::watch;

/// The system allocator, counting allocations and the bytes asked for.
struct Counting;

static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ALLOC_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counters are atomics.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the process has used so far: CPU time (user + sys), allocations and their bytes.
#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    allocs: u64,
    alloc_bytes: u64,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Usage {
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            allocs: ALLOCS.load(std::sync::atomic::Ordering::Relaxed),
            alloc_bytes: ALLOC_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// Writes `what` to the perf control FIFO `A2A_BENCH_PERF_FIFO` names, if any.
fn perf_control(what: &str) {
    if let Some(path) = std::env::var_os("A2A_BENCH_PERF_FIFO") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = writeln!(f, "{what}");
        }
    }
}

fn main() {
    if std::env::var_os(AGENT_CHILD_ENV).is_some() {
        return agent_child();
    }
    if let Some(n) = std::env::var(SIZE_CHILD_ENV).ok().and_then(|n| n.parse().ok()) {
        return size_one(n);
    }
    if std::env::args().any(|a| a == "size") {
        return sizes();
    }
    let in_process = std::env::args().any(|a| a == "in-process");
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if let Some(shape) = Shape::from_args(&args) {
        return run_shape(shape, in_process);
    }
    let otlp = std::env::args().any(|a| a == "traced").then(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // SAFETY: no other thread runs yet (the runtime is built below): nothing reads the
        // environment while it changes.
        unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")) };
        listener
    });
    let runs = args.first().copied().unwrap_or(200);
    let throughput_tasks = args.get(1).copied().unwrap_or(5_000);
    let memory_tasks = args.get(2).copied().unwrap_or(10_000);
    let watch_history = args.get(3).copied().unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let config = a2a::apiserver::ServerConfig::new(home.path()).port(0).watch_history(watch_history);
        let (_server, client) = common::api_server_with(config).await;
        let received = otlp.map(otlp_receiver);

        // The agent, counting every JSON-RPC request that reaches it.
        let (sent_tx, sent_rx) = watch::channel(0u64);
        let (addr, child) = if in_process {
            (serve_agent(sent_tx).await, None)
        } else {
            let (addr, child) = spawn_agent(sent_tx).await;
            (addr, Some(child))
        };
        let agent_pid = child.as_ref().and_then(tokio::process::Child::id);
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
        let load = load_average();
        perf_control("enable");
        let (u0, w0) = (Usage::now(), engine.status_writes());
        let t0 = Instant::now();
        api.create(&PostParams::default(), &wf).await.expect("create");
        wait_done(&engine, "throughput").await;
        let secs = t0.elapsed().as_secs_f64();
        let (u1, w1) = (Usage::now(), engine.status_writes());
        perf_control("disable");
        let n = throughput_tasks as f64;
        println!(
            "dispatch throughput: {throughput_tasks} independent tasks in {secs:.2}s = {:.0} tasks/s (load average {load})",
            n / secs
        );
        println!(
            "  per task: CPU {:.0} µs (user+sys, the whole process: {:.0} tasks/s per busy core), {:.0} allocations ({:.1} KiB), status writes: {:.3} objects ({:.0} B); {} write rounds",
            (u1.cpu - u0.cpu).as_secs_f64() * 1e6 / n,
            n / (u1.cpu - u0.cpu).as_secs_f64(),
            (u1.allocs - u0.allocs) as f64 / n,
            (u1.alloc_bytes - u0.alloc_bytes) as f64 / n / 1024.0,
            (w1.objects - w0.objects) as f64 / n,
            (w1.bytes - w0.bytes) as f64 / n,
            w1.rounds - w0.rounds
        );
        if in_process {
            // The floor: the engine's exchange with the agent alone, in the same process.
            let (secs, used) = direct_exchanges(&url, throughput_tasks, 256).await;
            println!(
                "  floor, the same exchange straight from one A2A client (SendStreamingMessage read to the end, 256 in flight, no engine, API server or status): {:.0} tasks/s, CPU {:.0} µs and {:.0} allocations per task (load average {})",
                n / secs,
                used.cpu.as_secs_f64() * 1e6 / n,
                used.allocs as f64 / n,
                load_average()
            );
        }
        if let (Some(received), Some(stats)) = (&received, a2a::traces::stats()) {
            a2a::traces::flush().await;
            let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "  traced: the OTLP receiver got {} spans so far (exported {}, dropped {}, failed {})",
                n(received),
                n(&stats.exported),
                n(&stats.dropped),
                n(&stats.failed)
            );
        }
        api.delete("throughput", &DeleteParams::default()).await.expect("delete");
        tokio::time::sleep(Duration::from_millis(500)).await;

        // (c) memory of a big workflow.
        // The request is written as bytes, in one buffer, before the first sample: the
        // client's copy of the workflow (an `a2a apply` process in real use) is not the
        // orchestrator's, and building it as values would leave their freed memory in the
        // process for the orchestrator to reuse, which would make its growth look smaller.
        let body = workflow_body("memory", memory_tasks);
        let (rss0, _) = rss("self");
        let agent_rss0 = agent_pid.map(|p| rss(&p.to_string()).0);
        let t0 = Instant::now();
        let create = http::Request::post(Workflow::url_path(&(), Some("default")))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        // The answer (the object as created) is read and dropped.
        client.request_text(create).await.expect("create");
        let mut peak = rss0;
        let engine2 = engine.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(rss("self").0);
                if engine2.phase_of("default", "memory") == Some(WorkflowPhase::Succeeded) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        wait_done(&engine, "memory").await;
        peak = peak.max(sampler.await.unwrap_or(0));
        let (rss1, hwm) = rss("self");
        let measured = if in_process { "the whole process (orchestrator and agent)" } else { "the orchestrator (API server, engine, A2A client)" };
        println!(
            "{memory_tasks}-task workflow (API server watch history {watch_history}): ran in {:.2}s; RSS of {measured}: {} MiB before, {} MiB after (+{} MiB), peak while running +{} MiB (process high-water mark {} MiB)",
            t0.elapsed().as_secs_f64(),
            rss0 >> 10,
            rss1 >> 10,
            rss1.saturating_sub(rss0) >> 10,
            peak.saturating_sub(rss0) >> 10,
            hwm >> 10
        );
        if let (Some(pid), Some(before)) = (agent_pid, agent_rss0) {
            let after = rss(&pid.to_string()).0;
            println!(
                "  the agent's process (not counted above): RSS {} MiB before, {} MiB after (+{} MiB)",
                before >> 10,
                after >> 10,
                after.saturating_sub(before) >> 10
            );
        }
        drop(child);
    });
}

/// `n` exchanges as the engine has them with a streaming agent (`SendStreamingMessage`, read
/// until the task is finished), `in_flight` at once, from one A2A client: the seconds they
/// took and what the process used meanwhile.
async fn direct_exchanges(url: &str, n: usize, in_flight: usize) -> (f64, Usage) {
    use futures::StreamExt;
    let client = a2a::a2a::Client::new(url).expect("client");
    client.agent_card().await.expect("card");
    let opts = a2a::a2a::client::FollowOptions::default();
    let (u0, t0) = (Usage::now(), Instant::now());
    let done = futures::stream::iter(0..n)
        .map(|i| {
            let (client, opts) = (&client, &opts);
            async move {
                let message = a2a::a2a::Message::user_text(format!("floor-{i}"), format!("task {i}"));
                client.stream_and_follow(message, opts, std::future::pending(), || {}, |_| {}).await
            }
        })
        .buffer_unordered(in_flight)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let secs = t0.elapsed().as_secs_f64();
    let u1 = Usage::now();
    assert_eq!(done, n, "every exchange ends with the task");
    (secs, Usage { cpu: u1.cpu - u0.cpu, allocs: u1.allocs - u0.allocs, alloc_bytes: u1.alloc_bytes - u0.alloc_bytes })
}

/// (VmRSS, VmHWM) in KiB of a process (`self` or a pid).
fn rss(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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

/// An OTLP/HTTP receiver on `listener` that decodes each export and counts its spans.
fn otlp_receiver(listener: std::net::TcpListener) -> Arc<std::sync::atomic::AtomicU64> {
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use prost::Message as _;
    let spans = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let count = count.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
                let n: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    tokio::spawn(async move { axum::serve(listener, app).await });
    spans
}

/// Set in the environment of the child process that serves the agent.
const AGENT_CHILD_ENV: &str = "A2A_BENCH_WORKFLOW_AGENT";

/// The agent's app: the demo agent's echo skill, counting every JSON-RPC request in `sent`.
fn agent_app(sent: Arc<watch::Sender<u64>>) -> axum::Router {
    // The agent forgets finished tasks beyond max_tasks; on a loaded machine more than 1,000
    // may finish while one task's GetTask is on its way, and a forgotten task fails.
    let agent_config = DemoAgentConfig { skills: vec![Skill::Echo], max_tasks: 5_000, ..Default::default() };
    server::router(agent_config).layer(tower::util::MapRequestLayer::new(
        move |req: axum::http::Request<axum::body::Body>| {
            if req.method() == axum::http::Method::POST {
                sent.send_modify(|n| *n += 1);
            }
            req
        },
    ))
}

/// Serves the agent from this process.
async fn serve_agent(sent: watch::Sender<u64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = agent_app(Arc::new(sent));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Starts the agent in a child process: it prints its address, then the running count of
/// requests it received whenever that changes, which lands in `sent`.
async fn spawn_agent(sent: watch::Sender<u64>) -> (SocketAddr, tokio::process::Child) {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut child = tokio::process::Command::new(exe)
        .env(AGENT_CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("the agent's address").expect("the agent's address");
    let addr: SocketAddr = first.trim().parse().expect("an address");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(n) = line.trim().parse::<u64>() {
                sent.send_replace(n);
            }
        }
    });
    (addr, child)
}

/// The child process: serves the agent and reports its request count on stdout.
fn agent_child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (sent, mut count) = watch::channel(0u64);
        let app = agent_app(Arc::new(sent));
        let mut out = tokio::io::stdout();
        out.write_all(format!("{addr}\n").as_bytes()).await.expect("stdout");
        out.flush().await.expect("stdout");
        tokio::spawn(async move { axum::serve(listener, app).await });
        // Counts coalesce: one line per wake-up, however many requests came meanwhile.
        while count.changed().await.is_ok() {
            let n = *count.borrow_and_update();
            if out.write_all(format!("{n}\n").as_bytes()).await.is_err() || out.flush().await.is_err() {
                // The bench is gone.
                return;
            }
        }
    });
}

/// Set in the environment of the fresh process that runs one workflow of this many tasks for
/// `size`.
const SIZE_CHILD_ENV: &str = "A2A_BENCH_WORKFLOW_SIZE";

/// `-- size [N…]` (default 1000 10000 50000): for each N, in a fresh process, one workflow of
/// N short independent tasks (one `forEach: {count: N}` task) run to Succeeded; printed: the stored Workflow object's size (and
/// its status's), what its companion ConfigMaps hold, and the orchestrator's RSS growth.
fn sizes() {
    let mut ns: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if ns.is_empty() {
        ns = vec![1_000, 10_000, 50_000];
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    for n in ns {
        let status = std::process::Command::new(&exe)
            .env(SIZE_CHILD_ENV, n.to_string())
            .stdin(std::process::Stdio::null())
            .status()
            .expect("start the measuring process");
        if !status.success() {
            println!("{n} tasks: the measuring process failed ({status})");
        }
    }
}

/// One workflow of `n` tasks in this (fresh) process: see [`sizes`].
fn size_one(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let (_server, client) = common::api_server(home.path()).await;
        let (sent_tx, _sent_rx) = watch::channel(0u64);
        let (addr, child) = spawn_agent(sent_tx).await;
        register_agent(&client, &format!("http://{addr}/")).await;
        let engine = Engine::new(client.clone(), EngineConfig::default());
        tokio::spawn(engine.clone().run(std::future::pending()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Declared as one `forEach` (50,000 spelled-out tasks are a 2.5 MB body, past what
        // the store accepts), or spelled out with `A2A_BENCH_SPELLED=1`.
        let body = if std::env::var_os("A2A_BENCH_SPELLED").is_some() {
            workflow_body("size", n)
        } else {
            format!(
                r#"{{"apiVersion":"a2a.dev/v1alpha1","kind":"Workflow","metadata":{{"name":"size"}},"spec":{{"tasks":[{{"name":"t","agent":"echo","message":"task {{{{ index }}}}","forEach":{{"count":{n}}}}}]}}}}"#
            )
            .into_bytes()
        };
        let spec_bytes = body.len();
        let (rss0, _) = rss("self");
        let t0 = Instant::now();
        let create = http::Request::post(Workflow::url_path(&(), Some("default")))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("request");
        client.request_text(create).await.expect("create");
        let engine2 = engine.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(rss("self").0);
                if engine2.phase_of("default", "size") == Some(WorkflowPhase::Succeeded) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        wait_done(&engine, "size").await;
        let ran = t0.elapsed();
        let peak = sampler.await.unwrap_or(0);
        // The stored object, once the engine's last status write is in.
        let path = format!("{}/size", Workflow::url_path(&(), Some("default")));
        let object = loop {
            let get = http::Request::get(&path).body(Vec::new()).expect("request");
            let text = client.request_text(get).await.expect("get");
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            if v["status"]["phase"] == "Succeeded" {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (rss1, hwm) = rss("self");
        let v: serde_json::Value = serde_json::from_str(&object).expect("json");
        let status_bytes = serde_json::to_vec(&v["status"]).map(|b| b.len()).unwrap_or(0);
        let spec_stored = serde_json::to_vec(&v["spec"]).map(|b| b.len()).unwrap_or(0);
        let uid = v["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "default");
        let list = cms.list(&Default::default()).await.expect("list configmaps");
        let owned: Vec<_> = list
            .items
            .iter()
            .filter(|c| c.metadata.owner_references.iter().flatten().any(|r| r.uid == uid))
            .collect();
        let companion: usize = owned.iter().map(|c| serde_json::to_vec(c).map(|b| b.len()).unwrap_or(0)).sum();
        let largest = owned.iter().map(|c| serde_json::to_vec(c).map(|b| b.len()).unwrap_or(0)).max().unwrap_or(0);
        println!(
            "{n} tasks (request body {spec_bytes} B): ran in {:.2}s; Workflow object {} B (spec {spec_stored} B, status {status_bytes} B); {} companion ConfigMaps, {companion} B (largest {largest} B); orchestrator RSS {} MiB before, +{} MiB after, peak +{} MiB (high-water mark {} MiB)",
            ran.as_secs_f64(),
            object.len(),
            owned.len(),
            rss0 >> 10,
            rss1.saturating_sub(rss0) >> 10,
            peak.saturating_sub(rss0) >> 10,
            hwm >> 10
        );
        drop(child);
    });
}

/// A workflow shape with dependencies, named on the command line.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `layers` of `width` tasks; a task depends on tasks `i` and `i + 1` (mod `width`) of
    /// the layer before.
    Layers { layers: usize, width: usize },
    /// One task, `width` depending on it, one depending on all of them.
    Fan { width: usize },
}

impl Shape {
    /// `layers L W` or `fan W` among the arguments (`args` are the numeric ones, in order).
    fn from_args(args: &[usize]) -> Option<Shape> {
        let words: Vec<String> = std::env::args().skip(1).collect();
        if words.iter().any(|w| w == "layers") {
            let (layers, width) = (args.first().copied().unwrap_or(10), args.get(1).copied().unwrap_or(100));
            Some(Shape::Layers { layers, width })
        } else if words.iter().any(|w| w == "fan") {
            Some(Shape::Fan { width: args.first().copied().unwrap_or(998) })
        } else {
            None
        }
    }

    fn tasks(self) -> Vec<serde_json::Value> {
        let task = |name: String, deps: Vec<String>| {
            let mut t = serde_json::json!({"name": name, "agent": "echo", "message": format!("task {name}")});
            if !deps.is_empty() {
                t["dependsOn"] = deps.into();
            }
            t
        };
        match self {
            Shape::Layers { layers, width } => (0..layers)
                .flat_map(|l| {
                    (0..width).map(move |i| {
                        let deps = if l == 0 {
                            Vec::new()
                        } else {
                            vec![format!("l{}-{i}", l - 1), format!("l{}-{}", l - 1, (i + 1) % width)]
                        };
                        (format!("l{l}-{i}"), deps)
                    })
                })
                .map(|(name, mut deps)| {
                    deps.dedup();
                    task(name, deps)
                })
                .collect(),
            Shape::Fan { width } => std::iter::once(task("root".into(), Vec::new()))
                .chain((0..width).map(|i| task(format!("t{i}"), vec!["root".into()])))
                .chain(std::iter::once(task("join".into(), (0..width).map(|i| format!("t{i}")).collect())))
                .collect(),
        }
    }
}

/// One shaped workflow: create → first `SendMessage` on the wire, and create → Succeeded.
fn run_shape(shape: Shape, in_process: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let (_server, client) = common::api_server(home.path()).await;
        let (sent_tx, mut sent_rx) = watch::channel(0u64);
        let (addr, child) = if in_process {
            (serve_agent(sent_tx).await, None)
        } else {
            let (addr, child) = spawn_agent(sent_tx).await;
            (addr, Some(child))
        };
        register_agent(&client, &format!("http://{addr}/")).await;
        let engine = Engine::new(client.clone(), EngineConfig::default());
        tokio::spawn(engine.clone().run(std::future::pending()));
        let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let tasks = shape.tasks();
        let n = tasks.len();
        let wf: Workflow = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "shape"}, "spec": {"tasks": tasks}
        }))
        .expect("workflow");
        let before = *sent_rx.borrow_and_update();
        let t0 = Instant::now();
        api.create(&PostParams::default(), &wf).await.expect("create");
        sent_rx.wait_for(|s| *s > before).await.expect("agent counter");
        let first = t0.elapsed();
        wait_done(&engine, "shape").await;
        println!(
            "{shape:?}: {n} tasks, create → first SendMessage {:.1} ms, create → Succeeded {:.0} ms ({:.0} tasks/s)",
            first.as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3,
            n as f64 / t0.elapsed().as_secs_f64()
        );
        drop(child);
    });
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

/// The JSON of [`workflow`], written directly.
fn workflow_body(name: &str, tasks: usize) -> Vec<u8> {
    use std::io::Write;
    let mut body = Vec::with_capacity(128 + tasks * 64);
    let _ = write!(
        body,
        r#"{{"apiVersion":"a2a.dev/v1alpha1","kind":"Workflow","metadata":{{"name":"{name}"}},"spec":{{"tasks":["#
    );
    for i in 0..tasks {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(body, r#"{comma}{{"name":"t{i}","agent":"echo","message":"task {i}"}}"#);
    }
    body.extend_from_slice(b"]}}");
    body
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
