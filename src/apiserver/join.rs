//! Hosts joining this one, as kubeadm and k3s enrol nodes: the first host's CA (the one
//! [`super::pki`] made for the API server) signs a certificate for each host that presents a
//! valid join token.
//!
//! - A join token reads `K10<pin>::<id>.<secret>` (k3s's form): `pin` is the hex SHA-256 of the
//!   CA's SubjectPublicKeyInfo (kubeadm's `--discovery-token-ca-cert-hash`), `id` six and
//!   `secret` thirty-two lower-case letters and digits. Only the secret's SHA-256 is kept, in
//!   `$A2A_HOME/join-tokens` (0600), with the token's expiry (24 hours by default).
//! - `GET /cacerts` answers the CA to anyone (k3s's path): the joining host checks it against
//!   the pin before it trusts it, so a host in the middle gains nothing by changing it.
//! - `POST /join` (bearer: `<id>.<secret>`, body `{"nodeName", "csr"}`) signs the joining
//!   host's certificate signing request: the key never leaves that host. The certificate
//!   names the node (CN = node name, O = `system:nodes`), is good for client and server
//!   authentication for a year, and carries the node name and the names the request asked
//!   for that are valid DNS names or IP addresses. The node is recorded in `$A2A_HOME/nodes`.
//! - A second join under a name already recorded is refused (409), as kubeadm refuses a node
//!   name that exists: `a2a node delete NAME` on this host forgets the node (and its
//!   certificate stops authenticating here), then it may join again.
//!
//! Tokens and nodes are also served under `/apis/auth.a2a.dev/v1alpha1/{jointokens,nodes}` to
//! the unbound admin, as the users are ([`super::users`]).

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authz::USERS_GROUP;
use super::home;
use super::status::{ApiError, json_response};

/// The file of join tokens under the home.
pub const TOKENS_FILE: &str = "join-tokens";
/// The file of joined nodes under the home.
pub const NODES_FILE: &str = "nodes";
/// The organisation (Kubernetes group) of every node certificate.
pub const NODES_GROUP: &str = "system:nodes";
/// The user a node's certificate authenticates as: `system:node:NAME`.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// A token's lifetime unless told otherwise (kubeadm's).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// A node certificate's lifetime.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// The prefix of a join token (k3s's, for a token carrying the CA's hash).
pub const TOKEN_PREFIX: &str = "K10";
/// The path that answers the CA, unauthenticated.
pub const CACERTS_PATH: &str = "/cacerts";
/// The path that signs a joining host's certificate request.
pub const JOIN_PATH: &str = "/join";
/// The path where a joined host, authenticated by its current certificate, has a new one signed.
pub const RENEW_PATH: &str = "/join/renew";
/// The path that lists the serials of node certificates the first host no longer accepts.
pub const REVOKED_PATH: &str = "/join/revoked";
/// The file of those serials under the home.
pub const REVOKED_FILE: &str = "revoked-nodes";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Names asked for in one certificate request, at most.
const MAX_SANS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("join token {0:?} not found")]
    TokenNotFound(String),
    #[error("node {0:?} not found")]
    NodeNotFound(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("signing the certificate: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("{0}")]
    Certificate(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn random_string(len: usize) -> Result<String> {
    // 252 = 7 × 36: bytes past it are drawn again, so every character is equally likely.
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        for b in bytes.into_iter().filter(|b| *b < 252).take(len - out.len()) {
            out.push(ALPHABET[(b % 36) as usize] as char);
        }
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The pin of a CA: the hex SHA-256 of its SubjectPublicKeyInfo (the first certificate of `pem`),
/// as kubeadm's `--discovery-token-ca-cert-hash sha256:...`.
pub fn ca_pin(pem: &str) -> Result<String> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| Error::Certificate("no certificate in the CA bundle".into()))?
        .map_err(|e| Error::Certificate(format!("the CA bundle is not valid PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Certificate(format!("the CA is not a valid certificate: {e}")))?;
    Ok(hex(&sha256(cert.tbs_certificate.subject_pki.raw)))
}

/// A join token's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA's SubjectPublicKeyInfo.
    pub pin: String,
    pub id: String,
    pub secret: String,
}

impl JoinToken {
    /// Parses `K10<pin>::<id>.<secret>`; the error says what is wrong, never the secret.
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let text = text.trim();
        let shape = "a join token reads K10<64 hex digits>::<6 characters>.<32 characters>, as `a2a token create` \
                     prints it";
        let Some(rest) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(format!("the token does not start with {TOKEN_PREFIX}: {shape}"));
        };
        let Some((pin, credential)) = rest.split_once("::") else {
            return Err(format!("the token has no \"::\" after the CA's hash: {shape}"));
        };
        if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("the CA's hash in the token is not 64 hex digits: {shape}"));
        }
        let (id, secret) = parse_credential(credential).map_err(|e| format!("{e}: {shape}"))?;
        Ok(JoinToken { pin: pin.to_ascii_lowercase(), id, secret })
    }

    /// The token as printed.
    pub fn text(&self) -> String {
        format!("{TOKEN_PREFIX}{}::{}.{}", self.pin, self.id, self.secret)
    }

    /// What the joining host sends as its bearer token.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

fn token_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `<id>.<secret>` → (id, secret).
pub fn parse_credential(text: &str) -> Result<(String, String), String> {
    let Some((id, secret)) = text.split_once('.') else {
        return Err("the token's credential is not <id>.<secret>".into());
    };
    if id.len() != ID_LEN || !id.chars().all(token_char) {
        return Err(format!("the token's id is not {ID_LEN} lower-case letters or digits"));
    }
    if secret.len() != SECRET_LEN || !secret.chars().all(token_char) {
        return Err(format!("the token's secret is not {SECRET_LEN} lower-case letters or digits"));
    }
    Ok((id.to_string(), secret.to_string()))
}

/// Checks a node name: a DNS-1123 subdomain (as Kubernetes node names), at most 63 characters
/// per label, so it can be a certificate's DNS name and a TLS server name.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid node name {name:?}: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
        return bad("must consist of lower case letters, digits, '-' and '.' (pass --node-name)");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each '.'-separated part must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("each '.'-separated part must start and end with a letter or digit");
        }
    }
    Ok(())
}

