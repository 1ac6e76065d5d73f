//! The OpenAPI documents of the served resources: `/openapi/v2` (JSON, and the gnostic
//! protobuf form client-go's discovery asks for) and `/openapi/v3` (an index, one document
//! per group version), built once from the same paths and schemas.
//!
//! The built-in kinds' schemas are the published Kubernetes definitions
//! (`kube-definitions.json`, written by `scripts/gen-kube-definitions.py`), with their
//! patch-strategy, merge-key and group-version-kind extensions. The a2a kinds' schemas are
//! their CRDs' `openAPIV3Schema` with `apiVersion`, `kind` and `metadata` added, as the
//! kube-apiserver does for custom resources (and, in v2, with what swagger 2.0 cannot say
//! removed the same way). Paths and operations follow the kube-apiserver's: every served
//! resource in [`RESOURCES`] gets them from its verbs, with `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind`.

pub mod gnostic;

use std::collections::{BTreeSet, VecDeque};
use std::sync::LazyLock;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use prost::Message as _;
use serde_json::{Map, Value, json};

use super::resources::{RESOURCES, Resource};
use super::status::ApiError;

/// What client-go's discovery sends in `Accept` for the v2 document.
pub const PROTOBUF_V2: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The same media type spelled without `@`, which Go's `mime.ParseMediaType` (and so
/// client-go) can read: the kube-apiserver answers with it, whichever spelling was asked for.
pub const PROTOBUF_V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Where the published definitions of a built-in group's kinds live: the definition of
/// `ConfigMap` in core v1 is `io.k8s.api.core.v1.ConfigMap`. A resource of one of these
/// groups added to [`RESOURCES`] gets its paths and schemas from this table.
const BUILT_IN: &[(&str, &str)] = &[
    ("", "io.k8s.api.core"),
    ("events.k8s.io", "io.k8s.api.events"),
    ("coordination.k8s.io", "io.k8s.api.coordination"),
    ("authorization.k8s.io", "io.k8s.api.authorization"),
    ("authentication.k8s.io", "io.k8s.api.authentication"),
    ("apiextensions.k8s.io", "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions"),
];

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// The published definitions, parsed once.
static KUBE_DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let text = include_str!("kube-definitions.json");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut doc)) => match doc.remove("definitions") {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        },
        other => {
            tracing::error!("kube-definitions.json does not parse as a JSON object: {other:?}");
            Map::new()
        }
    }
});

/// A document, its bytes and their ETag, built once.
pub struct Encoded {
    pub bytes: Bytes,
    pub etag: String,
}

impl Encoded {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        Encoded { bytes: Bytes::from(bytes), etag: format!("\"{hex}\"") }
    }
}

struct Documents {
    v2_json: Encoded,
    v2_protobuf: Encoded,
    v3_index: Encoded,
    /// ("api/v1" or "apis/GROUP/VERSION", the document).
    v3: Vec<(String, Encoded)>,
}

static DOCUMENTS: LazyLock<Documents> = LazyLock::new(|| {
    let v2 = v2_document();
    let v2_json = Encoded::new(serde_json::to_vec(&v2).unwrap_or_default());
    let v2_protobuf = Encoded::new(gnostic::document(&v2).encode_to_vec());
    let v3: Vec<(String, Encoded)> = group_versions()
        .into_iter()
        .filter_map(|(g, v)| {
            let doc = v3_document(g, v)?;
            Some((group_path(g, v), Encoded::new(serde_json::to_vec(&doc).unwrap_or_default())))
        })
        .collect();
    let mut paths = Map::new();
    for (path, doc) in &v3 {
        let hash = doc.etag.trim_matches('"');
        paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
    }
    let v3_index = Encoded::new(serde_json::to_vec(&json!({ "paths": paths })).unwrap_or_default());
    Documents { v2_json, v2_protobuf, v3_index, v3 }
});

/// The v2 document as JSON and as gnostic protobuf (sizes for the docs and tests).
pub fn v2_bytes() -> (Bytes, Bytes) {
    (DOCUMENTS.v2_json.bytes.clone(), DOCUMENTS.v2_protobuf.bytes.clone())
}

fn group_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// Every resource the documents describe: the stored ones, then the APIs answered from the
/// server's own knowledge (the CRDs, the access reviews).
fn described() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().chain(super::computed::RESOURCES.iter())
}

