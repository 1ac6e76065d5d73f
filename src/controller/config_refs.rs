//! The Secrets and ConfigMaps an Agent references (`env[].valueFrom`, `envFrom`,
//! `secretFiles`), walked in one place for both modes: the node resolves them into the
//! environment and files of a process, the operator into a Deployment's checksum; both roll
//! replicas from the same digests and name a missing object or key with the same message.
//!
//! Nothing here shows a value: [`Resolved`] and [`ObjectData`] print without them, errors
//! name objects and keys only, and a digest is keyed by the object's uid (an HMAC), so that
//! who can read the digest (in an Agent's status or a pod template) but not the Secret cannot
//! test guesses of a value against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::api::agent::{AgentSpec, SecretFiles};
use crate::api::validate_refs::is_env_name;

/// The kind of a referenced object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

impl SourceKind {
    /// As messages name the kind after a key (`in Secret default/openai`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        }
    }

    /// As kubelet names the kind of a missing object (`secret "openai" not found`).
    pub fn lower(self) -> &'static str {
        match self {
            SourceKind::Secret => "secret",
            SourceKind::ConfigMap => "configmap",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an Agent uses one referenced object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Use<'a> {
    /// `env[].valueFrom`: one key as the variable `var`.
    EnvKey { var: &'a str, key: &'a str },
    /// `envFrom[]`: every key, as `prefix` + key.
    EnvFrom { prefix: &'a str },
    /// `secretFiles[]`: keys as files.
    Files(&'a SecretFiles),
}

/// One reference of an Agent to a Secret or ConfigMap in its namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference<'a> {
    pub kind: SourceKind,
    pub name: &'a str,
    pub optional: bool,
    pub what: Use<'a>,
}

/// Every reference of `spec`, in the order a process's environment is built: `envFrom` first
/// (a later source wins), then `env` (wins over `envFrom`), then `secretFiles`.
pub fn references(spec: &AgentSpec) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    for from in &spec.env_from {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, sel) = match (&from.secret_ref, &from.config_map_ref) {
            (Some(s), _) => (SourceKind::Secret, s),
            (None, Some(c)) => (SourceKind::ConfigMap, c),
            (None, None) => continue,
        };
        out.push(Reference {
            kind,
            name: &sel.name,
            optional: sel.optional.unwrap_or(false),
            what: Use::EnvFrom { prefix },
        });
    }
    for e in &spec.env {
        let Some(from) = &e.value_from else { continue };
        let (kind, sel) = match (&from.secret_key_ref, &from.config_map_key_ref) {
            (Some(s), _) => (SourceKind::Secret, s),
            (None, Some(c)) => (SourceKind::ConfigMap, c),
            (None, None) => continue,
        };
        out.push(Reference {
            kind,
            name: &sel.name,
            optional: sel.optional.unwrap_or(false),
            what: Use::EnvKey { var: &e.name, key: &sel.key },
        });
    }
    for f in &spec.secret_files {
        out.push(Reference {
            kind: SourceKind::Secret,
            name: &f.secret_name,
            optional: f.optional.unwrap_or(false),
            what: Use::Files(f),
        });
    }
    out
}

/// The objects `spec` references, each once.
pub fn objects(spec: &AgentSpec) -> BTreeSet<(SourceKind, String)> {
    references(spec).into_iter().map(|r| (r.kind, r.name.to_owned())).collect()
}

/// What resolution reads of a Secret or ConfigMap: its uid (the digest's key) and its keys
/// with their bytes. Printed without the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObjectData {
    pub uid: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for ObjectData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectData").field("uid", &self.uid).field("keys", &self.data.keys()).finish()
    }
}

impl ObjectData {
    pub fn of_secret(s: &Secret) -> ObjectData {
        let data = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        ObjectData { uid: s.metadata.uid.clone().unwrap_or_default(), data }
    }

