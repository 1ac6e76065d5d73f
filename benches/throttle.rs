//! Automatic throttling's reaction time, on this host's cgroups (needs root and PSI).
//!
//! `cargo bench --bench throttle` runs the local control plane (API server, node, engine)
//! with a budget (`cpu: "1"`, `throttle: {cpu: 40%, requestsPerMinute: 60}`) holding one demo
//! agent, and a workflow of 3,000 tasks streaming to it. Once dispatch flows, a CPU hog (a
//! busy loop in a child cgroup of the budget held to 50m) starts, and the bench prints, per
//! round (`A2A_BENCH_ROUNDS`, default 3):
//! - kernel trigger: from the hog's start to the kernel waking a PSI trigger that the bench
//!   itself registered on the budget's `cpu.pressure` as the node does (the same threshold
//!   and window). With a one-second window this is the floor of a PSI-driven reaction; with
//!   the two-second window granted without `CAP_SYS_RESOURCE` the kernel checks it only at
//!   its two-second tick, and the node's stall-counter check reacts before it;
//! - status: from the hog's start to the budget's `status.throttle` being readable;
//! - dispatch: from the hog's start to the last unpaced dispatch (the start of the first gap
//!   of 900 ms or more between two task starts after it): dispatch slowing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::{Agent, ResourceBudget, Workflow};
use a2a::local::{ControlPlane, LocalOptions};
use a2a::node::cgroup::{self, CgroupLimits, CgroupPath, CpuQuota};
use jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

const TASKS: usize = 3000;

