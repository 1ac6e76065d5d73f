//! Reading manifests from files, directories and stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::api::manifest::{self, Document, Foreign, ManifestError, Origin};

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

/// Reads every manifest named by `paths` and validates all documents together. Returns
/// the documents only when every one of them is valid.
pub fn read_manifests(paths: &[PathBuf], recursive: bool) -> Result<Vec<Document>, Vec<ManifestError>> {
    let (docs, errors) = read_documents(paths, recursive)?;
    validated(docs, errors)
}

/// [`read_manifests`], leaving out (and returning) the documents of kinds that are not a2a's.
pub fn read_manifests_skipping_foreign(
    paths: &[PathBuf],
    recursive: bool,
) -> (Result<Vec<Document>, Vec<ManifestError>>, Vec<Foreign>) {
    match read_documents(paths, recursive) {
        Ok((mut docs, errors)) => {
            let foreign = manifest::take_foreign(&mut docs);
            (validated(docs, errors), foreign)
        }
        Err(errors) => (Err(errors), Vec::new()),
    }
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
