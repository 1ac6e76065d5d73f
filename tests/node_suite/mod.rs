//! Enforcement tests of the node's cgroup driver and process supervisor against the real
//! kernel. Shared by `node_cgroup` (this host's cgroups, v1 here) and `node_cgroup_v2_vm`
//! (run inside a cgroup-v2-only VM). Every cgroup lives under a unique top `a2a-test-<pid>`,
//! and the runner checks that nothing is left behind.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::Time;
use a2a::api::agent::TerminationReason;
use a2a::node::cgroup::{
    CgroupDriver, CgroupLimits, CgroupPath, CgroupVersion, CpuQuota, DEFAULT_ROOT, Layout, detect,
};
use a2a::node::process::{AgentProcess, ExitInfo, ProcessSpec, RunAs, classify, spawn};
use a2a::node::sandbox::Confinement;

const MI: u64 = 1 << 20;

pub struct Ctx {
    pub driver: Box<dyn CgroupDriver>,
    pub layout: Layout,
    pub root: PathBuf,
    pub logs: tempfile::TempDir,
}

type Test = (&'static str, fn(&Ctx));

/// The argument that turns the test binary into a fork bomb (see [`helper_main`]).
pub const FORK_BOMB_ARG: &str = "--a2a-fork-bomb";

/// Helper modes of the test binary, used as workloads; returns when none was asked for.
pub fn helper_main() {
    if std::env::args().nth(1).as_deref() != Some(FORK_BOMB_ARG) {
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    loop {
        // Failures (EAGAIN at pids.max) are expected: keep trying, as a real bomb does.
        let _ = std::process::Command::new(&exe).arg(FORK_BOMB_ARG).stdin(std::process::Stdio::null()).spawn();
        std::thread::sleep(Duration::from_millis(5));
    }
}

const TESTS: &[Test] = &[
    ("spawned_process_starts_inside_its_cgroup_confined", spawned_process_starts_inside_its_cgroup_confined),
    (
        "memory_hog_is_oom_killed_and_classified_while_sibling_lives",
        memory_hog_is_oom_killed_and_classified_while_sibling_lives,
    ),
    (
        "budget_caps_the_sum_of_its_agents_and_spares_the_outside",
        budget_caps_the_sum_of_its_agents_and_spares_the_outside,
    ),
    ("cpu_limit_holds_a_busy_loop_to_200m_and_throttles", cpu_limit_holds_a_busy_loop_to_200m_and_throttles),
    ("pids_limit_stops_a_fork_bomb_at_16", pids_limit_stops_a_fork_bomb_at_16),
    ("freeze_stops_cpu_use_and_thaw_resumes_it", freeze_stops_cpu_use_and_thaw_resumes_it),
    (
        "a_cpu_hog_puts_its_budget_under_pressure_freezing_background_until_it_stops",
        a_cpu_hog_puts_its_budget_under_pressure_freezing_background_until_it_stops,
    ),
    (
        "without_psi_the_budgets_throttled_time_and_memory_use_are_its_pressure",
        without_psi_the_budgets_throttled_time_and_memory_use_are_its_pressure,
    ),
    ("graceful_stop_terms_then_kills_after_the_grace", graceful_stop_terms_then_kills_after_the_grace),
    ("adopted_non_child_is_watched_through_its_pidfd", adopted_non_child_is_watched_through_its_pidfd),
    (
        "remove_kills_remaining_processes_and_deletes_every_directory",
        remove_kills_remaining_processes_and_deletes_every_directory,
    ),
    (
        "spawn_errors_name_the_program_and_leave_nothing_running",
        spawn_errors_name_the_program_and_leave_nothing_running,
    ),
    ("limits_are_updated_in_place", limits_are_updated_in_place),
    ("the_top_records_its_owner_and_refuses_another_home", the_top_records_its_owner_and_refuses_another_home),
    (
        "a_confined_root_process_has_no_capability_and_writes_no_cgroup_procs",
        a_confined_root_process_has_no_capability_and_writes_no_cgroup_procs,
    ),
];

/// Runs every test whose name contains one of `filters` (all when empty); returns
/// (passed, failed). Fails everything with a clear message when cgroups are unusable.
pub fn run(filters: &[String], expect: Option<CgroupVersion>) -> (usize, usize) {
    let root = std::env::var_os("A2A_CGROUP_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    if !rustix::process::geteuid().is_root() {
        eprintln!("FAILED: the node cgroup tests create cgroups and must run as root");
        return (0, 1);
    }
    let driver = match detect(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("FAILED: no usable cgroups at {}: {e}", root.display());
            return (0, 1);
        }
    };
    eprintln!("cgroup driver: {} at {}", driver.version(), root.display());
    if let Some(v) = expect.filter(|v| *v != driver.version()) {
        eprintln!("FAILED: expected a cgroup {v} host, found {}", driver.version());
        return (0, 1);
    }
    let top = format!("a2a-test-{}", std::process::id());
    let ctx = Ctx {
        driver,
        layout: Layout::with_top(&top).expect("valid test top"),
        root: root.clone(),
        logs: tempfile::tempdir().expect("temp dir for logs"),
    };
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in TESTS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| test(&ctx)));
        // Each test's cgroups go, whatever happened.
        let cleanup = ctx.driver.remove(&ctx.layout.top(), Duration::from_secs(10));
        match (outcome, cleanup) {
            (Ok(()), Ok(())) => {
                passed += 1;
                eprintln!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            (Err(_), _) => {
                failed += 1;
                eprintln!("test {name} ... FAILED");
            }
            (Ok(()), Err(e)) => {
                failed += 1;
                eprintln!("test {name} ... FAILED: cleanup: {e}");
            }
        }
    }
    // Nothing may be left behind in any hierarchy.
    let leftovers = leftover_dirs(&ctx.root, &top);
    if leftovers.is_empty() {
        passed += 1;
        eprintln!("test every_test_cgroup_is_removed ... ok");
    } else {
        failed += 1;
        eprintln!("test every_test_cgroup_is_removed ... FAILED: {leftovers:?} remain");
    }
    (passed, failed)
}

