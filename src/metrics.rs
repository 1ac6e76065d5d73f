//! The metrics of agents, budgets and workflows, kept by the node and the engine of one
//! process and written in the Prometheus text exposition format beside the API server's own
//! series (see `docs/operations.md`, "Metrics"). Series of an agent, budget or workflow that
//! is deleted are dropped with it, so that the number of series follows the objects that exist.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The upper bounds of a histogram's buckets, in seconds.
pub trait Buckets {
    const BOUNDS: &'static [f64];
}

/// A Prometheus histogram with the buckets of `B`.
#[derive(Clone, Debug)]
pub struct Histogram<B> {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    buckets: std::marker::PhantomData<B>,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Histogram { counts: vec![0; B::BOUNDS.len()], count: 0, sum: 0.0, buckets: std::marker::PhantomData }
    }
}

impl<B: Buckets> Histogram<B> {
    pub fn observe(&mut self, seconds: f64) {
        for (slot, bound) in self.counts.iter_mut().zip(B::BOUNDS) {
            if seconds <= *bound {
                *slot += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Its series named `name`, with `labels` (`a="x",b="y"`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (n, bound) in self.counts.iter().zip(B::BOUNDS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The dispatch-latency and task-duration buckets: from a millisecond to five minutes.
#[derive(Clone, Debug)]
struct TaskTimes;

impl Buckets for TaskTimes {
    const BOUNDS: &'static [f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0];
}

/// What the node knows of one agent.
#[derive(Clone, Debug, Default)]
struct AgentSeries {
    cpu_seconds: f64,
    memory_bytes: u64,
    throttled_periods: u64,
    throttled_seconds: f64,
    restarts: u64,
    oom_kills: u64,
    replicas: u32,
    ready_replicas: u32,
}

/// The amounts of one budget for one resource (memory, cpu, pids).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetAmounts {
    pub allocated: f64,
    pub used: Option<f64>,
    pub limit: Option<f64>,
}

/// What the node knows of one budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetSeries {
    /// By resource name: `memory` (bytes), `cpu` (cores), `pids`.
    pub resources: BTreeMap<&'static str, BudgetAmounts>,
    pub pressure: bool,
    /// By resource: whether its alert fires.
    pub alerts: BTreeMap<String, bool>,
}

#[derive(Clone, Debug, Default)]
struct WorkflowSeries {
    dispatch_latency: Histogram<TaskTimes>,
    task_duration: Histogram<TaskTimes>,
    /// (outcome, reason) -> count.
    outcomes: BTreeMap<(String, String), u64>,
    retries: u64,
}

/// What the engine has queued and running, read when scraped.
#[derive(Clone, Debug, Default)]
pub struct EngineGauges {
    /// (namespace, priority) -> tasks queued.
    pub queued: BTreeMap<(String, String), u64>,
    /// (namespace, agent) -> attempts in flight.
    pub in_flight: BTreeMap<(String, String), u64>,
}

type Key = (String, String);
type Collector = Box<dyn Fn() -> Option<EngineGauges> + Send + Sync>;

#[derive(Default)]
struct Inner {
    agents: BTreeMap<Key, AgentSeries>,
    budgets: BTreeMap<String, BudgetSeries>,
    workflows: BTreeMap<Key, WorkflowSeries>,
    /// Alert webhook deliveries by outcome.
    notifications: BTreeMap<&'static str, u64>,
    /// Peer -> (breaker state gauge, transitions).
    breakers: BTreeMap<String, (i64, u64)>,
}

/// The shared registry (one per process: the node, the engine and the API server of `a2a
/// serve` or `a2a run`, or the operator, all report here).
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    engines: Mutex<Vec<Collector>>,
    /// Set: the per-task series are not recorded (the metrics-overhead bench's baseline).
    off: std::sync::atomic::AtomicBool,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn agent(&self, namespace: &str, name: &str, f: impl FnOnce(&mut AgentSeries)) {
        f(self.lock().agents.entry(key(namespace, name)).or_default());
    }

    /// CPU time an agent's replicas used since the last sample, its memory now, and the
    /// throttled periods and time since the last sample.
    pub fn agent_sampled(
        &self,
        namespace: &str,
        name: &str,
        cpu: Duration,
        memory_bytes: u64,
        throttled_periods: u64,
        throttled: Duration,
    ) {
        self.agent(namespace, name, |a| {
            a.cpu_seconds += cpu.as_secs_f64();
            a.memory_bytes = memory_bytes;
            a.throttled_periods += throttled_periods;
            a.throttled_seconds += throttled.as_secs_f64();
        });
    }

    /// An agent's memory as measured elsewhere (the operator: metrics-server).
    pub fn agent_memory(&self, namespace: &str, name: &str, memory_bytes: u64) {
        self.agent(namespace, name, |a| a.memory_bytes = memory_bytes);
    }

    /// The replica counts and restarts of an agent's status.
    pub fn agent_status(&self, namespace: &str, name: &str, replicas: u32, ready_replicas: u32, restarts: u64) {
        self.agent(namespace, name, |a| {
            a.replicas = replicas;
            a.ready_replicas = ready_replicas;
            a.restarts = a.restarts.max(restarts);
        });
    }

    /// The kernel's OOM killer killed a replica of the agent.
    pub fn agent_oom_killed(&self, namespace: &str, name: &str) {
        self.agent(namespace, name, |a| a.oom_kills += 1);
    }

    /// The agent was deleted: its series go.
    pub fn agent_gone(&self, namespace: &str, name: &str) {
        self.lock().agents.remove(&key(namespace, name));
    }

    pub fn budget(&self, name: &str, series: BudgetSeries) {
        self.lock().budgets.insert(name.to_owned(), series);
    }

    /// An alert notification ended with `outcome`: `sent`, `retried` (an attempt failed and
    /// is tried again), `failed` (after the last attempt), `dropped` (its queue was full).
    pub fn alert_notification(&self, outcome: &'static str) {
        *self.lock().notifications.entry(outcome).or_default() += 1;
    }

    /// Peer `peer`'s breaker changed to `state` (0 closed, 1 half-open, 2 open).
    pub fn peer_breaker(&self, peer: &str, state: i64) {
        let mut inner = self.lock();
        let e = inner.breakers.entry(peer.to_owned()).or_default();
        e.0 = state;
        e.1 += 1;
    }

    pub fn budget_gone(&self, name: &str) {
        self.lock().budgets.remove(name);
    }

    /// Only the budgets named stay (the operator's pass over every budget).
    pub fn budgets_retain(&self, names: &std::collections::BTreeSet<String>) {
        self.lock().budgets.retain(|n, _| names.contains(n));
    }

    fn workflow(&self, namespace: &str, name: &str, f: impl FnOnce(&mut WorkflowSeries)) {
        f(self.lock().workflows.entry(key(namespace, name)).or_default());
    }

    /// Whether per-task series are recorded (they are by default). Only the benchmark that
    /// measures what recording costs turns it off (`benches/metrics_overhead.rs`).
    pub fn set_recording(&self, on: bool) {
        self.off.store(!on, std::sync::atomic::Ordering::Relaxed);
    }

    fn recording(&self) -> bool {
        !self.off.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A task attempt was sent to an agent `waited` after it was queued.
    pub fn task_dispatched(&self, namespace: &str, workflow: &str, waited: Duration) {
        if !self.recording() {
            return;
        }
        self.workflow(namespace, workflow, |w| w.dispatch_latency.observe(waited.as_secs_f64()));
    }

    /// A task attempt ended with `outcome` (`succeeded`, `failed`, `retried`, `cancelled`,
    /// `waiting`) for `reason`, after `took` (when its start is known).
    pub fn task_ended(&self, namespace: &str, workflow: &str, outcome: &str, reason: &str, took: Option<Duration>) {
        if !self.recording() {
            return;
        }
        self.workflow(namespace, workflow, |w| {
            if let Some(took) = took {
                w.task_duration.observe(took.as_secs_f64());
            }
            *w.outcomes.entry((outcome.to_owned(), reason.to_owned())).or_default() += 1;
            if outcome == "retried" {
                w.retries += 1;
            }
        });
    }

    pub fn workflow_gone(&self, namespace: &str, name: &str) {
        self.lock().workflows.remove(&key(namespace, name));
    }

    /// Adds what is asked for an engine's queue and in-flight gauges at each scrape (the
    /// operator runs one engine per watched namespace); the collector answers `None` once its
    /// engine is gone, and is then dropped.
    pub fn add_engine(&self, collector: Collector) {
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).push(collector);
    }

    fn engine_gauges(&self) -> EngineGauges {
        let mut all = EngineGauges::default();
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| match c() {
            None => false,
            Some(g) => {
                for (k, n) in g.queued {
                    *all.queued.entry(k).or_default() += n;
                }
                for (k, n) in g.in_flight {
                    *all.in_flight.entry(k).or_default() += n;
                }
                true
            }
        });
        all
    }

    /// Appends every family in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let engine = self.engine_gauges();
        let inner = self.lock();
        let agents = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&AgentSeries) -> String| {
            header(out, name, kind, help);
            for ((ns, agent), a) in &inner.agents {
                let _ =
                    writeln!(out, "{name}{{namespace=\"{}\",agent=\"{}\"}} {}", escape(ns), escape(agent), value(a));
            }
        };
        agents(out, "a2a_agent_cpu_seconds_total", "counter", "CPU time used by the agent's replicas.", &|a| {
            a.cpu_seconds.to_string()
        });
        agents(out, "a2a_agent_memory_bytes", "gauge", "Memory used by the agent's running replicas.", &|a| {
            a.memory_bytes.to_string()
        });
        agents(
            out,
            "a2a_agent_cpu_throttled_periods_total",
            "counter",
            "CPU quota periods in which the agent's replicas were throttled.",
            &|a| a.throttled_periods.to_string(),
        );
        agents(
            out,
            "a2a_agent_cpu_throttled_seconds_total",
            "counter",
            "Time the agent's replicas spent throttled by their CPU limit.",
            &|a| a.throttled_seconds.to_string(),
        );
        agents(out, "a2a_agent_restarts_total", "counter", "Restarts of the agent's replicas.", &|a| {
            a.restarts.to_string()
        });
        agents(
            out,
            "a2a_agent_oom_kills_total",
            "counter",
            "Replicas of the agent the kernel killed for exceeding its memory limit.",
            &|a| a.oom_kills.to_string(),
        );
        agents(out, "a2a_agent_replicas", "gauge", "Running replicas of the agent.", &|a| a.replicas.to_string());
        agents(out, "a2a_agent_ready_replicas", "gauge", "Ready replicas of the agent.", &|a| {
            a.ready_replicas.to_string()
        });
        header(out, "a2a_agent_tasks_in_flight", "gauge", "Task attempts sent to the agent and not yet ended.");
        for ((ns, agent), n) in &engine.in_flight {
            let _ = writeln!(
                out,
                "a2a_agent_tasks_in_flight{{namespace=\"{}\",agent=\"{}\"}} {n}",
                escape(ns),
                escape(agent)
            );
        }

        for (name, help, pick) in [
            (
                "a2a_budget_allocated",
                "Resources the budget's admitted agents reserve, by resource (memory in bytes, cpu in cores).",
                0,
            ),
            (
                "a2a_budget_used",
                "Resources the budget's agents use now, by resource (memory in bytes, cpu in cores).",
                1,
            ),
            ("a2a_budget_limit", "The budget's limit, by resource (memory in bytes, cpu in cores).", 2),
        ] {
            header(out, name, "gauge", help);
            for (budget, b) in &inner.budgets {
                for (resource, r) in &b.resources {
                    let value = match pick {
                        0 => Some(r.allocated),
                        1 => r.used,
                        _ => r.limit,
                    };
                    if let Some(v) = value {
                        let _ = writeln!(out, "{name}{{budget=\"{}\",resource=\"{resource}\"}} {v}", escape(budget));
                    }
                }
            }
        }
        header(
            out,
            "a2a_budget_pressure",
            "gauge",
            "1 when the budget is under pressure (agents wait for room, or memory is near its limit).",
        );
        for (budget, b) in &inner.budgets {
            let _ = writeln!(out, "a2a_budget_pressure{{budget=\"{}\"}} {}", escape(budget), u8::from(b.pressure));
        }
        header(out, "a2a_budget_alerts_firing", "gauge", "1 when the budget's alert on the resource fires.");
        for (budget, b) in &inner.budgets {
            for (resource, firing) in &b.alerts {
                let _ = writeln!(
                    out,
                    "a2a_budget_alerts_firing{{budget=\"{}\",resource=\"{}\"}} {}",
                    escape(budget),
                    escape(resource),
                    u8::from(*firing)
                );
            }
        }
        header(
            out,
            "a2a_alert_notifications_total",
            "counter",
            "Alert webhook deliveries by outcome (sent, retried, failed, dropped).",
        );
        for (outcome, n) in &inner.notifications {
            let _ = writeln!(out, "a2a_alert_notifications_total{{outcome=\"{outcome}\"}} {n}");
        }
        header(out, "a2a_peer_breaker_state", "gauge", "Each peer's circuit breaker: 0 closed, 1 half-open, 2 open.");
        for (peer, (state, _)) in &inner.breakers {
            let _ = writeln!(out, "a2a_peer_breaker_state{{peer=\"{}\"}} {state}", escape(peer));
        }
        header(
            out,
            "a2a_peer_breaker_transitions_total",
            "counter",
            "Changes of state of each peer's circuit breaker.",
        );
        for (peer, (_, n)) in &inner.breakers {
            let _ = writeln!(out, "a2a_peer_breaker_transitions_total{{peer=\"{}\"}} {n}", escape(peer));
        }

        header(
            out,
            "a2a_workflow_dispatch_latency_seconds",
            "histogram",
            "Time from a task attempt being queued to its dispatch to an agent.",
        );
        for ((ns, wf), w) in &inner.workflows {
            w.dispatch_latency.render(out, "a2a_workflow_dispatch_latency_seconds", &wf_labels(ns, wf));
        }
        header(out, "a2a_workflow_task_duration_seconds", "histogram", "Time from a task attempt's start to its end.");
        for ((ns, wf), w) in &inner.workflows {
            w.task_duration.render(out, "a2a_workflow_task_duration_seconds", &wf_labels(ns, wf));
        }
        header(out, "a2a_workflow_task_outcomes_total", "counter", "Ended task attempts by outcome and reason.");
        for ((ns, wf), w) in &inner.workflows {
            for ((outcome, reason), n) in &w.outcomes {
                let _ = writeln!(
                    out,
                    "a2a_workflow_task_outcomes_total{{{},outcome=\"{}\",reason=\"{}\"}} {n}",
                    wf_labels(ns, wf),
                    escape(outcome),
                    escape(reason)
                );
            }
        }
        header(
            out,
            "a2a_workflow_task_retries_total",
            "counter",
            "Failed task attempts that the task's retry policy runs again.",
        );
        for ((ns, wf), w) in &inner.workflows {
            let _ = writeln!(out, "a2a_workflow_task_retries_total{{{}}} {}", wf_labels(ns, wf), w.retries);
        }
        header(out, "a2a_workflow_queued_tasks", "gauge", "Task attempts waiting for dispatch, by priority.");
        for ((ns, priority), n) in &engine.queued {
            let _ = writeln!(
                out,
                "a2a_workflow_queued_tasks{{namespace=\"{}\",priority=\"{}\"}} {n}",
                escape(ns),
                escape(priority)
            );
        }
        crate::traces::render_metrics(out);
    }
}

