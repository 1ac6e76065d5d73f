//! Adding and removing one finalizer with JSON patches guarded by a `test` of what was seen
//! (as kube-runtime's `finalizer` helper does), so a concurrent writer's finalizers are never
//! lost. Our own helper rather than kube-runtime's because the operator puts a finalizer only
//! on objects whose deletion needs work (budgeted Agents; Workflows), and must be able to
//! take it off again when that stops being true.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Whether `obj` carries `finalizer`.
pub fn has<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta().finalizers.iter().flatten().any(|f| f == finalizer)
}

fn json_patch(ops: serde_json::Value) -> Result<Patch<()>, kube::Error> {
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    Ok(Patch::Json(patch))
}

/// Adds `finalizer` to `obj` unless it is there.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if has(obj, finalizer) {
        return Ok(());
    }
    let ops = match &obj.meta().finalizers {
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
        Some(current) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]),
    };
    api.patch(&obj.name_any(), &PatchParams::default(), &json_patch(ops)?).await?;
    Ok(())
}

/// Removes `finalizer` at the index it was seen at (tested first); an object already gone
/// is fine.
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let Some(at) = obj.meta().finalizers.iter().flatten().position(|f| f == finalizer) else { return Ok(()) };
    let path = format!("/metadata/finalizers/{at}");
    let ops = serde_json::json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]);
    match api.patch(&obj.name_any(), &PatchParams::default(), &json_patch(ops)?).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
