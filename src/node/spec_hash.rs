//! The hash of what a replica was started with, recorded in `status.instances[].specHash`:
//! when the Agent's hash differs from a running replica's, the replica is restarted (one at
//! a time). The hash must therefore not change when nothing that needs a restart changed,
//! whatever the toolchain: a binary built with another Rust must not restart every agent.
//!
//! What is hashed is chosen by a type, [`RestartSpec`], built from the [`AgentSpec`] by a
//! destructuring that names every field: a new field of `AgentSpec` does not compile until it
//! is placed either in `RestartSpec` (a change restarts the replicas) or among the fields
//! applied in place. The encoding is canonical JSON (object keys sorted, absent and empty
//! fields left out, so a new field that is unset hashes as before), the algorithm SHA-256.
//!
//! The recorded value carries its algorithm's version: `v2:` and 64 hex digits. Version 1 is
//! what a2a recorded before: 16 hex digits of std's `DefaultHasher` (SipHash-1-3 with zero
//! keys, which Rust does not promise to keep) over the same fields. A replica recorded with
//! an older version is compared by recomputing that version's hash of the current spec: equal
//! means it runs this spec, and it is adopted without a restart (its status then records the
//! current version); different means the spec changed while it ran, and it is restarted as
//! for any change. A version this a2a does not know (written by a newer one) counts as
//! different: the replica is restarted with what this a2a can vouch for.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::api::agent::{AgentSpec, EnvFromSource, EnvVar, EnvVarSource, SecretFiles};

/// The version of the hash this a2a records.
pub const VERSION: u32 = 2;

/// Everything of an Agent that the running process was started with: a change to any of it
/// needs a restart. Fields at their default are left out of the encoding.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartSpec<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub command: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub args: &'a [String],
    /// In order: a later entry of the same name wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<HashedEnv<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub env_from: &'a [EnvFromSource],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub secret_files: &'a [SecretFiles],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub writable_paths: &'a [String],
    /// The data the process is given from referenced Secrets, by Secret name: the version of
    /// that data (a digest keyed by the object, see [`crate::controller::config_refs`]), by
    /// `Kind/name`, so that a changed Secret or ConfigMap restarts the replicas that use it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// One `env` entry as hashed: `value` always written (an empty one too, as before
/// `valueFrom` existed), `valueFrom` only when set, so a spec without references hashes as it
/// always did.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HashedEnv<'a> {
    name: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_from: Option<&'a EnvVarSource>,
}

impl<'a> From<&'a EnvVar> for HashedEnv<'a> {
    fn from(e: &'a EnvVar) -> Self {
        HashedEnv { name: &e.name, value: &e.value, value_from: e.value_from.as_ref() }
    }
}

