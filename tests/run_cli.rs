//! `a2a run`: the main job, end to end with an embedded control plane (real processes,
//! real cgroups), its exit codes and its errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .arg("run")
        .args(args)
        .args(["--cgroup-top", &unique_top()])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a")
}

/// A cgroup top of its own for every run, so that parallel tests never share one.
fn unique_top() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("a2a-test-run-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_quickstart_runs_to_success_and_stops_its_agents() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = run(home.path(), &["-f", "examples/quickstart.yaml", "--output"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    assert!(stdout.starts_with("workflow quickstart: Succeeded (4/4)"), "{stdout}");
    for task in ["draft", "shout", "count", "report"] {
        assert!(stdout.lines().any(|l| l.starts_with(task) && l.contains("Succeeded")), "{task} missing:\n{stdout}");
    }
    assert!(stdout.contains("--- report\nLoud: A SHORT NOTE ABOUT AGENTS UNDER CGROUPS. | words: 7\n"), "{stdout}");
    assert!(text(&out.stderr).contains("started an embedded control plane"));
    assert!(home.path().join("logs/default/writer/0.log").exists(), "agents logged under $A2A_HOME/logs");
    assert_eq!(
        common::agents_logging_into(home.path()),
        Vec::<u32>::new(),
        "the embedded control plane stops the agents it started"
    );
}

#[test]
fn params_override_and_a_failing_workflow_exits_1() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    std::fs::write(
        &file,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: echo }\nspec: { command: [a2a, demo-agent, --skill, echo] }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: broken }\nspec: { command: [a2a, demo-agent, --skill, fail] }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: mixed }\nspec:\n  params: { who: nobody }\n  tasks:\n\
         \x20   - { name: hello, agent: echo, message: \"hello {{ params.who }}\" }\n\
         \x20   - { name: doomed, agent: broken, message: \"x\", retry: { limit: 1, backoff: { initial: 50ms } } }\n\
         \x20   - { name: after, agent: echo, dependsOn: [doomed], message: \"{{ tasks.doomed.output }}\" }\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let out = run(home.path(), &["-f", f, "--param", "who=world", "--output"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.starts_with("workflow mixed: Failed (3/3)"), "{stdout}");
    assert!(stdout.contains("--- hello\nhello world\n"), "{stdout}");
    let doomed = stdout.lines().find(|l| l.starts_with("doomed")).expect("doomed row");
    assert!(doomed.contains("Failed") && doomed.contains(" 2 "), "two attempts: {doomed}");
    assert!(stdout.lines().any(|l| l.starts_with("after") && l.contains("Skipped")), "{stdout}");

    let bad = run(home.path(), &["-f", f, "--param", "nope=1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(text(&bad.stderr), "error: --param nope: no workflow in these files declares it in spec.params\n");
}

#[test]
fn run_output_prints_an_output_longer_than_status_holds_whole() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("long.yaml");
    std::fs::write(
        &file,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: talker }\nspec:\n  protocol: stdio\n\
         \x20 command: [sh, -c, \"cat >/dev/null; yes abcdefghij | head -c 100000\"]\n\
         \x20 resources: { limits: { memory: 64Mi, pids: 16 } }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: chatty }\nspec:\n  tasks:\n\
         \x20   - { name: long, agent: talker, message: go }\n",
    )
    .expect("write");
    let out = run(home.path(), &["-f", file.to_str().expect("utf-8"), "--output"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    // 100,000 bytes (the stdio runner drops the final newline): more than the 64 KiB in status.
    let want = "abcdefghij\n".repeat(10_000)[..100_000].trim_end_matches('\n').to_owned();
    assert!(stdout.contains(&format!("--- long\n{want}\n")), "the whole output, {} bytes printed in all", stdout.len());
}

#[test]
fn run_refuses_files_without_a_workflow_and_invalid_files() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = run(home.path(), &["-f", "examples/external-agent.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: these files hold no Workflow to run; use `a2a apply` for agents and budgets\n"
    );
    let file = home.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: w }\nspec: { tasks: [] }\n")
        .expect("write");
    let out = run(home.path(), &["-f", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("spec.tasks: needs at least 1 item"), "{}", text(&out.stderr));
}

#[test]
fn an_embedded_run_leaves_no_cgroup_behind() {
    let home = tempfile::tempdir().expect("tempdir");
    let top = format!("a2a-test-run-clean-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["run", "-f", "examples/stdio-agent.yaml", "--cgroup-top", &top])
        .env("A2A_HOME", home.path())
        .env_remove("A2A_KUBECONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run a2a");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let driver = a2a::node::cgroup::detect(Path::new("/sys/fs/cgroup")).expect("cgroups");
    assert!(!driver.exists(&a2a::node::cgroup::CgroupPath::parse(&top).expect("path")), "the cgroup tree was removed");
}

#[test]
fn an_agent_a2a_runs_is_reached_at_its_own_port_whatever_host_its_card_advertises() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("wf.yaml");
    // Both agents advertise an address that reaches nothing, as an agent behind a proxy or a
    // Service may; the card still chooses the binding (HTTP+JSON first for one of them).
    std::fs::write(
        &file,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: rpc }\n\
         spec: { command: [a2a, demo-agent, --advertise-url, 'http://127.0.0.1:1/'] }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: rest }\n\
         spec: { command: [a2a, demo-agent, --binding, http-json, --binding, jsonrpc, --advertise-url, 'http://127.0.0.1:1/'] }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: reach }\nspec:\n  tasks:\n\
         \x20   - { name: one, agent: rpc, message: 'uppercase over json-rpc' }\n\
         \x20   - { name: two, agent: rest, message: 'uppercase over rest' }\n",
    )
    .expect("write");
    let out = run(home.path(), &["-f", file.to_str().expect("utf-8"), "--output"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("--- one\nOVER JSON-RPC\n"), "{stdout}");
    assert!(stdout.contains("--- two\nOVER REST\n"), "{stdout}");
}
