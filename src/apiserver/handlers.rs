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
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::AppState;
use super::managed::{self, FieldSet, ManagedFields, Operation, Scope, Touched};
use super::params::{self, ListOptions, VersionMatch};
use super::resources::Resource;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{self, ObjectKey, Precondition, Stored, Write};
use crate::api::yaml::{self, YamlError};

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

pub(super) fn now() -> String {
    crate::api::Time::now().to_string()
}

/// Whether a write is a dry run; the value was checked on the way in
/// ([`params::check_write_options`]), so only `All` is left to find.
fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// Parses a request body as JSON, or YAML when the content type says so. YAML is bounded
/// in depth before it is parsed ([`crate::api::yaml`]); JSON by serde_json's recursion limit.
pub fn parse_body(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let parsed = if yaml {
        yaml::from_slice(body).map_err(|e| match e {
            YamlError::Syntax(e) => format!("the request body is not valid YAML: {e}"),
            e @ YamlError::NotFinite { .. } => format!("the request body is refused: {e}"),
            e @ (YamlError::TooDeep { .. } | YamlError::NotUtf8 { .. }) => format!("the request body {e}"),
        })
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| format!("the request body is not valid JSON: {e}"))
    };
    parsed.map_err(ApiError::bad_request)
}

/// [`parse_body`], off the threads that serve requests when it can take long.
pub async fn parse_body_off_thread(body: &Bytes, yaml: bool) -> Result<Value, ApiError> {
    off_thread(body, yaml, move |b| parse_body(b, yaml)).await
}

/// JSON bodies up to this size are parsed on the thread serving the request (well under a
/// millisecond). YAML bodies (libyaml reads a few MB/s at the depth bound) and larger JSON
/// ones are parsed on the blocking pool, so that one slow body never holds up the requests,
/// health checks included, that share its thread.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

