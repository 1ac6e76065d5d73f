//! `a2a diff -f PATH`: what `apply` would change, as a unified diff of YAML per object.

use clap::Args;

use super::FileArgs;
use super::apply::load;
use super::client::{ConnectArgs, Error, Result, dynamic_api};

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
    let docs = load(&args.files)?;
    let conn = args.connect.connect().await?;
    let default_ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let mut out = String::new();
    for doc in &docs {
        let kind = doc.object.kind();
        let ns = kind.namespaced().then(|| doc.object.metadata().namespace.clone().unwrap_or(default_ns.clone()));
        let api = dynamic_api(&conn.client, kind, ns.as_deref());
        let live = api.get_opt(doc.object.name()).await.map_err(|e| Error::from_kube(e, &conn.url))?;
        let before = live.map(|l| comparable(&serde_json::to_value(l).unwrap_or_default()));
        let mut after = before.clone().unwrap_or_else(|| serde_json::json!({"metadata": {}}));
        merge(&mut after, &comparable(&doc.raw));
        let old = before.as_ref().map(|b| serde_yaml_ng::to_string(b).unwrap_or_default()).unwrap_or_default();
        let new = serde_yaml_ng::to_string(&after).unwrap_or_default();
        if old == new {
            continue;
        }
        let label = doc.reference();
        let diff = similar::TextDiff::from_lines(&old, &new);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("live/{label}"), &format!("applied/{label}"))
                .to_string(),
        );
    }
    Ok(out)
}
