//! `a2a operator` at its edges: the HTTP side (/healthz, /readyz, /metrics checked by promtool)
//! and the command line the Helm chart drives (flags listed, bad values refused with exit 2).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use a2a::cluster::operator::{Status, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One plain HTTP/1.1 GET: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn metrics_pass_promtool_and_health_answers() {
    let promtool = common::promtool();
    let status = Arc::new(Status::default());
    status.metrics.reconciled("Agent");
    status.metrics.reconciled("Agent");
    status.metrics.failed("Agent", "kube");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_http(listener, status, async move {
        let _ = rx.await;
    }));

    let (code, body) = get(addr, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not ready: electing a leader\n"), "no election round yet");
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.contains("a2a_operator_reconciliations_total{kind=\"Agent\"} 2\n"), "{text}");
    assert!(text.contains("a2a_operator_reconcile_errors_total{kind=\"Agent\",error=\"kube\"} 1\n"), "{text}");
    assert!(text.contains("a2a_operator_leader 0\n"), "{text}");
    // The families of agents, budgets and workflows, as `a2a serve` serves them.
    for family in
        ["a2a_agent_ready_replicas gauge", "a2a_budget_limit gauge", "a2a_workflow_task_duration_seconds histogram"]
    {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{text}");
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = tx.send(());
    server.await.expect("join").expect("server");
}

fn a2a(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("a2a runs")
}

#[test]
fn help_lists_every_flag_the_chart_passes() {
    let out = a2a(&["operator", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let chart = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/a2a/templates/deployment.yaml"))
        .expect("chart deployment");
    let flags: Vec<&str> =
        chart.lines().filter_map(|l| l.trim().strip_prefix("- --")).map(|f| f.split('=').next().unwrap_or(f)).collect();
    assert!(flags.len() >= 7, "the chart passes flags: {flags:?}");
    for flag in flags {
        assert!(help.contains(&format!("--{flag} ")), "--{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flag_values_are_usage_errors_naming_the_flag() {
    for (arg, says) in [
        ("--lease-duration=abc", "invalid value 'abc' for '--lease-duration <DURATION>'"),
        ("--renew-deadline=10", "has no unit; write 10s"),
        ("--leader-election=yes", "invalid value 'yes' for '--leader-election <BOOL>'"),
        ("--priority-class=urgent=x", "unknown priority \"urgent\""),
    ] {
        let out = a2a(&["operator", arg]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
    }
}

#[test]
fn settings_that_cannot_work_fail_before_connecting() {
    let out = a2a(&["operator", "--lease-duration=5s", "--renew-deadline=10s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--renew-deadline (10s) must be shorter than --lease-duration (5s)"), "{err}");

    let out = a2a(&["operator", "--leader-election=false", "--metrics-port=0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to Kubernetes"), "{err}");

    // The quota is implemented: accepted, so the run gets as far as connecting.
    let out = a2a(&["operator", "--leader-election=false", "--metrics-port=0", "--resource-quota=true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to Kubernetes") && !err.contains("not implemented"), "{err}");
}