async fn off_thread<T: Send + 'static>(
    body: &Bytes,
    yaml: bool,
    parse: impl FnOnce(&Bytes) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !yaml && body.len() <= INLINE_PARSE_BYTES {
        return parse(body);
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || parse(&body))
        .await
        .map_err(|e| ApiError::internal(format!("parsing the request body failed: {e}")))?
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn body_is_yaml(headers: &HeaderMap) -> Result<bool, ApiError> {
    match media_type(headers).as_str() {
        "application/json" | "" | "*/*" => Ok(false),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(true),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types \
             include: application/json, application/yaml (got {other:?})"
        ))),
    }
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
            | store::Error::Format(_)) => ApiError::internal(e.to_string()),
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
        let validated = res.validate(object);
        if let Some(m) = managed_fields
            && let Some(meta) = meta_mut(object)
        {
            meta.insert("managedFields".into(), m);
        }
        validated.map_err(|errors| ApiError::invalid(res, &name, &errors))?;
        Ok(name)
    }

    pub async fn get(
        &self,
        t: &Target,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let name = t.name.as_deref().unwrap_or_default();
        let obj = self.store.get(&self.key(t, name)).ok_or_else(|| ApiError::not_found(t.resource, name))?;
        if wants_table(headers) {
            let full = q.get("includeObject").is_some_and(|v| v == "Object");
            let value = parsed(&obj)?;
            return Ok(json_response(StatusCode::OK, &t.resource.table(&[&value], obj.resource_version, full)));
        }
        Ok(Object::Stored(obj).respond(StatusCode::OK))
    }

    pub(super) fn selectors(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
    ) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), t.resource.selectable_fields())
                .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
        Ok((labels, fields))
    }

    pub async fn list(
        &self,
        t: &Target,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let options = ListOptions::parse(q, false)?;
        let (labels, fields) = self.selectors(t, q)?;
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") => None,
            Some(s) => match s.parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => {
                    return Err(ApiError::bad_request(format!("invalid limit {s:?}: expected a non-negative integer")));
                }
            },
        };
        let token = match q.get("continue").map(String::as_str) {
            None | Some("") => None,
            Some(s) => Some(ContinueToken::decode(s)?),
        };
        if token.is_some() && q.get("resourceVersion").is_some_and(|v| !v.is_empty() && v != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        let current = self.store.resource_version();
        if let Some(rv) = options.resource_version
            && rv > current
        {
            return Err(params::too_large_resource_version(rv, current));
        }
        let after = token.as_ref().map(|c| (c.namespace.as_str(), c.name.as_str()));
        let at = match (&token, options.version_match) {
            (Some(c), _) => Some(c.resource_version),
            (None, VersionMatch::Exact) => options.resource_version,
            (None, VersionMatch::NotOlderThan) => None,
        };
        let (items, rv) =
            self.store.list(&t.resource.storage(), t.namespace.as_deref(), after, at).map_err(|e| match e {
                store::Error::Gone { .. } if token.is_some() => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ),
                e => self.store_error(t, "", e),
            })?;
        let mut matching: Vec<&Stored> =
            items.iter().map(Arc::as_ref).filter(|o| selected(o, &labels, &fields)).collect();
        let mut page_meta = Map::new();
        page_meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if let Some(limit) = limit
            && matching.len() > limit
        {
            let remaining = matching.len() - limit;
            matching.truncate(limit);
            if let Some(last) = matching.last() {
                let token = ContinueToken {
                    resource_version: rv,
                    namespace: last.key.namespace.clone(),
                    name: last.key.name.clone(),
                };
                page_meta.insert("continue".into(), json!(token.encode()));
                page_meta.insert("remainingItemCount".into(), json!(remaining));
            }
        }
        if wants_table(headers) {
            let full = q.get("includeObject").is_some_and(|v| v == "Object");
            let values = matching.iter().map(|o| parsed(o)).collect::<Result<Vec<_>, _>>()?;
            let mut table = t.resource.table(&values.iter().collect::<Vec<_>>(), rv, full);
            table["metadata"] = Value::Object(page_meta);
            return Ok(json_response(StatusCode::OK, &table));
        }
        let items: Vec<&[u8]> = matching.iter().map(|o| &o.bytes()[..]).collect();
        Ok(list_response(t.resource, &Value::Object(page_meta), &items))
    }

    pub async fn watch(
        &self,
        t: &Target,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let options = ListOptions::parse(q, true)?;
        let (labels, fields) = self.selectors(t, q)?;
        let from = options.resource_version;
        let bookmarks = options.allow_bookmarks;
        let timeout = options.timeout;
        let table = wants_table(headers);
        let res = t.resource;
        let namespace = t.namespace.clone();
        let storage = res.storage();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let matches = move |o: &Stored| {
            namespace.as_ref().is_none_or(|ns| *ns == o.key.namespace) && selected(o, &labels, &fields)
        };
        // Appends one event line to `out`; lines are sent in chunks of up to WATCH_CHUNK bytes,
        // so a replay of thousands of events is not thousands of HTTP chunks and TLS records.
        let encode = move |out: &mut Vec<u8>, type_: &str, object: &Stored| {
            if table {
                let row = match object.value() {
                    Ok(v) => res.table(&[&v], object.resource_version, false),
                    Err(e) => {
                        ApiError::internal(format!("stored object {} is unreadable: {e}", object.key)).to_status()
                    }
                };
                out.extend_from_slice(&watch_line(type_, &row));
                return;
            }
            out.extend_from_slice(b"{\"type\":\"");
            out.extend_from_slice(type_.as_bytes());
            out.extend_from_slice(b"\",\"object\":");
            out.extend_from_slice(object.bytes());
            out.extend_from_slice(b"}\n");
        };
        let start = match self.store.watch(&storage, from) {
            Ok(s) => s,
            Err(store::Error::Gone { requested, oldest }) => {
                // Kubernetes answers 200 and an ERROR event; kube-runtime relists on it.
                let status = ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
                return Ok(stream_response(Body::from(watch_line("ERROR", &status))));
            }
            Err(e) => return Err(self.store_error(t, "", e)),
        };
        let metrics = self.metrics.clone();
        let mut shutdown = self.shutdown.clone();
        let bookmark_every = self.config.bookmark_interval;
        let store = self.store.clone();
        let kind = res.kind;
        let api_version = res.api_version();
        tokio::spawn(async move {
            metrics.watcher_started();
            let send = |b: Bytes| tx.send(Ok(b));
            // Every change up to `last` has been sent (or did not match).
            let mut last = start.resource_version;
            let mut notify = start.notify;
            let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
            let mut ok = true;
            let mut chunk = Vec::new();
            for (type_, object) in &start.initial {
                if matches(object) {
                    encode(&mut chunk, type_.as_str(), object);
                    if chunk.len() >= WATCH_CHUNK && send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && !chunk.is_empty() && send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                ok = false;
            }
            let mut tick = tokio::time::interval(bookmark_every);
            tick.tick().await;
            'stream: while ok {
                loop {
                    match store.events_after(&storage, last, 1024) {
                        Ok(batch) => {
                            for e in &batch.events {
                                if matches(&e.object) {
                                    encode(&mut chunk, e.type_.as_str(), &e.object);
                                    if chunk.len() >= WATCH_CHUNK
                                        && send(Bytes::from(std::mem::take(&mut chunk))).await.is_err()
                                    {
                                        break 'stream;
                                    }
                                }
                            }
                            if !chunk.is_empty() && send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                                break 'stream;
                            }
                            last = batch.scanned_to;
                            if !batch.more {
                                break;
                            }
                        }
                        Err(store::Error::Gone { .. }) => {
                            let status = ApiError::gone("the watch fell too far behind; list again").to_status();
                            let _ = send(watch_line("ERROR", &status)).await;
                            break 'stream;
                        }
                        Err(_) => break 'stream,
                    }
                }
                let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    changed = notify.changed() => if changed.is_err() { break },
                    _ = tick.tick(), if bookmarks => {
                        let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last.to_string()}});
                        ok = send(watch_line("BOOKMARK", &bm)).await.is_ok();
                    }
                    _ = tokio::time::sleep_until(sleep_until) => break,
                    _ = shutdown.changed() => break,
                    _ = tx.closed() => break,
                }
            }
            metrics.watcher_stopped();
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(stream_response(Body::from_stream(stream)))
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
        if t.resource.plural == "namespaces" {
            object["status"] = json!({"phase": "Active"});
            // As the kube-apiserver: the lifecycle's finalizer, removed once a deleted
            // namespace is empty.
            if object.get("spec").is_none_or(Value::is_null) {
                object["spec"] = json!({"finalizers": [super::delete::NAMESPACE_FINALIZER]});
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
        let stored = self
            .store
            .write(Write::Put { key: self.key(t, &name), object, precondition: Precondition::Absent })
            .await
            .map_err(|e| self.store_error(t, &name, e))?;
        Ok(Object::Stored(stored).respond(StatusCode::CREATED))
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
            let current = parsed(&stored)?;
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
                return Ok(Object::Stored(stored));
            }
            if let Ownership::Apply = ownership {
                // The applier's time moves only when its apply changed the object.
                entries.touch(manager, Operation::Apply, scope.subresource(), &api_version, &now);
                entries.write(&mut new);
            }
            if dry_run(q) {
                return Ok(Object::Value(new));
            }
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
                    return Ok(Object::Stored(v));
                }
                Err(store::Error::Conflict { .. }) if explicit.is_none() => continue,
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
            "application/strategic-merge-patch+json" => Err(ApiError::unsupported_media_type(format!(
                "strategic merge patch is not supported for {}; use a merge patch, a JSON patch or server-side apply",
                t.resource.qualified()
            ))),
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
                let mut merged = entries
                    .apply(cur, &config, manager, &api_version, scope, force)
                    .map_err(|conflicts| managed::conflict_error(&conflicts))?;
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

