//! A host's membership of a cluster of hosts: what `a2a join` fetches and keeps under
//! `$A2A_HOME/cluster` (the cluster's CA, this node's certificate and key, the first host's URL
//! and the node name), how it fetches it, and the TLS client configuration one host uses to
//! call another.
//!
//! The join is kubeadm's discovery by token: the CA is fetched from the first host without
//! trusting anything (`GET /cacerts`), then checked against the pin the token carries (the
//! SHA-256 of the CA's SubjectPublicKeyInfo); from then on every byte goes over TLS verified by
//! that CA alone. The node's key is made here and never leaves the host: the first host signs a
//! certificate signing request. Files are written only once everything succeeded, into a new
//! directory renamed into place, so a refused join leaves the home as it was.
//!
//! ```no_run
//! # fn demo(home: &std::path::Path) -> Result<(), a2a::membership::Error> {
//! if let Some(m) = a2a::membership::Membership::load(home)? {
//!     // rustls, presenting this node's certificate and trusting the cluster's CA only.
//!     let config = m.client_config()?;
//!     # let _ = config;
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::apiserver::home;
use crate::apiserver::join::{self, JoinToken};

/// The directory under the home.
pub const DIR: &str = "cluster";
const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "node.crt";
const KEY_FILE: &str = "node.key";
const INFO_FILE: &str = "join.json";

/// How long each request of a join may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the CA of {url} is not the one the token pins: the server's CA has the hash sha256:{found}, the token \
         sha256:{pinned}; this is not the host the token was made on, or its CA changed (nothing was written)"
    )]
    PinMismatch { url: String, found: String, pinned: String },
    #[error("{url} refused the join ({code}): {message}")]
    Refused { url: String, code: u16, message: String },
    #[error("{url} answered something that is not a join's answer: {message}")]
    BadAnswer { url: String, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("making the node's key: {0}")]
    Key(#[from] rcgen::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `join.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    /// The first host's URL (`https://HOST:PORT`).
    pub server: String,
    pub node_name: String,
    pub joined: String,
    /// Hex SHA-256 of the CA's SubjectPublicKeyInfo.
    pub ca_pin: String,
    /// The names the node certificate was asked to carry (the node name first).
    #[serde(default)]
    pub names: Vec<String>,
}

