//! Manifests: multi-document YAML (or JSON) text → validated objects, with every error
//! naming the file, the document, the object and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use super::validate::{self, FieldError};
use super::yaml::{self, YamlError};
use super::{Kind, Object};

/// The largest manifest text a2a reads (a guard against feeding it a disk image).
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file name as the user gave it, or `<stdin>`.
    pub source: String,
    /// 1-based, counting the documents of the file (empty ones included, as kubectl does).
    pub document: usize,
}

/// One problem in a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub source: String,
    /// `None` for errors about the whole file (not YAML, empty...).
    pub document: Option<usize>,
    /// `Kind/name`, once known.
    pub object: Option<String>,
    pub error: FieldError,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
            if let Some(o) = &self.object {
                write!(f, " ({o})")?;
            }
        }
        write!(f, ": {}", self.error)
    }
}

/// A document that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub origin: Origin,
    pub object: Object,
    /// The document as written, as JSON (what is sent to the API server).
    pub raw: Value,
}

impl Document {
    /// `agent/name` style reference, for messages.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.object.kind().as_str().to_ascii_lowercase(), self.object.name())
    }
}

fn whole_file(source: &str, message: impl Into<String>) -> ManifestError {
    ManifestError { source: source.to_owned(), document: None, object: None, error: FieldError::new("", message) }
}

/// Splits `text` into JSON documents. Empty documents are skipped; a syntax error ends the
/// file (YAML cannot be resynchronised after one) and is reported with its line.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<(Origin, Value)>, Vec<ManifestError>> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(vec![whole_file(
            source,
            format!("is {} bytes; manifests are limited to {} MiB", text.len(), MAX_MANIFEST_BYTES >> 20),
        )]);
    }
    if text.contains('\0') {
        return Err(vec![whole_file(source, "is binary (it contains NUL bytes), not a YAML or JSON manifest")]);
    }
    let (values, error) = yaml::documents(text);
    if let Some((i, e)) = error {
        let msg = match e {
            YamlError::Syntax(e) => {
                let msg = e.to_string();
                let msg = msg.strip_prefix("invalid type: ").map_or(msg.clone(), |m| format!("not a manifest: {m}"));
                FieldError::new("", format!("not valid YAML: {msg}"))
            }
            YamlError::NotFinite { path, value } => FieldError::new(
                path,
                format!("{value} is not a number a2a accepts (infinity and NaN have no JSON form)"),
            ),
            e @ (YamlError::TooDeep { .. } | YamlError::NotUtf8 { .. }) => FieldError::new("", e.to_string()),
        };
        return Err(vec![ManifestError { source: source.to_owned(), document: Some(i + 1), object: None, error: msg }]);
    }
    let docs: Vec<(Origin, Value)> = values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| (Origin { source: source.to_owned(), document: i + 1 }, v))
        .collect();
    if docs.is_empty() {
        return Err(vec![whole_file(source, "has no documents (it is empty or only comments)")]);
    }
    Ok(docs)
}

fn object_label(v: &Value) -> Option<String> {
    let kind = v.get("kind")?.as_str()?;
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .or_else(|| meta.and_then(|m| m.get("generateName")).and_then(Value::as_str))
        .unwrap_or("<no name>");
    Some(format!("{kind}/{name}"))
}

/// The core `v1` kinds a manifest may carry beside a2a's own: what Agents reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigKind {
    Secret,
    ConfigMap,
}

impl ConfigKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Secret => "Secret",
            ConfigKind::ConfigMap => "ConfigMap",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ConfigKind::Secret => "secrets",
            ConfigKind::ConfigMap => "configmaps",
        }
    }
}

/// A core `v1` Secret or ConfigMap in a manifest, applied before the Agents that reference
/// it, as `kubectl apply` would. What it holds is checked by the API server's own admission
/// when it is applied; nothing here reads or prints its values.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigDocument {
    pub origin: Origin,
    pub kind: ConfigKind,
    pub name: String,
    pub namespace: Option<String>,
    /// The document as written (what is sent to the API server).
    pub raw: Value,
}

impl ConfigDocument {
    /// `secret/name` style reference, for messages.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind.as_str().to_ascii_lowercase(), self.name)
    }
}

/// Takes out of `docs` the core `v1` Secrets and ConfigMaps. One without a name is an error
/// naming its document; `generateName` is refused, as `kubectl apply` refuses it.
pub fn take_config(docs: &mut Vec<(Origin, Value)>) -> (Vec<ConfigDocument>, Vec<ManifestError>) {
    let mut taken = Vec::new();
    let mut errors = Vec::new();
    docs.retain(|(origin, raw)| {
        let kind = match (raw.get("apiVersion").and_then(Value::as_str), raw.get("kind").and_then(Value::as_str)) {
            (Some("v1"), Some("Secret")) => ConfigKind::Secret,
            (Some("v1"), Some("ConfigMap")) => ConfigKind::ConfigMap,
            _ => return true,
        };
        let meta = raw.get("metadata");
        let text = |field: &str| meta.and_then(|m| m.get(field)).and_then(Value::as_str).map(str::to_owned);
        match text("name").filter(|n| !n.is_empty()) {
            Some(name) => taken.push(ConfigDocument {
                origin: origin.clone(),
                kind,
                name,
                namespace: text("namespace").filter(|n| !n.is_empty()),
                raw: raw.clone(),
            }),
            None => errors.push(ManifestError {
                source: origin.source.clone(),
                document: Some(origin.document),
                object: Some(format!("{}/<no name>", kind.as_str())),
                error: FieldError::new("metadata.name", "required: a Secret or ConfigMap is applied by name"),
            }),
        }
        false
    });
    (taken, errors)
}

