//! The resources this server serves, and the documents that describe them: discovery
//! (`/api`, `/apis`, APIResourceLists) and `Table`s for `kubectl get`; the OpenAPI documents
//! are [`super::openapi`]'s.

use serde_json::{Value, json};

use crate::api::Kind;
use crate::api::validate::FieldError;

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the main resource keep status as it is.
    pub status_subresource: bool,
    /// The a2a kind, validated with [`crate::api::validate::validate`].
    pub a2a: Option<Kind>,
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub static RESOURCES: [Resource; 9] = [
    Resource {
        group: "a2a.dev",
        version: "v1alpha1",
        plural: "agents",
        singular: "agent",
        kind: "Agent",
        short_names: &["ag"],
        categories: &["a2a"],
        namespaced: true,
        status_subresource: true,
        a2a: Some(Kind::Agent),
    },
    Resource {
        group: "a2a.dev",
        version: "v1alpha1",
        plural: "workflows",
        singular: "workflow",
        kind: "Workflow",
        short_names: &["wf"],
        categories: &["a2a"],
        namespaced: true,
        status_subresource: true,
        a2a: Some(Kind::Workflow),
    },
    Resource {
        group: "a2a.dev",
        version: "v1alpha1",
        plural: "resourcebudgets",
        singular: "resourcebudget",
        kind: "ResourceBudget",
        short_names: &["rb"],
        categories: &["a2a"],
        namespaced: false,
        status_subresource: true,
        a2a: Some(Kind::ResourceBudget),
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        status_subresource: true,
        a2a: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        a2a: None,
    },
    // The newer Events API kube-runtime's Recorder writes (regarding, note, series...): the
    // same Events as the core ones, stored once and converted ([`super::events`]).
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        a2a: None,
    },
    // The workflow engine keeps task outputs longer than status holds in ConfigMaps.
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        a2a: None,
    },
    // Model API keys and other credentials of agents; encrypted in the store ([`super::seal`]).
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        a2a: None,
    },
    // Leader election's locks ([`super::lease`]).
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        a2a: None,
    },
];

