//! The `a2a operator` run loop: leader election on a Lease, then — only while leading — the
//! Agent controller (Deployments + Services), budget status, and the workflow engine; plus
//! the HTTP side (`/healthz`, `/readyz`, `/metrics`) that runs on every replica.
//!
//! Leadership follows the client-go rules: a follower retries every `retry_period`; the
//! leader renews every `renew_deadline / 2` (and every `retry_period` after a failed try); a
//! leader that cannot renew within `renew_deadline`, or finds the lease taken, stops its
//! controllers and returns an error, so the process exits non-zero and its pod restarts as a
//! follower. On shutdown the leader stops its controllers and then releases the lease.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::agent::{self, Context};
use super::budget::{self, SyncOptions};
use super::lease::{LeaderElector, Round};
use super::workflow;
use super::workload::WorkloadConfig;
use crate::api::{Agent, ResourceBudget, Workflow};
use crate::controller::config_refs::SourceKind;
use crate::controller::engine::{Engine, EngineConfig};

/// The Lease the replicas compete for, in the operator's own namespace.
pub const LEASE_NAME: &str = "a2a-operator";
/// How often a cache's first full list is looked for (see [`mark_synced`]).
const SYNC_POLL: Duration = Duration::from_millis(100);
/// The controller name on Events and field managers.
pub const CONTROLLER_NAME: &str = "a2a-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "lost leadership: the lease was not renewed within the renew deadline ({0:?}); exiting so this replica restarts as a follower"
    )]
    LostLease(Duration),
    #[error("lost leadership: the lease is now held by {0:?}; exiting so this replica restarts as a follower")]
    TakenOver(String),
    #[error("{0}")]
    Config(String),
}

/// How the operator runs (the command line builds it).
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespaces to watch Agents and Workflows in; empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Where the Lease lives (the operator's own namespace).
    pub lease_namespace: String,
    /// Who this replica is on the Lease (its pod name).
    pub identity: String,
    /// false: lead at once (a single replica).
    pub leader_election: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    /// How often a follower tries, and a leader retries after a failed renewal.
    pub retry_period: Duration,
    /// How often budget status is recomputed when nothing triggers it sooner.
    pub budget_resync: Duration,
    /// Also write a ResourceQuota per namespace from the budgets ([`super::budget`]).
    pub resource_quota: bool,
    pub workload: WorkloadConfig,
    /// The URL alert notifications link to (their `externalURL`); empty: none.
    pub external_url: String,
}

impl OperatorConfig {
    /// Client-go's defaults for what the command line does not set.
    pub fn new(lease_namespace: &str, identity: &str) -> Self {
        OperatorConfig {
            namespaces: Vec::new(),
            lease_namespace: lease_namespace.to_owned(),
            identity: identity.to_owned(),
            leader_election: true,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            budget_resync: Duration::from_secs(30),
            resource_quota: false,
            workload: WorkloadConfig::default(),
            external_url: String::new(),
        }
    }

    /// Timing that cannot work is refused before anything starts.
    pub fn check(&self) -> Result<(), Error> {
        if self.lease_duration.is_zero() || self.renew_deadline.is_zero() || self.retry_period.is_zero() {
            return Err(Error::Config("--lease-duration and --renew-deadline must be longer than zero".to_owned()));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(Error::Config(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}), or a leader could lose the lease \
                 while still reconciling",
                self.renew_deadline, self.lease_duration
            )));
        }
        if self.leader_election && self.identity.is_empty() {
            return Err(Error::Config("leader election needs an identity: set POD_NAME".to_owned()));
        }
        if self.leader_election && self.lease_namespace.is_empty() {
            return Err(Error::Config("leader election needs a namespace for its Lease: set POD_NAMESPACE".to_owned()));
        }
        Ok(())
    }
}

/// This replica's part in the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// No round has finished yet.
    Electing,
    /// Another replica leads (empty when a race was just lost and the winner is unknown).
    Following {
        holder: String,
    },
    Leading,
    /// Controllers stopped: shutting down or leadership lost.
    Stopped,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    reconciliations: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str) {
        *lock(&self.reconciliations).entry(kind).or_default() += 1;
    }

    pub fn failed(&self, kind: &'static str, error: &'static str) {
        *lock(&self.errors).entry((kind, error)).or_default() += 1;
    }

    pub fn reconciliations(&self, kind: &str) -> u64 {
        lock(&self.reconciliations).get(kind).copied().unwrap_or(0)
    }
}