/// The served group versions, core first, in the order of [`described`].
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in described() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

/// The definition name of a resource's kind: `io.k8s.api.core.v1.ConfigMap`,
/// `dev.a2a.v1alpha1.Agent`.
pub fn definition_name(r: &Resource, kind: &str) -> String {
    match BUILT_IN.iter().find(|(g, _)| *g == r.group) {
        Some((_, prefix)) => format!("{prefix}.{}.{kind}", r.version),
        None => {
            let reversed: Vec<&str> = r.group.split('.').rev().collect();
            format!("{}.{}.{kind}", reversed.join("."), r.version)
        }
    }
}

fn gvk(r: &Resource, kind: &str) -> Value {
    json!({"group": r.group, "version": r.version, "kind": kind})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/definitions/{name}")})
}

/// A published property of ConfigMap/ConfigMapList (apiVersion, kind, metadata), to give
/// custom resources the same descriptions the kube-apiserver gives them.
fn published_property(definition: &str, property: &str) -> Value {
    KUBE_DEFINITIONS
        .get(&format!("io.k8s.api.core.v1.{definition}"))
        .and_then(|d| d.pointer(&format!("/properties/{property}")))
        .cloned()
        .unwrap_or_else(|| json!({"type": "string"}))
}

/// An a2a kind's schema as the kube-apiserver publishes a CRD's in v3: the CRD's
/// `openAPIV3Schema` plus apiVersion, kind and metadata (a reference to ObjectMeta).
fn custom_resource_schema(r: &Resource) -> Option<Value> {
    let kind = r.a2a?;
    let crd = kind.crd();
    let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    let mut schema = serde_json::to_value(schema).ok()?;
    let props = schema.as_object_mut()?.entry("properties").or_insert_with(|| json!({}));
    if let Value::Object(props) = props {
        props.insert("apiVersion".into(), published_property("ConfigMap", "apiVersion"));
        props.insert("kind".into(), published_property("ConfigMap", "kind"));
        props.insert("metadata".into(), published_property("ConfigMap", "metadata"));
    }
    schema["x-kubernetes-group-version-kind"] = json!([gvk(r, r.kind)]);
    Some(schema)
}

/// The `AgentList` of an a2a kind, as the kube-apiserver builds a CRD's list schema.
fn custom_resource_list_schema(r: &Resource) -> Value {
    let list_kind = format!("{}List", r.kind);
    let mut items = json!({"type": "array", "items": reference(&definition_name(r, r.kind))});
    items["description"] = json!(format!(
        "List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
        r.plural
    ));
    json!({
        "description": format!("{list_kind} is a list of {}", r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": published_property("ConfigMapList", "apiVersion"),
            "kind": published_property("ConfigMapList", "kind"),
            "items": items,
            "metadata": published_property("ConfigMapList", "metadata"),
        },
        "x-kubernetes-group-version-kind": [gvk(r, &list_kind)],
    })
}

/// What swagger 2.0 (and kubectl's reading of it) cannot take from a structural v3 schema,
/// removed as the kube-apiserver removes it from CRDs' v2 schemas: a nullable field loses
/// its type and nested fields, a field that keeps unknown fields loses its nested fields,
/// an array without items loses its type, value validations go.
fn to_v2(schema: &mut Value) {
    let Some(s) = schema.as_object_mut() else { return };
    for k in ["allOf", "oneOf", "anyOf", "not"] {
        s.remove(k);
    }
    if s.remove("nullable") == Some(Value::Bool(true)) {
        s.remove("type");
        s.remove("items");
        s.remove("properties");
    }
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        s.remove("items");
        s.remove("properties");
    }
    if s.get("type").and_then(Value::as_str) == Some("array") && !s.contains_key("items") {
        s.remove("type");
    }
    for k in [
        "format",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
    ] {
        s.remove(k);
    }
    let nullable: Vec<String> = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter().filter(|(_, v)| v.get("nullable") == Some(&Value::Bool(true))).map(|(k, _)| k.clone()).collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(required)) = s.get_mut("required") {
        required.retain(|r| r.as_str().is_none_or(|r| !nullable.iter().any(|n| n == r)));
        if required.is_empty() {
            s.remove("required");
        }
    }
    if let Some(Value::Object(extra)) = s.get_mut("additionalProperties")
        && extra.remove("nullable") == Some(Value::Bool(true))
    {
        extra.remove("type");
    }
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        props.values_mut().for_each(to_v2);
    }
    if let Some(items) = s.get_mut("items") {
        to_v2(items);
    }
    if let Some(extra @ Value::Object(_)) = s.get_mut("additionalProperties") {
        to_v2(extra);
    }
}