/// A joined host's membership.
#[derive(Clone)]
pub struct Membership {
    pub info: Info,
    pub ca_pem: String,
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Membership {
    /// The membership kept under `home`, if this host joined a cluster (through the home's
    /// checks: private files of this user).
    pub fn load(home: &Path) -> Result<Option<Membership>> {
        let dir = home.join(DIR);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        home::prepare_subdir(&dir)?;
        let read = |name: &str, kind| -> Result<String> {
            let path = dir.join(name);
            home::read(&path, kind)?
                .ok_or_else(|| Error::Invalid { path, message: "missing: run `a2a join` again".into() })
        };
        let info_path = dir.join(INFO_FILE);
        let info: Info = serde_json::from_str(&read(INFO_FILE, home::Kind::Secret)?)
            .map_err(|e| Error::Invalid { path: info_path, message: e.to_string() })?;
        let m = Membership {
            info,
            ca_pem: read(CA_FILE, home::Kind::Public)?,
            cert_pem: read(CERT_FILE, home::Kind::Public)?,
            key_pem: read(KEY_FILE, home::Kind::Secret)?,
        };
        m.client_config().map_err(|e| Error::Invalid { path: dir.join(CERT_FILE), message: e.to_string() })?;
        Ok(Some(m))
    }

    /// This host's identity among the cluster's hosts: its membership when it joined one, else
    /// (the first host) the node certificate its own CA issued it (`pki/node.crt`, see
    /// [`first_host_certificate`]), if any.
    pub fn load_any(home: &Path) -> Result<Option<Membership>> {
        if let Some(m) = Membership::load(home)? {
            return Ok(Some(m));
        }
        let pki = home.join("pki");
        let read = |name: &str, kind| -> Result<Option<String>> { Ok(home::read(&pki.join(name), kind)?) };
        let (Some(ca), Some(cert), Some(key)) = (
            read("ca.crt", home::Kind::Public)?,
            read(FIRST_HOST_CERT, home::Kind::Public)?,
            read(FIRST_HOST_KEY, home::Kind::Secret)?,
        ) else {
            return Ok(None);
        };
        let der = CertificateDer::from_pem_slice(cert.as_bytes())
            .map_err(|e| Error::Invalid { path: pki.join(FIRST_HOST_CERT), message: e.to_string() })?;
        let node =
            join::PeerCertificate::from_der(&der).and_then(|p| p.node().map(str::to_string)).ok_or_else(|| {
                Error::Invalid { path: pki.join(FIRST_HOST_CERT), message: "not a node certificate".into() }
            })?;
        let ca_pin =
            join::ca_pin(&ca).map_err(|e| Error::Invalid { path: pki.join("ca.crt"), message: e.to_string() })?;
        let info =
            Info { server: String::new(), node_name: node.clone(), joined: String::new(), ca_pin, names: vec![node] };
        Ok(Some(Membership { info, ca_pem: ca, cert_pem: cert, key_pem: key }))
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// rustls for calls to other hosts: this node's certificate as the client certificate, and
    /// the cluster's CA as the only trusted one (no system CAs: a host of the cluster has a
    /// certificate from its CA or is not one).
    pub fn client_config(&self) -> Result<ClientConfig> {
        client_config(&self.ca_pem, Some((&self.cert_pem, &self.key_pem)))
    }

    /// A connector for calls to other hosts. `peer` is the node name the other host's
    /// certificate must carry (and the TLS server name sent, which makes a joined host serve
    /// its node certificate); `None` verifies the URL's host, as for the first host.
    pub fn connector(
        &self,
        peer: Option<&str>,
    ) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>> {
        connector(self.client_config()?, peer)
    }
}

fn connector(
    config: ClientConfig,
    peer: Option<&str>,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only();
    let builder = match peer {
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .map_err(|_| Error::Usage(format!("{name:?} is not a valid TLS server name")))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(builder.enable_http1().wrap_connector(http))
}

/// rustls trusting `ca_pem` alone, with an optional client certificate (chain PEM, key PEM).
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| Error::Tls(format!("the CA is not valid PEM: {e}")))?)
            .map_err(|e| Error::Tls(format!("the CA is refused: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("no CA certificate".into()));
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Tls(format!("the node certificate is not valid PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| Error::Tls("the node key is not a valid PEM private key".into()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(format!("the node certificate: {e}")))
        }
    }
}

/// The first host's own node certificate and key, under `pki/`.
const FIRST_HOST_CERT: &str = "node.crt";
const FIRST_HOST_KEY: &str = "node.key";

/// The first host's own node certificate for `node` (under `pki/`, from its CA, so that it can
/// call the hosts that joined it and be called by its node name): kept while it names `node`,
/// chains to the CA and is more than 90 days from expiry; issued again otherwise.
pub fn first_host_certificate(home: &Path, ca_pem: &str, node: &str) -> Result<Membership> {
    let pki = home.join("pki");
    if let Some(m) = Membership::load_any(home).ok().flatten()
        && m.info.node_name == node
        && m.info.server.is_empty()
        && m.client_config().is_ok()
        && crate::apiserver::pki::validity(&m.cert_pem, &pki.join(FIRST_HOST_CERT))
            .is_ok_and(|(_, to)| to - jiff::Timestamp::now().as_second() > 90 * 24 * 3600)
        && check_signed_by(&m.cert_pem, ca_pem).is_ok()
    {
        return Ok(m);
    }
    let ca_key = home::read(&pki.join("ca.key"), home::Kind::Secret)?
        .ok_or_else(|| Error::Invalid { path: pki.join("ca.key"), message: "missing".into() })?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![node.to_string()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, node);
    let csr = params.serialize_request(&key)?.pem()?;
    let signed = join::sign_node(&csr, node, ca_pem, &ca_key, join::NODE_CERT_LIFETIME)
        .map_err(|e| Error::Invalid { path: pki.join(FIRST_HOST_CERT), message: e.to_string() })?;
    // The key first: a crash between the two leaves a pair that does not match, issued again.
    home::write_private(&pki.join(FIRST_HOST_KEY), key.serialize_pem().as_bytes())?;
    home::write_private(&pki.join(FIRST_HOST_CERT), signed.pem.as_bytes())?;
    let ca_pin =
        join::ca_pin(ca_pem).map_err(|e| Error::Invalid { path: pki.join("ca.crt"), message: e.to_string() })?;
    let info = Info {
        server: String::new(),
        node_name: node.to_string(),
        joined: String::new(),
        ca_pin,
        names: vec![node.to_string()],
    };
    Ok(Membership { info, ca_pem: ca_pem.to_string(), cert_pem: signed.pem, key_pem: key.serialize_pem() })
}

fn check_signed_by(cert_pem: &str, ca_pem: &str) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| e.to_string())?;
    cert.verify_signature(Some(ca.public_key())).map_err(|_| "not signed by the CA".to_string())
}

/// This host's name, for `--node-name`'s default: the kernel's host name, lower-cased.
pub fn default_node_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

/// Trusts any server certificate: used for the one request that fetches the CA, whose answer
/// is then checked against the pin (kubeadm's insecure discovery client).
#[derive(Debug)]
struct UnverifiedDiscovery(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for UnverifiedDiscovery {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the first host: a certificate of the cluster's CA for the URL's host that is not a
/// node's certificate, so that a host that joined (which holds a certificate of the same CA)
/// cannot pose as the first host to a host joining or renewing.
#[derive(Debug)]
struct FirstHostVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for FirstHostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if let Some(node) = join::PeerCertificate::from_der(end_entity).as_ref().and_then(|p| p.node()) {
            return Err(rustls::Error::General(format!(
                "the server presented the certificate of node {node:?}, not the first host's"
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn first_host_verifier(ca_pem: &str) -> Result<Arc<FirstHostVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| Error::Tls(format!("the CA is not valid PEM: {e}")))?)
            .map_err(|e| Error::Tls(format!("the CA is refused: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(FirstHostVerifier(inner)))
}

/// rustls for talking to the first host: its CA alone, and [`FirstHostVerifier`]'s check.
fn first_host_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(first_host_verifier(ca_pem)?);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Tls(format!("the node certificate is not valid PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|_| Error::Tls("the node key is not a valid PEM private key".into()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(format!("the node certificate: {e}")))
        }
    }
}

/// What `a2a join` asks for.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// `https://HOST:PORT` of the first host.
    pub server: String,
    pub token: JoinToken,
    pub node_name: String,
    /// More names (DNS or IP) the node certificate should carry.
    pub names: Vec<String>,
}

/// Checks `url` is `https://HOST:PORT` with nothing after it; answers it without a trailing `/`.
pub fn check_server_url(url: &str) -> Result<String> {
    let bad = |why: &str| Error::Usage(format!("invalid server URL {url:?}: {why}; expected https://HOST:PORT"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("no user information is allowed"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("no path or query is allowed"));
    }
    Ok(format!("https://{authority}"))
}

async fn send(
    client: &Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
    url: &str,
) -> Result<(u16, Bytes)> {
    let host = url.trim_start_matches("https://").to_string();
    let unreachable = |message: String| Error::Unreachable { url: url.to_string(), message };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(req))
        .await
        .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| match crate::a2a::tls::failure(&e, &host, true) {
            Some(crate::a2a::tls::Failure::Refused(m) | crate::a2a::tls::Failure::Closed(m)) => Error::Tls(m),
            None => unreachable(root_cause(&e)),
        })?;
    let code = response.status().as_u16();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| unreachable(format!("the answer did not arrive within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| unreachable(root_cause(&e)))?
        .to_bytes();
    Ok((code, body))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Fetches the CA of `server` without trusting anything, and checks it against `pin`.
pub async fn discover_ca(server: &str, pin: &str) -> Result<String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedDiscovery(provider)))
        .with_no_client_auth();
    let client = Client::builder(TokioExecutor::new()).build(connector(config, None)?);
    let req = http::Request::get(format!("{server}{}", join::CACERTS_PATH))
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (code, body) = send(&client, req, server).await?;
    if code != 200 {
        return Err(Error::BadAnswer {
            url: server.to_string(),
            message: format!("{} answered {code}: is it an a2a server?", join::CACERTS_PATH),
        });
    }
    let ca = String::from_utf8(body.to_vec())
        .map_err(|_| Error::BadAnswer { url: server.to_string(), message: "the CA is not text".into() })?;
    let found = join::ca_pin(&ca)
        .map_err(|e| Error::BadAnswer { url: server.to_string(), message: format!("{}: {e}", join::CACERTS_PATH) })?;
    if found != pin {
        return Err(Error::PinMismatch { url: server.to_string(), found, pinned: pin.to_string() });
    }
    Ok(ca)
}

/// Joins `request.server`'s cluster and writes the membership under `home`; nothing is
/// written unless every step succeeded. A home that already joined is refused.
pub async fn join(home: &Path, request: &JoinRequest) -> Result<Membership> {
    join::validate_node_name(&request.node_name).map_err(Error::Usage)?;
    let dir = home.join(DIR);
    if std::fs::symlink_metadata(&dir).is_ok() {
        let first = Membership::load(home).ok().flatten().map(|m| m.info.server).unwrap_or_default();
        return Err(Error::Usage(format!(
            "{} already holds a membership{}: this host has joined; remove that directory to join again",
            dir.display(),
            if first.is_empty() { String::new() } else { format!(" of {first}") }
        )));
    }
    // A home that exists is checked before the first host records the node: a join the
    // home would then refuse to keep would leave the name taken there.
    if std::fs::symlink_metadata(home).is_ok() {
        home::prepare_home(home)?;
    }
    let ca = discover_ca(&request.server, &request.token.pin).await?;

    // The key stays here; the request names the node and what else the certificate should carry.
    let key = rcgen::KeyPair::generate()?;
    let mut names = vec![request.node_name.clone()];
    names.extend(request.names.iter().filter(|n| **n != request.node_name).cloned());
    let csr = certificate_request(&key, &request.node_name, &names)?;

    let client = Client::builder(TokioExecutor::new()).build(connector(first_host_config(&ca, None)?, None)?);
    let body = serde_json::to_vec(&json!({"nodeName": request.node_name, "csr": csr})).unwrap_or_default();
    let req = http::Request::post(format!("{}{}", request.server, join::JOIN_PATH))
        .header(http::header::AUTHORIZATION, format!("Bearer {}", request.token.credential()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (code, body) = send(&client, req, &request.server).await?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code != 201 {
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_string);
        return Err(Error::Refused { url: request.server.clone(), code, message });
    }
    let bad = |message: &str| Error::BadAnswer { url: request.server.clone(), message: message.to_string() };
    let cert = answer.get("certificate").and_then(Value::as_str).ok_or_else(|| bad("no certificate"))?.to_string();
    check_certificate(&cert, &ca, &key, &request.node_name).map_err(|m| bad(&m))?;

    let info = Info {
        server: request.server.clone(),
        node_name: request.node_name.clone(),
        joined: jiff::Timestamp::now().to_string(),
        ca_pin: request.token.pin.clone(),
        names,
    };
    let membership = Membership { info, ca_pem: ca, cert_pem: cert, key_pem: key.serialize_pem() };
    write(home, &membership)?;
    Ok(membership)
}

fn certificate_request(key: &rcgen::KeyPair, node: &str, names: &[String]) -> Result<String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, node);
    Ok(params.serialize_request(key)?.pem()?)
}

/// The serials of the node certificates the first host no longer accepts (`GET
/// /join/revoked`, over TLS verified as the first host's).
pub async fn revoked_serials(m: &Membership) -> Result<Vec<String>> {
    let config = first_host_config(&m.ca_pem, Some((&m.cert_pem, &m.key_pem)))?;
    let client = Client::builder(TokioExecutor::new()).build(connector(config, None)?);
    let server = m.info.server.clone();
    let req = http::Request::get(format!("{server}{}", join::REVOKED_PATH))
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (code, body) = send(&client, req, &server).await?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match answer.get("serials").and_then(Value::as_array) {
        Some(list) if code == 200 => Ok(list.iter().filter_map(Value::as_str).map(str::to_string).collect()),
        _ => Err(Error::BadAnswer { url: server, message: format!("{} answered {code}", join::REVOKED_PATH) }),
    }
}

/// Has the first host sign a new certificate (for a new key) for this joined host,
/// authenticating with the current one, and puts it in place of the old one, which the first
/// host no longer accepts. The running `a2a serve` takes it at its next start.
pub async fn renew(home: &Path) -> Result<Membership> {
    let current = Membership::load(home)?.ok_or_else(|| {
        Error::Usage(format!("{} holds no membership: this host has not joined (a2a join)", home.join(DIR).display()))
    })?;
    let key = rcgen::KeyPair::generate()?;
    let names =
        if current.info.names.is_empty() { vec![current.info.node_name.clone()] } else { current.info.names.clone() };
    let csr = certificate_request(&key, &current.info.node_name, &names)?;
    let config = first_host_config(&current.ca_pem, Some((&current.cert_pem, &current.key_pem)))?;
    let client = Client::builder(TokioExecutor::new()).build(connector(config, None)?);
    let server = current.info.server.clone();
    let req = http::Request::post(format!("{server}{}", join::RENEW_PATH))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&json!({"csr": csr})).unwrap_or_default())))
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (code, body) = send(&client, req, &server).await?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code != 201 {
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_string);
        return Err(Error::Refused { url: server, code, message });
    }
    let bad = |message: &str| Error::BadAnswer { url: server.clone(), message: message.to_string() };
    let cert = answer.get("certificate").and_then(Value::as_str).ok_or_else(|| bad("no certificate"))?.to_string();
    check_certificate(&cert, &current.ca_pem, &key, &current.info.node_name).map_err(|m| bad(&m))?;
    let info = Info { names, ..current.info };
    let renewed = Membership { info, ca_pem: current.ca_pem, cert_pem: cert, key_pem: key.serialize_pem() };
    replace(home, &renewed)?;
    Ok(renewed)
}

