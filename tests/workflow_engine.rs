//! The workflow engine against the real local API server and real A2A agents (the demo agent
//! and the official Python SDK): DAGs with outputs passed down, retries, failure
//! propagation, timeouts that cancel on the agent, and resumption after a restart.

mod common;
mod support;

use common::engine::{create_workflow, ready_agent, start_engine};

use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::AgentProcess;

/// Waits until the stored workflow is finished; returns it.
async fn finished(client: &kube::Client, name: &str, within: Duration) -> Workflow {
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + within;
    loop {
        let wf = api.get(name).await.expect("get workflow");
        let phase = wf.status.as_ref().and_then(|s| s.phase);
        if matches!(phase, Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name} did not finish in {within:?}: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phases(wf: &Workflow) -> Vec<(String, TaskPhase)> {
    wf.status.as_ref().map(|s| s.tasks.iter().map(|t| (t.name.clone(), t.phase)).collect()).unwrap_or_default()
}

fn output(wf: &Workflow, task: &str) -> String {
    wf.status
        .as_ref()
        .and_then(|s| s.tasks.iter().find(|t| t.name == task))
        .and_then(|t| t.output.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_fan_out_fan_in_passes_outputs_downstream() {
    let server = common::start().await;
    let upper = AgentProcess::demo(&["--skill", "uppercase"]).await;
    let count = AgentProcess::demo(&["--skill", "wordcount"]).await;
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(
        &server.client,
        "upper",
        &upper.url,
        serde_json::json!({"skills": ["uppercase"], "maxConcurrentTasks": 4}),
    )
    .await;
    ready_agent(
        &server.client,
        "count",
        &count.url,
        serde_json::json!({"skills": ["wordcount"], "maxConcurrentTasks": 4}),
    )
    .await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"skills": ["echo"], "maxConcurrentTasks": 4}))
        .await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        r#"
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: dag }
spec:
  params: { topic: cgroups keep agents honest }
  tasks:
    - { name: draft, agent: echo, message: "{{ params.topic }}" }
    - { name: loud, skill: uppercase, dependsOn: [draft], message: "{{ tasks.draft.output }}" }
    - { name: words, skill: wordcount, dependsOn: [draft], message: "{{ tasks.draft.output }}" }
    - { name: again, agent: echo, dependsOn: [draft], message: "again: {{ tasks.draft.output }}" }
    - { name: join, agent: echo, dependsOn: [loud, words, again], message: "{{ tasks.loud.output }} / {{ tasks.words.output }} / {{ tasks.again.output }}" }
"#,
    )
    .await;
    let wf = finished(&server.client, "dag", Duration::from_secs(30)).await;
    let status = wf.status.clone().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "{status:#?}");
    assert_eq!(status.progress.as_deref(), Some("5/5"));
    assert_eq!(status.observed_generation, wf.metadata.generation, "the status says which spec it is about");
    assert!(status.observed_generation.is_some());
    // The engine's status writes are named in managedFields.
    let managers = wf.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("a2a-engine") && m.subresource.as_deref() == Some("status")),
        "{managers:#?}"
    );
    assert_eq!(output(&wf, "loud"), "CGROUPS KEEP AGENTS HONEST");
    assert_eq!(output(&wf, "words"), "4");
    assert_eq!(output(&wf, "join"), "CGROUPS KEEP AGENTS HONEST / 4 / again: cgroups keep agents honest");
    let loud = status.tasks.iter().find(|t| t.name == "loud").expect("loud");
    assert_eq!(loud.agent.as_deref(), Some("upper"), "skill routing picked the agent with the skill");
    assert!(status.tasks.iter().all(|t| t.attempts == 1 && t.started_at.is_some() && t.finished_at.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_retried_then_fails_the_workflow_and_skips_dependents() {
    let server = common::start().await;
    let fail = AgentProcess::demo(&["--skill", "fail"]).await;
    let echo = AgentProcess::demo(&["--skill", "echo"]).await;
    ready_agent(&server.client, "flaky", &fail.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 1})).await;
    ready_agent(&server.client, "echo", &echo.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 1})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        r#"
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: failing }
spec:
  tasks:
    - name: broken
      agent: flaky
      message: this will fail
      retry: { limit: 2, backoff: { initial: 100ms, factor: 2 } }
    - { name: after, agent: echo, dependsOn: [broken], message: "{{ tasks.broken.output }}" }
    - { name: independent, agent: echo, message: still runs }
