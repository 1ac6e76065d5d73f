//! The local control plane supervising many agents, on this host's cgroups (needs root).
//!
//! `cargo bench --bench node_agents` prints:
//! - floor: for N agents (default 100, `A2A_BENCH_N`), mkdir + limits + fork/exec of the same
//!   agent program with its pid written into the cgroup (of every hierarchy the driver uses),
//!   in a loop — the least work that gets N limited processes;
//! - a2a: time from one apply of N Agents (each its own cgroup with limits) until every one
//!   has its process running (status.replicas = 1), and until every one is Ready (its A2A
//!   agent card answers);
//! - idle: the whole control plane's own CPU use and RSS while it supervises M idle agents
//!   (default 500, `A2A_BENCH_IDLE`) for 10 s in the steady state, once every agent has
//!   reported its usage (API server + node controller + engine, agents excluded: they are
//!   other processes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use a2a::local::{ControlPlane, LocalOptions};
use futures::StreamExt;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;

fn agent(name: &str) -> Agent {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {
            "command": ["a2a", "demo-agent", "--skill", "echo"],
            "budget": "bench",
            "resources": {"limits": {"memory": "64Mi", "cpu": "100m", "pids": 32}}
        }
    }))
    .expect("agent")
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
async fn apply_and_wait(api: &Api<Agent>, n: usize, prefix: &str) -> (Duration, Duration, Duration, f64) {
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
        // As `a2a apply` sends a file's agents: 16 in flight.
        tokio::spawn(async move {
            futures::stream::iter((0..n).map(|i| {
                let (api, name) = (api.clone(), format!("{prefix}{i}"));
                async move { api.create(&PostParams::default(), &agent(&name)).await.expect("create") }
            }))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
            t.elapsed()
        })
    };
    let (mut running, mut ready) = (HashSet::new(), HashSet::new());
    let (mut started, mut cpu) = (None, 0.0);
    while ready.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(300).saturating_sub(t.elapsed()), stream.next()).await;
        let a = match ev {
            Ok(Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)))) => a,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("agents did not start: {} running, {} ready of {n}", running.len(), ready.len()),
        };
        let Some(name) = a.metadata.name.clone().filter(|n| n.starts_with(prefix)) else { continue };
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
        }
    }
    let created = creator.await.expect("creates");
    (created, started.unwrap_or(t.elapsed()), t.elapsed(), cpu)
}

async fn delete_all(api: &Api<Agent>) {
    for a in api.list(&Default::default()).await.expect("list").items {
        let _ = api.delete(a.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await;
    }
    while !api.list(&Default::default()).await.expect("list").items.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let n: usize = std::env::var("A2A_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let idle: usize = std::env::var("A2A_BENCH_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_a2a"));
    let root = PathBuf::from("/sys/fs/cgroup");
    let top = format!("a2a-bench-agents-{}", std::process::id());

    let floor_time = floor(n, &exe, &root, &format!("{top}-floor"));
    println!(
        "floor: {n} limited processes (mkdir + limits + fork/exec + join) in {:.0} ms",
        floor_time.as_secs_f64() * 1e3
    );

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
        let (created, started, ready, cpu) = apply_and_wait(&api, n, "a").await;
        println!(
            "a2a: {n} agents applied (the {n} creates took {:.0} ms) → all processes running in {:.0} ms ({:.2}× floor), all Ready (card answers) in {:.0} ms",
            created.as_secs_f64() * 1e3,
            started.as_secs_f64() * 1e3,
            started.as_secs_f64() / floor_time.as_secs_f64(),
            ready.as_secs_f64() * 1e3
        );
        println!("cpu: until all processes ran, this process (control plane + bench client) used {:.0} ms of CPU", cpu * 1e3);
        delete_all(&api).await;

        apply_and_wait(&api, idle, "i").await;
        // The steady state: every agent has had its first usage written (the node writes
        // usage for replicas that have run 2 s, at its 10 s sample), and the sample after
        // that burst of writes has given the freed heap back.
        let settled = Instant::now();
        loop {
            let agents = api.list(&Default::default()).await.expect("list").items;
            let reported = agents
                .iter()
                .filter(|a| a.status.as_ref().and_then(|s| s.usage.as_ref()).is_some_and(|u| u.memory_bytes > 0))
                .count();
            if reported >= idle {
                break;
            }
            assert!(settled.elapsed() < Duration::from_secs(60), "only {reported} of {idle} agents report usage");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        println!(
            "idle: supervising {idle} agents, the control plane used {:.2}% of a core and {:.1} MiB RSS",
            cpu * 100.0,
            rss_mib()
        );
        delete_all(&api).await;
        plane.stop().await;
    });
}
