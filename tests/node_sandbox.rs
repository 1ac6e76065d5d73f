//! Agents under a root `a2a serve` on the real kernel run confined: a uid of their own, no
//! capabilities, `$A2A_HOME` out of reach, a read-only system but for their home, a private
//! `/tmp` and their `writablePaths`, and no way into any `cgroup.procs`. `user: root` is
//! possible and said so by a condition.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::Agent;
use a2a::api::common::ConditionStatus;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, tear_down};

const REGISTRY: &str = "/var/lib/a2a";

/// What each probing agent prints before it sleeps: its credentials, whether it reads the
/// token, and which writes the kernel lets through.
const PROBE: &str = r#"
grep -E '^(Uid|Gid|CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status
echo "token: $(cat "$TOKEN" 2>&1 >/dev/null || true)"
w() { if (echo "$3" > "$1") 2>/dev/null; then echo "write $2: ok"; else echo "write $2: refused"; fi; }
[ -n "$HOME_IS_MINE" ] && w "$HOME/probe" home x
w "/tmp/a2a-probe-$A2A_AGENT" tmp x
w /var/tmp/probe vartmp x
w "$RW/probe" rw x
w "$RO/probe" ro x
w /etc/a2a-probe etc x
own=
while IFS=: read -r _ ctl path; do
  case "$ctl" in
    "") own="/sys/fs/cgroup$path/cgroup.procs" ;;
    *pids*) own="/sys/fs/cgroup/pids$path/cgroup.procs" ;;
  esac
done < /proc/self/cgroup
w "$own" own-cgroup.procs $$
n=0
for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do
  [ -e "$f" ] || continue
  n=$((n+1))
  w "$f" "cgroup.procs $f" $$
done
echo "cgroup.procs tried: $n"
[ -e "$MARKER" ] && echo "host /tmp: visible" || echo "host /tmp: hidden"
echo probe done
exec sleep 600
"#;

fn probe_agent(name: &str, env: &[(&str, String)], extra: &str) -> String {
    let script = PROBE.replace('\n', "\n      ");
    let env: String = env.iter().map(|(k, v)| format!("    - {{ name: {k}, value: {v:?} }}\n")).collect();
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: {name} }}\nspec:\n  command:\n    - sh\n    - -c\n    - |\n      {script}\n  env:\n{env}{extra}---\n"
    )
}

fn log_of(home: &Path, agent: &str) -> String {
    std::fs::read_to_string(home.join("logs/default").join(agent).join("0.log")).unwrap_or_default()
}

async fn wait_log(home: &Path, agent: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = log_of(home, agent);
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "{agent} never logged {needle:?}; its log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_agent(client: &kube::Client, name: &str, ok: impl Fn(&Agent) -> bool) -> Agent {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(a)) = api.get_opt(name).await
            && ok(&a)
        {
            return a;
        }
        assert!(Instant::now() < deadline, "agent {name} never reached the expected state");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pid(a: &Agent) -> Option<u32> {
    a.status.as_ref()?.instances.first()?.pid.and_then(|p| u32::try_from(p).ok())
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's /proc status");
    status.lines().find_map(|l| l.strip_prefix(field)).expect("field").split_whitespace().next().unwrap().to_owned()
}

fn line<'a>(log: &'a str, prefix: &str) -> &'a str {
    log.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in:\n{log}"))
}

