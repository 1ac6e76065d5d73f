//! Strategic merge patch (`application/strategic-merge-patch+json`) of the built-in kinds, as
//! `kubectl patch` (its default type), `kubectl edit`, `label`, `annotate` and client-side
//! `apply` send it.
//!
//! A strategic merge patch is a JSON merge patch whose lists are merged where the type says
//! so. What the types say is read from the published Kubernetes OpenAPI definitions
//! (`openapi/kube-definitions.json`): a field's `x-kubernetes-patch-strategy` (`merge`,
//! `replace`, `retainKeys`) and `x-kubernetes-patch-merge-key`, found by walking `$ref`s from
//! the kind's definition. For the kinds served that is `metadata.ownerReferences` (merged by
//! `uid`), `metadata.finalizers` (a merged set) and a Namespace's `status.conditions` (merged
//! by `type`); every other list is replaced, every map merged, and `null` removes a key.
//!
//! The directives are those of Kubernetes' `strategicpatch` package:
//! - `$patch: replace` in a map replaces the map by the rest of the patch map; as a list
//!   element, it replaces the whole list by the other elements;
//! - `$patch: delete` in a map empties it; as an element of a merged list of maps, it removes
//!   the element with the same merge key;
//! - `$patch: merge` is refused, as Kubernetes refuses it (merging is the default);
//! - `$retainKeys: [...]` removes the keys of the map not listed;
//! - `$deleteFromPrimitiveList/<field>: [...]` removes those values from a list of scalars;
//! - `$setElementOrder/<field>: [...]` orders a merged list.
//!
//! A merged list is ordered as Kubernetes orders it: the elements the patch names (in the
//! order of `$setElementOrder`, else of the patch) and the elements only the object had (in
//! their order) are interleaved, an element of the object going first only when both are
//! in the object and it came first there; so a new element comes before the ones the patch
//! did not name, unless an order says otherwise (kubectl's patches carry one).
//!
//! A2a kinds are custom resources, for which the kube-apiserver does not serve strategic merge
//! patch (415); the caller refuses them before this module is reached.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::resources::Resource;

/// Why a patch cannot be applied (answered as 422 Invalid, as the kube-apiserver does).
#[derive(Debug, PartialEq)]
pub struct PatchError(pub String);

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(msg: impl Into<String>) -> PatchError {
    PatchError(msg.into())
}

const DEFINITIONS: &str = include_str!("openapi/kube-definitions.json");

fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        // The file is committed and checked by the tests: it parses.
        serde_json::from_str::<Value>(DEFINITIONS)
            .ok()
            .and_then(|mut v| v.get_mut("definitions").map(Value::take))
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    })
}

/// The definition of a served built-in kind (`io.k8s.api.core.v1.ConfigMap`...).
pub fn kind_schema(res: &Resource) -> Option<&'static Value> {
    let package = match res.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    definitions().get(&format!("io.k8s.api.{package}.{}.{}", res.version, res.kind))
}

/// A schema with its `$ref` followed (a reference to a definition not in the file, such as
/// `Time`, is a leaf without patch metadata).
fn resolve(s: &'static Value) -> Option<&'static Value> {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => definitions().get(r.trim_start_matches("#/definitions/")),
        None => Some(s),
    }
}

/// What the schema says of one field of a map.
#[derive(Default)]
struct FieldMeta {
    /// The schema of the field's value (of its elements, for a list).
    schema: Option<&'static Value>,
    merge: bool,
    replace: bool,
    merge_key: Option<&'static str>,
}

fn field_meta(parent: Option<&'static Value>, key: &str) -> FieldMeta {
    let Some(parent) = parent else { return FieldMeta::default() };
    let prop = parent
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| parent.get("additionalProperties").filter(|a| a.is_object()));
    let Some(prop) = prop else { return FieldMeta::default() };
    let strategy = prop.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or_default();
    let schema = if prop.get("type").and_then(Value::as_str) == Some("array") {
        prop.get("items").and_then(resolve)
    } else {
        resolve(prop)
    };
    FieldMeta {
        schema,
        merge: strategy.split(',').any(|s| s == "merge"),
        replace: strategy.split(',').any(|s| s == "replace"),
        merge_key: prop.get("x-kubernetes-patch-merge-key").and_then(Value::as_str),
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to an object of kind `schema` (see [`kind_schema`]).
pub fn apply(original: &mut Value, patch: Value, schema: Option<&'static Value>) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(err("the patch must be a JSON object"));
    };
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    if let Value::Object(o) = original {
        merge_map(o, patch, schema)?;
    }
    Ok(())
}

