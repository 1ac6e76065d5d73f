//! The gateway tokens of agents: each agent a2a runs gets one (`A2A_GATEWAY_TOKEN`) that lets
//! it call other agents of its namespace through the gateway, and nothing else. A token is
//! `a2agw.<namespace/name/uid>.<HMAC-SHA256>` (both parts base64url), signed with a key kept in
//! `$A2A_HOME/pki/gateway-token.key`: the gateway checks it without any lookup but the
//! agent's current uid, so a token dies with its agent (a new agent of the same name has
//! another uid), and no agent ever sees another agent's own token.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;

use crate::apiserver::home::{self, Kind};

/// The key file, under `$A2A_HOME/pki`.
pub const KEY_FILE: &str = "gateway-token.key";
const PREFIX: &str = "a2agw.";

/// Why the key cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error(transparent)]
    Pki(#[from] crate::apiserver::pki::Error),
    #[error("{path}: the gateway token key must be 64 hex digits")]
    Malformed { path: String },
    #[error("no randomness for the gateway token key: {0}")]
    Random(String),
}

/// The key gateway tokens are signed with.
#[derive(Clone)]
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Whose a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl TokenKey {
    /// Reads the key from `home`, making it (0600) when missing.
    pub fn load_or_create(home: &Path) -> Result<TokenKey, Error> {
        let pki = home.join("pki");
        crate::apiserver::pki::ensure_private_dir(&pki)?;
        let path = pki.join(KEY_FILE);
        let hex = match home::read(&path, Kind::Secret)? {
            Some(text) => text.trim().to_owned(),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::apiserver::pki::write_private(&path, hex.as_bytes())?;
                hex
            }
        };
        let bytes = unhex(&hex).ok_or_else(|| Error::Malformed { path: path.display().to_string() })?;
        Ok(TokenKey::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> TokenKey {
        TokenKey { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) }
    }

    /// The token of agent `namespace/name` whose uid is `uid`.
    pub fn mint(&self, namespace: &str, name: &str, uid: &str) -> String {
        let payload = format!("{namespace}/{name}/{uid}");
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{PREFIX}{}.{}", B64.encode(payload), B64.encode(tag.as_ref()))
    }

    /// Whose `token` is, when this key signed it (the uid is still to be checked against
    /// the agent as it is now); `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<AgentIdentity> {
        let rest = token.strip_prefix(PREFIX)?;
        let (payload, tag) = rest.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let tag = B64.decode(tag).ok()?;
        hmac::verify(&self.key, &payload, &tag).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.splitn(3, '/');
        let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
        Some(AgentIdentity { namespace: namespace.to_owned(), name: name.to_owned(), uid: uid.to_owned() })
    }
}

/// Whether `token` has the shape of a gateway token (so it is not tried as a user's).
pub fn is_gateway_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_agent_and_only_its_key_accepts_it() {
        let key = TokenKey::from_bytes(b"0123456789abcdef0123456789abcdef");
        let t = key.mint("team-a", "writer", "u-1");
        assert!(is_gateway_token(&t));
        assert_eq!(
            key.verify(&t),
            Some(AgentIdentity { namespace: "team-a".into(), name: "writer".into(), uid: "u-1".into() })
        );
        let other = TokenKey::from_bytes(b"another key, another host.......");
        assert_eq!(other.verify(&t), None, "another key refuses it");
        // Another agent's name under this token's signature.
        let tag = t.rsplit('.').next().unwrap();
        let forged = format!("{PREFIX}{}.{tag}", B64.encode("team-b/writer/u-1"));
        assert_eq!(key.verify(&forged), None);
        assert_eq!(key.verify("a2agw."), None);
        assert_eq!(key.verify("a2agw.!!.??"), None);
        assert_eq!(key.verify("not a token"), None);
    }

    #[test]
    fn the_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(dir.path()).unwrap().mint("default", "x", "1");
        let b = TokenKey::load_or_create(dir.path()).unwrap().mint("default", "x", "1");
        assert_eq!(a, b);
        std::fs::write(dir.path().join("pki").join(KEY_FILE), "short").unwrap();
        let e = TokenKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }
}
