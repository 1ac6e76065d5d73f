//! Status writes: every dirty workflow's status, coalesced, as a JSON patch of what changed
//! or (first write, task list rebuilt, a patch refused) the whole status as a merge patch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use futures::StreamExt;
use kube::Resource;

use super::{Engine, Key, lock};
use crate::api::Workflow;
use crate::api::workflow::WorkflowStatus;
use crate::controller::offload;
use crate::controller::outputs::FIELD_MANAGER;

impl Engine {
    pub(super) async fn flusher(self: Arc<Self>) {
        let mut pause = self.config.flush_interval;
        loop {
            self.flush.notified().await;
            // An attempt waiting to send does not wait for the next round as well.
            if !self.durable.urgent.swap(false, Ordering::AcqRel) {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = self.durable.now.notified() => {}
                }
            }
            let started = std::time::Instant::now();
            self.flush_all().await;
            // Writing big statuses must not eat the engine (nor the API server that applies
            // them): at most a tenth of the time.
            pause = self.config.flush_interval.max(started.elapsed() * 9);
        }
    }

    /// Writes every dirty status, many workflows in flight at once. A workflow whose task list
    /// is as last written gets a JSON patch of the tasks that changed (guarded by a `test` of
    /// each task's name) and of the top-level fields, so a write costs what changed, not the
    /// size of the workflow; otherwise (first write, task list rebuilt, a refused patch) the
    /// whole status goes as a merge patch.
    pub async fn flush_all(&self) {
        let dirty: Vec<(Key, StatusWrite)> = {
            let mut st = lock(&self.state);
            // Under the state lock: every change made before this is in this round's writes.
            let round = self.durable.rounds.fetch_add(1, Ordering::AcqRel) + 1;
            st.workflows
                .iter_mut()
                .filter(|(_, w)| w.dirty)
                .filter_map(|(k, w)| {
                    w.dirty = false;
                    let changed = w.changed.take();
                    let rewrite = std::mem::take(&mut w.rewrite);
                    let write = if offload::offloaded(w.status.tasks.len()) {
                        offloaded_write(&k.1, &w.status, &changed, rewrite)
                    } else if rewrite {
                        status_merge_patch(&w.status)
                    } else {
                        status_json_patch(&mut w.status, &changed)
                    };
                    match write {
                        Ok(write) => Some((k.clone(), StatusWrite { round, uid: w.uid.clone(), ..write })),
                        Err(e) => {
                            tracing::error!(workflow = %k.1, error = %e, "encoding the status failed");
                            None
                        }
                    }
                })
                .collect()
        };
        let writes = dirty.into_iter().map(|(k, write)| async move {
            let (whole, round) = (write.whole, write.round);
            let r = self.write_status(&k, write).await;
            (k, whole, round, r)
        });
        let results = futures::stream::iter(writes).buffer_unordered(16).collect::<Vec<_>>().await;
        for (k, whole, round, r) in results {
            match r {
                Ok(()) => {
                    if let Some(w) = lock(&self.state).workflows.get_mut(&k) {
                        w.written = w.written.max(round);
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => self.workflow_deleted(&k),
                Err(e) => {
                    if whole {
                        tracing::warn!(workflow = %k.1, error = %e, "status write failed; will retry");
                    } else {
                        // The stored task list is not what the patch expects: send it all.
                        tracing::debug!(workflow = %k.1, error = %e, "status patch refused; writing the whole status");
                    }
                    if let Some(w) = lock(&self.state).workflows.get_mut(&k) {
                        w.touch_all();
                    }
                    self.flush.notify_one();
                }
            }
        }
        self.durable.written.notify_waiters();
    }

    /// Waits until status write round `need` of workflow `k` (see
    /// [`Durable::round_after_now`]) has reached the store, asking for a write at once unless
    /// it already has. False when the workflow is gone meanwhile (or another one of that
    /// name), which nothing then waits for.
    pub(super) async fn written_by(&self, k: &Key, uid: &str, need: u64) -> bool {
        match lock(&self.state).workflows.get(k) {
            Some(w) if w.uid == uid && w.written >= need => return true,
            Some(w) if w.uid == uid => {}
            _ => return false,
        }
        self.durable.urgent.store(true, Ordering::Release);
        self.flush.notify_one();
        self.durable.now.notify_one();
        loop {
            let written = self.durable.written.notified();
            let mut written = std::pin::pin!(written);
            written.as_mut().enable();
            match lock(&self.state).workflows.get(k) {
                Some(w) if w.uid == uid && w.written >= need => return true,
                Some(w) if w.uid == uid => {}
                _ => return false,
            }
            written.await;
        }
    }

    /// Sends one status write. The answer (the whole workflow, megabytes for a big one) is
    /// read and dropped chunk by chunk, never held whole: the engine has its status already.
    async fn write_status(&self, k: &Key, mut write: StatusWrite) -> Result<(), kube::Error> {
        // The tasks' ranges first: the summary never names entries that are not stored.
        let owner = crate::controller::outputs::Owner { namespace: &k.0, name: &k.1, uid: &write.uid };
        let (client, owner_ref) = (&self.client, &owner);
        (write.ranges_written, write.ranges_bytes) =
            (write.ranges.len() as u64, write.ranges.iter().map(|(_, t)| t.len() as u64).sum());
        let results: Vec<Result<(), kube::Error>> = futures::stream::iter(std::mem::take(&mut write.ranges))
            .map(|(i, text)| async move { offload::write_range(client, owner_ref, i, &text).await })
            .buffer_unordered(4)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), kube::Error>>()?;
        self.durable.count(write.ranges_written, write.ranges_bytes);
        if let Some(from) = write.drop_from {
            offload::remove_ranges_from(&self.client, &owner, from).await;
        }
        let url = format!("{}/{}/status?fieldManager={FIELD_MANAGER}", Workflow::url_path(&(), Some(&k.0)), k.1);
        self.durable.count(1, write.body.len() as u64);
        let req = http::Request::patch(url)
            .header(http::header::CONTENT_TYPE, write.content_type)
            .body(write.body)
            .map_err(kube::Error::HttpError)?;
        crate::controller::outputs::send_drained(&self.client, req).await
    }
}

