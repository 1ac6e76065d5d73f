//! `a2a delete (-f PATH | KIND NAME...)`, optionally waiting until the objects are gone.

use std::time::Duration;

use clap::Args;
use kube::api::DeleteParams;

use super::apply::{Applied, load};
use super::client::{ConnectArgs, Connection, Error, Result, dynamic_api, resolve_kind};
use crate::api::Kind;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// A kind and names (`agent a b`, `wf/report`); or use -f.
    #[arg(value_name = "KIND NAME...", conflicts_with = "files")]
    pub targets: Vec<String>,
    /// Delete what these manifests define.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<std::path::PathBuf>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Return only when the objects are gone (finalizers done): for an Agent run locally,
    /// when its processes have exited (after its grace period, if SIGTERM is ignored).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Succeed when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Keep a deleted Agent's log files (they are removed with it otherwise); sets the
    /// annotation `a2a.dev/keep-logs: "true"` before deleting.
    #[arg(long)]
    pub keep_logs: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn parse_duration(s: &str) -> Result<Duration, crate::api::quantity::Error> {
    <crate::api::quantity::DurationKind as crate::api::quantity::ScalarKind>::parse(s)
}

/// The (kind, namespace, name) triples named on the command line or by the files.
fn targets(args: &DeleteArgs, default_ns: &str) -> Result<Vec<(Kind, Option<String>, String)>> {
    let ns_for = |kind: Kind, ns: Option<String>| kind.namespaced().then(|| ns.unwrap_or(default_ns.to_owned()));
    if !args.files.is_empty() {
        let docs = load(&super::FileArgs { files: args.files.clone(), recursive: args.recursive })?;
        return Ok(docs
            .iter()
            .map(|d| {
                let k = d.object.kind();
                (k, ns_for(k, d.object.metadata().namespace.clone()), d.object.name().to_owned())
            })
            .collect());
    }
    let mut out = Vec::new();
    let mut kind = None;
    for t in &args.targets {
        if let Some((k, name)) = t.split_once('/') {
            let k = resolve_kind(k)?;
            out.push((k, ns_for(k, None), name.to_owned()));
        } else if let Some(k) = kind {
            out.push((k, ns_for(k, None), t.clone()));
        } else {
            kind = Some(resolve_kind(t)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "say what to delete: `a2a delete KIND NAME...`, `a2a delete KIND/NAME` or `-f FILE`".into(),
        ));
    }
    Ok(out)
}

pub async fn run(args: &DeleteArgs) -> Result<Vec<Applied>> {
    let conn = args.connect.connect().await?;
    let default_ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let mut done = Vec::new();
    for (kind, ns, name) in targets(args, &default_ns)? {
        let api = dynamic_api(&conn.client, kind, ns.as_deref());
        let reference = format!("{}/{name}", kind.as_str().to_ascii_lowercase());
        if args.keep_logs && kind == Kind::Agent {
            let keep =
                serde_json::json!({"metadata": {"annotations": {crate::node::logs::KEEP_LOGS_ANNOTATION: "true"}}});
            match api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&keep)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 && args.ignore_not_found => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(Error::NotFound { kind, name, namespace: ns });
                }
                Err(e) => return Err(Error::from_kube(e, &conn.url)),
            }
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if args.ignore_not_found {
                    continue;
                }
                return Err(Error::NotFound { kind, name, namespace: ns });
            }
            Err(e) => return Err(Error::from_kube(e, &conn.url)),
        }
        if args.wait {
            wait_gone(&conn, kind, ns.as_deref(), &name, args.timeout).await?;
        }
        done.push(Applied { reference, outcome: "deleted" });
    }
    Ok(done)
}

/// Polls until the object is gone.
pub async fn wait_gone(conn: &Connection, kind: Kind, ns: Option<&str>, name: &str, timeout: Duration) -> Result<()> {
    let api = dynamic_api(&conn.client, kind, ns);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if api.get_opt(name).await.map_err(|e| Error::from_kube(e, &conn.url))?.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, format!("waiting for {kind}/{name} to be deleted")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
