//! Named users of the API server: each a name, a role ([`super::authz::Role`]), an optional
//! namespace the role is bound to, and a bearer token of which only the SHA-256 digest is kept,
//! in `$A2A_HOME/users` (0600, rewritten whole by rename on every change).
//!
//! The running server holds the table in memory and serves it under
//! `/apis/auth.a2a.dev/v1alpha1/users` (list, create, delete; the unbound admin only): a user
//! deleted there is refused on its next request. `a2a user` uses that API when the server
//! runs and edits the file when none does.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::authz::{Grant, Role, Subject};
use super::home;
use super::status::{ApiError, json_response};

/// The file under the home.
pub const FILE: &str = "users";

/// Bytes of randomness in a token (256 bits: a digest without salt is then safe to keep).
const TOKEN_BYTES: usize = 32;

/// The prefix of user tokens, so a leaked one is recognised (as `ghp_` tokens are).
const TOKEN_PREFIX: &str = "a2au_";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error("{path}: not a users file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("user {0:?} not found")]
    NotFound(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One user as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
    pub created: String,
}

impl User {
    pub fn subject(&self) -> Subject {
        let role = Role::parse(&self.role).unwrap_or(Role::View);
        Subject::user(&self.name, Grant::role(role, self.namespace.as_deref()))
    }

    /// The user as the API shows it (never its digest).
    pub fn to_json(&self) -> Value {
        let mut spec = json!({"role": self.role});
        if let Some(ns) = &self.namespace {
            spec["namespace"] = json!(ns);
        }
        json!({
            "apiVersion": "auth.a2a.dev/v1alpha1",
            "kind": "User",
            "metadata": {"name": self.name, "creationTimestamp": self.created},
            "spec": spec,
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Document {
    #[serde(default)]
    users: Vec<User>,
}

/// Checks a user name: a DNS-1123 subdomain (as Kubernetes object names), not one of the names
/// the server gives itself.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid user name {name:?}: {why}")));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
        return bad("must consist of lower case letters, digits, '-' and '.'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start and end with a letter or digit");
    }
    if name == super::ADMIN_USER || name.starts_with("system") {
        return bad("is reserved for the server's own identities");
    }
    Ok(())
}

/// Checks a namespace name (a DNS-1123 label).
pub fn validate_namespace(ns: &str) -> Result<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid namespace {ns:?}: must be at most 63 lower case letters, digits and '-', starting and ending \
             with a letter or digit"
        )))
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn new_token() -> Result<String> {
    let mut b = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&b)))
}

/// The table, loaded from and written to `$A2A_HOME/users`.
pub struct Users {
    path: PathBuf,
    table: RwLock<Vec<(User, [u8; 32])>>,
}

impl Users {
    /// Loads the table under `home` (none yet: empty).
    pub fn open(home: &Path) -> Result<Users> {
        let path = home.join(FILE);
        let doc: Document = match home::read(&path, home::Kind::Secret)? {
            None => Document::default(),
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| Error::Parse { path: path.clone(), message: e.to_string() })?
            }
        };
        let mut table = Vec::with_capacity(doc.users.len());
        for user in doc.users {
            let hash = unhex(&user.token_sha256).ok_or_else(|| Error::Parse {
                path: path.clone(),
                message: format!("user {:?}: tokenSha256 is not 64 hex digits", user.name),
            })?;
            Role::parse(&user.role)
                .map_err(|m| Error::Parse { path: path.clone(), message: format!("user {:?}: {m}", user.name) })?;
            table.push((user, hash));
        }
        Ok(Users { path, table: RwLock::new(table) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(User, [u8; 32])>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The user a bearer token belongs to. Every stored digest is compared, each in constant
    /// time, so the answer's timing tells nothing of which digest came close.
    pub fn authenticate(&self, token: &str) -> Option<Subject> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let given = digest(token);
        let mut found = None;
        for (user, hash) in self.read().iter() {
            if same(&given, hash) {
                found = Some(user.subject());
            }
        }
        found
    }

    pub fn list(&self) -> Vec<User> {
        self.read().iter().map(|(u, _)| u.clone()).collect()
    }

    /// Adds a user; answers it and its token (shown this once, never stored).
    pub fn create(&self, name: &str, role: &str, namespace: Option<&str>) -> Result<(User, String)> {
        validate_name(name)?;
        let role = Role::parse(role).map_err(Error::Invalid)?;
        if let Some(ns) = namespace {
            validate_namespace(ns)?;
        }
        let token = new_token()?;
        let hash = digest(&token);
        let user = User {
            name: name.to_string(),
            role: role.as_str().to_string(),
            namespace: namespace.map(str::to_string),
            token_sha256: hex(&hash),
            created: super::handlers::now(),
        };
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if table.iter().any(|(u, _)| u.name == name) {
            return Err(Error::Exists(name.to_string()));
        }
        let mut next = table.clone();
        next.push((user.clone(), hash));
        self.save(&next)?;
        *table = next;
        Ok((user, token))
    }

    /// Removes a user: its token is refused from now on.
    pub fn delete(&self, name: &str) -> Result<User> {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let Some(at) = table.iter().position(|(u, _)| u.name == name) else {
            return Err(Error::NotFound(name.to_string()));
        };
        let mut next = table.clone();
        let (gone, _) = next.remove(at);
        self.save(&next)?;
        *table = next;
        Ok(gone)
    }

    fn save(&self, table: &[(User, [u8; 32])]) -> Result<()> {
        let doc = Document { users: table.iter().map(|(u, _)| u.clone()).collect() };
        let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        home::write_private(&self.path, &text)?;
        Ok(())
    }
}