fn merge_map(
    original: &mut Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<&'static Value>,
) -> Result<(), PatchError> {
    match patch.remove(DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            original.clear();
            return merge_map(original, patch, schema);
        }
        Some(Value::String(d)) if d == "delete" => {
            original.clear();
            return Ok(());
        }
        Some(other) => return Err(err(format!("unknown patch type: {other} in map"))),
    }
    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(err(format!("{RETAIN_KEYS} must be a list of field names, not {retain}")));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        if let Some(k) = patch.keys().find(|k| !k.starts_with('$') && !keys.contains(&k.as_str())) {
            return Err(err(format!("the field {k:?} of the patch is not listed in its {RETAIN_KEYS}")));
        }
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for key in patch.keys().filter(|k| k.starts_with(SET_ORDER)) {
        match &patch[key] {
            Value::Array(order) => orders.push((key[SET_ORDER.len()..].to_string(), order.clone())),
            other => return Err(err(format!("{key} must be a list, not {other}"))),
        }
    }
    let mut ordered = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM) {
            let Value::Array(values) = value else {
                return Err(err(format!("{key} must be a list, not {value}")));
            };
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !values.contains(v));
            }
            continue;
        }
        if key.starts_with(SET_ORDER) {
            continue; // read above
        }
        if key.starts_with('$') {
            return Err(err(format!("unknown strategic merge patch directive {key:?}")));
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let meta = field_meta(schema, &key);
        let order = orders.iter().find(|(f, _)| *f == key).map(|(_, o)| o.as_slice());
        if order.is_some() {
            ordered.push(key.clone());
        }
        let slot = original.entry(key).or_insert(Value::Null);
        match value {
            Value::Object(p) if !meta.replace => {
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(o) = slot {
                    merge_map(o, p, meta.schema)?;
                }
            }
            Value::Array(p) if meta.merge => {
                let current = match slot.take() {
                    Value::Array(a) => a,
                    _ => Vec::new(),
                };
                *slot = Value::Array(merge_list(current, p, &meta, order)?);
            }
            Value::Array(p) => *slot = Value::Array(replace_list(p)?),
            v => *slot = v,
        }
    }
    // An order for a list the patch did not otherwise change.
    for (field, order) in orders.iter().filter(|(f, _)| !ordered.contains(f)) {
        let meta = field_meta(schema, field);
        if let Some(Value::Array(list)) = original.get_mut(field) {
            let current = std::mem::take(list);
            *list = normalize_order(current.clone(), order, &current, meta.merge_key);
        }
    }
    Ok(())
}

/// A list the patch replaces: its elements, with a `$patch: replace` marker dropped.
fn replace_list(patch: Vec<Value>) -> Result<Vec<Value>, PatchError> {
    Ok(patch.into_iter().filter(|e| !is_directive(e, "replace")).collect())
}

