//! The engine's side of rate limits and `Retry-After` ([`crate::controller::rate`]): the
//! ResourceBudgets it watches for their limits, the gate dispatch passes every request
//! through, the permits of requests in flight, why a held task waits, and an attempt the
//! agent deferred with `Retry-After` sent again later without counting as a failed attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;

use super::{AgentView, Engine, Error, Key, TaskRef, Work, WorkflowState, lock};
use crate::api::{Agent, DEFAULT_BUDGET, ResourceBudget};
use crate::controller::dispatch::{Assignment, Gate};
use crate::controller::plan;
use crate::controller::rate::{self, Deferral, Held, HeldBy, Opens, Permit, RateLimits, Scope};
use crate::controller::stuck::Stuck;

/// The scopes whose limits a request to agent `namespace/name` counts against: the agent,
/// then its budget and that budget's parents, as far as they exist.
pub(super) fn scopes_of(
    agents: &HashMap<Key, AgentView>,
    budgets: &HashMap<String, ResourceBudget>,
    namespace: &str,
    name: &str,
) -> Vec<Scope> {
    let mut out = vec![Scope::Agent(namespace.to_owned(), name.to_owned())];
    let Some(view) = agents.get(&(namespace.to_owned(), name.to_owned())) else { return out };
    let mut next = Some(view.agent.spec.budget.clone().unwrap_or_else(|| DEFAULT_BUDGET.to_owned()));
    while let Some(b) = next {
        let scope = Scope::Budget(b.clone());
        // A cycle of parents ends the walk where it closes.
        let Some(budget) = budgets.get(&b).filter(|_| !out.contains(&scope)) else { break };
        out.push(scope);
        next = budget.spec.parent.clone();
    }
    out
}

/// The gate of one dispatch pass: a request may start when none of its scopes holds it.
/// Following a task that already runs (after a restart) sends no request and is never held.
struct RateGate<'a> {
    agents: &'a HashMap<Key, AgentView>,
    budgets: &'a HashMap<String, ResourceBudget>,
    rates: &'a mut RateLimits,
    now: Instant,
    /// The earliest moment a held agent opens again.
    opens: Option<Instant>,
    held: bool,
}

impl Gate<Work> for RateGate<'_> {
    type Pass = Option<Permit>;

    fn allows(&mut self, namespace: &str, name: &str, item: &Work) -> bool {
        if item.task().is_some_and(|t| t.resume.is_some()) {
            return true;
        }
        let scopes = scopes_of(self.agents, self.budgets, namespace, name);
        match self.rates.held(&scopes, self.now) {
            None => true,
            Some(h) => {
                self.held = true;
                if let Opens::At(at) = h.opens {
                    self.opens = Some(self.opens.map_or(at, |o| o.min(at)));
                }
                false
            }
        }
    }

    fn pass(&mut self, namespace: &str, name: &str, item: &Work) -> Option<Permit> {
        if item.task().is_some_and(|t| t.resume.is_some()) {
            return None;
        }
        let scopes = scopes_of(self.agents, self.budgets, namespace, name);
        Some(self.rates.take(&scopes, self.now))
    }
}

/// One dispatch pass's assignments, with their permits.
pub(super) type Dispatched = Vec<(Assignment<Work>, Option<Permit>)>;

impl Engine {
    /// Takes what may be dispatched now; also returns when a task held by a rate limit may go
    /// (the dispatcher wakes itself then; a slot that opens when an answer arrives wakes it
    /// through [`Self::rate_answered`]).
    pub(super) fn dispatch_now(&self) -> (Dispatched, Option<Instant>) {
        let mut st = lock(&self.state);
        let super::State { queue, agents, budgets, rates, explain, rate_held, .. } = &mut *st;
        let mut gate = RateGate { agents, budgets, rates, now: Instant::now(), opens: None, held: false };
        let out = queue.dispatch_gated(&mut gate);
        let (opens, held) = (gate.opens, gate.held);
        // Held tasks get their reason on the next tick, and lose it once nothing is held.
        *explain |= held || std::mem::replace(rate_held, held);
        (out, opens)
    }

