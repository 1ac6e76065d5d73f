//! The foundation end to end: generated CRDs, examples, round trips and the CLI surface.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use a2a::api::{self, Agent, ResourceBudget, Workflow};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn a2a(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2a")).args(args).current_dir(root()).output().expect("run a2a")
}

fn a2a_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a2a");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait a2a")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn crds_directory_matches_what_the_types_generate() {
    let committed = std::fs::read_to_string(root().join("crds/a2a.dev.yaml")).expect("read crds/a2a.dev.yaml");
    assert!(
        committed == api::crds_yaml(),
        "crds/a2a.dev.yaml is stale: run `cargo run -- crd > crds/a2a.dev.yaml` and commit it"
    );
}

#[test]
fn a2a_crd_prints_only_yaml_on_stdout_even_with_verbose_logs() {
    let out = a2a(&["-vvv", "crd"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), api::crds_yaml());
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text(&out.stdout))
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .collect();
    let names: Vec<&str> = docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["agents.a2a.dev", "workflows.a2a.dev", "resourcebudgets.a2a.dev"]);
}

/// The venv that `.ci/run` prepares (override with A2A_TEST_VENV).
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("A2A_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv"));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run `python3 -m venv .venv && .venv/bin/pip install kubernetes-validate` (as .ci/run does)",
        tool.display()
    );
    tool
}

#[test]
fn crds_pass_strict_kubernetes_validation() {
    let out = a2a(&["crd"]);
    let mut child = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubernetes-validate");
    child.stdin.take().expect("stdin").write_all(&out.stdout).expect("pipe CRDs");
    let res = child.wait_with_output().expect("kubernetes-validate");
    let report = text(&res.stdout) + &text(&res.stderr);
    assert!(res.status.success(), "kubernetes-validate failed:\n{report}");
    assert_eq!(report.matches("passed for resource customresourcedefinition/").count(), 3, "{report}");
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Example files that are not a2a manifests (GitOps tool objects, chart values...).
fn is_a2a_manifest(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains("apiVersion: a2a.dev/"))
}

