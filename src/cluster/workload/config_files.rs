//! An Agent's Secret and ConfigMap references in its pod template: `env[].valueFrom` and
//! `envFrom` as the container's, `secretFiles` as secret volumes (mode 0400, the listed
//! items) with their mounts, and the checksum annotation that rolls the pods when the data
//! of a referenced object changes (the kubelet itself never restarts a container for that).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, KeyToPath, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};

use crate::api::agent::{self, AgentSpec};

/// The pod template annotation holding the checksum of the referenced objects' data.
pub const CONFIG_CHECKSUM: &str = "a2a.dev/config-checksum";

/// The group secret files belong to on a cluster (the pod's `fsGroup`): kubelet gives a
/// secret volume's files to it, readable by the group, so that the agent's container, which
/// runs as a non-root user the image chooses, can read them.
pub const SECRET_FILES_GROUP: i64 = 65532;

/// Sets (or clears) the checksum annotation of `deployment`'s pod template.
pub fn set_config_checksum(deployment: &mut Deployment, checksum: Option<String>) {
    let meta = deployment.spec.template.metadata.get_or_insert_with(Default::default);
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    match checksum {
        Some(sum) => annotations.insert(CONFIG_CHECKSUM.to_owned(), sum),
        None => annotations.remove(CONFIG_CHECKSUM),
    };
}

pub(super) fn env_var(e: &agent::EnvVar) -> EnvVar {
    let Some(from) = &e.value_from else {
        return EnvVar { name: e.name.clone(), value: Some(e.value.clone()), value_from: None };
    };
    let source = EnvVarSource {
        secret_key_ref: from.secret_key_ref.as_ref().map(|s| SecretKeySelector {
            name: s.name.clone(),
            key: s.key.clone(),
            optional: s.optional,
        }),
        config_map_key_ref: from.config_map_key_ref.as_ref().map(|s| ConfigMapKeySelector {
            name: s.name.clone(),
            key: s.key.clone(),
            optional: s.optional,
        }),
        ..Default::default()
    };
    EnvVar { name: e.name.clone(), value: None, value_from: Some(source) }
}

pub(super) fn env_from(spec: &AgentSpec) -> Option<Vec<EnvFromSource>> {
    let out: Vec<EnvFromSource> = spec
        .env_from
        .iter()
        .map(|f| EnvFromSource {
            prefix: f.prefix.clone(),
            secret_ref: f.secret_ref.as_ref().map(|s| SecretEnvSource { name: s.name.clone(), optional: s.optional }),
            config_map_ref: f
                .config_map_ref
                .as_ref()
                .map(|c| ConfigMapEnvSource { name: c.name.clone(), optional: c.optional }),
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

fn volume_name(i: usize) -> String {
    format!("secret-files-{i}")
}

pub(super) fn volumes(spec: &AgentSpec) -> impl Iterator<Item = Volume> + '_ {
    spec.secret_files.iter().enumerate().map(|(i, f)| Volume {
        name: volume_name(i),
        secret: Some(SecretVolumeSource {
            secret_name: Some(f.secret_name.clone()),
            default_mode: Some(0o400),
            items: (!f.items.is_empty()).then(|| {
                f.items
                    .iter()
                    .map(|k| KeyToPath { key: k.key.clone(), path: k.path.clone(), ..Default::default() })
                    .collect()
            }),
            optional: f.optional,
            // `defaultUser` (the files' owner) is alpha in Kubernetes: the pod's fsGroup
            // gives them to the container instead.
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn volume_mounts(spec: &AgentSpec) -> impl Iterator<Item = VolumeMount> + '_ {
    spec.secret_files.iter().enumerate().map(|(i, f)| VolumeMount {
        name: volume_name(i),
        mount_path: f.mount_path(),
        read_only: Some(true),
        ..Default::default()
    })
}
