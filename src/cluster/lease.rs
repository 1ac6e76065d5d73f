//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never both
//! reconcile. The decision is a pure function; [`LeaderElector`] does the API calls, relying
//! on the Lease's resourceVersion (optimistic concurrency) so only one candidate can win a
//! round.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// What a candidate should do with the lease it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease yet: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, but expired: take it over (counts a transition).
    TakeOver { from: String },
    /// Someone else holds it until `until`.
    Follow { holder: String, until: Timestamp },
}

/// Decides from the lease as read, who we are, and the time now.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp, default_duration: Duration) -> LeaseDecision {
    let Some(spec) = lease else { return LeaseDecision::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::TakeOver { from: holder };
    }
    let duration =
        spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(default_duration, Duration::from_secs);
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let until =
        renewed.map_or(now, |r| r + jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::ZERO));
    if until <= now { LeaseDecision::TakeOver { from: holder } } else { LeaseDecision::Follow { holder, until } }
}

/// Holds (or waits for) leadership through one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    Leading,
    Following { holder: String },
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaderElector { api, name: name.to_owned(), identity: identity.to_owned(), duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One try: create, renew or take over the lease, or learn who holds it. A write that
    /// loses a race (409 Conflict) means someone else won this round.
    pub async fn try_acquire(&self) -> Result<Round, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now, self.duration);
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (&decision, current) {
            (LeaseDecision::Follow { holder, .. }, _) => return Ok(Round::Following { holder: holder.clone() }),
            (LeaseDecision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            (LeaseDecision::Renew | LeaseDecision::TakeOver { .. }, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if let LeaseDecision::TakeOver { .. } = decision {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                // The resourceVersion read above makes this a compare-and-swap.
                self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
            }
            (_, None) => return Ok(Round::Following { holder: String::new() }),
        };
        match result {
            Ok(()) => Ok(Round::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following { holder: String::new() }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up on a graceful shutdown: if we still hold it, clears holderIdentity
    /// (as client-go does), so a follower takes over at its next round instead of waiting for
    /// the lease to expire. Returns whether there was anything to release.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now);
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed))),
            ..Default::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn nobody_holds_a_missing_lease() {
        assert_eq!(decide(None, "a", t("2026-01-01T00:00:00Z"), D), LeaseDecision::Create);
    }

    #[test]
    fn the_holder_renews_and_others_follow_until_it_expires() {
        let lease = held_by("a", "2026-01-01T00:00:00Z");
        assert_eq!(decide(Some(&lease), "a", t("2026-01-01T00:00:05Z"), D), LeaseDecision::Renew);
        assert_eq!(
            decide(Some(&lease), "b", t("2026-01-01T00:00:05Z"), D),
            LeaseDecision::Follow { holder: "a".into(), until: t("2026-01-01T00:00:15Z") }
        );
        assert_eq!(
            decide(Some(&lease), "b", t("2026-01-01T00:00:15Z"), D),
            LeaseDecision::TakeOver { from: "a".into() },
            "an expired lease is taken over: the handover"
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut lease = held_by("", "2026-01-01T00:00:00Z");
        lease.holder_identity = None;
        assert_eq!(
            decide(Some(&lease), "b", t("2026-01-01T00:00:01Z"), D),
            LeaseDecision::TakeOver { from: "".into() }
        );
    }
}

#[cfg(test)]
mod handover {
    //! The handover against a scripted API: a follower takes an expired lease with a
    //! compare-and-swap on its resourceVersion, and loses cleanly when another wins the race.
    use super::*;
    use crate::cluster::testing::{Handle, answer, mock};
    use http::StatusCode;

    fn elector() -> (LeaderElector, Handle) {
        let (client, handle) = mock();
        (
            LeaderElector::new(Api::namespaced(client, "a2a-system"), "a2a-operator", "pod-b", Duration::from_secs(15)),
            handle,
        )
    }

    fn lease_json(holder: &str, renewed: &str, rv: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "a2a-operator", "namespace": "a2a-system", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 3}
        })
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/a2a-system/leases/a2a-operator";

    #[tokio::test]
    async fn a_follower_waits_while_the_leader_renews() {
        let (e, mut handle) = elector();
        let task = tokio::spawn(async move { e.try_acquire().await });
        let fresh = Timestamp::now().to_string();
        answer(&mut handle, "GET", PATH, StatusCode::OK, lease_json("pod-a", &fresh, "10")).await;
        assert_eq!(task.await.expect("join").expect("round"), Round::Following { holder: "pod-a".into() });
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_its_resource_version() {
        let (e, mut handle) = elector();
        let task = tokio::spawn(async move { e.try_acquire().await });
        answer(&mut handle, "GET", PATH, StatusCode::OK, lease_json("pod-a", "2026-01-01T00:00:00.000000Z", "10"))
            .await;
        let (_, put) =
            answer(&mut handle, "PUT", PATH, StatusCode::OK, lease_json("pod-b", "2026-01-01T00:00:00.000000Z", "11"))
                .await;
        assert_eq!(put["spec"]["holderIdentity"], "pod-b");
        assert_eq!(put["spec"]["leaseTransitions"], 4);
        assert_eq!(put["metadata"]["resourceVersion"], "10", "the write is conditional on what was read");
        assert_eq!(task.await.expect("join").expect("round"), Round::Leading);
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_means_following() {
        let (e, mut handle) = elector();
        let task = tokio::spawn(async move { e.try_acquire().await });
        answer(&mut handle, "GET", PATH, StatusCode::OK, lease_json("pod-a", "2026-01-01T00:00:00.000000Z", "10"))
            .await;
        let conflict = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"});
        answer(&mut handle, "PUT", PATH, StatusCode::CONFLICT, conflict).await;
        assert_eq!(task.await.expect("join").expect("round"), Round::Following { holder: String::new() });
    }

    #[tokio::test]
    async fn the_first_candidate_creates_the_lease() {
        let (e, mut handle) = elector();
        let task = tokio::spawn(async move { e.try_acquire().await });
        let not_found = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        answer(&mut handle, "GET", PATH, StatusCode::NOT_FOUND, not_found).await;
        let (_, created) = answer(
            &mut handle,
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/a2a-system/leases",
            StatusCode::CREATED,
            lease_json("pod-b", "2026-01-01T00:00:00.000000Z", "1"),
        )
        .await;
        assert_eq!(created["spec"]["holderIdentity"], "pod-b");
        assert_eq!(task.await.expect("join").expect("round"), Round::Leading);
    }
}
