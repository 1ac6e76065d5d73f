//! `a2a validate -f PATH`: every mistake in every document, without contacting anything.
//! Core Secrets and ConfigMaps are checked as the API server checks them. Documents of other
//! tools' kinds (Argo CD, Flux, other core Kubernetes kinds) are skipped and listed,
//! as kubectl skips what it has no schema for.

use crate::api::manifest::{ConfigDocument, Document, Foreign, ManifestError};

use super::FileArgs;

/// The outcome of a validation run.
#[derive(Debug)]
pub struct Report {
    pub documents: Vec<Document>,
    /// Core Secrets and ConfigMaps, checked as the API server checks them.
    pub config: Vec<ConfigDocument>,
    /// Documents of kinds that are not a2a's, not checked.
    pub skipped: Vec<Foreign>,
    pub errors: Vec<ManifestError>,
}

impl Report {
    /// One line: what was checked and how it went.
    pub fn summary(&self) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        if self.errors.is_empty() {
            let n = self.documents.len() + self.config.len();
            let skipped = match self.skipped.len() {
                0 => String::new(),
                s => format!(", {s} skipped (not a2a kind{})", plural(s)),
            };
            return format!("{n} document{} valid{skipped}", plural(n));
        }
        let n = self.errors.len();
        let mut files: Vec<&str> = self.errors.iter().map(|e| e.source.as_str()).collect();
        files.dedup();
        let f = files.len();
        format!("{n} error{} in {f} file{}", plural(n), plural(f))
    }
}

/// Validates the named manifests.
pub fn run(args: &FileArgs) -> Report {
    match super::input::read_manifests_skipping_foreign(&args.files, args.recursive) {
        (Ok(m), skipped) => Report { documents: m.docs, config: m.config, skipped, errors: Vec::new() },
        (Err(errors), skipped) => Report { documents: Vec::new(), config: Vec::new(), skipped, errors },
    }
}
