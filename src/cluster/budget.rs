//! ResourceBudgets on a cluster: their status (allocated from the admission decision, used
//! from metrics-server when the cluster serves `metrics.k8s.io`), and the opt-in
//! ResourceQuota per namespace that makes the API server hold every pod of a namespace to
//! the budgets its agents draw from.
//!
//! The quota mapping: budgets are cluster-scoped and may be shared by agents of several
//! namespaces, so a namespace's quota is the sum, over the distinct budgets its agents name,
//! of each budget's effective limit (its own, bounded by its ancestors'), as `limits.memory`
//! and `limits.cpu`. It is a ceiling per namespace, not a share: admission still decides
//! across namespaces; the quota adds what admission cannot, a bound on pods nobody asked
//! the operator about (a hand-scaled Deployment, a `kubectl run`). A resource any of those
//! budgets leaves unlimited is left out of the quota; a budget that admits no one (a missing
//! parent, a cycle, a CPU limit given as a share of the host) adds nothing to it. pids have
//! no quota resource.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::agent::{MANAGER, admission_input, holds_budget_finalizer, status_patch};
use super::workload::AGENT_LABEL;
use crate::api::common::{Condition, ConditionStatus, set_condition};
use crate::api::{API_VERSION, Agent, ResourceBudget, ResourceBudgetStatus};
use crate::controller::admission::{self, Amounts, Host, Verdict, cpu_millis};
use crate::controller::budget_chain;
use crate::controller::budget_status::{self, BudgetFacts, Use};

/// The name of the ResourceQuota the operator writes in a namespace.
pub const QUOTA_NAME: &str = "a2a-budgets";
/// The label that marks quotas the operator manages (and may delete).
pub const QUOTA_LABEL: &str = "a2a.dev/quota";
/// The annotation listing the budgets a quota was derived from.
pub const QUOTA_BUDGETS_ANNOTATION: &str = "a2a.dev/budgets";
/// The group version metrics-server serves.
pub const METRICS_API: &str = "metrics.k8s.io/v1beta1";

/// What a budget pass could not do, with the Kubernetes error under it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of ResourceBudget {budget:?}: {source}")]
    WriteStatus {
        budget: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying ResourceQuota {QUOTA_NAME} in namespace {namespace:?}: {source}")]
    ApplyQuota {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting ResourceQuota {name:?} in namespace {namespace:?}: {source}")]
    DeleteQuota {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A stable label for the errors metric: every variant is a Kubernetes API failure.
    pub fn metric_label(&self) -> &'static str {
        "kube"
    }
}

/// What the cluster could tell about measured use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measured {
    /// Pod metrics by agent, `(namespace, agent)`.
    Served(BTreeMap<(String, String), Amounts>),
    /// `metrics.k8s.io` is not served: metrics-server is not installed.
    NotServed,
    /// It is registered but did not answer (metrics-server down, or no permission).
    Unavailable(String),
}

/// Reads pod metrics of every agent pod, when metrics-server is there. Never fails: what
/// went wrong becomes the `Metrics` condition of every budget.
pub async fn measure(client: &kube::Client) -> Measured {
    match client.list_api_group_resources(METRICS_API).await {
        Ok(list) if list.resources.iter().any(|r| r.name == "pods") => {}
        Ok(_) => return Measured::NotServed,
        Err(kube::Error::Api(s)) if s.code == 404 => return Measured::NotServed,
        Err(e) => return Measured::Unavailable(format!("discovering {METRICS_API}: {e}")),
    }
    let resource = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: METRICS_API.into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = match api.list(&ListParams::default().labels(AGENT_LABEL)).await {
        Ok(l) => l,
        Err(e) => return Measured::Unavailable(format!("listing pod metrics: {e}")),
    };
    let mut by_agent: BTreeMap<(String, String), Amounts> = BTreeMap::new();
    for pod in list.items {
        let (Some(ns), Some(agent)) = (pod.namespace(), pod.labels().get(AGENT_LABEL).cloned()) else { continue };
        let mut sum = Amounts::default();
        for c in pod.data["containers"].as_array().into_iter().flatten() {
            let usage = &c["usage"];
            sum.memory = sum.memory.saturating_add(usage["memory"].as_str().and_then(|q| metric(q, 1)).unwrap_or(0));
            sum.cpu_millis =
                sum.cpu_millis.saturating_add(usage["cpu"].as_str().and_then(|q| metric(q, 1000)).unwrap_or(0));
        }
        let slot = by_agent.entry((ns, agent)).or_default();
        slot.memory = slot.memory.saturating_add(sum.memory);
        slot.cpu_millis = slot.cpu_millis.saturating_add(sum.cpu_millis);
    }
    Measured::Served(by_agent)
}

