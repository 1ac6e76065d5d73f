//! The REST verbs on resources: get, list, watch, create, update, patch (merge, JSON, and
//! server-side apply), delete with finalizers, and the `/status` subresource.
//!
//! Every write keeps `metadata.managedFields` as the kube-apiserver does (see [`super::managed`]):
//! server-side apply merges the configuration, removes the fields its manager stopped applying
//! and answers 409 on fields another manager owns (unless `force`); create, update and the
//! other patches record an `Update` entry for their manager (`fieldManager`, else the
//! User-Agent's product) with the fields they changed. Status writes are accounted by the paths
//! they wrote (a JSON patch's operations, a merge patch's leaves), so a status write to a big
//! workflow compares only what it touched.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::AppState;
use super::managed::{self, FieldSet, ManagedFields, Operation, Scope, Touched};
use super::params;
use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{self, ObjectKey, Precondition, Stored, Write};

mod body;
mod patch;
mod read;

pub use body::{body_is_yaml, parse_body, parse_body_off_thread};
use body::{media_type, off_thread};
use patch::changes_only_status;
pub use patch::{merge_owned, parse_json_patch};

/// A parsed resource path.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
}

/// What a request did, for metrics and the audit log.
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    pub verb: &'static str,
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...` resource paths.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::not_found_path()),
    };
    let find = |plural: &str| Resource::find(group, version, plural);
    let (namespace, rest): (Option<String>, Vec<&str>) = match rest {
        ["namespaces", ns, plural, more @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            (Some(ns.to_string()), std::iter::once(*plural).chain(more.iter().copied()).collect())
        }
        _ => (None, rest.to_vec()),
    };
    let resource = rest.first().and_then(|p| find(p)).ok_or_else(ApiError::not_found_path)?;
    if namespace.is_none() && resource.namespaced && rest.len() > 1 {
        // `/apis/a2a.dev/v1alpha1/agents/x`: a namespaced object needs its namespace.
        return Err(ApiError::not_found_path());
    }
    let (name, status) = match &rest[1..] {
        [] => (None, false),
        [name] => (Some(name.to_string()), false),
        [name, "status"] if resource.status_subresource => (Some(name.to_string()), true),
        _ => return Err(ApiError::not_found_path()),
    };
    if let Some(n) = &name
        && n.is_empty()
    {
        return Err(ApiError::not_found_path());
    }
    Ok(Target { resource, namespace, name, status })
}

pub(super) fn meta_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object.get_mut("metadata").and_then(Value::as_object_mut)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing leaves zeros; uids stay unique enough with the time mixed
    // in by callers that need it, and the token generator checks separately.
    let _ = getrandom::fill(&mut b);
    b
}

pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut uid = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            uid.push('-');
        }
        uid.push(HEX[usize::from(x >> 4)] as char);
        uid.push(HEX[usize::from(x & 0x0f)] as char);
    }
    uid
}

fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// The time now as Kubernetes writes `metav1.Time` (creationTimestamp, deletionTimestamp): RFC
/// 3339 in whole seconds.
pub(super) fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

/// Empty `labels`, `annotations`, `finalizers` and `ownerReferences` are left out, as the
/// kube-apiserver's typed metadata leaves them out (a merge patch of `annotations: {}`, which
/// kubectl sends, must not show up as a change).
fn drop_empty_metadata(meta: &mut Map<String, Value>) {
    meta.retain(|k, v| {
        !(matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
            && (v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty) || v.is_null()))
    });
}

/// The kube-apiserver refuses to add finalizers to an object being deleted.
fn check_no_new_finalizers(res: &Resource, name: &str, current: &Value, new: &Value) -> Result<(), ApiError> {
    if current.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let list = |v: &Value| -> Vec<String> {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let old = list(current);
    let added: Vec<String> = list(new).into_iter().filter(|f| !old.contains(f)).collect();
    if added.is_empty() {
        return Ok(());
    }
    let go = format!("[]string{{{}}}", added.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", "));
    let detail = format!("no new finalizers can be added if the object is being deleted, found new finalizers {go}");
    Err(ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "{}.{} \"{name}\" is invalid: metadata.finalizers: Forbidden: {detail}",
            res.kind,
            res.group_or_core()
        ),
        details: Some(json!({
            "name": name, "group": res.group, "kind": res.kind,
            "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {detail}"), "field": "metadata.finalizers"}],
        })),
    })
}

/// Adds `finalizer` to a new Agent that a local node will run: one with a `command` to start
/// as an A2A server (not `url`, not `protocol: stdio`, which the node starts no process for
/// outside a task). The node removes it once the agent's processes are gone, as it would have
/// removed the one it used to add before the first start. A `metadata.finalizers` that is not
/// a list is left for validation to report.
fn hold_for_node(object: &mut Value, finalizer: &str) {
    let external = object.pointer("/spec/url").is_some_and(|u| !u.is_null());
    let stdio = object.pointer("/spec/protocol").and_then(Value::as_str) == Some("stdio");
    if external || stdio {
        return;
    }
    let Some(meta) = meta_mut(object) else { return };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

/// Whether a write is a dry run; the value was checked on the way in
/// ([`params::check_write_options`]), so only `All` is left to find.
fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// The field manager of a write: the `fieldManager` parameter, else the User-Agent's product
/// (`kubectl/v1.32.0 (linux/amd64) …` is `kubectl`), as the kube-apiserver derives it.
fn field_manager(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<String, ApiError> {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        managed::check_manager(m).map_err(|e| {
            ApiError::new(422, "Invalid", format!("fieldManager: Invalid value: {m:?}: fieldManager {e}"))
        })?;
        return Ok(m.clone());
    }
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let product = agent.split('/').next().unwrap_or_default();
    Ok(product.chars().filter(|c| !c.is_control()).take(128).collect())
}

/// How a write's fields are accounted to its manager.
enum Ownership {
    /// Create, update, merge and JSON patches: the manager's `Update` entry gains the fields
    /// the write changed, looked for where it may have written.
    Update(Touched),
    /// Server-side apply: the write's `compute` merged the configuration and set the entries.
    Apply,
}

/// Checks the `apiVersion` and `kind` an object names, if it names them, against the request.
fn check_type(res: &Resource, map: &Map<String, Value>) -> Result<(), ApiError> {
    let api_version = res.api_version();
    match map.get("apiVersion") {
        None => {}
        Some(Value::String(v)) if *v == api_version => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({api_version})",
                other.as_str().unwrap_or("not a string")
            )));
        }
    }
    match map.get("kind") {
        None => Ok(()),
        Some(Value::String(k)) if k == res.kind => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({}) for {}",
            other.as_str().unwrap_or("not a string"),
            res.kind,
            res.qualified()
        ))),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

impl AppState {
    pub(super) fn key(&self, t: &Target, name: &str) -> ObjectKey {
        ObjectKey::new(t.resource.storage(), t.namespace.clone().unwrap_or_default(), name)
    }

    pub(super) fn store_error(&self, t: &Target, name: &str, e: store::Error) -> ApiError {
        match e {
            store::Error::AlreadyExists => ApiError::already_exists(t.resource, name),
            store::Error::NotFound => ApiError::not_found(t.resource, name),
            store::Error::Conflict { .. } => ApiError::conflict(t.resource, name),
            store::Error::Gone { requested, oldest } => {
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            store::Error::Closed => ApiError::unavailable("the server is shutting down"),
            // What the kube-apiserver answers when etcd refuses an object over its request
            // limit: a 500 with etcd's words and no reason; the rest says which object and
            // by how much.
            store::Error::TooLarge { size, limit, .. } => ApiError::new(
                500,
                "",
                format!(
                    "etcdserver: request is too large: {} \"{name}\" would be stored as {size} bytes, more than \
                     the limit of {limit}",
                    t.resource.qualified()
                ),
            ),
            e @ store::Error::NotAnObject { .. } => ApiError::bad_request(e.to_string()),
            e @ store::Error::OutOfSpace { .. } => ApiError::unavailable(e.to_string()),
            e @ (store::Error::Storage { .. }
            | store::Error::Corrupt { .. }
            | store::Error::Log(_)
            | store::Error::Format(_)
            | store::Error::Seal(_)) => ApiError::internal(e.to_string()),
        }
    }

    /// The namespace of a create must exist and not be terminating (the kube-apiserver's
    /// NamespaceLifecycle admission: 404, or 403 with a `NamespaceTerminating` cause).
    fn check_namespace(&self, t: &Target, name: &str) -> Result<(), ApiError> {
        if let Some(ns) = &t.namespace {
            let key = ObjectKey::new("/namespaces", "", ns.clone());
            match self.store.get(&key) {
                None => return Err(ApiError::namespace_not_found(ns)),
                Some(n) if super::delete::is_terminating(&n) => {
                    return Err(super::delete::namespace_terminating(t.resource, name, ns));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Checks apiVersion, kind, namespace and name against the request, fills what may be
    /// omitted, and validates the result.
    fn admit(&self, t: &Target, object: &mut Value, path_name: Option<&str>) -> Result<String, ApiError> {
        let res = t.resource;
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::bad_request(format!(
                "the request body must be a {} object (a JSON mapping)",
                res.kind
            )));
        };
        check_type(res, map)?;
        map.entry("apiVersion").or_insert_with(|| json!(res.api_version()));
        map.entry("kind").or_insert_with(|| json!(res.kind));
        let meta = map
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be a mapping"))?;
        drop_empty_metadata(meta);
        match (&t.namespace, meta.get("namespace")) {
            (Some(path_ns), Some(Value::String(body_ns))) if body_ns != path_ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the \
                     namespace sent on the request ({path_ns})"
                )));
            }
            (Some(path_ns), _) => {
                meta.insert("namespace".into(), json!(path_ns));
            }
            (None, _) if res.namespaced => {
                // The all-namespaces path takes no writes (see `verb_of`); a namespaced object
                // stored without a namespace could not be reached again.
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            (None, _) => {
                meta.remove("namespace");
            }
        }
        if let Some(path_name) = path_name {
            match meta.get("name") {
                Some(Value::String(n)) if n != path_name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({path_name})"
                    )));
                }
                _ => {
                    meta.insert("name".into(), json!(path_name));
                }
            }
        }
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        // managedFields are the server's own (written from parsed entries, or as stored): left
        // out of validation, which would decode every entry's field sets into typed metadata.
        let managed_fields = meta.remove("managedFields");
        let validated = res.validate_write(object, path_name.is_none());
        if let Some(m) = managed_fields
            && let Some(meta) = meta_mut(object)
        {
            meta.insert("managedFields".into(), m);
        }
        validated.map_err(|errors| ApiError::invalid(res, &name, &errors))?;
        Ok(name)
    }

    /// Fills server-set metadata for a new object.
    fn prepare_create(&self, t: &Target, object: &mut Value) -> Result<(), ApiError> {
        let Some(meta) = meta_mut(object) else {
            return Ok(()); // admit reports it
        };
        if meta.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            let name = format!("{prefix}{}", name_suffix());
            meta.insert("name".into(), json!(name));
        }
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if !t.resource.is_event() {
            meta.insert("generation".into(), json!(1));
        }
        if t.resource.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        if let Some(finalizer) = self.config.agent_finalizer
            && t.resource.a2a == Some(crate::api::Kind::Agent)
        {
            hold_for_node(object, finalizer);
        }
        if t.resource.plural == "namespaces" {
            object["status"] = json!({"phase": "Active"});
            // As the kube-apiserver: the lifecycle's finalizer, removed once a deleted
            // namespace is empty, whatever spec the client sent (`kubectl create namespace`
            // sends an empty one).
            if !object.get("spec").is_some_and(Value::is_object) {
                object["spec"] = json!({});
            }
            let finalizers = &mut object["spec"]["finalizers"];
            if !finalizers.is_array() {
                *finalizers = json!([]);
            }
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == super::delete::NAMESPACE_FINALIZER)
            {
                list.push(json!(super::delete::NAMESPACE_FINALIZER));
            }
        }
        Ok(())
    }

    pub async fn create(
        &self,
        t: &Target,
        object: Value,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
        info: &mut RequestInfo,
    ) -> Result<Response, ApiError> {
        let manager = field_manager(headers, q)?;
        self.create_object(t, object, q, info, &manager, Operation::Update).await
    }

    /// Creates an object, its manager owning every field it sent: as an `Update` (a create)
    /// or as an `Apply` (server-side apply of an absent object).
    async fn create_object(
        &self,
        t: &Target,
        mut object: Value,
        q: &HashMap<String, String>,
        info: &mut RequestInfo,
        manager: &str,
        operation: Operation,
    ) -> Result<Response, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "the request body must be a {} object (a JSON mapping)",
                t.resource.kind
            )));
        }
        // Entries a client creates the object with are kept (kubectl copies objects so).
        let sent = object.get_mut("metadata").and_then(Value::as_object_mut).and_then(|m| m.remove("managedFields"));
        let mut entries = match sent {
            None | Some(Value::Null) => ManagedFields::default(),
            Some(Value::Array(a)) if a.is_empty() => ManagedFields::default(),
            Some(v) => ManagedFields::parse(&v).map_err(|errors| {
                let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                ApiError::invalid(t.resource, name, &errors)
            })?,
        };
        let fields = managed::fields_of(&object, Scope::of(t.resource.status_subresource, false));
        self.prepare_create(t, &mut object)?;
        if let Some(n) = object.pointer("/metadata/name").and_then(Value::as_str) {
            info.name = n.to_string();
        }
        let now = managed::now();
        let api_version = t.resource.api_version();
        match operation {
            Operation::Update => {
                let changes = managed::Changes { changed: fields, removed: FieldSet::default() };
                entries.record_update(manager, &api_version, "", &changes, &now);
            }
            Operation::Apply => entries.record_created_by_apply(manager, &api_version, fields, &now),
        }
        entries.write(&mut object);
        let name = self.admit(t, &mut object, None)?;
        info.name = name.clone();
        self.check_namespace(t, &name)?;
        if dry_run(q) {
            return Ok(json_response(StatusCode::CREATED, &object));
        }
        let object = stored_form(t.resource, object);
        let stored = self
            .store
            .write(Write::Put { key: self.key(t, &name), object, precondition: Precondition::Absent })
            .await
            .map_err(|e| self.store_error(t, &name, e))?;
        Ok(present(t.resource, Object::Stored(stored))?.respond(StatusCode::CREATED))
    }

    /// Builds the next version of an object from the current one and a proposed one,
    /// keeping what the client may not change and bumping `generation` on spec changes.
    fn next_version(&self, t: &Target, name: &str, current: &Value, proposed: Value) -> Result<Value, ApiError> {
        let mut new = if t.status {
            // The current object with the proposed status, built without copying either status.
            let mut proposed = proposed;
            let status = proposed.as_object_mut().and_then(|m| m.remove("status"));
            let mut new: Map<String, Value> = current
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "status")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(status) = status {
                new.insert("status".into(), status);
            }
            Value::Object(new)
        } else {
            let mut new = proposed;
            if !new.is_object() {
                return Err(ApiError::bad_request(format!(
                    "the request body must be a {} object (a JSON mapping)",
                    t.resource.kind
                )));
            }
            if t.resource.status_subresource {
                match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if !new.get("metadata").is_some_and(Value::is_object) {
                new["metadata"] = json!({});
            }
            new
        };
        self.admit(t, &mut new, Some(name))?;
        if !t.status && matches!(t.resource.plural, "secrets" | "configmaps") && t.resource.group.is_empty() {
            let errors = super::secret::check_update(t.resource.plural, current, &new);
            if !errors.is_empty() {
                return Err(ApiError::invalid(t.resource, name, &errors));
            }
        }
        check_no_new_finalizers(t.resource, name, current, &new)?;
        if let (false, Some(kind)) = (t.status, t.resource.a2a) {
            let errors = crate::api::update::check_update(kind, current, &new);
            if !errors.is_empty() {
                return Err(ApiError::invalid(t.resource, name, &errors));
            }
        }
        let cur_meta = current.get("metadata").and_then(Value::as_object);
        if let Some(meta) = meta_mut(&mut new) {
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match cur_meta.and_then(|m| m.get(field)) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.remove("resourceVersion");
        }
        // Everything but metadata and status is spec; compared in place, since cloning a
        // large object (a big Workflow's status) twice per write would cost more than the write.
        let spec_changed = |a: &Value, b: &Value| match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => {
                a.keys().chain(b.keys()).filter(|k| *k != "metadata" && *k != "status").any(|k| a.get(k) != b.get(k))
            }
            _ => a != b,
        };
        if !t.resource.is_event() && spec_changed(&new, current) {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            if let Some(meta) = meta_mut(&mut new) {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
        Ok(new)
    }

    /// Read-modify-write with optimistic concurrency. `compute` turns the current object into
    /// the proposed one. A resourceVersion the client put in the proposal must match; without
    /// one, a concurrent change is retried.
    ///
    /// `compute` also gets the object's managedFields entries (an apply updates them); the
    /// write's own entry is recorded after, as `ownership` says.
    async fn modify(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        manager: &str,
        ownership: Ownership,
        mut compute: impl FnMut(&Value, &mut ManagedFields) -> Result<Value, ApiError>,
    ) -> Result<Object, ApiError> {
        let name = t.name.clone().unwrap_or_default();
        let key = self.key(t, &name);
        let scope = Scope::of(t.resource.status_subresource, t.status);
        let api_version = t.resource.api_version();
        for _ in 0..16 {
            let stored = self.store.get(&key).ok_or_else(|| ApiError::not_found(t.resource, &name))?;
            let current_rv = stored.resource_version;
            let current = viewed(t.resource, parsed(&stored)?);
            let mut entries = ManagedFields::of_stored(&current);
            let mut proposed = compute(&current, &mut entries)?;
            if matches!(ownership, Ownership::Update(_)) && scope != Scope::Status {
                // Entries a client wrote replace the recorded ones, as in the kube-apiserver
                // (`[{}]` clears them); an empty list is a client that does not know the field.
                let sent =
                    proposed.get_mut("metadata").and_then(Value::as_object_mut).and_then(|m| m.remove("managedFields"));
                match sent {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) if a.is_empty() => {}
                    Some(v) if Some(&v) == current.pointer("/metadata/managedFields") => {}
                    Some(v) => {
                        entries =
                            ManagedFields::parse(&v).map_err(|errors| ApiError::invalid(t.resource, &name, &errors))?;
                    }
                }
            }
            let explicit =
                match proposed.pointer("/metadata/resourceVersion") {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {s:?}: expected a number"))
                    })?),
                    _ => None,
                };
            if explicit.is_some_and(|rv| rv != current_rv) {
                return Err(ApiError::conflict(t.resource, &name));
            }
            let mut new = self.next_version(t, &name, &current, proposed)?;
            let now = managed::now();
            if let Ownership::Update(touched) = &ownership {
                let changes = managed::changes(&current, &new, touched, scope);
                entries.record_update(manager, &api_version, scope.subresource(), &changes, &now);
            }
            entries.write(&mut new);
            let mut unchanged = current;
            if let Some(m) = meta_mut(&mut unchanged) {
                m.remove("resourceVersion");
            }
            if new == unchanged {
                return present(t.resource, Object::Stored(stored));
            }
            if let Ownership::Apply = ownership {
                // The applier's time moves only when its apply changed the object.
                entries.touch(manager, Operation::Apply, scope.subresource(), &api_version, &now);
                entries.write(&mut new);
            }
            if dry_run(q) {
                // A dry run changes nothing: the answer keeps the stored version's number.
                if let Some(meta) = meta_mut(&mut new) {
                    meta.insert("resourceVersion".into(), json!(current_rv.to_string()));
                }
                return Ok(Object::Value(new));
            }
            let new = stored_form(t.resource, new);
            let finished = super::delete::finished(&new);
            let write = if finished {
                Write::Delete { key: key.clone(), precondition: Precondition::ResourceVersion(current_rv) }
            } else {
                Write::Put { key: key.clone(), object: new, precondition: Precondition::ResourceVersion(current_rv) }
            };
            match self.store.write(write).await {
                Ok(v) => {
                    if finished {
                        self.removed(&v);
                    }
                    return present(t.resource, Object::Stored(v));
                }
                // Another write came between the read and this one: read again. A
                // resourceVersion the client pinned is checked against the new object above,
                // so it conflicts then; a patch that names none (the stored version rides
                // along in `proposed`) is applied again, as the kube-apiserver retries it.
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(t, &name, e)),
            }
        }
        Err(ApiError::conflict(t.resource, &name))
    }

    /// A patch of the `/status` subresource that changes nothing outside status, applied to
    /// the one parsed copy of the stored object. The general path ([`Self::modify`]) holds the
    /// current object, the patched copy and the next version at once: for a 10,000-task
    /// Workflow, whose engine patches its status many times a second, that was most of the
    /// server's memory. Everything but status is as stored, so there is nothing to carry over
    /// and no generation to bump; a patch that leaves the object as it was writes nothing (the
    /// store compares the bytes). A stale version is retried on the latest, like any patch.
    ///
    /// `apply` answers what it replaced ([`managed::Before`]), from which the manager's
    /// `Update` entry for the status subresource is recorded as [`Self::modify`] records it.
    async fn patch_status_in_place(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        manager: &str,
        mut apply: impl FnMut(&mut Value) -> Result<managed::Before, ApiError>,
    ) -> Result<Object, ApiError> {
        let name = t.name.clone().unwrap_or_default();
        let key = self.key(t, &name);
        let api_version = t.resource.api_version();
        for _ in 0..16 {
            let stored = self.store.get(&key).ok_or_else(|| ApiError::not_found(t.resource, &name))?;
            let mut object = parsed(&stored)?;
            // `test` operations see the object as stored, resourceVersion included.
            let before = apply(&mut object)?;
            if let Some(meta) = meta_mut(&mut object) {
                meta.remove("resourceVersion");
            }
            self.admit(t, &mut object, Some(&name))?;
            let changes = before.changes(&object);
            drop(before);
            // Status writes leave metadata as stored, managedFields included.
            let mut entries = ManagedFields::of_stored(&object);
            entries.record_update(manager, &api_version, Scope::Status.subresource(), &changes, &managed::now());
            entries.write(&mut object);
            if dry_run(q) {
                return Ok(Object::Value(object));
            }
            let precondition = Precondition::ResourceVersion(stored.resource_version);
            drop(stored);
            match self.store.write(Write::Put { key: key.clone(), object, precondition }).await {
                Ok(v) => return Ok(Object::Stored(v)),
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(t, &name, e)),
            }
        }
        Err(ApiError::conflict(t.resource, &name))
    }

    pub async fn update(
        &self,
        t: &Target,
        body: Value,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let manager = field_manager(headers, q)?;
        // Custom resources take no unconditional update (their strategy's
        // AllowUnconditionalUpdate is false); built-in kinds such as ConfigMaps do.
        if t.resource.a2a.is_some()
            && body.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            let name = t.name.as_deref().unwrap_or_default();
            let res = t.resource;
            let cause = "Invalid value: 0x0: must be specified for an update";
            return Err(ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("{}.{} \"{name}\" is invalid: metadata.resourceVersion: {cause}", res.kind, res.group),
                details: Some(json!({
                    "name": name, "group": res.group, "kind": res.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "metadata.resourceVersion"}],
                })),
            });
        }
        let ownership = Ownership::Update(Touched::everywhere());
        Ok(self.modify(t, q, &manager, ownership, |_, _| Ok(body.clone())).await?.respond(StatusCode::OK))
    }

    pub async fn patch(
        &self,
        t: &Target,
        headers: &HeaderMap,
        body: &Bytes,
        q: &HashMap<String, String>,
        info: &mut RequestInfo,
    ) -> Result<Response, ApiError> {
        let media = media_type(headers);
        if media != "application/apply-patch+yaml" && q.contains_key("force") {
            return Err(ApiError::new(422, "Invalid", "force: Forbidden: may not be specified for non-apply patch"));
        }
        match media.as_str() {
            "application/merge-patch+json" => {
                let patch = parse_body_off_thread(body, false).await?;
                let manager = field_manager(headers, q)?;
                // `{}` writes nothing; it takes the general path, which finds that out.
                if t.status && patch.as_object().is_some_and(|m| !m.is_empty() && m.keys().all(|k| k == "status")) {
                    let mut first = Some(patch);
                    let v = self
                        .patch_status_in_place(t, q, &manager, |doc| {
                            // The patch's values move into the object; a retry (the object
                            // changed meanwhile) parses the body again.
                            let patch = match first.take() {
                                Some(p) => p,
                                None => parse_body(body, false)?,
                            };
                            let touched = Touched::of_merge_patch(&patch);
                            let old = merge_owned(doc, patch).unwrap_or_else(|| Value::Object(Map::new()));
                            Ok(managed::Before::Displaced { old, touched })
                        })
                        .await?;
                    return Ok(v.respond(StatusCode::OK));
                }
                let ownership = Ownership::Update(Touched::of_merge_patch(&patch));
                let v = self
                    .modify(t, q, &manager, ownership, |cur, _| {
                        let mut doc = cur.clone();
                        json_patch::merge(&mut doc, &patch);
                        Ok(doc)
                    })
                    .await?;
                Ok(v.respond(StatusCode::OK))
            }
            "application/json-patch+json" => {
                let patch = off_thread(body, false, |b| parse_json_patch(b)).await?;
                let manager = field_manager(headers, q)?;
                if t.status && patch.0.iter().all(changes_only_status) {
                    let v = self
                        .patch_status_in_place(t, q, &manager, |doc| {
                            let before = managed::Before::of_json_patch(doc, &patch);
                            // The document is dropped when an operation fails: no undo log.
                            json_patch::patch_unsafe(doc, &patch).map_err(|e| {
                                ApiError::new(422, "Invalid", format!("the JSON patch cannot be applied: {e}"))
                            })?;
                            Ok(before)
                        })
                        .await?;
                    return Ok(v.respond(StatusCode::OK));
                }
                let ownership = Ownership::Update(Touched::of_json_patch(&patch));
                let v = self
                    .modify(t, q, &manager, ownership, |cur, _| {
                        let mut doc = cur.clone();
                        json_patch::patch(&mut doc, &patch).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the JSON patch cannot be applied: {e}"))
                        })?;
                        Ok(doc)
                    })
                    .await?;
                Ok(v.respond(StatusCode::OK))
            }
            "application/apply-patch+yaml" => self.apply(t, body, q, info).await,
            "application/strategic-merge-patch+json" if t.resource.a2a.is_none() => {
                let patch = parse_body_off_thread(body, false).await?;
                let manager = field_manager(headers, q)?;
                let schema = super::smp::kind_schema(t.resource);
                let ownership = Ownership::Update(Touched::everywhere());
                let v = self
                    .modify(t, q, &manager, ownership, |cur, _| {
                        let mut doc = cur.clone();
                        super::smp::apply(&mut doc, patch.clone(), schema).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the strategic merge patch cannot be applied: {e}"))
                        })?;
                        Ok(doc)
                    })
                    .await?;
                Ok(v.respond(StatusCode::OK))
            }
            // Custom resources (the a2a kinds) take no strategic merge patch: the
            // kube-apiserver's 415 for them, which lists the patch types they take.
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }

    /// Server-side apply: creates the object when absent, else merges the configuration with
    /// field ownership (see [`ManagedFields::apply`]).
    async fn apply(
        &self,
        t: &Target,
        body: &Bytes,
        q: &HashMap<String, String>,
        info: &mut RequestInfo,
    ) -> Result<Response, ApiError> {
        let mut config = parse_body_off_thread(body, true).await?;
        let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager parameter",
            ));
        };
        managed::check_manager(manager).map_err(|e| {
            ApiError::new(422, "Invalid", format!("fieldManager: Invalid value: {manager:?}: fieldManager {e}"))
        })?;
        let force = params::flag(q, "force")?;
        let Some(map) = config.as_object() else {
            return Err(ApiError::bad_request(format!(
                "the applied configuration must be a {} object (a YAML mapping)",
                t.resource.kind
            )));
        };
        check_type(t.resource, map)?;
        if !config.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request("metadata must be a mapping"));
        }
        if config.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        managed::strip_nulls(&mut config);
        let name = t.name.clone().unwrap_or_default();
        if let Some(n) = config.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if self.store.get(&self.key(t, &name)).is_none() && !t.status {
            let mut obj = config.clone();
            if let Some(meta) =
                obj.as_object_mut().and_then(|m| m.entry("metadata").or_insert_with(|| json!({})).as_object_mut())
            {
                meta.entry("name").or_insert_with(|| json!(name));
            }
            match self.create_object(t, obj, q, info, manager, Operation::Apply).await {
                Err(e) if e.reason == "AlreadyExists" => {} // raced: apply over it
                other => return other,
            }
        }
        let scope = Scope::of(t.resource.status_subresource, t.status);
        let api_version = t.resource.api_version();
        // A resourceVersion in the configuration is a precondition; without one, a concurrent
        // write is retried.
        let precondition = config.pointer("/metadata/resourceVersion").cloned();
        let v = self
            .modify(t, q, manager, Ownership::Apply, |cur, entries| {
                let mut merged = match entries.apply(cur, &config, manager, &api_version, scope, force) {
                    // The switch from client-side apply ([`super::last_applied`]).
                    Err(conflicts) if super::last_applied::hands_over(cur, &conflicts) => {
                        entries.apply(cur, &config, manager, &api_version, scope, true)
                    }
                    other => other,
                }
                .map_err(|conflicts| managed::conflict_error(&conflicts))?;
                super::last_applied::sync(manager, &mut merged, &config);
                if let Some(meta) = meta_mut(&mut merged) {
                    match &precondition {
                        Some(rv) => meta.insert("resourceVersion".into(), rv.clone()),
                        None => meta.remove("resourceVersion"),
                    };
                }
                Ok(merged)
            })
            .await?;
        Ok(v.respond(StatusCode::OK))
    }
}

/// What a write answers: the stored version (its bytes as they are) or a computed object
/// (dry runs).
pub enum Object {
    Stored(Arc<Stored>),
    Value(Value),
}

impl Object {
    pub(super) fn respond(self, code: StatusCode) -> Response {
        match self {
            Object::Stored(s) => {
                let mut r = Response::new(Body::from(s.bytes().clone()));
                *r.status_mut() = code;
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                r
            }
            Object::Value(v) => json_response(code, &v),
        }
    }

    pub(super) fn to_json(&self) -> Vec<u8> {
        match self {
            Object::Stored(s) => s.bytes().to_vec(),
            // Serializing a JSON value cannot fail.
            Object::Value(v) => serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// A stored object as the resource's version shows it: an Event read through
/// `events.k8s.io/v1` converted from the core shape it is stored in ([`super::events`]).
pub(super) fn viewed(res: &Resource, object: Value) -> Value {
    if res.is_view() { super::events::to_v1(object) } else { object }
}

/// An object in the shape it is stored in: an `events.k8s.io/v1` Event as a core Event.
pub(super) fn stored_form(res: &Resource, object: Value) -> Value {
    if res.is_view() { super::events::to_core(object) } else { object }
}

/// What a write or read answers through the resource's version (see [`viewed`]).
pub(super) fn present(res: &Resource, o: Object) -> Result<Object, ApiError> {
    if !res.is_view() {
        return Ok(o);
    }
    Ok(Object::Value(match o {
        Object::Stored(s) => viewed(res, parsed(&s)?),
        Object::Value(v) => viewed(res, v),
    }))
}

/// Whether a stored object matches the selectors.
pub(super) fn selected(o: &Stored, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches_with(|k| o.label(k)) && fields.matches_with(|p| o.field(p))
}

/// The stored object parsed; the store wrote it from a parsed value, so this fails only if
/// the store is damaged.
pub(super) fn parsed(o: &Stored) -> Result<Value, ApiError> {
    o.value().map_err(|e| ApiError::internal(format!("stored object {} is unreadable: {e}", o.key)))
}

/// A `KindList` of already serialised items, written by hand: parsing them into one value
/// to serialise it again would double the work.
pub(super) fn list_response(res: &Resource, metadata: &Value, items: &[&[u8]]) -> Response {
    let head = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        res.kind,
        res.api_version(),
        metadata
    );
    let mut out = Vec::with_capacity(head.len() + items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.extend_from_slice(head.as_bytes());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    let mut r = Response::new(Body::from(out));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

/// Which verb a method on a target is.
///
/// A namespaced resource's all-namespaces path (`/api/v1/configmaps`) serves only list and
/// watch: anything else there is refused as the kube-apiserver refuses it (405 for the core
/// kinds, whose routes it does not register; 404 for custom resources, which its CRD handler
/// does not find), so no namespaced object is ever stored without a namespace.
pub fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> Result<&'static str, ApiError> {
    if t.resource.namespaced && t.namespace.is_none() && t.name.is_none() && method != Method::GET {
        return Err(if t.resource.a2a.is_some() {
            ApiError::not_found_path()
        } else {
            ApiError::method_not_allowed("the server does not allow this method on the requested resource")
        });
    }
    Ok(match (method, t.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if params::flag(q, "watch")? => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (m, named) => {
            return Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on {} {}",
                if named { "a single" } else { "the collection of" },
                t.resource.qualified()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_targets() {
        let t = parse_path("/apis/a2a.dev/v1alpha1/namespaces/default/agents/x/status").unwrap();
        assert_eq!(t.resource.plural, "agents");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("x"));
        assert!(t.status);
        let t = parse_path("/apis/a2a.dev/v1alpha1/agents").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_path("/api/v1/namespaces/default").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("default"));
        let t = parse_path("/api/v1/namespaces/default/events").unwrap();
        assert_eq!(t.resource.plural, "events");
        assert_eq!(parse_path("/apis/a2a.dev/v1alpha1/pods").unwrap_err().code, 404);
        assert_eq!(parse_path("/apis/a2a.dev/v1alpha1/agents/x").unwrap_err().code, 404);
        assert_eq!(parse_path("/apis/a2a.dev/v1alpha1/resourcebudgets/x/scale").unwrap_err().code, 404);
    }

    #[test]
    fn merge_owned_is_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null, "n": {"x": null, "y": 1}}, "l": [3], "s": "t"});
        let mut by_ref = doc.clone();
        json_patch::merge(&mut by_ref, &patch);
        let displaced = merge_owned(&mut doc, patch);
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e", "n": {"y": 1}}, "l": [3], "s": "t"}));
        assert_eq!(doc, by_ref);
        // What it replaced or removed, at the same paths; nothing for what was absent.
        assert_eq!(displaced, Some(json!({"a": "b", "c": {"f": "g"}, "l": [1, 2]})));
        let mut scalar = json!({"a": 1});
        assert_eq!(merge_owned(&mut scalar, json!("text")), Some(json!({"a": 1})));
        assert_eq!(scalar, json!("text"));
        let mut unchanged = json!({"a": 1});
        assert_eq!(merge_owned(&mut unchanged, json!({"b": null})), None);
    }

    #[test]
    fn a_status_merge_patch_is_accounted_from_what_it_displaced_as_from_both_versions() {
        let doc = json!({"spec": {"a": 1}, "status": {"phase": "Running", "n": {"x": 1, "y": 2}, "tasks": [1, 2]}});
        for patch in [
            json!({"status": {"phase": "Done", "n": {"x": null, "z": 3}, "tasks": [1, 2], "new": "v"}}),
            json!({"status": {"phase": "Running", "tasks": [2]}}),
            json!({"status": {"n": "flat"}}),
            json!({"status": null}),
            json!({"status": "text"}),
        ] {
            let touched = Touched::of_merge_patch(&patch);
            let mut new = doc.clone();
            let old = merge_owned(&mut new, patch.clone()).unwrap_or_else(|| json!({}));
            let kept = managed::Before::Displaced { old, touched: Touched::of_merge_patch(&patch) }.changes(&new);
            let full = managed::changes(&doc, &new, &touched, Scope::Status);
            assert_eq!(kept.changed.to_json(), full.changed.to_json(), "{patch}");
            assert_eq!(kept.removed.to_json(), full.removed.to_json(), "{patch}");
        }
    }

    #[test]
    fn json_patches_parse_as_json_patch_reads_them_and_errors_say_the_same() {
        let valid = [
            r#"[{"op":"add","path":"/status","value":{"phase":"Running","n":[1,2]}}]"#,
            r#"[{"op":"add","path":"/a/b","value":null},{"op":"remove","path":"/c"}]"#,
            r#"[{"op":"replace","path":"/x~1y","value":3,"extra":true},{"op":"test","path":"/x","value":"v"}]"#,
            r#"[{"op":"move","from":"/a","path":"/b"},{"op":"copy","from":"/b","path":"/c"}]"#,
            r#"[]"#,
        ];
        for body in valid {
            let want: json_patch::Patch = serde_json::from_slice(body.as_bytes()).unwrap();
            assert_eq!(parse_json_patch(body.as_bytes()).unwrap(), want, "{body}");
        }
        let invalid = [
            r#"[{"op":"add","path":"/a"}]"#,
            r#"[{"op":"move","path":"/a"}]"#,
            r#"[{"op":"frobnicate","path":"/a"}]"#,
            r#"[{"op":"add","path":"a","value":1}]"#,
            r#"[{"op":"add","path":"/a","path":"/b","value":1}]"#,
            r#"{"op":"add"}"#,
            r#"[{"op":"add","path":"/a","value":1}"#,
        ];
        for body in invalid {
            let want = serde_json::from_slice::<json_patch::Patch>(body.as_bytes()).unwrap_err();
            let got = parse_json_patch(body.as_bytes()).unwrap_err();
            assert_eq!((got.code, got.message), (400, format!("the request body is not a valid JSON patch: {want}")));
        }
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(u.match_indices('-').map(|(i, _)| i).collect::<Vec<_>>(), [8, 13, 18, 23]);
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{u}");
        assert_ne!(u, new_uid());
    }
}
