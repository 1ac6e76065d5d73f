//! The store and the audit log when the disk lets them down: a damaged write-ahead log stops
//! `a2a serve` with the offset and the repair command, which then brings it up with the records
//! before the damage; a torn last record is dropped and nothing acknowledged is lost; a full
//! disk (a real ext4 on a loop device) makes writes fail with 503 and /readyz fail until space
//! returns, losing no acknowledged write; the audit log survives SIGKILLs whole and rotates.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::apiserver::wal;
use axum::http::Method;
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;

use common::{Daemon, agent, client_from, raw, run_a2a};

/// `a2a serve --api-only` on a free port with extra flags.
fn spawn(home: &Path, extra: &[&str]) -> Daemon {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["serve", "--api-only", "--port", "0", "--home"])
        .arg(home)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a2a serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("https://")).unwrap_or_else(|| panic!("{line:?}"));
    let kubeconfig = line.rsplit_once("(kubeconfig: ").map(|(_, p)| PathBuf::from(p.trim().trim_end_matches(')')));
    Daemon { child, url: url.to_string(), kubeconfig: kubeconfig.unwrap_or_else(|| panic!("{line:?}")) }
}

async fn names(daemon: &Daemon) -> BTreeSet<String> {
    let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
    api.list(&ListParams::default()).await.unwrap().items.into_iter().map(|a| a.metadata.name.unwrap()).collect()
}

/// Creates agents `a1`..=`aN` one by one (one log record each) and SIGKILLs the server.
async fn twenty_creates_then_kill(home: &Path) -> PathBuf {
    let daemon = spawn(home, &[]);
    let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
    for i in 1..=20 {
        api.create(&PostParams::default(), &agent(&format!("a{i}"))).await.unwrap();
    }
    daemon.kill();
    home.join("state").join("store.wal")
}

fn all_twenty() -> BTreeSet<String> {
    (1..=20).map(|i| format!("a{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_log_record_stops_the_start_until_repaired_and_a_torn_tail_loses_nothing() {
    let home = tempfile::tempdir().unwrap();
    let wal_path = twenty_creates_then_kill(home.path()).await;
    // 21 records: the default namespace, then one per agent.
    let scan = wal::inspect(&wal_path, 0).unwrap();
    assert_eq!(scan.records.len(), 21);
    let sixth = scan.records[5].0;
    let mut data = std::fs::read(&wal_path).unwrap();
    data[sixth as usize + 60] ^= 0x01;
    std::fs::write(&wal_path, &data).unwrap();
    let damaged = data;

    let home_arg = home.path().to_str().unwrap();
    let (ok, _, stderr) = run_a2a(&["serve", "--api-only", "--port", "0", "--home", home_arg]);
    assert!(!ok, "the server started on a damaged log: {stderr}");
    assert!(stderr.contains(&format!("the record at offset {sixth} is damaged (checksum mismatch)")), "{stderr}");
    assert!(stderr.contains("15 intact record(s)"), "{stderr}");
    let command = format!("a2a store repair --wal {} --truncate-at {sixth}", wal_path.display());
    assert!(stderr.contains(&command), "{stderr}");
    assert_eq!(std::fs::read(&wal_path).unwrap(), damaged, "a refused start changes nothing");

    // The repair command, as printed (with the binary under test).
    let (ok, stdout, stderr) =
        run_a2a(&["store", "repair", "--wal", wal_path.to_str().unwrap(), "--truncate-at", &sixth.to_string()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("kept: the 5 record(s) before offset"), "{stdout}");
    assert!(stdout.contains("dropped: the damaged record (checksum mismatch)"), "{stdout}");
    for i in 6..=20 {
        assert!(stdout.contains(&format!("put a2a.dev/agents default/a{i}\n")), "a{i} not listed: {stdout}");
    }
    let copy = stdout.lines().find_map(|l| l.strip_prefix("a copy of the log as it was: ")).expect(&stdout);
    assert_eq!(std::fs::read(copy).unwrap(), damaged, "the copy is the log as it was");

    let daemon = spawn(home.path(), &[]);
    let want: BTreeSet<String> = (1..=4).map(|i| format!("a{i}")).collect();
    assert_eq!(names(&daemon).await, want);
    // It takes writes again, at versions after the ones it kept.
    let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
    let made = api.create(&PostParams::default(), &agent("after-repair")).await.unwrap();
    assert!(made.metadata.resource_version.unwrap().parse::<u64>().unwrap() >= 6);
    drop(daemon);
    assert!(Path::new(copy).exists(), "the copy stays");

    // A torn tail: an append cut short by a crash (never acknowledged) after 20 that were.
    let home = tempfile::tempdir().unwrap();
    let wal_path = twenty_creates_then_kill(home.path()).await;
    let scan = wal::inspect(&wal_path, 0).unwrap();
    let (last_at, _) = scan.records[20];
    let mut data = std::fs::read(&wal_path).unwrap();
    let last = data[last_at as usize..scan.end as usize].to_vec();
    let end = scan.end as usize;
    data[end..end + last.len() / 2].copy_from_slice(&last[..last.len() / 2]);
    std::fs::write(&wal_path, &data).unwrap();
    assert!(matches!(wal::inspect(&wal_path, 0).unwrap().tail, wal::Tail::Torn(_)));
    let daemon = spawn(home.path(), &[]);
    assert_eq!(names(&daemon).await, all_twenty());
}

/// A small ext4 image mounted on a loop device under a temp dir; unmounted when dropped.
struct Ext4 {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Ext4 {
    fn new(mib: u64) -> Ext4 {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(Command::new("truncate").arg("-s").arg(format!("{mib}M")).arg(&image));
        // No blocks reserved for root: the test runs as root and must see the disk full.
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image));
        let mut fs = Ext4 { dir, mounted: false };
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mnt));
        fs.mounted = true;
        fs
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
            let block = vec![0xa5u8; chunk];
            while file.write_all(&block).and_then(|()| file.sync_data()).is_ok() {}
        }
        path
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.path();
            let ok = Command::new("umount").arg(&mnt).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            }
        }
    }
}

