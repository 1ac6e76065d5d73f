//! `a2a reply WORKFLOW TASK -m TEXT | --data JSON|@FILE`: answers the question a task's agent
//! asked (the task is InputRequired or AuthRequired). The answer is appended to the
//! workflow's `spec.replies`; the engine (in `a2a serve`, `a2a run` or the operator) sends it
//! on the same A2A task and the workflow goes on. Checked first here by the engine's rules
//! ([`replies::check`]); nothing is written when it is refused.

use clap::{ArgGroup, Args};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::cancel::fetch;
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;
use crate::api::workflow::Reply;
use crate::controller::replies;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("answer").required(true).multiple(true).args(["message", "data"])))]
pub struct ReplyArgs {
    /// The workflow.
    pub workflow: String,
    /// The task whose question this answers.
    pub task: String,
    /// The answer as text.
    #[arg(short, long, value_name = "TEXT")]
    pub message: Option<String>,
    /// The answer as a JSON object (a DataPart), inline or from a file: `--data @answer.json`.
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: Option<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The JSON of `--data`: inline, or read from `@FILE`; the error names what is wrong and where.
pub fn parse_data(arg: &str) -> Result<Value> {
    let (text, whence) = match arg.strip_prefix('@') {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, format!("--data @{path}")),
            Err(e) => return Err(Error::Usage(format!("--data @{path}: cannot read the file: {e}"))),
        },
        None => (arg.to_owned(), "--data".to_owned()),
    };
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("{whence}: not JSON: {e}")))
}

pub async fn run(args: &ReplyArgs) -> Result<String> {
    let data = args.data.as_deref().map(parse_data).transpose()?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let api: Api<Workflow> = Api::namespaced(conn.client.clone(), &ns);
    let reply = post(&api, &args.workflow, &ns, &conn.url, &args.task, args.message.clone(), data).await?;
    Ok(format!(
        "workflow/{}: reply {} to task {:?} recorded; the agent gets it on its A2A task",
        args.workflow, reply.id, args.task
    ))
}

/// Appends a reply for `task` to workflow `name`, after checking it by the engine's rules on
/// the workflow as stored; the write is conditional on that workflow's resourceVersion, so
/// a concurrent change is read again and checked again, never overwritten.
pub async fn post(
    api: &Api<Workflow>,
    name: &str,
    ns: &str,
    url: &str,
    task: &str,
    message: Option<String>,
    data: Option<Value>,
) -> Result<Reply> {
    for _ in 0..10 {
        let wf = fetch(api, name, ns, url).await?;
        let status = wf.status.clone().unwrap_or_default();
        // The spec as the engine runs it: `forEach` tasks expanded.
        let spec =
            crate::controller::expand::expand(&wf.spec, &status.tasks).map_or_else(|| wf.spec.clone(), |e| e.spec);
        replies::check(name, &spec, &status, task, message.as_deref(), data.as_ref())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let rv = wf.metadata.resource_version.clone().unwrap_or_default();
        let id = next_id(&wf.spec.replies);
        let reply = Reply { id, task: task.to_owned(), message: message.clone(), data: data.clone() };
        let add = if wf.spec.replies.is_empty() {
            json!({"op": "add", "path": "/spec/replies", "value": [reply]})
        } else {
            json!({"op": "add", "path": "/spec/replies/-", "value": reply})
        };
        let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, add]);
        let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| Error::Api(e.to_string()))?;
        match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => return Ok(reply),
            Err(e) => {
                // Changed meanwhile (the engine writes status all the time): read it again.
                let now = api.get_opt(name).await.ok().flatten().and_then(|w| w.metadata.resource_version);
                if now.is_some_and(|now| now != rv) {
                    continue;
                }
                return Err(Error::from_kube(e, url));
            }
        }
    }
    Err(Error::Api(format!("workflow {name:?} kept changing while the reply was written; try again")))
}

/// The next reply id: one more than the number of replies (ids are unique: the list only
/// grows, and the write is conditional on the list read).
fn next_id(replies: &[Reply]) -> String {
    let mut n = replies.len() + 1;
    while replies.iter().any(|r| r.id == n.to_string()) {
        n += 1;
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_inline_or_from_a_file_and_a_mistake_says_where() {
        assert_eq!(parse_data(r#"{"city": "Paris"}"#).expect("json"), json!({"city": "Paris"}));
        let e = parse_data("{city: Paris}").unwrap_err().to_string();
        assert!(e.starts_with("--data: not JSON: key must be a string at line 1 column 2"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.json");
        std::fs::write(&file, "[1, 2").expect("write");
        let e = parse_data(&format!("@{}", file.display())).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--data @{}: not JSON: EOF while parsing", file.display())), "{e}");
        let e = parse_data("@/nonexistent/a.json").unwrap_err().to_string();
        assert!(e.starts_with("--data @/nonexistent/a.json: cannot read the file"), "{e}");
    }

    #[test]
    fn reply_ids_are_unique() {
        let r = |id: &str| Reply { id: id.into(), ..Default::default() };
        assert_eq!(next_id(&[]), "1");
        assert_eq!(next_id(&[r("1"), r("3")]), "4");
        assert_eq!(next_id(&[r("2")]), "3");
        assert_eq!(next_id(&[r("x"), r("2")]), "3");
    }
}