"#,
    )
    .await;
    let wf = finished(&server.client, "failing", Duration::from_secs(30)).await;
    let status = wf.status.clone().expect("status");
    assert_eq!(status.phase, Some(WorkflowPhase::Failed));
    assert_eq!(
        phases(&wf),
        [
            ("broken".into(), TaskPhase::Failed),
            ("after".into(), TaskPhase::Skipped),
            ("independent".into(), TaskPhase::Succeeded)
        ]
    );
    let broken = &status.tasks[0];
    assert_eq!(broken.attempts, 3, "1 attempt + 2 retries");
    assert!(broken.error.as_deref().is_some_and(|e| e.contains("TASK_STATE_FAILED")), "{:?}", broken.error);
    assert_eq!(status.tasks[1].error.as_deref(), Some("dependency \"broken\" did not succeed"));
    // Each attempt had its own messageId: the agent saw three distinct ones.
    let log = fail.log();
    for attempt in 1..=3 {
        assert!(log.contains(&format!("-broken-{attempt}")), "attempt {attempt} missing from the agent log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_task_is_cancelled_on_the_agent() {
    let server = common::start().await;
    let slow = AgentProcess::demo(&["--skill", "sleep"]).await;
    ready_agent(&server.client, "slow", &slow.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 1})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: slow }\nspec:\n  tasks:\n    - { name: nap, agent: slow, message: sleep 30s, timeout: 500ms }\n",
    )
    .await;
    let wf = finished(&server.client, "slow", Duration::from_secs(30)).await;
    assert_eq!(phases(&wf), [("nap".into(), TaskPhase::Failed)]);
    let err = wf.status.as_ref().and_then(|s| s.tasks[0].error.clone()).unwrap_or_default();
    assert!(err.starts_with("500ms passed before the task finished; CancelTask"), "{err}");
    assert!(err.ends_with("answered TASK_STATE_CANCELED"), "{err}");
    slow.wait_log("event=canceled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sdk_agent_serves_a_workflow_task() {
    let server = common::start().await;
    let py = AgentProcess::python("examples/python/echo_agent.py", &[]).await;
    ready_agent(&server.client, "py", &py.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2})).await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: py }\nspec:\n  tasks:\n    - { name: hello, agent: py, message: hello from a2a }\n",
    )
    .await;
    let wf = finished(&server.client, "py", Duration::from_secs(30)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    assert!(output(&wf, "hello").contains("hello from a2a"), "{}", output(&wf, "hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_follows_running_tasks_instead_of_sending_them_again() {
    let server = common::start().await;
    let slow = AgentProcess::demo(&["--skill", "sleep"]).await;
    ready_agent(&server.client, "slow", &slow.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2})).await;
    let stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: resume }\nspec:\n  tasks:\n    - { name: a, agent: slow, message: sleep 2s }\n    - { name: b, agent: slow, message: sleep 2s }\n",
    )
    .await;
    // Wait until both tasks run and their A2A ids are stored, then stop the engine.
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wf = api.get("resume").await.expect("get");
        let ids = wf.status.as_ref().map_or(0, |s| s.tasks.iter().filter(|t| t.a2a_task_id.is_some()).count());
        if ids == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "task ids never stored: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _again = start_engine(&server.client);
    let wf = finished(&server.client, "resume", Duration::from_secs(30)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    let log = slow.log();
    assert_eq!(log.matches("event=start").count(), 2, "each task ran once:\n{log}");
    assert!(!log.contains("event=duplicate"), "nothing was sent twice:\n{log}");
}

/// Runs workflow `name` (tasks `a` and `b`, each `message`) on `agent` (as Agent `peer`),
/// stops the engine once both messages reached the agent (`started` twice in its log) and
/// the status holds what a restart needs (`kept`), starts another engine, and returns the
/// finished workflow.
async fn restart_while_running(
    agent: &AgentProcess,
    name: &str,
    message: &str,
    started: &str,
    kept: impl Fn(&a2a::api::workflow::TaskStatus) -> bool,
) -> Workflow {
    let server = common::start().await;
    ready_agent(&server.client, "peer", &agent.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2})).await;
    let stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        &format!("apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  tasks:\n    - {{ name: a, agent: peer, message: {message} }}\n    - {{ name: b, agent: peer, message: {message} }}\n"),
    )
    .await;
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wf = api.get(name).await.expect("get");
        let kept = wf.status.as_ref().map_or(0, |s| s.tasks.iter().filter(|t| kept(t)).count());
        if kept == 2 && agent.log().matches(started).count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the tasks never ran: {:#?}\n{}", wf.status, agent.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _again = start_engine(&server.client);
    let wf = finished(&server.client, name, Duration::from_secs(30)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    let status = wf.status.as_ref().expect("status");
    assert!(status.tasks.iter().all(|t| t.attempts == 1 && t.a2a_task_id.is_some()), "{status:#?}");
    wf
}

/// An agent whose card does not declare streaming gets one blocking SendMessage per task, in
/// a context a2a chose and stored first: a restarted engine finds the task by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_finds_a_blocking_task_by_its_context_instead_of_sending_it_again() {
    let slow = AgentProcess::demo(&["--skill", "sleep", "--no-streaming"]).await;
    let wf = restart_while_running(&slow, "blocking", "sleep 2s", "event=start", |t| t.a2a_context_id.is_some()).await;
    assert_eq!((output(&wf, "a"), output(&wf, "b")), ("slept 2s".into(), "slept 2s".into()));
    let log = slow.log();
    assert_eq!(log.matches("event=start").count(), 2, "each task ran once:\n{log}");
    assert!(!log.contains("event=duplicate"), "nothing was sent twice:\n{log}");
    let uid = wf.metadata.uid.clone().unwrap_or_default();
    let status = wf.status.as_ref().expect("status");
    for t in &status.tasks {
        let context = a2a::controller::plan::context_id(&uid, &t.name, 1);
        assert_eq!(t.a2a_context_id.as_deref(), Some(context.as_str()), "{t:#?}");
    }
}