fn is_directive(e: &Value, which: &str) -> bool {
    e.get(DIRECTIVE).and_then(Value::as_str) == Some(which)
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: &FieldMeta,
    order: Option<&[Value]>,
) -> Result<Vec<Value>, PatchError> {
    if patch.iter().any(|e| is_directive(e, "replace")) {
        let mut out = Vec::new();
        for e in patch.into_iter().filter(|e| !is_directive(e, "replace")) {
            out.push(match e {
                Value::Object(m) => {
                    let mut fresh = Map::new();
                    merge_map(&mut fresh, m, meta.schema)?;
                    Value::Object(fresh)
                }
                v => v,
            });
        }
        return Ok(out);
    }
    let server_order = original.clone();
    let mut merged = original;
    let Some(key) = meta.merge_key else {
        // A set of scalars: the union.
        let patch_order = patch.clone();
        for e in patch {
            if e.is_object() {
                return Err(err("a list without a merge key takes no maps in a strategic merge patch"));
            }
            if !merged.contains(&e) {
                merged.push(e);
            }
        }
        return Ok(normalize_order(merged, order.unwrap_or(&patch_order), &server_order, None));
    };
    let mut patch_order = Vec::new();
    let mut original = merged;
    for e in patch {
        let Value::Object(mut m) = e else {
            return Err(err(format!("the elements of a list merged by {key:?} must be maps, not {e}")));
        };
        let Some(id) = m.get(key).cloned() else {
            return Err(err(format!("map: {} does not contain declared merge key: {key}", Value::Object(m))));
        };
        let at = original.iter().position(|o| o.get(key) == Some(&id));
        match m.get(DIRECTIVE).and_then(Value::as_str) {
            Some("delete") => {
                original.retain(|o| o.get(key) != Some(&id));
                continue;
            }
            None => {}
            Some("merge") => return Err(err("merging lists cannot yet be specified in the patch")),
            Some(other) => return Err(err(format!("unknown patch type: {other} in a list element"))),
        }
        m.remove(DIRECTIVE);
        patch_order.push(json!({key: id}));
        match at {
            Some(i) => {
                if !original[i].is_object() {
                    original[i] = Value::Object(Map::new());
                }
                if let Value::Object(o) = &mut original[i] {
                    merge_map(o, m, meta.schema)?;
                }
            }
            None => {
                let mut fresh = Map::new();
                merge_map(&mut fresh, m, meta.schema)?;
                original.push(Value::Object(fresh));
            }
        }
    }
    Ok(normalize_order(original, order.unwrap_or(&patch_order), &server_order, Some(key)))
}

