//! Shared by the A2A integration tests: agent processes on free ports, their stderr logs, and
//! the Python interpreter with the official SDK.
#![allow(dead_code)]

pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use a2a::a2a::Client;

pub const PY_INSTALL_HINT: &str = "python3 -m venv .venv && .venv/bin/pip install 'a2a-sdk[http-server]' uvicorn \
     (in the repository root), or point A2A_TEST_PYTHON at a python with those packages";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter with the A2A Python SDK: `$A2A_TEST_PYTHON`, else `.venv/bin/python`.
/// Fails the test with install instructions when it is missing.
pub fn python() -> PathBuf {
    let py = std::env::var_os("A2A_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        py.exists(),
        "no Python interpreter at {} for the A2A interop tests; install it with: {PY_INSTALL_HINT}",
        py.display()
    );
    let check = Command::new(&py).args(["-c", "import a2a.server.routes, a2a.client, uvicorn"]).output();
    match check {
        Ok(out) if out.status.success() => py,
        Ok(out) => panic!(
            "{} cannot import the A2A SDK ({}); install it with: {PY_INSTALL_HINT}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("running {}: {e}; install with: {PY_INSTALL_HINT}", py.display()),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the agent to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// An agent process, killed when dropped; its stderr goes to a file.
pub struct AgentProcess {
    pub child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `program args` with `A2A_PORT` set and waits until its agent card answers.
    pub async fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("agent.stderr");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(root())
            .env("A2A_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut agent = Self { child, url: format!("http://127.0.0.1:{port}"), log, _dir: dir };
        agent.wait_ready().await;
        agent
    }

    /// `a2a demo-agent ARGS`.
    pub async fn demo(args: &[&str]) -> Self {
        let mut all = vec!["demo-agent"];
        all.extend_from_slice(args);
        Self::start(Path::new(env!("CARGO_BIN_EXE_a2a")), &all, &[]).await
    }

    /// A Python script (path relative to the repository root) run with the SDK's interpreter.
    pub async fn python(script: &str, env: &[(&str, &str)]) -> Self {
        let path = root().join(script);
        let path = path.to_str().expect("utf-8 path");
        Self::start(&python(), &[path], env).await
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited with {status} before it was ready:\n{}", self.log());
            }
            let client = Client::new(&self.url).expect("client");
            if client.refresh_agent_card().await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent at {} did not serve its card within 30s:\n{}",
                self.url,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    /// Everything the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (agents log asynchronously).
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "the agent never logged {needle:?}; its log:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
