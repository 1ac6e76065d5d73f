//! Crash safety of the workflow engine through the real daemon: `a2a serve` is SIGKILLed
//! while tasks run on its agents, a new daemon takes over, the workflow completes, and the
//! agents' own logs prove that every task ran exactly once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use a2a::node::cgroup::{self, CgroupPath};
use kube::Api;
use kube::api::DeleteParams;

struct Daemon {
    child: Child,
    home: PathBuf,
    top: String,
}

impl Daemon {
    fn start(home: &Path, top: &str, extra: &[&str]) -> Daemon {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(["serve", "--port", "0", "--cgroup-top", top, "--home"])
            .arg(home)
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a2a serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        assert!(line.starts_with("a2a serve: listening on https://"), "{line}");
        Daemon { child, home: home.to_path_buf(), top: top.to_owned() }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn client(&self) -> kube::Client {
        common::client_from(&self.home.join("kubeconfig"), None).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn apply(home: &Path, yaml: &str) {
    let file = home.join("manifest.yaml");
    std::fs::write(&file, yaml).expect("write manifest");
    let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["apply", "-f"])
        .arg(&file)
        .env("A2A_HOME", home)
        .output()
        .expect("a2a apply");
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn agents_logging_into(home: &Path) -> Vec<u32> {
    let logs = home.join("logs");
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|t| t.starts_with(&logs)))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills what the test's daemons started and removes its cgroup tree even when the test
/// fails half way (the normal path, [`tear_down`], checks that nothing is left).
struct Guard {
    home: PathBuf,
    top: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for pid in agents_logging_into(&self.home) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if let (Ok(driver), Ok(top)) = (cgroup::detect(Path::new("/sys/fs/cgroup")), CgroupPath::parse(&self.top)) {
            let _ = driver.remove(&top, Duration::from_secs(5));
        }
    }
}

/// Deletes the agents, stops the daemon, removes the test's cgroup tree.
async fn tear_down(mut daemon: Daemon) {
    let client = daemon.client().await;
    let api: Api<a2a::api::Agent> = Api::namespaced(client.clone(), "default");
    for a in api.list(&Default::default()).await.expect("list agents").items {
        let name = a.metadata.name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::default()).await.expect("delete agent");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agents_logging_into(&daemon.home).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill9();
    assert_eq!(agents_logging_into(&daemon.home), Vec::<u32>::new(), "deleted agents' processes are gone");
    let driver = cgroup::detect(Path::new("/sys/fs/cgroup")).expect("cgroups");
    let top = CgroupPath::parse(&daemon.top).expect("path");
    driver.remove(&top, Duration::from_secs(5)).expect("remove the test cgroup tree");
}

/// `messageId` → how many times the agent logged `event` for it, over every replica's log.
fn events(home: &Path, agent: &str, event: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let dir = home.join("logs/default").join(agent);
    for entry in std::fs::read_dir(&dir).expect("agent log dir").filter_map(|e| e.ok()) {
        let text = std::fs::read_to_string(entry.path()).expect("read log");
        for line in text.lines().filter(|l| l.contains(&format!("event={event} "))) {
            if let Some(id) = line.split_whitespace().find_map(|w| w.strip_prefix("messageId=")) {
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

async fn get_wf(client: &kube::Client, name: &str) -> Workflow {
    Api::<Workflow>::namespaced(client.clone(), "default").get(name).await.expect("get workflow")
}

const MANIFESTS: &str = "apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: sleeper }
spec: { command: [a2a, demo-agent, --skill, sleep], replicas: 2, maxConcurrentTasks: 4 }
---
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: crashy }
spec:
  tasks:
    - { name: a1, agent: sleeper, message: sleep 2s }
    - { name: a2, agent: sleeper, message: sleep 2s }
    - { name: a3, agent: sleeper, message: sleep 2s }
    - { name: a4, agent: sleeper, message: sleep 2s }
    - { name: a5, agent: sleeper, message: sleep 2s }
    - { name: a6, agent: sleeper, message: sleep 2s }
    - { name: b1, agent: sleeper, dependsOn: [a1, a2, a3], message: sleep 2s }
    - { name: b2, agent: sleeper, dependsOn: [a4, a5, a6], message: sleep 2s }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_resumes_the_workflow_and_every_task_runs_exactly_once() {
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-test-wfcrash-{}", std::process::id());
    let _guard = Guard { home: home.path().to_path_buf(), top: top.clone() };
    let mut daemon = Daemon::start(home.path(), &top, &[]);
    let client = daemon.client().await;
    apply(home.path(), MANIFESTS);
    // Kill while the first level runs on the agents (their A2A task ids are in status).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = get_wf(&client, "crashy").await;
        let running = wf
            .status
            .as_ref()
            .map_or(0, |s| s.tasks.iter().filter(|t| t.phase == TaskPhase::Running && t.a2a_task_id.is_some()).count());
        if running == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the first level never ran: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    let daemon = Daemon::start(home.path(), &top, &[]);
    let client = daemon.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(&client, "crashy").await;
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish after the restart: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = wf.status.clone().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "{status:#?}");
    assert!(status.tasks.iter().all(|t| t.attempts == 1), "no task needed a second attempt: {status:#?}");
    // The agents' logs: one start per task, each with the task's first-attempt messageId.
    let uid = wf.metadata.uid.clone().expect("uid");
    let starts = events(home.path(), "sleeper", "start");
    let expected: BTreeMap<String, usize> =
        status.tasks.iter().map(|t| (a2a::controller::plan::message_id(&uid, &t.name, 1), 1)).collect();
    assert_eq!(starts, expected, "every task started exactly once on the agents");
    let ends = events(home.path(), "sleeper", "end");
    assert_eq!(ends, expected, "every task ran to its end exactly once");
    tear_down(daemon).await;
}
