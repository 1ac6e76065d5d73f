//! What a2a presents to an agent, read from Secrets through the API server (the local one or
//! a cluster's: the same code serves both modes):
//! - an agent with `url`: its `spec.tls` and `spec.auth` references, resolved to
//!   [`ClientOptions`];
//! - an agent a2a runs: its own token, given to the agent process as `A2A_AGENT_TOKEN` and
//!   presented as `Authorization: Bearer` on every A2A call. No token is stored: each is
//!   derived ([`AgentTokenKey::token`]) from the key of the agent's namespace, kept in the
//!   Secret [`KEY_SECRET`] (made on first need), and bound to the Agent's uid, so an Agent
//!   made again under the same name gets another token. On a cluster the operator still
//!   writes each token into the Secret `<agent>-a2a-token` (owned by the Agent), because a
//!   pod can take a value into its environment only from a Secret.
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

/// The Secret holding the key agents' tokens are derived from, one per namespace.
pub const KEY_SECRET: &str = "a2a-agent-token-key";
/// The key of the token key in [`KEY_SECRET`].
pub const KEY_KEY: &str = "key";
/// The type of a [`KEY_SECRET`].
pub const KEY_SECRET_TYPE: &str = "a2a.dev/agent-token-key";
/// The bytes of a new key, and the fewest a key may have.
pub const KEY_BYTES: usize = 32;
/// What a token is derived for, so that the key could sign nothing else that looks alike.
const TOKEN_LABEL: &str = "a2a.dev/agent-token/v1";
const KEY_FIELD: &str = "the agents' token key";

/// The name of the Secret that holds, on a cluster, the token of agent `agent`.
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
    #[error(
        "key {key:?} of Secret {namespace}/{name} has {len} bytes; the agents' token key needs at least {KEY_BYTES} \
         (delete the Secret and a new key is made)"
    )]
    ShortKey { namespace: String, name: String, key: String, len: usize },
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
            Self::ShortKey { .. } => "short_key",
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
/// runs, its own token as the bearer credential (none while its namespace has no token key:
/// no agent of it was started yet).
pub async fn client_options(client: &kube::Client, agent: &Agent) -> Result<ClientOptions, Error> {
    let namespace = agent.namespace().unwrap_or_default();
    let mut secrets = Secrets::new(client, &namespace);
    let spec = &agent.spec;
    let mut options = ClientOptions { addressing: super::engine::addressing(agent), ..Default::default() };
    if spec.url.is_none() {
        if spec.protocol() == Protocol::A2a
            && let Some(data) = secrets.data(KEY_SECRET, KEY_FIELD).await?
        {
            let key = AgentTokenKey::from_data(&namespace, data.get(KEY_KEY).map(|b| b.0.as_slice()))?;
            options.credentials.bearer = Some(SecretText::new(key.token_of(agent)));
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

/// The key of one namespace that its agents' tokens are derived from.
#[derive(Clone)]
pub struct AgentTokenKey {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for AgentTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTokenKey(..)")
    }
}

impl AgentTokenKey {
    /// The key in the value `bytes` of key [`KEY_KEY`] of the [`KEY_SECRET`] of `namespace`:
    /// an error naming the Secret and the key when it is missing or shorter than
    /// [`KEY_BYTES`] (never an empty or guessable key).
    pub fn from_data(namespace: &str, bytes: Option<&[u8]>) -> Result<AgentTokenKey, Error> {
        let Some(bytes) = bytes else {
            return Err(Error::MissingKey {
                namespace: namespace.to_owned(),
                name: KEY_SECRET.to_owned(),
                key: KEY_KEY.to_owned(),
                field: KEY_FIELD.to_owned(),
            });
        };
        if bytes.len() < KEY_BYTES {
            return Err(Error::ShortKey {
                namespace: namespace.to_owned(),
                name: KEY_SECRET.to_owned(),
                key: KEY_KEY.to_owned(),
                len: bytes.len(),
            });
        }
        Ok(AgentTokenKey { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes) })
    }

    /// The token of the agent `namespace/name` whose uid is `uid`: base64url (no padding, 43
    /// characters) of HMAC-SHA256 over a label, the namespace, the name and the uid. Names
    /// and uids hold no NUL, so the parts cannot run into each other.
    pub fn token(&self, namespace: &str, name: &str, uid: &str) -> String {
        use base64::Engine as _;
        let message = format!("{TOKEN_LABEL}\0{namespace}\0{name}\0{uid}");
        let tag = ring::hmac::sign(&self.key, message.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// The token of `agent` (as it is now: its namespace, name and uid).
    pub fn token_of(&self, agent: &Agent) -> String {
        self.token(&agent.namespace().unwrap_or_default(), &agent.name_any(), &agent.uid().unwrap_or_default())
    }
}

/// How [`ensure_key`] looks for a namespace's token key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Read, and create when missing: for a caller that asks again and again for a key that
    /// is mostly there (the operator's every reconcile).
    ReadFirst,
    /// Create, and read when it is there already (409): for a caller that asks once and
    /// keeps the answer (a node, once per namespace).
    CreateFirst,
}

/// The token key of `namespace`, reading its Secret [`KEY_SECRET`], and making it (32
/// random bytes) when there is none.
pub async fn ensure_key(client: &kube::Client, namespace: &str, lookup: Lookup) -> Result<AgentTokenKey, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let write = |source| Error::Write {
        namespace: namespace.to_owned(),
        name: KEY_SECRET.to_owned(),
        source: Box::new(source),
    };
    let mut read_first = lookup == Lookup::ReadFirst;
    for _ in 0..3 {
        if read_first {
            let existing = api.get_opt(KEY_SECRET).await.map_err(|source| Error::Read {
                namespace: namespace.to_owned(),
                name: KEY_SECRET.to_owned(),
                field: KEY_FIELD.to_owned(),
                source: Box::new(source),
            })?;
            if let Some(s) = existing {
                let bytes = s.data.as_ref().and_then(|d| d.get(KEY_KEY)).map(|b| b.0.as_slice());
                return AgentTokenKey::from_data(namespace, bytes);
            }
        }
        let mut bytes = vec![0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(KEY_SECRET.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "a2a".to_owned())])),
                ..ObjectMeta::default()
            },
            type_: Some(KEY_SECRET_TYPE.to_owned()),
            data: Some(BTreeMap::from([(KEY_KEY.to_owned(), ByteString(bytes.clone()))])),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return AgentTokenKey::from_data(namespace, Some(&bytes)),
            // Made already (by an earlier start, the operator, another node): read it.
            Err(kube::Error::Api(s)) if s.code == 409 => read_first = true,
            Err(e) => return Err(write(e)),
        }
    }
    Err(write(kube::Error::Api(
        kube::core::Status::failure("the token key Secret kept changing while it was read", "Conflict")
            .with_code(409)
            .boxed(),
    )))
}

