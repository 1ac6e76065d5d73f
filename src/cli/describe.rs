//! `a2a describe KIND NAME`: metadata, spec, status, conditions and events, for people.

use clap::Args;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

use super::client::{ConnectArgs, Error, Result, dynamic_api, resolve_kind};
use super::get::{human_age, render_table};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// agents (ag), workflows (wf) or resourcebudgets (rb).
    pub kind: String,
    pub name: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn indent(yaml: &str, by: usize) -> String {
    yaml.lines().map(|l| format!("{:by$}{l}\n", "")).collect()
}

pub async fn run(args: &DescribeArgs) -> Result<String> {
    let kind = resolve_kind(&args.kind)?;
    let conn = args.connect.connect().await?;
    let ns = args.namespace.clone().unwrap_or(conn.namespace.clone());
    let ns = kind.namespaced().then_some(ns);
    let api = dynamic_api(&conn.client, kind, ns.as_deref());
    let obj = api
        .get_opt(&args.name)
        .await
        .map_err(|e| Error::from_kube(e, &conn.url))?
        .ok_or_else(|| Error::NotFound { kind, name: args.name.clone(), namespace: ns.clone() })?;
    let meta = &obj.metadata;
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", args.name));
    if let Some(ns) = &ns {
        out.push_str(&format!("Namespace:    {ns}\n"));
    }
    let kv = |m: &Option<std::collections::BTreeMap<String, String>>| match m {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n              ")
        }
        _ => "<none>".to_owned(),
    };
    out.push_str(&format!("Labels:       {}\n", kv(&meta.labels)));
    let mut annotations = meta.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    out.push_str(&format!("Annotations:  {}\n", kv(&Some(annotations))));
    out.push_str(&format!("API Version:  {}\nKind:         {kind}\n", crate::api::API_VERSION));
    if let Some(t) = &meta.creation_timestamp {
        out.push_str(&format!("Created:      {} ({} ago)\n", t.0, human_age(&t.0.to_string())));
    }
    out.push_str(&format!("Generation:   {}\n", meta.generation.unwrap_or(0)));
    if let Some(t) = &meta.deletion_timestamp {
        out.push_str(&format!(
            "Deleting:     since {} (finalizers: {})\n",
            t.0,
            meta.finalizers.clone().unwrap_or_default().join(", ")
        ));
    }
    if let Some(spec) = obj.data.get("spec") {
        out.push_str("Spec:\n");
        out.push_str(&indent(&serde_yaml_ng::to_string(spec).unwrap_or_default(), 2));
    }
    let mut status = obj.data.get("status").cloned().unwrap_or_default();
    let conditions = status.as_object_mut().and_then(|s| s.remove("conditions"));
    let mut tasks = match kind {
        crate::api::Kind::Workflow => status.as_object_mut().and_then(|s| s.remove("tasks")),
        _ => None,
    };
    // A big workflow keeps its tasks beside it: read them back.
    if kind == crate::api::Kind::Workflow
        && tasks.is_none()
        && let Some(r) = status.get("taskStatusRef").cloned()
    {
        let r: crate::api::workflow::TaskStatusRef =
            serde_json::from_value(r).map_err(|e| Error::Usage(format!("status.taskStatusRef: {e}")))?;
        let (namespace, uid) = (ns.clone().unwrap_or_default(), meta.uid.clone().unwrap_or_default());
        let owner = crate::controller::outputs::Owner { namespace: &namespace, name: &args.name, uid: &uid };
        let loaded = crate::controller::offload::load(&conn.client, &owner, &r)
            .await
            .map_err(|e| Error::Usage(format!("workflow {:?}: reading its tasks' status: {e}", args.name)))?;
        tasks = Some(serde_json::to_value(loaded).unwrap_or_default());
    }
    if status.as_object().is_some_and(|s| !s.is_empty()) {
        out.push_str("Status:\n");
        out.push_str(&indent(&serde_yaml_ng::to_string(&status).unwrap_or_default(), 2));
    }
    if let Some(tasks) = tasks {
        let tasks: Vec<crate::api::workflow::TaskStatus> = serde_json::from_value(tasks).unwrap_or_default();
        out.push_str("Tasks:\n");
        let header = ["Task", "Phase", "Attempts", "Duration", "Agent", "Error"].map(String::from);
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|t| {
                // A task that waits says why where a failed one says what went wrong.
                let mut error = match (&t.error, &t.reason, &t.message) {
                    (Some(e), _, _) => e.clone(),
                    (None, Some(reason), Some(message)) => format!("{reason}: {message}"),
                    _ => String::new(),
                };
                if error.chars().count() > 100 {
                    error = error.chars().take(99).chain(['…']).collect();
                }
                vec![
                    t.name.clone(),
                    format!("{:?}", t.phase),
                    t.attempts.to_string(),
                    super::run::duration(t),
                    t.agent.clone().unwrap_or_default(),
                    error,
                ]
            })
            .collect();
        out.push_str(&indent(&render_table(&header, &rows), 2));
    }
    out.push_str("Conditions:\n");
    match conditions.as_ref().and_then(|c| c.as_array()).filter(|c| !c.is_empty()) {
        Some(cs) => {
            let rows: Vec<Vec<String>> = cs
                .iter()
                .map(|c| {
                    ["type", "status", "reason", "message"]
                        .iter()
                        .map(|k| c.get(*k).and_then(|v| v.as_str()).unwrap_or("").to_owned())
                        .collect()
                })
                .collect();
            let header = ["Type", "Status", "Reason", "Message"].map(String::from);
            out.push_str(&indent(&render_table(&header, &rows), 2));
        }
        None => out.push_str("  <none>\n"),
    }
    out.push_str(&events(&conn, kind, ns.as_deref(), &args.name, meta.uid.as_deref()).await);
    Ok(out)
}

async fn events(
    conn: &super::client::Connection,
    kind: crate::api::Kind,
    ns: Option<&str>,
    name: &str,
    uid: Option<&str>,
) -> String {
    let api: Api<Event> = match ns {
        Some(ns) => Api::namespaced(conn.client.clone(), ns),
        None => Api::all(conn.client.clone()),
    };
    let mut selector = format!("involvedObject.name={name},involvedObject.kind={kind}");
    if let Some(uid) = uid {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let list = match api.list(&ListParams::default().fields(&selector)).await {
        Ok(l) if !l.items.is_empty() => l,
        _ => return "Events:       <none>\n".to_owned(),
    };
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|e| {
            let last = e.last_timestamp.as_ref().map(|t| human_age(&t.0.to_string())).unwrap_or_default();
            vec![
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                match e.count {
                    Some(n) if n > 1 => format!("{last} (x{n})"),
                    _ => last,
                },
                e.source.as_ref().and_then(|s| s.component.clone()).unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["Type", "Reason", "Age", "From", "Message"].map(String::from);
    format!("Events:\n{}", indent(&render_table(&header, &rows), 2))
}
