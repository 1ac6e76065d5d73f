//! Task outputs longer than status holds: the whole output is kept "beside" the Workflow, in
//! core v1 ConfigMaps of its namespace that the Workflow owns (deleting the workflow deletes
//! them), split into chunks well under the 1 MiB object limit. The same on `a2a serve` and on
//! a cluster.
//!
//! Chunk `i` of task `T` of workflow `W` is the ConfigMap `W.T.output-i` (workflow and task
//! names are DNS labels, so the name is unique). Its `data.output` holds a slice of the
//! output, cut on a character boundary; its annotations say which attempt wrote it, how many
//! chunks there are and how many bytes they hold in all, so a reader can prove it got the
//! whole output of the attempt recorded in status and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

/// The first this many bytes of an output live in the workflow's status.
pub const MAX_OUTPUT_IN_STATUS: usize = 64 * 1024;
/// Bytes of output per ConfigMap (objects are limited to 1 MiB; this leaves room for JSON
/// escaping of the text and the metadata).
pub const CHUNK_BYTES: usize = 384 * 1024;
/// The most output kept per task (all chunks together). Beyond it the output is cut, and
/// the status and `a2a output` say so.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Annotation: the attempt that wrote the chunk.
pub const ATTEMPT_ANNOTATION: &str = "a2a.dev/output-attempt";
/// Annotation: the number of chunks of the output.
pub const CHUNKS_ANNOTATION: &str = "a2a.dev/output-chunks";
/// Annotation: the bytes stored in all chunks together.
pub const BYTES_ANNOTATION: &str = "a2a.dev/output-bytes";
/// Annotation: the size of the output the agent returned, when it was over the cap.
pub const ORIGINAL_BYTES_ANNOTATION: &str = "a2a.dev/output-original-bytes";
/// The field manager of the engine's writes (workflow status, output ConfigMaps).
pub(crate) const FIELD_MANAGER: &str = "a2a-engine";

/// The workflow an output belongs to.
#[derive(Clone, Debug)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The name of chunk `i` of task `task`'s output.
pub fn chunk_name(workflow: &str, task: &str, i: usize) -> String {
    format!("{}-{i}", output_prefix(workflow, task))
}

/// What the names of `task`'s output chunks start with: `W.T.output`. An expansion of a
/// `forEach` task, `T[3]`, is written `T.3` (a task name never has a dot, so no other task's
/// chunks are named so).
pub fn output_prefix(workflow: &str, task: &str) -> String {
    format!("{workflow}.{}.output", safe_name(task))
}

/// A task name as it may appear in an object name or a label value: `T[3]` becomes `T.3`.
pub fn safe_name(task: &str) -> String {
    if task.contains('[') { task.replace('[', ".").replace(']', "") } else { task.to_owned() }
}

/// Cuts `text` into pieces of at most `max` bytes, each ending on a character boundary.
pub fn split(text: &str, max: usize) -> Vec<&str> {
    let max = max.max(4);
    let mut out = Vec::with_capacity(text.len() / max + 1);
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// What [`store`] wrote, for the task's `outputRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub chunks: usize,
    /// Bytes kept (at most [`MAX_OUTPUT_BYTES`]).
    pub bytes: usize,
    /// The agent's output size when it was over the cap.
    pub original_bytes: Option<usize>,
}

impl Stored {
    /// The text of `outputRef`: where the whole output is, in words a person can follow.
    pub fn describe(&self, workflow: &str, task: &str) -> String {
        let names = if self.chunks == 1 {
            format!("ConfigMap {}", chunk_name(workflow, task, 0))
        } else {
            format!("ConfigMaps {}..{}", chunk_name(workflow, task, 0), self.chunks - 1)
        };
        match self.original_bytes {
            None => format!("{} bytes in {names} (a2a output wf {workflow} {task})", self.bytes),
            Some(n) => format!(
                "{n} bytes, over the {} MiB cap: the first {} bytes are in {names} (a2a output wf {workflow} {task})",
                MAX_OUTPUT_BYTES >> 20,
                self.bytes
            ),
        }
    }
}

