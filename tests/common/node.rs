//! A real `a2a serve` for tests on the kernel: its own home and cgroup top, `a2a apply`, a
//! guard that kills what it started even when a test fails, and a checked tear-down.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::node::cgroup::{self, CgroupPath};
use kube::Api;
use kube::api::DeleteParams;

use super::agents_logging_into;

pub struct Daemon {
    child: Child,
    pub home: PathBuf,
    pub top: String,
}

impl Daemon {
    /// Starts `a2a serve` in `home` with cgroup top `top`; `extra` flags are passed on.
    pub fn start(home: &Path, top: &str, extra: &[&str]) -> Daemon {
        Daemon::start_logging(home, top, extra, None)
    }

    /// As [`Daemon::start`], its log (stderr) appended to `log` when given.
    pub fn start_logging(home: &Path, top: &str, extra: &[&str], log: Option<&Path>) -> Daemon {
        use std::io::BufRead;
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the daemon's log"),
            ),
            None => Stdio::null(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
            .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", top, "--home"])
            .arg(home)
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn a2a serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        assert!(line.starts_with("a2a serve: listening on https://"), "{line}");
        Daemon { child, home: home.to_path_buf(), top: top.to_owned() }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn client(&self) -> kube::Client {
        super::client_from(&self.home.join("kubeconfig"), None).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `a2a apply -f` of `yaml` (written to a new file in `home`), asserting success.
pub fn apply(home: &Path, yaml: &str) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let file = home.join(format!("manifest-{}.yaml", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&file, yaml).expect("write manifest");
    let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["apply", "-f"])
        .arg(&file)
        .env("A2A_HOME", home)
        .output()
        .expect("a2a apply");
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A node test's home directory and cgroup tree (`a2a-test-NAME-PID`). Whatever the test's
/// daemons started is killed and the tree removed when it is dropped, even when the test
/// fails half way (the normal path, [`tear_down`], checks that nothing is left); the
/// directory goes after that.
pub struct Scratch {
    guard: Guard,
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        Scratch::with_home(name, tempfile::tempdir().expect("tempdir"))
    }

    /// With the home in the build's temporary directory instead of `/tmp`: a confined
    /// agent's private `/tmp` would hide a home under `/tmp` altogether, and some tests need
    /// the home where the agent can try (and fail) to read it.
    pub fn outside_tmp(name: &str) -> Scratch {
        Scratch::with_home(name, tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir"))
    }

    fn with_home(name: &str, dir: tempfile::TempDir) -> Scratch {
        let top = format!("a2a-test-{name}-{}", std::process::id());
        Scratch { guard: Guard { home: dir.path().to_path_buf(), top }, dir }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn top(&self) -> &str {
        &self.guard.top
    }
}

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
        // The secret files' tmpfs of replicas a killed daemon left (a daemon removes them when
        // a replica stops, or at its next start in the same home, which this one will not have).
        let state = Path::new(a2a::node::sandbox::DEFAULT_STATE_DIR);
        a2a::node::secret_files::SecretFileStore::new(state, &self.home).sweep(&Default::default());
    }
}

/// Deletes the agents, stops the daemon, removes the test's cgroup tree.
pub async fn tear_down(mut daemon: Daemon) {
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
    assert!(!driver.exists(&top), "the test cgroup tree is removed");
}

/// `messageId` → how many times the agent logged `event` for it, over every replica's log.
pub fn events(home: &Path, agent: &str, event: &str) -> BTreeMap<String, usize> {
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

pub async fn get_wf(client: &kube::Client, name: &str) -> Workflow {
    Api::<Workflow>::namespaced(client.clone(), "default").get(name).await.expect("get workflow")
}

/// Waits (polling every 100 ms) until the Agent `name` in `default` satisfies `ok`, or fails
/// the test with its status once `within` has passed.
pub async fn wait_agent(
    client: &kube::Client,
    name: &str,
    within: Duration,
    ok: impl Fn(&a2a::api::Agent) -> bool,
) -> a2a::api::Agent {
    let api: Api<a2a::api::Agent> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(a)) = api.get_opt(name).await
            && ok(&a)
        {
            return a;
        }
        if Instant::now() > deadline {
            let a = api.get_opt(name).await.ok().flatten();
            panic!("agent {name} never reached the expected state in {within:?}: {:#?}", a.and_then(|a| a.status));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An Agent's phase, if it has a status.
pub fn phase(a: &a2a::api::Agent) -> Option<a2a::api::agent::AgentPhase> {
    a.status.as_ref().and_then(|s| s.phase)
}

/// The pids of an Agent's replicas, as its status lists them.
pub fn pids(a: &a2a::api::Agent) -> Vec<i32> {
    a.status.as_ref().map(|s| s.instances.iter().filter_map(|i| i.pid).collect()).unwrap_or_default()
}
