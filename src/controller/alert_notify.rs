//! Budget alerts sent to webhooks in Alertmanager's webhook format (version 4), so that any
//! receiver written for Alertmanager (a chat bridge, a pager) takes them as they are. The same
//! in both modes: the node and the operator hand each evaluation of a budget's alerts to a
//! [`Notifier`], which sends what changed.
//!
//! - An alert is sent `firing` when it starts firing and `resolved` (with `endsAt`) when it
//!   stops; an alert whose use is not measured sends nothing.
//! - After a restart of the control plane, the first evaluation sends every firing alert
//!   again (as Alertmanager repeats a firing alert), with the `startsAt` of the stored
//!   `AlertFiring` condition, so that a receiver keying on the fingerprint sees the same
//!   alert; an alert the stored condition names as firing that no longer fires is sent
//!   `resolved`.
//! - Each receiver URL has its own bounded queue and one delivery at a time, so the order of
//!   firing and resolved holds per receiver, and a dead receiver holds up no other. A
//!   delivery is tried again on a connection error or a non-2xx answer, with capped
//!   exponential backoff; one that finally fails (or finds the queue full) records a Warning
//!   Event `AlertNotificationFailed` on the budget. Every outcome is counted in
//!   `a2a_alert_notifications_total{outcome}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::budget::{AlertNotify, ResourceBudgetStatus};
use crate::api::common::ConditionStatus;
use crate::api::{ResourceBudget, budget::Alert};
use crate::controller::budget_status::AlertState;

/// The `alertname` label of every budget alert.
pub const ALERT_NAME: &str = "ResourceBudgetAlert";
/// The `receiver` of the payload.
pub const RECEIVER: &str = "a2a";
/// Deliveries waiting per receiver URL; more are refused (and recorded).
pub const QUEUE: usize = 64;
/// Alertmanager's zero time: the `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// How often and how patiently a delivery is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure; it doubles after each further one, up to `cap`.
    pub first: Duration,
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first: Duration::from_millis(500), cap: Duration::from_secs(30), attempts: 8 }
    }
}

impl Backoff {
    /// The wait after failed attempt `n` (1-based).
    pub fn after(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(self.cap)
    }
}

/// One alert's state as last sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    firing: bool,
    starts_at: Timestamp,
}

/// One payload on its way.
struct Delivery {
    budget: String,
    budget_uid: Option<String>,
    notify: AlertNotify,
    payload: Value,
}

struct Inner {
    client: kube::Client,
    external_url: String,
    backoff: Backoff,
    /// The component named in Events (`a2a-node`, `a2a-operator`).
    component: &'static str,
    sent: Mutex<BTreeMap<(String, &'static str), Sent>>,
    queues: Mutex<BTreeMap<String, mpsc::Sender<Delivery>>>,
}

/// Sends budget alerts to their webhooks (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    /// A notifier that reads Secrets and records Events through `client`; `external_url` is the
    /// API server's URL, the payload's `externalURL` and the base of each `generatorURL`.
    pub fn new(client: kube::Client, external_url: impl Into<String>, component: &'static str) -> Self {
        Notifier {
            inner: Arc::new(Inner {
                client,
                external_url: external_url.into().trim_end_matches('/').to_owned(),
                backoff: Backoff::default(),
                component,
                sent: Mutex::default(),
                queues: Mutex::default(),
            }),
        }
    }

