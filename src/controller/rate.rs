//! Rate limits on the requests the workflow engine sends to agents, and the waits agents
//! ask for with `Retry-After`. Pure: the clock is passed in, so every decision is tested
//! without sleeping.
//!
//! A `rateLimit: {requests: N, per: P}` (on an Agent, or on a ResourceBudget for all the
//! agents charged to it and to its child budgets) is a sliding window: no more than N
//! requests in any window of length P. A request counts from the moment it is dispatched
//! until P after its answer arrived. Counting from the answer (not from the send) is what
//! makes the limit hold where the agent measures it: an agent receives a request before it
//! answers it, so whatever the network delays, two requests it receives more than N apart
//! are at least P apart. An agent that answers `SendMessage` at once (a2a sends with
//! `returnImmediately`) loses nothing by it.
//!
//! A `Retry-After` on one request also holds every other request to the same agent until
//! then ([`RateLimits::hold`]): an agent that says it is overloaded is not called again by
//! the next task in the queue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::ratelimit::RateLimit;

/// The longest `Retry-After` a2a waits on. A longer one fails the task instead (with the
/// wait in its message): a task that would sit for hours is better reported than hidden.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How many times one attempt may be deferred by `Retry-After` before the deferral counts
/// as a failed attempt (so an agent that always defers cannot keep a task forever).
pub const MAX_DEFERRALS: u32 = 30;
/// The stuck-work reason of a task held back by a rate limit or a `Retry-After`.
pub const RATE_LIMITED: &str = "RateLimited";

/// What a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One agent (all its replicas): namespace, name.
    Agent(String, String),
    /// Every agent charged to a ResourceBudget or to one of its child budgets.
    Budget(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Agent(_, name) => write!(f, "agent {name:?}"),
            Scope::Budget(name) => write!(f, "budget {name:?}"),
        }
    }
}

/// When the next request may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Opens {
    /// At that moment.
    At(Instant),
    /// When a request in flight is answered (every slot is held by one).
    WhenAnswered,
    /// When the agent is thawed (automatic throttling froze it).
    WhenThawed,
}

/// Why a request cannot start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub scope: Scope,
    pub why: HeldBy,
    pub opens: Opens,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldBy {
    /// The scope's `rateLimit`, as written (`2 requests per 3s`).
    Limit(String),
    /// The agent asked to wait with `Retry-After`.
    RetryAfter,
    /// The budget is under pressure and dispatch to its agents is paced; what is over its
    /// threshold and the rate (`cpu 62%: 120 requests per minute`).
    Pressure(String),
    /// The agent is frozen while its budget is under pressure.
    Frozen,
}

/// A token bucket of one token: requests start at least `every` apart.
#[derive(Debug)]
struct Pace {
    every: Duration,
    next: Option<Instant>,
    written: String,
}

/// A request's share of every limit it was counted against; given back when it is
/// answered ([`RateLimits::answered`]) or was never sent ([`RateLimits::forget`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    id: u64,
    scopes: Vec<Scope>,
}

/// One sliding window.
#[derive(Debug)]
struct Window {
    requests: u32,
    per: Duration,
    written: String,
    /// Requests counted: in flight (`None`) or answered at that moment. At most `requests`
    /// entries are live; answered ones older than `per` are dropped.
    entries: Vec<(u64, Option<Instant>)>,
}

impl Window {
    fn prune(&mut self, now: Instant) {
        let per = self.per;
        self.entries.retain(|(_, at)| at.is_none_or(|at| now.saturating_duration_since(at) < per));
    }

    /// When the next request may start; `None`: now.
    fn opens(&self, now: Instant) -> Option<Opens> {
        let alive = |at: &Option<Instant>| at.is_none_or(|at| now.saturating_duration_since(at) < self.per);
        let requests = self.requests as usize;
        // The common case (room left) counts without collecting.
        if self.entries.iter().filter(|(_, at)| alive(at)).count() < requests {
            return None;
        }
        let live: Vec<Option<Instant>> = self.entries.iter().map(|(_, at)| *at).filter(alive).collect();
        // `over` answered entries must age out before one more request fits.
        let over = live.len() + 1 - requests;
        let mut answered: Vec<Instant> = live.into_iter().flatten().collect();
        if answered.len() < over {
            return Some(Opens::WhenAnswered);
        }
        answered.sort_unstable();
        Some(Opens::At(answered[over - 1] + self.per))
    }
}