/// The certificate is for `key`, names `node`, and chains to `ca`.
fn check_certificate(cert_pem: &str, ca_pem: &str, key: &rcgen::KeyPair, node: &str) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| format!("the certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("the certificate: {e}"))?;
    if cert.tbs_certificate.subject_pki.subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("the certificate is not for the key this host sent".into());
    }
    let peer = join::PeerCertificate::from_der(&der).ok_or("the certificate names no node")?;
    if peer.node() != Some(node) {
        return Err(format!("the certificate names {:?}, not the node {node:?}", peer.common_name));
    }
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| format!("the CA: {e}"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(|e| format!("the CA: {e}"))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| "the certificate is not signed by the pinned CA".to_string())
}

/// Writes the membership into a new directory, then renames it into place.
fn write(home: &Path, m: &Membership) -> Result<()> {
    home::prepare_home(home)?;
    let staging = stage(home, m)?;
    let target = home.join(DIR);
    std::fs::rename(&staging, &target).map_err(|e| Error::Invalid { path: target, message: e.to_string() })?;
    Ok(())
}

/// Puts a renewed membership in place of the current one: the old directory is moved aside
/// (`cluster.old`), the new one renamed into place, the old one removed.
fn replace(home: &Path, m: &Membership) -> Result<()> {
    let staging = stage(home, m)?;
    let (target, old) = (home.join(DIR), home.join(format!("{DIR}.old")));
    let io = |path: &Path, e: std::io::Error| Error::Invalid { path: path.to_path_buf(), message: e.to_string() };
    if std::fs::symlink_metadata(&old).is_ok() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    std::fs::rename(&target, &old).map_err(|e| io(&target, e))?;
    std::fs::rename(&staging, &target).map_err(|e| io(&target, e))?;
    std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    Ok(())
}