    /// `data` and `binaryData` together (the API server keeps their keys apart).
    pub fn of_config_map(c: &ConfigMap) -> ObjectData {
        let mut data: BTreeMap<String, Vec<u8>> =
            c.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        data.extend(c.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
        ObjectData { uid: c.metadata.uid.clone().unwrap_or_default(), data }
    }

    /// A digest of the data: HMAC-SHA256 keyed by the object's uid over every key and value
    /// (each length-prefixed, in key order), as 64 hex digits. It changes when and only when
    /// the data changes (or the object is made anew).
    pub fn digest(&self) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.uid.as_bytes());
        let mut ctx = ring::hmac::Context::with_key(&key);
        for (k, v) in &self.data {
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(k.as_bytes());
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v);
        }
        hex(ctx.sign().as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an Agent's references cannot be resolved; the message is kubelet's (the reason of the
/// condition is [`CONFIG_ERROR_REASON`]). Never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("{} \"{name}\" not found", kind.lower())]
    NotFound { kind: SourceKind, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey { kind: SourceKind, namespace: String, name: String, key: String },
    #[error("key {key} in {kind} {namespace}/{name} is not UTF-8 text and cannot be the environment variable {var}")]
    NotText { kind: SourceKind, namespace: String, name: String, key: String, var: String },
}

/// The reason of the condition (and Event) of an agent whose references cannot be resolved,
/// as kubelet's container state says it.
pub const CONFIG_ERROR_REASON: &str = "CreateContainerConfigError";

/// One Secret's files: `files` (a relative path and its bytes) to appear at `mount_path`.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSet {
    pub secret: String,
    pub mount_path: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// What a process is given from its references. Printed without the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// In order; a later entry of a name wins.
    pub env: Vec<(String, String)>,
    pub files: Vec<FileSet>,
    /// `envFrom` keys skipped because they are not variable names (or their values are not
    /// UTF-8 text), as `Secret/name: key`.
    pub skipped: Vec<String>,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<(&str, Vec<&str>)> = self
            .files
            .iter()
            .map(|s| (s.mount_path.as_str(), s.files.iter().map(|(p, _)| p.as_str()).collect()))
            .collect();
        f.debug_struct("Resolved")
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("files", &files)
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// Resolves every reference of `spec` (an Agent in `namespace`) against `lookup`: a missing
/// object or key that is not `optional` is an error naming it; an optional one contributes
/// nothing.
pub fn resolve<'d>(
    spec: &AgentSpec,
    namespace: &str,
    lookup: impl Fn(SourceKind, &str) -> Option<&'d ObjectData>,
) -> Result<Resolved, Unresolved> {
    let mut out = Resolved::default();
    for r in references(spec) {
        let Some(obj) = lookup(r.kind, r.name) else {
            if r.optional {
                if let Use::Files(f) = r.what {
                    out.files.push(FileSet {
                        secret: r.name.to_owned(),
                        mount_path: f.mount_path(),
                        files: Vec::new(),
                    });
                }
                continue;
            }
            return Err(Unresolved::NotFound { kind: r.kind, name: r.name.to_owned() });
        };
        let missing = |key: &str| Unresolved::MissingKey {
            kind: r.kind,
            namespace: namespace.to_owned(),
            name: r.name.to_owned(),
            key: key.to_owned(),
        };
        match r.what {
            Use::EnvKey { var, key } => match obj.data.get(key) {
                Some(v) => {
                    let text = String::from_utf8(v.clone()).map_err(|_| Unresolved::NotText {
                        kind: r.kind,
                        namespace: namespace.to_owned(),
                        name: r.name.to_owned(),
                        key: key.to_owned(),
                        var: var.to_owned(),
                    })?;
                    out.env.push((var.to_owned(), text));
                }
                None if r.optional => {}
                None => return Err(missing(key)),
            },
            Use::EnvFrom { prefix } => {
                for (key, v) in &obj.data {
                    let var = format!("{prefix}{key}");
                    match String::from_utf8(v.clone()) {
                        Ok(text) if is_env_name(&var) => out.env.push((var, text)),
                        _ => out.skipped.push(format!("{}/{}: {key}", r.kind, r.name)),
                    }
                }
            }
            Use::Files(f) => {
                let mut files = Vec::new();
                if f.items.is_empty() {
                    files.extend(obj.data.iter().map(|(k, v)| (k.clone(), v.clone())));
                } else {
                    for item in &f.items {
                        match obj.data.get(&item.key) {
                            Some(v) => files.push((item.path.clone(), v.clone())),
                            None if r.optional => {}
                            None => return Err(missing(&item.key)),
                        }
                    }
                }
                out.files.push(FileSet { secret: r.name.to_owned(), mount_path: f.mount_path(), files });
            }
        }
    }
    Ok(out)
}

/// The digest of each referenced object that exists, by `Kind/name`: what a replica's spec
/// hash (and a pod template's checksum) carries, so a change of the data rolls the replicas
/// and a change of any other object does not.
pub fn digests<'d>(
    spec: &AgentSpec,
    lookup: impl Fn(SourceKind, &str) -> Option<&'d ObjectData>,
) -> BTreeMap<String, String> {
    objects(spec)
        .into_iter()
        .filter_map(|(kind, name)| lookup(kind, &name).map(|o| (format!("{kind}/{name}"), o.digest())))
        .collect()
}

