//! The local control plane supervising many agents, on this host's cgroups (needs root).
//!
//! `cargo bench --bench node_agents` prints:
//! - floor: for N agents (default 100 and 500, `A2A_BENCH_N=100,500`), mkdir + limits +
//!   fork/exec of the same agent program with its pid written into the cgroup (of every
//!   hierarchy the driver uses), in a loop — the least work that gets N limited processes;
//! - a2a: time from one apply of N Agents (each its own cgroup with limits) until every one
//!   has its process running (status.replicas = 1), and until every one is Ready (its A2A
//!   agent card answers), against the floor for the same N measured just before;
//! - idle: the whole control plane's own CPU use and RSS over 10 s while it supervises M
//!   agents (default 500, `A2A_BENCH_IDLE`) in each state (`A2A_BENCH_STATES`, default
//!   `silent,404,ready`): processes that never listen (`sleep 3600`), processes that listen
//!   but answer every request with 404 (this bench's own binary, `--serve-404`), and demo
//!   agents that are Ready. Each state is measured in the 10 s right after every process
//!   runs (`first 10 s`: starting, probes at their fastest) and in the steady state, 60 s
//!   after the start and once every agent has reported its usage (`steady`). API server +
//!   node controller + engine; the agents are other processes.
//!
//! With `A2A_BENCH_SERVE=M` it measures only the daemon's memory: `a2a serve` as its own
//! process (as users run it, glibc's arenas capped as it caps them), its RSS idle, then with M
//! agents (`sleep 3600`, each its own limited cgroup) 90 s after every process runs, split
//! into anonymous and file-backed pages (`/proc/PID/smaps_rollup`), with the store's watch
//! history from its metrics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use a2a::local::{ControlPlane, LocalOptions};
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;

fn agent(name: &str, command: &[String]) -> Agent {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {
            "command": command,
            "budget": "bench",
            "resources": {"limits": {"memory": "64Mi", "cpu": "100m", "pids": 32}}
        }
    }))
    .expect("agent")
}

fn demo() -> Vec<String> {
    ["a2a", "demo-agent", "--skill", "echo"].map(String::from).to_vec()
}

