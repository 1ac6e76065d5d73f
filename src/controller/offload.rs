//! Per-task status beside a big Workflow: a Workflow of more than [`INLINE_MAX_TASKS`] tasks
//! keeps only a summary in its own status (phase, progress, conditions, tasks by phase, stuck
//! tasks by reason with the first few of each, and [`TaskStatusRef`]); each task's entry is in
//! ConfigMaps the workflow owns, one range of [`TASKS_PER_CHUNK`] tasks (in spec order) per
//! chunk, so the object stays far under etcd's limit whatever the number of tasks, and a task
//! that changes rewrites its range only. The same on `a2a serve` and on a cluster.
//!
//! Range `k` of workflow `W` is the JSON array of its tasks' statuses, kept as the output
//! machinery keeps a long output ([`super::outputs::store_at`]): ConfigMaps `W.status-k-0`,
//! `W.status-k-1`… (one unless the range's outputs are long), each with a slice of the text
//! under `data.output` and annotations that let a reader prove it has the whole range.
//!
//! The engine writes the changed ranges first and the summary after, in one status round, so
//! the summary never names tasks whose entries are not stored. It reads the ranges back when it
//! takes a workflow it did not hold (a restart), as `a2a describe`, `a2a output` and the
//! operator's finalizer do through [`fill`].

use std::collections::BTreeMap;

use super::outputs::{self, LoadError, Owner};
use crate::api::Workflow;
use crate::api::workflow::{StuckTasks, TaskPhase, TaskStatus, TaskStatusRef, WorkflowStatus};

/// A workflow with at most this many tasks keeps each task's status in its own object.
pub const INLINE_MAX_TASKS: usize = 100;
/// Tasks per range (one ConfigMap for short tasks: about 300 bytes each).
pub const TASKS_PER_CHUNK: usize = 500;
/// Tasks named per stuck reason in the summary.
pub const STUCK_EXAMPLES: usize = 5;

/// Whether a workflow of `tasks` tasks keeps them beside it.
pub fn offloaded(tasks: usize) -> bool {
    tasks > INLINE_MAX_TASKS
}

/// What range `k`'s ConfigMap names start with.
pub fn range_place(workflow: &str, k: usize) -> String {
    format!("{workflow}.status-{k}")
}

/// The range task `i` is in.
pub fn range_of(i: usize) -> usize {
    i / TASKS_PER_CHUNK
}

/// Ranges of `tasks` tasks.
pub fn ranges(tasks: usize) -> usize {
    tasks.div_ceil(TASKS_PER_CHUNK)
}

/// The summary kept in the workflow for `status` (whose `tasks` are all of them): every
/// top-level field, tasks by phase, stuck tasks by reason, and where the tasks are.
pub fn summary(workflow: &str, status: &WorkflowStatus) -> WorkflowStatus {
    // Counted by position in PHASES, named once at the end: the summary is made on every
    // status write, and a name per task would be an allocation per task per write.
    let mut by_phase = [0u32; PHASES.len()];
    let mut stuck: Vec<StuckTasks> = Vec::new();
    for t in &status.tasks {
        if let Some(p) = PHASES.iter().position(|p| *p == t.phase) {
            by_phase[p] += 1;
        }
        if t.phase == TaskPhase::Pending
            && let Some(reason) = &t.reason
        {
            match stuck.iter_mut().find(|s| s.reason == *reason) {
                Some(s) => {
                    s.count += 1;
                    if s.tasks.len() < STUCK_EXAMPLES {
                        s.tasks.push(t.name.clone());
                    }
                }
                None => stuck.push(StuckTasks {
                    reason: reason.clone(),
                    count: 1,
                    tasks: vec![t.name.clone()],
                    message: t.message.clone(),
                }),
            }
        }
    }
    let counts: BTreeMap<String, u32> =
        PHASES.iter().zip(by_phase).filter(|(_, n)| *n > 0).map(|(p, n)| (format!("{p:?}"), n)).collect();
    let n = status.tasks.len();
    WorkflowStatus {
        phase: status.phase,
        started_at: status.started_at,
        finished_at: status.finished_at,
        progress: status.progress.clone(),
        tasks: Vec::new(),
        task_status_ref: Some(TaskStatusRef {
            config_map_prefix: format!("{workflow}.status"),
            tasks: n as u32,
            tasks_per_chunk: TASKS_PER_CHUNK as u32,
            chunks: ranges(n) as u32,
        }),
        task_counts: counts,
        stuck,
        observed_generation: status.observed_generation,
        conditions: status.conditions.clone(),
    }
}

/// Every task phase, as `taskCounts` names them.
const PHASES: [TaskPhase; 8] = [
    TaskPhase::Pending,
    TaskPhase::Running,
    TaskPhase::InputRequired,
    TaskPhase::AuthRequired,
    TaskPhase::Succeeded,
    TaskPhase::Failed,
    TaskPhase::Skipped,
    TaskPhase::Cancelled,
];

