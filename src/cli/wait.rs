//! `a2a wait KIND/NAME --for=condition=Ready|--for=delete`.

use std::time::Duration;

use clap::Args;

use super::client::{ConnectArgs, Error, Result, dynamic_api, resolve_kind};
use super::delete::wait_gone;
use super::values;

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// `agent/NAME`, `wf/NAME`, `rb/NAME`.
    pub target: String,
    /// `condition=TYPE` (status True), `condition=TYPE=False`, `phase=Succeeded`, or `delete`.
    #[arg(long = "for", value_name = "WHAT")]
    pub for_: String,
    #[arg(long, default_value = "60s", value_parser = values::duration)]
    pub timeout: Duration,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

enum Goal {
    Condition(String, String),
    Phase(String),
    Delete,
}

fn parse_goal(s: &str) -> Result<Goal> {
    if s == "delete" {
        return Ok(Goal::Delete);
    }
    if let Some(rest) = s.strip_prefix("condition=") {
        let (t, status) = rest.split_once('=').unwrap_or((rest, "True"));
        if !t.is_empty() {
            return Ok(Goal::Condition(t.to_owned(), status.to_owned()));
        }
    }
    if let Some(p) = s.strip_prefix("phase=").filter(|p| !p.is_empty()) {
        return Ok(Goal::Phase(p.to_owned()));
    }
    Err(Error::Usage(format!("--for={s}: use condition=TYPE[=STATUS], phase=PHASE or delete")))
}

pub async fn run(args: &WaitArgs) -> Result<String> {
    let goal = parse_goal(&args.for_)?;
    let (kind, name) = args
        .target
        .split_once('/')
        .ok_or_else(|| Error::Usage(format!("{:?}: write KIND/NAME, e.g. agent/writer", args.target)))?;
    let kind = resolve_kind(kind)?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let ns = kind.namespaced().then_some(ns.as_str());
    let reference = format!("{}/{name}", kind.as_str().to_ascii_lowercase());
    if let Goal::Delete = goal {
        wait_gone(&conn, kind, ns, name, args.timeout).await?;
        return Ok(format!("{reference} deleted"));
    }
    let api = dynamic_api(&conn.client, kind, ns);
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let obj = api.get_opt(name).await.map_err(|e| Error::from_kube(e, &conn.url))?;
        if let Some(obj) = obj {
            let status = obj.data.get("status");
            let met = match &goal {
                Goal::Condition(t, want) => status
                    .and_then(|s| s.get("conditions"))
                    .and_then(|c| c.as_array())
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == t.as_str() && c["status"] == want.as_str())),
                Goal::Phase(p) => status.and_then(|s| s.get("phase")).is_some_and(|v| v == p.as_str()),
                Goal::Delete => false,
            };
            if met {
                return Ok(format!("{reference} condition met"));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(args.timeout, format!("waiting for {reference} --for={}", args.for_)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
