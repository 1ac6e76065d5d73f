//! Ownership on the real kernel: a control plane stops processes and removes cgroups only under
//! a cgroup top it owns; a second control plane that would share a top refuses to start; an
//! embedded `a2a run` stops everything it started when interrupted and starts only what its
//! files declare.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use a2a::node::cgroup::{self, CgroupPath};

use common::node::{Daemon, Scratch, apply, pids, tear_down, wait_agent};

fn running(a: &Agent) -> bool {
    a.status.as_ref().and_then(|s| s.phase) == Some(AgentPhase::Running)
}

fn alive(pid: i32) -> bool {
    // A zombie has no cmdline any more; it is gone for this purpose.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The directories of cgroup `rel` in every hierarchy mounted under /sys/fs/cgroup.
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join(rel)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    if root.join(rel).is_dir() {
        out.push(root.join(rel));
    }
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const AGENT: &str = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: keeper }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_on_the_same_top_refuses_and_the_first_keeps_its_agents() {
    let scratch = Scratch::new("owner");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, AGENT);
    let before = pids(&wait_agent(&client, "keeper", Duration::from_secs(30), running).await);
    assert_eq!(before.len(), 1);

    // Another home on the same top: a daemon, and an embedded run with another state dir.
    let other = tempfile::tempdir().expect("tempdir");
    let serve = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", top, "--home"])
        .arg(other.path())
        .stdin(Stdio::null())
        .output()
        .expect("a2a serve");
    let err = text(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let home_shown = home.canonicalize().expect("home").display().to_string();
    assert!(err.contains(&format!("cgroup top \"{top}\" belongs to a2a serve with home {home_shown} (pid ")), "{err}");
    assert!(err.contains("running); pass --cgroup-top a2a-"), "{err}");
    let wf = other.path().join("wf.yaml");
    std::fs::write(
        &wf,
        format!("{AGENT}---\napiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: w }}\nspec:\n  tasks: [{{ name: t, agent: keeper, message: hi }}]\n"),
    )
    .expect("write");
    let run = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["run", "-f"])
        .arg(&wf)
        .args(["--cgroup-top", top, "--state-dir"])
        .arg(other.path())
        .env("A2A_HOME", other.path())
        .env_remove("A2A_KUBECONFIG")
        .output()
        .expect("a2a run");
    let err = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("belongs to a2a serve with home {home_shown}")), "{err}");

    // The owner stays the owner while it is down: its agents wait for it to re-adopt them.
    daemon.kill9();
    let serve = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", top, "--home"])
        .arg(other.path())
        .stdin(Stdio::null())
        .output()
        .expect("a2a serve");
    let err = text(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{err}");
    assert!(err.contains("not running); pass --cgroup-top"), "{err}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    for pid in &before {
        assert!(alive(*pid), "the first control plane's agent {pid} still runs");
    }
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let again = wait_agent(&client, "keeper", Duration::from_secs(10), |a| running(a) && pids(a) == before).await;
    assert_eq!(again.status.as_ref().map(|s| s.restarts), Some(0), "re-adopted, not restarted");
    tear_down(daemon).await;
}

/// `a2a run` of `file` in `home` on `top`, in a session of its own (as from a terminal).
fn spawn_run(home: &Path, top: &str, file: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_a2a"));
    cmd.args(["run", "-f"])
        .arg(file)
        .args(["--cgroup-top", top])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().expect("spawn a2a run")
}