/// What lets an attempt wait for its start to be in the store before it sends: status
/// writes are counted in rounds (one [`Engine::flush_all`] each), and each workflow notes the
/// last round of its that was written.
#[derive(Default)]
pub(super) struct Durable {
    /// Rounds begun.
    rounds: AtomicU64,
    /// A round ended.
    written: Notify,
    /// An attempt waits: the next round starts without the usual pause.
    urgent: AtomicBool,
    now: Notify,
    /// Objects written (the status, and each range of tasks kept beside a workflow) and the
    /// bytes of their bodies, for [`Engine::status_writes`].
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl Durable {
    /// The first round that begins after now: called under the state lock, it includes every
    /// change made so far.
    pub(super) fn round_after_now(&self) -> u64 {
        self.rounds.load(Ordering::Acquire) + 1
    }

    fn count(&self, objects: u64, bytes: u64) {
        self.objects.fetch_add(objects, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What the engine's status writes have cost so far (see [`Engine::status_writes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusWrites {
    /// Write rounds begun (one [`Engine::flush_all`] each).
    pub rounds: u64,
    /// Objects sent: a workflow's status, or a range of its tasks kept beside it.
    pub objects: u64,
    /// The bytes of what was sent (request bodies, before HTTP framing).
    pub bytes: u64,
}

impl Engine {
    /// The status writes sent so far, for benches and diagnostics.
    pub fn status_writes(&self) -> StatusWrites {
        StatusWrites {
            rounds: self.durable.rounds.load(Ordering::Relaxed),
            objects: self.durable.objects.load(Ordering::Relaxed),
            bytes: self.durable.bytes.load(Ordering::Relaxed),
        }
    }
}

/// One encoded status write.
struct StatusWrite {
    /// The round it belongs to.
    round: u64,
    content_type: &'static str,
    body: Vec<u8>,
    /// The whole status (a merge patch), not a JSON patch of what changed.
    whole: bool,
    /// The workflow's uid (owner of the ranges).
    uid: String,
    /// Ranges of tasks kept beside the workflow to write first: (range, its text).
    ranges: Vec<(usize, String)>,
    /// Ranges from this one on are no longer part of the workflow.
    drop_from: Option<usize>,
    /// Ranges written, and their bytes (for [`Engine::status_writes`]).
    ranges_written: u64,
    ranges_bytes: u64,
}

fn status_merge_patch(status: &WorkflowStatus) -> Result<StatusWrite, serde_json::Error> {
    let body = offload::merge_patch_body(status)?;
    Ok(StatusWrite { body, ..StatusWrite::merge() })
}

/// A workflow whose tasks are kept beside it: the ranges that hold a changed task (all of
/// them on a rewrite), and the summary as a merge patch.
fn offloaded_write(
    name: &str,
    status: &WorkflowStatus,
    changed: &[usize],
    rewrite: bool,
) -> Result<StatusWrite, serde_json::Error> {
    let n = status.tasks.len();
    let mut which: Vec<usize> = if rewrite {
        (0..offload::ranges(n)).collect()
    } else {
        changed.iter().map(|&i| offload::range_of(i)).collect()
    };
    which.sort_unstable();
    which.dedup();
    let ranges = which
        .into_iter()
        .filter_map(|k| {
            let tasks = status.tasks.get(k * offload::TASKS_PER_CHUNK..((k + 1) * offload::TASKS_PER_CHUNK).min(n))?;
            Some(offload::encode_range(tasks).map(|text| (k, text)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = offload::merge_patch_body(&offload::summary(name, status))?;
    Ok(StatusWrite { body, ranges, drop_from: rewrite.then(|| offload::ranges(n)), ..StatusWrite::merge() })
}

impl StatusWrite {
    fn merge() -> Self {
        StatusWrite {
            round: 0,
            content_type: "application/merge-patch+json",
            body: Vec::new(),
            whole: true,
            uid: String::new(),
            ranges: Vec::new(),
            drop_from: None,
            ranges_written: 0,
            ranges_bytes: 0,
        }
    }
}

/// A JSON patch that replaces the tasks `changed` (after testing that each index still holds
/// the task of that name) and sets every top-level field that has a value. Fields that become
/// empty only do so through a rewrite (retry, cancel), which sends the whole status.
fn status_json_patch(status: &mut WorkflowStatus, changed: &[usize]) -> Result<StatusWrite, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Op<'a> {
        op: &'static str,
        path: String,
        value: OpValue<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum OpValue<'a> {
        Text(&'a str),
        Task(&'a crate::api::workflow::TaskStatus),
        Json(serde_json::Value),
    }
    let tasks = std::mem::take(&mut status.tasks);
    let top = serde_json::to_value(&*status);
    status.tasks = tasks;
    let mut ops = Vec::with_capacity(changed.len() * 2 + 6);
    if let serde_json::Value::Object(fields) = top? {
        for (name, value) in fields {
            ops.push(Op { op: "add", path: format!("/status/{name}"), value: OpValue::Json(value) });
        }
    }
    for &i in changed {
        let Some(t) = status.tasks.get(i) else { continue };
        ops.push(Op { op: "test", path: format!("/status/tasks/{i}/name"), value: OpValue::Text(&t.name) });
        ops.push(Op { op: "replace", path: format!("/status/tasks/{i}"), value: OpValue::Task(t) });
    }
    let body = serde_json::to_vec(&ops)?;
    Ok(StatusWrite { content_type: "application/json-patch+json", body, whole: false, ..StatusWrite::merge() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workflow::{TaskPhase, TaskStatus, WorkflowPhase};
    use jiff::Timestamp;

    fn status(names: &[&str]) -> WorkflowStatus {
        WorkflowStatus {
            phase: Some(WorkflowPhase::Running),
            progress: Some("0/3".into()),
            tasks: names.iter().map(|n| TaskStatus::pending(n)).collect(),
            ..Default::default()
        }
    }

    fn apply(doc: &mut serde_json::Value, write: &StatusWrite) -> Result<(), json_patch::PatchError> {
        let patch: json_patch::Patch = serde_json::from_slice(&write.body).expect("a JSON patch");
        json_patch::patch(doc, &patch)
    }

    #[test]
    fn a_patch_of_the_changed_tasks_brings_the_stored_status_to_the_engines() {
        let mut st = status(&["a", "b", "c"]);
        let mut stored = serde_json::json!({ "status": st });
        st.tasks[1].phase = TaskPhase::Succeeded;
        st.tasks[1].output = Some("B".into());
        st.progress = Some("1/3".into());
        st.started_at = Some(crate::api::common::Time(Timestamp::UNIX_EPOCH));
        let write = status_json_patch(&mut st, &[1]).expect("encode");
        assert!(!write.whole);
        assert!(!String::from_utf8_lossy(&write.body).contains("\"c\""), "unchanged tasks are not sent");
        apply(&mut stored, &write).expect("applies");
        assert_eq!(stored, serde_json::json!({ "status": st }));
    }

    #[test]
    fn a_patch_is_refused_when_the_stored_task_list_differs() {
        let mut st = status(&["a", "b"]);
        let mut stored = serde_json::json!({ "status": status(&["b", "a"]) });
        st.tasks[1].phase = TaskPhase::Running;
        let write = status_json_patch(&mut st, &[1]).expect("encode");
        let before = stored.clone();
        assert!(apply(&mut stored, &write).is_err(), "the name test guards the index");
        assert_eq!(stored, before, "nothing applied");
        let whole = status_merge_patch(&st).expect("encode");
        assert!(whole.whole);
    }
}
