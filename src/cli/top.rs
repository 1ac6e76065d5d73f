//! `a2a top`: a live view of the control plane, as `kubectl top` and htop give: agents (CPU,
//! memory against the limit, throttling, restarts, tasks in flight), budgets (used, allocated
//! and limit, pressure) and the workflows that run (their progress). `--once -o table|json`
//! prints one view for scripts.
//!
//! Objects come from the API server, tasks in flight and the time throttled from its
//! `/metrics` (absent on a cluster's API server: shown as `-`). CPU% is the agent's
//! `status.usage.cpu` as a share of one core (as top shows it): the node measures it over its
//! own 10 s sampling period, as metrics-server does on a cluster. A rate of the
//! `a2a_agent_cpu_seconds_total` counter between two views would not do: the counter moves in
//! steps at each of the node's samples, so a window shorter than that period reads 0 or a
//! multiple of the truth.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::client::{ConnectArgs, Error, Result};
use crate::api::quantity::{CpuAmount, format_bytes, format_millicores};
use crate::api::workflow::{TaskPhase, WorkflowPhase};
use crate::api::{Agent, ResourceBudget, Workflow};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    #[default]
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Print one view and exit.
    #[arg(long)]
    pub once: bool,
    /// With --once: the output format.
    #[arg(short, long, value_enum, default_value_t = TopFormat::Table, requires = "once")]
    pub output: TopFormat,
    /// Time between refreshes of the live view (e.g. 2s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = super::values::positive_duration)]
    pub interval: Duration,
    /// Only this namespace's agents and workflows [default: every namespace].
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// One view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub agents: Vec<AgentRow>,
    pub budgets: Vec<BudgetRow>,
    pub workflows: Vec<WorkflowRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    pub namespace: String,
    pub name: String,
    /// `Running`, `Pending`...
    pub phase: String,
    pub ready_replicas: u32,
    pub replicas: u32,
    /// CPU used as a share of one core, in percent (`status.usage`); `None`: not measured
    /// yet, or no replica runs.
    pub cpu_percent: Option<f64>,
    pub cpu_limit_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// The kernel throttles it at its CPU limit now (the `Throttled` condition); `None`: not
    /// reported (a cluster).
    pub throttled: Option<bool>,
    /// Time its replicas spent throttled by the CPU limit since the control plane started
    /// (`a2a_agent_cpu_throttled_seconds_total`).
    pub throttled_seconds: Option<f64>,
    pub restarts: u32,
    pub tasks_in_flight: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub used: Option<u64>,
    pub allocated: u64,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRow {
    pub name: String,
    /// Bytes.
    pub memory: Amount,
    /// Millicores.
    pub cpu: Amount,
    pub agents: u32,
    pub pending: usize,
    pub pressure: bool,
    pub alert_firing: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub succeeded: usize,
    pub running: usize,
    pub failed: usize,
    pub total: usize,
}

/// Agent series read from `/metrics`, by (namespace, agent).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    throttled_seconds: HashMap<(String, String), f64>,
    in_flight: HashMap<(String, String), u64>,
}

/// The labels `namespace` and `agent` and the value of one exposition line of `family`.
fn parse_line<'a>(line: &'a str, family: &str) -> Option<((String, String), &'a str)> {
    let rest = line.strip_prefix(family)?.strip_prefix('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let label = |name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let end = labels[start..].find('"')? + start;
        Some(labels[start..end].to_owned())
    };
    Some(((label("namespace")?, label("agent")?), value.trim()))
}

/// The agent series of a `/metrics` text.
pub fn parse_metrics(text: &str) -> Sample {
    let mut s = Sample::default();
    for line in text.lines() {
        if let Some((k, v)) = parse_line(line, "a2a_agent_cpu_throttled_seconds_total") {
            s.throttled_seconds.insert(k, v.parse().unwrap_or(0.0));
        } else if let Some((k, v)) = parse_line(line, "a2a_agent_tasks_in_flight") {
            s.in_flight.insert(k, v.parse().unwrap_or(0));
        }
    }
    s
}

