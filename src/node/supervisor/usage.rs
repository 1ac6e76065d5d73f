//! The periodic sample of every replica's kernel statistics.

use std::time::{Duration, Instant};

use super::{FIRST_USAGE_WITHIN, IDLE_SAMPLE_MAX, Node, SAMPLE_EVERY, USAGE_HEARTBEAT, USAGE_MIN_AGE, World};

/// A replica idles when it used less than this much CPU since the last sample (millicores)…
const IDLE_CPU_MILLIS: u64 = 5;
/// …its memory moved by less than this…
const IDLE_MEMORY_BYTES: u64 = 1 << 20;

impl World {
    /// Reads every running replica's usage (one coalesced pass, a few control files each,
    /// no allocation per file). Only agents whose status moves
    /// materially get a pass: a Throttled change, memory or cpu moved by 10% (and at least
    /// 4 MiB or 20m), or any change after [`USAGE_HEARTBEAT`].
    ///
    /// An agent whose every replica idles (under 5m of CPU since the last read, memory moved
    /// by under 1 MiB, not throttled) is read again after 10–20 s, then 20–40 s, then every
    /// 30–60 s (drawn, so that agents started together do not all read at the same sample),
    /// and at every sample again once one of them does not idle or a new replica runs (as
    /// cAdvisor's dynamic housekeeping backs off for containers whose statistics stay the
    /// same). 500 idle agents then cost about 2,000 control-file reads a minute on cgroup v1
    /// instead of 9,000, and the usage they report (near 0 CPU, flat memory) is as current.
    /// Budgets' CPU `used` sums the last reading of each agent: an idle one's is under 5m.
    pub(super) fn sample_all(&mut self, node: &Node, now: Instant) {
        let wall = jiff::Timestamp::now();
        for (k, rt) in &mut self.runtime {
            // A replica never read yet (a new start) is read now, whatever the agent's pace.
            let fresh = rt.replicas.values().any(|r| r.process.is_some() && r.cpu.is_none());
            if !fresh && rt.sample_after.is_some_and(|t| t > now) {
                continue;
            }
            let mut changed = false;
            let mut idle = true;
            let (mut cpu_usec, mut throttled, mut throttled_usec) = (0, 0, 0);
            for r in rt.replicas.values_mut().filter(|r| r.process.is_some()) {
                let Ok(u) = node.driver.usage(&r.cgroup) else {
                    idle = false;
                    continue;
                };
                idle &= r.cpu.is_some()
                    && u.cpu_usage_usec.saturating_sub(r.cpu.map_or(0, |(_, usec)| usec))
                        < IDLE_CPU_MILLIS * now.duration_since(r.cpu.map_or(now, |(t, _)| t)).as_millis() as u64
                    && u.memory_current.abs_diff(r.memory) < IDLE_MEMORY_BYTES
                    && u.nr_throttled == r.throttled;
                // A replica's cgroup is made anew for each start, so its counters begin at 0.
                cpu_usec += u.cpu_usage_usec.saturating_sub(r.cpu.map_or(0, |(_, usec)| usec));
                throttled += u.nr_throttled.saturating_sub(r.throttled);
                throttled_usec += u.throttled_usec.saturating_sub(r.throttled_usec);
                r.throttled_usec = u.throttled_usec;
                if let Some((t, usec)) = r.cpu {
                    let dt = now.duration_since(t).as_micros().max(1) as u64;
                    r.cpu_millis = u.cpu_usage_usec.saturating_sub(usec) * 1000 / dt;
                }
                r.cpu = Some((now, u.cpu_usage_usec));
                r.memory = u.memory_current;
                let throttling = u.nr_throttled > r.throttled && r.throttled > 0;
                changed |= throttling != r.throttling;
                r.throttling = throttling;
                r.throttled = u.nr_throttled;
            }
            let running = || rt.replicas.values().filter(|r| r.process.is_some());
            let (mem, cpu) = (running().map(|r| r.memory).sum::<u64>(), running().map(|r| r.cpu_millis).sum::<u64>());
            // A deleted agent's replicas still stopping add no series back.
            if self.agents.contains_key(k) {
                crate::metrics::registry().agent_sampled(
                    &k.0,
                    &k.1,
                    Duration::from_micros(cpu_usec),
                    mem,
                    throttled,
                    Duration::from_micros(throttled_usec),
                );
            }
            let written = rt.written.as_ref().and_then(|w| w.usage.as_ref());
            let moved = |new: u64, old: u64, floor: u64| new.abs_diff(old) >= floor.max(old / 10);
            // A process that has only just started has no usage worth a write yet (its memory
            // is its loading binary, its CPU has no interval); its agent's next sample writes it.
            let settled =
                running().any(|r| wall.duration_since(r.started_at.0).as_millis() >= USAGE_MIN_AGE.as_millis() as i128);
            // Nothing sampled was written yet (a start's status has no usage): the first
            // sample is news however small, but a small one waits for its drawn time (see
            // `first_usage_at`); a busy one (4 MiB or 20m) is written at once.
            let first = written.is_none_or(|w| w.memory_bytes == 0 && w.cpu_millicores == 0);
            let owed = first && rt.first_usage_at.is_some_and(|t| t > now);
            let material = settled
                && match written.filter(|_| !first) {
                    Some(w) => moved(mem, w.memory_bytes, 4 << 20) || moved(cpu, w.cpu_millicores, 20),
                    None => (mem > 0 || cpu > 0) && (!owed || mem >= 4 << 20 || cpu >= 20),
                };
            if material && first {
                rt.first_usage_at = None;
            }
            let stale = written.is_some_and(|w| (w.memory_bytes, w.cpu_millicores) != (mem, cpu))
                && rt.usage_written_at.is_none_or(|t| now.duration_since(t) >= USAGE_HEARTBEAT);
            if changed || material || stale {
                self.dirty.insert(k.clone());
            }
            rt.idle_samples = if idle { rt.idle_samples.saturating_add(1) } else { 0 };
            rt.sample_after = (rt.idle_samples > 0).then(|| {
                // Less than a sample early, so that it is read at the sample that ends the wait.
                let wait = SAMPLE_EVERY.saturating_mul(1 << rt.idle_samples.min(3)).min(IDLE_SAMPLE_MAX);
                let next = now + wait.mul_f64(0.5 + 0.5 * fastrand::f64()).saturating_sub(SAMPLE_EVERY / 2);
                // An idle agent whose first usage is owed is read when it falls due.
                match rt.first_usage_at.filter(|_| first) {
                    Some(t) => next.min(t),
                    None => next,
                }
            });
        }
    }
}

/// When the first usage of a replica started `now` is written, unless it is busy: `jitter`
/// in `[0, 1)` draws it between [`USAGE_MIN_AGE`] and [`FIRST_USAGE_WITHIN`] after the start,
/// so that 500 agents started together are written over a minute, a few at each sample.
pub(super) fn first_usage_at(now: Instant, jitter: f64) -> Instant {
    let spread = FIRST_USAGE_WITHIN.saturating_sub(USAGE_MIN_AGE);
    now + USAGE_MIN_AGE + spread.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_replicas_first_usage_is_drawn_between_2s_and_60s_after_its_start() {
        let now = Instant::now();
        assert_eq!(first_usage_at(now, 0.0), now + Duration::from_secs(2));
        assert_eq!(first_usage_at(now, 0.5), now + Duration::from_secs(31));
        assert!(first_usage_at(now, 0.999) < now + Duration::from_secs(60));
        assert_eq!(first_usage_at(now, 7.0), now + Duration::from_secs(60), "a jitter past 1 is taken as 1");
    }
}
