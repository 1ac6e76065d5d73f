//! Field ownership for server-side apply: `metadata.managedFields` as the kube-apiserver keeps
//! it (one FieldsV1 set per manager, operation and subresource), the apply merge that removes
//! the fields a manager stops applying, conflicts between managers, and the `Update` entries
//! every other write records.
//!
//! Lists: no list in the a2a CRDs (nor in the core kinds served here) declares
//! `x-kubernetes-list-type: map` or `set`, so every list is atomic, as structured-merge-diff
//! treats such lists: owned, compared and replaced as one value (one `f:NAME` leaf). Maps are
//! granular, key by key. FieldsV1 elements other than `f:` (`k:`, `v:`, `i:`) that clients
//! send in `managedFields` are kept as they are.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::status::ApiError;
use crate::api::validate::FieldError;

mod changes;

pub use changes::{Before, Changes, SavedPoint, Touched, changes};

/// Metadata no manager owns: set by the server or naming the object (the kube-apiserver
/// strips the same fields before it tracks ownership).
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// How long a field manager's name may be (as the kube-apiserver).
const MAX_MANAGER_LEN: usize = 128;

/// A set of field paths in the FieldsV1 shape: children keyed `f:NAME` (or `k:`/`v:`/`i:`), a
/// node being a member itself when it has no children or carries `"."`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        path.iter().try_fold(self, |n, k| n.children.get(k))
    }

    fn node_mut(&mut self, path: &[String]) -> &mut FieldSet {
        path.iter().fold(self, |n, k| n.children.entry(k.clone()).or_default())
    }

    pub fn insert(&mut self, path: &[String]) {
        self.node_mut(path).member = true;
    }

    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether a member is at `path` or below it.
    fn covers(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Makes every leaf of `value` a member, this node standing for the value's path: a
    /// non-empty map is granular, anything else (scalars, lists, `{}`) is one leaf.
    fn insert_leaves(&mut self, value: &Value) {
        match value {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    self.children.entry(field(k)).or_default().insert_leaves(v);
                }
            }
            _ => self.member = true,
        }
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, o) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(o);
        }
    }

    /// Removes the members of `other`.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        self.children.retain(|k, c| {
            if let Some(o) = other.children.get(k) {
                c.subtract(o);
            }
            !c.is_empty()
        });
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let both = c.intersection(o);
                if !both.is_empty() {
                    out.children.insert(k.clone(), both);
                }
            }
        }
        out
    }

    /// The member paths, in order.
    pub fn paths(&self) -> Vec<Vec<String>> {
        fn walk(n: &FieldSet, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if n.member {
                out.push(path.clone());
            }
            for (k, c) in &n.children {
                path.push(k.clone());
                walk(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The FieldsV1 document.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }

    /// Reads a FieldsV1 document; the error says where (a path under `fieldsV1`) and what.
    pub fn from_json(v: &Value) -> Result<FieldSet, (String, String)> {
        fn read(v: &Value, root: bool, at: &str) -> Result<FieldSet, (String, String)> {
            let Value::Object(m) = v else {
                return Err((at.to_string(), "must be a mapping".into()));
            };
            let mut set = FieldSet { member: !root && m.is_empty(), children: BTreeMap::new() };
            for (k, c) in m {
                if k == "." {
                    if !c.as_object().is_some_and(Map::is_empty) {
                        return Err((format!("{at}[\".\"]"), "must be {}".into()));
                    }
                    set.member = !root;
                    continue;
                }
                if !["f:", "k:", "v:", "i:"].iter().any(|p| k.starts_with(p)) {
                    return Err((
                        at.to_string(),
                        format!("{k:?} is not a path element (f:NAME, k:{{KEYS}}, v:VALUE, i:INDEX or \".\")"),
                    ));
                }
                let child = read(c, false, &format!("{at}[{k:?}]"))?;
                set.children.insert(k.clone(), child);
            }
            Ok(set)
        }
        read(v, true, "fieldsV1")
    }
}

fn field(name: &str) -> String {
    format!("f:{name}")
}

/// A path as the kube-apiserver prints it: `.spec.replicas`, `.spec.items[name="x"]`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(keys) = element.strip_prefix("k:") {
            let keys = match serde_json::from_str::<Map<String, Value>>(keys) {
                Ok(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                Err(_) => keys.to_string(),
            };
            out.push_str(&format!("[{keys}]"));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// Which part of an object a request may write, and so which fields it can own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A kind without a status subresource: everything.
    Whole,
    /// The main resource of a kind with a status subresource: all but `status`.
    Main,
    /// The `/status` subresource: only `status`.
    Status,
}

impl Scope {
    pub fn of(status_subresource: bool, status_request: bool) -> Scope {
        match (status_subresource, status_request) {
            (_, true) => Scope::Status,
            (true, false) => Scope::Main,
            (false, false) => Scope::Whole,
        }
    }

    fn tracks(self, top_level: &str) -> bool {
        match top_level {
            "apiVersion" | "kind" => false,
            "status" => self != Scope::Main,
            _ => self != Scope::Status,
        }
    }

    pub fn subresource(self) -> &'static str {
        if self == Scope::Status { "status" } else { "" }
    }
}

fn tracks_metadata(key: &str) -> bool {
    !UNTRACKED_METADATA.contains(&key)
}

/// The fields of `object` a manager of `scope` owns by writing it whole.
pub fn fields_of(object: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::default();
    let Some(map) = object.as_object() else { return set };
    for (k, v) in map.iter().filter(|(k, _)| scope.tracks(k)) {
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten().filter(|(mk, _)| tracks_metadata(mk)) {
                set.node_mut(&[field(k), field(mk)]).insert_leaves(mv);
            }
        } else {
            set.node_mut(&[field(k)]).insert_leaves(v);
        }
    }
    set
}

