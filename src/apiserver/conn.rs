//! The API server's connection layer: TLS, then HTTP/1.1 or HTTP/2 (by ALPN) on every
//! accepted socket, with a cap on open connections and the timeouts that keep slow or idle
//! clients from holding them.
//!
//! - The TLS handshake must finish within [`ConnectionLimits::tls_handshake_timeout`].
//! - A request's headers must arrive within [`ConnectionLimits::header_timeout`] of its first
//!   byte (of the handshake, for a connection's first request). Headers begun but not
//!   finished are answered `408 Request Timeout`; a connection that sent nothing is closed.
//! - A connection with no request in flight is closed after
//!   [`ConnectionLimits::idle_timeout`]. A watch is a request in flight for as long as it
//!   streams or waits for events, so no idle rule cuts it.
//! - A connection whose peer stops reading (writes blocked) is dropped after
//!   [`ConnectionLimits::write_timeout`]; HTTP/2 peers are also pinged.
//! - At most [`ConnectionLimits::max_connections`] are served. When the cap holds, a new
//!   connection takes the place of the connection idle the longest (as nginx reuses its
//!   keep-alive connections); when every one is busy, it is answered `503` with
//!   `Retry-After` and closed. The listener keeps accepting throughout, so a full cap never
//!   leaves clients waiting unanswered in the kernel's backlog.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Sockets accepted past the cap at once: being answered 503, or replacing an idle
/// connection that is being closed. Past `max_connections + SPARE` open sockets a new one is
/// closed at once, so the server never holds more descriptors than that for clients.
pub const SPARE: usize = 32;

/// The most connections served by default, whatever the descriptor limit (each idle TLS
/// connection costs tens of KiB; more is a flag away).
pub const DEFAULT_MAX_CONNECTIONS_CEILING: usize = 4096;

/// The fewest connections served by default, however low the descriptor limit.
const MIN_MAX_CONNECTIONS: usize = 16;

/// How long a connection being closed (idle, evicted, or at shutdown) may take to finish
/// what it is doing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The bounds every connection lives within.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once (see the module docs for what happens past it).
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// From a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// A connection whose writes make no progress for this long is dropped.
    pub write_timeout: Duration,
    /// HTTP/2 pings on a connection that has been quiet this long.
    pub h2_keepalive_interval: Duration,
    /// An HTTP/2 connection whose ping is not answered within this is closed.
    pub h2_keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    /// The kube-apiserver's numbers where it has them: 32 s for headers, 90 s idle, 60 s for
    /// a request body; the cap from this process's descriptor limit.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: default_max_connections(),
            tls_handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(32),
            idle_timeout: Duration::from_secs(90),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            h2_keepalive_interval: Duration::from_secs(30),
            h2_keepalive_timeout: Duration::from_secs(15),
            h2_max_concurrent_streams: 250,
        }
    }
}

/// The cap for this process's soft `RLIMIT_NOFILE` (see [`max_connections_for`]).
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    max_connections_for(limit.current.unwrap_or(u64::MAX))
}

/// Half of `nofile` descriptors go to client connections (the cap plus [`SPARE`]); the other
/// half stays for the store, the audit log, agents' logs and pipes, and the daemon's own
/// client connections. Between 16 and 4,096.
pub fn max_connections_for(nofile: u64) -> usize {
    let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
    half.saturating_sub(SPARE).clamp(MIN_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_CEILING)
}

/// Counts of the connection layer, for `/metrics`.
#[derive(Default)]
pub struct ConnectionMetrics {
    served: AtomicI64,
    closed: [AtomicU64; 5],
    refused: AtomicU64,
    dropped: AtomicU64,
}

const CLOSE_REASONS: [&str; 5] = ["evicted", "silent", "slow_headers", "idle", "write_stalled"];

