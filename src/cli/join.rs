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
    #[arg(required_unless_present = "renew")]
    pub server: Option<String>,
    /// The join token `a2a token create` printed on that host.
    #[arg(long, env = "A2A_JOIN_TOKEN", hide_env_values = true, required_unless_present = "renew")]
    pub token: Option<String>,
    /// Instead of joining: have the first host sign a new certificate (for a new key) for this
    /// host, which already joined, authenticating with the current one; restart `a2a serve`.
    #[arg(long, conflicts_with_all = ["server", "token", "node_name", "names"])]
    pub renew: bool,
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
    let home = args.home.clone().unwrap_or_else(a2a_home);
    if args.renew {
        let m = membership::renew(&home).await.map_err(|e| Error::Usage(e.to_string()))?;
        let (_, not_after) = crate::apiserver::pki::validity(&m.cert_pem, &home.join(membership::DIR))
            .map_err(|e| Error::Usage(e.to_string()))?;
        let until = jiff::Timestamp::from_second(not_after).map_or_else(|_| not_after.to_string(), |t| t.to_string());
        return Ok(format!(
            "renewed the certificate of node \"{}\" with {} (good until {until}). Restart `a2a serve` on this host \
             for it to serve the new one.",
            m.info.node_name, m.info.server
        ));
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        return Err(Error::Usage("a2a join needs the first host's URL and --token (or --renew)".into()));
    };
    let token = JoinToken::parse(token).map_err(|e| Error::Usage(format!("--token: {e}")))?;
    let server = membership::check_server_url(server).map_err(|e| Error::Usage(e.to_string()))?;
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => membership::default_node_name()
            .ok_or_else(|| Error::Usage("cannot read this host's name: pass --node-name NAME".into()))?,
    };
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
