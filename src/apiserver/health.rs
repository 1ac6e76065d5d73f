//! `/healthz`, `/livez` and `/readyz` as the kube-apiserver answers them: `ok` when every
//! check passes, the list of checks with `?verbose` (`[+]ping ok` … `readyz check passed`),
//! each check alone at `/readyz/NAME`, checks left out with `?exclude=NAME`, and on failure
//! the list with the reason of each failed check and a 503.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

use super::AppState;

/// Which endpoint: each has its own checks, as in Kubernetes (readiness adds what makes the
/// server unfit to take requests without making it dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [&'static str] {
        match self {
            Endpoint::Healthz | Endpoint::Livez => &["ping", "log"],
            Endpoint::Readyz => &["ping", "log", "store", "shutdown"],
        }
    }
}

/// One check's outcome: `None` when it passes, else why not.
fn run(state: &AppState, check: &str) -> Option<String> {
    match check {
        "store" => state.store.writable().err().map(|e| e.to_string()),
        "shutdown" => (*state.shutdown.borrow()).then(|| "shutting down".to_string()),
        _ => None,
    }
}

/// The whole endpoint (`/readyz`, `/readyz?verbose`, `/readyz?exclude=store`).
pub fn report(state: &AppState, endpoint: Endpoint, q: &HashMap<String, String>, excluded: &[String]) -> Response {
    let verbose = q.contains_key("verbose");
    let mut lines = String::new();
    let mut failed = false;
    for check in endpoint.checks().iter().filter(|c| !excluded.iter().any(|e| e == *c)) {
        match run(state, check) {
            None => lines.push_str(&format!("[+]{check} ok\n")),
            Some(why) => {
                failed = true;
                lines.push_str(&format!("[-]{check} failed: {why}\n"));
            }
        }
    }
    for e in excluded {
        lines.push_str(&format!("[+]{e} excluded: ok\n"));
    }
    let name = endpoint.name();
    if failed {
        lines.push_str(&format!("{name} check failed\n"));
        return (StatusCode::SERVICE_UNAVAILABLE, lines).into_response();
    }
    if verbose {
        lines.push_str(&format!("{name} check passed\n"));
        return lines.into_response();
    }
    "ok".into_response()
}

async fn whole(state: AppState, endpoint: Endpoint, uri: &axum::http::Uri) -> Response {
    // `exclude` may repeat (`?exclude=a&exclude=b`): read the raw query.
    let mut q = HashMap::new();
    let mut excluded = Vec::new();
    for (k, v) in url_pairs(uri.query().unwrap_or_default()) {
        if k == "exclude" {
            excluded.push(v.clone());
        }
        q.insert(k, v);
    }
    report(&state, endpoint, &q, &excluded)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub async fn healthz(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    whole(state, Endpoint::Healthz, &uri).await
}

pub async fn livez(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    whole(state, Endpoint::Livez, &uri).await
}

pub async fn readyz(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    whole(state, Endpoint::Readyz, &uri).await
}

/// `/readyz/NAME` and the like: one check, `ok` or a 503 with its reason; 404 for a check the
/// endpoint does not have.
fn single(state: &AppState, endpoint: Endpoint, check: &str) -> Response {
    if !endpoint.checks().contains(&check) {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    }
    match run(state, check) {
        None => "ok".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("internal server error: {why}\n")).into_response(),
    }
}

pub async fn healthz_check(State(state): State<AppState>, Path(check): Path<String>) -> Response {
    single(&state, Endpoint::Healthz, &check)
}

pub async fn livez_check(State(state): State<AppState>, Path(check): Path<String>) -> Response {
    single(&state, Endpoint::Livez, &check)
}

pub async fn readyz_check(State(state): State<AppState>, Path(check): Path<String>) -> Response {
    single(&state, Endpoint::Readyz, &check)
}

/// Whether a path is one of these endpoints (public, as the kube-apiserver's
/// `system:public-info-viewer` role makes them).
pub fn is_health_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    matches!(first, "healthz" | "livez" | "readyz")
}
