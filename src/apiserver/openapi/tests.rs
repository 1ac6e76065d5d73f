use super::*;

/// What kube-openapi's `proto.NewOpenAPIData` (behind kubectl's and Argo CD's reading of
/// the v2 document) refuses: a reference with a type or properties beside it, more than one
/// type, a reference to a missing definition. One refused definition fails the whole document.
fn check_as_kube_openapi(defs: &Map<String, Value>, path: &str, s: &Value, errors: &mut Vec<String>) {
    let Some(m) = s.as_object() else { return };
    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
        if m.contains_key("type") || m.contains_key("properties") {
            errors.push(format!("{path}: a reference with a type or properties"));
        }
        if !defs.contains_key(r.trim_start_matches("#/definitions/")) {
            errors.push(format!("{path}: unknown model in reference {r}"));
        }
        return;
    }
    if let Some(Value::Array(types)) = m.get("type") {
        errors.push(format!("{path}: more than one type {types:?}"));
    }
    if m.get("type").and_then(Value::as_str) == Some("array") && !m.contains_key("items") {
        errors.push(format!("{path}: an array without items"));
    }
    for (k, p) in m.get("properties").and_then(Value::as_object).into_iter().flatten() {
        check_as_kube_openapi(defs, &format!("{path}.{k}"), p, errors);
    }
    if let Some(items) = m.get("items") {
        check_as_kube_openapi(defs, &format!("{path}[]"), items, errors);
    }
    if let Some(extra @ Value::Object(_)) = m.get("additionalProperties") {
        check_as_kube_openapi(defs, &format!("{path}{{}}"), extra, errors);
    }
}

#[test]
fn every_v2_definition_reads_as_kube_openapi_reads_it() {
    let doc = v2_document();
    let defs = doc["definitions"].as_object().unwrap();
    let mut errors = Vec::new();
    for (name, s) in defs {
        check_as_kube_openapi(defs, name, s, &mut errors);
    }
    assert_eq!(errors, Vec::<String>::new());
}

#[test]
fn every_served_kind_has_its_schema_with_its_group_version_kind() {
    let doc = v2_document();
    for r in RESOURCES.iter() {
        let name = definition_name(r, r.kind);
        let schema = doc["definitions"].get(&name).unwrap_or_else(|| panic!("{name} missing"));
        let gvks = schema["x-kubernetes-group-version-kind"].as_array().unwrap();
        assert!(gvks.contains(&json!({"group": r.group, "version": r.version, "kind": r.kind})), "{name}: {gvks:?}");
        assert!(schema["properties"]["metadata"]["$ref"].as_str().unwrap().ends_with(".ObjectMeta"), "{name}");
        if r.verbs().contains(&"list") {
            let list = definition_name(r, &format!("{}List", r.kind));
            assert!(doc["definitions"].get(&list).is_some(), "{list} missing");
        }
    }
}

#[test]
fn custom_resources_get_type_meta_and_object_meta_as_the_kube_apiserver_adds_them() {
    let doc = v2_document();
    let agent = &doc["definitions"]["dev.a2a.v1alpha1.Agent"];
    assert_eq!(
        agent["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(agent["properties"]["kind"]["description"].as_str().unwrap().starts_with("Kind is a string value"));
    assert!(agent["properties"]["spec"]["properties"].is_object());
    let list = &doc["definitions"]["dev.a2a.v1alpha1.AgentList"];
    assert_eq!(list["properties"]["items"]["items"]["$ref"], "#/definitions/dev.a2a.v1alpha1.Agent");
    assert_eq!(list["x-kubernetes-group-version-kind"][0]["kind"], "AgentList");
}

#[test]
fn v2_schemas_of_custom_resources_drop_what_swagger_2_cannot_say() {
    let mut s = json!({
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "object", "nullable": true, "properties": {"x": {"type": "string"}}},
            "b": {"type": "string", "format": "date-time", "enum": ["x"]},
            "c": {"type": "array", "x-kubernetes-preserve-unknown-fields": true, "items": {"type": "string"}},
        }
    });
    to_v2(&mut s);
    assert_eq!(
        s,
        json!({
            "type": "object",
            "required": ["b"],
            "properties": {"a": {}, "b": {"type": "string"}, "c": {"x-kubernetes-preserve-unknown-fields": true}},
        })
    );
}

