//! The cluster's Agent reconciler: admission against ResourceBudgets, then a Deployment and a
//! Service by server-side apply, then status mirrored from the Deployment and its pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::workload::{AGENT_LABEL, WorkloadConfig, WorkloadError, service_url, workload};
use crate::api::agent::{AgentPhase, AgentStatus, Termination, TerminationReason};
use crate::api::common::{ConditionStatus, Time, find_condition, set_condition};
use crate::api::quantity::CpuAmount;
use crate::api::{Agent, Condition, ResourceBudget};
use crate::controller::admission::{self, Candidate, Verdict};

/// The field manager the operator applies with.
pub const MANAGER: &str = "a2a-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A stable label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub config: WorkloadConfig,
    pub recorder: Option<Recorder>,
}

/// Admission input from the API objects (cluster: no host memory reserve applies, since the
/// scheduler places pods; budgets are quotas).
pub fn admission_input(budgets: &[ResourceBudget], agents: &[Agent]) -> (Vec<admission::Budget>, Vec<Candidate>) {
    let budgets = budgets
        .iter()
        .map(|b| admission::Budget {
            name: b.name_any(),
            parent: b.spec.parent.clone(),
            limits: admission::Limits {
                memory: b.spec.limits.memory.as_ref().map(|m| m.value()),
                cpu_millis: match b.spec.limits.cpu.as_ref().map(|c| c.value()) {
                    Some(CpuAmount::Millicores(m)) => Some(m),
                    _ => None,
                },
                pids: b.spec.limits.pids.as_ref().map(|p| p.value()),
            },
            reserve: None,
        })
        .collect();
    let candidates = agents
        .iter()
        .filter(|a| a.spec.budget.is_some() && a.meta().deletion_timestamp.is_none())
        .map(|a| Candidate {
            key: format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()),
            budget: a.spec.budget().to_owned(),
            priority: a.spec.priority(),
            created: a.meta().creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
            demand: admission::demand(a, None),
            admitted: a
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Admitted"))
                .is_some_and(|c| c.status == ConditionStatus::True),
        })
        .collect();
    (budgets, candidates)
}

/// The status an Agent should have, from what was decided and what the cluster reports.
pub fn desired_status(
    agent: &Agent,
    verdict: &Verdict,
    workload: Result<(), &WorkloadError>,
    deployment: Option<&DeploymentStatus>,
    pods: &[Pod],
) -> AgentStatus {
    let mut status = agent.status.clone().unwrap_or_default();
    let generation = agent.meta().generation;
    let desired = agent.spec.replicas();
    let mut admitted = match verdict {
        Verdict::Admitted => Condition::new("Admitted", true, "Admitted", "fits in its budget"),
        Verdict::Pending { reason, message } => Condition::new("Admitted", false, reason, message.clone()),
    };
    admitted.observed_generation = generation;
    set_condition(&mut status.conditions, admitted);
    let replicas = deployment.and_then(|d| d.replicas).unwrap_or(0).max(0) as u32;
    let ready = deployment.and_then(|d| d.ready_replicas).unwrap_or(0).max(0) as u32;
    status.replicas = replicas;
    status.ready_replicas = ready;
    status.ready = Some(format!("{ready}/{desired}"));
    let (phase, ready_cond) = match (workload, verdict) {
        (Err(e), _) => (AgentPhase::Failed, Condition::new("Ready", false, e.reason(), e.to_string())),
        (Ok(()), Verdict::Pending { .. }) => {
            (AgentPhase::Pending, Condition::new("Ready", false, "NotAdmitted", "waiting for room in its budget"))
        }
        (Ok(()), Verdict::Admitted) if desired == 0 => {
            (AgentPhase::Stopped, Condition::new("Ready", true, "ScaledToZero", "replicas is 0"))
        }
        (Ok(()), Verdict::Admitted) if ready >= desired => (
            AgentPhase::Running,
            Condition::new("Ready", true, "AllReplicasReady", format!("{ready}/{desired} replicas ready")),
        ),
        (Ok(()), Verdict::Admitted) if ready > 0 => (
            AgentPhase::Degraded,
            Condition::new("Ready", false, "ReplicasNotReady", format!("{ready}/{desired} replicas ready")),
        ),
        (Ok(()), Verdict::Admitted) => {
            (AgentPhase::Starting, Condition::new("Ready", false, "Starting", format!("0/{desired} replicas ready")))
        }
    };
    let mut ready_cond = ready_cond;
    ready_cond.observed_generation = generation;
    set_condition(&mut status.conditions, ready_cond);
    status.phase = Some(phase);
    status.endpoints = if ready > 0 { service_url(agent).into_iter().collect() } else { Vec::new() };
    // Restarts and the last termination come from the pods' container statuses.
    let mut restarts = 0u32;
    let mut last: Option<Termination> = None;
    for cs in pods.iter().filter_map(|p| p.status.as_ref()).flat_map(|s| s.container_statuses.iter().flatten()) {
        restarts = restarts.saturating_add(cs.restart_count.max(0) as u32);
        if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            let at = t.finished_at.as_ref().map_or_else(Time::now, |f| Time(f.0));
            let reason = match t.reason.as_deref() {
                Some("OOMKilled") => TerminationReason::OomKilled,
                _ if t.signal.is_some() => TerminationReason::Signaled,
                _ => TerminationReason::Exited,
            };
            if last.as_ref().is_none_or(|l| l.at < at) {
                last = Some(Termination { reason, exit_code: Some(t.exit_code), signal: t.signal, at });
            }
        }
    }
    status.restarts = restarts;
    if last.is_some() {
        status.last_termination = last;
    }
    status.observed_generation = generation;
    status
}

