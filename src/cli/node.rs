//! `a2a node list|delete`: the hosts that joined this one (see [`crate::apiserver::join`]).
//! Deleting a node forgets it: its certificate no longer authenticates on this host (nor, once
//! they have fetched this host's list of revoked certificates, on the joined hosts), and it may
//! join again under the same name.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{ConnectArgs, Error, Result};
use super::token::{Target, call, table, target};
use crate::apiserver::join;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List the hosts that joined: name, when, certificate serial and expiry.
    List,
    /// Forget a host: its certificate is refused here from then on, and it may join again.
    Delete { name: String },
}

const NODES_PATH: &str = "/apis/auth.a2a.dev/v1alpha1/nodes";

/// Runs one `a2a node` verb; answers what to print.
pub async fn run(args: &NodeArgs) -> Result<String> {
    let target = target(&args.connect).await?;
    match &args.command {
        NodeCommand::List => {
            let items: Vec<Value> = match &target {
                Target::Api(c) => {
                    let list = call(c, "GET", NODES_PATH, None).await?;
                    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
                }
                Target::Offline(j) => j.nodes().iter().map(join::Node::to_json).collect(),
            };
            let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            let rows = items.iter().map(|n| {
                vec![
                    s(n, "/metadata/name"),
                    s(n, "/metadata/creationTimestamp"),
                    s(n, "/status/serial"),
                    s(n, "/status/notAfter"),
                ]
            });
            Ok(table(&["NAME", "JOINED", "SERIAL", "NOT AFTER"], rows))
        }
        NodeCommand::Delete { name } => {
            match &target {
                Target::Api(c) => {
                    call(c, "DELETE", &format!("{NODES_PATH}/{name}"), None).await?;
                }
                Target::Offline(j) => {
                    j.delete_node(name).map_err(|e| Error::Usage(e.to_string()))?;
                }
            }
            Ok(format!("node \"{name}\" deleted"))
        }
    }
}
