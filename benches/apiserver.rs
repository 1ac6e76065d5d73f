//! The API server's speed, end to end over HTTPS with kube-rs as the client, beside the
//! disk's own fsync latency measured in the same run on the same disk (under target/).
//!
//! The server runs on a multi-thread runtime of its own, as under `a2a serve`; the clients on
//! a current-thread runtime of their own, as the `a2a` CLI (or any client in its own process).
//! The previous layout, the client's requests driven from outside the server's runtime while
//! its connection tasks run on the server's worker threads, is measured too (`shared runtime`
//! lines): every request then hops between three threads.
//!
//! Criterion measures: single-client durable create, get, and list of 10,000 agents.
//! Printed once per run (as `report:` lines): fsync p50, store-only write p50, create p50
//! (single client; with kube-rs, and with the TLS floor's bare hyper client, which leaves
//! the server's part), 16-client creates/s (group commit), get p50, list of 10,000 p50 (the
//! server's bytes as received, and decoded into typed objects by kube-rs), a paged list of
//! 10,000 in pages of 500 (as kubectl asks), watch events/s.
//!
//! Beside them, the floors no server can go under on this machine, measured in the same run:
//! a bare TCP round trip between the same two runtimes (no TLS, HTTP or JSON), with and
//! without the log's write + fdatasync on the server's side; a bare HTTPS request (the API
//! server's own TLS configuration and certificate, hyper's HTTP/1.1, an Agent-sized body
//! echoed) with the same write + fdatasync, the floor of a durable create over HTTPS; and
//! what waking a thread costs on one CPU and across two.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::apiserver::{Server, ServerConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

fn agent(name: &str) -> Agent {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"bench": "yes"}},
        "spec": {"command": ["sleep", "100"], "skills": ["echo"], "replicas": 1},
    }))
    .unwrap()
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A client of the bare TCP server the floors are measured against (see `bench`).
struct Floor(tokio::net::TcpStream);

impl Floor {
    async fn connect(addr: std::net::SocketAddr) -> Floor {
        let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.set_nodelay(true).unwrap();
        Floor(conn)
    }

    /// One round trip of 64 bytes; `durable`: the server fdatasyncs a block before answering.
    async fn request(&mut self, durable: bool) -> Duration {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut request = [u8::from(durable); 64];
        let t = Instant::now();
        self.0.write_all(&request).await.unwrap();
        self.0.read_exact(&mut request).await.unwrap();
        t.elapsed()
    }
}

/// A client of the bare HTTPS server of the TLS floor (see `https_floor`): one HTTP/1.1
/// connection over TLS, kept open as kube-rs keeps its own.
struct HttpsFloor(hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>);

impl HttpsFloor {
    async fn connect(addr: std::net::SocketAddr, ca_pem: &str) -> HttpsFloor {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        HttpsFloor(sender)
    }

    /// One POST of `body`, read to its end; `durable`: the server fdatasyncs a block first.
    async fn request(&mut self, durable: bool, body: &bytes::Bytes) -> Duration {
        self.post(if durable { "/durable" } else { "/" }, None, body.clone()).await.0
    }

    /// One POST of `body` to `path` (with a bearer token if given), its answer read to the
    /// end: the time and the status.
    async fn post(&mut self, path: &str, token: Option<&str>, body: bytes::Bytes) -> (Duration, u16) {
        use http_body_util::BodyExt as _;
        let mut req = hyper::Request::post(path).header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(http_body_util::Full::new(body)).unwrap();
        let t = Instant::now();
        let resp = self.0.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        (t.elapsed(), status)
    }
}

