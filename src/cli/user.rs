//! `a2a user create|list|delete`: the named users of the local control plane, each with a role
//! (`admin`, `edit`, `view`) and optionally a namespace (see [`crate::apiserver::authz`]).
//!
//! With a server running they go through its users API, which only the unbound admin may use
//! (so the server's table changes at once: a deleted user's next request is refused). With no
//! server answering they edit `$A2A_HOME/users` directly, which the server loads when it starts.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::client::{ConnectArgs, Connection, Error, Result, a2a_home};
use crate::apiserver::authz::{Role, USERS_GROUP};
use crate::apiserver::users::{self, Users};

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print its token (shown this once; only its digest is kept).
    Create(CreateArgs),
    /// List the users: name, role, namespace, age.
    List,
    /// Delete a user: its token is refused from its next request on.
    Delete { name: String },
}

/// What `user create` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CreateOutput {
    /// The token alone, one line.
    #[default]
    Token,
    /// A kubeconfig for the user (the server and CA of the admin's kubeconfig).
    Kubeconfig,
    /// The user and its token as JSON.
    Json,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A lower-case DNS name (`alice`, `ci-bot`).
    pub name: String,
    /// What the user may do: admin (everything), edit (read, and write namespaced resources
    /// incl. Secrets), view (read everything but Secrets).
    #[arg(long, value_parser = Role::NAMES)]
    pub role: String,
    /// Bind the role to this namespace only (cluster-scoped resources are then refused).
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = CreateOutput::Token)]
    pub output: CreateOutput,
    /// Also write a kubeconfig for the user to FILE (mode 0600). (`--kubeconfig` names the
    /// control plane to talk to, as for every verb.)
    #[arg(long, value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,
}

/// Where the users are changed.
enum Target {
    Api(Connection),
    Offline(Users),
}

const USERS_PATH: &str = "/apis/auth.a2a.dev/v1alpha1/users";

async fn target(connect: &ConnectArgs) -> Result<Target> {
    match connect.connect().await {
        Ok(c) => Ok(Target::Api(c)),
        // No server: edit the home, unless another control plane was named.
        Err(Error::NoKubeconfig { .. } | Error::Unreachable { .. }) if connect.kubeconfig.is_none() => {
            let home = a2a_home();
            if !home.is_dir() {
                return Err(Error::Usage(format!(
                    "no a2a home at {}: start `a2a serve` once (or set A2A_HOME)",
                    home.display()
                )));
            }
            Users::open(&home).map(Target::Offline).map_err(|e| Error::Usage(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

async fn call(c: &Connection, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| Error::Api(e.to_string()))?;
    c.client.request::<Value>(request).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 && s.details.is_none() => Error::Api(format!(
            "{} serves no a2a users API: named users belong to the local control plane (`a2a serve`); a Kubernetes \
             cluster has its own (RBAC)",
            c.url
        )),
        e => Error::from_kube(e, &c.url),
    })
}

/// Runs one `a2a user` verb; answers what to print.
pub async fn run(args: &UserArgs) -> Result<String> {
    let target = target(&args.connect).await?;
    match &args.command {
        UserCommand::Create(create) => {
            let (user, token) = match &target {
                Target::Api(c) => {
                    let mut spec = json!({"role": create.role});
                    if let Some(ns) = &create.namespace {
                        spec["namespace"] = json!(ns);
                    }
                    let body = json!({
                        "apiVersion": format!("{USERS_GROUP}/v1alpha1"), "kind": "User",
                        "metadata": {"name": create.name}, "spec": spec,
                    });
                    let out = call(c, "POST", USERS_PATH, Some(body)).await?;
                    let token = out.pointer("/status/token").and_then(Value::as_str).unwrap_or_default().to_string();
                    (out, token)
                }
                Target::Offline(u) => {
                    let (user, token) = u
                        .create(&create.name, &create.role, create.namespace.as_deref())
                        .map_err(|e| Error::Usage(e.to_string()))?;
                    (user.to_json(), token)
                }
            };
            let kubeconfig = || kubeconfig_for(&args.connect, &create.name, &token, create.namespace.as_deref());
            if let Some(file) = &create.write_kubeconfig {
                let text = kubeconfig()?;
                crate::apiserver::home::write_private(file, text.as_bytes())
                    .map_err(|e| Error::Usage(format!("cannot write the kubeconfig: {e}")))?;
            }
            Ok(match create.output {
                CreateOutput::Token => token,
                CreateOutput::Kubeconfig => kubeconfig()?.trim_end().to_string(),
                CreateOutput::Json => {
                    let mut out = user;
                    out["status"] = json!({"token": token});
                    serde_json::to_string_pretty(&out).unwrap_or_default()
                }
            })
        }
        UserCommand::List => {
            let items: Vec<Value> = match &target {
                Target::Api(c) => {
                    let list = call(c, "GET", USERS_PATH, None).await?;
                    list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
                }
                Target::Offline(u) => u.list().iter().map(users::User::to_json).collect(),
            };
            Ok(table(&items))
        }
        UserCommand::Delete { name } => {
            match &target {
                Target::Api(c) => {
                    call(c, "DELETE", &format!("{USERS_PATH}/{name}"), None).await?;
                }
                Target::Offline(u) => {
                    u.delete(name).map_err(|e| Error::Usage(e.to_string()))?;
                }
            }
            Ok(format!("user \"{name}\" deleted"))
        }
    }
}

fn table(items: &[Value]) -> String {
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut rows = vec![["NAME".to_string(), "ROLE".to_string(), "NAMESPACE".to_string(), "CREATED".to_string()]];
    for item in items {
        let ns = s(item, "/spec/namespace");
        rows.push([
            s(item, "/metadata/name"),
            s(item, "/spec/role"),
            if ns.is_empty() { "*".to_string() } else { ns },
            s(item, "/metadata/creationTimestamp"),
        ]);
    }
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// A kubeconfig for the user: the cluster (server and CA) of the current context of the
/// kubeconfig in use, the user's token, its namespace (else `default`).
fn kubeconfig_for(connect: &ConnectArgs, user: &str, token: &str, namespace: Option<&str>) -> Result<String> {
    let path = connect.kubeconfig.clone().unwrap_or_else(|| a2a_home().join("kubeconfig"));
    let shown = path.display().to_string();
    let bad = |message: String| Error::BadKubeconfig { path: shown.clone(), message };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("{e}; the user's kubeconfig takes the server and CA from it")))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let context_name = connect
        .context
        .clone()
        .or_else(|| doc.get("current-context").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| bad("no current context".to_string()))?;
    let named = |list: &str, name: &str| {
        doc.get(list)
            .and_then(Value::as_array)
            .and_then(|l| l.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(name)))
            .cloned()
    };
    let context = named("contexts", &context_name).ok_or_else(|| bad(format!("no context {context_name:?}")))?;
    let cluster_name = context.pointer("/context/cluster").and_then(Value::as_str).unwrap_or_default();
    let cluster = named("clusters", cluster_name).ok_or_else(|| bad(format!("no cluster {cluster_name:?}")))?;
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "a2a", "cluster": cluster.get("cluster").cloned().unwrap_or(Value::Null)}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": format!("{user}@a2a"), "context": {
            "cluster": "a2a", "user": user, "namespace": namespace.unwrap_or("default"),
        }}],
        "current-context": format!("{user}@a2a"),
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).map_err(|e| Error::Usage(e.to_string()))
}