    /// The same, trying deliveries as `backoff` says.
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        let Inner { client, external_url, component, .. } = &*self.inner;
        Notifier {
            inner: Arc::new(Inner {
                client: client.clone(),
                external_url: external_url.clone(),
                backoff,
                component,
                sent: Mutex::default(),
                queues: Mutex::default(),
            }),
        }
    }

    /// One evaluation of `budget`'s alerts (`states`, as [`super::budget_status`] made them);
    /// `stored` is the budget's status before this evaluation was written. Sends what changed
    /// since the last evaluation (see the module docs for the first one after a start).
    pub fn observe(&self, budget: &ResourceBudget, states: &[AlertState], stored: Option<&ResourceBudgetStatus>) {
        let name = budget.name_any();
        let now = Timestamp::now();
        let stored_firing = stored_firing(stored);
        for state in states {
            let Some(firing) = state.firing else { continue };
            let Some(alert) = budget.spec.alerts.iter().find(|a| resource_name(a) == state.resource) else {
                continue;
            };
            let key = (name.clone(), state.resource);
            let last = self.lock_sent().get(&key).cloned();
            let starts_at = match &last {
                Some(s) if s.firing => s.starts_at,
                _ if last.is_none() => stored_firing.get(state.resource).copied().flatten().unwrap_or(now),
                _ => now,
            };
            let send = match &last {
                Some(s) => s.firing != firing,
                // The first evaluation since the start: firing is sent again; a resolution
                // that happened while the control plane was down is sent too.
                None => firing || stored_firing.contains_key(state.resource),
            };
            self.lock_sent().insert(key, Sent { firing, starts_at });
            let Some(notify) = &alert.notify else { continue };
            if !send {
                continue;
            }
            let ends_at = (!firing).then_some(now);
            let payload = payload(&self.inner.external_url, &name, state, starts_at, ends_at);
            self.enqueue(Delivery { budget: name.clone(), budget_uid: budget.uid(), notify: notify.clone(), payload });
        }
    }

    /// The budget was deleted: its alerts are forgotten (nothing is sent for them).
    pub fn forget(&self, budget: &str) {
        self.lock_sent().retain(|(b, _), _| b != budget);
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, &'static str), Sent>> {
        self.inner.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, delivery: Delivery) {
        let url = delivery.notify.url.clone();
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queues.entry(url).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(deliver_all(self.inner.clone(), rx));
            tx
        });
        if let Err(e) = tx.try_send(delivery) {
            let delivery = match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            };
            crate::metrics::registry().alert_notification("dropped");
            let message = format!(
                "the notification to {} was dropped: {QUEUE} notifications already wait for that receiver",
                delivery.notify.url
            );
            record_failure(&self.inner, &delivery, message);
        }
    }
}

/// `memory`, `cpu`, `pids`: as [`AlertState::resource`] names them.
fn resource_name(alert: &Alert) -> &'static str {
    match alert.resource {
        crate::api::budget::AlertResource::Memory => "memory",
        crate::api::budget::AlertResource::Cpu => "cpu",
        crate::api::budget::AlertResource::Pids => "pids",
    }
}

/// The resources the stored `AlertFiring` condition names as firing (its message lists
/// `<resource> above <threshold>`), with when it turned True.
fn stored_firing(stored: Option<&ResourceBudgetStatus>) -> BTreeMap<&'static str, Option<Timestamp>> {
    let Some(c) = stored.and_then(|s| s.conditions.iter().find(|c| c.type_ == "AlertFiring")) else {
        return BTreeMap::new();
    };
    if c.status != ConditionStatus::True {
        return BTreeMap::new();
    }
    let since = c.last_transition_time.map(|t| t.0);
    ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|r| c.message.split(", ").any(|part| part.starts_with(&format!("{r} above "))))
        .map(|r| (r, since))
        .collect()
}

/// The labels of a budget's alert on `resource`.
fn labels(budget: &str, resource: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("alertname", ALERT_NAME.to_owned()),
        ("budget", budget.to_owned()),
        ("resource", resource.to_owned()),
        ("severity", "warning".to_owned()),
    ])
}

/// Alertmanager's fingerprint of a label set: FNV-1a (64 bits) over the labels sorted by name,
/// each name and value followed by the byte 0xff, in 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<&str, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// The webhook payload for one alert of budget `budget`: `ends_at` is `None` while it fires.
pub fn payload(
    external_url: &str,
    budget: &str,
    state: &AlertState,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Value {
    let status = if ends_at.is_none() { "firing" } else { "resolved" };
    let labels = labels(budget, state.resource);
    let (summary, description) = if ends_at.is_none() {
        (
            format!("ResourceBudget {budget}: {} use above {} of its limit", state.resource, state.above),
            format!(
                "Measured {} use of ResourceBudget {budget} is at or above {} of the budget's limit; \
                 agents in it may be refused room or hit the limit.",
                state.resource, state.above
            ),
        )
    } else {
        (
            format!("ResourceBudget {budget}: {} use back below {} of its limit", state.resource, state.above),
            format!(
                "Measured {} use of ResourceBudget {budget} is back below {} of its limit.",
                state.resource, state.above
            ),
        )
    };
    let annotations = json!({"summary": summary, "description": description});
    let group_labels = json!({"alertname": ALERT_NAME, "budget": budget, "resource": state.resource});
    let group_key = format!(
        "{{}}:{{alertname=\"{ALERT_NAME}\", budget=\"{}\", resource=\"{}\"}}",
        budget.replace('"', "\\\""),
        state.resource
    );
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at.to_string(),
            "endsAt": ends_at.map_or_else(|| ZERO_TIME.to_owned(), |t| t.to_string()),
            "generatorURL": format!("{external_url}/apis/a2a.dev/v1alpha1/resourcebudgets/{budget}"),
            "fingerprint": fingerprint(&labels),
        }],
    })
}