fn query(name: &str, type_: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "type": type_, "uniqueItems": true, "description": description})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true,
           "description": description})
}

fn body(schema: Value) -> Value {
    json!({"name": "body", "in": "body", "required": true, "schema": schema})
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. The only valid value is All.",
        ),
        query("fieldManager", "string", "The name of the actor or entity that is making these changes."),
        query(
            "fieldValidation",
            "string",
            "How the server treats unknown or duplicate fields in the object: Ignore, Warn (the default) or Strict.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "Requests watch events of type BOOKMARK."),
        query("continue", "string", "The continue token of the previous page of a paged list."),
        query("fieldSelector", "string", "A selector restricting the returned objects by their fields."),
        query("labelSelector", "string", "A selector restricting the returned objects by their labels."),
        query("limit", "integer", "The maximum number of objects to return in one page."),
        query("resourceVersion", "string", "Which resource versions the request may be served from."),
        query("resourceVersionMatch", "string", "How resourceVersion is applied: Exact or NotOlderThan."),
        query("sendInitialEvents", "boolean", "A watch starts with the current objects as ADDED events."),
        query("timeoutSeconds", "integer", "A timeout for the list or watch call."),
        query("watch", "boolean", "Watch for changes to the described resources."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        body(reference(&format!("{META}.DeleteOptions"))),
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. The only valid value is All.",
        ),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
        ),
    ]
}