/// Whether a path is the users API: answers the user's name, if one is named.
pub fn target(path: &str) -> Option<Option<String>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", super::authz::USERS_GROUP, "v1alpha1", "users"] => Some(None),
        ["apis", super::authz::USERS_GROUP, "v1alpha1", "users", name] => Some(Some(name.to_string())),
        _ => None,
    }
}

fn api_error(e: Error) -> ApiError {
    let details = |name: &str| json!({"name": name, "group": super::authz::USERS_GROUP, "kind": "users"});
    match e {
        Error::Invalid(m) => ApiError::new(422, "Invalid", m),
        Error::Exists(n) => {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("users.{} \"{n}\" already exists", super::authz::USERS_GROUP),
            );
            e.details = Some(details(&n));
            e
        }
        Error::NotFound(n) => {
            let mut e =
                ApiError::new(404, "NotFound", format!("users.{} \"{n}\" not found", super::authz::USERS_GROUP));
            e.details = Some(details(&n));
            e
        }
        other => ApiError::new(500, "InternalError", other.to_string()),
    }
}

/// Serves the users API (the caller was authorized before): `GET` lists or shows, `POST`
/// creates (the answer's `status.token` is the only copy of the token), `DELETE` removes.
pub fn serve(users: &Users, method: &Method, name: Option<&str>, body: &Bytes) -> Result<Response, ApiError> {
    match (method.as_str(), name) {
        ("GET", None) => {
            let items: Vec<Value> = users.list().iter().map(User::to_json).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"apiVersion": "auth.a2a.dev/v1alpha1", "kind": "UserList", "metadata": {}, "items": items}),
            ))
        }
        ("GET", Some(n)) => {
            let user =
                users.list().into_iter().find(|u| u.name == n).ok_or_else(|| api_error(Error::NotFound(n.into())))?;
            Ok(json_response(StatusCode::OK, &user.to_json()))
        }
        ("POST", None) => {
            let object: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the body is not a User in JSON: {e}")))?;
            let field = |p: &str| object.pointer(p).and_then(Value::as_str);
            let name = field("/metadata/name")
                .ok_or_else(|| ApiError::new(422, "Invalid", "metadata.name: Required value"))?;
            let role = field("/spec/role")
                .ok_or_else(|| ApiError::new(422, "Invalid", "spec.role: Required value: one of admin, edit, view"))?;
            let (user, token) = users.create(name, role, field("/spec/namespace")).map_err(api_error)?;
            let mut out = user.to_json();
            out["status"] = json!({"token": token});
            Ok(json_response(StatusCode::CREATED, &out))
        }
        ("DELETE", Some(n)) => {
            let user = users.delete(n).map_err(api_error)?;
            Ok(json_response(StatusCode::OK, &user.to_json()))
        }
        _ => Err(ApiError::method_not_allowed("the users API lists, gets, creates and deletes users")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_its_user_until_it_is_deleted_and_the_table_survives_a_reload() {
        let home = tempfile::tempdir().unwrap();
        let users = Users::open(home.path()).unwrap();
        let (alice, token) = users.create("alice", "edit", Some("team-a")).unwrap();
        assert_eq!(alice.role, "edit");
        let s = users.authenticate(&token).unwrap();
        assert_eq!(s.user, "alice");
        assert_eq!(s.grant, Grant::role(Role::Edit, Some("team-a")));
        assert!(users.authenticate("a2au_00").is_none());
        let text = std::fs::read_to_string(home.path().join(FILE)).unwrap();
        assert!(!text.contains(&token), "the token itself is never stored");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(home.path().join(FILE)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let again = Users::open(home.path()).unwrap();
        assert_eq!(again.authenticate(&token).unwrap().user, "alice");
        again.delete("alice").unwrap();
        assert!(again.authenticate(&token).is_none());
        assert!(Users::open(home.path()).unwrap().list().is_empty());
    }

    #[test]
    fn bad_names_roles_and_duplicates_are_refused_with_what_is_wrong() {
        let home = tempfile::tempdir().unwrap();
        let users = Users::open(home.path()).unwrap();
        let e = users.create("Alice", "view", None).unwrap_err().to_string();
        assert!(e.contains("\"Alice\"") && e.contains("lower case"), "{e}");
        let e = users.create("a2a-admin", "view", None).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        let e = users.create("bob", "root", None).unwrap_err().to_string();
        assert!(e.contains("\"root\"") && e.contains("admin, edit, view"), "{e}");
        let e = users.create("bob", "view", Some("Team_A")).unwrap_err().to_string();
        assert!(e.contains("invalid namespace \"Team_A\""), "{e}");
        users.create("bob", "view", None).unwrap();
        assert!(matches!(users.create("bob", "edit", None), Err(Error::Exists(_))));
        assert!(matches!(users.delete("carol"), Err(Error::NotFound(_))));
    }
}