/// A quantity as metrics-server writes it (`1234567n`, `52412Ki`, `1.5`) in units of
/// `1/per` of the base unit (`per` 1000: millicores from cores), rounded up. `None` when it
/// is not a quantity or does not fit.
pub fn metric(text: &str, per: u128) -> Option<u64> {
    let t = text.trim();
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let digits: u128 = format!("{whole}{frac}").parse().ok()?;
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        _ => return None,
    };
    let top = digits.checked_mul(num)?.checked_mul(per)?;
    let bottom = scale.checked_mul(den)?;
    u64::try_from(top.div_ceil(bottom)).ok()
}

/// What the operator measured of each budget, as the shared core takes it: the pods'
/// memory and CPU from metrics-server, summed over the admitted agents of the budget and its
/// children (like `allocated`); nothing when metrics-server does not answer. pids are never
/// measured on a cluster (metrics-server does not report them).
pub fn measured_use(
    budgets: &[ResourceBudget],
    agents: &[Agent],
    decision: &admission::Decision,
    measured: &Measured,
) -> BTreeMap<String, Use> {
    let Measured::Served(by_agent) = measured else { return BTreeMap::new() };
    let by_name: BTreeMap<String, &ResourceBudget> = budgets.iter().map(|b| (b.name_any(), b)).collect();
    let mut used: BTreeMap<String, Use> =
        budgets.iter().map(|b| (b.name_any(), Use { memory: Some(0), cpu_millis: Some(0), pids: None })).collect();
    for a in agents.iter().filter(|a| a.spec.budget.is_some()) {
        let ns = a.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", a.name_any());
        if decision.verdicts.get(&key) != Some(&Verdict::Admitted) {
            continue;
        }
        let Some(u) = by_agent.get(&(ns, a.name_any())) else { continue };
        // A broken chain (a missing parent, a cycle) admits no one: nothing to count.
        for budget in budget_chain::chain(|n| by_name.get(n).copied(), a.spec.budget()).unwrap_or_default() {
            let slot = used.entry(budget.name_any()).or_default();
            slot.memory = Some(slot.memory.unwrap_or(0).saturating_add(u.memory));
            slot.cpu_millis = Some(slot.cpu_millis.unwrap_or(0).saturating_add(u.cpu_millis));
        }
    }
    used
}

/// Every budget's status: allocated and admitted agents from the admission decision, used
/// from `measured` (see [`measured_use`]), and `Pressure` and `AlertFiring` from the shared
/// core ([`budget_status::budget_status`]) as locally.
pub fn budget_statuses(
    budgets: &[ResourceBudget],
    agents: &[Agent],
    measured: &Measured,
) -> BTreeMap<String, ResourceBudgetStatus> {
    budget_statuses_and_alerts(budgets, agents, measured).into_iter().map(|(n, (s, _))| (n, s)).collect()
}

/// As [`budget_statuses`], with each budget's alerts as evaluated.
pub fn budget_statuses_and_alerts(
    budgets: &[ResourceBudget],
    agents: &[Agent],
    measured: &Measured,
) -> BTreeMap<String, (ResourceBudgetStatus, Vec<budget_status::AlertState>)> {
    let input = admission_input(budgets, agents);
    let decision = admission::decide(&input, u64::MAX);
    let used = measured_use(budgets, agents, &decision, measured);
    let metrics = match measured {
        Measured::Served(_) => {
            Condition::new("Metrics", true, "MetricsServer", "used is the pods' use as metrics-server measures it")
        }
        Measured::NotServed => Condition::new(
            "Metrics",
            false,
            "MetricsServerNotInstalled",
            format!("{METRICS_API} is not served: used is not measured; allocated is the sum of admitted limits"),
        ),
        Measured::Unavailable(why) => Condition::new(
            "Metrics",
            false,
            "MetricsUnavailable",
            format!("used is not measured ({why}); allocated is the sum of admitted limits"),
        ),
    };
    budgets
        .iter()
        .zip(&input.budgets)
        .map(|(budget, resolved)| {
            let name = budget.name_any();
            let mut status = budget.status.clone().unwrap_or_default();
            let pending = decision.pending.get(&name).cloned().unwrap_or_default();
            let summary = budget_status::budget_status(&BudgetFacts {
                limits: resolved.limits,
                allocated: decision.allocated.get(&name).copied().unwrap_or_default(),
                used: used.get(&name).copied().unwrap_or_default(),
                pending: pending.len(),
                alerts: &budget.spec.alerts,
            });
            crate::metrics::registry().budget(&name, crate::metrics::budget_series(&resolved.limits, &summary));
            status.allocated = Some(summary.allocated);
            status.used = summary.used;
            status.agents = decision.agents.get(&name).copied().unwrap_or(0);
            status.pending = pending;
            status.observed_generation = budget.meta().generation;
            for mut c in [metrics.clone(), summary.pressure, summary.alert_firing] {
                c.observed_generation = budget.meta().generation;
                set_condition(&mut status.conditions, c);
            }
            (name, (status, summary.alerts))
        })
        .collect()
}

