//! DELETE as the kube-apiserver and its garbage collector carry it out: the `DeleteOptions`
//! of a request (`dryRun`, `propagationPolicy`, `orphanDependents`, `gracePeriodSeconds`,
//! `preconditions`), finalizers, the three propagation policies and the namespace lifecycle.
//!
//! - **Background** (the default): the owner goes at once (or is marked while it has
//!   finalizers); once it is gone its dependents are deleted, except those that still have
//!   another owner, which only lose the reference to it.
//! - **Foreground**: an owner with dependents is marked (`deletionTimestamp`) and held by the
//!   `foregroundDeletion` finalizer; its dependents are deleted (in the foreground too), and
//!   the finalizer is removed once no dependent with `blockOwnerDeletion` is left.
//! - **Orphan**: the dependents lose their reference to the owner first (as the garbage
//!   collector does for the `orphan` finalizer) and stay; then the owner goes.
//! - **Namespaces**: a deleted namespace is `Terminating` (with the `kubernetes` finalizer in
//!   `spec.finalizers` and the namespace controller's five conditions) while anything is left
//!   in it; everything in it is deleted, creates into it are refused (403), and it goes once
//!   the last object in it is gone.
//!
//! The work after a removal (cascading, releasing foreground owners, sweeping terminating
//! namespaces) runs in tasks of its own, started from [`AppState::removed`] on every removal
//! this server makes; sweeps of one namespace are coalesced.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::AppState;
use super::handlers::{Object, Target, list_response, meta_mut, now, parse_body, parsed, selected};
use super::params::{self, Cause};
use super::resources::{RESOURCES, Resource};
use super::status::ApiError;
use super::store::{self, ObjectKey, Precondition, Stored, Write};

/// The finalizer that holds an owner while its dependents are deleted first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The finalizer of a namespace's `spec.finalizers` that the lifecycle removes once the
/// namespace is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// How a delete treats the objects that name the deleted one as an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    fn parse(value: &str) -> Option<Propagation> {
        match value {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }
}

/// The options of a delete, from the body (a `DeleteOptions` object) and the query.
///
/// The kube-apiserver reads the query only when there is no body. Here a field the body sets
/// wins and the query fills what it leaves unset, so that `?dryRun=All` beside a body never
/// turns into a real delete; the query's values are checked either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub propagation: Option<Propagation>,
    /// Checked and accepted; no a2a kind has a graceful deletion (as custom resources and
    /// ConfigMaps have none in Kubernetes), so it does not delay the delete.
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