/// Parses a JSON patch (RFC 6902). `json_patch::Patch` reads each operation through serde's
/// buffering of internally tagged enums (every value parsed twice: a status write's whole
/// status); each operation is read here into a plain struct instead. Anything that does not
/// read cleanly that way is parsed again the usual way, whose error is the one reported, so
/// what is accepted and what an error says do not change.
pub fn parse_json_patch(body: &[u8]) -> Result<json_patch::Patch, ApiError> {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{
        AddOperation, CopyOperation, MoveOperation, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
    };

    #[derive(serde::Deserialize)]
    struct Operation {
        op: String,
        path: String,
        from: Option<String>,
        // Present, even as `null` (a value to add), or absent.
        #[serde(default, deserialize_with = "present")]
        value: Option<Value>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        <Value as serde::Deserialize>::deserialize(d).map(Some)
    }
    let fast = || -> Option<json_patch::Patch> {
        // Checked first: serde_json skips an unknown field without checking its bytes, and
        // what is not UTF-8 is not JSON (the usual reading refuses it).
        std::str::from_utf8(body).ok()?;
        let ops: Vec<Operation> = serde_json::from_slice(body).ok()?;
        let mut out = Vec::with_capacity(ops.len());
        for o in ops {
            let path = PointerBuf::parse(o.path).ok()?;
            let from = || o.from.clone().and_then(|f| PointerBuf::parse(f).ok());
            out.push(match o.op.as_str() {
                "add" => PatchOperation::Add(AddOperation { path, value: o.value? }),
                "remove" => PatchOperation::Remove(RemoveOperation { path }),
                "replace" => PatchOperation::Replace(ReplaceOperation { path, value: o.value? }),
                "move" => PatchOperation::Move(MoveOperation { from: from()?, path }),
                "copy" => PatchOperation::Copy(CopyOperation { from: from()?, path }),
                "test" => PatchOperation::Test(TestOperation { path, value: o.value? }),
                _ => return None,
            });
        }
        Some(json_patch::Patch(out))
    };
    match fast() {
        Some(patch) => Ok(patch),
        None => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not a valid JSON patch: {e}"))),
    }
}