/// The ResourceQuota each namespace should have (see the module docs for the mapping).
/// `scope` empty: every namespace; else only those.
pub fn desired_quotas(
    budgets: &[ResourceBudget],
    agents: &[Agent],
    scope: &[String],
) -> BTreeMap<String, ResourceQuota> {
    let by_name: BTreeMap<String, &ResourceBudget> = budgets.iter().map(|b| (b.name_any(), b)).collect();
    let mut drawn: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in agents {
        let Some(budget) = &a.spec.budget else { continue };
        let ns = a.namespace().unwrap_or_default();
        let live = a.meta().deletion_timestamp.is_none() || holds_budget_finalizer(a);
        if live && by_name.contains_key(budget) && (scope.is_empty() || scope.contains(&ns)) {
            drawn.entry(ns).or_default().insert(budget.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (ns, names) in drawn {
        // Per resource: Some(sum) while every budget bounds it.
        let mut memory = Some(0u64);
        let mut cpu = Some(0u64);
        let mut owners = Vec::new();
        for name in &names {
            let counted = |b: &ResourceBudget| {
                b.spec.limits.cpu.as_ref().is_none_or(|c| cpu_millis(c, Host::Cluster, "").is_ok())
            };
            let (mem, millis) = match budget_chain::chain(|n| by_name.get(n).copied(), name) {
                Ok(chain) if chain.iter().all(|b| counted(b)) => (
                    chain.iter().filter_map(|b| b.spec.limits.memory.as_ref().map(|m| m.value())).min(),
                    chain
                        .iter()
                        .filter_map(|b| b.spec.limits.cpu.as_ref().and_then(|c| cpu_millis(c, Host::Cluster, "").ok()))
                        .min(),
                ),
                // It admits no one (its chain is broken, or a limit is a share of the host):
                // it adds no room to the ceiling.
                _ => (Some(0), Some(0)),
            };
            memory = memory.zip(mem).map(|(s, m)| s.saturating_add(m));
            cpu = cpu.zip(millis).map(|(s, m)| s.saturating_add(m));
            let b = by_name[name];
            owners.push(OwnerReference {
                api_version: API_VERSION.to_owned(),
                kind: "ResourceBudget".to_owned(),
                name: name.clone(),
                uid: b.meta().uid.clone().unwrap_or_default(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            });
        }
        let mut hard = BTreeMap::new();
        if let Some(m) = memory {
            hard.insert("limits.memory".to_owned(), Quantity(m.to_string()));
        }
        if let Some(c) = cpu {
            hard.insert("limits.cpu".to_owned(), Quantity(format!("{c}m")));
        }
        if hard.is_empty() {
            continue;
        }
        let quota = ResourceQuota {
            metadata: ObjectMeta {
                name: Some(QUOTA_NAME.to_owned()),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/managed-by".to_owned(), "a2a-operator".to_owned()),
                    ("app.kubernetes.io/part-of".to_owned(), "a2a".to_owned()),
                    (QUOTA_LABEL.to_owned(), "budgets".to_owned()),
                ])),
                annotations: Some(BTreeMap::from([(
                    QUOTA_BUDGETS_ANNOTATION.to_owned(),
                    names.iter().cloned().collect::<Vec<_>>().join(","),
                )])),
                owner_references: Some(owners),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
            status: None,
        };
        out.insert(ns, quota);
    }
    out
}

/// What one pass does besides budget status.
#[derive(Clone, Default)]
pub struct SyncOptions {
    /// Write (and remove) the ResourceQuota per namespace.
    pub resource_quota: bool,
    /// The operator's watch scope; empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Publishes an Event on a budget whose `Metrics` or `AlertFiring` condition changes.
    pub recorder: Option<Recorder>,
    /// Sends alerts to their webhooks.
    pub notifier: Option<crate::controller::alert_notify::Notifier>,
}

/// Events for condition changes of a budget, so `kubectl describe rb` shows when and why:
/// the `Metrics` condition (a Warning when use stopped being measured), and `AlertFiring`
/// turning True (a Warning `AlertFiring`) or back (a Normal `AlertResolved`), as locally.
async fn publish_changes(recorder: &Recorder, budget: &ResourceBudget, new: &ResourceBudgetStatus) {
    let find = |s: &ResourceBudgetStatus, type_: &str| {
        s.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status, c.reason.clone(), c.message.clone()))
    };
    let old = |type_: &str| budget.status.as_ref().and_then(|s| find(s, type_));
    let mut events = Vec::new();
    if let Some((status, reason, message)) = find(new, "Metrics")
        && !old("Metrics").is_some_and(|(s, r, _)| s == status && r == reason)
    {
        let type_ = if status == ConditionStatus::True { EventType::Normal } else { EventType::Warning };
        events.push(Event { type_, reason, note: Some(message), action: "Measure".into(), secondary: None });
    }
    let firing = |c: Option<(ConditionStatus, String, String)>| c.is_some_and(|(s, ..)| s == ConditionStatus::True);
    let now = find(new, "AlertFiring");
    if firing(now.clone()) != firing(old("AlertFiring")) {
        let (type_, reason) = if firing(now.clone()) {
            (EventType::Warning, "AlertFiring")
        } else {
            (EventType::Normal, "AlertResolved")
        };
        let note = now.map(|(.., m)| m).unwrap_or_default();
        events.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Measure".into(),
            secondary: None,
        });
    }
    for ev in events {
        if let Err(e) = recorder.publish(&ev, &budget.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}

/// One pass: every budget's status (written only where it changed), then, when enabled, the
/// quotas: applied where wanted, deleted where the operator wrote one that is no longer.
pub async fn sync(client: &kube::Client, opts: &SyncOptions) -> Result<(), Error> {
    let budgets_api = Api::<ResourceBudget>::all(client.clone());
    let budgets = budgets_api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List { what: "ResourceBudgets", source })?
        .items;
    // The series of deleted budgets go.
    crate::metrics::registry().budgets_retain(&budgets.iter().map(|b| b.name_any()).collect());
    if budgets.is_empty() && !opts.resource_quota {
        return Ok(());
    }
    let agents = Api::<Agent>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List { what: "Agents", source })?
        .items;
    if !budgets.is_empty() {
        let measured = measure(client).await;
        let statuses = budget_statuses_and_alerts(&budgets, &agents, &measured);
        for budget in &budgets {
            let name = budget.name_any();
            let Some((new, alerts)) = statuses.get(&name) else { continue };
            if let Some(n) = &opts.notifier {
                n.observe(budget, alerts, budget.status.as_ref());
            }
            if budget.status.as_ref() == Some(new) {
                continue;
            }
            if let Some(recorder) = &opts.recorder {
                publish_changes(recorder, budget, new).await;
            }
            let patch = status_patch(budget.status.as_ref(), new);
            budgets_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::WriteStatus { budget: name.clone(), source })?;
        }
    }
    if opts.resource_quota {
        sync_quotas(client, &budgets, &agents, &opts.namespaces).await?;
    }
    Ok(())
}

