//! `a2a run -f FILE`: apply and follow in one foreground command. Uses the running `a2a
//! serve` when there is one; otherwise runs an embedded control plane for the duration, with
//! a store of its own (it starts only what its files declare), and stops the agents it
//! started when done, interrupted (SIGINT, SIGTERM) or not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};

use super::FileArgs;
use super::apply::{FIELD_MANAGER, load};
use super::client::{self, ConnectArgs, Error, Result, dynamic_api};
use crate::api::workflow::{TaskPhase, WorkflowPhase, WorkflowStatus};
use crate::api::{Kind, Object, Workflow};
use crate::local::{ControlPlane, LocalOptions};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Override a workflow param: `--param topic=cgroups` (repeatable; the param must be
    /// declared in spec.params).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Print every task's output after the summary.
    #[arg(long)]
    pub output: bool,
    /// Give up (exit 1) after this long.
    #[arg(long, value_parser = super::values::duration)]
    pub timeout: Option<Duration>,
    /// Home of the embedded control plane: agent logs go under it; its store lives in
    /// DIR/runs/<pid> for this run only [default: $A2A_HOME].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where cgroups are mounted (embedded control plane).
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Run agents without kernel-enforced limits when cgroups cannot be managed.
    #[arg(long)]
    pub allow_unenforced: bool,
    /// The top cgroup directory (embedded control plane).
    #[arg(long, value_name = "NAME", default_value = "a2a")]
    pub cgroup_top: String,
    /// Namespace for documents that name none.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What `a2a run` reports.
pub struct RunReport {
    /// The final table and (with `--output`) the outputs.
    pub text: String,
    pub succeeded: bool,
    /// The signal (SIGINT, SIGTERM) that ended the run early: it exits 128 + its number.
    pub interrupted: Option<i32>,
}

fn apply_params(docs: &mut [crate::api::manifest::Document], params: &[String]) -> Result<()> {
    let mut parsed = BTreeMap::new();
    for p in params {
        let (k, v) = p.split_once('=').ok_or_else(|| Error::Usage(format!("--param {p:?}: write KEY=VALUE")))?;
        parsed.insert(k.to_owned(), v.to_owned());
    }
    let mut used = BTreeSet::new();
    for doc in docs.iter_mut() {
        if let Object::Workflow(w) = &mut doc.object {
            for (k, v) in &parsed {
                if w.spec.params.contains_key(k) {
                    w.spec.params.insert(k.clone(), v.clone());
                    doc.raw["spec"]["params"][k] = serde_json::Value::String(v.clone());
                    used.insert(k.clone());
                }
            }
        }
    }
    if let Some(unknown) = parsed.keys().find(|k| !used.contains(*k)) {
        return Err(Error::Usage(format!("--param {unknown}: no workflow in these files declares it in spec.params")));
    }
    Ok(())
}

pub async fn run(args: &RunArgs) -> Result<RunReport> {
    let super::input::Manifests { mut docs, config } = load(&args.files)?;
    apply_params(&mut docs, &args.params)?;
    if !docs.iter().any(|d| d.object.kind() == Kind::Workflow) {
        return Err(Error::Usage("these files hold no Workflow to run; use `a2a apply` for agents and budgets".into()));
    }
    // Before anything starts: a signal from here on stops what this run started, gracefully.
    let signals = super::serve::Signals::install().map_err(|e| Error::Api(e.to_string()))?;
    // A reachable daemon is used as is; otherwise an embedded control plane runs meanwhile.
    let (client, namespace, plane) = match args.connect.connect().await {
        Ok(conn) => (conn.client, conn.namespace, None),
        Err(Error::NoKubeconfig { .. } | Error::Unreachable { .. }) if args.connect.kubeconfig.is_none() => {
            let home = args.state_dir.clone().unwrap_or_else(client::a2a_home);
            let mut opts = LocalOptions::new(&home);
            opts.port = 0;
            opts.cgroup_root = args.cgroup_root.clone();
            opts.allow_unenforced = args.allow_unenforced;
            opts.cgroup_top = args.cgroup_top.clone();
            opts.stop_agents_on_exit = true;
            opts.scoped_state = true;
            let plane = ControlPlane::start(opts).await.map_err(|e| Error::Api(e.to_string()))?;
            eprintln!("a2a run: no daemon running; started an embedded control plane (state in {})", home.display());
            (plane.client.clone(), "default".to_owned(), Some(plane))
        }
        Err(e) => return Err(e),
    };
    let ns = args.namespace.clone().unwrap_or(namespace);
    let result = tokio::select! {
        r = apply_and_follow(args, &docs, &config, &client, ns, plane.is_some()) => r,
        signal = signals.received() => {
            let name = if signal == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
            if plane.is_some() {
                eprintln!("a2a run: {name}: stopping the agents of this run");
            }
            Ok(RunReport { text: String::new(), succeeded: false, interrupted: Some(signal) })
        }
    };
    if let Some(plane) = plane {
        plane.stop().await;
    }
    result
}

async fn apply_and_follow(
    args: &RunArgs,
    docs: &[crate::api::manifest::Document],
    config: &[crate::api::manifest::ConfigDocument],
    client: &kube::Client,
    default_ns: String,
    embedded: bool,
) -> Result<RunReport> {
    let url = "the control plane";
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // Secrets and ConfigMaps first: the agents that reference them start at once.
    for doc in config {
        let ns = doc.namespace.clone().unwrap_or(default_ns.clone());
        let mut body = doc.raw.clone();
        if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        client::config_api(client, doc.kind, &ns)
            .patch(&doc.name, &params, &Patch::Apply(&body))
            .await
            .map_err(|e| Error::from_kube(e, url))?;
    }
    let mut workflows = Vec::new();
    // Budgets and agents first, so workflows find their agents.
    let mut ordered: Vec<&crate::api::manifest::Document> = docs.iter().collect();
    ordered.sort_by_key(|d| match d.object.kind() {
        Kind::ResourceBudget => 0,
        Kind::Agent => 1,
        Kind::Workflow => 2,
    });
    for doc in ordered {
        let kind = doc.object.kind();
        let ns = kind.namespaced().then(|| doc.object.metadata().namespace.clone().unwrap_or(default_ns.clone()));
        let api: Api<DynamicObject> = dynamic_api(client, kind, ns.as_deref());
        let name = doc.object.name().to_owned();
        let mut body = doc.raw.clone();
        if let (Some(ns), Some(meta)) = (&ns, body.get_mut("metadata").and_then(|m| m.as_object_mut())) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        if kind == Kind::Workflow {
            // A workflow that already ran is run again from scratch: delete, wait, create.
            let typed: Api<Workflow> = Api::namespaced(client.clone(), ns.as_deref().unwrap_or(&default_ns));
            if let Some(old) = typed.get_opt(&name).await.map_err(|e| Error::from_kube(e, url))?
                && old.status.and_then(|s| s.phase).is_some_and(WorkflowPhase::is_terminal)
            {
                api.delete(&name, &DeleteParams::background()).await.map_err(|e| Error::from_kube(e, url))?;
                while api.get_opt(&name).await.map_err(|e| Error::from_kube(e, url))?.is_some() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            workflows.push((ns.clone().unwrap_or_default(), name.clone()));
        }
        api.patch(&name, &params, &Patch::Apply(&body)).await.map_err(|e| Error::from_kube(e, url))?;
    }
    follow(args, client, &workflows, embedded).await
}

/// For the progress bar: why waiting tasks wait (`b waits: agent "x" ...`, `+2 more`).
fn waiting_summary(status: &WorkflowStatus) -> String {
    // A big workflow's summary names the stuck tasks by reason.
    if status.tasks.is_empty()
        && let Some(first) = status.stuck.first()
    {
        let more = status.stuck.iter().map(|s| s.count).sum::<u32>().saturating_sub(1);
        let more = if more > 0 { format!(" (+{more} more waiting)") } else { String::new() };
        let task = first.tasks.first().map(String::as_str).unwrap_or_default();
        return format!("{task} waits: {}{more}", first.message.as_deref().unwrap_or(&first.reason));
    }
    let mut waiting = status.tasks.iter().filter(|t| t.phase == TaskPhase::Pending && t.message.is_some());
    match waiting.next() {
        None => String::new(),
        Some(first) => {
            let more = waiting.count();
            let more = if more > 0 { format!(" (+{more} more waiting)") } else { String::new() };
            format!("{} waits: {}{more}", first.name, first.message.as_deref().unwrap_or_default())
        }
    }
}

/// How long a task ran (or `running`, or `-`).
pub fn duration(t: &crate::api::workflow::TaskStatus) -> String {
    match (t.started_at, t.finished_at) {
        (Some(s), Some(f)) => {
            let ms = (f.0.as_millisecond() - s.0.as_millisecond()).max(0);
            if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", ms as f64 / 1000.0) }
        }
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

async fn follow(
    args: &RunArgs,
    client: &kube::Client,
    workflows: &[(String, String)],
    embedded: bool,
) -> Result<RunReport> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::with_draw_target(if tty {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let style = indicatif::ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} tasks {elapsed} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut progress = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), (TaskPhase, Option<String>)> = BTreeMap::new();
    let mut finals: BTreeMap<(String, String), (String, WorkflowStatus)> = BTreeMap::new();
    // On a terminal the user answers agents' questions inline; elsewhere the run ends there.
    let mut answers = super::run_input::Answers::new(tty && std::io::stdin().is_terminal());
    loop {
        for (ns, name) in workflows {
            if finals.contains_key(&(ns.clone(), name.clone())) {
                continue;
            }
            let api: Api<Workflow> = Api::namespaced(client.clone(), ns);
            let mut wf = api.get(name).await.map_err(|e| Error::from_kube(e, "the control plane"))?;
            // A big workflow keeps its tasks beside it: read back at the end, or while a task
            // asks a question; meanwhile its summary's counts move the bar.
            if wf.status.as_ref().is_some_and(|s| {
                s.phase.is_some_and(WorkflowPhase::is_terminal)
                    || ["InputRequired", "AuthRequired"].iter().any(|p| s.task_counts.get(*p).is_some_and(|n| *n > 0))
            }) {
                crate::controller::offload::fill(client, &mut wf)
                    .await
                    .map_err(|e| Error::Usage(format!("workflow {name:?}: reading its tasks' status: {e}")))?;
            }
            let status = wf.status.clone().unwrap_or_default();
            // Tasks as the engine runs them (`forEach` expanded), once it has written a status.
            let total = match &status.task_status_ref {
                _ if !status.tasks.is_empty() => status.tasks.len() as u64,
                Some(r) => u64::from(r.tasks),
                None => wf.spec.tasks.len() as u64,
            };
            let bar = progress.entry(name.clone()).or_insert_with(|| {
                let b = bars.add(indicatif::ProgressBar::new(total));
                b.set_style(style.clone());
                b.set_prefix(name.clone());
                b
            });
            bar.set_length(total);
            let done = if status.tasks.is_empty() {
                ["Succeeded", "Failed", "Cancelled", "Skipped"]
                    .iter()
                    .map(|p| u64::from(status.task_counts.get(*p).copied().unwrap_or(0)))
                    .sum()
            } else {
                status.tasks.iter().filter(|t| t.phase.is_terminal()).count() as u64
            };
            bar.set_position(done);
            let running: Vec<String> = status
                .tasks
                .iter()
                .filter(|t| t.phase == TaskPhase::Running)
                .map(|t| format!("{}→{}", t.name, t.agent.clone().unwrap_or_default()))
                .collect();
            let waiting = waiting_summary(&status);
            bar.set_message(if running.is_empty() { waiting } else { running.join(" ") });
            for t in &status.tasks {
                let key = (name.clone(), t.name.clone());
                let now = (t.phase, t.message.clone());
                if seen.get(&key) != Some(&now) {
                    let reason_changed = seen.get(&key).is_none_or(|(_, m)| *m != t.message);
                    seen.insert(key, now);
                    // Why a task waits (or failed without running) is said on a TTY too,
                    // above the bars, where it stays.
                    let line = match (&t.reason, &t.message) {
                        // What the agent asks is said on a TTY too: the run waits for it.
                        (_, Some(question)) if t.phase.is_waiting() => Some(format!(
                            "{name}/{}: {:?}{}: {question}",
                            t.name,
                            t.phase,
                            t.agent.as_ref().map(|a| format!(" on {a}")).unwrap_or_default()
                        )),
                        (Some(reason), Some(message)) if reason_changed => {
                            Some(format!("{name}/{}: {:?} ({reason}): {message}", t.name, t.phase))
                        }
                        _ if !tty && t.phase != TaskPhase::Pending => Some(format!(
                            "{name}/{}: {:?}{}",
                            t.name,
                            t.phase,
                            t.agent.as_ref().map(|a| format!(" on {a}")).unwrap_or_default()
                        )),
                        _ => None,
                    };
                    match line {
                        Some(line) if tty => {
                            let _ = bars.println(line);
                        }
                        Some(line) => eprintln!("{line}"),
                        None => {}
                    }
                }
            }
            if status.phase.is_some_and(WorkflowPhase::is_terminal) {
                bar.finish_with_message(format!("{:?}", status.phase.unwrap_or(WorkflowPhase::Failed)));
                finals.insert((ns.clone(), name.clone()), (wf.metadata.uid.clone().unwrap_or_default(), status));
                continue;
            }
            if answers.enabled() && status.tasks.iter().any(|t| t.phase.is_waiting()) {
                // `--timeout` bounds the run, the time at the prompt included.
                let asked = answers.ask(&bars, &api, ns, &wf);
                match args.timeout {
                    Some(limit) => tokio::time::timeout(limit.saturating_sub(started.elapsed()), asked)
                        .await
                        .map_err(|_| Error::Timeout(limit, "waiting for the workflows to finish".into()))??,
                    None => asked.await?,
                }
            }
            if !answers.enabled() && crate::controller::plan::waits_for_input(&wf.spec, &status) {
                // Nothing moves until the agent's question is answered, and no one here answers
                // it: the run ends rather than wait without end, and says what is asked.
                bar.abandon_with_message("waiting for input");
                finals.insert((ns.clone(), name.clone()), (wf.metadata.uid.clone().unwrap_or_default(), status));
            }
        }
        if finals.len() == workflows.len() {
            break;
        }
        if let Some(limit) = args.timeout
            && started.elapsed() > limit
        {
            return Err(Error::Timeout(limit, "waiting for the workflows to finish".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut text = String::new();
    let mut succeeded = true;
    for ((ns, name), (uid, status)) in &finals {
        let phase = status.phase.unwrap_or(WorkflowPhase::Failed);
        succeeded &= phase == WorkflowPhase::Succeeded;
        let waiting = if phase.is_terminal() { "" } else { ", waiting for input" };
        text.push_str(&format!(
            "workflow {name}: {phase:?} ({}){waiting} in {:.1}s\n",
            status.progress.clone().unwrap_or_default(),
            started.elapsed().as_secs_f64()
        ));
        let header = ["TASK", "PHASE", "ATTEMPTS", "DURATION", "AGENT", "ERROR"].map(String::from);
        let rows: Vec<Vec<String>> = status
            .tasks
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    format!("{:?}", t.phase),
                    t.attempts.to_string(),
                    duration(t),
                    t.agent.clone().unwrap_or_default(),
                    match (&t.error, &t.message) {
                        (Some(error), _) => error.clone(),
                        (None, Some(question)) if t.phase.is_waiting() => format!("asks: {question}"),
                        _ => String::new(),
                    },
                ]
            })
            .collect();
        text.push_str(&super::get::render_table(&header, &rows));
        if let Some(t) = status.tasks.iter().find(|t| t.phase.is_waiting()) {
            let ns_flag = if ns == "default" { String::new() } else { format!(" -n {ns}") };
            let reply = format!("a2a reply {name} {}{ns_flag} -m TEXT", t.name);
            text.push_str(&if embedded {
                format!("to answer: run on a terminal, where a2a run asks; or run on `a2a serve` and answer with `{reply}`\n")
            } else {
                format!("to answer: {reply} (the workflow waits on the server)\n")
            });
        }
        if args.output {
            for t in &status.tasks {
                let Some(head) = &t.output else { continue };
                // Outputs longer than status holds are read back whole from beside the workflow.
                let whole = match &t.output_ref {
                    None => head.clone(),
                    Some(_) => {
                        let owner = crate::controller::outputs::Owner { namespace: ns, name, uid };
                        match crate::controller::outputs::load(client, &owner, &t.name, t.attempts).await {
                            Ok((whole, _)) => whole,
                            Err(e) => format!("{head}\n[the rest of the output cannot be read: {e}]"),
                        }
                    }
                };
                text.push_str(&format!("\n--- {}\n{whole}\n", t.name));
            }
        }
    }
    Ok(RunReport { text, succeeded, interrupted: None })
}
