//! `a2a join https://HOST:PORT --token T`: enrol this host in the cluster of the host the token
//! was made on (see [`crate::membership`]).

use std::path::PathBuf;

use clap::Args;

use super::client::{Error, Result, a2a_home};
use crate::apiserver::join::JoinToken;
use crate::membership::{self, JoinRequest};

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The first host's API server, `https://HOST:PORT`.
    pub server: String,
    /// The join token `a2a token create` printed on that host.
    #[arg(long, env = "A2A_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This host's name in the cluster (a lower-case DNS name) [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Another name (DNS name or IP address) this host's certificate should carry, for hosts
    /// that reach it by that name. Repeatable.
    #[arg(long = "san", value_name = "NAME")]
    pub names: Vec<String>,
    /// The home to write the membership into. Default: $A2A_HOME, else ~/.a2a.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

/// Joins; answers what to print.
pub async fn run(args: &JoinArgs) -> Result<String> {
    let token = JoinToken::parse(&args.token).map_err(|e| Error::Usage(format!("--token: {e}")))?;
    let server = membership::check_server_url(&args.server).map_err(|e| Error::Usage(e.to_string()))?;
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => membership::default_node_name()
            .ok_or_else(|| Error::Usage("cannot read this host's name: pass --node-name NAME".into()))?,
    };
    let home = args.home.clone().unwrap_or_else(a2a_home);
    let request = JoinRequest { server, token, node_name, names: args.names.clone() };
    let m = membership::join(&home, &request).await.map_err(|e| Error::Usage(e.to_string()))?;
    Ok(format!(
        "joined {} as node \"{}\" (CA sha256:{}); the certificate and key are in {}. Restart `a2a serve` on this \
         host for it to accept the cluster's hosts.",
        m.info.server,
        m.info.node_name,
        m.info.ca_pin,
        home.join(membership::DIR).display()
    ))
}
