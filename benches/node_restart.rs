//! How soon a crashed agent runs again, on this host's cgroups (needs root).
//!
//! `cargo bench --bench node_restart` prints, for N agents (default 20, `A2A_BENCH_N`) under an
//! embedded control plane, each SIGKILLed once (a first crash: no backoff), the time from the
//! kill to the new process's first instruction of its own (it stamps CLOCK_MONOTONIC into a
//! file): median, p90 and max. The floor beside it is the same program started directly
//! (fork/exec, no cgroup) and stamping, from the spawn call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::local::{ControlPlane, LocalOptions};
use kube::Api;
use kube::api::PostParams;

const STAMP_ARG: &str = "--a2a-stamp";

/// CLOCK_MONOTONIC, which every process on the host reads alike.
fn monotonic_ns() -> u128 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
    }
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// The helper mode: append `pid ns` to the file, then wait to be killed.
fn stamp_main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(STAMP_ARG) {
        return;
    }
    let now = monotonic_ns();
    if let Some(file) = args.next() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).expect("stamp file");
        let _ = writeln!(f, "{} {now}", std::process::id());
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The `(pid, ns)` lines of a stamp file.
fn stamps(file: &Path) -> Vec<(i32, u128)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, t) = l.split_once(' ')?;
            Some((p.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

fn wait_lines(file: &Path, n: usize, within: Duration) -> Vec<(i32, u128)> {
    let deadline = Instant::now() + within;
    loop {
        let s = stamps(file);
        if s.len() >= n {
            return s;
        }
        assert!(Instant::now() < deadline, "{}: {} of {n} stamps", file.display(), s.len());
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!("median {:.1} ms, p90 {:.1} ms, max {:.1} ms (n = {})", at(0.5), at(0.9), at(1.0), ms.len())
}

fn main() {
    stamp_main();
    let n: usize = std::env::var("A2A_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let exe = std::env::current_exe().expect("bench binary");
    let dir = tempfile::tempdir().expect("tempdir");
    // Agents run as uids of their own on a read-only system: the stamps go to a directory
    // every uid may write, listed in their writablePaths.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }

    // The floor: the same program, spawned directly.
    let mut floor = Vec::new();
    for i in 0..n {
        let file = dir.path().join(format!("floor-{i}"));
        let t0 = monotonic_ns();
        let mut child = std::process::Command::new(&exe).arg(STAMP_ARG).arg(&file).spawn().expect("spawn");
        let (_, t) = wait_lines(&file, 1, Duration::from_secs(10))[0];
        floor.push((t - t0) as f64 / 1e6);
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("floor: spawn → the program runs: {}", summary(floor));

    let top = format!("a2a-bench-restart-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let home = tempfile::tempdir().expect("tempdir");
        let mut opts = LocalOptions::new(home.path());
        opts.port = 0;
        opts.cgroup_top = top.clone();
        opts.stop_agents_on_exit = true;
        // `a2a …` commands (and the log relays, `a2a-log-relay` beside it): this bench binary
        // is not a2a.
        opts.a2a_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_a2a")));
        let plane = ControlPlane::start(opts).await.expect("control plane");
        let api: Api<Agent> = Api::namespaced(plane.client.clone(), "default");
        let files: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("agent-{i}"))).collect();
        for (i, file) in files.iter().enumerate() {
            let agent: Agent = serde_json::from_value(serde_json::json!({
                "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": format!("crash-{i}")},
                "spec": {
                    "command": [exe, STAMP_ARG, file],
                    "writablePaths": [dir.path()],
                    "resources": {"limits": {"memory": "64Mi", "pids": 32}}
                }
            }))
            .expect("agent");
            api.create(&PostParams::default(), &agent).await.expect("create");
        }
        let mut restart = Vec::new();
        for file in &files {
            let (pid, _) = tokio::task::block_in_place(|| wait_lines(file, 1, Duration::from_secs(60)))[0];
            // Let the start settle (status written, probes under way), as a crash in use would.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t0 = monotonic_ns();
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid).expect("pid"),
                rustix::process::Signal::KILL,
            )
            .expect("kill");
            let (new_pid, t) = tokio::task::block_in_place(|| wait_lines(file, 2, Duration::from_secs(30)))[1];
            assert_ne!(new_pid, pid);
            restart.push((t - t0) as f64 / 1e6);
        }
        println!("a2a: SIGKILL of an agent → its new process runs: {}", summary(restart));
        plane.stop().await;
    });
}
