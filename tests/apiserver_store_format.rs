//! The store's format version on a real store on disk: a store written before the format was
//! recorded (format 1) is upgraded in place by `a2a serve` with every object kept, and a store
//! of a newer format is refused with both versions named, nothing in the home changed.
//!
//! `fixtures/store-format-1.tar.gz` is `state/store.redb` and `state/store.wal` as an a2a
//! without format versions left them: `a2a serve --api-only`, `kubectl apply -f
//! examples/quickstart.yaml`, then SIGKILL, so the log still holds writes the database does not
//! (the upgrade applies the log first).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use a2a::api::{Agent, ResourceBudget, Workflow};
use kube::api::{Api, ListParams, PostParams};

use common::{Daemon, agent, client_from};

/// A private home whose `state/` holds the format-1 fixture.
fn home_with_format_1_store() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::DirBuilder::new().mode(0o700).create(&home).unwrap();
    let state = home.join("state");
    std::fs::DirBuilder::new().mode(0o700).create(&state).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-1.tar.gz");
    let status = Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(&state).status().unwrap();
    assert!(status.success(), "unpacking {}", fixture.display());
    assert!(!state.join("store.format").exists());
    (dir, home)
}

fn names<T: kube::Resource>(items: &[T]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_format_1_store_is_upgraded_in_place_and_keeps_its_objects() {
    let (_dir, home) = home_with_format_1_store();
    let daemon = Daemon::spawn(&home);
    assert_eq!(std::fs::read_to_string(home.join("state/store.format")).unwrap(), "3\n");
    let client = client_from(&daemon.kubeconfig, None).await;
    let agents: Api<Agent> = Api::namespaced(client.clone(), "default");
    let listed = agents.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(names(&listed), ["counter", "shouter", "writer"]);
    let writer = listed.iter().find(|a| a.metadata.name.as_deref() == Some("writer")).unwrap();
    assert_eq!(writer.spec.replicas, Some(2));
    assert_eq!(writer.spec.budget.as_deref(), Some("quickstart"));
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    assert_eq!(names(&budgets.list(&ListParams::default()).await.unwrap().items), ["quickstart"]);
    let workflows: Api<Workflow> = Api::namespaced(client.clone(), "default");
    assert_eq!(names(&workflows.list(&ListParams::default()).await.unwrap().items), ["quickstart"]);
    // The upgraded store takes writes, and a second start (format 3: nothing to upgrade) has
    // everything, old and new.
    agents.create(&PostParams::default(), &agent("after-upgrade")).await.unwrap();
    daemon.kill();
    let daemon = Daemon::spawn(&home);
    let client = client_from(&daemon.kubeconfig, None).await;
    let agents: Api<Agent> = Api::namespaced(client, "default");
    let listed = agents.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(names(&listed), ["after-upgrade", "counter", "shouter", "writer"]);
    assert_eq!(std::fs::read_to_string(home.join("state/store.format")).unwrap(), "3\n");
    let leftovers: Vec<_> = std::fs::read_dir(home.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every file under `dir` with its bytes and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.is_dir() {
                todo.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            out.insert(path, (meta.permissions().mode(), bytes));
        }
    }
    out
}

/// Runs the a2a binary on `home` to its end: exit success and stderr.
fn run_a2a(args: &[&str], home: &Path) -> (bool, String) {
    let home = home.to_str().expect("a UTF-8 path");
    let (ok, _, stderr) = common::run_a2a(&[args, &["--home", home]].concat());
    (ok, stderr)
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_nothing_in_the_home_changes() {
    let (_dir, home) = home_with_format_1_store();
    std::fs::write(home.join("state/store.format"), "4\n").unwrap();
    let before = snapshot(&home);
    let (ok, stderr) = run_a2a(&["serve", "--api-only", "--port", "0"], &home);
    assert!(!ok, "a2a serve started on a format-4 store");
    assert!(stderr.contains("store.format"), "{stderr}");
    assert!(stderr.contains("format 4"), "{stderr}");
    assert!(stderr.contains("up to 3"), "{stderr}");
    assert_eq!(snapshot(&home), before, "a2a serve changed the home of a store it refused");
    // Nor does the offline repair cut the log of a store it cannot read.
    let (ok, stderr) = run_a2a(&["store", "repair", "--truncate-at", "0"], &home);
    assert!(!ok, "a2a store repair ran on a format-4 store");
    assert!(stderr.contains("format 4"), "{stderr}");
    assert_eq!(snapshot(&home), before, "a2a store repair changed the home of a store it refused");
}