fn leftover_dirs(root: &Path, top: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if root.join(top).exists() {
        out.push(root.join(top));
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path().join(top);
            if p.exists() {
                out.push(p);
            }
        }
    }
    out
}

// ---- helpers ----

impl Ctx {
    fn replica(&self, budget: &str, agent: &str) -> CgroupPath {
        self.layout.replica(&[budget], "default", agent, 0).expect("valid replica path")
    }

    fn budget(&self, budget: &str) -> CgroupPath {
        self.layout.budget(&[budget]).expect("valid budget path")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }

    fn sh(&self, cgroup: &CgroupPath, name: &str, script: &str) -> AgentProcess {
        let spec = ProcessSpec::new("sh", self.log(name)).args(["-c", script]);
        spawn(self.driver.as_ref(), cgroup, &spec).unwrap_or_else(|e| panic!("spawn {name}: {e}"))
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }
}

fn limits(memory: Option<u64>, cpu_millis: Option<u64>, pids: Option<u64>) -> CgroupLimits {
    CgroupLimits {
        memory_max: memory,
        cpu_quota: cpu_millis.map(CpuQuota::from_millicores),
        pids_max: pids,
        cpu_shares: Some(1024),
        oom_group: true,
        ..Default::default()
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(p: &mut AgentProcess) -> bool {
    p.wait_timeout(Some(Duration::ZERO)).expect("poll pidfd").is_none()
}

/// A shell that holds `mib` MiB of touched memory: dd fills its buffer from /dev/zero, then
/// blocks writing it to a pipe nobody reads.
fn holder(mib: u64) -> String {
    format!("dd if=/dev/zero bs={mib}M count=1 | sleep 600")
}

// ---- tests ----

fn spawned_process_starts_inside_its_cgroup_confined(ctx: &Ctx) {
    let cg = ctx.replica("misc", "probe");
    ctx.driver.create(&cg, &limits(Some(64 * MI), None, Some(64))).unwrap();
    // A descriptor without close-on-exec in the parent must not reach the agent.
    let leaky = std::fs::File::open("/proc/self/status").unwrap();
    rustix::io::fcntl_setfd(&leaky, rustix::io::FdFlags::empty()).unwrap();
    let leaky_fd = std::os::fd::AsRawFd::as_raw_fd(&leaky);
    let workdir = tempfile::tempdir().unwrap();
    let mut spec = ProcessSpec::new("sh", ctx.log("probe"))
        .args([
            "-c",
            "echo pid=$$; echo cwd=$(pwd); echo uid=$(id -u) gid=$(id -g); echo greeting=$GREETING; \
             grep NoNewPrivs /proc/self/status; echo sid=$(cut -d' ' -f6 /proc/$$/stat); \
             ls -l /proc/$$/fd/; cat /proc/$$/cgroup",
        ])
        .env("GREETING", "hello");
    spec.working_dir = Some(workdir.path().to_path_buf());
    spec.user = Some(RunAs::resolve("65534:65534").unwrap());
    let mut p = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap();
    let exit = p.wait_timeout(Some(Duration::from_secs(20))).unwrap().expect("probe ends");
    drop(leaky);
    let log = ctx.read_log("probe");
    assert_eq!(exit.code, Some(0), "probe failed; log:\n{log}");
    let pid = p.pid();
    assert!(log.contains(&format!("pid={pid}")), "{log}");
    assert!(log.contains(&format!("cwd={}", workdir.path().display())), "{log}");
    assert!(log.contains("uid=65534 gid=65534"), "{log}");
    assert!(log.contains("greeting=hello"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains(&format!("sid={pid}")), "own session expected; {log}");
    // The leaked descriptor would show as a link to this process's status file.
    assert!(
        !log.contains(&format!("/proc/{}/status", std::process::id())),
        "fd {leaky_fd} leaked into the agent: {log}"
    );
    assert!(log.contains("0 -> /dev/null"), "stdin from /dev/null: {log}");
    // Default signal handling, nothing blocked: not the daemon's mask or its ignored SIGPIPE.
    // Read by a program that leaves both alone (a shell blocks signals around its forks).
    let mut cat =
        spawn(ctx.driver.as_ref(), &cg, &ProcessSpec::new("cat", ctx.log("signals")).args(["/proc/self/status"]))
            .unwrap();
    assert_eq!(cat.wait_timeout(Some(Duration::from_secs(20))).unwrap().and_then(|e| e.code), Some(0));
    let status = ctx.read_log("signals");
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    assert!(status.contains("SigIgn:\t0000000000000000"), "{status}");
    // Every hierarchy line names the cgroup (v2 has one line, `0::/path`).
    let cg_lines: Vec<&str> = log.lines().filter(|l| l.contains("::") || l.contains(":memory:")).collect();
    assert!(cg_lines.iter().any(|l| l.ends_with(&format!("/{cg}"))), "process not in /{cg}: {cg_lines:?}");
}

fn memory_hog_is_oom_killed_and_classified_while_sibling_lives(ctx: &Ctx) {
    ctx.driver.ensure(&ctx.budget("oom"), &CgroupLimits::default()).unwrap();
    let hog_cg = ctx.replica("oom", "hog");
    let calm_cg = ctx.replica("oom", "calm");
    ctx.driver.create(&hog_cg, &limits(Some(64 * MI), None, None)).unwrap();
    ctx.driver.create(&calm_cg, &limits(Some(64 * MI), None, None)).unwrap();
    let mut calm = ctx.sh(&calm_cg, "calm", &holder(16));
    wait_for("the sibling to hold 16 MiB", Duration::from_secs(20), || {
        ctx.driver.stats(&calm_cg).unwrap().memory_current >= 15 * MI
    });

    let before = ctx.driver.stats(&hog_cg).unwrap().oom_kills;
    assert_eq!(before, 0, "a fresh cgroup starts with zero oom kills");
    let spec = ProcessSpec::new("dd", ctx.log("hog")).args(["if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    let mut hog = spawn(ctx.driver.as_ref(), &hog_cg, &spec).unwrap();
    let exit = hog.wait_timeout(Some(Duration::from_secs(60))).unwrap().expect("hog ends");
    let after = ctx.driver.stats(&hog_cg).unwrap();
    let t = classify(&exit, before, after.oom_kills, Time::now());
    assert_eq!(t.reason, TerminationReason::OomKilled, "{exit:?}, stats {after:?}");
    assert_eq!(t.signal, Some(9));
    assert!(after.memory_peak.unwrap_or(0) <= 64 * MI, "{after:?}");

    assert!(alive(&mut calm), "the sibling must be untouched");
    let calm_stats = ctx.driver.stats(&calm_cg).unwrap();
    assert_eq!(calm_stats.oom_kills, 0);
    assert!(calm_stats.memory_current >= 15 * MI, "{calm_stats:?}");
    // Graceful stop of the sibling ends it by SIGTERM, and that is no OOM kill.
    let exit = calm.stop(Duration::from_secs(5)).unwrap();
    let t = classify(&exit, 0, ctx.driver.stats(&calm_cg).unwrap().oom_kills, Time::now());
    assert_eq!((t.reason, t.signal), (TerminationReason::Signaled, Some(15)));

    // An empty leftover directory is reset on create: old counters do not leak into a new run.
    wait_for("the hog cgroup to empty", Duration::from_secs(10), || ctx.driver.pids(&hog_cg).unwrap().is_empty());
    ctx.driver.create(&hog_cg, &limits(Some(64 * MI), None, None)).unwrap();
    assert_eq!(ctx.driver.stats(&hog_cg).unwrap().oom_kills, 0);
}

fn budget_caps_the_sum_of_its_agents_and_spares_the_outside(ctx: &Ctx) {
    let budget = ctx.budget("tight");
    ctx.driver.ensure(&budget, &limits(Some(96 * MI), None, None)).unwrap();
    ctx.driver.ensure(&ctx.budget("roomy"), &CgroupLimits::default()).unwrap();
    let a_cg = ctx.replica("tight", "a");
    let b_cg = ctx.replica("tight", "b");
    let out_cg = ctx.replica("roomy", "outside");
    for cg in [&a_cg, &b_cg, &out_cg] {
        ctx.driver.create(cg, &limits(Some(80 * MI), None, None)).unwrap();
    }
    let mut outside = ctx.sh(&out_cg, "outside", &holder(60));
    wait_for("the outside process to hold 60 MiB", Duration::from_secs(30), || {
        ctx.driver.stats(&out_cg).unwrap().memory_current >= 59 * MI
    });
    let mut a = ctx.sh(&a_cg, "a", &holder(60));
    wait_for("agent a to hold 60 MiB", Duration::from_secs(30), || {
        ctx.driver.stats(&a_cg).unwrap().memory_current >= 59 * MI
    });
    // Each stays under its own 80 MiB; together (120 MiB) they exceed the budget's 96 MiB.
    let mut b = ctx.sh(&b_cg, "b", &holder(60));
    wait_for("the kernel to OOM-kill inside the budget", Duration::from_secs(60), || {
        let a = ctx.driver.stats(&a_cg).unwrap().oom_kills;
        let b = ctx.driver.stats(&b_cg).unwrap().oom_kills;
        a + b >= 1
    });
    if ctx.driver.version() == CgroupVersion::V2 {
        // memory.oom.group: the OOM kill took the whole agent, not just its biggest process.
        wait_for("one agent to be gone whole", Duration::from_secs(10), || {
            [&a_cg, &b_cg].iter().any(|cg| ctx.driver.pids(cg).unwrap().is_empty())
        });
    }
    let budget_stats = ctx.driver.stats(&budget).unwrap();
    assert!(budget_stats.memory_current <= 96 * MI, "{budget_stats:?}");
    assert!(budget_stats.memory_peak.unwrap_or(0) <= 96 * MI, "{budget_stats:?}");
    let out_stats = ctx.driver.stats(&out_cg).unwrap();
    assert_eq!(out_stats.oom_kills, 0, "the kernel killed outside the budget");
    assert!(out_stats.memory_current >= 59 * MI, "{out_stats:?}");
    assert!(alive(&mut outside), "the outside process must be untouched");
    for p in [&mut a, &mut b, &mut outside] {
        p.stop(Duration::from_secs(5)).unwrap();
    }
}

fn cpu_limit_holds_a_busy_loop_to_200m_and_throttles(ctx: &Ctx) {
    let cg = ctx.replica("cpu", "spin");
    ctx.driver.create(&cg, &limits(None, Some(200), None)).unwrap();
    let mut p = ctx.sh(&cg, "spin", "while :; do :; done");
    std::thread::sleep(Duration::from_millis(300));
    let s0 = ctx.driver.stats(&cg).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let s1 = ctx.driver.stats(&cg).unwrap();
    let wall = t0.elapsed().as_micros() as f64;
    let cores = (s1.cpu_usage_usec - s0.cpu_usage_usec) as f64 / wall;
    eprintln!(
        "  cpu 200m: {cores:.3} cores over {:.2}s, nr_throttled {} -> {}",
        wall / 1e6,
        s0.nr_throttled,
        s1.nr_throttled
    );
    assert!((0.16..=0.24).contains(&cores), "used {cores:.3} cores, expected 0.2 ± 20%");
    assert!(s1.nr_throttled > s0.nr_throttled, "{s0:?} -> {s1:?}");
    assert!(s1.throttled_usec > s0.throttled_usec, "{s0:?} -> {s1:?}");
    p.stop(Duration::from_secs(2)).unwrap();
}

fn pids_limit_stops_a_fork_bomb_at_16(ctx: &Ctx) {
    let cg = ctx.replica("pids", "bomb");
    ctx.driver.create(&cg, &limits(None, Some(500), Some(16))).unwrap();
    // Every process starts copies of itself forever (see `fork_bomb`): unbounded without the
    // limit. A shell bomb would not do: a shell exits on its first failed fork.
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let spec = ProcessSpec::new(exe, ctx.log("bomb")).args([FORK_BOMB_ARG]);
    let _bomb = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap();
    wait_for("the bomb to reach the limit", Duration::from_secs(30), || {
        ctx.driver.stats(&cg).unwrap().pids_current >= 16
    });
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(ctx.driver.stats(&cg).unwrap().pids_current);
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(most, 16, "pids.max 16 must hold the bomb at exactly 16");
    assert_eq!(ctx.driver.pids(&cg).unwrap().len(), 16);
    ctx.driver.remove(&cg, Duration::from_secs(10)).unwrap();
    assert!(!ctx.driver.exists(&cg));
}

fn freeze_stops_cpu_use_and_thaw_resumes_it(ctx: &Ctx) {
    let cg = ctx.replica("freeze", "spin");
    ctx.driver.create(&cg, &limits(None, Some(300), None)).unwrap();
    let mut p = ctx.sh(&cg, "freeze", "while :; do :; done");
    std::thread::sleep(Duration::from_millis(200));
    ctx.driver.freeze(&cg).unwrap();
    let s0 = ctx.driver.stats(&cg).unwrap().cpu_usage_usec;
    std::thread::sleep(Duration::from_millis(500));
    let s1 = ctx.driver.stats(&cg).unwrap().cpu_usage_usec;
    assert!(s1 - s0 < 5_000, "a frozen loop used {}us", s1 - s0);
    assert!(alive(&mut p));
    ctx.driver.thaw(&cg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let s2 = ctx.driver.stats(&cg).unwrap().cpu_usage_usec;
    assert!(s2 - s1 > 30_000, "a thawed loop used only {}us", s2 - s1);
    p.stop(Duration::from_secs(2)).unwrap();
}

/// Automatic throttling's kernel side, as the node drives it: the budget's pressure watch
/// (a PSI trigger on the budget cgroup's own `cpu.pressure` on v2, on its unified twin on a
/// hybrid host) reports a CPU hog in the budget, the node's reaction (a paced dispatch rate,
/// the background replica frozen) follows from that reading, and the watch reports calm
/// after the hog stops, when the replica thaws and runs on.
fn a_cpu_hog_puts_its_budget_under_pressure_freezing_background_until_it_stops(ctx: &Ctx) {
    use std::sync::Arc;
    use std::sync::mpsc::RecvTimeoutError;

    use a2a::node::pressure::{self, Reading, WatchConfig};

    let budget = ctx.budget("busy");
    ctx.driver.ensure(&budget, &limits(Some(256 * MI), Some(1000), None)).unwrap();
    let dir = ctx.driver.pressure_dir(&budget).unwrap_or_else(|| {
        panic!("no pressure files for {budget}: PSI needs cgroup v2 or a unified hierarchy, and psi=1")
    });
    let sweeper_cg = ctx.replica("busy", "sweeper");
    ctx.driver.create(&sweeper_cg, &limits(Some(32 * MI), Some(100), None)).unwrap();
    // Wakes twice a second: little enough that its own starts of `sleep` do not hold it at
    // its quota (a slow, emulated machine spends milliseconds on each).
    let mut sweeper = ctx.sh(&sweeper_cg, "sweeper", "while :; do sleep 0.5; done");

    let thresholds = [Some(4000), Some(2000), None];
    let driver: Arc<dyn CgroupDriver> = Arc::from(detect(&ctx.root).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Reading>();
    let watch = pressure::watch(
        WatchConfig {
            budget: "busy".into(),
            cgroup: budget.clone(),
            pressure_dir: Some(dir.clone()),
            thresholds,
            memory_limit: Some(256 * MI),
        },
        driver,
        move |_, r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    let next_until = |what: &str, within: Duration, ok: &dyn Fn(&Reading) -> bool| -> Reading {
        let deadline = Instant::now() + within;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) if ok(&r) => return r,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("timed out after {within:?} waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the pressure watch ended waiting for {what}"),
            }
        }
    };
    // The kernel accepts the watch's trigger (a two-second window without CAP_SYS_RESOURCE).
    let (_, window) = pressure::register_trigger(&dir.join("cpu.pressure"), 4000).unwrap();
    assert!(window <= Duration::from_secs(2), "{window:?}");
    // Calm before the hog (the budget's cgroup is new, but its replica's start, or other
    // tests' loads on a small machine, may weigh on the first readings: they pass).
    let calm = next_until("calm before the hog", Duration::from_secs(30), &|r| !r.under);
    assert_eq!(calm.signal, "psi");

    // A busy loop held to 50m by its own quota: runnable all the time, waiting most of it.
    let hog_cg = ctx.replica("busy", "hog");
    ctx.driver.create(&hog_cg, &limits(Some(32 * MI), Some(50), None)).unwrap();
    let mut hog = ctx.sh(&hog_cg, "hog", "while :; do :; done");
    let under = next_until("pressure from the hog", Duration::from_secs(30), &|r| r.under);
    assert!(under.over.iter().any(|(r, level)| *r == "cpu" && *level >= 4000), "{under:?}");
    let rate = pressure::paced_rate(30, &thresholds, &under);
    assert!((3..=30).contains(&rate), "dispatch slows to {rate} a minute: {under:?}");

    // The node's reaction to that reading: the background replica is frozen.
    ctx.driver.freeze(&sweeper_cg).unwrap();
    let s0 = ctx.driver.stats(&sweeper_cg).unwrap().cpu_usage_usec;
    std::thread::sleep(Duration::from_millis(500));
    let s1 = ctx.driver.stats(&sweeper_cg).unwrap().cpu_usage_usec;
    assert!(s1 - s0 < 5_000, "a frozen replica used {}us", s1 - s0);
    assert!(alive(&mut sweeper));

    // The hog stops: pressure falls below the threshold (avg10 decays over ~10 s), the watch
    // says so, and the replica thaws and runs on, the same process.
    hog.stop(Duration::from_secs(2)).unwrap();
    let calm = next_until("calm after the hog", Duration::from_secs(90), &|r| !r.under);
    assert!(calm.over.is_empty(), "{calm:?}");
    ctx.driver.thaw(&sweeper_cg).unwrap();
    let s2 = ctx.driver.stats(&sweeper_cg).unwrap().cpu_usage_usec;
    wait_for("the thawed replica to run", Duration::from_secs(10), || {
        ctx.driver.stats(&sweeper_cg).unwrap().cpu_usage_usec > s2
    });
    assert!(alive(&mut sweeper));
    drop(watch);
    sweeper.stop(Duration::from_secs(2)).unwrap();
}

/// The pressure signal where the kernel keeps no PSI (cgroup v1 alone): a budget held at its
/// CPU limit is throttled most of the time, and memory use near its limit is pressure; each
/// ends when the load does. Run on any host by giving the watch no pressure directory.
fn without_psi_the_budgets_throttled_time_and_memory_use_are_its_pressure(ctx: &Ctx) {
    use std::sync::Arc;
    use std::sync::mpsc::RecvTimeoutError;

    use a2a::node::pressure::{self, Reading, WatchConfig};

    // The budget's own quota: 100m, which a busy loop exceeds tenfold.
    let budget = ctx.budget("capped");
    ctx.driver.ensure(&budget, &limits(Some(256 * MI), Some(100), None)).unwrap();
    let driver: Arc<dyn CgroupDriver> = Arc::from(detect(&ctx.root).unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Reading>();
    let watch = pressure::watch(
        WatchConfig {
            budget: "capped".into(),
            cgroup: budget.clone(),
            pressure_dir: None,
            thresholds: [Some(4000), Some(2000), None],
            // Memory use past 90% of 64 MiB is pressure: 20% of it at 61.4 MiB.
            memory_limit: Some(64 * MI),
        },
        driver,
        move |_, r| {
            let _ = tx.send(r);
        },
    )
    .unwrap();
    let next_until = |what: &str, within: Duration, ok: &dyn Fn(&Reading) -> bool| -> Reading {
        let deadline = Instant::now() + within;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) if ok(&r) => return r,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("timed out after {within:?} waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the pressure watch ended waiting for {what}"),
            }
        }
    };
    let first = next_until("the first reading", Duration::from_secs(10), &|_| true);
    assert!(!first.under, "calm before the load: {first:?}");
    assert!(first.signal.contains("v1"), "{first:?}");

    let hog_cg = ctx.replica("capped", "hog");
    ctx.driver.create(&hog_cg, &limits(Some(32 * MI), None, None)).unwrap();
    let mut hog = ctx.sh(&hog_cg, "hog", "while :; do :; done");
    let under = next_until("throttled time over 40%", Duration::from_secs(30), &|r| r.under);
    assert!(under.over.iter().any(|(r, level)| *r == "cpu" && *level > 4000), "{under:?}");
    hog.stop(Duration::from_secs(2)).unwrap();
    let calm = next_until("calm after the CPU load", Duration::from_secs(30), &|r| !r.under);
    assert!(calm.over.is_empty(), "{calm:?}");

    // 63 MiB held: 98% of the 64 MiB the watch was given (filling it takes CPU, which the
    // 100m quota may throttle too: the memory signal is what is waited for).
    let holder_cg = ctx.replica("capped", "holder");
    ctx.driver.create(&holder_cg, &limits(Some(128 * MI), None, None)).unwrap();
    let mut held = ctx.sh(&holder_cg, "holder", &holder(63));
    let under = next_until("memory use near the limit", Duration::from_secs(60), &|r| {
        r.under && r.over.iter().any(|(r, _)| *r == "memory")
    });
    assert!(under.over.iter().any(|(r, level)| *r == "memory" && *level > 2000), "{under:?}");
    held.stop(Duration::from_secs(2)).unwrap();
    let calm = next_until("calm after the memory is freed", Duration::from_secs(30), &|r| !r.under);
    assert!(calm.over.is_empty(), "{calm:?}");
    drop(watch);
}

fn graceful_stop_terms_then_kills_after_the_grace(ctx: &Ctx) {
    let cg = ctx.replica("stop", "polite");
    ctx.driver.create(&cg, &CgroupLimits::default()).unwrap();
    let mut polite = ctx.sh(&cg, "polite", "sleep 600");
    let exit = polite.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(exit, ExitInfo { code: None, signal: Some(15) });

    let cg = ctx.replica("stop", "stubborn");
    ctx.driver.create(&cg, &CgroupLimits::default()).unwrap();
    // An ignored signal stays ignored across exec, so the whole group shrugs SIGTERM off.
    let mut stubborn = ctx.sh(&cg, "stubborn", "trap '' TERM; sleep 600 & wait; sleep 600");
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let exit = stubborn.stop(Duration::from_millis(700)).unwrap();
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert!(t0.elapsed() >= Duration::from_millis(700));
    // SIGKILL went to the whole group: the background sleep is gone too.
    wait_for("the group to be gone", Duration::from_secs(5), || ctx.driver.pids(&cg).unwrap().is_empty());
}

fn adopted_non_child_is_watched_through_its_pidfd(ctx: &Ctx) {
    let cg = ctx.replica("adopt", "orphan");
    ctx.driver.create(&cg, &CgroupLimits::default()).unwrap();
    // The shell exits at once, leaving its sleep behind: not a child of this process, as
    // after a daemon restart.
    let mut sh = ctx.sh(&cg, "orphan", "sleep 600 & exit 0");
    assert_eq!(sh.wait_timeout(Some(Duration::from_secs(10))).unwrap().unwrap().code, Some(0));
    // After a restart the daemon finds its replicas as the budget's child cgroups.
    let found = ctx.driver.children(&ctx.budget("adopt")).unwrap();
    assert_eq!(found, std::slice::from_ref(&cg));
    assert_eq!(found[0].name(), "default.orphan.0");
    let pids = ctx.driver.pids(&cg).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");
    // A recorded start time that is not this process's: the pid now names another process.
    let started = a2a::node::process::start_time(pids[0]).unwrap();
    let e = AgentProcess::adopt(ctx.driver.as_ref(), &cg, pids[0], Some(started + 1)).unwrap_err();
    assert_eq!(e.metric_label(), "recycled", "{e}");
    let mut orphan = AgentProcess::adopt(ctx.driver.as_ref(), &cg, pids[0], Some(started)).unwrap();
    assert!(!orphan.is_child());
    assert_eq!(orphan.start_time(), started);
    assert!(orphan.wait_timeout(Some(Duration::from_millis(200))).unwrap().is_none());
    let e = AgentProcess::adopt(ctx.driver.as_ref(), &cg, std::process::id(), None).unwrap_err();
    assert_eq!(e.metric_label(), "not_in_cgroup");

    ctx.driver.kill_all(&cg).unwrap();
    let exit = orphan.wait_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(exit, Some(ExitInfo { code: None, signal: None }), "an adopted end is seen, its status is not");
}

fn remove_kills_remaining_processes_and_deletes_every_directory(ctx: &Ctx) {
    let cg = ctx.replica("remove", "busy");
    ctx.driver.create(&cg, &limits(Some(64 * MI), None, None)).unwrap();
    let mut p = ctx.sh(&cg, "busy", "sleep 600 & sleep 600 & wait");
    wait_for("three processes", Duration::from_secs(10), || ctx.driver.pids(&cg).unwrap().len() == 3);
    // A cgroup in use is refused, not silently reused.
    let e = ctx.driver.create(&cg, &CgroupLimits::default()).unwrap_err();
    assert_eq!(e.metric_label(), "in_use", "{e}");
    ctx.driver.remove(&ctx.budget("remove"), Duration::from_secs(10)).unwrap();
    assert_eq!(p.wait_timeout(Some(Duration::from_secs(5))).unwrap().unwrap().signal, Some(9));
    assert!(!ctx.driver.exists(&cg));
    assert!(leftover_dirs(&ctx.root, &format!("{}/remove", ctx.layout.top())).is_empty());
    // Removing what is gone is fine.
    ctx.driver.remove(&cg, Duration::from_secs(1)).unwrap();
}

fn limits_are_updated_in_place(ctx: &Ctx) {
    let cg = ctx.replica("update", "grow");
    ctx.driver.create(&cg, &limits(Some(32 * MI), Some(100), Some(8))).unwrap();
    let mut p = ctx.sh(&cg, "grow", &holder(24));
    wait_for("24 MiB held", Duration::from_secs(20), || ctx.driver.stats(&cg).unwrap().memory_current >= 23 * MI);
    // Raising memory above the old memsw limit, and dropping cpu and pids limits.
    ctx.driver.update(&cg, &limits(Some(128 * MI), None, None)).unwrap();
    let dir = |file: &str| -> String {
        let h = match (ctx.driver.version(), file.split('.').next()) {
            (CgroupVersion::V2, _) => String::new(),
            (CgroupVersion::V1, Some(c)) => c.to_owned(),
            (CgroupVersion::V1, None) => unreachable!(),
        };
        let path = cg.under(&ctx.root.join(h)).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
    };
    match ctx.driver.version() {
        CgroupVersion::V2 => {
            assert_eq!(dir("memory.max"), (128 * MI).to_string());
            assert_eq!(dir("cpu.max"), "max 100000");
            assert_eq!(dir("pids.max"), "max");
        }
        CgroupVersion::V1 => {
            assert_eq!(dir("memory.limit_in_bytes"), (128 * MI).to_string());
            assert_eq!(dir("cpu.cfs_quota_us"), "-1");
            assert_eq!(dir("pids.max"), "max");
        }
    }
    assert!(alive(&mut p), "an update in place keeps the process");
    let e = ctx.driver.update(&ctx.replica("update", "absent"), &CgroupLimits::default()).unwrap_err();
    assert_eq!(e.metric_label(), "not_found");
    p.stop(Duration::from_secs(2)).unwrap();
}

fn spawn_errors_name_the_program_and_leave_nothing_running(ctx: &Ctx) {
    let cg = ctx.replica("spawn", "missing");
    ctx.driver.create(&cg, &CgroupLimits::default()).unwrap();
    let spec = ProcessSpec::new("/nonexistent/agent-binary", ctx.log("missing"));
    let e = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap_err();
    assert_eq!(e.metric_label(), "spawn");
    assert!(e.to_string().contains("/nonexistent/agent-binary"), "{e}");
    assert!(ctx.driver.pids(&cg).unwrap().is_empty());
    // A name is searched in the child's PATH; a file that is not executable is refused.
    let e = spawn(ctx.driver.as_ref(), &cg, &ProcessSpec::new("a2a-no-such-agent", ctx.log("missing"))).unwrap_err();
    assert!(e.to_string().contains("a2a-no-such-agent") && e.to_string().contains("No such file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.sh"), "#!/bin/sh\necho hi\n").unwrap();
    let mut spec = ProcessSpec::new("agent.sh", ctx.log("missing")).env("PATH", dir.path().display().to_string());
    let e = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
    // Made executable, the same spec starts it from that PATH.
    std::fs::set_permissions(dir.path().join("agent.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    spec.log_file = ctx.log("path-search");
    let mut p = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap();
    assert_eq!(p.wait_timeout(Some(Duration::from_secs(20))).unwrap().and_then(|e| e.code), Some(0));
    assert_eq!(ctx.read_log("path-search"), "hi\n");
    // A failed start leaves no zombie behind: no child of this process has ended unreaped.
    let r = rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG);
    assert!(matches!(r, Ok(None) | Err(rustix::io::Errno::CHILD)), "{r:?}");
    // A cgroup that was never created is named in the error, and nothing starts.
    let absent = ctx.replica("spawn", "absent");
    let spec = ProcessSpec::new("sleep", ctx.log("absent")).args(["600"]);
    let e = spawn(ctx.driver.as_ref(), &absent, &spec).unwrap_err();
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("default.absent.0"), "{e}");
}

fn the_top_records_its_owner_and_refuses_another_home(ctx: &Ctx) {
    use a2a::node::ownership::{Kind, Owner, claim, read_record};
    let top = ctx.layout.top();
    let me = |home: &str, kind| Owner { home: PathBuf::from(home), kind, pid: std::process::id() };
    let first = claim(ctx.driver.as_ref(), &top, me("/srv/a", Kind::Serve)).expect("an empty top is taken");
    assert!(first.is_held());
    let dir = ctx.driver.record_dir(&top).expect("a directory for the record");
    assert_eq!(read_record(&dir), Some(me("/srv/a", Kind::Serve)), "the record is on the top");
    // While the owner holds the lock, nobody takes the top, not even its own home.
    for (home, kind) in [("/srv/b", Kind::Serve), ("/srv/a", Kind::Serve), ("/srv/a", Kind::Run)] {
        let e = claim(ctx.driver.as_ref(), &top, me(home, kind)).expect_err("held").to_string();
        assert!(e.contains("belongs to a2a serve with home /srv/a") && e.contains("running);"), "{e}");
    }
    let budget = ctx.layout.budget(&["host"]).expect("path");
    ctx.driver.ensure(&budget, &CgroupLimits::default()).expect("budget cgroup");
    drop(first);
    // Down, it still owns the top: another home is refused, its own home takes over.
    let e = claim(ctx.driver.as_ref(), &top, me("/srv/b", Kind::Serve)).expect_err("owned").to_string();
    assert!(e.contains("(pid") && e.contains("not running); pass --cgroup-top a2a-"), "{e}");
    let e = claim(ctx.driver.as_ref(), &top, me("/srv/a", Kind::Run)).expect_err("the daemon's").to_string();
    assert!(e.contains("kept for it to re-adopt"), "{e}");
    let again = claim(ctx.driver.as_ref(), &top, me("/srv/a", Kind::Serve)).expect("the same home takes over");
    drop(again);
    // A top with cgroups and no record is nobody's to take.
    for xattr in ["user.a2a.owner", "trusted.a2a.owner"] {
        let _ = rustix::fs::removexattr(&dir, xattr);
    }
    let e = claim(ctx.driver.as_ref(), &top, me("/srv/a", Kind::Serve)).expect_err("unrecorded").to_string();
    assert!(e.contains("holds cgroups that no a2a control plane recorded"), "{e}");
}

/// The confinement a root daemon gives agents, at the process level: run as uid 0 (as
/// `user: root` is), the process has no capability, cannot write one `cgroup.procs` (it could
/// move itself out of its cgroup otherwise) nor anything outside its writable directory.
fn a_confined_root_process_has_no_capability_and_writes_no_cgroup_procs(ctx: &Ctx) {
    let cg = ctx.replica("misc", "confined");
    ctx.driver.create(&cg, &limits(Some(64 * MI), None, Some(64))).unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = "grep -E '^(Uid|CapEff|CapBnd):' /proc/self/status; n=0; \
                  for f in $(find /sys/fs/cgroup -maxdepth 4 -name cgroup.procs); do n=$((n+1)); \
                  if (echo $$ > \"$f\") 2>/dev/null; then echo \"wrote $f\"; fi; done; echo \"tried $n\"; \
                  (echo x > \"$WORK/file\") 2>/dev/null && echo work=written; \
                  (echo x > /a2a-confined-probe) 2>/dev/null && echo root=written; cat /proc/self/cgroup";
    let mut spec =
        ProcessSpec::new("sh", ctx.log("confined")).args(["-c", script]).env("WORK", work.path().display().to_string());
    spec.confinement = Some(Confinement::new(vec![work.path().canonicalize().unwrap()], Vec::new()));
    let mut p = spawn(ctx.driver.as_ref(), &cg, &spec).unwrap();
    let exit = p.wait_timeout(Some(Duration::from_secs(20))).unwrap().expect("the probe ends");
    let log = ctx.read_log("confined");
    assert_eq!(exit.code, Some(0), "{log}");
    assert!(log.contains("Uid:\t0\t0\t0\t0"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("CapBnd:\t0000000000000000"), "{log}");
    let tried: usize = log.lines().find_map(|l| l.strip_prefix("tried ")).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(tried > 0, "no cgroup.procs found to try: {log}");
    assert!(!log.contains("wrote "), "a confined process wrote a cgroup.procs: {log}");
    assert!(log.contains("work=written") && work.path().join("file").exists(), "{log}");
    assert!(!log.contains("root=written") && !Path::new("/a2a-confined-probe").exists(), "{log}");
    let cg_lines: Vec<&str> = log.lines().filter(|l| l.contains("::") || l.contains(":memory:")).collect();
    assert!(cg_lines.iter().any(|l| l.ends_with(&format!("/{cg}"))), "still in /{cg}: {cg_lines:?}");
}
