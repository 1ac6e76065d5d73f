//! Validation of an Agent's references to Secrets and ConfigMaps (`env[].valueFrom`,
//! `envFrom`, `secretFiles`), with the rules the kube-apiserver applies to a Pod's: exactly
//! one source per entry, object names that are DNS subdomains, keys that are config keys,
//! file paths that stay inside their directory.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use super::agent::{AgentSpec, KeySelector};
use super::validate::FieldError;

/// Whether `name` can name an environment variable: letters, digits and `_`, not starting
/// with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A key of a Secret or ConfigMap: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.`/`..`.
fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_object_name(name: &str, path: String, errors: &mut Vec<FieldError>) {
    if name.len() > 253 || !super::objectmeta::is_subdomain(name) {
        errors.push(FieldError::new(
            path,
            format!("{name:?} is not a Secret or ConfigMap name (a lowercase RFC 1123 subdomain)"),
        ));
    }
}

fn check_key(key: &str, path: String, errors: &mut Vec<FieldError>) {
    if !is_config_key(key) {
        errors.push(FieldError::new(
            path,
            format!("{key:?} is not a key: alphanumeric characters, '-', '_' or '.' (at most 253)"),
        ));
    }
}

fn check_selector(sel: &KeySelector, at: &str, errors: &mut Vec<FieldError>) {
    check_object_name(&sel.name, format!("{at}.name"), errors);
    check_key(&sel.key, format!("{at}.key"), errors);
}

