//! The server's identity: a CA and a serving certificate generated at first start (rcgen),
//! a random bearer token, and the kubeconfig that ties them together. All files are 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a valid PEM file: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes `contents` to `path` with mode 0600 (atomically: temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// The files of the server's identity under `$A2A_HOME/pki`.
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

impl Identity {
    /// Loads the identity from `home`, generating whatever is missing.
    pub fn load_or_create(home: &Path) -> Result<Identity> {
        let pki = home.join("pki");
        ensure_private_dir(&pki)?;
        let ca = pki.join("ca.crt");
        let cert = pki.join("server.crt");
        let key = pki.join("server.key");
        let ca_key = pki.join("ca.key");
        let (ca_pem, cert_pem, key_pem) = if ca.exists() && cert.exists() && key.exists() {
            (
                std::fs::read_to_string(&ca).map_err(io(&ca))?,
                std::fs::read_to_string(&cert).map_err(io(&cert))?,
                std::fs::read_to_string(&key).map_err(io(&key))?,
            )
        } else {
            let generated = generate()?;
            write_private(&ca_key, generated.3.as_bytes())?;
            write_private(&ca, generated.0.as_bytes())?;
            write_private(&key, generated.2.as_bytes())?;
            write_private(&cert, generated.1.as_bytes())?;
            (generated.0, generated.1, generated.2)
        };
        let token_path = home.join("token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
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

    /// A rustls server configuration (ring provider; TLS 1.3 and 1.2; h2 and http/1.1).
    pub fn server_config(&self, home: &Path) -> Result<Arc<rustls::ServerConfig>> {
        let cert_path = home.join("pki/server.crt");
        let key_path = home.join("pki/server.key");
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem { path: cert_path.clone(), message: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| Error::Pem { path: key_path, message: e.to_string() })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
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

/// (ca.crt, server.crt, server.key, ca.key) as PEM.
fn generate() -> Result<(String, String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "a2a-ca");
    dn.push(DnType::OrganizationName, "a2a");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "a2a-apiserver");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem(), ca_key.serialize_pem()))
}
