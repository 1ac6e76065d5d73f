//! Client verbs with no control plane to talk to: one clear line, exit code 1, nothing else.

use std::process::Command;

fn a2a(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

#[test]
fn every_client_verb_says_how_to_start_a_control_plane() {
    let home = tempfile::tempdir().expect("tempdir");
    let expected = format!(
        "error: no a2a control plane: {}/kubeconfig does not exist; start one with `a2a serve` (or pass --kubeconfig for a cluster)\n",
        home.path().display()
    );
    for args in [
        &["get", "agents"][..],
        &["get", "wf", "-A"],
        &["describe", "agent", "writer"],
        &["apply", "-f", "examples/quickstart.yaml"],
        &["delete", "agent", "writer"],
        &["wait", "agent/writer", "--for=condition=Ready"],
        &["top"],
        &["top", "--once", "-o", "json"],
    ] {
        let out = a2a(home.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = a2a(home.path(), &["top", "--interval", "0s"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value '0s' for '--interval <DURATION>': must be more than 0s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = a2a(home.path(), &["diff", "-f", "examples/quickstart.yaml"]);
    assert_eq!(out.status.code(), Some(2), "diff exits 2 on trouble, as diff(1) does");
}

#[test]
fn an_unreachable_server_is_named_with_its_address() {
    let home = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: a2a, context: {{cluster: c, user: u}}}}]\ncurrent-context: a2a\n"
        ),
    )
    .expect("write kubeconfig");
    let out = a2a(home.path(), &["get", "agents"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot reach the control plane at https://127.0.0.1:{port}/: Connection refused (os error 111); is `a2a serve` running? Start it with `a2a serve`\n"
        )
    );
}

#[test]
fn apply_writes_nothing_when_any_document_is_invalid() {
    let home = tempfile::tempdir().expect("tempdir");
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: ok }\nspec: { command: [x] }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: bad }\nspec: { command: [x], replicas: many }\n",
    )
    .expect("write");
    // Validation comes before connecting: the error is about the manifest, not the server.
    let out = a2a(home.path(), &["apply", "-f", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: invalid manifests:\n{}: document 2 (Agent/bad): spec.replicas: expected an integer, got a string (\"many\")\n",
            bad.display()
        )
    );
}

#[test]
fn unknown_resource_types_are_named() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = a2a(home.path(), &["get", "pods"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: the server has no resource type \"pods\"; a2a knows agents (ag), workflows (wf), resourcebudgets (rb)\n"
    );
}