/// `Apply` or `Update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this is the entry of that manager: appliers are one manager whatever API
    /// version they apply with, updaters one per version (as the kube-apiserver).
    fn is(&self, manager: &str, operation: Operation, subresource: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// The manager as conflict messages name it.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        if !self.api_version.is_empty() {
            m.insert("apiVersion".into(), json!(self.api_version));
        }
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_json());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// A field owned by another manager whose value an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// As messages name it: `"kubectl"`, `"a2a" using a2a.dev/v1alpha1`.
    pub manager: String,
    pub path: String,
}

/// The 409 an apply with conflicts gets, worded as the kube-apiserver words it.
pub fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = match conflicts {
        [one] => format!("Apply failed with 1 conflict: conflict with {}: {}", one.manager, one.path),
        _ => {
            let mut lines = Vec::new();
            let mut last: Option<&str> = None;
            for c in conflicts {
                if last != Some(c.manager.as_str()) {
                    lines.push(format!("conflicts with {}:", c.manager));
                    last = Some(&c.manager);
                }
                lines.push(format!("- {}", c.path));
            }
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"type": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.path})
        })
        .collect();
    ApiError { code: 409, reason: "Conflict", message, details: Some(json!({"causes": causes})) }
}

/// Why a field manager's name is refused (completes "fieldManager ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    #[error("may not be more than {MAX_MANAGER_LEN} characters")]
    TooLong,
    #[error("must only contain printable characters")]
    NotPrintable,
}

/// Checks a field manager's name as the kube-apiserver does.
pub fn check_manager(name: &str) -> Result<(), ManagerError> {
    if name.chars().count() > MAX_MANAGER_LEN {
        return Err(ManagerError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(ManagerError::NotPrintable);
    }
    Ok(())
}

/// The time of an entry: RFC 3339 in whole seconds, like `metav1.Time`.
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    let whole = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
    whole.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An object's `metadata.managedFields`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagedFields {
    entries: Vec<Entry>,
}