/// On a cluster: the token of `agent`, derived from its namespace's key, written into the
/// Secret `<agent>-a2a-token` (owned by the Agent, so the garbage collector removes it with
/// the Agent) that its pods read it from. A Secret of that name with another value (a key
/// rotated, a token made by an older version) or owned by an earlier Agent of the same name
/// is deleted and made again: never patched or updated.
pub async fn ensure_token(client: &kube::Client, agent: &Agent) -> Result<String, Error> {
    let namespace = agent.namespace().unwrap_or_default();
    let token = ensure_key(client, &namespace, Lookup::ReadFirst).await?.token_of(agent);
    let name = token_secret_name(&agent.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let uid = agent.uid().unwrap_or_default();
    let write = |source| Error::Write { namespace: namespace.clone(), name: name.clone(), source: Box::new(source) };
    for _ in 0..3 {
        let existing = api.get_opt(&name).await.map_err(|source| Error::Read {
            namespace: namespace.clone(),
            name: name.clone(),
            field: "the agent's token".into(),
            source: Box::new(source),
        })?;
        if let Some(s) = existing {
            let owned = s.owner_references().iter().any(|o| o.uid == uid);
            let same = s.data.as_ref().and_then(|d| d.get(TOKEN_KEY)).is_some_and(|b| b.0 == token.as_bytes());
            if owned && same {
                return Ok(token);
            }
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
            // Made meanwhile (another reconcile, a deletion not finished): look again.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AgentTokenKey {
        AgentTokenKey::from_data("team", Some(&[byte; KEY_BYTES])).expect("a key")
    }

    #[test]
    fn a_token_is_stable_for_the_same_key_namespace_name_and_uid() {
        let t = key(1).token("team", "writer", "u-1");
        assert_eq!(t, key(1).token("team", "writer", "u-1"));
        assert_eq!(t.len(), 43);
        assert!(t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{t}");
    }

    #[test]
    fn a_token_differs_per_key_namespace_name_and_uid() {
        let t = key(1).token("team", "writer", "u-1");
        for other in [
            key(2).token("team", "writer", "u-1"),
            key(1).token("other", "writer", "u-1"),
            key(1).token("team", "reader", "u-1"),
            key(1).token("team", "writer", "u-2"),
            // The parts are kept apart: moving a character from one to the next changes it.
            key(1).token("tea", "mwriter", "u-1"),
        ] {
            assert_ne!(t, other);
        }
    }

    #[test]
    fn a_missing_or_short_key_is_an_error_naming_the_secret_and_the_key() {
        let missing = AgentTokenKey::from_data("team", None).expect_err("no key");
        assert_eq!(
            missing.to_string(),
            "Secret team/a2a-agent-token-key has no key \"key\" (for the agents' token key)"
        );
        for short in [&b""[..], &[7u8; KEY_BYTES - 1][..]] {
            let e = AgentTokenKey::from_data("team", Some(short)).expect_err("too short");
            let text = e.to_string();
            assert!(text.starts_with("key \"key\" of Secret team/a2a-agent-token-key has "), "{text}");
            assert!(text.contains(&format!("{} bytes", short.len())), "{text}");
        }
    }
}
