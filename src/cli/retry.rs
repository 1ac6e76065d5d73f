//! `a2a retry wf NAME [--task T]`: asks the engine to run failed, skipped and cancelled
//! tasks again (all of them, or the named ones with the tasks skipped because of them); the
//! workflow goes back to Running. The request is a [`RetryRequest`] in the `a2a.dev/retry`
//! annotation, checked first here by the engine's own rules ([`plan::retry`]) and
//! handled once (the engine records it in the `Retried` condition); it also withdraws a
//! cancel.

use clap::Args;
use kube::api::{Api, Patch, PatchParams};

use super::cancel::{fetch, require_workflow};
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;
use crate::api::workflow::RetryRequest;
use crate::controller::engine::{CANCEL_ANNOTATION, RETRY_ANNOTATION};
use crate::controller::plan::{self, RetryRefused};

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
    // The engine's own rules, on a copy: what it would run again, or why it would refuse.
    let mut status = wf.status.clone().unwrap_or_default();
    // The spec as the engine runs it: `forEach` tasks expanded.
    let spec = crate::controller::expand::expand(&wf.spec, &status.tasks).map_or_else(|| wf.spec.clone(), |e| e.spec);
    let chosen = plan::retry(&spec, &mut status, &args.tasks).map_err(|e| match e {
        RetryRefused::UnknownTask { task } => {
            let names: Vec<&str> = spec.tasks.iter().map(|s| s.name.as_str()).collect();
            Error::Usage(format!(
                "--task {task}: workflow {:?} has no such task (it has: {})",
                args.name,
                names.join(", ")
            ))
        }
        RetryRefused::NotRetryable { task, phase } => Error::Usage(format!(
            "--task {task}: the task is {phase:?}; only failed, skipped or cancelled tasks are retried"
        )),
    })?;
    // The tasks asked for; those skipped because of them come along and are not listed.
    let chosen: Vec<&str> = chosen
        .iter()
        .map(String::as_str)
        .filter(|n| args.tasks.is_empty() || args.tasks.iter().any(|t| t == n))
        .collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "workflow {:?} has no failed, skipped or cancelled task to retry",
            args.name
        )));
    }
    let request =
        RetryRequest { nonce: jiff::Timestamp::now().as_millisecond().to_string(), tasks: args.tasks.clone() }
            .to_annotation();
    let patch = serde_json::json!({"metadata": {"annotations": {RETRY_ANNOTATION: request, CANCEL_ANNOTATION: null}}});
    api.patch(&args.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::from_kube(e, &conn.url))?;
    Ok(format!("workflow/{} retry requested: {}", args.name, chosen.join(", ")))
}
