//! `a2a get KIND [NAME]`: tables from the CRDs' printer columns (for events, kubectl's event
//! columns), or YAML/JSON/names; `-w` keeps watching. Handlers return the text; the top
//! level prints it.

use clap::{Args, ValueEnum};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};

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
    /// agents (ag), workflows (wf), resourcebudgets (rb), events (ev), secrets or
    /// configmaps (cm).
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
    /// Field selector (`involvedObject.name=x,type!=Normal`), as the server supports it.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// After listing, print changes as they happen.
    #[arg(short, long)]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What `a2a get` lists: an a2a kind, or the core Events the controllers record about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    A2a(Kind),
    Events,
    Secrets,
    ConfigMaps,
}

impl Resource {
    fn resolve(word: &str) -> Result<Resource> {
        match word.to_ascii_lowercase().as_str() {
            "event" | "events" | "ev" => Ok(Resource::Events),
            "secret" | "secrets" => Ok(Resource::Secrets),
            "configmap" | "configmaps" | "cm" => Ok(Resource::ConfigMaps),
            _ => resolve_kind(word).map(Resource::A2a),
        }
    }

    fn namespaced(self) -> bool {
        match self {
            Resource::A2a(kind) => kind.namespaced(),
            Resource::Events | Resource::Secrets | Resource::ConfigMaps => true,
        }
    }

    /// `-o name`'s prefix, as kubectl writes it.
    fn name_prefix(self) -> String {
        match self {
            Resource::A2a(kind) => kind.as_str().to_ascii_lowercase(),
            Resource::Events => "event".into(),
            Resource::Secrets => "secret".into(),
            Resource::ConfigMaps => "configmap".into(),
        }
    }

    fn api(self, client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match (self, namespace) {
            (Resource::A2a(kind), _) => dynamic_api(client, kind, namespace),
            (Resource::Events, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<Event>(&())),
            (Resource::Events, None) => Api::all_with(client.clone(), &ApiResource::erase::<Event>(&())),
            (Resource::Secrets, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<Secret>(&()))
            }
            (Resource::Secrets, None) => Api::all_with(client.clone(), &ApiResource::erase::<Secret>(&())),
            (Resource::ConfigMaps, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<ConfigMap>(&()))
            }
            (Resource::ConfigMaps, None) => Api::all_with(client.clone(), &ApiResource::erase::<ConfigMap>(&())),
        }
    }

    fn not_found(self, name: &str, namespace: Option<String>) -> Error {
        match self {
            Resource::A2a(kind) => {
                Error::NotFound { kind, name: name.to_owned(), namespace: namespace.filter(|_| kind.namespaced()) }
            }
            other => Error::Api(format!(
                "Error from server (NotFound): {} {name:?} not found{}",
                match other {
                    Resource::Secrets => "secrets",
                    Resource::ConfigMaps => "configmaps",
                    _ => "events",
                },
                namespace.map(|n| format!(" in namespace {n:?}")).unwrap_or_default()
            )),
        }
    }
}

/// What a table cell shows.
enum Cell {
    /// The JSON value at a path (`.status.phase`); dates as ages.
    Path { path: String, date: bool },
    /// An Event's last time seen, as kubectl shows it: `5s`, or `5s (x3 over 2m)`.
    LastSeen,
    /// The object an Event is about: `agent/writer`.
    InvolvedObject,
    /// How many keys a Secret or ConfigMap holds (never their values).
    DataCount,
}

/// A table column: header and what its cells show.
struct Column {
    header: String,
    cell: Cell,
}

impl Column {
    fn path(header: &str, path: &str, date: bool) -> Column {
        Column { header: header.into(), cell: Cell::Path { path: path.into(), date } }
    }
}

