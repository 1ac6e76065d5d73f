//! The metrics of agents, budgets and workflows under a real `a2a serve` on the kernel: a
//! crashing agent's restarts, an OOM kill, a ready agent's replicas and usage, a budget's amounts, and a
//! workflow's task outcomes, retries and histograms, scraped from `/metrics`, checked by
//! promtool, and gone once their objects are deleted. The chart's Grafana dashboard only asks
//! for families the daemon serves.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use axum::http::Method;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, get_wf, tear_down, wait_agent};

const MANIFESTS: &str = "apiVersion: a2a.dev/v1alpha1
kind: ResourceBudget
metadata: { name: observed }
spec:
  parent: host
  limits: { memory: 256Mi, cpu: \"1\" }
  alerts: [{ resource: memory, above: \"99%\" }]
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: worker }
spec:
  command: [a2a, demo-agent]
  budget: observed
  resources: { limits: { cpu: 500m, memory: 128Mi } }
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: crasher }
spec: { command: [sh, -c, \"exit 1\"], restartPolicy: Always }
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: hog }
spec:
  command: [python3, -c, \"b = b'x' * (256 << 20); import time; time.sleep(60)\"]
  restartPolicy: Never
  resources: { limits: { memory: 64Mi } }
";

const WORKFLOW: &str = "apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: observed }
spec:
  tasks:
    - { name: hello, agent: worker, message: echo hello }
    - { name: nap, agent: worker, dependsOn: [hello], message: sleep 100ms }
    - { name: doomed, agent: worker, message: fail, retry: { limit: 1, backoff: { initial: 50ms } } }
";

async fn scrape(client: &kube::Client) -> String {
    let (code, text) = common::raw(client, Method::GET, "/metrics", "", "").await;
    assert_eq!(code, 200, "{text}");
    text.as_str().expect("text").to_owned()
}

/// The value of the sample `series` (name and labels, as written), if served.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Families the exposition declares (`# TYPE NAME KIND`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned)).collect()
}

/// Every `a2a_…` metric a PromQL expression names, as its family (without `_bucket`,
/// `_sum`, `_count` of a histogram).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("a2a_") {
        let start = i + at;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |n| start + n);
        if !preceded {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

fn family_of(name: &str, served: &BTreeSet<String>) -> Option<String> {
    if served.contains(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| served.contains(*f))
        .map(str::to_owned)
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(common::promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scrapes until `ok` holds on the text, or fails with the last scrape.
async fn scrape_until(client: &kube::Client, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(client).await;
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed in /metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_budgets_and_workflows_are_served_as_metrics_and_go_with_their_objects() {
    let scratch = Scratch::new("metrics");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &["--restart-backoff", "200ms"]);
    let client = daemon.client().await;
    apply(home, MANIFESTS);
    wait_agent(&client, "worker", Duration::from_secs(30), |a| {
        a.status.as_ref().is_some_and(|s| s.ready_replicas == 1)
    })
    .await;
    wait_agent(&client, "crasher", Duration::from_secs(30), |a| a.status.as_ref().is_some_and(|s| s.restarts >= 2))
        .await;
    wait_agent(&client, "hog", Duration::from_secs(30), |a| {
        a.status
            .as_ref()
            .and_then(|s| s.last_termination.as_ref())
            .is_some_and(|t| t.reason == a2a::api::agent::TerminationReason::OomKilled)
    })
    .await;
    apply(home, WORKFLOW);
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get_wf(&client, "observed").await;
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal()) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow ends: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(wf.status.and_then(|s| s.phase), Some(WorkflowPhase::Failed));

    let agent = |name: &str, a: &str| format!("{name}{{namespace=\"default\",agent=\"{a}\"}}");
    let text = scrape_until(&client, "the worker's CPU time and memory", |t| {
        value(t, &agent("a2a_agent_cpu_seconds_total", "worker")).is_some_and(|v| v > 0.0)
            && value(t, &agent("a2a_agent_memory_bytes", "worker")).is_some_and(|v| v > 0.0)
    })
    .await;
    promtool_check(&text);

    // Agents: restarts, replicas, tasks in flight.
    assert!(value(&text, &agent("a2a_agent_restarts_total", "crasher")).is_some_and(|v| v >= 2.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_restarts_total", "worker")), Some(0.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_ready_replicas", "worker")), Some(1.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_replicas", "worker")), Some(1.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_tasks_in_flight", "worker")), Some(0.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_oom_kills_total", "worker")), Some(0.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_oom_kills_total", "hog")), Some(1.0), "{text}");
    assert_eq!(value(&text, &agent("a2a_agent_replicas", "hog")), Some(0.0), "{text}");
    assert!(value(&text, &agent("a2a_agent_cpu_throttled_periods_total", "worker")).is_some(), "{text}");
    assert!(value(&text, &agent("a2a_agent_cpu_throttled_seconds_total", "worker")).is_some(), "{text}");

    // The budget: its limits, what its agent holds, its alert.
    let budget = |name: &str, r: &str| format!("{name}{{budget=\"observed\",resource=\"{r}\"}}");
    assert_eq!(value(&text, &budget("a2a_budget_limit", "memory")), Some(256.0 * 1024.0 * 1024.0), "{text}");
    assert_eq!(value(&text, &budget("a2a_budget_limit", "cpu")), Some(1.0), "{text}");
    assert!(value(&text, &budget("a2a_budget_allocated", "memory")).is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&text, &budget("a2a_budget_used", "memory")).is_some(), "{text}");
    assert_eq!(value(&text, &budget("a2a_budget_alerts_firing", "memory")), Some(0.0), "{text}");
    assert!(value(&text, "a2a_budget_pressure{budget=\"observed\"}").is_some(), "{text}");

    // The workflow: two tasks succeeded; the doomed one failed once, was retried, failed.
    let wf = "namespace=\"default\",workflow=\"observed\"";
    let outcome = |o: &str, r: &str| format!("a2a_workflow_task_outcomes_total{{{wf},outcome=\"{o}\",reason=\"{r}\"}}");
    assert_eq!(value(&text, &outcome("succeeded", "Completed")), Some(2.0), "{text}");
    assert_eq!(value(&text, &outcome("retried", "AttemptFailed")), Some(1.0), "{text}");
    assert_eq!(value(&text, &outcome("failed", "AttemptFailed")), Some(1.0), "{text}");
    assert_eq!(value(&text, &format!("a2a_workflow_task_retries_total{{{wf}}}")), Some(1.0), "{text}");
    assert_eq!(value(&text, &format!("a2a_workflow_dispatch_latency_seconds_count{{{wf}}}")), Some(4.0), "{text}");
    assert_eq!(value(&text, &format!("a2a_workflow_task_duration_seconds_count{{{wf}}}")), Some(4.0), "{text}");
    assert_eq!(
        value(&text, &format!("a2a_workflow_task_duration_seconds_bucket{{{wf},le=\"+Inf\"}}")),
        Some(4.0),
        "{text}"
    );
    // The nap took at least 100 ms.
    assert!(value(&text, &format!("a2a_workflow_task_duration_seconds_sum{{{wf}}}")).is_some_and(|s| s >= 0.1));
    assert!(text.contains("# TYPE a2a_workflow_queued_tasks gauge"), "{text}");

    // Every query of the chart's dashboard names a family served here.
    let served = families(&text);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/a2a/dashboards/a2a.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard")).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queried = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {:?} queries no a2a metric: {expr}", panel["title"]);
            for name in names {
                assert!(
                    family_of(&name, &served).is_some(),
                    "panel {:?} queries {name}, which /metrics does not serve",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 0, "the dashboard queries something");

    // Deleted objects leave no series.
    Api::<Workflow>::namespaced(client.clone(), "default")
        .delete("observed", &DeleteParams::default())
        .await
        .expect("delete the workflow");
    for name in ["crasher", "worker"] {
        Api::<Agent>::namespaced(client.clone(), "default")
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete an agent");
    }
    let text = scrape_until(&client, "the deleted objects' series going", |t| {
        !t.contains("workflow=\"observed\"") && !t.contains("agent=\"crasher\"") && !t.contains("agent=\"worker\"")
    })
    .await;
    assert!(text.contains("agent=\"hog\""), "{text}");
    // Not even once the worker's replica has stopped and the node samples again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = scrape(&client).await;
    assert!(!text.contains("agent=\"worker\""), "{text}");
    promtool_check(&text);
    tear_down(daemon).await;
}

