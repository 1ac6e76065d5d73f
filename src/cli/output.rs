//! `a2a output wf NAME TASK`: prints one task's whole output. Status holds the first 64 KiB;
//! a longer output is read back from the ConfigMaps beside the workflow
//! ([`crate::controller::outputs`]). `--list` shows every part of the output (kind, name,
//! media type, size); `--file NAME [-o PATH]` writes a file part's bytes exactly.

use clap::Args;
use kube::api::Api;

use super::cancel::{fetch, require_workflow};
use super::client::{ConnectArgs, Error, Result};
use crate::api::Workflow;
use crate::controller::outputs::{self, Owner};

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// `[wf] WORKFLOW TASK`: the workflow and the task (the kind word `wf` may be left out).
    #[arg(num_args = 2..=3, required = true, value_name = "[wf] WORKFLOW TASK")]
    pub words: Vec<String>,
    /// List the parts of the output: kind, name, media type, size.
    #[arg(long, conflicts_with = "file")]
    pub list: bool,
    /// Write the bytes of this file part (its name as `--list` shows it).
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
    /// With --file: write to PATH instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "PATH", requires = "file")]
    pub output_file: Option<std::path::PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What `a2a output` prints: text (a terminal gets a final newline) or bytes as they are.
pub enum Shown {
    Text(String),
    Bytes(Vec<u8>),
}

/// The output (or its list of parts, or a file's bytes), and a note for stderr.
pub async fn run(args: &OutputArgs) -> Result<(Shown, Option<String>)> {
    let (name, task_name) = match args.words.as_slice() {
        [kind, name, task] => {
            require_workflow(kind, "output")?;
            (name.as_str(), task.as_str())
        }
        [name, task] => (name.as_str(), task.as_str()),
        _ => return Err(Error::Usage("give the workflow and the task: a2a output [wf] WORKFLOW TASK".into())),
    };
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let api: Api<Workflow> = Api::namespaced(conn.client.clone(), &ns);
    let wf = fetch(&api, name, &ns, &conn.url).await?;
    // An expansion of a forEach task (`T[3]`) is in status only.
    let in_status = wf.status.as_ref().is_some_and(|s| s.tasks.iter().any(|t| t.name == task_name));
    if !in_status && !wf.spec.tasks.iter().any(|t| t.name == task_name) {
        let names: Vec<&str> = wf.spec.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "workflow {:?} has no task {:?} (it has: {})",
            name,
            task_name,
            names.join(", ")
        )));
    }
    let uid = wf.metadata.uid.clone().unwrap_or_default();
    let status = wf.status.unwrap_or_default();
    let entry = status.tasks.into_iter().find(|t| t.name == task_name);
    if args.list || args.file.is_some() {
        let Some(t) = entry.filter(|t| t.phase == crate::api::workflow::TaskPhase::Succeeded) else {
            return Err(Error::Usage(format!("task {:?} has no output yet", task_name)));
        };
        if args.list {
            return Ok((Shown::Text(list(&t.parts)), None));
        }
        let owner = Owner { namespace: &ns, name, uid: &uid };
        let bytes = file(&conn.client, &owner, &t, args.file.as_deref().unwrap_or_default()).await?;
        return match &args.output_file {
            None => Ok((Shown::Bytes(bytes), None)),
            Some(path) => {
                std::fs::write(path, &bytes)
                    .map_err(|e| Error::Usage(format!("-o {}: cannot write the file: {e}", path.display())))?;
                Ok((Shown::Text(String::new()), Some(format!("wrote {} bytes to {}", bytes.len(), path.display()))))
            }
        };
    }
    let (text, note) = text(&conn.client, &ns, name, task_name, &uid, entry).await?;
    Ok((Shown::Text(text), note))
}

/// The parts as a table.
fn list(parts: &[crate::api::workflow::OutputPart]) -> String {
    let header = ["KIND", "NAME", "MEDIA TYPE", "SIZE", "NOTE"].map(String::from);
    let rows: Vec<Vec<String>> = parts
        .iter()
        .map(|p| {
            vec![
                p.kind.clone(),
                p.name.clone().unwrap_or_default(),
                p.media_type.clone().unwrap_or_default(),
                p.bytes.to_string(),
                p.error.clone().or_else(|| p.url.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    super::get::render_table(&header, &rows)
}

/// The bytes of file part `name` of task `t`, read back and checked.
async fn file(
    client: &kube::Client,
    owner: &Owner<'_>,
    t: &crate::api::workflow::TaskStatus,
    name: &str,
) -> Result<Vec<u8>> {
    let files: Vec<&str> = t.parts.iter().filter(|p| p.kind == "file").filter_map(|p| p.name.as_deref()).collect();
    let Some(index) = files.iter().position(|f| *f == name) else {
        return Err(Error::Usage(format!(
            "task {:?} has no file {name:?} (its files: {})",
            t.name,
            if files.is_empty() { "none".to_owned() } else { files.join(", ") }
        )));
    };
    let part = t.parts.iter().filter(|p| p.kind == "file").nth(index).cloned().unwrap_or_default();
    if let Some(url) = &part.url {
        return Err(Error::Usage(format!("file {name:?} is a reference, not kept bytes: {url}")));
    }
    if let Some(e) = &part.error {
        return Err(Error::Usage(format!("file {name:?} was {e}")));
    }
    let key = crate::controller::parts::file_key(&t.name, index);
    let (b64, _) = outputs::load(client, owner, &key, t.attempts)
        .await
        .map_err(|e| Error::Api(format!("the bytes of file {name:?} cannot be read: {e}")))?;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| Error::Api(format!("the stored bytes of file {name:?} are damaged: {e}")))?;
    if bytes.len() as u64 != part.bytes {
        return Err(Error::Api(format!(
            "the stored bytes of file {name:?} are {} bytes, but status says {}",
            bytes.len(),
            part.bytes
        )));
    }
    Ok(bytes)
}

async fn text(
    client: &kube::Client,
    ns: &str,
    name: &str,
    task_name: &str,
    uid: &str,
    entry: Option<crate::api::workflow::TaskStatus>,
) -> Result<(String, Option<String>)> {
    match entry {
        Some(t) if t.output.is_some() => match t.output_ref {
            None => Ok((t.output.unwrap_or_default(), None)),
            Some(_) => {
                let owner = Owner { namespace: ns, name, uid };
                let (text, original) = outputs::load(client, &owner, task_name, t.attempts).await.map_err(|e| {
                    Error::Api(format!(
                        "the output of task {:?} is longer than the workflow's status holds, and the rest \
                             cannot be read: {e}",
                        task_name
                    ))
                })?;
                let note = original.map(|n| {
                    format!(
                        "note: the output of {:?} was {n} bytes, over the {} MiB cap; these are its first {} bytes",
                        task_name,
                        outputs::MAX_OUTPUT_BYTES >> 20,
                        text.len()
                    )
                });
                Ok((text, note))
            }
        },
        Some(t) => Err(Error::Usage(format!(
            "task {:?} has no output yet ({:?}{})",
            task_name,
            t.phase,
            t.error.map(|e| format!(": {e}")).unwrap_or_default()
        ))),
        None => Err(Error::Usage(format!("task {:?} has no output yet (it has not started)", task_name))),
    }
}
