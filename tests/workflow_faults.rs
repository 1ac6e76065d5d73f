//! Fault injection through the real daemon: 1,000 tasks against demo agents that exit
//! mid-task at a 2% rate; the node restarts them, the engine retries, and every task
//! completes.

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

fn manifests(tasks: usize) -> String {
    let mut y = String::from(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: flaky }\n\
         spec: { command: [a2a, demo-agent, --skill, echo, --crash-rate, \"0.02\"], replicas: 4, maxConcurrentTasks: 8 }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: faults }\nspec:\n\
         \x20 retry: { limit: 30, backoff: { initial: 50ms, factor: 2, max: 1s } }\n  tasks:\n",
    );
    for i in 0..tasks {
        y.push_str(&format!("    - {{ name: t{i}, agent: flaky, message: \"task {i}\" }}\n"));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_complete_through_retries_while_agents_crash() {
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-test-wffaults-{}", std::process::id());
    let _guard = Guard { home: home.path().to_path_buf(), top: top.clone() };
    let daemon = Daemon::start(home.path(), &top, &["--restart-backoff", "100ms"]);
    let client = daemon.client().await;
    apply(home.path(), &manifests(1000));
    let deadline = Instant::now() + Duration::from_secs(180);
    let wf = loop {
        let wf = get_wf(&client, "faults").await;
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)) {
            break wf;
        }
        assert!(
            Instant::now() < deadline,
            "the workflow did not finish: {:?}",
            wf.status.as_ref().and_then(|s| s.progress.clone())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let status = wf.status.clone().expect("status");
    let failed: Vec<_> = status.tasks.iter().filter(|t| t.phase != TaskPhase::Succeeded).collect();
    assert!(failed.is_empty(), "tasks that did not succeed: {failed:#?}");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded));
    assert_eq!(status.progress.as_deref(), Some("1000/1000"));
    for (i, t) in status.tasks.iter().enumerate() {
        assert_eq!(t.output.as_deref(), Some(format!("task {i}").as_str()), "{} answered its own message", t.name);
    }
    // Faults really happened: agents crashed, were restarted, and tasks needed retries.
    let crashes: usize = events(home.path(), "flaky", "crash").values().sum();
    assert!(crashes > 0, "no injected crash happened");
    let agent: a2a::api::Agent = Api::namespaced(client.clone(), "default").get("flaky").await.expect("get agent");
    let restarts = agent.status.as_ref().map_or(0, |s| s.restarts);
    assert!(restarts > 0, "the node restarted the crashed replicas");
    let retried = status.tasks.iter().filter(|t| t.attempts > 1).count();
    assert!(retried > 0, "some tasks needed a second attempt");
    // The attempt that succeeded is the one each task's status names, and it ran to its end.
    let uid = wf.metadata.uid.clone().expect("uid");
    let ends = events(home.path(), "flaky", "end");
    for t in &status.tasks {
        let id = a2a::controller::plan::message_id(&uid, &t.name, t.attempts);
        assert_eq!(ends.get(&id), Some(&1), "{} attempt {} ended once on an agent", t.name, t.attempts);
    }
    eprintln!(
        "1000 tasks: {crashes} injected crashes, {restarts} restarts, {retried} tasks retried, {} attempts in all",
        status.tasks.iter().map(|t| t.attempts).sum::<u32>()
    );
    tear_down(daemon).await;
}