/// Checks a name the certificate should carry: a DNS name as node names are, or an IP address
/// other than the unspecified one and multicast ones.
fn validate_san(san: &str) -> Result<(), String> {
    if let Ok(ip) = san.parse::<std::net::IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!("invalid name {san:?} for the certificate: not a host's address"));
        }
        return Ok(());
    }
    validate_node_name(san).map_err(|_| {
        format!("invalid name {san:?} for the certificate: neither an IP address nor a lower-case DNS name")
    })
}

/// One join token as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created: String,
    /// Seconds since the epoch after which the token is refused.
    pub expires: i64,
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

impl StoredToken {
    pub fn to_json(&self) -> Value {
        json!({
            "apiVersion": format!("{USERS_GROUP}/v1alpha1"),
            "kind": "JoinToken",
            "metadata": {"name": self.id, "creationTimestamp": self.created},
            "spec": {"description": self.description, "expires": rfc3339(self.expires)},
            "status": {"expired": self.expires <= unix_now()},
        })
    }
}

/// One joined node as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// Hex SHA-256 of the certificate (DER).
    pub sha256_fingerprint: String,
    pub joined: String,
    pub not_after: String,
    /// The names the certificate carries.
    #[serde(default)]
    pub names: Vec<String>,
    /// The join token it came with.
    pub token_id: String,
}