impl DeleteOptions {
    pub fn parse(body: &Bytes, q: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
        let mut causes = Vec::new();
        let query_dry_run: Vec<String> = q.get("dryRun").cloned().into_iter().collect();
        let mut dry_run = query_dry_run.clone();
        if let Err(c) = params::check_dry_run(&query_dry_run) {
            causes.push(c);
        }
        let mut policy = q.get("propagationPolicy").cloned();
        let mut orphan =
            if q.contains_key("orphanDependents") { Some(params::flag(q, "orphanDependents")?) } else { None };
        let mut grace_period = params::integer(q, "gracePeriodSeconds")?;
        let (mut uid, mut resource_version) = (None, None);
        if !body.iter().all(u8::is_ascii_whitespace) {
            // client-go's typed clients (helm's storage among them) send it as protobuf.
            let value = if body.starts_with(super::protobuf::MAGIC) {
                super::protobuf::decode_delete_options(body)?
            } else {
                parse_body(body, false)?
            };
            let Some(map) = value.as_object() else {
                return Err(ApiError::bad_request("the request body must be a DeleteOptions object (a JSON mapping)"));
            };
            if let Some(kind) = map.get("kind")
                && kind.as_str().is_some_and(|k| k != "DeleteOptions")
            {
                return Err(ApiError::bad_request(format!(
                    "the body of a delete must be a DeleteOptions object, not {kind}"
                )));
            }
            let wrong = |field: &str, want: &str| {
                ApiError::bad_request(format!("DeleteOptions.{field} must be {want} (in the request body)"))
            };
            match map.get("dryRun") {
                None | Some(Value::Null) => {}
                Some(Value::Array(values)) => {
                    let values: Vec<String> = values
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| wrong("dryRun", "a list of strings"))?;
                    if let Err(c) = params::check_dry_run(&values) {
                        causes.push(c);
                    }
                    if !values.is_empty() {
                        dry_run = values;
                    }
                }
                Some(_) => return Err(wrong("dryRun", "a list of strings")),
            }
            match map.get("propagationPolicy") {
                None | Some(Value::Null) => {}
                Some(Value::String(p)) => policy = Some(p.clone()),
                Some(_) => return Err(wrong("propagationPolicy", "a string")),
            }
            match map.get("orphanDependents") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => orphan = Some(*b),
                Some(_) => return Err(wrong("orphanDependents", "true or false")),
            }
            match map.get("gracePeriodSeconds") {
                None | Some(Value::Null) => {}
                Some(v) => grace_period = Some(v.as_i64().ok_or_else(|| wrong("gracePeriodSeconds", "an integer"))?),
            }
            match map.get("preconditions") {
                None | Some(Value::Null) => {}
                Some(Value::Object(p)) => {
                    for (field, slot) in [("uid", &mut uid), ("resourceVersion", &mut resource_version)] {
                        match p.get(field) {
                            None | Some(Value::Null) => {}
                            Some(Value::String(s)) => *slot = Some(s.clone()),
                            Some(_) => return Err(wrong(&format!("preconditions.{field}"), "a string")),
                        }
                    }
                }
                Some(_) => return Err(wrong("preconditions", "a mapping")),
            }
        }
        if let (Some(_), Some(p)) = (orphan, &policy) {
            causes.push(Cause::invalid(
                "propagationPolicy",
                format!("{p:?}"),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        let propagation = match &policy {
            None => orphan.map(|o| if o { Propagation::Orphan } else { Propagation::Background }),
            Some(p) => match Propagation::parse(p) {
                Some(p) => Some(p),
                None => {
                    causes.push(Cause::not_supported(
                        "propagationPolicy",
                        format!("{p:?}"),
                        &["Foreground", "Background", "Orphan", "nil"],
                    ));
                    None
                }
            },
        };
        if !causes.is_empty() {
            return Err(params::invalid_options("DeleteOptions", &causes));
        }
        Ok(DeleteOptions {
            dry_run: !dry_run.is_empty(),
            propagation,
            grace_period,
            precondition_uid: uid,
            precondition_resource_version: resource_version,
        })
    }

    /// The preconditions against the current object: a 409 as the kube-apiserver words it.
    fn check(&self, res: &Resource, name: &str, stored: &Stored, current: &Value) -> Result<(), ApiError> {
        let uid = current.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let conflict = |why: String| {
            let mut e = ApiError::conflict(res, name);
            e.message = format!("Operation cannot be fulfilled on {} \"{name}\": {why}", res.qualified());
            e
        };
        if let Some(want) = &self.precondition_uid
            && want != uid
        {
            return Err(conflict(format!(
                "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
            )));
        }
        let rv = stored.resource_version.to_string();
        if let Some(want) = &self.precondition_resource_version
            && *want != rv
        {
            return Err(conflict(format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
            )));
        }
        Ok(())
    }
}

/// Namespaces with a sweep running; `true` when another was asked for meanwhile.
#[derive(Debug, Default)]
pub struct Collector {
    sweeps: Mutex<HashMap<String, bool>>,
}

fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn uid_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

/// Whether a stored namespace is being deleted.
pub fn is_terminating(namespace: &Stored) -> bool {
    // Every create in a namespace asks this: read only `metadata.deletionTimestamp`, skipping
    // the rest of the bytes without building a tree.
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(rename = "deletionTimestamp", default, deserialize_with = "present")]
        deletion_timestamp: bool,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| true)
    }
    serde_json::from_slice::<Object>(namespace.bytes()).is_ok_and(|o| o.metadata.is_some_and(|m| m.deletion_timestamp))
}