impl ManagedFields {
    /// The entries of a stored object. This server writes only valid ones; one that is not
    /// (a damaged store) is left out rather than failing every write to the object.
    pub fn of_stored(object: &Value) -> ManagedFields {
        match object.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => ManagedFields::default(),
            Some(v) => ManagedFields::parse(v).unwrap_or_else(|errors| {
                tracing::warn!(?errors, "ignoring unreadable managedFields of a stored object");
                ManagedFields::default()
            }),
        }
    }

    /// Entries a client sent. Entries without fields (`[{}]` is how clients reset the list)
    /// are dropped; anything else malformed is an error naming the field.
    pub fn parse(v: &Value) -> Result<ManagedFields, Vec<FieldError>> {
        let base = "metadata.managedFields";
        let Some(list) = v.as_array() else {
            return Err(vec![FieldError::new(base, "must be a list of entries")]);
        };
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let at = |f: &str| format!("{base}[{i}].{f}");
            let Some(m) = e.as_object() else {
                errors.push(FieldError::new(format!("{base}[{i}]"), "must be a mapping"));
                continue;
            };
            let text = |f: &str, errors: &mut Vec<FieldError>| match m.get(f) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    errors.push(FieldError::new(at(f), "must be a string"));
                    String::new()
                }
            };
            let fields = match m.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(f) => match FieldSet::from_json(f) {
                    Ok(s) => s,
                    Err((path, message)) => {
                        errors.push(FieldError::new(format!("{base}[{i}].{path}"), message));
                        continue;
                    }
                },
            };
            let manager = text("manager", &mut errors);
            let operation = text("operation", &mut errors);
            let fields_type = text("fieldsType", &mut errors);
            let api_version = text("apiVersion", &mut errors);
            let subresource = text("subresource", &mut errors);
            let time = text("time", &mut errors);
            if fields.is_empty() {
                continue;
            }
            let operation = match operation.as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                other => {
                    errors.push(FieldError::new(at("operation"), format!("{other:?}: must be `Apply` or `Update`")));
                    continue;
                }
            };
            if !fields_type.is_empty() && fields_type != "FieldsV1" {
                errors.push(FieldError::new(at("fieldsType"), format!("{fields_type:?}: must be `FieldsV1`")));
            }
            if let Err(e) = check_manager(&manager) {
                errors.push(FieldError::new(at("manager"), e.to_string()));
            }
            if !time.is_empty() && time.parse::<jiff::Timestamp>().is_err() {
                errors.push(FieldError::new(at("time"), format!("{time:?}: must be an RFC 3339 time")));
            }
            let time = (!time.is_empty()).then_some(time);
            entries.push(Entry { manager, operation, api_version, time, subresource, fields });
        }
        if errors.is_empty() { Ok(ManagedFields { entries }) } else { Err(errors) }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes the entries into the object's metadata (in the kube-apiserver's order: appliers
    /// first, then by time), or removes the field when there are none.
    pub fn write(&mut self, object: &mut Value) {
        self.entries.retain(|e| !e.fields.is_empty());
        self.entries.sort_by(|a, b| {
            (a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
        });
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
        if self.entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(self.entries.iter().map(Entry::to_json).collect()));
        }
    }

    fn position(&self, manager: &str, operation: Operation, subresource: &str, api_version: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.is(manager, operation, subresource, api_version))
    }

    /// Records a write that is not an apply: the manager's `Update` entry gains what it
    /// changed, which no other manager owns any longer, and removed fields leave every set.
    /// A write that changed nothing leaves the entries as they are.
    pub fn record_update(&mut self, manager: &str, api_version: &str, subresource: &str, changes: &Changes, now: &str) {
        for e in &mut self.entries {
            if !changes.changed.is_empty() {
                e.fields.subtract(&changes.changed);
            }
            if !changes.removed.is_empty() {
                e.fields.subtract(&changes.removed);
            }
        }
        if !changes.changed.is_empty() {
            let i = self.position(manager, Operation::Update, subresource, api_version).unwrap_or_else(|| {
                self.entries.push(Entry {
                    manager: manager.to_string(),
                    operation: Operation::Update,
                    api_version: api_version.to_string(),
                    time: None,
                    subresource: subresource.to_string(),
                    fields: FieldSet::default(),
                });
                self.entries.len() - 1
            });
            let e = &mut self.entries[i];
            e.fields.union_with(&changes.changed);
            e.time = Some(now.to_string());
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Server-side apply of `config` over `live` by `manager`: the configuration's fields are
    /// merged in (maps key by key, everything else replaced); a field another manager owns
    /// whose value would change is a conflict, refused unless `force` takes it over; fields the
    /// manager applied before and no longer does are removed unless another manager owns them.
    /// Answers the new object; the manager's entry keeps its old time (see [`Self::touch`]).
    pub fn apply(
        &mut self,
        live: &Value,
        config: &Value,
        manager: &str,
        api_version: &str,
        scope: Scope,
        force: bool,
    ) -> Result<Value, Vec<Conflict>> {
        let subresource = scope.subresource();
        let applied = fields_of(config, scope);
        let mut merged = live.clone();
        merge_config(&mut merged, config, scope);
        let changes = changes(live, &merged, &Touched::of_set(&applied), scope);
        let mine = self.position(manager, Operation::Apply, subresource, api_version);
        let mut conflicts = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if Some(i) == mine {
                continue;
            }
            let taken = e.fields.intersection(&changes.changed);
            if taken.is_empty() {
                continue;
            }
            if force {
                e.fields.subtract(&taken);
            } else {
                let manager = e.describe();
                conflicts
                    .extend(taken.paths().iter().map(|p| Conflict { manager: manager.clone(), path: display_path(p) }));
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
            return Err(conflicts);
        }
        // Fields this manager applied before, no longer applies, and nobody else owns.
        let mut kept = applied.clone();
        for (i, e) in self.entries.iter().enumerate() {
            if Some(i) != mine {
                kept.union_with(&e.fields);
            }
        }
        if let Some(i) = mine {
            for path in self.entries[i].fields.paths() {
                if !kept.covers(&path) {
                    remove_path(&mut merged, &path, &kept);
                }
            }
        }
        match mine {
            Some(i) => {
                self.entries[i].fields = applied;
                self.entries[i].api_version = api_version.to_string();
            }
            None => self.entries.push(Entry {
                manager: manager.to_string(),
                operation: Operation::Apply,
                api_version: api_version.to_string(),
                time: None,
                subresource: subresource.to_string(),
                fields: applied,
            }),
        }
        self.entries.retain(|e| !e.fields.is_empty());
        Ok(merged)
    }

    /// Records the fields an apply that creates the object owns.
    pub fn record_created_by_apply(&mut self, manager: &str, api_version: &str, fields: FieldSet, now: &str) {
        self.entries.retain(|e| !e.is(manager, Operation::Apply, "", api_version));
        self.entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Apply,
            api_version: api_version.to_string(),
            time: Some(now.to_string()),
            subresource: String::new(),
            fields,
        });
    }

    /// Sets the time of a manager's entry (when its write changed the object).
    pub fn touch(&mut self, manager: &str, operation: Operation, subresource: &str, api_version: &str, now: &str) {
        if let Some(i) = self.position(manager, operation, subresource, api_version) {
            self.entries[i].time = Some(now.to_string());
        }
    }
}