impl Resource {
    /// Finds a resource by group, version and plural.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `agents.a2a.dev`, or `namespaces` for the core group, as errors name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn group_or_core(&self) -> &'static str {
        if self.group.is_empty() { "core" } else { self.group }
    }

    /// The storage key prefix. `events.k8s.io` Events are the core ones, seen converted.
    pub fn storage(&self) -> String {
        if super::events::is_view(self) {
            return super::events::STORAGE.to_string();
        }
        format!("{}/{}", self.group, self.plural)
    }

    /// Another version of a resource stored under another's key (`events.k8s.io` Events):
    /// walks over every stored object skip it, or they would see each object twice.
    pub fn is_view(&self) -> bool {
        super::events::is_view(self)
    }

    /// The verbs discovery lists. Namespaces have no deletecollection (as in Kubernetes:
    /// one request must not be able to remove every namespace and all they hold).
    pub fn verbs(&self) -> &'static [&'static str] {
        match self.plural {
            "namespaces" => &["create", "delete", "get", "list", "patch", "update", "watch"],
            // The access reviews are answered, never stored.
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "selfsubjectreviews" => &["create"],
            _ => &VERBS,
        }
    }

    /// Finds a resource by its storage key prefix.
    pub fn by_storage(storage: &str) -> Option<&'static Resource> {
        let (group, plural) = storage.split_once('/')?;
        RESOURCES.iter().find(|r| r.group == group && r.plural == plural)
    }

    /// An Event (core or events.k8s.io): no generation, names may contain dots.
    pub fn is_event(&self) -> bool {
        self.kind == "Event"
    }

    /// Field paths a fieldSelector may name.
    pub fn selectable_fields(&self) -> &'static [&'static str] {
        if self.group == "events.k8s.io" {
            &[
                "metadata.name",
                "metadata.namespace",
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "type",
                "reportingController",
            ]
        } else if self.plural == "events" {
            &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "type",
                "source",
                "reportingComponent",
            ]
        } else if self.plural == "namespaces" {
            &["metadata.name", "status.phase"]
        } else if self.plural == "secrets" {
            &["metadata.name", "metadata.namespace", "type"]
        } else {
            &["metadata.name", "metadata.namespace"]
        }
    }

    /// Validates a complete object (after defaults and server-set metadata). A rejected
    /// object may come back with the fields the schema rejected pruned; it is not to be stored.
    pub fn validate(&self, object: &mut Value) -> Result<(), Vec<FieldError>> {
        self.validate_write(object, true)
    }

    /// [`Self::validate`] for a create (`create`) or an update. An update through
    /// `events.k8s.io/v1` of an Event without `eventTime` (one written through the core API)
    /// is held only to the core rules, as the kube-apiserver's legacy Event validation holds it.
    pub fn validate_write(&self, object: &mut Value, create: bool) -> Result<(), Vec<FieldError>> {
        if self.a2a.is_some() {
            return crate::api::validate::validate_in_place(object).map(|_| ());
        }
        let mut errors = Vec::new();
        match object.pointer("/metadata/name").and_then(Value::as_str) {
            None => errors.push(FieldError::new("metadata.name", "required field is missing")),
            Some(name) => {
                let check = if self.is_event() || matches!(self.plural, "configmaps" | "secrets" | "leases") {
                    check_subdomain(name)
                } else {
                    crate::api::validate::check_dns_label(name)
                };
                if let Err(e) = check {
                    errors.push(FieldError::new("metadata.name", e.to_string()));
                }
            }
        }
        if let Some(Value::Object(meta)) = object.get("metadata") {
            crate::api::objectmeta::check_labels_and_annotations(meta, &mut errors);
        }
        let legacy = !create && object.get("eventTime").is_none_or(Value::is_null);
        if self.group == "events.k8s.io" && !legacy {
            validate_events_v1(object, &mut errors);
        } else if self.group == "events.k8s.io" {
            if object.get("note").and_then(Value::as_str).is_some_and(|n| n.len() > 1024) {
                errors.push(FieldError::new("note", "must be no more than 1024 bytes"));
            }
        } else if self.plural == "events" {
            match object.get("involvedObject") {
                Some(Value::Object(o)) => {
                    for f in ["kind", "name"] {
                        if !o.get(f).is_some_and(Value::is_string) {
                            errors.push(FieldError::new(
                                format!("involvedObject.{f}"),
                                "required string field is missing",
                            ));
                        }
                    }
                }
                _ => errors.push(FieldError::new(
                    "involvedObject",
                    "required field is missing (the object this event is about)",
                )),
            }
            if let Some(c) = object.get("count")
                && !c.is_u64()
            {
                errors.push(FieldError::new("count", "expected a non-negative integer"));
            }
        } else if self.plural == "configmaps" {
            validate_config_map(object, &mut errors);
        } else if self.plural == "secrets" {
            super::secret::admit(object, &mut errors);
        } else if self.plural == "leases" {
            super::lease::admit(object, &mut errors);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn printer_columns(&self) -> Vec<(String, String, String, i64, String)> {
        // (name, type, jsonPath, priority, description)
        if let Some(kind) = self.a2a {
            let crd = kind.crd();
            return crd
                .spec
                .versions
                .first()
                .and_then(|v| v.additional_printer_columns.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    (
                        c.name,
                        c.type_,
                        c.json_path,
                        i64::from(c.priority.unwrap_or(0)),
                        c.description.unwrap_or_default(),
                    )
                })
                .collect();
        }
        let col = |n: &str, t: &str, p: &str, d: &str| (n.to_string(), t.to_string(), p.to_string(), 0, d.to_string());
        if self.group == "events.k8s.io" {
            return vec![
                col("Last Seen", "date", ".eventTime", "When the event last happened"),
                col("Type", "string", ".type", ""),
                col("Reason", "string", ".reason", ""),
                col("Object", "string", ".regarding.name", ""),
                col("Message", "string", ".note", ""),
            ];
        }
        match self.plural {
            "namespaces" => vec![
                col("Status", "string", ".status.phase", "The phase of the namespace"),
                col("Age", "date", ".metadata.creationTimestamp", ""),
            ],
            "configmaps" => vec![
                col("Data", "integer", DATA_COUNT, "The number of keys"),
                col("Age", "date", ".metadata.creationTimestamp", ""),
            ],
            "leases" => vec![
                col("Holder", "string", ".spec.holderIdentity", "The holder of the lease"),
                col("Age", "date", ".metadata.creationTimestamp", ""),
            ],
            "secrets" => vec![
                col("Type", "string", ".type", ""),
                col("Data", "integer", DATA_COUNT, "The number of keys"),
                col("Age", "date", ".metadata.creationTimestamp", ""),
            ],
            _ => vec![
                col("Last Seen", "date", ".lastTimestamp", "When the event last happened"),
                col("Type", "string", ".type", ""),
                col("Reason", "string", ".reason", ""),
                col("Object", "string", ".involvedObject.name", ""),
                col("Message", "string", ".message", ""),
            ],
        }
    }

    /// A `meta.k8s.io/v1` Table of `objects`, as `kubectl get` asks for with `as=Table`.
    /// `full_objects` puts the whole object in each row instead of its metadata.
    pub fn table(&self, objects: &[&Value], resource_version: u64, full_objects: bool) -> Value {
        let columns = self.printer_columns();
        let mut defs = vec![json!({
            "name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace."
        })];
        for (name, type_, _, priority, description) in &columns {
            defs.push(json!({
                "name": name, "type": type_, "format": "", "priority": priority,
                "description": description,
            }));
        }
        let now = jiff::Timestamp::now();
        let rows: Vec<Value> = objects
            .iter()
            .map(|obj| {
                let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
                for (_, type_, path, _, _) in &columns {
                    if path == DATA_COUNT {
                        cells.push(json!(data_count(obj)));
                        continue;
                    }
                    let v = lookup(obj, path);
                    cells.push(match (type_.as_str(), v) {
                        ("date", Some(Value::String(s))) => match s.parse::<jiff::Timestamp>() {
                            Ok(t) => Value::String(human_age(now.duration_since(t))),
                            Err(_) => Value::String(s.clone()),
                        },
                        (_, Some(v)) => v.clone(),
                        (_, None) => Value::Null,
                    });
                }
                let object = if full_objects {
                    (*obj).clone()
                } else {
                    json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
                    })
                };
                json!({"cells": cells, "object": object})
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version.to_string()},
            "columnDefinitions": defs,
            "rows": rows,
        })
    }

    fn discovery_entry(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
            "shortNames": self.short_names,
            "categories": self.categories,
        })];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

