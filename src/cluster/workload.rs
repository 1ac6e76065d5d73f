//! Agent → Deployment + Service: the objects the operator writes for an Agent on a cluster,
//! built as plain data so tests assert them field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::agent::Protocol;
use crate::api::common::ResourceAmounts;
use crate::api::quantity::CpuAmount;
use crate::api::{API_VERSION, Agent, Priority};

mod config_files;
pub use config_files::{CONFIG_CHECKSUM, set_config_checksum};

/// The port agents serve A2A on inside a pod when `spec.port` is 0.
pub const DEFAULT_POD_PORT: u16 = 8080;
/// The label that selects an agent's pods.
pub const AGENT_LABEL: &str = "a2a.dev/agent";

/// Settings of the operator that shape what it writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// Kubernetes PriorityClass for each a2a priority (Helm value `priorityClasses`).
    pub priority_classes: BTreeMap<Priority, String>,
}

/// Why an Agent cannot become a Deployment; shown as `Ready=False` with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("spec.image is required on a cluster (spec.command alone runs only in local mode)")]
    MissingImage,
    #[error("stdio agents run only in local mode; on a cluster give the agent an A2A server (protocol: a2a)")]
    StdioOnCluster,
    #[error(
        "spec.resources.{field}: {value} is a share of the host, which only local mode understands; use cores or millicores"
    )]
    HostShareCpu { field: &'static str, value: String },
    #[error("the agent has no name or namespace")]
    Unnamed,
}

impl WorkloadError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            WorkloadError::MissingImage => "MissingImage",
            WorkloadError::StdioOnCluster => "UnsupportedProtocol",
            WorkloadError::HostShareCpu { .. } => "UnsupportedQuantity",
            WorkloadError::Unnamed => "InvalidObject",
        }
    }
}

/// What the operator writes for one Agent, and what it must tell the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub deployment: Deployment,
    pub service: Service,
    /// Things set in the Agent that the cluster does not enforce per container.
    pub warnings: Vec<String>,
}

/// The labels on everything made for `agent`.
pub fn labels(agent_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), agent_name.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), agent_name.to_owned()),
        ("app.kubernetes.io/component".to_owned(), "agent".to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "a2a".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "a2a-operator".to_owned()),
        (AGENT_LABEL.to_owned(), agent_name.to_owned()),
    ])
}

/// The port the agent serves on in its pod.
pub fn pod_port(agent: &Agent) -> u16 {
    match agent.spec.port {
        Some(p) if p > 0 => u16::try_from(p).unwrap_or(DEFAULT_POD_PORT),
        _ => DEFAULT_POD_PORT,
    }
}

/// The in-cluster A2A URL of the agent's Service.
pub fn service_url(agent: &Agent) -> Option<String> {
    let name = agent.metadata.name.as_deref()?;
    let ns = agent.metadata.namespace.as_deref()?;
    Some(format!("http://{name}.{ns}.svc:{}/", pod_port(agent)))
}