/// Whether an object marked for deletion may now be removed: no finalizers left (for a
/// namespace, none in `spec.finalizers` either).
pub fn finished(object: &Value) -> bool {
    let spec_finalizers = object.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    object.pointer("/metadata/deletionTimestamp").is_some() && finalizers(object).is_empty() && !spec_finalizers
}

/// The 403 of a create into a terminating namespace, as the NamespaceLifecycle admission
/// plugin answers it.
pub fn namespace_terminating(res: &Resource, name: &str, namespace: &str) -> ApiError {
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is \
             being terminated",
            res.qualified()
        ),
    );
    e.details = Some(json!({
        "name": name,
        "group": res.group,
        "kind": res.plural,
        "causes": [{
            "reason": "NamespaceTerminating",
            "message": format!("namespace {namespace} is being terminated"),
            "field": "metadata.namespace",
        }],
    }));
    e
}

fn target_of(res: &'static Resource, item: &Stored) -> Target {
    Target {
        resource: res,
        namespace: res.namespaced.then(|| item.key.namespace.clone()),
        name: Some(item.key.name.clone()),
        status: false,
    }
}

/// The `ownerReferences` entries of an object.
fn owner_references(object: &Value) -> Vec<&Map<String, Value>> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

impl AppState {
    pub async fn delete(&self, t: &Target, body: &Bytes, q: &HashMap<String, String>) -> Result<Response, ApiError> {
        let options = DeleteOptions::parse(body, q)?;
        Ok(super::handlers::present(t.resource, self.delete_one(t, &options).await?)?.respond(StatusCode::OK))
    }

