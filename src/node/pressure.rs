//! The signal of automatic throttling: whether a budget is under pressure, and how much.
//!
//! Where the kernel keeps pressure stall information for the budget's cgroup (cgroup v2, or
//! the unified hierarchy of a hybrid host), one thread per budget registers a PSI trigger on
//! each watched pressure file (`some <stall> <window>`: the kernel wakes a `poll()` for
//! `POLLPRI` as soon as the tasks of the cgroup stalled for the threshold's share of a
//! one-second window) and reads `avg10` to follow the level and notice recovery. Where the
//! kernel grants only two-second windows (a daemon without `CAP_SYS_RESOURCE`), it checks
//! them only at its two-second averaging tick, so the thread also reads the stall counter
//! (`total`) at each sample: the last second's stall at the threshold counts as a fired
//! trigger. Without
//! PSI (cgroup v1 only) the same thread samples the budget's throttled CPU time and its
//! memory use against its limit every [`FALLBACK_EVERY`].
//!
//! [`Tracker`] turns samples into a [`Reading`] (a pure function of what it is shown, tested
//! without a kernel): a budget enters pressure when a trigger fires or a level is over its
//! threshold, and leaves it when no trigger fired for [`CALM_FOR`] and every level is below
//! its threshold again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupDriver, CgroupPath};

/// The resources whose pressure is watched, in the order of every `[_; 3]` here.
pub const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];
/// The PSI trigger's tracking window.
const WINDOW: Duration = Duration::from_secs(1);
/// The shortest window the kernel grants a process without `CAP_SYS_RESOURCE` (it refuses
/// any window that is not a multiple of two seconds with `EINVAL`).
const UNPRIVILEGED_WINDOW: Duration = Duration::from_secs(2);
/// How long `poll()` waits before the levels are read anyway.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// …while the budget is calm and every watched resource has a one-second trigger: a stall
/// that reaches a threshold fires its trigger (an `avg10` over the threshold implies a
/// one-second window over it), which wakes the `poll()` at once, so the levels read every
/// 250 ms found nothing the trigger does not; two reads of two files every 250 ms per budget
/// were a steady cost of an idle host.
const CALM_POLL_EVERY: Duration = Duration::from_secs(2);
/// The sampling interval without PSI.
pub const FALLBACK_EVERY: Duration = Duration::from_millis(250);
/// Pressure ends when no trigger fired for this long (and every level is below its
/// threshold).
pub const CALM_FOR: Duration = Duration::from_secs(2);
/// Without PSI, memory use at this share of the limit or more is pressure (basis points);
/// the level grows from 0 there to 100% at the limit.
const V1_MEMORY_AT: u64 = 9000;

/// What one budget's watch is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    pub budget: String,
    pub cgroup: CgroupPath,
    /// The cgroup2 directory with the pressure files; `None`: the v1 signal.
    pub pressure_dir: Option<PathBuf>,
    /// Thresholds in basis points (cpu, memory, io); `None`: not watched.
    pub thresholds: [Option<u32>; 3],
    /// The budget's memory limit, for the v1 signal.
    pub memory_limit: Option<u64>,
}

/// A budget's pressure as last judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub under: bool,
    /// Measured levels in basis points (cpu, memory, io); `None`: not watched or unreadable.
    pub levels: [Option<u32>; 3],
    /// The resources over their threshold, with their level (for status and Events).
    pub over: Vec<(&'static str, u32)>,
    /// Which signal: `psi` or `cgroup v1 throttling and memory use`.
    pub signal: &'static str,
}

impl Reading {
    /// `cpu 62%, memory 25%`.
    pub fn describe_over(&self) -> String {
        self.over.iter().map(|(r, bp)| format!("{r} {}", percent(*bp))).collect::<Vec<_>>().join(", ")
    }
}

/// `62%`, `4.5%`.
pub fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) { format!("{}%", bp / 100) } else { format!("{:.1}%", f64::from(bp) / 100.0) }
}

/// Requests per minute allowed to a budget under pressure: `base` at the threshold, falling
/// linearly with the worst resource's excess over its threshold to a tenth of it at 100%,
/// and never below one.
pub fn paced_rate(base: u32, thresholds: &[Option<u32>; 3], reading: &Reading) -> u32 {
    let mut severity = 0.0f64;
    for (i, t) in thresholds.iter().enumerate() {
        let (Some(t), Some(level)) = (t, reading.levels[i]) else { continue };
        if level > *t && *t < 10_000 {
            severity = severity.max(f64::from(level - t) / f64::from(10_000 - t));
        }
    }
    let rate = f64::from(base) * (1.0 - 0.9 * severity.min(1.0));
    (rate.round() as u32).max(1)
}

