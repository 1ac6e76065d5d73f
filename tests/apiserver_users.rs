//! Named users with roles (`a2a user`), seen through the real kubectl (the one on the PATH,
//! or `$KUBECTL`): what each role may do, the kube-apiserver's Forbidden messages, the audit
//! log, `auth can-i` and `auth whoami`, deletion and a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Daemon, kubectl_bin};

/// `a2a ARGS` with `A2A_HOME=home`: success, stdout, stderr.
fn a2a(home: &Path, args: &[&str]) -> (bool, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_a2a")).env("A2A_HOME", home).args(args).output().unwrap();
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let Output { status, stdout, stderr } = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .unwrap();
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// A user's kubectl: its kubeconfig and its own discovery cache.
struct As {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl As {
    fn new(home: &Path, name: &str) -> As {
        As { kubeconfig: home.join(format!("{name}.kubeconfig")), cache: home.join(format!("cache-{name}")) }
    }
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        kubectl(&self.kubeconfig, &self.cache, args)
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}{err}");
        out
    }
    fn refused(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(!ok, "kubectl {args:?} succeeded:\n{out}");
        err
    }
    /// `auth can-i ...`: "yes" or "no".
    fn can_i(&self, args: &[&str]) -> String {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let (_, out, _) = self.run(&all);
        out.trim().to_string()
    }
}

