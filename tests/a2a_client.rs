//! The A2A client against misbehaving peers (in-process HTTP servers): each mistake gets an
//! error that names it.

use a2a::a2a::client::Error;
use a2a::a2a::{Client, ErrorCode, Message};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn card(url: &str, binding: &str) -> serde_json::Value {
    json!({
        "name": "peer", "description": "d", "version": "1",
        "supportedInterfaces": [{"url": url, "protocolBinding": binding, "protocolVersion": "1.0"}],
        "capabilities": {}, "defaultInputModes": [], "defaultOutputModes": [], "skills": []
    })
}

#[tokio::test]
async fn a_card_without_an_interface_a2a_speaks_is_refused_naming_what_it_offers() {
    let app = Router::new()
        .route("/.well-known/agent-card.json", get(|| async { axum::Json(card("http://x/grpc", "GRPC")) }));
    let base = serve(app).await;
    let err = Client::new(&base).unwrap().agent_card().await.unwrap_err();
    assert!(matches!(err, Error::NoSupportedInterface { .. }), "{err}");
    assert!(err.to_string().contains("GRPC 1.0 at http://x/grpc"), "{err}");
}

#[tokio::test]
async fn a_card_that_is_not_json_and_a_missing_card_are_reported() {
    let app = Router::new().route("/.well-known/agent-card.json", get(|| async { "<html>" }));
    let err = Client::new(&serve(app).await).unwrap().agent_card().await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("the agent card is not valid A2A 1.0 JSON"), "{err}");

    let err = Client::new(&serve(Router::new()).await).unwrap().agent_card().await.unwrap_err();
    assert!(matches!(err, Error::HttpStatus { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn requests_go_to_the_interface_url_with_the_version_header() {
    // The JSON-RPC endpoint lives at /rpc; the server answers only requests that carry
    // `A2A-Version: 1.0`, and reports a version error otherwise.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rpc = format!("http://{addr}/rpc");
    let app = Router::new()
        .route(
            "/.well-known/agent-card.json",
            get(move || {
                let rpc = rpc.clone();
                async move { axum::Json(card(&rpc, "JSONRPC")) }
            }),
        )
        .route(
            "/rpc",
            post(|headers: axum::http::HeaderMap| async move {
                let version = headers.get("a2a-version").and_then(|v| v.to_str().ok());
                if version != Some("1.0") {
                    return axum::Json(json!({"jsonrpc": "2.0", "id": 1,
                        "error": {"code": -32009, "message": "need 1.0"}}));
                }
                axum::Json(json!({"jsonrpc": "2.0", "id": 1, "error":
                    {"code": -32001, "message": "Task not found: t-1"}}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let err = client.get_task("t-1").await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(ErrorCode::TaskNotFound), "{err}");
    assert!(err.to_string().contains(&format!("GetTask to http://{addr}/rpc failed: TaskNotFound")), "{err}");
}

#[tokio::test]
async fn an_http_error_from_the_endpoint_is_reported_with_its_body() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/");
    let app = Router::new()
        .route(
            "/.well-known/agent-card.json",
            get(move || {
                let url = url.clone();
                async move { axum::Json(card(&url, "JSONRPC")) }
            }),
        )
        .route("/", post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let err = client.send_message(Message::user_text("m", "hi"), None).await.unwrap_err();
    assert!(matches!(err, Error::HttpStatus { status: 503, .. }), "{err}");
    assert!(err.to_string().contains("\"overloaded\""), "{err}");
}

#[tokio::test]
async fn an_agent_that_is_not_running_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Client::new(&format!("http://127.0.0.1:{port}")).unwrap().agent_card().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the agent"), "{err}");
}

/// The card, not the URL it was read from, says where requests go and on which binding: an
/// agent that lists a binding a2a does not speak first is reached on its JSON-RPC interface,
/// wherever that lives.
#[tokio::test]
async fn requests_go_to_the_first_interface_in_the_cards_order_whose_binding_a2a_speaks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = format!("http://{}/", listener.local_addr().unwrap());
    let config = a2a::a2a::server::DemoAgentConfig::default();
    tokio::spawn(a2a::a2a::server::serve(listener, config, std::future::pending()));
    let listed = agent.clone();
    let app = Router::new().route(
        "/.well-known/agent-card.json",
        get(move || async move {
            let mut c = card("http://127.0.0.1:9/grpc", "GRPC");
            c["supportedInterfaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"url": listed, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}));
            axum::Json(c)
        }),
    );
    let client = Client::new(&serve(app).await).unwrap();
    let transport = client.transport().await.expect("a transport");
    assert_eq!((transport.binding(), transport.endpoint()), ("JSONRPC", agent.as_str()));
    let reply = client.send_message(Message::user_text("m-1", "hello"), None).await.expect("the agent answers");
    assert_eq!(reply.output().text, "hello");
}

#[tokio::test]
async fn a_429_or_503_with_retry_after_asks_for_that_wait_on_the_card_and_on_requests() {
    use std::time::Duration;
    // The card itself is throttled: 503 with Retry-After in seconds.
    let app = Router::new().route(
        "/.well-known/agent-card.json",
        get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "7")], "warming up") }),
    );
    let err = Client::new(&serve(app).await).unwrap().agent_card().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("answered HTTP 503 and asks to be called again after 7s"), "{err}");

    // Requests: the header wins over a JSON-RPC error body; without a readable header a 429 is
    // an ordinary error (the retry policy decides).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/");
    let app = Router::new()
        .route(
            "/.well-known/agent-card.json",
            get(move || {
                let url = url.clone();
                async move { axum::Json(card(&url, "JSONRPC")) }
            }),
        )
        .route(
            "/",
            post(|body: String| async move {
                let busy = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "busy"}});
                let retry_after = if body.contains("\"with\"") {
                    "Wed, 06 Nov 2999 08:49:37 GMT"
                } else if body.contains("\"bad\"") {
                    "soon"
                } else {
                    ""
                };
                let mut headers = axum::http::HeaderMap::new();
                if !retry_after.is_empty() {
                    headers.insert("retry-after", retry_after.parse().unwrap());
                }
                (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(busy))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let err = client.send_message(Message::user_text("m", "with"), None).await.unwrap_err();
    assert!(err.retry_after().is_some_and(|d| d > Duration::from_secs(86400 * 365)), "an HTTP-date: {err}");
    for text in ["bad", "none"] {
        let err = client.send_message(Message::user_text("m", text), None).await.unwrap_err();
        assert_eq!(err.retry_after(), None, "{text}: {err}");
        assert_eq!(err.rpc_code(), Some(ErrorCode::InternalError), "{text}: the body's error stands: {err}");
    }
}