/// Orders a merged list as Kubernetes' `normalizeElementOrder` does: the elements named by
/// `patch_order` (sorted by it) and the others (sorted by `server_order`, the list before the
/// patch) are interleaved, an element of the others going first only when both are in
/// `server_order` and it comes first there. Elements are compared by merge key, or value.
fn normalize_order(merged: Vec<Value>, patch_order: &[Value], server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let index = |list: &[Value], v: &Value| -> Option<usize> {
        let want = id(v);
        list.iter().position(|x| id(x) == want)
    };
    let (mut named, mut others): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| index(patch_order, v).is_some());
    named.sort_by_key(|v| index(patch_order, v));
    // Elements not in the old list (none, by construction) would sort first, as Go's -1.
    others.sort_by_key(|v| index(server_order, v).map_or(-1, |i| i as i64));
    let mut out = Vec::with_capacity(named.len() + others.len());
    let (mut left, mut right) = (others.into_iter().peekable(), named.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index(server_order, l), index(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(res: &str, original: Value, patch: Value) -> Result<Value, PatchError> {
        let r = Resource::find("", "v1", res).unwrap();
        let mut doc = original;
        apply(&mut doc, patch, kind_schema(r))?;
        Ok(doc)
    }

    #[test]
    fn the_served_kinds_have_their_definitions() {
        for r in super::super::resources::RESOURCES.iter().filter(|r| r.a2a.is_none()) {
            assert!(kind_schema(r).is_some(), "{}", r.qualified());
        }
    }

    #[test]
    fn maps_merge_nulls_delete_and_lists_without_a_strategy_are_replaced() {
        let cm = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"a": "1", "b": "2"}});
        let got = patched("configmaps", cm, json!({"data": {"a": null, "c": "3"}, "metadata": {"labels": {"b": "9"}}}))
            .unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "9"}}, "data": {"b": "2", "c": "3"}})
        );
        let ns = json!({"spec": {"finalizers": ["kubernetes", "x"]}});
        assert_eq!(
            patched("namespaces", ns, json!({"spec": {"finalizers": ["y"]}})).unwrap(),
            json!({"spec": {"finalizers": ["y"]}})
        );
    }

    #[test]
    fn owner_references_merge_by_uid_and_finalizers_as_a_set() {
        let cm = json!({"metadata": {
            "ownerReferences": [{"uid": "1", "name": "a", "kind": "Agent"}, {"uid": "2", "name": "b", "kind": "Agent"}],
            "finalizers": ["f1", "f2"],
        }});
        let got = patched(
            "configmaps",
            cm,
            json!({"metadata": {
                "ownerReferences": [{"uid": "2", "name": "b2"}, {"uid": "3", "name": "c", "kind": "Workflow"},
                                    {"uid": "1", "$patch": "delete"}],
                "finalizers": ["f2", "f3"],
            }}),
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"metadata": {
                "ownerReferences": [{"uid": "2", "name": "b2", "kind": "Agent"}, {"uid": "3", "name": "c", "kind": "Workflow"}],
                "finalizers": ["f1", "f2", "f3"],
            }})
        );
    }

    #[test]
    fn namespace_conditions_merge_by_type() {
        let ns = json!({"status": {"phase": "Active", "conditions": [{"type": "A", "status": "True"}]}});
        let got = patched(
            "namespaces",
            ns,
            json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"status": {"phase": "Active", "conditions": [{"type": "A", "status": "False"}, {"type": "B", "status": "True"}]}})
        );
    }

    #[test]
    fn directives_replace_delete_retain_delete_from_and_order() {
        let cm =
            json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "1"}, "finalizers": ["f1", "f2", "f3"]}});
        // $patch: replace in a map.
        assert_eq!(
            patched("configmaps", cm.clone(), json!({"data": {"$patch": "replace", "c": "3"}})).unwrap()["data"],
            json!({"c": "3"})
        );
        // $patch: delete in a map.
        assert_eq!(
            patched("configmaps", cm.clone(), json!({"metadata": {"labels": {"$patch": "delete"}}})).unwrap()["metadata"]
                ["labels"],
            json!({})
        );
        // $retainKeys.
        assert_eq!(
            patched("configmaps", cm.clone(), json!({"data": {"$retainKeys": ["b", "c"], "c": "3"}})).unwrap()["data"],
            json!({"b": "2", "c": "3"})
        );
        assert!(patched("configmaps", cm.clone(), json!({"data": {"$retainKeys": ["b"], "c": "3"}})).is_err());
        // $deleteFromPrimitiveList.
        assert_eq!(
            patched("configmaps", cm.clone(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f2"]}}))
                .unwrap()["metadata"]["finalizers"],
            json!(["f1", "f3"])
        );
        // $setElementOrder.
        assert_eq!(
            patched(
                "configmaps",
                cm.clone(),
                json!({"metadata": {"$setElementOrder/finalizers": ["f3", "f4", "f1"], "finalizers": ["f4"]}})
            )
            .unwrap()["metadata"]["finalizers"],
            // f2, not named, goes first: it came before f3 in the object.
            json!(["f2", "f3", "f4", "f1"])
        );
        // $patch: replace as a list element.
        assert_eq!(
            patched("configmaps", cm.clone(), json!({"metadata": {"finalizers": [{"$patch": "replace"}, "only"]}}))
                .unwrap()["metadata"]["finalizers"],
            json!(["only"])
        );
        // Unknown directives are refused, and `merge` (the default) as Kubernetes refuses it.
        assert!(patched("configmaps", cm.clone(), json!({"data": {"$patch": "frobnicate"}})).is_err());
        assert!(patched("configmaps", cm.clone(), json!({"data": {"$patch": "merge"}})).is_err());
        let merge_element = json!({"metadata": {"ownerReferences": [{"uid": "1", "$patch": "merge"}]}});
        assert_eq!(
            patched("configmaps", cm.clone(), merge_element).unwrap_err().0,
            "merging lists cannot yet be specified in the patch"
        );
        assert!(patched("configmaps", cm, json!({"$frob": 1})).is_err());
    }

    #[test]
    fn new_elements_go_before_the_ones_the_patch_does_not_name() {
        let cm = json!({"metadata": {"finalizers": ["a", "b"], "ownerReferences": [{"uid": "1"}, {"uid": "2"}]}});
        let got = patched(
            "configmaps",
            cm.clone(),
            json!({"metadata": {"finalizers": ["c"], "ownerReferences": [{"uid": "3"}, {"uid": "2", "name": "x"}]}}),
        )
        .unwrap();
        assert_eq!(got["metadata"]["finalizers"], json!(["c", "a", "b"]));
        assert_eq!(got["metadata"]["ownerReferences"], json!([{"uid": "3"}, {"uid": "1"}, {"uid": "2", "name": "x"}]));
        // An order alone reorders.
        let got = patched("configmaps", cm, json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}})).unwrap();
        assert_eq!(got["metadata"]["finalizers"], json!(["b", "a"]));
    }

    #[test]
    fn merge_key_is_required_in_merged_lists_of_maps() {
        let e =
            patched("configmaps", json!({}), json!({"metadata": {"ownerReferences": [{"name": "a"}]}})).unwrap_err();
        assert!(e.0.contains("merge key"), "{e}");
    }
}