/// `--serve-404`: listens on `$A2A_PORT` and answers every request with 404 (a process that
/// runs and listens but never serves an agent card).
fn serve_404() {
    use std::io::{Read, Write};
    let port = std::env::var("A2A_PORT").unwrap_or_default();
    let listener = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

/// CPU time of this process (all threads), from /proc/self/stat (utime + stime, in clock ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state field.
    let hz = 100.0; // CLK_TCK on Linux x86_64
    (ticks(11) + ticks(12)) / hz
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// mkdir + limits + spawn + pid into cgroup.procs, per agent, for the v1 or v2 layout.
fn floor(n: usize, exe: &Path, root: &Path, top: &str) -> Duration {
    let v2 = root.join("cgroup.controllers").exists();
    let dirs: Vec<PathBuf> =
        if v2 { vec![root.join(top)] } else { v1_hierarchies(root).iter().map(|h| h.join(top)).collect() };
    for d in &dirs {
        std::fs::create_dir_all(d).expect("mkdir top");
    }
    if v2 {
        let _ = std::fs::write(root.join(top).join("cgroup.subtree_control"), "+memory +cpu +pids");
    }
    let mut children = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let mut procs = Vec::new();
        for d in &dirs {
            let c = d.join(format!("f{i}"));
            std::fs::create_dir(&c).expect("mkdir");
            let writes: Vec<(&str, String)> = if v2 {
                vec![
                    ("memory.max", (64u64 << 20).to_string()),
                    ("cpu.max", "10000 100000".into()),
                    ("pids.max", "32".into()),
                ]
            } else if d.to_string_lossy().contains("/memory/") {
                vec![("memory.limit_in_bytes", (64u64 << 20).to_string())]
            } else if d.to_string_lossy().contains("/cpu/") {
                vec![("cpu.cfs_period_us", "100000".into()), ("cpu.cfs_quota_us", "10000".into())]
            } else if d.to_string_lossy().contains("/pids/") {
                vec![("pids.max", "32".into())]
            } else {
                Vec::new()
            };
            for (f, v) in writes {
                std::fs::write(c.join(f), v).expect("limit");
            }
            procs.push(c.join("cgroup.procs"));
        }
        let child = std::process::Command::new(exe)
            .args(["demo-agent", "--skill", "echo", "--port", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        for p in &procs {
            std::fs::write(p, child.id().to_string()).expect("join");
        }
        children.push(child);
    }
    let elapsed = t.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    for d in &dirs {
        for i in 0..n {
            let _ = std::fs::remove_dir(d.join(format!("f{i}")));
        }
        let _ = std::fs::remove_dir(d);
    }
    elapsed
}

/// The cgroup v1 hierarchies the node's driver puts an agent in: memory, cpu and pids, and
/// cpuacct and freezer when mounted, each once (`cpu` may be a link to `cpu,cpuacct`). The
/// floor joins the same ones, so it reaches the same end state.
fn v1_hierarchies(root: &Path) -> Vec<PathBuf> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for h in ["memory", "cpu", "pids", "cpuacct", "freezer"] {
        let Ok(real) = std::fs::canonicalize(root.join(h)) else { continue };
        if !seen.contains(&real) {
            seen.push(real);
            out.push(root.join(h));
        }
    }
    out
}

/// Creates `n` agents and follows them through a watch (not by polling lists, which would
/// take CPU from the control plane on a 2-core machine): the time until every process runs
/// (status.replicas = 1) and until every agent is Ready, and this process's CPU time until
/// every process runs (the API server, node and engine, plus this bench's creates and watch;
/// the agents are other processes).
async fn apply_and_wait(
    api: &Api<Agent>,
    n: usize,
    prefix: &str,
    command: &[String],
    want_ready: bool,
) -> (Duration, Duration, Duration, f64, usize) {
    use std::collections::HashSet;
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    // The watch is established (its initial list read) before the first create.
    loop {
        match stream.next().await {
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(_) => {}
            None => panic!("watch ended"),
        }
    }
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    let creator = {
        let api = api.clone();
        let prefix = prefix.to_owned();
        let command = command.to_vec();
        // As `a2a apply` sends a file's agents: 16 in flight.
        tokio::spawn(async move {
            futures::stream::iter((0..n).map(|i| {
                let (api, name, agent) =
                    (api.clone(), format!("{prefix}{i}"), agent(&format!("{prefix}{i}"), &command));
                async move {
                    api.create(&PostParams::default(), &agent).await.unwrap_or_else(|e| panic!("create {name}: {e}"))
                }
            }))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
            t.elapsed()
        })
    };
    let (mut running, mut ready) = (HashSet::new(), HashSet::new());
    let (mut started, mut cpu, mut events, mut events_at_start) = (None, 0.0, 0, 0);
    while ready.len() < n && (want_ready || started.is_none()) {
        let ev = tokio::time::timeout(Duration::from_secs(300).saturating_sub(t.elapsed()), stream.next()).await;
        let a = match ev {
            Ok(Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)))) => a,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("agents did not start: {} running, {} ready of {n}", running.len(), ready.len()),
        };
        let Some(name) = a.metadata.name.clone().filter(|n| n.starts_with(prefix)) else { continue };
        events += 1;
        let status = a.status.as_ref();
        if status.is_some_and(|s| s.replicas == 1) {
            running.insert(name.clone());
        }
        if status.and_then(|s| s.phase) == Some(AgentPhase::Running) {
            ready.insert(name);
        }
        if running.len() == n && started.is_none() {
            started = Some(t.elapsed());
            cpu = cpu_seconds() - cpu0;
            events_at_start = events;
        }
    }
    let created = creator.await.expect("creates");
    (created, started.unwrap_or(t.elapsed()), t.elapsed(), cpu, events_at_start)
}