    /// The request of attempt `token` was answered (or failed, or a stdio run started): its
    /// share of the rate limits counts from now, and a slot it held may open later.
    pub(super) fn rate_answered(&self, token: u64) {
        let mut st = lock(&self.state);
        if let Some(p) = st.permits.remove(&token) {
            st.rates.answered(&p, Instant::now());
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Attempt `token` ended: a permit still held was never used for a request.
    pub(super) fn rate_forget(&self, token: u64) {
        let mut st = lock(&self.state);
        if let Some(p) = st.permits.remove(&token) {
            st.rates.forget(&p);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Watches ResourceBudgets for their `rateLimit`s (cluster-scoped; read only).
    pub(super) async fn watch_budgets(self: Arc<Self>) {
        let api: Api<ResourceBudget> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) => {
                    let name = b.metadata.name.clone().unwrap_or_default();
                    let mut st = lock(&self.state);
                    st.rates.configure(Scope::Budget(name.clone()), b.spec.rate_limit.as_ref());
                    apply_throttle(&mut st.rates, &name, b.status.as_ref().and_then(|s| s.throttle.as_ref()));
                    st.budgets.insert(name, b);
                    st.explain = true;
                    drop(st);
                    self.wake.notify_one();
                }
                Ok(watcher::Event::Delete(b)) => {
                    let name = b.metadata.name.clone().unwrap_or_default();
                    let mut st = lock(&self.state);
                    st.rates.configure(Scope::Budget(name.clone()), None);
                    apply_throttle(&mut st.rates, &name, None);
                    st.budgets.remove(&name);
                    st.explain = true;
                    drop(st);
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "budget watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// An agent's `rateLimit` as its spec says now (`None`: the agent is gone).
    pub(super) fn configure_agent_rate(rates: &mut RateLimits, k: &Key, agent: Option<&Agent>) {
        let limit = agent.and_then(|a| a.spec.rate_limit.as_ref());
        rates.configure(Scope::Agent(k.0.clone(), k.1.clone()), limit);
    }

    /// The agent asked to be called again after `after`: no request goes to it before then
    /// (at most [`rate::MAX_RETRY_AFTER`]).
    pub(super) fn hold_agent(&self, namespace: &str, agent: &str, after: Duration) {
        let until = Instant::now() + after.min(rate::MAX_RETRY_AFTER);
        lock(&self.state).rates.hold(Scope::Agent(namespace.to_owned(), agent.to_owned()), until);
        self.wake.notify_one();
    }
}

/// A budget's automatic throttling as its status says (`None`: not throttled): its pace, and
/// the agents it froze.
fn apply_throttle(rates: &mut RateLimits, budget: &str, throttle: Option<&crate::api::budget::ThrottleStatus>) {
    let scope = Scope::Budget(budget.to_owned());
    match throttle {
        Some(t) => {
            let why = if t.pressure.is_empty() { "pressure".to_owned() } else { t.pressure.join(", ") };
            rates.pace(scope, Some(t.requests_per_minute), &why);
            let frozen = t
                .frozen
                .iter()
                .filter_map(|k| k.split_once('/'))
                .map(|(ns, n)| Scope::Agent(ns.to_owned(), n.to_owned()))
                .collect();
            rates.set_frozen(budget, frozen);
        }
        None => {
            rates.pace(scope, None, "");
            rates.set_frozen(budget, Vec::new());
        }
    }
}

/// Why a queued task for agent `namespace/name`, which is ready, is held by a rate limit.
pub(super) fn held_reason(
    agents: &HashMap<Key, AgentView>,
    budgets: &HashMap<String, ResourceBudget>,
    rates: &RateLimits,
    namespace: &str,
    name: &str,
) -> Option<Stuck> {
    let scopes = scopes_of(agents, budgets, namespace, name);
    let now = Instant::now();
    let held = rates.held(&scopes, now)?;
    Some(Stuck { reason: rate::RATE_LIMITED, message: describe_held(name, &held, now, Timestamp::now()), never: false })
}

/// `agent "x" is at its rateLimit of 2 requests per 3s; the next request may start at …`.
fn describe_held(agent: &str, held: &Held, now: Instant, wall: Timestamp) -> String {
    let when = match held.opens {
        Opens::At(at) => format!("at {}", wall_time(at.saturating_duration_since(now), wall)),
        Opens::WhenAnswered => "when a request in flight is answered".to_owned(),
        Opens::WhenThawed => "when it is thawed".to_owned(),
    };
    match (&held.scope, &held.why) {
        (_, HeldBy::Frozen) => {
            format!("agent {agent:?} is frozen while its budget is under pressure; the next request may start {when}")
        }
        (scope, HeldBy::Pressure(why)) => {
            format!(
                "{scope} (agent {agent:?} is charged to it) is under pressure ({why}); the next request may start {when}"
            )
        }
        (Scope::Agent(..), HeldBy::RetryAfter) => {
            format!("agent {agent:?} asked with Retry-After to be called again {when}")
        }
        (Scope::Agent(..), HeldBy::Limit(limit)) => {
            format!("agent {agent:?} is at its rateLimit of {limit}; the next request may start {when}")
        }
        (scope @ Scope::Budget(_), why) => {
            let limit = match why {
                HeldBy::Limit(l) => l.as_str(),
                _ => "Retry-After",
            };
            format!(
                "{scope} (agent {agent:?} is charged to it) is at its rateLimit of {limit}; the next request may start {when}"
            )
        }
    }
}

fn wall_time(after: Duration, wall: Timestamp) -> String {
    let at = wall.saturating_add(jiff::SignedDuration::try_from(after).unwrap_or(jiff::SignedDuration::MAX));
    // To the millisecond: enough to read, and stable between passes that see the same slot.
    let at = at.unwrap_or(wall).round(jiff::Unit::Millisecond).unwrap_or(wall);
    format!("{at}")
}

/// What became of an attempt the agent deferred.
enum Deferred {
    /// It waits until then and is sent again as the same attempt (the message says so).
    Waits(String, Timestamp),
    /// It is recorded as failed (with this error), like any failed attempt...
    Failed(Error),
    /// ...or fails the task at once, retries left or not.
    FailsTask(String),
}

impl WorkflowState {
    /// Attempt `t` (token `token`) on `agent` ended with `e`, in which the agent asked with
    /// `Retry-After` to be called again after `after`. Within bounds the task goes back to
    /// Pending until then, as the same attempt (same messageId, `retry.limit` untouched), and
    /// the Event's text is returned (with whether it is a warning); a wait too long fails the
    /// task at once. `Err`: the outcome to record as an ordinary failure.
    pub(super) fn defer_attempt(
        &mut self,
        t: &TaskRef,
        token: u64,
        agent: &str,
        after: Duration,
        e: Error,
        now: Timestamp,
    ) -> Result<(bool, String), Error> {
        let i = match self.index.position(&t.task) {
            Some(i)
                if *t.uid == *self.uid
                    && !self.cancel_requested
                    && self.attempts.is_current(&t.task, token)
                    && self.status.tasks[i].phase == crate::api::workflow::TaskPhase::Running =>
            {
                i
            }
            // Superseded, cancelled or gone: recorded (or dropped) as any outcome is.
            _ => return Err(e),
        };
        let d = self.deferral(t, agent, after, e, now);
        if let Deferred::Failed(e) = d {
            return Err(e);
        }
        self.attempts.end(&t.task, token);
        self.touch(i);
        match d {
            Deferred::Waits(message, until) => {
                plan::record_deferred(&mut self.status, i, until, rate::RATE_LIMITED, message.clone());
                Ok((false, message))
            }
            Deferred::FailsTask(error) => {
                self.deferrals.remove(&t.task);
                plan::record_final_failure(&mut self.status, i, rate::RATE_LIMITED, error.clone(), now);
                Ok((true, error))
            }
            Deferred::Failed(e) => Err(e),
        }
    }

    fn deferral(&mut self, t: &TaskRef, agent: &str, after: Duration, e: Error, now: Timestamp) -> Deferred {
        let deferred = self.deferrals.get(&t.task).copied().unwrap_or(0);
        let deadline_left = match (&self.spec.active_deadline, self.status.started_at) {
            (Some(d), Some(started)) => {
                let end = started.0 + jiff::SignedDuration::try_from(d.value()).unwrap_or(jiff::SignedDuration::MAX);
                Some(Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO))
            }
            _ => None,
        };
        match rate::defer(after, deferred, deadline_left) {
            Deferral::Wait(wait) => {
                let until = now.saturating_add(jiff::SignedDuration::try_from(wait).unwrap_or_default()).unwrap_or(now);
                let message = format!(
                    "agent {agent:?} asked with Retry-After to be called again in {}s; attempt {} is sent again at {} and does not count as a failed attempt",
                    wait.as_secs_f64(),
                    t.attempt,
                    until.round(jiff::Unit::Millisecond).unwrap_or(until),
                );
                self.deferrals.insert(t.task.clone(), deferred + 1);
                Deferred::Waits(message, until)
            }
            Deferral::TooLong(why) => Deferred::FailsTask(format!("{why}: {e}")),
            Deferral::TooOften(why) => {
                self.deferrals.remove(&t.task);
                Deferred::Failed(Error::Deferred { why, source: Box::new(e) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_task_says_which_limit_holds_it_and_when_it_opens() {
        let now = Instant::now();
        let wall: Timestamp = "2026-01-01T12:00:00Z".parse().expect("time");
        let agent = |why, opens| Held { scope: Scope::Agent("default".into(), "llm".into()), why, opens };
        let limit = || HeldBy::Limit("2 requests per 3s".into());
        assert_eq!(
            describe_held("llm", &agent(limit(), Opens::At(now + Duration::from_millis(1500))), now, wall),
            "agent \"llm\" is at its rateLimit of 2 requests per 3s; the next request may start at 2026-01-01T12:00:01.5Z"
        );
        assert_eq!(
            describe_held("llm", &agent(limit(), Opens::WhenAnswered), now, wall),
            "agent \"llm\" is at its rateLimit of 2 requests per 3s; the next request may start when a request in flight is answered"
        );
        assert_eq!(
            describe_held("llm", &agent(HeldBy::RetryAfter, Opens::At(now + Duration::from_secs(2))), now, wall),
            "agent \"llm\" asked with Retry-After to be called again at 2026-01-01T12:00:02Z"
        );
        let budget = Held { scope: Scope::Budget("team".into()), why: limit(), opens: Opens::WhenAnswered };
        assert_eq!(
            describe_held("llm", &budget, now, wall),
            "budget \"team\" (agent \"llm\" is charged to it) is at its rateLimit of 2 requests per 3s; the next request may start when a request in flight is answered"
        );
    }
}
