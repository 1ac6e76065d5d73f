//! Validation of one object: its structure against the generated CRD schema (the same schema
//! a Kubernetes API server enforces), then the rules a schema cannot say (DAG, templates,
//! requests within limits...). Every problem is reported, each with its field path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path};
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::Deserialize;
use serde_json::Value;

use super::agent::{Agent, Protocol};
use super::budget::ResourceBudget;
use super::common::{API_VERSION, GROUP, ResourceAmounts};
use super::quantity::{self, CpuAmount, json_type_name};
use super::template::{self, Ref};
use super::workflow::Workflow;
use super::{Kind, Object};

/// One problem at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.tasks[1].dependsOn`; empty for the object as a whole.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Parses and validates one object given as JSON. On success the typed object; otherwise
/// every problem found.
pub fn validate(value: &Value) -> Result<Object, Vec<FieldError>> {
    validate_in_place(&mut value.clone())
}

/// [`validate`] without the copy, for callers that drop a rejected object: the walk prunes
/// what it rejects from `value` itself, so after an error `value` may lack those fields;
/// when it returns `Ok`, nothing was pruned and `value` is as it came. (The API server
/// validates every write, status writes of 10,000-task workflows included, this way.)
pub fn validate_in_place(value: &mut Value) -> Result<Object, Vec<FieldError>> {
    let kind = identify(value).map_err(|e| vec![e])?;
    // Metadata rules look at the object as written, before any pruning.
    let mut metadata_errors = Vec::new();
    check_metadata(kind, value.get("metadata"), &mut metadata_errors);
    let mut errors = Vec::new();
    // The walk prunes what it rejects, so the rules below still run on the rest of the
    // object and one pass reports (nearly) everything.
    walk(schema(kind), value, &mut String::new(), &mut errors);
    errors.extend(metadata_errors);
    let pruned = &*value;
    let typed = match kind {
        Kind::Agent => Agent::deserialize(pruned).map(Object::Agent),
        Kind::Workflow => Workflow::deserialize(pruned).map(Object::Workflow),
        Kind::ResourceBudget => ResourceBudget::deserialize(pruned).map(Object::ResourceBudget),
    };
    let object = match typed {
        Ok(object) => object,
        // With schema errors, a failed conversion is a consequence of them: say nothing more.
        Err(_) if !errors.is_empty() => return Err(errors),
        Err(e) => return Err(vec![FieldError::new("", e.to_string())]),
    };
    let mut rule_errors = Vec::new();
    match &object {
        Object::Agent(a) => check_agent(a, &mut rule_errors),
        Object::Workflow(w) => check_workflow(w, &mut rule_errors),
        Object::ResourceBudget(b) => check_budget(b, &mut rule_errors),
    }
    // A rule about a field the schema already rejected (and pruned) would only repeat it.
    rule_errors.retain(|r| !errors.iter().any(|e| !e.path.is_empty() && within(&r.path, &e.path)));
    errors.extend(rule_errors);
    if errors.is_empty() { Ok(object) } else { Err(errors) }
}

/// Whether `path` is `outer` or inside it (`spec.tasks[1].agent` is within `spec.tasks[1]`).
fn within(path: &str, outer: &str) -> bool {
    path.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Reads `apiVersion` and `kind`, with precise errors for everything that is not ours.
pub fn identify(value: &Value) -> Result<Kind, FieldError> {
    let Value::Object(map) = value else {
        return Err(FieldError::new("", format!("expected a mapping of fields, got {}", json_type_name(value))));
    };
    let api_version = match map.get("apiVersion") {
        None => {
            return Err(FieldError::new(
                "apiVersion",
                format!("required field is missing (write apiVersion: {API_VERSION})"),
            ));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(FieldError::new("apiVersion", format!("expected a string, got {}", json_type_name(other))));
        }
    };
    let kind = match map.get("kind") {
        None => {
            return Err(FieldError::new("kind", "required field is missing (Agent, Workflow or ResourceBudget)"));
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(FieldError::new("kind", format!("expected a string, got {}", json_type_name(other))));
        }
    };
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    if group != GROUP {
        return Err(FieldError::new(
            "kind",
            format!(
                "{kind} ({api_version}) is not an a2a kind; a2a applies Agent, Workflow and ResourceBudget ({API_VERSION})"
            ),
        ));
    }
    if api_version != API_VERSION {
        return Err(FieldError::new(
            "apiVersion",
            format!("unknown version {api_version:?}; a2a serves {API_VERSION}"),
        ));
    }
    Kind::from_kind(kind).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        FieldError::new(
            "kind",
            format!(
                "unknown kind {kind:?} in {API_VERSION}{}; kinds are Agent, Workflow, ResourceBudget",
                suggest(kind, &names)
            ),
        )
    })
}

