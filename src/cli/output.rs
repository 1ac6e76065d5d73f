//! `a2a output wf NAME TASK`: prints one task's output.

use clap::Args;
use kube::api::Api;

use super::cancel::{fetch, require_workflow};
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// workflows (wf).
    pub kind: String,
    pub name: String,
    pub task: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The output, and a note for stderr when it was cut.
pub async fn run(args: &OutputArgs) -> Result<(String, Option<String>)> {
    require_workflow(&args.kind, "output")?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let api: Api<Workflow> = Api::namespaced(conn.client.clone(), &ns);
    let wf = fetch(&api, &args.name, &ns, &conn.url).await?;
    if !wf.spec.tasks.iter().any(|t| t.name == args.task) {
        let names: Vec<&str> = wf.spec.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "workflow {:?} has no task {:?} (it has: {})",
            args.name,
            args.task,
            names.join(", ")
        )));
    }
    let status = wf.status.unwrap_or_default();
    let task = status.tasks.into_iter().find(|t| t.name == args.task);
    match task {
        Some(t) if t.output.is_some() => {
            let note = t.output_ref.map(|r| format!("note: the output of {:?} was {r}", args.task));
            Ok((t.output.unwrap_or_default(), note))
        }
        Some(t) => Err(Error::Usage(format!(
            "task {:?} has no output ({:?}{})",
            args.task,
            t.phase,
            t.error.map(|e| format!(": {e}")).unwrap_or_default()
        ))),
        None => Err(Error::Usage(format!("task {:?} has not started yet", args.task))),
    }
}
