//! The APIs answered from the server's own knowledge rather than from the store: the access
//! reviews ([`super::review`]) and the a2a CRDs ([`super::crds`]), with their discovery.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{AppState, crds, review};

/// The groups, after those of the stored resources, in the order `/apis` lists them.
const GROUPS: [(&str, &str); 3] =
    [(crds::GROUP, crds::VERSION), ("authorization.k8s.io", "v1"), ("authentication.k8s.io", "v1")];

fn group_document(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis` with these groups added.
pub fn with_groups(mut list: Value) -> Value {
    if let Some(groups) = list.get_mut("groups").and_then(Value::as_array_mut) {
        groups.extend(GROUPS.iter().map(|(g, v)| group_document(g, v)));
    }
    list
}

/// `GET /apis/GROUP` for these groups.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = GROUPS.iter().find(|(g, _)| *g == group)?;
    let mut doc = group_document(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /apis/GROUP/VERSION` for these groups.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources = if (group, version) == (crds::GROUP, crds::VERSION) {
        crds::discovery()
    } else {
        review::discovery(group, version)
    };
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"),
        "resources": resources,
    }))
}

/// Whether a request is for one of these APIs: answers the verb and resource for the audit log.
pub fn claims(parts: &Parts) -> Option<(&'static str, &'static str)> {
    let path = parts.uri.path();
    let verb = match parts.method.as_str() {
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "other",
    };
    if let Some(plural) = review::plural_of(path) {
        return Some((verb, plural));
    }
    crds::is_crd_path(path).then_some((verb, crds::PLURAL))
}

/// Serves a request that [`claims`] claimed, its body read.
pub async fn serve(state: &AppState, parts: &Parts, body: &Bytes) -> Result<Response, ApiError> {
    let path = parts.uri.path();
    if let Some(plural) = review::plural_of(path) {
        return review::serve(&parts.method, plural, &parts.headers, body);
    }
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    crds::serve(state, &parts.method, path, &parts.headers, &q, body).await
}

/// `/openapi/v3` with the CRDs' group added, so that kubectl leaves validation of a CRD's
/// apply to the server (`fieldValidation`), as it does for every served group.
pub fn with_openapi(mut index: Value) -> Value {
    let path = format!("apis/{}/{}", crds::GROUP, crds::VERSION);
    if let Some(paths) = index.get_mut("paths").and_then(Value::as_object_mut) {
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}")}));
    }
    index
}

/// `/openapi/v3/apis/apiextensions.k8s.io/v1`: the CRD paths, each advertising
/// `fieldValidation`, and an open schema.
pub fn openapi(group: &str, version: &str) -> Option<Value> {
    if (group, version) != (crds::GROUP, crds::VERSION) {
        return None;
    }
    let gvk = json!({"group": group, "version": version, "kind": "CustomResourceDefinition"});
    let schema_name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition";
    let op = |verb: &str| {
        json!({
            "x-kubernetes-action": verb,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}},
        })
    };
    let base = format!("/apis/{group}/{version}/{}", crds::PLURAL);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "a2a", "version": version},
        "paths": {
            format!("{base}/{{name}}"): {"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")},
            base: {"get": op("list"), "post": op("post")},
        },
        "components": {"schemas": {schema_name: {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "x-kubernetes-group-version-kind": [gvk],
        }}},
    }))
}