/// The CRD's OpenAPI schema of a kind, generated once.
pub fn schema(kind: Kind) -> &'static JSONSchemaProps {
    static SCHEMAS: OnceLock<HashMap<Kind, JSONSchemaProps>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|k| {
                let crd = k.crd();
                let schema =
                    crd.spec.versions.into_iter().next().and_then(|v| v.schema).and_then(|s| s.open_api_v3_schema);
                (k, schema.unwrap_or_default())
            })
            .collect()
    });
    &all[&kind]
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Checks `value` against `schema` the way a structural-schema API server does, collecting
/// every problem: unknown fields, missing required fields, wrong types, enum values, ranges
/// and our scalar formats (quantities, durations, percentages). Rejected fields are removed
/// from `value`; returns false when `value` itself must go.
fn walk(schema: &JSONSchemaProps, value: &mut Value, path: &mut String, errors: &mut Vec<FieldError>) -> bool {
    if value.is_null() {
        if schema.nullable != Some(true) && !path.is_empty() {
            errors.push(FieldError::new(path.clone(), "must not be empty (null)"));
            return false;
        }
        return true;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(value.is_string() || value.is_number()) {
            errors.push(FieldError::new(
                path.clone(),
                format!("expected a number or a string, got {}", json_type_name(value)),
            ));
            return false;
        }
        return check_format(schema, value, path, errors);
    }
    let Some(ty) = schema.type_.as_deref() else { return true };
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let expected = match ty {
            "object" => "a mapping",
            "array" => "a list",
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            _ => "a boolean",
        };
        let shown = match &*value {
            Value::String(s) if s.len() <= 40 => format!(" ({s:?})"),
            Value::Number(n) => format!(" ({n})"),
            _ => String::new(),
        };
        errors
            .push(FieldError::new(path.clone(), format!("expected {expected}, got {}{shown}", json_type_name(value))));
        return false;
    }
    match value {
        Value::Object(map) => {
            if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
                return true;
            }
            let props = schema.properties.as_ref();
            let additional = match &schema.additional_properties {
                Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s.as_ref()),
                _ => None,
            };
            let mut rejected = Vec::new();
            for (key, child) in map.iter_mut() {
                // The CRD schema leaves the type header and metadata to the API machinery.
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let ok = match (props.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(s, child, path, errors),
                    (None, None) if props.is_some() => {
                        let known: Vec<&str> = props.into_iter().flat_map(|p| p.keys().map(String::as_str)).collect();
                        errors.push(FieldError::new(path.clone(), format!("unknown field{}", suggest(key, &known))));
                        false
                    }
                    (None, None) => true,
                };
                if !ok {
                    rejected.push(key.clone());
                }
                path.truncate(len);
            }
            for key in rejected {
                map.remove(&key);
            }
            for req in schema.required.iter().flatten() {
                if !map.contains_key(req) && !errors.iter().any(|e| e.path == join(path, req)) {
                    errors.push(FieldError::new(join(path, req), "required field is missing"));
                }
            }
            true
        }
        Value::Array(items) => {
            let mut ok = true;
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, child) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    // Removing an item would renumber the rest; give up the whole list instead.
                    ok &= walk(item, child, path, errors);
                    path.truncate(len);
                }
            }
            if let Some(min) = schema.min_items
                && (items.len() as i64) < min
            {
                errors.push(FieldError::new(
                    path.clone(),
                    format!("needs at least {min} item{}", if min == 1 { "" } else { "s" }),
                ));
            }
            ok
        }
        Value::String(s) => {
            if let Some(allowed) = &schema.enum_ {
                let names: Vec<&str> = allowed.iter().filter_map(|v| v.0.as_str()).collect();
                if !names.contains(&s.as_str()) {
                    errors.push(FieldError::new(
                        path.clone(),
                        format!("{s:?} is not one of {}{}", names.join(", "), suggest(s, &names)),
                    ));
                    return false;
                }
            }
            check_format(schema, value, path, errors)
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.minimum
                && x < min
            {
                errors.push(FieldError::new(path.clone(), format!("{n} is below the minimum {min}")));
                return false;
            }
            if let Some(max) = schema.maximum
                && x > max
            {
                errors.push(FieldError::new(path.clone(), format!("{n} is above the maximum {max}")));
                return false;
            }
            true
        }
        _ => true,
    }
}

