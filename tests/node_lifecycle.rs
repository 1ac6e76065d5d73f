//! Agent replica lifecycle under `a2a serve` on the real kernel: a crashed agent restarts at
//! once and backs off only when it keeps crashing; `restartPolicy` holds across a SIGKILL and
//! restart of the daemon.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::agent::{AgentPhase, TerminationReason};

use common::node::{Daemon, Scratch, apply, phase, pids, tear_down, wait_agent};

/// The start times (ns since the epoch) an agent wrote to `file`, one line per start.
fn starts(file: &Path) -> Vec<u128> {
    std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// A directory the agents may write (they run as uids of their own, on a read-only system
/// with `$A2A_HOME` hidden): listed in their `writablePaths`, open to every uid.
fn starts_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// An agent that appends its start time to `<dir>/<name>.starts`, then runs `then`.
fn agent(dir: &Path, name: &str, policy: &str, then: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  command: [sh, -c, \"date +%s%N >> {d}/{name}.starts; {then}\"]\n  writablePaths: [{d}]\n  restartPolicy: {policy}\n---\n",
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_restarts_at_once_and_its_backoff_grows_on_repeats() {
    let scratch = Scratch::new("crash");
    let (home, top) = (scratch.home(), scratch.top());
    // A first wait of 1 s: each start's own time (a few ms, up to hundreds on a loaded
    // machine) stays well inside the steps the assertions below compare.
    let daemon = Daemon::start(home, top, &["--restart-backoff", "1s"]);
    let client = daemon.client().await;
    let out = starts_dir();
    apply(home, &agent(out.path(), "crasher", "Always", "exit 1"));
    let file = out.path().join("crasher.starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts(&file).len() < 5 {
        assert!(Instant::now() < deadline, "five starts within 30 s: {:?}", starts(&file));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = starts(&file);
    let gaps: Vec<u128> = t.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    // The first restart comes at once; then 1 s, 2 s, 4 s: every wait is longer than the one
    // before.
    assert!(gaps[0] < gaps[1], "the first restart waits less than the second: {gaps:?} ms");
    assert!(gaps[1] >= 1000 && gaps[1] < gaps[2] && gaps[2] < gaps[3], "the backoff grows: {gaps:?} ms");
    let a =
        wait_agent(&client, "crasher", Duration::from_secs(10), |a| a.status.as_ref().is_some_and(|s| s.restarts >= 4))
            .await;
    let last = a.status.and_then(|s| s.last_termination).expect("last termination");
    assert_eq!((last.reason, last.exit_code), (TerminationReason::Exited, Some(1)));
    tear_down(daemon).await;
}

/// A start that cannot succeed (the program does not exist) is tried again with the restart
/// backoff, not in a loop (which makes hundreds of attempts a second): with a 400 ms first
/// wait, the attempts come at 0, 0.4, 1.2, 2.8 and 6 s; its status says why; a fixed spec
/// starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_backs_off_and_its_status_says_why() {
    let scratch = Scratch::new("nostart");
    let (home, top) = (scratch.home(), scratch.top());
    let log = home.join("daemon.log");
    let daemon = Daemon::start_logging(home, top, &["--restart-backoff", "400ms"], Some(&log));
    let client = daemon.client().await;
    let agent = |command: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: nostart }}\nspec:\n  command: [{command}]\n"
        )
    };
    apply(home, &agent("examples/no-such-agent.py"));
    let a = wait_agent(&client, "nostart", Duration::from_secs(10), |a| phase(a) == Some(AgentPhase::Failed)).await;
    let ready = a.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).expect("Ready");
    assert_eq!(ready.reason, "StartFailed", "{ready:?}");
    assert!(ready.message.contains("examples/no-such-agent.py") && ready.message.contains("No such file"), "{ready:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = std::fs::read_to_string(&log).unwrap_or_default().matches("could not start").count();
    assert!((2..=5).contains(&tries), "{tries} start attempts in the first 3 to 6 s");
    apply(home, &agent("sleep, \"60\""));
    wait_agent(&client, "nostart", Duration::from_secs(10), |a| !pids(a).is_empty()).await;
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_hold_across_a_killed_and_restarted_daemon() {
    let scratch = Scratch::new("policy");
    let (home, top) = (scratch.home(), scratch.top());
    let out = starts_dir();
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        &[
            agent(out.path(), "never-failed", "Never", "exit 3"),
            agent(out.path(), "onfailure-succeeded", "OnFailure", "exit 0"),
            agent(out.path(), "never-killed", "Never", "exec sleep 1000"),
            agent(out.path(), "onfailure-killed", "OnFailure", "exec sleep 1000"),
        ]
        .concat(),
    );
    let stopped = |a: &Agent| phase(a) == Some(AgentPhase::Stopped);
    for n in ["never-failed", "onfailure-succeeded"] {
        let a = wait_agent(&client, n, Duration::from_secs(30), stopped).await;
        let inst = &a.status.as_ref().expect("status").instances;
        assert!(
            inst.len() == 1 && inst[0].pid.is_none() && inst[0].termination.is_some(),
            "{n}: listed as ended: {inst:?}"
        );
    }
    let mut killed = Vec::new();
    for n in ["never-killed", "onfailure-killed"] {
        // It serves no agent card: it stays Starting, with its process running.
        let a = wait_agent(&client, n, Duration::from_secs(30), |a| !pids(a).is_empty()).await;
        killed.extend(pids(&a));
    }
    assert_eq!(killed.len(), 2);
    daemon.kill9();
    // While no daemon runs, two agents' processes end: their exit status is lost.
    for pid in &killed {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let count = |n: &str| starts(&out.path().join(format!("{n}.starts"))).len();
    let before: Vec<usize> =
        ["never-failed", "onfailure-succeeded", "never-killed", "onfailure-killed"].map(count).to_vec();
    assert_eq!(before, [1, 1, 1, 1]);

    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // OnFailure counts a lost exit status as a failure: started again, at once.
    let again = wait_agent(&client, "onfailure-killed", Duration::from_secs(20), |a| {
        !pids(a).is_empty() && pids(a) != [killed[1]]
    })
    .await;
    assert_eq!(again.status.as_ref().map(|s| s.restarts), Some(1));
    // Never keeps it stopped, and says why.
    let never = wait_agent(&client, "never-killed", Duration::from_secs(10), stopped).await;
    let t = never.status.as_ref().and_then(|s| s.last_termination.clone()).expect("termination");
    assert_eq!(t.reason, TerminationReason::Unknown);
    // The node has taken over every agent; give it time to (wrongly) start the ended ones.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in ["never-failed", "onfailure-succeeded", "never-killed"] {
        assert_eq!(count(n), 1, "{n} was not started again");
        let a = wait_agent(&client, n, Duration::from_secs(5), |_| true).await;
        assert_eq!(phase(&a), Some(AgentPhase::Stopped), "{n}");
        assert!(pids(&a).is_empty(), "{n}");
    }
    assert_eq!(count("onfailure-killed"), 2);
    tear_down(daemon).await;
}
