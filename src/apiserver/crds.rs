//! The a2a CustomResourceDefinitions, served read-only under `apiextensions.k8s.io/v1`
//! `customresourcedefinitions` (cluster-scoped), as a cluster with them installed shows them:
//! get, list and watch answer the definitions a2a is built with ([`Kind::crd`]) with the status
//! a kube-apiserver gives an established CRD (`NamesAccepted` and `Established` true, the
//! accepted names, the stored versions).
//!
//! They are not in the store: their `uid` is derived from the name and the home's `default`
//! namespace uid, their `creationTimestamp` is that namespace's (the time the store was made),
//! and their `resourceVersion` is `1`, so all three stay the same across restarts of one home.
//!
//! Writes keep GitOps repositories that carry the chart's CRDs in sync without changing
//! anything: a create of one of them is the 409 `AlreadyExists` any cluster answers; an update,
//! a patch (merge, strategic merge, JSON) or a server-side apply whose result has the served
//! spec is accepted as a no-op and answers the served object (metadata such as the
//! last-applied annotation is not kept). A different spec is a 422 `Invalid` (the definitions
//! change with a2a, not through the API); another CRD's create, and every delete, is a 405
//! `MethodNotAllowed`.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::ObjectKey;
use crate::api::Kind;

pub const GROUP: &str = "apiextensions.k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "customresourcedefinitions";
const KIND: &str = "CustomResourceDefinition";

/// Discovery's entry (the verbs a kube-apiserver lists; the writes answer as described above).
pub fn discovery() -> Vec<Value> {
    vec![
        json!({
            "name": PLURAL,
            "singularName": "customresourcedefinition",
            "namespaced": false,
            "kind": KIND,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["crd", "crds"],
            "categories": ["api-extensions"],
        }),
        json!({
            "name": format!("{PLURAL}/status"),
            "singularName": "",
            "namespaced": false,
            "kind": KIND,
            "verbs": ["get", "patch", "update"],
        }),
    ]
}

/// `(name, status subresource)` of a CRD path, or `None` when the path is not this resource.
/// `Some(None)` is the collection.
#[allow(clippy::option_option)]
pub(crate) fn target(path: &str) -> Option<Option<(String, bool)>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", GROUP, VERSION, PLURAL] => Some(None),
        ["apis", GROUP, VERSION, PLURAL, name] => Some(Some((name.to_string(), false))),
        ["apis", GROUP, VERSION, PLURAL, name, "status"] => Some(Some((name.to_string(), true))),
        _ => None,
    }
}

/// Whether the request is for this resource.
pub fn is_crd_path(path: &str) -> bool {
    target(path).is_some()
}

/// What fixes the served objects' identity: the `default` namespace's uid and creation time.
struct Origin {
    uid: String,
    created: String,
}

impl Origin {
    fn of(state: &AppState) -> Origin {
        let ns = state.store.get(&ObjectKey::new("/namespaces", "", "default")).and_then(|s| s.value().ok());
        let get = |p: &str| ns.as_ref().and_then(|v| v.pointer(p)).and_then(Value::as_str).map(str::to_string);
        Origin {
            uid: get("/metadata/uid").unwrap_or_default(),
            // In whole seconds, as Kubernetes writes times (homes made before kept milliseconds).
            created: get("/metadata/creationTimestamp")
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .and_then(|t| jiff::Timestamp::from_second(t.as_second()).ok())
                .map_or_else(|| "1970-01-01T00:00:00Z".into(), |t| t.to_string()),
        }
    }
}

/// A version-4-shaped uid from a hash of the home's identity and the name.
fn uid_for(origin: &Origin, name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{}/{name}", origin.uid).as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The spec as a kube-apiserver stores it: with the defaults it fills in.
fn defaulted_spec(spec: &Value) -> Value {
    let mut spec = whole_numbers(spec.clone());
    if let Some(m) = spec.as_object_mut() {
        m.entry("conversion").or_insert_with(|| json!({"strategy": "None"}));
    }
    spec
}

/// Every served CRD, as a kube-apiserver answers it.
fn served(origin: &Origin) -> Vec<Value> {
    Kind::ALL
        .into_iter()
        .filter_map(|k| serde_json::to_value(k.crd()).ok())
        .map(|mut crd| {
            let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let spec = defaulted_spec(&crd["spec"]);
            let names = spec.get("names").cloned().unwrap_or_else(|| json!({}));
            let stored: Vec<Value> = spec
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect();
            let since = &origin.created;
            crd["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            crd["kind"] = json!(KIND);
            let meta = crd["metadata"].as_object_mut().map(std::mem::take).unwrap_or_default();
            let mut meta = serde_json::Map::from_iter(meta);
            meta.insert("uid".into(), json!(uid_for(origin, &name)));
            meta.insert("creationTimestamp".into(), json!(since));
            meta.insert("resourceVersion".into(), json!("1"));
            meta.insert("generation".into(), json!(1));
            crd["metadata"] = Value::Object(meta);
            crd["spec"] = spec;
            crd["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": since,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": since,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                ],
                "storedVersions": stored,
            });
            crd
        })
        .collect()
}

fn not_found(name: &str) -> ApiError {
    let mut e = ApiError::new(404, "NotFound", format!("{PLURAL}.{GROUP} \"{name}\" not found"));
    e.details = Some(json!({"name": name, "group": GROUP, "kind": PLURAL}));
    e
}

fn read_only(name: &str, why: &str) -> ApiError {
    let why =
        format!("{why}; the a2a CustomResourceDefinitions are served by a2a itself and change only with a2a's version");
    let mut e = ApiError::new(422, "Invalid", format!("{KIND}.{GROUP} \"{name}\" is invalid: spec: Forbidden: {why}"));
    e.details = Some(json!({
        "name": name, "group": GROUP, "kind": KIND,
        "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {why}"), "field": "spec"}],
    }));
    e
}