/// The bare HTTPS server of the TLS floor: the API server's own TLS (its serving certificate
/// and rustls configuration, HTTP/1.1 as kube-rs speaks it) and hyper, with a handler that
/// only echoes the body, after writing 4 KiB in place + fdatasync for `/durable`, as the
/// durable floor's TCP server does. No routing, authentication, JSON, validation or store.
fn https_floor(
    rt: &tokio::runtime::Runtime,
    tls: Arc<rustls::ServerConfig>,
    file: Arc<std::fs::File>,
) -> std::net::SocketAddr {
    use std::os::unix::fs::FileExt as _;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    rt.spawn(async move {
        let writes = Arc::new(AtomicU64::new(0));
        while let Ok((conn, _)) = listener.accept().await {
            conn.set_nodelay(true).unwrap();
            let (acceptor, file, writes) = (acceptor.clone(), file.clone(), writes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(conn).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (file, writes) = (file.clone(), writes.clone());
                    async move {
                        use http_body_util::BodyExt as _;
                        let durable = req.uri().path() == "/durable";
                        let body = req.into_body().collect().await?.to_bytes();
                        if durable {
                            let i = writes.fetch_add(1, Ordering::Relaxed);
                            tokio::task::block_in_place(|| {
                                file.write_all_at(&[1u8; 4096], (i % 64) * 4096).unwrap();
                                file.sync_data().unwrap();
                            });
                        }
                        let resp = hyper::Response::builder()
                            .status(if durable { 201 } else { 200 })
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(body))
                            .unwrap();
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// The round trip of one byte between two threads over a pair of sockets, the second thread
/// pinned to `peer_cpu` and this one to CPU 0: what waking a thread costs on this machine,
/// on the same CPU and across CPUs (the client and server of a request sit on different CPUs
/// whenever the other one is idle).
fn wake_round_trip(peer_cpu: usize) -> std::io::Result<Duration> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    fn pin(cpu: usize) -> std::io::Result<()> {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        Ok(rustix::thread::sched_setaffinity(None, &set)?)
    }
    let (mut here, mut there) = UnixStream::pair()?;
    let peer = std::thread::spawn(move || -> std::io::Result<()> {
        pin(peer_cpu)?;
        let mut b = [0u8; 1];
        while there.read(&mut b)? == 1 {
            there.write_all(&b)?;
        }
        Ok(())
    });
    let mut v = Vec::with_capacity(5000);
    let result = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            pin(0)?;
            let mut b = [0u8; 1];
            for _ in 0..5000 {
                let t = Instant::now();
                here.write_all(&b)?;
                here.read_exact(&mut b)?;
                v.push(t.elapsed());
            }
            here.shutdown(std::net::Shutdown::Both)
        })
        .join()
        .expect("the pinned thread")
    });
    peer.join().expect("the peer thread")?;
    result.map(|()| p50(v))
}