#[test]
fn every_example_validates() {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    files.retain(|f| is_a2a_manifest(f));
    assert!(files.len() >= 6, "examples/ should hold the quickstart and one example per feature");
    for file in files {
        let out = a2a(&["validate", "-f", file.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{} does not validate:\n{}", file.display(), text(&out.stderr));
    }
}

#[test]
fn quickstart_has_a_budget_agents_and_a_fan_out_fan_in_workflow() {
    let text = std::fs::read_to_string(root().join("examples/quickstart.yaml")).expect("quickstart");
    let docs = api::manifest::load_str("quickstart.yaml", &text).expect("valid");
    let kinds: Vec<api::Kind> = docs.iter().map(|d| d.object.kind()).collect();
    assert!(kinds.contains(&api::Kind::ResourceBudget));
    assert!(kinds.iter().filter(|k| **k == api::Kind::Agent).count() >= 2);
    let wf = docs
        .iter()
        .find_map(|d| match &d.object {
            api::Object::Workflow(w) => Some(w),
            _ => None,
        })
        .expect("a workflow");
    let fan_out = wf.spec.tasks.iter().filter(|t| t.depends_on.len() == 1).count();
    let fan_in = wf.spec.tasks.iter().filter(|t| t.depends_on.len() >= 2).count();
    assert!(fan_out >= 2 && fan_in >= 1, "fan-out {fan_out}, fan-in {fan_in}");
}

const FULL: &str = r#"
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata:
  name: full
  namespace: team
  labels: { app: x }
  annotations: { note: "kept" }
spec:
  command: [python3, agent.py]
  args: [--verbose]
  env: [{ name: MODEL, value: small }]
  workingDir: /srv/agent
  user: "1000:1000"
  image: example.org/agent:1
  protocol: a2a
  replicas: 2
  maxConcurrentTasks: 3
  skills: [echo, summarize]
  port: 0
  resources:
    requests: { cpu: 250m, memory: 64Mi, pids: 8 }
    limits: { cpu: "1.5", memory: 1073741824, pids: "64" }
  priority: high
  budget: team
  restartPolicy: OnFailure
status:
  phase: Running
  replicas: 2
  readyReplicas: 1
  ready: 1/2
  restarts: 3
  lastTermination: { reason: OOMKilled, signal: 9, at: "2026-11-24T05:00:00Z" }
  usage: { memory: 12Mi, memoryBytes: 12582912, cpu: 10m, cpuMillicores: 10, pids: 3 }
  endpoints: ["http://127.0.0.1:4001/"]
  card: { name: full, version: "1.0", skills: [echo], streaming: true }
  instances:
    - { replica: 0, pid: 42, pidStartTime: 99, cgroup: a2a/team/team.full.0, port: 4001, startedAt: "2026-11-24T05:00:00Z", restarts: 1, ready: true, specHash: abc }
  observedGeneration: 4
  conditions:
    - { type: Ready, status: "False", reason: Starting, message: one replica ready, lastTransitionTime: "2026-11-24T05:00:00Z", observedGeneration: 4 }
---
apiVersion: a2a.dev/v1alpha1
kind: Workflow
metadata: { name: full, namespace: team }
spec:
  params: { topic: cgroups }
  priority: low
  budget: team
  parallelism: 4
  retry: { limit: 2, backoff: { initial: 1s, factor: 3, max: 1m } }
  timeout: 90s
  activeDeadline: 1h
  ttlAfterFinished: 24h
  tasks:
    - name: a
      skill: echo
      message: "about {{ params.topic }}"
      data: { nested: { list: [1, 2.5, "x", null, true] } }
      retry: { limit: 1 }
      timeout: 5m
      priority: critical
    - { name: b, agent: full, dependsOn: [a], message: "{{ tasks.a.output }}" }
status:
  phase: Running
  startedAt: "2026-11-24T05:00:00Z"
  progress: 1/2
  tasks:
    - { name: a, phase: Succeeded, attempts: 1, agent: full, a2aTaskId: t-1, startedAt: "2026-11-24T05:00:00Z", finishedAt: "2026-11-24T05:00:01Z", output: hi, outputRef: big/a, error: none }
  observedGeneration: 1
---
apiVersion: a2a.dev/v1alpha1
kind: ResourceBudget
metadata: { name: team }
spec:
  limits: { memory: 4Gi, cpu: "60%", pids: 1024 }
  parent: host
  reserve: 1Gi
  backgroundCpu: 10%
  alerts: [{ resource: memory, above: "90%" }, { resource: pids, above: "75.5%" }]
status:
  allocated: { memory: 1Gi, memoryBytes: 1073741824, cpu: "2", cpuMillicores: 2000, pids: 10 }
  used: { memory: 10Mi, memoryBytes: 10485760 }
  agents: 2
  pending: [team/late]
"#;

#[test]
fn yaml_to_typed_to_yaml_keeps_every_field() {
    for doc in serde_yaml_ng::Deserializer::from_str(FULL) {
        let original: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        let kind = original["kind"].as_str().expect("kind").to_owned();
        let back = match kind.as_str() {
            "Agent" => serde_yaml_ng::to_string(&serde_json::from_value::<Agent>(original.clone()).expect("agent")),
            "Workflow" => {
                serde_yaml_ng::to_string(&serde_json::from_value::<Workflow>(original.clone()).expect("workflow"))
            }
            _ => serde_yaml_ng::to_string(&serde_json::from_value::<ResourceBudget>(original.clone()).expect("budget")),
        }
        .expect("to yaml");
        let reparsed: serde_json::Value = serde_yaml_ng::from_str(&back).expect("reparse");
        assert_eq!(reparsed, original, "{kind} lost or changed a field in the round trip:\n{back}");
    }
    // And the full manifest is valid.
    api::manifest::load_str("full.yaml", FULL).expect("the full manifest validates");
}

#[test]
fn help_lists_every_verb_with_one_line() {
    let out = a2a(&["--help"]);
    let help = text(&out.stdout);
    for verb in ["validate", "crd", "version", "completion"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(verb)), "--help does not list {verb}:\n{help}");
    }
}

