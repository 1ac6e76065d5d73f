//! The A2A client for an agent's endpoint, made with the TLS settings and credentials its
//! Secrets hold ([`crate::controller::credentials`]). Clients are kept per agent (by uid) and
//! endpoint — two Agents may name one URL with different credentials — so connections and
//! an OAuth2 token are reused across tasks; the Secrets are read again when a client is older
//! than [`REREAD`], and a changed credential makes a new client.

use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::{Engine, Error, lock};
use crate::a2a;
use crate::api::Agent;
use crate::controller::credentials;

/// How long the credentials of a client are used before the Secrets are read again: a
/// rotated or corrected Secret takes effect within this time.
const REREAD: Duration = Duration::from_secs(10);

/// A client and what it was made with.
pub(super) struct Cached {
    options: a2a::ClientOptions,
    read_at: Instant,
    client: a2a::Client,
}

impl Engine {
    /// The client for `url`, an endpoint of `agent`.
    pub(super) async fn client_for(&self, agent: &Agent, url: &str) -> Result<a2a::Client, Error> {
        let key = (agent.uid().unwrap_or_default(), url.to_owned());
        if let Some(c) = lock(&self.clients).get(&key).filter(|c| c.read_at.elapsed() < REREAD) {
            return Ok(c.client.clone());
        }
        let options = credentials::client_options(&self.client, agent).await?;
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get_mut(&key).filter(|c| c.options == options) {
            c.read_at = Instant::now();
            return Ok(c.client.clone());
        }
        let client = a2a::Client::with_options(url, options.clone())?;
        clients.insert(key, Cached { options, read_at: Instant::now(), client: client.clone() });
        Ok(client)
    }

    /// Forgets the clients of a deleted agent.
    pub(super) fn forget_clients(&self, uid: &str) {
        lock(&self.clients).retain(|(owner, _), _| owner != uid);
    }
}