    /// `DELETE` on a collection: deletes every object the label and field selectors match
    /// (each as a single delete with the same options) and answers the list of what was
    /// deleted or marked.
    pub async fn delete_collection(
        &self,
        t: &Target,
        body: &Bytes,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        if !t.resource.verbs().contains(&"deletecollection") {
            return Err(ApiError::method_not_allowed(format!(
                "deletecollection is not supported on {}",
                t.resource.qualified()
            )));
        }
        params::ListOptions::parse(q, false)?;
        let options = DeleteOptions::parse(body, q)?;
        let (labels, fields) = self.selectors(t, q)?;
        let (items, _) = self
            .store
            .list(&t.resource.storage(), t.namespace.as_deref(), None, None)
            .map_err(|e| self.store_error(t, "", e))?;
        let mut deleted = Vec::new();
        let mut first_error = None;
        for item in items.iter().filter(|o| selected(o, &labels, &fields)) {
            match self.delete_one(&target_of(t.resource, item), &options).await {
                Ok(o) => deleted.push(super::handlers::present(t.resource, o)?),
                // Deleted meanwhile by someone else: gone either way.
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::debug!(error = %e, object = %item.key, "deletecollection");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let rv = self.store.resource_version();
        let bodies: Vec<Vec<u8>> = deleted.iter().map(Object::to_json).collect();
        let items: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        Ok(list_response(t.resource, &json!({"resourceVersion": rv.to_string()}), &items))
    }

    /// Deletes one object as `options` say: removes it, or marks it (`deletionTimestamp`)
    /// while finalizers hold it, after orphaning its dependents or before deleting them.
    pub(super) async fn delete_one(&self, t: &Target, options: &DeleteOptions) -> Result<Object, ApiError> {
        let name = t.name.clone().unwrap_or_default();
        if t.resource.plural == "namespaces" {
            return self.delete_namespace(t, &name, options).await;
        }
        let key = self.key(t, &name);
        let policy = options.propagation.unwrap_or(Propagation::Background);
        for _ in 0..16 {
            let stored = self.store.get(&key).ok_or_else(|| ApiError::not_found(t.resource, &name))?;
            let current = parsed(&stored)?;
            options.check(t.resource, &name, &stored, &current)?;
            let uid = uid_of(&current).unwrap_or_default().to_string();
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                // Already being deleted: an orphaning delete still releases the dependents.
                if policy == Propagation::Orphan && !options.dry_run {
                    self.orphan_dependents(&uid).await?;
                }
                return Ok(Object::Stored(stored));
            }
            // Finding dependents scans every object; a background delete finds them after.
            let has_dependents =
                policy != Propagation::Background && !uid.is_empty() && !self.dependents(&uid).is_empty();
            let foreground = policy == Propagation::Foreground && has_dependents;
            let mark = !finalizers(&current).is_empty() || foreground;
            let mut marked = current;
            if mark && let Some(meta) = meta_mut(&mut marked) {
                meta.insert("deletionTimestamp".into(), json!(now()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                // As the kube-apiserver's BeforeDelete: marking an object for deletion is a
                // change its controllers must see, for kinds that count generations.
                if let Some(g) = meta.get("generation").and_then(Value::as_i64).filter(|g| *g > 0) {
                    meta.insert("generation".into(), json!(g + 1));
                }
                if foreground {
                    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
                    if let Some(list) = list.as_array_mut() {
                        list.push(json!(FOREGROUND_FINALIZER));
                    }
                }
            }
            if options.dry_run {
                return Ok(if mark { Object::Value(marked) } else { Object::Stored(stored) });
            }
            if policy == Propagation::Orphan && has_dependents {
                self.orphan_dependents(&uid).await?;
            }
            let precondition = Precondition::ResourceVersion(stored.resource_version);
            let write = if mark {
                Write::Put { key: key.clone(), object: marked, precondition }
            } else {
                Write::Delete { key: key.clone(), precondition }
            };
            match self.store.write(write).await {
                Ok(v) => {
                    if !mark {
                        self.removed(&v);
                    } else if foreground {
                        self.delete_dependents_first(v.clone(), uid);
                    }
                    return Ok(Object::Stored(v));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(t, &name, e)),
            }
        }
        Err(ApiError::conflict(t.resource, &name))
    }

    /// The objects whose `ownerReferences` name `uid`, with their resources.
    fn dependents(&self, uid: &str) -> Vec<(&'static Resource, Arc<Stored>)> {
        let mut out = Vec::new();
        for res in RESOURCES.iter().filter(|r| !r.is_view()) {
            let Ok((items, _)) = self.store.list(&res.storage(), None, None, None) else { continue };
            out.extend(items.into_iter().filter(|i| i.owned_by(uid)).map(|i| (res, i)));
        }
        out
    }

    /// Removes the references to `uid` from the objects that name it as an owner.
    async fn orphan_dependents(&self, uid: &str) -> Result<(), ApiError> {
        for (res, item) in self.dependents(uid) {
            self.drop_owner_reference(res, &item.key, uid).await?;
        }
        Ok(())
    }

    async fn drop_owner_reference(&self, res: &'static Resource, key: &ObjectKey, uid: &str) -> Result<(), ApiError> {
        for _ in 0..16 {
            let Some(stored) = self.store.get(key) else { return Ok(()) };
            let mut value = parsed(&stored)?;
            let Some(meta) = meta_mut(&mut value) else { return Ok(()) };
            let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") else { return Ok(()) };
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            if refs.is_empty() {
                meta.remove("ownerReferences");
            }
            meta.remove("resourceVersion");
            let precondition = Precondition::ResourceVersion(stored.resource_version);
            match self.store.write(Write::Put { key: key.clone(), object: value, precondition }).await {
                Ok(_) | Err(store::Error::NotFound) => return Ok(()),
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(&target_of(res, &stored), &key.name, e)),
            }
        }
        Err(ApiError::conflict(res, &key.name))
    }

    /// After an object is removed for good: its dependents follow (background cascade), an
    /// owner waiting in the foreground for it may go, and a terminating namespace it was in
    /// is swept again.
    pub(super) fn removed(&self, removed: &Stored) {
        let Ok(value) = removed.value() else { return };
        let state = self.clone();
        let key = removed.key.clone();
        tokio::spawn(async move {
            if let Some(uid) = uid_of(&value) {
                state.collect_dependents(uid).await;
            }
            for owner in owner_references(&value) {
                if let Some(owner_key) = owner_key(owner, &key) {
                    state.release_foreground_owner(&owner_key).await;
                }
            }
            if key.resource == "/namespaces" {
                // Normally empty by now; a namespace whose finalizers a client removed by hand
                // still takes what is left in it along.
                state.delete_contents(&key.name).await;
                return;
            }
            if !key.namespace.is_empty()
                && let Some(ns) = state.store.get(&ObjectKey::new("/namespaces", "", key.namespace.clone()))
                && is_terminating(&ns)
            {
                state.sweep_namespace(key.namespace.clone());
            }
        });
    }

    /// The garbage collector's part for a removed owner: dependents with no other owner left
    /// are deleted (in the background); the others only lose the reference.
    async fn collect_dependents(&self, uid: &str) {
        for (res, item) in self.dependents(uid) {
            let Ok(value) = item.value() else { continue };
            let other_owner_alive = owner_references(&value).into_iter().any(|r| {
                r.get("uid").and_then(Value::as_str) != Some(uid)
                    && owner_key(r, &item.key).and_then(|k| self.store.get(&k)).is_some_and(|o| {
                        o.value().ok().and_then(|v| uid_of(&v).map(str::to_string)).as_deref()
                            == r.get("uid").and_then(Value::as_str)
                    })
            });
            let result = if other_owner_alive {
                self.drop_owner_reference(res, &item.key, uid).await
            } else {
                let options = DeleteOptions { propagation: Some(Propagation::Background), ..Default::default() };
                self.delete_one(&target_of(res, &item), &options).await.map(drop)
            };
            if let Err(e) = result
                && e.code != 404
            {
                tracing::debug!(error = %e, object = %item.key, "garbage collection");
            }
        }
    }

    /// Deletes the dependents of an owner held by the foreground finalizer, then releases it
    /// if nothing blocks it any more.
    fn delete_dependents_first(&self, owner: Arc<Stored>, uid: String) {
        let state = self.clone();
        tokio::spawn(async move {
            for (res, item) in state.dependents(&uid) {
                let options = DeleteOptions { propagation: Some(Propagation::Foreground), ..Default::default() };
                if let Err(e) = state.delete_one(&target_of(res, &item), &options).await
                    && e.code != 404
                {
                    tracing::debug!(error = %e, object = %item.key, "foreground deletion");
                }
            }
            state.release_foreground_owner(&owner.key).await;
        });
    }

    /// Removes the `foregroundDeletion` finalizer of an owner once no dependent with
    /// `blockOwnerDeletion` is left, and the owner with it when that was the last finalizer.
    async fn release_foreground_owner(&self, key: &ObjectKey) {
        for _ in 0..16 {
            let Some(stored) = self.store.get(key) else { return };
            let Ok(mut owner) = stored.value() else { return };
            if owner.pointer("/metadata/deletionTimestamp").is_none()
                || !finalizers(&owner).contains(&FOREGROUND_FINALIZER)
            {
                return;
            }
            let uid = uid_of(&owner).unwrap_or_default().to_string();
            let blocked = self.dependents(&uid).iter().any(|(_, d)| {
                d.value().ok().is_some_and(|v| {
                    owner_references(&v).iter().any(|r| {
                        r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                            && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
                })
            });
            if blocked {
                return;
            }
            if let Some(meta) = meta_mut(&mut owner) {
                if let Some(Value::Array(list)) = meta.get_mut("finalizers") {
                    list.retain(|f| f.as_str() != Some(FOREGROUND_FINALIZER));
                    if list.is_empty() {
                        meta.remove("finalizers");
                    }
                }
                meta.remove("resourceVersion");
            }
            let precondition = Precondition::ResourceVersion(stored.resource_version);
            let done = finished(&owner);
            let write = if done {
                Write::Delete { key: key.clone(), precondition }
            } else {
                Write::Put { key: key.clone(), object: owner, precondition }
            };
            match self.store.write(write).await {
                Ok(v) => {
                    if done {
                        self.removed(&v);
                    }
                    return;
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, object = %key, "releasing a foreground owner");
                    return;
                }
            }
        }
    }

    /// Deleting a namespace: it becomes `Terminating` and its content is deleted; it goes
    /// when the last object in it has.
    async fn delete_namespace(&self, t: &Target, name: &str, options: &DeleteOptions) -> Result<Object, ApiError> {
        if name == "default" {
            return Err(ApiError::new(
                403,
                "Forbidden",
                "namespaces \"default\" is forbidden: this namespace may not be deleted",
            ));
        }
        let key = self.key(t, name);
        for _ in 0..16 {
            let stored = self.store.get(&key).ok_or_else(|| ApiError::not_found(t.resource, name))?;
            let mut ns = parsed(&stored)?;
            options.check(t.resource, name, &stored, &ns)?;
            if ns.pointer("/metadata/deletionTimestamp").is_some() {
                // Already terminating: answered as it is, as the kube-apiserver does.
                return Ok(Object::Stored(stored));
            }
            if let Some(meta) = meta_mut(&mut ns) {
                meta.insert("deletionTimestamp".into(), json!(now()));
                meta.remove("resourceVersion");
            }
            let spec = ns.as_object_mut().map(|m| m.entry("spec").or_insert_with(|| json!({})));
            if let Some(Value::Object(spec)) = spec {
                let list = spec.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut()
                    && !list.iter().any(|f| f == NAMESPACE_FINALIZER)
                {
                    list.push(json!(NAMESPACE_FINALIZER));
                }
            }
            ns["status"]["phase"] = json!("Terminating");
            if options.dry_run {
                return Ok(Object::Value(ns));
            }
            let precondition = Precondition::ResourceVersion(stored.resource_version);
            match self.store.write(Write::Put { key: key.clone(), object: ns, precondition }).await {
                Ok(v) => {
                    self.sweep_namespace(name.to_string());
                    return Ok(Object::Stored(v));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(self.store_error(t, name, e)),
            }
        }
        Err(ApiError::conflict(t.resource, name))
    }

    /// Deletes (in the background) every object in a namespace not already marked.
    async fn delete_contents(&self, namespace: &str) {
        let background = DeleteOptions { propagation: Some(Propagation::Background), ..Default::default() };
        for res in RESOURCES.iter().filter(|r| r.namespaced && !r.is_view()) {
            let Ok((items, _)) = self.store.list(&res.storage(), Some(namespace), None, None) else { continue };
            for item in items {
                let marked = item.value().ok().is_some_and(|v| v.pointer("/metadata/deletionTimestamp").is_some());
                if marked {
                    continue;
                }
                if let Err(e) = self.delete_one(&target_of(res, &item), &background).await
                    && e.code != 404
                {
                    tracing::debug!(error = %e, object = %item.key, "namespace deletion");
                }
            }
        }
    }

    /// Runs the namespace controller's pass over a terminating namespace, once at a time per
    /// namespace: a request for a sweep while one runs makes it run once more.
    pub(super) fn sweep_namespace(&self, namespace: String) {
        {
            let mut sweeps = self.collector.sweeps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = sweeps.get_mut(&namespace) {
                *again = true;
                return;
            }
            sweeps.insert(namespace.clone(), false);
        }
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                state.sweep_once(&namespace).await;
                let mut sweeps = state.collector.sweeps.lock().unwrap_or_else(|p| p.into_inner());
                if sweeps.get(&namespace) == Some(&true) {
                    sweeps.insert(namespace.clone(), false);
                    continue;
                }
                sweeps.remove(&namespace);
                break;
            }
        });
    }

    /// Deletes what is left in a terminating namespace, then records what remains in its
    /// conditions, or removes it when nothing does.
    async fn sweep_once(&self, namespace: &str) {
        let key = ObjectKey::new("/namespaces", "", namespace.to_string());
        let Some(ns) = self.store.get(&key) else { return };
        if !is_terminating(&ns) {
            return;
        }
        self.delete_contents(namespace).await;
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_finalizer: BTreeMap<String, usize> = BTreeMap::new();
        for res in RESOURCES.iter().filter(|r| r.namespaced && !r.is_view()) {
            let Ok((items, _)) = self.store.list(&res.storage(), Some(namespace), None, None) else { continue };
            if items.is_empty() {
                continue;
            }
            remaining.insert(format!("{}.{}", res.plural, res.group), items.len());
            for item in items {
                if let Ok(v) = item.value() {
                    for f in finalizers(&v) {
                        *by_finalizer.entry(f.to_string()).or_default() += 1;
                    }
                }
            }
        }
        for _ in 0..16 {
            let Some(ns) = self.store.get(&key) else { return };
            let Ok(mut value) = ns.value() else { return };
            if value.pointer("/metadata/deletionTimestamp").is_none() {
                return;
            }
            let empty = remaining.is_empty();
            if empty {
                if let Some(Value::Array(list)) = value.pointer_mut("/spec/finalizers") {
                    list.retain(|f| f != NAMESPACE_FINALIZER);
                }
            } else if !update_conditions(&mut value, &remaining, &by_finalizer) {
                return;
            }
            if let Some(meta) = meta_mut(&mut value) {
                meta.remove("resourceVersion");
            }
            let precondition = Precondition::ResourceVersion(ns.resource_version);
            let done = empty && finished(&value);
            let write = if done {
                Write::Delete { key: key.clone(), precondition }
            } else {
                Write::Put { key: key.clone(), object: value, precondition }
            };
            match self.store.write(write).await {
                Ok(v) => {
                    if done {
                        self.removed(&v);
                    }
                    return;
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, namespace, "namespace deletion");
                    return;
                }
            }
        }
    }
}