/// Merges an applied configuration into the object, within the scope.
fn merge_config(target: &mut Value, config: &Value, scope: Scope) {
    let Some(config) = config.as_object() else { return };
    let Some(target) = target.as_object_mut() else { return };
    for (k, v) in config.iter().filter(|(k, _)| scope.tracks(k)) {
        if k == "metadata" {
            let Some(meta) = target.entry("metadata").or_insert_with(|| json!({})).as_object_mut() else { continue };
            for (mk, mv) in v.as_object().into_iter().flatten().filter(|(mk, _)| tracks_metadata(mk)) {
                merge_value(meta.entry(mk.clone()).or_insert(Value::Null), mv);
            }
        } else {
            merge_value(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn merge_value(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                merge_value(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Removes the field at `path` (`f:` elements only: other elements address list items, and
/// lists here are atomic), then the maps it leaves empty that nobody in `kept` owns.
fn remove_path(object: &mut Value, path: &[String], kept: &FieldSet) {
    let Some(keys) = path.iter().map(|k| k.strip_prefix("f:")).collect::<Option<Vec<&str>>>() else { return };
    fn remove(v: &mut Value, keys: &[&str], path: &[String], depth: usize, kept: &FieldSet) -> bool {
        let Some(map) = v.as_object_mut() else { return false };
        let Some((first, rest)) = keys.split_first() else { return false };
        if rest.is_empty() {
            return map.remove(*first).is_some();
        }
        let Some(child) = map.get_mut(*first) else { return false };
        let removed = remove(child, rest, path, depth + 1, kept);
        // An emptied map goes too, unless someone owns it (`{}` applied on purpose); the
        // object's own top-level fields and metadata stay.
        if removed && depth > 0 && child.as_object().is_some_and(Map::is_empty) && !kept.covers(&path[..=depth]) {
            map.remove(*first);
        }
        removed
    }
    remove(object, &keys, path, 0, kept);
}

/// Removes `null` values from an applied configuration: for the kube-apiserver a `null` in a
/// custom resource is dropped before anything else, so it applies nothing.
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(field).collect()
    }

    /// Accounts a status JSON patch both ways: from the kept old values, and from two versions.
    fn both_ways(doc: &Value, ops: Value) -> (Value, Value) {
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        let before = Before::of_json_patch(doc, &patch);
        let mut new = doc.clone();
        json_patch::patch(&mut new, &patch).unwrap();
        let kept = before.changes(&new);
        let full = changes(doc, &new, &Touched::of_json_patch(&patch), Scope::Status);
        assert_eq!(kept.changed.to_json(), full.changed.to_json());
        assert_eq!(kept.removed.to_json(), full.removed.to_json());
        (kept.changed.to_json(), kept.removed.to_json())
    }

    #[test]
    fn a_status_json_patch_is_accounted_from_what_it_replaced_as_from_both_versions() {
        let doc = json!({"spec": {"a": 1}, "status": {
            "phase": "Running", "counts": {"done": 1, "failed": 0},
            "tasks": [{"name": "a", "state": "done"}, {"name": "b", "state": "working"}, {"name": "c"}]}});
        // The engine's patch: tasks replaced (one as it was) and top-level fields set.
        let (changed, removed) = both_ways(
            &doc,
            json!([{"op": "test", "path": "/status/tasks/1/name", "value": "b"},
                   {"op": "replace", "path": "/status/tasks/1", "value": {"name": "b", "state": "done"}},
                   {"op": "replace", "path": "/status/tasks/0", "value": {"name": "a", "state": "done"}},
                   {"op": "add", "path": "/status/phase", "value": "Running"},
                   {"op": "add", "path": "/status/counts", "value": {"done": 2, "failed": 0}}]),
        );
        assert_eq!(changed, json!({"f:status": {"f:tasks": {}, "f:counts": {"f:done": {}}}}));
        assert_eq!(removed, json!({}));
        // Replaced as they were: nothing changed.
        let (changed, _) = both_ways(
            &doc,
            json!([{"op": "replace", "path": "/status/tasks/2", "value": {"name": "c"}},
                   {"op": "replace", "path": "/status/tasks/1/state", "value": "working"},
                   {"op": "replace", "path": "/status/tasks/1", "value": {"name": "b", "state": "working"}}]),
        );
        assert_eq!(changed, json!({}));
        // A deeper replace under one that puts the element back as it was still changes it.
        both_ways(
            &doc,
            json!([{"op": "replace", "path": "/status/tasks/1/state", "value": "x"},
                   {"op": "replace", "path": "/status/tasks/1/name", "value": "b"}]),
        );
        // Lists changed otherwise, removals, moves, new fields.
        let (_, removed) = both_ways(
            &doc,
            json!([{"op": "add", "path": "/status/tasks/-", "value": {"name": "d"}},
                   {"op": "remove", "path": "/status/counts"},
                   {"op": "move", "from": "/status/phase", "path": "/status/was"}]),
        );
        assert_eq!(removed, json!({"f:status": {"f:counts": {"f:done": {}, "f:failed": {}}, "f:phase": {}}}));
        both_ways(
            &doc,
            json!([{"op": "remove", "path": "/status/tasks/0"}, {"op": "add", "path": "/status/tasks/0", "value": {"name": "a", "state": "done"}}]),
        );
        both_ways(&doc, json!([{"op": "replace", "path": "/status", "value": {"phase": "Done"}}]));
        both_ways(&json!({"spec": {}}), json!([{"op": "add", "path": "/status", "value": {"phase": "New"}}]));
    }

    #[test]
    fn fields_of_an_object_are_its_leaves_with_lists_atomic_and_server_metadata_left_out() {
        let obj = json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "x", "uid": "u", "labels": {"a": "1"}, "annotations": {}},
            "spec": {"command": ["sleep", "1"], "limits": {"pids": 5}},
            "status": {"phase": "Running"},
        });
        let set = fields_of(&obj, Scope::Main);
        assert_eq!(
            set.to_json(),
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}, "f:annotations": {}},
                "f:spec": {"f:command": {}, "f:limits": {"f:pids": {}}},
            })
        );
        assert_eq!(fields_of(&obj, Scope::Status).to_json(), json!({"f:status": {"f:phase": {}}}));
        assert_eq!(FieldSet::from_json(&set.to_json()).unwrap(), set);
    }

    #[test]
    fn fields_v1_members_with_children_carry_a_dot() {
        let v = json!({"f:spec": {"f:x": {".": {}, "f:y": {}}}});
        let set = FieldSet::from_json(&v).unwrap();
        assert!(set.contains(&p("spec.x")) && set.contains(&p("spec.x.y")) && !set.contains(&p("spec")));
        assert_eq!(set.to_json(), v);
        assert!(FieldSet::from_json(&json!({"spec": {}})).unwrap_err().1.contains("\"spec\" is not a path element"));
        assert_eq!(
            display_path(&["f:spec".into(), "k:{\"name\":\"a\"}".into(), "f:image".into()]),
            ".spec[name=\"a\"].image"
        );
    }

    #[test]
    fn changes_are_looked_for_only_where_a_patch_wrote() {
        let old = json!({"metadata": {"name": "x"}, "status": {"phase": "A", "tasks": [1, 2, 3], "n": 1}});
        let new = json!({"metadata": {"name": "x"}, "status": {"phase": "A", "tasks": [1, 9, 3], "n": 2}});
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/status/tasks/1/name", "value": "t"},
            {"op": "replace", "path": "/status/tasks/1", "value": 9},
            {"op": "add", "path": "/status/phase", "value": "A"},
        ]))
        .unwrap();
        let touched = Touched::of_json_patch(&patch);
        let c = changes(&old, &new, &touched, Scope::Status);
        // `n` changed too, but not where the patch wrote; `phase` was written with its own value.
        assert_eq!(c.changed.to_json(), json!({"f:status": {"f:tasks": {}}}));
        assert!(c.removed.is_empty());
        let all = changes(&old, &new, &Touched::everywhere(), Scope::Status);
        assert_eq!(all.changed.to_json(), json!({"f:status": {"f:n": {}, "f:tasks": {}}}));
        let merge = Touched::of_merge_patch(&json!({"spec": {"limits": null}}));
        let c = changes(
            &json!({"spec": {"limits": {"pids": 1, "cpu": "1"}, "x": 1}}),
            &json!({"spec": {"x": 1}}),
            &merge,
            Scope::Main,
        );
        assert!(c.changed.is_empty());
        assert_eq!(c.removed.to_json(), json!({"f:spec": {"f:limits": {"f:cpu": {}, "f:pids": {}}}}));
    }

    fn applied(
        m: &mut ManagedFields,
        live: &Value,
        config: Value,
        who: &str,
        force: bool,
    ) -> Result<Value, Vec<Conflict>> {
        m.apply(live, &config, who, "a2a.dev/v1alpha1", Scope::Main, force)
    }

    #[test]
    fn a_field_no_longer_applied_is_removed_unless_another_manager_owns_it() {
        let mut m = ManagedFields::default();
        let live = json!({"metadata": {"name": "x"}, "spec": {}});
        let config = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"limits": {"pids": 5, "cpu": "1"}}});
        let live = applied(&mut m, &live, config, "ci", false).unwrap();
        let again = applied(
            &mut m,
            &live,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"limits": {"cpu": "1"}}}),
            "ci",
            false,
        )
        .unwrap();
        assert_eq!(again, json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"limits": {"cpu": "1"}}}));
        // Another manager sharing `cpu` keeps it when the first stops applying it.
        applied(&mut m, &again, json!({"spec": {"limits": {"cpu": "1"}}}), "other", false).unwrap();
        let last = applied(&mut m, &again, json!({"metadata": {"labels": {"a": "1"}}}), "ci", false).unwrap();
        assert_eq!(last["spec"], json!({"limits": {"cpu": "1"}}));
        // Everything of a map removed removes the emptied map too.
        let mut m = ManagedFields::default();
        let live = applied(
            &mut m,
            &json!({"metadata": {"name": "x"}}),
            json!({"spec": {"limits": {"pids": 5}, "x": 1}}),
            "ci",
            false,
        )
        .unwrap();
        let after = applied(&mut m, &live, json!({"spec": {"x": 1}}), "ci", false).unwrap();
        assert_eq!(after, json!({"metadata": {"name": "x"}, "spec": {"x": 1}}));
    }

    #[test]
    fn a_different_value_for_a_field_another_manager_owns_conflicts_unless_forced() {
        let mut m = ManagedFields::default();
        let live = applied(
            &mut m,
            &json!({"metadata": {"name": "x"}}),
            json!({"spec": {"replicas": 1, "a": 1}}),
            "one",
            false,
        )
        .unwrap();
        // The same value is shared, not a conflict.
        let live = applied(&mut m, &live, json!({"spec": {"a": 1}}), "two", false).unwrap();
        let err = applied(&mut m.clone(), &live, json!({"spec": {"replicas": 2, "a": 2}}), "two", false).unwrap_err();
        assert_eq!(
            err,
            [
                Conflict { manager: "\"one\"".into(), path: ".spec.a".into() },
                Conflict { manager: "\"one\"".into(), path: ".spec.replicas".into() }
            ]
        );
        let msg = conflict_error(&err).message;
        assert_eq!(msg, "Apply failed with 2 conflicts: conflicts with \"one\":\n- .spec.a\n- .spec.replicas");
        let forced = applied(&mut m, &live, json!({"spec": {"replicas": 2, "a": 2}}), "two", true).unwrap();
        assert_eq!(forced["spec"], json!({"replicas": 2, "a": 2}));
        assert!(m.entries().iter().all(|e| e.manager != "one"), "\"one\" owns nothing any more");
        assert!(m.entries().iter().any(|e| e.manager == "two" && e.fields.contains(&p("spec.replicas"))));
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_from_other_managers() {
        let mut m = ManagedFields::default();
        let live =
            applied(&mut m, &json!({"metadata": {"name": "x"}}), json!({"spec": {"replicas": 1, "a": 1}}), "ci", false)
                .unwrap();
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(3);
        let c = changes(&live, &new, &Touched::of_merge_patch(&json!({"spec": {"replicas": 3}})), Scope::Main);
        m.record_update("kubectl-edit", "a2a.dev/v1alpha1", "", &c, "2026-01-01T00:00:00Z");
        let err = applied(&mut m.clone(), &new, json!({"spec": {"replicas": 1, "a": 1}}), "ci", false).unwrap_err();
        assert_eq!(
            err,
            [Conflict { manager: "\"kubectl-edit\" using a2a.dev/v1alpha1".into(), path: ".spec.replicas".into() }]
        );
        // An update that changes nothing records nothing.
        let before = m.clone();
        m.record_update("x", "v", "", &Changes::default(), "2027-01-01T00:00:00Z");
        assert_eq!(m, before);
    }

    #[test]
    fn client_sent_entries_are_checked_and_an_empty_entry_resets() {
        assert!(ManagedFields::parse(&json!([{}])).unwrap().entries().is_empty());
        let errors = ManagedFields::parse(&json!([{"manager": "m", "operation": "Patch", "fieldsV1": {"f:spec": {}}}]))
            .unwrap_err();
        assert_eq!(errors[0].path, "metadata.managedFields[0].operation");
        let errors = ManagedFields::parse(&json!([{"operation": "Update", "fieldsV1": {"spec": {}}}])).unwrap_err();
        assert!(errors[0].path.starts_with("metadata.managedFields[0].fieldsV1"), "{errors:?}");
        assert!(ManagedFields::parse(&json!({"a": 1})).is_err());
    }
}
