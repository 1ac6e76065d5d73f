//! The APIs answered from the server's own knowledge rather than from the store: the access
//! reviews ([`super::review`]) and the a2a CRDs ([`super::crds`]), with their discovery, and the
//! users API ([`super::users`], not in discovery).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::authz::Subject;
use super::resources::Resource;
use super::status::ApiError;
use super::{AppState, crds, review, users};

/// These APIs as resources, for the OpenAPI documents ([`super::openapi`]): their paths
/// come from their verbs ([`Resource::verbs`]) and their schemas from the published
/// definitions, as those of the stored built-in kinds do.
pub static RESOURCES: [Resource; 4] = [
    computed(crds::GROUP, crds::VERSION, crds::PLURAL, "customresourcedefinition", "CustomResourceDefinition", true),
    computed(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
    ),
    computed(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
    ),
    computed("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", false),
];

const fn computed(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    status_subresource: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        short_names: &[],
        categories: &[],
        namespaced: false,
        status_subresource,
        a2a: None,
    }
}

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
    if users::target(path).is_some() {
        return Some((verb, "users"));
    }
    if super::join::tokens_target(path).is_some() {
        return Some((verb, "jointokens"));
    }
    if super::join::nodes_target(path).is_some() {
        return Some((verb, "nodes"));
    }
    if crate::discovery::peers::target(path).is_some() {
        return Some((verb, crate::discovery::peers::PLURAL));
    }
    crds::is_crd_path(path).then_some((verb, crds::PLURAL))
}

/// `GET .../peers` (a `PeerList`) and `GET .../peers/NODE` (one peer, by node name): the hosts
/// mDNS found. Read-only.
fn serve_peers(state: &AppState, method: &axum::http::Method, name: Option<&str>) -> Result<Response, ApiError> {
    use crate::discovery::peers::{GROUP, PLURAL};
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return Err(ApiError::method_not_allowed("peers are found by mDNS; they are read-only"));
    }
    let table = &state.config.peers;
    let body = match name {
        None => table.document(),
        Some(n) => match table.list().into_iter().find(|p| p.node_name == n) {
            Some(p) => serde_json::to_value(p).unwrap_or_default(),
            None => {
                let mut e = ApiError::new(404, "NotFound", format!("{PLURAL}.{GROUP} \"{n}\" not found"));
                e.details = Some(json!({"name": n, "group": GROUP, "kind": PLURAL}));
                return Err(e);
            }
        },
    };
    Ok(super::status::json_response(axum::http::StatusCode::OK, &body))
}

/// Serves a request that [`claims`] claimed, its body read.
pub async fn serve(state: &AppState, parts: &Parts, body: &Bytes) -> Result<Response, ApiError> {
    let path = parts.uri.path();
    if let Some(plural) = review::plural_of(path) {
        // Set by the authentication in front of every handler.
        let Some(subject) = parts.extensions.get::<Subject>() else {
            return Err(ApiError::unauthorized());
        };
        return review::serve(subject, &parts.method, plural, &parts.headers, body);
    }
    if let Some(name) = users::target(path) {
        return users::serve(&state.users, &parts.method, name.as_deref(), body);
    }
    if let Some(id) = super::join::tokens_target(path) {
        return super::join::serve_tokens(&state.join, &parts.method, id.as_deref(), body);
    }
    if let Some(name) = super::join::nodes_target(path) {
        return super::join::serve_nodes(&state.join, &parts.method, name.as_deref());
    }
    if let Some(name) = crate::discovery::peers::target(path) {
        return serve_peers(state, &parts.method, name.as_deref());
    }
    let q: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    crds::serve(state, &parts.method, path, &parts.headers, &q, body).await
}