/// Judges a budget's pressure from successive samples.
#[derive(Debug)]
pub struct Tracker {
    thresholds: [Option<u32>; 3],
    signal: &'static str,
    under: bool,
    last_over: Option<Instant>,
}

impl Tracker {
    pub fn new(thresholds: [Option<u32>; 3], signal: &'static str) -> Self {
        Tracker { thresholds, signal, under: false, last_over: None }
    }

    /// One sample at `now`: which triggers fired since the last one, and the levels read.
    /// A fired trigger proves the stall reached the threshold in its window even while the
    /// ten-second average still lags below it.
    pub fn observe(&mut self, now: Instant, fired: [bool; 3], levels: [Option<u32>; 3]) -> Reading {
        let mut over = Vec::new();
        let mut shown = levels;
        for i in 0..3 {
            let Some(t) = self.thresholds[i] else {
                shown[i] = None;
                continue;
            };
            let level = levels[i].unwrap_or(0);
            if fired[i] || level > t {
                let level = if fired[i] { level.max(t) } else { level };
                shown[i] = Some(level);
                over.push((RESOURCES[i], level));
            }
        }
        if !over.is_empty() {
            self.under = true;
            self.last_over = Some(now);
        } else if self.under && self.last_over.is_none_or(|t| now.saturating_duration_since(t) >= CALM_FOR) {
            self.under = false;
        }
        if self.under && over.is_empty() {
            // Calming down: still under, by the levels read.
            over = (0..3).filter_map(|i| Some((RESOURCES[i], shown[i]?))).filter(|(_, l)| *l > 0).collect();
        }
        Reading { under: self.under, levels: shown, over, signal: self.signal }
    }
}

/// A running watch; dropping it stops its thread (within [`POLL_EVERY`]).
#[derive(Debug)]
pub struct Watch {
    pub config: WatchConfig,
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Starts watching one budget; `report` is called from the watch's thread with every
/// reading that differs from the previous one (in whether it is under pressure, or in a
/// level by a whole percent or more while under pressure).
pub fn watch(
    config: WatchConfig,
    driver: Arc<dyn CgroupDriver>,
    report: impl Fn(&str, Reading) + Send + 'static,
) -> std::io::Result<Watch> {
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (config.clone(), stop.clone());
    std::thread::Builder::new().name(format!("pressure-{}", config.budget)).spawn(move || {
        let mut last: Option<Reading> = None;
        let mut emit = |r: Reading| {
            let moved = last.as_ref().is_none_or(|l| {
                l.under != r.under || (r.under && (l.over != r.over || levels_moved(&l.levels, &r.levels)))
            });
            if moved {
                report(&c.budget, r.clone());
                last = Some(r);
            }
        };
        match &c.pressure_dir {
            Some(dir) => watch_psi(&c, dir, &s, &mut emit),
            None => watch_v1(&c, driver.as_ref(), &s, &mut emit),
        }
    })?;
    Ok(Watch { config, stop })
}

fn levels_moved(a: &[Option<u32>; 3], b: &[Option<u32>; 3]) -> bool {
    a.iter().zip(b).any(|(a, b)| a.unwrap_or(0).abs_diff(b.unwrap_or(0)) >= 100)
}

/// `some avg10=12.34 ...` → 1234 basis points.
pub fn parse_some_avg10(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line.split_whitespace().find_map(|f| f.strip_prefix("avg10="))?;
    let v: f64 = v.parse().ok()?;
    Some((v * 100.0).round().clamp(0.0, 10_000.0) as u32)
}

/// Opens the pressure file `path` and registers a trigger on it: the kernel wakes a
/// `poll()` for `POLLPRI` once some tasks stalled for `threshold` (basis points) of the
/// trigger's window. That window is one second when the kernel grants it. A process without
/// `CAP_SYS_RESOURCE` may only ask for whole multiples of two seconds, and the kernel checks
/// such a trigger only at its two-second averaging tick (up to two seconds late), so the
/// watch then also follows the stall counter over the last second ([`trailing_share`]).
/// Returns the file and the window granted.
pub fn register_trigger(path: &std::path::Path, threshold: u32) -> std::io::Result<(std::fs::File, Duration)> {
    use std::io::Write;
    let mut refused = None;
    for window in [WINDOW, UNPRIVILEGED_WINDOW] {
        let stall = window.as_micros() as u64 * u64::from(threshold.clamp(1, 10_000)) / 10_000;
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        match f.write_all(format!("some {stall} {}", window.as_micros()).as_bytes()) {
            Ok(()) => return Ok((f, window)),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or_else(|| std::io::Error::other("no trigger window accepted")))
}

/// The span over which the stall counter stands in for a one-second trigger.
const SHARE_OVER: Duration = Duration::from_secs(1);

/// The share of time stalled (basis points) between the oldest sample at most
/// [`SHARE_OVER`] old (at least half of it) and the newest, from the `total` counter.
pub fn trailing_share(samples: &VecDeque<(Instant, u64)>, now: Instant) -> Option<u32> {
    let (t1, v1) = *samples.back()?;
    let (t0, v0) = *samples.iter().find(|(at, _)| now.saturating_duration_since(*at) <= SHARE_OVER)?;
    let span = t1.saturating_duration_since(t0);
    if span < SHARE_OVER / 2 {
        return None;
    }
    let bp = u128::from(v1.saturating_sub(v0)) * 10_000 / span.as_micros().max(1);
    Some(bp.min(10_000) as u32)
}

/// `some avg10=... total=3577566` → 3577566 (µs stalled since boot or cgroup creation).
pub fn parse_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("total="))?.parse().ok()
}