/// Checks the reference fields of `s`, adding an error per problem, each naming its field.
pub(super) fn check(s: &AgentSpec, errors: &mut Vec<FieldError>) {
    for (i, e) in s.env.iter().enumerate() {
        let Some(from) = &e.value_from else { continue };
        let at = format!("spec.env[{i}].valueFrom");
        if !e.value.is_empty() {
            errors.push(FieldError::new(at.clone(), "may not be set when value is not empty: give one of the two"));
        }
        match (&from.secret_key_ref, &from.config_map_key_ref) {
            (Some(sel), None) => check_selector(sel, &format!("{at}.secretKeyRef"), errors),
            (None, Some(sel)) => check_selector(sel, &format!("{at}.configMapKeyRef"), errors),
            _ => errors.push(FieldError::new(at, "give exactly one of secretKeyRef and configMapKeyRef")),
        }
    }
    for (i, from) in s.env_from.iter().enumerate() {
        let at = format!("spec.envFrom[{i}]");
        if let Some(prefix) = from.prefix.as_deref().filter(|p| !p.is_empty())
            && !is_env_name(prefix)
        {
            errors.push(FieldError::new(
                format!("{at}.prefix"),
                format!("{prefix:?} cannot start a variable name (letters, digits, '_', not starting with a digit)"),
            ));
        }
        match (&from.secret_ref, &from.config_map_ref) {
            (Some(sel), None) => check_object_name(&sel.name, format!("{at}.secretRef.name"), errors),
            (None, Some(sel)) => check_object_name(&sel.name, format!("{at}.configMapRef.name"), errors),
            _ => errors.push(FieldError::new(at, "give exactly one of secretRef and configMapRef")),
        }
    }
    if !s.secret_files.is_empty() && s.protocol == Some(super::agent::Protocol::Stdio) {
        errors.push(FieldError::new(
            "spec.secretFiles",
            "a stdio agent runs a process per task and gets no secret files; use env valueFrom or envFrom",
        ));
    }
    let mut mounts = BTreeSet::new();
    for (i, f) in s.secret_files.iter().enumerate() {
        let at = format!("spec.secretFiles[{i}]");
        check_object_name(&f.secret_name, format!("{at}.secretName"), errors);
        let mount = f.mount_path();
        let mount_at = format!("{at}.mountPath");
        if !super::validate::is_plain_absolute(&mount) {
            errors.push(FieldError::new(
                mount_at,
                format!("{mount:?} is not an absolute path without '.', '..' or a trailing '/' (and not '/')"),
            ));
        } else if let Some(api) = ["/proc", "/sys", "/dev"].iter().find(|a| Path::new(&mount).starts_with(a)) {
            errors.push(FieldError::new(mount_at, format!("{mount:?} is inside {api}, where files cannot be given")));
        } else if mounts.iter().any(|m: &String| Path::new(m).starts_with(&mount) || Path::new(&mount).starts_with(m)) {
            errors
                .push(FieldError::new(mount_at, format!("{mount:?} is, holds or is inside another secretFiles path")));
        } else if s.writable_paths.iter().any(|w| Path::new(w).starts_with(&mount) || Path::new(&mount).starts_with(w))
        {
            errors.push(FieldError::new(mount_at, format!("{mount:?} is, holds or is inside one of writablePaths")));
        }
        mounts.insert(mount);
        let mut paths = BTreeSet::new();
        for (j, item) in f.items.iter().enumerate() {
            check_key(&item.key, format!("{at}.items[{j}].key"), errors);
            let p = Path::new(&item.path);
            let plain = !item.path.is_empty()
                && !item.path.ends_with('/')
                && !item.path.contains("//")
                && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                errors.push(FieldError::new(
                    format!("{at}.items[{j}].path"),
                    format!("{:?} is not a relative path without '.' or '..'", item.path),
                ));
            } else if !paths.insert(item.path.as_str()) {
                errors
                    .push(FieldError::new(format!("{at}.items[{j}].path"), format!("{:?} is listed twice", item.path)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::validate::validate;

    fn errors_of(spec: serde_json::Value) -> Vec<String> {
        let doc = serde_json::json!({
            "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": spec,
        });
        match validate(&doc) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn well_formed_references_are_accepted() {
        let errs = errors_of(serde_json::json!({
            "command": ["sleep", "1"],
            "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": true}}},
                {"name": "C", "value": "plain"}
            ],
            "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}, {"configMapRef": {"name": "cfg"}}],
            "secretFiles": [
                {"secretName": "tls"},
                {"secretName": "openai", "mountPath": "/etc/openai", "items": [{"key": "api-key", "path": "sub/key"}]}
            ]
        }));
        assert_eq!(errs, Vec::<String>::new());
    }

    #[test]
    fn each_malformed_reference_is_named_by_its_field_path() {
        let errs = errors_of(serde_json::json!({
            "command": ["sleep", "1"],
            "env": [
                {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "B", "valueFrom": {}},
                {"name": "C", "valueFrom": {"secretKeyRef": {"name": "Not_A_Name", "key": "bad/key"}}}
            ],
            "envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}, {"prefix": "1X", "secretRef": {"name": "s"}}],
            "secretFiles": [
                {"secretName": "s", "mountPath": "relative"},
                {"secretName": "t", "mountPath": "/proc/x"},
                {"secretName": "u", "items": [{"key": "k", "path": "../escape"}, {"key": "k", "path": "a"}, {"key": "j", "path": "a"}]},
                {"secretName": "v", "mountPath": "/run/secrets/u/inner"}
            ]
        }));
        let expect = [
            "spec.env[0].valueFrom: may not be set when value is not empty",
            "spec.env[1].valueFrom: give exactly one of secretKeyRef and configMapKeyRef",
            "spec.env[2].valueFrom.secretKeyRef.name: \"Not_A_Name\" is not a Secret or ConfigMap name",
            "spec.env[2].valueFrom.secretKeyRef.key: \"bad/key\" is not a key",
            "spec.envFrom[0]: give exactly one of secretRef and configMapRef",
            "spec.envFrom[1].prefix: \"1X\" cannot start a variable name",
            "spec.secretFiles[0].mountPath: \"relative\" is not an absolute path",
            "spec.secretFiles[1].mountPath: \"/proc/x\" is inside /proc",
            "spec.secretFiles[2].items[0].path: \"../escape\" is not a relative path",
            "spec.secretFiles[2].items[2].path: \"a\" is listed twice",
            "spec.secretFiles[3].mountPath: \"/run/secrets/u/inner\" is, holds or is inside another",
        ];
        for e in expect {
            assert!(errs.iter().any(|got| got.contains(e)), "missing {e:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }
}
