//! The server's identity: a CA (10 years) and a serving certificate (1 year) generated at
//! first start (rcgen), a random bearer token, and the kubeconfig that ties them together. All
//! files are 0600 and read through [`super::home`]'s checks.
//!
//! As k3s does, a serving certificate that expires within [`CertPolicy::renew_before`]
//! (90 days) is issued again from the same CA, on start and, in a running daemon, when a
//! periodic check finds it due; new TLS handshakes get the new certificate, connections
//! already open keep theirs. The CA does not change, so every copy of the kubeconfig keeps
//! working. A CA itself that expires within that window (or a lost `ca.key`) is replaced
//! with a new one, which the daemon says loudly: copies of the old kubeconfig then stop
//! working and must be fetched again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::home::{self, Kind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a valid PEM file: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: not a valid certificate: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("the CA that client certificates are verified with: {0}")]
    ClientCa(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes `contents` to `path` with mode 0600 (atomically: temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    Ok(home::write_private(path, contents)?)
}

/// Creates `dir` with mode 0700 if missing; refuses one another user could write.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    Ok(home::prepare_subdir(dir)?)
}

/// How long certificates live and when they are issued again.
#[derive(Clone, Debug)]
pub struct CertPolicy {
    /// The serving certificate's lifetime (1 year, as k3s and kubeadm).
    pub serving_lifetime: Duration,
    /// The CA's lifetime (10 years, as k3s and kubeadm).
    pub ca_lifetime: Duration,
    /// A certificate expiring within this is issued again (90 days, as k3s).
    pub renew_before: Duration,
    /// How often a running server checks its serving certificate.
    pub check_every: Duration,
    /// Addresses the serving certificate names besides `localhost`, `127.0.0.1` and `::1`
    /// (`a2a serve --listen ADDR`); a certificate that lacks one is issued again from the
    /// same CA.
    pub ip_sans: Vec<std::net::IpAddr>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            serving_lifetime: 365 * DAY,
            ca_lifetime: 3650 * DAY,
            renew_before: 90 * DAY,
            check_every: Duration::from_secs(3600),
            ip_sans: Vec::new(),
        }
    }
}

/// The files of the server's identity under `$A2A_HOME/pki`.
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