/// Writes the membership's files into `cluster.new`; answers that directory.
fn stage(home: &Path, m: &Membership) -> Result<PathBuf> {
    let staging = home.join(format!("{DIR}.new"));
    if std::fs::symlink_metadata(&staging).is_ok() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| Error::Invalid { path: staging.clone(), message: e.to_string() })?;
    }
    home::prepare_subdir(&staging)?;
    let info = serde_json::to_vec_pretty(&m.info).unwrap_or_default();
    home::write_private(&staging.join(KEY_FILE), m.key_pem.as_bytes())?;
    home::write_private(&staging.join(CERT_FILE), m.cert_pem.as_bytes())?;
    home::write_private(&staging.join(CA_FILE), m.ca_pem.as_bytes())?;
    home::write_private(&staging.join(INFO_FILE), &info)?;
    Ok(staging)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn the_first_host_is_verified_by_its_ca_and_a_nodes_certificate_for_its_address_is_refused() {
        let (ca, ca_key) = ca();
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        let verify = |pem: &str| {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            first_host_verifier(&ca).unwrap().verify_server_cert(&der, &[], &ip, &[], UnixTime::now())
        };
        // A node certificate that (wrongly) carries the first host's address.
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = certificate_request(&key, "host-b", &["host-b".into(), "127.0.0.1".into()]).unwrap();
        let node = join::sign_node(&csr, "host-b", &ca, &ca_key, join::NODE_CERT_LIFETIME).unwrap();
        let e = verify(&node.pem).unwrap_err().to_string();
        assert!(e.contains("node \"host-b\""), "{e}");
        // A serving certificate of the same CA for that address passes.
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca, rcgen::KeyPair::from_pem(&ca_key).unwrap()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving = params.signed_by(&rcgen::KeyPair::generate().unwrap(), &issuer).unwrap();
        assert!(verify(&serving.pem()).is_ok());
        assert_eq!(join::certificate_names(&node.pem), vec!["host-b", "127.0.0.1"]);
    }

    #[test]
    fn server_urls_are_https_host_and_port_only() {
        assert_eq!(check_server_url("https://10.0.0.1:7443/").unwrap(), "https://10.0.0.1:7443");
        for bad in ["http://h:1", "https://h:1/api", "h:1", "https://u@h:1", "https://h:1/?x=1"] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
    }
}