async fn get_text(client: &kube::Client, path: &str) -> (u16, String) {
    let (code, body) = raw(client, Method::GET, path, "application/json", Vec::new()).await;
    (
        code,
        match body {
            Value::String(s) => s,
            other => other.to_string(),
        },
    )
}

fn audit_lines(home: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("audit.log"))
        .collect();
    // The oldest first: audit.log.N, ..., audit.log.1, audit.log.
    let age = |p: &PathBuf| p.extension().and_then(|e| e.to_str()?.parse::<u32>().ok()).unwrap_or(0);
    files.sort_by_key(|p| std::cmp::Reverse(age(p)));
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{} ends in a partial line", f.display());
            text.lines()
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line in {}: {l:?}: {e}", f.display()))
                })
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_and_readiness_until_space_returns_and_loses_nothing() {
    let disk = Ext4::new(48);
    let home = disk.path().join("home");
    let daemon = spawn(&home, &["--store-reserve", "8Mi"]);
    assert!(home.join("state/store.reserve").exists());
    let client = client_without_retries(&daemon.kubeconfig).await;
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let mut acked = BTreeSet::new();
    let mut mutations = 0u64;
    for i in 0..20 {
        let name = format!("before-{i}");
        api.create(&PostParams::default(), &agent(&name)).await.unwrap();
        mutations += 1;
        acked.insert(name);
    }
    assert_eq!(get_text(&client, "/readyz").await, (200, "ok".to_string()));

    let filler = disk.fill();
    // Writes go on into the log's preallocated space until a checkpoint finds no room; then the
    // store gives back its reserve, checkpoints with it, and refuses writes.
    let mut refused = None;
    for i in 0..20_000 {
        let name = format!("full-{i}");
        mutations += 1;
        match api.create(&PostParams::default(), &agent(&name)).await {
            Ok(_) => {
                acked.insert(name);
            }
            Err(kube::Error::Api(e)) => {
                refused = Some(e);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let refused = refused.expect("a write refused on a full disk");
    assert_eq!((refused.code, refused.reason.as_str()), (503, "ServiceUnavailable"), "{refused:?}");
    assert!(refused.message.contains("is full: the store refuses writes"), "{}", refused.message);
    assert!(!home.join("state/store.reserve").exists(), "the reserve was given back");
    let (code, body) = get_text(&client, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("[-]store failed") && body.contains("is full"), "{body}");
    // Still refused, still readable.
    mutations += 1;
    let again = api.create(&PostParams::default(), &agent("refused")).await.unwrap_err();
    assert!(matches!(&again, kube::Error::Api(e) if e.code == 503), "{again}");
    let listed: BTreeSet<String> =
        api.list(&ListParams::default()).await.unwrap().items.into_iter().map(|a| a.metadata.name.unwrap()).collect();
    assert_eq!(listed, acked);

    // Every audit line on disk is whole; the ones that did not fit are counted.
    let (_, metrics) = get_text(&client, "/metrics").await;
    let lost = metric(&metrics, "a2a_audit_lines_lost_total");
    let lines = audit_lines(&home);
    assert_eq!(lines.len() as u64 + lost, mutations, "{} lines + {lost} lost", lines.len());

    // Space returns: the store takes its reserve again and writes resume.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get_text(&client, "/readyz").await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready after space returned: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(home.join("state/store.reserve").exists());
    api.create(&PostParams::default(), &agent("after-space")).await.unwrap();
    acked.insert("after-space".to_string());

    // Every acknowledged write is there after a crash and a restart.
    daemon.kill();
    let daemon = spawn(&home, &["--store-reserve", "8Mi"]);
    assert_eq!(names(&daemon).await, acked);
}

/// A client that shows every answer (kube-rs retries a 503 with backoff by default).
async fn client_without_retries(kubeconfig: &Path) -> kube::Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_on_a_full_disk_starts_again_with_its_reserve_and_loses_nothing() {
    let disk = Ext4::new(48);
    let home = disk.path().join("home");
    let daemon = spawn(&home, &["--store-reserve", "8Mi"]);
    let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
    let mut acked = BTreeSet::new();
    for i in 0..10 {
        api.create(&PostParams::default(), &agent(&format!("before-{i}"))).await.unwrap();
        acked.insert(format!("before-{i}"));
    }
    let filler = disk.fill();
    // These go to the log's preallocated blocks only: the next start has to apply them.
    for i in 0..10 {
        api.create(&PostParams::default(), &agent(&format!("full-{i}"))).await.unwrap();
        acked.insert(format!("full-{i}"));
    }
    daemon.kill();
    let before = std::fs::metadata(home.join("state/store.reserve")).unwrap().len();
    assert_eq!(before, 8 << 20);

    // The start gives the reserve back, applies the log with its room, and refuses writes.
    let daemon = spawn(&home, &["--store-reserve", "8Mi"]);
    let client = client_without_retries(&daemon.kubeconfig).await;
    assert_eq!(names(&daemon).await, acked);
    let (code, body) = get_text(&client, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let refused = api.create(&PostParams::default(), &agent("refused")).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(e) if e.code == 503), "{refused}");

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_text(&client, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "still not ready after space returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.create(&PostParams::default(), &agent("after-space")).await.unwrap();
    acked.insert("after-space".into());
    daemon.kill();
    let daemon = spawn(&home, &["--store-reserve", "8Mi"]);
    assert_eq!(names(&daemon).await, acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_mutation_has_a_whole_audit_line_after_sigkills() {
    let home = tempfile::tempdir().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..4u64 {
        let daemon = spawn(home.path(), &[]);
        let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
        let mut writers = Vec::new();
        for w in 0..4 {
            let api = api.clone();
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    match api.create(&PostParams::default(), &agent(&name)).await {
                        Ok(_) => mine.push(name),
                        Err(_) => break,
                    }
                }
                mine
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        daemon.kill();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
    }
    let audited: BTreeSet<String> = audit_lines(home.path())
        .into_iter()
        .filter(|l| l["verb"] == "create" && l["code"] == 201)
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.difference(&audited).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates have no audit line: {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!("{} acknowledged creates over 4 SIGKILLs, every one audited", acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_rotates_at_the_configured_size_and_keeps_that_many_files() {
    let home = tempfile::tempdir().unwrap();
    let daemon = spawn(home.path(), &["--audit-log-maxsize", "4Ki", "--audit-log-maxbackup", "2"]);
    let api: Api<Agent> = Api::namespaced(client_from(&daemon.kubeconfig, None).await, "default");
    for i in 0..200 {
        api.create(&PostParams::default(), &agent(&format!("a{i:03}"))).await.unwrap();
    }
    drop(daemon);
    let mut files: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("audit.log"))
        .collect();
    files.sort();
    assert_eq!(files, ["audit.log", "audit.log.1", "audit.log.2"]);
    for f in &files {
        assert!(std::fs::metadata(home.path().join(f)).unwrap().len() <= 4096, "{f} is over the limit");
    }
    // The newest lines are kept, whole and in order, up to the last create.
    let names: Vec<String> =
        audit_lines(home.path()).into_iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.last().map(String::as_str), Some("a199"));
}