fn main() {
    let rounds: usize = std::env::var("A2A_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_a2a"));
    let top = format!("a2a-bench-throttle-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let home = tempfile::tempdir().expect("tempdir");
        let mut opts = LocalOptions::new(home.path());
        opts.port = 0;
        opts.cgroup_top = top.clone();
        opts.stop_agents_on_exit = true;
        opts.a2a_exe = Some(exe.clone());
        let plane = ControlPlane::start(opts).await.expect("control plane");
        let budgets: Api<ResourceBudget> = Api::all(plane.client.clone());
        let budget: ResourceBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "bench"},
            "spec": {"limits": {"memory": "1Gi", "cpu": "1"}, "throttle": {"cpu": "40%", "requestsPerMinute": 60}}
        }))
        .expect("budget");
        budgets.create(&PostParams::default(), &budget).await.expect("budget");
        let agents: Api<Agent> = Api::namespaced(plane.client.clone(), "default");
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "worker"},
            "spec": {"command": ["a2a", "demo-agent", "--skill", "echo"], "budget": "bench",
                     "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}}
        }))
        .expect("agent");
        agents.create(&PostParams::default(), &agent).await.expect("agent");
        wait(Duration::from_secs(60), || async {
            agents.get("worker").await.ok().and_then(|a| a.status).is_some_and(|s| s.ready_replicas >= 1)
        })
        .await;
        let driver = cgroup::detect(Path::new("/sys/fs/cgroup")).expect("cgroups");
        // The budget's cgroup: the replica's, up to the budget's own name.
        let replica_cg = agents
            .get("worker")
            .await
            .ok()
            .and_then(|a| a.status?.instances.first()?.cgroup.clone())
            .expect("the replica's cgroup");
        let parts: Vec<&str> = replica_cg.split('/').collect();
        let at = parts.iter().position(|p| *p == "bench").expect("the budget in the replica's cgroup path");
        let budget_cg = CgroupPath::parse(&parts[..=at].join("/")).expect("path");
        let pressure_dir = driver.pressure_dir(&budget_cg).expect("this bench needs PSI");
        let hog_cg = budget_cg.child("hog").expect("path");
        let workflows: Api<Workflow> = Api::namespaced(plane.client.clone(), "default");
        println!("load before: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
        let mut results = Vec::new();
        for round in 0..rounds {
            // Calm first: the budget out of pressure.
            wait(Duration::from_secs(120), || async {
                budgets.get("bench").await.ok().and_then(|b| b.status).is_some_and(|s| s.throttle.is_none())
            })
            .await;
            let name = format!("stream-{round}");
            let tasks: Vec<serde_json::Value> = (0..TASKS)
                .map(|i| serde_json::json!({"name": format!("t{i}"), "agent": "worker", "message": format!("m{i}")}))
                .collect();
            let wf: Workflow = serde_json::from_value(serde_json::json!({
                "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
                "spec": {"tasks": tasks}
            }))
            .expect("workflow");
            workflows.create(&PostParams::default(), &wf).await.expect("workflow");
            wait(Duration::from_secs(60), || async { started(&workflows, &name).await.len() >= 50 }).await;

            // The floor's trigger, then the hog.
            let (trigger, window) =
                a2a::node::pressure::register_trigger(&pressure_dir.join("cpu.pressure"), 4000).expect("PSI trigger");
            if round == 0 {
                println!("PSI trigger window granted: {window:?}");
            }
            driver
                .create(&hog_cg, &CgroupLimits { cpu_quota: Some(CpuQuota::from_millicores(50)), ..Default::default() })
                .expect("hog cgroup");
            let procs: Vec<String> =
                driver.procs_files(&hog_cg).expect("procs").iter().map(|p| p.display().to_string()).collect();
            let (t0, wall0) = (Instant::now(), Timestamp::now());
            let mut hog = std::process::Command::new("sh")
                .arg("-c")
                .arg("for f in \"$@\"; do echo $$ > \"$f\"; done; exec sh -c 'while :; do :; done'")
                .arg("sh")
                .args(&procs)
                .spawn()
                .expect("hog");
            let floor = tokio::task::spawn_blocking(move || wait_trigger(&trigger).map(|()| t0.elapsed()));
            let mut status_at = None;
            let dispatch = loop {
                if status_at.is_none()
                    && budgets.get("bench").await.ok().and_then(|b| b.status).is_some_and(|s| s.throttle.is_some())
                {
                    status_at = Some(t0.elapsed());
                }
                let starts = started(&workflows, &name).await;
                if let Some(slowed) = first_gap(&starts, wall0.as_millisecond()) {
                    break Some(Duration::from_millis((slowed - wall0.as_millisecond()).max(0) as u64));
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let floor = floor.await.ok().flatten();
            let _ = hog.kill();
            let _ = hog.wait();
            let _ = workflows.delete(&name, &DeleteParams::default()).await;
            let _ = driver.remove(&hog_cg, Duration::from_secs(5));
            let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
            println!(
                "round {round}: kernel trigger {}, status.throttle {}, dispatch slowed {}",
                ms(floor),
                ms(status_at),
                ms(dispatch)
            );
            results.push((floor, status_at, dispatch));
        }
        println!("load after: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
        let mut slowed: Vec<Duration> = results.iter().filter_map(|r| r.2).collect();
        slowed.sort_unstable();
        match slowed.get(slowed.len() / 2) {
            Some(m) => println!(
                "dispatch slowed: median {} ms of {} rounds ({} never slowed within 60 s)",
                m.as_millis(),
                slowed.len(),
                results.len() - slowed.len()
            ),
            None => println!("dispatch never slowed within 60 s"),
        }
        let _ = agents.delete("worker", &DeleteParams::default()).await;
        plane.stop().await;
    });
}

async fn wait<F, Fut>(within: Duration, ok: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The task start times of a workflow so far, sorted (ms since the epoch).
async fn started(api: &Api<Workflow>, name: &str) -> Vec<i64> {
    let Ok(wf) = api.get(name).await else { return Vec::new() };
    let mut v: Vec<i64> = wf
        .status
        .map(|s| s.tasks.iter().filter_map(|t| t.started_at.map(|at| at.0.as_millisecond())).collect())
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The start of the first gap of 900 ms or more between task starts at or after `from`
/// (a paced dispatch at 60 a minute leaves one-second gaps), once a start after it shows
/// that the gap has ended.
fn first_gap(starts: &[i64], from: i64) -> Option<i64> {
    let i = starts.iter().position(|s| *s >= from)?;
    let tail = &starts[i.saturating_sub(1)..];
    tail.windows(2).find(|w| w[1] - w[0] >= 900).map(|w| w[0])
}

fn wait_trigger(f: &std::fs::File) -> Option<()> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let timeout = Timespec { tv_sec: 60, tv_nsec: 0 };
    let mut fds = [PollFd::new(f, PollFlags::PRI)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) if n > 0 && fds[0].revents().contains(PollFlags::PRI) => Some(()),
        _ => None,
    }
}
