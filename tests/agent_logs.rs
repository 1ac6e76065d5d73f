//! Agent logs under `a2a serve` on the real kernel: a log relay per replica caps and rotates
//! the files by renames, outlives a SIGKILLed daemon, keeps them private, and they go with
//! the agent unless kept; `a2a logs` reads across rotations; `a2a delete --wait` returns when
//! the processes are gone; a half-failed `a2a apply` says what it created.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use kube::Api;

use common::agents_logging_into;
use common::node::{Daemon, Scratch, apply, phase, pids, tear_down, wait_agent};

/// The cap the tests' daemons are started with (`--agent-log-max-size`).
const CAP: u64 = 64 << 10;

fn start(scratch: &Scratch) -> Daemon {
    Daemon::start(scratch.home(), scratch.top(), &["--agent-log-max-size", "64Ki", "--agent-log-max-files", "3"])
}

fn a2a(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .output()
        .expect("run a2a")
}

fn agent_yaml(name: &str, script: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  command: [sh, -c, {script:?}]\n---\n"
    )
}

/// Within a loaded CI machine's patience.
const PATIENCE: Duration = Duration::from_secs(30);

fn running(a: &Agent) -> bool {
    phase(a) == Some(AgentPhase::Running) || !pids(a).is_empty()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn log_dir(home: &Path, agent: &str) -> PathBuf {
    home.join("logs/default").join(agent)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

async fn until(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The numbers, one per line, of a counting agent's output.
fn numbers(text: &str) -> Vec<u64> {
    text.lines().map(|l| l.trim().parse::<u64>().unwrap_or_else(|_| panic!("not a counter line: {l:?}"))).collect()
}

fn contiguous(ns: &[u64]) -> bool {
    ns.windows(2).all(|w| w[1] == w[0] + 1)
}

/// The file process `pid` executes (`/proc/PID/exe`).
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("/proc/PID/exe")
}

fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("/proc/PID/cmdline");
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Starts `exe serve` in `scratch`'s home with `extra` flags, its stderr to `stderr`.
fn serve_from(exe: &Path, scratch: &Scratch, extra: &[&str], stderr: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", scratch.top(), "--home"])
        .arg(scratch.home())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("a2a serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    assert!(line.starts_with("a2a serve: listening on"), "{line}");
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_writer_s_logs_stay_under_the_cap_rotated_by_renames_and_private() {
    let scratch = Scratch::new("logcap");
    let home = scratch.home();
    let daemon = start(&scratch);
    let client = daemon.client().await;
    // One writes as fast as it can, for ever; one counts to 200000 (1.3 MB) and idles.
    apply(
        home,
        &format!(
            "{}{}",
            agent_yaml("flood", "yes 0123456789abcdef0123456789abcdef"),
            agent_yaml("counter", "awk 'BEGIN { for (i = 0; i < 200000; i++) print i }'; exec sleep 600")
        ),
    );
    wait_agent(&client, "flood", PATIENCE, running).await;
    let dir = log_dir(home, "flood");
    let live = dir.join("0.log");
    until("the flood's log rotates twice", Duration::from_secs(20), || dir.join("0.log.2").exists()).await;
    // While it writes: never more than 3 files, none over the cap.
    let sample_until = Instant::now() + Duration::from_secs(3);
    let mut samples = 0;
    while Instant::now() < sample_until {
        let files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("log dir").map(|e| e.expect("entry").path()).collect();
        assert!(files.len() <= 3, "{files:?}");
        for f in &files {
            assert!(size(f) <= CAP, "{} is {} bytes, over the {CAP}-byte cap", f.display(), size(f));
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(samples > 10);
    // It was writing all along: the live file keeps being replaced.
    let ino = std::fs::metadata(&live).expect("live log").ino();
    until("the live log is replaced", Duration::from_secs(10), || {
        std::fs::metadata(&live).is_ok_and(|m| m.ino() != ino)
    })
    .await;

    // The counter's retained output, oldest file first, is one unbroken run that ends at its
    // last line: renames lose nothing (a copy-then-truncate loses what is written between).
    let cdir = log_dir(home, "counter");
    let done = || std::fs::read_to_string(cdir.join("0.log")).is_ok_and(|t| t.ends_with("199999\n"));
    until("the counter's output is all written", Duration::from_secs(20), done).await;
    let mut text = String::new();
    for f in ["0.log.2", "0.log.1", "0.log"] {
        let part = std::fs::read_to_string(cdir.join(f)).expect("log file");
        assert!(part.len() as u64 <= CAP, "{f}: {} bytes", part.len());
        text.push_str(&part);
    }
    assert!(!cdir.join("0.log.3").exists());
    // The oldest file may begin with the end of a line whose start was rotated away.
    let ns = numbers(text.split_once('\n').map_or("", |(_, rest)| rest));
    assert!(contiguous(&ns), "a gap in the rotated output");
    assert_eq!(ns.last(), Some(&199_999));
    assert!(text.len() as u64 > 2 * CAP, "three files' worth is kept: {} bytes", text.len());
    // `a2a logs` prints the same: the rotated files, then the live one.
    let logs = a2a(home, &["logs", "counter"]);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    assert_eq!(String::from_utf8_lossy(&logs.stdout), text);

    // Files 0600, directories 0700, written by the relay (not the agent), which lives in the
    // relays' cgroup, not in the agent's.
    for f in ["0.log", "0.log.1", "0.log.2"] {
        assert_eq!(mode(&cdir.join(f)), 0o600, "{f}");
    }
    for d in [home.join("logs"), home.join("logs/default"), cdir.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    // The relays are the small `a2a-log-relay` installed beside `a2a`, not the a2a binary.
    let relays = agents_logging_into(home);
    assert_eq!(relays.len(), 2, "one relay per replica: {relays:?}");
    for pid in relays {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        assert!(cgroups.contains(&format!("/{}/log.relays", scratch.top())), "{cgroups}");
        assert_eq!(exe_of(pid), Path::new(env!("CARGO_BIN_EXE_a2a-log-relay")).canonicalize().expect("relay binary"));
        assert_eq!(cmdline(pid).first().map(String::as_str), Some("a2a-log-relay"));
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_go_on_writing_their_logs_after_the_daemon_is_killed() {
    let scratch = Scratch::new("logkill");
    let home = scratch.home();
    let mut daemon = start(&scratch);
    let client = daemon.client().await;
    // A busy writer: were its pipe's reader gone, the next write would kill it with SIGPIPE.
    apply(home, &agent_yaml("chatty", "i=0; while :; do echo \"line $i\"; i=$((i+1)); done"));
    let agent = wait_agent(&client, "chatty", PATIENCE, |a| !pids(a).is_empty()).await;
    let pid = pids(&agent)[0];
    let dir = log_dir(home, "chatty");
    until("it writes", Duration::from_secs(10), || size(&dir.join("0.log")) > 0).await;
    daemon.kill9();
    let marker = std::fs::metadata(dir.join("0.log")).map(|m| (m.ino(), m.len())).expect("log");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(pid), "the agent runs on after the daemon was killed");
    let now = std::fs::metadata(dir.join("0.log")).map(|m| (m.ino(), m.len())).expect("log");
    assert_ne!(now, marker, "its log is still being written");
    // Still alive a while later, writing: nothing is blocked or broken.
    let before = std::fs::metadata(dir.join("0.log")).map(|m| (m.ino(), m.len())).expect("log");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid));
    assert_ne!(std::fs::metadata(dir.join("0.log")).map(|m| (m.ino(), m.len())).expect("log"), before);

    // A new daemon re-adopts the agent; its relay needs nothing from it.
    let daemon = start(&scratch);
    let client = daemon.client().await;
    let again = wait_agent(&client, "chatty", PATIENCE, |a| pids(a) == vec![pid]).await;
    assert_eq!(again.status.as_ref().map(|s| s.restarts), Some(0));
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_with_a_deleted_agent_unless_kept_and_delete_wait_outlasts_an_ignored_sigterm() {
    let scratch = Scratch::new("logdel");
    let home = scratch.home();
    let daemon = start(&scratch);
    let client = daemon.client().await;
    apply(
        home,
        &format!(
            "{}{}{}",
            agent_yaml("doomed", "echo hello; exec sleep 600"),
            agent_yaml("kept", "echo keep me; exec sleep 600"),
            // Ignores SIGTERM: only the SIGKILL at the end of the grace period (10s) stops it.
            agent_yaml("stubborn", "trap '' TERM; echo stubborn; while :; do sleep 0.2; done"),
        ),
    );
    for name in ["doomed", "kept", "stubborn"] {
        wait_agent(&client, name, PATIENCE, |a| !pids(a).is_empty()).await;
        until("it logs", Duration::from_secs(10), || size(&log_dir(home, name).join("0.log")) > 0).await;
    }
    let stubborn = wait_agent(&client, "stubborn", PATIENCE, |a| !pids(a).is_empty()).await;
    let pid = pids(&stubborn)[0];

    let out = a2a(home, &["delete", "agent", "stubborn", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!alive(pid), "delete --wait returned while pid {pid} still ran");
    assert!(!log_dir(home, "stubborn").exists(), "its logs went with it");

    let out = a2a(home, &["delete", "agent", "doomed", "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!log_dir(home, "doomed").exists(), "its logs went with it");

    let out = a2a(home, &["delete", "agent", "kept", "--wait", "--keep-logs"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(log_dir(home, "kept").join("0.log")).expect("kept log"), "keep me\n");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_reads_across_rotations() {
    let scratch = Scratch::new("logfollow");
    let home = scratch.home();
    let daemon = Daemon::start(scratch.home(), scratch.top(), &["--agent-log-max-size", "4Ki"]);
    let client = daemon.client().await;
    // ~20 bytes every 2 ms: a rotation about every 0.4 s.
    apply(home, &agent_yaml("ticker", "i=0; while :; do printf '%019d\\n' $i; i=$((i+1)); sleep 0.002; done"));
    wait_agent(&client, "ticker", PATIENCE, |a| !pids(a).is_empty()).await;
    let mut follow = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["logs", "-f", "ticker"])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("a2a logs -f");
    // What it prints, line by line, as it prints it.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Several rotations while it follows, however slowly a loaded machine runs the ticker.
    let dir = log_dir(home, "ticker");
    let mut inodes = std::collections::HashSet::new();
    let mut got = Vec::new();
    let want = 3 * 4096 / 20;
    let deadline = Instant::now() + Duration::from_secs(90);
    while inodes.len() < 4 || got.len() < want {
        assert!(Instant::now() < deadline, "{} rotations seen and {} lines followed", inodes.len() - 1, got.len());
        if let Ok(m) = std::fs::metadata(dir.join("0.log")) {
            inodes.insert(m.ino());
        }
        got.extend(lines_rx.try_iter());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = follow.kill();
    let _ = follow.wait();
    reader.join().expect("reader");
    got.extend(lines_rx.try_iter());
    // The kill may have cut the last line.
    got.pop();
    // The first line may have been cut by where following began.
    let ns = numbers(&got[1..].join("\n"));
    assert!(ns.len() >= want - 1, "it read past several rotations: {} lines", ns.len());
    assert!(contiguous(&ns), "a line lost or repeated across a rotation");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_failed_apply_prints_what_it_created_and_fails() {
    let scratch = Scratch::new("applyhalf");
    let home = scratch.home();
    let _daemon = Daemon::start(home, scratch.top(), &["--api-only"]);
    let file = home.join("three.yaml");
    let doc = |name: &str, ns: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  command: [sleep, '600']\n---\n"
        )
    };
    // The server refuses the second: its namespace does not exist.
    std::fs::write(&file, format!("{}{}{}", doc("one", "default"), doc("two", "nowhere"), doc("three", "default")))
        .expect("write");
    let out = a2a(home, &["apply", "-f", file.to_str().expect("path")]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("namespaces \"nowhere\" not found"), "{stderr}");
    // The others were sent with it (one kind goes 16 at a time), and were created.
    let created: Vec<&str> = stdout.lines().collect();
    assert_eq!(created, ["agent/one created", "agent/three created"], "{stderr}");
    let get = a2a(home, &["get", "agents", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "agent/one\nagent/three\n");
}

/// A daemon whose files an upgrade removes after it started; `late` then starts, writes its
/// log, and is deleted. Returns the daemon's stderr and the relay's `/proc/PID/exe` and
/// command line, seen while `late` ran.
async fn start_after_the_binary_is_removed(
    scratch: &Scratch,
    exe: &Path,
    removed: &[PathBuf],
) -> (String, PathBuf, Vec<String>) {
    let home = scratch.home();
    let stderr = home.join("serve.stderr");
    let mut child = serve_from(exe, scratch, &[], &stderr);
    for f in removed {
        std::fs::remove_file(f).expect("remove the binary");
    }
    apply(home, &agent_yaml("late", "echo started after the upgrade; exec sleep 600"));
    let log = log_dir(home, "late").join("0.log");
    until("the agent's log is written", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t == "started after the upgrade\n")
    })
    .await;
    let relays = agents_logging_into(home);
    assert_eq!(relays.len(), 1, "{relays:?}");
    let (relay_exe, relay_cmdline) = (exe_of(relays[0]), cmdline(relays[0]));
    let client = common::client_from(&home.join("kubeconfig"), None).await;
    let api: Api<Agent> = Api::namespaced(client, "default");
    api.delete("late", &Default::default()).await.expect("delete");
    until("the agent and its relay are gone", Duration::from_secs(20), || agents_logging_into(home).is_empty()).await;
    let _ = child.kill();
    let _ = child.wait();
    (std::fs::read_to_string(&stderr).unwrap_or_default(), relay_exe, relay_cmdline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_start_with_their_logs_after_the_daemon_s_binary_was_replaced() {
    // The daemon and its relay run from copies that an upgrade then removes from the disk:
    // the relays started afterwards are still the one the daemon found at its start.
    let scratch = Scratch::new("logexe");
    let bin = scratch.home().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let (exe, relay) = (bin.join("a2a"), bin.join("a2a-log-relay"));
    std::fs::copy(env!("CARGO_BIN_EXE_a2a"), &exe).expect("copy the binary");
    std::fs::copy(env!("CARGO_BIN_EXE_a2a-log-relay"), &relay).expect("copy the relay");
    let (stderr, relay_exe, args) =
        start_after_the_binary_is_removed(&scratch, &exe, &[exe.clone(), relay.clone()]).await;
    assert_eq!(relay_exe, PathBuf::from(format!("{} (deleted)", relay.display())), "{stderr}");
    assert_eq!(args.first().map(String::as_str), Some("a2a-log-relay"), "{args:?}");
    assert!(!stderr.contains("log-relay"), "no warning: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a2a_log_relay_beside_it_the_daemon_warns_once_and_relays_with_itself() {
    // Only `a2a` installed (an older install step): agents start and log as before, through
    // `a2a log-relay` (the daemon's own binary, even once removed), and the daemon says so
    // once, at its start.
    let scratch = Scratch::new("logalone");
    let exe = scratch.home().join("a2a-old");
    std::fs::copy(env!("CARGO_BIN_EXE_a2a"), &exe).expect("copy the binary");
    let (stderr, relay_exe, args) = start_after_the_binary_is_removed(&scratch, &exe, std::slice::from_ref(&exe)).await;
    assert_eq!(relay_exe, PathBuf::from(format!("{} (deleted)", exe.display())), "{stderr}");
    assert_eq!(args.get(..2), Some(&["a2a".to_owned(), "log-relay".to_owned()][..]), "{args:?}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("a2a-log-relay")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains(&scratch.home().join("a2a-log-relay").display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_log_relay_that_cannot_be_run_is_refused_at_start() {
    let scratch = Scratch::new("logbad");
    let home = scratch.home();
    let missing = home.join("nowhere/a2a-log-relay");
    let not_executable = home.join("relay.txt");
    std::fs::write(&not_executable, "not a program").expect("write");
    for (path, why) in [(&missing, "No such file"), (&not_executable, "not an executable file")] {
        let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", scratch.top(), "--home"])
            .arg(home)
            .arg("--log-relay")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("a2a serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()) && stderr.contains(why), "{stderr}");
        assert!(!home.join("kubeconfig").exists(), "nothing served: {stderr}");
    }
}