/// A document of a kind that is not a2a's (an Argo CD Application, a Flux Kustomization...):
/// `a2a validate` says it skipped it, as kubectl does for kinds it has no schema for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    pub origin: Origin,
    pub api_version: String,
    /// `Kind/name`.
    pub object: String,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {} {}: not an a2a kind ({})", self.origin.source, self.object, self.api_version)
    }
}

/// Takes out of `docs` those whose `apiVersion` names another API group than a2a's, with a
/// `kind`: what they are cannot be checked here. Documents without both stay, for
/// validation to name what they miss.
pub fn take_foreign(docs: &mut Vec<(Origin, Value)>) -> Vec<Foreign> {
    let mut foreign = Vec::new();
    docs.retain(|(origin, raw)| {
        let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        match object_label(raw) {
            Some(object) if !api_version.is_empty() && group != super::GROUP => {
                foreign.push(Foreign { origin: origin.clone(), api_version: api_version.to_owned(), object });
                false
            }
            _ => true,
        }
    });
    foreign
}

/// Validates parsed documents, each on its own and then together (duplicates, budget
/// parents). All errors are returned; the documents only when there are none.
pub fn validate_documents(docs: Vec<(Origin, Value)>) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut valid = Vec::new();
    let mut errors = Vec::new();
    for (origin, raw) in docs {
        let label = object_label(&raw);
        match validate::validate(&raw) {
            Ok(object) => valid.push(Document { origin, object, raw }),
            Err(errs) => errors.extend(errs.into_iter().map(|error| ManifestError {
                source: origin.source.clone(),
                document: Some(origin.document),
                object: label.clone(),
                error,
            })),
        }
    }
    errors.extend(check_together(&valid));
    if errors.is_empty() { Ok(valid) } else { Err(errors) }
}

fn error_at(doc: &Document, path: &str, message: String) -> ManifestError {
    ManifestError {
        source: doc.origin.source.clone(),
        document: Some(doc.origin.document),
        object: Some(format!("{}/{}", doc.object.kind(), doc.object.name())),
        error: FieldError::new(path, message),
    }
}

fn check_together(docs: &[Document]) -> Vec<ManifestError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(Kind, Option<&str>, &str), &Document> = HashMap::new();
    for doc in docs {
        let meta = doc.object.metadata();
        let Some(name) = meta.name.as_deref() else {
            continue;
        };
        let key = (doc.object.kind(), meta.namespace.as_deref(), name);
        if let Some(first) = seen.insert(key, doc) {
            seen.insert(key, first);
            errors.push(error_at(
                doc,
                "metadata.name",
                format!(
                    "{} {name:?} is also defined in {} document {}",
                    doc.object.kind(),
                    first.origin.source,
                    first.origin.document
                ),
            ));
        }
    }
    // Budget parents: no cycles among the budgets given together, and a child's limits fit
    // in its parent's.
    let budgets: BTreeMap<&str, &Document> =
        docs.iter().filter(|d| d.object.kind() == Kind::ResourceBudget).map(|d| (d.object.name(), d)).collect();
    for (name, doc) in &budgets {
        let Object::ResourceBudget(b) = &doc.object else {
            continue;
        };
        let mut chain = vec![*name];
        let mut cur = b.spec.parent.as_deref();
        while let Some(p) = cur {
            if chain.contains(&p) {
                chain.push(p);
                errors.push(error_at(
                    doc,
                    "spec.parent",
                    format!("budget parents form a cycle: {}", chain.join(" → ")),
                ));
                break;
            }
            chain.push(p);
            cur = budgets.get(p).and_then(|d| match &d.object {
                Object::ResourceBudget(pb) => pb.spec.parent.as_deref(),
                _ => None,
            });
        }
        if let Some(parent) = b.spec.parent.as_deref().and_then(|p| budgets.get(p))
            && let Object::ResourceBudget(pb) = &parent.object
            && let (Some(mine), Some(theirs)) = (&b.spec.limits.memory, &pb.spec.limits.memory)
            && mine.value() > theirs.value()
        {
            errors.push(error_at(
                doc,
                "spec.limits.memory",
                format!(
                    "{mine} is more than parent budget {:?} allows ({theirs})",
                    pb.metadata.name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    errors
}

/// Parses and validates one manifest text.
pub fn load_str(source: &str, text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    validate_documents(parse_documents(source, text)?)
}

/// Turns file bytes into text, or says why they are not a manifest.
pub fn decode(source: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(whole_file(
            source,
            format!("is {} bytes; manifests are limited to {} MiB", bytes.len(), MAX_MANIFEST_BYTES >> 20),
        ));
    }
    // A byte order mark says how the text is encoded, as kubectl reads it: UTF-16 from
    // editors that save "Unicode" that way, and a UTF-8 mark that is only skipped.
    let utf16 = match bytes.get(..2) {
        Some([0xff, 0xfe]) => Some(u16::from_le_bytes as fn([u8; 2]) -> u16),
        Some([0xfe, 0xff]) => Some(u16::from_be_bytes as fn([u8; 2]) -> u16),
        _ => None,
    };
    if let Some(unit) = utf16 {
        let body = &bytes[2..];
        if !body.len().is_multiple_of(2) {
            return Err(whole_file(
                source,
                "is UTF-16 text (it starts with a byte order mark) with an odd number of bytes",
            ));
        }
        let units: Vec<u16> = body.chunks_exact(2).map(|c| unit([c[0], c[1]])).collect();
        return String::from_utf16(&units)
            .map_err(|_| whole_file(source, "is UTF-16 text (it starts with a byte order mark) that does not decode"));
    }
    let bytes = match bytes.strip_prefix(b"\xef\xbb\xbf") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        whole_file(
            source,
            format!(
                "is not UTF-8 text (invalid byte at offset {}); is it a binary file?",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}
