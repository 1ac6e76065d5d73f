//! Secrets and ConfigMaps reaching agents under `a2a serve` on the real kernel: values in the
//! environment of the real process (`valueFrom`, `envFrom` with a prefix), nowhere else (not
//! in the daemon's log, the audit log, `a2a describe`, `a2a get -o yaml`, or the store's
//! bytes); a rotated Secret rolls the agent and an unrelated one does not; a missing Secret or
//! key keeps it Pending with kubelet's reason until it appears; secret files on a tmpfs of
//! the replica's own, 0400 and owned by the agent's uid.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::common::find_condition;
use k8s_openapi::api::core::v1::Event;
use kube::Api;

use common::node::{Daemon, Scratch, apply, pids, tear_down, wait_agent};

/// Within a loaded CI machine's patience.
const PATIENCE: Duration = Duration::from_secs(40);

fn a2a(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .env("A2A_HOME", home)
        .env_remove("A2A_KUBECONFIG")
        .output()
        .expect("run a2a")
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = a2a(home, args);
    assert!(out.status.success(), "a2a {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real kubectl against the daemon, with a private discovery cache.
fn kubectl(home: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(home.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(home.join("kube-cache"))
        .args(args)
        .output()
        .expect("run kubectl (1.32 on the PATH)");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory the agent's own uid may write its environment into.
fn drop_box() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// The environment the process `pid` wrote into `dir` (`env.PID`), once it is there.
async fn env_of(dir: &Path, pid: i32) -> String {
    let file = dir.join(format!("env.{pid}"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && text.contains("WRITTEN=yes")
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never written", file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn var<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn ready_reason(a: &Agent) -> Option<(String, String)> {
    let c = find_condition(&a.status.as_ref()?.conditions, "Ready")?;
    Some((c.reason.clone(), c.message.clone()))
}

const KEY: &str = "sk-agent-secret-3c9d1e";
const ROTATED: &str = "sk-agent-rotated-8b7a6f";
const PASSWORD: &str = "pw-envfrom-51d0c2";

/// An agent that writes its environment into `out` (`env.PID`) and then serves A2A (the demo
/// agent), so that it becomes ready and a rollout may replace it. The demo agent runs from a
/// copy in `out`: the agent's own `/tmp` is private, so a build under `/tmp` is not in its view,
/// while `out`, one of its writable paths, is.
fn agent_yaml(name: &str, out: &Path) -> String {
    let exe = out.join("a2a");
    if !exe.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_a2a"), &exe).expect("copy the binary");
    }
    format!(
        r#"apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{ name: {name} }}
spec:
  command: [sh, -c, 'env > "$OUT/env.$$.tmp"; echo WRITTEN=yes >> "$OUT/env.$$.tmp"; mv "$OUT/env.$$.tmp" "$OUT/env.$$"; exec "$EXE" demo-agent']
  writablePaths: [{out}]
  env:
    - {{ name: OUT, value: {out} }}
    - {{ name: EXE, value: {exe} }}
    - name: API_KEY
      valueFrom: {{ secretKeyRef: {{ name: openai, key: api-key }} }}
    - name: MODE
      valueFrom: {{ configMapKeyRef: {{ name: settings, key: mode }} }}
  envFrom:
    - {{ secretRef: {{ name: db }}, prefix: DB_ }}
    - configMapRef: {{ name: settings }}
"#,
        out = out.display(),
        exe = exe.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_reach_the_agent_s_environment_and_nothing_else_and_a_rotation_rolls_it() {
    let scratch = Scratch::outside_tmp("secretenv");
    let home = scratch.home();
    let log = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).expect("log file");
    let daemon = Daemon::start_logging(home, scratch.top(), &["-vv"], Some(log.path()));
    let client = daemon.client().await;
    let out = drop_box();

    ok(home, &["create", "secret", "generic", "openai", "--from-literal", &format!("api-key={KEY}")]);
    ok(home, &["create", "secret", "generic", "db", "--from-literal", &format!("PASSWORD={PASSWORD}")]);
    ok(home, &["create", "configmap", "settings", "--from-literal", "mode=fast", "--from-literal", "bad-name=x"]);
    ok(home, &["create", "secret", "generic", "unrelated", "--from-literal", "x=1"]);
    apply(home, &agent_yaml("reader", out.path()));

    let ready = |a: &Agent| a.status.as_ref().is_some_and(|s| s.ready_replicas == 1);
    let agent = wait_agent(&client, "reader", PATIENCE, ready).await;
    let pid = pids(&agent)[0];
    let env = env_of(out.path(), pid).await;
    assert_eq!(var(&env, "API_KEY"), Some(KEY), "secretKeyRef");
    assert_eq!(var(&env, "MODE"), Some("fast"), "configMapKeyRef");
    assert_eq!(var(&env, "DB_PASSWORD"), Some(PASSWORD), "envFrom a Secret with a prefix");
    assert_eq!(var(&env, "mode"), Some("fast"), "envFrom a ConfigMap");
    assert_eq!(var(&env, "bad-name"), None, "a key that is no variable name is skipped");

    // The skipped key is reported by name, in an Event.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("InvalidEnvironmentVariableNames")
                && e.message.as_deref().is_some_and(|m| m.contains("ConfigMap/settings: bad-name"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no InvalidEnvironmentVariableNames event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The values are nowhere but in the process: not in describe, get -o yaml, the daemon's
    // log, the audit log or any file of the home (the store is encrypted at rest).
    let describe = ok(home, &["describe", "agent", "reader"]);
    let yaml = ok(home, &["get", "agent", "reader", "-o", "yaml"]);
    assert!(yaml.contains("secretKeyRef") && yaml.contains("api-key"), "{yaml}");
    for (what, text) in [("describe", describe.as_bytes()), ("get -o yaml", yaml.as_bytes())] {
        for v in [KEY, PASSWORD] {
            assert!(!holds(text, v), "{what} shows a secret value");
        }
    }

    // A change of an unrelated Secret rolls nothing.
    kubectl(home, &["patch", "secret", "unrelated", "-p", r#"{"stringData":{"x":"2"}}"#]);
    // Rotating the referenced Secret rolls the agent: a new process with the new value.
    kubectl(home, &["patch", "secret", "openai", "-p", &format!(r#"{{"stringData":{{"api-key":"{ROTATED}"}}}}"#)]);
    let rolled = wait_agent(&client, "reader", PATIENCE, |a| pids(a).first().is_some_and(|p| *p != pid)).await;
    let new_pid = pids(&rolled)[0];
    let env = env_of(out.path(), new_pid).await;
    assert_eq!(var(&env, "API_KEY"), Some(ROTATED));
    assert_eq!(rolled.status.as_ref().map(|s| s.restarts), Some(1), "one roll, for the rotation only");
    // And the unrelated Secret, changed before, did not roll it a second time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = wait_agent(&client, "reader", PATIENCE, |_| true).await;
    assert_eq!(pids(&still), vec![new_pid]);
    kubectl(home, &["patch", "secret", "unrelated", "-p", r#"{"stringData":{"x":"3"}}"#]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = wait_agent(&client, "reader", PATIENCE, |_| true).await;
    assert_eq!(pids(&still), vec![new_pid], "an unrelated Secret's change rolls nothing");

    tear_down(daemon).await;
    let logged = std::fs::read_to_string(log.path()).expect("the daemon's log");
    assert!(logged.contains("started agent replica"), "the daemon logged at debug level:\n{logged}");
    let mut files = files_under(home);
    files.push(log.path().to_path_buf());
    assert!(files.iter().any(|f| f.ends_with("audit.log")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("store.redb")), "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for v in [KEY, ROTATED, PASSWORD] {
            assert!(!holds(&bytes, v), "{} holds a secret value in the clear", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_or_key_keeps_the_agent_pending_until_it_appears() {
    let scratch = Scratch::outside_tmp("secretwait");
    let home = scratch.home();
    let daemon = Daemon::start(home, scratch.top(), &[]);
    let client = daemon.client().await;
    apply(
        home,
        r#"apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: { name: waiter }
spec:
  command: [sleep, "600"]
  env:
    - name: TOKEN
      valueFrom: { secretKeyRef: { name: late, key: token } }
"#,
    );
    let pending = |want: &'static str| {
        move |a: &Agent| {
            a.status.as_ref().and_then(|s| s.phase) == Some(a2a::api::agent::AgentPhase::Pending)
                && ready_reason(a).is_some_and(|(r, m)| r == "CreateContainerConfigError" && m == want)
        }
    };
    let a = wait_agent(&client, "waiter", PATIENCE, pending("secret \"late\" not found")).await;
    assert!(pids(&a).is_empty(), "nothing started");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&Default::default()).await.expect("events");
    assert!(
        list.items.iter().any(|e| e.reason.as_deref() == Some("CreateContainerConfigError")
            && e.type_.as_deref() == Some("Warning")
            && e.message.as_deref().is_some_and(|m| m.contains("secret \"late\" not found"))),
        "{:?}",
        list.items.iter().map(|e| (&e.reason, &e.message)).collect::<Vec<_>>()
    );

    // The Secret appears without the key: the message names the key.
    ok(home, &["create", "secret", "generic", "late", "--from-literal", "other=1"]);
    wait_agent(&client, "waiter", PATIENCE, pending("couldn't find key token in Secret default/late")).await;
    // The key appears: the agent starts, with no action on the Agent.
    kubectl(home, &["patch", "secret", "late", "-p", r#"{"stringData":{"token":"t-1"}}"#]);
    wait_agent(&client, "waiter", PATIENCE, |a| !pids(a).is_empty()).await;
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_are_on_a_tmpfs_of_the_replica_read_only_0400_owned_by_the_agent_and_go_with_it() {
    let scratch = Scratch::outside_tmp("secretfiles");
    let home = scratch.home();
    let daemon = Daemon::start(home, scratch.top(), &[]);
    let client = daemon.client().await;
    let out = drop_box();
    let name = format!("files-{}", std::process::id());
    ok(home, &["create", "secret", "generic", "openai", "--from-literal", &format!("api-key={KEY}")]);
    ok(
        home,
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal",
            &format!("PASSWORD={PASSWORD}"),
            "--from-literal",
            "USER=u",
        ],
    );
    // What the agent sees, in its own words: the files' mode, owner and bytes, its own uid,
    // the file system they are on, and whether it can change them.
    let script = r#"f=/run/secrets/openai/api-key; p=/run/secrets/database/sub/pw;
{ echo "uid=$(id -u)"; echo "mode=$(stat -c %a $f) owner=$(stat -c %u $f)"; echo "key=$(cat $f)";
  echo "pw=$(cat $p) pwmode=$(stat -c %a $p)"; echo "fs=$(stat -f -c %T /run/secrets/openai)";
  echo "only=$(ls /run/secrets/database | tr '\n' ' ')";
  if echo x > $f 2>/dev/null || touch /run/secrets/openai/new 2>/dev/null; then echo writable=yes; else echo writable=no; fi;
  echo WRITTEN=yes; } > "$OUT/env.tmp"; mv "$OUT/env.tmp" "$OUT/env.$$"; exec sleep 600"#;
    apply(
        home,
        &format!(
            r#"apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{ name: {name} }}
spec:
  command: [sh, -c, {script:?}]
  writablePaths: [{out}]
  env: [{{ name: OUT, value: {out} }}]
  secretFiles:
    - secretName: openai
    - secretName: db
      mountPath: /run/secrets/database
      items: [{{ key: PASSWORD, path: sub/pw }}]
"#,
            out = out.path().display()
        ),
    );
    let agent = wait_agent(&client, &name, PATIENCE, |a| !pids(a).is_empty()).await;
    let seen = env_of(out.path(), pids(&agent)[0]).await;
    let uid = var(&seen, "uid").expect("uid").to_owned();
    assert_ne!(uid, "0", "a uid of its own");
    assert_eq!(var(&seen, "mode"), Some(format!("400 owner={uid}").as_str()), "{seen}");
    assert_eq!(var(&seen, "key"), Some(KEY));
    assert_eq!(var(&seen, "pw"), Some(format!("{PASSWORD} pwmode=400").as_str()), "items pick keys and paths");
    assert_eq!(var(&seen, "fs"), Some("tmpfs"));
    assert_eq!(var(&seen, "only"), Some("sub "), "only the listed items");
    assert_eq!(var(&seen, "writable"), Some("no"));

    // On the host: the replica's tmpfs, unreadable to others, gone with the replica.
    let state = Path::new("/var/lib/a2a/secrets");
    let mine: Vec<PathBuf> = std::fs::read_dir(state)
        .expect("the secret files directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(&format!(".default.{name}.0")))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mounted = |p: &Path| mounts.lines().any(|l| l.split_whitespace().nth(4) == Some(&*p.to_string_lossy()));
    assert!(mounted(&mine[0]), "a tmpfs of its own");
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(&mine[0]).expect("metadata");
        assert_eq!((meta.permissions().mode() & 0o777, meta.uid().to_string()), (0o500, uid.clone()));
    }
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    api.delete(&name, &Default::default()).await.expect("delete");
    let deadline = Instant::now() + PATIENCE;
    while mine[0].exists() {
        assert!(Instant::now() < deadline, "the replica's secret files outlive it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&*mine[0].to_string_lossy()), "unmounted");
    tear_down(daemon).await;
}