fn annotation(cm: &ConfigMap, key: &str) -> Option<usize> {
    cm.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Writes the whole output of `task`'s attempt `attempt` into ConfigMaps owned by the
/// workflow (creating or replacing them), and removes chunks an earlier, longer output left.
pub async fn store(
    client: &kube::Client,
    owner: &Owner<'_>,
    task: &str,
    attempt: u32,
    output: &str,
) -> Result<Stored, kube::Error> {
    store_capped(client, owner, task, attempt, output, MAX_OUTPUT_BYTES).await
}

/// [`store`] with another cap (a file part's base64 text is a third larger than its bytes,
/// which the cap is about).
pub async fn store_capped(
    client: &kube::Client,
    owner: &Owner<'_>,
    task: &str,
    attempt: u32,
    output: &str,
    cap: usize,
) -> Result<Stored, kube::Error> {
    let place = output_prefix(owner.name, task);
    store_at(client, owner, &place, Some(task), attempt, output, cap).await
}

/// Writes `output` (at most `cap` bytes of it) into the ConfigMaps `{place}-0`, `{place}-1`…
/// owned by the workflow, tagged with `attempt`, and removes chunks a longer text left.
pub(crate) async fn store_at(
    client: &kube::Client,
    owner: &Owner<'_>,
    place: &str,
    task: Option<&str>,
    attempt: u32,
    output: &str,
    cap: usize,
) -> Result<Stored, kube::Error> {
    let kept = prefix(output, cap);
    let pieces = split(kept, CHUNK_BYTES);
    let stored = Stored {
        chunks: pieces.len(),
        bytes: kept.len(),
        original_bytes: (kept.len() < output.len()).then_some(output.len()),
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), owner.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (i, piece) in pieces.iter().enumerate() {
        let name = format!("{place}-{i}");
        let cm = chunk_object(owner, &name, task, attempt, &stored, piece);
        api.patch(&name, &params, &Patch::Apply(&cm)).await?;
    }
    // An earlier attempt may have written more chunks; they are not part of this output.
    for i in pieces.len().. {
        match api.delete(&format!("{place}-{i}"), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(stored)
}

/// Chunk `name` of an output kept at `place`: `piece`, the chunk's slice of it.
fn chunk_object(
    owner: &Owner<'_>,
    name: &str,
    task: Option<&str>,
    attempt: u32,
    stored: &Stored,
    piece: &str,
) -> ConfigMap {
    let mut annotations = BTreeMap::from([
        (ATTEMPT_ANNOTATION.to_owned(), attempt.to_string()),
        (CHUNKS_ANNOTATION.to_owned(), stored.chunks.to_string()),
        (BYTES_ANNOTATION.to_owned(), stored.bytes.to_string()),
    ]);
    if let Some(n) = stored.original_bytes {
        annotations.insert(ORIGINAL_BYTES_ANNOTATION.to_owned(), n.to_string());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(owner.namespace.to_owned()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by".to_owned(), "a2a".to_owned()),
                    ("a2a.dev/workflow".to_owned(), owner.name.to_owned()),
                ]
                .into_iter()
                .chain(task.map(|t| ("a2a.dev/task".to_owned(), safe_name(t))))
                .collect(),
            ),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "a2a.dev/v1alpha1".to_owned(),
                kind: "Workflow".to_owned(),
                name: owner.name.to_owned(),
                uid: owner.uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("output".to_owned(), piece.to_owned())])),
        ..Default::default()
    }
}

/// Keeps `text` at `place` (attempt 0, no task) when it fits in one chunk, as [`store_at`]
/// would, for what is rewritten often (a big workflow's ranges of task statuses, many times a
/// second): a JSON merge patch of the one ConfigMap (created when missing), not a server-side
/// apply, and the answer (the object again) drained unread. Chunks an earlier, longer text
/// left after the first are not looked for: the first chunk's annotations say how many
/// belong to the text, and the workflow owns them all. Longer texts go to [`store_at`].
pub(crate) async fn store_small_at(
    client: &kube::Client,
    owner: &Owner<'_>,
    place: &str,
    text: &str,
) -> Result<(), kube::Error> {
    use kube::Resource;
    if text.len() > CHUNK_BYTES {
        return store_at(client, owner, place, None, 0, text, usize::MAX).await.map(|_| ());
    }
    let name = format!("{place}-0");
    let stored = Stored { chunks: 1, bytes: text.len(), original_bytes: None };
    let body =
        serde_json::to_vec(&chunk_object(owner, &name, None, 0, &stored, text)).map_err(kube::Error::SerdeError)?;
    let base = ConfigMap::url_path(&(), Some(owner.namespace));
    let patch = http::Request::patch(format!("{base}/{name}?fieldManager={FIELD_MANAGER}"))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(body.clone())
        .map_err(kube::Error::HttpError)?;
    match send_drained(client, patch).await {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let create = http::Request::post(format!("{base}?fieldManager={FIELD_MANAGER}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .map_err(kube::Error::HttpError)?;
            send_drained(client, create).await
        }
        other => other,
    }
}

/// Sends `req`; a success's answer is read and dropped chunk by chunk, a failure's is the
/// error.
pub(crate) async fn send_drained(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<(), kube::Error> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let res = client.send(http::Request::from_parts(parts, kube::client::Body::from(body))).await?;
    let code = res.status();
    let mut body = res.into_body();
    if code.is_success() {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(());
    }
    let text = body.collect().await?.to_bytes();
    let status = serde_json::from_slice::<kube::core::Status>(&text).unwrap_or_else(|_| {
        kube::core::Status::failure(String::from_utf8_lossy(&text).trim(), "the answer is not a Status")
            .with_code(code.as_u16())
    });
    Err(kube::Error::Api(status.boxed()))
}

/// Deletes every chunk of `task`'s output (best effort: a failure is logged).
pub async fn remove(client: &kube::Client, owner: &Owner<'_>, task: &str) {
    remove_at(client, owner, &output_prefix(owner.name, task)).await;
}

/// Deletes the ConfigMaps `{place}-0`, `{place}-1`… up to the first that is missing (best
/// effort: a failure is logged).
pub(crate) async fn remove_at(client: &kube::Client, owner: &Owner<'_>, place: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), owner.namespace);
    for i in 0.. {
        let name = format!("{place}-{i}");
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Err(e) => {
                tracing::warn!(configmap = %name, error = %e, "removing an output chunk failed");
                break;
            }
        }
    }
}

