//! The scripted Kubernetes API the cluster's unit tests run against (tower-test): a client
//! whose every request the test answers in turn, checking what was asked.

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// The test's end of the scripted API.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client (default namespace `default`) and the handle that answers its requests.
pub fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Answers the next request with `code` and `reply` after checking its method and path, and
/// returns what was asked: its query (without `?`, empty when none) and its JSON body
/// (`Null` when it had none). `path` is compared with the request's path, or, when it holds
/// a `?`, with its path and query together (`/api/v1/pods?&labelSelector=...`).
pub async fn answer(
    handle: &mut Handle,
    method: &str,
    path: &str,
    code: impl TryInto<http::StatusCode>,
    reply: Value,
) -> (String, Value) {
    let Ok(code) = code.try_into() else { panic!("not an HTTP status code") };
    let (request, send) = handle.next_request().await.expect("the code under test made no further request");
    let uri = request.uri().clone();
    let seen = if path.contains('?') { uri.path_and_query().map_or("", |p| p.as_str()) } else { uri.path() };
    assert_eq!((request.method().as_str(), seen), (method, path), "request {uri}");
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    send.send_response(
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("json")))
            .expect("response"),
    );
    (uri.query().unwrap_or("").to_owned(), body)
}

/// A 404 `Status`, as the API server sends for an unknown object or group.
pub fn not_found() -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": "the server could not find the requested resource"})
}

/// The `(type, status, reason)` of each condition of a status, in order.
pub fn conditions(status: &Value) -> Vec<(&str, &str, &str)> {
    status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
