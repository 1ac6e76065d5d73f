//! Shared helpers for the API server tests: an in-process server on port 0 in a temp home,
//! kube-rs clients built from the kubeconfig it writes, and raw requests.
#![allow(dead_code)]

pub mod engine;
pub mod node;
pub mod tls;

use std::path::Path;

use a2a::apiserver::{Server, ServerConfig, ServerHandle};
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

pub struct TestServer {
    pub home: tempfile::TempDir,
    pub server: ServerHandle,
    pub client: Client,
}

pub async fn start() -> TestServer {
    start_with(|c| c).await
}

pub async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> TestServer {
    let home = tempfile::tempdir().unwrap();
    let config = configure(ServerConfig::new(home.path()).port(0));
    let server = Server::start(config).await.unwrap();
    let client = client_from(server.kubeconfig(), None).await;
    TestServer { home, server, client }
}

/// A client from a kubeconfig; `token` overrides the bearer token (`Some("")` sends none).
pub async fn client_from(kubeconfig: &Path, token: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    match token {
        Some("") => config.auth_info.token = None,
        Some(t) => config.auth_info.token = Some(t.to_string().into()),
        None => {}
    }
    Client::try_from(config).unwrap()
}

/// Sends one request; returns the status code and the body (JSON, or a string when not JSON).
pub async fn raw(
    client: &Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: impl Into<Vec<u8>>,
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.into()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, value)
}

pub fn agent_json(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"team": "test"}},
        "spec": {"command": ["sleep", "100"]},
    })
}

pub fn agent(name: &str) -> a2a::api::Agent {
    serde_json::from_value(agent_json(name)).unwrap()
}

/// `a2a serve` as a child process in `home`, on a free port.
pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
    pub kubeconfig: std::path::PathBuf,
}

impl Daemon {
    pub fn spawn(home: &Path) -> Daemon {
        Daemon::spawn_with(home, None, &[])
    }

    /// With a descriptor limit (`prlimit --nofile`) and more arguments for `a2a serve`.
    pub fn spawn_with(home: &Path, nofile: Option<u64>, args: &[&str]) -> Daemon {
        use std::io::BufRead;
        let mut command = match nofile {
            Some(n) => {
                let mut c = std::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg("--").arg(env!("CARGO_BIN_EXE_a2a"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_a2a")),
        };
        let mut child = command
            // The API server alone: these tests store agents that must not really run.
            .args(["serve", "--api-only", "--port", "0", "--home"])
            .arg(home)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn a2a serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        // "a2a serve: listening on https://127.0.0.1:PORT (kubeconfig: PATH)"
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in the first line of a2a serve: {line:?}"))
            .to_string();
        let kubeconfig = line
            .rsplit_once("(kubeconfig: ")
            .map(|(_, p)| std::path::PathBuf::from(p.trim().trim_end_matches(')')))
            .unwrap_or_else(|| panic!("no kubeconfig in {line:?}"));
        Daemon { child, url, kubeconfig }
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose stdout is a log file under `home/logs`: the log relays of the agents
/// started for that home (each ends when its agent and the agent's children are gone), and
/// processes started without a relay.
pub fn agents_logging_into(home: &Path) -> Vec<u32> {
    let logs = home.join(a2a::node::logs::LOGS_DIR);
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| std::fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|t| t.starts_with(&logs)))
                .collect()
        })
        .unwrap_or_default()
}

/// The agents of `home` themselves (not their log relays): processes whose stdout is the pipe
/// a relay of `home` reads, and processes that write a log file under `home/logs` directly
/// without being a relay.
#[allow(dead_code)]
pub fn agent_processes_of(home: &Path) -> Vec<u32> {
    let link = |pid: u32, fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    // `a2a-log-relay …`, or `a2a log-relay …` (the fallback).
    let is_relay = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let mut args = c.split(|b| *b == 0);
            args.next() == Some(b"a2a-log-relay") || args.next() == Some(b"log-relay")
        })
    };
    let writers = agents_logging_into(home);
    let relay_pipes: Vec<std::path::PathBuf> =
        writers.iter().filter(|p| is_relay(**p)).filter_map(|p| link(*p, 0)).collect();
    let direct = writers.iter().copied().filter(|p| !is_relay(*p));
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .collect()
        })
        .unwrap_or_default();
    let piped =
        all.into_iter().filter(|pid| !is_relay(*pid) && link(*pid, 1).is_some_and(|t| relay_pipes.contains(&t)));
    let mut pids: Vec<u32> = piped.chain(direct).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The promtool binary: `$PROMTOOL`, else the PATH; fails with the install step when missing.
pub fn promtool() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return std::path::PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::PathBuf::from(dir).join("promtool");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "promtool not found: install it with `apt-get install -y prometheus` (Debian) \
         or point PROMTOOL at the binary"
    );
}

/// Runs the a2a binary to its end (at most a minute): exit success, stdout, stderr.
pub fn run_a2a(args: &[&str]) -> (bool, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a2a {args:?} did not end within a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real kubectl 1.32: `$KUBECTL`, else the one on the `PATH`.
pub fn kubectl_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return std::path::PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::PathBuf::from(dir).join("kubectl");
        if p.is_file() {
            return p;
        }
    }
    panic!("kubectl not found: install kubectl 1.32 on the PATH or point KUBECTL at it");
}