#[test]
fn core_kinds_carry_the_published_patch_metadata() {
    let doc = v2_document();
    let defs = &doc["definitions"];
    let finalizers = &defs["io.k8s.api.core.v1.NamespaceSpec"]["properties"]["finalizers"];
    assert!(finalizers["description"].as_str().unwrap().contains("Finalizers"));
    let owners = &defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["ownerReferences"];
    assert_eq!(owners["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
}

#[test]
fn paths_follow_the_verbs_and_custom_resources_take_no_strategic_merge_patch() {
    let doc = v2_document();
    let paths = &doc["paths"];
    let cm = &paths["/api/v1/namespaces/{namespace}/configmaps/{name}"];
    assert_eq!(cm["patch"]["operationId"], "patchCoreV1NamespacedConfigMap");
    assert_eq!(cm["patch"]["x-kubernetes-action"], "patch");
    assert_eq!(
        cm["patch"]["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert!(cm["patch"]["consumes"].as_array().unwrap().contains(&json!("application/strategic-merge-patch+json")));
    let ag = &paths["/apis/a2a.dev/v1alpha1/namespaces/{namespace}/agents/{name}"];
    assert_eq!(ag["get"]["operationId"], "readA2aDevV1alpha1NamespacedAgent");
    assert!(!ag["patch"]["consumes"].as_array().unwrap().contains(&json!("application/strategic-merge-patch+json")));
    assert!(paths["/apis/a2a.dev/v1alpha1/agents"]["get"].is_object(), "agents across namespaces");
    assert!(paths["/apis/a2a.dev/v1alpha1/resourcebudgets/{name}/status"]["patch"].is_object());
    // Namespaces have no deletecollection.
    assert!(paths["/api/v1/namespaces"].get("delete").is_none());
    assert!(paths["/api/v1/namespaces/{namespace}/secrets"]["delete"].is_object());
}

#[test]
fn the_protobuf_document_decodes_to_the_json_one() {
    let (json_bytes, proto) = v2_bytes();
    let doc = gnostic::Document::decode(proto.as_ref()).unwrap();
    let json: Value = serde_json::from_slice(&json_bytes).unwrap();
    assert_eq!(doc.swagger, "2.0");
    let defs = &doc.definitions.as_ref().unwrap().additional_properties;
    assert_eq!(defs.len(), json["definitions"].as_object().unwrap().len());
    let cm = defs.iter().find(|d| d.name == "io.k8s.api.core.v1.ConfigMap").unwrap().value.as_ref().unwrap();
    let gvk = cm.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").unwrap();
    let gvk: Value = serde_json::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
    assert_eq!(gvk, json!([{"group": "", "version": "v1", "kind": "ConfigMap"}]));
    let data = cm.properties.as_ref().unwrap().additional_properties.iter().find(|p| p.name == "data").unwrap();
    let data = data.value.as_ref().unwrap();
    assert_eq!(data.r#type.as_ref().unwrap().value, ["object"]);
    assert!(data.description.starts_with("Data contains the configuration data"));
    let paths = &doc.paths.as_ref().unwrap().path;
    assert_eq!(paths.len(), json["paths"].as_object().unwrap().len());
    let agents =
        paths.iter().find(|p| p.name == "/apis/a2a.dev/v1alpha1/namespaces/{namespace}/agents/{name}").unwrap();
    let patch = agents.value.as_ref().unwrap().patch.as_ref().unwrap();
    assert_eq!(patch.operation_id, "patchA2aDevV1alpha1NamespacedAgent");
    assert_eq!(patch.consumes.len(), 3);
}

#[test]
fn v3_documents_hold_every_schema_their_paths_reach() {
    let doc = v3_document("a2a.dev", "v1alpha1").unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let agent = &schemas["dev.a2a.v1alpha1.Agent"];
    assert_eq!(
        agent["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"));
    assert!(!schemas.contains_key("io.k8s.api.core.v1.ConfigMap"), "only what this group reaches");
    let text = serde_json::to_string(&doc).unwrap();
    assert!(!text.contains("#/definitions/"), "v2 references left in v3");
    let patch = &doc["paths"]["/apis/a2a.dev/v1alpha1/namespaces/{namespace}/agents/{name}"]["patch"];
    assert!(patch["requestBody"]["content"]["application/apply-patch+yaml"].is_object());
    assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none());
    assert_eq!(patch["parameters"][1]["name"], "fieldManager");
    let core = v3_document("", "v1").unwrap();
    let cm_patch = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert!(cm_patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
    assert!(v3_document("a2a.dev", "v9").is_none());
}

#[test]
fn accept_picks_the_first_served_media_type() {
    let with = |accept: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        v2_media_type(&h)
    };
    assert_eq!(with(PROTOBUF_V2), Some(true));
    assert_eq!(with("application/com.github.proto-openapi.spec.v2.v1.0+protobuf, application/json"), Some(true));
    assert_eq!(with("application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"), Some(false));
    assert_eq!(with("*/*"), Some(false));
    assert_eq!(with("text/html"), None);
    assert_eq!(v2_media_type(&HeaderMap::new()), Some(false));
}

#[tokio::test]
async fn a_v3_url_with_a_stale_hash_is_sent_on_to_the_current_document() {
    let path = "apis/a2a.dev/v1alpha1";
    let index: Value = serde_json::from_slice(&DOCUMENTS.v3_index.bytes).unwrap();
    let url = index["paths"][path]["serverRelativeURL"].as_str().unwrap().to_owned();
    let hash = url.split("hash=").nth(1).unwrap().to_owned();
    let headers = HeaderMap::new();
    let current = serve_v3(path, &headers, &HashQuery { hash: Some(hash) });
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()[header::CACHE_CONTROL], "public, immutable");
    assert!(current.headers()[header::EXPIRES].to_str().unwrap().ends_with(" GMT"));
    let stale = serve_v3(path, &headers, &HashQuery { hash: Some("0BAD".into()) });
    assert_eq!(stale.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(stale.headers()[header::LOCATION], url.as_str());
    let plain = serve_v3(path, &headers, &HashQuery { hash: None });
    assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-cache, private");
    let mut again = HeaderMap::new();
    again.insert(header::IF_NONE_MATCH, plain.headers()[header::ETAG].clone());
    assert_eq!(serve_v3(path, &again, &HashQuery { hash: None }).status(), StatusCode::NOT_MODIFIED);
}
