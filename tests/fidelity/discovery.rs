//! Discovery, as every client starts.

use crate::harness::Server;

/// `kubectl api-resources` lists the a2a kinds with their short names and the core kinds.
#[test]
fn kubectl_api_resources_lists_a2a_and_core_kinds() {
    let s = Server::start();
    for k in s.kubectls() {
        let out = k.ok(&["api-resources", "--no-headers"]);
        for (name, short) in [("agents", "ag"), ("workflows", "wf"), ("resourcebudgets", "rb"), ("configmaps", "cm")] {
            let row = out.lines().find(|l| l.split_whitespace().next() == Some(name));
            let row = row.unwrap_or_else(|| panic!("{name} missing from api-resources:\n{out}"));
            assert!(row.split_whitespace().nth(1) == Some(short), "{name} without short name {short}: {row}");
        }
    }
}

/// The Python client's discovery of the core group and of a2a.dev.
#[test]
fn python_client_discovers_the_core_and_a2a_groups() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
print(",".join(sorted(r.name for r in client.CoreV1Api().get_api_resources().resources if "/" not in r.name)))
print(",".join(sorted(g.name for g in client.ApisApi().get_api_versions().groups)))
"#,
    );
    assert!(ok, "{out}{err}");
    let mut lines = out.lines();
    let core = lines.next().unwrap_or_default();
    for kind in ["configmaps", "events", "namespaces", "secrets"] {
        assert!(core.split(',').any(|r| r == kind), "{kind} missing from core resources: {core}");
    }
    assert!(lines.next().unwrap_or_default().split(',').any(|g| g == "a2a.dev"), "{out}");
}

/// helm reaches the server and lists no releases in a fresh home.
#[test]
fn helm_lists_no_releases_on_a_fresh_server() {
    let s = Server::start();
    let (ok, out, err) = s.helm(&["list", "--all-namespaces", "-q"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "", "{out}");
}

/// `kubectl create -f -` then `get -o name`: the a2a kinds resolve by plural, singular and
/// short name.
#[test]
fn kubectl_resolves_a2a_kinds_by_every_name() {
    let s = Server::start();
    let k = s.kubectl();
    let agent =
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: echo\nspec:\n  url: http://127.0.0.1:9/\n";
    k.ok_stdin(&["create", "-f", "-"], agent);
    for k in s.kubectls() {
        for name in ["agents", "agent", "ag", "agents.a2a.dev"] {
            assert_eq!(k.ok(&["get", name, "-o", "name"]).trim(), "agent.a2a.dev/echo", "kubectl get {name}");
        }
    }
}