/// The field paths a fieldSelector may name on the resource stored under `storage`.
pub fn selectable_fields_of(storage: &str) -> &'static [&'static str] {
    Resource::by_storage(storage).map_or(&["metadata.name", "metadata.namespace"], Resource::selectable_fields)
}

/// What the kube-apiserver requires of a new `events.k8s.io/v1` Event.
fn validate_events_v1(object: &Value, errors: &mut Vec<FieldError>) {
    if object.get("eventTime").and_then(Value::as_str).is_none_or(str::is_empty) {
        errors.push(FieldError::new("eventTime", "required field is missing"));
    }
    for (field, max) in [("reportingController", 253), ("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        match object.get(field).and_then(Value::as_str) {
            Some(v) if !v.is_empty() && v.len() <= max => {}
            Some(v) if !v.is_empty() => {
                errors.push(FieldError::new(field, format!("must be no more than {max} characters")))
            }
            _ => errors.push(FieldError::new(field, "required field is missing")),
        }
    }
    match object.get("type").and_then(Value::as_str) {
        Some("Normal" | "Warning") => {}
        _ => errors.push(FieldError::new("type", "supported values: \"Normal\", \"Warning\"")),
    }
    if object.get("note").and_then(Value::as_str).is_some_and(|n| n.len() > 1024) {
        errors.push(FieldError::new("note", "must be no more than 1024 bytes"));
    }
    if let Some(r) = object.get("regarding")
        && !r.is_object()
    {
        errors.push(FieldError::new("regarding", "expected a mapping (an object reference)"));
    }
    if let Some(series) = object.get("series") {
        if series.get("count").and_then(Value::as_u64).is_none_or(|c| c < 2) {
            errors.push(FieldError::new("series.count", "must be an integer of at least 2"));
        }
        if !series.get("lastObservedTime").is_some_and(Value::is_string) {
            errors.push(FieldError::new("series.lastObservedTime", "required field is missing"));
        }
    }
}

fn check_subdomain(name: &str) -> Result<(), crate::api::validate::NameError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(crate::api::validate::NameError::NotASubdomain(name.to_owned())) }
}

/// The column of a Secret's or ConfigMap's number of keys (kubectl's DATA), which no JSON
/// path computes.
const DATA_COUNT: &str = "#data-count";

/// How many keys a Secret or ConfigMap holds (`data` and `binaryData`), never what.
fn data_count(obj: &Value) -> usize {
    ["data", "binaryData"].iter().filter_map(|f| obj.get(*f).and_then(Value::as_object)).map(|m| m.len()).sum()
}

/// `.status.phase` → the value at that path.
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.trim_start_matches('.').split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

