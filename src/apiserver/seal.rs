//! Encryption at rest of the objects whose values are secret (core `v1` Secrets), as the
//! kube-apiserver's `EncryptionConfiguration` with the `aesgcm` provider and k3s's
//! `--secrets-encryption` do: the store's write-ahead log and database hold such an object only
//! as AES-256-GCM ciphertext, while the server keeps and serves it in the clear.
//!
//! The keys live in `$A2A_HOME/pki/secrets.key` (0600, created on the first start), one per
//! line, `NAME:BASE64(32 bytes)`; the first line is the key new writes use, the others only
//! decrypt, so a key can be rotated by adding a new first line. A sealed value is
//! `k8s:enc:aesgcm:v1:NAME:` + a random 12-byte nonce + the ciphertext and tag, with the
//! object's storage key as associated data (a ciphertext copied to another key does not
//! open). The key's name in every value says which key opens it.
//!
//! A store that holds sealed objects is never opened without the key that opens them: the
//! server refuses to start, naming the key file, and changes nothing ([`Sealer::load_or_create`]).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::home::{self, Kind};
use super::store::ObjectKey;

/// What every sealed value starts with, before the key's name.
pub const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// The storage prefix of the resources whose objects are sealed.
pub const SEALED_RESOURCES: &[&str] = &["/secrets"];

/// The key file, relative to the home.
pub const KEY_FILE: &str = "pki/secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Home(#[from] home::Error),
    #[error("{path}: line {line}: {problem} (expected NAME:BASE64 of 32 bytes)")]
    BadKeyFile { path: PathBuf, line: usize, problem: String },
    #[error(
        "{path} is missing, but {evidence}, which only that key opens; a2a does not start without it, so that \
         they are not lost. Restore the key file from your backup of the home (see docs/security.md); nothing was \
         changed"
    )]
    KeyMissing { path: PathBuf, evidence: String },
    #[error("object {key} is sealed with key {name:?}, which {path} does not hold; restore the key file that has it")]
    UnknownKey { key: String, name: String, path: PathBuf },
    #[error("object {key} does not decrypt with key {name:?} from {path}: the ciphertext or the key was changed")]
    Open { key: String, name: String, path: PathBuf },
    #[error("object {key}: the stored value is not a well-formed sealed value")]
    Malformed { key: String },
    #[error("encrypting object {key} failed")]
    Seal { key: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct NamedKey {
    name: String,
    key: LessSafeKey,
}

/// The keys that seal and open stored objects. Its `Debug` shows key names only.
pub struct Sealer {
    path: PathBuf,
    /// The first one seals.
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("path", &self.path)
            .field("keys", &self.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

/// Whether objects of the resource stored under `storage` are sealed.
pub fn is_sealed_resource(storage: &str) -> bool {
    SEALED_RESOURCES.contains(&storage)
}

/// Whether stored bytes are a sealed value.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(PREFIX)
}

fn aad(key: &ObjectKey) -> Vec<u8> {
    format!("{}/{}/{}", key.resource, key.namespace, key.name).into_bytes()
}

impl Sealer {
    /// Reads the key file under `home`, or creates one with a new random key when it is
    /// missing and the store at `store` holds no sealed object.
    ///
    /// Beside the store, `sealed-keys` lists the names of the keys the store may hold
    /// objects sealed with (names only). It is written before the first object can be sealed,
    /// so a key file lost later is noticed without reading the store.
    pub fn load_or_create(home: &Path, store: &Path) -> Result<Sealer> {
        let path = home.join(KEY_FILE);
        let marker = store.with_file_name("sealed-keys");
        let listed = home::read(&marker, Kind::Public)?;
        if let Some(text) = home::read(&path, Kind::Secret)? {
            let sealer = Sealer::parse(&path, &text)?;
            let names = sealer.keys.iter().map(|k| k.name.as_str());
            let mut all: Vec<&str> = listed.as_deref().unwrap_or_default().split_whitespace().collect();
            let before = all.len();
            all.extend(names.filter(|n| !listed.as_deref().unwrap_or_default().split_whitespace().any(|l| l == *n)));
            if listed.is_none() || all.len() != before {
                home::write_private(&marker, format!("{}\n", all.join("\n")).as_bytes())?;
            }
            return Ok(sealer);
        }
        if let Some(names) = listed.filter(|l| !l.trim().is_empty()) {
            let names: Vec<&str> = names.split_whitespace().collect();
            return Err(Error::KeyMissing {
                path,
                evidence: format!(
                    "{} says the store may hold Secrets encrypted with key {}",
                    marker.display(),
                    names.join(", ")
                ),
            });
        }
        check_openable(&path, store)?;
        let mut bytes = [0u8; 32];
        let mut id = [0u8; 4];
        getrandom::fill(&mut bytes)
            .and_then(|()| getrandom::fill(&mut id))
            .map_err(|_| Error::Seal { key: path.display().to_string() })?;
        // A name no earlier key had: a Secret sealed with a lost key is never taken for one
        // sealed with this one.
        let name = format!("key-{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let text = format!("{name}:{}\n", STANDARD.encode(bytes));
        home::write_private(&path, text.as_bytes())?;
        home::write_private(&marker, format!("{name}\n").as_bytes())?;
        tracing::info!(path = %path.display(), "created the key that encrypts Secrets at rest");
        Sealer::parse(&path, &text)
    }

    /// Parses a key file's text.
    pub fn parse(path: &Path, text: &str) -> Result<Sealer> {
        let bad = |line: usize, problem: &str| Error::BadKeyFile {
            path: path.to_path_buf(),
            line,
            problem: problem.to_string(),
        };
        let mut keys: Vec<NamedKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, secret) = line.split_once(':').ok_or_else(|| bad(i + 1, "no ':' after the key's name"))?;
            let name_ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !name_ok {
                return Err(bad(i + 1, "a key's name is 1 to 64 letters, digits, '-', '_' or '.'"));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(bad(i + 1, "a key of that name is already in the file"));
            }
            let bytes = STANDARD.decode(secret.trim()).map_err(|_| bad(i + 1, "the key is not valid base64"))?;
            let unbound =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad(i + 1, "the key is not 32 bytes long"))?;
            keys.push(NamedKey { name: name.to_string(), key: LessSafeKey::new(unbound) });
        }
        if keys.is_empty() {
            return Err(bad(0, "the file holds no key"));
        }
        Ok(Sealer { path: path.to_path_buf(), keys })
    }

    /// The name of the key new writes are sealed with.
    pub fn current(&self) -> &str {
        &self.keys[0].name
    }

    /// Seals an object's JSON for storage under `key`.
    pub fn seal(&self, key: &ObjectKey, plain: &[u8]) -> Result<Vec<u8>> {
        let k = &self.keys[0];
        let failed = || Error::Seal { key: key.to_string() };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| failed())?;
        let mut out = Vec::with_capacity(PREFIX.len() + k.name.len() + 1 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        k.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(key)), &mut body)
            .map_err(|_| failed())?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a sealed value stored under `key`.
    pub fn open(&self, key: &ObjectKey, sealed: &[u8]) -> Result<Vec<u8>> {
        let malformed = || Error::Malformed { key: key.to_string() };
        let rest = sealed.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| malformed())?;
        let rest = &rest[colon + 1..];
        if rest.len() < NONCE_LEN + 16 {
            return Err(malformed());
        }
        let k = self.keys.iter().find(|k| k.name == name).ok_or_else(|| Error::UnknownKey {
            key: key.to_string(),
            name: name.to_string(),
            path: self.path.clone(),
        })?;
        let nonce = Nonce::try_assume_unique_for_key(&rest[..NONCE_LEN]).map_err(|_| malformed())?;
        let mut body = rest[NONCE_LEN..].to_vec();
        let plain = k.key.open_in_place(nonce, Aad::from(aad(key)), &mut body).map_err(|_| Error::Open {
            key: key.to_string(),
            name: name.to_string(),
            path: self.path.clone(),
        })?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }
}

