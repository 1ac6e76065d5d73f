//! The trust `a2a serve` places in `$A2A_HOME`: a home others can write, a planted or
//! exposed token and an `audit.log` symlink are refused with one line naming the path and the
//! fix, changing nothing; an expired or nearly expired serving certificate is issued again on
//! start from the same CA, and a running server renews its own, so kubeconfigs keep working.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use a2a::apiserver::pki::{CertPolicy, validity};
use a2a::apiserver::{Server, ServerConfig};
use common::tls;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `a2a serve` on `home`, which must refuse to start; returns its `error:` line.
fn refused(home: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["serve", "--api-only", "--port", "0", "--home"])
        .arg(home)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a2a serve started on {}", home.display());
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_home_others_can_write_is_refused_with_the_path_and_the_fix() {
    let top = tempfile::tempdir().unwrap();
    let home = top.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chmod(&home, 0o1777);
    let e = refused(&home);
    assert_eq!(
        e,
        format!(
            "error: {0}: is writable by group and others (mode 1777), so another user could plant its token, \
             certificates or logs; run `chmod 700 {0}` or choose another --home",
            home.display()
        )
    );
    assert!(listing(&home).is_empty(), "nothing written: {:?}", listing(&home));
}

#[test]
fn a_planted_token_readable_by_others_or_of_another_user_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("token");
    std::fs::write(&token, "planted").unwrap();
    chmod(&token, 0o644);
    let e = refused(home.path());
    assert!(
        e.starts_with(&format!("error: {}: is a secret readable or writable by others (mode 0644)", token.display())),
        "{e}"
    );
    assert!(e.contains(&format!("chmod 600 {}", token.display())), "{e}");
    assert_eq!(listing(home.path()), ["token"], "nothing else written");

    chmod(&token, 0o600);
    rustix::fs::chown(&token, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let e = refused(home.path());
    assert!(e.contains("is owned by uid 65534") && e.contains("planted") && e.contains("rm "), "{e}");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "planted");
}

#[test]
fn an_audit_log_symlink_is_refused_not_followed() {
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, home.path().join("audit.log")).unwrap();
    let e = refused(home.path());
    assert!(e.contains("audit.log: is a symbolic link, which a2a does not follow"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert_eq!(listing(home.path()), ["audit.log"], "nothing else written");

    // A link to a file not there yet is not created through either.
    std::fs::remove_file(home.path().join("audit.log")).unwrap();
    let absent = outside.path().join("absent");
    std::os::unix::fs::symlink(&absent, home.path().join("audit.log")).unwrap();
    refused(home.path());
    assert!(!absent.exists());
}

/// A client that trusts the CA of `kubeconfig` (a copy made earlier), for the server at `url`.
async fn client_with_old_kubeconfig(kubeconfig: &Path, url: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    config.cluster_url = url.parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

fn not_after(home: &Path) -> i64 {
    let path = home.join("pki/server.crt");
    validity(&std::fs::read_to_string(&path).unwrap(), &path).unwrap().1
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn start(home: &Path, policy: CertPolicy) -> a2a::apiserver::ServerHandle {
    Server::start(ServerConfig::new(home).port(0).certificates(policy)).await.unwrap()
}

#[tokio::test]
async fn an_expired_or_nearly_expired_serving_certificate_is_renewed_on_start_from_the_same_ca() {
    let copies = tempfile::tempdir().unwrap();
    // (lifetime at the first start, what makes it due at the second)
    for (lifetime, case) in [(Duration::ZERO, "expired"), (30 * DAY, "expires within 90 days")] {
        let home = tempfile::tempdir().unwrap();
        let first = start(
            home.path(),
            CertPolicy { serving_lifetime: lifetime, renew_before: Duration::ZERO, ..Default::default() },
        )
        .await;
        let copy = copies.path().join(format!("kubeconfig-{}", lifetime.as_secs()));
        std::fs::copy(first.kubeconfig(), &copy).unwrap();
        first.shutdown().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = not_after(home.path());
        assert!(before <= unix_now() + (lifetime.as_secs() as i64), "{case}");
        let ca = std::fs::read(home.path().join("pki/ca.crt")).unwrap();

        let second = start(home.path(), CertPolicy::default()).await;
        let after = not_after(home.path());
        assert!(after > unix_now() + 364 * DAY.as_secs() as i64, "{case}: renewed for a year, not after {after}");
        assert_eq!(std::fs::read(home.path().join("pki/ca.crt")).unwrap(), ca, "{case}: the CA is kept");
        // The copy of the kubeconfig made before still works (rustls rejects an expired
        // certificate, so this fails without the renewal).
        let client = client_with_old_kubeconfig(&copy, &second.url()).await;
        let list = Api::<Namespace>::all(client).list(&ListParams::default()).await.unwrap();
        assert!(!list.items.is_empty(), "{case}");
        second.shutdown().await;
    }
}

#[tokio::test]
async fn a_running_server_renews_its_certificate_and_new_connections_get_it() {
    let home = tempfile::tempdir().unwrap();
    // Issued for a day, due at once (within 90 days), checked every 100 ms.
    let policy = CertPolicy { serving_lifetime: DAY, check_every: Duration::from_millis(100), ..Default::default() };
    let server = start(home.path(), policy).await;
    let connector = tls::connector(server.kubeconfig(), &[b"http/1.1"]);
    let old = tls::connect(&connector, server.addr()).await.unwrap();
    let first = old.get_ref().1.peer_certificates().unwrap()[0].clone();
    let first_file = std::fs::read_to_string(home.path().join("pki/server.crt")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(home.path().join("pki/server.crt")).unwrap() == first_file {
        assert!(Instant::now() < deadline, "the certificate was not renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the swap after the files' write a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = tls::connect(&connector, server.addr()).await.unwrap();
    let second = new.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(first, second, "a new handshake gets the new certificate");

    // The connection opened before keeps working with its certificate, and the kubeconfig
    // (same CA) with the new one.
    let mut old = old;
    let answer = tls::exchange(&mut old, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let client = common::client_from(server.kubeconfig(), None).await;
    assert!(!Api::<Namespace>::all(client).list(&ListParams::default()).await.unwrap().items.is_empty());
    server.shutdown().await;
}
