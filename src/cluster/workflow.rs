//! The Workflow finalizer: a Workflow deleted while its tasks run must not leave them running
//! on the agents. The workflow engine cancels the attempts it is following when it sees the
//! deletion, but a deletion that happens while no operator leads (a handover, a crash) is
//! never seen by a watch. So an unfinished Workflow carries [`CANCEL_FINALIZER`]; when it is
//! deleted, every task its status shows Running with an A2A task id gets `CancelTask` on its
//! agent's endpoints, and only then is the finalizer removed. A finished Workflow has nothing
//! to cancel and carries no finalizer, so deleting it (by hand or `ttlAfterFinished`) never
//! waits for the operator.
//!
//! Limits: an attempt whose `SendMessage` was in flight at deletion has no task id in status
//! yet; the engine cancels those it holds when the deletion reaches it.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::finalizer;
use crate::a2a;
use crate::api::workflow::{TaskPhase, WorkflowPhase};
use crate::api::{Agent, Workflow};

/// The finalizer on unfinished Workflows.
pub const CANCEL_FINALIZER: &str = "a2a.dev/cancel-tasks";
/// How long one `CancelTask` may take.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Workflow reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// Running tasks could not be cancelled: the finalizer stays, and the reconcile retries.
    #[error("{0}")]
    Cancel(String),
}

impl Error {
    /// A stable label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::Cancel(_) => "a2a_cancel",
        }
    }
}

/// What the Workflow reconciler needs.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Option<Recorder>,
}

fn finished(w: &Workflow) -> bool {
    w.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal)
}