/// Refuses a missing key file (`path`) when the store at `store` (its database or its
/// write-ahead log) holds a sealed object; reads without changing anything. A database that
/// cannot be read without a repair (after a crash) is let through: opening the store then
/// refuses each sealed object whose key is missing, naming it.
pub fn check_openable(path: &Path, store: &Path) -> Result<()> {
    match super::store::sealed_objects(store) {
        Ok(sealed) => match sealed.first() {
            None => Ok(()),
            Some(first) => Err(Error::KeyMissing {
                path: path.to_path_buf(),
                evidence: format!("the store holds {} encrypted Secret(s) (the first: {first})", sealed.len()),
            }),
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not look for encrypted Secrets before opening the store");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(text: &str) -> Sealer {
        Sealer::parse(Path::new("/home/pki/secrets.key"), text).unwrap()
    }

    const K1: &str = "key1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const K2: &str = "key2:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn a_sealed_value_names_its_key_hides_the_text_and_opens_only_where_it_was_stored() {
        let s = sealer(K1);
        let key = ObjectKey::new("/secrets", "default", "api");
        let sealed = s.seal(&key, br#"{"data":{"k":"c2VjcmV0"}}"#).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(8).any(|w| w == b"c2VjcmV0"));
        assert_eq!(s.open(&key, &sealed).unwrap(), br#"{"data":{"k":"c2VjcmV0"}}"#);
        let elsewhere = ObjectKey::new("/secrets", "default", "other");
        assert!(matches!(s.open(&elsewhere, &sealed), Err(Error::Open { .. })));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(s.open(&key, &flipped), Err(Error::Open { .. })));
    }

    #[test]
    fn a_rotated_file_seals_with_its_first_key_and_still_opens_the_old_ones() {
        let key = ObjectKey::new("/secrets", "ns", "a");
        let old = sealer(K1).seal(&key, b"{}").unwrap();
        let rotated = sealer(&format!("{K2}\n{K1}\n"));
        assert_eq!(rotated.current(), "key2");
        assert_eq!(rotated.open(&key, &old).unwrap(), b"{}");
        assert!(rotated.seal(&key, b"{}").unwrap().starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        let e = sealer(K2).open(&key, &old).unwrap_err().to_string();
        assert!(e.contains("\"key1\"") && e.contains("/home/pki/secrets.key"), "{e}");
    }

    #[test]
    fn a_bad_key_file_is_refused_with_the_line() {
        let path = Path::new("/k");
        for (text, problem) in [
            ("", "holds no key"),
            ("key1", "no ':'"),
            ("key1:AAAA", "not 32 bytes"),
            ("key1:%%%", "not valid base64"),
            (&format!("{K1}\n{K1}"), "already in the file"),
        ] {
            let e = Sealer::parse(path, text).unwrap_err().to_string();
            assert!(e.contains(problem), "{text}: {e}");
        }
        assert!(!format!("{:?}", sealer(K1)).contains("AAAA"));
    }
}
