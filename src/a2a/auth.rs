//! Credentials toward agents, matched against the agent card's `securitySchemes` and
//! `securityRequirements`: a bearer token, an API key (header, query or cookie, as the card's
//! `apiKeySecurityScheme` says), an OAuth2 client-credentials token (fetched from the token
//! endpoint, cached, refreshed before it expires and once more on a 401) and mutual TLS (the
//! client certificate of [`super::tls::TlsOptions`]).
//!
//! The card's requirements are alternatives (any one will do), each a set of schemes that
//! must all be presented. The first alternative a2a holds every credential for is used; when
//! there is none, the request is not sent and the error names the schemes the card wants.
//! A card that requires nothing still gets a configured bearer token (an agent that does not
//! check it ignores it), and any other credential its declared schemes say how to send.
//!
//! Secret values never reach `Debug`, `Display`, logs or errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::types::AgentCard;

/// A secret text: shown as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(value: impl Into<String>) -> Self {
        SecretText(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credentials a2a holds for one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Sent as `Authorization: Bearer` (an `httpAuthSecurityScheme` with scheme `Bearer`).
    pub bearer: Option<SecretText>,
    /// Sent where the card's `apiKeySecurityScheme` says.
    pub api_key: Option<SecretText>,
    /// Exchanged for an access token at the token endpoint (`oauth2SecurityScheme`).
    pub oauth2: Option<OAuth2Client>,
    /// A client certificate is configured (`mtlsSecurityScheme`).
    pub client_certificate: bool,
}

/// An OAuth2 client of the client-credentials grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Client {
    pub client_id: SecretText,
    pub client_secret: SecretText,
    /// The token endpoint; default: the `clientCredentials` flow of the card's scheme.
    pub token_url: Option<String>,
    /// Scopes asked for; default: the scopes the card's requirement lists.
    pub scopes: Vec<String>,
    /// How the client authenticates to the token endpoint.
    pub method: ClientAuthMethod,
}

/// RFC 6749 §2.3.1: HTTP Basic (the default every server supports) or the form body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// Why credentials could not be matched or obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the agent card requires {required}, and a2a has no credential for it (spec.auth of the Agent)")]
    NoCredential { required: String },
    #[error("the OAuth2 token endpoint {url}: {reason}")]
    TokenEndpoint { url: String, reason: String, retryable: bool },
    #[error("scheme {scheme:?}: {reason}")]
    Scheme { scheme: String, reason: String },
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::TokenEndpoint { retryable: true, .. })
    }
}

/// A security scheme of the card, as far as a2a reads it.
#[derive(Clone, Debug, PartialEq)]
enum Scheme {
    ApiKey { location: String, name: String },
    Http { scheme: String },
    OAuth2 { token_url: Option<String> },
    OpenIdConnect,
    MutualTls,
    Unknown,
}

impl Scheme {
    fn parse(v: &Value) -> Scheme {
        let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(k) = v.get("apiKeySecurityScheme") {
            return Scheme::ApiKey { location: s(k, "location"), name: s(k, "name") };
        }
        if let Some(h) = v.get("httpAuthSecurityScheme") {
            return Scheme::Http { scheme: s(h, "scheme") };
        }
        if let Some(o) = v.get("oauth2SecurityScheme") {
            let url = o.pointer("/flows/clientCredentials/tokenUrl").and_then(Value::as_str);
            return Scheme::OAuth2 { token_url: url.filter(|u| !u.is_empty()).map(str::to_owned) };
        }
        if v.get("openIdConnectSecurityScheme").is_some() {
            return Scheme::OpenIdConnect;
        }
        if v.get("mtlsSecurityScheme").is_some() {
            return Scheme::MutualTls;
        }
        Scheme::Unknown
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Scheme::ApiKey { location, name: key } => format!("{name:?} (API key in {location} {key:?})"),
            Scheme::Http { scheme } => format!("{name:?} (HTTP {scheme})"),
            Scheme::OAuth2 { .. } => format!("{name:?} (OAuth2)"),
            Scheme::OpenIdConnect => format!("{name:?} (OpenID Connect, which a2a does not speak)"),
            Scheme::MutualTls => format!("{name:?} (mutual TLS: a client certificate)"),
            Scheme::Unknown => format!("{name:?} (not declared in securitySchemes)"),
        }
    }
}

/// One way a credential travels on every request.
#[derive(Clone)]
enum Presented {
    Header(HeaderName, HeaderValue),
    Query(String, String),
    OAuth2(Arc<TokenSource>),
    /// Carried by the TLS handshake.
    ClientCertificate,
}

