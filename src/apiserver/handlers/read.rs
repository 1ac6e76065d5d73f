//! Reads: get, list (paged, with selectors, as a table for kubectl) and watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Object, Target, list_response, parsed, present, selected, viewed, wants_table};
use crate::apiserver::AppState;
use crate::apiserver::params::{self, ListOptions, VersionMatch};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::status::{ApiError, json_response};
use crate::apiserver::store::{self, Stored};

impl AppState {
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
            let value = viewed(t.resource, value);
            return Ok(json_response(StatusCode::OK, &t.resource.table(&[&value], obj.resource_version, full)));
        }
        Ok(present(t.resource, Object::Stored(obj))?.respond(StatusCode::OK))
    }

    pub(in crate::apiserver) fn selectors(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
    ) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
        let fields =
            FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), t.resource.selectable_fields())
                .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
        // The events.k8s.io view selects on the stored core fields its own names stand for.
        let fields = if t.resource.is_view() { fields.renamed(crate::apiserver::events::core_field) } else { fields };
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
            let values =
                matching.iter().map(|o| parsed(o).map(|v| viewed(t.resource, v))).collect::<Result<Vec<_>, _>>()?;
            let mut table = t.resource.table(&values.iter().collect::<Vec<_>>(), rv, full);
            table["metadata"] = Value::Object(page_meta);
            return Ok(json_response(StatusCode::OK, &table));
        }
        if t.resource.is_view() {
            let bodies = matching
                .iter()
                .map(|o| parsed(o).map(|v| viewed(t.resource, v).to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            let items: Vec<&[u8]> = bodies.iter().map(String::as_bytes).collect();
            return Ok(list_response(t.resource, &Value::Object(page_meta), &items));
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
        // A watch list starts from the current state (NotOlderThan any version asked for),
        // and `sendInitialEvents=false` from now, without it.
        let initial_events = options.send_initial_events;
        let from = match initial_events {
            Some(true) => None,
            Some(false) => {
                Some(options.resource_version.filter(|v| *v > 0).unwrap_or_else(|| self.store.resource_version()))
            }
            None => options.resource_version,
        };
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
                    Ok(v) => res.table(&[&viewed(res, v)], object.resource_version, false),
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
            if res.is_view() {
                match object.value() {
                    Ok(v) => out.extend_from_slice(&serde_json::to_vec(&viewed(res, v)).unwrap_or_default()),
                    Err(e) => out.extend_from_slice(
                        &serde_json::to_vec(
                            &ApiError::internal(format!("stored object {} is unreadable: {e}", object.key)).to_status(),
                        )
                        .unwrap_or_default(),
                    ),
                }
            } else {
                out.extend_from_slice(object.bytes());
            }
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
            for e in &start.initial {
                if let Some((type_, object)) = as_selected(e, &matches) {
                    encode(&mut chunk, type_, object.as_ref());
                    if chunk.len() >= WATCH_CHUNK && send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && initial_events == Some(true) {
                // The end of the initial state, as the kube-apiserver marks it for WatchList.
                let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {
                    "resourceVersion": last.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                }});
                chunk.extend_from_slice(&watch_line("BOOKMARK", &bm));
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
                                if let Some((type_, object)) = as_selected(e, &matches) {
                                    encode(&mut chunk, type_, object.as_ref());
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
}

/// How a watch with selectors sees a change, as the kube-apiserver's watch cache sends it:
/// an update that brings an object into the selection is ADDED, one that takes it out is
/// DELETED (the object as it was, at the update's resourceVersion), one outside it is not
/// sent at all.
fn as_selected(e: &store::Event, matches: impl Fn(&Stored) -> bool) -> Option<(&'static str, Arc<Stored>)> {
    let now = matches(&e.object);
    if e.type_ != store::EventType::Modified {
        return now.then(|| (e.type_.as_str(), e.object.clone()));
    }
    let before = e.prev.as_deref().is_some_and(&matches);
    match (before, now) {
        (true, true) => Some(("MODIFIED", e.object.clone())),
        (false, true) => Some(("ADDED", e.object.clone())),
        (true, false) => {
            let prev = e.prev.as_deref()?;
            Some(("DELETED", Arc::new(prev.at_version(e.object.resource_version))))
        }
        (false, false) => None,
    }
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