impl Node {
    pub fn to_json(&self) -> Value {
        json!({
            "apiVersion": format!("{USERS_GROUP}/v1alpha1"),
            "kind": "Node",
            "metadata": {"name": self.name, "creationTimestamp": self.joined},
            "spec": {"names": self.names, "tokenId": self.token_id},
            "status": {"serial": self.serial, "sha256Fingerprint": self.sha256_fingerprint, "notAfter": self.not_after},
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct TokensDoc {
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

#[derive(Default, Serialize, Deserialize)]
struct NodesDoc {
    #[serde(default)]
    nodes: Vec<Node>,
}

/// A node certificate no longer accepted: its node was deleted, or it was renewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub serial: String,
    pub node: String,
    /// Seconds since the epoch when the certificate expires (then it is dropped from the list).
    pub not_after: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct RevokedDoc {
    #[serde(default)]
    revoked: Vec<Revoked>,
}

/// Why a join token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token with that id, or the secret does not match (not told apart).
    Unknown,
    /// The token was valid and its time is up.
    Expired(String),
}

/// The join tokens and the joined nodes of this host.
pub struct Join {
    home: PathBuf,
    tokens: RwLock<Vec<StoredToken>>,
    nodes: RwLock<Vec<Node>>,
    /// This host's CA: the cluster's when this host is the first.
    ca_pem: String,
    /// The first host's URL when this host joined another.
    member_of: Option<String>,
    /// This host's own node name (the first host's), which no joining host may take.
    own_node: Option<String>,
    /// Node certificates this host no longer accepts (the first host's list).
    revoked: RwLock<Vec<Revoked>>,
    /// On a joined host: the serials the first host last said it no longer accepts.
    revoked_by_first_host: RwLock<std::collections::HashSet<String>>,
}

fn load<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match home::read(path, home::Kind::Secret)? {
        None => Ok(T::default()),
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| Error::Parse { path: path.to_path_buf(), message: e.to_string() })
        }
    }
}

impl Join {
    /// Loads the tables under `home`; `ca_pem` is this host's CA, `member_of` the first host
    /// when this one joined another.
    pub fn open(home: &Path, ca_pem: &str, member_of: Option<String>, own_node: Option<String>) -> Result<Join> {
        let tokens: TokensDoc = load(&home.join(TOKENS_FILE))?;
        let nodes: NodesDoc = load(&home.join(NODES_FILE))?;
        let revoked: RevokedDoc = load(&home.join(REVOKED_FILE))?;
        for t in &tokens.tokens {
            if t.secret_sha256.len() != 64 {
                return Err(Error::Parse {
                    path: home.join(TOKENS_FILE),
                    message: format!("token {:?}: secretSha256 is not 64 hex digits", t.id),
                });
            }
        }
        Ok(Join {
            home: home.to_path_buf(),
            tokens: RwLock::new(tokens.tokens),
            nodes: RwLock::new(nodes.nodes),
            ca_pem: ca_pem.to_string(),
            member_of,
            own_node,
            revoked: RwLock::new(revoked.revoked),
            revoked_by_first_host: RwLock::default(),
        })
    }

    /// Adds a certificate to the list of those no longer accepted (expired ones leave it).
    fn revoke(&self, node: &Node) -> Result<()> {
        let not_after = node.not_after.parse::<jiff::Timestamp>().map_or(i64::MAX, |t| t.as_second());
        let now = unix_now();
        let mut list = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Revoked> = list.iter().filter(|r| r.not_after > now).cloned().collect();
        next.push(Revoked { serial: node.serial.clone(), node: node.name.clone(), not_after });
        let text = serde_json::to_vec_pretty(&RevokedDoc { revoked: next.clone() }).unwrap_or_default();
        home::write_private(&self.home.join(REVOKED_FILE), &text)?;
        *list = next;
        Ok(())
    }

    /// The serials of the node certificates this host no longer accepts.
    pub fn revoked_serials(&self) -> Vec<String> {
        let now = unix_now();
        let list = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        list.iter().filter(|r| r.not_after > now).map(|r| r.serial.clone()).collect()
    }

    /// On a joined host: what the first host said it no longer accepts.
    pub fn set_revoked_by_first_host(&self, serials: impl IntoIterator<Item = String>) {
        *self.revoked_by_first_host.write().unwrap_or_else(|p| p.into_inner()) = serials.into_iter().collect();
    }

    /// Whether a verified node certificate is accepted: on the first host it must be the one
    /// recorded for the node; on a joined host it must not be on the first host's list.
    pub fn accepts(&self, node: &str, serial: &str) -> bool {
        if self.member_of.is_some() {
            return !self.revoked_by_first_host.read().unwrap_or_else(|p| p.into_inner()).contains(serial);
        }
        self.node_current(node, serial)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn member_of(&self) -> Option<&str> {
        self.member_of.as_deref()
    }

    fn save_tokens(&self, tokens: &[StoredToken]) -> Result<()> {
        let text = serde_json::to_vec_pretty(&TokensDoc { tokens: tokens.to_vec() }).unwrap_or_default();
        Ok(home::write_private(&self.home.join(TOKENS_FILE), &text)?)
    }

    fn save_nodes(&self, nodes: &[Node]) -> Result<()> {
        let text = serde_json::to_vec_pretty(&NodesDoc { nodes: nodes.to_vec() }).unwrap_or_default();
        Ok(home::write_private(&self.home.join(NODES_FILE), &text)?)
    }

    pub fn tokens(&self) -> Vec<StoredToken> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes a token good for `ttl`; answers it as stored and the whole token (shown this
    /// once). Tokens already expired are removed on the way, as kubeadm's token cleaner does.
    pub fn create_token(&self, ttl: Duration, description: &str) -> Result<(StoredToken, String)> {
        if let Some(first) = &self.member_of {
            return Err(Error::Invalid(format!(
                "this host joined the cluster of {first}: create join tokens on that host, whose CA signs the nodes"
            )));
        }
        if ttl.is_zero() || ttl > Duration::from_secs(10 * 365 * 24 * 3600) {
            return Err(Error::Invalid(format!("invalid ttl {ttl:?}: must be more than 0 and at most 10 years")));
        }
        if description.len() > 1024 || description.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "invalid description: at most 1024 characters, no control characters".to_string(),
            ));
        }
        let pin = ca_pin(&self.ca_pem)?;
        let token = JoinToken { pin, id: random_string(ID_LEN)?, secret: random_string(SECRET_LEN)? };
        let now = unix_now();
        let stored = StoredToken {
            id: token.id.clone(),
            secret_sha256: hex(&sha256(token.secret.as_bytes())),
            description: description.to_string(),
            created: rfc3339(now),
            expires: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let mut table = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if table.iter().any(|t| t.id == stored.id) {
            return Err(Error::Invalid("a token with the same id was drawn; try again".into()));
        }
        let mut next: Vec<StoredToken> = table.iter().filter(|t| t.expires > now).cloned().collect();
        next.push(stored.clone());
        self.save_tokens(&next)?;
        *table = next;
        Ok((stored, token.text()))
    }