/// A budget's series in the metrics: memory in bytes, cpu in cores, pids.
pub fn budget_series(
    limits: &crate::controller::admission::Limits,
    summary: &crate::controller::budget_status::BudgetSummary,
) -> crate::metrics::BudgetSeries {
    use crate::metrics::BudgetAmounts;
    let (a, u) = (&summary.allocated, summary.used.as_ref());
    let cores = |m: u64| m as f64 / 1000.0;
    let mut resources = std::collections::BTreeMap::new();
    resources.insert(
        "memory",
        BudgetAmounts {
            allocated: a.memory_bytes as f64,
            used: u.map(|u| u.memory_bytes as f64),
            limit: limits.memory.map(|m| m as f64),
        },
    );
    resources.insert(
        "cpu",
        BudgetAmounts {
            allocated: cores(a.cpu_millicores),
            used: u.map(|u| cores(u.cpu_millicores)),
            limit: limits.cpu_millis.map(cores),
        },
    );
    resources.insert(
        "pids",
        BudgetAmounts {
            allocated: a.pids as f64,
            used: u.map(|u| u.pids as f64),
            limit: limits.pids.map(|p| p as f64),
        },
    );
    crate::metrics::BudgetSeries {
        resources,
        pressure: summary.pressure.status == crate::api::common::ConditionStatus::True,
        alerts: summary.alerts.iter().map(|al| (al.resource.to_string(), al.firing == Some(true))).collect(),
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn wf_labels(ns: &str, wf: &str) -> String {
    format!("namespace=\"{}\",workflow=\"{}\"", escape(ns), escape(wf))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_breakers_show_their_state_and_count_their_transitions() {
        let r = Registry::default();
        r.peer_breaker("h2", 2);
        r.peer_breaker("h2", 1);
        r.peer_breaker("h2", 0);
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("a2a_peer_breaker_state{peer=\"h2\"} 0"), "{out}");
        assert!(out.contains("a2a_peer_breaker_transitions_total{peer=\"h2\"} 3"), "{out}");
        assert!(out.contains("# TYPE a2a_peer_breaker_state gauge"), "{out}");
    }

    #[test]
    fn a_deleted_agent_or_workflow_leaves_no_series() {
        let r = Registry::default();
        r.agent_status("ns", "a", 1, 1, 2);
        r.task_ended("ns", "wf", "succeeded", "Completed", Some(Duration::from_millis(3)));
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("a2a_agent_restarts_total{namespace=\"ns\",agent=\"a\"} 2"), "{out}");
        assert!(out.contains("a2a_workflow_task_duration_seconds_count{namespace=\"ns\",workflow=\"wf\"} 1"), "{out}");
        r.agent_gone("ns", "a");
        r.workflow_gone("ns", "wf");
        let mut out = String::new();
        r.render(&mut out);
        assert!(!out.contains("agent=\"a\""), "{out}");
        assert!(!out.contains("workflow=\"wf\""), "{out}");
    }
}
