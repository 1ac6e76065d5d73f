//! `a2a diff -f PATH`: what `apply` would change, as a unified diff of YAML per object.

use clap::Args;

use super::FileArgs;
use super::apply::load;
use kube::api::{Patch, PatchParams};

use super::client::{self, ConnectArgs, Error, Result, dynamic_api};
use crate::api::manifest::ConfigKind;

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub files: FileArgs,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// RFC 7386 merge of `patch` into `target` (what applying the manifest's fields does).
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The part of an object a manifest can change: labels, annotations, spec.
fn comparable(v: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::json!({"metadata": {}, "spec": v.get("spec").cloned().unwrap_or_default()});
    for key in ["labels", "annotations"] {
        if let Some(m) = v.get("metadata").and_then(|m| m.get(key)) {
            out["metadata"][key] = m.clone();
        }
    }
    out
}

/// The diff text; empty when nothing would change.
pub async fn run(args: &DiffArgs) -> Result<String> {
    let manifests = load(&args.files)?;
    let conn = args.connect.connect().await?;
    let default_ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let mut out = String::new();
    for doc in &manifests.config {
        let ns = doc.namespace.clone().unwrap_or(default_ns.clone());
        let api = client::config_api(&conn.client, doc.kind, &ns);
        let live = api.get_opt(&doc.name).await.map_err(|e| Error::from_kube(e, &conn.url))?;
        // What applying would store, as the server computes it (stringData folded into data).
        let mut body = doc.raw.clone();
        if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert("namespace".into(), ns.clone().into());
        }
        let mut params = PatchParams::apply(super::apply::FIELD_MANAGER);
        params.dry_run = true;
        let applied =
            api.patch(&doc.name, &params, &Patch::Apply(&body)).await.map_err(|e| Error::from_kube(e, &conn.url))?;
        let to_value = |o: &kube::api::DynamicObject| serde_json::to_value(o).unwrap_or_default();
        let (mut before, mut after) =
            (live.as_ref().map(|l| config_view(&to_value(l))), config_view(&to_value(&applied)));
        if doc.kind == ConfigKind::Secret {
            mask_secret(before.as_mut(), &mut after);
        }
        let old = before.as_ref().map(|b| serde_yaml_ng::to_string(b).unwrap_or_default()).unwrap_or_default();
        let new = serde_yaml_ng::to_string(&after).unwrap_or_default();
        push_diff(&mut out, &doc.reference(), &old, &new);
    }
    for doc in &manifests.docs {
        let kind = doc.object.kind();
        let ns = kind.namespaced().then(|| doc.object.metadata().namespace.clone().unwrap_or(default_ns.clone()));
        let api = dynamic_api(&conn.client, kind, ns.as_deref());
        let live = api.get_opt(doc.object.name()).await.map_err(|e| Error::from_kube(e, &conn.url))?;
        let before = live.map(|l| comparable(&serde_json::to_value(l).unwrap_or_default()));
        let mut after = before.clone().unwrap_or_else(|| serde_json::json!({"metadata": {}}));
        merge(&mut after, &comparable(&doc.raw));
        let old = before.as_ref().map(|b| serde_yaml_ng::to_string(b).unwrap_or_default()).unwrap_or_default();
        let new = serde_yaml_ng::to_string(&after).unwrap_or_default();
        push_diff(&mut out, &doc.reference(), &old, &new);
    }
    Ok(out)
}

/// Appends the unified diff of one object's YAML, when it changes.
fn push_diff(out: &mut String, label: &str, old: &str, new: &str) {
    if old == new {
        return;
    }
    let diff = similar::TextDiff::from_lines(old, new);
    out.push_str(
        &diff
            .unified_diff()
            .context_radius(3)
            .header(&format!("live/{label}"), &format!("applied/{label}"))
            .to_string(),
    );
}

/// The part of a Secret or ConfigMap a manifest can change.
fn config_view(v: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::json!({"metadata": {}});
    for key in ["labels", "annotations"] {
        if let Some(m) = v.get("metadata").and_then(|m| m.get(key)) {
            out["metadata"][key] = m.clone();
        }
    }
    for key in ["type", "immutable", "data", "binaryData"] {
        if let Some(x) = v.get(key) {
            out[key] = x.clone();
        }
    }
    out
}

/// Replaces a Secret's values by `***`, as `kubectl diff` does: a value that changes reads
/// `*** (before)` on the live side and `*** (after)` on the applied side, so the diff says
/// which keys change and never what they hold.
fn mask_secret(before: Option<&mut serde_json::Value>, after: &mut serde_json::Value) {
    let old = before.as_ref().and_then(|b| b.get("data")).and_then(|d| d.as_object()).cloned().unwrap_or_default();
    let new = after.get("data").and_then(|d| d.as_object()).cloned().unwrap_or_default();
    let mask = |key: &str,
                mine: &serde_json::Map<String, serde_json::Value>,
                other: &serde_json::Map<String, serde_json::Value>,
                side: &str| {
        match other.get(key) {
            Some(v) if Some(v) != mine.get(key) => format!("*** ({side})"),
            _ => "***".to_owned(),
        }
    };
    if let Some(b) = before.and_then(|b| b.get_mut("data")).and_then(|d| d.as_object_mut()) {
        for (k, v) in b.iter_mut() {
            *v = mask(k, &old, &new, "before").into();
        }
    }
    if let Some(a) = after.get_mut("data").and_then(|d| d.as_object_mut()) {
        for (k, v) in a.iter_mut() {
            *v = mask(k, &new, &old, "after").into();
        }
    }
}
