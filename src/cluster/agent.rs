//! The cluster's Agent reconciler: admission against ResourceBudgets, then a Deployment and a
//! Service by server-side apply, then status from the Deployment and its pods (through the
//! shared core, [`crate::controller::status`]).

use crate::controller::credentials;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;

use super::finalizer;
use super::workload::{AGENT_LABEL, WorkloadConfig, workload};
use crate::api::agent::{AgentStatus, TerminationReason};
use crate::api::common::{ConditionStatus, find_condition};
use crate::api::{Agent, ResourceBudget};
use crate::controller::admission::{self, Asking, Host, Verdict};

mod refs;
mod status;
pub use refs::{config_checksum, referencing};
pub use status::{agent_facts, desired_status};

/// The field manager the operator applies with.
pub const MANAGER: &str = "a2a-operator";

/// The finalizer on Agents that draw from a ResourceBudget. Their Deployment and Service need
/// none (owner references hand them to the garbage collector), but their share of the budget
/// does: it is released only once the agent's pods are gone, and the agents waiting for that
/// room are then reconciled at once, even when the deletion happened while no operator ran.
pub const BUDGET_FINALIZER: &str = "a2a.dev/budget-release";

/// How often a deleting agent checks whether its pods are gone.
pub const RELEASE_POLL: Duration = Duration::from_secs(2);

/// Why an Agent reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error(transparent)]
    Token(#[from] credentials::Error),
}

impl Error {
    /// A stable label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::Token(e) => e.metric_label(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub config: WorkloadConfig,
    pub recorder: Option<Recorder>,
    /// Agents to reconcile now (pending agents a release let in), one sender per controller.
    pub wake: Vec<UnboundedSender<ObjectRef<Agent>>>,
}

/// Whether `agent` carries [`BUDGET_FINALIZER`].
pub fn holds_budget_finalizer(agent: &Agent) -> bool {
    finalizer::has(agent, BUDGET_FINALIZER)
}

fn was_admitted(agent: &Agent) -> bool {
    agent
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Admitted"))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// Admission input from the API objects, through the core's one translation
/// ([`admission::input`] with [`Host::Cluster`]: no host memory reserve applies, since the
/// scheduler places pods, and CPU given as a share of the host cannot be counted). A deleting
/// agent keeps its room until its pods are gone (its finalizer is removed then).
pub fn admission_input(budgets: &[ResourceBudget], agents: &[Agent]) -> admission::Input {
    let asking = agents
        .iter()
        .filter(|a| {
            a.spec.budget.is_some()
                && (a.meta().deletion_timestamp.is_none() || (holds_budget_finalizer(a) && was_admitted(a)))
        })
        .map(|a| Asking { agent: a, admitted: was_admitted(a) });
    admission::input(budgets, asking, Host::Cluster)
}

/// A merge patch that turns `old` status into `new`: what `new` leaves out (an emptied list,
/// a zero, a None) is sent as null so the stored status drops it instead of keeping it.
pub fn status_patch<T: serde::Serialize>(old: Option<&T>, new: &T) -> serde_json::Value {
    fn nulls(old: &serde_json::Value, new: &mut serde_json::Value) {
        let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) else { return };
        for (k, v) in old {
            match new.get_mut(k) {
                None => {
                    new.insert(k.clone(), serde_json::Value::Null);
                }
                Some(n) => nulls(v, n),
            }
        }
    }
    let mut value = serde_json::to_value(new).unwrap_or_default();
    if let Some(old) = old.and_then(|o| serde_json::to_value(o).ok()) {
        nulls(&old, &mut value);
    }
    serde_json::json!({ "status": value })
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
    let key = format!("{}/{}", agent.namespace().unwrap_or_default(), agent.name_any());
    let decision = admission::decide(&admission_input(&budgets, &agents), u64::MAX);
    Ok(decision.verdicts.get(&key).cloned().unwrap_or(Verdict::Admitted))
}