async fn delete_all(api: &Api<Agent>) {
    for a in api.list(&Default::default()).await.expect("list").items {
        let _ = api.delete(a.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await;
    }
    while !api.list(&Default::default()).await.expect("list").items.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The control plane's CPU (percent of a core) over 10 s from now.
async fn cpu_over_10s() -> f64 {
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0
}

/// Supervises `n` agents running `command` in one state: the control plane's CPU in the 10 s
/// after every process runs, and in the steady state (60 s after the start, every agent's
/// usage reported, and the sample after that burst of writes passed).
async fn idle_state(api: &Api<Agent>, n: usize, key: &str, state: &str, command: &[String], ready: bool) {
    let prefix = format!("i{key}-");
    let (_, started, ..) = apply_and_wait(api, n, &prefix, command, ready).await;
    // On stderr, for a profiler or a counter to follow the same window.
    eprintln!("idle: {n} agents {state}: all run; the first 10 s window begins");
    let first = cpu_over_10s().await;
    eprintln!("idle: {n} agents {state}: the first 10 s window ends");
    let t0 = Instant::now();
    loop {
        let agents = api.list(&Default::default()).await.expect("list").items;
        let reported = agents
            .iter()
            .filter(|a| a.status.as_ref().and_then(|s| s.usage.as_ref()).is_some_and(|u| u.memory_bytes > 0))
            .count();
        if reported >= n {
            break;
        }
        // A quiet agent's first usage is written within a minute of its start (drawn).
        assert!(t0.elapsed() < Duration::from_secs(120), "only {reported} of {n} agents report usage");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    let since_start = started + t0.elapsed();
    if let Some(rest) = Duration::from_secs(60).checked_sub(since_start) {
        tokio::time::sleep(rest).await;
    }
    let steady = cpu_over_10s().await;
    println!(
        "idle: {n} agents {state}: the control plane used {first:.2}% of a core in the first 10 s, {steady:.2}% in the steady state; {:.1} MiB RSS",
        rss_mib()
    );
    delete_all(api).await;
}

fn main() {
    if std::env::args().any(|a| a == "--serve-404") {
        serve_404();
        return;
    }
    if let Some(n) = std::env::var("A2A_BENCH_SERVE").ok().and_then(|v| v.parse().ok()) {
        serve_memory(n);
        return;
    }
    let ns: Vec<usize> = std::env::var("A2A_BENCH_N")
        .unwrap_or_else(|_| "100,500".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let idle: usize = std::env::var("A2A_BENCH_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let states = std::env::var("A2A_BENCH_STATES").unwrap_or_else(|_| "silent,404,ready".into());
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_a2a"));
    let me = std::env::current_exe().expect("the bench's own binary");
    let root = PathBuf::from("/sys/fs/cgroup");
    let top = format!("a2a-bench-agents-{}", std::process::id());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let home = tempfile::tempdir().expect("tempdir");
        let mut opts = LocalOptions::new(home.path());
        opts.port = 0;
        opts.cgroup_top = top.clone();
        opts.stop_agents_on_exit = true;
        // `a2a` in a command means the running binary; the bench binary is not it.
        opts.a2a_exe = Some(exe.clone());
        let plane = ControlPlane::start(opts).await.expect("control plane");
        let budgets: Api<a2a::api::ResourceBudget> = Api::all(plane.client.clone());
        let budget: a2a::api::ResourceBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "bench"},
            "spec": {"limits": {"memory": "64Gi"}}
        }))
        .expect("budget");
        budgets.create(&PostParams::default(), &budget).await.expect("budget");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let api: Api<Agent> = Api::namespaced(plane.client.clone(), "default");
        for (round, &n) in ns.iter().enumerate() {
            // The floor of the same N, measured right before (same load, same machine state).
            let floor_time = floor(n, &exe, &root, &format!("{top}-floor{round}"));
            println!(
                "floor: {n} limited processes (mkdir + limits + fork/exec + join) in {:.0} ms",
                floor_time.as_secs_f64() * 1e3
            );
            let (created, started, ready, cpu, events) = apply_and_wait(&api, n, &format!("a{round}-"), &demo(), true).await;
            println!(
                "a2a: {n} agents applied (the {n} creates took {:.0} ms) → all processes running in {:.0} ms ({:.2}× floor), all Ready (card answers) in {:.0} ms",
                created.as_secs_f64() * 1e3,
                started.as_secs_f64() * 1e3,
                started.as_secs_f64() / floor_time.as_secs_f64(),
                ready.as_secs_f64() * 1e3
            );
            println!(
                "cpu: until all {n} processes ran, this process (control plane + bench client) used {:.0} ms of CPU; the watch saw {:.2} writes per agent (create included)",
                cpu * 1e3,
                events as f64 / n as f64
            );
            delete_all(&api).await;
        }

        let serve_404 = vec![me.to_string_lossy().into_owned(), "--serve-404".to_owned()];
        let silent = vec!["sleep".to_owned(), "3600".to_owned()];
        for state in states.split(',').map(str::trim) {
            match state {
                "silent" => idle_state(&api, idle, state, "never listening (sleep 3600)", &silent, false).await,
                "404" => idle_state(&api, idle, state, "listening, answering 404", &serve_404, false).await,
                "ready" => idle_state(&api, idle, state, "Ready (demo agent)", &demo(), true).await,
                other => eprintln!("unknown state {other:?} (silent, 404, ready)"),
            }
        }
        plane.stop().await;
    });
}

