//! A circuit breaker per peer: remote work stops going to a peer that keeps failing, and tries
//! it again now and then.
//!
//! - **Closed** (healthy): work goes to the peer. [`FAILURES_TO_OPEN`] consecutive failures
//!   (a refused connection, a TLS failure, an error from its gateway, no answer) open it.
//! - **Open**: nothing goes to the peer for [`COOL_DOWN`].
//! - **Half-open**: after the cool-down one probe (a real task) may go; its success closes the
//!   breaker, its failure opens it again for another cool-down.
//!
//! An A2A answer of the peer's agent, even a failed task, is a success of the peer: the
//! breaker judges the host, not the agent's work.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker refuses work before it lets one probe through.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// A breaker's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// The value of the `a2a_peer_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub peer: String,
    pub from: State,
    pub to: State,
    pub why: String,
}

/// One peer's breaker.
#[derive(Clone, Debug, Default)]
pub struct Breaker {
    state: State,
    failures: u32,
    opened_at: Option<Instant>,
    /// A half-open breaker's probe is out.
    probing: bool,
}

impl Breaker {
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether work may go to the peer now (and, when the cool-down has passed, the probe
    /// goes: the breaker is half-open until its outcome).
    fn take(&mut self, now: Instant) -> (bool, Option<(State, State)>) {
        match self.state {
            State::Closed => (true, None),
            State::Open if self.opened_at.is_none_or(|t| now.duration_since(t) >= COOL_DOWN) => {
                self.state = State::HalfOpen;
                self.probing = true;
                (true, Some((State::Open, State::HalfOpen)))
            }
            State::Open => (false, None),
            State::HalfOpen if !self.probing => {
                self.probing = true;
                (true, None)
            }
            State::HalfOpen => (false, None),
        }
    }

    /// Whether work could go now, without taking the probe.
    fn available(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open => self.opened_at.is_none_or(|t| now.duration_since(t) >= COOL_DOWN),
            State::HalfOpen => !self.probing,
        }
    }

    fn success(&mut self) -> Option<(State, State)> {
        self.failures = 0;
        self.probing = false;
        self.opened_at = None;
        let from = std::mem::replace(&mut self.state, State::Closed);
        (from != State::Closed).then_some((from, State::Closed))
    }

    fn failure(&mut self, now: Instant) -> Option<(State, State)> {
        self.failures = self.failures.saturating_add(1);
        self.probing = false;
        let open = self.state == State::HalfOpen || self.failures >= FAILURES_TO_OPEN;
        if !open {
            return None;
        }
        self.opened_at = Some(now);
        let from = std::mem::replace(&mut self.state, State::Open);
        (from != State::Open).then_some((from, State::Open))
    }
}

/// The breakers of every peer, by node name. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Breakers {
    inner: Mutex<BTreeMap<String, Breaker>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Breakers {
    /// Whether work could go to `peer` now (closed, or a probe is due).
    pub fn available(&self, peer: &str) -> bool {
        lock(&self.inner).get(peer).is_none_or(|b| b.available(Instant::now()))
    }

    /// Takes the right to send one piece of work to `peer`: false while open (or while a
    /// half-open breaker's probe is out).
    pub fn take(&self, peer: &str) -> (bool, Option<Transition>) {
        let (ok, t) = lock(&self.inner).entry(peer.to_owned()).or_default().take(Instant::now());
        (
            ok,
            t.map(|(from, to)| Transition {
                peer: peer.to_owned(),
                from,
                to,
                why: "the cool-down passed: one probe goes".into(),
            }),
        )
    }

    /// Work taken for `peer` was not sent: a half-open breaker's probe may go again.
    pub fn release(&self, peer: &str) {
        if let Some(b) = lock(&self.inner).get_mut(peer) {
            b.probing = false;
        }
    }

    /// The peer answered.
    pub fn success(&self, peer: &str) -> Option<Transition> {
        let t = lock(&self.inner).entry(peer.to_owned()).or_default().success();
        t.map(|(from, to)| Transition { peer: peer.to_owned(), from, to, why: "the peer answered".into() })
    }

    /// The peer failed (`why`).
    pub fn failure(&self, peer: &str, why: &str) -> Option<Transition> {
        let mut inner = lock(&self.inner);
        let b = inner.entry(peer.to_owned()).or_default();
        let t = b.failure(Instant::now());
        let failures = b.failures;
        t.map(|(from, to)| Transition {
            peer: peer.to_owned(),
            from,
            to,
            why: if from == State::HalfOpen {
                format!("the probe failed: {why}")
            } else {
                format!("{failures} consecutive failures, the last: {why}")
            },
        })
    }

    /// Every breaker's state, by peer.
    pub fn states(&self) -> BTreeMap<String, State> {
        let now = Instant::now();
        lock(&self.inner)
            .iter()
            .map(|(k, b)| {
                // An open breaker whose cool-down passed shows as half-open: the next task probes.
                let s = if b.state == State::Open && b.available(now) { State::HalfOpen } else { b.state };
                (k.clone(), s)
            })
            .collect()
    }

    pub fn state(&self, peer: &str) -> State {
        self.states().get(peer).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breakers::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(b.failure("h", "refused"), None);
        }
        assert_eq!(b.success("h"), None, "closed stays closed");
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(b.failure("h", "refused"), None);
        }
        let t = b.failure("h", "refused").expect("opens");
        assert_eq!((t.from, t.to), (State::Closed, State::Open));
        assert!(t.why.contains("3 consecutive failures"), "{}", t.why);
        assert!(!b.available("h"));
        assert!(!b.take("h").0, "open refuses work");
        assert_eq!(b.state("h"), State::Open);
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_its_success_closes_its_failure_reopens() {
        let mut br = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            br.failure(t0);
        }
        assert_eq!(br.state(), State::Open);
        assert!(!br.take(t0).0);
        let later = t0 + COOL_DOWN;
        assert_eq!(br.take(later), (true, Some((State::Open, State::HalfOpen))));
        assert!(!br.take(later).0, "one probe at a time");
        assert_eq!(br.failure(later), Some((State::HalfOpen, State::Open)), "a failed probe opens it again");
        assert!(!br.take(later).0, "for another cool-down");
        let again = later + COOL_DOWN;
        assert!(br.take(again).0);
        assert_eq!(br.success(), Some((State::HalfOpen, State::Closed)));
        assert!(br.take(again).0 && br.take(again).0, "closed takes everything");
    }
}