    /// Removes a token: a join with it is refused from now on.
    pub fn delete_token(&self, id: &str) -> Result<StoredToken> {
        remove_saved(
            &self.tokens,
            |t| t.id == id,
            || Error::TokenNotFound(id.to_string()),
            |next| self.save_tokens(next),
        )
    }

    /// Checks `<id>.<secret>`: every stored digest is compared in constant time.
    pub fn check_token(&self, id: &str, secret: &str) -> Result<StoredToken, Refusal> {
        let given = sha256(secret.as_bytes());
        let mut found = None;
        for t in self.tokens.read().unwrap_or_else(|p| p.into_inner()).iter() {
            let stored = (0..32)
                .map(|i| t.secret_sha256.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_default();
            if same(&given, &stored) && same(t.id.as_bytes(), id.as_bytes()) {
                found = Some(t.clone());
            }
        }
        let token = found.ok_or(Refusal::Unknown)?;
        if token.expires <= unix_now() {
            return Err(Refusal::Expired(rfc3339(token.expires)));
        }
        Ok(token)
    }

    /// Whether `serial` is the certificate recorded for node `name` (a node forgotten, or
    /// joined again, no longer authenticates with its old certificate).
    pub fn node_current(&self, name: &str, serial: &str) -> bool {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n.name == name && n.serial == serial)
    }

    /// Forgets a node: it may join again, and its certificate no longer authenticates here.
    pub fn delete_node(&self, name: &str) -> Result<Node> {
        let gone = remove_saved(
            &self.nodes,
            |n| n.name == name,
            || Error::NodeNotFound(name.to_string()),
            |next| self.save_nodes(next),
        )?;
        self.revoke(&gone)?;
        Ok(gone)
    }

    /// Why a node may not carry `names`: a loopback name (every host has its own), a name of
    /// the first host (its node name, its serving certificate's names), or one another node's
    /// certificate carries. Otherwise a host that joined could pose as another to the hosts
    /// that trust the same CA.
    fn taken(&self, node: &str, names: &[String], table: &[Node]) -> Option<String> {
        let serving = home::read(&self.home.join("pki").join("server.crt"), home::Kind::Public)
            .ok()
            .flatten()
            .map(|pem| certificate_names(&pem))
            .unwrap_or_default();
        for name in names {
            let loopback = name == "localhost"
                || name.ends_with(".localhost")
                || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                return Some(format!("{name:?} is a loopback name, which every host has of its own"));
            }
            if self.own_node.as_deref() == Some(name.as_str()) || serving.contains(name) {
                return Some(format!("{name:?} is a name of the first host"));
            }
            if let Some(other) = table.iter().find(|n| n.name != node && (n.name == *name || n.names.contains(name))) {
                return Some(format!("{name:?} is a name of node {:?}", other.name));
            }
        }
        None
    }

