//! Hosts joining each other, with real `a2a serve` processes on loopback, each in its own home:
//! `a2a token`, `a2a join`, the node certificate authenticating over mutual TLS (seen through the
//! real kubectl and through the host-to-host client), the node role's limits, and every refusal
//! (bad, expired, deleted token, a token of another CA, an unreachable host, a client
//! certificate of another CA) with nothing written and the refusal in the audit log.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use common::{Daemon, kubectl_bin};
use serde_json::Value;

/// `a2a ARGS` with `A2A_HOME=home`: success, stdout, stderr.
fn a2a(home: &Path, args: &[&str]) -> (bool, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_a2a")).env("A2A_HOME", home).args(args).output().unwrap();
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn token(home: &Path, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = a2a(home, &all);
    assert!(ok, "a2a {all:?} failed: {err}");
    out.trim().to_string()
}

/// `a2a join URL --token T --node-name NAME` into `home`.
fn join(home: &Path, url: &str, token: &str, name: &str) -> (bool, String, String) {
    a2a(home, &["join", url, "--token", token, "--node-name", name])
}

fn audit_lines(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("audit.log")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn audited(home: &Path, user: &str, resource: &str, code: u64) -> bool {
    audit_lines(home).iter().any(|l| l["user"] == user && l["resource"] == resource && l["code"] == code)
}

/// A kubeconfig for `server` authenticating with a client certificate (no token).
fn cert_kubeconfig(path: &Path, server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "n", "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "n", "namespace": "default"}}],
        "current-context": "c",
    });
    std::fs::write(path, serde_json::to_string(&doc).unwrap()).unwrap();
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let cache = kubeconfig.with_extension("cache");
    let Output { status, stdout, stderr } = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .output()
        .unwrap();
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// kubectl's words for a 401.
fn unauthorized(err: &str) -> bool {
    err.contains("Unauthorized") || err.contains("asked for the client to provide credentials")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The node a membership's client certificate authenticates as on the host at `url`, asked
/// with the host-to-host client (`peer`: the node name the host's certificate must carry).
async fn whoami_host_to_host(member_home: &Path, url: &str, peer: Option<&str>) -> Result<Value, String> {
    use http_body_util::{BodyExt, Full};
    let m = a2a::membership::Membership::load_any(member_home).unwrap().expect("a membership");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(m.connector(peer).unwrap());
    let body = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let req = http::Request::post(format!("{url}/apis/authentication.k8s.io/v1/selfsubjectreviews"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[test]
fn a_host_joins_with_a_good_token_and_its_certificate_authenticates_as_its_node_with_the_node_role() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b, home_c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let first = Daemon::spawn(&home_a);

    // The token, through the running server's API; only a digest of its secret is kept.
    let t = token(&home_a, &["--ttl", "1h", "--description", "the second workstation"]);
    let parsed = a2a::apiserver::join::JoinToken::parse(&t).unwrap();
    let ca_a = read(home_a.join("pki/ca.crt"));
    assert_eq!(parsed.pin, a2a::apiserver::join::ca_pin(&ca_a).unwrap(), "the token pins the first host's CA");
    let stored = read(home_a.join("join-tokens"));
    assert!(stored.contains(&parsed.id) && !stored.contains(&parsed.secret), "{stored}");
    let (ok, list, _) = a2a(&home_a, &["token", "list"]);
    assert!(ok && list.contains(&parsed.id) && list.contains("the second workstation"), "{list}");

    let (ok, out, err) = join(&home_b, &first.url, &t, "host-b");
    assert!(ok, "join failed: {err}");
    assert!(out.contains("joined") && out.contains("host-b"), "{out}");
    for f in ["ca.crt", "node.crt", "node.key", "join.json"] {
        assert_eq!(mode(&home_b.join("cluster").join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&home_b.join("cluster")), 0o700);
    assert_eq!(read(home_b.join("cluster/ca.crt")), ca_a, "the joined host keeps the first host's CA");
    let info: Value = serde_json::from_str(&read(home_b.join("cluster/join.json"))).unwrap();
    assert_eq!(info["server"], first.url.as_str());
    assert_eq!(info["nodeName"], "host-b");
    let key_b = read(home_b.join("cluster/node.key"));
    assert!(!read(home_a.join("nodes")).contains(key_b.lines().nth(1).unwrap()), "the key never left host b");
    let (ok, nodes, _) = a2a(&home_a, &["node", "list"]);
    assert!(ok && nodes.contains("host-b"), "{nodes}");
    assert!(audited(&home_a, &format!("system:bootstrap:{}", parsed.id), "join", 201));

    // The node's certificate authenticates to the first host, as kubectl sees it.
    let kc = dir.path().join("host-b.kubeconfig");
    cert_kubeconfig(&kc, &first.url, &ca_a, &read(home_b.join("cluster/node.crt")), &key_b);
    let (ok, out, err) = kubectl(&kc, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let who: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:host-b");
    assert!(who["status"]["userInfo"]["groups"].as_array().unwrap().contains(&"system:nodes".into()), "{who}");

    // The node role: agents and workflows read, workflows created; Secrets and users never.
    let (ok, _, err) = kubectl(&kc, &["get", "agents", "-A"]);
    assert!(ok, "{err}");
    assert!(audited(&home_a, "system:node:host-b", "agents", 200), "host-to-host reads are audited");
    let (ok, _, err) = kubectl(&kc, &["get", "secrets"]);
    assert!(!ok && err.contains("User \"system:node:host-b\" cannot list resource \"secrets\""), "{err}");
    assert!(audited(&home_a, "system:node:host-b", "secrets", 403));
    let (ok, _, err) = kubectl(&kc, &["create", "secret", "generic", "x", "--from-literal=a=b"]);
    assert!(!ok && err.to_lowercase().contains("forbidden"), "{err}");
    let (ok, _, err) = kubectl(&kc, &["get", "--raw", "/apis/auth.a2a.dev/v1alpha1/users"]);
    assert!(!ok && err.to_lowercase().contains("forbidden"), "{err}");
    assert_eq!(kubectl(&kc, &["auth", "can-i", "create", "workflows"]).1.trim(), "yes");
    assert_eq!(kubectl(&kc, &["auth", "can-i", "delete", "agents"]).1.trim(), "no");
    assert_eq!(kubectl(&kc, &["auth", "can-i", "get", "secrets"]).1.trim(), "no");

    // A second join under the same name is refused; nothing is written.
    let (ok, _, err) = join(&home_c, &first.url, &t, "host-b");
    assert!(!ok && err.contains("node \"host-b\" already joined") && err.contains("a2a node delete host-b"), "{err}");
    assert!(!home_c.exists(), "a refused join writes nothing");

    // A node may not carry a loopback name, nor another node's names.
    for (san, why) in [("127.0.0.1", "loopback"), ("host-b", "is a name of node \"host-b\"")] {
        let (ok, _, err) = a2a(&home_c, &["join", &first.url, "--token", &t, "--node-name", "host-e", "--san", san]);
        assert!(!ok && err.contains("(422)") && err.contains(why), "{san}: {err}");
        assert!(!home_c.exists());
    }

    // The joined host serves: a third host's certificate authenticates there as its node, over
    // the host-to-host client, which trusts the cluster's CA alone and asks for the node name.
    let (ok, _, err) = join(&home_c, &first.url, &t, "host-c");
    assert!(ok, "{err}");
    let second = Daemon::spawn(&home_b);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let who = runtime.block_on(whoami_host_to_host(&home_c, &second.url, Some("host-b"))).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:host-c", "{who}");
    assert!(audited(&home_b, "system:node:host-c", "selfsubjectreviews", 201), "audited on the called host");
    // Asked by its address, the joined host answers with its own (non-cluster) certificate,
    // which the host-to-host client refuses.
    let e = runtime.block_on(whoami_host_to_host(&home_c, &second.url, None)).unwrap_err();
    // (Every a2a CA has the same name: the check fails on the signature.)
    assert!(e.contains("InvalidCertificate"), "{e}");
    // And to the first host, by its address (its serving certificate is of the cluster's CA).
    let who = runtime.block_on(whoami_host_to_host(&home_c, &first.url, None)).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:host-c", "{who}");

    // The first host is a node too (named after the host), and calls the joined host as such.
    let own = a2a::membership::Membership::load_any(&home_a).unwrap().expect("the first host's node certificate");
    assert_eq!(Some(own.info.node_name.clone()), a2a::membership::default_node_name());
    let who = runtime.block_on(whoami_host_to_host(&home_a, &second.url, Some("host-b"))).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], format!("system:node:{}", own.info.node_name), "{who}");
    // No joining host may take its name.
    let home_d = dir.path().join("d");
    let (ok, _, err) = join(&home_d, &first.url, &t, &own.info.node_name);
    assert!(!ok && err.contains("is the name of this host itself"), "{err}");
    assert!(!home_d.exists());

    // A node deleted on the first host is refused by the joined host too, once it has fetched
    // the first host's list of revoked certificates (every 10 s by default).
    let (ok, _, err) = a2a(&home_a, &["node", "delete", "host-c"]);
    assert!(ok, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let who = runtime.block_on(whoami_host_to_host(&home_c, &second.url, Some("host-b"))).unwrap();
        if who["code"] == 401 {
            break;
        }
        assert_eq!(who["status"]["userInfo"]["username"], "system:node:host-c", "{who}");
        assert!(std::time::Instant::now() < deadline, "host-c is still accepted by host-b");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // A renewal: a new key and certificate, signed for the holder of the current one; the old
    // certificate is no longer accepted by the first host.
    let old_cert = read(home_b.join("cluster/node.crt"));
    let (ok, out, err) = a2a(&home_b, &["join", "--renew"]);
    assert!(ok && out.contains("renewed the certificate of node \"host-b\""), "{out}{err}");
    let new_cert = read(home_b.join("cluster/node.crt"));
    assert_ne!(new_cert, old_cert);
    assert_ne!(read(home_b.join("cluster/node.key")), key_b, "a new key");
    let (ok, _, err) = kubectl(&kc, &["get", "agents"]);
    assert!(!ok && unauthorized(&err), "the old certificate still works: {err}");
    let kc = dir.path().join("host-b-renewed.kubeconfig");
    cert_kubeconfig(&kc, &first.url, &ca_a, &new_cert, &read(home_b.join("cluster/node.key")));
    let (ok, out, err) = kubectl(&kc, &["auth", "whoami", "-o", "json"]);
    assert!(ok && out.contains("system:node:host-b"), "{err}");
    assert!(audited(&home_a, "system:node:host-b", "nodecertificate", 201));
    // Renewing is for nodes: the administrator (no node) is refused, and the first host cannot.
    let (ok, _, err) = kubectl(&first.kubeconfig, &["create", "--raw", "/join/renew", "-f", "/dev/null"]);
    assert!(!ok && err.to_lowercase().contains("forbidden"), "{err}");
    let (ok, _, err) = a2a(&home_a, &["join", "--renew"]);
    assert!(!ok && err.contains("has not joined"), "{err}");

    // Forgotten on the first host, the node's certificate no longer authenticates there.
    let (ok, out, err) = a2a(&home_a, &["node", "delete", "host-b"]);
    assert!(ok && out.contains("node \"host-b\" deleted"), "{err}");
    let (ok, _, err) = kubectl(&kc, &["get", "agents"]);
    assert!(!ok && unauthorized(&err), "{err}");
    drop(second);
    drop(first);
}

#[test]
fn bad_expired_deleted_and_foreign_tokens_and_unreachable_hosts_are_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_x) = (dir.path().join("a"), dir.path().join("x"));
    let first = Daemon::spawn(&home_a);
    let other = Daemon::spawn(&home_x);
    let nothing_written = |home: &Path| assert!(!home.exists(), "{} was written", home.display());

    // A token whose secret is wrong.
    let good = a2a::apiserver::join::JoinToken::parse(&token(&home_a, &[])).unwrap();
    let wrong = a2a::apiserver::join::JoinToken { secret: "0".repeat(32), ..good.clone() };
    let home = dir.path().join("wrong");
    let (ok, _, err) = join(&home, &first.url, &wrong.text(), "host-b");
    assert!(
        !ok && err.contains("refused the join (401)") && err.contains(&format!("join token \"{}\"", good.id)),
        "{err}"
    );
    assert!(!err.contains(&good.secret));
    nothing_written(&home);

    // A deleted token.
    let (ok, _, err) = a2a(&home_a, &["token", "delete", &good.id]);
    assert!(ok, "{err}");
    let home = dir.path().join("deleted");
    let (ok, _, err) = join(&home, &first.url, &good.text(), "host-b");
    assert!(!ok && err.contains("(401)") && err.contains("deleted"), "{err}");
    nothing_written(&home);
    let (ok, _, err) = a2a(&home_a, &["token", "delete", &good.id]);
    assert!(!ok && err.contains("not found"), "{err}");

    // An expired token: good for one second, used after it.
    let short = token(&home_a, &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let home = dir.path().join("expired");
    let (ok, _, err) = join(&home, &first.url, &short, "host-b");
    assert!(!ok && err.contains("(401)") && err.contains("expired at"), "{err}");
    nothing_written(&home);

    // A token of another host's CA: the first host's CA is not the one it pins.
    let foreign = token(&home_x, &[]);
    let home = dir.path().join("foreign");
    let (ok, _, err) = join(&home, &first.url, &foreign, "host-b");
    let pin_a = a2a::apiserver::join::ca_pin(&read(home_a.join("pki/ca.crt"))).unwrap();
    let pin_x = a2a::apiserver::join::JoinToken::parse(&foreign).unwrap().pin;
    assert!(
        !ok && err.contains("is not the one the token pins")
            && err.contains(&format!("sha256:{pin_a}"))
            && err.contains(&format!("sha256:{pin_x}")),
        "{err}"
    );
    nothing_written(&home);

    // An unreachable host, a malformed token, a bad URL, a bad node name.
    let good = token(&home_a, &[]);
    let home = dir.path().join("unreachable");
    let (ok, _, err) = join(&home, "https://127.0.0.1:1", &good, "host-b");
    assert!(!ok && err.contains("cannot reach https://127.0.0.1:1"), "{err}");
    let (ok, _, err) = join(&home, &first.url, "abcdef.0123456789abcdef", "host-b");
    assert!(!ok && err.contains("--token") && err.contains("K10"), "{err}");
    let (ok, _, err) = join(&home, &first.url.replace("https", "http"), &good, "host-b");
    assert!(!ok && err.contains("the scheme must be https"), "{err}");
    let (ok, _, err) = join(&home, &first.url, &good, "Host_B");
    assert!(!ok && err.contains("invalid node name \"Host_B\""), "{err}");
    nothing_written(&home);

    // Every refusal of the first host is in its audit log, with the token's id.
    let refused: Vec<Value> =
        audit_lines(&home_a).into_iter().filter(|l| l["resource"] == "join" && l["code"] == 401).collect();
    assert_eq!(refused.len(), 3, "wrong secret, deleted, expired: {refused:?}");
    assert!(refused.iter().all(|l| l["user"].as_str().unwrap().starts_with("system:bootstrap:")), "{refused:?}");
    // A named user other than the unbound admin may not make tokens.
    let (ok, viewer, err) = a2a(&home_a, &["user", "create", "viewer", "--role", "view", "-o", "kubeconfig"]);
    assert!(ok, "{err}");
    let kc = dir.path().join("viewer.kubeconfig");
    std::fs::write(&kc, viewer).unwrap();
    let (ok, _, err) = a2a(&home_a, &["token", "create", "--kubeconfig", kc.to_str().unwrap()]);
    assert!(!ok && err.contains("cannot create resource \"jointokens\""), "{err}");
    drop(other);
    drop(first);
}

#[test]
fn a_client_certificate_of_another_ca_is_refused_in_the_handshake_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    let first = Daemon::spawn(&home);
    // A CA of its own signs a certificate that claims to be a node.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["host-b".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "host-b");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();

    let kc = dir.path().join("impostor.kubeconfig");
    cert_kubeconfig(&kc, &first.url, &read(home.join("pki/ca.crt")), &cert.pem(), &key.serialize_pem());
    let (ok, out, err) = kubectl(&kc, &["get", "agents"]);
    assert!(!ok, "a certificate of another CA was accepted: {out}");
    assert!(!err.contains("system:node:host-b"), "{err}");
    // The refusal is the handshake's, recorded with the peer's address.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !audited(&home, "system:anonymous", "clientcertificate", 401) {
        assert!(std::time::Instant::now() < deadline, "no audit line for the refused certificate");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The same server still serves its admin.
    let (ok, _, err) = kubectl(&first.kubeconfig, &["get", "agents"]);
    assert!(ok, "{err}");
}

#[test]
fn tokens_made_on_the_home_with_no_server_running_are_honoured_once_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    // The first start makes the CA; then the server is stopped.
    Daemon::spawn(&home).kill();
    let made = token(&home, &["--description", "made offline"]);
    let id = a2a::apiserver::join::JoinToken::parse(&made).unwrap().id;
    let dropped = token(&home, &[]);
    let dropped_id = a2a::apiserver::join::JoinToken::parse(&dropped).unwrap().id;
    let (ok, out, err) = a2a(&home, &["token", "delete", &dropped_id]);
    assert!(ok && out.contains("deleted"), "{err}");
    let (ok, list, _) = a2a(&home, &["token", "list"]);
    assert!(ok && list.contains(&id) && list.contains("made offline") && !list.contains(&dropped_id), "{list}");

    let first = Daemon::spawn(&home);
    let (ok, _, err) = join(&dir.path().join("b"), &first.url, &made, "host-b");
    assert!(ok, "{err}");
    let (ok, _, err) = join(&dir.path().join("c"), &first.url, &dropped, "host-c");
    assert!(!ok && err.contains("(401)"), "{err}");
    // A home others may write is refused before the first host is asked.
    let open_home = dir.path().join("open");
    std::fs::create_dir(&open_home).unwrap();
    std::fs::set_permissions(&open_home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, _, err) = join(&open_home, &first.url, &made, "host-d");
    assert!(!ok && err.contains(open_home.to_str().unwrap()), "{err}");
    let (_, nodes, _) = a2a(&home, &["node", "list"]);
    assert!(nodes.contains("host-b") && !nodes.contains("host-d"), "{nodes}");
    assert!(!open_home.join("cluster").exists());
}
