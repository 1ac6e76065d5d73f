//! Lifecycle decisions of an agent replica, as plain functions: whether and when a replica
//! that ended starts again, and what a restarted node does with the replicas its status lists.
//!
//! As kubelet and supervisord do, the first restart after a crash comes at once; only a replica
//! that keeps crashing waits, `initial` doubling up to `max`; a replica that ran for
//! `reset_after` counts as healthy again. `restartPolicy` is honoured across restarts of the
//! node: a replica that ended and must stay stopped is listed in status as ended, and a
//! replica whose process ended while no node watched it is treated as failed (its exit status
//! is lost; kubelet does the same for a container it cannot find).
//!
//! The node calls these and only these to decide restarts: [`after_exit`] when a process
//! ends, [`next_start`] on every pass for a replica slot with no process.

use std::time::{Duration, Instant};

use crate::api::agent::{RestartPolicy, Termination, TerminationReason};

/// Restart backoff settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the second restart in a row; it doubles after each further one.
    pub initial: Duration,
    pub max: Duration,
    /// A run this long resets the count of crashes in a row.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The node's settings with its configured first wait (`--restart-backoff`), held
    /// between 10 ms (no busy restart loop) and `max`.
    pub fn with_initial(initial: Duration) -> Backoff {
        let d = Backoff::default();
        Backoff { initial: initial.clamp(Duration::from_millis(10), d.max), ..d }
    }
}

/// How a replica ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Succeeded,
    /// A non-zero exit code, a signal, an OOM kill.
    Failed,
    /// It ended while no node watched it: its exit status is lost (counted as a failure).
    Unknown,
}

impl Outcome {
    /// How a recorded termination counts for the restart policy: only exit code 0 is a
    /// success; a lost exit status is [`Outcome::Unknown`].
    pub fn of(t: &Termination) -> Outcome {
        match (t.reason, t.exit_code) {
            (TerminationReason::Exited, Some(0)) => Outcome::Succeeded,
            (TerminationReason::Unknown, _) => Outcome::Unknown,
            _ => Outcome::Failed,
        }
    }
}

/// What to do with a replica that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Start it again after this long (zero: at once).
    After(Duration),
    /// Its restart policy keeps it stopped.
    Never,
}

/// The decision after a replica ended with `outcome` after running `ran_for`, with `crashes`
/// restarts in a row before (quick ends since the last healthy run). Returns the decision and
/// the new count of crashes in a row.
pub fn after_exit(
    policy: RestartPolicy,
    outcome: Outcome,
    ran_for: Duration,
    crashes: u32,
    backoff: &Backoff,
) -> (Restart, u32) {
    let restart = match (policy, outcome) {
        (RestartPolicy::Never, _) | (RestartPolicy::OnFailure, Outcome::Succeeded) => false,
        (RestartPolicy::Always, _) | (RestartPolicy::OnFailure, Outcome::Failed | Outcome::Unknown) => true,
    };
    if !restart {
        return (Restart::Never, crashes);
    }
    let crashes = if ran_for >= backoff.reset_after { 1 } else { crashes.saturating_add(1) };
    (Restart::After(delay(crashes, backoff)), crashes)
}

/// The wait before restart number `crashes` in a row: none for the first, then `initial`
/// doubling, at most `max`.
pub fn delay(crashes: u32, backoff: &Backoff) -> Duration {
    match crashes {
        0 | 1 => Duration::ZERO,
        n => backoff.initial.saturating_mul(2u32.saturating_pow((n - 2).min(31))).min(backoff.max),
    }
}

/// Whether a replica listed as ended (`outcome`) in status starts when a node takes it over:
/// only when its (possibly edited) policy would have restarted it.
pub fn starts_again(policy: RestartPolicy, outcome: Outcome) -> bool {
    matches!(after_exit(policy, outcome, Duration::ZERO, 0, &Backoff::default()).0, Restart::After(_))
}

/// What a pass does with a replica slot that has no running process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStart {
    /// Start it now.
    Now,
    /// Its backoff runs until then: look again at that time.
    At(Instant),
    /// It ended and its restart policy keeps it stopped.
    Stopped,
}

