//! HTTPS and credentials toward agents, end to end: an agent written with the official A2A
//! Python SDK, served over TLS by uvicorn with certificates made here, that requires a
//! bearer token, an API key, an OAuth2 token from its own token endpoint or a client
//! certificate. Workflows run through the real local API server and workflow engine, the
//! credentials come from real Secrets.

mod common;
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and what it issued, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    ca_key: KeyPair,
    ca_params: CertificateParams,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.clone().self_signed(&ca_key).expect("ca").pem();
        Pki { dir: tempfile::tempdir().expect("tempdir"), ca_pem, ca_key, ca_params }
    }

    /// A certificate for `names` signed by the CA: (cert PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
        (params.signed_by(&key, &issuer).expect("sign").pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

/// A test agent of tests/python over TLS (secure_agent.py unless said otherwise), killed when
/// dropped.
struct SecureAgent {
    child: Child,
    url: String,
    log: PathBuf,
    _pki: Arc<Pki>,
}

impl SecureAgent {
    async fn start(pki: Arc<Pki>, env: &[(&str, &str)]) -> SecureAgent {
        Self::script("secure_agent.py", pki, env).await
    }

    async fn script(script: &str, pki: Arc<Pki>, env: &[(&str, &str)]) -> SecureAgent {
        let port = support::free_port();
        let (cert, key) = pki.issue(&["127.0.0.1"]);
        let log = pki.dir.path().join(format!("agent-{port}.stderr"));
        let mut cmd = Command::new(support::python());
        cmd.arg(support::root().join("tests/python").join(script))
            .env("A2A_PORT", port.to_string())
            .env("TLS_CERT", pki.write(&format!("server-{port}.crt"), &cert))
            .env("TLS_KEY", pki.write(&format!("server-{port}.key"), &key))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the secure agent");
        let mut agent = SecureAgent { child, url: format!("https://127.0.0.1:{port}/"), log, _pki: pki };
        agent.wait_listening(port).await;
        agent
    }

    async fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the secure agent exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the secure agent did not listen within 30s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SecureAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn secret(client: &kube::Client, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": data.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    }))
    .expect("secret");
    api.create(&PostParams::default(), &s).await.expect("create secret");
}

/// An Agent with `url` and the given `tls`/`auth`, marked ready at its url (what the node's
/// probe writes).
async fn url_agent(client: &kube::Client, name: &str, url: &str, access: serde_json::Value) {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let mut spec = serde_json::json!({"url": url});
    spec.as_object_mut().expect("object").extend(access.as_object().cloned().unwrap_or_default());
    let doc = serde_json::json!({"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name}, "spec": spec});
    let agent = match a2a::api::validate::validate(&doc) {
        Ok(a2a::api::Object::Agent(a)) => a,
        other => panic!("invalid agent: {other:?}"),
    };
    api.create(&PostParams::default(), &agent).await.expect("create agent");
    let status =
        serde_json::json!({"status": {"phase": "Running", "readyReplicas": 1, "replicas": 1, "endpoints": [url]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("agent status");
}

/// Runs a workflow of `tasks` one after the other on `agent` (retry limit 3); returns it
/// finished.
async fn run(client: &kube::Client, name: &str, agent: &str, tasks: usize) -> Workflow {
    let mut yaml = format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  retry: {{ limit: 3, backoff: {{ initial: 100ms }} }}\n  tasks:\n"
    );
    for i in 0..tasks {
        let after = if i == 0 { String::new() } else { format!(", dependsOn: [t{}]", i - 1) };
        yaml.push_str(&format!("    - {{ name: t{i}, agent: {agent}, message: hello {i}{after} }}\n"));
    }
    let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
    let wf: Workflow = serde_yaml_ng::from_str(&yaml).expect("workflow");
    api.create(&PostParams::default(), &wf).await.expect("create workflow");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wf = api.get(name).await.expect("get workflow");
        if matches!(
            wf.status.as_ref().and_then(|s| s.phase),
            Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)
        ) {
            return wf;
        }
        assert!(Instant::now() < deadline, "workflow {name} did not finish: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_engine(client: &kube::Client) -> tokio::sync::oneshot::Sender<()> {
    let engine = Engine::new(client.clone(), EngineConfig::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(&engine).run(async move {
        let _ = rx.await;
    }));
    tx
}

fn succeeded(wf: &Workflow) {
    assert_eq!(wf.status.as_ref().and_then(|s| s.phase), Some(WorkflowPhase::Succeeded), "{:#?}", wf.status);
}

/// The error of the first task of a failed workflow, and its attempts; its reason is `reason`.
fn failure(wf: &Workflow, reason: Option<&str>) -> (String, u32) {
    let s = wf.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(WorkflowPhase::Failed), "{s:#?}");
    let t = &s.tasks[0];
    assert_eq!(t.phase, TaskPhase::Failed);
    assert_eq!(t.reason.as_deref(), reason, "{t:#?}");
    (t.error.clone().unwrap_or_default(), t.attempts)
}

fn ca_secret() -> serde_json::Value {
    serde_json::json!({"caSecret": {"name": "agent-ca", "key": "ca.crt"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_agent_that_requires_a_bearer_token_serves_the_right_token_only() {
    let server = common::start().await;
    let c = &server.client;
    let pki = Arc::new(Pki::new("agent test CA"));
    let agent = SecureAgent::start(pki.clone(), &[("AUTH", "bearer"), ("SECRET", "s3cret-token")]).await;
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "agent-token", &[("token", "s3cret-token\n")]).await;
    secret(c, "wrong-token", &[("token", "not-the-token")]).await;
    let bearer = |name: &str| serde_json::json!({"bearer": {"secretKeyRef": {"name": name, "key": "token"}}});
    url_agent(c, "good", &agent.url, serde_json::json!({"tls": ca_secret(), "auth": bearer("agent-token")})).await;
    url_agent(c, "wrong", &agent.url, serde_json::json!({"tls": ca_secret(), "auth": bearer("wrong-token")})).await;
    url_agent(c, "untrusted", &agent.url, serde_json::json!({"auth": bearer("agent-token")})).await;
    url_agent(c, "anonymous", &agent.url, serde_json::json!({"tls": ca_secret()})).await;
    let _stop = start_engine(c);

    let wf = run(c, "good", "good", 2).await;
    succeeded(&wf);
    assert_eq!(wf.status.as_ref().expect("status").tasks[1].output.as_deref(), Some("secure: hello 1"));

    let (error, attempts) = failure(&run(c, "wrong", "wrong", 1).await, Some("Unauthorized"));
    assert!(error.contains("refused the credentials: HTTP 401"), "{error}");
    assert!(error.contains(r#"WWW-Authenticate: Bearer error="invalid_token""#), "{error}");
    assert!(!error.contains("not-the-token"), "the token never appears: {error}");
    assert_eq!(attempts, 1, "a refused credential is not retried: {error}");

    let (error, attempts) = failure(&run(c, "untrusted", "untrusted", 1).await, Some("TLSError"));
    assert!(error.contains("certificate verify failed: UnknownIssuer for 127.0.0.1"), "{error}");
    assert_eq!(attempts, 1, "a certificate that does not verify is not retried: {error}");

    let (error, _) = failure(&run(c, "anonymous", "anonymous", 1).await, Some("AuthenticationFailed"));
    assert!(
        error.contains(r#"the agent card requires "credential" (HTTP Bearer), and a2a has no credential for it"#),
        "{error}"
    );
    assert!(agent.log().contains("secure-agent: task="), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_token_is_fetched_once_and_reused_across_tasks() {
    let server = common::start().await;
    let c = &server.client;
    let pki = Arc::new(Pki::new("oauth test CA"));
    let env = [("AUTH", "oauth2"), ("CLIENT_ID", "a2a-client"), ("SECRET", "client-s3cret")];
    let agent = SecureAgent::start(pki.clone(), &env).await;
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "oauth", &[("id", "a2a-client"), ("secret", "client-s3cret"), ("bad", "nope")]).await;
    let oauth = |secret_key: &str| {
        serde_json::json!({"oauth2": {
            "clientId": {"secretKeyRef": {"name": "oauth", "key": "id"}},
            "clientSecret": {"secretKeyRef": {"name": "oauth", "key": secret_key}},
        }})
    };
    url_agent(c, "oauth", &agent.url, serde_json::json!({"tls": ca_secret(), "auth": oauth("secret")})).await;
    url_agent(c, "bad-client", &agent.url, serde_json::json!({"tls": ca_secret(), "auth": oauth("bad")})).await;
    let _stop = start_engine(c);

    succeeded(&run(c, "three", "oauth", 3).await);
    let log = agent.log();
    assert_eq!(log.matches("token issued").count(), 1, "one token serves every task:\n{log}");
    assert!(log.contains("token issued n=1 scope=echo"), "the card's scope is asked for:\n{log}");
    assert_eq!(log.matches("secure-agent: task=").count(), 3, "{log}");

    let (error, attempts) = failure(&run(c, "bad", "bad-client", 1).await, Some("AuthenticationFailed"));
    assert!(error.contains("the OAuth2 token endpoint https://127.0.0.1:"), "{error}");
    assert!(error.contains("answered HTTP 401 (invalid_client)"), "{error}");
    assert!(!error.contains("nope"), "{error}");
    assert_eq!(attempts, 1, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_goes_in_the_header_the_card_names() {
    let server = common::start().await;
    let c = &server.client;
    let pki = Arc::new(Pki::new("api key test CA"));
    let agent = SecureAgent::start(pki.clone(), &[("AUTH", "apikey"), ("SECRET", "k-123")]).await;
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "key", &[("key", "k-123")]).await;
    let auth = serde_json::json!({"apiKey": {"secretKeyRef": {"name": "key", "key": "key"}}});
    url_agent(c, "keyed", &agent.url, serde_json::json!({"tls": ca_secret(), "auth": auth})).await;
    let _stop = start_engine(c);
    succeeded(&run(c, "keyed", "keyed", 1).await);
    assert!(!agent.log().contains("refused"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate_from_its_secret() {
    let server = common::start().await;
    let c = &server.client;
    let pki = Arc::new(Pki::new("mtls test CA"));
    let clients = Pki::new("client CA");
    let client_ca = pki.write("client-ca.crt", &clients.ca_pem);
    let agent =
        SecureAgent::start(pki.clone(), &[("AUTH", "mtls"), ("TLS_CLIENT_CA", client_ca.to_str().expect("utf-8"))])
            .await;
    let (cert, key) = clients.issue(&["a2a-engine"]);
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "client-tls", &[("tls.crt", &cert), ("tls.key", &key)]).await;
    let mut tls = ca_secret();
    tls["clientCertificateSecret"] = serde_json::json!({"name": "client-tls"});
    url_agent(c, "mutual", &agent.url, serde_json::json!({"tls": tls})).await;
    url_agent(c, "no-cert", &agent.url, serde_json::json!({"tls": ca_secret()})).await;
    let _stop = start_engine(c);
    succeeded(&run(c, "mutual", "mutual", 1).await);
    // However the refusal reaches the client (its alert, a close without close_notify, a reset
    // racing the request), the failure names the missing client certificate.
    let (error, _) = failure(&run(c, "no-cert", "no-cert", 1).await, None);
    assert!(
        error.contains("TLS with 127.0.0.1 failed") || error.contains("TLS handshake with 127.0.0.1 failed"),
        "the failure is named, with the likely cause: {error}"
    );
    assert!(error.contains("client certificate"), "{error}");
}

/// The Ready condition's message of agent `name`, once it contains `needle`.
async fn ready_message(client: &kube::Client, name: &str, needle: &str) -> String {
    let a = common::node::wait_agent(client, name, Duration::from_secs(30), |a| {
        a.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.message.contains(needle)))
    })
    .await;
    let s = a.status.expect("status");
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.status, a2a::api::common::ConditionStatus::False);
    ready.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_probe_says_why_an_https_agent_is_not_ready() {
    let scratch = common::node::Scratch::new("auth-probe");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = common::node::Daemon::start(home, top, &[]);
    let c = &daemon.client().await;
    let pki = Arc::new(Pki::new("probe test CA"));
    let agent = SecureAgent::start(pki.clone(), &[("AUTH", "bearer"), ("SECRET", "right")]).await;
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "tokens", &[("right", "right"), ("wrong", "wrong")]).await;
    let yaml = |name: &str, tls: &str, key: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  url: {}\n{tls}  auth:\n    bearer: {{ secretKeyRef: {{ name: tokens, key: {key} }} }}\n---\n",
            agent.url
        )
    };
    let tls = "  tls:\n    caSecret: { name: agent-ca, key: ca.crt }\n";
    common::node::apply(
        home,
        &format!(
            "{}{}{}",
            yaml("trusted", tls, "right"),
            yaml("untrusted", "", "right"),
            yaml("refused", tls, "wrong")
        ),
    );
    let m = ready_message(c, "untrusted", "certificate").await;
    assert!(m.contains("certificate verify failed: UnknownIssuer for 127.0.0.1"), "{m}");
    let m = ready_message(c, "refused", "credentials").await;
    assert!(m.contains("the agent refused the credentials: HTTP 401"), "{m}");
    let a = common::node::wait_agent(c, "trusted", Duration::from_secs(30), |a| {
        a.status.as_ref().is_some_and(|s| s.ready_replicas == 1)
    })
    .await;
    assert_eq!(a.status.and_then(|s| s.card).map(|c| c.name).as_deref(), Some("secure-echo"));
    common::node::tear_down(daemon).await;
}

/// The layered agent (tests/python/extended_card_agent.py): its public card has the skill
/// `echo`, its extended card, shown only to the bearer token `insider-token`, adds `summarize`.
async fn layered_agent(pki: &Arc<Pki>, env: &[(&str, &str)]) -> SecureAgent {
    let mut all = vec![("SECRET", "insider-token")];
    all.extend_from_slice(env);
    SecureAgent::script("extended_card_agent.py", pki.clone(), &all).await
}

/// A client of `url` trusting `pki`, presenting `bearer` when given.
fn client(pki: &Pki, url: &str, bearer: Option<&str>) -> a2a::a2a::Client {
    let options = a2a::a2a::ClientOptions {
        tls: a2a::a2a::tls::TlsOptions { ca_pem: Some(pki.ca_pem.clone().into_bytes()), ..Default::default() },
        credentials: a2a::a2a::auth::Credentials {
            bearer: bearer.map(a2a::a2a::auth::SecretText::new),
            ..Default::default()
        },
        ..Default::default()
    };
    a2a::a2a::Client::with_options(url, options).expect("client")
}

async fn skills(c: &a2a::a2a::Client) -> Vec<String> {
    c.agent_card().await.expect("card").skills.iter().map(|s| s.id.clone()).collect()
}

/// Why the client uses the public card though the agent offers an extended one.
async fn unused(c: &a2a::a2a::Client) -> String {
    match c.extended_card().await.expect("card") {
        a2a::a2a::ExtendedCard::Unused(why) => why,
        other => panic!("the extended card should be unused, it is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_card_shown_to_the_right_token_replaces_the_public_one_over_either_binding() {
    let pki = Arc::new(Pki::new("extended card test CA"));
    for (public, other) in [("JSONRPC", "HTTP+JSON"), ("HTTP+JSON", "JSONRPC")] {
        let agent = layered_agent(&pki, &[("PUBLIC_BINDING", public)]).await;
        let insider = client(&pki, &agent.url, Some("insider-token"));
        assert_eq!(skills(&insider).await, ["echo", "summarize"], "{public}: {}", agent.log());
        assert_eq!(insider.extended_card().await.expect("card"), a2a::a2a::ExtendedCard::InUse);
        assert_eq!(insider.transport().await.expect("transport").binding(), other, "the extended card's binding");
        let opts = a2a::a2a::FollowOptions::default().timeout(Duration::from_secs(30));
        let reply = insider
            .send_and_follow(a2a::a2a::Message::user_text("m-1", "hi"), &opts, std::future::pending())
            .await
            .expect("a reply");
        assert_eq!(reply.output().text, "extended: hi");
        let log = agent.log();
        assert!(log.contains(&format!("request binding={public} op=")), "fetched over the public binding:\n{log}");
        assert!(log.contains(&format!("request binding={other} op=")), "sent over the extended one:\n{log}");

        let outsider = client(&pki, &agent.url, Some("wrong-token"));
        assert_eq!(skills(&outsider).await, ["echo"], "{public}");
        let why = unused(&outsider).await;
        assert!(why.contains("the agent refused the credentials: HTTP 401"), "{why}");
        assert!(!why.contains("wrong-token"), "{why}");
        assert_eq!(outsider.transport().await.expect("transport").binding(), public);
        let reply = outsider
            .send_and_follow(a2a::a2a::Message::user_text("m-2", "yo"), &opts, std::future::pending())
            .await
            .expect("the public card still serves");
        assert_eq!(reply.output().text, "extended: yo");

        let anonymous = client(&pki, &agent.url, None);
        assert_eq!(skills(&anonymous).await, ["echo"]);
        let why = unused(&anonymous).await;
        assert!(why.contains("a2a presents no credentials to this agent"), "{why}");
        let log = agent.log();
        assert_eq!(log.matches("refused the extended card").count(), 1, "asked for only with credentials:\n{log}");
    }
    let unconfigured = layered_agent(&pki, &[("EXTENDED", "off")]).await;
    let c = client(&pki, &unconfigured.url, Some("insider-token"));
    assert_eq!(skills(&c).await, ["echo"]);
    let why = unused(&c).await;
    assert!(why.contains("ExtendedAgentCardNotConfigured"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shows_the_skills_of_the_extended_card_its_token_sees_and_gets_their_tasks() {
    let scratch = common::node::Scratch::new("extended-card");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = common::node::Daemon::start(home, top, &[]);
    let c = &daemon.client().await;
    let pki = Arc::new(Pki::new("extended card probe CA"));
    let agent = layered_agent(&pki, &[]).await;
    secret(c, "agent-ca", &[("ca.crt", &pki.ca_pem)]).await;
    secret(c, "tokens", &[("insider", "insider-token"), ("outsider", "wrong-token")]).await;
    let yaml = |name: &str, auth: &str| {
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  url: {}\n  tls:\n    caSecret: {{ name: agent-ca, key: ca.crt }}\n{auth}---\n",
            agent.url
        )
    };
    let auth = |key: &str| format!("  auth:\n    bearer: {{ secretKeyRef: {{ name: tokens, key: {key} }} }}\n");
    common::node::apply(
        home,
        &format!(
            "{}{}{}",
            yaml("insider", &auth("insider")),
            yaml("outsider", &auth("outsider")),
            yaml("anonymous", "")
        ),
    );
    let ready = |name: &'static str| async move {
        let a = common::node::wait_agent(c, name, Duration::from_secs(30), |a| {
            a.status.as_ref().is_some_and(|s| s.ready_replicas == 1 && s.card.is_some())
        })
        .await;
        let s = a.status.expect("status");
        let message = s.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready").message.clone();
        (s.card.expect("card"), message)
    };
    let (card, message) = ready("insider").await;
    assert_eq!(card.skills, ["echo", "summarize"], "{message}");
    assert!(card.extended, "{card:?}");
    assert!(!message.contains("extended"), "{message}");
    let (card, message) = ready("outsider").await;
    assert_eq!(card.skills, ["echo"]);
    assert!(!card.extended);
    assert!(message.contains("its extended agent card is not used"), "{message}");
    assert!(message.contains("the agent refused the credentials: HTTP 401"), "{message}");
    let (card, message) = ready("anonymous").await;
    assert_eq!(card.skills, ["echo"]);
    assert!(message.contains("a2a presents no credentials to this agent (spec.auth of the Agent)"), "{message}");

    common::node::apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: digest }\nspec:\n  tasks:\n    - { name: sum, skill: summarize, message: the long text }\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = common::node::get_wf(c, "digest").await;
        if wf.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal()) {
            break wf;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish: {:#?}", wf.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    succeeded(&wf);
    let task = &wf.status.as_ref().expect("status").tasks[0];
    assert_eq!(task.agent.as_deref(), Some("insider"), "only the insider has the skill: {task:#?}");
    assert_eq!(task.output.as_deref(), Some("extended: the long text"));

    // A corrected Secret is read at the next probe: the outsider sees the extended card too.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let fix = serde_json::json!({"stringData": {"outsider": "insider-token"}});
    secrets.patch("tokens", &PatchParams::default(), &Patch::Merge(&fix)).await.expect("patch the Secret");
    let a = common::node::wait_agent(c, "outsider", Duration::from_secs(30), |a| {
        a.status.as_ref().and_then(|s| s.card.as_ref()).is_some_and(|card| card.extended)
    })
    .await;
    let s = a.status.expect("status");
    assert_eq!(s.card.expect("card").skills, ["echo", "summarize"]);
    let message = &s.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready").message;
    assert!(!message.contains("extended"), "the reason goes with the public card: {message}");
    common::node::tear_down(daemon).await;
}
