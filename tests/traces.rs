//! Traces end to end: `a2a run` with a workflow of a few tasks (one retried) on an agent of
//! the official A2A Python SDK that reports the trace context it received, exporting to an
//! OTLP/HTTP receiver started here and written on the OpenTelemetry protocol crate's
//! messages. And, with the SDK disabled, that nothing reaches the receiver.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use a2a::traces::{SpanContext, hex};
use axum::body::Bytes;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// What the receiver was sent.
#[derive(Default)]
struct Received {
    /// Every POST, answered or refused.
    requests: usize,
    /// The spans of the requests it accepted, with their resource's `service.name`.
    spans: Vec<(String, Span)>,
    /// Requests that were not an ExportTraceServiceRequest.
    undecodable: usize,
}

/// An OTLP/HTTP receiver on a free port. It refuses its first request with a 503, as a
/// collector that is starting up does, so the exporter's retry is exercised.
async fn receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut r = state.lock().unwrap();
                r.requests += 1;
                if r.requests == 1 {
                    return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                }
                let protobuf = headers.get("content-type").is_some_and(|v| v == "application/x-protobuf");
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) if protobuf => {
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .as_ref()
                                .and_then(|res| text(&res.attributes, "service.name"))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                r.spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                            }
                        }
                        (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
                    }
                    _ => {
                        r.undecodable += 1;
                        (StatusCode::BAD_REQUEST, Vec::new())
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The manifest: the Python trace agent and a workflow of four attempts (`flaky` fails once).
fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let python = support::python();
    let script = support::root().join("tests/python/trace_agent.py");
    let file = dir.join("traced.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: tracer }}\n\
             spec: {{ command: [{python:?}, {script:?}], user: root, writablePaths: [{checkout:?}] }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: traced }}\nspec:\n\
             \x20 retry: {{ limit: 2, backoff: {{ initial: 100ms }} }}\n  tasks:\n\
             \x20   - {{ name: first, agent: tracer, message: one }}\n\
             \x20   - {{ name: second, agent: tracer, dependsOn: [first], message: flaky two }}\n\
             \x20   - {{ name: third, skill: trace, dependsOn: [first], message: three }}\n",
            python = python.display().to_string(),
            script = script.display().to_string(),
            // The agent's /tmp is private: a checkout under /tmp comes into its view this way.
            checkout = env!("CARGO_MANIFEST_DIR"),
        ),
    )
    .expect("write");
    file
}

async fn run(home: &std::path::Path, file: &std::path::Path, env: Vec<(&'static str, String)>) -> Output {
    let (home, file) = (home.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let top =
            format!("a2a-test-traces-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_a2a"));
        // Bounded: an agent that cannot start fails the run, not the suite's clock.
        cmd.args(["run", "-f", file.to_str().expect("utf-8"), "--output", "--timeout", "120s", "--cgroup-top", &top])
            .env("A2A_HOME", &home)
            .env_remove("A2A_KUBECONFIG")
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        for k in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"] {
            cmd.env_remove(k);
        }
        cmd.envs(env).output().expect("run a2a")
    })
    .await
    .expect("join")
}