fn bench(c: &mut Criterion) {
    // The server's runtime, and the clients'.
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A2A_BENCH_DIR=/dev/shm takes the disk out (fsync is free there): what is left is the
    // server's and client's own overhead, for profiling.
    let base = std::env::var_os("A2A_BENCH_DIR").unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    let dir = tempfile::tempdir_in(base).unwrap();
    // The ratios are against the in-place kind, the one the store's log pays.
    let fsync = p50(a2a::apiserver::store::measure_fsync(dir.path(), 200, true).unwrap());
    let fsync_append = p50(a2a::apiserver::store::measure_fsync(dir.path(), 200, false).unwrap());
    // The store alone (no HTTP, TLS, JSON decoding or validation), in its own file.
    let store_write = server_rt.block_on(async {
        use a2a::apiserver::store::{ObjectKey, Precondition, Store, StoreConfig, Write};
        let store =
            Store::open(&dir.path().join("store-only.redb"), StoreConfig::default(), Default::default()).unwrap();
        let mut v = Vec::new();
        for i in 0..200 {
            let object = serde_json::to_value(agent(&format!("s{i}"))).unwrap();
            let t = Instant::now();
            store
                .write(Write::Put {
                    key: ObjectKey::new("a2a.dev/agents", "default", format!("s{i}")),
                    object,
                    precondition: Precondition::Absent,
                })
                .await
                .unwrap();
            v.push(t.elapsed());
        }
        p50(v)
    });
    let server = server_rt.block_on(Server::start(ServerConfig::new(dir.path()).port(0))).unwrap();
    let connect = |kubeconfig: &std::path::Path| {
        let kc = Kubeconfig::read_from(kubeconfig).unwrap();
        async move {
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
            kube::Client::try_from(config).unwrap()
        }
    };
    let client = rt.block_on(connect(server.kubeconfig()));
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let counter = Arc::new(AtomicU64::new(0));
    let next = {
        let counter = counter.clone();
        move || format!("a{}", counter.fetch_add(1, Ordering::Relaxed))
    };

    // The floors of any request served over the network here: a bare TCP request (no TLS,
    // HTTP or JSON) to a task on a runtime like the API server's, from a client on a runtime
    // of its own, as kube-rs's below. A request whose first byte is 1 is a durable write: the
    // server writes 4 KiB in place and fdatasyncs it as the store's commit does (inside
    // `block_in_place`), then answers.
    let floor_addr = {
        use std::os::unix::fs::FileExt as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let file = std::fs::File::create(dir.path().join(".floor")).unwrap();
        for i in 0..64 {
            file.write_all_at(&[0u8; 4096], i * 4096).unwrap();
        }
        file.sync_all().unwrap();
        let file = Arc::new(file);
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        server_rt.spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let file = file.clone();
                tokio::spawn(async move {
                    conn.set_nodelay(true).unwrap();
                    let mut request = [0u8; 64];
                    let mut i = 0u64;
                    while conn.read_exact(&mut request).await.is_ok() {
                        i += 1;
                        if request[0] == 1 {
                            tokio::task::block_in_place(|| {
                                file.write_all_at(&[1u8; 4096], (i % 64) * 4096).unwrap();
                                file.sync_data().unwrap();
                            });
                        }
                        conn.write_all(&request).await.unwrap();
                    }
                });
            }
        });
        addr
    };
    // The TLS floor: the durable floor above, but an HTTPS request (HTTP/1.1 over the API
    // server's own TLS configuration and certificate) with a body of an Agent's size.
    let https_addr = {
        let policy = a2a::apiserver::pki::CertPolicy::default();
        let identity = a2a::apiserver::pki::Identity::load_or_create(dir.path(), &policy).unwrap();
        let serving = identity.serving_cert(dir.path(), &policy).unwrap();
        let (_, http1_only) = a2a::apiserver::pki::Identity::server_configs(&serving).unwrap();
        // Written with zeros first, as the TCP floor's file and the store's log are: an
        // overwrite then flushes one data block, not a new extent too.
        let file = std::fs::File::create(dir.path().join(".floor-https")).unwrap();
        {
            use std::os::unix::fs::FileExt as _;
            for i in 0..64 {
                file.write_all_at(&[0u8; 4096], i * 4096).unwrap();
            }
        }
        file.sync_all().unwrap();
        (https_floor(&server_rt, http1_only, Arc::new(file)), identity.ca_pem, identity.token)
    };
    let agent_body = bytes::Bytes::from(serde_json::to_vec(&agent("floor-body")).unwrap());
    let agents_path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents";
    // Single-client durable creates, each after one fsync probe and one floor request: this
    // disk's fsync moves between 0.1 and 4 ms within a run, so the ratios are taken against
    // fsyncs and floors interleaved with the creates rather than measured before them. Each
    // round also makes one create with the TLS floor's own client (hyper on one kept
    // HTTP/1.1 connection, the body serialised before the clock starts, the answer read as
    // bytes): the server's part of a create, without kube-rs's serialisation and decode.
    #[allow(clippy::type_complexity)]
    let (creates, raw_creates, fsyncs, floors, tls_floors): (
        Vec<Duration>,
        Vec<Duration>,
        Vec<Duration>,
        Vec<Duration>,
        Vec<Duration>,
    ) = rt.block_on(async {
        use std::os::unix::fs::FileExt as _;
        let probe_path = dir.path().join(".fsync-interleaved");
        let probe = std::fs::File::create(&probe_path).unwrap();
        let block = [0u8; 4096];
        for i in 0..200 {
            probe.write_all_at(&block, i * 4096).unwrap();
        }
        probe.sync_all().unwrap();
        let mut floor = Floor::connect(floor_addr).await;
        let mut https = HttpsFloor::connect(https_addr.0, &https_addr.1).await;
        let mut raw = HttpsFloor::connect(server.addr(), &https_addr.1).await;
        let (mut creates, mut raw_creates, mut fsyncs, mut floors, mut tls_floors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // A2A_BENCH_ROUNDS: more rounds, for a steadier p50 in a noisy hour.
        let rounds: u64 = std::env::var("A2A_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        for i in 0..rounds {
            let t = Instant::now();
            probe.write_all_at(&block, (i % 200) * 4096).unwrap();
            probe.sync_data().unwrap();
            fsyncs.push(t.elapsed());
            let t = Instant::now();
            api.create(&PostParams::default(), &agent(&next())).await.unwrap();
            creates.push(t.elapsed());
            let body = bytes::Bytes::from(serde_json::to_vec(&agent(&next())).unwrap());
            let (took, status) = raw.post(agents_path, Some(&https_addr.2), body).await;
            assert_eq!(status, 201, "a create with the bare HTTPS client");
            raw_creates.push(took);
            floors.push(floor.request(true).await);
            tls_floors.push(https.request(true, &agent_body).await);
        }
        std::fs::remove_file(&probe_path).unwrap();
        (creates, raw_creates, fsyncs, floors, tls_floors)
    });
    let create_p50 = p50(creates);
    let raw_create_p50 = p50(raw_creates);
    let fsync_interleaved = p50(fsyncs);
    let floor = p50(floors);
    let tls_floor = p50(tls_floors);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Pinning fails where CPUs 0 and 1 are not both allowed (a cpuset): no line then.
    let wakes = (cpus > 1).then(|| Some((wake_round_trip(0).ok()?, wake_round_trip(1).ok()?))).flatten();

    println!("report: disk fsync p50 (4 KiB overwritten in place + fdatasync, as the log): {fsync:?}");
    println!("report: disk fsync p50 (4 KiB appended + fdatasync, the previous probe): {fsync_append:?}");
    println!(
        "report: store write p50 (log append + fdatasync, no HTTP): {store_write:?} ({:.2}x fsync)",
        store_write.as_secs_f64() / fsync.as_secs_f64()
    );
    println!(
        "report: durable create p50, single client over HTTPS: {create_p50:?} ({:.2}x the fsync p50 of \
         {fsync_interleaved:?} interleaved with the creates)",
        create_p50.as_secs_f64() / fsync_interleaved.as_secs_f64()
    );
    println!(
        "report: floor p50, a bare TCP request whose server writes 4 KiB in place + fdatasync: {floor:?} \
         ({:.2}x the fsync; the create is {:.2}x this floor)",
        floor.as_secs_f64() / fsync_interleaved.as_secs_f64(),
        create_p50.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "report: TLS floor p50, a bare HTTPS request (the API server's TLS, hyper, HTTP/1.1, an Agent-sized \
         body echoed) whose server writes 4 KiB in place + fdatasync: {tls_floor:?} (the create is {:.2}x this floor)",
        create_p50.as_secs_f64() / tls_floor.as_secs_f64()
    );
    println!(
        "report: durable create p50 with the TLS floor's client (hyper, the body serialised before, the answer \
         read as bytes, no kube-rs): {raw_create_p50:?} ({:.2}x the TLS floor; kube-rs adds {:?})",
        raw_create_p50.as_secs_f64() / tls_floor.as_secs_f64(),
        create_p50.saturating_sub(raw_create_p50)
    );
    if let Some((same, across)) = wakes {
        println!("report: thread wake-up round trip p50: {same:?} on one CPU, {across:?} across two");
    }

    // A2A_BENCH_ONLY=create: the single-client create and its floors, nothing more (for
    // profiling it, and for runs alternated between two builds).
    if std::env::var("A2A_BENCH_ONLY").is_ok_and(|v| v == "create") {
        server_rt.block_on(server.shutdown());
        return;
    }

    // 16 concurrent clients (one connection each).
    let concurrent = rt.block_on(async {
        let per = 400;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let api: Api<Agent> = Api::namespaced(connect(server.kubeconfig()).await, "default");
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    api.create(&PostParams::default(), &agent(&format!("c{w}-{i}"))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (16 * per) as f64 / start.elapsed().as_secs_f64()
    });

    // Top up to 10,000 agents, remembering where the watch replay starts.
    let watch_from = server.store().resource_version();
    rt.block_on(async {
        let have = api.list(&ListParams::default()).await.unwrap().items.len();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let api = api.clone();
            let n = (10_000 - have).div_ceil(16);
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    let _ = api.create(&PostParams::default(), &agent(&format!("f{w}-{i}"))).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let total = rt.block_on(api.list(&ListParams::default())).unwrap().items.len();

    let (gets, get_floors): (Vec<Duration>, Vec<Duration>) = rt.block_on(async {
        let mut floor = Floor::connect(floor_addr).await;
        let (mut v, mut floors) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let t = Instant::now();
            api.get("a0").await.unwrap();
            v.push(t.elapsed());
            floors.push(floor.request(false).await);
        }
        (v, floors)
    });
    let raw_list = |client: kube::Client| async move {
        let req = http::Request::get("/apis/a2a.dev/v1alpha1/namespaces/default/agents").body(Vec::new()).unwrap();
        let body = client.request_text(req).await.unwrap();
        body.len()
    };
    let (raw_lists, raw_bytes): (Vec<Duration>, usize) = rt.block_on(async {
        let mut v = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = Instant::now();
            bytes = raw_list(client.clone()).await;
            v.push(t.elapsed());
        }
        (v, bytes)
    });
    let paged: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let mut n = 0;
            let mut lp = ListParams::default().limit(500);
            loop {
                let page = api.list(&lp).await.unwrap();
                n += page.items.len();
                match page.metadata.continue_ {
                    Some(token) => lp = lp.continue_token(&token),
                    None => break,
                }
            }
            assert!(n >= 10_000);
            v.push(t.elapsed());
        }
        v
    });
    let lists: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let l = api.list(&ListParams::default()).await.unwrap();
            assert!(l.items.len() >= 10_000);
            v.push(t.elapsed());
        }
        v
    });
    // Watch: replay every event since `watch_from` from the history.
    let (events, watch_rate) = rt.block_on(async {
        let start = Instant::now();
        let mut s = api.watch(&WatchParams::default(), &watch_from.to_string()).await.unwrap().boxed();
        let want = server.store().resource_version() - watch_from;
        let mut n = 0u64;
        while n < want {
            match s.try_next().await.unwrap() {
                Some(WatchEvent::Added(_)) => n += 1,
                Some(_) => {}
                None => break,
            }
        }
        (n, n as f64 / start.elapsed().as_secs_f64())
    });
    // The previous layout: a client made on the server's runtime, driven from this thread.
    let (shared_gets, shared_creates, shared_lists) = {
        let api: Api<Agent> = Api::namespaced(server_rt.block_on(connect(server.kubeconfig())), "default");
        server_rt.block_on(async {
            let (mut gets, mut creates, mut lists) = (Vec::new(), Vec::new(), Vec::new());
            // The typed list as the controllers' informers relist: the client on the
            // multi-thread runtime of `a2a serve`, receiving and decoding on its workers.
            for _ in 0..7 {
                let t = Instant::now();
                api.list(&ListParams::default()).await.unwrap();
                lists.push(t.elapsed());
            }
            for _ in 0..2000 {
                let t = Instant::now();
                api.get("a0").await.unwrap();
                gets.push(t.elapsed());
            }
            for _ in 0..200 {
                let t = Instant::now();
                api.create(&PostParams::default(), &agent(&next())).await.unwrap();
                creates.push(t.elapsed());
            }
            (p50(gets), p50(creates), p50(lists))
        })
    };
    println!("report: durable creates/s, 16 concurrent clients: {concurrent:.0}");
    let (get_p50, get_floor) = (p50(gets), p50(get_floors));
    println!(
        "report: get p50: {get_p50:?} ({:.2}x the floor, a bare TCP round trip interleaved with the gets: {get_floor:?})",
        get_p50.as_secs_f64() / get_floor.as_secs_f64()
    );
    println!(
        "report: shared runtime: get p50 {shared_gets:?}, durable create p50 {shared_creates:?}, \
         typed list p50 {shared_lists:?}"
    );
    println!(
        "report: list of {total} agents p50, raw JSON as received ({:.1} MB): {:?}",
        raw_bytes as f64 / 1e6,
        p50(raw_lists)
    );
    println!("report: list of {total} agents p50, decoded into typed objects by kube-rs: {:?}", p50(lists));
    println!("report: list of {total} agents in pages of 500 (typed), p50: {:?}", p50(paged));
    println!("report: watch replay of {events} events: {watch_rate:.0} events/s");

    let mut g = c.benchmark_group("apiserver");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("create (durable, single client)", |b| {
        b.to_async(&rt).iter(|| {
            let api = api.clone();
            let name = next();
            async move { api.create(&PostParams::default(), &agent(&name)).await.unwrap() }
        })
    });
    g.bench_function("get", |b| {
        b.to_async(&rt).iter(|| {
            let api = api.clone();
            async move { api.get("a0").await.unwrap() }
        })
    });
    g.sample_size(10);
    g.bench_function("list 10,000 agents (raw JSON)", |b| b.to_async(&rt).iter(|| raw_list(client.clone())));
    g.bench_function("list 10,000 agents", |b| {
        b.to_async(&rt).iter(|| {
            let api = api.clone();
            async move { api.list(&ListParams::default()).await.unwrap().items.len() }
        })
    });
    g.finish();
    server_rt.block_on(server.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