/// A blocking send records, in the same durable status write as its own context, the
/// contexts of the tasks queued next for the agent (up to its capacity), so that they are
/// sent without a write of their own. A restarted engine cannot tell such a task from one that
/// was sent: it looks for it with ListTasks, finds none, and sends it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_recorded_ahead_of_blocking_sends_are_looked_for_and_sent_once_after_a_restart() {
    let slow = AgentProcess::demo(&["--skill", "sleep", "--no-streaming"]).await;
    let server = common::start().await;
    // One slot: `a` runs while `b`, `c` and `d` wait in the queue.
    ready_agent(&server.client, "one", &slow.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 1})).await;
    let stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: ahead }\nspec:\n  tasks:\n    - { name: a, agent: one, message: sleep 1s }\n    - { name: b, agent: one, message: sleep 1s }\n    - { name: c, agent: one, message: sleep 1s }\n    - { name: d, agent: one, message: sleep 1s }\n",
    )
    .await;
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Stop while one task runs and the next one's context is in the store ahead of its start.
    let stored = loop {
        let wf = api.get("ahead").await.expect("get");
        let tasks = wf.status.as_ref().map(|s| s.tasks.clone()).unwrap_or_default();
        let running = tasks.iter().filter(|t| t.phase == TaskPhase::Running).count();
        let ahead = tasks.iter().filter(|t| t.phase == TaskPhase::Pending && t.a2a_context_id.is_some()).count();
        if running == 1 && ahead >= 1 && slow.log().contains("event=start") {
            break wf;
        }
        assert!(Instant::now() < deadline, "no context recorded ahead: {:#?}\n{}", wf.status, slow.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let uid = stored.metadata.uid.clone().unwrap_or_default();
    for t in stored.status.iter().flat_map(|s| &s.tasks).filter(|t| t.phase == TaskPhase::Pending) {
        if let Some(context) = &t.a2a_context_id {
            assert_eq!(context, &a2a::controller::plan::context_id(&uid, &t.name, 1), "the next attempt's own context");
        }
    }
    let _again = start_engine(&server.client);
    let wf = finished(&server.client, "ahead", Duration::from_secs(60)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    let status = wf.status.as_ref().expect("status");
    assert!(status.tasks.iter().all(|t| t.attempts == 1 && output(&wf, &t.name) == "slept 1s"), "{status:#?}");
    let log = slow.log();
    assert_eq!(log.matches("event=start").count(), 4, "each task ran once:\n{log}");
    assert!(!log.contains("event=duplicate"), "nothing was sent twice:\n{log}");
}

/// The official Python SDK, streaming card: the task id of the one SendStreamingMessage is
/// kept from its first event, and a restarted engine follows the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_follows_a_streamed_python_sdk_task_instead_of_sending_it_again() {
    let agent = AgentProcess::python("tests/python/streaming_agent.py", &[]).await;
    let wf = restart_while_running(&agent, "pystream", "slow 2", "start task=", |t| t.a2a_task_id.is_some()).await;
    assert_eq!((output(&wf, "a"), output(&wf, "b")), ("DONE".into(), "DONE".into()));
    let log = agent.log();
    assert_eq!(log.matches("start task=").count(), 2, "each task ran once:\n{log}");
}

/// The official Python SDK, card without streaming: one blocking SendMessage per task; a
/// restarted engine finds the task with ListTasks by the context it stored before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_finds_a_blocking_python_sdk_task_by_its_context() {
    let agent = AgentProcess::python("tests/python/streaming_agent.py", &[("A2A_STREAMING", "0")]).await;
    let wf = restart_while_running(&agent, "pyblock", "slow 2", "start task=", |t| t.a2a_context_id.is_some()).await;
    assert_eq!((output(&wf, "a"), output(&wf, "b")), ("DONE".into(), "DONE".into()));
    let log = agent.log();
    assert_eq!(log.matches("start task=").count(), 2, "each task ran once:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_streaming_and_deferred_agents_serve_a_workflow() {
    let server = common::start().await;
    let streaming = AgentProcess::python("tests/python/streaming_agent.py", &[]).await;
    let deferred = AgentProcess::python("tests/python/deferred_agent.py", &[("DEFERRED_SECONDS", "1")]).await;
    ready_agent(&server.client, "streamer", &streaming.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2}))
        .await;
    ready_agent(&server.client, "later", &deferred.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2}))
        .await;
    let _stop = start_engine(&server.client);
    create_workflow(
        &server.client,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: sdk }\nspec:\n  tasks:\n    - { name: stream, agent: streamer, message: one two three }\n    - { name: defer, agent: later, dependsOn: [stream], message: \"{{ tasks.stream.output }}\" }\n",
    )
    .await;
    let wf = finished(&server.client, "sdk", Duration::from_secs(30)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    // The streaming agent appends one chunk per word to one artifact.
    let stream_out = output(&wf, "stream");
    assert_eq!(stream_out.split_whitespace().collect::<Vec<_>>(), ["ONE", "TWO", "THREE"], "{stream_out:?}");
    let defer_out = output(&wf, "defer");
    assert!(
        defer_out.starts_with("deferred: ONE"),
        "the deferred task answered with the upstream output: {defer_out:?}"
    );
}

