//! Slow, idle and too many clients against the API server: a thousand idle TLS connections
//! against a daemon with 512 descriptors do not lock out a real client, and every one of them
//! is closed; half-sent headers get 408; busy connections past the cap get 503; idle
//! connections close (HTTP/1.1 and HTTP/2) while a quiet watch does not.

mod common;

use std::time::{Duration, Instant};

use a2a::apiserver::conn::ConnectionLimits;
use common::tls;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

const GENEROUS: Duration = Duration::from_secs(60);

fn quick_limits(max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        max_connections,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..ConnectionLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_against_512_descriptors_leave_a_real_client_served() {
    tls::raise_nofile(4096);
    let home = tempfile::tempdir().unwrap();
    // The default cap, sized from the daemon's own limit; timeouts long enough that only the
    // cap (not a timeout) can make room for the real client while the flood is held.
    let daemon = common::Daemon::spawn_with(home.path(), Some(512), &["--header-timeout", "20s"]);
    let addr = tls::addr_of(&daemon.url);
    let connector = tls::connector(&daemon.kubeconfig, &[b"http/1.1"]);

    let mut idle = Vec::new();
    let mut refused_handshakes = 0;
    for _ in 0..20 {
        let batch = futures::future::join_all((0..50).map(|_| tls::connect(&connector, addr))).await;
        for c in batch {
            match c {
                Ok(c) => idle.push(c),
                Err(_) => refused_handshakes += 1,
            }
        }
    }
    assert_eq!(idle.len() + refused_handshakes, 1000);
    // The default cap for 512 descriptors is 224 (half, less 32). Handshakes that arrive while
    // more than 32 sockets wait past the cap are closed at once, so how many of the flood
    // finish TLS depends on the machine's speed; more than the cap must have, so that the
    // flood really held every slot.
    assert!(idle.len() > 224, "more idle connections than the cap finish TLS; {refused_handshakes} did not");

    // A real client, on a new connection of its own, while the flood is held.
    let client = common::client_from(&daemon.kubeconfig, None).await;
    let started = Instant::now();
    let list = tokio::time::timeout(GENEROUS, Api::<Namespace>::all(client.clone()).list(&ListParams::default()))
        .await
        .expect("the real client is answered")
        .expect("and served");
    eprintln!("real client served in {:?} with {} idle connections held", started.elapsed(), idle.len());
    assert!(list.items.iter().any(|n| n.metadata.name.as_deref() == Some("default")));
    let created = Api::<Namespace>::all(client)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "served"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("served"));

    // The server closes every idle connection: the oldest to make room, the rest after the
    // header timeout. Observed as the end of the stream on each.
    let closes = futures::future::join_all(idle.iter_mut().map(|c| async move {
        tokio::time::timeout(GENEROUS, tls::until_closed(c)).await.map(|bytes| bytes.is_empty())
    }))
    .await;
    let closed_silently = closes.iter().filter(|c| matches!(c, Ok(true))).count();
    assert_eq!(closed_silently, idle.len(), "every idle connection is closed, with nothing sent on it");
    let mut daemon = daemon;
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon is still running");
}