/// Keeps the finalizer on unfinished Workflows; on deletion cancels their running tasks.
pub async fn reconcile(w: Arc<Workflow>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = w.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), &ns);
    let holds = finalizer::has(&*w, CANCEL_FINALIZER);
    if w.meta().deletion_timestamp.is_none() {
        match (finished(&w), holds) {
            (false, false) => finalizer::add(&api, &*w, CANCEL_FINALIZER).await?,
            (true, true) => finalizer::remove(&api, &*w, CANCEL_FINALIZER).await?,
            _ => {}
        }
        return Ok(Action::await_change());
    }
    if !holds {
        return Ok(Action::await_change());
    }
    let (cancelled, failures) = cancel_running(&ctx.client, &w).await?;
    if !failures.is_empty() {
        let message = format!("could not cancel {} running task(s): {}", failures.len(), failures.join("; "));
        publish(&ctx, &w, EventType::Warning, "CancelFailed", &message).await;
        return Err(Error::Cancel(message));
    }
    if cancelled > 0 {
        let message = format!("cancelled {cancelled} running task(s) on their agents before deletion");
        publish(&ctx, &w, EventType::Normal, "TasksCancelled", &message).await;
    }
    finalizer::remove(&api, &*w, CANCEL_FINALIZER).await?;
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, w: &Workflow, type_: EventType, reason: &str, note: &str) {
    let Some(recorder) = &ctx.recorder else { return };
    let ev = Event { type_, reason: reason.into(), note: Some(note.into()), action: "Delete".into(), secondary: None };
    if let Err(e) = recorder.publish(&ev, &w.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

/// Sends `CancelTask` for every Running task with an A2A task id, and every task that waits
/// for input on its agent: (cancelled, failures).
/// A task its agent no longer knows, or that already ended, needs nothing; an agent that
/// is gone or has no endpoint took its tasks with it.
pub async fn cancel_running(client: &kube::Client, w: &Workflow) -> Result<(usize, Vec<String>), Error> {
    let ns = w.namespace().unwrap_or_default();
    // A big workflow's tasks are kept beside it (ConfigMaps it owns, still there while its
    // finalizer holds it).
    let mut filled;
    let w = if w.status.as_ref().is_some_and(|s| s.task_status_ref.is_some() && s.tasks.is_empty()) {
        filled = w.clone();
        crate::controller::offload::fill(client, &mut filled).await.map_err(|e| Error::Cancel(e.to_string()))?;
        &filled
    } else {
        w
    };
    let agents: Api<Agent> = Api::namespaced(client.clone(), &ns);
    // A task sent as a blocking SendMessage is named by its context until it answers.
    let running: Vec<(String, String, bool)> = w
        .status
        .iter()
        .flat_map(|s| s.tasks.iter())
        .filter(|t| t.phase == TaskPhase::Running || t.phase.is_waiting())
        .filter_map(|t| {
            let agent = t.agent.clone()?;
            match (&t.a2a_task_id, &t.a2a_context_id) {
                (Some(id), _) => Some((agent, id.clone(), false)),
                (None, Some(context)) if t.phase == TaskPhase::Running => Some((agent, context.clone(), true)),
                _ => None,
            }
        })
        .collect();
    let (mut cancelled, mut failures) = (0, Vec::new());
    for (agent, id, by_context) in running {
        let Some(a) = agents.get_opt(&agent).await? else { continue };
        // As the engine does (the options carry it): an agent the operator runs through its
        // Service, whatever host its card advertises; a `url` agent where its card says.
        let endpoints = a.status.clone().map(|s| s.endpoints).unwrap_or_default();
        let mut last_error = None;
        let mut done = false;
        let options = match crate::controller::credentials::client_options(client, &a).await {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("task {id} on agent {agent}: {e}"));
                continue;
            }
        };
        for url in &endpoints {
            let result = match a2a::Client::with_options(url, options.clone()) {
                Ok(c) => tokio::time::timeout(CANCEL_TIMEOUT, cancel_on(&c, &id, by_context)).await.map_err(|_| None),
                Err(e) => Err(Some(e)),
            };
            match result {
                Ok(Ok(_)) => {
                    cancelled += 1;
                    done = true;
                }
                Ok(Err(e)) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotCancelable) => done = true,
                // Another replica may hold it.
                Ok(Err(e)) if e.rpc_code() == Some(a2a::types::ErrorCode::TaskNotFound) => continue,
                Ok(Err(e)) | Err(Some(e)) => last_error = Some(format!("task {id} on agent {agent}: {e}")),
                Err(None) => {
                    last_error =
                        Some(format!("task {id} on agent {agent} at {url}: no answer within {CANCEL_TIMEOUT:?}"))
                }
            }
            if done {
                break;
            }
        }
        if !done && let Some(e) = last_error {
            failures.push(e);
        }
    }
    Ok((cancelled, failures))
}

/// `CancelTask` for the task `id`, or (`by_context`) for the task of context `id`, found with
/// `ListTasks`; none there is `TaskNotFound` (another replica may hold it).
async fn cancel_on(c: &a2a::Client, id: &str, by_context: bool) -> a2a::client::Result<a2a::types::Task> {
    if !by_context {
        return c.cancel_task(id).await;
    }
    match c.find_task_by_context(id).await? {
        Some(task) => c.cancel_task(&task.id).await,
        None => Err(a2a::client::Error::Rpc {
            method: a2a::types::method::LIST_TASKS.to_owned(),
            url: c.base_url().to_owned(),
            error: a2a::types::RpcError::new(a2a::types::ErrorCode::TaskNotFound, format!("no task of context {id}")),
        }),
    }
}