/// The edit that once recorded `a`'s result under `b`: re-applying a running workflow
/// without `a` is refused with a 422 naming `spec.tasks`; what steers the run may still
/// change; both tasks end with their own results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_tasks_of_a_running_workflow_is_refused_and_each_task_keeps_its_own_result() {
    let server = common::start().await;
    let slow = AgentProcess::demo(&["--skill", "sleep"]).await;
    ready_agent(&server.client, "slow", &slow.url, serde_json::json!({"skills": [], "maxConcurrentTasks": 2})).await;
    let _stop = start_engine(&server.client);
    let yaml = "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: edited }\nspec:\n  tasks:\n    - { name: a, agent: slow, message: sleep 3s }\n    - { name: b, agent: slow, message: sleep 4s }\n";
    create_workflow(&server.client, yaml).await;
    let api: Api<Workflow> = Api::namespaced(server.client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wf = api.get("edited").await.expect("get");
        if wf.status.as_ref().is_some_and(|s| s.tasks.iter().all(|t| t.phase == TaskPhase::Running)) {
            break;
        }
        assert!(Instant::now() < deadline, "the tasks never ran: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Re-applied without `a` (server-side apply, as `a2a apply` and `kubectl apply` do).
    let without_a: serde_json::Value =
        serde_yaml_ng::from_str(&yaml.replace("    - { name: a, agent: slow, message: sleep 3s }\n", ""))
            .expect("yaml");
    let refused = api
        .patch("edited", &PatchParams::apply("test").force(), &Patch::Apply(&without_a))
        .await
        .expect_err("the task list of a running workflow is fixed");
    let kube::Error::Api(status) = refused else { panic!("not an API error: {refused:?}") };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.tasks: Invalid value: field is immutable once the workflow has started"),
        "{}",
        status.message
    );
    let timeout = serde_json::json!({"spec": {"timeout": "10s", "params": {"x": "1"}}});
    let refused = api.patch("edited", &PatchParams::default(), &Patch::Merge(&timeout)).await.expect_err("refused");
    let kube::Error::Api(status) = refused else { panic!("not an API error: {refused:?}") };
    assert!(status.message.contains("spec.params:") && status.message.contains("spec.timeout:"), "{}", status.message);
    // What steers the run stays mutable.
    let steer = serde_json::json!({"spec": {"parallelism": 2, "activeDeadline": "1h", "priority": "high"}});
    api.patch("edited", &PatchParams::default(), &Patch::Merge(&steer))
        .await
        .expect("parallelism and friends may change");
    let wf = finished(&server.client, "edited", Duration::from_secs(30)).await;
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
    assert_eq!(output(&wf, "a"), "slept 3s");
    assert_eq!(output(&wf, "b"), "slept 4s");
}