#[test]
fn version_names_the_api_and_protocol() {
    let out = a2a(&["version"]);
    assert!(out.status.success());
    let v = text(&out.stdout);
    assert!(v.starts_with(&format!("a2a {}\n", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(v.contains("api: a2a.dev/v1alpha1") && v.contains("A2A protocol: 1.0"), "{v}");
    assert_eq!(text(&a2a(&["version", "--short"]).stdout), format!("{}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn completion_scripts_are_generated_for_each_shell() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef a2a"), ("fish", "complete -c a2a")] {
        let out = a2a(&["completion", shell]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains(marker), "{shell} completion lacks {marker:?}");
    }
    let out = a2a(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'tcsh'"), "{}", text(&out.stderr));
}

#[test]
fn validate_exit_codes_and_summary() {
    let ok = a2a(&["validate", "-f", "examples/quickstart.yaml"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(text(&ok.stdout), "5 documents valid\n");

    let bad = a2a_stdin(
        &["validate", "-f", "-"],
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: x }\nspec: { comand: [x] }\n",
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        text(&bad.stderr),
        "<stdin>: document 1 (Agent/x): spec.comand: unknown field (did you mean \"command\"?)\n\
         <stdin>: document 1 (Agent/x): spec.command: nothing to run: set command (local mode), image (cluster mode), or url (an agent that runs elsewhere)\n\
         2 errors in 1 file\n"
    );
    assert!(bad.stdout.is_empty());
}

#[test]
fn validate_reads_directories_and_recurses_only_with_r() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("nested");
    std::fs::create_dir(&nested).expect("mkdir");
    std::fs::copy(root().join("examples/stdio-agent.yaml"), nested.join("a.yaml")).expect("copy");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
    let d = dir.path().to_str().expect("utf-8");

    let flat = a2a(&["validate", "-f", d]);
    assert_eq!(flat.status.code(), Some(1));
    assert_eq!(
        text(&flat.stderr),
        format!(
            "{d}: directory has no .yaml, .yml or .json files (use -R to read subdirectories)\n1 error in 1 file\n"
        )
    );

    let deep = a2a(&["validate", "-R", "-f", d]);
    assert_eq!(deep.status.code(), Some(0), "{}", text(&deep.stderr));
    assert_eq!(text(&deep.stdout), "2 documents valid\n");
}

#[test]
fn validate_names_missing_and_binary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("image.yaml");
    std::fs::write(&bin, [0x89, b'P', b'N', b'G', 0xff, 0xfe]).expect("write");
    let out = a2a(&["validate", "-f", "does/not/exist.yaml", "-f", bin.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "does/not/exist.yaml: no such file or directory\n1 error in 1 file\n",
        "a missing file stops before reading the others"
    );
    let out = a2a(&["validate", "-f", bin.to_str().expect("utf-8")]);
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: is not UTF-8 text (invalid byte at offset 0); is it a binary file?\n1 error in 1 file\n",
            bin.display()
        )
    );
}

#[test]
fn validate_requires_a_file_argument() {
    let out = a2a(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--filename <PATH>"), "{}", text(&out.stderr));
}

#[test]
fn plain_manifests_install_exactly_the_generated_crds() {
    let copy = std::fs::read_to_string(root().join("manifests/crds.yaml")).expect("manifests/crds.yaml");
    assert!(copy == api::crds_yaml(), "manifests/crds.yaml is stale: cp crds/a2a.dev.yaml manifests/crds.yaml");
    let out = Command::new("kubectl").args(["kustomize", "manifests"]).current_dir(root()).output().expect("kubectl");
    assert!(out.status.success(), "kubectl kustomize manifests failed: {}", text(&out.stderr));
    let rendered: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text(&out.stdout))
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    let mut names: Vec<&str> = rendered
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(names, ["agents.a2a.dev", "resourcebudgets.a2a.dev", "workflows.a2a.dev"]);
}