/// Every rate limit and every `Retry-After` hold the engine knows, with the requests counted
/// against them.
#[derive(Debug, Default)]
pub struct RateLimits {
    windows: HashMap<Scope, Window>,
    holds: HashMap<Scope, Instant>,
    /// Budgets under pressure: their pace (automatic throttling).
    paces: HashMap<Scope, Pace>,
    /// Agents frozen, by the budget that says so.
    frozen: HashMap<String, Vec<Scope>>,
    next_permit: u64,
}

impl RateLimits {
    /// Sets (or, with `None`, removes) the limit of `scope`. Requests already counted stay
    /// counted under a changed limit.
    pub fn configure(&mut self, scope: Scope, limit: Option<&RateLimit>) {
        match limit {
            None => {
                self.windows.remove(&scope);
            }
            Some(l) => {
                let w = self.windows.entry(scope).or_insert_with(|| Window {
                    requests: 0,
                    per: Duration::ZERO,
                    written: String::new(),
                    entries: Vec::new(),
                });
                w.requests = l.requests.max(1);
                w.per = l.per.value();
                w.written = l.describe();
            }
        }
    }

    /// Paces `scope` (a budget under pressure) to `per_minute` requests, evenly spaced; `None`
    /// ends the pace. `why` says what is over its threshold.
    pub fn pace(&mut self, scope: Scope, per_minute: Option<u32>, why: &str) {
        match per_minute {
            None => {
                self.paces.remove(&scope);
            }
            Some(n) => {
                let every = Duration::from_secs(60) / n.max(1);
                let written = format!("{why}: {n} requests per minute");
                let p = self.paces.entry(scope).or_insert(Pace { every, next: None, written: String::new() });
                // A slower pace applies from the last request; a faster one at once.
                if let Some(next) = p.next
                    && every < p.every
                {
                    p.next = Some(next - (p.every - every));
                }
                p.every = every;
                p.written = written;
            }
        }
    }

    /// Sets the agents that budget `budget` froze (empty: none).
    pub fn set_frozen(&mut self, budget: &str, agents: Vec<Scope>) {
        if agents.is_empty() {
            self.frozen.remove(budget);
        } else {
            self.frozen.insert(budget.to_owned(), agents);
        }
    }

    /// Whether `scope` has a limit.
    pub fn is_limited(&self, scope: &Scope) -> bool {
        self.windows.contains_key(scope)
    }

    /// Holds every request to `scope` until `until` (the agent asked with `Retry-After`).
    /// A later hold wins over an earlier one.
    pub fn hold(&mut self, scope: Scope, until: Instant) {
        let h = self.holds.entry(scope).or_insert(until);
        *h = (*h).max(until);
    }

    /// Why a request counted against `scopes` cannot start at `now`: the scope that opens
    /// last. `None`: it may start.
    pub fn held(&self, scopes: &[Scope], now: Instant) -> Option<Held> {
        let mut worst: Option<Held> = None;
        for s in scopes {
            if self.frozen.values().any(|f| f.contains(s)) {
                return Some(Held { scope: s.clone(), why: HeldBy::Frozen, opens: Opens::WhenThawed });
            }
            if let Some(p) = self.paces.get(s)
                && let Some(next) = p.next
                && next > now
            {
                let h = Held { scope: s.clone(), why: HeldBy::Pressure(p.written.clone()), opens: Opens::At(next) };
                worst = Some(later(worst, h));
            }
            if let Some(&until) = self.holds.get(s)
                && until > now
            {
                let h = Held { scope: s.clone(), why: HeldBy::RetryAfter, opens: Opens::At(until) };
                worst = Some(later(worst, h));
            }
            if let Some(w) = self.windows.get(s)
                && let Some(opens) = w.opens(now)
            {
                let h = Held { scope: s.clone(), why: HeldBy::Limit(w.written.clone()), opens };
                worst = Some(later(worst, h));
            }
        }
        worst
    }

    /// Counts a request that starts at `now` against every limited scope of `scopes`.
    pub fn take(&mut self, scopes: &[Scope], now: Instant) -> Permit {
        self.next_permit += 1;
        let id = self.next_permit;
        let mut taken = Vec::new();
        self.holds.retain(|_, until| *until > now);
        for s in scopes {
            if let Some(p) = self.paces.get_mut(s) {
                p.next = Some(p.next.map_or(now, |n| n.max(now)) + p.every);
            }
            if let Some(w) = self.windows.get_mut(s) {
                w.prune(now);
                w.entries.push((id, None));
                taken.push(s.clone());
            }
        }
        Permit { id, scopes: taken }
    }

