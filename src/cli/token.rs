//! `a2a token create|list|delete`: the join tokens with which other hosts join this one
//! (`a2a join`; see [`crate::apiserver::join`]).
//!
//! As `a2a user`: with a server running they go through its API (the unbound admin only), so a
//! deleted token is refused at once; with none answering they edit `$A2A_HOME/join-tokens`,
//! which the server loads when it starts.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{ConnectArgs, Connection, Error, Result, a2a_home};
use super::values;
use crate::apiserver::authz::USERS_GROUP;
use crate::apiserver::home;
use crate::apiserver::join::{self, Join};

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a join token and print it (shown this once; only a digest of its secret is kept).
    /// It carries the hash of this host's CA, which the joining host checks.
    Create(CreateArgs),
    /// List the join tokens: id, expiry, description.
    List,
    /// Delete a join token (by its id, the six characters after `::`): joins with it are
    /// refused from then on. Hosts that joined with it stay joined.
    Delete { id: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// How long the token may be used (`30m`, `24h`; a week is `168h`).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = values::positive_duration)]
    pub ttl: Duration,
    /// What the token is for (shown by `a2a token list`).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
}

/// Where tokens and nodes are changed: the running server's API, or the home.
pub(crate) enum Target {
    Api(Connection),
    Offline(Join),
}

/// The running server, else (when none answers and no other control plane was named) the home.
pub(crate) async fn target(connect: &ConnectArgs) -> Result<Target> {
    match connect.connect().await {
        Ok(c) => Ok(Target::Api(c)),
        Err(Error::NoKubeconfig { .. } | Error::Unreachable { .. }) if connect.kubeconfig.is_none() => {
            let home = a2a_home();
            let ca_path = home.join("pki").join("ca.crt");
            let usage = |e: String| Error::Usage(e);
            let ca = home::read(&ca_path, home::Kind::Public).map_err(|e| usage(e.to_string()))?.ok_or_else(|| {
                Error::Usage(format!(
                    "no CA at {}: start `a2a serve` once (or set A2A_HOME) so that this host has one",
                    ca_path.display()
                ))
            })?;
            let member_of =
                crate::membership::Membership::load(&home).map_err(|e| usage(e.to_string()))?.map(|m| m.info.server);
            Join::open(&home, &ca, member_of, None).map(Target::Offline).map_err(|e| usage(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// One request to the auth API of the running server.
pub(crate) async fn call(c: &Connection, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| Error::Api(e.to_string()))?;
    c.client.request::<Value>(request).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 && s.details.is_none() => {
            Error::Api(format!("{} serves no a2a join API: hosts join the local control plane (`a2a serve`)", c.url))
        }
        e => Error::from_kube(e, &c.url),
    })
}

const TOKENS_PATH: &str = "/apis/auth.a2a.dev/v1alpha1/jointokens";

/// Runs one `a2a token` verb; answers what to print.
pub async fn run(args: &TokenArgs) -> Result<String> {
    let target = target(&args.connect).await?;
    match &args.command {
        TokenCommand::Create(create) => match &target {
            Target::Api(c) => {
                let body = json!({
                    "apiVersion": format!("{USERS_GROUP}/v1alpha1"), "kind": "JoinToken",
                    "spec": {"ttlSeconds": create.ttl.as_secs().max(1), "description": create.description},
                });
                let out = call(c, "POST", TOKENS_PATH, Some(body)).await?;
                out.pointer("/status/token")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| Error::Api(format!("{} answered no token", c.url)))
            }
            Target::Offline(j) => j
                .create_token(create.ttl.max(Duration::from_secs(1)), &create.description)
                .map(|(_, token)| token)
                .map_err(|e| Error::Usage(e.to_string())),
        },
        TokenCommand::List => {
            let items: Vec<Value> = match &target {
                Target::Api(c) => {
                    let list = call(c, "GET", TOKENS_PATH, None).await?;
                    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
                }
                Target::Offline(j) => j.tokens().iter().map(join::StoredToken::to_json).collect(),
            };
            let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            let rows = items.iter().map(|t| {
                let expired = t.pointer("/status/expired").and_then(Value::as_bool).unwrap_or(false);
                vec![
                    s(t, "/metadata/name"),
                    format!("{}{}", s(t, "/spec/expires"), if expired { " (expired)" } else { "" }),
                    s(t, "/metadata/creationTimestamp"),
                    s(t, "/spec/description"),
                ]
            });
            Ok(table(&["ID", "EXPIRES", "CREATED", "DESCRIPTION"], rows))
        }
        TokenCommand::Delete { id } => {
            match &target {
                Target::Api(c) => {
                    call(c, "DELETE", &format!("{TOKENS_PATH}/{id}"), None).await?;
                }
                Target::Offline(j) => {
                    j.delete_token(id).map_err(|e| Error::Usage(e.to_string()))?;
                }
            }
            Ok(format!("join token \"{id}\" deleted"))
        }
    }
}

/// Columns padded to their widest cell, three spaces apart.
pub(crate) fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let widths: Vec<usize> =
        (0..header.len()).map(|i| all.iter().map(|r| r.get(i).map_or(0, String::len)).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &all {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}