struct Paths {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Paths {
    fn new(home: &Path) -> Paths {
        let pki = home.join("pki");
        Paths {
            ca: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            cert: pki.join("server.crt"),
            key: pki.join("server.key"),
        }
    }
}

/// (not before, not after) of the first certificate of a PEM file, in seconds since the epoch.
pub fn validity(pem: &str, path: &Path) -> Result<(i64, i64)> {
    let bad = |message: String| Error::Certificate { path: path.to_path_buf(), message };
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no certificate in it".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Whether the first certificate of `pem` names every address of `ips` (an unreadable one
/// names none).
pub fn names_ips(pem: &str, ips: &[std::net::IpAddr]) -> bool {
    if ips.is_empty() {
        return true;
    }
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(pem.as_bytes()).next() else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else { return false };
    let named: Vec<std::net::IpAddr> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    ips.iter().all(|ip| named.contains(ip))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Whether a certificate valid over `(from, to)` must be issued again now.
fn due(validity: (i64, i64), policy: &CertPolicy) -> bool {
    let now = unix_now();
    validity.0 > now || validity.1 - now < policy.renew_before.as_secs() as i64
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

impl Identity {
    /// Loads the identity from `home`, generating whatever is missing and issuing again a
    /// serving certificate (or CA) that expires within `policy.renew_before`.
    pub fn load_or_create(home: &Path, policy: &CertPolicy) -> Result<Identity> {
        // Everything is read and checked before anything is written: a refused home is left
        // as it was.
        let token_path = home.join("token");
        let token = home::read(&token_path, Kind::Secret)?;
        home::check_existing(&home.join("kubeconfig"), Kind::Secret)?;
        let pki = home.join("pki");
        ensure_private_dir(&pki)?;
        let p = Paths::new(home);
        let ca = home::read(&p.ca, Kind::Public)?;
        let ca_key = home::read(&p.ca_key, Kind::Secret)?;
        let cert = home::read(&p.cert, Kind::Public)?;
        let key = home::read(&p.key, Kind::Secret)?;

        let ca_ok = match (&ca, &ca_key) {
            (Some(ca), Some(_)) => {
                let v = validity(ca, &p.ca)?;
                if due(v, policy) {
                    tracing::warn!(
                        path = %p.ca.display(), not_after = %rfc3339(v.1),
                        "the CA expires soon or has expired: making a new CA; copies of the kubeconfig made before \
                         stop working and must be copied again"
                    );
                    false
                } else {
                    true
                }
            }
            (Some(_), None) => {
                tracing::warn!(path = %p.ca_key.display(), "the CA's key is missing: making a new CA; copies of the \
                    kubeconfig made before stop working and must be copied again");
                false
            }
            _ => false,
        };
        let (ca_pem, ca_key_pem) = match (ca, ca_key) {
            (Some(ca), Some(key)) if ca_ok => (ca, key),
            _ => {
                let (ca, key) = generate_ca(policy)?;
                write_private(&p.ca_key, key.as_bytes())?;
                write_private(&p.ca, ca.as_bytes())?;
                // A serving certificate of the old CA is of no use.
                (ca, key)
            }
        };
        let current = match (cert, key) {
            (Some(cert), Some(key)) if ca_ok => Some((cert, key)),
            _ => None,
        };
        let (cert_pem, key_pem) = match current {
            Some((cert, key)) => match validity(&cert, &p.cert) {
                Ok(v) if due(v, policy) => {
                    tracing::info!(path = %p.cert.display(), not_after = %rfc3339(v.1),
                        "the serving certificate expires within the renewal window; issuing a new one from the same CA");
                    issue_serving(&p, &ca_pem, &ca_key_pem, policy)?
                }
                Ok(_) if !names_ips(&cert, &policy.ip_sans) => {
                    tracing::info!(path = %p.cert.display(), addresses = ?policy.ip_sans,
                        "the serving certificate does not name every address served on; issuing a new one from the same CA");
                    issue_serving(&p, &ca_pem, &ca_key_pem, policy)?
                }
                Ok(_) if certified_key(&cert, &key, home).is_ok() => (cert, key),
                // Unreadable, or not the pair of its key (a crash between writing the two):
                // the CA issues another, which changes nothing clients trust.
                Ok(_) | Err(_) => {
                    tracing::warn!(path = %p.cert.display(),
                        "the serving certificate is unreadable or does not match its key; issuing a new one");
                    issue_serving(&p, &ca_pem, &ca_key_pem, policy)?
                }
            },
            None => issue_serving(&p, &ca_pem, &ca_key_pem, policy)?,
        };
        let token = match token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
                let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_private(&token_path, t.as_bytes())?;
                t
            }
        };
        Ok(Identity { ca_pem, cert_pem, key_pem, token })
    }

    /// The serving certificate as rustls uses it.
    fn certified_key(&self, home: &Path) -> Result<CertifiedKey> {
        certified_key(&self.cert_pem, &self.key_pem, home)
    }

    /// The certificate resolver every handshake asks, swapped on renewal.
    pub fn serving_cert(&self, home: &Path, policy: &CertPolicy) -> Result<Arc<ServingCert>> {
        Ok(Arc::new(ServingCert {
            home: home.to_path_buf(),
            policy: policy.clone(),
            ca_pem: self.ca_pem.clone(),
            current: RwLock::new(Arc::new(self.certified_key(home)?)),
            node: RwLock::new(None),
            not_after: RwLock::new(validity(&self.cert_pem, &Paths::new(home).cert)?.1),
        }))
    }

    /// rustls server configurations sharing `cert` (ring provider; TLS 1.3 and 1.2): one
    /// offering h2 and http/1.1, one http/1.1 only.
    pub fn server_configs(cert: &Arc<ServingCert>) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> {
        Self::server_configs_verifying(cert, None)
    }

    /// As [`Identity::server_configs`], also asking for a client certificate, which must be
    /// signed by `client_ca` (PEM: the cluster's CA) when one is sent; clients without one
    /// (bearer tokens) are served as before.
    pub fn server_configs_verifying(
        cert: &Arc<ServingCert>,
        client_ca: Option<&str>,
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> {
        let verifier = match client_ca {
            None => None,
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.map_err(|e| Error::ClientCa(e.to_string()))?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                Some(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| Error::ClientCa(e.to_string()))?,
                )
            }
        };
        let make = |alpn: Vec<Vec<u8>>| -> Result<Arc<rustls::ServerConfig>> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_cert_resolver(cert.clone());
            config.alpn_protocols = alpn;
            Ok(Arc::new(config))
        };
        Ok((make(vec![b"h2".to_vec(), b"http/1.1".to_vec()])?, make(vec![b"http/1.1".to_vec()])?))
    }

    /// The kubeconfig for `server` (`https://127.0.0.1:PORT`): cluster, user and context `a2a`.
    pub fn kubeconfig(&self, server: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "a2a", "cluster": {
                "server": server,
                "certificate-authority-data": ca,
            }}],
            "users": [{"name": "a2a-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "a2a", "context": {
                "cluster": "a2a", "user": "a2a-admin", "namespace": "default",
            }}],
            "current-context": "a2a",
            "preferences": {},
        });
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }
}

fn certified_key(cert_pem: &str, key_pem: &str, home: &Path) -> Result<CertifiedKey> {
    let p = Paths::new(home);
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem { path: p.cert.clone(), message: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Pem { path: p.key.clone(), message: e.to_string() })?;
    Ok(CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())?)
}

