//! Start cost of agent processes in their own cgroups, on this host's cgroups (needs root).
//!
//! `cargo bench --bench node_spawn` prints, for N (default 100, `A2A_BENCH_N`) long-running
//! processes (`sleep`):
//! - floor: mkdir in each hierarchy + the limit writes + a plain `spawn` + writing the pid
//!   to `cgroup.procs` afterwards (the cheapest way to get the same end state);
//! - driver: `CgroupDriver::create` with limits + `process::spawn` (join before exec, own
//!   session, no_new_privs, fds closed, log file);
//! - driver + log relay: the same, with each process's output through its own
//!   `a2a-log-relay` (what the node does since logs are capped at write time), and through
//!   `a2a log-relay` (the a2a binary, what the node falls back to without `a2a-log-relay`);
//! - confined: the same, each process as a root daemon starts an agent — its own uid, its
//!   own mount namespace (read-only system, a writable home, private `/tmp`, `$A2A_HOME`
//!   hidden), no capabilities;
//! - removal of all of them through the driver.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use a2a::node::cgroup::{CgroupLimits, CgroupVersion, CpuQuota, Layout, detect};
use a2a::node::logs::{LogLimits, RelayProgram, RelaySpec};
use a2a::node::process::{ProcessSpec, RunAs, spawn};
use a2a::node::sandbox::Confinement;