fn columns(resource: Resource, wide: bool, with_namespace: bool) -> Vec<Column> {
    let mut cols = Vec::new();
    if with_namespace {
        cols.push(Column::path("NAMESPACE", ".metadata.namespace", false));
    }
    let kind = match resource {
        Resource::A2a(kind) => kind,
        // kubectl's columns: NAME, TYPE, DATA, AGE (ConfigMaps: no TYPE).
        Resource::Secrets | Resource::ConfigMaps => {
            cols.push(Column::path("NAME", ".metadata.name", false));
            if resource == Resource::Secrets {
                cols.push(Column::path("TYPE", ".type", false));
            }
            cols.push(Column { header: "DATA".into(), cell: Cell::DataCount });
            cols.push(Column::path("AGE", ".metadata.creationTimestamp", true));
            return cols;
        }
        Resource::Events => {
            // kubectl's columns for events (`-o wide` adds the source, first time, count and name).
            cols.push(Column { header: "LAST SEEN".into(), cell: Cell::LastSeen });
            cols.push(Column::path("TYPE", ".type", false));
            cols.push(Column::path("REASON", ".reason", false));
            cols.push(Column { header: "OBJECT".into(), cell: Cell::InvolvedObject });
            if wide {
                cols.push(Column::path("SUBOBJECT", ".involvedObject.fieldPath", false));
                cols.push(Column::path("SOURCE", ".source.component", false));
            }
            cols.push(Column::path("MESSAGE", ".message", false));
            if wide {
                cols.push(Column::path("FIRST SEEN", ".firstTimestamp", true));
                cols.push(Column::path("COUNT", ".count", false));
                cols.push(Column::path("NAME", ".metadata.name", false));
            }
            return cols;
        }
    };
    cols.push(Column::path("NAME", ".metadata.name", false));
    let crd = kind.crd();
    for c in crd.spec.versions.iter().flat_map(|v| v.additional_printer_columns.iter().flatten()) {
        if c.priority.unwrap_or(0) > 0 && !wide {
            continue;
        }
        cols.push(Column::path(&c.name.to_ascii_uppercase(), &c.json_path, c.type_ == "date"));
    }
    cols
}

/// Reads `.a.b.c` from a JSON value.
fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.trim_start_matches('.').split('.').try_fold(v, |cur, key| cur.get(key))
}