/// A directory the agents may or may not be given, world-writable so that only the mount
/// decides (file permissions would refuse an unprivileged uid anyway).
fn open_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_runs_as_a_uid_of_its_own_without_capabilities_and_cannot_read_the_token_or_another_agents_environ()
{
    let scratch = Scratch::outside_tmp("uids");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let token = home.join("token");
    assert!(token.exists(), "the daemon writes its token at {}", token.display());
    let dirs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    std::fs::set_permissions(dirs.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (rw, ro) = (open_dir(dirs.path(), "rw"), open_dir(dirs.path(), "ro"));
    let env = |secret: &str| {
        vec![
            ("TOKEN", token.display().to_string()),
            ("SECRET", secret.to_owned()),
            ("HOME_IS_MINE", "1".to_owned()),
            ("RW", rw.display().to_string()),
            ("RO", ro.display().to_string()),
            ("MARKER", "/tmp/.a2a-sandbox-marker".to_owned()),
        ]
    };
    apply(home, &probe_agent("alpha", &env("alpha-key-1234"), &format!("  writablePaths: [{}]\n", rw.display())));
    let log = wait_log(home, "alpha", "probe done").await;
    let a = wait_agent(&client, "alpha", |a| pid(a).is_some()).await;
    let alpha_pid = pid(&a).unwrap();

    // Its own uid from the dynamic range, no capability at all, no_new_privs.
    let uid: u32 = line(&log, "Uid:").split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((61184..=65519).contains(&uid), "{log}");
    assert_eq!(line(&log, "Uid:").split_whitespace().skip(1).collect::<Vec<_>>(), vec![uid.to_string(); 4]);
    for caps in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(line(&log, caps).split_whitespace().nth(1), Some("0000000000000000"), "{log}");
    }
    assert_eq!(line(&log, "NoNewPrivs:").split_whitespace().nth(1), Some("1"));
    assert!(line(&log, "token:").ends_with("Permission denied"), "{log}");
    assert!(std::fs::read_to_string(&token).is_ok_and(|t| !t.is_empty()), "the token is there to be refused");
    // Writes: its home, its private /tmp and /var/tmp, its writablePaths; nothing else.
    for ok in ["home", "tmp", "vartmp", "rw"] {
        assert!(log.contains(&format!("write {ok}: ok")), "{ok}: {log}");
    }
    for refused in ["ro", "etc", "own-cgroup.procs"] {
        assert!(log.contains(&format!("write {refused}: refused")), "{refused}: {log}");
    }
    assert!(rw.join("probe").exists() && !ro.join("probe").exists());
    assert!(!Path::new("/tmp/a2a-probe-alpha").exists(), "its /tmp is not the host's");

    // The condition says so.
    let sandboxed = a.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Sandboxed").cloned();
    let sandboxed = sandboxed.expect("a Sandboxed condition");
    assert_eq!((sandboxed.status, sandboxed.reason.as_str()), (ConditionStatus::True, "DynamicUser"));
    assert!(sandboxed.message.contains(&format!("uid {uid}")), "{}", sandboxed.message);

    // A second agent has another uid, and cannot read the first one's environment.
    let mut env_b = env("beta-key-5678");
    env_b.push(("TARGET", alpha_pid.to_string()));
    apply(
        home,
        &probe_agent("beta", &env_b, "").replace(
            "exec sleep 600",
            "echo \"environ: $(tr '\\0' '\\n' 2>&1 < /proc/$TARGET/environ)\"\n      exec sleep 600",
        ),
    );
    let log_b = wait_log(home, "beta", "environ:").await;
    let uid_b: u32 = line(&log_b, "Uid:").split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((61184..=65519).contains(&uid_b) && uid_b != uid, "{uid} and {uid_b}");
    assert!(line(&log_b, "environ:").ends_with("Permission denied"), "{log_b}");
    assert!(!log_b.contains("alpha-key-1234"));
    // Not a file the kernel refuses to everyone: the daemon (root) reads it.
    let environ = std::fs::read(format!("/proc/{alpha_pid}/environ")).expect("root reads it");
    assert!(String::from_utf8_lossy(&environ).contains("SECRET=alpha-key-1234"));

    // The uid is the agent's: a replica started again gets it, a killed daemon's successor
    // re-adopts the process and keeps the registry entry.
    let entry = Path::new(REGISTRY).join("uids").join(uid.to_string());
    let home_dir = Path::new(REGISTRY).join("homes").join(uid.to_string());
    assert!(entry.exists() && home_dir.join("probe").exists());
    let _ = std::process::Command::new("kill").args(["-9", &alpha_pid.to_string()]).status();
    let again = wait_agent(&client, "alpha", |a| pid(a).is_some_and(|p| p != alpha_pid)).await;
    let new_pid = pid(&again).unwrap();
    assert_eq!(status_field(new_pid, "Uid:"), uid.to_string(), "the restarted replica has the same uid");
    daemon.kill9();
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    wait_agent(&client, "alpha", |a| pid(a) == Some(new_pid)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(entry.exists(), "the restarted daemon keeps the agent's uid");

    // Deleted: its uid and home are given back.
    Api::<Agent>::namespaced(client.clone(), "default").delete("alpha", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while entry.exists() || home_dir.exists() {
        assert!(Instant::now() < deadline, "the deleted agent's uid {uid} was never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_root_runs_as_root_without_capabilities_on_a_read_only_system_and_shows_the_condition() {
    let scratch = Scratch::outside_tmp("root");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let dirs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (rw, ro) = (open_dir(dirs.path(), "rw"), open_dir(dirs.path(), "ro"));
    let env = vec![
        ("TOKEN", home.join("token").display().to_string()),
        ("RW", rw.display().to_string()),
        ("RO", ro.display().to_string()),
        ("MARKER", "/tmp/.a2a-sandbox-marker".to_owned()),
    ];
    apply(home, &probe_agent("boss", &env, &format!("  user: root\n  writablePaths: [{}]\n", rw.display())));
    let log = wait_log(home, "boss", "probe done").await;
    assert_eq!(line(&log, "Uid:").split_whitespace().nth(1), Some("0"), "{log}");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(line(&log, caps).split_whitespace().nth(1), Some("0000000000000000"), "{log}");
    }
    // Root owns the token, but $A2A_HOME is an empty directory in the agent's view.
    assert!(line(&log, "token:").ends_with("No such file or directory"), "{log}");
    for ok in ["tmp", "rw"] {
        assert!(log.contains(&format!("write {ok}: ok")), "{ok}: {log}");
    }
    for refused in ["ro", "etc", "own-cgroup.procs"] {
        assert!(log.contains(&format!("write {refused}: refused")), "{refused}: {log}");
    }
    // Not one cgroup.procs: a root agent used to move itself out of its cgroup.
    let tried: usize = line(&log, "cgroup.procs tried:").rsplit(' ').next().unwrap().parse().unwrap();
    assert!(tried > 0, "{log}");
    assert_eq!(
        log.lines().filter(|l| l.starts_with("write cgroup.procs") && l.ends_with("refused")).count(),
        tried,
        "{log}"
    );
    let a = wait_agent(&client, "boss", |a| pid(a).is_some()).await;
    assert_eq!(status_field(pid(&a).unwrap(), "Uid:"), "0");
    let c = a.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Sandboxed").cloned().expect("condition");
    assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::False, "RunsAsRoot"));
    assert!(c.message.contains("uid 0"), "{}", c.message);
    tear_down(daemon).await;
}

/// The private `/tmp`: what the host has there is not the agent's, and what the agent puts
/// there stays with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_tmp_is_its_own() {
    let scratch = Scratch::outside_tmp("tmp");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let marker = tempfile::NamedTempFile::new().expect("a file in the host's /tmp");
    let dirs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (rw, ro) = (open_dir(dirs.path(), "rw"), open_dir(dirs.path(), "ro"));
    let env = vec![
        ("TOKEN", home.join("token").display().to_string()),
        ("RW", rw.display().to_string()),
        ("RO", ro.display().to_string()),
        ("MARKER", marker.path().display().to_string()),
    ];
    apply(home, &probe_agent("tmpuser", &env, ""));
    let log = wait_log(home, "tmpuser", "probe done").await;
    assert!(log.contains("host /tmp: hidden"), "{log}");
    assert!(log.contains("write tmp: ok"), "{log}");
    assert!(!Path::new("/tmp/a2a-probe-tmpuser").exists(), "the agent's /tmp file is not in the host's /tmp");
    tear_down(daemon).await;
}
