//! The host's A2A gateway's overhead: the same `SendMessage` (the demo agent's `echo`, over
//! JSON-RPC, blocking) sent to the agent directly on loopback (HTTP, with its own token) and
//! through the gateway (HTTPS to the gateway, its routing, authentication, admission through
//! the dispatch queue and the audit line, then HTTP to the agent), and through the floor of
//! any gateway: a bare proxy hop of the same shape (HTTPS with the gateway's own serving
//! certificate and TLS setup, HTTP/1.1 kept alive on both sides, the agent's token put in,
//! the request and answer forwarded as they are; no routing, authentication, admission or
//! audit), served in this process on its own runtime. All three in the same run, in
//! alternating rounds so they see the same machine.
//!
//! `cargo bench --bench gateway` runs a real `a2a serve` (needs root and cgroups, like the
//! node benches) with two agents, and prints p50/p90/p99 of each path and the ratios of the
//! p50s, for the demo agent (`A2A_BENCH_N` calls of each, default 2000) and the Python SDK's
//! echo agent (a quarter as many), with the load average before and after.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::a2a::auth::{Credentials, SecretText};
use a2a::a2a::tls::TlsOptions;
use a2a::a2a::transport::Addressing;
use a2a::a2a::{Client, ClientOptions, Message};
use a2a::api::Agent;
use a2a::apiserver::pki::{CertPolicy, Identity};
use a2a::controller::credentials;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The demo agent (Rust, an answer in tens of microseconds: the floor, where the gateway's
/// own cost shows most) and the official Python SDK's echo agent (a typical agent), in the
/// host budget with automatic throttling off: on a busy machine the agents' CPU pressure would
/// otherwise pace calls to 600 a minute, and the bench would time the throttle, not the
/// gateway.
fn agents() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        r#"apiVersion: a2a.dev/v1alpha1
kind: ResourceBudget
metadata: {{name: host}}
spec:
  limits: {{cpu: "60%", memory: 8Gi}}
  reserve: 512Mi
  throttle: {{enabled: false}}
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: bench}}
spec:
  protocol: a2a
  command: ["a2a", "demo-agent", "--skill", "echo", "--binding", "jsonrpc"]
  maxConcurrentTasks: 16
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: bench-py}}
spec:
  protocol: a2a
  command: ["{root}/.venv/bin/python", "{root}/examples/python/echo_agent.py"]
  user: root
  writablePaths: ["{root}"]
  maxConcurrentTasks: 16