impl<'a> RestartSpec<'a> {
    /// What of `spec` needs a restart when it changes.
    pub fn of(spec: &'a AgentSpec) -> RestartSpec<'a> {
        // Every field is named: a new one must be placed here consciously.
        let AgentSpec {
            command,
            args,
            env,
            env_from,
            secret_files,
            working_dir,
            user,
            port,
            writable_paths,
            // Cluster mode only: the Deployment's pod template carries it.
            image: _,
            // An agent that runs elsewhere has no replicas here.
            url: _,
            // Only for an agent with url: read by the workflow engine and the card probe.
            tls: _,
            auth: _,
            // `stdio` agents have no long-running replicas: a change stops or starts them.
            protocol: _,
            // Applied in place: scaling starts or stops replicas, never restarts one.
            replicas: _,
            // Read by the workflow engine's dispatch, not by the process.
            max_concurrent_tasks: _,
            skills: _,
            // Applied in place: cgroup limits and weights are rewritten on the running cgroup.
            resources: _,
            priority: _,
            // Admission: a budget change admits or stops the agent, the cgroup stays.
            budget: _,
            // Read when a replica exits.
            restart_policy: _,
            // Read by the workflow engine's dispatch, not by the process.
            rate_limit: _,
        } = spec;
        RestartSpec {
            command,
            args,
            env: env.iter().map(HashedEnv::from).collect(),
            env_from,
            secret_files,
            working_dir: working_dir.as_deref(),
            user: user.as_deref(),
            port: *port,
            writable_paths,
            secrets: BTreeMap::new(),
        }
    }

    /// The canonical encoding: JSON with every object's keys sorted, no whitespace.
    pub fn canonical_json(&self) -> String {
        // Serialising plain strings, numbers and maps of them cannot fail.
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let mut out = String::new();
        write_sorted(&value, &mut out);
        out
    }
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// An Agent's spec hash, in the current version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecHash(String);

impl SpecHash {
    /// The hash of what of `spec` needs a restart.
    pub fn of(spec: &AgentSpec) -> SpecHash {
        SpecHash::of_restart_spec(&RestartSpec::of(spec))
    }

    pub fn of_restart_spec(restart: &RestartSpec<'_>) -> SpecHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, restart.canonical_json().as_bytes());
        let mut out = format!("v{VERSION}:");
        for b in digest.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        SpecHash(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a replica recorded with `recorded` runs `spec`: the same value, or a hash of
    /// an older version that, recomputed for `spec`, is the same.
    pub fn matches(&self, recorded: &str, spec: &AgentSpec) -> bool {
        if recorded == self.0 {
            return true;
        }
        match version_of(recorded) {
            Some(1) => recorded == v1(spec),
            _ => false,
        }
    }
}

impl std::fmt::Display for SpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The version of a recorded hash: `vN:` then hex; 16 hex digits alone are version 1;
/// anything else (an empty value included) has none.
pub fn version_of(recorded: &str) -> Option<u32> {
    if recorded.len() == 16 && recorded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(1);
    }
    let (v, hex) = recorded.strip_prefix('v')?.split_once(':')?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    v.parse().ok().filter(|v| *v >= 2)
}

/// Version 1, kept to recognise replicas started before version 2: std's `DefaultHasher`
/// over command, args, working directory, user, port, writable paths and the environment.
pub fn v1(spec: &AgentSpec) -> String {
    use std::hash::{Hash, Hasher};
    let s = spec;
    #[allow(deprecated)]
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&s.command, &s.args, &s.working_dir, &s.user, s.port, &s.writable_paths).hash(&mut h);
    for e in &s.env {
        (&e.name, &e.value).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Priority;
    use crate::api::agent::{Protocol, RestartPolicy};

    fn base() -> AgentSpec {
        AgentSpec {
            command: vec!["a2a".into(), "demo-agent".into()],
            args: vec!["--skill".into(), "echo".into()],
            env: vec![EnvVar { name: "MODE".into(), value: "fast".into(), value_from: None }],
            ..AgentSpec::default()
        }
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Checked in: a change of this value restarts every agent of every user on upgrade.
        // Change it only with a new VERSION (and `matches` recomputing the old one). The same
        // as `printf %s JSON | sha256sum` of the encoding above.
        assert_eq!(
            RestartSpec::of(&base()).canonical_json(),
            r#"{"args":["--skill","echo"],"command":["a2a","demo-agent"],"env":[{"name":"MODE","value":"fast"}]}"#
        );
        assert_eq!(
            SpecHash::of(&base()).as_str(),
            "v2:1397b0b1ac0e0d0e07f7e14b5a1488da643785ce16938196acd213484a27305b"
        );
        assert_eq!(SpecHash::of(&AgentSpec::default()).as_str(), format!("v2:{}", sha256_hex(b"{}")));
        // An empty value is hashed as it always was, though the API no longer prints it.
        let empty = AgentSpec { env: vec![EnvVar { name: "X".into(), ..Default::default() }], ..AgentSpec::default() };
        assert_eq!(RestartSpec::of(&empty).canonical_json(), r#"{"env":[{"name":"X","value":""}]}"#);
    }

    fn sha256_hex(data: &[u8]) -> String {
        ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn what_changes_the_hash_and_what_applies_in_place() {
        type Edit = fn(&mut AgentSpec);
        let restarts: &[(&str, Edit)] = &[
            ("command", |s| s.command.push("--verbose".into())),
            ("args", |s| s.args[1] = "upper".into()),
            ("env value", |s| s.env[0].value = "slow".into()),
            ("env added", |s| s.env.push(EnvVar { name: "X".into(), ..Default::default() })),
            ("env order", |s| s.env.insert(0, EnvVar { name: "MODE".into(), value: "slow".into(), value_from: None })),
            ("working dir", |s| s.working_dir = Some("/srv".into())),
            ("user", |s| s.user = Some("nobody".into())),
            ("port", |s| s.port = Some(8080)),
            ("writable paths", |s| s.writable_paths = vec!["/srv/data".into()]),
            ("env from a secret", |s| {
                s.env[0].value = String::new();
                s.env[0].value_from = Some(EnvVarSource {
                    secret_key_ref: Some(crate::api::agent::KeySelector {
                        name: "s".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    config_map_key_ref: None,
                });
            }),
            ("envFrom", |s| s.env_from = vec![EnvFromSource::default()]),
            ("secret files", |s| s.secret_files = vec![SecretFiles { secret_name: "s".into(), ..Default::default() }]),
        ];
        let in_place: &[(&str, Edit)] = &[
            ("replicas", |s| s.replicas = Some(3)),
            ("limits", |s| s.resources.limits.memory = Some(serde_json::from_value("64Mi".into()).unwrap())),
            ("requests", |s| s.resources.requests.cpu = Some(serde_json::from_value("100m".into()).unwrap())),
            ("priority", |s| s.priority = Some(Priority::High)),
            ("budget", |s| s.budget = Some("team".into())),
            ("skills", |s| s.skills = vec!["echo".into()]),
            ("max concurrent tasks", |s| s.max_concurrent_tasks = Some(4)),
            ("restart policy", |s| s.restart_policy = Some(RestartPolicy::Never)),
            ("image", |s| s.image = Some("ghcr.io/x/y:1".into())),
            ("protocol", |s| s.protocol = Some(Protocol::A2a)),
        ];
        let before = SpecHash::of(&base());
        for (what, edit) in restarts {
            let mut spec = base();
            edit(&mut spec);
            assert_ne!(SpecHash::of(&spec), before, "a change of {what} must restart");
            assert!(!before.matches(SpecHash::of(&spec).as_str(), &base()), "{what}");
        }
        for (what, edit) in in_place {
            let mut spec = base();
            edit(&mut spec);
            assert_eq!(SpecHash::of(&spec), before, "a change of {what} applies in place");
        }
        // A referenced Secret's data feeds the hash through the same type.
        let spec = base();
        let mut with_secret = RestartSpec::of(&spec);
        with_secret.secrets.insert("api-key".into(), "17".into());
        assert_ne!(SpecHash::of_restart_spec(&with_secret), before);
    }

    #[test]
    fn an_older_versions_hash_of_the_same_spec_matches_and_of_another_does_not() {
        let spec = base();
        let current = SpecHash::of(&spec);
        let old = v1(&spec);
        assert_eq!(version_of(&old), Some(1));
        assert_eq!(version_of(current.as_str()), Some(VERSION));
        assert!(current.matches(current.as_str(), &spec));
        assert!(current.matches(&old, &spec), "a replica recorded with version 1 of this spec is not restarted");
        let mut changed = base();
        changed.args.push("--more".into());
        assert!(!current.matches(&v1(&changed), &spec), "version 1 of another spec: restarted");
        for unknown in ["", "abc", "v3:00ff", "v2:", "v1:0011223344556677", "zz11223344556677"] {
            assert!(!current.matches(unknown, &spec), "{unknown:?}");
        }
    }
}