/// The status as a merge patch body that leaves no field of an earlier write behind: every
/// field the status lacks is sent as `null` (so a summary removes `tasks`, and a whole status
/// removes the summary's fields).
pub fn merge_patch_body(status: &WorkflowStatus) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(status)?;
    if let serde_json::Value::Object(fields) = &mut value {
        for key in [
            "phase",
            "startedAt",
            "finishedAt",
            "progress",
            "tasks",
            "taskStatusRef",
            "taskCounts",
            "stuck",
            "observedGeneration",
            "conditions",
        ] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
        // A map is merged key by key: a phase no task is in any more is removed by name.
        if let Some(serde_json::Value::Object(counts)) = fields.get_mut("taskCounts") {
            for phase in PHASES {
                counts.entry(format!("{phase:?}")).or_insert(serde_json::Value::Null);
            }
        }
    }
    serde_json::to_vec(&serde_json::json!({ "status": value }))
}

/// The text kept for a range: its tasks' entries as a JSON array.
pub fn encode_range(tasks: &[TaskStatus]) -> Result<String, serde_json::Error> {
    serde_json::to_string(tasks)
}

/// Writes range `k` (`text`, from [`encode_range`]) beside the workflow.
pub async fn write_range(client: &kube::Client, owner: &Owner<'_>, k: usize, text: &str) -> Result<(), kube::Error> {
    outputs::store_small_at(client, owner, &range_place(owner.name, k), text).await
}

/// Removes ranges from `from` on, up to the first that is missing (the task list shrank).
pub async fn remove_ranges_from(client: &kube::Client, owner: &Owner<'_>, from: usize) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), owner.namespace);
    for k in from.. {
        let place = range_place(owner.name, k);
        match api.get_opt(&format!("{place}-0")).await {
            Ok(Some(_)) => outputs::remove_at(client, owner, &place).await,
            _ => break,
        }
    }
}

/// Every task's status, read back from the ranges `r` names.
pub async fn load(client: &kube::Client, owner: &Owner<'_>, r: &TaskStatusRef) -> Result<Vec<TaskStatus>, LoadError> {
    let mut tasks = Vec::with_capacity(r.tasks as usize);
    for k in 0..r.chunks as usize {
        let place = range_place(owner.name, k);
        let (text, _) = outputs::load_at(client, owner, &place, None).await?;
        let part: Vec<TaskStatus> = serde_json::from_str(&text).map_err(|e| LoadError::Inconsistent {
            name: format!("{place}-0"),
            problem: format!("does not hold task statuses: {e}"),
        })?;
        tasks.extend(part);
    }
    Ok(tasks)
}

/// Puts the tasks kept beside `wf` into its `status.tasks` (nothing to do when its status
/// holds them).
pub async fn fill(client: &kube::Client, wf: &mut Workflow) -> Result<(), LoadError> {
    let namespace = wf.metadata.namespace.clone().unwrap_or_default();
    let name = wf.metadata.name.clone().unwrap_or_default();
    let uid = wf.metadata.uid.clone().unwrap_or_default();
    let Some(status) = wf.status.as_mut() else { return Ok(()) };
    let Some(r) = status.task_status_ref.clone() else { return Ok(()) };
    if !status.tasks.is_empty() {
        return Ok(());
    }
    let owner = Owner { namespace: &namespace, name: &name, uid: &uid };
    status.tasks = load(client, &owner, &r).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_phases_and_names_the_first_stuck_tasks() {
        let mut status = WorkflowStatus { progress: Some("1/1203".into()), ..Default::default() };
        for i in 0..1203 {
            let mut t = TaskStatus::pending(&format!("t{i}"));
            if i == 0 {
                t.phase = TaskPhase::Succeeded;
            } else if i % 2 == 0 {
                t.reason = Some("AgentNotFound".into());
                t.message = Some("agent \"x\" does not exist".into());
            }
            status.tasks.push(t);
        }
        let s = summary("wf", &status);
        assert!(s.tasks.is_empty());
        assert_eq!(s.task_counts.get("Succeeded"), Some(&1));
        assert_eq!(s.task_counts.get("Pending"), Some(&1202));
        assert_eq!(s.stuck.len(), 1);
        assert_eq!(s.stuck[0].count, 601);
        assert_eq!(s.stuck[0].tasks, ["t2", "t4", "t6", "t8", "t10"]);
        let r = s.task_status_ref.as_ref().expect("ref");
        assert_eq!((r.tasks, r.chunks, r.config_map_prefix.as_str()), (1203, 3, "wf.status"));
        let body: serde_json::Value = serde_json::from_slice(&merge_patch_body(&s).expect("encode")).expect("json");
        assert_eq!(body["status"]["tasks"], serde_json::Value::Null, "the inline list is removed");
        assert_eq!(body["status"]["progress"], "1/1203");
        assert_eq!(body["status"]["taskCounts"]["Running"], serde_json::Value::Null, "a phase with no task is removed");
        assert_eq!(body["status"]["taskCounts"]["Succeeded"], 1);
    }
}