    /// Signs a new certificate for `node`, which authenticated with its current one; the
    /// record then names the new certificate, so the old one is no longer accepted here.
    pub fn renew(&self, node: &str, csr_pem: &str) -> Result<String, ApiError> {
        if let Some(first) = self.member_of() {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("this host joined the cluster of {first}; certificates are renewed there"),
            ));
        }
        let ca_key = home::read(&self.home.join("pki").join("ca.key"), home::Kind::Secret)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::internal("the CA's key is missing: this host cannot sign certificates"))?;
        let mut table = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let Some(at) = table.iter().position(|n| n.name == node) else {
            return Err(not_found("nodes", node));
        };
        let signed = sign_node(csr_pem, node, &self.ca_pem, &ca_key, NODE_CERT_LIFETIME).map_err(|e| match e {
            Error::Invalid(m) => ApiError::new(422, "Invalid", m),
            other => ApiError::internal(other.to_string()),
        })?;
        if let Some(why) = self.taken(node, &signed.names, &table) {
            return Err(ApiError::new(422, "Invalid", format!("the certificate request is refused: {why}")));
        }
        let mut next = table.clone();
        let record = &mut next[at];
        let old = record.clone();
        record.serial = signed.serial;
        record.sha256_fingerprint = signed.fingerprint;
        record.not_after = rfc3339(signed.not_after);
        record.names = signed.names;
        self.save_nodes(&next).map_err(|e| ApiError::internal(e.to_string()))?;
        *table = next;
        self.revoke(&old).map_err(|e| ApiError::internal(e.to_string()))?;
        tracing::info!(node, "renewed a node's certificate");
        Ok(signed.pem)
    }

    /// Signs `csr_pem` for `node` and records the node; answers the certificate (PEM).
    fn enrol(&self, node: &str, csr_pem: &str, token_id: &str) -> Result<String, ApiError> {
        validate_node_name(node).map_err(|m| ApiError::new(422, "Invalid", m))?;
        let ca_key = home::read(&self.home.join("pki").join("ca.key"), home::Kind::Secret)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::internal("the CA's key is missing: this host cannot sign certificates"))?;
        if self.own_node.as_deref() == Some(node) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("node \"{node}\" is the name of this host itself; join under another --node-name"),
            ));
        }
        let mut table = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = table.iter().find(|n| n.name == node) {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "node \"{node}\" already joined at {} (certificate serial {}); to join it again, run `a2a node \
                     delete {node}` on this host first, or join under another --node-name",
                    n.joined, n.serial
                ),
            );
            e.details = Some(json!({"name": node, "group": USERS_GROUP, "kind": "nodes"}));
            return Err(e);
        }
        let signed = sign_node(csr_pem, node, &self.ca_pem, &ca_key, NODE_CERT_LIFETIME).map_err(|e| match e {
            Error::Invalid(m) => ApiError::new(422, "Invalid", m),
            other => ApiError::internal(other.to_string()),
        })?;
        if let Some(why) = self.taken(node, &signed.names, &table) {
            return Err(ApiError::new(422, "Invalid", format!("the certificate request is refused: {why}")));
        }
        let record = Node {
            name: node.to_string(),
            serial: signed.serial,
            sha256_fingerprint: signed.fingerprint,
            joined: rfc3339(unix_now()),
            not_after: rfc3339(signed.not_after),
            names: signed.names,
            token_id: token_id.to_string(),
        };
        let mut next = table.clone();
        next.push(record);
        self.save_nodes(&next).map_err(|e| ApiError::internal(e.to_string()))?;
        *table = next;
        Ok(signed.pem)
    }
}

/// A node certificate as signed.
pub struct Signed {
    pub pem: String,
    pub serial: String,
    pub fingerprint: String,
    pub not_after: i64,
    pub names: Vec<String>,
}

/// Signs a node certificate for `node` from the request `csr_pem` (its signature checked): the
/// request's public key and the names it asks for (each checked) are kept, everything else is
/// this host's choice.
pub fn sign_node(csr_pem: &str, node: &str, ca_pem: &str, ca_key_pem: &str, lifetime: Duration) -> Result<Signed> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Error::Invalid(format!("the certificate signing request is refused: {e}")))?;
    let mut names = vec![node.to_string()];
    for san in &csr.params.subject_alt_names {
        let name = match san {
            SanType::DnsName(d) => d.as_str().to_string(),
            SanType::IpAddress(ip) => ip.to_string(),
            other => {
                return Err(Error::Invalid(format!(
                    "the certificate signing request asks for {other:?}: only DNS names and IP addresses are signed"
                )));
            }
        };
        validate_san(&name).map_err(Error::Invalid)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.len() > MAX_SANS {
        return Err(Error::Invalid(format!("the certificate signing request asks for more than {MAX_SANS} names")));
    }
    let mut params = CertificateParams::new(names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    dn.push(DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| Error::Random(e.to_string()))?;
    // Positive, and no leading zero byte to be trimmed: the recorded serial reads as the
    // certificate's.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    (params.not_before, params.not_after) = super::pki::validity_window(lifetime)
        .map_err(|e| Error::Certificate(format!("the certificate's validity: {e}")))?;
    let not_after = params.not_after.unix_timestamp();
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, &ca_key)?;
    let cert = CertificateSigningRequestParams { params, public_key: csr.public_key }.signed_by(&issuer)?;
    Ok(Signed { fingerprint: hex(&sha256(cert.der())), pem: cert.pem(), serial: hex(&serial), not_after, names })
}

