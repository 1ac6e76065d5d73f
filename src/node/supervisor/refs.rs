//! The Secrets and ConfigMaps agents reference, as this node sees them: a cache fed by two
//! watches, the resolution of an agent's references before a replica starts
//! ([`crate::controller::config_refs`]), and which agents a changed object concerns (only
//! those: a change of any other Secret starts, stops or restarts nothing).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use super::{Key, Node, NodeEvent, World, key_of, record_event};
use crate::api::Agent;
use crate::controller::config_refs::{self, ObjectData, Resolved, SourceKind, Unresolved};
use crate::controller::credentials;

/// How long a token key this node read or made is used while the Secret watch has not
/// brought it: a key deleted meanwhile is not used for longer.
pub(super) const KEY_MEMO: std::time::Duration = std::time::Duration::from_secs(10);

/// The ConfigMaps the node watches: all but the workflow engine's task outputs.
pub(super) const NOT_TASK_OUTPUTS: &str = "!a2a.dev/workflow";

/// One watched Secret or ConfigMap, changed (`data`) or gone (`None`).
pub(super) struct ObjectChange {
    pub(super) kind: SourceKind,
    pub(super) key: Key,
    pub(super) data: Option<ObjectData>,
}

impl ObjectChange {
    pub(super) fn secret(s: Secret) -> NodeEvent {
        NodeEvent::Object(Box::new(ObjectChange {
            kind: SourceKind::Secret,
            key: key_of(&s),
            data: Some(ObjectData::of_secret(&s)),
        }))
    }
    pub(super) fn secret_gone(s: &Secret) -> NodeEvent {
        NodeEvent::Object(Box::new(ObjectChange { kind: SourceKind::Secret, key: key_of(s), data: None }))
    }
    pub(super) fn config_map(c: ConfigMap) -> NodeEvent {
        NodeEvent::Object(Box::new(ObjectChange {
            kind: SourceKind::ConfigMap,
            key: key_of(&c),
            data: Some(ObjectData::of_config_map(&c)),
        }))
    }
    pub(super) fn config_map_gone(c: &ConfigMap) -> NodeEvent {
        NodeEvent::Object(Box::new(ObjectChange { kind: SourceKind::ConfigMap, key: key_of(c), data: None }))
    }
}

/// The Secrets and ConfigMaps of every namespace, by kind, namespace and name. Written by
/// the loop only; read by starts (on blocking threads) and stdio runs.
#[derive(Default)]
pub(super) struct ObjectCache {
    objects: HashMap<(SourceKind, String, String), ObjectData>,
}

impl ObjectCache {
    fn lookup<'a>(&'a self, ns: &'a str) -> impl Fn(SourceKind, &str) -> Option<&'a ObjectData> + 'a {
        move |kind, name| self.objects.get(&(kind, ns.to_owned(), name.to_owned()))
    }
}

impl Node {
    /// What `agent`'s references resolve to now.
    pub(super) fn resolve_refs(&self, agent: &Agent) -> Result<Resolved, Unresolved> {
        let ns = agent.namespace().unwrap_or_default();
        let cache = self.objects.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        config_refs::resolve(&agent.spec, &ns, cache.lookup(&ns))
    }

    /// Puts secret files into the view of the replica whose cgroup leaf is `leaf`: a tmpfs of
    /// its own, owned by the user it runs as (see [`crate::node::secret_files`]).
    pub(super) fn mount_secret_files(
        &self,
        spec: &mut crate::node::process::ProcessSpec,
        leaf: &str,
        files: &[config_refs::FileSet],
    ) -> Result<(), crate::node::secret_files::Error> {
        let Some(first) = files.first() else { return Ok(()) };
        let unconfined = || crate::node::secret_files::Error::Unconfined(first.mount_path.clone());
        let (uid, gid) = spec.user.as_ref().map(|u| (u.uid, u.gid)).ok_or_else(unconfined)?;
        let confinement = spec.confinement.as_mut().ok_or_else(unconfined)?;
        confinement.add_files(self.secret_files.materialize(leaf, uid, gid, files)?);
        Ok(())
    }

    /// Removes the secret files of the replica in `cgroup` (its process is gone).
    pub(super) fn remove_secret_files(&self, cgroup: &crate::node::cgroup::CgroupPath) {
        let path = cgroup.to_string();
        let leaf = path.rsplit('/').next().unwrap_or_default();
        if let Err(e) = self.secret_files.remove(leaf) {
            tracing::warn!(cgroup = %path, error = %e, "removing a replica's secret files");
        }
    }