/// `VmRSS` and the anonymous and file-backed parts of a process's resident memory, in MiB.
fn memory_of(pid: u32) -> String {
    let field = |text: &str, key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    format!(
        "{:.1} MiB RSS ({:.1} anonymous, {:.1} file-backed; proportional share of the files {:.1})",
        field(&status, "VmRSS:"),
        field(&status, "RssAnon:"),
        field(&status, "RssFile:"),
        field(&rollup, "Pss_File:")
    )
}

/// The daemon's memory as users run it: `a2a serve` in a fresh home, idle, then with `n`
/// agents that never listen, 90 s after every process runs.
fn serve_memory(n: usize) {
    use std::io::BufRead;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_a2a"));
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-bench-serve-{}", std::process::id());
    let mut daemon = std::process::Command::new(&exe)
        .args(["serve", "--port", "0", "--gateway-port", "0", "--no-mdns", "--cgroup-top", &top, "--home"])
        .arg(home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn a2a serve");
    let pid = daemon.id();
    let mut line = String::new();
    std::io::BufReader::new(daemon.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let kubeconfig = line
        .rsplit_once("(kubeconfig: ")
        .and_then(|(_, p)| p.split([')', ',', ' ']).next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no kubeconfig in {line:?}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
        let client = kube::Client::try_from(config).expect("client");
        tokio::time::sleep(Duration::from_secs(18)).await;
        println!("serve: idle daemon, 18 s after its start: {}", memory_of(pid));
        let budgets: Api<a2a::api::ResourceBudget> = Api::all(client.clone());
        let budget: a2a::api::ResourceBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "bench"},
            "spec": {"limits": {"memory": "64Gi"}}
        }))
        .expect("budget");
        budgets.create(&PostParams::default(), &budget).await.expect("budget");
        let api: Api<Agent> = Api::namespaced(client.clone(), "default");
        let silent = vec!["sleep".to_owned(), "3600".to_owned()];
        let (_, started, ..) = apply_and_wait(&api, n, "m", &silent, false).await;
        println!("serve: {n} agents running {:.0} ms after their creates began", started.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(90)).await;
        let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
        let metrics = client.request_text(request).await.unwrap_or_default();
        let history: Vec<&str> = metrics.lines().filter(|l| l.starts_with("a2a_store_watch_history")).collect();
        println!("serve: {n} agents, 90 s after all run: {}; {}", memory_of(pid), history.join(", "));
        delete_all(&api).await;
        let _ = budgets.delete("bench", &DeleteParams::default()).await;
    });
    // SIGTERM: the daemon stops as users stop it.
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    // The daemon keeps its top cgroup (its lock and record) when it stops; the bench's home
    // is gone, so its top goes too, deepest directories first.
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies =
        if root.join("cgroup.controllers").exists() { vec![root.to_owned()] } else { v1_hierarchies(root) };
    // On v1 the daemon also uses the hybrid cgroup2 mount for pressure readings, when there is one.
    for h in hierarchies.into_iter().chain([root.join("unified")]) {
        remove_tree(&h.join(&top));
    }
}

/// Removes an empty cgroup directory and the ones below it (their control files go with them).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