/// Why [`load`] could not give the whole output.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("ConfigMap {name} (part of the output) is missing")]
    Missing { name: String },
    #[error("ConfigMap {name} {problem}")]
    Inconsistent { name: String, problem: String },
    #[error("reading ConfigMap {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The whole output (as far as it was kept) of `task`'s attempt `attempt`, read back from its
/// ConfigMaps, checked to belong to this workflow (by uid) and attempt, and complete. Returns
/// the text and, when the agent's output was over the cap, its original size.
pub async fn load(
    client: &kube::Client,
    owner: &Owner<'_>,
    task: &str,
    attempt: u32,
) -> Result<(String, Option<usize>), LoadError> {
    load_at(client, owner, &output_prefix(owner.name, task), Some(attempt)).await
}

/// Reads back what [`store_at`] wrote at `place`, checked to belong to this workflow (by uid)
/// and, when given, to `attempt`, and to be complete.
pub(crate) async fn load_at(
    client: &kube::Client,
    owner: &Owner<'_>,
    place: &str,
    attempt: Option<u32>,
) -> Result<(String, Option<usize>), LoadError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), owner.namespace);
    let mut text = String::new();
    let mut expected: Option<(usize, usize)> = None;
    let mut original = None;
    let mut i = 0;
    while expected.is_none_or(|(chunks, _)| i < chunks) {
        let name = format!("{place}-{i}");
        let cm = match api.get_opt(&name).await {
            Ok(Some(cm)) => cm,
            Ok(None) => return Err(LoadError::Missing { name }),
            Err(source) => return Err(LoadError::Api { name, source }),
        };
        let bad = |problem: String| LoadError::Inconsistent { name: name.clone(), problem };
        let owned = cm.metadata.owner_references.iter().flatten().any(|r| r.uid == owner.uid);
        if !owned {
            return Err(bad(format!("does not belong to this workflow (uid {})", owner.uid)));
        }
        if let Some(attempt) = attempt
            && annotation(&cm, ATTEMPT_ANNOTATION) != Some(attempt as usize)
        {
            return Err(bad(format!("holds another attempt's output (status records attempt {attempt})")));
        }
        let (chunks, bytes) = match (annotation(&cm, CHUNKS_ANNOTATION), annotation(&cm, BYTES_ANNOTATION)) {
            (Some(c), Some(b)) if c > 0 => (c, b),
            _ => return Err(bad(format!("lacks the {CHUNKS_ANNOTATION} and {BYTES_ANNOTATION} annotations"))),
        };
        if *expected.get_or_insert((chunks, bytes)) != (chunks, bytes) {
            return Err(bad("disagrees with the first chunk on the output's size".to_owned()));
        }
        if i == 0 {
            text.reserve_exact(bytes);
            original = annotation(&cm, ORIGINAL_BYTES_ANNOTATION);
        }
        match cm.data.as_ref().and_then(|d| d.get("output")) {
            Some(piece) => text.push_str(piece),
            None => return Err(bad("has no data.output".to_owned())),
        }
        i += 1;
    }
    let want = expected.map_or(0, |(_, b)| b);
    if text.len() != want {
        let name = format!("{place}-0");
        return Err(LoadError::Inconsistent {
            name,
            problem: format!("says the output is {want} bytes, but its chunks hold {}", text.len()),
        });
    }
    Ok((text, original))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_on_character_boundaries_and_loses_nothing() {
        let text = "aé€😀".repeat(1000);
        for max in [4, 5, 7, 1024] {
            let pieces = split(&text, max);
            assert!(pieces.iter().all(|p| p.len() <= max && !p.is_empty()), "max {max}");
            assert_eq!(pieces.concat(), text, "max {max}");
        }
        assert!(split("", 10).is_empty());
        assert_eq!(prefix("aé", 2), "a", "never half a character");
        assert_eq!(prefix("abc", 10), "abc");
    }

    #[test]
    fn the_reference_names_the_config_maps_and_the_cap() {
        let s = Stored { chunks: 1, bytes: 204_800, original_bytes: None };
        assert_eq!(s.describe("wf", "big"), "204800 bytes in ConfigMap wf.big.output-0 (a2a output wf wf big)");
        let s = Stored { chunks: 3, bytes: 900_000, original_bytes: None };
        assert!(s.describe("wf", "big").contains("ConfigMaps wf.big.output-0..2"));
        let s = Stored { chunks: 44, bytes: MAX_OUTPUT_BYTES, original_bytes: Some(20_000_000) };
        assert!(s.describe("wf", "big").starts_with("20000000 bytes, over the 16 MiB cap: the first 16777216 bytes"));
    }
}