const LONG_RUN: &str = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: sleeper }\nspec:\n  command: [a2a, demo-agent, --skill, sleep]\n  replicas: 2\n---\n\
apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: stubborn }\nspec:\n  command: [sh, -c, \"trap '' TERM; while :; do sleep 1; done\"]\n---\n\
apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: piped }\nspec:\n  protocol: stdio\n  command: [sh, -c, \"cat >/dev/null; sleep 60\"]\n---\n\
apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: long }\nspec:\n  tasks:\n\
\x20   - { name: nap, agent: sleeper, message: \"sleep 60s\" }\n\
\x20   - { name: pipe, agent: piped, message: go }\n";

fn interrupted_run_stops_everything(signal: i32, code: i32) {
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-test-run-sig{signal}-{}", std::process::id());
    let file = home.path().join("long.yaml");
    std::fs::write(&file, LONG_RUN).expect("write");
    let mut child = spawn_run(home.path(), &top, &file);
    let run_pid = child.id();
    let driver = cgroup::detect(Path::new("/sys/fs/cgroup")).expect("cgroups");
    let top_path = CgroupPath::parse(&top).expect("path");
    // Until the two sleeper replicas, the stubborn agent and the stdio run all have processes.
    let mut seen: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = driver.pids(&top_path).unwrap_or_default();
        for p in &now {
            if !seen.contains(p) {
                seen.push(*p);
            }
        }
        let cgroups = |what: &str| {
            driver
                .children(&top_path.child("host").expect("path"))
                .unwrap_or_default()
                .iter()
                .filter(|c| c.name().starts_with(what) && driver.pids(c).is_ok_and(|p| !p.is_empty()))
                .count()
        };
        if cgroups("default.sleeper.") == 2 && cgroups("default.stubborn.") == 1 && cgroups("default.piped.") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never got its agents running: {seen:?}");
        assert!(child.try_wait().expect("try_wait").is_none(), "a2a run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child's pid.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(sent, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "a2a run did not stop after the signal");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(code), "stderr: {}", text(&out.stderr));
    for pid in &seen {
        assert!(!alive(*pid as i32), "pid {pid} of the run was stopped");
    }
    assert_eq!(cgroup_dirs(&top), Vec::<PathBuf>::new(), "no cgroup of the run remains in any hierarchy");
    assert!(!home.path().join("runs").join(run_pid.to_string()).exists(), "the run's own state is removed");
}

#[test]
fn sigint_of_an_embedded_run_stops_its_agents_removes_its_cgroups_and_exits_130() {
    interrupted_run_stops_everything(libc::SIGINT, 130);
}

#[test]
fn sigterm_of_an_embedded_run_stops_its_agents_removes_its_cgroups_and_exits_143() {
    interrupted_run_stops_everything(libc::SIGTERM, 143);
}

#[test]
fn a_second_run_of_another_file_starts_none_of_the_first_files_agents() {
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-test-run-scope-{}", std::process::id());
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(["run", "-f", file, "--cgroup-top", &top])
            .env("A2A_HOME", home.path())
            .env_remove("A2A_KUBECONFIG")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("a2a run")
    };
    let first = run("examples/quickstart.yaml");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let logs = home.path().join("logs/default");
    let sizes = |agent: &str| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(logs.join(agent))
            .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| e.metadata().ok()).map(|m| m.len()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    };
    let quickstart_agents = ["writer", "counter", "shouter"];
    let before: Vec<Vec<u64>> = quickstart_agents.iter().map(|a| sizes(a)).collect();
    assert!(before.iter().all(|s| !s.is_empty()), "the quickstart's agents logged: {before:?}");

    // An agent that needs the whole default budget's CPU: it fits only when nothing else runs.
    let file = home.path().join("big.yaml");
    let host_cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) * 600;
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: big }}\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  resources: {{ limits: {{ cpu: {host_cpu}m }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: solo }}\nspec:\n  tasks: [{{ name: hello, agent: big, message: hi }}]\n"
        ),
    )
    .expect("write");
    let mut second = Command::new(env!("CARGO_BIN_EXE_a2a"));
    second
        .args(["run", "-f"])
        .arg(&file)
        .args(["--cgroup-top", &top, "--timeout", "60s"])
        .env("A2A_HOME", home.path())
        .env_remove("A2A_KUBECONFIG");
    let out = second.output().expect("a2a run");
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("workflow solo: Succeeded (1/1)"), "{}", text(&out.stdout));
    let after: Vec<Vec<u64>> = quickstart_agents.iter().map(|a| sizes(a)).collect();
    assert_eq!(after, before, "no agent of the first file was started again (their logs did not change)");
    assert_eq!(cgroup_dirs(&top), Vec::<PathBuf>::new());
}