/// `/metrics` now; `None` when the server does not serve it.
async fn sample(client: &kube::Client) -> Option<Sample> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    Some(parse_metrics(&text))
}

/// The objects, listed now.
pub struct Objects {
    pub agents: Vec<Agent>,
    pub budgets: Vec<ResourceBudget>,
    pub workflows: Vec<Workflow>,
}

async fn objects(client: &kube::Client, namespace: Option<&str>, url: &str) -> Result<Objects> {
    let lp = ListParams::default();
    let (agents, workflows): (Api<Agent>, Api<Workflow>) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let e = |e| Error::from_kube(e, url);
    Ok(Objects {
        agents: agents.list(&lp).await.map_err(e)?.items,
        budgets: Api::<ResourceBudget>::all(client.clone()).list(&lp).await.map_err(e)?.items,
        workflows: workflows.list(&lp).await.map_err(e)?.items,
    })
}

/// The view of `objects`, with the agents' series of `/metrics` (`now`) when served.
pub fn snapshot(objects: &Objects, now: Option<&Sample>) -> Snapshot {
    let mut agents: Vec<AgentRow> = objects
        .agents
        .iter()
        .map(|a| {
            let k = (a.namespace().unwrap_or_default(), a.name_any());
            let status = a.status.clone().unwrap_or_default();
            let limits = &a.spec.resources.limits;
            let usage = status.usage.as_ref();
            let running = status.replicas > 0;
            AgentRow {
                phase: status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
                ready_replicas: status.ready_replicas,
                replicas: status.replicas,
                cpu_percent: usage.map(|u| u.cpu_millicores as f64 / 10.0).filter(|_| running),
                cpu_limit_millicores: limits.cpu.as_ref().and_then(|c| match c.value() {
                    CpuAmount::Millicores(m) => Some(m),
                    CpuAmount::HostShare { .. } => None,
                }),
                memory_bytes: usage.map(|u| u.memory_bytes),
                memory_limit_bytes: limits.memory.as_ref().map(|m| m.value()),
                throttled: now.is_some().then(|| {
                    status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Throttled" && c.status == crate::api::common::ConditionStatus::True)
                }),
                throttled_seconds: now.and_then(|n| n.throttled_seconds.get(&k).copied()),
                restarts: status.restarts,
                tasks_in_flight: now.and_then(|n| n.in_flight.get(&k).copied()).unwrap_or(0),
                namespace: k.0,
                name: k.1,
            }
        })
        .collect();
    agents.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let budgets = objects
        .budgets
        .iter()
        .map(|b| {
            let status = b.status.clone().unwrap_or_default();
            let (alloc, used) = (status.allocated.unwrap_or_default(), status.used);
            let condition = |t: &str| {
                status.conditions.iter().any(|c| c.type_ == t && c.status == crate::api::common::ConditionStatus::True)
            };
            BudgetRow {
                name: b.name_any(),
                memory: Amount {
                    used: used.as_ref().filter(|u| u.memory.is_some()).map(|u| u.memory_bytes),
                    allocated: alloc.memory_bytes,
                    limit: b.spec.limits.memory.as_ref().map(|m| m.value()),
                },
                cpu: Amount {
                    used: used.as_ref().filter(|u| u.cpu.is_some()).map(|u| u.cpu_millicores),
                    allocated: alloc.cpu_millicores,
                    limit: b.spec.limits.cpu.as_ref().and_then(|c| match c.value() {
                        CpuAmount::Millicores(m) => Some(m),
                        CpuAmount::HostShare { .. } => None,
                    }),
                },
                agents: status.agents,
                pending: status.pending.len(),
                pressure: condition("Pressure"),
                alert_firing: condition("AlertFiring"),
            }
        })
        .collect();
    let mut workflows: Vec<WorkflowRow> = objects
        .workflows
        .iter()
        .filter(|w| !w.status.as_ref().and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal))
        .map(|w| {
            let status = w.status.clone().unwrap_or_default();
            let count = |p: TaskPhase| status.tasks.iter().filter(|t| t.phase == p).count();
            WorkflowRow {
                namespace: w.namespace().unwrap_or_default(),
                name: w.name_any(),
                phase: status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into()),
                succeeded: count(TaskPhase::Succeeded),
                running: count(TaskPhase::Running),
                failed: count(TaskPhase::Failed),
                total: w.spec.tasks.len().max(status.tasks.len()),
            }
        })
        .collect();
    workflows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Snapshot { agents, budgets, workflows }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn percent(v: f64) -> String {
    format!("{v:.1}%")
}