fn create_user(home: &Path, args: &[&str]) -> String {
    let mut all = vec!["user", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = a2a(home, &all);
    assert!(ok, "a2a {all:?} failed: {err}");
    out.trim().to_string()
}

fn audit_lines(home: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(home.join("audit.log")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const AGENT: &str =
    "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: helper\nspec:\n  command: [sleep, \"100\"]\n";

#[test]
fn roles_are_enforced_on_kubectl_audited_and_answered_by_the_access_reviews() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let daemon = Daemon::spawn(home);
    let admin = As { kubeconfig: daemon.kubeconfig.clone(), cache: home.join("cache-admin") };
    let manifest = home.join("agent.yaml");
    std::fs::write(&manifest, AGENT).unwrap();
    let manifest = manifest.to_str().unwrap();

    // The view user through the running server, its kubeconfig written to a file.
    let viewer = As::new(home, "viewer");
    let token =
        create_user(home, &["viewer", "--role", "view", "--write-kubeconfig", viewer.kubeconfig.to_str().unwrap()]);
    assert!(token.starts_with("a2au_") && token.len() > 60, "{token}");
    let stored = std::fs::read_to_string(home.join("users")).unwrap();
    assert!(stored.contains("\"viewer\"") && !stored.contains(&token), "only a digest is kept:\n{stored}");
    // The edit user, bound to one namespace, its kubeconfig printed.
    let editor = As::new(home, "editor");
    let kubeconfig = create_user(home, &["editor", "--role", "edit", "--namespace", "team-a", "-o", "kubeconfig"]);
    std::fs::write(&editor.kubeconfig, kubeconfig).unwrap();
    let (ok, _, err) = a2a(home, &["user", "create", "editor", "--role", "view"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = a2a(home, &["user", "create", "Bad_Name", "--role", "view"]);
    assert!(!ok && err.contains("invalid user name \"Bad_Name\""), "{err}");

    admin.ok(&["create", "namespace", "team-a"]);
    admin.ok(&["create", "namespace", "team-b"]);
    admin.ok(&["create", "secret", "generic", "db", "--from-literal=password=hunter2"]);

    // view: reads, but cannot create, and cannot read Secrets by any verb.
    viewer.ok(&["get", "agents"]);
    viewer.ok(&["get", "namespaces"]);
    let err = viewer.refused(&["create", "-f", manifest]);
    assert!(
        err.contains(
            "Error from server (Forbidden): error when creating \"".to_string().as_str()
        ) && err.contains(
            "agents.a2a.dev is forbidden: User \"viewer\" cannot create resource \"agents\" in API group \"a2a.dev\" \
             in the namespace \"default\""
        ),
        "{err}"
    );
    let err = viewer.refused(&["get", "secret", "db", "-o", "yaml"]);
    assert!(
        err.contains(
            "Error from server (Forbidden): secrets \"db\" is forbidden: User \"viewer\" cannot get resource \
             \"secrets\" in API group \"\" in the namespace \"default\""
        ),
        "{err}"
    );
    let err = viewer.refused(&["get", "secrets", "-A"]);
    assert!(err.contains("cannot list resource \"secrets\" in API group \"\" at the cluster scope"), "{err}");
    let err = viewer.refused(&["get", "--raw", "/api/v1/namespaces/default/secrets?watch=true"]);
    assert!(err.contains("Forbidden"), "{err}");
    let err = viewer.refused(&["get", "--raw", "/metrics"]);
    assert!(err.contains("Forbidden"), "{err}");
    assert!(!err.contains("hunter2"));

    // edit in team-a: creates there, not in team-b, and not cluster-scoped objects.
    let out = editor.ok(&["create", "-f", manifest]);
    assert!(out.contains("agent.a2a.dev/helper created"), "{out}");
    editor.ok(&["get", "agent", "helper", "-n", "team-a"]);
    let err = editor.refused(&["create", "-f", manifest, "-n", "team-b"]);
    assert!(
        err.contains(
            "agents.a2a.dev is forbidden: User \"editor\" cannot create resource \"agents\" in API group \"a2a.dev\" \
             in the namespace \"team-b\""
        ),
        "{err}"
    );
    let err = editor.refused(&["create", "namespace", "mine"]);
    assert!(err.contains("cannot create resource \"namespaces\" in API group \"\" at the cluster scope"), "{err}");

    // Both refusals are in the audit log with the user and its groups.
    let lines = audit_lines(home);
    let refused = |user: &str, ns: &str| {
        lines.iter().any(|l| {
            l["user"] == user
                && l["verb"] == "create"
                && l["resource"] == "agents"
                && l["namespace"] == ns
                && l["code"] == 403
                && l["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "system:authenticated"))
        })
    };
    assert!(refused("viewer", "default"), "{lines:#?}");
    assert!(refused("editor", "team-b"), "{lines:#?}");
    assert!(lines.iter().any(|l| l["user"] == "viewer" && l["resource"] == "secrets" && l["code"] == 403));
    assert!(lines.iter().any(|l| l["user"] == "editor" && l["namespace"] == "team-a" && l["code"] == 201));
    assert!(
        lines.iter().any(|l| l["user"] == "a2a-admin"
            && l["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "system:masters")))
    );

    // The access reviews answer from the same table.
    assert_eq!(viewer.can_i(&["list", "agents"]), "yes");
    assert_eq!(viewer.can_i(&["create", "agents"]), "no");
    assert_eq!(viewer.can_i(&["get", "secrets"]), "no");
    assert_eq!(editor.can_i(&["create", "agents", "-n", "team-a"]), "yes");
    assert_eq!(editor.can_i(&["create", "secrets", "-n", "team-a"]), "yes");
    assert_eq!(editor.can_i(&["create", "agents", "-n", "team-b"]), "no");
    assert_eq!(editor.can_i(&["create", "namespaces"]), "no");
    assert_eq!(admin.can_i(&["create", "namespaces"]), "yes");
    let list = viewer.ok(&["auth", "can-i", "--list"]);
    assert!(list.contains("agents.a2a.dev"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    let who = viewer.ok(&["auth", "whoami"]);
    assert!(who.contains("viewer") && who.contains("system:authenticated"), "{who}");
    let who = admin.ok(&["auth", "whoami"]);
    assert!(who.contains("a2a-admin") && who.contains("system:masters"), "{who}");

    // A deleted user is refused at once (401).
    let (ok, out, err) = a2a(home, &["user", "delete", "viewer"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "user \"viewer\" deleted");
    let err = viewer.refused(&["get", "agents"]);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    let (ok, out, _) = a2a(home, &["user", "list"]);
    assert!(ok);
    assert!(out.contains("editor") && out.contains("team-a") && !out.contains("viewer"), "{out}");

    // With no server running, `a2a user` edits the home; users survive the restart.
    daemon.kill();
    let offline = As::new(home, "offline");
    create_user(home, &["offline", "--role", "view", "--write-kubeconfig", offline.kubeconfig.to_str().unwrap()]);
    let old_url = {
        let text = std::fs::read_to_string(&editor.kubeconfig).unwrap();
        text.lines().find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string)).unwrap()
    };
    let daemon = Daemon::spawn(home);
    for who in [&editor, &offline] {
        let text = std::fs::read_to_string(&who.kubeconfig).unwrap();
        std::fs::write(&who.kubeconfig, text.replace(&old_url, &daemon.url)).unwrap();
    }
    editor.ok(&["get", "agent", "helper", "-n", "team-a"]);
    assert_eq!(editor.can_i(&["delete", "agents", "-n", "team-a"]), "yes");
    offline.ok(&["get", "agents"]);
    assert_eq!(offline.can_i(&["create", "agents"]), "no");
    let err = viewer.refused(&["get", "agents", "--server", &daemon.url]);
    assert!(err.contains("You must be logged in to the server"), "{err}");
}

#[test]
fn only_the_administrator_manages_users() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let _daemon = Daemon::spawn(home);
    let boss = As::new(home, "boss");
    create_user(
        home,
        &["boss", "--role", "admin", "--namespace", "ops", "--write-kubeconfig", boss.kubeconfig.to_str().unwrap()],
    );
    // A namespace-bound admin is no administrator of the server.
    let (ok, _, err) =
        a2a(home, &["user", "create", "x", "--role", "view", "--kubeconfig", boss.kubeconfig.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(
            "Error from server (Forbidden): users.auth.a2a.dev is forbidden: User \"boss\" cannot create resource \
             \"users\" in API group \"auth.a2a.dev\" at the cluster scope"
        ),
        "{err}"
    );
    let (ok, _, err) = a2a(home, &["user", "delete", "nobody"]);
    assert!(!ok && err.contains("users.auth.a2a.dev \"nobody\" not found"), "{err}");
}