/// The key of the owner an `ownerReferences` entry names, for a dependent at `dependent`
/// (a namespaced owner is in the dependent's namespace).
fn owner_key(reference: &Map<String, Value>, dependent: &ObjectKey) -> Option<ObjectKey> {
    let api_version = reference.get("apiVersion")?.as_str()?;
    let kind = reference.get("kind")?.as_str()?;
    let name = reference.get("name")?.as_str()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let res = RESOURCES.iter().find(|r| r.group == group && r.version == version && r.kind == kind)?;
    let namespace = if res.namespaced { dependent.namespace.clone() } else { String::new() };
    Some(ObjectKey::new(res.storage(), namespace, name))
}

/// Sets a terminating namespace's conditions as the namespace controller does while content
/// remains; answers whether they changed.
fn update_conditions(
    namespace: &mut Value,
    remaining: &BTreeMap<String, usize>,
    by_finalizer: &BTreeMap<String, usize>,
) -> bool {
    let resources: Vec<String> = remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
    let finalizers: Vec<String> = by_finalizer.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
    let wanted: [(&str, bool, &str, String); 5] = [
        (
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        (
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        if resources.is_empty() {
            ("NamespaceContentRemaining", false, "ContentRemoved", "All content successfully removed".into())
        } else {
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", resources.join(", ")),
            )
        },
        if finalizers.is_empty() {
            (
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            (
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {}", finalizers.join(", ")),
            )
        },
    ];
    let Some(status) = namespace.as_object_mut().map(|m| m.entry("status").or_insert_with(|| json!({}))) else {
        return false;
    };
    let Some(status) = status.as_object_mut() else { return false };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(conditions) = conditions.as_array_mut() else { return false };
    let mut changed = false;
    for (type_, truth, reason, message) in wanted {
        let status_text = if truth { "True" } else { "False" };
        match conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(type_)) {
            None => {
                conditions.push(json!({
                    "type": type_,
                    "status": status_text,
                    "lastTransitionTime": now(),
                    "reason": reason,
                    "message": message,
                }));
                changed = true;
            }
            Some(c) => {
                if c["status"] != status_text {
                    c["lastTransitionTime"] = json!(now());
                    c["status"] = json!(status_text);
                    changed = true;
                }
                if c["reason"] != reason || c["message"] != message.as_str() {
                    c["reason"] = json!(reason);
                    c["message"] = json!(message);
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_come_from_the_body_and_the_query_fills_what_it_leaves() {
        let body = Bytes::from_static(br#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#);
        let o = DeleteOptions::parse(&body, &q(&[("propagationPolicy", "Orphan")])).unwrap();
        assert!(o.dry_run);
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        let body = Bytes::from_static(br#"{"propagationPolicy":"Foreground","gracePeriodSeconds":0}"#);
        let o = DeleteOptions::parse(&body, &q(&[("dryRun", "All"), ("propagationPolicy", "Orphan")])).unwrap();
        assert!(o.dry_run, "a dry run in the query holds beside a body");
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        assert_eq!(o.grace_period, Some(0));
        let o = DeleteOptions::parse(&Bytes::new(), &q(&[("orphanDependents", "true")])).unwrap();
        assert_eq!(o.propagation, Some(Propagation::Orphan));
        let body = Bytes::from_static(br#"{"preconditions":{"uid":"u","resourceVersion":"7"}}"#);
        let o = DeleteOptions::parse(&body, &q(&[])).unwrap();
        assert_eq!((o.precondition_uid.as_deref(), o.precondition_resource_version.as_deref()), (Some("u"), Some("7")));
    }

    #[test]
    fn misspelt_options_are_refused_as_the_kube_apiserver_refuses_them() {
        for (body, query, part) in [
            (r#"{"dryRun":["true"]}"#, vec![], "dryRun: Unsupported value: []string{\"true\"}"),
            ("", vec![("dryRun", "all")], "dryRun: Unsupported value: []string{\"all\"}"),
            (r#"{"propagationPolicy":"Sideways"}"#, vec![], "propagationPolicy: Unsupported value: \"Sideways\""),
            (
                r#"{"propagationPolicy":"Orphan","orphanDependents":true}"#,
                vec![],
                "orphanDependents and deletionPropagation cannot be both set",
            ),
        ] {
            let e = DeleteOptions::parse(&Bytes::from(body), &q(&query)).unwrap_err();
            assert_eq!(e.code, 422, "{e}");
            assert!(e.message.starts_with("DeleteOptions.meta.k8s.io \"\" is invalid: "), "{e}");
            assert!(e.message.contains(part), "{e}");
        }
        for (body, query) in [(r#"{"dryRun":"All"}"#, vec![]), ("", vec![("gracePeriodSeconds", "soon")])] {
            let e = DeleteOptions::parse(&Bytes::from(body), &q(&query)).unwrap_err();
            assert_eq!(e.code, 400, "{e}");
        }
    }

    #[test]
    fn namespace_conditions_say_what_remains_in_the_controllers_words() {
        let mut ns = json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}});
        let remaining = BTreeMap::from([("agents.a2a.dev".to_string(), 1)]);
        let finalizers = BTreeMap::from([("a2a.dev/test".to_string(), 1)]);
        assert!(update_conditions(&mut ns, &remaining, &finalizers));
        let conditions = ns["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 5);
        let content = conditions.iter().find(|c| c["type"] == "NamespaceContentRemaining").unwrap();
        assert_eq!(content["status"], "True");
        assert_eq!(content["message"], "Some resources are remaining: agents.a2a.dev has 1 resource instances");
        let fin = conditions.iter().find(|c| c["type"] == "NamespaceFinalizersRemaining").unwrap();
        assert_eq!(
            fin["message"],
            "Some content in the namespace has finalizers remaining: a2a.dev/test in 1 resource instances"
        );
        assert!(!update_conditions(&mut ns, &remaining, &finalizers), "the same state changes nothing");
    }
}
