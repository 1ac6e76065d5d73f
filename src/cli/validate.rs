//! `a2a validate -f PATH`: every mistake in every document, without contacting anything.

use crate::api::manifest::{Document, ManifestError};

use super::FileArgs;

/// The outcome of a validation run.
#[derive(Debug)]
pub struct Report {
    pub documents: Vec<Document>,
    pub errors: Vec<ManifestError>,
}

impl Report {
    /// One line: what was checked and how it went.
    pub fn summary(&self) -> String {
        if self.errors.is_empty() {
            let n = self.documents.len();
            return format!("{n} document{} valid", if n == 1 { "" } else { "s" });
        }
        let n = self.errors.len();
        let mut files: Vec<&str> = self.errors.iter().map(|e| e.source.as_str()).collect();
        files.dedup();
        let f = files.len();
        format!("{n} error{} in {f} file{}", if n == 1 { "" } else { "s" }, if f == 1 { "" } else { "s" })
    }
}

/// Validates the named manifests.
pub fn run(args: &FileArgs) -> Report {
    match super::input::read_manifests(&args.files, args.recursive) {
        Ok(documents) => Report { documents, errors: Vec::new() },
        Err(errors) => Report { documents: Vec::new(), errors },
    }
}