fn main() {
    let n: usize = std::env::var("A2A_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let root = PathBuf::from(std::env::var("A2A_CGROUP_ROOT").unwrap_or_else(|_| "/sys/fs/cgroup".into()));
    let driver = match detect(&root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("node_spawn bench needs root and cgroups: {e}");
            std::process::exit(1);
        }
    };
    let top = format!("a2a-bench-{}", std::process::id());
    let layout = Layout::with_top(&top).expect("valid top");
    let logs = tempfile::tempdir().expect("temp dir");
    let limits = CgroupLimits {
        memory_max: Some(256 << 20),
        cpu_quota: Some(CpuQuota::from_millicores(500)),
        cpu_shares: Some(1024),
        pids_max: Some(64),
        ..Default::default()
    };
    println!("node_spawn: {n} processes, cgroup {}", driver.version());

    // Floor.
    let hierarchies: Vec<PathBuf> = match driver.version() {
        // Every hierarchy the driver uses (cpuacct and freezer too, when mounted), so the floor
        // reaches the same end state.
        CgroupVersion::V1 => {
            let mut seen = Vec::new();
            ["memory", "cpu", "pids", "cpuacct", "freezer"]
                .iter()
                .filter(|h| {
                    std::fs::canonicalize(root.join(h)).is_ok_and(|real| {
                        let new = !seen.contains(&real);
                        seen.push(real);
                        new
                    })
                })
                .map(|h| root.join(h).join(&top).join("floor"))
                .collect()
        }
        CgroupVersion::V2 => vec![root.join(&top).join("floor")],
    };
    // Parents (and, in v2, controllers for them) are set up outside the timed loop.
    let floor_parent = layout.budget(&["floor"]).expect("path");
    driver.ensure(&floor_parent, &CgroupLimits::default()).expect("floor parent");
    if driver.version() == CgroupVersion::V2 {
        std::fs::write(root.join(&top).join("floor/cgroup.subtree_control"), "+memory +cpu +pids")
            .expect("enable controllers");
    }
    let mut floor_children = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        for h in &hierarchies {
            let d = h.join(format!("p{i}"));
            std::fs::create_dir(&d).expect("mkdir");
            let writes: &[(&str, &str)] = match (
                driver.version(),
                h.parent().and_then(|p| p.parent()).and_then(|p| p.file_name()).and_then(|n| n.to_str()),
            ) {
                (CgroupVersion::V2, _) => {
                    &[("memory.max", "268435456"), ("cpu.max", "50000 100000"), ("pids.max", "64")]
                }
                (CgroupVersion::V1, Some("memory")) => &[("memory.limit_in_bytes", "268435456")],
                (CgroupVersion::V1, Some("cpu")) => &[("cpu.cfs_quota_us", "50000")],
                (CgroupVersion::V1, Some("pids")) => &[("pids.max", "64")],
                (CgroupVersion::V1, _) => &[],
            };
            for (f, v) in writes {
                std::fs::write(d.join(f), v).expect("limit write");
            }
        }
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        for h in &hierarchies {
            std::fs::write(h.join(format!("p{i}/cgroup.procs")), child.id().to_string()).expect("join");
        }
        floor_children.push(child);
    }
    let floor = t.elapsed();

    // Driver.
    let mut procs = Vec::new();
    let t = Instant::now();
    for i in 0..n {
        let cg = layout.replica(&["driver"], "bench", "agent", i as u32).expect("path");
        driver.create(&cg, &limits).expect("create");
        let spec = ProcessSpec::new("sleep", logs.path().join(format!("{i}.log"))).args(["600"]);
        procs.push(spawn(driver.as_ref(), &cg, &spec).expect("spawn"));
    }
    let with_driver = t.elapsed();

    // Driver, each process's output through a log relay (`a2a-log-relay`, in its own cgroup):
    // what the node does.
    let relay = RelaySpec {
        program: RelayProgram::small(std::path::Path::new(env!("CARGO_BIN_EXE_a2a-log-relay"))).expect("a2a-log-relay"),
        limits: LogLimits::default(),
        cgroup: a2a::node::logs::relay_cgroup(&layout),
    };
    let t = Instant::now();
    for i in 0..n {
        let cg = layout.replica(&["relayed"], "bench", "agent", i as u32).expect("path");
        driver.create(&cg, &limits).expect("create");
        let mut spec = ProcessSpec::new("sleep", logs.path().join(format!("r{i}.log"))).args(["600"]);
        spec.log_relay = Some(relay.clone());
        procs.push(spawn(driver.as_ref(), &cg, &spec).expect("spawn"));
    }
    let with_relay = t.elapsed();

    // The same, the relays left in this process's cgroup: what the relay's own cgroup costs.
    let relay_here = RelaySpec { cgroup: None, ..relay.clone() };
    let t = Instant::now();
    for i in 0..n {
        let cg = layout.replica(&["relayed-here"], "bench", "agent", i as u32).expect("path");
        driver.create(&cg, &limits).expect("create");
        let mut spec = ProcessSpec::new("sleep", logs.path().join(format!("h{i}.log"))).args(["600"]);
        spec.log_relay = Some(relay_here.clone());
        procs.push(spawn(driver.as_ref(), &cg, &spec).expect("spawn"));
    }
    let with_relay_here = t.elapsed();
    // The same, the relays the whole a2a binary (`a2a log-relay`).
    let relay_a2a =
        RelaySpec { program: RelayProgram::a2a(std::path::Path::new(env!("CARGO_BIN_EXE_a2a"))), ..relay.clone() };
    let t = Instant::now();
    for i in 0..n {
        let cg = layout.replica(&["relayed-a2a"], "bench", "agent", i as u32).expect("path");
        driver.create(&cg, &limits).expect("create");
        let mut spec = ProcessSpec::new("sleep", logs.path().join(format!("a{i}.log"))).args(["600"]);
        spec.log_relay = Some(relay_a2a.clone());
        procs.push(spawn(driver.as_ref(), &cg, &spec).expect("spawn"));
    }
    let with_relay_a2a = t.elapsed();
    // Confined: as a root daemon starts an agent without `user` (the uid and home are made
    // outside the loop: the registry's part is once per agent, not per start).
    let homes = tempfile::tempdir().expect("temp dir");
    let hidden = vec![logs.path().canonicalize().expect("logs dir")];
    let mut confined_specs = Vec::new();
    for i in 0..n {
        let uid = 4_000_000_000 + i as u32;
        let home = homes.path().join(i.to_string());
        std::fs::create_dir(&home).expect("home");
        std::os::unix::fs::chown(&home, Some(uid), Some(uid)).expect("chown home");
        let mut spec = ProcessSpec::new("sleep", logs.path().join(format!("c{i}.log"))).args(["600"]);
        spec.user = Some(RunAs { uid, gid: uid, groups: vec![uid] });
        spec.confinement = Some(Confinement::new(vec![home.canonicalize().expect("home")], hidden.clone()));
        confined_specs.push(spec);
    }
    let t = Instant::now();
    for (i, spec) in confined_specs.iter().enumerate() {
        let cg = layout.replica(&["confined"], "bench", "agent", i as u32).expect("path");
        driver.create(&cg, &limits).expect("create");
        procs.push(spawn(driver.as_ref(), &cg, spec).expect("spawn confined"));
    }
    let confined = t.elapsed();

    let t = Instant::now();
    driver.remove(&layout.top(), Duration::from_secs(30)).expect("remove all");
    let removal = t.elapsed();
    // The relays end once their processes are gone (the pipe's last writer closed).
    for mut c in floor_children {
        let _ = c.wait();
    }
    for mut p in procs {
        let _ = p.wait_timeout(Some(Duration::from_secs(5)));
    }

    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "floor  (mkdir + limits + spawn + join after): {:>8.1} ms total, {:>7.0} us each",
        floor.as_secs_f64() * 1e3,
        per(floor)
    );
    println!(
        "driver (create + spawn joined before exec):   {:>8.1} ms total, {:>7.0} us each, {:.2}x floor",
        with_driver.as_secs_f64() * 1e3,
        per(with_driver),
        with_driver.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "driver + log relay (what the node does):     {:>8.1} ms total, {:>7.0} us each, {:.2}x floor",
        with_relay.as_secs_f64() * 1e3,
        per(with_relay),
        with_relay.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  … the relays not moved to their cgroup:     {:>8.1} ms total, {:>7.0} us each, {:.2}x floor",
        with_relay_here.as_secs_f64() * 1e3,
        per(with_relay_here),
        with_relay_here.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  … the relays `a2a log-relay` (the fallback): {:>7.1} ms total, {:>7.0} us each, {:.2}x floor",
        with_relay_a2a.as_secs_f64() * 1e3,
        per(with_relay_a2a),
        with_relay_a2a.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "confined (as driver + uid, mount ns, caps):   {:>8.1} ms total, {:>7.0} us each, {:.2}x driver",
        confined.as_secs_f64() * 1e3,
        per(confined),
        confined.as_secs_f64() / with_driver.as_secs_f64()
    );
    println!("remove (kill + wait empty + rmdir, all):      {:>8.1} ms total", removal.as_secs_f64() * 1e3);
}
