//! `a2a delete (-f PATH | KIND NAME...)`, optionally waiting until the objects are gone.

use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};

use super::apply::{Applied, load};
use super::client::{ConnectArgs, Connection, Error, Result, dynamic_api, resolve_kind};
use crate::api::Kind;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// A kind and names (`agent a b`, `wf/report`, `secret api-keys`, `cm/settings`); or use -f.
    #[arg(value_name = "KIND NAME...", conflicts_with = "files")]
    pub targets: Vec<String>,
    /// Delete what these manifests define.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<std::path::PathBuf>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Return only when the objects are gone (finalizers done): for an Agent run locally,
    /// when its processes have exited (after its grace period, if SIGTERM is ignored).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = super::values::duration)]
    pub timeout: Duration,
    /// Succeed when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Keep a deleted Agent's log files (they are removed with it otherwise); sets the
    /// annotation `a2a.dev/keep-logs: "true"` before deleting.
    #[arg(long)]
    pub keep_logs: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A2A objects to delete, as (kind, namespace, name).
type Targets = Vec<(Kind, Option<String>, String)>;

/// The objects named on the command line or by the files: the a2a objects, and the files'
/// Secrets and ConfigMaps with their namespaces (deleted after the agents that use them).
fn targets(args: &DeleteArgs, default_ns: &str) -> Result<(Targets, Vec<(CoreTarget, String)>)> {
    let ns_for = |kind: Kind, ns: Option<String>| kind.namespaced().then(|| ns.unwrap_or(default_ns.to_owned()));
    if !args.files.is_empty() {
        let manifests = load(&super::FileArgs { files: args.files.clone(), recursive: args.recursive })?;
        let a2a = manifests
            .docs
            .iter()
            .map(|d| {
                let k = d.object.kind();
                (k, ns_for(k, d.object.metadata().namespace.clone()), d.object.name().to_owned())
            })
            .collect();
        let core = manifests
            .config
            .iter()
            .filter_map(|d| {
                let (prefix, ar) = core_resource(d.kind.as_str())?;
                Some(((prefix, ar, d.name.clone()), d.namespace.clone().unwrap_or(default_ns.to_owned())))
            })
            .collect();
        return Ok((a2a, core));
    }
    let mut out = Vec::new();
    let mut kind = None;
    for t in &args.targets {
        if let Some((k, name)) = t.split_once('/') {
            let k = resolve_kind(k)?;
            out.push((k, ns_for(k, None), name.to_owned()));
        } else if let Some(k) = kind {
            out.push((k, ns_for(k, None), t.clone()));
        } else {
            kind = Some(resolve_kind(t)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "say what to delete: `a2a delete KIND NAME...`, `a2a delete KIND/NAME` or `-f FILE`".into(),
        ));
    }
    Ok((out, Vec::new()))
}

/// The core kinds `a2a delete` takes besides the a2a kinds: `-o name`'s prefix and the API.
fn core_resource(word: &str) -> Option<(&'static str, ApiResource)> {
    match word.to_ascii_lowercase().as_str() {
        "secret" | "secrets" => Some(("secret", ApiResource::erase::<Secret>(&()))),
        "configmap" | "configmaps" | "cm" => Some(("configmap", ApiResource::erase::<ConfigMap>(&()))),
        _ => None,
    }
}

/// A core object to delete: `-o name`'s prefix, its API resource and its name.
type CoreTarget = (&'static str, ApiResource, String);

/// The core objects named on the command line (`secret a b`, `cm/x`), when the first target
/// names a core kind; a2a kinds among them are refused.
fn core_targets(args: &DeleteArgs) -> Result<Option<Vec<CoreTarget>>> {
    let Some(first) = args.targets.first().filter(|_| args.files.is_empty()) else { return Ok(None) };
    if core_resource(first.split_once('/').map_or(first.as_str(), |(k, _)| k)).is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut kind = None;
    for t in &args.targets {
        let mixed = || Error::Usage(format!("{t:?}: delete Secrets and ConfigMaps apart from the a2a kinds"));
        if let Some((k, name)) = t.split_once('/') {
            let (prefix, ar) = core_resource(k).ok_or_else(mixed)?;
            out.push((prefix, ar, name.to_owned()));
        } else if let Some((prefix, ar)) = &kind {
            out.push((*prefix, ApiResource::clone(ar), t.clone()));
        } else {
            kind = Some(core_resource(t).ok_or_else(mixed)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!("say which {} to delete: `a2a delete {first} NAME...`", first)));
    }
    Ok(Some(out))
}

/// Deletes Secrets and ConfigMaps (no finalizers of their own: gone when the answer comes,
/// unless a client put one there; `--wait` waits for that).
async fn delete_core(args: &DeleteArgs, conn: &Connection, targets: Vec<(CoreTarget, String)>) -> Result<Vec<Applied>> {
    let mut done = Vec::new();
    for ((prefix, ar, name), ns) in targets {
        let ns = ns.as_str();
        let api: Api<DynamicObject> = Api::namespaced_with(conn.client.clone(), ns, &ar);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 && args.ignore_not_found => continue,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Error::Api(format!(
                    "Error from server (NotFound): {}s {name:?} not found in namespace {ns:?}",
                    prefix
                )));
            }
            Err(e) => return Err(Error::from_kube(e, &conn.url)),
        }
        if args.wait {
            let deadline = tokio::time::Instant::now() + args.timeout;
            while api.get_opt(&name).await.map_err(|e| Error::from_kube(e, &conn.url))?.is_some() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Timeout(args.timeout, format!("waiting for {prefix}/{name} to be deleted")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        done.push(Applied { reference: format!("{prefix}/{name}"), outcome: "deleted" });
    }
    Ok(done)
}

pub async fn run(args: &DeleteArgs) -> Result<Vec<Applied>> {
    let core = core_targets(args)?;
    let conn = args.connect.connect().await?;
    let default_ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    if let Some(targets) = core {
        let targets = targets.into_iter().map(|t| (t, default_ns.clone())).collect();
        return delete_core(args, &conn, targets).await;
    }
    let mut done = Vec::new();
    let (a2a, core) = targets(args, &default_ns)?;
    for (kind, ns, name) in a2a {
        let api = dynamic_api(&conn.client, kind, ns.as_deref());
        let reference = format!("{}/{name}", kind.as_str().to_ascii_lowercase());
        if args.keep_logs && kind == Kind::Agent {
            let keep =
                serde_json::json!({"metadata": {"annotations": {crate::node::logs::KEEP_LOGS_ANNOTATION: "true"}}});
            match api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&keep)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 && args.ignore_not_found => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    return Err(Error::NotFound { kind, name, namespace: ns });
                }
                Err(e) => return Err(Error::from_kube(e, &conn.url)),
            }
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                if args.ignore_not_found {
                    continue;
                }
                return Err(Error::NotFound { kind, name, namespace: ns });
            }
            Err(e) => return Err(Error::from_kube(e, &conn.url)),
        }
        if args.wait {
            wait_gone(&conn, kind, ns.as_deref(), &name, args.timeout).await?;
        }
        done.push(Applied { reference, outcome: "deleted" });
    }
    done.extend(delete_core(args, &conn, core).await?);
    Ok(done)
}

/// Polls until the object is gone.
pub async fn wait_gone(conn: &Connection, kind: Kind, ns: Option<&str>, name: &str, timeout: Duration) -> Result<()> {
    let api = dynamic_api(&conn.client, kind, ns);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if api.get_opt(name).await.map_err(|e| Error::from_kube(e, &conn.url))?.is_none() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, format!("waiting for {kind}/{name} to be deleted")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
