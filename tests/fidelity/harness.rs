//! One `a2a serve --api-only` per check, and the clients that talk to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::Daemon;
use crate::common::kubectl_bin;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh home and API server, dropped (SIGKILL) with the check.
pub struct Server {
    pub home: tempfile::TempDir,
    pub daemon: Daemon,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        let home = tempfile::tempdir().unwrap();
        let daemon = Daemon::spawn_with(home.path(), None, args);
        Server { home, daemon }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.daemon.kubeconfig
    }

    /// The real kubectl 1.32 on the PATH (or `$KUBECTL`).
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            bin: kubectl_bin(),
            kubeconfig: self.kubeconfig().to_path_buf(),
            cache: self.home.path().join("kube-cache"),
        }
    }

    /// Every kubectl the machine has: 1.32, and 1.35 when `scripts/test-deps.sh` fetched it
    /// into `.ci/cache/kubectl-1.35` (or `$A2A_TEST_KUBECTL_NEXT` names one).
    pub fn kubectls(&self) -> Vec<Kubectl> {
        let mut all = vec![self.kubectl()];
        if let Some(bin) = kubectl_next() {
            all.push(Kubectl {
                bin,
                kubeconfig: self.kubeconfig().to_path_buf(),
                cache: self.home.path().join("kube-cache-next"),
            });
        }
        all
    }

    /// Runs `script` with the official Python client; `sys.argv[1]` is the kubeconfig.
    /// Returns (success, stdout, stderr).
    pub fn python(&self, script: &str) -> (bool, String, String) {
        let python = venv().join("bin/python");
        assert!(python.exists(), "{} is missing: run scripts/test-deps.sh", python.display());
        let out =
            Command::new(python).arg("-c").arg(script).arg(self.kubeconfig()).current_dir(root()).output().unwrap();
        texts(out)
    }

    /// helm 4 (`.ci/cache/helm`, or `$A2A_TEST_HELM`) with this server's kubeconfig and
    /// its own cache and config directories. Returns (success, stdout, stderr).
    pub fn helm(&self, args: &[&str]) -> (bool, String, String) {
        let bin = std::env::var_os("A2A_TEST_HELM").map(PathBuf::from).unwrap_or_else(|| root().join(".ci/cache/helm"));
        assert!(bin.exists(), "{} is missing: run scripts/test-deps.sh (it fetches helm 4)", bin.display());
        let h = self.home.path().join("helm");
        let out = Command::new(bin)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .current_dir(root())
            .output()
            .unwrap();
        texts(out)
    }
}

pub struct Kubectl {
    pub bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args).current_dir(root());
        c
    }

    /// (success, stdout, stderr)
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        texts(self.command(args).output().unwrap())
    }

    /// With `input` on stdin (for `-f -`).
    pub fn run_stdin(&self, args: &[&str], input: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        texts(child.wait_with_output().unwrap())
    }

    /// Succeeds, or fails the check with what kubectl printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "{} {args:?} failed:\n{out}{err}", self.bin.display());
        out
    }

    pub fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let (ok, out, err) = self.run_stdin(args, input);
        assert!(ok, "{} {args:?} failed:\n{out}{err}", self.bin.display());
        out
    }
}

fn texts(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn venv() -> PathBuf {
    std::env::var_os("A2A_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv"))
}

fn kubectl_next() -> Option<PathBuf> {
    let p = std::env::var_os("A2A_TEST_KUBECTL_NEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".ci/cache/kubectl-1.35"));
    p.is_file().then_some(p)
}
