//! When an agent is probed for readiness, and what a probe's answer changes, as plain
//! functions. The probe is a fetch of the agent's card (`/.well-known/agent-card.json`).
//!
//! - A replica the node runs is probed from its start until its card answers once: then it
//!   is Ready until its process ends (a started A2A server that stops answering is a hung
//!   process, which a liveness check, not readiness, would catch). A failed probe is reported
//!   after a wait that starts at 20 ms and doubles to 2 s, so a fast agent is Ready within
//!   milliseconds and a slow one is not polled in a busy loop.
//! - An agent that runs elsewhere (`url`) is probed every 10 s (Kubernetes' default
//!   `periodSeconds`) while it answers, and every 2 s while it does not; each probe decides
//!   its readiness (one success makes it Ready, one failure NotReady).

use std::time::{Duration, Instant};

/// Probe timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The wait after a replica's first failed probe; it doubles after each further one.
    pub first_retry: Duration,
    /// The longest wait between probes of a replica not ready yet.
    pub max_retry: Duration,
    /// The period of an external agent's probe while it answers.
    pub period: Duration,
    /// The period of an external agent's probe while it does not.
    pub retry: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_secs(2),
            period: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// Whether a replica is probed now: its process runs, it is not ready yet, and no probe of
/// it is in flight.
pub fn replica_probe_due(running: bool, ready: bool, probing: bool) -> bool {
    running && !ready && !probing
}

/// How long a failure of a replica's probe waits before it is reported (and the next probe
/// starts), for a replica probed `failed` times before without an answer.
pub fn replica_retry_after(failed: u32, s: &Schedule) -> Duration {
    s.first_retry.saturating_mul(2u32.saturating_pow(failed.min(31))).min(s.max_retry)
}

/// A replica's readiness after a probe: ready once its card answered.
pub fn replica_ready_after(was_ready: bool, answered: bool) -> bool {
    was_ready || answered
}

/// Whether an external agent is probed now: no probe in flight and its next probe is due.
pub fn external_probe_due(probing: bool, next: Option<Instant>, now: Instant) -> bool {
    !probing && next.is_none_or(|t| t <= now)
}

/// An external agent's readiness after a probe answered at `now` (or not), and when it is
/// probed next.
pub fn external_after_probe(answered: bool, now: Instant, s: &Schedule) -> (bool, Instant) {
    (answered, now + if answered { s.period } else { s.retry })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_replica_is_probed_until_it_answers_with_a_wait_doubling_from_20ms_to_2s() {
        let s = Schedule::default();
        #[rustfmt::skip]
        let table = [
            (0, 20 * MS), (1, 40 * MS), (2, 80 * MS), (3, 160 * MS), (4, 320 * MS), (5, 640 * MS),
            (6, 1280 * MS), (7, 2000 * MS), (8, 2000 * MS), (u32::MAX, 2000 * MS),
        ];
        for (failed, want) in table {
            assert_eq!(replica_retry_after(failed, &s), want, "after {failed} failed probes");
        }
        for (what, running, ready, probing, want) in [
            ("a running replica not ready yet", true, false, false, true),
            ("one already probed", true, false, true, false),
            ("a ready one", true, true, false, false),
            ("one without a process", false, false, false, false),
        ] {
            assert_eq!(replica_probe_due(running, ready, probing), want, "{what}");
        }
    }

    #[test]
    fn a_replica_is_ready_after_one_answer_and_stays_ready() {
        for (what, was, answered, want) in [
            ("no answer yet", false, false, false),
            ("the first answer", false, true, true),
            ("ready stays ready", true, false, true),
            ("and again", true, true, true),
        ] {
            assert_eq!(replica_ready_after(was, answered), want, "{what}");
        }
    }

    #[test]
    fn an_external_agent_follows_each_probe_every_10s_or_every_2s_while_it_does_not_answer() {
        let s = Schedule::default();
        let now = Instant::now();
        assert_eq!(external_after_probe(true, now, &s), (true, now + Duration::from_secs(10)));
        assert_eq!(external_after_probe(false, now, &s), (false, now + Duration::from_secs(2)));
        for (what, probing, next, want) in [
            ("never probed", false, None, true),
            ("due now", false, Some(now), true),
            ("overdue", false, Some(now.checked_sub(MS).unwrap_or(now)), true),
            ("not due yet", false, Some(now + MS), false),
            ("a probe in flight", true, None, false),
        ] {
            assert_eq!(external_probe_due(probing, next, now), want, "{what}");
        }
    }
}