const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// The operations of one resource: (path, path item), as the kube-apiserver publishes them.
fn paths_of(r: &Resource) -> Vec<(String, Value)> {
    let verbs = r.verbs();
    let has = |v: &str| verbs.contains(&v);
    let kind_ref = reference(&definition_name(r, r.kind));
    let list_ref = reference(&definition_name(r, &format!("{}List", r.kind)));
    let custom = r.a2a.is_some();
    let produces: Vec<&str> = if custom {
        vec!["application/json", "application/yaml"]
    } else {
        vec!["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
    };
    // Custom resources take no strategic merge patch; kubectl reads this to choose.
    let patch_types: Vec<&str> = PATCH_TYPES.iter().copied().filter(|t| !custom || !t.contains("strategic")).collect();
    let tag = tag(r);
    let op_id = operation_group(r);
    let gvk = gvk(r, r.kind);
    let op = |action: &str, id: String, description: String, params: Vec<Value>, responses: Value| {
        let mut o = json!({
            "description": description,
            "consumes": ["*/*"],
            "produces": produces,
            "schemes": ["https"],
            "tags": [tag],
            "operationId": id,
            "parameters": params,
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if action == "patch" {
            o["consumes"] = json!(patch_types);
        }
        if o["parameters"].as_array().is_some_and(Vec::is_empty) {
            o.as_object_mut().map(|m| m.remove("parameters"));
        }
        o
    };
    let ok = |schema: &Value| json!({"description": "OK", "schema": schema});
    let created = |schema: &Value| json!({"200": ok(schema), "201": {"description": "Created", "schema": schema}});
    let prefix =
        if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
    let (ns_seg, ns_word) = if r.namespaced { ("/namespaces/{namespace}", "Namespaced") } else { ("", "") };
    let ns_param = || path_param("namespace", "object name and auth scope, such as for teams and projects");
    let pretty = query("pretty", "string", "If 'true', then the output is pretty printed.");
    let kind = r.kind;
    let mut out = Vec::new();

    // The collection: list, create, deletecollection.
    let mut collection = Map::new();
    if has("list") {
        collection.insert(
            "get".into(),
            op(
                "list",
                format!("list{op_id}{ns_word}{kind}"),
                format!("list or watch objects of kind {kind}"),
                list_params(),
                json!({"200": ok(&list_ref)}),
            ),
        );
    }
    if has("create") {
        let mut params = vec![body(kind_ref.clone())];
        params.extend(write_params());
        let mut responses = created(&kind_ref);
        responses["202"] = json!({"description": "Accepted", "schema": kind_ref});
        collection.insert(
            "post".into(),
            op("post", format!("create{op_id}{ns_word}{kind}"), format!("create a {kind}"), params, responses),
        );
    }
    if has("deletecollection") {
        let mut params = delete_params();
        params.extend(list_params().into_iter().filter(|p| p["name"] != "watch" && p["name"] != "allowWatchBookmarks"));
        collection.insert(
            "delete".into(),
            op(
                "deletecollection",
                format!("deletecollection{op_id}{ns_word}{kind}"),
                format!("delete collection of {kind}"),
                params,
                json!({"200": ok(&reference(&format!("{META}.Status")))}),
            ),
        );
    }
    if !collection.is_empty() {
        let mut params = Vec::new();
        if r.namespaced {
            params.push(ns_param());
        }
        params.push(pretty.clone());
        collection.insert("parameters".into(), Value::Array(params));
        out.push((format!("{prefix}{ns_seg}/{}", r.plural), Value::Object(collection)));
    }

    // One object: read, replace, patch, delete.
    let mut item = Map::new();
    if has("get") {
        item.insert(
            "get".into(),
            op(
                "get",
                format!("read{op_id}{ns_word}{kind}"),
                format!("read the specified {kind}"),
                vec![],
                json!({"200": ok(&kind_ref)}),
            ),
        );
    }
    if has("update") {
        let mut params = vec![body(kind_ref.clone())];
        params.extend(write_params());
        item.insert(
            "put".into(),
            op(
                "put",
                format!("replace{op_id}{ns_word}{kind}"),
                format!("replace the specified {kind}"),
                params,
                created(&kind_ref),
            ),
        );
    }
    if has("patch") {
        let mut params = vec![body(reference(&format!("{META}.Patch")))];
        params.extend(write_params());
        params.push(query(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests: it re-acquires conflicting fields owned by other people.",
        ));
        item.insert(
            "patch".into(),
            op(
                "patch",
                format!("patch{op_id}{ns_word}{kind}"),
                format!("partially update the specified {kind}"),
                params,
                created(&kind_ref),
            ),
        );
    }
    if has("delete") {
        let status = reference(&format!("{META}.Status"));
        item.insert(
            "delete".into(),
            op(
                "delete",
                format!("delete{op_id}{ns_word}{kind}"),
                format!("delete a {kind}"),
                delete_params(),
                json!({"200": ok(&status), "202": {"description": "Accepted", "schema": status}}),
            ),
        );
    }
    if !item.is_empty() {
        let mut params = vec![path_param("name", &format!("name of the {kind}"))];
        if r.namespaced {
            params.push(ns_param());
        }
        params.push(pretty.clone());
        item.insert("parameters".into(), Value::Array(params));
        out.push((format!("{prefix}{ns_seg}/{}/{{name}}", r.plural), Value::Object(item)));
    }

    // The status subresource.
    if r.status_subresource {
        let mut status = Map::new();
        status.insert(
            "get".into(),
            op(
                "get",
                format!("read{op_id}{ns_word}{kind}Status"),
                format!("read status of the specified {kind}"),
                vec![],
                json!({"200": ok(&kind_ref)}),
            ),
        );
        let mut params = vec![body(kind_ref.clone())];
        params.extend(write_params());
        status.insert(
            "put".into(),
            op(
                "put",
                format!("replace{op_id}{ns_word}{kind}Status"),
                format!("replace status of the specified {kind}"),
                params,
                created(&kind_ref),
            ),
        );
        let mut params = vec![body(reference(&format!("{META}.Patch")))];
        params.extend(write_params());
        params.push(query("force", "boolean", "Force is going to \"force\" Apply requests."));
        status.insert(
            "patch".into(),
            op(
                "patch",
                format!("patch{op_id}{ns_word}{kind}Status"),
                format!("partially update status of the specified {kind}"),
                params,
                created(&kind_ref),
            ),
        );
        let mut params = vec![path_param("name", &format!("name of the {kind}"))];
        if r.namespaced {
            params.push(ns_param());
        }
        params.push(pretty.clone());
        status.insert("parameters".into(), Value::Array(params));
        out.push((format!("{prefix}{ns_seg}/{}/{{name}}/status", r.plural), Value::Object(status)));
    }

    // Namespaced lists across all namespaces.
    if r.namespaced && has("list") {
        let mut all = Map::new();
        all.insert(
            "get".into(),
            op(
                "list",
                format!("list{op_id}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                list_params(),
                json!({"200": ok(&list_ref)}),
            ),
        );
        all.insert("parameters".into(), json!([pretty]));
        out.push((format!("{prefix}/{}", r.plural), Value::Object(all)));
    }
    out
}

/// `core_v1`, `events_v1`, `a2aDev_v1alpha1`: the kube-apiserver's operation tags.
fn tag(r: &Resource) -> String {
    let group = if r.group.is_empty() { "core".to_string() } else { lower_first(&camel(r.group)) };
    format!("{group}_{}", r.version)
}

/// `CoreV1`, `EventsV1`, `A2aDevV1alpha1`: the kube-apiserver's operation id infix.
fn operation_group(r: &Resource) -> String {
    let group = if r.group.is_empty() { "Core".to_string() } else { camel(r.group) };
    format!("{group}{}", upper_first(r.version))
}

fn camel(group: &str) -> String {
    group.strip_suffix(".k8s.io").unwrap_or(group).split('.').map(upper_first).collect()
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}

/// Every definition: the published ones and, in the form of `version`, the a2a kinds'.
fn definitions(v2: bool) -> Map<String, Value> {
    let mut defs = KUBE_DEFINITIONS.clone();
    for r in RESOURCES.iter().filter(|r| r.a2a.is_some()) {
        if let Some(mut schema) = custom_resource_schema(r) {
            if v2 {
                to_v2(&mut schema);
            }
            defs.insert(definition_name(r, r.kind), schema);
            defs.insert(definition_name(r, &format!("{}List", r.kind)), custom_resource_list_schema(r));
        }
    }
    defs
}

/// The swagger 2.0 document of every served resource.
pub fn v2_document() -> Value {
    let mut paths = Map::new();
    for r in described() {
        paths.extend(paths_of(r));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions(true),
    })
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                out.push(name.to_owned());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// v2 schema spelling to v3: references into components, and a reference with siblings (a
/// description) wrapped in allOf, as the kube-apiserver writes its v3 documents.
fn schema_to_v3(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/definitions/", "#/components/schemas/");
            }
            if m.len() > 1
                && let Some(r) = m.remove("$ref")
            {
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
            m.values_mut().for_each(schema_to_v3);
        }
        Value::Array(a) => a.iter_mut().for_each(schema_to_v3),
        _ => {}
    }
}

/// One v2 operation in v3 form: the body becomes requestBody, responses carry content.
fn operation_to_v3(op: &Value) -> Value {
    let mut out = Map::new();
    for k in ["description", "tags", "operationId", "x-kubernetes-action", "x-kubernetes-group-version-kind"] {
        if let Some(v) = op.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let consumes: Vec<&str> = op
        .get("consumes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let produces: Vec<&str> = op
        .get("produces")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut params = Vec::new();
    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        if p["in"] == "body" {
            let content: Map<String, Value> =
                consumes.iter().map(|c| ((*c).to_owned(), json!({"schema": p["schema"]}))).collect();
            out.insert("requestBody".into(), json!({"content": content, "required": true}));
        } else {
            params.push(parameter_to_v3(p));
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    let mut responses = Map::new();
    for (code, r) in op.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let content: Map<String, Value> =
            produces.iter().map(|c| ((*c).to_owned(), json!({"schema": r["schema"]}))).collect();
        responses.insert(code.clone(), json!({"description": r["description"], "content": content}));
    }
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

fn parameter_to_v3(p: &Value) -> Value {
    let mut out = json!({"name": p["name"], "in": p["in"], "description": p["description"],
                         "schema": {"type": p["type"], "uniqueItems": true}});
    if p["required"] == true {
        out["required"] = json!(true);
    }
    out
}

/// The v3 document of one group version: its paths and every schema they reach.
pub fn v3_document(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = described().filter(|r| r.group == group && r.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut wanted = Vec::new();
    for r in served {
        for (path, item) in paths_of(r) {
            collect_refs(&item, &mut wanted);
            let mut v3 = Map::new();
            for (k, v) in item.as_object().into_iter().flatten() {
                if k == "parameters" {
                    v3.insert(
                        k.clone(),
                        Value::Array(v.as_array().into_iter().flatten().map(parameter_to_v3).collect()),
                    );
                } else {
                    v3.insert(k.clone(), operation_to_v3(v));
                }
            }
            paths.insert(path, Value::Object(v3));
        }
    }
    let defs = definitions(false);
    let mut schemas = Map::new();
    let mut todo: VecDeque<String> = wanted.into();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(schema) = defs.get(&name) else { continue };
        let mut more = Vec::new();
        collect_refs(schema, &mut more);
        todo.extend(more);
        schemas.insert(name, schema.clone());
    }
    let mut doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    schema_to_v3(&mut doc);
    Some(doc)
}

/// The media type an `Accept` header picks for the v2 document: the first it names that is
/// served. None when it names none (406).
fn v2_media_type(headers: &HeaderMap) -> Option<bool> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return Some(false) };
    for clause in accept.split(',') {
        let media = clause.split(';').next().unwrap_or_default().trim();
        match media {
            PROTOBUF_V2 | PROTOBUF_V2_CONTENT_TYPE => return Some(true),
            "application/json" | "*/*" | "application/*" | "" => return Some(false),
            _ => {}
        }
    }
    None
}

fn cached(headers: &HeaderMap, doc: &Encoded, content_type: &'static str, cache_control: &'static str) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == doc.etag || t.trim() == "*"));
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, doc.bytes.clone()).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(etag) = HeaderValue::from_str(&doc.etag) {
        h.insert(header::ETAG, etag);
    }
    r
}