/// The credentials chosen for an agent, applied to each request; or, when the card requires
/// what a2a lacks, the reason every request fails (the card itself was read fine, so the
/// agent is reachable and its card describes it).
#[derive(Clone, Default)]
pub(crate) struct Authorizer {
    presented: Vec<Presented>,
    missing: Option<String>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("credentials", &self.presented.len()).finish()
    }
}

impl Authorizer {
    /// Whether any credential goes with each request (the card's requirements are met, or a
    /// credential goes anyway): an authenticated caller, to whom an agent may show its
    /// extended card.
    pub(crate) fn authenticates(&self) -> bool {
        self.missing.is_none() && !self.presented.is_empty()
    }

    /// What the card requires that a2a has no credential for, when a2a lacks one.
    pub(crate) fn missing(&self) -> Option<Error> {
        self.missing.clone().map(|required| Error::NoCredential { required })
    }
}

/// The credentials of `creds` to present to the agent of `card`, by its requirements.
/// `token_http` fetches OAuth2 tokens.
pub(crate) fn plan(
    card: &AgentCard,
    creds: &Credentials,
    token_http: &super::client::Http,
) -> Result<Authorizer, Error> {
    let schemes: BTreeMap<&str, Scheme> =
        card.security_schemes.iter().map(|(k, v)| (k.as_str(), Scheme::parse(v))).collect();
    let alternatives = requirements(card);
    let mut presented = Vec::new();
    if alternatives.is_empty() {
        // Nothing required: the bearer token goes anyway (a2a's per-agent token for the agents
        // it runs), and other credentials where a declared scheme says how.
        if let Some(b) = &creds.bearer {
            presented.push(bearer(b)?);
        }
        for (name, scheme) in &schemes {
            if let Some(p) = present(name, scheme, &[], creds, token_http)?
                && !matches!(scheme, Scheme::Http { .. })
            {
                presented.push(p);
            }
        }
        return Ok(Authorizer { presented, missing: None });
    }
    for alternative in &alternatives {
        let mut all = Vec::new();
        for (name, scopes) in alternative {
            let scheme = schemes.get(name.as_str()).cloned().unwrap_or(Scheme::Unknown);
            match present(name, &scheme, scopes, creds, token_http)? {
                Some(p) => all.push(p),
                None => break,
            }
        }
        if all.len() == alternative.len() {
            return Ok(Authorizer { presented: all, missing: None });
        }
    }
    let required = alternatives
        .iter()
        .map(|alt| {
            alt.iter()
                .map(|(name, _)| schemes.get(name.as_str()).unwrap_or(&Scheme::Unknown).describe(name))
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect::<Vec<_>>()
        .join(", or ");
    Ok(Authorizer { presented: Vec::new(), missing: Some(required) })
}

/// The card's `securityRequirements`: alternatives, each scheme name → scopes.
fn requirements(card: &AgentCard) -> Vec<Vec<(String, Vec<String>)>> {
    card.security_requirements
        .iter()
        .filter_map(|r| r.get("schemes")?.as_object())
        .map(|schemes| {
            schemes
                .iter()
                .map(|(name, list)| {
                    let scopes = list
                        .get("list")
                        .and_then(Value::as_array)
                        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>());
                    (name.clone(), scopes.unwrap_or_default())
                })
                .collect::<Vec<_>>()
        })
        .filter(|alt| !alt.is_empty())
        .collect()
}

/// How `scheme` is satisfied from `creds`, or `None` when a2a lacks the credential.
fn present(
    name: &str,
    scheme: &Scheme,
    scopes: &[String],
    creds: &Credentials,
    token_http: &super::client::Http,
) -> Result<Option<Presented>, Error> {
    let bad = |reason: &str| Error::Scheme { scheme: name.to_owned(), reason: reason.to_owned() };
    Ok(match scheme {
        Scheme::Http { scheme } if scheme.eq_ignore_ascii_case("bearer") => {
            creds.bearer.as_ref().map(bearer).transpose()?
        }
        Scheme::ApiKey { location, name: key } => match &creds.api_key {
            None => None,
            Some(value) => Some(match location.to_ascii_lowercase().as_str() {
                "header" => Presented::Header(
                    HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad("the key's header name is not valid"))?,
                    sensitive(value.expose()).ok_or_else(|| bad("the API key is not a valid header value"))?,
                ),
                "query" if !key.is_empty() => Presented::Query(key.clone(), value.expose().to_owned()),
                "cookie" if !key.is_empty() => Presented::Header(
                    header::COOKIE,
                    sensitive(&format!("{key}={}", value.expose()))
                        .ok_or_else(|| bad("the API key is not a valid cookie value"))?,
                ),
                other => return Err(bad(&format!("unknown API key location {other:?} (header, query or cookie)"))),
            }),
        },
        Scheme::OAuth2 { token_url } => match &creds.oauth2 {
            None => None,
            Some(client) => {
                let Some(url) = client.token_url.clone().or_else(|| token_url.clone()) else {
                    return Err(bad("the card names no clientCredentials tokenUrl; set spec.auth.oauth2.tokenUrl"));
                };
                let scopes = if client.scopes.is_empty() { scopes.to_vec() } else { client.scopes.clone() };
                Some(Presented::OAuth2(Arc::new(TokenSource::new(url, client.clone(), scopes, token_http.clone()))))
            }
        },
        Scheme::MutualTls => creds.client_certificate.then_some(Presented::ClientCertificate),
        Scheme::Http { .. } | Scheme::OpenIdConnect | Scheme::Unknown => None,
    })
}