fn bytes(v: u64) -> String {
    format_bytes(v)
}

/// `yes 4.2s`: throttled now, and for how long in all; `no` when never.
fn throttled(now: Option<bool>, seconds: Option<f64>) -> String {
    let Some(now) = now else { return "-".into() };
    let word = if now { "yes" } else { "no" };
    match seconds {
        Some(s) if s > 0.0 => format!("{word} {s:.1}s"),
        _ => word.into(),
    }
}

fn share(used: Option<u64>, limit: Option<u64>) -> String {
    match (used, limit) {
        (Some(u), Some(l)) if l > 0 => percent(u as f64 * 100.0 / l as f64),
        _ => "-".into(),
    }
}

/// The header and rows of each section, as text cells.
pub fn tables(s: &Snapshot) -> [(Vec<&'static str>, Vec<Vec<String>>); 3] {
    let agents = s
        .agents
        .iter()
        .map(|a| {
            vec![
                a.namespace.clone(),
                a.name.clone(),
                format!("{}/{}", a.ready_replicas, a.replicas),
                opt(a.cpu_percent, percent),
                opt(a.cpu_limit_millicores, format_millicores),
                opt(a.memory_bytes, bytes),
                opt(a.memory_limit_bytes, bytes),
                share(a.memory_bytes, a.memory_limit_bytes),
                throttled(a.throttled, a.throttled_seconds),
                a.restarts.to_string(),
                a.tasks_in_flight.to_string(),
            ]
        })
        .collect();
    let amount =
        |a: &Amount, f: fn(u64) -> String| format!("{}/{}/{}", opt(a.used, f), f(a.allocated), opt(a.limit, f));
    let budgets = s
        .budgets
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                amount(&b.memory, bytes),
                share(b.memory.used, b.memory.limit),
                amount(&b.cpu, format_millicores),
                b.agents.to_string(),
                b.pending.to_string(),
                if b.pressure { "True" } else { "False" }.into(),
                if b.alert_firing { "Firing" } else { "-" }.into(),
            ]
        })
        .collect();
    let workflows = s
        .workflows
        .iter()
        .map(|w| {
            vec![
                w.namespace.clone(),
                w.name.clone(),
                w.phase.clone(),
                format!("{}/{}", w.succeeded, w.total),
                w.running.to_string(),
                w.failed.to_string(),
                if w.total == 0 { "-".into() } else { percent(w.succeeded as f64 * 100.0 / w.total as f64) },
            ]
        })
        .collect();
    [
        (
            vec![
                "NAMESPACE",
                "AGENT",
                "READY",
                "CPU%",
                "CPU-LIMIT",
                "MEMORY",
                "MEM-LIMIT",
                "MEM%",
                "THROTTLED",
                "RESTARTS",
                "IN-FLIGHT",
            ],
            agents,
        ),
        (
            vec![
                "BUDGET",
                "MEMORY(USED/ALLOC/LIMIT)",
                "MEM%",
                "CPU(USED/ALLOC/LIMIT)",
                "AGENTS",
                "PENDING",
                "PRESSURE",
                "ALERTS",
            ],
            budgets,
        ),
        (vec!["NAMESPACE", "WORKFLOW", "PHASE", "PROGRESS", "RUNNING", "FAILED", "DONE"], workflows),
    ]
}