/// Whether a JSON patch operation changes nothing outside `/status` (`test` and the source
/// of `copy` only read).
fn changes_only_status(op: &json_patch::PatchOperation) -> bool {
    use json_patch::PatchOperation as Op;
    let in_status = |p: &str| p == "/status" || p.starts_with("/status/");
    match op {
        Op::Add(o) => in_status(o.path.as_str()),
        Op::Remove(o) => in_status(o.path.as_str()),
        Op::Replace(o) => in_status(o.path.as_str()),
        Op::Move(o) => in_status(o.from.as_str()) && in_status(o.path.as_str()),
        Op::Copy(o) => in_status(o.path.as_str()),
        Op::Test(_) => true,
    }
}

/// A JSON merge patch (RFC 7386) applied by moving the patch's values into `doc`, not
/// copying them: a whole-status patch of a big Workflow is megabytes of small values. Answers
/// what it replaced or removed, moved out to the same paths (in maps holding only those), which
/// is all the write's accounting needs of the old version ([`managed::Before::Displaced`]).
pub fn merge_owned(doc: &mut Value, patch: Value) -> Option<Value> {
    let Value::Object(fields) = patch else {
        return Some(std::mem::replace(doc, patch));
    };
    if !doc.is_object() {
        let old = std::mem::replace(doc, Value::Object(Map::new()));
        merge_owned(doc, Value::Object(fields)); // into an empty map: nothing displaced
        return Some(old);
    }
    let mut displaced = Map::new();
    if let Value::Object(target) = doc {
        for (key, value) in fields {
            let old = if value.is_null() {
                target.remove(&key)
            } else if let Some(slot) = target.get_mut(&key) {
                merge_owned(slot, value)
            } else {
                // Absent before: the placeholder it displaces is no old value.
                let mut slot = Value::Null;
                merge_owned(&mut slot, value);
                target.insert(key, slot);
                continue;
            };
            if let Some(old) = old {
                displaced.insert(key, old);
            }
        }
    }
    (!displaced.is_empty()).then_some(Value::Object(displaced))
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

/// Watch events are sent in chunks of about this many bytes (or fewer, when no more wait).
const WATCH_CHUNK: usize = 64 * 1024;

/// One line of a watch stream.
fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Where a paged list continues: the snapshot's resourceVersion and the last key returned,
/// as the kube-apiserver's continue token (base64 of a small JSON document).
#[derive(Debug, PartialEq, Eq)]
struct ContinueToken {
    resource_version: u64,
    namespace: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        use base64::Engine as _;
        let doc = json!({
            "v": "meta.k8s.io/v1",
            "rv": self.resource_version,
            "start": format!("{}/{}", self.namespace, self.name),
        });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        use base64::Engine as _;
        let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|e| invalid(&e.to_string()))?;
        let doc: Value = serde_json::from_slice(&raw).map_err(|e| invalid(&e.to_string()))?;
        if doc.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
            return Err(invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1 expected)"));
        }
        let resource_version = doc
            .get("rv")
            .and_then(Value::as_u64)
            .filter(|rv| *rv > 0)
            .ok_or_else(|| invalid("missing resourceVersion"))?;
        let (namespace, name) = doc
            .get("start")
            .and_then(Value::as_str)
            .and_then(|s| s.split_once('/'))
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| invalid("missing or malformed start key"))?;
        Ok(ContinueToken { resource_version, namespace: namespace.to_string(), name: name.to_string() })
    }
}

fn stream_response(body: Body) -> Response {
    let mut r = Response::new(body);
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