/// The time an Event was last seen: `lastTimestamp`, else `eventTime`, else `firstTimestamp`,
/// else when it was created.
fn last_seen(event: &serde_json::Value) -> Option<&str> {
    [".lastTimestamp", ".eventTime", ".firstTimestamp", ".metadata.creationTimestamp"]
        .iter()
        .find_map(|p| lookup(event, p).and_then(|v| v.as_str()))
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
    match &col.cell {
        Cell::Path { path, date } => match lookup(obj, path) {
            None | Some(serde_json::Value::Null) => if *date { "<none>" } else { "" }.to_owned(),
            Some(serde_json::Value::String(s)) if *date => human_age(s),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        },
        Cell::LastSeen => {
            let last = last_seen(obj).map_or_else(|| "<unknown>".to_owned(), human_age);
            let count = lookup(obj, ".count").and_then(|c| c.as_i64()).unwrap_or(1);
            match lookup(obj, ".firstTimestamp").and_then(|f| f.as_str()) {
                Some(first) if count > 1 => format!("{last} (x{count} over {})", human_age(first)),
                _ => last,
            }
        }
        Cell::DataCount => ["data", "binaryData"]
            .iter()
            .filter_map(|f| obj.get(*f).and_then(|m| m.as_object()))
            .map(|m| m.len())
            .sum::<usize>()
            .to_string(),
        Cell::InvolvedObject => {
            let text = |p| lookup(obj, p).and_then(|v| v.as_str()).unwrap_or_default();
            format!("{}/{}", text(".involvedObject.kind").to_ascii_lowercase(), text(".involvedObject.name"))
        }
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

/// How objects are written: what `a2a get`'s arguments chose.
#[derive(Clone, Copy, Debug)]
struct Format {
    resource: Resource,
    output: OutputFormat,
    /// One object was asked for by name: YAML and JSON show it alone, not in a List.
    single: bool,
    with_namespace: bool,
}

impl Format {
    fn objects(&self, objs: &[DynamicObject], header: bool) -> String {
        let values: Vec<serde_json::Value> = objs.iter().map(clean).collect();
        let doc = || {
            if self.single && values.len() == 1 {
                values[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values})
            }
        };
        match self.output {
            OutputFormat::Name => values
                .iter()
                .map(|v| {
                    format!(
                        "{}/{}\n",
                        self.resource.name_prefix(),
                        lookup(v, ".metadata.name").and_then(|n| n.as_str()).unwrap_or("")
                    )
                })
                .collect(),
            OutputFormat::Json => serde_json::to_string_pretty(&doc()).unwrap_or_default() + "\n",
            OutputFormat::Yaml => serde_yaml_ng::to_string(&doc()).unwrap_or_default(),
            OutputFormat::Table | OutputFormat::Wide => {
                let cols = columns(self.resource, self.output == OutputFormat::Wide, self.with_namespace);
                let rows: Vec<Vec<String>> = values.iter().map(|v| cols.iter().map(|c| cell(v, c)).collect()).collect();
                let table = render_table(&cols.iter().map(|c| c.header.clone()).collect::<Vec<_>>(), &rows);
                if header { table } else { table.lines().skip(1).map(|l| format!("{l}\n")).collect() }
            }
        }
    }
}

/// What `a2a get` shows.
pub struct Listing {
    /// The objects, formatted.
    pub text: String,
    /// For stderr when there is nothing to show (`No resources found in default namespace.`).
    pub note: Option<String>,
    /// With `-w`: each change, formatted, as it happens.
    pub changes: Option<BoxStream<'static, Result<String>>>,
}

/// Lists (or gets) the objects; with `--watch`, also the stream of their changes.
pub async fn run(args: &GetArgs) -> Result<Listing> {
    let resource = Resource::resolve(&args.kind)?;
    let conn = args.connect.connect().await?;
    let ns = if args.all_namespaces { None } else { Some(args.namespace.clone().unwrap_or(conn.namespace.clone())) };
    let api = resource.api(&conn.client, ns.as_deref());
    let fields = args
        .name
        .iter()
        .map(|name| format!("metadata.name={name}"))
        .chain(args.field_selector.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut lp = ListParams::default();
    if let Some(sel) = &args.selector {
        lp = lp.labels(sel);
    }
    if !fields.is_empty() {
        lp = lp.fields(&fields);
    }
    let mut list = api.list(&lp).await.map_err(|e| Error::from_kube(e, &conn.url))?;
    if let Some(name) = &args.name
        && list.items.is_empty()
        && !args.watch
    {
        return Err(resource.not_found(name, ns));
    }
    if resource == Resource::Events {
        // Oldest first, as `kubectl events` orders them: the newest ends up next to the prompt.
        list.items.sort_by_cached_key(|e| {
            last_seen(&serde_json::to_value(e).unwrap_or_default())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .unwrap_or_default()
        });
    }
    let format = Format {
        resource,
        output: args.output,
        single: args.name.is_some(),
        with_namespace: args.all_namespaces && resource.namespaced(),
    };
    let text = if list.items.is_empty() && matches!(args.output, OutputFormat::Table | OutputFormat::Wide) {
        String::new()
    } else {
        format.objects(&list.items, true)
    };
    let note = (text.is_empty() && !args.watch).then(|| {
        format!(
            "No resources found{}.",
            match (&ns, resource.namespaced()) {
                (Some(n), true) => format!(" in {n} namespace"),
                _ => String::new(),
            }
        )
    });
    if !args.watch {
        return Ok(Listing { text, note, changes: None });
    }
    let mut wp = WatchParams::default();
    if let Some(sel) = &args.selector {
        wp = wp.labels(sel);
    }
    if !fields.is_empty() {
        wp = wp.fields(&fields);
    }
    let rv = list.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
    let url = conn.url.clone();
    let events = api.watch(&wp, &rv).await.map_err(|e| Error::from_kube(e, &url))?;
    // The header once: with the list when it had rows, else with the first change.
    let mut header = list.items.is_empty();
    let changes = events
        .map_err(move |e| Error::from_kube(e, &url))
        .try_filter_map(move |event| {
            let text = match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                    let text = format.objects(std::slice::from_ref(&o), header);
                    header = false;
                    Ok(Some(text))
                }
                WatchEvent::Bookmark(_) => Ok(None),
                WatchEvent::Error(e) => Err(Error::Api(format!("watch: {}", e.message))),
            };
            std::future::ready(text)
        })
        .boxed();
    Ok(Listing { text, note, changes: Some(changes) })
}