/// `a2a top --once` against the daemon, its stdout.
fn top_once(home: &std::path::Path, format: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["top", "--once", "-o", format])
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .output()
        .expect("a2a top");
    assert!(out.status.success(), "a2a top failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_shows_the_running_agent_its_budget_and_the_running_workflow() {
    let scratch = Scratch::new("top");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: watched }\nspec:\n  parent: host\n  limits: { memory: 256Mi, cpu: \"1\" }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: worker }\nspec:\n  command: [a2a, demo-agent]\n  budget: watched\n  resources: { limits: { cpu: 500m, memory: 128Mi } }\n",
    );
    // A second agent is a spinning shell under a 200m limit (it serves no card: top shows
    // what the node measures of it all the same).
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: spinner }\nspec:\n  command: [sh, -c, \"while :; do :; done\"]\n  budget: watched\n  resources: { limits: { cpu: 200m, memory: 64Mi } }\n",
    );
    // A quiet agent's first usage is written within a minute of its start (drawn).
    wait_agent(&client, "worker", Duration::from_secs(90), |a| {
        a.status.as_ref().is_some_and(|s| s.ready_replicas == 1 && s.usage.as_ref().is_some_and(|u| u.memory_bytes > 0))
    })
    .await;
    // Its use is written once the node has sampled it twice (10 s apart).
    let spinning = wait_agent(&client, "spinner", Duration::from_secs(60), |a| {
        a.status.as_ref().and_then(|s| s.usage.as_ref()).is_some_and(|u| u.cpu_millicores >= 20)
    })
    .await;
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: long }\nspec:\n  tasks:\n    - { name: nap, agent: worker, message: sleep 60s }\n    - { name: after, agent: worker, dependsOn: [nap], message: echo done }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = get_wf(&client, "long").await;
        let running = wf.status.as_ref().is_some_and(|s| {
            s.tasks.iter().any(|t| t.name == "nap" && t.phase == a2a::api::workflow::TaskPhase::Running)
        });
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the task runs: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let json: serde_json::Value = serde_json::from_str(&top_once(home, "json")).expect("JSON");
    let agent = json["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == "worker")).expect("worker");
    assert_eq!(agent["namespace"], "default");
    assert_eq!((agent["readyReplicas"].as_u64(), agent["replicas"].as_u64()), (Some(1), Some(1)), "{agent}");
    assert!(
        agent["cpuPercent"].as_f64().is_some_and(|p| (0.0..=50.0).contains(&p)),
        "CPU% from status.usage, at most its 500m limit: {agent}"
    );
    assert_eq!(agent["throttled"], false, "an idle agent is not throttled: {agent}");
    assert_eq!(agent["throttledSeconds"].as_f64(), Some(0.0), "{agent}");
    assert_eq!(agent["cpuLimitMillicores"], 500);
    assert!(agent["memoryBytes"].as_u64().is_some_and(|m| m > 0), "{agent}");
    assert_eq!(agent["memoryLimitBytes"], 128u64 << 20);
    assert_eq!(agent["restarts"], 0);
    assert_eq!(agent["tasksInFlight"], 1, "the sleeping task: {agent}");
    let spinner = json["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == "spinner")).expect("spinner");
    let cpu = spinner["cpuPercent"].as_f64().expect("the spinner's CPU%");
    let measured = spinning.status.and_then(|s| s.usage).map_or(0, |u| u.cpu_millicores) as f64 / 10.0;
    // The node rewrites usage that moved by 10% or more, so what top shows is near that.
    assert!((2.0..=25.0).contains(&cpu), "a spinning shell under 200m (measured {measured}%): {spinner}");
    assert_eq!(spinner["cpuLimitMillicores"], 200);
    assert!(spinner["throttledSeconds"].as_f64().is_some(), "{spinner}");
    let budget = json["budgets"].as_array().and_then(|b| b.iter().find(|b| b["name"] == "watched")).expect("budget");
    assert_eq!(budget["memory"]["limit"], 256u64 << 20);
    assert_eq!(budget["memory"]["allocated"], 192u64 << 20, "the worker's 128Mi and the spinner's 64Mi");
    assert_eq!(budget["cpu"]["limit"], 1000);
    assert_eq!(budget["agents"], 2);
    assert_eq!(budget["pressure"], false);
    let wf = json["workflows"].as_array().and_then(|w| w.iter().find(|w| w["name"] == "long")).expect("workflow");
    assert_eq!(
        (wf["phase"].as_str(), wf["succeeded"].as_u64(), wf["running"].as_u64(), wf["total"].as_u64()),
        (Some("Running"), Some(0), Some(1), Some(2)),
        "{wf}"
    );

    let table = top_once(home, "table");
    let lines: Vec<&str> = table.lines().collect();
    let header = |first: &str| lines.iter().position(|l| l.split_whitespace().next() == Some(first));
    let agents_at = header("NAMESPACE").expect("the agents' header");
    assert_eq!(
        lines[agents_at].split_whitespace().collect::<Vec<_>>(),
        [
            "NAMESPACE",
            "AGENT",
            "READY",
            "CPU%",
            "CPU-LIMIT",
            "MEMORY",
            "MEM-LIMIT",
            "MEM%",
            "THROTTLED",
            "RESTARTS",
            "IN-FLIGHT"
        ]
    );
    let row: Vec<&str> =
        lines.iter().find(|l| l.contains(" worker ")).expect("the worker's row").split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4], row[6], row[9], row[10]),
        ("default", "worker", "1/1", "500m", "128Mi", "0", "1"),
        "{table}"
    );
    let budgets_at = header("BUDGET").expect("the budgets' header");
    let budget_row: Vec<&str> = lines[budgets_at..]
        .iter()
        .find(|l| l.starts_with("watched "))
        .expect("the budget's row")
        .split_whitespace()
        .collect();
    assert!(budget_row[1].ends_with("/192Mi/256Mi"), "{table}");
    let wf_row = lines.iter().find(|l| l.contains(" long ")).expect("the workflow's row");
    assert!(wf_row.contains("Running") && wf_row.contains("0/2"), "{table}");
    assert!(
        lines.iter().any(|l| l.starts_with("NAMESPACE") && l.contains("WORKFLOW") && l.contains("PROGRESS")),
        "{table}"
    );
    tear_down(daemon).await;
}
