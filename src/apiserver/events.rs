//! Events: one store, two versions, as the kube-apiserver keeps them.
//!
//! Core `v1` Events (`/api/v1/.../events`, what `kubectl describe` and `kubectl get events`
//! read) and `events.k8s.io/v1` Events (what kube-runtime's Recorder writes) are one resource
//! served in two shapes. Every Event is stored once, in the core shape, under the core
//! storage key; the `events.k8s.io/v1` view converts on every read, write, list, watch, patch
//! and field selector, field for field as Kubernetes converts them:
//!
//! | core `v1`            | `events.k8s.io/v1`          |
//! |----------------------|-----------------------------|
//! | `involvedObject`     | `regarding`                 |
//! | `message`            | `note`                      |
//! | `source`             | `deprecatedSource`          |
//! | `firstTimestamp`     | `deprecatedFirstTimestamp`  |
//! | `lastTimestamp`      | `deprecatedLastTimestamp`   |
//! | `count`              | `deprecatedCount`           |
//! | `reportingComponent` | `reportingController`       |
//!
//! `metadata` (name, uid, resourceVersion...), `eventTime`, `series`, `action`, `reason`,
//! `related`, `reportingInstance` and `type` are the same in both.
//!
//! Earlier versions of a2a kept `events.k8s.io/v1` Events under their own storage key; at
//! start [`migrate`] moves them into the one store (converted), so none is lost.

use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::store::{self, ObjectKey, Precondition, Store, Write};

/// The storage key prefix Events are kept under (the core resource's).
pub const STORAGE: &str = "/events";

/// Where earlier versions kept `events.k8s.io/v1` Events.
const OLD_STORAGE: &str = "events.k8s.io/events";

pub const V1_API_VERSION: &str = "events.k8s.io/v1";

/// (core field, events.k8s.io/v1 field) for every top-level field named differently.
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Whether `res` is the `events.k8s.io/v1` view of the core Events.
pub fn is_view(res: &Resource) -> bool {
    res.group == "events.k8s.io" && res.plural == "events"
}

fn rename(object: Value, api_version: &str, from_core: bool) -> Value {
    let Value::Object(map) = object else { return object };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let renamed = RENAMED
            .iter()
            .find(|(core, v1)| if from_core { k == *core } else { k == *v1 })
            .map(|(core, v1)| if from_core { *v1 } else { *core });
        match (k.as_str(), renamed) {
            ("apiVersion", _) => {
                out.insert(k, json!(api_version));
            }
            // Zero values are left out, as Go's encoder leaves the converted struct's out.
            (_, Some(_)) if is_zero(&v) => {}
            (_, Some(name)) => {
                out.insert(name.to_string(), v);
            }
            (_, None) => {
                out.insert(k, v);
            }
        }
    }
    out.entry("apiVersion").or_insert_with(|| json!(api_version));
    Value::Object(out)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_zero),
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// A core `v1` Event as `events.k8s.io/v1` shows it; one already in that shape is returned
/// as it is.
pub fn to_v1(object: Value) -> Value {
    if object.get("apiVersion").and_then(Value::as_str) == Some(V1_API_VERSION) {
        return object;
    }
    let mut v1 = rename(object, V1_API_VERSION, true);
    // `eventTime` is not optional in events.k8s.io/v1: the kube-apiserver writes a core Event
    // without one as `"eventTime": null` (which the Python client refuses to read, there as
    // here).
    if let Some(map) = v1.as_object_mut() {
        map.entry("eventTime").or_insert(Value::Null);
    }
    v1
}

/// An `events.k8s.io/v1` Event in the core `v1` shape it is stored in; one already in that
/// shape is returned as it is.
pub fn to_core(object: Value) -> Value {
    if object.get("apiVersion").and_then(Value::as_str) != Some(V1_API_VERSION) {
        return object;
    }
    rename(object, "v1", false)
}

/// The core field path a field selector of the `events.k8s.io/v1` view names
/// (`regarding.name` → `involvedObject.name`, `reportingController` → `reportingComponent`).
pub fn core_field(path: &str) -> String {
    let (head, rest) = path.split_once('.').map_or((path, None), |(h, r)| (h, Some(r)));
    let head = RENAMED.iter().find(|(_, v1)| *v1 == head).map_or(head, |(core, _)| core);
    match rest {
        Some(rest) => format!("{head}.{rest}"),
        None => head.to_string(),
    }
}