fn bearer(token: &SecretText) -> Result<Presented, Error> {
    let value = sensitive(&format!("Bearer {}", token.expose())).ok_or_else(|| Error::Scheme {
        scheme: "bearer".into(),
        reason: "the token is not a valid header value".into(),
    })?;
    Ok(Presented::Header(header::AUTHORIZATION, value))
}

/// A header value marked sensitive (hyper never logs it, HPACK never indexes it).
fn sensitive(s: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(s).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Authorizer {
    /// Whether a 401 may be cured by fetching a new token.
    pub(crate) fn refreshes(&self) -> bool {
        self.presented.iter().any(|p| matches!(p, Presented::OAuth2(_)))
    }

    /// Forgets cached tokens (after the agent answered 401).
    pub(crate) async fn invalidate(&self) {
        for p in &self.presented {
            if let Presented::OAuth2(t) = p {
                t.invalidate().await;
            }
        }
    }

    /// `req` with the credentials added.
    pub(crate) async fn apply(&self, mut req: Request<Full<Bytes>>) -> Result<Request<Full<Bytes>>, Error> {
        if let Some(required) = &self.missing {
            return Err(Error::NoCredential { required: required.clone() });
        }
        for p in &self.presented {
            match p {
                Presented::Header(name, value) => {
                    req.headers_mut().insert(name.clone(), value.clone());
                }
                Presented::Query(name, value) => {
                    let uri = req.uri().to_string();
                    let sep = if uri.contains('?') { '&' } else { '?' };
                    let enc = |s: &str| {
                        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
                    };
                    let with = format!("{uri}{sep}{}={}", enc(name), enc(value));
                    *req.uri_mut() = with.parse().map_err(|_| Error::Scheme {
                        scheme: name.clone(),
                        reason: "the URL with the API key is not valid".into(),
                    })?;
                }
                Presented::OAuth2(source) => {
                    let token = source.token().await?;
                    req.headers_mut().insert(header::AUTHORIZATION, token);
                }
                Presented::ClientCertificate => {}
            }
        }
        Ok(req)
    }
}

/// OAuth2 client-credentials tokens of one client at one token endpoint: fetched on first
/// use, kept until [`refresh_at`] says, fetched again after a 401.
pub(crate) struct TokenSource {
    url: String,
    client: OAuth2Client,
    scopes: Vec<String>,
    http: super::client::Http,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    value: HeaderValue,
    refresh_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// When a token that lives `expires_in` is fetched again: at 80% of its life, and at least
/// 60 s before it ends (a short-lived token at 80%, whichever is sooner).
pub fn refresh_after(expires_in: Duration) -> Duration {
    let at_80 = expires_in.mul_f64(0.8);
    at_80.min(expires_in.saturating_sub(Duration::from_secs(60))).max(expires_in / 2)
}

impl TokenSource {
    fn new(url: String, client: OAuth2Client, scopes: Vec<String>, http: super::client::Http) -> Self {
        TokenSource { url, client, scopes, http, cached: tokio::sync::Mutex::new(None) }
    }

    /// The `Authorization` value: the cached token while fresh, else a new one. Holding the
    /// lock while fetching makes concurrent requests wait for one fetch.
    async fn token(&self) -> Result<HeaderValue, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = &*cached
            && c.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.value.clone());
        }
        let fresh = self.fetch().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<Cached, Error> {
        let fail = |reason: String, retryable: bool| Error::TokenEndpoint { url: self.url.clone(), reason, retryable };
        let enc = |s: &str| form_urlencoded(s);
        let mut form = String::from("grant_type=client_credentials");
        if !self.scopes.is_empty() {
            form.push_str(&format!("&scope={}", enc(&self.scopes.join(" "))));
        }
        let mut req = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        match self.client.method {
            ClientAuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-encoded before they are joined.
                let pair =
                    format!("{}:{}", enc(self.client.client_id.expose()), enc(self.client.client_secret.expose()));
                let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                let value = sensitive(&format!("Basic {basic}"))
                    .ok_or_else(|| fail("the client id is not valid".into(), false))?;
                req = req.header(header::AUTHORIZATION, value);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push_str(&format!(
                    "&client_id={}&client_secret={}",
                    enc(self.client.client_id.expose()),
                    enc(self.client.client_secret.expose())
                ));
            }
        }
        let req = req.body(Full::new(Bytes::from(form))).map_err(|e| fail(format!("invalid request: {e}"), false))?;
        let sent = super::client::send_raw(&self.http, &self.url, req, Some(Duration::from_secs(30))).await;
        let (status, body) = match super::client::read_reply(&self.url, async { sent }).await {
            Ok(r) => r,
            Err(e) => return Err(fail(e.to_string(), e.is_retryable())),
        };
        if !status.is_success() {
            // RFC 6749 §5.2: `{"error": "invalid_client", ...}`; only the error code is quoted.
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let retryable = status.as_u16() == 429 || status.is_server_error();
            return Err(fail(format!("answered HTTP {}{code}", status.as_u16()), retryable));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the answer is not a token response: {e}"), false))?;
        if let Some(kind) = &t.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(fail(format!("the token type is {kind:?}, not Bearer"), false));
        }
        let value = sensitive(&format!("Bearer {}", t.access_token))
            .ok_or_else(|| fail("the access token is not a valid header value".into(), false))?;
        let refresh_at = t.expires_in.map(|s| Instant::now() + refresh_after(Duration::from_secs(s)));
        tracing::debug!(token_url = %self.url, expires_in = ?t.expires_in, "OAuth2 access token fetched");
        Ok(Cached { value, refresh_at })
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_urlencoded(s: &str) -> String {
    const FORM: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b' ');
    percent_encoding::utf8_percent_encode(s, FORM).to_string().replace(' ', "+")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn card(schemes: Value, requirements: Value) -> AgentCard {
        serde_json::from_value(json!({
            "name": "t", "description": "", "version": "1", "supportedInterfaces": [],
            "capabilities": {}, "defaultInputModes": [], "defaultOutputModes": [], "skills": [],
            "securitySchemes": schemes, "securityRequirements": requirements,
        }))
        .expect("card")
    }

    fn http() -> super::super::client::Http {
        super::super::client::Http::new(&super::super::tls::TlsOptions::default()).expect("http")
    }

    fn request() -> Request<Full<Bytes>> {
        Request::post("http://h/a2a?x=1").body(Full::new(Bytes::new())).expect("request")
    }

    fn secret(s: &str) -> Option<SecretText> {
        Some(SecretText::new(s))
    }

    #[tokio::test]
    async fn an_api_key_goes_where_the_cards_scheme_says() {
        let c = card(
            json!({"k": {"apiKeySecurityScheme": {"location": "header", "name": "X-Api-Key"}},
                   "q": {"apiKeySecurityScheme": {"location": "query", "name": "key"}}}),
            json!([{"schemes": {"k": {"list": []}}}]),
        );
        let creds = Credentials { api_key: secret("k1"), ..Default::default() };
        let req = plan(&c, &creds, &http()).expect("plan").apply(request()).await.expect("apply");
        assert_eq!(req.headers()["x-api-key"], "k1");
        assert!(req.headers()["x-api-key"].is_sensitive());
        let c = card(
            json!({"q": {"apiKeySecurityScheme": {"location": "query", "name": "key"}}}),
            json!([{"schemes": {"q": {}}}]),
        );
        let req = plan(&c, &creds, &http()).expect("plan").apply(request()).await.expect("apply");
        assert_eq!(req.uri().to_string(), "http://h/a2a?x=1&key=k1");
    }

    #[tokio::test]
    async fn the_first_alternative_a2a_holds_every_credential_for_is_chosen() {
        let c = card(
            json!({"b": {"httpAuthSecurityScheme": {"scheme": "Bearer"}},
                   "m": {"mtlsSecurityScheme": {}},
                   "k": {"apiKeySecurityScheme": {"location": "header", "name": "X-K"}}}),
            json!([{"schemes": {"b": {}, "m": {}}}, {"schemes": {"k": {}}}]),
        );
        let bearer_only = Credentials { bearer: secret("t"), ..Default::default() };
        let e = plan(&c, &bearer_only, &http()).expect("plan").apply(request()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the agent card requires \"b\" (HTTP Bearer) and \"m\" (mutual TLS: a client certificate), or \"k\" (API key in header \"X-K\"), and a2a has no credential for it (spec.auth of the Agent)"
        );
        let both = Credentials { bearer: secret("t"), client_certificate: true, ..Default::default() };
        assert_eq!(plan(&c, &both, &http()).expect("plan").presented.len(), 2);
        let key = Credentials { api_key: secret("t"), ..Default::default() };
        assert_eq!(plan(&c, &key, &http()).expect("plan").presented.len(), 1);
    }

    #[tokio::test]
    async fn a_card_that_requires_nothing_still_gets_the_bearer_token() {
        let creds = Credentials { bearer: secret("tok"), ..Default::default() };
        let req =
            plan(&card(json!({}), json!([])), &creds, &http()).expect("plan").apply(request()).await.expect("apply");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer tok");
        let none = plan(&card(json!({}), json!([])), &Credentials::default(), &http()).expect("plan");
        assert!(none.apply(request()).await.expect("apply").headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn oauth2_without_a_token_url_anywhere_is_refused() {
        let c = card(
            json!({"o": {"oauth2SecurityScheme": {"flows": {"authorizationCode": {}}}}}),
            json!([{"schemes": {"o": {}}}]),
        );
        let client = OAuth2Client {
            client_id: SecretText::new("id"),
            client_secret: SecretText::new("s3cr3t"),
            token_url: None,
            scopes: vec![],
            method: ClientAuthMethod::default(),
        };
        let creds = Credentials { oauth2: Some(client), ..Default::default() };
        let e = plan(&c, &creds, &http()).unwrap_err();
        assert!(e.to_string().contains("tokenUrl"), "{e}");
        assert!(!format!("{e} {creds:?}").contains("s3cr3t"));
    }

    /// A token endpoint that counts its requests and checks the client by HTTP Basic.
    async fn token_endpoint(expires_in: u64) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::HeaderMap;
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let basic = base64::engine::general_purpose::STANDARD.encode("id%3A1:s+cret");
                    let authorized = headers.get(header::AUTHORIZATION).is_some_and(|v| v == &format!("Basic {basic}"));
                    if !authorized || body != "grant_type=client_credentials&scope=a+b" {
                        return (axum::http::StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#.to_owned());
                    }
                    let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let reply =
                        json!({"access_token": format!("t{n}"), "token_type": "bearer", "expires_in": expires_in});
                    (axum::http::StatusCode::OK, reply.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/token", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, count)
    }

    fn source(url: &str, secret: &str) -> TokenSource {
        let client = OAuth2Client {
            client_id: SecretText::new("id:1"),
            client_secret: SecretText::new(secret),
            token_url: None,
            scopes: vec![],
            method: ClientAuthMethod::ClientSecretBasic,
        };
        TokenSource::new(url.to_owned(), client, vec!["a".into(), "b".into()], http())
    }

    #[tokio::test]
    async fn a_token_is_cached_until_it_must_be_refreshed_or_is_refused() {
        let (url, count) = token_endpoint(3600).await;
        let tokens = source(&url, "s cret");
        assert_eq!(tokens.token().await.expect("token"), "Bearer t1");
        assert_eq!(tokens.token().await.expect("token"), "Bearer t1", "cached");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokens.invalidate().await;
        assert_eq!(tokens.token().await.expect("token"), "Bearer t2", "fetched again after a 401");

        // A token that lives 1 s is fetched again after half of it.
        let (url, count) = token_endpoint(1).await;
        let short = source(&url, "s cret");
        assert_eq!(short.token().await.expect("token"), "Bearer t1");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(short.token().await.expect("token"), "Bearer t2");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 2);

        let e = source(&url, "wrong").token().await.unwrap_err();
        assert!(e.to_string().ends_with("answered HTTP 401 (invalid_client)"), "{e}");
        assert!(!e.is_retryable());
        assert!(!e.to_string().contains("wrong"));
    }

    #[test]
    fn a_token_is_refreshed_before_it_expires() {
        assert_eq!(refresh_after(Duration::from_secs(3600)), Duration::from_secs(2880));
        assert_eq!(refresh_after(Duration::from_secs(200)), Duration::from_secs(140));
        assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(30));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_urlencoded("a b&c=d+é"), "a+b%26c%3Dd%2B%C3%A9");
    }
}