fn not_allowed(message: String) -> ApiError {
    ApiError::method_not_allowed(message)
}

/// Serves a request on `customresourcedefinitions`.
pub async fn serve(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let Some(target) = target(path) else { return Err(ApiError::not_found_path()) };
    let origin = Origin::of(state);
    let all = served(&origin);
    let find =
        |name: &str| all.iter().find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(name)).cloned();
    match (method, target) {
        (&Method::GET, Some((name, _))) => {
            let crd = find(&name).ok_or_else(|| not_found(&name))?;
            if wants_table(headers) {
                return Ok(json_response(StatusCode::OK, &table(&[crd])));
            }
            Ok(json_response(StatusCode::OK, &crd))
        }
        (&Method::GET, None) => {
            let selected = select(all, q)?;
            if super::params::flag(q, "watch")? {
                return watch(state, selected, q);
            }
            let rv = state.store.resource_version().to_string();
            if wants_table(headers) {
                let mut t = table(&selected);
                t["metadata"] = json!({"resourceVersion": rv});
                return Ok(json_response(StatusCode::OK, &t));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": format!("{KIND}List"),
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": {"resourceVersion": rv},
                    "items": selected,
                }),
            ))
        }
        (&Method::POST, None) => {
            let sent = parse(headers, body)?;
            let name = sent.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            match find(&name) {
                Some(_) => {
                    let mut e =
                        ApiError::new(409, "AlreadyExists", format!("{PLURAL}.{GROUP} \"{name}\" already exists"));
                    e.details = Some(json!({"name": name, "group": GROUP, "kind": PLURAL}));
                    Err(e)
                }
                None => Err(not_allowed(format!(
                    "{PLURAL}.{GROUP} \"{name}\": this server serves only the a2a CustomResourceDefinitions and \
                     creates no others"
                ))),
            }
        }
        (&Method::PUT, Some((name, _))) => {
            let crd = find(&name).ok_or_else(|| not_found(&name))?;
            let sent = parse(headers, body)?;
            same_spec(&name, &crd, sent.get("spec").map(defaulted_spec).as_ref())?;
            Ok(json_response(StatusCode::OK, &crd))
        }
        (&Method::PATCH, Some((name, _))) => {
            let crd = find(&name).ok_or_else(|| not_found(&name))?;
            let patched = patched(&crd, headers, body)?;
            same_spec(&name, &crd, patched.get("spec"))?;
            Ok(json_response(StatusCode::OK, &crd))
        }
        (&Method::DELETE, target) => {
            let what = target.as_ref().map_or_else(|| "the collection".to_string(), |(n, _)| format!("\"{n}\""));
            if let Some((name, _)) = &target {
                find(name).ok_or_else(|| not_found(name))?;
            }
            Err(not_allowed(format!(
                "{PLURAL}.{GROUP} {what}: the a2a CustomResourceDefinitions cannot be deleted; they are served as \
                 long as a2a serve runs"
            )))
        }
        (m, _) => Err(not_allowed(format!("{m} is not supported on {PLURAL}.{GROUP}"))),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

/// `kubectl get crd`'s columns: NAME and CREATED AT.
fn table(crds: &[Value]) -> Value {
    let rows: Vec<Value> = crds
        .iter()
        .map(|c| {
            json!({
                "cells": [c["metadata"]["name"], c["metadata"]["creationTimestamp"]],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": c["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."},
            {"name": "Created At", "type": "date", "format": "", "priority": 0,
             "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
        ],
        "rows": rows,
    })
}

fn select(all: Vec<Value>, q: &HashMap<String, String>) -> Result<Vec<Value>, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), &["metadata.name"])
        .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
    Ok(all
        .into_iter()
        .filter(|c| {
            let name = c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            labels.matches_with(|k| c.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str))
                && fields.matches_with(|p| if p == "metadata.name" { name } else { "" })
        })
        .collect())
}

fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let yaml = super::handlers::body_is_yaml(headers)?;
    let v = super::handlers::parse_body(body, yaml)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a CustomResourceDefinition object"));
    }
    Ok(v)
}

