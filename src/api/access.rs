//! How a2a reaches an agent that runs elsewhere (`spec.url`): `spec.tls` (an extra CA, a
//! client certificate for mutual TLS, the name to verify) and `spec.auth` (bearer token, API
//! key, OAuth2 client credentials). Every secret value is a reference to a key of a core v1
//! Secret in the Agent's namespace, never a value in the manifest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::FieldError;

/// A key of a Secret in the Agent's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// A Secret by name, with the keys a2a reads from it given by its type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

/// A secret value: `{secretKeyRef: {name, key}}`, as in a Pod's `env[].valueFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretValue {
    pub secret_key_ref: SecretKeyRef,
}

/// TLS toward an `https://` agent. The system's trusted CAs always apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentTls {
    /// A CA bundle (PEM) trusted for this agent in addition to the system's, e.g.
    /// `{name: agent-ca, key: ca.crt}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the client certificate presented
    /// for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<SecretRef>,
    /// The name the agent's certificate must carry, sent as SNI (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Credentials presented to the agent; which of them go is decided by its agent card's
/// `securityRequirements`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentAuth {
    /// `Authorization: Bearer <token>` (an HTTP `Bearer` scheme of the card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<SecretValue>,
    /// An API key, sent in the header, query parameter or cookie the card's `apiKey`
    /// scheme names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretValue>,
    /// OAuth2 client credentials, exchanged for an access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<AgentOAuth2>,
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentOAuth2 {
    pub client_id: SecretValue,
    pub client_secret: SecretValue,
    /// The token endpoint (default: the `clientCredentials` flow of the card's OAuth2 scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Scopes to ask for (default: those the card's requirement lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// How the client authenticates to the token endpoint: `ClientSecretBasic` (default,
    /// HTTP Basic) or `ClientSecretPost` (in the form body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientAuthentication {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

impl AgentAuth {
    pub fn is_empty(&self) -> bool {
        self.bearer.is_none() && self.api_key.is_none() && self.oauth2.is_none()
    }
}

/// `spec.tls` and `spec.auth` of an agent: only an agent with `url` has them (a2a reaches the
/// agents it runs itself over plain HTTP, with their own token), and every reference names a
/// Secret and a key.
pub(crate) fn check(url: Option<&str>, tls: Option<&AgentTls>, auth: Option<&AgentAuth>, errors: &mut Vec<FieldError>) {
    if url.is_none() {
        if tls.is_some() {
            errors.push(FieldError::new("spec.tls", "only an agent with url is reached over TLS; remove tls"));
        }
        if auth.is_some() {
            errors.push(FieldError::new(
                "spec.auth",
                "only an agent with url takes credentials (a2a gives the agents it runs a token of their own); remove auth",
            ));
        }
        return;
    }
    let key_ref = |path: &str, r: &SecretKeyRef, errors: &mut Vec<FieldError>| {
        if r.name.is_empty() {
            errors.push(FieldError::new(format!("{path}.name"), "a Secret name is required"));
        }
        if r.key.is_empty() {
            errors.push(FieldError::new(format!("{path}.key"), "a key of the Secret is required"));
        }
    };
    if let Some(t) = tls {
        if let Some(r) = &t.ca_secret {
            key_ref("spec.tls.caSecret", r, errors);
        }
        if t.client_certificate_secret.as_ref().is_some_and(|r| r.name.is_empty()) {
            errors.push(FieldError::new("spec.tls.clientCertificateSecret.name", "a Secret name is required"));
        }
        if let Some(name) = &t.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            errors.push(FieldError::new("spec.tls.serverName", format!("{name:?} is not a DNS name or IP address")));
        }
        if url.is_some_and(|u| u.starts_with("http://")) {
            errors.push(FieldError::new("spec.tls", "the url is http://; tls applies to an https:// url"));
        }
    }
    if let Some(a) = auth {
        if let Some(v) = &a.bearer {
            key_ref("spec.auth.bearer.secretKeyRef", &v.secret_key_ref, errors);
        }
        if let Some(v) = &a.api_key {
            key_ref("spec.auth.apiKey.secretKeyRef", &v.secret_key_ref, errors);
        }
        if let Some(o) = &a.oauth2 {
            key_ref("spec.auth.oauth2.clientId.secretKeyRef", &o.client_id.secret_key_ref, errors);
            key_ref("spec.auth.oauth2.clientSecret.secretKeyRef", &o.client_secret.secret_key_ref, errors);
            if let Some(u) = &o.token_url
                && !(u.starts_with("https://") || u.starts_with("http://"))
            {
                errors.push(FieldError::new(
                    "spec.auth.oauth2.tokenUrl",
                    format!("{u:?} is not an http:// or https:// URL"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(url: Option<&str>, tls: Option<AgentTls>, auth: Option<AgentAuth>) -> Vec<String> {
        let mut errors = Vec::new();
        check(url, tls.as_ref(), auth.as_ref(), &mut errors);
        errors.into_iter().map(|e| format!("{}: {}", e.path, e.message)).collect()
    }

    fn key(name: &str, key: &str) -> SecretValue {
        SecretValue { secret_key_ref: SecretKeyRef { name: name.into(), key: key.into() } }
    }

    #[test]
    fn tls_and_auth_belong_to_agents_with_url_only() {
        let e = errors(None, Some(AgentTls::default()), Some(AgentAuth::default()));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("spec.tls: only an agent with url"), "{e:?}");
        assert!(e[1].starts_with("spec.auth: only an agent with url"), "{e:?}");
    }

    #[test]
    fn every_reference_names_a_secret_and_a_key_and_tls_needs_https() {
        let tls = AgentTls { server_name: Some("not a name!".into()), ..Default::default() };
        let auth = AgentAuth { bearer: Some(key("", "token")), api_key: Some(key("k", "")), oauth2: None };
        let e = errors(Some("http://agent:80/"), Some(tls), Some(auth));
        assert_eq!(
            e,
            [
                "spec.tls.serverName: \"not a name!\" is not a DNS name or IP address",
                "spec.tls: the url is http://; tls applies to an https:// url",
                "spec.auth.bearer.secretKeyRef.name: a Secret name is required",
                "spec.auth.apiKey.secretKeyRef.key: a key of the Secret is required",
            ]
        );
        let ok = AgentAuth { bearer: Some(key("t", "token")), ..Default::default() };
        assert!(errors(Some("https://agent/"), Some(AgentTls::default()), Some(ok)).is_empty());
    }
}