/// Moves Events that earlier versions kept under their own `events.k8s.io` key into the one
/// store, converted to the core shape. An Event whose name is already taken in its namespace
/// by a core Event keeps the core one (the older copy is dropped, with a warning).
pub async fn migrate(store: &Store) -> store::Result<usize> {
    let (items, _) = store.list(OLD_STORAGE, None, None, None)?;
    let mut moved = 0;
    for item in items {
        let object = match item.value() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(object = %item.key, error = %e, "an events.k8s.io Event is unreadable; left where it is");
                continue;
            }
        };
        let mut object = to_core(object);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let key = ObjectKey::new(STORAGE, item.key.namespace.clone(), item.key.name.clone());
        match store.write(Write::Put { key, object, precondition: Precondition::Absent }).await {
            Ok(_) => moved += 1,
            Err(store::Error::AlreadyExists) => {
                tracing::warn!(object = %item.key, "a core Event has the same name; the events.k8s.io copy is dropped");
            }
            Err(e) => return Err(e),
        }
        store
            .write(Write::Delete {
                key: item.key.clone(),
                precondition: Precondition::ResourceVersion(item.resource_version),
            })
            .await?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_event() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "echo.1", "namespace": "default", "uid": "u-1", "resourceVersion": "7"},
            "involvedObject": {"kind": "Agent", "name": "echo", "namespace": "default", "apiVersion": "a2a.dev/v1alpha1"},
            "reason": "Started", "message": "started the agent", "type": "Normal",
            "source": {"component": "a2a-node", "host": "h"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z", "count": 3,
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "action": "Start", "reportingComponent": "a2a.dev/node", "reportingInstance": "node-1",
            "related": {"kind": "Workflow", "name": "wf"},
        })
    }

    #[test]
    fn a_core_event_reads_as_events_v1_and_converts_back_unchanged() {
        let v1 = to_v1(core_event());
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "echo");
        assert_eq!(v1["note"], "started the agent");
        assert_eq!(v1["deprecatedSource"]["component"], "a2a-node");
        assert_eq!(v1["deprecatedFirstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(v1["deprecatedLastTimestamp"], "2026-01-01T00:01:00Z");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["reportingController"], "a2a.dev/node");
        for same in ["metadata", "eventTime", "series", "action", "reason", "related", "reportingInstance", "type"] {
            assert_eq!(v1[same], core_event()[same], "{same}");
        }
        for gone in ["involvedObject", "message", "source", "count", "reportingComponent"] {
            assert!(v1.get(gone).is_none(), "{gone} is not an events.k8s.io/v1 field");
        }
        assert_eq!(to_core(v1), core_event());
    }

    #[test]
    fn an_events_v1_event_is_stored_as_core_and_reads_back_unchanged() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "echo.2", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "a2a.dev/node",
            "reportingInstance": "node-1", "action": "Start", "reason": "Started", "type": "Normal",
            "regarding": {"kind": "Agent", "name": "echo"}, "note": "hello",
        });
        let core = to_core(v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "echo");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "a2a.dev/node");
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(to_v1(core), v1);
    }

    #[test]
    fn zero_deprecated_fields_are_left_out_as_kubernetes_leaves_them_out() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "a"},
            "source": {}, "count": 0, "firstTimestamp": null, "message": ""});
        let v1 = to_v1(core);
        for f in ["deprecatedSource", "deprecatedCount", "deprecatedFirstTimestamp", "note"] {
            assert!(v1.get(f).is_none(), "{f} in {v1}");
        }
        assert_eq!(v1["eventTime"], Value::Null, "written as the kube-apiserver writes a zero MicroTime");
    }

    /// Events an earlier version stored under the events.k8s.io key are moved into the one
    /// store at start, converted; a name a core Event already has keeps the core one.
    #[tokio::test]
    async fn events_stored_apart_by_earlier_versions_are_moved_into_the_one_store() {
        use std::sync::Arc;

        use crate::apiserver::metrics::Metrics;
        use crate::apiserver::store::StoreConfig;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path, StoreConfig::default(), Arc::new(Metrics::default())).unwrap();
        let old = |name: &str, note: &str| {
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "a2a.dev/node",
                "reportingInstance": "n", "action": "Start", "reason": "Started", "type": "Normal",
                "regarding": {"kind": "Agent", "name": "echo"}, "note": note})
        };
        for (name, note) in [("moved", "kept"), ("taken", "older copy")] {
            let key = ObjectKey::new(OLD_STORAGE, "default", name);
            store.write(Write::Put { key, object: old(name, note), precondition: Precondition::Absent }).await.unwrap();
        }
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "taken", "namespace": "default"},
            "involvedObject": {"kind": "Agent", "name": "echo"}, "message": "core copy"});
        let key = ObjectKey::new(STORAGE, "default", "taken");
        store.write(Write::Put { key, object: core, precondition: Precondition::Absent }).await.unwrap();

        assert_eq!(migrate(&store).await.unwrap(), 1);
        assert!(store.list(OLD_STORAGE, None, None, None).unwrap().0.is_empty());
        let moved = store.get(&ObjectKey::new(STORAGE, "default", "moved")).unwrap().value().unwrap();
        assert_eq!(moved["apiVersion"], "v1");
        assert_eq!(moved["message"], "kept");
        assert_eq!(moved["involvedObject"]["name"], "echo");
        assert_eq!(moved["metadata"]["uid"], "uid-moved");
        let taken = store.get(&ObjectKey::new(STORAGE, "default", "taken")).unwrap().value().unwrap();
        assert_eq!(taken["message"], "core copy");
        // A second start finds nothing left to move.
        assert_eq!(migrate(&store).await.unwrap(), 0);
    }

    #[test]
    fn field_selectors_of_the_v1_view_name_the_core_fields() {
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
        assert_eq!(core_field("regarding.fieldPath"), "involvedObject.fieldPath");
        assert_eq!(core_field("reportingController"), "reportingComponent");
        assert_eq!(core_field("type"), "type");
        assert_eq!(core_field("reason"), "reason");
        assert_eq!(core_field("metadata.name"), "metadata.name");
    }
}