    /// The request of `permit` was answered at `now` (or failed): it counts until `per`
    /// after `now`.
    pub fn answered(&mut self, permit: &Permit, now: Instant) {
        for s in &permit.scopes {
            if let Some(w) = self.windows.get_mut(s) {
                // Entries are pushed in permit order and pruning keeps it.
                if let Ok(i) = w.entries.binary_search_by_key(&permit.id, |e| e.0) {
                    w.entries[i].1 = Some(now);
                }
                w.prune(now);
            }
        }
    }

    /// The request of `permit` was never sent: it does not count.
    pub fn forget(&mut self, permit: &Permit) {
        for s in &permit.scopes {
            if let Some(w) = self.windows.get_mut(s) {
                w.entries.retain(|e| e.0 != permit.id);
            }
        }
    }
}

fn later(a: Option<Held>, b: Held) -> Held {
    match a {
        Some(a) if a.opens >= b.opens => a,
        _ => b,
    }
}

/// What to do with an attempt the agent deferred with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// Send the same attempt again after this wait; it is not a failed attempt.
    Wait(Duration),
    /// The wait is longer than a2a waits: the attempt fails, with this reason.
    TooLong(String),
    /// The attempt was deferred too often: it counts as a failed attempt.
    TooOften(String),
}

/// Decides on a `Retry-After` of `after`: `deferred` is how many times this attempt was
/// deferred before, `deadline_left` what remains of the workflow's `activeDeadline`.
pub fn defer(after: Duration, deferred: u32, deadline_left: Option<Duration>) -> Deferral {
    let wait = format!("{}s", after.as_secs_f64());
    if after > MAX_RETRY_AFTER {
        let max = MAX_RETRY_AFTER.as_secs();
        return Deferral::TooLong(format!(
            "the agent asked to be called again in {wait}, longer than a2a waits ({max}s)"
        ));
    }
    if let Some(left) = deadline_left
        && after >= left
    {
        return Deferral::TooLong(format!(
            "the agent asked to be called again in {wait}, after the workflow's activeDeadline ({}s left)",
            left.as_secs()
        ));
    }
    if deferred >= MAX_DEFERRALS {
        return Deferral::TooOften(format!("the agent deferred this attempt {MAX_DEFERRALS} times with Retry-After"));
    }
    Deferral::Wait(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per: &str) -> RateLimit {
        RateLimit { requests, per: per.parse().expect("duration") }
    }

    fn agent(name: &str) -> Scope {
        Scope::Agent("default".into(), name.into())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn no_more_than_n_requests_start_in_any_window_counted_from_their_answers() {
        let mut r = RateLimits::default();
        r.configure(agent("a"), Some(&limit(2, "3s")));
        let scopes = [agent("a")];
        let t0 = Instant::now();
        assert_eq!(r.held(&scopes, t0), None);
        let p1 = r.take(&scopes, t0);
        let p2 = r.take(&scopes, t0);
        let held = r.held(&scopes, t0).expect("two in flight fill the window");
        assert_eq!((held.opens, held.why), (Opens::WhenAnswered, HeldBy::Limit("2 requests per 3s".into())));
        r.answered(&p1, t0 + S);
        assert_eq!(r.held(&scopes, t0 + S).map(|h| h.opens), Some(Opens::At(t0 + 4 * S)), "3s after the answer");
        r.answered(&p2, t0 + 2 * S);
        assert!(r.held(&scopes, t0 + 4 * S - Duration::from_millis(1)).is_some());
        assert_eq!(r.held(&scopes, t0 + 4 * S), None, "the first answer aged out");
        let p3 = r.take(&scopes, t0 + 4 * S);
        assert_eq!(r.held(&scopes, t0 + 4 * S).map(|h| h.opens), Some(Opens::At(t0 + 5 * S)), "then the second");
        r.forget(&p3);
        assert_eq!(r.held(&scopes, t0 + 4 * S), None, "a request never sent does not count");
    }

    #[test]
    fn a_budgets_limit_covers_every_agent_charged_to_it_and_the_latest_opening_is_reported() {
        let mut r = RateLimits::default();
        r.configure(Scope::Budget("team".into()), Some(&limit(3, "10s")));
        r.configure(agent("a"), Some(&limit(1, "1s")));
        let a = [agent("a"), Scope::Budget("team".into()), Scope::Budget("host".into())];
        let b = [agent("b"), Scope::Budget("team".into()), Scope::Budget("host".into())];
        let t0 = Instant::now();
        for p in [r.take(&a, t0), r.take(&b, t0), r.take(&b, t0)] {
            assert!(!p.scopes.contains(&Scope::Budget("host".into())), "host has no limit");
            r.answered(&p, t0);
        }
        let held = r.held(&b, t0).expect("the budget is full");
        assert_eq!((held.scope, held.opens), (Scope::Budget("team".into()), Opens::At(t0 + 10 * S)));
        let held = r.held(&a, t0).expect("a is held by both");
        assert_eq!(held.scope, Scope::Budget("team".into()), "the budget opens later than the agent");
        r.configure(Scope::Budget("team".into()), None);
        assert_eq!(r.held(&b, t0), None, "a removed limit holds nothing");
        assert_eq!(r.held(&a, t0).map(|h| h.scope), Some(agent("a")));
    }

    #[test]
    fn a_paced_budget_spaces_its_requests_and_a_frozen_agent_gets_none() {
        let mut r = RateLimits::default();
        let team = Scope::Budget("team".into());
        let a = [agent("a"), team.clone()];
        let t0 = Instant::now();
        r.pace(team.clone(), Some(60), "cpu 62%");
        assert_eq!(r.held(&a, t0), None, "the first request goes at once");
        let p = r.take(&a, t0);
        assert!(p.scopes.is_empty(), "a pace counts nothing in flight");
        let held = r.held(&a, t0).expect("paced");
        assert_eq!(held.why, HeldBy::Pressure("cpu 62%: 60 requests per minute".into()));
        assert_eq!(held.opens, Opens::At(t0 + S));
        r.pace(team.clone(), Some(120), "cpu 45%");
        assert_eq!(r.held(&a, t0).map(|h| h.opens), Some(Opens::At(t0 + S / 2)), "a faster pace applies at once");
        r.pace(team.clone(), None, "");
        assert_eq!(r.held(&a, t0), None);
        r.set_frozen("team", vec![agent("a")]);
        let held = r.held(&a, t0).expect("frozen");
        assert_eq!((held.why, held.opens), (HeldBy::Frozen, Opens::WhenThawed));
        assert_eq!(r.held(&[agent("b"), team.clone()], t0), None, "other agents are not frozen");
        r.set_frozen("team", vec![]);
        assert_eq!(r.held(&a, t0), None);
    }

    #[test]
    fn a_retry_after_holds_the_agent_until_then() {
        let mut r = RateLimits::default();
        let t0 = Instant::now();
        r.hold(agent("a"), t0 + 2 * S);
        r.hold(agent("a"), t0 + S);
        let held = r.held(&[agent("a")], t0).expect("held");
        assert_eq!((held.why, held.opens), (HeldBy::RetryAfter, Opens::At(t0 + 2 * S)), "the later hold wins");
        assert_eq!(r.held(&[agent("b")], t0), None, "other agents are not held");
        assert_eq!(r.held(&[agent("a")], t0 + 2 * S), None);
    }

    #[test]
    fn retry_after_is_waited_on_within_the_cap_the_deadline_and_a_count() {
        let d = Duration::from_secs;
        assert_eq!(defer(d(2), 0, None), Deferral::Wait(d(2)));
        assert_eq!(defer(d(600), 0, Some(d(601))), Deferral::Wait(d(600)));
        assert_eq!(
            defer(d(601), 0, None),
            Deferral::TooLong("the agent asked to be called again in 601s, longer than a2a waits (600s)".into())
        );
        assert_eq!(
            defer(d(30), 0, Some(d(10))),
            Deferral::TooLong(
                "the agent asked to be called again in 30s, after the workflow's activeDeadline (10s left)".into()
            )
        );
        assert!(matches!(defer(d(1), MAX_DEFERRALS, None), Deferral::TooOften(_)));
        assert_eq!(defer(d(1), MAX_DEFERRALS - 1, None), Deferral::Wait(d(1)));
    }
}