/// Requeue after an error.
pub fn error_policy(_w: Arc<Workflow>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, label = error.metric_label(), "workflow reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    //! The finalizer against a scripted Kubernetes API (tower-test) and a real A2A agent (the
    //! demo agent's server on a local port) whose running task must end up canceled.
    use super::*;
    use crate::a2a::types::{Message, Part, Role, SendMessageConfiguration, SendMessageResponse, TaskState};
    use crate::cluster::testing::{answer, mock, not_found};
    use serde_json::{Value, json};

    /// A demo agent on a free local port: its URL and a stopper.
    async fn demo_agent() -> (String, tokio::sync::oneshot::Sender<()>) {
        demo_agent_with(a2a::server::DemoAgentConfig::default()).await
    }

    async fn demo_agent_with(config: a2a::server::DemoAgentConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(a2a::server::serve(listener, config, async move {
            let _ = rx.await;
        }));
        (url, tx)
    }

    fn workflow(finalizers: &[&str], deleting: bool, tasks: Value, phase: &str) -> Workflow {
        let mut w = json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "report", "namespace": "team", "uid": "w-1", "finalizers": finalizers},
            "spec": {"tasks": [{"name": "draft", "agent": "writer", "message": "sleep 30s"}]},
            "status": {"phase": phase, "tasks": tasks}
        });
        if deleting {
            w["metadata"]["deletionTimestamp"] = "2026-11-24T06:00:00Z".into();
        }
        serde_json::from_value(w).expect("workflow")
    }

    /// The namespace's agent token key, read to derive the agent's token (none yet here).
    const TOKEN_SECRET: &str = "/api/v1/namespaces/team/secrets/a2a-agent-token-key";

    fn agent(endpoints: &[&str]) -> Value {
        json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "writer", "namespace": "team"}, "spec": {"image": "x:1"},
            "status": {"endpoints": endpoints}})
    }

    #[tokio::test]
    async fn deleting_a_running_workflow_cancels_its_tasks_on_the_agent_then_lets_it_go() {
        let (url, stop) = demo_agent().await;
        let (other, stop_other) = demo_agent().await;
        let a2a_client = a2a::Client::new(&url).expect("client");
        let sent = a2a_client
            .send_message(
                Message::new(Role::User, "m-1", vec![Part::text("sleep 30s")]),
                Some(SendMessageConfiguration { return_immediately: true, ..Default::default() }),
            )
            .await
            .expect("sent");
        let SendMessageResponse::Task(task) = sent else { panic!("the demo agent answers with a task") };
        assert!(!task.status.state.is_terminal(), "{:?}", task.status.state);

        let w = workflow(
            &["a2a.dev/cancel-tasks"],
            true,
            json!([
                {"name": "draft", "phase": "Running", "attempts": 1, "agent": "writer", "a2aTaskId": task.id},
                {"name": "review", "phase": "Running", "attempts": 1, "agent": "ghost", "a2aTaskId": "t-9"},
                {"name": "done", "phase": "Succeeded", "attempts": 1, "agent": "writer", "a2aTaskId": "t-0"}
            ]),
            "Running",
        );
        let (client, mut handle) = mock();
        let ctx = Arc::new(Context { client, recorder: None });
        let run = tokio::spawn(reconcile(Arc::new(w.clone()), ctx));
        // The replica that does not know the task first: the next one is asked.
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer", 200, agent(&[&other, &url]))
            .await;
        // The agent's token, presented when it has one (this demo agent requires none).
        answer(&mut handle, "GET", TOKEN_SECRET, 404, not_found()).await;
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/ghost", 404, not_found()).await;
        let (_, patch) = answer(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/workflows/report",
            200,
            serde_json::to_value(&w).expect("json"),
        )
        .await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "a2a.dev/cancel-tasks"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        assert_eq!(run.await.expect("join").expect("reconcile"), Action::await_change());
        let after = a2a_client.get_task(&task.id).await.expect("get");
        assert_eq!(after.status.state, TaskState::Canceled, "the agent's task was cancelled");
        let _ = (stop.send(()), stop_other.send(()));
    }

    #[tokio::test]
    async fn cancel_reaches_an_agent_through_its_service_whatever_host_its_card_advertises() {
        // The agent advertises an address of its own (its pod's, say) that reaches nothing
        // from here; only its Service's address does.
        let config = a2a::server::DemoAgentConfig {
            advertise_url: Some("http://127.0.0.1:1/".into()),
            bindings: vec![a2a::server::Binding::HttpJson, a2a::server::Binding::Jsonrpc],
            ..Default::default()
        };
        let (url, stop) = demo_agent_with(config).await;
        let service = a2a::Client::through(&url).expect("client");
        let sent = service
            .send_message(
                Message::new(Role::User, "m-1", vec![Part::text("sleep 30s")]),
                Some(SendMessageConfiguration { return_immediately: true, ..Default::default() }),
            )
            .await
            .expect("sent through the Service's address");
        let SendMessageResponse::Task(task) = sent else { panic!("the demo agent answers with a task") };
        assert_eq!(service.transport().await.expect("transport").binding(), "HTTP+JSON", "the card's choice");
        let by_card = a2a::Client::new(&url).expect("client");
        assert!(by_card.get_task(&task.id).await.is_err(), "the card's own host is unreachable from here");

        let w = workflow(
            &["a2a.dev/cancel-tasks"],
            true,
            json!([{"name": "draft", "phase": "Running", "attempts": 1, "agent": "writer", "a2aTaskId": task.id}]),
            "Running",
        );
        let (client, mut handle) = mock();
        let ctx = Arc::new(Context { client, recorder: None });
        let run = tokio::spawn(reconcile(Arc::new(w.clone()), ctx));
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer", 200, agent(&[&url])).await;
        answer(&mut handle, "GET", TOKEN_SECRET, 404, not_found()).await;
        answer(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/workflows/report",
            200,
            serde_json::to_value(&w).expect("json"),
        )
        .await;
        assert_eq!(run.await.expect("join").expect("reconcile"), Action::await_change());
        let after = service.get_task(&task.id).await.expect("get");
        assert_eq!(after.status.state, TaskState::Canceled, "the agent's task was cancelled through its Service");
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn an_unreachable_agent_keeps_the_finalizer_and_says_why() {
        let w = workflow(
            &["a2a.dev/cancel-tasks"],
            true,
            json!([{"name": "draft", "phase": "Running", "attempts": 1, "agent": "writer", "a2aTaskId": "t-1"}]),
            "Running",
        );
        let (client, mut handle) = mock();
        let ctx = Arc::new(Context { client, recorder: None });
        let run = tokio::spawn(reconcile(Arc::new(w), ctx));
        answer(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer",
            200,
            agent(&["http://127.0.0.1:1/"]),
        )
        .await;
        answer(&mut handle, "GET", TOKEN_SECRET, 404, not_found()).await;
        let e = run.await.expect("join").expect_err("not cancelled");
        assert!(e.to_string().starts_with("could not cancel 1 running task(s): task t-1 on agent writer"), "{e}");
        assert_eq!(e.metric_label(), "a2a_cancel");
        assert!(handle.next_request().await.is_none(), "the finalizer stays");
    }

    #[tokio::test]
    async fn unfinished_workflows_get_the_finalizer_and_finished_ones_drop_it() {
        let (client, mut handle) = mock();
        let ctx = Arc::new(Context { client, recorder: None });
        let w = workflow(&["example.com/keep"], false, json!([]), "Running");
        let run = tokio::spawn(reconcile(Arc::new(w.clone()), ctx.clone()));
        let (_, patch) = answer(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/workflows/report",
            200,
            serde_json::to_value(&w).expect("json"),
        )
        .await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["example.com/keep"]},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "a2a.dev/cancel-tasks"},
            ])
        );
        run.await.expect("join").expect("reconcile");
        let w = workflow(&["example.com/keep", "a2a.dev/cancel-tasks"], false, json!([]), "Succeeded");
        let run = tokio::spawn(reconcile(Arc::new(w.clone()), ctx.clone()));
        let (_, patch) = answer(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/workflows/report",
            200,
            serde_json::to_value(&w).expect("json"),
        )
        .await;
        assert_eq!(patch[1], json!({"op": "remove", "path": "/metadata/finalizers/1"}));
        run.await.expect("join").expect("reconcile");
        // Deleted without our finalizer (finished, or from before the operator ran): nothing to do.
        let w = workflow(&[], true, json!([]), "Succeeded");
        assert_eq!(reconcile(Arc::new(w), ctx).await.expect("reconcile"), Action::await_change());
        assert!(handle.next_request().await.is_none());
    }
}
