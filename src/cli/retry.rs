//! `a2a retry wf NAME [--task T]`: asks the engine to run failed, skipped and cancelled
//! tasks again (all of them, or the named ones with the tasks skipped because of them); the
//! workflow goes back to Running. The request is the `a2a.dev/retry` annotation, handled
//! once (the engine records it in the `Retried` condition); it also withdraws a cancel.

use clap::Args;
use kube::api::{Api, Patch, PatchParams};

use super::cancel::{fetch, require_workflow};
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;
use crate::api::workflow::TaskPhase;
use crate::controller::engine::{CANCEL_ANNOTATION, RETRY_ANNOTATION};

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// workflows (wf).
    pub kind: String,
    pub name: String,
    /// Only this task (and what was skipped because of it). Repeatable.
    #[arg(long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: &RetryArgs) -> Result<String> {
    require_workflow(&args.kind, "retry")?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let api: Api<Workflow> = Api::namespaced(conn.client.clone(), &ns);
    let wf = fetch(&api, &args.name, &ns, &conn.url).await?;
    let status = wf.status.clone().unwrap_or_default();
    let again = |p: TaskPhase| matches!(p, TaskPhase::Failed | TaskPhase::Skipped | TaskPhase::Cancelled);
    for t in &args.tasks {
        match status.tasks.iter().find(|s| &s.name == t) {
            None if !wf.spec.tasks.iter().any(|s| &s.name == t) => {
                let names: Vec<&str> = wf.spec.tasks.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "--task {t}: workflow {:?} has no such task (it has: {})",
                    args.name,
                    names.join(", ")
                )));
            }
            Some(s) if !again(s.phase) => {
                return Err(Error::Usage(format!(
                    "--task {t}: the task is {:?}; only failed, skipped or cancelled tasks are retried",
                    s.phase
                )));
            }
            _ => {}
        }
    }
    let chosen: Vec<&str> = status
        .tasks
        .iter()
        .filter(|s| again(s.phase) && (args.tasks.is_empty() || args.tasks.contains(&s.name)))
        .map(|s| s.name.as_str())
        .collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "workflow {:?} has no failed, skipped or cancelled task to retry",
            args.name
        )));
    }
    let nonce = jiff::Timestamp::now().as_millisecond().to_string();
    let request = if args.tasks.is_empty() { nonce } else { format!("{nonce}:{}", args.tasks.join(",")) };
    let patch = serde_json::json!({"metadata": {"annotations": {RETRY_ANNOTATION: request, CANCEL_ANNOTATION: null}}});
    api.patch(&args.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::from_kube(e, &conn.url))?;
    Ok(format!("workflow/{} retry requested: {}", args.name, chosen.join(", ")))
}