fn check_format(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) -> bool {
    match schema.format.as_deref().and_then(|f| quantity::check_format(f, value)) {
        Some(Err(e)) => {
            errors.push(FieldError::new(path, e.to_string()));
            false
        }
        _ => true,
    }
}

/// ` (did you mean "x"?)` when a candidate is within a couple of edits, else empty.
pub fn suggest(word: &str, candidates: &[&str]) -> String {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min()
        .map(|(_, c)| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Why a string is not a valid Kubernetes object name; the field path is added by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} is longer than 63 characters")]
    TooLong(String),
    #[error(
        "{0:?} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    NotALabel(String),
    #[error(
        "{0:?} is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
    )]
    NotASubdomain(String),
}

/// A DNS-1123 label: lowercase letters, digits and `-`, at most 63, starting and ending
/// with a letter or digit.
pub fn check_dns_label(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 63 {
        return Err(NameError::TooLong(s.to_owned()));
    }
    let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if ok_chars && ok_ends { Ok(()) } else { Err(NameError::NotALabel(s.to_owned())) }
}

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

fn check_metadata(kind: Kind, meta: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(meta) = meta else {
        errors.push(FieldError::new("metadata.name", "required field is missing"));
        return;
    };
    let Some(map) = meta.as_object() else { return }; // the schema walk reported the type
    for key in map.keys() {
        if !OBJECT_META_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("metadata.{key}"),
                format!("unknown field{}", suggest(key, OBJECT_META_FIELDS)),
            ));
        }
    }
    match (map.get("name"), map.get("generateName")) {
        (Some(Value::String(name)), _) => {
            if let Err(e) = check_dns_label(name) {
                errors.push(FieldError::new("metadata.name", e.to_string()));
            }
        }
        (Some(other), _) => {
            errors.push(FieldError::new("metadata.name", format!("expected a string, got {}", json_type_name(other))))
        }
        (None, Some(Value::String(_))) => {}
        (None, _) => errors.push(FieldError::new("metadata.name", "required field is missing")),
    }
    match map.get("namespace") {
        Some(Value::String(ns)) if !kind.namespaced() => errors.push(FieldError::new(
            "metadata.namespace",
            format!("{kind} is cluster-scoped and has no namespace; remove namespace {ns:?}"),
        )),
        Some(Value::String(ns)) => {
            if let Err(e) = check_dns_label(ns) {
                errors.push(FieldError::new("metadata.namespace", e.to_string()));
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => errors
            .push(FieldError::new("metadata.namespace", format!("expected a string, got {}", json_type_name(other)))),
    }
    super::objectmeta::check_labels_and_annotations(map, errors);
    for field in ["labels", "annotations"] {
        match map.get(field) {
            Some(Value::Object(_) | Value::Null) | None => {}
            Some(other) => errors.push(FieldError::new(
                format!("metadata.{field}"),
                format!("expected a mapping, got {}", json_type_name(other)),
            )),
        }
    }
}

const RESERVED_ENV: &[&str] = &[
    "A2A_PORT",
    "A2A_AGENT",
    "A2A_NAMESPACE",
    "A2A_AGENT_TOKEN",
    "A2A_GATEWAY_URL",
    "A2A_GATEWAY_TOKEN",
    "A2A_GATEWAY_CA",
];

fn check_agent(agent: &Agent, errors: &mut Vec<FieldError>) {
    let s = &agent.spec;
    check_rate_limit(s.rate_limit.as_ref(), errors);
    let has_command = !s.command.is_empty();
    super::access::check(s.url.as_deref(), s.tls.as_ref(), s.auth.as_ref(), errors);
    if let Some(url) = &s.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < "http://x".len() {
            errors.push(FieldError::new("spec.url", format!("{url:?} is not an http:// or https:// URL")));
        }
        if has_command || s.image.is_some() {
            errors.push(FieldError::new(
                "spec.url",
                "an agent with url runs elsewhere and is never started; remove command/image, or remove url",
            ));
        }
        if s.protocol() == Protocol::Stdio {
            errors.push(FieldError::new(
                "spec.protocol",
                "a stdio agent runs its command per task; it cannot have a url",
            ));
        }
    } else if !has_command && s.image.is_none() {
        errors.push(FieldError::new(
            "spec.command",
            "nothing to run: set command (local mode), image (cluster mode), or url (an agent that runs elsewhere)",
        ));
    } else if s.protocol() == Protocol::Stdio && !has_command {
        errors.push(FieldError::new("spec.command", "a stdio agent needs a command to run for each task"));
    }
    for (i, part) in s.command.iter().enumerate() {
        if part.contains('\0') {
            errors.push(FieldError::new(format!("spec.command[{i}]"), "contains a NUL byte"));
        }
    }
    if s.command.first().is_some_and(|c| c.trim().is_empty()) {
        errors.push(FieldError::new("spec.command[0]", "the program name is empty"));
    }
    if let Some(image) = &s.image
        && (image.trim().is_empty() || image.contains(char::is_whitespace))
    {
        errors.push(FieldError::new("spec.image", format!("{image:?} is not an image reference")));
    }
    let mut seen = BTreeSet::new();
    for (i, e) in s.env.iter().enumerate() {
        let path = format!("spec.env[{i}].name");
        let valid = !e.name.is_empty()
            && !e.name.as_bytes()[0].is_ascii_digit()
            && e.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            errors.push(FieldError::new(
                path,
                format!("{:?} is not a variable name (letters, digits, '_', not starting with a digit)", e.name),
            ));
        } else if RESERVED_ENV.contains(&e.name.as_str()) {
            errors
                .push(FieldError::new(path, format!("{} is set by a2a for every agent; choose another name", e.name)));
        } else if !seen.insert(e.name.as_str()) {
            errors.push(FieldError::new(path, format!("{} is set twice", e.name)));
        }
    }
    super::validate_refs::check(s, errors);
    if let Some(dir) = &s.working_dir
        && !dir.starts_with('/')
    {
        errors.push(FieldError::new("spec.workingDir", format!("{dir:?} is not an absolute path")));
    }
    if let Some(user) = &s.user {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        let numeric_ok =
            !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()) && g.bytes().all(|b| b.is_ascii_digit());
        let name_ok =
            !u.is_empty() && g.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !(numeric_ok || name_ok) {
            errors.push(FieldError::new("spec.user", format!("{user:?} is not a user name or uid[:gid]")));
        }
    }
    let mut writable = BTreeSet::new();
    for (i, path) in s.writable_paths.iter().enumerate() {
        let at = format!("spec.writablePaths[{i}]");
        if !is_plain_absolute(path) {
            errors.push(FieldError::new(
                at,
                format!("{path:?} is not an absolute path without '.', '..' or a trailing '/' (and not '/')"),
            ));
        } else if let Some(api) = ["/proc", "/sys", "/dev"].iter().find(|a| Path::new(path).starts_with(a)) {
            errors.push(FieldError::new(at, format!("{path:?} is inside {api}, which agents cannot be given")));
        } else if !writable.insert(path) {
            errors.push(FieldError::new(at, format!("{path:?} is listed twice")));
        }
    }
    if s.port.unwrap_or(0) > 0 && s.replicas() > 1 {
        errors.push(FieldError::new(
            "spec.port",
            format!(
                "a fixed port can serve only one replica, but replicas is {}; use port 0 (assigned) or replicas 1",
                s.replicas()
            ),
        ));
    }
    let mut skills = BTreeSet::new();
    for (i, skill) in s.skills.iter().enumerate() {
        if skill.trim().is_empty() {
            errors.push(FieldError::new(format!("spec.skills[{i}]"), "is empty"));
        } else if !skills.insert(skill) {
            errors.push(FieldError::new(format!("spec.skills[{i}]"), format!("skill {skill:?} is listed twice")));
        }
    }
    if let Some(b) = &s.budget
        && let Err(e) = check_dns_label(b)
    {
        errors.push(FieldError::new("spec.budget", e.to_string()));
    }
    check_requests_within_limits(&s.resources.requests, &s.resources.limits, errors);
    check_memory_not_tiny(&s.resources.limits, "spec.resources.limits.memory", errors);
    check_cpu_not_zero(s.resources.limits.cpu.as_ref(), "spec.resources.limits.cpu", errors);
}