/// The served object with a patch of any kind applied.
fn patched(crd: &Value, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|m| m.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut doc = crd.clone();
    match media.as_str() {
        "application/json-patch+json" => {
            let patch = super::handlers::parse_json_patch(body)?;
            json_patch::patch(&mut doc, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch cannot be applied: {e}")))?;
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let mut patch = super::handlers::parse_body(body, false)?;
            drop_directives(&mut patch);
            json_patch::merge(&mut doc, &patch);
        }
        "application/apply-patch+yaml" => {
            let config = super::handlers::parse_body(body, true)?;
            // Lists (the versions) are replaced, maps merged: what an apply of these fields does.
            json_patch::merge(&mut doc, &without_nulls(config));
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            )));
        }
    }
    if let Some(spec) = doc.get("spec") {
        doc["spec"] = defaulted_spec(spec);
    }
    Ok(doc)
}

/// Strategic merge patch directives (`$setElementOrder/…`, `$patch`, `$retainKeys`) say
/// nothing about values; left out before the patch is merged.
fn drop_directives(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('$'));
        for child in m.values_mut() {
            drop_directives(child);
        }
    }
}

/// Numbers as JSON carries them: `0.0` and `0` are one value (the schema's bounds are floats
/// in the Rust types and integers in what clients send).
fn whole_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(whole_numbers).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

fn without_nulls(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, v| !v.is_null());
        for child in m.values_mut() {
            *child = without_nulls(std::mem::take(child));
        }
    }
    v
}

fn same_spec(name: &str, crd: &Value, spec: Option<&Value>) -> Result<(), ApiError> {
    match spec {
        Some(s) if Some(s) == crd.get("spec") => Ok(()),
        Some(_) => Err(read_only(name, "the spec differs from the one served")),
        None => Err(read_only(name, "the spec is missing")),
    }
}

/// A watch: the CRDs never change while the server runs, so it sends the initial events the
/// request asks for and then stays open (without events) until `timeoutSeconds` or shutdown.
fn watch(state: &AppState, crds: Vec<Value>, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let options = super::params::ListOptions::parse(q, true)?;
    let initial_events = super::params::flag(q, "sendInitialEvents")?;
    let rv = state.store.resource_version().to_string();
    let mut out = Vec::new();
    // Without a resourceVersion (or with 0), a watch starts with the current state.
    if initial_events || options.resource_version.is_none_or(|v| v == 0) {
        for c in &crds {
            out.extend(serde_json::to_vec(&json!({"type": "ADDED", "object": c})).unwrap_or_default());
            out.push(b'\n');
        }
    }
    if initial_events {
        let bm = json!({"type": "BOOKMARK", "object": {
            "kind": KIND, "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}},
        }});
        out.extend(serde_json::to_vec(&bm).unwrap_or_default());
        out.push(b'\n');
    }
    let timeout = options.timeout.unwrap_or(std::time::Duration::from_secs(1800));
    let mut shutdown = state.shutdown.clone();
    let first = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(out)) });
    let rest = futures::stream::once(async move {
        tokio::select! {
            () = tokio::time::sleep(timeout) => {}
            _ = shutdown.changed() => {}
        }
        Ok::<Bytes, std::io::Error>(Bytes::new())
    });
    use futures::StreamExt as _;
    let mut r = Response::new(Body::from_stream(first.chain(rest)));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { uid: "0f2b6d7e-0000-4000-8000-000000000000".into(), created: "2026-12-03T19:40:00Z".into() }
    }

    #[test]
    fn the_served_crds_are_established_with_their_names_and_stable_identity() {
        let all = served(&origin());
        assert_eq!(all.len(), 3);
        let agents = all.iter().find(|c| c["metadata"]["name"] == "agents.a2a.dev").unwrap();
        let types: Vec<&Value> =
            agents["status"]["conditions"].as_array().unwrap().iter().map(|c| &c["type"]).collect();
        assert_eq!(types, [&json!("NamesAccepted"), &json!("Established")]);
        assert_eq!(agents["status"]["acceptedNames"]["kind"], "Agent");
        assert_eq!(agents["status"]["storedVersions"], json!(["v1alpha1"]));
        assert_eq!(agents["metadata"]["uid"], served(&origin())[0]["metadata"]["uid"]);
        assert_eq!(agents["spec"]["conversion"], json!({"strategy": "None"}));
    }

    #[test]
    fn a_patch_that_keeps_the_spec_is_a_no_op_and_one_that_changes_it_is_refused() {
        let crd = served(&origin()).remove(0);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/merge-patch+json".parse().unwrap());
        let keep = Bytes::from(r#"{"metadata":{"annotations":{"a":"b"}}}"#);
        let p = patched(&crd, &headers, &keep).unwrap();
        assert!(same_spec("x", &crd, p.get("spec")).is_ok());
        let change = Bytes::from(r#"{"spec":{"scope":"Cluster"}}"#);
        let p = patched(&crd, &headers, &change).unwrap();
        let e = same_spec("agents.a2a.dev", &crd, p.get("spec")).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
    }
}