/// The DNS names and IP addresses a certificate (PEM) carries.
pub fn certificate_names(pem: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem.as_bytes()).next() else { return Vec::new() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Who a client certificate names, as the TLS layer saw it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Hex, as recorded in [`Node::serial`].
    pub serial: String,
}

impl PeerCertificate {
    /// Reads the leaf of a verified chain.
    pub fn from_der(der: &[u8]) -> Option<PeerCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
        let organizations =
            subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_string).collect::<Vec<_>>();
        Some(PeerCertificate { common_name, organizations, serial: hex(cert.raw_serial()) })
    }

    /// The node it names, when it is a node certificate.
    pub fn node(&self) -> Option<&str> {
        (self.organizations.iter().any(|o| o == NODES_GROUP) && validate_node_name(&self.common_name).is_ok())
            .then_some(self.common_name.as_str())
    }
}

/// Whether a path is the join tokens API: answers the token's id, if one is named.
pub fn tokens_target(path: &str) -> Option<Option<String>> {
    api_target(path, "jointokens")
}

/// Whether a path is the nodes API: answers the node's name, if one is named.
pub fn nodes_target(path: &str) -> Option<Option<String>> {
    api_target(path, "nodes")
}

fn api_target(path: &str, plural: &str) -> Option<Option<String>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", USERS_GROUP, "v1alpha1", p] if *p == plural => Some(None),
        ["apis", USERS_GROUP, "v1alpha1", p, name] if *p == plural => Some(Some(name.to_string())),
        _ => None,
    }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    let mut e = ApiError::new(404, "NotFound", format!("{kind}.{USERS_GROUP} \"{name}\" not found"));
    e.details = Some(json!({"name": name, "group": USERS_GROUP, "kind": kind}));
    e
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": format!("{USERS_GROUP}/v1alpha1"), "kind": kind, "metadata": {}, "items": items}),
    )
}

/// Serves the join tokens API (the caller was authorized before): `GET` lists or shows, `POST`
/// creates (`spec.ttl` in seconds, `spec.description`; the answer's `status.token` is the only
/// copy of the token), `DELETE` removes.
pub fn serve_tokens(join: &Join, method: &Method, id: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    match (method.as_str(), id) {
        ("GET", None) => Ok(list("JoinTokenList", join.tokens().iter().map(StoredToken::to_json).collect())),
        ("GET", Some(id)) => {
            let t = join.tokens().into_iter().find(|t| t.id == id).ok_or_else(|| not_found("jointokens", id))?;
            Ok(json_response(StatusCode::OK, &t.to_json()))
        }
        ("POST", None) => {
            let object: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("the body is not a JoinToken in JSON: {e}")))?
            };
            let ttl = match object.pointer("/spec/ttlSeconds") {
                None | Some(Value::Null) => DEFAULT_TTL,
                Some(v) => Duration::from_secs(v.as_u64().ok_or_else(|| {
                    ApiError::new(422, "Invalid", "spec.ttlSeconds: must be a positive whole number of seconds")
                })?),
            };
            let description = object.pointer("/spec/description").and_then(Value::as_str).unwrap_or_default();
            let (stored, token) = join.create_token(ttl, description).map_err(|e| match e {
                Error::Invalid(m) => ApiError::new(422, "Invalid", m),
                other => ApiError::internal(other.to_string()),
            })?;
            let mut out = stored.to_json();
            out["status"]["token"] = json!(token);
            Ok(json_response(StatusCode::CREATED, &out))
        }
        ("DELETE", Some(id)) => match join.delete_token(id) {
            Ok(t) => Ok(json_response(StatusCode::OK, &t.to_json())),
            Err(Error::TokenNotFound(_)) => Err(not_found("jointokens", id)),
            Err(e) => Err(ApiError::internal(e.to_string())),
        },
        _ => Err(ApiError::method_not_allowed("the join tokens API lists, gets, creates and deletes tokens")),
    }
}