/// What the HTTP side reports, shared by the run loop and the server.
pub struct Status {
    role: Mutex<Role>,
    synced: AtomicBool,
    pub metrics: Metrics,
    engines: Mutex<Vec<Arc<Engine>>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            role: Mutex::new(Role::Electing),
            synced: AtomicBool::new(false),
            metrics: Metrics::default(),
            engines: Mutex::new(Vec::new()),
        }
    }
}

impl Status {
    pub fn role(&self) -> Role {
        lock(&self.role).clone()
    }

    fn set_role(&self, role: Role) {
        let mut r = lock(&self.role);
        if *r != role {
            tracing::info!(role = ?role, "leadership changed");
            *r = role;
        }
    }

    /// The leader's caches have their first full list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// `/readyz`: a follower is ready (it stands by), and so is the leader; the text says
    /// which, and whether the leader's caches have synced.
    pub fn readiness(&self) -> (bool, String) {
        match self.role() {
            Role::Electing => (false, "not ready: electing a leader".to_owned()),
            Role::Following { holder } if holder.is_empty() => (true, "ok: follower".to_owned()),
            Role::Following { holder } => (true, format!("ok: follower (leader: {holder})")),
            Role::Leading if self.synced() => (true, "ok: leader".to_owned()),
            Role::Leading => (false, "not ready: leader, caches syncing".to_owned()),
            Role::Stopped => (false, "not ready: stopping".to_owned()),
        }
    }

    /// `/metrics` in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP a2a_operator_reconciliations_total Reconciliations run, by kind.\n");
        out.push_str("# TYPE a2a_operator_reconciliations_total counter\n");
        {
            let mut counts = lock(&self.metrics.reconciliations).clone();
            for kind in ["Agent", "ResourceBudget", "Workflow"] {
                counts.entry(kind).or_default();
            }
            for (kind, n) in counts {
                let _ = writeln!(out, "a2a_operator_reconciliations_total{{kind=\"{kind}\"}} {n}");
            }
        }
        out.push_str("# HELP a2a_operator_reconcile_errors_total Reconciliations that failed, by kind and error.\n");
        out.push_str("# TYPE a2a_operator_reconcile_errors_total counter\n");
        for ((kind, error), n) in lock(&self.metrics.errors).iter() {
            let _ = writeln!(out, "a2a_operator_reconcile_errors_total{{kind=\"{kind}\",error=\"{error}\"}} {n}");
        }
        let leading = u8::from(self.role() == Role::Leading);
        out.push_str("# HELP a2a_operator_leader 1 when this replica holds the lease and reconciles.\n");
        out.push_str("# TYPE a2a_operator_leader gauge\n");
        let _ = writeln!(out, "a2a_operator_leader {leading}");
        out.push_str("# HELP a2a_operator_caches_synced 1 once the leader's watches have their first full list.\n");
        out.push_str("# TYPE a2a_operator_caches_synced gauge\n");
        let _ = writeln!(out, "a2a_operator_caches_synced {}", u8::from(self.synced()));
        let workflows: usize = lock(&self.engines).iter().map(|e| e.workflows().len()).sum();
        out.push_str("# HELP a2a_operator_workflows Workflows the engine tracks (leader only).\n");
        out.push_str("# TYPE a2a_operator_workflows gauge\n");
        let _ = writeln!(out, "a2a_operator_workflows {workflows}");
        crate::metrics::registry().render(&mut out);
        out
    }
}

/// The HTTP routes on the metrics port.
pub fn router(status: Arc<Status>) -> axum::Router {
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<Status>>| async move {
                let (ready, text) = s.readiness();
                let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, format!("{text}\n"))
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<Status>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.render_metrics())
                    .into_response()
            }),
        )
        .with_state(status)
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(status)).with_graceful_shutdown(shutdown).await
}