/// The decision for a replica slot without a process: `ended` is how it ended when its
/// policy kept it stopped at the time (listed in status as ended), `not_before` the end of
/// its restart backoff ([`after_exit`]). The policy is read again, so an edit to a policy
/// that restarts it starts an ended replica.
pub fn next_start(
    policy: RestartPolicy,
    ended: Option<Outcome>,
    not_before: Option<Instant>,
    now: Instant,
) -> NextStart {
    if ended.is_some_and(|outcome| !starts_again(policy, outcome)) {
        return NextStart::Stopped;
    }
    match not_before {
        Some(t) if t > now => NextStart::At(t),
        _ => NextStart::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicy::{Always, Never, OnFailure};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_restart_decision_follows_the_policy_and_backs_off_only_on_repeats() {
        let b = Backoff::default();
        let quick = Duration::from_millis(50);
        type Row = (&'static str, RestartPolicy, Outcome, Duration, u32, (Restart, u32));
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("a first crash restarts at once", Always, Outcome::Failed, quick, 0, (Restart::After(Duration::ZERO), 1)),
            ("a second crash in a row waits initial", Always, Outcome::Failed, quick, 1, (Restart::After(S), 2)),
            ("then it doubles", Always, Outcome::Failed, quick, 2, (Restart::After(2 * S), 3)),
            ("and doubles", Always, Outcome::Failed, quick, 3, (Restart::After(4 * S), 4)),
            ("up to max", Always, Outcome::Failed, quick, 40, (Restart::After(300 * S), 41)),
            ("a long run resets the count", Always, Outcome::Failed, 600 * S, 9, (Restart::After(Duration::ZERO), 1)),
            ("Always restarts a success too", Always, Outcome::Succeeded, quick, 0, (Restart::After(Duration::ZERO), 1)),
            ("OnFailure restarts a failure", OnFailure, Outcome::Failed, quick, 1, (Restart::After(S), 2)),
            ("OnFailure counts a lost exit as failed", OnFailure, Outcome::Unknown, quick, 0, (Restart::After(Duration::ZERO), 1)),
            ("OnFailure keeps a success stopped", OnFailure, Outcome::Succeeded, quick, 3, (Restart::Never, 3)),
            ("Never keeps a failure stopped", Never, Outcome::Failed, quick, 0, (Restart::Never, 0)),
            ("Never keeps a lost exit stopped", Never, Outcome::Unknown, quick, 0, (Restart::Never, 0)),
        ];
        for (what, policy, outcome, ran, crashes, want) in table {
            assert_eq!(after_exit(policy, outcome, ran, crashes, &b), want, "{what}");
        }
    }

    #[test]
    fn a_slot_without_a_process_starts_now_waits_for_its_backoff_or_stays_stopped() {
        let now = Instant::now();
        let later = now + 3 * S;
        let earlier = now.checked_sub(S).unwrap_or(now);
        type Row = (&'static str, RestartPolicy, Option<Outcome>, Option<Instant>, NextStart);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("a new replica starts now", Always, None, None, NextStart::Now),
            ("a backoff not over yet is waited for", Always, None, Some(later), NextStart::At(later)),
            ("a backoff that ends now is over", Always, None, Some(now), NextStart::Now),
            ("a backoff over starts it", OnFailure, None, Some(earlier), NextStart::Now),
            ("an ended success stays stopped under OnFailure", OnFailure, Some(Outcome::Succeeded), None, NextStart::Stopped),
            ("an ended failure stays stopped under Never", Never, Some(Outcome::Failed), Some(later), NextStart::Stopped),
            ("a lost exit stays stopped under Never", Never, Some(Outcome::Unknown), None, NextStart::Stopped),
            ("the policy edited to Always starts an ended replica", Always, Some(Outcome::Succeeded), None, NextStart::Now),
            ("the policy edited to OnFailure starts an ended failure", OnFailure, Some(Outcome::Failed), None, NextStart::Now),
        ];
        for (what, policy, ended, not_before, want) in table {
            assert_eq!(next_start(policy, ended, not_before, now), want, "{what}");
        }
    }

    #[test]
    fn the_node_backoff_keeps_its_first_wait_between_10ms_and_max() {
        let max = Backoff::default().max;
        for (what, initial, want) in [
            ("as configured", 2 * S, 2 * S),
            ("no busy restart loop", Duration::ZERO, Duration::from_millis(10)),
            ("at most max", 3600 * S, max),
        ] {
            let b = Backoff::with_initial(initial);
            assert_eq!(b.initial, want, "{what}");
            assert_eq!((b.max, b.reset_after), (max, Backoff::default().reset_after), "{what}");
        }
    }

    #[test]
    fn a_termination_counts_as_success_only_with_exit_code_0() {
        let t =
            |reason, exit_code, signal| Termination { reason, exit_code, signal, at: crate::api::common::Time::now() };
        use TerminationReason as R;
        for (what, term, want) in [
            ("exit 0", t(R::Exited, Some(0), None), Outcome::Succeeded),
            ("exit 3", t(R::Exited, Some(3), None), Outcome::Failed),
            ("a wait that read nothing", t(R::Exited, None, None), Outcome::Failed),
            ("a signal", t(R::Signaled, None, Some(15)), Outcome::Failed),
            ("an OOM kill", t(R::OomKilled, None, Some(9)), Outcome::Failed),
            ("lost while no node watched", t(R::Unknown, None, None), Outcome::Unknown),
        ] {
            assert_eq!(Outcome::of(&term), want, "{what}");
        }
    }

    #[test]
    fn an_ended_replica_starts_again_only_when_its_policy_says_so() {
        assert!(!starts_again(Never, Outcome::Failed));
        assert!(!starts_again(Never, Outcome::Succeeded));
        assert!(!starts_again(OnFailure, Outcome::Succeeded));
        assert!(starts_again(OnFailure, Outcome::Failed));
        // The policy was edited to Always after it ended: it starts.
        assert!(starts_again(Always, Outcome::Succeeded));
    }
}