/// `task -> (header traceparent, metadata traceparent)` from the outputs `--output` prints.
fn reported(stdout: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut task = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("--- ") {
            task = Some(name.to_owned());
        } else if let (Some(t), Some(rest)) = (&task, line.strip_prefix("header=")) {
            let (header, rest) = rest.split_once(" metadata=").expect("metadata");
            let (metadata, _) = rest.split_once(" text=").expect("text");
            out.insert(t.clone(), (header.to_owned(), metadata.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_is_one_trace_with_a_span_per_attempt_that_the_agent_joins() {
    let (addr, got) = receiver().await;
    let home = tempfile::tempdir().expect("tempdir");
    let file = manifest(home.path());
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_SERVICE_NAME", "a2a-under-test".to_owned()),
    ];
    let out = run(home.path(), &file, env).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // What the agent received: the same context in the header and in the metadata.
    let seen = reported(&stdout);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["first", "second", "third"], "{stdout}");
    for (task, (header, metadata)) in &seen {
        assert_eq!(header, metadata, "{task}: header and metadata carry the same context");
        assert!(SpanContext::parse(header).is_some_and(|c| c.sampled), "{task}: {header:?}");
    }

    // The spans came in after a refused first export (flushed when the run stopped).
    let r = got.lock().unwrap();
    assert!(r.requests >= 2, "the 503 was retried: {} requests", r.requests);
    assert_eq!(r.undecodable, 0);
    let spans: Vec<&Span> = r.spans.iter().map(|(_, s)| s).collect();
    assert!(r.spans.iter().all(|(service, _)| service == "a2a-under-test"));
    let traces: std::collections::BTreeSet<&[u8]> = spans.iter().map(|s| s.trace_id.as_slice()).collect();
    assert_eq!(traces.len(), 1, "one trace for the workflow");
    let roots: Vec<&&Span> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root span");
    let root = roots[0];
    assert_eq!(root.name, "workflow default/traced");
    assert_eq!(text(&root.attributes, "a2a.workflow.phase").as_deref(), Some("Succeeded"));

    // One span per attempt, under the root: first, second twice (failed, then retried), third.
    let mut attempts: Vec<(String, String, String, String)> = spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty())
        .map(|s| {
            assert_eq!(s.parent_span_id, root.span_id, "{}: child of the workflow's span", s.name);
            assert_eq!(s.trace_id, root.trace_id);
            assert_eq!(text(&s.attributes, "a2a.agent.name").as_deref(), Some("tracer"), "{}", s.name);
            let get = |k| text(&s.attributes, k).unwrap_or_default();
            (get("a2a.task.name"), get("a2a.task.attempt"), get("a2a.task.outcome"), get("a2a.task.reason"))
        })
        .collect();
    attempts.sort();
    let expected = [
        ("first", "1", "succeeded", "Completed"),
        ("second", "1", "retried", "AttemptFailed"),
        ("second", "2", "succeeded", "Completed"),
        ("third", "1", "succeeded", "Completed"),
    ];
    let attempts: Vec<(&str, &str, &str, &str)> =
        attempts.iter().map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str())).collect();
    assert_eq!(attempts, expected);
    let third = spans.iter().find(|s| s.name == "task third").expect("third's span");
    assert_eq!(text(&third.attributes, "a2a.skill").as_deref(), Some("trace"));
    let failed = spans
        .iter()
        .find(|s| text(&s.attributes, "a2a.task.outcome").as_deref() == Some("retried"))
        .expect("the failed attempt");
    assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2), "status ERROR");

    // The agent's parent is the span of the attempt that succeeded, in the workflow's trace.
    for (task, (header, _)) in &seen {
        let ctx = SpanContext::parse(header).expect("traceparent");
        assert_eq!(ctx.trace_id.as_slice(), root.trace_id.as_slice(), "{task}: the workflow's trace");
        let span = spans
            .iter()
            .find(|s| s.span_id == ctx.span_id)
            .unwrap_or_else(|| panic!("{task}: no span {} among those exported", hex(&ctx.span_id)));
        assert_eq!(text(&span.attributes, "a2a.task.name").as_deref(), Some(task.as_str()));
        assert_eq!(text(&span.attributes, "a2a.task.outcome").as_deref(), Some("succeeded"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sdk_disabled_nothing_is_exported_and_agents_still_get_an_unsampled_context() {
    let (addr, got) = receiver().await;
    let home = tempfile::tempdir().expect("tempdir");
    let file = manifest(home.path());
    let env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")), ("OTEL_SDK_DISABLED", "true".into())];
    let out = run(home.path(), &file, env).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(got.lock().unwrap().requests, 0, "nothing was sent to the endpoint");
    let seen = reported(&stdout);
    assert_eq!(seen.len(), 3, "{stdout}");
    for (task, (header, metadata)) in &seen {
        assert_eq!(header, metadata, "{task}");
        let ctx = SpanContext::parse(header).expect("traceparent");
        assert!(!ctx.sampled, "{task}: not recorded, so not sampled: {header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_holds_nothing_up_and_the_spans_are_dropped_with_a_warning() {
    // Accepts connections and never answers them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let home = tempfile::tempdir().expect("tempdir");
    let file = manifest(home.path());
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "300".to_owned()),
        ("OTEL_BSP_EXPORT_TIMEOUT", "1000".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ];
    let out = run(home.path(), &file, env).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(reported(&stdout).len(), 3, "every task ran: {stdout}");
    assert!(!held.lock().unwrap().is_empty(), "the exporter tried the endpoint");
    assert!(stderr.contains("trace export kept failing; the spans are dropped"), "stderr:\n{stderr}");
    assert!(!stdout.contains("trace export"), "logs go to stderr, not stdout: {stdout}");
}