/// The serving certificate handed to every TLS handshake; [`ServingCert::renew_if_due`]
/// replaces it (and its files) when it expires within the renewal window.
#[derive(Debug)]
pub struct ServingCert {
    home: PathBuf,
    policy: CertPolicy,
    ca_pem: String,
    current: RwLock<Arc<CertifiedKey>>,
    /// A joined host's node name and certificate, served to clients that ask for that name
    /// (SNI): other hosts, which trust the cluster's CA alone.
    node: RwLock<Option<(String, Arc<CertifiedKey>)>>,
    not_after: RwLock<i64>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(asked) = hello.server_name()
            && let Some((name, key)) = self.node.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && asked == name
        {
            return Some(key.clone());
        }
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl ServingCert {
    /// Serves `cert_pem` (with `key_pem`) to clients asking for the server name `node`.
    pub fn set_node_certificate(&self, node: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
        let key = certified_key(cert_pem, key_pem, &self.home)?;
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = Some((node.to_string(), Arc::new(key)));
        Ok(())
    }

    pub fn policy(&self) -> &CertPolicy {
        &self.policy
    }

    /// When the certificate served now expires (seconds since the epoch).
    pub fn not_after(&self) -> i64 {
        *self.not_after.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a new serving certificate from the CA when the current one is due; returns
    /// whether it did. The CA's key is read from disk (through the home's checks) only then.
    pub fn renew_if_due(&self) -> Result<bool> {
        let not_after = self.not_after();
        if !due((i64::MIN, not_after), &self.policy) {
            return Ok(false);
        }
        let p = Paths::new(&self.home);
        let Some(ca_key) = home::read(&p.ca_key, Kind::Secret)? else {
            tracing::error!(path = %p.ca_key.display(), not_after = %rfc3339(not_after),
                "the serving certificate is due for renewal but the CA's key is missing; restart the daemon to make a new CA");
            return Ok(false);
        };
        let (cert, key) = issue_serving(&p, &self.ca_pem, &ca_key, &self.policy)?;
        let certified = certified_key(&cert, &key, &self.home)?;
        let new_after = validity(&cert, &p.cert)?.1;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        *self.not_after.write().unwrap_or_else(|p| p.into_inner()) = new_after;
        tracing::info!(path = %p.cert.display(), old_not_after = %rfc3339(not_after), not_after = %rfc3339(new_after),
            "renewed the serving certificate; new connections get it, open ones keep theirs");
        Ok(true)
    }
}

pub(crate) fn validity_window(lifetime: Duration) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind ours (as kubeadm's certificates).
    let from = now - Duration::from_secs(3600);
    Ok((from, now + lifetime))
}

/// (ca.crt, ca.key) as PEM.
fn generate_ca(policy: &CertPolicy) -> Result<(String, String)> {
    let ca_key = KeyPair::generate()?;
    let params = ca_params(policy)?;
    let ca_cert = params.self_signed(&ca_key)?;
    Ok((ca_cert.pem(), ca_key.serialize_pem()))
}

fn ca_params(policy: &CertPolicy) -> Result<CertificateParams> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "a2a-ca");
    dn.push(DnType::OrganizationName, "a2a");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (ca_params.not_before, ca_params.not_after) = validity_window(policy.ca_lifetime)?;
    Ok(ca_params)
}

/// Issues a serving certificate (with a new key) from the CA and writes both; returns
/// (server.crt, server.key) as PEM.
fn issue_serving(p: &Paths, ca_pem: &str, ca_key_pem: &str, policy: &CertPolicy) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, &ca_key)?;
    let key = KeyPair::generate()?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for ip in &policy.ip_sans {
        let ip = ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "a2a-apiserver");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    (params.not_before, params.not_after) = validity_window(policy.serving_lifetime)?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert, key) = (cert.pem(), key.serialize_pem());
    // The key first: a crash between the two leaves a pair that does not match, which the
    // next start issues again.
    write_private(&p.key, key.as_bytes())?;
    write_private(&p.cert, cert.as_bytes())?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_address_is_added_by_issuing_again_from_the_same_ca() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        let lan: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
        let first = Identity::load_or_create(home.path(), &CertPolicy::default()).expect("identity");
        assert!(!names_ips(&first.cert_pem, &[lan]));
        assert!(names_ips(&first.cert_pem, &["127.0.0.1".parse().expect("ip")]));
        let policy = CertPolicy { ip_sans: vec![lan], ..CertPolicy::default() };
        let second = Identity::load_or_create(home.path(), &policy).expect("identity");
        assert!(names_ips(&second.cert_pem, &[lan]), "issued again with the address");
        assert_eq!(first.ca_pem, second.ca_pem, "from the same CA");
        let third = Identity::load_or_create(home.path(), &policy).expect("identity");
        assert_eq!(second.cert_pem, third.cert_pem, "kept once it names the address");
        // Back on loopback only: the certificate naming more is kept.
        let fourth = Identity::load_or_create(home.path(), &CertPolicy::default()).expect("identity");
        assert_eq!(third.cert_pem, fourth.cert_pem);
    }
}