impl ConnectionMetrics {
    fn closed(&self, why: &Closing) {
        let i = match why {
            Closing::Evicted => 0,
            Closing::Expired(Expiry::Silent) => 1,
            Closing::Expired(Expiry::SlowHeaders) => 2,
            Closing::Expired(Expiry::Idle) => 3,
            Closing::Expired(Expiry::WriteStalled) => 4,
            Closing::Shutdown => return,
        };
        self.closed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the connection metrics in the text exposition format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP a2a_apiserver_connections Client connections being served.\n");
        out.push_str("# TYPE a2a_apiserver_connections gauge\n");
        let _ = writeln!(out, "a2a_apiserver_connections {}", self.served.load(Ordering::Relaxed));
        out.push_str("# HELP a2a_apiserver_connections_closed_total Connections the server closed, by reason.\n");
        out.push_str("# TYPE a2a_apiserver_connections_closed_total counter\n");
        for (reason, n) in CLOSE_REASONS.iter().zip(&self.closed) {
            let _ = writeln!(
                out,
                "a2a_apiserver_connections_closed_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP a2a_apiserver_connections_refused_total Connections refused past the cap: answered 503, or closed at once.\n",
        );
        out.push_str("# TYPE a2a_apiserver_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "a2a_apiserver_connections_refused_total{{how=\"503\"}} {}",
            self.refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "a2a_apiserver_connections_refused_total{{how=\"closed\"}} {}",
            self.dropped.load(Ordering::Relaxed)
        );
    }
}

/// What one connection's task, its service and its socket share.
struct ConnState {
    born: Instant,
    /// Requests whose response is not finished (a watch counts until it ends).
    active: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// Milliseconds after `born` when `active` last fell to 0 (or the handshake ended).
    idle_since: AtomicU64,
    /// 1 + milliseconds after `born` of the first byte read with no request in flight; 0 when
    /// none has come since.
    head_started: AtomicU64,
    /// 1 + milliseconds after `born` since writes are blocked; 0 when they are not.
    write_blocked: AtomicU64,
    /// Asked to close to make room for a new connection.
    evict: AtomicBool,
    /// Wakes the connection's task to look at the above again.
    wake: Notify,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            born: Instant::now(),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            evict: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.active.load(Ordering::Acquire) == 0).then(|| self.at(self.idle_since.load(Ordering::Acquire)))
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.wake.notify_one();
    }

    fn request_finished(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake.notify_one();
        }
    }

