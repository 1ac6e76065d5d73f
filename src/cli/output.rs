//! `a2a output wf NAME TASK`: prints one task's whole output. Status holds the first 64 KiB;
//! a longer output is read back from the ConfigMaps beside the workflow
//! ([`crate::controller::outputs`]).

use clap::Args;
use kube::api::Api;

use super::cancel::{fetch, require_workflow};
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;
use crate::controller::outputs::{self, Owner};

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

/// The whole output, and a note for stderr when the agent's output was over the cap.
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
    let uid = wf.metadata.uid.clone().unwrap_or_default();
    let status = wf.status.unwrap_or_default();
    let task = status.tasks.into_iter().find(|t| t.name == args.task);
    match task {
        Some(t) if t.output.is_some() => match t.output_ref {
            None => Ok((t.output.unwrap_or_default(), None)),
            Some(_) => {
                let owner = Owner { namespace: &ns, name: &args.name, uid: &uid };
                let (text, original) =
                    outputs::load(&conn.client, &owner, &args.task, t.attempts).await.map_err(|e| {
                        Error::Api(format!(
                            "the output of task {:?} is longer than the workflow's status holds, and the rest \
                             cannot be read: {e}",
                            args.task
                        ))
                    })?;
                let note = original.map(|n| {
                    format!(
                        "note: the output of {:?} was {n} bytes, over the {} MiB cap; these are its first {} bytes",
                        args.task,
                        outputs::MAX_OUTPUT_BYTES >> 20,
                        text.len()
                    )
                });
                Ok((text, note))
            }
        },
        Some(t) => Err(Error::Usage(format!(
            "task {:?} has no output yet ({:?}{})",
            args.task,
            t.phase,
            t.error.map(|e| format!(": {e}")).unwrap_or_default()
        ))),
        None => Err(Error::Usage(format!("task {:?} has no output yet (it has not started)", args.task))),
    }
}