/// Reconciles one Agent.
pub async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action> {
    let ns = agent.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = agent.name_any();
    let agents: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
    if agent.meta().deletion_timestamp.is_some() {
        crate::metrics::registry().agent_gone(&ns, &name);
        // The Deployment and Service carry owner references: the garbage collector removes
        // them. Only a budget share needs work before the Agent may go.
        if holds_budget_finalizer(&agent) {
            return release(&agent, &ctx).await;
        }
        return Ok(Action::await_change());
    }
    match (agent.spec.budget.is_some(), holds_budget_finalizer(&agent)) {
        (true, false) => finalizer::add(&agents, &*agent, BUDGET_FINALIZER).await?,
        // The budget was taken out of the spec: the next admission pass already leaves it out.
        (false, true) => finalizer::remove(&agents, &*agent, BUDGET_FINALIZER).await?,
        _ => {}
    }
    let verdict = verdict_for(&agent, &ctx.client).await?;
    let admitted = matches!(verdict, Verdict::Admitted);
    let mut built = workload(&agent, admitted, &ctx.config);
    if let Ok(w) = &mut built {
        super::workload::set_config_checksum(&mut w.deployment, config_checksum(&ctx.client, &ns, &agent.spec).await?);
    }
    let apply = PatchParams::apply(MANAGER).force();
    let (deploy_status, pods) = match &built {
        Ok(w) => {
            // The pods read the agent's token from its Secret (see `workload`): it exists first.
            if admitted && credentials::has_token(&agent) {
                credentials::ensure_token(&ctx.client, &agent).await?;
            }
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
    crate::metrics::registry().agent_status(
        &ns,
        &name,
        status.replicas,
        status.ready_replicas,
        u64::from(status.restarts),
    );
    if let Some(u) = &status.usage {
        crate::metrics::registry().agent_memory(&ns, &name, u.memory_bytes);
    }
    if agent.status.as_ref() != Some(&status) {
        publish_transitions(&ctx, &agent, &status).await;
        let patch = status_patch(agent.status.as_ref(), &status);
        agents.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The budget finalizer's cleanup: scale the agent's Deployment to 0, wait until its pods are
/// gone (they still use the budget while they terminate), then let go of the Agent and
/// reconcile at once the agents that now fit.
async fn release(agent: &Agent, ctx: &Context) -> Result<Action> {
    let ns = agent.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = agent.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let scale = serde_json::json!({ "spec": { "replicas": 0 } });
    match deployments.patch(&name, &PatchParams::default(), &Patch::Merge(&scale)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let left = pods.list(&ListParams::default().labels(&label_selector(&name))).await?.items.len();
    if left > 0 {
        tracing::debug!(agent = %name, pods = left, "waiting for the pods to go before releasing the budget share");
        return Ok(Action::requeue(RELEASE_POLL));
    }
    // Who fits once this agent is gone: decided now, so they need not wait for a resync.
    let budgets = Api::<ResourceBudget>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let mut all = Api::<Agent>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let me = agent.meta().uid.clone();
    all.retain(|a| a.meta().uid != me);
    let decision = admission::decide(&admission_input(&budgets, &all), u64::MAX);
    let let_in: Vec<&Agent> = all
        .iter()
        .filter(|a| a.meta().deletion_timestamp.is_none() && !was_admitted(a))
        .filter(|a| {
            let key = format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any());
            matches!(decision.verdicts.get(&key), Some(Verdict::Admitted))
        })
        .collect();
    finalizer::remove(&Api::<Agent>::namespaced(ctx.client.clone(), &ns), agent, BUDGET_FINALIZER).await?;
    if let Some(recorder) = &ctx.recorder {
        let ev = Event {
            type_: EventType::Normal,
            reason: "BudgetReleased".into(),
            note: Some(format!("released its share of ResourceBudget {:?}", agent.spec.budget())),
            action: "Delete".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &agent.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    for a in let_in {
        tracing::info!(agent = %a.name_any(), released_by = %name, "room freed in the budget; admitting");
        for tx in &ctx.wake {
            let _ = tx.send(ObjectRef::from_obj(a));
        }
    }
    Ok(Action::await_change())
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

#[cfg(test)]
mod tests {
    //! Reconcile scenarios against a scripted API server (tower-test), asserting the exact
    //! requests the operator makes and the objects it writes.
    use super::*;
    use crate::api::Condition;
    use crate::cluster::testing::{Handle, answer, conditions, mock};
    use http::Response;
    use kube::client::Body;

    fn agent(spec: &str) -> Agent {
        let text = format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: writer, namespace: team, uid: u-1, generation: 2 }}\nspec:\n{spec}"
        );
        match crate::api::validate::validate(&serde_yaml_ng::from_str(&text).expect("yaml")) {
            Ok(crate::api::Object::Agent(a)) => a,
            other => panic!("invalid agent: {other:?}"),
        }
    }

    /// Answers the next request with 200 after checking its method, path and query,
    /// returning its body.
    async fn expect(
        handle: &mut Handle,
        method: &str,
        path_and_query: &str,
        reply: serde_json::Value,
    ) -> serde_json::Value {
        answer(handle, method, path_and_query, 200, reply).await.1
    }

    const TOKEN_SECRET: &str = "/api/v1/namespaces/team/secrets/writer-a2a-token";
    const KEY_SECRET: &str = "/api/v1/namespaces/team/secrets/a2a-agent-token-key";
    const KEY: [u8; credentials::KEY_BYTES] = [7; credentials::KEY_BYTES];

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The token of `writer` (uid `u-1`) derived from `key`.
    fn derived(key: &[u8]) -> String {
        credentials::AgentTokenKey::from_data("team", Some(key)).expect("key").token("team", "writer", "u-1")
    }

    fn token_secret(value: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "writer-a2a-token", "namespace": "team", "uid": "s-1",
                "ownerReferences": [{"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "name": "writer", "uid": "u-1"}]},
            "data": {"token": b64(value.as_bytes())}})
    }

    /// Answers the read of the namespace's token key and of the agent's token Secret, which
    /// holds the token derived from that key already.
    async fn expect_token(handle: &mut Handle) {
        let key = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a2a-agent-token-key", "namespace": "team", "uid": "k-1"},
            "type": "a2a.dev/agent-token-key", "data": {"key": b64(&KEY)}});
        expect(handle, "GET", KEY_SECRET, key).await;
        expect(handle, "GET", TOKEN_SECRET, token_secret(&derived(&KEY))).await;
    }

    fn context(client: kube::Client) -> Arc<Context> {
        Arc::new(Context { client, config: WorkloadConfig::default(), recorder: None, wake: Vec::new() })
    }

    #[tokio::test]
    async fn create_applies_deployment_and_service_then_mirrors_status() {
        let (client, mut handle) = mock();
        let a =
            agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n  resources: { limits: { memory: 256Mi, cpu: 500m } }\n");
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));

        // The namespace's token key is made on first need; the agent's token Secret, with the
        // token derived from it, comes before the Deployment (the pods read it), owned by the
        // Agent.
        let missing = serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404});
        answer(&mut handle, "GET", KEY_SECRET, 404, missing.clone()).await;
        let key = expect(
            &mut handle,
            "POST",
            "/api/v1/namespaces/team/secrets?",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a2a-agent-token-key"}}),
        )
        .await;
        assert_eq!(key["type"], "a2a.dev/agent-token-key");
        assert_eq!(key["metadata"]["name"], "a2a-agent-token-key");
        let key = {
            use base64::Engine as _;
            let text = key["data"]["key"].as_str().expect("the key");
            base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
        };
        assert_eq!(key.len(), 32, "32 random bytes");
        answer(&mut handle, "GET", TOKEN_SECRET, 404, missing).await;
        let created = expect(
            &mut handle,
            "POST",
            "/api/v1/namespaces/team/secrets?",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "writer-a2a-token"}}),
        )
        .await;
        assert_eq!(created["type"], "a2a.dev/agent-token");
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(created["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(created["data"]["token"], b64(derived(&key).as_bytes()), "the token derived from the key");

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
        let env = &deploy["spec"]["template"]["spec"]["containers"][0]["env"];
        let token = env.as_array().and_then(|e| e.iter().find(|v| v["name"] == "A2A_AGENT_TOKEN")).expect("token env");
        assert_eq!(
            token["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "writer-a2a-token", "key": "token", "optional": false})
        );
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
        let conds: Vec<(&str, &str, &str)> = conditions(s);
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
        // First the finalizer that will hand its share back, guarded by a test of what was seen.
        let fin = expect(&mut handle, "PATCH", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer?", json(&a)).await;
        assert_eq!(
            fin,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["a2a.dev/budget-release"]},
            ])
        );
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
        assert_eq!(admitted["reason"], "ExceedsBudgetLimit");
        assert_eq!(admitted["message"], "needs 2Gi memory, more than budget \"small\"'s whole limit of 1Gi");
        assert_eq!(patch["status"]["phase"], "Pending");
        task.await.expect("join").expect("reconcile");
    }

    fn json(a: &Agent) -> serde_json::Value {
        serde_json::to_value(a).expect("json")
    }

    fn deployment_reply(status: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "writer", "namespace": "team"},
            "spec": {"selector": {}, "template": {}},
            "status": status
        })
    }

    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/team/deployments/writer?&force=true&fieldManager=a2a-operator";
    const SERVICE: &str = "/api/v1/namespaces/team/services/writer?&force=true&fieldManager=a2a-operator";
    const PODS: &str = "/api/v1/namespaces/team/pods?&labelSelector=a2a.dev%2Fagent%3Dwriter";
    #[tokio::test]
    async fn a_token_secret_that_does_not_hold_the_derived_token_is_deleted_and_made_again() {
        let a = agent("  image: ghcr.io/x/agent:1\n");
        let (client, mut handle) = mock();
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));
        let key = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a2a-agent-token-key", "namespace": "team", "uid": "k-2"},
            "type": "a2a.dev/agent-token-key", "data": {"key": b64(&KEY)}});
        expect(&mut handle, "GET", KEY_SECRET, key).await;
        // A random token an older version made (or one derived from a key since replaced).
        expect(&mut handle, "GET", TOKEN_SECRET, token_secret("an-older-random-token")).await;
        let (_, delete) = answer(
            &mut handle,
            "DELETE",
            TOKEN_SECRET,
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
        )
        .await;
        assert_eq!(delete["preconditions"]["uid"], "s-1", "only the Secret that was read");
        let created = expect(
            &mut handle,
            "POST",
            "/api/v1/namespaces/team/secrets?",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "writer-a2a-token"}}),
        )
        .await;
        assert_eq!(created["data"]["token"], b64(derived(&KEY).as_bytes()));
        expect(&mut handle, "PATCH", DEPLOYMENT, deployment_reply(serde_json::json!({}))).await;
        drop(handle);
        let _ = task.await;
    }

    const STATUS: &str = "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status?";
    const AGENT: &str = "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer?";

    /// One reconcile of an agent without a budget: (Deployment applied, Service applied,
    /// status patch or Null when none was written).
    async fn reconcile_unbudgeted(
        a: &Agent,
        deployment_status: serde_json::Value,
        pods: serde_json::Value,
    ) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
        let (client, mut handle) = mock();
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));
        expect_token(&mut handle).await;
        let deploy = expect(&mut handle, "PATCH", DEPLOYMENT, deployment_reply(deployment_status)).await;
        let svc = expect(
            &mut handle,
            "PATCH",
            SERVICE,
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "writer"}}),
        )
        .await;
        expect(
            &mut handle,
            "GET",
            PODS,
            serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
        )
        .await;
        let mut task = task;
        let status = tokio::select! {
            done = &mut task => {
                assert_eq!(done.expect("join").expect("reconcile"), Action::requeue(Duration::from_secs(300)));
                serde_json::Value::Null
            }
            patch = expect(&mut handle, "PATCH", STATUS, json(a)) => patch,
        };
        if !status.is_null() {
            assert_eq!(task.await.expect("join").expect("reconcile"), Action::requeue(Duration::from_secs(300)));
        }
        (deploy, svc, status)
    }

    fn built(a: &Agent) -> (serde_json::Value, serde_json::Value) {
        let w = workload(a, true, &WorkloadConfig::default()).expect("workload");
        (serde_json::to_value(&w.deployment).expect("json"), serde_json::to_value(&w.service).expect("json"))
    }

    #[tokio::test]
    async fn new_limits_are_applied_and_nothing_else_changes() {
        let before =
            agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n  resources: { limits: { memory: 256Mi, cpu: 500m } }\n");
        let mut after =
            agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n  resources: { limits: { memory: 1Gi, cpu: \"2\" } }\n");
        after.metadata.generation = Some(3);
        let (deploy, svc, _) = reconcile_unbudgeted(&after, serde_json::json!({}), serde_json::json!([])).await;
        let (mut expected, expected_svc) = built(&before);
        expected["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] =
            serde_json::json!({"cpu": "2", "memory": "1073741824"});
        pretty_assertions::assert_eq!(deploy, expected, "only the limits differ from the previous Deployment");
        pretty_assertions::assert_eq!(svc, expected_svc, "the Service is unchanged");
        assert_eq!(deploy["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(deploy["metadata"]["labels"]["app.kubernetes.io/instance"], "writer");
    }

    #[tokio::test]
    async fn scaling_changes_only_the_replicas_and_ready_follows_the_deployment() {
        let before = agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n");
        let after = agent("  image: ghcr.io/x/agent:1\n  replicas: 5\n");
        let (deploy, _, status) = reconcile_unbudgeted(
            &after,
            serde_json::json!({"replicas": 5, "readyReplicas": 5, "observedGeneration": 4}),
            serde_json::json!([]),
        )
        .await;
        let (mut expected, _) = built(&before);
        expected["spec"]["replicas"] = 5.into();
        pretty_assertions::assert_eq!(deploy, expected);
        assert_eq!(status["status"]["ready"], "5/5");
        assert_eq!(status["status"]["replicas"], 5);
        assert_eq!(status["status"]["phase"], "Running");
        assert_eq!(status["status"]["conditions"][1]["reason"], "AllReplicasReady");

        let mut to_zero = agent("  image: ghcr.io/x/agent:1\n  replicas: 0\n");
        to_zero.status = Some(serde_json::from_value(status["status"].clone()).expect("status"));
        assert_eq!(status["status"]["endpoints"][0], "http://writer.team.svc:8080/");
        let (deploy, _, status) = reconcile_unbudgeted(&to_zero, serde_json::json!({}), serde_json::json!([])).await;
        assert_eq!(deploy["spec"]["replicas"], 0);
        assert_eq!(status["status"]["phase"], "Stopped");
        // What is gone is written as null, so a merge patch removes it from the stored status.
        let written = status["status"].as_object().expect("status");
        for gone in ["readyReplicas", "replicas", "endpoints"] {
            assert_eq!(written.get(gone), Some(&serde_json::Value::Null), "{gone}");
        }
        assert_eq!(status["status"]["conditions"][1]["reason"], "ScaledToZero");
    }

    #[tokio::test]
    async fn a_stuck_rollout_is_mirrored_from_the_deployment_and_cleared_when_it_recovers() {
        let a = agent("  image: ghcr.io/x/agent:1\n  replicas: 2\n  resources: { limits: { memory: 256Mi } }\n");
        let (_, _, patch) = reconcile_unbudgeted(
            &a,
            serde_json::json!({"replicas": 0, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"writer-7d9\" has timed out progressing."},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods \"writer-7d9-x\" is forbidden: exceeded quota: a2a-budgets"}
            ]}),
            serde_json::json!([]),
        )
        .await;
        let s = &patch["status"];
        assert_eq!(s["phase"], "Starting");
        let conds: Vec<(String, String, String, String, i64)> = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                let f = |k: &str| c[k].as_str().unwrap_or("").to_owned();
                (f("type"), f("status"), f("reason"), f("message"), c["observedGeneration"].as_i64().unwrap_or(-1))
            })
            .collect();
        pretty_assertions::assert_eq!(
            conds,
            [
                ("Admitted".into(), "True".into(), "Admitted".into(), "fits in its budget".into(), 2),
                (
                    "Ready".into(),
                    "False".into(),
                    "FailedCreate".into(),
                    "0/2 replicas ready: pods \"writer-7d9-x\" is forbidden: exceeded quota: a2a-budgets".into(),
                    2
                ),
                (
                    "Progressing".into(),
                    "False".into(),
                    "ProgressDeadlineExceeded".into(),
                    "ReplicaSet \"writer-7d9\" has timed out progressing.".into(),
                    2
                ),
                (
                    "ReplicaFailure".into(),
                    "True".into(),
                    "FailedCreate".into(),
                    "pods \"writer-7d9-x\" is forbidden: exceeded quota: a2a-budgets".into(),
                    2
                ),
            ]
        );
        // The quota was raised: the Deployment recovers, and so does the Agent.
        let mut seen = a.clone();
        seen.status = Some(serde_json::from_value(s.clone()).expect("status"));
        let (_, _, patch) = reconcile_unbudgeted(
            &seen,
            serde_json::json!({"replicas": 2, "readyReplicas": 2, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "done"},
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "up"}
            ]}),
            serde_json::json!([{"metadata": {"name": "writer-1"}, "status": {"containerStatuses": [{
                "name": "agent", "image": "x", "imageID": "", "ready": true, "restartCount": 3,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-11-24T05:00:00Z"}}
            }]}}]),
        )
        .await;
        let s = &patch["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["readyReplicas"], 2);
        assert_eq!(s["restarts"], 3);
        assert_eq!(s["lastTermination"]["reason"], "OOMKilled");
        let types: Vec<&str> =
            s["conditions"].as_array().expect("conditions").iter().filter_map(|c| c["type"].as_str()).collect();
        assert_eq!(types, ["Admitted", "Ready", "Progressing"], "ReplicaFailure is gone with the failure");
        assert_eq!(s["conditions"][2]["status"], "True");
    }

    fn deleting(mut a: Agent, finalizers: &[&str]) -> Agent {
        a.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-11-24T06:00:00Z".parse().expect("time")));
        a.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        a
    }

    fn admitted(mut a: Agent, yes: bool) -> Agent {
        let mut st = AgentStatus::default();
        st.conditions.push(Condition::new("Admitted", yes, if yes { "Admitted" } else { "InsufficientQuota" }, ""));
        a.status = Some(st);
        a
    }

    #[tokio::test]
    async fn deleting_a_budgeted_agent_waits_for_its_pods_then_releases_its_share_and_lets_the_next_in() {
        let spec = "  image: x:1\n  budget: team\n  resources: { limits: { memory: 1Gi } }\n";
        let writer = admitted(deleting(agent(spec), &["example.com/other", BUDGET_FINALIZER]), true);
        let mut reader = admitted(agent(spec), false);
        reader.metadata.name = Some("reader".into());
        reader.metadata.uid = Some("u-2".into());
        let budget = serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget",
            "metadata": {"name": "team", "uid": "b-1"}, "spec": {"limits": {"memory": "1Gi"}}});
        let budgets = serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudgetList",
            "metadata": {}, "items": [budget.clone()]});
        // While it is deleting, it still holds its room: the next agent is not admitted yet.
        let input =
            admission_input(&[serde_json::from_value(budget).expect("budget")], &[writer.clone(), reader.clone()]);
        let decision = admission::decide(&input, u64::MAX);
        assert!(matches!(decision.verdicts["team/reader"], Verdict::Pending { .. }));

        let (tx, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let ctx = |client: kube::Client| {
            Arc::new(Context { client, config: WorkloadConfig::default(), recorder: None, wake: vec![tx.clone()] })
        };

        // Its pods are still terminating: scaled to 0, checked again soon, finalizer kept.
        let (client, mut handle) = mock();
        let task = tokio::spawn(reconcile(Arc::new(writer.clone()), ctx(client)));
        let scale = expect(
            &mut handle,
            "PATCH",
            "/apis/apps/v1/namespaces/team/deployments/writer?",
            deployment_reply(serde_json::json!({})),
        )
        .await;
        assert_eq!(scale, serde_json::json!({"spec": {"replicas": 0}}));
        expect(
            &mut handle,
            "GET",
            PODS,
            serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [{"metadata": {"name": "writer-1", "deletionTimestamp": "2026-11-24T06:00:01Z"}}]}),
        )
        .await;
        assert_eq!(task.await.expect("join").expect("reconcile"), Action::requeue(RELEASE_POLL));
        assert!(handle.next_request().await.is_none(), "nothing else was written");
        assert!(woken.try_recv().is_err());

        // The pods are gone: the finalizer (only ours, at its index, tested) is removed, and
        // the agent that now fits is reconciled at once.
        let (client, mut handle) = mock();
        let task = tokio::spawn(reconcile(Arc::new(writer.clone()), ctx(client)));
        expect(
            &mut handle,
            "PATCH",
            "/apis/apps/v1/namespaces/team/deployments/writer?",
            deployment_reply(serde_json::json!({})),
        )
        .await;
        expect(
            &mut handle,
            "GET",
            PODS,
            serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        )
        .await;
        expect(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/resourcebudgets?", budgets).await;
        expect(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/agents?",
            serde_json::json!({"apiVersion": "a2a.dev/v1alpha1",
            "kind": "AgentList", "metadata": {}, "items": [json(&writer), json(&reader)]}),
        )
        .await;
        let (request, send) = handle.next_request().await.expect("the finalizer removal");
        assert_eq!(
            (request.method().as_str(), request.uri().path_and_query().map(|p| p.as_str())),
            ("PATCH", Some(AGENT))
        );
        assert_eq!(request.headers()["content-type"], "application/json-patch+json");
        let body: serde_json::Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.expect("body")).expect("json");
        assert_eq!(
            body,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": "a2a.dev/budget-release"},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        send.send_response(
            Response::builder().body(Body::from(serde_json::to_vec(&json(&writer)).expect("json"))).expect("response"),
        );
        assert_eq!(task.await.expect("join").expect("reconcile"), Action::await_change());
        let next = woken.try_recv().expect("the pending agent is woken");
        assert_eq!((next.name.as_str(), next.namespace.as_deref()), ("reader", Some("team")));
        assert!(woken.try_recv().is_err());
    }

    #[tokio::test]
    async fn deleting_an_agent_without_a_budget_leaves_its_objects_to_the_garbage_collector() {
        let (client, mut handle) = mock();
        let a = deleting(agent("  image: x:1\n"), &[]);
        let action = reconcile(Arc::new(a), context(client)).await.expect("reconcile");
        assert_eq!(action, Action::await_change());
        assert!(handle.next_request().await.is_none(), "no request: owner references cascade");
        // What the garbage collector follows: a controller owner reference to the Agent's uid.
        let (d, s) = built(&agent("  image: x:1\n"));
        for o in [d, s] {
            assert_eq!(
                o["metadata"]["ownerReferences"],
                serde_json::json!([{"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "name": "writer", "uid": "u-1",
                    "controller": true, "blockOwnerDeletion": true}])
            );
        }
    }

    #[tokio::test]
    async fn an_agent_whose_budget_was_removed_drops_the_finalizer() {
        let mut a = agent("  image: x:1\n");
        a.metadata.finalizers = Some(vec![BUDGET_FINALIZER.to_owned()]);
        let (client, mut handle) = mock();
        let task = tokio::spawn(reconcile(Arc::new(a.clone()), context(client)));
        let body = expect(&mut handle, "PATCH", AGENT, json(&a)).await;
        assert_eq!(
            body,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "a2a.dev/budget-release"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        expect_token(&mut handle).await;
        expect(&mut handle, "PATCH", DEPLOYMENT, deployment_reply(serde_json::json!({}))).await;
        drop(handle);
        let _ = task.await;
    }
}