    fn bytes_read(&self) {
        if self.active.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0 {
            self.head_started.store(self.now_ms() + 1, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn write_pending(&self, pending: bool) {
        let blocked = self.write_blocked.load(Ordering::Acquire);
        if pending && blocked == 0 {
            self.write_blocked.store(self.now_ms() + 1, Ordering::Release);
            self.wake.notify_one();
        } else if !pending && blocked != 0 {
            self.write_blocked.store(0, Ordering::Release);
        }
    }

    /// The next moment a rule may close this connection, and the rule.
    fn deadline(&self, limits: &ConnectionLimits, http2: bool) -> Option<(Instant, Expiry)> {
        let mut next: Option<(Instant, Expiry)> = None;
        let mut consider = |at: Instant, why: Expiry| {
            if next.is_none_or(|(n, _)| at < n) {
                next = Some((at, why));
            }
        };
        let blocked = self.write_blocked.load(Ordering::Acquire);
        if blocked != 0 {
            consider(self.at(blocked - 1) + limits.write_timeout, Expiry::WriteStalled);
        }
        if self.active.load(Ordering::Acquire) == 0 {
            let head = self.head_started.load(Ordering::Acquire);
            let idle = self.at(self.idle_since.load(Ordering::Acquire));
            if !http2 && head != 0 {
                consider(self.at(head - 1) + limits.header_timeout, Expiry::SlowHeaders);
            } else if self.requests.load(Ordering::Acquire) == 0 {
                consider(idle + limits.header_timeout, Expiry::Silent);
            } else {
                consider(idle + limits.idle_timeout, Expiry::Idle);
            }
        }
        next
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Sent nothing since the handshake.
    Silent,
    /// Began a request's headers and did not finish them in time.
    SlowHeaders,
    /// No request in flight for the idle timeout.
    Idle,
    /// The peer stopped reading.
    WriteStalled,
}

/// The connections open, for the cap and for choosing which idle one gives way.
#[derive(Default)]
struct Table {
    served: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Every accepted socket still open: served, being refused, or closing.
    open: AtomicUsize,
    closed: Notify,
}

enum Admission {
    Serve(Slot),
    Refuse(Slot),
    Drop,
}

/// One accepted socket's place in the [`Table`]; freed when dropped.
struct Slot {
    table: Arc<Table>,
    id: Option<u64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.table.served.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
        if self.table.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.table.closed.notify_waiters();
        }
    }
}

impl Table {
    fn admit(self: &Arc<Self>, cap: usize, state: &Arc<ConnState>) -> (Admission, bool) {
        let open = self.open.load(Ordering::Acquire);
        if open >= cap + SPARE {
            return (Admission::Drop, false);
        }
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if served.len() >= cap {
            match Self::longest_idle(&served) {
                Some(victim) => {
                    victim.evict.store(true, Ordering::Release);
                    victim.wake.notify_one();
                    evicted = true;
                }
                None => {
                    drop(served);
                    self.open.fetch_add(1, Ordering::AcqRel);
                    return (Admission::Refuse(Slot { table: self.clone(), id: None }), false);
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        served.insert(id, state.clone());
        self.open.fetch_add(1, Ordering::AcqRel);
        (Admission::Serve(Slot { table: self.clone(), id: Some(id) }), evicted)
    }

    /// The served connection with no request in flight that has been so the longest.
    fn longest_idle(served: &HashMap<u64, Arc<ConnState>>) -> Option<&Arc<ConnState>> {
        served
            .values()
            .filter(|c| !c.evict.load(Ordering::Acquire))
            .filter_map(|c| c.idle_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, c)| c)
    }

    /// Asks the connection idle the longest to close (when descriptors run out).
    fn evict_one(&self) -> bool {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        match Self::longest_idle(&served) {
            Some(victim) => {
                victim.evict.store(true, Ordering::Release);
                victim.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The TLS configurations a listener uses: one for served connections (h2 and http/1.1),
/// one for refusals (http/1.1 only, the simplest place to say 503).
#[derive(Clone)]
pub struct Acceptors {
    pub serve: TlsAcceptor,
    pub refuse: TlsAcceptor,
    /// Where a client certificate refused in the handshake is recorded.
    pub audit: Option<Arc<super::audit::Audit>>,
}

/// Accepts until `shutdown`, then closes connections gracefully (up to 5 s).
pub(crate) async fn serve(
    listener: TcpListener,
    acceptors: Acceptors,
    router: Router,
    limits: Arc<ConnectionLimits>,
    metrics: Arc<ConnectionMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let table = Arc::new(Table::default());
    let mut warned_full: Option<Instant> = None;
    let mut warn_every = |what: &str| {
        if warned_full.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            warned_full = Some(Instant::now());
            tracing::warn!(max_connections = limits.max_connections, "{what}");
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors: an idle connection makes room; the pending
                        // socket stays in the backlog until then.
                        let evicted = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) && table.evict_one();
                        tracing::warn!(error = %e, evicted, "accept failed");
                        tokio::time::sleep(Duration::from_millis(if evicted { 5 } else { 50 })).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let state = Arc::new(ConnState::new());
                match table.admit(limits.max_connections, &state) {
                    (Admission::Serve(slot), evicted) => {
                        if evicted {
                            tracing::debug!(%peer, "connection limit reached; closing the connection idle the longest");
                        }
                        let (acceptor, router, limits, shutdown, metrics) =
                            (acceptors.serve.clone(), router.clone(), limits.clone(), shutdown.clone(), metrics.clone());
                        let audit = acceptors.audit.clone();
                        metrics.served.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            serve_connection((tcp, peer), acceptor, router, &limits, &state, &metrics, audit, shutdown).await;
                            metrics.served.fetch_sub(1, Ordering::Relaxed);
                            drop(slot);
                        });
                    }
                    (Admission::Refuse(slot), _) => {
                        warn_every("connection limit reached and every connection busy; refusing new ones with 503");
                        metrics.refused.fetch_add(1, Ordering::Relaxed);
                        let (acceptor, limits) = (acceptors.refuse.clone(), limits.clone());
                        tokio::spawn(async move {
                            refuse(tcp, acceptor, &limits).await;
                            drop(slot);
                        });
                    }
                    (Admission::Drop, _) => {
                        warn_every("connection limit reached and the refusals too; closing new connections at once");
                        metrics.dropped.fetch_add(1, Ordering::Relaxed);
                        drop(tcp);
                    }
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let all_closed = async {
        loop {
            let closed = table.closed.notified();
            if table.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    };
    if tokio::time::timeout(CLOSE_GRACE, all_closed).await.is_err() {
        tracing::warn!("connections still open after 5s; closing");
    }
}

/// The `Status` a refused or timed-out client is sent.
fn status_body(code: u16, reason: &str, message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        })
        .to_string(),
    )
}

/// Past the cap with every connection busy: TLS, one `503` with `Retry-After: 1`, close.
async fn refuse(tcp: TcpStream, acceptor: TlsAcceptor, limits: &ConnectionLimits) {
    let cap = limits.max_connections;
    let answer = async move {
        let tls = acceptor.accept(tcp).await.ok()?;
        let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
            let body = status_body(
                503,
                "ServiceUnavailable",
                &format!(
                    "the server has {cap} connections open, every one busy (a2a serve --max-connections); retry later"
                ),
            );
            let response = hyper::Response::builder()
                .status(503)
                .header("content-type", "application/json")
                .header("retry-after", "1")
                .body(Full::new(body))
                .unwrap_or_default();
            Ok::<_, Infallible>(response)
        });
        hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(TokioIo::new(tls), service)
            .await
            .ok()
    };
    let _ = tokio::time::timeout(limits.tls_handshake_timeout + limits.header_timeout.min(CLOSE_GRACE), answer).await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    (tcp, peer): (TcpStream, std::net::SocketAddr),
    acceptor: TlsAcceptor,
    router: Router,
    limits: &ConnectionLimits,
    state: &Arc<ConnState>,
    metrics: &ConnectionMetrics,
    audit: Option<Arc<super::audit::Audit>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshake = async {
        loop {
            let woken = state.wake.notified();
            if state.evict.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    };
    let tls = tokio::select! {
        r = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // A client certificate the cluster's CA did not sign is worth saying.
                let refused_certificate = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                if refused_certificate {
                    tracing::warn!(%peer, error = %e, "client certificate refused in the TLS handshake");
                    // No request came: the line names the handshake and the peer's address.
                    if let Some(audit) = &audit {
                        audit.record(&super::audit::Entry {
                            user: "system:anonymous",
                            groups: &["system:unauthenticated".to_string()],
                            verb: "handshake",
                            resource: "clientcertificate",
                            namespace: "",
                            name: &peer.to_string(),
                            code: 401,
                        });
                    }
                } else {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = handshake => {
            metrics.closed(&Closing::Evicted);
            return;
        }
        _ = shutdown.changed() => return,
    };
    state.idle_since.store(state.now_ms(), Ordering::Release);
    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // A client certificate that passed the handshake was signed by the cluster's CA.
    let client_certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| super::join::PeerCertificate::from_der(leaf))
        .map(Arc::new);
    let io = TokioIo::new(Tracked { inner: tls, state: state.clone() });
    let service = Tracking {
        inner: hyper_util::service::TowerToHyperService::new(router),
        state: state.clone(),
        client_certificate,
    };
    if http2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_keepalive_interval)
            .keep_alive_timeout(limits.h2_keepalive_timeout)
            .max_concurrent_streams(limits.h2_max_concurrent_streams);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let closing = drive(conn.as_mut(), state, limits, true, &mut shutdown).await;
        if let Some(why) = closing {
            metrics.closed(&why);
            tracing::debug!(%peer, ?why, "closing HTTP/2 connection");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    } else {
        // The header timeout is ours (hyper's closes without the 408).
        let mut conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        let closing = drive(Pin::new(&mut conn), state, limits, false, &mut shutdown).await;
        if let Some(why) = &closing {
            metrics.closed(why);
        }
        match closing {
            None => {}
            Some(Closing::Expired(Expiry::SlowHeaders)) => {
                tracing::debug!(%peer, "request headers timed out; answering 408");
                let mut tls = conn.into_parts().io.into_inner().inner;
                let body = status_body(
                    408,
                    "Timeout",
                    &format!("the request's headers did not arrive within {:?}", limits.header_timeout),
                );
                let mut answer = format!(
                    "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                let _ = tokio::time::timeout(CLOSE_GRACE, async {
                    tls.write_all(&answer).await?;
                    tls.shutdown().await
                })
                .await;
            }
            Some(Closing::Expired(Expiry::WriteStalled)) => {
                tracing::debug!(%peer, "the peer stopped reading; dropping the connection");
            }
            Some(why) => {
                tracing::debug!(%peer, ?why, "closing HTTP/1.1 connection");
                Pin::new(&mut conn).graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
            }
        }
    }
}

#[derive(Debug)]
enum Closing {
    Expired(Expiry),
    Evicted,
    Shutdown,
}

/// Polls the connection until it ends (`None`) or a rule says to close it.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    state: &ConnState,
    limits: &ConnectionLimits,
    http2: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Closing>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut shutting_down = *shutdown.borrow();
    loop {
        if shutting_down {
            return Some(Closing::Shutdown);
        }
        if state.evict.load(Ordering::Acquire) {
            return Some(Closing::Evicted);
        }
        let woken = state.wake.notified();
        let deadline = state.deadline(limits, http2);
        if let Some((at, why)) = deadline
            && at <= Instant::now()
        {
            // Stalled writes drop the connection; the HTTP/2 rules close it gracefully.
            return Some(Closing::Expired(why));
        }
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                }
                return None;
            }
            () = sleep => {}
            () = woken => {}
            changed = shutdown.changed() => shutting_down = changed.is_err() || *shutdown.borrow(),
        }
    }
}