/// Whether `path` is absolute and plain: no `.`, `..` or empty components, not `/`.
pub(super) fn is_plain_absolute(path: &str) -> bool {
    let p = Path::new(path);
    p.is_absolute()
        && p.components().count() > 1
        && !path.contains("//")
        && (path.len() == 1 || !path.ends_with('/'))
        && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.split('/').any(|s| s == "." || s == "..")
}

fn check_requests_within_limits(req: &ResourceAmounts, lim: &ResourceAmounts, errors: &mut Vec<FieldError>) {
    if let (Some(r), Some(l)) = (&req.memory, &lim.memory)
        && r.value() > l.value()
    {
        errors.push(FieldError::new("spec.resources.requests.memory", format!("{r} is more than the limit {l}")));
    }
    if let (Some(r), Some(l)) = (&req.cpu, &lim.cpu)
        && let (CpuAmount::Millicores(rm), CpuAmount::Millicores(lm)) = (r.value(), l.value())
        && rm > lm
    {
        errors.push(FieldError::new("spec.resources.requests.cpu", format!("{r} is more than the limit {l}")));
    }
    if let (Some(r), Some(l)) = (&req.pids, &lim.pids)
        && r.value() > l.value()
    {
        errors.push(FieldError::new("spec.resources.requests.pids", format!("{r} is more than the limit {l}")));
    }
}