/// Runs until `shutdown` resolves (Ok, lease released) or leadership is lost (Err).
pub async fn run(
    client: kube::Client,
    config: OperatorConfig,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    config.check()?;
    let mut shutdown = std::pin::pin!(shutdown);
    if !config.leader_election {
        status.set_role(Role::Leading);
        let leading = Leading::start(&client, &config, &status);
        shutdown.await;
        status.set_role(Role::Stopped);
        leading.stop().await;
        return Ok(());
    }
    let elector = LeaderElector::new(
        Api::namespaced(client.clone(), &config.lease_namespace),
        LEASE_NAME,
        &config.identity,
        config.lease_duration,
    );
    // Follow until this replica wins a round.
    loop {
        let round = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = elector.try_acquire() => r,
        };
        match round {
            Ok(Round::Leading) => break,
            Ok(Round::Following { holder }) => status.set_role(Role::Following { holder }),
            Err(e) => tracing::warn!(error = %e, "leader election round failed; retrying"),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    tracing::info!(identity = %config.identity, "acquired the lease; starting controllers");
    status.set_role(Role::Leading);
    let leading = Leading::start(&client, &config, &status);
    let mut renewed = Instant::now();
    let mut wait = config.renew_deadline / 2;
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        let left = config.renew_deadline.saturating_sub(renewed.elapsed());
        let round = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            r = tokio::time::timeout(left, elector.try_acquire()) => r,
        };
        match round {
            Ok(Ok(Round::Leading)) => {
                renewed = Instant::now();
                wait = config.renew_deadline / 2;
                continue;
            }
            Ok(Ok(Round::Following { holder })) if !holder.is_empty() => break Err(Error::TakenOver(holder)),
            Ok(Ok(Round::Following { .. })) => tracing::warn!("lease renewal lost a write race; retrying"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if renewed.elapsed() >= config.renew_deadline {
            break Err(Error::LostLease(config.renew_deadline));
        }
        wait = config.retry_period.min(config.renew_deadline.saturating_sub(renewed.elapsed()));
    };
    status.set_role(Role::Stopped);
    leading.stop().await;
    if result.is_ok() {
        match elector.release().await {
            Ok(true) => tracing::info!("released the lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires on its own"),
        }
    }
    result
}

/// The controllers a leader runs, stopped together.
struct Leading {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx.clone();
    async move {
        // An error means the sender is gone: stop too.
        let _ = rx.wait_for(|s| *s).await;
    }
}

fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl Leading {
    fn start(client: &kube::Client, config: &OperatorConfig, status: &Arc<Status>) -> Leading {
        let (stop, rx) = watch::channel(false);
        let reporter = Reporter { controller: CONTROLLER_NAME.to_owned(), instance: Some(config.identity.clone()) };
        let budget_wake = Arc::new(Notify::new());
        let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
            vec![None]
        } else {
            config.namespaces.iter().cloned().map(Some).collect()
        };
        // One channel per controller for agents a budget release lets in (an agent another
        // scope's controller does not hold is ignored by it).
        let (wake, mut woken): (Vec<_>, Vec<_>) =
            scopes.iter().map(|_| tokio::sync::mpsc::unbounded_channel::<ObjectRef<Agent>>()).unzip();
        let recorder = Recorder::new(client.clone(), reporter);
        let ctx = Arc::new(Context {
            client: client.clone(),
            config: config.workload.clone(),
            recorder: Some(recorder.clone()),
            wake,
        });
        status.synced.store(false, Ordering::SeqCst);
        // Per scope, the Agent and the Workflow caches: ready once every one has its first list.
        let unsynced = Arc::new(AtomicUsize::new(scopes.len() * 2));
        let wctx = Arc::new(workflow::Context { client: client.clone(), recorder: Some(recorder.clone()) });
        let mut tasks = Vec::new();
        let mut engines = Vec::new();
        for scope in scopes {
            let ns = scope.as_deref();
            // A budget change can admit (or evict) agents anywhere: re-run them all.
            let budgets_changed = watcher(Api::<ResourceBudget>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .filter_map(|e| {
                    futures::future::ready(match e {
                        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(()),
                        Ok(_) => None,
                        Err(e) => {
                            tracing::warn!(error = %e, "budget watch failed; retrying");
                            None
                        }
                    })
                });
            let let_in =
                futures::stream::unfold(woken.remove(0), |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
            let controller = Controller::new(scoped::<Agent>(client, ns), watcher::Config::default());
            // A change of a referenced Secret or ConfigMap reconciles the Agents that use it
            // (their checksum changes and the pods roll); any other changes nothing.
            let (secrets_of, config_maps_of) = (controller.store(), controller.store());
            let controller = controller
                .owns(scoped::<Deployment>(client, ns), watcher::Config::default())
                .watches(
                    scoped::<k8s_openapi::api::core::v1::Secret>(client, ns),
                    watcher::Config::default(),
                    move |s| agent::referencing(&secrets_of, SourceKind::Secret, &s),
                )
                .watches(
                    scoped::<k8s_openapi::api::core::v1::ConfigMap>(client, ns),
                    // Not the workflow engine's task outputs, which no Agent references.
                    watcher::Config::default().labels("!a2a.dev/workflow"),
                    move |c| agent::referencing(&config_maps_of, SourceKind::ConfigMap, &c),
                )
                .reconcile_all_on(budgets_changed)
                .reconcile_on(let_in)
                .graceful_shutdown_on(stopped(&rx));
            tasks.push(tokio::spawn(mark_synced(controller.store(), status.clone(), unsynced.clone(), stopped(&rx))));
            let workflows = Controller::new(scoped::<Workflow>(client, ns), watcher::Config::default())
                .graceful_shutdown_on(stopped(&rx));
            tasks.push(tokio::spawn(mark_synced(workflows.store(), status.clone(), unsynced.clone(), stopped(&rx))));
            let (st, st2) = (status.clone(), status.clone());
            let workflow_reconciles = workflows.run(
                move |w: Arc<Workflow>, ctx: Arc<workflow::Context>| {
                    st.metrics.reconciled("Workflow");
                    workflow::reconcile(w, ctx)
                },
                move |w: Arc<Workflow>, error: &workflow::Error, ctx: Arc<workflow::Context>| {
                    st2.metrics.failed("Workflow", error.metric_label());
                    workflow::error_policy(w, error, ctx)
                },
                wctx.clone(),
            );
            tasks.push(tokio::spawn(workflow_reconciles.for_each(|_| futures::future::ready(()))));
            let (st, st2, wake) = (status.clone(), status.clone(), budget_wake.clone());
            let reconciles = controller.run(
                move |agent: Arc<Agent>, ctx: Arc<Context>| {
                    let (st, wake) = (st.clone(), wake.clone());
                    async move {
                        st.metrics.reconciled("Agent");
                        let budgeted = agent.spec.budget.is_some();
                        let result = agent::reconcile(agent, ctx).await;
                        if budgeted {
                            wake.notify_one();
                        }
                        result
                    }
                },
                move |agent: Arc<Agent>, error: &agent::Error, ctx: Arc<Context>| {
                    st2.metrics.failed("Agent", error.metric_label());
                    agent::error_policy(agent, error, ctx)
                },
                ctx.clone(),
            );
            tasks.push(tokio::spawn(reconciles.for_each(|_| futures::future::ready(()))));
            let engine =
                Engine::new(client.clone(), EngineConfig { namespace: scope.clone(), ..EngineConfig::default() });
            engines.push(engine.clone());
            tasks.push(tokio::spawn(engine.run(stopped(&rx))));
        }
        *lock(&status.engines) = engines;
        let sync = SyncOptions {
            resource_quota: config.resource_quota,
            namespaces: config.namespaces.clone(),
            recorder: Some(recorder),
            notifier: Some(crate::controller::alert_notify::Notifier::new(
                client.clone(),
                config.external_url.clone(),
                "a2a-operator",
            )),
        };
        tasks.push(tokio::spawn(budget_loop(
            client.clone(),
            sync,
            status.clone(),
            budget_wake,
            config.budget_resync,
            stopped(&rx),
        )));
        Leading { stop, tasks }
    }

    /// Stops every controller and waits for them (the engine writes what is dirty first).
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            if let Err(e) = t.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "a controller task panicked");
            }
        }
    }
}

