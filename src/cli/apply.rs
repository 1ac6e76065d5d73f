//! `a2a apply -f PATH`: validate every document, then server-side apply each one.

use std::collections::BTreeSet;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

use super::client::{self, ConnectArgs, Error, Result, dynamic_api};
use super::{FileArgs, input};
use crate::api::Kind;
use crate::api::manifest::{ConfigDocument, Document};

/// The field manager a2a applies with.
pub const FIELD_MANAGER: &str = "a2a";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Validate locally and print what would be sent; contact nothing.
    Client,
    /// Send with dryRun=All: the server validates and answers, and stores nothing.
    Server,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Check without changing anything: `client` (local only) or `server`.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    /// Delete a2a objects matching --selector that these files no longer contain.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector for --prune (`app=x,tier!=db`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Namespace for documents that name none [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Take over fields another field manager owns.
    #[arg(long)]
    pub force_conflicts: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `agent/writer`.
    pub reference: String,
    /// `created`, `configured`, `unchanged`, `pruned`.
    pub outcome: &'static str,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.reference, self.outcome)
    }
}

/// Reads and validates everything first; nothing is sent unless every document is valid.
pub fn load(files: &FileArgs) -> Result<input::Manifests> {
    input::read_manifests(&files.files, files.recursive)
        .map_err(|errs| Error::Invalid(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

pub async fn run(args: &ApplyArgs) -> Result<Vec<Applied>> {
    let input::Manifests { docs, config } = load(&args.files)?;
    if args.dry_run == Some(DryRun::Client) {
        let references = config.iter().map(ConfigDocument::reference).chain(docs.iter().map(Document::reference));
        return Ok(references.map(|reference| Applied { reference, outcome: "validated (dry run)" }).collect());
    }
    let conn = args.connect.connect().await?;
    let default_ns = args.namespace.clone().unwrap_or_else(|| conn.namespace.clone());
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = args.force_conflicts;
    params.dry_run = args.dry_run == Some(DryRun::Server);
    // Budgets first, one after the other (a parent before its children), then agents, then
    // workflows (their agents exist when they start); the documents of one kind go
    // `IN_FLIGHT` at a time, so the server's group commit shares one fsync among them.
    // Results are printed in document order. The first error stops the apply: nothing more
    // is sent, the writes in flight finish, and what was applied is reported with the error.
    let mut results: Vec<(usize, Applied)> = Vec::new();
    // Secrets and ConfigMaps before everything, so the agents that reference them start.
    // Listed first, as they were sent.
    let mut configured = Vec::new();
    for doc in &config {
        match apply_config(&conn, &params, &default_ns, doc).await {
            Ok(applied) => configured.push(applied),
            Err(e) => {
                return Err(Error::Partial {
                    done: configured.iter().map(ToString::to_string).collect(),
                    source: Box::new(e),
                });
            }
        }
    }
    let mut kept: BTreeSet<(Kind, Option<String>, String)> = BTreeSet::new();
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut first_error = None;
    for (kind, in_flight) in [(Kind::ResourceBudget, 1), (Kind::Agent, IN_FLIGHT), (Kind::Workflow, IN_FLIGHT)] {
        let stage = docs.iter().enumerate().filter(|(_, d)| d.object.kind() == kind);
        let mut done = futures::stream::iter(stage.map(|(i, doc)| {
            let (conn, params, default_ns, failed) = (&conn, &params, &default_ns, &failed);
            async move {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                Some(apply_one(conn, params, default_ns, doc).await.map(|r| (i, r)))
            }
        }))
        .buffer_unordered(in_flight);
        while let Some(r) = done.next().await {
            match r {
                None => {}
                Some(Ok((i, (applied, key)))) => {
                    kept.insert(key);
                    results.push((i, applied));
                }
                Some(Err(e)) => {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut results: Vec<Applied> = configured.into_iter().chain(results.into_iter().map(|(_, a)| a)).collect();
    if let Some(source) = first_error {
        return Err(Error::Partial {
            done: results.iter().map(ToString::to_string).collect(),
            source: Box::new(source),
        });
    }
    if let (true, Some(selector)) = (args.prune, &args.selector) {
        results.extend(prune(&conn, selector, &kept, params.dry_run).await?);
    }
    Ok(results)
}

/// How many documents of one kind are applied at once.
const IN_FLIGHT: usize = 16;

/// Server-side applies one document; says whether it was created, configured or unchanged.
async fn apply_one(
    conn: &client::Connection,
    params: &PatchParams,
    default_ns: &str,
    doc: &Document,
) -> Result<(Applied, (Kind, Option<String>, String))> {
    let kind = doc.object.kind();
    let namespace =
        kind.namespaced().then(|| doc.object.metadata().namespace.clone().unwrap_or_else(|| default_ns.to_owned()));
    let api = dynamic_api(&conn.client, kind, namespace.as_deref());
    let name = doc.object.name().to_owned();
    let before = api.get_opt(&name).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    let mut body = doc.raw.clone();
    if let (Some(ns), Some(meta)) = (&namespace, body.get_mut("metadata").and_then(|m| m.as_object_mut())) {
        meta.insert("namespace".into(), ns.clone().into());
    }
    let after = api.patch(&name, params, &Patch::Apply(&body)).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    // Judged on what apply can change (spec → generation, labels, annotations), not on the
    // resourceVersion, which controllers' status writes move all the time.
    let same = |b: &kube::api::DynamicObject| {
        b.metadata.generation == after.metadata.generation
            && b.metadata.labels == after.metadata.labels
            && b.metadata.annotations == after.metadata.annotations
            && b.data.get("spec") == after.data.get("spec")
    };
    let outcome = match before {
        None => "created",
        Some(b) if same(&b) => "unchanged",
        Some(_) => "configured",
    };
    let outcome = match (params.dry_run, outcome) {
        (true, "created") => "created (server dry run)",
        (true, "configured") => "configured (server dry run)",
        (true, _) => "unchanged (server dry run)",
        (false, o) => o,
    };
    Ok((Applied { reference: doc.reference(), outcome }, (kind, namespace, name)))
}

/// Server-side applies one Secret or ConfigMap. Whether it changed is judged on what it
/// holds, its type, labels and annotations; nothing of what it holds is printed.
async fn apply_config(
    conn: &client::Connection,
    params: &PatchParams,
    default_ns: &str,
    doc: &ConfigDocument,
) -> Result<Applied> {
    let namespace = doc.namespace.clone().unwrap_or_else(|| default_ns.to_owned());
    let api = client::config_api(&conn.client, doc.kind, &namespace);
    let before = api.get_opt(&doc.name).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    let mut body = doc.raw.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("namespace".into(), namespace.into());
    }
    let after = api.patch(&doc.name, params, &Patch::Apply(&body)).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    let same = |b: &kube::api::DynamicObject| {
        b.metadata.labels == after.metadata.labels
            && b.metadata.annotations == after.metadata.annotations
            && ["data", "binaryData", "type", "immutable"].iter().all(|k| b.data.get(k) == after.data.get(k))
    };
    let outcome = match (params.dry_run, before) {
        (false, None) => "created",
        (false, Some(b)) if same(&b) => "unchanged",
        (false, Some(_)) => "configured",
        (true, None) => "created (server dry run)",
        (true, Some(b)) if same(&b) => "unchanged (server dry run)",
        (true, Some(_)) => "configured (server dry run)",
    };
    Ok(Applied { reference: doc.reference(), outcome })
}

/// Deletes objects that match `selector` in the namespaces applied to but were not applied.
async fn prune(
    conn: &client::Connection,
    selector: &str,
    kept: &BTreeSet<(Kind, Option<String>, String)>,
    dry_run: bool,
) -> Result<Vec<Applied>> {
    let mut pruned = Vec::new();
    let namespaces: BTreeSet<Option<String>> = kept.iter().map(|(_, ns, _)| ns.clone()).collect();
    for kind in Kind::ALL {
        for ns in namespaces.iter().filter(|ns| ns.is_some() == kind.namespaced()) {
            let api = dynamic_api(&conn.client, kind, ns.as_deref());
            let list =
                api.list(&ListParams::default().labels(selector)).await.map_err(|e| Error::from_kube(e, &conn.url))?;
            for obj in list.items {
                let name = obj.metadata.name.clone().unwrap_or_default();
                if kept.contains(&(kind, ns.clone(), name.clone())) {
                    continue;
                }
                let dp = if dry_run { DeleteParams::background().dry_run() } else { DeleteParams::background() };
                api.delete(&name, &dp).await.map_err(|e| Error::from_kube(e, &conn.url))?;
                pruned.push(Applied {
                    reference: format!("{}/{name}", kind.as_str().to_ascii_lowercase()),
                    outcome: if dry_run { "pruned (server dry run)" } else { "pruned" },
                });
            }
        }
    }
    Ok(pruned)
}