/// The view as kubectl-style tables, one section after another.
pub fn table_text(s: &Snapshot) -> String {
    let mut out = String::new();
    for (i, (header, rows)) in tables(s).iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (c, w) in cells.zip(&widths) {
                let _ = write!(l, "{c:<w$}   ");
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, &mut header.iter().copied());
        for r in rows {
            line(&mut out, &mut r.iter().map(String::as_str));
        }
    }
    out
}

/// Draws the view on `frame`.
pub fn render(frame: &mut ratatui::Frame, s: &Snapshot, title: &str) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::widgets::{Block, Paragraph, Row, Table};
    let [top, agents, budgets, workflows] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(s.agents.len() as u16 + 3),
        Constraint::Length(s.budgets.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title.to_owned()), top);
    let [a, b, w] = tables(s);
    for ((header, rows), area, name) in [(a, agents, "Agents"), (b, budgets, "Budgets"), (w, workflows, "Workflows")] {
        let mut widths: Vec<u16> = header.iter().map(|h| h.len() as u16).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count() as u16);
            }
        }
        let table = Table::new(rows.into_iter().map(Row::new), widths.into_iter().map(Constraint::Length))
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)))
            .column_spacing(2)
            .block(Block::bordered().title(name));
        frame.render_widget(table, area);
    }
}

/// The first line of the live view.
fn title(url: &str, interval: Duration) -> String {
    format!(
        "a2a top - {url} - every {}s - {} - q to quit",
        interval.as_secs_f64(),
        jiff::Timestamp::now().strftime("%H:%M:%S")
    )
}

/// `--once`: one view, in the chosen format.
pub async fn once(args: &TopArgs) -> Result<String> {
    let conn = args.connect.connect().await?;
    let now = sample(&conn.client).await;
    let objects = objects(&conn.client, args.namespace.as_deref(), &conn.url).await?;
    let s = snapshot(&objects, now.as_ref());
    Ok(match args.output {
        TopFormat::Table => table_text(&s),
        TopFormat::Json => {
            serde_json::to_string_pretty(&s).map_err(|e| Error::Api(format!("encoding the view: {e}")))? + "\n"
        }
    })
}