fn label_selector(name: &str) -> String {
    format!("{AGENT_LABEL}={name}")
}

/// Admission verdict for one agent: unbudgeted agents are admitted; others are decided
/// together with every agent sharing their budgets.
async fn verdict_for(agent: &Agent, client: &kube::Client) -> Result<Verdict> {
    if agent.spec.budget.is_none() {
        return Ok(Verdict::Admitted);
    }
    let budgets = Api::<ResourceBudget>::all(client.clone()).list(&ListParams::default()).await?.items;
    let agents = Api::<Agent>::all(client.clone()).list(&ListParams::default()).await?.items;
    let (b, c) = admission_input(&budgets, &agents);
    let key = format!("{}/{}", agent.namespace().unwrap_or_default(), agent.name_any());
    let decision = admission::admit(&b, &c, u64::MAX);
    Ok(decision.verdicts.get(&key).cloned().unwrap_or(Verdict::Admitted))
}

/// Reconciles one Agent.
pub async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action> {
    let ns = agent.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = agent.name_any();
    if agent.meta().deletion_timestamp.is_some() {
        // The Deployment and Service carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let verdict = verdict_for(&agent, &ctx.client).await?;
    let admitted = matches!(verdict, Verdict::Admitted);
    let built = workload(&agent, admitted, &ctx.config);
    let apply = PatchParams::apply(MANAGER).force();
    let (deploy_status, pods) = match &built {
        Ok(w) => {
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let d = deployments.patch(&name, &apply, &Patch::Apply(&w.deployment)).await?;
            let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            services.patch(&name, &apply, &Patch::Apply(&w.service)).await?;
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let pods = pods.list(&ListParams::default().labels(&label_selector(&name))).await?.items;
            (d.status, pods)
        }
        Err(_) => (None, Vec::new()),
    };
    let status = desired_status(&agent, &verdict, built.as_ref().map(|_| ()), deploy_status.as_ref(), &pods);
    if agent.status.as_ref() != Some(&status) {
        publish_transitions(&ctx, &agent, &status).await;
        let agents: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": status });
        agents.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Events for condition changes people care about: admission and readiness, OOM kills.
async fn publish_transitions(ctx: &Context, agent: &Agent, new: &AgentStatus) {
    let Some(recorder) = &ctx.recorder else { return };
    let old = agent.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    for type_ in ["Admitted", "Ready"] {
        let before = find_condition(&old.conditions, type_).map(|c| (c.status, c.reason.clone()));
        if let Some(c) = find_condition(&new.conditions, type_)
            && before != Some((c.status, c.reason.clone()))
        {
            let warning = c.status == ConditionStatus::False && c.reason != "Starting";
            events.push((
                if warning { EventType::Warning } else { EventType::Normal },
                c.reason.clone(),
                c.message.clone(),
            ));
        }
    }
    if new.last_termination != old.last_termination
        && let Some(t) = &new.last_termination
        && t.reason == TerminationReason::OomKilled
    {
        events.push((
            EventType::Warning,
            "OOMKilled".into(),
            "a replica was killed by the kernel for exceeding its memory limit".into(),
        ));
    }
    let reference = agent.object_ref(&());
    for (type_, reason, note) in events {
        let ev = Event { type_, reason, note: Some(note), action: "Reconcile".into(), secondary: None };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}

/// Requeue after an error, counting it.
pub fn error_policy(_agent: Arc<Agent>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, label = error.metric_label(), "agent reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Budget status on a cluster: allocated and admitted counts from the admission decision.
/// `used` needs metrics-server, which the operator does not query yet; the `Metrics`
/// condition says so instead of leaving `used` silently empty.
pub fn budget_statuses(
    budgets: &[ResourceBudget],
    agents: &[Agent],
) -> BTreeMap<String, crate::api::ResourceBudgetStatus> {
    let (b, c) = admission_input(budgets, agents);
    let decision = admission::admit(&b, &c, u64::MAX);
    budgets
        .iter()
        .map(|budget| {
            let name = budget.name_any();
            let mut status = budget.status.clone().unwrap_or_default();
            let a = decision.allocated.get(&name).copied().unwrap_or_default();
            status.allocated = Some(crate::api::budget::Amounts {
                memory: Some(crate::api::quantity::format_bytes(a.memory)),
                memory_bytes: a.memory,
                cpu: Some(crate::api::quantity::format_millicores(a.cpu_millis)),
                cpu_millicores: a.cpu_millis,
                pids: a.pids,
            });
            status.agents = decision.agents.get(&name).copied().unwrap_or(0);
            status.pending = decision.pending.get(&name).cloned().unwrap_or_default();
            status.observed_generation = budget.meta().generation;
            set_condition(
                &mut status.conditions,
                Condition::new(
                    "Metrics",
                    false,
                    "MetricsNotQueried",
                    "used is not measured on a cluster yet; allocated is the sum of admitted limits",
                ),
            );
            (name, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Reconcile scenarios against a scripted API server (tower-test), asserting the exact
    //! requests the operator makes and the objects it writes.
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    fn agent(spec: &str) -> Agent {
        let text = format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: writer, namespace: team, uid: u-1, generation: 2 }}\nspec:\n{spec}"
        );
        match crate::api::validate::validate(&serde_yaml_ng::from_str(&text).expect("yaml")) {
            Ok(crate::api::Object::Agent(a)) => a,
            other => panic!("invalid agent: {other:?}"),
        }
    }

    /// Answers the next request after checking its method and path, returning its body.
    async fn expect(
        handle: &mut Handle,
        method: &str,
        path_and_query: &str,
        reply: serde_json::Value,
    ) -> serde_json::Value {
        let (request, send) = handle.next_request().await.expect("the operator made no further request");
        assert_eq!(request.method().as_str(), method, "method of {}", request.uri());
        assert_eq!(request.uri().path_and_query().map(|p| p.as_str()), Some(path_and_query));
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body =
            if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("json body") };
        send.send_response(
            Response::builder().body(Body::from(serde_json::to_vec(&reply).expect("json"))).expect("response"),
        );
        body
    }

    fn context(client: kube::Client) -> Arc<Context> {
        Arc::new(Context { client, config: WorkloadConfig::default(), recorder: None })
    }

    #[tokio::test]
    async fn create_applies_deployment_and_service_then_mirrors_status() {
        let (client, mut handle) = mock();
        let a =
            agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n  resources: { limits: { memory: 256Mi, cpu: 500m } }\n");
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));

        let deploy = expect(
            &mut handle,
            "PATCH",
            "/apis/apps/v1/namespaces/team/deployments/writer?&force=true&fieldManager=a2a-operator",
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "writer", "namespace": "team"},
                "spec": {"selector": {}, "template": {}},
                "status": {"replicas": 2, "readyReplicas": 1}
            }),
        )
        .await;
        assert_eq!(deploy["kind"], "Deployment");
        assert_eq!(deploy["spec"]["replicas"], 2);
        assert_eq!(deploy["metadata"]["ownerReferences"][0]["name"], "writer");
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"], serde_json::json!({"cpu": "500m", "memory": "268435456"}));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/.well-known/agent-card.json");

        let svc = expect(
            &mut handle,
            "PATCH",
            "/api/v1/namespaces/team/services/writer?&force=true&fieldManager=a2a-operator",
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "writer", "namespace": "team"}}),
        )
        .await;
        assert_eq!(svc["spec"]["ports"][0]["port"], 8080);

        expect(
            &mut handle,
            "GET",
            "/api/v1/namespaces/team/pods?&labelSelector=a2a.dev%2Fagent%3Dwriter",
            serde_json::json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [{"metadata": {"name": "writer-1"}, "status": {"containerStatuses": [{
                    "name": "agent", "image": "x", "imageID": "", "ready": true, "restartCount": 1,
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-24T05:00:00Z"}}
                }]}}]
            }),
        )
        .await;

        let patch = expect(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "writer"}, "spec": {}}),
        )
        .await;
        let s = &patch["status"];
        assert_eq!(s["phase"], "Degraded");
        assert_eq!(s["ready"], "1/2");
        assert_eq!(s["readyReplicas"], 1);
        assert_eq!(s["restarts"], 1);
        assert_eq!(s["lastTermination"]["reason"], "OOMKilled");
        assert_eq!(s["lastTermination"]["exitCode"], 137);
        assert_eq!(s["endpoints"][0], "http://writer.team.svc:8080/");
        assert_eq!(s["observedGeneration"], 2);
        let conds: Vec<(&str, &str, &str)> = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or(""),
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(conds, [("Admitted", "True", "Admitted"), ("Ready", "False", "ReplicasNotReady")]);

        let action = task.await.expect("join").expect("reconcile");
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    }

    #[tokio::test]
    async fn an_agent_without_an_image_gets_ready_false_and_no_deployment() {
        let (client, mut handle) = mock();
        let a = agent("  command: [python3, agent.py]\n");
        let task = tokio::spawn(reconcile(Arc::new(a), context(client)));
        // The very next request is the status: nothing else was written.
        let patch = expect(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "writer"}, "spec": {}}),
        )
        .await;
        assert_eq!(patch["status"]["phase"], "Failed");
        let ready = &patch["status"]["conditions"][1];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "MissingImage");
        assert_eq!(
            ready["message"],
            "spec.image is required on a cluster (spec.command alone runs only in local mode)"
        );
        task.await.expect("join").expect("reconcile");
    }

    #[tokio::test]
    async fn an_agent_over_its_budget_gets_zero_replicas_and_admitted_false() {
        let (client, mut handle) = mock();
        let a = agent("  image: x:1\n  budget: small\n  replicas: 2\n  resources: { limits: { memory: 1Gi } }\n");
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));
        expect(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/resourcebudgets?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudgetList", "metadata": {}, "items": [
                {"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "small"}, "spec": {"limits": {"memory": "1Gi"}}}
            ]}),
        )
        .await;
        let mut listed = serde_json::to_value(&a).expect("json");
        listed["metadata"]["creationTimestamp"] = "2026-11-24T00:00:00Z".into();
        expect(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/agents?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "AgentList", "metadata": {}, "items": [listed]}),
        )
        .await;
        let deploy = expect(
            &mut handle,
            "PATCH",
            "/apis/apps/v1/namespaces/team/deployments/writer?&force=true&fieldManager=a2a-operator",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer"}, "spec": {"selector": {}, "template": {}}}),
        )
        .await;
        assert_eq!(deploy["spec"]["replicas"], 0, "not admitted: scaled to zero");
        expect(
            &mut handle,
            "PATCH",
            "/api/v1/namespaces/team/services/writer?&force=true&fieldManager=a2a-operator",
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "writer"}}),
        )
        .await;
        expect(
            &mut handle,
            "GET",
            "/api/v1/namespaces/team/pods?&labelSelector=a2a.dev%2Fagent%3Dwriter",
            serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        )
        .await;
        let patch = expect(
            &mut handle,
            "PATCH",
            "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "writer"}, "spec": {}}),
        )
        .await;
        let admitted = &patch["status"]["conditions"][0];
        assert_eq!(admitted["status"], "False");
        assert_eq!(admitted["reason"], "InsufficientQuota");
        assert_eq!(admitted["message"], "needs 2Gi memory but budget \"small\" has 1Gi of 1Gi left");
        assert_eq!(patch["status"]["phase"], "Pending");
        task.await.expect("join").expect("reconcile");
    }

    #[test]
    fn budget_status_on_a_cluster_counts_admitted_agents_and_says_used_is_not_measured() {
        let budget: ResourceBudget = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "team"},
            "spec": {"limits": {"memory": "1Gi"}}
        }))
        .expect("budget");
        let mut a = agent("  image: x:1\n  budget: team\n  resources: { limits: { memory: 256Mi } }\n");
        a.metadata.name = Some("a".into());
        let mut b = agent("  image: x:1\n  budget: team\n  resources: { limits: { memory: 1Gi } }\n");
        b.metadata.name = Some("b".into());
        let s = &budget_statuses(&[budget], &[a, b])["team"];
        assert_eq!(s.allocated.as_ref().and_then(|x| x.memory.as_deref()), Some("256Mi"));
        assert_eq!(s.agents, 1);
        assert_eq!(s.pending, ["team/b"]);
        assert_eq!(s.conditions[0].reason, "MetricsNotQueried");
    }
}