#[tokio::test]
async fn half_sent_headers_get_408_and_silent_connections_are_closed() {
    let t = common::start_with(|c| c.connections(quick_limits(64))).await;
    let connector = tls::connector(t.server.kubeconfig(), &[b"http/1.1"]);
    let addr = t.server.addr();

    let mut slow = tls::connect(&connector, addr).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(GENEROUS, tls::exchange(&mut slow, "GET /version HTTP/1.1\r\nHost: x\r\n"))
        .await
        .expect("closed");
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(answer.contains(r#""code":408"#) && answer.contains(r#""kind":"Status""#), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    let mut silent = tls::connect(&connector, addr).await.unwrap();
    let started = Instant::now();
    let sent = tokio::time::timeout(GENEROUS, tls::until_closed(&mut silent)).await.expect("closed");
    assert!(sent.is_empty(), "a connection that sent nothing is closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // After a complete exchange, a kept-alive connection closes when idle.
    let mut kept = tls::connect(&connector, addr).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(GENEROUS, tls::exchange(&mut kept, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("closed when idle");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("ok"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
}

#[tokio::test]
async fn past_the_cap_with_every_connection_busy_new_ones_get_503_and_idle_ones_give_way() {
    let t = common::start_with(|c| {
        c.connections(ConnectionLimits { idle_timeout: GENEROUS, header_timeout: GENEROUS, ..quick_limits(2) })
    })
    .await;
    let token = std::fs::read_to_string(t.home.path().join("token")).unwrap();
    let connector = tls::connector(t.server.kubeconfig(), &[b"http/1.1"]);
    let addr = t.server.addr();
    let watch =
        format!("GET /api/v1/namespaces?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");

    // One idle connection and one watch: a newcomer takes the idle one's place.
    let mut idle = tls::connect(&connector, addr).await.unwrap();
    let mut watch_a = tls::connect(&connector, addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut watch_a, watch.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut watch_a, &mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut watch_b = tls::connect(&connector, addr).await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), tls::until_closed(&mut idle))
        .await
        .expect("the idle one gives way, long before its timeouts");
    assert!(gone.is_empty());
    tokio::io::AsyncWriteExt::write_all(&mut watch_b, watch.as_bytes()).await.unwrap();
    tokio::io::AsyncReadExt::read_exact(&mut watch_b, &mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // Both busy: the next connection is answered 503 with Retry-After, and closed.
    let mut third = tls::connect(&connector, addr).await.unwrap();
    let answer = tokio::time::timeout(GENEROUS, tls::exchange(&mut third, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("--max-connections") && answer.contains(r#""code":503"#), "{answer}");

    // A watch ending frees its place.
    drop(watch_a);
    let client = common::client_from(t.server.kubeconfig(), None).await;
    let deadline = Instant::now() + GENEROUS;
    loop {
        match Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await {
            Ok(list) => break assert!(!list.items.is_empty()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (code, metrics) = common::raw(&client, axum::http::Method::GET, "/metrics", "text/plain", "").await;
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value(r#"a2a_apiserver_connections_refused_total{how="503"}"#) >= 1);
    assert!(value(r#"a2a_apiserver_connections_closed_total{reason="evicted"}"#) >= 1);
    assert!(value("a2a_apiserver_connections ") >= 1);
}

#[tokio::test]
async fn a_watch_waiting_for_events_outlives_the_idle_and_header_timeouts() {
    let t = common::start_with(|c| c.connections(quick_limits(64))).await;
    let namespaces = Api::<Namespace>::all(common::client_from(t.server.kubeconfig(), None).await);
    let list = namespaces.list(&ListParams::default()).await.unwrap();
    let version = list.metadata.resource_version.unwrap();
    let mut events = namespaces.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    // Quiet for longer than both timeouts together.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let other = Api::<Namespace>::all(common::client_from(t.server.kubeconfig(), None).await);
    other
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "late"}})).unwrap(),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(GENEROUS, events.next()).await.expect("an event").expect("the stream is open");
    match event.unwrap() {
        WatchEvent::Added(ns) => assert_eq!(ns.metadata.name.as_deref(), Some("late")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let t = common::start_with(|c| c.connections(quick_limits(64))).await;
    let connector = tls::connector(t.server.kubeconfig(), &[b"h2"]);
    let conn = tls::connect(&connector, t.server.addr()).await.unwrap();
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(conn))
            .await
            .unwrap();
    let started = Instant::now();
    let driver = tokio::spawn(connection);
    let req = hyper::Request::get("/healthz").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let ended = tokio::time::timeout(GENEROUS, driver).await.expect("the server closes the idle connection");
    assert!(ended.unwrap().is_ok(), "closed gracefully (GOAWAY), not reset");
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
}