fn watch_psi(c: &WatchConfig, dir: &std::path::Path, stop: &AtomicBool, emit: &mut impl FnMut(Reading)) {
    let mut tracker = Tracker::new(c.thresholds, "psi");
    // One trigger per watched resource; a file that refuses one is still read for avg10.
    let mut triggers: Vec<(usize, std::fs::File, Duration)> = Vec::new();
    // Each resource's stall counter (`total`, µs) at recent samples.
    let mut history: [VecDeque<(Instant, u64)>; 3] = Default::default();
    for (i, t) in c.thresholds.iter().enumerate() {
        let Some(t) = t else { continue };
        let path = dir.join(format!("{}.pressure", RESOURCES[i]));
        match register_trigger(&path, *t) {
            Ok((f, window)) => {
                if window != WINDOW {
                    tracing::info!(budget = %c.budget, file = %path.display(), window = ?window,
                        "PSI trigger on a two-second window: the daemon lacks CAP_SYS_RESOURCE");
                }
                triggers.push((i, f, window));
            }
            Err(e) => tracing::warn!(budget = %c.budget, file = %path.display(), error = %e,
                "cannot register a PSI trigger; its level is read every 250ms instead"),
        }
    }
    let watched = c.thresholds.iter().filter(|t| t.is_some()).count();
    let all_triggered = triggers.len() == watched && triggers.iter().all(|(_, _, w)| *w == WINDOW);
    while !stop.load(Ordering::Acquire) {
        let mut fired = [false; 3];
        if triggers.is_empty() {
            std::thread::sleep(POLL_EVERY);
        } else {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let mut fds: Vec<PollFd<'_>> = triggers.iter().map(|(_, f, _)| PollFd::new(f, PollFlags::PRI)).collect();
            let wait = if all_triggered && !tracker.under { CALM_POLL_EVERY } else { POLL_EVERY };
            let timeout = Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ };
            if let Ok(n) = poll(&mut fds, Some(&timeout))
                && n > 0
            {
                for (fd, (i, _, _)) in fds.iter().zip(&triggers) {
                    if fd.revents().contains(PollFlags::ERR) {
                        // The cgroup is gone.
                        return;
                    }
                    fired[*i] |= fd.revents().contains(PollFlags::PRI);
                }
            }
        }
        let now = Instant::now();
        let mut levels = [None; 3];
        for (i, t) in c.thresholds.iter().enumerate() {
            let Some(t) = t else { continue };
            let path = dir.join(format!("{}.pressure", RESOURCES[i]));
            let text = std::fs::read_to_string(&path).ok();
            levels[i] = text.as_deref().and_then(parse_some_avg10);
            let h = &mut history[i];
            if let Some(total) = text.as_deref().and_then(parse_some_total) {
                h.push_back((now, total));
            }
            while h.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > SHARE_OVER * 2) {
                h.pop_front();
            }
            // Without a one-second trigger, the last second's stall (from the exact counter,
            // not an average) stands in for it between the kernel's two-second checks.
            let window = triggers.iter().find(|(r, _, _)| *r == i).map(|(_, _, w)| *w);
            if window != Some(WINDOW) && trailing_share(h, now).is_some_and(|bp| bp >= *t) {
                fired[i] = true;
            }
        }
        if !dir.is_dir() {
            return;
        }
        emit(tracker.observe(now, fired, levels));
    }
}