/// `GET /openapi/v2`: JSON, or gnostic protobuf when `Accept` asks for it; ETag and
/// If-None-Match as the kube-apiserver does.
pub async fn serve_v2(headers: HeaderMap) -> Response {
    match v2_media_type(&headers) {
        Some(true) => cached(&headers, &DOCUMENTS.v2_protobuf, PROTOBUF_V2_CONTENT_TYPE, "no-cache, private"),
        Some(false) => cached(&headers, &DOCUMENTS.v2_json, "application/json", "no-cache, private"),
        None => ApiError::new(
            406,
            "NotAcceptable",
            format!("only application/json and {PROTOBUF_V2} are served for /openapi/v2"),
        )
        .into_response(),
    }
}

/// `GET /openapi/v3`: one URL per group version, with the hash of its document.
pub async fn serve_v3_index(headers: HeaderMap) -> Response {
    cached(&headers, &DOCUMENTS.v3_index, "application/json", "no-cache, private")
}

#[derive(serde::Deserialize)]
pub struct HashQuery {
    hash: Option<String>,
}

fn serve_v3(path: &str, headers: &HeaderMap, q: &HashQuery) -> Response {
    let Some((_, doc)) = DOCUMENTS.v3.iter().find(|(p, _)| p == path) else {
        return ApiError::not_found_path().into_response();
    };
    let hash = doc.etag.trim_matches('"');
    match q.hash.as_deref() {
        None => cached(headers, doc, "application/json", "no-cache, private"),
        // A URL with the document's own hash names that content forever.
        Some(h) if h == hash => {
            let mut r = cached(headers, doc, "application/json", "public, immutable");
            let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(365 * 24);
            let expires = expires.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if let Ok(v) = HeaderValue::from_str(&expires) {
                r.headers_mut().insert(header::EXPIRES, v);
            }
            r
        }
        // An index fetched before the document changed: sent on to the current one.
        Some(_) => {
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{path}?hash={hash}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    }
}

/// `GET /openapi/v3/api/VERSION`.
pub async fn serve_v3_core(
    axum::extract::Path(version): axum::extract::Path<String>,
    Query(q): Query<HashQuery>,
    headers: HeaderMap,
) -> Response {
    serve_v3(&group_path("", &version), &headers, &q)
}

/// `GET /openapi/v3/apis/GROUP/VERSION`.
pub async fn serve_v3_group(
    axum::extract::Path((group, version)): axum::extract::Path<(String, String)>,
    Query(q): Query<HashQuery>,
    headers: HeaderMap,
) -> Response {
    serve_v3(&group_path(&group, &version), &headers, &q)
}

#[cfg(test)]
mod tests;