/// Delivers a receiver's queue in order.
async fn deliver_all(inner: Arc<Inner>, mut rx: mpsc::Receiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let mut last_error = String::new();
        let mut delivered = false;
        for attempt in 1..=inner.backoff.attempts.max(1) {
            match deliver(&inner.client, &d).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(url = %d.notify.url, attempt, error = %e, "alert notification not delivered");
                    last_error = e;
                }
            }
            if attempt < inner.backoff.attempts {
                crate::metrics::registry().alert_notification("retried");
                tokio::time::sleep(inner.backoff.after(attempt)).await;
            }
        }
        if delivered {
            crate::metrics::registry().alert_notification("sent");
        } else {
            crate::metrics::registry().alert_notification("failed");
            let message = format!(
                "the alert notification to {} failed after {} attempts: {last_error}",
                d.notify.url, inner.backoff.attempts
            );
            record_failure(&inner, &d, message);
        }
    }
}

/// One attempt: the Secrets read now, one POST.
async fn deliver(client: &kube::Client, d: &Delivery) -> Result<(), String> {
    use crate::controller::credentials::{secret_bytes, secret_text};
    let n = &d.notify;
    let mut tls = crate::a2a::tls::TlsOptions::default();
    if let Some(r) = &n.ca_secret_ref {
        let field = "notify.caSecretRef";
        tls.ca_pem =
            Some(secret_bytes(client, r.namespace(), &r.name, &r.key, field).await.map_err(|e| e.to_string())?);
    }
    let bearer = match &n.secret_ref {
        Some(r) => Some(
            secret_text(client, r.namespace(), &r.name, &r.key, "notify.secretRef").await.map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let connector = crate::a2a::tls::connector(&tls).map_err(|e| e.to_string())?;
    let http: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let body = serde_json::to_vec(&d.payload).map_err(|e| e.to_string())?;
    let mut req = http::Request::post(&n.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("a2a/", env!("CARGO_PKG_VERSION")));
    if let Some(b) = &bearer {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", b.expose()));
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("the request cannot be built: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), http.request(req))
        .await
        .map_err(|_| "no answer within 10s".to_owned())?
        .map_err(|e| format!("POST failed: {}", error_chain(&e)))?;
    let status = resp.status();
    // The body is read so the connection can be reused, and to quote it on failure.
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        Err(format!(
            "the receiver answered {status}{}",
            if text.is_empty() { String::new() } else { format!(": {text}") }
        ))
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A Warning Event `AlertNotificationFailed` on the budget.
fn record_failure(inner: &Inner, d: &Delivery, message: String) {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use kube::Resource;
    use kube::api::{Api, PostParams};
    tracing::warn!(budget = %d.budget, "{message}");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let event = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}.", d.budget)),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(ResourceBudget::api_version(&()).into_owned()),
            kind: Some(ResourceBudget::kind(&()).into_owned()),
            name: Some(d.budget.clone()),
            uid: d.budget_uid.clone(),
            ..Default::default()
        },
        reason: Some("AlertNotificationFailed".into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource { component: Some(inner.component.into()), host: None }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(inner.client.clone(), "default");
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_alertmanagers() {
        // Prometheus' `model.LabelSet.Fingerprint()`: FNV-1a over name, 0xff, value, 0xff.
        let labels = BTreeMap::from([("alertname", "Watchdog".to_owned())]);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"alertname\xffWatchdog\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(fingerprint(&labels), format!("{h:016x}"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff { first: Duration::from_millis(500), cap: Duration::from_secs(3), attempts: 6 };
        let waits: Vec<u64> = (1..=5).map(|n| b.after(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
    }

    #[test]
    fn a_firing_payload_has_alertmanagers_shape_and_a_zero_end() {
        let state = AlertState { resource: "memory", above: "90%".into(), firing: Some(true) };
        let t: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let p = payload("http://127.0.0.1:6443", "team", &state, t, None);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(p["alerts"][0]["startsAt"], "2026-12-01T10:00:00Z");
        assert_eq!(p["alerts"][0]["labels"]["alertname"], ALERT_NAME);
        assert_eq!(p["alerts"][0]["generatorURL"], "http://127.0.0.1:6443/apis/a2a.dev/v1alpha1/resourcebudgets/team");
        let resolved = payload("", "team", &state, t, Some("2026-12-01T10:05:00Z".parse().unwrap()));
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["endsAt"], "2026-12-01T10:05:00Z");
        assert_eq!(resolved["alerts"][0]["fingerprint"], p["alerts"][0]["fingerprint"]);
    }
}
