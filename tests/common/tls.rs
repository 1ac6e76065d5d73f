//! Raw TLS clients of the API server, for the connection tests and bench: the trust from a
//! kubeconfig, connections opened and left idle, and this process's descriptor limit.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A TLS connector trusting the CA of `kubeconfig`, offering `alpn`.
pub fn connector(kubeconfig: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap();
    let pem = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().unwrap()
}

/// `https://127.0.0.1:PORT` → the socket address.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("https://").parse().unwrap()
}

/// A TLS connection that finished its handshake.
pub async fn connect(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await
}

/// Waits until the server closes `conn` (end of stream or a reset); returns the bytes it sent.
pub async fn until_closed(conn: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` and reads until the server closes the connection.
pub async fn exchange(conn: &mut TlsStream<TcpStream>, request: &str) -> String {
    conn.write_all(request.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&until_closed(conn).await).into_owned()
}

/// Raises this process's soft descriptor limit to `want` (within the hard limit).
pub fn raise_nofile(want: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < want {
        let target = limit.maximum.map_or(want, |max| want.min(max));
        setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum }).unwrap();
    }
}
