//! The Secrets and ConfigMaps an Agent references, on a cluster: their data's checksum for
//! the pod template (a change rolls the pods), and which Agents a changed object concerns
//! (only those are reconciled again).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::api::{Agent, AgentSpec};
use crate::controller::config_refs::{self, ObjectData, SourceKind};

/// The checksum of the data of every object `spec` references (in `namespace`), read now;
/// `None` when it references none. A missing object counts as absent: the pods then wait in
/// `CreateContainerConfigError` (unless optional), and its creation changes the checksum.
pub async fn config_checksum(
    client: &kube::Client,
    namespace: &str,
    spec: &AgentSpec,
) -> Result<Option<String>, kube::Error> {
    let referenced = config_refs::objects(spec);
    let mut found = std::collections::BTreeMap::new();
    for (kind, name) in &referenced {
        let data = match kind {
            SourceKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|s| ObjectData::of_secret(&s)),
            SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|c| ObjectData::of_config_map(&c)),
        };
        if let Some(d) = data {
            found.insert((*kind, name.clone()), d);
        }
    }
    let digests = config_refs::digests(spec, |k, n| found.get(&(k, n.to_owned())));
    Ok(config_refs::checksum(&digests, &referenced))
}

/// The Agents in `store` that reference the object `kind`/`name` of `namespace`.
pub fn referencing<K: Resource>(store: &Store<Agent>, kind: SourceKind, object: &K) -> Vec<ObjectRef<Agent>> {
    let (ns, name) = (object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default());
    store
        .state()
        .iter()
        .filter(|a| a.namespace() == ns && config_refs::objects(&a.spec).contains(&(kind, name.clone())))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::runtime::{reflector, watcher};
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::agent::{Context, reconcile};
    use crate::cluster::testing::{answer, mock, not_found};
    use crate::cluster::workload::{CONFIG_CHECKSUM, WorkloadConfig};

    fn agent() -> Agent {
        let text = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: writer, namespace: team, uid: u-1, generation: 2 }\nspec:\n  image: x:1\n  env: [{ name: KEY, valueFrom: { secretKeyRef: { name: openai, key: api-key } } }]\n  envFrom: [{ configMapRef: { name: cfg } }]\n";
        match crate::api::validate::validate(&serde_yaml_ng::from_str(text).expect("yaml")) {
            Ok(crate::api::Object::Agent(a)) => a,
            other => panic!("invalid agent: {other:?}"),
        }
    }

    fn secret(value: &str) -> Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openai", "namespace": "team", "uid": "s-1"},
            "data": {"api-key": b64}})
    }

    fn config_map() -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "team", "uid": "c-1"},
            "data": {"mode": "fast"}})
    }

    /// One reconcile against the scripted API: the referenced objects are read (the Secret
    /// answered with `secret`), and the applied Deployment's checksum annotation returned.
    async fn checksum_applied(secret: (u16, Value)) -> Option<String> {
        let (client, mut handle) = mock();
        let ctx = Arc::new(Context { client, config: WorkloadConfig::default(), recorder: None, wake: Vec::new() });
        let task = tokio::spawn(reconcile(Arc::new(agent()), ctx));
        // After the referenced objects, the namespace's token key and the agent's own token
        // Secret, which holds the token derived from it already.
        let key_bytes = [7u8; crate::controller::credentials::KEY_BYTES];
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        let key = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a2a-agent-token-key", "namespace": "team", "uid": "k-1"},
            "data": {"key": b64(&key_bytes)}});
        let derived = crate::controller::credentials::AgentTokenKey::from_data("team", Some(&key_bytes))
            .expect("key")
            .token("team", "writer", "u-1");
        let token = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "writer-a2a-token", "namespace": "team", "uid": "t-1",
                "ownerReferences": [{"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "name": "writer", "uid": "u-1"}]},
            "data": {"token": b64(derived.as_bytes())}});
        answer(&mut handle, "GET", "/api/v1/namespaces/team/secrets/openai", secret.0, secret.1).await;
        answer(&mut handle, "GET", "/api/v1/namespaces/team/configmaps/cfg", 200, config_map()).await;
        answer(&mut handle, "GET", "/api/v1/namespaces/team/secrets/a2a-agent-token-key", 200, key).await;
        answer(&mut handle, "GET", "/api/v1/namespaces/team/secrets/writer-a2a-token", 200, token).await;
        let reply = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer"},
            "spec": {"selector": {}, "template": {}}, "status": {}});
        let (_, deploy) =
            answer(&mut handle, "PATCH", "/apis/apps/v1/namespaces/team/deployments/writer", 200, reply).await;
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "writer"}});
        answer(&mut handle, "PATCH", "/api/v1/namespaces/team/services/writer", 200, svc).await;
        let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
        answer(&mut handle, "GET", "/api/v1/namespaces/team/pods", 200, pods).await;
        let agent = serde_json::to_value(agent()).expect("json");
        answer(&mut handle, "PATCH", "/apis/a2a.dev/v1alpha1/namespaces/team/agents/writer/status", 200, agent).await;
        task.await.expect("join").expect("reconcile");
        let c = &deploy["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][0]["valueFrom"]["secretKeyRef"]["name"], "openai");
        let text = deploy.to_string();
        assert!(!text.contains("sk-") && !text.contains("fast"), "no value in the Deployment: {text}");
        deploy["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM].as_str().map(str::to_owned)
    }

    #[tokio::test]
    async fn the_pod_template_carries_a_checksum_of_the_referenced_data_that_a_rotation_changes() {
        let first = checksum_applied((200, secret("sk-1"))).await.expect("a checksum");
        assert_eq!(first.len(), 64);
        assert_eq!(checksum_applied((200, secret("sk-1"))).await.as_deref(), Some(first.as_str()), "stable");
        let rotated = checksum_applied((200, secret("sk-2"))).await.expect("a checksum");
        assert_ne!(rotated, first, "a new value rolls the pods");
        let missing = checksum_applied((404, not_found())).await.expect("a checksum");
        assert!(missing != first && missing != rotated, "a missing Secret is a state of its own");
    }

    #[test]
    fn only_the_agents_that_reference_a_changed_object_are_reconciled() {
        let (reader, mut writer) = reflector::store::<Agent>();
        let mut other = agent();
        other.metadata.name = Some("plain".into());
        other.spec.env.clear();
        other.spec.env_from.clear();
        let mut elsewhere = agent();
        elsewhere.metadata.namespace = Some("other".into());
        for a in [agent(), other, elsewhere] {
            writer.apply_watcher_event(&watcher::Event::Apply(a));
        }
        let obj = |v: Value| -> Secret { serde_json::from_value(v).expect("secret") };
        let hit = referencing(&reader, SourceKind::Secret, &obj(secret("x")));
        assert_eq!(hit, vec![ObjectRef::new("writer").within("team")]);
        let mut unrelated = secret("x");
        unrelated["metadata"]["name"] = json!("unrelated");
        assert!(referencing(&reader, SourceKind::Secret, &obj(unrelated)).is_empty());
        let cm: ConfigMap = serde_json::from_value(config_map()).expect("configmap");
        assert_eq!(referencing(&reader, SourceKind::ConfigMap, &cm).len(), 1);
        assert!(referencing(&reader, SourceKind::Secret, &cm).is_empty(), "a ConfigMap named like a Secret is not it");
    }
}
