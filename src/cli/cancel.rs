//! `a2a cancel wf NAME`: asks the engine to cancel a running workflow. The request is the
//! `a2a.dev/cancel` annotation (see [`crate::controller::engine::CANCEL_ANNOTATION`]): the
//! engine sends CancelTask for running tasks and for those waiting for input on their agent,
//! marks pending and waiting ones Cancelled, and ends the workflow Cancelled.

use clap::Args;
use kube::api::{Api, Patch, PatchParams};

use super::client::{ConnectArgs, Error, Result, resolve_kind};
use crate::api::workflow::{WorkflowPhase, WorkflowStatus};
use crate::api::{Kind, Workflow};
use crate::controller::engine::CANCEL_ANNOTATION;

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// workflows (wf): the only kind that can be cancelled.
    pub kind: String,
    pub name: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Checks that `word` names workflows, for verbs that only apply to them.
pub fn require_workflow(word: &str, verb: &str) -> Result<()> {
    match resolve_kind(word)? {
        Kind::Workflow => Ok(()),
        other => Err(Error::Usage(format!("`a2a {verb}` works on workflows (wf), not {}", other.plural()))),
    }
}

/// Fetches a workflow or says plainly that it does not exist.
/// A big workflow's tasks, kept beside it, are read into its status.
pub async fn fetch(api: &Api<Workflow>, name: &str, ns: &str, url: &str) -> Result<Workflow> {
    let mut wf = api.get_opt(name).await.map_err(|e| Error::from_kube(e, url))?.ok_or_else(|| Error::NotFound {
        kind: Kind::Workflow,
        name: name.to_owned(),
        namespace: Some(ns.to_owned()),
    })?;
    crate::controller::offload::fill(&api.clone().into_client(), &mut wf)
        .await
        .map_err(|e| Error::Usage(format!("workflow {name:?}: reading its tasks' status: {e}")))?;
    Ok(wf)
}

pub fn finished(status: &WorkflowStatus) -> Option<WorkflowPhase> {
    status.phase.filter(|p| p.is_terminal())
}

pub async fn run(args: &CancelArgs) -> Result<String> {
    require_workflow(&args.kind, "cancel")?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let api: Api<Workflow> = Api::namespaced(conn.client.clone(), &ns);
    let wf = fetch(&api, &args.name, &ns, &conn.url).await?;
    if let Some(phase) = finished(&wf.status.unwrap_or_default()) {
        return Err(Error::Usage(format!("workflow {:?} already {phase:?}; nothing to cancel", args.name)));
    }
    let patch =
        serde_json::json!({"metadata": {"annotations": {CANCEL_ANNOTATION: jiff::Timestamp::now().to_string()}}});
    api.patch(&args.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::from_kube(e, &conn.url))?;
    Ok(format!("workflow/{} cancel requested", args.name))
}