/// Counts one cache as synced when its first full list is in; the last one makes the
/// leader ready.
///
/// `Store::wait_until_ready` is polled again on a short tick rather than awaited once: the
/// store's readiness is a oneshot receiver behind a mutex (kube-runtime's `DelayedInit`),
/// which keeps only the waker of the last task that polled it, and the controller's own
/// runner waits on the same store, so a single await here is never woken when the runner
/// polled after it. A fresh poll sees the value at once.
async fn mark_synced<K>(
    store: kube::runtime::reflector::Store<K>,
    status: Arc<Status>,
    left: Arc<AtomicUsize>,
    stop: impl Future<Output = ()>,
) where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            ready = tokio::time::timeout(SYNC_POLL, store.wait_until_ready()) => match ready {
                Ok(Ok(())) => break,
                // The writer is gone: the controller stopped.
                Ok(Err(_)) => return,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        }
    }
    if left.fetch_sub(1, Ordering::SeqCst) == 1 {
        status.synced.store(true, Ordering::SeqCst);
        tracing::info!("caches synced");
    }
}

/// Budget status: recomputed when an agent with a budget was reconciled (which includes every
/// budget change, since those re-run all agents) and every `resync`.
async fn budget_loop(
    client: kube::Client,
    sync: SyncOptions,
    status: Arc<Status>,
    wake: Arc<Notify>,
    resync: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match budget::sync(&client, &sync).await {
            Ok(()) => status.metrics.reconciled("ResourceBudget"),
            Err(e) => {
                status.metrics.failed("ResourceBudget", e.metric_label());
                tracing::warn!(error = %e, "budget status update failed");
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(resync) => {}
        }
        // Coalesce a burst of agent reconciles into one pass.
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The run loop against a scripted API server (tower-test) that answers by route and keeps
    //! the Lease it is given, recording every request: who asks for what, in which order.
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/a2a-system/leases";
    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/a2a-system/leases/a2a-operator";

    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        body: Value,
    }

    #[derive(Clone, Default)]
    struct Fake {
        seen: Arc<Mutex<Vec<Seen>>>,
        lease: Arc<Mutex<Option<Value>>>,
        /// Lease requests answer 500 while set.
        lease_down: Arc<AtomicBool>,
        /// While false, the first list of Agents is answered only once it turns true.
        lists_open: Arc<Option<watch::Sender<bool>>>,
    }

    impl Fake {
        fn seen(&self) -> Vec<Seen> {
            lock(&self.seen).clone()
        }

        async fn until(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) {
            for _ in 0..400 {
                if pred(&self.seen()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("timed out waiting for {what}; requests: {:#?}", self.seen());
        }
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
    }

    fn list(api_version: &str, kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
    }

    fn writer() -> Value {
        json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "writer", "namespace": "team", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
            "spec": {"image": "ghcr.io/x/agent:1"}
        })
    }

    fn lease_held_by(holder: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "a2a-operator", "namespace": "a2a-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": Timestamp::now().to_string(), "leaseTransitions": 0}
        })
    }

    use jiff::Timestamp;

    fn route(fake: &Fake, method: &str, path: &str, body: &Value, agents: &[Value]) -> (u16, Value) {
        if path.starts_with(LEASES) {
            if fake.lease_down.load(Ordering::SeqCst) {
                return (500, status(500, "InternalError"));
            }
            let mut lease = lock(&fake.lease);
            return match method {
                "GET" => lease.clone().map_or_else(|| (404, status(404, "NotFound")), |l| (200, l)),
                "POST" | "PUT" => {
                    let mut stored = body.clone();
                    let rv = lease
                        .as_ref()
                        .and_then(|l| l["metadata"]["resourceVersion"].as_str()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    stored["metadata"]["resourceVersion"] = (rv + 1).to_string().into();
                    *lease = Some(stored.clone());
                    (if method == "POST" { 201 } else { 200 }, stored)
                }
                _ => (405, status(405, "MethodNotAllowed")),
            };
        }
        match (method, path) {
            ("GET", "/apis/a2a.dev/v1alpha1/agents") => (200, list("a2a.dev/v1alpha1", "AgentList", agents.to_vec())),
            ("GET", "/apis/a2a.dev/v1alpha1/workflows") => (200, list("a2a.dev/v1alpha1", "WorkflowList", vec![])),
            ("GET", "/apis/a2a.dev/v1alpha1/resourcebudgets") => {
                (200, list("a2a.dev/v1alpha1", "ResourceBudgetList", vec![]))
            }
            ("GET", "/apis/apps/v1/deployments") => (200, list("apps/v1", "DeploymentList", vec![])),
            ("GET", "/api/v1/secrets") => (200, list("v1", "SecretList", vec![])),
            ("GET", "/api/v1/configmaps") => (200, list("v1", "ConfigMapList", vec![])),
            ("GET", "/api/v1/namespaces/team/pods") => (200, list("v1", "PodList", vec![])),
            ("PATCH", "/apis/apps/v1/namespaces/team/deployments/writer") => (
                200,
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer", "namespace": "team"}, "spec": {"selector": {}, "template": {}}}),
            ),
            ("PATCH", "/api/v1/namespaces/team/services/writer") => (
                200,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "writer", "namespace": "team"}}),
            ),
            ("PATCH", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status") => (200, writer()),
            ("POST", p) if p.ends_with("/events") => (201, body.clone()),
            ("POST", "/api/v1/namespaces/team/secrets") => (201, body.clone()),
            _ => (404, status(404, "NotFound")),
        }
    }

    /// A client whose API answers by [`route`]; watches are held open without events.
    fn scripted(agents: Vec<Value>, lease: Option<Value>) -> (kube::Client, Fake) {
        let fake = Fake::default();
        *lock(&fake.lease) = lease;
        (scripted_with(agents, fake.clone()), fake)
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, reply: &Value) {
        send.send_response(
            Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(reply).unwrap_or_default()))
                .expect("response"),
        );
    }

    /// The same, recording into (and keeping the lease of) `fake`.
    fn scripted_with(agents: Vec<Value>, fake: Fake) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let f = fake;
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().as_str().to_owned();
                let path = request.uri().path().to_owned();
                let watch = request.uri().query().is_some_and(|q| q.contains("watch=true"));
                let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                lock(&f.seen).push(Seen { method: method.clone(), path: path.clone(), body: body.clone() });
                if watch {
                    held.push(send);
                    continue;
                }
                let (code, reply) = route(&f, &method, &path, &body, &agents);
                if let Some(gate) = f.lists_open.as_ref()
                    && path == "/apis/a2a.dev/v1alpha1/agents"
                    && !*gate.borrow()
                {
                    let mut open = gate.subscribe();
                    tokio::spawn(async move {
                        let _ = open.wait_for(|o| *o).await;
                        respond(send, code, &reply);
                    });
                    continue;
                }
                respond(send, code, &reply);
            }
        });
        kube::Client::new(service, "default")
    }

    async fn until_role(status: &Status, role: Role) {
        for _ in 0..200 {
            if status.role() == role {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never became {role:?}; is {:?}", status.role());
    }

    async fn until_synced(status: &Status) {
        for _ in 0..200 {
            if status.synced() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the caches never synced");
    }

    fn config(identity: &str) -> OperatorConfig {
        let mut c = OperatorConfig::new("a2a-system", identity);
        c.retry_period = Duration::from_millis(100);
        c
    }

    type Running = (Arc<Status>, tokio::sync::oneshot::Sender<()>, JoinHandle<Result<(), Error>>);

    fn start(client: kube::Client, config: OperatorConfig) -> Running {
        let status = Arc::new(Status::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(client, config, status.clone(), async move {
            let _ = rx.await;
        }));
        (status, tx, task)
    }

    fn is_agent_request(s: &Seen) -> bool {
        s.path.contains("/agents") || s.path.contains("/deployments") || s.path.contains("/services")
    }

    #[tokio::test]
    async fn the_leader_takes_the_lease_then_reconciles_agents_and_reports_ready() {
        let (client, fake) = scripted(vec![writer()], None);
        let (status, stop, task) = start(client, config("pod-b"));
        fake.until("the Deployment apply", |s| {
            s.iter().any(|r| r.method == "PATCH" && r.path == "/apis/apps/v1/namespaces/team/deployments/writer")
        })
        .await;
        let seen = fake.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", LEASE), "first the lease is read");
        assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", LEASES), "then created, held");
        assert_eq!(seen[1].body["spec"]["holderIdentity"], "pod-b");
        assert_eq!(status.role(), Role::Leading);
        assert!(status.metrics.reconciliations("Agent") >= 1);
        until_synced(&status).await;
        assert_eq!(status.readiness(), (true, "ok: leader".to_owned()));
        assert!(status.render_metrics().contains("a2a_operator_leader 1\n"));
        let _ = stop.send(());
        task.await.expect("join").expect("a clean shutdown");
    }

    #[tokio::test]
    async fn a_follower_does_not_reconcile_while_the_lease_is_held() {
        let (client, fake) = scripted(vec![writer()], Some(lease_held_by("pod-a")));
        let (status, stop, task) = start(client, config("pod-b"));
        fake.until("three election rounds", |s| s.len() >= 3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = fake.seen();
        assert!(seen.iter().all(|r| r.method == "GET" && r.path == LEASE), "only the lease is read: {seen:#?}");
        assert!(!seen.iter().any(is_agent_request));
        assert_eq!(status.role(), Role::Following { holder: "pod-a".into() });
        assert_eq!(status.readiness(), (true, "ok: follower (leader: pod-a)".to_owned()));
        assert!(status.render_metrics().contains("a2a_operator_leader 0\n"));
        let _ = stop.send(());
        task.await.expect("join").expect("a clean shutdown");
        assert!(!fake.seen().iter().any(|r| r.method == "PUT"), "a follower releases nothing");
        assert_eq!(lock(&fake.lease).as_ref().map(|l| l["spec"]["holderIdentity"].clone()), Some(json!("pod-a")));
    }

    #[tokio::test]
    async fn a_graceful_shutdown_stops_the_controllers_and_releases_the_lease() {
        let (client, fake) = scripted(vec![writer()], None);
        let (status, stop, task) = start(client, config("pod-b"));
        fake.until("the Agent list", |s| s.iter().any(|r| r.path == "/apis/a2a.dev/v1alpha1/agents")).await;
        let _ = stop.send(());
        task.await.expect("join").expect("a clean shutdown");
        let seen = fake.seen();
        let last = seen.iter().rfind(|r| r.path.starts_with(LEASES)).expect("lease requests");
        assert_eq!((last.method.as_str(), last.path.as_str()), ("PUT", LEASE), "{seen:#?}");
        assert_eq!(last.body["spec"]["holderIdentity"], "", "released: nobody holds it");
        assert_eq!(status.role(), Role::Stopped);
        let before = fake.seen().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.seen().len(), before, "nothing runs after shutdown");
        // A follower now takes the released lease at once.
        let (client, fake2) = scripted(vec![], lock(&fake.lease).clone());
        let elector =
            LeaderElector::new(Api::namespaced(client, "a2a-system"), LEASE_NAME, "pod-c", Duration::from_secs(15));
        assert_eq!(elector.try_acquire().await.expect("round"), Round::Leading);
        assert_eq!(lock(&fake2.lease).as_ref().map(|l| l["spec"]["holderIdentity"].clone()), Some(json!("pod-c")));
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_stops_reconciling_and_fails() {
        let (client, fake) = scripted(vec![writer()], None);
        let mut c = config("pod-b");
        c.lease_duration = Duration::from_secs(3);
        c.renew_deadline = Duration::from_millis(600);
        let (status, _stop, task) = start(client, c);
        fake.until("the Agent list", |s| s.iter().any(|r| r.path == "/apis/a2a.dev/v1alpha1/agents")).await;
        fake.lease_down.store(true, Ordering::SeqCst);
        let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("exits").expect("join");
        assert!(matches!(result, Err(Error::LostLease(_))), "{result:?}");
        assert_eq!(status.role(), Role::Stopped);
        let before = fake.seen().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.seen().len(), before, "controllers stopped");
    }

    #[tokio::test]
    async fn a_leader_whose_lease_was_taken_fails_at_once() {
        let (client, fake) = scripted(vec![], None);
        let mut c = config("pod-b");
        c.renew_deadline = Duration::from_millis(400);
        c.lease_duration = Duration::from_secs(3);
        let (_status, _stop, task) = start(client, c);
        fake.until("the lease created", |s| s.iter().any(|r| r.method == "POST")).await;
        *lock(&fake.lease) = Some(lease_held_by("pod-a"));
        let result = tokio::time::timeout(Duration::from_secs(10), task).await.expect("exits").expect("join");
        assert!(matches!(&result, Err(Error::TakenOver(h)) if h == "pod-a"), "{result:?}");
    }

    #[tokio::test]
    async fn the_leader_is_not_ready_until_its_caches_have_synced() {
        use tower::ServiceExt;
        let (gate, _) = watch::channel(false);
        let fake = Fake { lists_open: Arc::new(Some(gate)), ..Fake::default() };
        let client = scripted_with(vec![writer()], fake.clone());
        let (status, stop, task) = start(client, config("pod-b"));
        fake.until("the Agent list asked for", |s| s.iter().any(|r| r.path == "/apis/a2a.dev/v1alpha1/agents")).await;
        until_role(&status, Role::Leading).await;
        let readyz = async |status: &Arc<Status>| {
            let request = http::Request::get("/readyz").body(axum::body::Body::empty()).expect("request");
            let response = router(status.clone()).oneshot(request).await.expect("answer");
            let code = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
            (code, String::from_utf8_lossy(&body).into_owned())
        };
        assert_eq!(readyz(&status).await, (503, "not ready: leader, caches syncing\n".to_owned()));
        assert!(status.render_metrics().contains("a2a_operator_caches_synced 0\n"));
        assert!(!fake.seen().iter().any(|r| r.method == "PATCH"), "nothing is reconciled from a partial cache");
        if let Some(gate) = fake.lists_open.as_ref() {
            gate.send_replace(true);
        }
        until_synced(&status).await;
        assert_eq!(readyz(&status).await, (200, "ok: leader\n".to_owned()));
        assert!(status.render_metrics().contains("a2a_operator_caches_synced 1\n"));
        let _ = stop.send(());
        task.await.expect("join").expect("a clean shutdown");
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_by_the_follower_which_then_reconciles() {
        let lease = Arc::new(Mutex::new(None));
        let fake_a = Fake { lease: lease.clone(), ..Fake::default() };
        let fake_b = Fake { lease: lease.clone(), ..Fake::default() };
        let (status_a, stop_a, task_a) = start(scripted_with(vec![writer()], fake_a.clone()), config("pod-a"));
        until_role(&status_a, Role::Leading).await;
        let (status_b, stop_b, task_b) = start(scripted_with(vec![writer()], fake_b.clone()), config("pod-b"));
        until_role(&status_b, Role::Following { holder: "pod-a".into() }).await;
        fake_a.until("A reconciles", |s| s.iter().any(|r| r.method == "PATCH" && is_agent_request(r))).await;
        assert!(!fake_b.seen().iter().any(is_agent_request), "B only reads the lease while A leads");

        // A shuts down: it stops its controllers, then releases the lease; B takes it over.
        let _ = stop_a.send(());
        task_a.await.expect("join").expect("a clean shutdown");
        let a_done = fake_a.seen().len();
        until_role(&status_b, Role::Leading).await;
        fake_b
            .until("B applies the Deployment", |s| {
                s.iter().any(|r| r.method == "PATCH" && r.path == "/apis/apps/v1/namespaces/team/deployments/writer")
            })
            .await;
        let held = lock(&lease).clone().expect("lease");
        assert_eq!(held["spec"]["holderIdentity"], "pod-b");
        assert_eq!(held["spec"]["leaseTransitions"], 1, "one handover");
        assert_eq!(fake_a.seen().len(), a_done, "A makes no request after it stopped");
        let _ = stop_b.send(());
        task_b.await.expect("join").expect("a clean shutdown");
        assert_eq!(lock(&lease).as_ref().map(|l| l["spec"]["holderIdentity"].clone()), Some(json!("")));
    }

    #[test]
    fn timing_that_cannot_work_is_refused() {
        let mut c = OperatorConfig::new("a2a-system", "pod-b");
        c.renew_deadline = Duration::from_secs(20);
        let e = c.check().expect_err("renew deadline past the lease");
        assert!(e.to_string().contains("--renew-deadline (20s) must be shorter than --lease-duration (15s)"), "{e}");
        let c = OperatorConfig::new("", "pod-b");
        assert!(c.check().expect_err("no namespace").to_string().contains("POD_NAMESPACE"));
    }
}