/// Serves the nodes API: `GET` lists or shows, `DELETE` forgets a node.
pub fn serve_nodes(join: &Join, method: &Method, name: Option<&str>) -> Result<Response, ApiError> {
    match (method.as_str(), name) {
        ("GET", None) => Ok(list("NodeList", join.nodes().iter().map(Node::to_json).collect())),
        ("GET", Some(n)) => {
            let node = join.nodes().into_iter().find(|x| x.name == n).ok_or_else(|| not_found("nodes", n))?;
            Ok(json_response(StatusCode::OK, &node.to_json()))
        }
        ("DELETE", Some(n)) => match join.delete_node(n) {
            Ok(node) => Ok(json_response(StatusCode::OK, &node.to_json())),
            Err(Error::NodeNotFound(_)) => Err(not_found("nodes", n)),
            Err(e) => Err(ApiError::internal(e.to_string())),
        },
        _ => Err(ApiError::method_not_allowed(
            "the nodes API lists, gets and deletes nodes (hosts join with `a2a join`)",
        )),
    }
}

/// Who the audit log names for a join request (set on the response for [`super::observe`]).
#[derive(Clone, Debug)]
pub struct AuditedAs {
    pub user: String,
    pub groups: Vec<String>,
}

/// `POST /join/renew` from `subject` (a node, by its current certificate): body `{"csr"}`;
/// answers the new certificate and the CA.
pub fn serve_renew(join: &Join, subject: Option<&super::authz::Subject>, body: &Bytes) -> Result<Response, ApiError> {
    let Some(node) =
        subject.filter(|s| s.grant == super::authz::Grant::Node).and_then(|s| s.user.strip_prefix(NODE_USER_PREFIX))
    else {
        return Err(ApiError::new(403, "Forbidden", "only a node renews its certificate, with its current one"));
    };
    #[derive(Deserialize)]
    struct Renewal {
        csr: String,
    }
    let request: Renewal = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a renewal request (csr): {e}")))?;
    let certificate = join.renew(node, &request.csr)?;
    Ok(json_response(StatusCode::CREATED, &json!({"nodeName": node, "certificate": certificate, "ca": join.ca_pem()})))
}

/// What a joining host sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest {
    node_name: String,
    csr: String,
}

/// `POST /join`: the bearer `<id>.<secret>` must be a live token; answers the node's
/// certificate and the CA. The response carries who the audit log names.
pub fn serve_join(join: &Join, bearer: Option<&str>, body: &Bytes) -> (Response, AuditedAs, String) {
    let anonymous =
        || AuditedAs { user: "system:anonymous".to_string(), groups: vec!["system:unauthenticated".to_string()] };
    let refuse = |m: String| ApiError::new(401, "Unauthorized", m);
    let Some((id, secret)) = bearer.and_then(|b| parse_credential(b.trim()).ok()) else {
        let e = refuse("a join needs a join token (bearer <id>.<secret>, from `a2a token create`)".into());
        return (axum::response::IntoResponse::into_response(e), anonymous(), String::new());
    };
    let who = AuditedAs {
        user: format!("system:bootstrap:{id}"),
        groups: vec!["system:bootstrappers".to_string(), "system:authenticated".to_string()],
    };
    let answer = (|| {
        if let Some(first) = join.member_of() {
            return Err((
                ApiError::new(
                    403,
                    "Forbidden",
                    format!("this host joined the cluster of {first}; hosts join through that host"),
                ),
                String::new(),
            ));
        }
        let token = join.check_token(&id, &secret).map_err(|r| {
            let m = match r {
                Refusal::Unknown => format!(
                    "join token \"{id}\" is not valid here: no such token (never made on this host, or deleted), or \
                     its secret does not match"
                ),
                Refusal::Expired(at) => {
                    format!("join token \"{id}\" expired at {at}; make a new one with `a2a token create`")
                }
            };
            (refuse(m), String::new())
        })?;
        let request: JoinRequest = serde_json::from_slice(body).map_err(|e| {
            (ApiError::bad_request(format!("the body is not a join request (nodeName, csr): {e}")), String::new())
        })?;
        let certificate =
            join.enrol(&request.node_name, &request.csr, &token.id).map_err(|e| (e, request.node_name.clone()))?;
        tracing::info!(node = %request.node_name, token = %token.id, "a host joined");
        Ok((
            json_response(
                StatusCode::CREATED,
                &json!({"nodeName": request.node_name, "certificate": certificate, "ca": join.ca_pem()}),
            ),
            request.node_name,
        ))
    })();
    match answer {
        Ok((r, node)) => (r, who, node),
        Err((e, node)) => {
            tracing::warn!(token = %id, node = %node, code = e.code, reason = %e.message, "join refused");
            (axum::response::IntoResponse::into_response(e), who, node)
        }
    }
}

