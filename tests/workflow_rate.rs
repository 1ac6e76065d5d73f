//! Rate limits and `Retry-After`, against the real local API server, the workflow engine and
//! agents built on the official A2A Python SDK behind a middleware that logs when each
//! SendMessage arrives (and answers the first ones with HTTP 429 when asked to). Timings are
//! measured at the agent, and only lower bounds are asserted.

mod common;
mod support;

use common::engine::{create_workflow, ready_agent, start_engine};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use a2a::api::{ResourceBudget, Workflow};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::PostParams;
use support::AgentProcess;

/// The SDK agent behind the throttling middleware, logging its SendMessages to `log`.
async fn throttled_agent(log: &Path, env: &[(&str, &str)]) -> AgentProcess {
    let mut all = vec![("REQUEST_LOG", log.to_str().expect("utf-8 path"))];
    all.extend_from_slice(env);
    AgentProcess::python("tests/python/throttled_agent.py", &all).await
}

/// `(unix time, "429" | "ok")` of every SendMessage the agent logged, in arrival order.
fn arrivals(log: &Path) -> Vec<(f64, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out: Vec<(f64, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().expect("time"), f[2].to_owned())
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Waits until the stored workflow is finished; returns it.
async fn finished(client: &kube::Client, name: &str, within: Duration) -> Workflow {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + within;
    loop {
        let wf = api.get(name).await.expect("get workflow");
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name} did not finish in {within:?}: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until some task of the workflow (named `task`, when given) has `reason` and a
/// message containing `needle`; returns that message.
async fn task_reason(client: &kube::Client, name: &str, task: Option<&str>, reason: &str, needle: &str) -> String {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wf = api.get(name).await.expect("get workflow");
        let found = wf.status.as_ref().and_then(|s| {
            s.tasks
                .iter()
                .filter(|t| task.is_none_or(|n| t.name == n))
                .find_map(|t| t.message.clone().filter(|m| t.reason.as_deref() == Some(reason) && m.contains(needle)))
        });
        if let Some(m) = found {
            return m;
        }
        assert!(Instant::now() < deadline, "no task of {name} waits with {reason} ({needle}): {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reasons and messages of the Events recorded about workflow `name`.
async fn events(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let list = Api::<Event>::namespaced(client.clone(), "default").list(&Default::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn log_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Asserts that no window of `per` seconds holds more than `n` of `times` (sorted).
fn at_most_n_per_window(times: &[f64], n: usize, per: f64) {
    for w in times.windows(n + 1) {
        assert!(w[n] - w[0] >= per, "{} requests arrived within {:.3}s (< {per}s): {times:?}", n + 1, w[n] - w[0]);
    }
}

/// One run of the Retry-After scenario on one binding and one form of the header.
async fn retried_after_the_agents_wait(binding: &str, form: &str) {
    let server = common::start().await;
    let client = server.client.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_in(&dir, "requests");
    let agent = throttled_agent(
        &log,
        &[("BINDING", binding), ("THROTTLE_FIRST", "1"), ("RETRY_AFTER", "3"), ("RETRY_AFTER_FORM", form)],
    )
    .await;
    ready_agent(&client, "llm", &agent.url, serde_json::json!({})).await;
    let _stop = start_engine(&client);
    create_workflow(
        &client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: once }\nspec:\n  retry: { limit: 0 }\n  tasks:\n    - { name: ask, agent: llm, message: hello }\n",
    )
    .await;
    // While it waits, the task says so: the agent, the wait, and that it is no failure.
    let message = task_reason(&client, "once", None, "RateLimited", "Retry-After").await;
    assert!(message.starts_with("agent \"llm\" asked with Retry-After to be called again in "), "{message}");
    assert!(message.contains("attempt 1 is sent again at "), "{message}");
    let wf = finished(&client, "once", Duration::from_secs(60)).await;
    let status = wf.status.expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "{status:#?}");
    let task = &status.tasks[0];
    assert_eq!((task.phase, task.attempts), (TaskPhase::Succeeded, 1), "the deferral was not an attempt: {task:#?}");
    assert_eq!(task.output.as_deref(), Some("echo: hello"));
    let seen = arrivals(&log);
    assert_eq!(seen.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["429", "ok"], "{seen:?}");
    // The HTTP-date has whole seconds: 3s ahead is at least 2s ahead.
    let at_least = if form == "date" { 2.0 } else { 3.0 };
    assert!(seen[1].0 - seen[0].0 >= at_least, "sent again {:.3}s after the 429", seen[1].0 - seen[0].0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let evs = events(&client, "once").await;
        if evs
            .iter()
            .any(|(r, m)| r == "RateLimited" && m.starts_with("task \"ask\": agent \"llm\" asked with Retry-After"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no RateLimited Event: {evs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_seconds_is_retried_after_the_wait_without_using_a_retry_over_json_rpc() {
    retried_after_the_agents_wait("JSONRPC", "seconds").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_a_retry_after_date_is_retried_after_the_wait_without_using_a_retry_over_http_json() {
    retried_after_the_agents_wait("HTTP+JSON", "date").await;
}

/// Six independent tasks, sent to `targets` in turn (`skill:NAME` routes by skill).
fn six_tasks(name: &str, targets: &[&str]) -> String {
    let mut yaml =
        format!("apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  tasks:\n");
    for i in 0..6 {
        let target = match targets[i % targets.len()].strip_prefix("skill:") {
            Some(skill) => format!("skill: {skill}"),
            None => format!("agent: {}", targets[i % targets.len()]),
        };
        yaml.push_str(&format!("    - {{ name: t{i}, {target}, message: m{i} }}\n"));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_rate_limit_spaces_its_requests_and_the_workflow_completes() {
    let server = common::start().await;
    let client = server.client.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = log_in(&dir, "requests");
    let agent = throttled_agent(&log, &[]).await;
    ready_agent(&client, "llm", &agent.url, serde_json::json!({"rateLimit": {"requests": 2, "per": "3s"}})).await;
    let _stop = start_engine(&client);
    create_workflow(&client, &six_tasks("six", &["llm"])).await;
    let message = task_reason(&client, "six", None, "RateLimited", "rateLimit").await;
    assert!(
        message.starts_with("agent \"llm\" is at its rateLimit of 2 requests per 3s; the next request may start "),
        "{message}"
    );
    let wf = finished(&client, "six", Duration::from_secs(60)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    let times: Vec<f64> = arrivals(&log).into_iter().map(|(t, _)| t).collect();
    assert_eq!(times.len(), 6, "one request per task: {times:?}");
    at_most_n_per_window(&times, 2, 3.0);
    let evs = events(&client, "six").await;
    assert!(evs.iter().any(|(r, _)| r == "RateLimited"), "an Event says why tasks wait: {evs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budgets_rate_limit_covers_every_agent_charged_to_it() {
    let server = common::start().await;
    let client = server.client.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_a, log_b) = (log_in(&dir, "a"), log_in(&dir, "b"));
    let (a, b) = (throttled_agent(&log_a, &[]).await, throttled_agent(&log_b, &[]).await);
    // The limit sits on the parent: it covers the agents of its child budget too.
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    for (name, spec) in [
        ("llm-pool", serde_json::json!({"rateLimit": {"requests": 2, "per": "3s"}})),
        ("llm-team", serde_json::json!({"parent": "llm-pool"})),
    ] {
        let budget: ResourceBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": name}, "spec": spec
        }))
        .expect("budget");
        budgets.create(&PostParams::default(), &budget).await.expect("create budget");
    }
    let team = serde_json::json!({"budget": "llm-team", "skills": ["write"]});
    ready_agent(&client, "alpha", &a.url, team.clone()).await;
    ready_agent(&client, "beta", &b.url, team).await;
    let _stop = start_engine(&client);
    // t0, t1 go first; t2 and t3 wait for their agents, t4 and t5 for any agent with the skill.
    let targets = ["alpha", "beta", "alpha", "beta", "skill:write", "skill:write"];
    create_workflow(&client, &six_tasks("pooled", &targets)).await;
    for task in ["t3", "t5"] {
        let message = task_reason(&client, "pooled", Some(task), "RateLimited", "budget").await;
        assert!(message.starts_with("budget \"llm-pool\" (agent "), "{task}: {message}");
        assert!(message.contains("is at its rateLimit of 2 requests per 3s"), "{task}: {message}");
    }
    let wf = finished(&client, "pooled", Duration::from_secs(60)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    let (seen_a, seen_b) = (arrivals(&log_a), arrivals(&log_b));
    assert!(seen_a.len() >= 2 && seen_b.len() >= 2, "both agents got their tasks: {seen_a:?} {seen_b:?}");
    assert_eq!(seen_a.len() + seen_b.len(), 6, "one request per task");
    let mut times: Vec<f64> = seen_a.into_iter().chain(seen_b).map(|(t, _)| t).collect();
    times.sort_by(f64::total_cmp);
    at_most_n_per_window(&times, 2, 3.0);
}