/// Puts the terminal back however the view ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The live view, until q, Esc or Ctrl-C.
pub async fn live(args: &TopArgs) -> Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let conn = args.connect.connect().await?;
    let io = |e: std::io::Error| Error::Api(format!("the terminal: {e}"));
    let mut terminal = ratatui::try_init().map_err(io)?;
    let _restore = Restore;
    loop {
        let now = sample(&conn.client).await;
        let objects = objects(&conn.client, args.namespace.as_deref(), &conn.url).await?;
        let s = snapshot(&objects, now.as_ref());
        let title = title(&conn.url, args.interval);
        terminal.draw(|f| render(f, &s, &title)).map_err(io)?;
        let deadline = Instant::now() + args.interval;
        let quit = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !event::poll(left)? {
                    return Ok(false);
                }
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(true);
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::Api(format!("the terminal: {e}")))?
        .map_err(io)?;
        if quit {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> Snapshot {
        Snapshot {
            agents: vec![AgentRow {
                namespace: "default".into(),
                name: "echo".into(),
                phase: "Running".into(),
                ready_replicas: 1,
                replicas: 1,
                cpu_percent: Some(12.5),
                cpu_limit_millicores: Some(500),
                memory_bytes: Some(24 << 20),
                memory_limit_bytes: Some(128 << 20),
                throttled: Some(true),
                throttled_seconds: Some(4.25),
                restarts: 0,
                tasks_in_flight: 2,
            }],
            budgets: vec![BudgetRow {
                name: "team".into(),
                memory: Amount { used: Some(24 << 20), allocated: 128 << 20, limit: Some(1 << 30) },
                cpu: Amount { used: Some(125), allocated: 500, limit: Some(2000) },
                agents: 1,
                pending: 0,
                pressure: false,
                alert_firing: false,
            }],
            workflows: vec![WorkflowRow {
                namespace: "default".into(),
                name: "fan-out".into(),
                phase: "Running".into(),
                succeeded: 3,
                running: 2,
                failed: 0,
                total: 8,
            }],
        }
    }

    /// The frame as text lines, trailing spaces cut.
    fn frame_text(s: &Snapshot, width: u16, height: u16) -> String {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height)).expect("terminal");
        t.draw(|f| render(f, s, "a2a top - https://127.0.0.1:6443 - every 2s - 12:00:00 - q to quit")).expect("draw");
        let buf = t.backend().buffer().clone();
        (0..height)
            .map(|y| (0..width).map(|x| buf[(x, y)].symbol().to_owned()).collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_frame_shows_the_agent_budget_and_workflow_rows() {
        let text = frame_text(&view(), 110, 16);
        let line = |needle: &str| text.lines().find(|l| l.contains(needle)).map(str::to_owned);
        let agent = line("echo").unwrap_or_else(|| panic!("no agent row:\n{text}"));
        for cell in ["default", "1/1", "12.5%", "500m", "24Mi", "128Mi", "18.8%", "yes 4.2s"] {
            assert!(agent.contains(cell), "{cell} not in {agent:?}\n{text}");
        }
        assert!(line("CPU%").is_some_and(|h| h.contains("IN-FLIGHT")), "{text}");
        assert!(line("team").is_some_and(|l| l.contains("24Mi/128Mi/1Gi") && l.contains("125m/500m/2")), "{text}");
        assert!(line("fan-out").is_some_and(|l| l.contains("3/8") && l.contains("37.5%")), "{text}");
        assert!(text.lines().next().is_some_and(|l| l.starts_with("a2a top")), "{text}");
    }

    #[test]
    fn cpu_is_the_measured_usage_and_throttling_the_condition_with_the_counter() {
        let m = "# TYPE a2a_agent_cpu_throttled_seconds_total counter\n\
                 a2a_agent_cpu_throttled_seconds_total{namespace=\"default\",agent=\"echo\"} 1.5\n\
                 a2a_agent_tasks_in_flight{namespace=\"default\",agent=\"echo\"} 3\n\
                 a2a_agent_tasks_in_flight{namespace=\"other\",agent=\"echo\"} 7\n";
        let agent: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {"command": ["sleep", "1"], "resources": {"limits": {"memory": "64Mi"}}},
            "status": {"replicas": 1, "readyReplicas": 1,
                "usage": {"memory": "16Mi", "memoryBytes": 16777216, "cpu": "250m", "cpuMillicores": 250},
                "conditions": [{"type": "Throttled", "status": "True", "reason": "CPUQuotaReached", "message": "m",
                    "lastTransitionTime": "2026-12-01T10:00:00Z"}]}
        }))
        .expect("agent");
        let objects = Objects { agents: vec![agent], budgets: vec![], workflows: vec![] };
        let s = snapshot(&objects, Some(&parse_metrics(m)));
        let a = &s.agents[0];
        assert_eq!(
            (a.cpu_percent, a.throttled, a.throttled_seconds, a.tasks_in_flight),
            (Some(25.0), Some(true), Some(1.5), 3)
        );
        assert_eq!((a.memory_bytes, a.memory_limit_bytes), (Some(16 << 20), Some(64 << 20)));
        // Without /metrics (a cluster's API server): what only the node reports is unknown.
        let a = &snapshot(&objects, None).agents[0];
        assert_eq!((a.cpu_percent, a.throttled, a.throttled_seconds, a.tasks_in_flight), (Some(25.0), None, None, 0));
    }
}