"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The bare proxy hop, on its own two-thread runtime (as the gateway has its process):
/// HTTPS on `127.0.0.1` with the rustls configuration the gateway builds from the same home
/// (its serving certificate, the cluster's CA for client certificates), HTTP/1.1 kept alive,
/// each request sent on to the agent at `agent` (`http://host:port`) with the same method,
/// path, headers and body but the agent's own `token`, over a kept-alive pool, and the answer
/// returned as it comes. Returns the hop's `https://127.0.0.1:PORT`.
fn floor_proxy(home: &std::path::Path, agent: String, token: String) -> String {
    let identity = Identity::load_or_create(home, &CertPolicy::default()).expect("the home's identity");
    let cert = identity.serving_cert(home, &CertPolicy::default()).expect("serving certificate");
    // The gateway's configuration; the second offers only HTTP/1.1, which is what the
    // client speaks and what this hop serves.
    let (_, tls) = Identity::server_configs_verifying(&cert, Some(&identity.ca_pem)).expect("TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("https://{}", listener.local_addr().expect("address"));
    let auth = hyper::header::HeaderValue::try_from(format!("Bearer {token}")).expect("token header");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let http: HyperClient<HttpConnector, Incoming> = HyperClient::builder(TokioExecutor::new()).build_http();
            let http = Arc::new(http);
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                let (acceptor, http, agent, auth) = (acceptor.clone(), http.clone(), agent.clone(), auth.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (http, auth) = (http.clone(), auth.clone());
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        let uri = format!("{agent}{path}");
                        async move {
                            let (mut parts, body) = req.into_parts();
                            parts.uri = uri.parse().expect("agent URI");
                            parts.headers.insert(hyper::header::AUTHORIZATION, auth);
                            parts.headers.remove(hyper::header::HOST);
                            http.request(hyper::Request::from_parts(parts, body)).await
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
    });
    url
}

fn main() {
    let n: usize = std::env::var("A2A_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let home = tempfile::tempdir().expect("home");
    let top = format!("a2a-bench-gateway-{}", std::process::id());
    let exe = env!("CARGO_BIN_EXE_a2a");
    let mut serve = Command::new(exe)
        .args(["serve", "--port", "0", "--gateway-port", "0", "--cgroup-top", &top, "--home"])
        .arg(home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("a2a serve");
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    assert!(line.contains("A2A gateway: https://"), "{line}");
    let manifest = home.path().join("agent.yaml");
    std::fs::write(&manifest, agents()).expect("manifest");
    let applied = Command::new(exe).args(["apply", "-f"]).arg(&manifest).env("A2A_HOME", home.path()).status();
    assert!(applied.is_ok_and(|s| s.success()), "a2a apply");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let kc = Kubeconfig::read_from(home.path().join("kubeconfig")).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
        let kube = kube::Client::try_from(config).expect("client");
        let agents: Api<Agent> = Api::namespaced(kube.clone(), "default");
        let url = std::fs::read_to_string(home.path().join("gateway.url")).expect("gateway.url");
        let admin = std::fs::read_to_string(home.path().join("token")).expect("token");
        let ca = std::fs::read(home.path().join("pki/ca.crt")).expect("ca");
        let options = |token: &str, ca: Option<Vec<u8>>| ClientOptions {
            tls: TlsOptions { ca_pem: ca, ..Default::default() },
            credentials: Credentials { bearer: Some(SecretText::new(token)), ..Default::default() },
            ..Default::default()
        };
        for (label, name, n) in [("demo", "bench", n), ("sdk", "bench-py", n / 4)] {
            let deadline = Instant::now() + Duration::from_secs(90);
            let endpoint = loop {
                let a = agents.get(name).await.expect("agent");
                if let Some(e) = a.status.as_ref().and_then(|s| s.endpoints.first()) {
                    break e.clone();
                }
                assert!(Instant::now() < deadline, "{name} never became ready: {:?}", a.status);
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            // The agent's own token, derived from its namespace's key as the node does.
            let key = Api::<Secret>::namespaced(kube.clone(), "default")
                .get(credentials::KEY_SECRET)
                .await
                .expect("the token key");
            let key = key.data.expect("data")[credentials::KEY_KEY].0.clone();
            let own = credentials::AgentTokenKey::from_data("default", Some(&key))
                .expect("a token key")
                .token_of(&agents.get(name).await.expect("agent"));
            let direct = Client::with_options(&endpoint, options(&own, None)).expect("direct client");
            let (agent, path) = endpoint
                .strip_prefix("http://")
                .map(|rest| rest.find('/').map_or((rest, ""), |at| rest.split_at(at)))
                .expect("an http:// endpoint");
            let hop = floor_proxy(home.path(), format!("http://{agent}"), own.clone());
            // The hop does not rewrite the agent's card as the gateway does: the client keeps
            // to the hop's address.
            let floor = Client::with_options(
                &format!("{hop}{path}"),
                ClientOptions { addressing: Addressing::Base, ..options(admin.trim(), Some(ca.clone())) },
            )
            .expect("floor client");
            let gateway =
                Client::with_options(&format!("{}/agents/{name}", url.trim()), options(admin.trim(), Some(ca.clone())))
                    .expect("gateway client");
            let call = |c: &Client, i: usize| {
                let c = c.clone();
                async move {
                    let started = Instant::now();
                    c.send_message(Message::user_text(format!("m-{i}"), "echo hello"), None).await.expect("call");
                    started.elapsed()
                }
            };
            for i in 0..100 {
                call(&direct, i).await;
                call(&floor, i).await;
                call(&gateway, i).await;
            }
            let load_before = load_average();
            let (mut d, mut f, mut g) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            let round = 50;
            let mut i = 1000;
            while d.len() < n {
                for _ in 0..round {
                    d.push(call(&direct, i).await);
                    i += 1;
                }
                for _ in 0..round {
                    f.push(call(&floor, i).await);
                    i += 1;
                }
                for _ in 0..round {
                    g.push(call(&gateway, i).await);
                    i += 1;
                }
            }
            d.sort();
            f.sort();
            g.sort();
            let show = |how: &str, v: &[Duration]| {
                println!(
                    "gateway bench: {label:<4} {how:<7} n={} p50={:>7.1?} p90={:>7.1?} p99={:>7.1?}",
                    v.len(),
                    percentile(v, 0.5),
                    percentile(v, 0.9),
                    percentile(v, 0.99)
                );
            };
            show("direct", &d);
            show("floor", &f);
            show("gateway", &g);
            let p50 = |v: &[Duration]| percentile(v, 0.5);
            let ratio = |a: &[Duration], b: &[Duration]| p50(a).as_secs_f64() / p50(b).as_secs_f64();
            println!(
                "gateway bench: {label:<4} p50 gateway/direct = {:.2} (goal < 1.3), {:.1?} added; \
                 gateway/floor = {:.2}, {:.1?} added; floor/direct = {:.2}; load average {load_before} -> {}",
                ratio(&g, &d),
                p50(&g).saturating_sub(p50(&d)),
                ratio(&g, &f),
                p50(&g).saturating_sub(p50(&f)),
                ratio(&f, &d),
                load_average()
            );
        }
        for name in ["bench", "bench-py"] {
            agents.delete(name, &Default::default()).await.expect("delete the agent");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agents.list(&Default::default()).await.map(|l| l.items.is_empty()).unwrap_or(true)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();
    if let (Ok(driver), Ok(path)) =
        (a2a::node::cgroup::detect(std::path::Path::new("/sys/fs/cgroup")), a2a::node::cgroup::CgroupPath::parse(&top))
    {
        let _ = driver.remove(&path, Duration::from_secs(5));
    }
}
