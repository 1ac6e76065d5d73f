//! What a2a presents to an agent, read from Secrets through the API server (the local one or
//! a cluster's: the same code serves both modes):
//! - an agent with `url`: its `spec.tls` and `spec.auth` references, resolved to
//!   [`ClientOptions`];
//! - an agent a2a runs: its own token, kept in the Secret `<agent>-a2a-token` that the Agent
//!   owns (so the garbage collector removes it with the Agent), given to the agent process as
//!   `A2A_AGENT_TOKEN` and presented as `Authorization: Bearer` on every A2A call.
//!
//! Secret values never appear in errors: they name the Secret, the key and the field.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Resource, ResourceExt};

use crate::a2a::ClientOptions;
use crate::a2a::auth::{ClientAuthMethod, Credentials, OAuth2Client, SecretText};
use crate::a2a::tls::ClientCertificate;
use crate::api::Agent;
use crate::api::access::{ClientAuthentication, SecretKeyRef, SecretValue};
use crate::api::agent::Protocol;

/// The environment variable that carries an agent's token to its process.
pub const TOKEN_ENV: &str = "A2A_AGENT_TOKEN";
/// The key of the token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// The type of a token Secret.
pub const TOKEN_SECRET_TYPE: &str = "a2a.dev/agent-token";

/// The name of the Secret holding the token of agent `agent`.
pub fn token_secret_name(agent: &str) -> String {
    format!("{agent}-a2a-token")
}

/// Why credentials for an agent could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {namespace}/{name} (for {field}): {source}")]
    Read {
        namespace: String,
        name: String,
        field: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} does not exist (for {field})")]
    Missing { namespace: String, name: String, field: String },
    #[error("Secret {namespace}/{name} has no key {key:?} (for {field})")]
    MissingKey { namespace: String, name: String, key: String, field: String },
    #[error("key {key:?} of Secret {namespace}/{name} is not UTF-8 text (for {field})")]
    NotText { namespace: String, name: String, key: String, field: String },
    #[error("writing the agent's token Secret {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("generating the agent's token: {0}")]
    Random(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Missing { .. } => "missing",
            Self::MissingKey { .. } => "missing_key",
            Self::NotText { .. } => "not_text",
            Self::Write { .. } => "write",
            Self::Random(_) => "random",
        }
    }
}

/// The Secrets of one namespace, each read once.
struct Secrets {
    api: Api<Secret>,
    namespace: String,
    read: BTreeMap<String, Option<BTreeMap<String, ByteString>>>,
}

impl Secrets {
    fn new(client: &kube::Client, namespace: &str) -> Self {
        Secrets {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            read: BTreeMap::new(),
        }
    }

    async fn data(&mut self, name: &str, field: &str) -> Result<Option<&BTreeMap<String, ByteString>>, Error> {
        if !self.read.contains_key(name) {
            let got = self.api.get_opt(name).await.map_err(|source| Error::Read {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                field: field.to_owned(),
                source: Box::new(source),
            })?;
            self.read.insert(name.to_owned(), got.map(|s| s.data.unwrap_or_default()));
        }
        Ok(self.read.get(name).and_then(Option::as_ref))
    }

    async fn bytes(&mut self, name: &str, key: &str, field: &str) -> Result<Vec<u8>, Error> {
        let namespace = self.namespace.clone();
        let Some(data) = self.data(name, field).await? else {
            return Err(Error::Missing { namespace, name: name.to_owned(), field: field.to_owned() });
        };
        data.get(key).map(|b| b.0.clone()).ok_or_else(|| Error::MissingKey {
            namespace,
            name: name.to_owned(),
            key: key.to_owned(),
            field: field.to_owned(),
        })
    }

    async fn text(&mut self, r: &SecretKeyRef, field: &str) -> Result<SecretText, Error> {
        let bytes = self.bytes(&r.name, &r.key, field).await?;
        let text = String::from_utf8(bytes).map_err(|_| Error::NotText {
            namespace: self.namespace.clone(),
            name: r.name.clone(),
            key: r.key.clone(),
            field: field.to_owned(),
        })?;
        // A trailing newline (`echo token > file`) is not part of a token.
        Ok(SecretText::new(text.trim_end_matches(['\n', '\r'])))
    }

    async fn value(&mut self, v: &SecretValue, field: &str) -> Result<SecretText, Error> {
        self.text(&v.secret_key_ref, field).await
    }
}

/// How a2a reaches `agent`: for an agent with `url`, its `tls` and `auth`; for an agent a2a
/// runs, its own token as the bearer credential (none while its Secret does not exist yet).
pub async fn client_options(client: &kube::Client, agent: &Agent) -> Result<ClientOptions, Error> {
    let namespace = agent.namespace().unwrap_or_default();
    let mut secrets = Secrets::new(client, &namespace);
    let spec = &agent.spec;
    let mut options = ClientOptions { addressing: super::engine::addressing(agent), ..Default::default() };
    if spec.url.is_none() {
        if spec.protocol() == Protocol::A2a {
            let name = token_secret_name(&agent.name_any());
            if let Some(data) = secrets.data(&name, "the agent's token").await?
                && let Some(token) = data.get(TOKEN_KEY).and_then(|b| String::from_utf8(b.0.clone()).ok())
            {
                options.credentials.bearer = Some(SecretText::new(token));
            }
        }
        return Ok(options);
    }
    if let Some(tls) = &spec.tls {
        if let Some(r) = &tls.ca_secret {
            options.tls.ca_pem = Some(secrets.bytes(&r.name, &r.key, "spec.tls.caSecret").await?);
        }
        if let Some(r) = &tls.client_certificate_secret {
            let field = "spec.tls.clientCertificateSecret";
            options.tls.client_certificate = Some(ClientCertificate {
                chain_pem: secrets.bytes(&r.name, "tls.crt", field).await?,
                key_pem: secrets.bytes(&r.name, "tls.key", field).await?,
            });
        }
        options.tls.server_name = tls.server_name.clone();
    }
    if let Some(auth) = &spec.auth {
        let c: &mut Credentials = &mut options.credentials;
        if let Some(v) = &auth.bearer {
            c.bearer = Some(secrets.value(v, "spec.auth.bearer").await?);
        }
        if let Some(v) = &auth.api_key {
            c.api_key = Some(secrets.value(v, "spec.auth.apiKey").await?);
        }
        if let Some(o) = &auth.oauth2 {
            c.oauth2 = Some(OAuth2Client {
                client_id: secrets.value(&o.client_id, "spec.auth.oauth2.clientId").await?,
                client_secret: secrets.value(&o.client_secret, "spec.auth.oauth2.clientSecret").await?,
                token_url: o.token_url.clone(),
                scopes: o.scopes.clone(),
                method: match o.client_authentication.unwrap_or_default() {
                    ClientAuthentication::ClientSecretBasic => ClientAuthMethod::ClientSecretBasic,
                    ClientAuthentication::ClientSecretPost => ClientAuthMethod::ClientSecretPost,
                },
            });
        }
    }
    Ok(options)
}