fn watch_v1(c: &WatchConfig, driver: &dyn CgroupDriver, stop: &AtomicBool, emit: &mut impl FnMut(Reading)) {
    let mut tracker = Tracker::new(c.thresholds, "cgroup v1 throttled time and memory use");
    let mut before: Option<(Instant, u64)> = None;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(FALLBACK_EVERY);
        let Ok(u) = driver.usage(&c.cgroup) else {
            if !driver.exists(&c.cgroup) {
                return;
            }
            continue;
        };
        let now = Instant::now();
        let cpu = before.map(|(t, throttled)| {
            let wall = now.saturating_duration_since(t).as_micros().max(1) as u64;
            (u.throttled_usec.saturating_sub(throttled) * 10_000 / wall).min(10_000) as u32
        });
        before = Some((now, u.throttled_usec));
        let memory = c.memory_limit.filter(|l| *l > 0).map(|l| {
            let bp = u128::from(u.memory_current) * 10_000 / u128::from(l);
            let over = (bp as u64).saturating_sub(V1_MEMORY_AT);
            (over * 10_000 / (10_000 - V1_MEMORY_AT)).min(10_000) as u32
        });
        emit(tracker.observe(now, [false; 3], [cpu, memory, None]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [Option<u32>; 3] = [Some(4000), Some(2000), None];

    #[test]
    fn a_fired_trigger_enters_pressure_before_the_average_catches_up_and_calm_ends_it() {
        let mut t = Tracker::new(T, "psi");
        let t0 = Instant::now();
        let r = t.observe(t0, [false; 3], [Some(1000), Some(0), Some(9000)]);
        assert!(!r.under);
        assert_eq!(r.levels, [Some(1000), Some(0), None], "io is not watched");
        let r = t.observe(t0, [true, false, false], [Some(1500), Some(0), None]);
        assert!(r.under);
        assert_eq!(r.over, [("cpu", 4000)], "the trigger proves the threshold was reached");
        let r = t.observe(t0 + Duration::from_secs(1), [false; 3], [Some(6000), Some(0), None]);
        assert_eq!((r.under, r.describe_over()), (true, "cpu 60%".to_owned()));
        // Below the threshold again, but not calm for long enough yet.
        let r = t.observe(t0 + Duration::from_millis(2500), [false; 3], [Some(3000), Some(0), None]);
        assert!(r.under);
        assert_eq!(r.over, [("cpu", 3000)]);
        let r = t.observe(t0 + Duration::from_secs(4), [false; 3], [Some(2000), Some(0), None]);
        assert!(!r.under);
        assert!(r.over.is_empty());
    }

    #[test]
    fn memory_above_its_own_threshold_is_pressure() {
        let mut t = Tracker::new(T, "psi");
        let r = t.observe(Instant::now(), [false; 3], [Some(100), Some(2500), None]);
        assert_eq!(r.over, [("memory", 2500)]);
    }

    #[test]
    fn the_paced_rate_falls_with_the_excess_over_the_threshold() {
        let at = |cpu: u32| Reading { under: true, levels: [Some(cpu), Some(0), None], ..Default::default() };
        assert_eq!(paced_rate(600, &T, &at(4000)), 600);
        assert_eq!(paced_rate(600, &T, &at(7000)), 330);
        assert_eq!(paced_rate(600, &T, &at(10_000)), 60);
        assert_eq!(paced_rate(5, &T, &at(10_000)), 1, "never below one a minute");
    }

    #[test]
    fn the_trailing_share_is_the_stall_counter_over_the_last_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut h: VecDeque<(Instant, u64)> = [(ms(0), 0), (ms(250), 0)].into();
        assert_eq!(trailing_share(&h, ms(250)), None, "a quarter of a second is not enough to judge");
        h.extend([(ms(500), 0), (ms(750), 0), (ms(1000), 200_000), (ms(1250), 437_500)]);
        // From 250 ms to 1250 ms: 437.5 ms stalled of 1 s.
        assert_eq!(trailing_share(&h, ms(1250)), Some(4375));
        assert_eq!(trailing_share(&VecDeque::new(), ms(0)), None);
    }

    #[test]
    fn avg10_is_read_from_the_some_line() {
        let text = "some avg10=29.17 avg60=5.69 avg300=1.20 total=3577566\nfull avg10=1.00 avg60=0 avg300=0 total=0\n";
        assert_eq!(parse_some_avg10(text), Some(2917));
        assert_eq!(parse_some_avg10("full avg10=1.00"), None);
        assert_eq!(parse_some_total(text), Some(3_577_566));
        assert_eq!(percent(2917), "29.2%");
        assert_eq!(percent(4000), "40%");
    }
}