fn check_workflow(wf: &Workflow, errors: &mut Vec<FieldError>) {
    let tasks = &wf.spec.tasks;
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tasks.iter().enumerate() {
        let path = format!("spec.tasks[{i}]");
        if let Err(e) = check_dns_label(&t.name) {
            errors.push(FieldError::new(format!("{path}.name"), e.to_string()));
        }
        if let Some(first) = index.insert(t.name.as_str(), i) {
            index.insert(t.name.as_str(), first);
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("duplicate task name {:?} (also spec.tasks[{first}])", t.name),
            ));
        }
        match (&t.agent, &t.skill) {
            (Some(_), Some(_)) => errors.push(FieldError::new(path.clone(), "set agent or skill, not both")),
            (None, None) => errors.push(FieldError::new(
                path.clone(),
                "no agent: set agent (an Agent's name) or skill (any ready agent with that skill)",
            )),
            (Some(a), None) => {
                if let Err(e) = check_dns_label(a) {
                    errors.push(FieldError::new(format!("{path}.agent"), e.to_string()));
                }
            }
            (None, Some(s)) if s.trim().is_empty() => errors.push(FieldError::new(format!("{path}.skill"), "is empty")),
            _ => {}
        }
        // A workflow's placement applies to its tasks sent by skill; a task naming an agent runs
        // where that agent is, so its own placement may not ask for a peer.
        if let (Some(p), Some(a)) = (t.placement, &t.agent)
            && p.may_leave()
        {
            errors.push(FieldError::new(
                format!("{path}.placement"),
                format!(
                    "is {p}, but the task names agent {a:?}: only a task sent by skill can run on a peer (set skill \
                     instead of agent, or placement: local)"
                ),
            ));
        }
        if t.message.trim().is_empty() {
            errors.push(FieldError::new(format!("{path}.message"), "is empty: say what the agent should do"));
        }
        if let Some(retry) = &t.retry {
            check_retry(retry, &format!("{path}.retry"), errors);
        }
        if let Some(f) = &t.for_each {
            let set = [f.items.is_some(), f.count.is_some(), f.task.is_some()].iter().filter(|s| **s).count();
            if set != 1 {
                errors.push(FieldError::new(
                    format!("{path}.forEach"),
                    "set exactly one of items (a list), count (a number) or task (an upstream task whose output is a JSON array)",
                ));
            }
            if f.count.is_some_and(|c| c > MAX_FOR_EACH)
                || f.items.as_ref().is_some_and(|i| i.len() > MAX_FOR_EACH as usize)
            {
                errors.push(FieldError::new(
                    format!("{path}.forEach"),
                    format!("more than {MAX_FOR_EACH} items: a workflow runs at most that many expansions of a task"),
                ));
            }
        }
    }
    if let Some(retry) = &wf.spec.retry {
        check_retry(retry, "spec.retry", errors);
    }
    errors.extend(super::reply::check_replies(&wf.spec));
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    // Edges, only to tasks that exist.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for (j, d) in t.depends_on.iter().enumerate() {
            let path = format!("spec.tasks[{i}].dependsOn[{j}]");
            if d == &t.name {
                errors.push(FieldError::new(path, format!("task {d:?} depends on itself")));
            } else if !seen.insert(d.as_str()) {
                errors.push(FieldError::new(path, format!("{d:?} is listed twice")));
            } else if let Some(&k) = index.get(d.as_str()) {
                deps[i].push(k);
            } else {
                errors.push(FieldError::new(path, format!("unknown task {d:?}{}", suggest(d, &names))));
            }
        }
        // `forEach.task` is a dependency too.
        if let Some(source) = t.for_each.as_ref().and_then(|f| f.task.as_ref()) {
            let path = format!("spec.tasks[{i}].forEach.task");
            if source == &t.name {
                errors.push(FieldError::new(path, format!("task {source:?} cannot run over its own output")));
            } else if let Some(&k) = index.get(source.as_str()) {
                if !deps[i].contains(&k) {
                    deps[i].push(k);
                }
            } else {
                errors.push(FieldError::new(path, format!("unknown task {source:?}{}", suggest(source, &names))));
            }
        }
    }
    let cyclic = match find_cycle(&deps) {
        Some(cycle) => {
            let mut names: Vec<&str> = cycle.iter().map(|&i| tasks[i].name.as_str()).collect();
            names.push(names[0]);
            errors.push(FieldError::new("spec.tasks", format!("dependency cycle: {}", names.join(" → "))));
            true
        }
        None => false,
    };
    for (i, t) in tasks.iter().enumerate() {
        let path = format!("spec.tasks[{i}].message");
        let refs = match template::references(&t.message) {
            Ok(r) => r,
            Err(e) => {
                errors.push(FieldError::new(path, e.to_string()));
                continue;
            }
        };
        for r in refs {
            match r {
                Ref::Param(p) if !wf.spec.params.contains_key(p) => {
                    let declared: Vec<&str> = wf.spec.params.keys().map(String::as_str).collect();
                    errors.push(FieldError::new(
                        path.clone(),
                        format!(
                            "{{{{ params.{p} }}}} names a param that spec.params does not declare{}",
                            suggest(p, &declared)
                        ),
                    ));
                }
                Ref::Item(_) | Ref::Index if t.for_each.is_none() => errors.push(FieldError::new(
                    path.clone(),
                    "{{ item }} and {{ index }} are for a task with forEach (this one has none)",
                )),
                Ref::TaskOutput(n) | Ref::TaskData { task: n, .. }
                    if index.get(n).is_some_and(|&k| tasks[k].for_each.is_some()) =>
                {
                    errors.push(FieldError::new(
                        path.clone(),
                        format!("{{{{ tasks.{n}.output }}}}: task {n:?} runs once per item (forEach); its outputs are not one value"),
                    ))
                }
                Ref::TaskOutput(n) | Ref::TaskData { task: n, .. } => match index.get(n) {
                    None => errors.push(FieldError::new(
                        path.clone(),
                        format!("{{{{ tasks.{n}.output }}}} names unknown task {n:?}{}", suggest(n, &names)),
                    )),
                    Some(&k) if !cyclic && !upstream(&deps, i, k) => errors.push(FieldError::new(
                        path.clone(),
                        format!(
                            "{{{{ tasks.{n}.output }}}}: task {n:?} is not upstream of {:?}; add it to dependsOn",
                            t.name
                        ),
                    )),
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

/// The most expansions of one `forEach` task.
pub const MAX_FOR_EACH: u32 = 100_000;

fn check_retry(retry: &super::workflow::RetryPolicy, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(b) = &retry.backoff
        && let (Some(initial), Some(max)) = (&b.initial, &b.max)
        && initial.value() > max.value()
    {
        errors.push(FieldError::new(
            format!("{path}.backoff.initial"),
            format!("{initial} is longer than backoff.max {max}"),
        ));
    }
}

/// Whether `k` is reachable from `i` through `deps` (i depends on k, transitively).
fn upstream(deps: &[Vec<usize>], i: usize, k: usize) -> bool {
    let mut stack = deps[i].clone();
    let mut seen = vec![false; deps.len()];
    while let Some(n) = stack.pop() {
        if n == k {
            return true;
        }
        if !std::mem::replace(&mut seen[n], true) {
            stack.extend(&deps[n]);
        }
    }
    false
}

/// One cycle in the graph, as the nodes along it, or `None` for a DAG.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS keeping the current path, so deep graphs cannot overflow the stack.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&child) = deps[node].get(*next) {
                *next += 1;
                match mark[child] {
                    Mark::New => {
                        mark[child] = Mark::Open;
                        path.push((child, 0));
                    }
                    Mark::Open => {
                        let from = path.iter().position(|&(n, _)| n == child).unwrap_or(0);
                        return Some(path[from..].iter().map(|&(n, _)| n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

/// A webhook URL: absolute, `http` or `https`, with a host.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("{url:?}: the scheme must be http or https, not {other}")),
        None => return Err(format!("{url:?} is not an absolute URL (http://host/path)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn check_budget(b: &ResourceBudget, errors: &mut Vec<FieldError>) {
    let s = &b.spec;
    if let Some(parent) = &s.parent {
        if Some(parent) == b.metadata.name.as_ref() {
            errors.push(FieldError::new("spec.parent", "a budget cannot be its own parent"));
        } else if let Err(e) = check_dns_label(parent) {
            errors.push(FieldError::new("spec.parent", e.to_string()));
        }
    }
    let mut seen = BTreeMap::new();
    for (i, alert) in s.alerts.iter().enumerate() {
        let resource = format!("{:?}", alert.resource).to_ascii_lowercase();
        if let Some(first) = seen.insert(resource.clone(), i) {
            errors.push(FieldError::new(
                format!("spec.alerts[{i}]"),
                format!("a second alert on {resource} (first at spec.alerts[{first}])"),
            ));
        }
        let limited = match alert.resource {
            super::budget::AlertResource::Memory => s.limits.memory.is_some(),
            super::budget::AlertResource::Cpu => s.limits.cpu.is_some(),
            super::budget::AlertResource::Pids => s.limits.pids.is_some(),
        };
        if !limited {
            errors.push(FieldError::new(
                format!("spec.alerts[{i}].resource"),
                format!("alerts on {resource} need spec.limits.{resource}, which is not set"),
            ));
        }
        if let Some(n) = &alert.notify {
            if let Err(e) = check_webhook_url(&n.url) {
                errors.push(FieldError::new(format!("spec.alerts[{i}].notify.url"), e));
            }
            for (field, r) in [("secretRef", &n.secret_ref), ("caSecretRef", &n.ca_secret_ref)] {
                let Some(r) = r else { continue };
                if let Some(ns) = &r.namespace
                    && let Err(e) = check_dns_label(ns)
                {
                    errors.push(FieldError::new(format!("spec.alerts[{i}].notify.{field}.namespace"), e.to_string()));
                }
                for (what, v) in [("name", &r.name), ("key", &r.key)] {
                    if v.is_empty() {
                        errors.push(FieldError::new(
                            format!("spec.alerts[{i}].notify.{field}.{what}"),
                            "must not be empty",
                        ));
                    }
                }
            }
        }
    }
    if let (Some(bg), Some(cpu)) = (&s.background_cpu, &s.limits.cpu)
        && let (CpuAmount::Millicores(b), CpuAmount::Millicores(l)) = (bg.value(), cpu.value())
        && b > l
    {
        errors.push(FieldError::new("spec.backgroundCpu", format!("{bg} is more than spec.limits.cpu {cpu}")));
    }
    check_memory_not_tiny(&s.limits, "spec.limits.memory", errors);
    check_cpu_not_zero(s.limits.cpu.as_ref(), "spec.limits.cpu", errors);
    check_cpu_not_zero(s.background_cpu.as_ref(), "spec.backgroundCpu", errors);
    check_rate_limit(s.rate_limit.as_ref(), errors);
    if let Some(t) = &s.throttle
        && t.requests_per_minute == Some(0)
    {
        errors.push(FieldError::new(
            "spec.throttle.requestsPerMinute",
            "0 would stop dispatch under pressure; write at least 1, or set spec.throttle.enabled: false",
        ));
    }
}

/// A window of no time makes no limit: refused, like a zero CPU limit.
fn check_rate_limit(limit: Option<&super::ratelimit::RateLimit>, errors: &mut Vec<FieldError>) {
    if let Some(l) = limit
        && l.per.value().is_zero()
    {
        errors.push(FieldError::new("spec.rateLimit.per", format!("{} is not a positive duration", l.per)));
    }
}

/// A zero CPU limit: Kubernetes reads it as "no limit", a cgroup quota as "never run" (a2a
/// would enforce the smallest quota the kernel takes). Neither is what anyone writing `0`
/// wants spelled that way, so it is refused; leaving the field out is "no limit".
fn check_cpu_not_zero(cpu: Option<&super::quantity::Cpu>, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(c) = cpu
        && c.value() == CpuAmount::Millicores(0)
    {
        errors.push(FieldError::new(
            path,
            format!("{c} is not a CPU limit (it would starve the agents); leave the field out for no limit"),
        ));
    }
}

/// A memory limit under 1Mi is almost always a forgotten unit (`memory: 512`).
fn check_memory_not_tiny(limits: &ResourceAmounts, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(mem) = &limits.memory
        && mem.value() < 1 << 20
    {
        errors.push(FieldError::new(
            path,
            format!("{mem} bytes is too small to run anything; did you forget the unit (Mi, Gi)?"),
        ));
    }
}