/// The bytes of key `key` of Secret `namespace/name`, read now (so a rotated value is used
/// at once); `field` names what asked for it in errors.
pub async fn secret_bytes(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Vec<u8>, Error> {
    Secrets::new(client, namespace).bytes(name, key, field).await
}

/// As [`secret_bytes`], as text without a trailing newline.
pub async fn secret_text(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<SecretText, Error> {
    let r = SecretKeyRef { name: name.to_owned(), key: key.to_owned() };
    Secrets::new(client, namespace).text(&r, field).await
}

/// Whether `agent` gets a token of its own: a2a runs it and it speaks A2A.
pub fn has_token(agent: &Agent) -> bool {
    agent.spec.url.is_none() && agent.spec.protocol() == Protocol::A2a
}

/// How [`ensure_token`] looks for an agent's token Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Read, and create when missing.
    ReadFirst,
    /// Create, and read when it is there already.
    CreateFirst,
}

impl Lookup {
    /// What a node's start of `agent` should do: create first on the agent's first start,
    /// read first once its status says it ran (its Secret is there).
    pub fn for_start(agent: &Agent) -> Lookup {
        match agent.status.as_ref().is_some_and(|s| s.replicas > 0 || s.restarts > 0) {
            true => Lookup::ReadFirst,
            false => Lookup::CreateFirst,
        }
    }
}

/// The token of `agent`, creating its Secret (owned by the Agent) on first use. A Secret of
/// that name owned by an earlier Agent of the same name is replaced.
///
/// With `Lookup::CreateFirst` the create is tried first (a 409 then reads): a node's first
/// start of each of many agents then costs one API round trip, not a read that finds nothing
/// and then the create. `Lookup::ReadFirst` suits a caller that asks again and again for a
/// token that is mostly there: a restart, or the operator's every reconcile.
pub async fn ensure_token(client: &kube::Client, agent: &Agent, lookup: Lookup) -> Result<String, Error> {
    let namespace = agent.namespace().unwrap_or_default();
    let name = token_secret_name(&agent.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let uid = agent.uid().unwrap_or_default();
    let write = |source| Error::Write { namespace: namespace.clone(), name: name.clone(), source: Box::new(source) };
    let mut read_first = lookup == Lookup::ReadFirst;
    for _ in 0..3 {
        if read_first {
            let existing = api.get_opt(&name).await.map_err(|source| Error::Read {
                namespace: namespace.clone(),
                name: name.clone(),
                field: "the agent's token".into(),
                source: Box::new(source),
            })?;
            if let Some(s) = existing {
                let owned = s.owner_references().iter().any(|o| o.uid == uid);
                let token =
                    s.data.as_ref().and_then(|d| d.get(TOKEN_KEY)).and_then(|b| String::from_utf8(b.0.clone()).ok());
                match token {
                    Some(t) if owned && !t.is_empty() => return Ok(t),
                    _ => {
                        // Left by an earlier Agent of this name (or emptied): replaced.
                        let dp = DeleteParams {
                            preconditions: Some(Preconditions { uid: s.uid(), resource_version: None }),
                            ..DeleteParams::default()
                        };
                        match api.delete(&name, &dp).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                            Err(e) => return Err(write(e)),
                        }
                    }
                }
            }
        }
        let token = new_token()?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(BTreeMap::from([("a2a.dev/agent".to_owned(), agent.name_any())])),
                owner_references: Some(vec![owner(agent)]),
                ..ObjectMeta::default()
            },
            type_: Some(TOKEN_SECRET_TYPE.to_owned()),
            data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), ByteString(token.clone().into_bytes()))])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(token),
            // There already (a restart, another replica's start, an earlier Agent's): read it.
            Err(kube::Error::Api(s)) if s.code == 409 => read_first = true,
            Err(e) => return Err(write(e)),
        }
    }
    Err(write(kube::Error::Api(
        kube::core::Status::failure("the token Secret kept changing while it was written", "Conflict")
            .with_code(409)
            .boxed(),
    )))
}

fn owner(agent: &Agent) -> OwnerReference {
    OwnerReference {
        api_version: Agent::api_version(&()).into_owned(),
        kind: Agent::kind(&()).into_owned(),
        name: agent.name_any(),
        uid: agent.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// 32 random bytes, base64url without padding (43 characters).
fn new_token() -> Result<String, Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_header_safe() {
        let (a, b) = (new_token().expect("token"), new_token().expect("token"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }
}