/// Removes the first entry `matches` picks from a table kept in a file: the file is saved
/// first, and the table changed only once it is, so a failed save changes nothing.
fn remove_saved<T: Clone>(
    table: &RwLock<Vec<T>>,
    matches: impl Fn(&T) -> bool,
    missing: impl FnOnce() -> Error,
    save: impl FnOnce(&[T]) -> Result<()>,
) -> Result<T> {
    let mut table = table.write().unwrap_or_else(|p| p.into_inner());
    let at = table.iter().position(matches).ok_or_else(missing)?;
    let mut next = table.clone();
    let gone = next.remove(at);
    save(&next)?;
    *table = next;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn csr(names: &[&str]) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    #[test]
    fn a_token_round_trips_and_bad_ones_say_what_is_wrong_without_the_secret() {
        let t = JoinToken { pin: "ab".repeat(32), id: "abc123".into(), secret: "s".repeat(32) };
        assert_eq!(JoinToken::parse(&t.text()).unwrap(), t);
        let e = JoinToken::parse("K10abcd::abc123.x").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = JoinToken::parse(&format!("K10{}::abc123.short", "ab".repeat(32))).unwrap_err();
        assert!(e.contains("secret is not 32") && !e.contains("short"), "{e}");
        assert!(JoinToken::parse("abc123.0123456789abcdef").unwrap_err().contains("K10"));
    }

    #[test]
    fn tokens_keep_only_a_digest_expire_and_are_refused_once_deleted() {
        let home = tempfile::tempdir().unwrap();
        let (ca, _) = ca();
        let join = Join::open(home.path(), &ca, None, None).unwrap();
        let (stored, text) = join.create_token(DEFAULT_TTL, "laptop").unwrap();
        let token = JoinToken::parse(&text).unwrap();
        assert_eq!(token.pin, ca_pin(&ca).unwrap());
        let file = std::fs::read_to_string(home.path().join(TOKENS_FILE)).unwrap();
        assert!(file.contains(&stored.id) && !file.contains(&token.secret), "{file}");
        assert_eq!(join.check_token(&token.id, &token.secret).unwrap().id, token.id);
        assert_eq!(join.check_token(&token.id, &"x".repeat(32)), Err(Refusal::Unknown));
        let again = Join::open(home.path(), &ca, None, None).unwrap();
        assert!(again.check_token(&token.id, &token.secret).is_ok());
        again.delete_token(&token.id).unwrap();
        assert_eq!(again.check_token(&token.id, &token.secret), Err(Refusal::Unknown));
        let (_, short) = again.create_token(Duration::from_secs(1), "").unwrap();
        let short = JoinToken::parse(&short).unwrap();
        {
            let mut t = again.tokens.write().unwrap();
            t.iter_mut().for_each(|t| t.expires = unix_now() - 1);
        }
        assert!(matches!(again.check_token(&short.id, &short.secret), Err(Refusal::Expired(_))));
    }

    #[test]
    fn a_node_certificate_names_the_node_keeps_the_requesters_key_and_refuses_bad_names() {
        let (ca, ca_key) = ca();
        let (request, key) = csr(&["node-b.lan", "10.0.0.2"]);
        let signed = sign_node(&request, "node-b", &ca, &ca_key, NODE_CERT_LIFETIME).unwrap();
        assert_eq!(signed.names, vec!["node-b", "node-b.lan", "10.0.0.2"]);
        let der = CertificateDer::from_pem_slice(signed.pem.as_bytes()).unwrap();
        let peer = PeerCertificate::from_der(&der).unwrap();
        assert_eq!(peer.node(), Some("node-b"));
        assert_eq!(peer.serial, signed.serial);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.tbs_certificate.subject_pki.subject_public_key.data.as_ref(), key.public_key_raw());
        let (bad, _) = csr(&["Not_A_Name"]);
        let e = sign_node(&bad, "node-b", &ca, &ca_key, NODE_CERT_LIFETIME).err().unwrap().to_string();
        assert!(e.contains("\"Not_A_Name\""), "{e}");
        let e = sign_node("garbage", "node-b", &ca, &ca_key, NODE_CERT_LIFETIME).err().unwrap().to_string();
        assert!(e.contains("certificate signing request"), "{e}");
        assert!(validate_node_name("Host_1").is_err());
        assert!(validate_node_name("host-1.lan").is_ok());
    }
}