/// Ages as kubectl prints them: `45s`, `3m12s`, `5h`, `12d`.
pub fn human_age(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `GET /api`.
pub fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

/// `GET /api/v1` or `GET /apis/a2a.dev/v1alpha1`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(Resource::discovery_entry)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The API groups served besides the core group, in the order of [`RESOURCES`].
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn group_document(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(|(g, v)| group_document(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/GROUP`, e.g. `/apis/a2a.dev`.
pub fn api_group(group: &str) -> Option<Value> {
    let (group, version) = groups().into_iter().find(|(g, _)| *g == group)?;
    let mut g = group_document(group, version);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `GET /version`: minor 32 so the kubectl version dispatcher picks kubectl 1.32.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        "a2aVersion": env!("CARGO_PKG_VERSION"),
    })
}

/// What the kube-apiserver checks of a ConfigMap: `data` maps keys to strings, `binaryData`
/// to base64 text, keys are config keys (`[-._a-zA-Z0-9]+`, at most 253 characters, not `.`
/// or `..`) used once across both, and all values together stay within 1 MiB.
pub(crate) fn validate_config_map(object: &Value, errors: &mut Vec<FieldError>) {
    const MAX_BYTES: usize = super::secret::MAX_TOTAL_BYTES;
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for field in ["data", "binaryData"] {
        let Some(map) = object.get(field) else { continue };
        let Some(map) = map.as_object() else {
            errors.push(FieldError::new(field, "expected an object of key: value strings"));
            continue;
        };
        for (key, value) in map {
            let path = format!("{field}[{key}]");
            if !super::secret::is_config_key(key) {
                errors.push(FieldError::new(path.clone(), super::secret::CONFIG_KEY_MESSAGE));
            }
            if !seen.insert(key.as_str()) {
                errors.push(FieldError::new(path.clone(), "duplicate of a key in data or binaryData"));
            }
            match value.as_str() {
                Some(v) if field == "binaryData" && !is_base64(v) => {
                    errors.push(FieldError::new(path, "expected base64-encoded bytes"))
                }
                Some(v) => total += v.len(),
                None => errors.push(FieldError::new(path, "expected a string")),
            }
        }
    }
    if total > MAX_BYTES {
        errors.push(FieldError::new(
            "data",
            format!("too long: the ConfigMap's values total {total} bytes, more than {MAX_BYTES}"),
        ));
    }
}

fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_short_names_and_status_subresources() {
        let list = resource_list("a2a.dev", "v1alpha1").unwrap();
        let names: Vec<&str> =
            list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"agents") && names.contains(&"agents/status"));
        let rb = &list["resources"].as_array().unwrap()[4];
        assert_eq!(rb["name"], "resourcebudgets");
        assert_eq!(rb["namespaced"], false);
        assert_eq!(rb["shortNames"], json!(["rb"]));
        assert!(resource_list("a2a.dev", "v9").is_none());
    }

    #[test]
    fn tables_use_the_crd_printer_columns() {
        let r = Resource::find("a2a.dev", "v1alpha1", "agents").unwrap();
        let obj = json!({"metadata": {"name": "w", "namespace": "default"},
                         "status": {"phase": "Running"}});
        let t = r.table(&[&obj], 5, false);
        let header: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(header[0..2], ["Name", "Phase"]);
        assert_eq!(t["rows"][0]["cells"][0], "w");
        assert_eq!(t["rows"][0]["cells"][1], "Running");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn config_maps_are_checked_as_the_kube_apiserver_checks_them() {
        let r = Resource::find("", "v1", "configmaps").unwrap();
        let ok =
            json!({"metadata": {"name": "wf.task.output-0"}, "data": {"out.txt": "x"}, "binaryData": {"b": "AAE="}});
        assert!(r.validate(&mut ok.clone()).is_ok());
        let bad = json!({"metadata": {"name": "c"}, "data": {"a/b": "x", "n": 1}, "binaryData": {"n": "%%"}});
        let errors = r.validate(&mut bad.clone()).unwrap_err();
        let paths: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        assert_eq!(
            paths,
            [
                "data[a/b]: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (at most 253)",
                "data[n]: expected a string",
                "binaryData[n]: duplicate of a key in data or binaryData",
                "binaryData[n]: expected base64-encoded bytes",
            ]
        );
        let big = json!({"metadata": {"name": "c"}, "data": {"a": "x".repeat(1 << 20), "b": "y"}});
        let errors = r.validate(&mut big.clone()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("1048577 bytes"), "{}", errors[0].message);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(jiff::SignedDuration::from_secs(42)), "42s");
        assert_eq!(human_age(jiff::SignedDuration::from_secs(200)), "3m20s");
        assert_eq!(human_age(jiff::SignedDuration::from_secs(7200)), "120m");
        assert_eq!(human_age(jiff::SignedDuration::from_secs(3 * 86_400)), "3d");
    }
}
