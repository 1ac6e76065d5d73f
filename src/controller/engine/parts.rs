//! Keeping every part of an agent's result: the text as before (long text beside the
//! workflow), the data in status (or beside it when over 64 KiB), each file's bytes beside
//! the workflow as base64 in the same chunked ConfigMaps, and the list of parts in status.

use std::time::Duration;

use base64::Engine as _;

use super::{Engine, Error, KeptParts, MAX_OUTPUT_IN_STATUS, Output, TaskRef, lock};
use crate::a2a::types::Part;
use crate::controller::outputs::{self, MAX_OUTPUT_BYTES, Owner, Stored};
use crate::controller::parts::{self, Collected, MAX_DATA_IN_STATUS};

impl Engine {
    /// The output of an attempt whose agent answered with `parts`, its files and large data
    /// stored. A write that keeps failing fails the attempt (the output would be lost).
    pub(super) async fn keep_parts(&self, t: &TaskRef, parts: Vec<Part>) -> Result<Output, Error> {
        let Collected { text, data, files, mut listing } = parts::collect(&parts);
        drop(parts);
        for f in files {
            let key = parts::file_key(&t.task, f.index);
            let b64 = base64::engine::general_purpose::STANDARD.encode(&f.bytes);
            // The cap is on the bytes (checked when collected); their base64 is a third larger.
            self.store_key(t, &key, &b64, MAX_OUTPUT_BYTES / 3 * 4 + 4).await?;
            if let Some(entry) = listing.iter_mut().find(|p| p.name.as_deref() == Some(f.name.as_str())) {
                entry.stored = Some(outputs::chunk_name(&t.workflow.1, &key, 0).trim_end_matches("-0").to_owned());
            }
        }
        let data = match data {
            Some(d) if d.to_string().len() > MAX_DATA_IN_STATUS => {
                let key = parts::data_key(&t.task);
                let stored = self.store_key(t, &key, &d.to_string(), MAX_OUTPUT_BYTES).await?;
                let place = outputs::chunk_name(&t.workflow.1, &key, 0).trim_end_matches("-0").to_owned();
                for entry in listing.iter_mut().filter(|p| p.kind == "data") {
                    entry.stored = Some(place.clone());
                    if stored.original_bytes.is_some() {
                        entry.error = Some(format!("cut at the {} MiB cap", MAX_OUTPUT_BYTES >> 20));
                    }
                }
                None
            }
            d => d,
        };
        let mut output = if text.len() > MAX_OUTPUT_IN_STATUS {
            self.store_output(t, text).await?
        } else {
            Output { text, reference: None, whole: None, parts: None }
        };
        output.parts = Some(Box::new(KeptParts { data, listing }));
        Ok(output)
    }

    /// Stores `text` under `key` (retrying a failing write a few times), unless the workflow
    /// went meanwhile.
    async fn store_key(&self, t: &TaskRef, key: &str, text: &str, cap: usize) -> Result<Stored, Error> {
        let uid = t.uid.to_string();
        let owner = Owner { namespace: &t.workflow.0, name: &t.workflow.1, uid: &uid };
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        let stored = loop {
            match outputs::store_capped(&self.client, &owner, key, t.attempt, text, cap).await {
                Ok(s) => break s,
                Err(e) if tries < 4 => {
                    tracing::warn!(workflow = %t.workflow.1, part = %key, error = %e, "storing an output part failed; retrying");
                    tries += 1;
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(source) => return Err(Error::StoreOutput { bytes: text.len(), source }),
            }
        };
        let gone = lock(&self.state).workflows.get(&t.workflow).is_none_or(|w| w.uid != uid);
        if gone {
            outputs::remove(&self.client, &owner, key).await;
            return Err(Error::WorkflowGone);
        }
        Ok(stored)
    }
}