fn owner(agent: &Agent) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_owned(),
        kind: "Agent".to_owned(),
        name: agent.metadata.name.clone().unwrap_or_default(),
        uid: agent.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn quantities(
    amounts: &ResourceAmounts,
    which: &'static str,
) -> Result<Option<BTreeMap<String, Quantity>>, WorkloadError> {
    let mut out = BTreeMap::new();
    if let Some(cpu) = &amounts.cpu {
        match cpu.value() {
            CpuAmount::Millicores(m) => {
                out.insert("cpu".to_owned(), Quantity(crate::api::quantity::format_millicores(m)));
            }
            CpuAmount::HostShare { .. } => {
                return Err(WorkloadError::HostShareCpu {
                    field: if which == "limits" { "limits.cpu" } else { "requests.cpu" },
                    value: cpu.to_string(),
                });
            }
        }
    }
    if let Some(mem) = &amounts.memory {
        out.insert("memory".to_owned(), Quantity(mem.value().to_string()));
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Builds the Deployment and Service for `agent`. `admitted` is the budget's verdict: an
/// agent that does not fit keeps its Deployment at 0 replicas.
pub fn workload(agent: &Agent, admitted: bool, config: &WorkloadConfig) -> Result<Workload, WorkloadError> {
    let spec = &agent.spec;
    let name = agent.metadata.name.clone().ok_or(WorkloadError::Unnamed)?;
    let namespace = agent.metadata.namespace.clone().ok_or(WorkloadError::Unnamed)?;
    if spec.protocol() == Protocol::Stdio {
        return Err(WorkloadError::StdioOnCluster);
    }
    let image = spec.image.clone().ok_or(WorkloadError::MissingImage)?;
    let port = pod_port(agent);
    let labels = labels(&name);
    let selector = BTreeMap::from([(AGENT_LABEL.to_owned(), name.clone())]);
    let mut warnings = Vec::new();
    if spec.resources.limits.pids.is_some() || spec.resources.requests.pids.is_some() {
        warnings.push(
            "spec.resources.*.pids is not applied per pod on a cluster: the kubelet's podPidsLimit bounds pids there"
                .to_owned(),
        );
    }
    if spec.user.is_some() || spec.working_dir.is_some() || !spec.writable_paths.is_empty() {
        warnings.push(
            "spec.user, spec.workingDir and spec.writablePaths apply in local mode only; the image and the pod's \
             volumes decide them on a cluster"
                .to_owned(),
        );
    }
    let mut env: Vec<EnvVar> = spec.env.iter().map(config_files::env_var).collect();
    for (k, v) in [("A2A_PORT", port.to_string()), ("A2A_AGENT", name.clone()), ("A2A_NAMESPACE", namespace.clone())] {
        env.push(EnvVar { name: k.to_owned(), value: Some(v), value_from: None });
    }
    // The agent's own token, from the Secret the operator keeps for it; the engine presents it.
    if crate::controller::credentials::has_token(agent) {
        env.push(EnvVar {
            name: crate::controller::credentials::TOKEN_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: crate::controller::credentials::token_secret_name(&name),
                    key: crate::controller::credentials::TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        });
    }
    let probe = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/.well-known/agent-card.json".to_owned()),
            port: IntOrString::String("a2a".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: "agent".to_owned(),
        image: Some(image),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(env),
        env_from: config_files::env_from(spec),
        ports: Some(vec![ContainerPort {
            name: Some("a2a".to_owned()),
            container_port: i32::from(port),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities(&spec.resources.requests, "requests")?,
            limits: quantities(&spec.resources.limits, "limits")?,
            ..Default::default()
        }),
        readiness_probe: Some(probe.clone()),
        startup_probe: Some(Probe { failure_threshold: Some(60), period_seconds: Some(2), ..probe }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            ..Default::default()
        }),
        volume_mounts: Some(
            std::iter::once(VolumeMount {
                name: "tmp".to_owned(),
                mount_path: "/tmp".to_owned(),
                ..Default::default()
            })
            .chain(config_files::volume_mounts(spec))
            .collect(),
        ),
        ..Default::default()
    };
    let priority = spec.priority();
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner(agent)]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(if admitted { i32::try_from(spec.replicas()).unwrap_or(i32::MAX) } else { 0 }),
            selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([("a2a.dev/priority".to_owned(), priority.to_string())])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    priority_class_name: config.priority_classes.get(&priority).cloned(),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        fs_group: (!spec.secret_files.is_empty()).then_some(config_files::SECRET_FILES_GROUP),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(
                        std::iter::once(Volume {
                            name: "tmp".to_owned(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        })
                        .chain(config_files::volumes(spec))
                        .collect(),
                    ),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    };
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels),
            owner_references: Some(vec![owner(agent)]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("a2a".to_owned()),
                port: i32::from(port),
                target_port: Some(IntOrString::String("a2a".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Ok(Workload { deployment, service, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(spec: &str) -> Agent {
        let text = format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: writer, namespace: team, uid: u-1 }}\nspec:\n{spec}"
        );
        match crate::api::validate::validate(&serde_yaml_ng::from_str(&text).expect("yaml")) {
            Ok(crate::api::Object::Agent(a)) => a,
            other => panic!("invalid agent: {other:?}"),
        }
    }

    #[test]
    fn an_agent_becomes_a_locked_down_deployment_with_limits_probe_and_owner() {
        let a = agent(
            "  image: ghcr.io/x/agent:1\n  command: [agent]\n  args: [--fast]\n  env: [{ name: MODEL, value: small }]\n  replicas: 3\n  priority: high\n  resources:\n    requests: { cpu: 250m, memory: 64Mi }\n    limits: { cpu: \"1\", memory: 512Mi }\n",
        );
        let cfg = WorkloadConfig { priority_classes: BTreeMap::from([(Priority::High, "a2a-high".to_owned())]) };
        let w = workload(&a, true, &cfg).expect("workload");
        let d = serde_json::to_value(&w.deployment).expect("json");
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "Agent");
        assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(d["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(d["spec"]["selector"]["matchLabels"], serde_json::json!({"a2a.dev/agent": "writer"}));
        assert_eq!(d["metadata"]["labels"]["app.kubernetes.io/managed-by"], "a2a-operator");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["priorityClassName"], "a2a-high");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "ghcr.io/x/agent:1");
        assert_eq!(c["command"], serde_json::json!(["agent"]));
        assert_eq!(c["args"], serde_json::json!(["--fast"]));
        assert_eq!(c["resources"]["limits"], serde_json::json!({"cpu": "1", "memory": "536870912"}));
        assert_eq!(c["resources"]["requests"], serde_json::json!({"cpu": "250m", "memory": "67108864"}));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/.well-known/agent-card.json");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let from =
                    e["valueFrom"]["secretKeyRef"].as_object().map(|r| format!("secret {}/{}", r["name"], r["key"]));
                (
                    e["name"].as_str().unwrap_or("").to_owned(),
                    from.unwrap_or_else(|| e["value"].as_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("MODEL".into(), "small".into()),
                ("A2A_PORT".into(), "8080".into()),
                ("A2A_AGENT".into(), "writer".into()),
                ("A2A_NAMESPACE".into(), "team".into()),
                ("A2A_AGENT_TOKEN".into(), "secret \"writer-a2a-token\"/\"token\"".into())
            ]
        );
        let s = serde_json::to_value(&w.service).expect("json");
        assert_eq!(s["spec"]["ports"][0]["port"], 8080);
        assert_eq!(s["spec"]["selector"], serde_json::json!({"a2a.dev/agent": "writer"}));
        assert_eq!(service_url(&a).as_deref(), Some("http://writer.team.svc:8080/"));
        assert!(w.warnings.is_empty());
    }

    /// References become the container's `valueFrom` and `envFrom` and secret volumes (0400,
    /// the listed items, read-only mounts, the pod's fsGroup), exactly as a Pod spells them.
    #[test]
    fn secret_and_config_map_references_become_the_pod_s_env_env_from_and_secret_volumes() {
        let a = agent(
            "  image: x:1\n  env:\n    - { name: KEY, valueFrom: { secretKeyRef: { name: openai, key: api-key } } }\n    - { name: MODE, valueFrom: { configMapKeyRef: { name: cfg, key: mode, optional: true } } }\n  envFrom: [{ secretRef: { name: db }, prefix: DB_ }, { configMapRef: { name: cfg } }]\n  secretFiles:\n    - { secretName: tls }\n    - { secretName: openai, mountPath: /etc/openai, items: [{ key: api-key, path: key }], optional: true }\n",
        );
        let w = workload(&a, true, &WorkloadConfig::default()).expect("workload");
        let d = serde_json::to_value(&w.deployment).expect("json");
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["env"][0],
            serde_json::json!({"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}})
        );
        assert_eq!(
            c["env"][1],
            serde_json::json!({"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": true}}})
        );
        assert_eq!(
            c["envFrom"],
            serde_json::json!([{"prefix": "DB_", "secretRef": {"name": "db"}}, {"configMapRef": {"name": "cfg"}}])
        );
        assert_eq!(
            pod["volumes"],
            serde_json::json!([
                {"name": "tmp", "emptyDir": {}},
                {"name": "secret-files-0", "secret": {"secretName": "tls", "defaultMode": 256}},
                {"name": "secret-files-1", "secret": {"secretName": "openai", "defaultMode": 256, "optional": true,
                    "items": [{"key": "api-key", "path": "key"}]}}
            ])
        );
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "secret-files-0", "mountPath": "/run/secrets/tls", "readOnly": true},
                {"name": "secret-files-1", "mountPath": "/etc/openai", "readOnly": true}
            ])
        );
        assert_eq!(pod["securityContext"]["fsGroup"], 65532);
        // Without references: no envFrom, no fsGroup, the tmp volume alone.
        let plain = serde_json::to_value(
            &workload(&agent("  image: x:1\n"), true, &WorkloadConfig::default()).unwrap().deployment,
        )
        .unwrap();
        let pod = &plain["spec"]["template"]["spec"];
        assert!(pod["containers"][0].get("envFrom").is_none() && pod["securityContext"].get("fsGroup").is_none());
        assert_eq!(pod["volumes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn the_config_checksum_goes_on_the_pod_template_and_away_again() {
        let mut w = workload(&agent("  image: x:1\n"), true, &WorkloadConfig::default()).expect("workload");
        set_config_checksum(&mut w.deployment, Some("abc".into()));
        let annotations =
            |w: &Workload| w.deployment.spec.template.metadata.as_ref().unwrap().annotations.clone().unwrap();
        assert_eq!(annotations(&w).get(CONFIG_CHECKSUM).map(String::as_str), Some("abc"));
        assert!(annotations(&w).contains_key("a2a.dev/priority"), "the other annotations stay");
        set_config_checksum(&mut w.deployment, None);
        assert!(!annotations(&w).contains_key(CONFIG_CHECKSUM));
    }

    #[test]
    fn an_agent_that_is_not_admitted_runs_zero_replicas() {
        let w = workload(&agent("  image: x:1\n  replicas: 4\n"), false, &WorkloadConfig::default()).expect("workload");
        assert_eq!(w.deployment.spec.replicas, Some(0));
    }

    #[test]
    fn what_a_cluster_cannot_run_is_refused_with_a_reason() {
        let e = workload(&agent("  command: [python3, a.py]\n"), true, &WorkloadConfig::default()).unwrap_err();
        assert_eq!(e.reason(), "MissingImage");
        assert_eq!(e.to_string(), "spec.image is required on a cluster (spec.command alone runs only in local mode)");
        let e =
            workload(&agent("  image: x:1\n  command: [rev]\n  protocol: stdio\n"), true, &WorkloadConfig::default())
                .unwrap_err();
        assert_eq!(e.reason(), "UnsupportedProtocol");
        let e = workload(
            &agent("  image: x:1\n  resources: { limits: { cpu: \"50%\" } }\n"),
            true,
            &WorkloadConfig::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.resources.limits.cpu: 50% is a share of the host, which only local mode understands; use cores or millicores"
        );
    }

    #[test]
    fn settings_the_cluster_does_not_enforce_per_pod_are_reported() {
        let w =
            workload(&agent("  image: x:1\n  resources: { limits: { pids: 64 } }\n"), true, &WorkloadConfig::default())
                .expect("workload");
        assert_eq!(w.warnings.len(), 1);
        assert!(w.warnings[0].contains("podPidsLimit"));
    }

    #[test]
    fn the_quickstart_agents_map_onto_deployments() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml")).expect("read");
        let docs = crate::api::manifest::load_str("quickstart.yaml", &text).expect("valid");
        let mut n = 0;
        for d in docs {
            if let crate::api::Object::Agent(mut a) = d.object {
                a.metadata.namespace = Some("default".into());
                a.metadata.uid = Some("u".into());
                workload(&a, true, &WorkloadConfig::default()).expect("every quickstart agent runs on a cluster");
                n += 1;
            }
        }
        assert_eq!(n, 3);
    }
}