/// One checksum of the digests (for a pod template annotation); `None` when the agent
/// references nothing.
pub fn checksum(digests: &BTreeMap<String, String>, referenced: &BTreeSet<(SourceKind, String)>) -> Option<String> {
    if referenced.is_empty() {
        return None;
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (kind, name) in referenced {
        let id = format!("{kind}/{name}");
        let d = digests.get(&id).map_or("absent", String::as_str);
        ctx.update(format!("{id}={d}\n").as_bytes());
    }
    Some(hex(ctx.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::agent::{EnvFromSource, EnvVar, EnvVarSource, KeySelector, KeyToPath, ObjectSelector};

    fn obj(uid: &str, pairs: &[(&str, &str)]) -> ObjectData {
        ObjectData {
            uid: uid.into(),
            data: pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn key_ref(name: &str, key: &str, optional: bool) -> KeySelector {
        KeySelector { name: name.into(), key: key.into(), optional: optional.then_some(true) }
    }

    fn spec() -> AgentSpec {
        AgentSpec {
            env: vec![
                EnvVar { name: "PLAIN".into(), value: "p".into(), value_from: None },
                EnvVar {
                    name: "API_KEY".into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(key_ref("openai", "api-key", false)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "MODE".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(key_ref("settings", "mode", false)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            env_from: vec![EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(ObjectSelector { name: "settings".into(), optional: None }),
                ..Default::default()
            }],
            secret_files: vec![SecretFiles {
                secret_name: "openai".into(),
                items: vec![KeyToPath { key: "api-key".into(), path: "key".into() }],
                ..Default::default()
            }],
            ..AgentSpec::default()
        }
    }

    fn world() -> BTreeMap<(SourceKind, String), ObjectData> {
        BTreeMap::from([
            ((SourceKind::Secret, "openai".into()), obj("u1", &[("api-key", "sk-123")])),
            ((SourceKind::ConfigMap, "settings".into()), obj("u2", &[("mode", "fast"), ("bad-key", "x")])),
            ((SourceKind::Secret, "unrelated".into()), obj("u3", &[("x", "y")])),
        ])
    }

    fn lookup<'w>(
        w: &'w BTreeMap<(SourceKind, String), ObjectData>,
    ) -> impl Fn(SourceKind, &str) -> Option<&'w ObjectData> + 'w {
        move |k, n| w.get(&(k, n.to_owned()))
    }

    #[test]
    fn references_resolve_into_env_in_kubelets_order_and_files() {
        let w = world();
        let r = resolve(&spec(), "default", lookup(&w)).unwrap();
        assert_eq!(
            r.env,
            vec![
                ("CFG_mode".into(), "fast".into()),
                ("API_KEY".into(), "sk-123".into()),
                ("MODE".into(), "fast".into())
            ]
        );
        assert_eq!(r.skipped, vec!["ConfigMap/settings: bad-key".to_owned()], "not a variable name: skipped");
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].mount_path, "/run/secrets/openai");
        assert_eq!(r.files[0].files, vec![("key".to_owned(), b"sk-123".to_vec())]);
        let shown = format!("{r:?} {:?}", w.values().collect::<Vec<_>>());
        assert!(!shown.contains("sk-123") && !shown.contains("fast"), "{shown}");
    }

    #[test]
    fn a_missing_object_or_key_is_named_as_kubelet_names_it_unless_optional() {
        let mut w = world();
        w.remove(&(SourceKind::Secret, "openai".into()));
        assert_eq!(resolve(&spec(), "default", lookup(&w)).unwrap_err().to_string(), "secret \"openai\" not found");
        let mut w = world();
        w.insert((SourceKind::Secret, "openai".into()), obj("u1", &[("other", "v")]));
        let e = resolve(&spec(), "default", lookup(&w)).unwrap_err();
        assert_eq!(e.to_string(), "couldn't find key api-key in Secret default/openai");
        let mut optional = spec();
        optional.env[1].value_from.as_mut().unwrap().secret_key_ref.as_mut().unwrap().optional = Some(true);
        optional.secret_files[0].optional = Some(true);
        let r = resolve(&optional, "default", lookup(&w)).unwrap();
        assert!(!r.env.iter().any(|(k, _)| k == "API_KEY"));
        assert!(r.files[0].files.is_empty());
    }

    #[test]
    fn digests_follow_the_referenced_data_only() {
        let w = world();
        let before = digests(&spec(), lookup(&w));
        assert_eq!(before.keys().collect::<Vec<_>>(), ["ConfigMap/settings", "Secret/openai"]);
        let mut other = world();
        other.insert((SourceKind::Secret, "unrelated".into()), obj("u3", &[("x", "changed")]));
        assert_eq!(digests(&spec(), lookup(&other)), before, "an unrelated Secret changes nothing");
        let mut rotated = world();
        rotated.insert((SourceKind::Secret, "openai".into()), obj("u1", &[("api-key", "sk-456")]));
        let after = digests(&spec(), lookup(&rotated));
        assert_ne!(after["Secret/openai"], before["Secret/openai"]);
        assert_eq!(after["ConfigMap/settings"], before["ConfigMap/settings"]);
        // Keyed by the uid: the same data in another object digests differently.
        assert_ne!(obj("a", &[("k", "v")]).digest(), obj("b", &[("k", "v")]).digest());
        // Length-prefixed: moving a byte between key and value is a change.
        assert_ne!(obj("a", &[("ab", "c")]).digest(), obj("a", &[("a", "bc")]).digest());
        let referenced = objects(&spec());
        let sum = checksum(&before, &referenced).unwrap();
        assert_ne!(checksum(&after, &referenced).unwrap(), sum);
        assert_eq!(checksum(&BTreeMap::new(), &BTreeSet::new()), None);
    }
}