/// The TLS stream, telling the connection's state when bytes arrive and when writes block.
struct Tracked {
    inner: TlsStream<TcpStream>,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.state.write_pending(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.state.write_pending(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.state.write_pending(r.is_pending());
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router, counting each request as in flight until its response body is done.
#[derive(Clone)]
struct Tracking<S> {
    inner: S,
    state: Arc<ConnState>,
    /// Handed to every request of the connection, for authentication.
    client_certificate: Option<Arc<super::join::PeerCertificate>>,
}

/// Ends a request's time in flight when dropped (with its response body, or its future).
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Tracking<S>
where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        >,
{
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(c) = &self.client_certificate {
            req.extensions_mut().insert(c.clone());
        }
        self.state.request_started();
        let in_flight = InFlight(self.state.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody { inner: body, _in_flight: in_flight }))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_half_the_descriptors_to_the_rest_of_the_daemon() {
        assert_eq!(max_connections_for(512), 256 - SPARE);
        assert_eq!(max_connections_for(1024), 512 - SPARE);
        assert_eq!(max_connections_for(64), MIN_MAX_CONNECTIONS);
        assert_eq!(max_connections_for(1 << 20), DEFAULT_MAX_CONNECTIONS_CEILING);
        assert_eq!(max_connections_for(u64::MAX), DEFAULT_MAX_CONNECTIONS_CEILING);
    }

    #[test]
    fn an_idle_connection_is_closed_after_the_idle_timeout_and_a_busy_one_never() {
        let limits = ConnectionLimits::default();
        let c = ConnState::new();
        // Fresh: the header timeout, from the handshake.
        let (at, why) = c.deadline(&limits, false).unwrap();
        assert_eq!(why, Expiry::Silent);
        assert_eq!(at, c.born + limits.header_timeout);
        c.request_started();
        assert_eq!(c.deadline(&limits, false), None, "a request in flight (a watch) has no deadline");
        c.request_finished();
        assert_eq!(c.deadline(&limits, false).unwrap().1, Expiry::Idle);
        c.bytes_read();
        assert_eq!(c.deadline(&limits, false).unwrap().1, Expiry::SlowHeaders);
        assert_eq!(c.deadline(&limits, true).unwrap().1, Expiry::Idle, "HTTP/2 has no half-read head");
        c.write_pending(true);
        c.request_started();
        assert_eq!(c.deadline(&limits, false).unwrap().1, Expiry::WriteStalled);
        c.write_pending(false);
        assert_eq!(c.deadline(&limits, false), None);
    }

    #[test]
    fn the_connection_idle_the_longest_gives_way_and_busy_ones_never() {
        let table = Arc::new(Table::default());
        let states: Vec<_> = (0..3).map(|_| Arc::new(ConnState::new())).collect();
        let mut slots = Vec::new();
        for (i, s) in states.iter().enumerate() {
            let (a, evicted) = table.admit(3, s);
            assert!(matches!(a, Admission::Serve(_)) && !evicted);
            slots.push(a);
            // Idle since 0, 10 and 20 ms after their (non-decreasing) births: a strict order
            // without waiting on the clock.
            s.idle_since.store(10 * i as u64, Ordering::Release);
        }
        states[0].request_started();
        // Full: the idle one admitted first (states[1]) gives way.
        let (a, evicted) = table.admit(3, &Arc::new(ConnState::new()));
        assert!(matches!(a, Admission::Serve(_)) && evicted);
        assert!(states[1].evict.load(Ordering::Acquire) && !states[0].evict.load(Ordering::Acquire));
        slots.push(a);
        // Every remaining one busy: refused.
        states[2].request_started();
        let extra = Arc::new(ConnState::new());
        extra.request_started();
        let _ = table.admit(4, &extra);
        let (a, _) = table.admit(4, &Arc::new(ConnState::new()));
        assert!(matches!(a, Admission::Refuse(_)));
    }
}
