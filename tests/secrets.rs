//! Core v1 Secrets and ConfigMaps against `a2a serve` (a real daemon), written with
//! `a2a create` and the real kubectl (1.32, on the PATH): read back decoded, `stringData`
//! merged and never returned, errors that name fields and never values, and the values
//! absent from every file of the store and from the audit log, before and after a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kubectl_bin;
use common::{Daemon, run_a2a};

/// kubectl with the daemon's kubeconfig, a private discovery cache, and stdin from `input`.
fn kubectl(daemon: &Daemon, cache: &Path, args: &[&str], input: Option<&str>) -> (bool, String, String) {
    use std::io::Write as _;
    let mut c = Command::new(kubectl_bin());
    c.arg("--kubeconfig").arg(&daemon.kubeconfig).arg("--cache-dir").arg(cache).args(args);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or_default().as_bytes()).unwrap();
    drop(stdin);
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn ok(daemon: &Daemon, cache: &Path, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(daemon, cache, args, None);
    assert!(ok, "kubectl {args:?} failed:\n{out}{err}");
    out
}

fn a2a(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = daemon.kubeconfig.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", &kubeconfig]);
    run_a2a(&all)
}

/// The value of one key of a Secret, decoded by kubectl's jsonpath and base64.
fn value(daemon: &Daemon, cache: &Path, name: &str, key: &str) -> Vec<u8> {
    use base64::Engine as _;
    let out = ok(daemon, cache, &["get", "secret", name, "-o", &format!("jsonpath={{.data.{key}}}")]);
    base64::engine::general_purpose::STANDARD.decode(out.trim()).unwrap()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

/// Fails when any of `needles` (raw bytes) is in a file of the store or the audit log.
fn assert_nowhere_on_disk(home: &Path, needles: &[&[u8]]) {
    let mut files = files_under(&home.join("state"));
    files.push(home.join("audit.log"));
    assert!(files.iter().any(|f| f.ends_with("store.redb")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("store.wal")), "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == *n),
                "{} holds {:?} in the clear",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}

/// `a2a serve --api-only -vv` in `home`, its log (stderr) going to `log`.
fn spawn_logging(home: &Path, log: &Path) -> Daemon {
    use std::io::BufRead as _;
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(["serve", "--api-only", "--port", "0", "-vv", "--home"])
        .arg(home)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("https://")).expect("a URL").to_string();
    let kubeconfig = line
        .rsplit_once("(kubeconfig: ")
        .map(|(_, p)| PathBuf::from(p.trim().trim_end_matches(')')))
        .expect("a kubeconfig");
    Daemon { child, url, kubeconfig }
}

const SECRET_VALUES: [&str; 5] =
    ["sk-literal-4f8a1c", "sk-envfile-77d2e0", "sk-file-b19c3a", "sk-kubectl-5e6f70", "sk-stringdata-0a9b8c"];

#[test]
fn secrets_written_by_a2a_and_kubectl_read_back_but_never_reach_the_disk_in_the_clear() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("kube-cache");
    let inputs = tempfile::tempdir().unwrap();
    let log = inputs.path().join("serve.log");
    let mut daemon = spawn_logging(home.path(), &log);

    // Discovery lists both kinds, with kubectl's short name for ConfigMaps.
    let resources = ok(&daemon, &cache, &["api-resources", "--api-group="]);
    let row = |name: &str| resources.lines().find(|l| l.split_whitespace().next() == Some(name)).map(str::to_owned);
    assert!(row("secrets").is_some_and(|r| r.contains("Secret") && r.contains("true")), "{resources}");
    assert!(row("configmaps").is_some_and(|r| r.split_whitespace().nth(1) == Some("cm")), "{resources}");

    // a2a create secret generic, from a literal, an env file and a file.
    let env = inputs.path().join("llm.env");
    std::fs::write(&env, format!("# the model's key\nOPENAI_API_KEY={}\nMODEL=gpt-4o\n", SECRET_VALUES[1])).unwrap();
    let file = inputs.path().join("token.txt");
    std::fs::write(&file, SECRET_VALUES[2]).unwrap();
    let literal = format!("api-key={}", SECRET_VALUES[0]);
    let from_file = format!("token={}", file.display());
    let (done, out, err) =
        a2a(&daemon, &["create", "secret", "generic", "llm", "--from-literal", &literal, "--from-file", &from_file]);
    assert!(done, "{err}");
    assert_eq!(out, "secret/llm created\n");
    let env_path = env.display().to_string();
    let (done, out, err) = a2a(&daemon, &["create", "secret", "generic", "llm-env", "--from-env-file", &env_path]);
    assert!(done && out == "secret/llm-env created\n", "{out}{err}");
    let (done, out, err) = a2a(&daemon, &["create", "configmap", "settings", "--from-literal", "region=eu"]);
    assert!(done && out == "configmap/settings created\n", "{out}{err}");

    // kubectl create secret generic (a protobuf body) and stringData through server-side apply.
    let out = ok(
        &daemon,
        &cache,
        &["create", "secret", "generic", "kc", &format!("--from-literal=key={}", SECRET_VALUES[3])],
    );
    assert_eq!(out, "secret/kc created\n");
    let manifest =
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: sd\nstringData:\n  token: {}\n", SECRET_VALUES[4]);
    let (done, out, err) = kubectl(&daemon, &cache, &["apply", "--server-side", "-f", "-"], Some(&manifest));
    assert!(done, "{out}{err}");

    let check_values = |daemon: &Daemon| {
        assert_eq!(value(daemon, &cache, "llm", "api-key"), SECRET_VALUES[0].as_bytes());
        assert_eq!(value(daemon, &cache, "llm", "token"), SECRET_VALUES[2].as_bytes());
        assert_eq!(value(daemon, &cache, "llm-env", "OPENAI_API_KEY"), SECRET_VALUES[1].as_bytes());
        assert_eq!(value(daemon, &cache, "llm-env", "MODEL"), b"gpt-4o");
        assert_eq!(value(daemon, &cache, "kc", "key"), SECRET_VALUES[3].as_bytes());
        assert_eq!(value(daemon, &cache, "sd", "token"), SECRET_VALUES[4].as_bytes());
    };
    check_values(&daemon);
    // stringData is merged into data, and neither stored nor returned; the type defaults.
    let sd = ok(&daemon, &cache, &["get", "secret", "sd", "-o", "json"]);
    assert!(!sd.contains("stringData") && !sd.contains(SECRET_VALUES[4]), "{sd}");
    assert!(sd.contains(r#""type": "Opaque""#), "{sd}");

    // a2a get: NAME, TYPE, DATA (the number of keys), AGE; never a value. -o yaml: base64.
    let (done, table, err) = a2a(&daemon, &["get", "secrets"]);
    assert!(done, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
    let llm: Vec<&str> = table.lines().find(|l| l.starts_with("llm ")).unwrap().split_whitespace().collect();
    assert_eq!(llm[..3], ["llm", "Opaque", "2"]);
    for v in SECRET_VALUES {
        assert!(!table.contains(v), "{table}");
    }
    // kubectl create configmap and namespace send protobuf too; -n reaches the new namespace.
    assert_eq!(
        ok(&daemon, &cache, &["create", "configmap", "kcm", "--from-literal=a=1", "--from-literal=b=2"]),
        "configmap/kcm created\n"
    );
    assert_eq!(ok(&daemon, &cache, &["create", "namespace", "team"]), "namespace/team created\n");
    let (done, _, err) = a2a(&daemon, &["create", "secret", "generic", "t", "-n", "team", "--from-literal", "k=v"]);
    assert!(done, "{err}");
    assert_eq!(ok(&daemon, &cache, &["get", "secrets", "-n", "team", "-o", "name"]), "secret/t\n");
    let (done, cms, _) = a2a(&daemon, &["get", "cm"]);
    assert!(done, "{cms}");
    let rows: Vec<Vec<&str>> = cms.lines().map(|l| l.split_whitespace().take(2).collect()).collect();
    assert_eq!(rows, [vec!["NAME", "DATA"], vec!["kcm", "2"], vec!["settings", "1"]], "{cms}");
    let (_, yaml, _) = a2a(&daemon, &["get", "secret", "kc", "-o", "yaml"]);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUES[3]);
    assert!(yaml.contains(&format!("key: {encoded}")), "{yaml}");

    // Neither the values nor their base64 are in the log, the database or the audit log.
    let encoded: Vec<String> =
        SECRET_VALUES.iter().map(|v| base64::engine::general_purpose::STANDARD.encode(v)).collect();
    let mut needles: Vec<&[u8]> = SECRET_VALUES.iter().map(|v| v.as_bytes()).collect();
    needles.extend(encoded.iter().map(|e| e.as_bytes()));
    assert_nowhere_on_disk(home.path(), &needles);

    // After SIGKILL (the writes are in the log only) and a restart, every value reads back.
    daemon.kill();
    daemon = spawn_logging(home.path(), &log);
    check_values(&daemon);
    assert_nowhere_on_disk(home.path(), &needles);
    // Nor are they in the server's own log, at debug level.
    let logged = std::fs::read(&log).unwrap();
    assert!(logged.len() > 100, "the server logged nothing: {}", String::from_utf8_lossy(&logged));
    for n in &needles {
        assert!(!logged.windows(n.len()).any(|w| w == *n), "the server's log holds {:?}", String::from_utf8_lossy(n));
    }
}

#[test]
fn an_invalid_or_immutable_secret_is_refused_naming_the_field_never_the_value() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("kube-cache");
    let daemon = Daemon::spawn(home.path());
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\ndata:\n  token: '!!hunter2-not-base64'\n\
                    stringData:\n  bad/key: hunter3-plain\n";
    let (done, out, err) = kubectl(&daemon, &cache, &["create", "-f", "-"], Some(manifest));
    assert!(!done, "{out}");
    assert!(err.contains("data[token]") && err.contains("stringData[bad/key]"), "{err}");
    assert!(!err.contains("hunter"), "the error shows a value: {err}");
    let (done, _, err) = kubectl(&daemon, &cache, &["get", "secret", "bad"], None);
    assert!(!done && err.contains("NotFound"), "{err}");

    let (done, _, err) =
        a2a(&daemon, &["create", "secret", "generic", "frozen", "--from-literal", "k=v1", "--immutable"]);
    assert!(done, "{err}");
    let (done, _, err) =
        kubectl(&daemon, &cache, &["patch", "secret", "frozen", "-p", r#"{"stringData":{"k":"hunter4"}}"#], None);
    assert!(!done, "an immutable Secret was changed");
    assert!(err.contains("data: Invalid value") || err.contains("field is immutable"), "{err}");
    assert!(!err.contains("hunter4"), "{err}");
    // A plain Secret takes a strategic merge patch (kubectl patch's default for built-in kinds).
    a2a(&daemon, &["create", "secret", "generic", "open", "--from-literal", "k=v1"]);
    ok(&daemon, &cache, &["patch", "secret", "open", "-p", r#"{"stringData":{"k":"v2"}}"#]);
    assert_eq!(value(&daemon, &cache, "open", "k"), b"v2");

    // An immutable Secret can still be deleted; a2a delete takes Secrets as kubectl does.
    let (done, out, err) = a2a(&daemon, &["delete", "secret", "frozen", "open"]);
    assert!(done, "{err}");
    assert_eq!(out, "secret/frozen deleted\nsecret/open deleted\n");
    let (done, _, err) = kubectl(&daemon, &cache, &["get", "secret", "frozen"], None);
    assert!(!done && err.contains("NotFound"), "{err}");
    let (done, _, err) = a2a(&daemon, &["delete", "secret/frozen"]);
    assert!(!done && err.contains(r#"secrets "frozen" not found"#), "{err}");
}

/// SHA-256 of every file under `dir` (but kubectl's cache), for "nothing changed".
fn digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = files_under(dir);
    files.retain(|f| !f.starts_with(dir.join("kube-cache")));
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let d = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&f).unwrap()).as_ref().to_vec();
            (f, d)
        })
        .collect()
}

#[test]
fn a_missing_key_file_with_encrypted_secrets_refuses_to_start_and_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("kube-cache");
    let daemon = Daemon::spawn(home.path());
    let (done, _, err) = a2a(&daemon, &["create", "secret", "generic", "keep", "--from-literal", "k=precious"]);
    assert!(done, "{err}");
    daemon.kill();

    let key = home.path().join("pki/secrets.key");
    let saved = home.path().join("secrets.key.saved");
    std::fs::rename(&key, &saved).unwrap();
    let before = digest(home.path());
    let h = home.path().display().to_string();
    let (started, _, err) = run_a2a(&["serve", "--api-only", "--port", "0", "--home", &h]);
    assert!(!started, "a2a serve started without the key that opens its Secrets");
    assert!(err.contains(&key.display().to_string()) && err.contains("is missing"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(digest(home.path()), before, "the refused start changed the home");

    // With the key back, the Secret is as it was.
    std::fs::rename(&saved, &key).unwrap();
    let daemon = Daemon::spawn(home.path());
    assert_eq!(value(&daemon, &cache, "keep", "k"), b"precious");
}

#[test]
fn secrets_and_config_maps_in_manifests_are_checked_applied_diffed_masked_and_deleted() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("kube-cache");
    let daemon = Daemon::spawn(home.path());
    let file = home.path().join("provider.yaml");
    let manifest = |value: &str, model: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: provider\nstringData:\n  api-key: {value}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: provider-settings\ndata:\n  model: {model}\n"
        )
    };
    let file_arg = file.display().to_string();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-f", &file_arg]);
        a2a(&daemon, &all)
    };

    // Checked offline as the API server checks them, naming the key and never the value.
    std::fs::write(&file, manifest("hunter5-first", "m1").replace("api-key:", "bad/key:")).unwrap();
    let validate = || run_a2a(&["validate", "-f", &file_arg]);
    let (done, out, err) = validate();
    assert!(!done, "{out}");
    assert!(err.contains("document 1 (Secret/provider)") && err.contains("stringData[bad/key]"), "{err}");
    assert!(!err.contains("hunter5"), "the error shows a value: {err}");
    let (done, _, err) = run(&["apply"]);
    assert!(!done && err.contains("stringData[bad/key]"), "{err}");
    let (done, _, err) = kubectl(&daemon, &cache, &["get", "secret", "provider"], None);
    assert!(!done && err.contains("NotFound"), "an invalid manifest was applied in part: {err}");

    std::fs::write(&file, manifest("hunter5-first", "m1")).unwrap();
    let (done, out, err) = validate();
    assert!(done && out == "2 documents valid\n", "{out}{err}");
    let (done, out, err) = run(&["apply"]);
    assert!(done, "{err}");
    assert_eq!(out, "secret/provider created\nconfigmap/provider-settings created\n");
    assert_eq!(value(&daemon, &cache, "provider", "api-key"), b"hunter5-first");
    let (_, out, _) = run(&["apply"]);
    assert_eq!(out, "secret/provider unchanged\nconfigmap/provider-settings unchanged\n");
    let (done, out, err) = run(&["diff"]);
    assert!(done && out.is_empty(), "nothing changes, yet: {out}{err}");

    // A new value: the diff says which key changes and never what it holds.
    std::fs::write(&file, manifest("hunter5-second", "m2")).unwrap();
    // As `kubectl diff`: exit 1 when something would change.
    let (done, out, err) = run(&["diff"]);
    assert!(!done && err.is_empty(), "{err}");
    assert!(out.contains("-  api-key: '*** (before)'") && out.contains("+  api-key: '*** (after)'"), "{out}");
    assert!(out.contains("-  model: m1") && out.contains("+  model: m2"), "a ConfigMap's values are shown: {out}");
    assert!(!out.contains("hunter5") && !out.contains("aHVudGVy"), "the diff shows a Secret's value: {out}");
    assert_eq!(value(&daemon, &cache, "provider", "api-key"), b"hunter5-first", "diff changed nothing");
    let (_, out, _) = run(&["apply"]);
    assert_eq!(out, "secret/provider configured\nconfigmap/provider-settings configured\n");
    assert_eq!(value(&daemon, &cache, "provider", "api-key"), b"hunter5-second");

    let (done, out, err) = run(&["delete"]);
    assert!(done, "{err}");
    assert_eq!(out, "secret/provider deleted\nconfigmap/provider-settings deleted\n");
    let (done, _, err) = kubectl(&daemon, &cache, &["get", "configmap", "provider-settings"], None);
    assert!(!done && err.contains("NotFound"), "{err}");
}
