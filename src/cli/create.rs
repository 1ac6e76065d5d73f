//! `a2a create secret generic NAME` and `a2a create configmap NAME`, as kubectl spells them:
//! keys and values from `--from-literal K=V`, `--from-file [K=]PATH` (a file, or every
//! regular file of a directory) and `--from-env-file PATH` (`K=V` lines), each repeatable.
//! Values go to the server only; what is printed is `secret/NAME created`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};

use super::client::{ConnectArgs, Error, Result};
use crate::apiserver::secret::{CONFIG_KEY_MESSAGE, is_config_key};

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: CreateKind,
}

#[derive(Subcommand, Debug)]
pub enum CreateKind {
    /// Create a Secret (values are encrypted in the local store).
    Secret {
        #[command(subcommand)]
        kind: SecretKind,
    },
    /// Create a ConfigMap.
    #[command(visible_alias = "cm")]
    Configmap(DataArgs),
}

#[derive(Subcommand, Debug)]
pub enum SecretKind {
    /// A Secret of any type (default Opaque) from literals, files and env files.
    Generic(SecretArgs),
}

#[derive(Args, Debug)]
pub struct SecretArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The Secret's type.
    #[arg(long = "type", value_name = "TYPE")]
    pub type_: Option<String>,
}

/// Where the keys and values come from.
#[derive(Args, Debug)]
pub struct DataArgs {
    pub name: String,
    /// Namespace [default: the kubeconfig context's].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// A key and its value, `KEY=VALUE`. Repeatable.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// A file (the key is its name, or KEY=PATH), or a directory (a key per regular file). Repeatable.
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// A file of `KEY=VALUE` lines (`#` comments and blank lines skipped). Repeatable.
    #[arg(long = "from-env-file", value_name = "PATH")]
    pub from_env_file: Vec<PathBuf>,
    /// Refuse changes to the data once created.
    #[arg(long)]
    pub immutable: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The keys and values, in key order; errors name the source and the key, never a value.
pub fn collect(args: &DataArgs) -> Result<BTreeMap<String, Vec<u8>>> {
    if !args.from_env_file.is_empty() && (!args.from_file.is_empty() || !args.from_literal.is_empty()) {
        return Err(Error::Usage("--from-env-file cannot be combined with --from-file or --from-literal".into()));
    }
    let mut out = BTreeMap::new();
    let mut add = |key: String, value: Vec<u8>, from: &str| -> Result<()> {
        if !is_config_key(&key) {
            return Err(Error::Usage(format!("{from}: {key:?} is not a valid key name: {CONFIG_KEY_MESSAGE}")));
        }
        if out.insert(key.clone(), value).is_some() {
            return Err(Error::Usage(format!(
                "{from}: cannot add key {key:?}, another key by that name already exists"
            )));
        }
        Ok(())
    };
    for literal in &args.from_literal {
        let Some((k, v)) = literal.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(Error::Usage("--from-literal: expected KEY=VALUE (the key is missing)".into()));
        };
        add(k.to_string(), v.as_bytes().to_vec(), "--from-literal")?;
    }
    for source in &args.from_file {
        let (key, path) = match source.split_once('=') {
            Some((k, p)) if !k.is_empty() && !p.is_empty() => (Some(k.to_string()), PathBuf::from(p)),
            Some(_) => return Err(Error::Usage(format!("--from-file {source:?}: expected [KEY=]PATH"))),
            None => (None, PathBuf::from(source)),
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::Usage(format!("--from-file {}: {e}", p.display())));
        let meta =
            std::fs::metadata(&path).map_err(|e| Error::Usage(format!("--from-file {}: {e}", path.display())))?;
        if meta.is_dir() {
            if key.is_some() {
                return Err(Error::Usage(format!(
                    "--from-file {source}: a key cannot be given for a directory ({})",
                    path.display()
                )));
            }
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| Error::Usage(format!("--from-file {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for p in entries {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                // As kubectl: files whose names are not keys are left out of a directory.
                if is_config_key(&name) {
                    add(name, read(&p)?, "--from-file")?;
                }
            }
        } else {
            let key =
                key.unwrap_or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            add(key, read(&path)?, "--from-file")?;
        }
    }
    for path in &args.from_env_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--from-env-file {}: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            let where_ = format!("--from-env-file {}: line {}", path.display(), i + 1);
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => add(k.to_string(), v.as_bytes().to_vec(), &where_)?,
                // As kubectl: a bare name takes its value from the environment.
                None => {
                    let v = std::env::var_os(line).map(|v| v.into_encoded_bytes()).unwrap_or_default();
                    add(line.trim_end().to_string(), v, &where_)?
                }
            }
        }
    }
    Ok(out)
}