async fn sync_quotas(
    client: &kube::Client,
    budgets: &[ResourceBudget],
    agents: &[Agent],
    scope: &[String],
) -> Result<(), Error> {
    let desired = desired_quotas(budgets, agents, scope);
    let apply = PatchParams::apply(MANAGER).force();
    for (ns, quota) in &desired {
        Api::<ResourceQuota>::namespaced(client.clone(), ns)
            .patch(QUOTA_NAME, &apply, &Patch::Apply(quota))
            .await
            .map_err(|source| Error::ApplyQuota { namespace: ns.clone(), source })?;
    }
    let lists: Vec<Api<ResourceQuota>> = if scope.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        scope.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    for api in lists {
        let listed = api
            .list(&ListParams::default().labels(QUOTA_LABEL))
            .await
            .map_err(|source| Error::List { what: "ResourceQuotas", source })?;
        for stale in listed.items {
            let Some(ns) = stale.namespace() else { continue };
            if desired.contains_key(&ns) {
                continue;
            }
            let name = stale.name_any();
            tracing::info!(namespace = %ns, quota = %name, "no agent there draws from a budget any more; removing its quota");
            match Api::<ResourceQuota>::namespaced(client.clone(), &ns).delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(Error::DeleteQuota { namespace: ns, name, source }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Budget status and quotas against a scripted API server (tower-test): the exact
    //! requests made and objects written, with and without metrics-server.
    use super::*;
    use crate::api::common::find_condition;
    use crate::cluster::testing::{answer, conditions, mock, not_found};
    use serde_json::{Value, json};

    fn agent(ns: &str, name: &str, budget: Option<&str>, memory: &str) -> Value {
        let mut a = json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": name, "namespace": ns, "uid": format!("u-{name}"), "creationTimestamp": "2026-11-24T00:00:00Z"},
            "spec": {"image": "x:1", "resources": {"limits": {"memory": memory}}}
        });
        if let Some(b) = budget {
            a["spec"]["budget"] = b.into();
        }
        a
    }

    fn budget(name: &str, limits: Value, parent: Option<&str>) -> Value {
        let mut b = json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget",
            "metadata": {"name": name, "uid": format!("b-{name}"), "generation": 3}, "spec": {"limits": limits}});
        if let Some(p) = parent {
            b["spec"]["parent"] = p.into();
        }
        b
    }

    fn typed<T: serde::de::DeserializeOwned>(v: Vec<Value>) -> Vec<T> {
        v.into_iter().map(|x| serde_json::from_value(x).expect("object")).collect()
    }

    fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
    }

    #[test]
    fn metric_quantities_parse_as_metrics_server_writes_them() {
        assert_eq!(metric("123456789n", 1000), Some(124), "cpu rounds up to the next millicore");
        assert_eq!(metric("250m", 1000), Some(250));
        assert_eq!(metric("1.5", 1000), Some(1500));
        assert_eq!(metric("52412Ki", 1), Some(52412 * 1024));
        assert_eq!(metric("100Mi", 1), Some(100 << 20));
        assert_eq!(metric("12u", 1000), Some(1));
        assert_eq!(metric("0", 1), Some(0));
        for bad in ["", "x", "12Zi", "-5", "1.2.3", "."] {
            assert_eq!(metric(bad, 1), None, "{bad:?}");
        }
    }

    #[test]
    fn a_namespace_quota_sums_the_budgets_its_agents_draw_from() {
        let budgets: Vec<ResourceBudget> = typed(vec![
            budget("org", json!({"memory": "4Gi", "cpu": "8"}), None),
            budget("team", json!({"memory": "8Gi", "cpu": "2"}), Some("org")),
            budget("memonly", json!({"memory": "1Gi"}), None),
        ]);
        let agents: Vec<Agent> = typed(vec![
            agent("team-a", "x", Some("team"), "1Gi"),
            agent("team-a", "y", Some("team"), "1Gi"),
            agent("team-b", "z", Some("memonly"), "256Mi"),
            agent("team-b", "z2", Some("team"), "256Mi"),
            agent("team-c", "w", None, "256Mi"),
            agent("team-d", "v", Some("missing"), "256Mi"),
        ]);
        let quotas = desired_quotas(&budgets, &agents, &[]);
        assert_eq!(quotas.keys().collect::<Vec<_>>(), ["team-a", "team-b"], "no budget drawn: no quota");
        pretty_assertions::assert_eq!(
            serde_json::to_value(&quotas["team-a"]).expect("json"),
            json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {
                    "name": "a2a-budgets", "namespace": "team-a",
                    "labels": {"a2a.dev/quota": "budgets", "app.kubernetes.io/managed-by": "a2a-operator", "app.kubernetes.io/part-of": "a2a"},
                    "annotations": {"a2a.dev/budgets": "team"},
                    "ownerReferences": [{"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "name": "team", "uid": "b-team",
                        "controller": false, "blockOwnerDeletion": false}]
                },
                // team's 8Gi is bounded by its parent org's 4Gi.
                "spec": {"hard": {"limits.cpu": "2000m", "limits.memory": "4294967296"}}
            })
        );
        let b = serde_json::to_value(&quotas["team-b"]).expect("json");
        assert_eq!(
            b["spec"]["hard"],
            json!({"limits.memory": "5368709120"}),
            "memonly leaves cpu unlimited: no cpu quota"
        );
        assert_eq!(b["metadata"]["annotations"]["a2a.dev/budgets"], "memonly,team");
        assert_eq!(b["metadata"]["ownerReferences"].as_array().map(Vec::len), Some(2));
        let scoped = desired_quotas(&budgets, &agents, &["team-b".to_owned()]);
        assert_eq!(scoped.keys().collect::<Vec<_>>(), ["team-b"], "only namespaces in the watch scope");
    }

    #[tokio::test]
    async fn with_metrics_server_used_is_measured_and_quotas_are_applied_and_pruned() {
        let (client, mut handle) = mock();
        let opts = SyncOptions { resource_quota: true, ..SyncOptions::default() };
        let task = tokio::spawn(async move { sync(&client, &opts).await });
        let team = budget("team", json!({"memory": "1Gi", "cpu": "1"}), None);
        answer(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/resourcebudgets",
            200,
            list("a2a.dev/v1alpha1", "ResourceBudgetList", vec![team.clone()]),
        )
        .await;
        let agents = vec![
            agent("team-a", "writer", Some("team"), "256Mi"),
            agent("team-a", "big", Some("team"), "2Gi"),
            agent("team-a", "free", None, "1Gi"),
        ];
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/agents", 200, list("a2a.dev/v1alpha1", "AgentList", agents))
            .await;
        answer(&mut handle, "GET", "/apis/metrics.k8s.io/v1beta1", 200, json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]})).await;
        let pod = |name: &str, agent: &str, cpu: &str, mem: &str| {
            json!({
            "metadata": {"name": name, "namespace": "team-a", "labels": {"a2a.dev/agent": agent}},
            "timestamp": "2026-11-24T06:00:00Z", "window": "15s",
            "containers": [{"name": "agent", "usage": {"cpu": cpu, "memory": mem}}]})
        };
        let (query, _) = answer(
            &mut handle,
            "GET",
            "/apis/metrics.k8s.io/v1beta1/pods",
            200,
            list(
                "metrics.k8s.io/v1beta1",
                "PodMetricsList",
                vec![
                    pod("writer-1", "writer", "120000000n", "100Mi"),
                    pod("writer-2", "writer", "5m", "28Mi"),
                    // Not admitted (does not fit): its pods, if any ran, are not the budget's.
                    pod("big-1", "big", "1", "1Gi"),
                    pod("free-1", "free", "1", "1Gi"),
                ],
            ),
        )
        .await;
        assert_eq!(query, "&labelSelector=a2a.dev%2Fagent");
        let (_, patch) =
            answer(&mut handle, "PATCH", "/apis/a2a.dev/v1alpha1/resourcebudgets/team/status", 200, team.clone()).await;
        let s = &patch["status"];
        assert_eq!(
            s["used"],
            json!({"memory": "128Mi", "memoryBytes": 134217728, "cpu": "125m", "cpuMillicores": 125})
        );
        assert_eq!(s["allocated"]["memory"], "256Mi");
        assert_eq!(s["agents"], 1);
        assert_eq!(s["pending"], json!(["team-a/big"]));
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["conditions"][0]["type"], "Metrics");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][0]["reason"], "MetricsServer");
        // The quota: applied by server-side apply, exactly as desired_quotas builds it.
        let (query, quota) = answer(
            &mut handle,
            "PATCH",
            "/api/v1/namespaces/team-a/resourcequotas/a2a-budgets",
            200,
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "a2a-budgets"}}),
        )
        .await;
        assert_eq!(query, "&force=true&fieldManager=a2a-operator");
        assert_eq!(quota["spec"]["hard"], json!({"limits.cpu": "1000m", "limits.memory": "1073741824"}));
        assert_eq!(quota["metadata"]["ownerReferences"][0]["uid"], "b-team");
        // One the operator wrote in a namespace that no longer draws from a budget: removed.
        let managed = |ns: &str| {
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "a2a-budgets", "namespace": ns, "labels": {"a2a.dev/quota": "budgets"}}})
        };
        let (query, _) = answer(
            &mut handle,
            "GET",
            "/api/v1/resourcequotas",
            200,
            list("v1", "ResourceQuotaList", vec![managed("team-a"), managed("gone")]),
        )
        .await;
        assert_eq!(query, "&labelSelector=a2a.dev%2Fquota");
        answer(
            &mut handle,
            "DELETE",
            "/api/v1/namespaces/gone/resourcequotas/a2a-budgets",
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )
        .await;
        task.await.expect("join").expect("synced");
        assert!(handle.next_request().await.is_none(), "nothing else");
    }

    #[tokio::test]
    async fn without_metrics_server_used_is_cleared_and_the_condition_says_so() {
        let (client, mut handle) = mock();
        let reporter = kube::runtime::events::Reporter { controller: "a2a-operator".into(), instance: None };
        let opts = SyncOptions { recorder: Some(Recorder::new(client.clone(), reporter)), ..SyncOptions::default() };
        let task = tokio::spawn(async move { sync(&client, &opts).await });
        // Measured before (metrics-server was uninstalled since).
        let mut team = budget("team", json!({"memory": "1Gi"}), None);
        team["status"] =
            json!({"used": {"memory": "128Mi", "memoryBytes": 134217728}, "agents": 2, "pending": ["team-a/x"]});
        answer(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/resourcebudgets",
            200,
            list("a2a.dev/v1alpha1", "ResourceBudgetList", vec![team.clone()]),
        )
        .await;
        answer(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/agents",
            200,
            list("a2a.dev/v1alpha1", "AgentList", vec![agent("team-a", "writer", Some("team"), "256Mi")]),
        )
        .await;
        answer(&mut handle, "GET", "/apis/metrics.k8s.io/v1beta1", 404, not_found()).await;
        // The change is told as a Warning Event on the budget.
        let (_, event) = answer(&mut handle, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", 201, json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": null
        }))
        .await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "MetricsServerNotInstalled");
        assert_eq!(event["regarding"]["kind"], "ResourceBudget");
        assert_eq!(event["regarding"]["name"], "team");
        let (_, patch) =
            answer(&mut handle, "PATCH", "/apis/a2a.dev/v1alpha1/resourcebudgets/team/status", 200, team).await;
        let s = patch["status"].as_object().expect("status");
        assert_eq!(s.get("used"), Some(&Value::Null), "a stale measurement is removed, not kept");
        assert_eq!(s.get("pending"), Some(&Value::Null), "nobody waits any more");
        assert_eq!(s["agents"], 1);
        assert_eq!(s["allocated"]["memory"], "256Mi");
        let c = &s["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str(), c["reason"].as_str()),
            (Some("Metrics"), Some("False"), Some("MetricsServerNotInstalled"))
        );
        assert_eq!(
            c["message"],
            "metrics.k8s.io/v1beta1 is not served: used is not measured; allocated is the sum of admitted limits"
        );
        task.await.expect("join").expect("synced");
        assert!(handle.next_request().await.is_none(), "no quota requests when the quota is off");
    }

    #[test]
    fn budget_status_says_why_used_is_missing_when_metrics_server_fails() {
        let budgets: Vec<ResourceBudget> = typed(vec![budget("team", json!({"memory": "1Gi"}), None)]);
        let agents: Vec<Agent> = typed(vec![agent("a", "x", Some("team"), "256Mi")]);
        let s = &budget_statuses(&budgets, &agents, &Measured::Unavailable("listing pod metrics: 503".into()))["team"];
        assert_eq!(s.used, None);
        assert_eq!(s.conditions[0].reason, "MetricsUnavailable");
        assert_eq!(
            s.conditions[0].message,
            "used is not measured (listing pod metrics: 503); allocated is the sum of admitted limits"
        );
    }

    #[tokio::test]
    async fn an_alert_crossed_by_measured_use_fires_on_a_cluster_with_an_event() {
        let (client, mut handle) = mock();
        let reporter = kube::runtime::events::Reporter { controller: "a2a-operator".into(), instance: None };
        let opts = SyncOptions { recorder: Some(Recorder::new(client.clone(), reporter)), ..SyncOptions::default() };
        let task = tokio::spawn(async move { sync(&client, &opts).await });
        let mut team = budget("team", json!({"memory": "1Gi", "cpu": "1"}), None);
        team["spec"]["alerts"] = json!([{"resource": "memory", "above": "90%"}, {"resource": "pids", "above": "50%"}]);
        // Measured before, below the threshold.
        team["status"] = json!({"conditions": [
            {"type": "Metrics", "status": "True", "reason": "MetricsServer", "message": "m", "lastTransitionTime": "2026-11-24T05:00:00Z"},
            {"type": "AlertFiring", "status": "False", "reason": "BelowThresholds", "message": "m", "lastTransitionTime": "2026-11-24T05:00:00Z"}]});
        answer(
            &mut handle,
            "GET",
            "/apis/a2a.dev/v1alpha1/resourcebudgets",
            200,
            list("a2a.dev/v1alpha1", "ResourceBudgetList", vec![team.clone()]),
        )
        .await;
        let agents = vec![agent("team-a", "writer", Some("team"), "1Gi")];
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/agents", 200, list("a2a.dev/v1alpha1", "AgentList", agents))
            .await;
        answer(&mut handle, "GET", "/apis/metrics.k8s.io/v1beta1", 200, json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]})).await;
        let pod = json!({"metadata": {"name": "writer-1", "namespace": "team-a", "labels": {"a2a.dev/agent": "writer"}},
            "timestamp": "2026-11-24T06:00:00Z", "window": "15s",
            "containers": [{"name": "agent", "usage": {"cpu": "10m", "memory": "950Mi"}}]});
        answer(
            &mut handle,
            "GET",
            "/apis/metrics.k8s.io/v1beta1/pods",
            200,
            list("metrics.k8s.io/v1beta1", "PodMetricsList", vec![pod]),
        )
        .await;
        let (_, event) = answer(&mut handle, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", 201, json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": null
        }))
        .await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("AlertFiring")));
        assert_eq!(event["note"], "memory above 90%");
        let (_, patch) =
            answer(&mut handle, "PATCH", "/apis/a2a.dev/v1alpha1/resourcebudgets/team/status", 200, team).await;
        let conditions: Vec<(&str, &str, &str)> = conditions(&patch["status"]);
        // pids have no limit here, so their alert does not apply; memory is at 93%.
        assert_eq!(
            conditions,
            [
                ("Metrics", "True", "MetricsServer"),
                ("AlertFiring", "True", "ThresholdCrossed"),
                ("Pressure", "True", "NearLimit")
            ]
        );
        assert_eq!(patch["status"]["used"]["memory"], "950Mi");
        task.await.expect("join").expect("synced");
        assert!(handle.next_request().await.is_none(), "nothing else");
    }

    /// A webhook receiver on loopback (a real HTTP server): answers its first POST 503 and the
    /// others 200, and hands over each body.
    async fn receiver() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Value>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, seen) = (tx.clone(), seen.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, seen) = (tx.clone(), seen.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                        *resp.status_mut() =
                            if first { http::StatusCode::SERVICE_UNAVAILABLE } else { http::StatusCode::OK };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (addr, rx)
    }

    /// One sync pass over `team` with the pod of its agent using `memory`, its Event and status
    /// write answered; the status written.
    async fn sync_once(opts: &SyncOptions, team: &Value, memory: &str) -> Value {
        let (client, mut handle) = mock();
        let opts = SyncOptions {
            recorder: Some(Recorder::new(
                client.clone(),
                kube::runtime::events::Reporter { controller: "a2a-operator".into(), instance: None },
            )),
            ..opts.clone()
        };
        let task = tokio::spawn(async move { sync(&client, &opts).await });
        let budgets = list("a2a.dev/v1alpha1", "ResourceBudgetList", vec![team.clone()]);
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/resourcebudgets", 200, budgets).await;
        let agents = vec![agent("team-a", "writer", Some("team"), "1Gi")];
        answer(&mut handle, "GET", "/apis/a2a.dev/v1alpha1/agents", 200, list("a2a.dev/v1alpha1", "AgentList", agents))
            .await;
        answer(&mut handle, "GET", "/apis/metrics.k8s.io/v1beta1", 200, json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]})).await;
        let pod = json!({"metadata": {"name": "writer-1", "namespace": "team-a", "labels": {"a2a.dev/agent": "writer"}},
            "timestamp": "2026-11-24T06:00:00Z", "window": "15s",
            "containers": [{"name": "agent", "usage": {"cpu": "10m", "memory": memory}}]});
        let pods = list("metrics.k8s.io/v1beta1", "PodMetricsList", vec![pod]);
        answer(&mut handle, "GET", "/apis/metrics.k8s.io/v1beta1/pods", 200, pods).await;
        answer(&mut handle, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", 201, json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "eventTime": null
        }))
        .await;
        let path = "/apis/a2a.dev/v1alpha1/resourcebudgets/team/status";
        let (_, patch) = answer(&mut handle, "PATCH", path, 200, team.clone()).await;
        task.await.expect("join").expect("synced");
        patch
    }

    /// The next body the receiver got.
    async fn next(got: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
        tokio::time::timeout(std::time::Duration::from_secs(20), got.recv())
            .await
            .expect("a POST within 20s")
            .expect("the receiver runs")
    }

    #[tokio::test]
    async fn on_a_cluster_an_alert_is_posted_to_its_webhook_retried_and_then_resolved() {
        let (addr, mut got) = receiver().await;
        let notifier =
            crate::controller::alert_notify::Notifier::new(mock().0, "https://grafana.example", "a2a-operator");
        let opts = SyncOptions { notifier: Some(notifier), ..SyncOptions::default() };
        let mut team = budget("team", json!({"memory": "1Gi", "cpu": "1"}), None);
        team["spec"]["alerts"] =
            json!([{"resource": "memory", "above": "90%", "notify": {"url": format!("http://{addr}/hook")}}]);
        // Measured before, below the threshold.
        team["status"] = json!({"conditions": [
            {"type": "Metrics", "status": "True", "reason": "MetricsServer", "message": "m", "lastTransitionTime": "2026-11-24T05:00:00Z"},
            {"type": "AlertFiring", "status": "False", "reason": "BelowThresholds", "message": "m", "lastTransitionTime": "2026-11-24T05:00:00Z"}]});

        let patch = sync_once(&opts, &team, "950Mi").await;
        assert!(conditions(&patch["status"]).contains(&("AlertFiring", "True", "ThresholdCrossed")));
        let (first, retried) = (next(&mut got).await, next(&mut got).await);
        assert_eq!(first, retried, "answered 503, the same payload is posted again");
        assert_eq!((first["version"].as_str(), first["status"].as_str()), (Some("4"), Some("firing")));
        assert_eq!(first["externalURL"], "https://grafana.example");
        let alert = &first["alerts"][0];
        assert_eq!(
            alert["labels"],
            json!({"alertname": "ResourceBudgetAlert", "budget": "team", "resource": "memory", "severity": "warning"})
        );
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

        // The next pass finds use back below the threshold, the stored status still firing.
        team["status"] = patch["status"].clone();
        let patch = sync_once(&opts, &team, "100Mi").await;
        assert!(conditions(&patch["status"]).contains(&("AlertFiring", "False", "BelowThresholds")));
        let resolved = next(&mut got).await;
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"], "the same alert");
        assert_eq!(resolved["alerts"][0]["startsAt"], alert["startsAt"]);
        assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), got.recv()).await.is_err(),
            "one notification per change"
        );
    }

    #[test]
    fn without_measured_use_an_alert_is_unknown_and_pressure_rests_on_waiting_agents() {
        let mut team = budget("team", json!({"memory": "1Gi"}), None);
        team["spec"]["alerts"] = json!([{"resource": "memory", "above": "90%"}]);
        let budgets: Vec<ResourceBudget> = typed(vec![team]);
        let agents: Vec<Agent> =
            typed(vec![agent("a", "x", Some("team"), "768Mi"), agent("a", "y", Some("team"), "512Mi")]);
        let s = &budget_statuses(&budgets, &agents, &Measured::NotServed)["team"];
        let c = |t: &str| find_condition(&s.conditions, t).map(|c| (c.status, c.reason.as_str(), c.message.as_str()));
        assert_eq!(
            c("AlertFiring"),
            Some((
                ConditionStatus::Unknown,
                "UseNotMeasured",
                "memory use is not measured: its alert cannot be evaluated"
            ))
        );
        assert_eq!(c("Pressure"), Some((ConditionStatus::True, "NearLimit", "1 agent(s) waiting for room")));
    }

    #[test]
    fn a_budget_that_admits_no_one_adds_nothing_to_a_namespace_quota() {
        let budgets: Vec<ResourceBudget> = typed(vec![
            budget("team", json!({"memory": "1Gi", "cpu": "1"}), None),
            budget("orphan", json!({"memory": "4Gi", "cpu": "4"}), Some("gone")),
            budget("share", json!({"memory": "4Gi", "cpu": "50%"}), None),
        ]);
        let agents: Vec<Agent> = typed(vec![
            agent("ns", "a", Some("team"), "256Mi"),
            agent("ns", "b", Some("orphan"), "256Mi"),
            agent("ns", "c", Some("share"), "256Mi"),
        ]);
        let q = serde_json::to_value(&desired_quotas(&budgets, &agents, &[])["ns"]).expect("json");
        assert_eq!(q["spec"]["hard"], json!({"limits.cpu": "1000m", "limits.memory": "1073741824"}));
        assert_eq!(q["metadata"]["annotations"]["a2a.dev/budgets"], "orphan,share,team");
    }
}
