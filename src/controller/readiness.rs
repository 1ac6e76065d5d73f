//! When an agent is probed for readiness, and what a probe's answer changes, as plain
//! functions. The probe is a fetch of the agent's card (`/.well-known/agent-card.json`).
//!
//! - A replica the node runs is probed from its start until its card answers once: then it
//!   is Ready until its process ends (a started A2A server that stops answering is a hung
//!   process, which a liveness check, not readiness, would catch). Its port is looked up in
//!   the kernel's table of listening sockets first, for all replicas at once: one that does
//!   not listen yet is not probed over HTTP at all. The table is read 10 ms after a start
//!   and then at a doubling interval up to 500 ms, so a fast agent is probed right after it
//!   listens and a process that never listens costs one table read per interval, whatever
//!   the number of such replicas; 10 s after the last start, exit or spec change, every 2 s
//!   (a replica that takes that long to listen is seen within 2 s of it).
//! - A replica that listens is probed at once; a failed probe is tried again after a wait
//!   that doubles from 500 ms up to 30 s, each wait drawn between half of it and all of it
//!   (jitter), so that replicas started together do not stay in step. A replica whose server
//!   answers, but not with its card (a 404, a 503), waits from 2 s doubling up to 5 min: it
//!   is up and says it serves no card, and each probe of it costs a TCP connection, which at
//!   500 such replicas and a 30 s cap was twice the node's whole idle cost, and at a 0.5 s
//!   start 5–6 probes each in its first 10 s (2,500–3,000 connections, ~240 ms of the
//!   control plane's CPU at 500). From 2 s it is 3 in its first 10 s; a server that serves
//!   its card once it listens (as the A2A SDKs' do) is Ready at the first probe, and one whose
//!   card comes up later is seen within 2 s in its first seconds, within 16–32 s after a
//!   minute (kubelet probes every 10 s). A refused connection sends it back to the socket table. A
//!   new process (an exit, a restart) or a spec change starts over.
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
    /// The longest wait for a replica whose server answered its last probe without its card.
    pub max_answered_retry: Duration,
    /// The wait after a replica's first probe that its server answered without its card.
    pub first_answered_retry: Duration,
    /// The first look at the socket table after a start; the interval doubles after each.
    pub first_listen_check: Duration,
    /// The longest interval between looks at the socket table.
    pub max_listen_check: Duration,
    /// The interval after `late_after_checks` looks (about 10 s with the defaults).
    pub late_listen_check: Duration,
    pub late_after_checks: u32,
    /// The period of an external agent's probe while it answers.
    pub period: Duration,
    /// The period of an external agent's probe while it does not.
    pub retry: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(30),
            max_answered_retry: Duration::from_secs(300),
            first_answered_retry: Duration::from_secs(2),
            first_listen_check: Duration::from_millis(10),
            max_listen_check: Duration::from_millis(500),
            late_listen_check: Duration::from_secs(2),
            // 10 + 20 + … + 320 ms, then 20 × 500 ms.
            late_after_checks: 26,
            period: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// Whether a replica waits for its card: its process runs, it is not ready yet, and no probe
/// of it is in flight (then its port is looked up, or its probe is scheduled).
pub fn replica_probe_due(running: bool, ready: bool, probing: bool) -> bool {
    running && !ready && !probing
}

/// How long after a failed probe a replica is probed again, for a replica probed `failed`
/// times without a card (this one included, so at least 1); `answered`: its server answered
/// this probe over HTTP, only not with its card (the cap is then `max_answered_retry`).
/// `jitter` in `[0, 1)` draws the wait between half the doubling step and the whole of it,
/// so never past the cap.
pub fn replica_retry_after(failed: u32, answered: bool, s: &Schedule, jitter: f64) -> Duration {
    let (first, cap) =
        if answered { (s.first_answered_retry, s.max_answered_retry) } else { (s.first_retry, s.max_retry) };
    let step = first.saturating_mul(2u32.saturating_pow(failed.saturating_sub(1).min(31))).min(cap);
    step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The interval before the next look at the socket table, after `checks` looks since the
/// last start, exit or spec change.
pub fn listen_check_after(checks: u32, s: &Schedule) -> Duration {
    if checks >= s.late_after_checks {
        return s.late_listen_check;
    }
    s.first_listen_check.saturating_mul(2u32.saturating_pow(checks.min(31))).min(s.max_listen_check)
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
    fn a_replica_is_probed_again_after_a_wait_doubling_from_500ms_to_30s_or_from_2s_to_5min_with_jitter() {
        let s = Schedule::default();
        const S: Duration = Duration::from_secs(1);
        #[rustfmt::skip]
        let table = [
            (1, 500 * MS), (2, S), (3, 2 * S), (4, 4 * S), (5, 8 * S), (6, 16 * S), (7, 30 * S),
            (8, 30 * S), (u32::MAX, 30 * S),
        ];
        for (failed, step) in table {
            assert_eq!(replica_retry_after(failed, false, &s, 1.0), step, "after {failed} failed probes");
            assert_eq!(replica_retry_after(failed, false, &s, 0.0), step / 2, "the shortest draw");
            assert!(replica_retry_after(failed, false, &s, 0.999) < step, "the longest draw");
        }
        // A server that answers without its card: from 2 s, up to 5 min.
        #[rustfmt::skip]
        let answered = [
            (1, 2 * S), (2, 4 * S), (3, 8 * S), (4, 16 * S), (5, 32 * S), (6, 64 * S), (7, 128 * S),
            (8, 256 * S), (9, 300 * S), (u32::MAX, 300 * S),
        ];
        for (failed, step) in answered {
            assert_eq!(replica_retry_after(failed, true, &s, 1.0), step, "after {failed} answers without a card");
            assert_eq!(replica_retry_after(failed, true, &s, 0.0), step / 2, "the shortest draw");
        }
        #[rustfmt::skip]
        let checks = [
            (0, 10 * MS), (1, 20 * MS), (2, 40 * MS), (5, 320 * MS), (6, 500 * MS), (25, 500 * MS),
            (26, 2000 * MS), (u32::MAX, 2000 * MS),
        ];
        let first_10s: Duration = (0..26).map(|n| listen_check_after(n, &s)).sum();
        assert_eq!(first_10s, 10_630 * MS, "500 ms looks for about 10 s before the 2 s ones");
        for (n, want) in checks {
            assert_eq!(listen_check_after(n, &s), want, "after {n} looks at the socket table");
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
