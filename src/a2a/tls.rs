//! HTTPS toward agents: rustls (ring) with the system's trusted CAs, plus an optional CA of
//! the agent's own, an optional client certificate (mutual TLS) and an optional name to verify
//! the agent's certificate against (and send as SNI) instead of the URL's host. A TLS failure
//! is reported as what it is ("certificate verify failed: UnknownIssuer for agent.example"),
//! never as an unreachable agent.

use std::sync::{Arc, OnceLock};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// How a client talks TLS to one agent. PEM texts, as they are kept in Secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM), added to the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM), for mutual TLS.
    pub client_certificate: Option<ClientCertificate>,
    /// The name the agent's certificate must carry (and the SNI sent), instead of the URL's host.
    pub server_name: Option<String>,
    /// Trust `ca_pem` alone, not the system's CAs (calls between the hosts of a cluster).
    pub only_ca: bool,
}

/// A client certificate chain and its key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log; the rest says what is configured.
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the CA bundle holds no PEM certificate")]
    NoCaCertificate,
    #[error("the CA bundle is not valid PEM: {0}")]
    CaPem(#[source] rustls::pki_types::pem::Error),
    #[error("a CA certificate of the bundle is refused: {0}")]
    CaCertificate(#[source] rustls::Error),
    #[error("the client certificate is not a valid PEM certificate chain")]
    ClientChain,
    #[error("the client certificate's key is not a valid PEM private key")]
    ClientKey,
    #[error("the client certificate and key are refused: {0}")]
    ClientCertificate(#[source] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("the TLS protocol versions cannot be set: {0}")]
    Versions(#[source] rustls::Error),
}

/// The system's trusted CAs, read once per process (the platform's bundle, e.g.
/// /etc/ssl/certs on Debian; `SSL_CERT_FILE`/`SSL_CERT_DIR` override it). Certificates the
/// bundle holds that rustls cannot parse are skipped, as OpenSSL skips them.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's trusted CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates loaded");
        roots
    })
}

/// The rustls configuration for `options`.
pub fn client_config(options: &TlsOptions) -> Result<ClientConfig, Error> {
    let mut roots = if options.only_ca { RootCertStore::empty() } else { system_roots().clone() };
    if let Some(pem) = &options.ca_pem {
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.map_err(Error::CaPem)?).map_err(Error::CaCertificate)?;
            any = true;
        }
        if !any {
            return Err(Error::NoCaCertificate);
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(Error::Versions)?
        .with_root_certificates(roots);
    let config = match &options.client_certificate {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&c.chain_pem)
                .collect::<Result<_, _>>()
                .map_err(|_| Error::ClientChain)?;
            if chain.is_empty() {
                return Err(Error::ClientChain);
            }
            let key = PrivateKeyDer::from_pem_slice(&c.key_pem).map_err(|_| Error::ClientKey)?;
            builder.with_client_auth_cert(chain, key).map_err(Error::ClientCertificate)?
        }
    };
    // ALPN is left to the connector, which offers the HTTP versions the pool speaks.
    Ok(config)
}

/// The configuration with the system's CAs alone, built once: most clients (every local agent,
/// every probe) use it, and a clone shares its verifier instead of copying the roots.
fn default_config() -> Result<ClientConfig, Error> {
    static DEFAULT: OnceLock<ClientConfig> = OnceLock::new();
    if let Some(c) = DEFAULT.get() {
        return Ok(c.clone());
    }
    let c = client_config(&TlsOptions::default())?;
    Ok(DEFAULT.get_or_init(|| c).clone())
}

/// A connector for `http://` and `https://` URLs.
pub fn connector(options: &TlsOptions) -> Result<HttpsConnector<HttpConnector>, Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let config = if *options == TlsOptions::default() { default_config()? } else { client_config(options)? };
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let builder = match &options.server_name {
        Some(name) => {
            let name =
                rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| Error::ServerName(name.clone()))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(builder.enable_http1().wrap_connector(http))
}

/// A TLS failure of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The handshake failed: a certificate that does not verify, an alert, a protocol error.
    /// Trying again meets the same certificate.
    Refused(String),
    /// The agent closed the TLS connection without `close_notify`: what an agent that wants a
    /// client certificate it did not get does after a TLS 1.3 handshake, but also what a
    /// restarting one does, so it may be tried again.
    Closed(String),
}

