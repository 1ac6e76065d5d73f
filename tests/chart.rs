//! The Helm chart and the plain manifests: lint, render, validate against Kubernetes' own
//! schemas, and stay in step with each other and with the generated CRDs.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The helm binary `scripts/test-deps.sh` fetches (override with A2A_TEST_HELM).
fn helm(args: &[&str]) -> Output {
    let bin = std::env::var_os("A2A_TEST_HELM").map(PathBuf::from).unwrap_or_else(|| root().join(".ci/cache/helm"));
    assert!(bin.exists(), "{} is missing: run scripts/test-deps.sh (it fetches helm 4)", bin.display());
    Command::new(bin).args(args).current_dir(root()).output().expect("run helm")
}

fn kubernetes_validate(yaml: &[u8]) -> (bool, String) {
    let venv = std::env::var_os("A2A_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv"));
    let tool = venv.join("bin/kubernetes-validate");
    assert!(tool.exists(), "{} is missing: run scripts/test-deps.sh", tool.display());
    let mut child = Command::new(tool)
        .args(["--strict", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubernetes-validate");
    child.stdin.take().expect("stdin").write_all(yaml).expect("write");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

fn render(extra: &[&str]) -> Output {
    let mut args = vec!["template", "a2a", "charts/a2a", "--namespace", "a2a-system"];
    args.extend_from_slice(extra);
    helm(&args)
}

#[test]
fn helm_lint_strict_passes() {
    let out = helm(&["lint", "--strict", "charts/a2a"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("1 chart(s) linted, 0 chart(s) failed"));
}

#[test]
fn the_rendered_chart_is_valid_kubernetes_and_runs_a_leader_elected_operator() {
    let out = render(&["--include-crds"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, report) = kubernetes_validate(&out.stdout);
    assert!(ok, "kubernetes-validate --strict failed:\n{report}");
    let objects = docs(&text(&out.stdout));
    let mut kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap_or("")).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let deploy = objects.iter().find(|o| o["kind"] == "Deployment").expect("deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/a2a-dev/a2a:0.1.0");
    assert_eq!(c["args"][0], "operator");
    assert!(c["args"].as_array().expect("args").iter().any(|a| a == "--leader-election=true"));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    let role = objects.iter().find(|o| o["kind"] == "Role").expect("role");
    assert_eq!(role["rules"][0]["resources"][0], "leases");
}

#[test]
fn the_rbac_is_least_privilege() {
    let out = render(&[]);
    let objects = docs(&text(&out.stdout));
    let cr = objects.iter().find(|o| o["kind"] == "ClusterRole").expect("clusterrole");
    for rule in cr["rules"].as_array().expect("rules") {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!rule[field].as_array().expect(field).iter().any(|v| v == "*"), "wildcard in {rule}");
        }
        // Secrets: read and watched (the checksum of what Agents reference), and each Agent's
        // token created and deleted; never patched or updated.
        if rule["resources"].as_array().expect("resources").iter().any(|r| r == "secrets") {
            assert_eq!(rule["resources"], serde_json::json!(["secrets"]), "{rule}");
            assert_eq!(rule["verbs"], serde_json::json!(["get", "list", "watch", "create", "delete"]), "{rule}");
        }
    }
    assert!(
        cr["rules"].as_array().expect("rules").iter().any(|r| r["resources"] == serde_json::json!(["secrets"])),
        "the operator watches the Secrets Agents reference"
    );
    let quota = render(&["--set", "resourceQuota.enabled=true"]);
    assert!(quota.status.success(), "{}", text(&quota.stderr));
    let objects = docs(&text(&quota.stdout));
    let cr = objects.iter().find(|o| o["kind"] == "ClusterRole").expect("clusterrole");
    let rule = cr["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["resourcequotas"]))
        .expect("quota RBAC when enabled");
    assert_eq!(rule["verbs"], serde_json::json!(["list", "create", "patch", "delete"]), "what the quota pass does");
    let deploy = objects.iter().find(|o| o["kind"] == "Deployment").expect("deployment");
    let args = &deploy["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().expect("args").iter().any(|a| a == "--resource-quota=true"), "{args}");
    assert!(!text(&out.stdout).contains("resourcequotas"), "and only then");
}

#[test]
fn values_are_checked_by_the_schema() {
    let out = render(&["--set", "replicaCount=-1"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("replicaCount"), "{}", text(&out.stderr));
    let out = render(&["--set", "replicas=3"]);
    assert!(!out.status.success(), "an unknown value key is refused");
    assert!(text(&out.stderr).contains("replicas"), "{}", text(&out.stderr));
}

#[test]
fn optional_pieces_render_when_enabled() {
    let out = render(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "priorityClasses.critical=system-cluster-critical",
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "traces.otlpEndpoint=http://otel-collector.observability:4318",
        "--set",
        "traces.headers.authorization=Bearer s3cret token",
        "--set",
        "alerts.externalUrl=https://grafana.example.org/d/a2a",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let objects = docs(&text(&out.stdout));
    assert!(objects.iter().any(|o| o["kind"] == "ServiceMonitor"));
    let dashboard = objects.iter().find(|o| o["kind"] == "ConfigMap").expect("the dashboard's ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["a2a.json"].as_str().expect("a2a.json")).expect("dashboard JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()), "{json}");
    let deploy = objects.iter().find(|o| o["kind"] == "Deployment").expect("deployment");
    let args: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--priority-class=critical=system-cluster-critical"), "{args:?}");
    assert!(args.contains(&"--namespace=team-a") && args.contains(&"--namespace=team-b"), "{args:?}");
    assert!(args.contains(&"--external-url=https://grafana.example.org/d/a2a"), "{args:?}");
    // Traces: the OpenTelemetry SDK's variables, as the operator reads them.
    let env: std::collections::BTreeMap<&str, &str> = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"), Some(&"http://otel-collector.observability:4318"));
    assert_eq!(env.get("OTEL_SERVICE_NAME"), Some(&"a2a-operator"));
    assert_eq!(env.get("OTEL_EXPORTER_OTLP_HEADERS"), Some(&"authorization=Bearer%20s3cret%20token"));
    let read = a2a::traces::Config::from_env(|k| env.get(k).map(|v| (*v).to_owned())).expect("valid").expect("on");
    assert_eq!(read.endpoint, "http://otel-collector.observability:4318/v1/traces");
    assert_eq!(read.headers, [("authorization".to_owned(), "Bearer s3cret token".to_owned())]);
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let chart = std::fs::read_to_string(root().join("charts/a2a/crds/a2a.dev.yaml")).expect("chart crds");
    assert!(chart == a2a::api::crds_yaml(), "charts/a2a/crds is stale: run scripts/render-manifests.sh");
}

#[test]
fn plain_manifests_match_the_chart_and_validate() {
    let out = render(&[]);
    let expected = format!(
        "# Generated by scripts/render-manifests.sh from charts/a2a (default values). Do not edit.\n{}",
        text(&out.stdout)
    );
    let committed = std::fs::read_to_string(root().join("manifests/install.yaml")).expect("manifests/install.yaml");
    assert!(committed == expected, "manifests/install.yaml is stale: run scripts/render-manifests.sh");
    let kustomized =
        Command::new("kubectl").args(["kustomize", "manifests"]).current_dir(root()).output().expect("kubectl");
    assert!(kustomized.status.success(), "{}", text(&kustomized.stderr));
    let (ok, report) = kubernetes_validate(&kustomized.stdout);
    assert!(ok, "kubernetes-validate --strict failed on kubectl kustomize manifests:\n{report}");
    let objects = docs(&text(&kustomized.stdout));
    assert!(objects.iter().any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "a2a-system"));
    assert!(
        objects
            .iter()
            .filter(|o| o["kind"] != "Namespace"
                && o["kind"] != "CustomResourceDefinition"
                && o["kind"] != "ClusterRole"
                && o["kind"] != "ClusterRoleBinding")
            .all(|o| o["metadata"]["namespace"] == "a2a-system")
    );
}

#[test]
fn gitops_examples_point_argo_cd_and_flux_at_a_manifest_repository() {
    let argo = docs(&std::fs::read_to_string(root().join("examples/gitops/argocd-application.yaml")).expect("argo"));
    assert_eq!(argo[0]["kind"], "Application");
    assert_eq!(argo[0]["spec"]["syncPolicy"]["automated"]["prune"], true);
    let flux = docs(&std::fs::read_to_string(root().join("examples/gitops/flux-kustomization.yaml")).expect("flux"));
    let kinds: Vec<&str> = flux.iter().map(|d| d["kind"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["GitRepository", "Kustomization"]);
    assert_eq!(flux[1]["spec"]["sourceRef"]["name"], flux[0]["metadata"]["name"]);
}
