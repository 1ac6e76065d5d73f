//! Manifests, the Python client's preamble and small helpers shared by the checks of the
//! general areas (lifecycle, delete, namespaces, watch, backup, Python).

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::harness::{Kubectl, Server};

pub fn agent(name: &str, namespace: &str, labels: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: \
         {{{labels}}}\nspec:\n  url: http://127.0.0.1:9/\n"
    )
}

pub fn workflow(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  \
         tasks:\n  - name: draft\n    agent: echo\n    message: hello\n"
    )
}

pub fn budget(name: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata:\n  name: {name}\nspec:\n  parent: host\n  \
         limits: {{memory: 1Gi, cpu: \"1\", pids: 64}}\n"
    )
}

pub fn configmap(name: &str, namespace: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  a: \"1\"\n")
}

pub fn secret(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\nstringData:\n  \
         token: abc\n"
    )
}

pub fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// One of each kind a check treats alike: (kubectl's name for it, object name, manifest).
pub fn one_of_each(ns: &str) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("agent", "echo", agent("echo", ns, "app: x")),
        ("workflow", "flow", workflow("flow", ns)),
        ("resourcebudget", "team", budget("team")),
        ("configmap", "settings", configmap("settings", ns)),
        ("secret", "token", secret("token", ns)),
        ("namespace", "team-a", namespace("team-a")),
    ]
}

/// Several manifests as one YAML stream.
pub fn stream(manifests: &[String]) -> String {
    manifests.iter().map(|m| format!("---\n{m}")).collect()
}

/// Writes `content` to `name` in the check's home and gives its path.
pub fn file(s: &Server, name: &str, content: &str) -> String {
    let path = s.home.path().join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs kubectl until `done` holds of (success, stdout), for up to 30 s.
pub fn eventually(k: &Kubectl, args: &[&str], what: &str, done: impl Fn(bool, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = k.run(args);
        if done(ok, &out) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: kubectl {args:?} still says {out}{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kubectl left running (`get -w`, a waiting delete): its stdout lines as they come.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(k: &Kubectl, args: &[&str]) -> Running {
        let mut child = k.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    if tx.send(line.unwrap_or_default()).is_err() {
                        break;
                    }
                }
            });
        }
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits (up to 30 s) for a line that satisfies `want`.
    pub fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        if self.seen.iter().any(|l| want(l)) {
            return;
        }
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    let hit = want(&l);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("{what}: not printed; kubectl printed {:?}", self.seen),
            }
        }
    }

    /// Waits (up to 30 s) for the process to exit; gives its success and everything printed.
    pub fn finish(mut self) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "kubectl did not exit; it printed {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.success(), self.seen.join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every Python check starts with: the client configured from the server's kubeconfig,
/// `co` (CustomObjectsApi), `core` (CoreV1Api), `AG` (the agents' group, version and
/// plural, namespaced by `ns(...)`) and `refused(f)`, which gives the ApiException a call
/// raises (or fails).
const PREAMBLE: &str = r#"
import sys, json, time
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
co = client.CustomObjectsApi()
core = client.CoreV1Api()
AG = ("a2a.dev", "v1alpha1", "default", "agents")
def agent(name, labels=None, namespace="default"):
    return {"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"url": "http://127.0.0.1:9/"}}
def refused(f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except ApiException as e:
        return e
    raise AssertionError("accepted: %s%r" % (f.__name__, args))
def body(e):
    return json.loads(e.body)
"#;

/// Runs a Python check (after the preamble) and gives its stdout; a failed assertion in it
/// fails the check with the Python traceback.
pub fn python(s: &Server, script: &str) -> String {
    let (ok, out, err) = s.python(&format!("{PREAMBLE}\n{script}"));
    assert!(ok, "the Python check failed:\n{out}{err}");
    out
}
