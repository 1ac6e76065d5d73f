//! Reading manifests from files, directories and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::api::manifest::{self, ConfigDocument, ConfigKind, Document, Foreign, ManifestError, Origin};

/// Extensions read from directories, as kubectl does.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

fn io_error(source: &str, message: String) -> ManifestError {
    ManifestError {
        source: source.to_owned(),
        document: None,
        object: None,
        error: crate::api::validate::FieldError::new("", message),
    }
}

/// The files named by `-f` arguments, directories expanded (recursively with `-R`), in a
/// stable order.
pub fn expand(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, Vec<ManifestError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
            continue;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                let before = files.len();
                walk_dir(p, recursive, &mut files, &mut errors);
                if files.len() == before && errors.is_empty() {
                    errors.push(io_error(
                        &p.display().to_string(),
                        format!(
                            "directory has no .yaml, .yml or .json files{}",
                            if recursive { "" } else { " (use -R to read subdirectories)" }
                        ),
                    ));
                }
            }
            Ok(_) => files.push(p.clone()),
            Err(e) => errors.push(io_error(&p.display().to_string(), describe_io(&e))),
        }
    }
    if errors.is_empty() { Ok(files) } else { Err(errors) }
}

fn walk_dir(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push(io_error(&dir.display().to_string(), describe_io(&e)));
            return;
        }
    };
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                walk_dir(&path, recursive, files, errors);
            }
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e)) {
            files.push(path);
        }
    }
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// What a set of manifest files holds: a2a's objects, and the core Secrets and ConfigMaps
/// beside them.
#[derive(Debug, Default)]
pub struct Manifests {
    pub docs: Vec<Document>,
    pub config: Vec<ConfigDocument>,
}

/// Reads every manifest named by `paths` and validates all documents together. Returns
/// them only when every one of them is valid.
pub fn read_manifests(paths: &[PathBuf], recursive: bool) -> Result<Manifests, Vec<ManifestError>> {
    let (mut docs, mut errors) = read_documents(paths, recursive)?;
    let config = take_config(&mut docs, &mut errors);
    let docs = validated(docs, errors)?;
    Ok(Manifests { docs, config })
}

/// [`read_manifests`], leaving out (and returning) the documents of kinds that are neither
/// a2a's nor core Secrets and ConfigMaps.
pub fn read_manifests_skipping_foreign(
    paths: &[PathBuf],
    recursive: bool,
) -> (Result<Manifests, Vec<ManifestError>>, Vec<Foreign>) {
    match read_documents(paths, recursive) {
        Ok((mut docs, mut errors)) => {
            let config = take_config(&mut docs, &mut errors);
            let foreign = manifest::take_foreign(&mut docs);
            (validated(docs, errors).map(|docs| Manifests { docs, config }), foreign)
        }
        Err(errors) => (Err(errors), Vec::new()),
    }
}

/// Takes the core Secrets and ConfigMaps out of `docs` and checks each as the API server
/// will (keys, sizes, base64, a Secret type's required keys), adding what is wrong to
/// `errors`. The checks name keys, never values.
fn take_config(docs: &mut Vec<(Origin, serde_json::Value)>, errors: &mut Vec<ManifestError>) -> Vec<ConfigDocument> {
    let (config, mut more) = manifest::take_config(docs);
    for doc in &config {
        let mut field_errors = Vec::new();
        match doc.kind {
            ConfigKind::Secret => crate::apiserver::secret::admit(&mut doc.raw.clone(), &mut field_errors),
            ConfigKind::ConfigMap => crate::apiserver::resources::validate_config_map(&doc.raw, &mut field_errors),
        }
        more.extend(field_errors.into_iter().map(|error| ManifestError {
            source: doc.origin.source.clone(),
            document: Some(doc.origin.document),
            object: Some(format!("{}/{}", doc.kind.as_str(), doc.name)),
            error,
        }));
    }
    errors.extend(more);
    config
}

fn validated(
    docs: Vec<(Origin, serde_json::Value)>,
    mut errors: Vec<ManifestError>,
) -> Result<Vec<Document>, Vec<ManifestError>> {
    match manifest::validate_documents(docs) {
        Ok(valid) if errors.is_empty() => Ok(valid),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Parsed documents, and the errors of the files that could not be read or parsed.
type Parsed = (Vec<(Origin, serde_json::Value)>, Vec<ManifestError>);

/// The documents of every file `paths` name; `Err` when `paths` themselves are wrong.
fn read_documents(paths: &[PathBuf], recursive: bool) -> Result<Parsed, Vec<ManifestError>> {
    let files = expand(paths, recursive)?;
    let mut docs: Vec<(Origin, serde_json::Value)> = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let (source, bytes) = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            let limit = manifest::MAX_MANIFEST_BYTES as u64 + 1;
            match std::io::stdin().lock().take(limit).read_to_end(&mut buf) {
                Ok(_) => ("<stdin>".to_owned(), buf),
                Err(e) => {
                    errors.push(io_error("<stdin>", describe_io(&e)));
                    continue;
                }
            }
        } else {
            let source = file.display().to_string();
            match std::fs::read(&file) {
                Ok(b) => (source, b),
                Err(e) => {
                    errors.push(io_error(&source, describe_io(&e)));
                    continue;
                }
            }
        };
        match manifest::decode(&source, bytes)
            .map_err(|e| vec![e])
            .and_then(|text| manifest::parse_documents(&source, &text))
        {
            Ok(d) => docs.extend(d),
            Err(e) => errors.extend(e),
        }
    }
    Ok((docs, errors))
}
