//! The API server's Prometheus metrics, kept in plain atomics and maps and written in the
//! Prometheus text exposition format by [`Metrics::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::Buckets;

/// Upper bounds of the request and commit latency buckets, in seconds.
#[derive(Clone, Debug)]
struct Latency;

impl Buckets for Latency {
    const BOUNDS: &'static [f64] =
        &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
}

type Histogram = crate::metrics::Histogram<Latency>;

#[derive(Default)]
struct Inner {
    /// (verb, resource, code) -> count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// verb -> latency.
    latency: BTreeMap<String, Histogram>,
    commit: Histogram,
    batch_writes: u64,
    commits: u64,
}

/// Counters, gauges and histograms of one server.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    watchers: AtomicI64,
    audit_lines_lost: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.requests.entry((verb.to_string(), resource.to_string(), code)).or_default() += 1;
        inner.latency.entry(verb.to_string()).or_default().observe(elapsed.as_secs_f64());
    }

    /// One redb transaction that carried `writes` writes.
    pub fn observe_commit(&self, elapsed: Duration, writes: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.commit.observe(elapsed.as_secs_f64());
        inner.commits += 1;
        inner.batch_writes += writes as u64;
    }

    pub fn watcher_started(&self) {
        self.watchers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn watcher_stopped(&self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn watchers(&self) -> i64 {
        self.watchers.load(Ordering::Relaxed)
    }

    /// One audit line could not be written; returns how many have been lost so far.
    pub fn audit_line_lost(&self) -> u64 {
        self.audit_lines_lost.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn audit_lines_lost(&self) -> u64 {
        self.audit_lines_lost.load(Ordering::Relaxed)
    }

    /// The text exposition format; `objects` is (resource, count) from the store, `history`
    /// the events and bytes in its watch history.
    pub fn render(&self, objects: &[(String, usize)], history: (usize, usize)) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP a2a_apiserver_requests_total API requests by verb, resource and HTTP status code.\n");
        out.push_str("# TYPE a2a_apiserver_requests_total counter\n");
        for ((verb, resource, code), n) in &inner.requests {
            let _ = writeln!(
                out,
                "a2a_apiserver_requests_total{{verb=\"{}\",resource=\"{}\",code=\"{code}\"}} {n}",
                escape(verb),
                escape(resource)
            );
        }
        out.push_str("# HELP a2a_apiserver_request_duration_seconds API request latency by verb.\n");
        out.push_str("# TYPE a2a_apiserver_request_duration_seconds histogram\n");
        for (verb, h) in &inner.latency {
            h.render(&mut out, "a2a_apiserver_request_duration_seconds", &format!("verb=\"{}\"", escape(verb)));
        }
        out.push_str(
            "# HELP a2a_store_commit_duration_seconds Latency of one durable store transaction (one fsync).\n",
        );
        out.push_str("# TYPE a2a_store_commit_duration_seconds histogram\n");
        inner.commit.render(&mut out, "a2a_store_commit_duration_seconds", "");
        out.push_str("# HELP a2a_store_committed_writes_total Writes committed to the store (several per transaction under group commit).\n");
        out.push_str("# TYPE a2a_store_committed_writes_total counter\n");
        let _ = writeln!(out, "a2a_store_committed_writes_total {}", inner.batch_writes);
        out.push_str("# HELP a2a_store_objects Stored objects by resource.\n");
        out.push_str("# TYPE a2a_store_objects gauge\n");
        for (resource, n) in objects {
            let _ = writeln!(out, "a2a_store_objects{{resource=\"{}\"}} {n}", escape(resource));
        }
        out.push_str("# HELP a2a_store_watch_history_events Events kept for resuming watches and paged lists.\n");
        out.push_str("# TYPE a2a_store_watch_history_events gauge\n");
        let _ = writeln!(out, "a2a_store_watch_history_events {}", history.0);
        out.push_str("# HELP a2a_store_watch_history_bytes Bytes of object versions held by the watch history.\n");
        out.push_str("# TYPE a2a_store_watch_history_bytes gauge\n");
        let _ = writeln!(out, "a2a_store_watch_history_bytes {}", history.1);
        out.push_str("# HELP a2a_apiserver_watchers Open watch streams.\n");
        out.push_str("# TYPE a2a_apiserver_watchers gauge\n");
        let _ = writeln!(out, "a2a_apiserver_watchers {}", self.watchers());
        out.push_str("# HELP a2a_audit_lines_lost_total Audit lines of requests that could not be written (a full disk, an I/O error).\n");
        out.push_str("# TYPE a2a_audit_lines_lost_total counter\n");
        let _ = writeln!(out, "a2a_audit_lines_lost_total {}", self.audit_lines_lost());
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