/// The TLS failure somewhere in `error`'s chain of sources, said plainly, for the agent at
/// `host`: a certificate that does not verify ("certificate verify failed: UnknownIssuer for
/// agent.example"), an alert the agent sent, another handshake failure, or (when `tls`: the
/// request went over TLS) a connection the agent closed without ending TLS. The last comes in
/// several forms, as the agent's close races the request: a TLS 1.3 client finishes its
/// handshake before the agent checks the client certificate, so the close meets the request as
/// a missing `close_notify`, a reset, or a response that never came.
pub fn failure(error: &(dyn std::error::Error + 'static), host: &str, tls: bool) -> Option<Failure> {
    let closed = || {
        Failure::Closed(format!(
            "TLS with {host} failed: the agent closed the connection without ending TLS (an agent that \
             requires a client certificate does this when none is presented; see spec.tls.clientCertificateSecret)"
        ))
    };
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(Failure::Refused(describe(r, host)));
        }
        if tls && e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return Some(closed());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
            // rustls reports a bare close as an UnexpectedEof naming close_notify.
            let bare_close = io.kind() == UnexpectedEof && io.to_string().contains("close_notify");
            if bare_close || (tls && matches!(io.kind(), ConnectionReset | BrokenPipe)) {
                return Some(closed());
            }
            // An io::Error's `source` skips the error it wraps (it may be another io::Error).
            if let Some(inner) = io.get_ref() {
                next = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        next = e.source();
    }
    None
}

fn describe(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => format!("certificate verify failed: {} for {host}", certificate(c)),
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => format!(
            "TLS handshake with {host} failed: the agent requires a client certificate (alert CertificateRequired); \
             see spec.tls.clientCertificateSecret"
        ),
        rustls::Error::AlertReceived(alert) => {
            format!("TLS handshake with {host} failed: the agent sent the alert {alert:?}")
        }
        other => format!("TLS with {host} failed: {other}"),
    }
}

fn certificate(c: &rustls::CertificateError) -> String {
    match c {
        rustls::CertificateError::NotValidForNameContext { expected, .. } => {
            format!("NotValidForName (expected {expected:?})")
        }
        rustls::CertificateError::ExpiredContext { .. } => "Expired".into(),
        rustls::CertificateError::NotValidYetContext { .. } => "NotValidYet".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_without_a_certificate_is_refused() {
        let options = TlsOptions { ca_pem: Some(b"not pem".to_vec()), ..Default::default() };
        assert!(matches!(client_config(&options), Err(Error::NoCaCertificate)));
    }

    #[test]
    fn a_client_key_that_is_not_pem_is_refused_without_quoting_it() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).expect("cert");
        let options = TlsOptions {
            client_certificate: Some(ClientCertificate {
                chain_pem: ca.cert.pem().into_bytes(),
                key_pem: b"secret-key-material".to_vec(),
            }),
            ..Default::default()
        };
        let e = client_config(&options).unwrap_err();
        assert!(matches!(e, Error::ClientKey));
        assert!(!e.to_string().contains("secret-key-material"));
    }

    #[test]
    fn a_certificate_error_names_the_reason_and_the_host() {
        // As hyper-rustls hands it to hyper: an io::Error around the io::Error around rustls's.
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = std::io::Error::other(inner);
        assert_eq!(
            failure(&e, "agent.example", true),
            Some(Failure::Refused("certificate verify failed: UnknownIssuer for agent.example".into()))
        );
        let closed = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify",
        );
        assert!(matches!(failure(&closed, "h", true), Some(Failure::Closed(m)) if m.contains("client certificate")));
        assert_eq!(failure(&std::io::Error::other("refused"), "h", true), None);
    }

    #[test]
    fn a_close_that_races_the_request_is_named_on_tls_only() {
        // The agent's close after a TLS 1.3 handshake may reach the client as a reset.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(failure(&reset, "h", true), Some(Failure::Closed(m)) if m.contains("client certificate")));
        assert_eq!(failure(&reset, "h", false), None, "over plain HTTP a reset is no TLS failure");
        let required = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert!(
            matches!(failure(&required, "h", true), Some(Failure::Refused(m)) if m.contains("requires a client certificate"))
        );
    }
}