    /// The token of `agent`, derived from its namespace's key: the key as the Secret watch
    /// last delivered it, else the one this node last read or made (until the watch brings
    /// it, at most [`KEY_MEMO`]), else read or made now, once per namespace however many
    /// starts ask at once.
    pub(super) async fn agent_token(&self, agent: &Agent) -> Result<String, credentials::Error> {
        let ns = agent.namespace().unwrap_or_default();
        if let Some(key) = self.watched_token_key(&ns)? {
            return Ok(key.token_of(agent));
        }
        let memo = |node: &Node| {
            let keys = node.token_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            keys.get(&ns).filter(|(_, at)| at.elapsed() < KEY_MEMO).map(|(k, _)| k.clone())
        };
        if let Some(key) = memo(self) {
            return Ok(key.token_of(agent));
        }
        let _one = self.token_key_read.lock().await;
        if let Some(key) = self.watched_token_key(&ns)?.or_else(|| memo(self)) {
            return Ok(key.token_of(agent));
        }
        let key = credentials::ensure_key(&self.client, &ns, credentials::Lookup::CreateFirst).await?;
        let mut keys = self.token_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.insert(ns, (key.clone(), std::time::Instant::now()));
        Ok(key.token_of(agent))
    }

    fn watched_token_key(&self, ns: &str) -> Result<Option<credentials::AgentTokenKey>, credentials::Error> {
        let cache = self.objects.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let watched = cache.lookup(ns)(SourceKind::Secret, credentials::KEY_SECRET);
        watched
            .map(|d| credentials::AgentTokenKey::from_data(ns, d.data.get(credentials::KEY_KEY).map(Vec::as_slice)))
            .transpose()
    }

    /// The digests of the objects `agent` references, for its spec hash.
    pub(super) fn ref_digests(&self, agent: &Agent) -> std::collections::BTreeMap<String, String> {
        let ns = agent.namespace().unwrap_or_default();
        let cache = self.objects.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        config_refs::digests(&agent.spec, cache.lookup(&ns))
    }
}

impl World {
    /// A watched object changed: the cache follows, and the agents that reference it get a
    /// pass (a missing one may now start; a changed one rolls them through their hash).
    pub(super) fn object_changed(&mut self, node: &Node, change: ObjectChange) {
        let ObjectChange { kind, key: (ns, name), data } = change;
        if kind == SourceKind::Secret && name == credentials::KEY_SECRET {
            // A token key changed or went: the next start uses the watched one, or makes one.
            let mut keys = node.token_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            keys.remove(&ns);
        }
        let id = (kind, ns.clone(), name.clone());
        {
            let mut cache = node.objects.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // The watch also delivers metadata-only changes: only the data matters here.
            let same = match &data {
                Some(d) => cache.objects.get(&id) == Some(d),
                None => !cache.objects.contains_key(&id),
            };
            if same {
                return;
            }
            match data {
                Some(d) => cache.objects.insert(id, d),
                None => cache.objects.remove(&id),
            };
        }
        // Every agent gets a pass anyway (the initial lists, a budget change).
        if self.all_dirty {
            return;
        }
        for (k, agent) in &self.agents {
            if k.0 == ns && config_refs::objects(&agent.spec).contains(&(kind, name.clone())) {
                self.dirty.insert(k.clone());
            }
        }
    }
}

/// What the node remembers of an agent's references between passes: the last error and the
/// last skipped keys it recorded an Event for (one Event per change, not per pass).
#[derive(Default)]
pub(super) struct RefsReported {
    pub(super) error: Option<String>,
    pub(super) skipped: Vec<String>,
}

impl RefsReported {
    /// Records an Event when the error or the skipped keys changed since the last pass.
    pub(super) fn report(&mut self, node: &Node, agent: &Agent, outcome: &Result<Resolved, Unresolved>) {
        let (error, skipped) = match outcome {
            Ok(r) => (None, r.skipped.clone()),
            Err(e) => (Some(e.to_string()), self.skipped.clone()),
        };
        if error != self.error
            && let Some(message) = &error
        {
            record_event(node, agent, config_refs::CONFIG_ERROR_REASON, &format!("Error: {message}"));
        }
        if skipped != self.skipped && !skipped.is_empty() {
            record_event(
                node,
                agent,
                "InvalidEnvironmentVariableNames",
                &format!(
                    "keys skipped from envFrom since they are not valid environment variable names (or their values not text): {}",
                    skipped.join(", ")
                ),
            );
        }
        self.error = error;
        self.skipped = skipped;
    }
}