/// Creates the object; returns the line kubectl prints.
pub async fn run(args: &CreateArgs) -> Result<String> {
    let (data, kind) = match &args.what {
        CreateKind::Secret { kind: SecretKind::Generic(s) } => (&s.data, "secret"),
        CreateKind::Configmap(d) => (d, "configmap"),
    };
    let values = collect(data)?;
    let conn = data.connect.connect().await?;
    let ns = data.namespace.clone().unwrap_or(conn.namespace.clone());
    let meta = ObjectMeta { name: Some(data.name.clone()), namespace: Some(ns.clone()), ..Default::default() };
    let immutable = data.immutable.then_some(true);
    let pp = PostParams { field_manager: Some("a2a-create".into()), ..Default::default() };
    let created = match &args.what {
        CreateKind::Secret { kind: SecretKind::Generic(s) } => {
            let secret = Secret {
                metadata: meta,
                data: Some(values.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
                type_: Some(s.type_.clone().unwrap_or_else(|| "Opaque".into())),
                immutable,
                ..Default::default()
            };
            Api::<Secret>::namespaced(conn.client.clone(), &ns).create(&pp, &secret).await.map(|_| ())
        }
        CreateKind::Configmap(_) => {
            // Text goes to data, other bytes to binaryData, as kubectl sorts them.
            let (mut text, mut binary) = (BTreeMap::new(), BTreeMap::new());
            for (k, v) in values {
                match String::from_utf8(v) {
                    Ok(s) => {
                        text.insert(k, s);
                    }
                    Err(e) => {
                        binary.insert(k, ByteString(e.into_bytes()));
                    }
                }
            }
            let cm = ConfigMap {
                metadata: meta,
                data: (!text.is_empty()).then_some(text),
                binary_data: (!binary.is_empty()).then_some(binary),
                immutable,
            };
            Api::<ConfigMap>::namespaced(conn.client.clone(), &ns).create(&pp, &cm).await.map(|_| ())
        }
    };
    created.map_err(|e| Error::from_kube(e, &conn.url))?;
    Ok(format!("{kind}/{} created", data.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(literal: &[&str], files: &[&str], env: &[&Path]) -> DataArgs {
        DataArgs {
            name: "s".into(),
            namespace: None,
            from_literal: literal.iter().map(|s| s.to_string()).collect(),
            from_file: files.iter().map(|s| s.to_string()).collect(),
            from_env_file: env.iter().map(|p| p.to_path_buf()).collect(),
            immutable: false,
            connect: ConnectArgs::default(),
        }
    }

    #[test]
    fn literals_files_and_directories_become_keys_as_kubectl_makes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.txt"), "gpt").unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), "1").unwrap();
        std::fs::write(sub.join("bad name"), "skipped").unwrap();
        let file = dir.path().join("model.txt").display().to_string();
        let renamed = format!("key={file}");
        let d = sub.display().to_string();
        let got = collect(&args(&["api-key=s=k"], &[&file, &renamed, &d], &[])).unwrap();
        let got: Vec<(&str, &[u8])> = got.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        assert_eq!(got, [("a", &b"1"[..]), ("api-key", b"s=k"), ("key", b"gpt"), ("model.txt", b"gpt")]);
    }

    #[test]
    fn env_files_skip_comments_and_refuse_duplicates_and_mixing_without_showing_values() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("e.env");
        std::fs::write(&env, "# comment\n\nA=1\nB=x=y\n").unwrap();
        let got = collect(&args(&[], &[], &[&env])).unwrap();
        assert_eq!(got["B"], b"x=y");
        assert_eq!(got.len(), 2);
        std::fs::write(&env, "A=topsecret\nA=again\n").unwrap();
        let e = collect(&args(&[], &[], &[&env])).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("\"A\"") && !e.contains("topsecret"), "{e}");
        let e = collect(&args(&["k=v"], &[], &[&env])).unwrap_err().to_string();
        assert!(e.contains("cannot be combined"), "{e}");
        let e = collect(&args(&["bad/key=hidden"], &[], &[])).unwrap_err().to_string();
        assert!(e.contains("\"bad/key\"") && !e.contains("hidden"), "{e}");
    }
}
