//! `a2a get KIND [NAME]`: tables from the CRDs' printer columns, or YAML/JSON/names; `-w`
//! keeps watching.

use std::io::Write;

use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use kube::api::{DynamicObject, ListParams, WatchEvent, WatchParams};

use super::client::{ConnectArgs, Error, Result, dynamic_api, resolve_kind};
use crate::api::Kind;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// agents (ag), workflows (wf) or resourcebudgets (rb).
    pub kind: String,
    /// One object; all when omitted.
    pub name: Option<String>,
    /// Namespace [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Label selector (`app=x,tier in (a,b)`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// After listing, print changes as they happen.
    #[arg(short, long)]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A printer column: header and the JSON path it reads.
struct Column {
    header: String,
    path: String,
    date: bool,
}

fn columns(kind: Kind, wide: bool, with_namespace: bool) -> Vec<Column> {
    let mut cols = Vec::new();
    if with_namespace {
        cols.push(Column { header: "NAMESPACE".into(), path: ".metadata.namespace".into(), date: false });
    }
    cols.push(Column { header: "NAME".into(), path: ".metadata.name".into(), date: false });
    let crd = kind.crd();
    for c in crd.spec.versions.iter().flat_map(|v| v.additional_printer_columns.iter().flatten()) {
        if c.priority.unwrap_or(0) > 0 && !wide {
            continue;
        }
        cols.push(Column { header: c.name.to_ascii_uppercase(), path: c.json_path.clone(), date: c.type_ == "date" });
    }
    cols
}

/// Reads `.a.b.c` from a JSON value.
fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.trim_start_matches('.').split('.').try_fold(v, |cur, key| cur.get(key))
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl shows ages.
pub fn human_age(since: &str) -> String {
    let Ok(t) = since.parse::<jiff::Timestamp>() else { return "<unknown>".into() };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn cell(obj: &serde_json::Value, col: &Column) -> String {
    match lookup(obj, &col.path) {
        None | Some(serde_json::Value::Null) => if col.date { "<none>" } else { "" }.to_owned(),
        Some(serde_json::Value::String(s)) if col.date => human_age(s),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Lays rows out in columns three spaces apart, as kubectl does.
pub fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut s = String::new();
        for (i, (c, w)) in line.iter().zip(&widths).enumerate() {
            if i + 1 == line.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

fn clean(obj: &DynamicObject) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    v
}

fn format_objects(kind: Kind, objs: &[DynamicObject], args: &GetArgs, header: bool) -> String {
    let values: Vec<serde_json::Value> = objs.iter().map(clean).collect();
    match args.output {
        OutputFormat::Name => values
            .iter()
            .map(|v| {
                format!(
                    "{}/{}\n",
                    kind.as_str().to_ascii_lowercase(),
                    lookup(v, ".metadata.name").and_then(|n| n.as_str()).unwrap_or("")
                )
            })
            .collect(),
        OutputFormat::Json => {
            let doc = if args.name.is_some() && values.len() == 1 {
                values[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
            };
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
        OutputFormat::Yaml => {
            let doc = if args.name.is_some() && values.len() == 1 {
                values[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
            };
            serde_yaml_ng::to_string(&doc).unwrap_or_default()
        }
        OutputFormat::Table | OutputFormat::Wide => {
            let cols = columns(kind, args.output == OutputFormat::Wide, args.all_namespaces && kind.namespaced());
            let rows: Vec<Vec<String>> = values.iter().map(|v| cols.iter().map(|c| cell(v, c)).collect()).collect();
            let table = render_table(&cols.iter().map(|c| c.header.clone()).collect::<Vec<_>>(), &rows);
            if header { table } else { table.lines().skip(1).map(|l| format!("{l}\n")).collect() }
        }
    }
}

/// Lists (or gets) and writes the result; with `--watch`, keeps writing changes.
pub async fn run(args: &GetArgs, out: &mut dyn Write) -> Result<()> {
    let kind = resolve_kind(&args.kind)?;
    let conn = args.connect.connect().await?;
    let ns = if args.all_namespaces { None } else { Some(args.namespace.clone().unwrap_or(conn.namespace.clone())) };
    let api = dynamic_api(&conn.client, kind, ns.as_deref());
    let mut lp = ListParams::default();
    if let Some(sel) = &args.selector {
        lp = lp.labels(sel);
    }
    if let Some(name) = &args.name {
        lp = lp.fields(&format!("metadata.name={name}"));
    }
    let list = api.list(&lp).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    if let Some(name) = &args.name
        && list.items.is_empty()
        && !args.watch
    {
        return Err(Error::NotFound { kind, name: name.clone(), namespace: ns.filter(|_| kind.namespaced()) });
    }
    let text = if list.items.is_empty() && matches!(args.output, OutputFormat::Table | OutputFormat::Wide) {
        String::new()
    } else {
        format_objects(kind, &list.items, args, true)
    };
    if text.is_empty() && !args.watch {
        eprintln!(
            "No resources found{}.",
            match (&ns, kind.namespaced()) {
                (Some(n), true) => format!(" in {n} namespace"),
                _ => String::new(),
            }
        );
    }
    write!(out, "{text}").map_err(|e| Error::Api(e.to_string()))?;
    out.flush().ok();
    if !args.watch {
        return Ok(());
    }
    let mut header = list.items.is_empty();
    let mut wp = WatchParams::default();
    if let Some(sel) = &args.selector {
        wp = wp.labels(sel);
    }
    if let Some(name) = &args.name {
        wp = wp.fields(&format!("metadata.name={name}"));
    }
    let rv = list.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
    let mut stream = api.watch(&wp, &rv).await.map_err(|e| Error::from_kube(e, &conn.url))?.boxed();
    while let Some(event) = stream.try_next().await.map_err(|e| Error::from_kube(e, &conn.url))? {
        let obj = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => return Err(Error::Api(format!("watch: {}", e.message))),
        };
        write!(out, "{}", format_objects(kind, std::slice::from_ref(&obj), args, header))
            .map_err(|e| Error::Api(e.to_string()))?;
        out.flush().ok();
        header = false;
    }
    Ok(())
}
