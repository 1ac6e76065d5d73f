//! The demo agent's check of the token a2a gives the agents it runs (`A2A_AGENT_TOKEN`):
//! every A2A call must carry it as `Authorization: Bearer`; the agent card stays public and
//! advertises the scheme.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use crate::a2a::types::AgentCard;

/// The name of the scheme in the card.
pub const SCHEME: &str = "a2aAgentToken";

/// Declares the bearer scheme and requires it, when the agent has a token.
pub(super) fn advertise(card: &mut AgentCard, token: Option<&str>) {
    if token.is_none() {
        return;
    }
    card.security_schemes.insert(
        SCHEME.to_owned(),
        json!({"httpAuthSecurityScheme": {"scheme": "Bearer",
            "description": "the token a2a gives the agent in A2A_AGENT_TOKEN"}}),
    );
    card.security_requirements = vec![json!({"schemes": {SCHEME: {"list": []}}})];
}

/// Lets a request through when the agent has no token or the request carries it; else 401
/// with a `WWW-Authenticate: Bearer` challenge.
pub(super) async fn require(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let challenge = match presented {
        Some(t) if equal(t.trim().as_bytes(), expected.as_bytes()) => return next.run(req).await,
        Some(_) => r#"Bearer realm="a2a-demo-agent", error="invalid_token""#,
        None => r#"Bearer realm="a2a-demo-agent""#,
    };
    let mut resp = (StatusCode::UNAUTHORIZED, "a bearer token is required (A2A_AGENT_TOKEN)\n").into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

/// Compares in time independent of where the inputs differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_every_byte() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"abcd"));
    }
}
