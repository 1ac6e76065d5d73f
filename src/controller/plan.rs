//! The workflow state machine as pure functions over spec and status: what is ready to
//! dispatch, what is skipped, when to wake up, how a failure is retried, and when the
//! workflow is done. The engine around it does the I/O (A2A calls, status writes).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::common::Time;
use crate::api::template::{self, Ref, RenderError};
use crate::api::workflow::{RetryPolicy, TaskPhase, TaskStatus, WorkflowPhase, WorkflowSpec, WorkflowStatus};
use crate::api::{Agent, Priority};

/// Default retry backoff: 1s, ×2, at most 5m.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_FACTOR: u32 = 2;
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A task that may be dispatched now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub index: usize,
    pub name: String,
    /// The attempt about to start (1-based).
    pub attempt: u32,
    /// Effective priority: the task's, else the workflow's (the agent's is applied at dispatch).
    pub priority: Option<Priority>,
    /// The message with templates filled in.
    pub message: String,
    pub timeout: Option<Duration>,
}

/// What to do next for one workflow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub ready: Vec<Ready>,
    /// The earliest moment something changes by itself (a backoff ends, a deadline passes).
    pub wake_at: Option<Timestamp>,
    /// Running tasks to cancel (the deadline passed).
    pub cancel: Vec<usize>,
    /// Tasks that waited for input and were cancelled (the deadline passed): their A2A tasks
    /// are still open on their agents, to be cancelled there.
    pub abandoned: Vec<usize>,
    /// Whether `status` was changed (tasks added, skipped, phase...), so it must be written.
    pub changed: bool,
    /// The tasks whose status this step changed (skipped, cancelled, failed to render).
    pub touched: Vec<usize>,
    /// `status.tasks` was rebuilt to match the spec (every entry may have moved).
    pub realigned: bool,
}

/// Makes sure `status.tasks` has one entry per spec task, in spec order (keeping what is
/// known by name). Returns whether anything changed.
pub fn align(spec: &WorkflowSpec, status: &mut WorkflowStatus) -> bool {
    let aligned =
        status.tasks.len() == spec.tasks.len() && status.tasks.iter().zip(&spec.tasks).all(|(s, t)| s.name == t.name);
    if aligned {
        return false;
    }
    let mut old: HashMap<String, TaskStatus> = status.tasks.drain(..).map(|t| (t.name.clone(), t)).collect();
    status.tasks =
        spec.tasks.iter().map(|t| old.remove(&t.name).unwrap_or_else(|| TaskStatus::pending(&t.name))).collect();
    true
}

fn dependency_indices(spec: &WorkflowSpec) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = spec.tasks.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    spec.tasks.iter().map(|t| t.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect()).collect()
}

/// Advances the workflow: skips tasks whose dependencies failed, finds ready tasks (up to
/// `parallelism` running at once), enforces `activeDeadline`, and settles the phase.
pub fn step(spec: &WorkflowSpec, status: &mut WorkflowStatus, now: Timestamp) -> Step {
    step_except(spec, status, now, |_| false)
}

/// What a step needs to know about a spec's structure, computed once per spec (a caller that
/// steps the same spec many times keeps it).
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Indices of each task's dependencies; empty when no task has any.
    deps: Vec<Vec<usize>>,
    /// Each task's position in this spec, by name.
    positions: HashMap<String, usize>,
}

impl Index {
    pub fn new(spec: &WorkflowSpec) -> Self {
        let any = spec.tasks.iter().any(|t| !t.depends_on.is_empty());
        let positions = spec.tasks.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Index { deps: if any { dependency_indices(spec) } else { Vec::new() }, positions }
    }

    /// Where task `name` is in this spec (`None`: the spec has no such task).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }
}

/// [`step`], leaving out of `ready` the tasks `queued(i)` says are already queued (their
/// messages are not rendered again; a large workflow's step stays cheap).
pub fn step_except(
    spec: &WorkflowSpec,
    status: &mut WorkflowStatus,
    now: Timestamp,
    queued: impl Fn(usize) -> bool,
) -> Step {
    step_indexed(spec, &Index::new(spec), false, status, now, queued)
}

/// [`step_except`] with the spec's [`Index`] at hand. `aligned` says `status.tasks` already
/// matches the spec task for task (the caller aligned it and the spec has not changed since),
/// so the names are not compared again.
pub fn step_indexed(
    spec: &WorkflowSpec,
    index: &Index,
    aligned: bool,
    status: &mut WorkflowStatus,
    now: Timestamp,
    queued: impl Fn(usize) -> bool,
) -> Step {
    let realigned = if aligned && status.tasks.len() == spec.tasks.len() { false } else { align(spec, status) };
    let mut out = Step { changed: realigned, realigned, ..Default::default() };
    if status.phase.is_some_and(WorkflowPhase::is_terminal) {
        return out;
    }
    if status.phase.is_none() || status.phase == Some(WorkflowPhase::Pending) {
        status.phase = Some(WorkflowPhase::Running);
        status.started_at.get_or_insert(Time(now));
        out.changed = true;
    }
    // A question unanswered for its task's inputTimeout fails the task (before propagation,
    // so what depends on it is skipped in this step).
    super::replies::expire(spec, status, now, &mut out);
    let deps = &index.deps;
    let deps_of = |i: usize| deps.get(i).map_or(&[][..], Vec::as_slice);
    // Failure propagation to a fixpoint: a task whose dependency can no longer succeed is Skipped.
    loop {
        let mut any = false;
        for (i, task_deps) in deps.iter().enumerate() {
            if status.tasks[i].phase != TaskPhase::Pending {
                continue;
            }
            // A dependency that ended without its output (failed, skipped or cancelled).
            if let Some(&d) = task_deps.iter().find(|&&d| status.tasks[d].phase.is_retryable()) {
                let t = &mut status.tasks[i];
                t.phase = TaskPhase::Skipped;
                t.error = Some(format!("dependency {:?} did not succeed", spec.tasks[d].name));
                t.finished_at = Some(Time(now));
                out.touched.push(i);
                any = true;
            }
        }
        if !any {
            break;
        }
        out.changed = true;
    }
    // The deadline: cancel what runs, cancel what waits.
    if let (Some(deadline), Some(started)) = (&spec.active_deadline, status.started_at) {
        let end = started.0 + jiff::SignedDuration::try_from(deadline.value()).unwrap_or(jiff::SignedDuration::MAX);
        if now >= end {
            for (i, t) in status.tasks.iter_mut().enumerate() {
                match t.phase {
                    TaskPhase::Running => out.cancel.push(i),
                    phase if phase == TaskPhase::Pending || phase.is_waiting() => {
                        if phase.is_waiting() {
                            out.abandoned.push(i);
                        }
                        t.phase = TaskPhase::Cancelled;
                        t.error = Some(format!("workflow activeDeadline {deadline} passed"));
                        t.finished_at = Some(Time(now));
                        out.touched.push(i);
                        out.changed = true;
                    }
                    _ => {}
                }
            }
        } else {
            out.wake_at = Some(out.wake_at.map_or(end, |w| w.min(end)));
        }
    }
    // Room under `parallelism`: tasks running or already queued take it up.
    let mut room = match spec.parallelism {
        None => usize::MAX,
        Some(p) => {
            let taken = status
                .tasks
                .iter()
                .enumerate()
                .filter(|(i, t)| t.phase == TaskPhase::Running || (t.phase == TaskPhase::Pending && queued(*i)))
                .count();
            (p as usize).saturating_sub(taken)
        }
    };
    if out.cancel.is_empty() {
        for (i, task) in spec.tasks.iter().enumerate() {
            if room == 0 {
                break;
            }
            let st = &status.tasks[i];
            if st.phase != TaskPhase::Pending
                || queued(i)
                || !deps_of(i).iter().all(|&d| status.tasks[d].phase == TaskPhase::Succeeded)
            {
                continue;
            }
            if let Some(at) = st.next_attempt_at
                && at.0 > now
            {
                out.wake_at = Some(out.wake_at.map_or(at.0, |w| w.min(at.0)));
                continue;
            }
            match render_message(spec, status, i) {
                Ok(message) => {
                    room -= 1;
                    out.ready.push(Ready {
                        index: i,
                        name: task.name.clone(),
                        attempt: status.tasks[i].attempts + 1,
                        priority: task.priority.or(spec.priority),
                        message,
                        timeout: task.timeout.as_ref().or(spec.timeout.as_ref()).map(|d| d.value()),
                    });
                }
                Err(e) => {
                    let t = &mut status.tasks[i];
                    t.phase = TaskPhase::Failed;
                    t.error = Some(e.to_string());
                    t.finished_at = Some(Time(now));
                    out.touched.push(i);
                    out.changed = true;
                }
            }
        }
    }
    out.changed |= settle(status, now);
    out
}

/// What cancelling a workflow did.
#[derive(Debug, Default, PartialEq)]
pub struct Cancelling {
    /// Running tasks, to cancel on their agents (the workflow is Cancelled once they end).
    pub running: Vec<usize>,
    /// Tasks that waited for input, now Cancelled: their A2A tasks are still open on their
    /// agents, to be cancelled there.
    pub abandoned: Vec<usize>,
    /// Whether `status` changed.
    pub changed: bool,
}

/// Cancels the workflow: pending and waiting tasks become Cancelled; the running ones are
/// returned (to cancel on their agents). Once nothing runs, the workflow is Cancelled.
pub fn cancel(status: &mut WorkflowStatus, now: Timestamp) -> Cancelling {
    let mut out = Cancelling::default();
    if status.phase.is_some_and(WorkflowPhase::is_terminal) {
        return out;
    }
    for (i, t) in status.tasks.iter_mut().enumerate() {
        match t.phase {
            TaskPhase::Running => out.running.push(i),
            phase if phase == TaskPhase::Pending || phase.is_waiting() => {
                if phase.is_waiting() {
                    out.abandoned.push(i);
                }
                t.phase = TaskPhase::Cancelled;
                t.error = Some("the workflow was cancelled".to_owned());
                t.next_attempt_at = None;
                t.finished_at = Some(Time(now));
                out.changed = true;
            }
            _ => {}
        }
    }
    settle(status, now);
    if out.running.is_empty() {
        status.phase = Some(WorkflowPhase::Cancelled);
        status.finished_at = Some(Time(now));
        out.changed = true;
    }
    out
}

/// Records that a running task was cancelled with its workflow.
pub fn record_cancelled(status: &mut WorkflowStatus, i: usize, now: Timestamp) {
    let t = &mut status.tasks[i];
    t.phase = TaskPhase::Cancelled;
    t.error = Some("the workflow was cancelled".to_owned());
    t.finished_at = Some(Time(now));
}

/// Why a retry request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    #[error("the workflow has no task {task:?}")]
    UnknownTask { task: String },
    #[error("task {task:?} is {phase:?}; only failed, skipped or cancelled tasks are retried")]
    NotRetryable { task: String, phase: TaskPhase },
}

/// Makes failed, skipped and cancelled tasks run again (all of them, or the named ones and
/// the tasks skipped because of them), and the workflow Running. Attempts keep counting, so
/// the next attempt has a new messageId. Returns the names reset (none when nothing is to be
/// retried). A named task that does not exist, or that is not failed, skipped or cancelled,
/// refuses the whole request and changes nothing but the alignment of `status.tasks`.
pub fn retry(spec: &WorkflowSpec, status: &mut WorkflowStatus, only: &[String]) -> Result<Vec<String>, RetryRefused> {
    align(spec, status);
    if let Some(unknown) = only.iter().find(|n| !spec.tasks.iter().any(|t| &t.name == *n)) {
        return Err(RetryRefused::UnknownTask { task: unknown.clone() });
    }
    if let Some(t) = status.tasks.iter().find(|t| only.contains(&t.name) && !t.phase.is_retryable()) {
        return Err(RetryRefused::NotRetryable { task: t.name.clone(), phase: t.phase });
    }
    let deps = dependency_indices(spec);
    let mut chosen: Vec<bool> =
        status.tasks.iter().map(|t| t.phase.is_retryable() && (only.is_empty() || only.contains(&t.name))).collect();
    // Downstream tasks that were skipped (or cancelled) because of a chosen one come along.
    loop {
        let mut any = false;
        for i in 0..chosen.len() {
            if !chosen[i]
                && matches!(status.tasks[i].phase, TaskPhase::Skipped | TaskPhase::Cancelled)
                && deps[i].iter().any(|&d| chosen[d])
            {
                chosen[i] = true;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    let mut names = Vec::new();
    for (t, _) in status.tasks.iter_mut().zip(&chosen).filter(|(_, c)| **c) {
        t.phase = TaskPhase::Pending;
        t.error = None;
        t.finished_at = None;
        t.next_attempt_at = None;
        t.a2a_task_id = None;
        t.a2a_context_id = None;
        t.reason = None;
        t.message = None;
        names.push(t.name.clone());
    }
    if !names.is_empty() {
        status.phase = Some(WorkflowPhase::Running);
        status.finished_at = None;
    }
    Ok(names)
}

/// Fills `{{ params.x }}` and `{{ tasks.NAME.output }}` for task `i`.
pub fn render_message(spec: &WorkflowSpec, status: &WorkflowStatus, i: usize) -> Result<String, RenderError> {
    render_message_with(spec, status, i, |_| None)
}

/// [`render_message`], where `full(key)` gives what status holds only in part, read back
/// from beside the workflow (see [`super::outputs`]): a task's whole output (key: the task's
/// name) when status holds its first 64 KiB, its data as JSON (key:
/// [`super::parts::data_key`]) when over 64 KiB. Without it, a long output renders as its
/// first 64 KiB and data kept beside as nothing (a dispatch check; the attempt renders whole).
pub fn render_message_with<'a>(
    spec: &'a WorkflowSpec,
    status: &'a WorkflowStatus,
    i: usize,
    full: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, RenderError> {
    // Looked up per reference: most messages have none, and a map per call would make a
    // large workflow's step quadratic.
    let item = spec.tasks[i].item.as_ref();
    template::render(&spec.tasks[i].message, |r| match r {
        Ref::Param(p) => spec.params.get(*p).map(|v| v.as_str().into()),
        Ref::Item(path) => item.and_then(|(_, v)| super::parts::lookup(v, *path)),
        Ref::Index => item.map(|(i, _)| i.to_string().into()),
        Ref::TaskOutput(t) => {
            let j = status.tasks.iter().position(|s| s.name == *t)?;
            let s = &status.tasks[j];
            let whole = if s.output_ref.is_some() { full(&s.name) } else { None };
            whole.or(s.output.as_deref()).map(Into::into)
        }
        Ref::TaskData { task, path } => {
            let s = status.tasks.iter().find(|s| s.name == *task)?;
            if let Some(data) = &s.data {
                return super::parts::lookup(data, *path);
            }
            if !data_kept_beside(s) {
                return None;
            }
            match full(&super::parts::data_key(task)) {
                Some(json) => {
                    let data: serde_json::Value = serde_json::from_str(json).ok()?;
                    super::parts::lookup(&data, *path).map(|v| v.into_owned().into())
                }
                None => Some("".into()),
            }
        }
    })
}

/// Whether task status `s` has data kept beside the workflow (over 64 KiB) rather than in
/// `data`.
fn data_kept_beside(s: &TaskStatus) -> bool {
    s.data.is_none() && s.parts.iter().any(|p| p.kind == "data" && p.stored.is_some())
}

/// What task `i`'s message uses that status holds only in part, as (upstream task index,
/// storage key): whole outputs longer than 64 KiB (key: the task's name) and data kept beside
/// the workflow (key: [`super::parts::data_key`]).
pub fn long_outputs_used(spec: &WorkflowSpec, status: &WorkflowStatus, i: usize) -> Vec<(usize, String)> {
    let Ok(refs) = template::references(&spec.tasks[i].message) else { return Vec::new() };
    let mut out: Vec<(usize, String)> = Vec::new();
    for r in refs {
        let Some(j) = r.task().and_then(|t| status.tasks.iter().position(|s| s.name == t)) else { continue };
        let s = &status.tasks[j];
        let key = match r {
            Ref::TaskOutput(_) if s.output_ref.is_some() => s.name.clone(),
            Ref::TaskData { .. } if data_kept_beside(s) => super::parts::data_key(&s.name),
            _ => continue,
        };
        if !out.iter().any(|(_, k)| *k == key) {
            out.push((j, key));
        }
    }
    out
}

/// Whether the workflow can go no further until the user answers: some task waits for input
/// (or auth), nothing runs, and no pending task can start (each has a dependency that is
/// neither succeeded nor failed, so it waits behind a waiting task). A pending task that could
/// start, or one about to be skipped, means the workflow still moves by itself.
pub fn waits_for_input(spec: &WorkflowSpec, status: &WorkflowStatus) -> bool {
    if status.tasks.len() != spec.tasks.len() || !status.tasks.iter().any(|t| t.phase.is_waiting()) {
        return false;
    }
    let deps = dependency_indices(spec);
    status.tasks.iter().enumerate().all(|(i, t)| match t.phase {
        TaskPhase::Running => false,
        TaskPhase::Pending => deps[i].iter().any(|&d| {
            let p = status.tasks[d].phase;
            p == TaskPhase::Pending || p.is_waiting()
        }),
        _ => true,
    })
}

/// Sets the progress and, when every task is terminal, the final phase. Returns whether
/// anything changed.
pub fn settle(status: &mut WorkflowStatus, now: Timestamp) -> bool {
    let total = status.tasks.len();
    let done = status.tasks.iter().filter(|t| t.phase.is_terminal()).count();
    let progress = format!("{done}/{total}");
    let mut changed = status.progress.as_deref() != Some(progress.as_str());
    status.progress = Some(progress);
    if done == total && !status.phase.is_some_and(WorkflowPhase::is_terminal) {
        let phase = if status.tasks.iter().all(|t| t.phase == TaskPhase::Succeeded) {
            WorkflowPhase::Succeeded
        } else if status.tasks.iter().any(|t| t.phase == TaskPhase::Failed) {
            WorkflowPhase::Failed
        } else {
            WorkflowPhase::Cancelled
        };
        status.phase = Some(phase);
        status.finished_at = Some(Time(now));
        changed = true;
    }
    changed
}

/// The retry policy in force for task `i`: the task's, else the workflow's, else none.
pub fn retry_policy(spec: &WorkflowSpec, i: usize) -> Option<&RetryPolicy> {
    spec.tasks[i].retry.as_ref().or(spec.retry.as_ref())
}

/// The wait before attempt `attempt + 1` after `attempt` failed: `initial × factor^(attempt-1)`,
/// at most `max`.
pub fn backoff(policy: Option<&RetryPolicy>, attempt: u32) -> Duration {
    let b = policy.and_then(|p| p.backoff.as_ref());
    let initial = b.and_then(|b| b.initial.as_ref()).map_or(DEFAULT_BACKOFF_INITIAL, |d| d.value());
    let factor = b.and_then(|b| b.factor).unwrap_or(DEFAULT_BACKOFF_FACTOR);
    let max = b.and_then(|b| b.max.as_ref()).map_or(DEFAULT_BACKOFF_MAX, |d| d.value());
    let exp = attempt.saturating_sub(1).min(63);
    let mult = u64::from(factor).checked_pow(exp).unwrap_or(u64::MAX);
    let nanos = initial.as_nanos().saturating_mul(u128::from(mult)).min(max.as_nanos());
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Records a failed attempt of task `i`: back to Pending with a backoff while retries remain,
/// else Failed. Returns whether it will be retried.
pub fn record_failure(
    spec: &WorkflowSpec,
    status: &mut WorkflowStatus,
    i: usize,
    error: String,
    now: Timestamp,
) -> bool {
    let policy = retry_policy(spec, i);
    let limit = policy.and_then(|p| p.limit).unwrap_or(0);
    let t = &mut status.tasks[i];
    t.error = Some(error);
    t.a2a_task_id = None;
    if t.attempts <= limit {
        let wait = backoff(policy, t.attempts);
        t.phase = TaskPhase::Pending;
        t.next_attempt_at = Some(Time(now + jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX)));
        true
    } else {
        t.phase = TaskPhase::Failed;
        t.finished_at = Some(Time(now));
        t.next_attempt_at = None;
        false
    }
}

/// Records an attempt of task `i` the agent deferred (it asked with `Retry-After` to be called
/// again at `until`): the task is Pending until then, and the attempt is not counted — the
/// next one has the same number (so the same messageId) and `retry.limit` is untouched. The
/// reason and message say why it waits.
pub fn record_deferred(status: &mut WorkflowStatus, i: usize, until: Timestamp, reason: &str, message: String) {
    let t = &mut status.tasks[i];
    t.phase = TaskPhase::Pending;
    t.attempts = t.attempts.saturating_sub(1);
    t.next_attempt_at = Some(Time(until));
    t.a2a_task_id = None;
    t.error = None;
    t.reason = Some(reason.to_owned());
    t.message = Some(message);
}

/// Records a failure of task `i` that no retry can mend: Failed now, whatever retries remain.
pub fn record_final_failure(status: &mut WorkflowStatus, i: usize, reason: &str, error: String, now: Timestamp) {
    let t = &mut status.tasks[i];
    t.phase = TaskPhase::Failed;
    t.a2a_task_id = None;
    t.next_attempt_at = None;
    t.finished_at = Some(Time(now));
    t.reason = Some(reason.to_owned());
    t.message = Some(error.clone());
    t.error = Some(error);
}

/// Marks task `i` Running for attempt `attempt` on `agent` (before the request is sent, so a
/// crash after sending is known to have an attempt in flight).
pub fn record_start(status: &mut WorkflowStatus, i: usize, attempt: u32, agent: &str, now: Timestamp) {
    let t = &mut status.tasks[i];
    t.phase = TaskPhase::Running;
    t.attempts = attempt;
    t.agent = Some(agent.to_owned());
    t.started_at = Some(Time(now));
    t.next_attempt_at = None;
    t.a2a_task_id = None;
    t.a2a_context_id = None;
    t.reason = None;
    t.message = None;
    t.waiting_since = None;
}

/// Records an attempt the agent answered by waiting for the user (input or auth required,
/// `phase`): the task waits, holding the agent's A2A task and its question; it is neither
/// retried nor polled, and the tasks after it wait with it.
pub fn record_waiting(status: &mut WorkflowStatus, i: usize, phase: TaskPhase, a2a_task_id: String, question: String) {
    let t = &mut status.tasks[i];
    t.phase = phase;
    t.a2a_task_id = Some(a2a_task_id);
    t.message = Some(question);
    t.error = None;
    t.next_attempt_at = None;
}

/// Records a successful attempt with its output.
pub fn record_success(status: &mut WorkflowStatus, i: usize, output: String, now: Timestamp) {
    let t = &mut status.tasks[i];
    t.phase = TaskPhase::Succeeded;
    t.output = Some(output);
    t.output_ref = None;
    t.error = None;
    t.finished_at = Some(Time(now));
}

/// The dispatch priority of a task: the task's or workflow's, else the agent's, else normal.
pub fn effective_priority(ready: &Ready, agent: Option<&Agent>) -> Priority {
    ready.priority.or_else(|| agent.and_then(|a| a.spec.priority)).unwrap_or_default()
}

/// The messageId of an attempt: stable across daemon restarts, distinct per attempt, so an
/// agent can recognise a re-sent attempt.
pub fn message_id(workflow_uid: &str, task: &str, attempt: u32) -> String {
    format!("{workflow_uid}-{task}-{attempt}")
}

/// The A2A `contextId` of one attempt's message: a context of its own, so the one task it
/// holds is found by it (`ListTasks`) after a restart. Stable, like [`message_id`].
pub fn context_id(workflow_uid: &str, task: &str, attempt: u32) -> String {
    format!("a2a-{workflow_uid}-{task}-{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Workflow;

    fn wf(yaml: &str) -> WorkflowSpec {
        let text = format!("apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: w }}\nspec:\n{yaml}");
        match crate::api::validate::validate(&serde_yaml_ng::from_str(&text).expect("yaml")) {
            Ok(crate::api::Object::Workflow(Workflow { spec, .. })) => spec,
            other => panic!("not a valid workflow: {other:?}"),
        }
    }

    fn t0() -> Timestamp {
        "2026-11-24T00:00:00Z".parse().expect("time")
    }

    fn names(step: &Step) -> Vec<&str> {
        step.ready.iter().map(|r| r.name.as_str()).collect()
    }

    const DIAMOND: &str = "  params: { x: world }\n  tasks:\n    - { name: a, agent: e, message: \"hello {{ params.x }}\" }\n    - { name: b, agent: e, dependsOn: [a], message: \"b {{ tasks.a.output }}\" }\n    - { name: c, agent: e, dependsOn: [a], message: c }\n    - { name: d, agent: e, dependsOn: [b, c], message: \"{{ tasks.b.output }}+{{ tasks.c.output }}\" }\n";

    #[test]
    fn a_diamond_runs_in_dependency_order_with_outputs_passed_down() {
        let spec = wf(DIAMOND);
        let mut st = WorkflowStatus::default();
        let s = step(&spec, &mut st, t0());
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.ready[0].message, "hello world");
        assert_eq!(st.phase, Some(WorkflowPhase::Running));
        record_start(&mut st, 0, 1, "e", t0());
        assert!(step(&spec, &mut st, t0()).ready.is_empty(), "nothing else is ready while a runs");
        record_success(&mut st, 0, "A".into(), t0());
        let s = step(&spec, &mut st, t0());
        assert_eq!(names(&s), ["b", "c"]);
        assert_eq!(s.ready[0].message, "b A");
        record_start(&mut st, 1, 1, "e", t0());
        record_start(&mut st, 2, 1, "e", t0());
        record_success(&mut st, 1, "B".into(), t0());
        assert!(step(&spec, &mut st, t0()).ready.is_empty(), "d waits for c too");
        record_success(&mut st, 2, "C".into(), t0());
        let s = step(&spec, &mut st, t0());
        assert_eq!(s.ready[0].message, "B+C");
        record_start(&mut st, 3, 1, "e", t0());
        record_success(&mut st, 3, "D".into(), t0());
        step(&spec, &mut st, t0());
        assert_eq!(st.phase, Some(WorkflowPhase::Succeeded));
        assert_eq!(st.progress.as_deref(), Some("4/4"));
    }

    #[test]
    fn a_failure_is_retried_with_backoff_then_fails_the_workflow_and_skips_dependents() {
        let spec = wf(&DIAMOND.replace("  tasks:", "  retry: { limit: 1, backoff: { initial: 2s } }\n  tasks:"));
        let mut st = WorkflowStatus::default();
        step(&spec, &mut st, t0());
        record_start(&mut st, 0, 1, "e", t0());
        assert!(record_failure(&spec, &mut st, 0, "boom".into(), t0()), "one retry remains");
        let s = step(&spec, &mut st, t0());
        assert!(s.ready.is_empty(), "the retry waits for its backoff");
        assert_eq!(s.wake_at, Some(t0() + jiff::SignedDuration::from_secs(2)));
        let later = t0() + jiff::SignedDuration::from_secs(2);
        let s = step(&spec, &mut st, later);
        assert_eq!(s.ready[0].attempt, 2);
        record_start(&mut st, 0, 2, "e", later);
        assert!(!record_failure(&spec, &mut st, 0, "boom again".into(), later), "no retries left");
        step(&spec, &mut st, later);
        let phases: Vec<TaskPhase> = st.tasks.iter().map(|t| t.phase).collect();
        assert_eq!(phases, [TaskPhase::Failed, TaskPhase::Skipped, TaskPhase::Skipped, TaskPhase::Skipped]);
        assert_eq!(st.tasks[3].error.as_deref(), Some("dependency \"b\" did not succeed"));
        assert_eq!(st.phase, Some(WorkflowPhase::Failed));
    }

    #[test]
    fn parallelism_bounds_running_tasks() {
        let spec = wf(
            "  parallelism: 2\n  tasks:\n    - { name: a, agent: e, message: m }\n    - { name: b, agent: e, message: m }\n    - { name: c, agent: e, message: m }\n",
        );
        let mut st = WorkflowStatus::default();
        let s = step(&spec, &mut st, t0());
        assert_eq!(names(&s), ["a", "b"]);
        record_start(&mut st, 0, 1, "e", t0());
        assert_eq!(names(&step(&spec, &mut st, t0())), ["b"], "one slot left while a runs");
    }

    #[test]
    fn the_active_deadline_cancels_running_and_waiting_tasks() {
        let spec = wf(
            "  activeDeadline: 10s\n  tasks:\n    - { name: a, agent: e, message: m }\n    - { name: b, agent: e, dependsOn: [a], message: m }\n",
        );
        let mut st = WorkflowStatus::default();
        let s = step(&spec, &mut st, t0());
        assert_eq!(s.wake_at, Some(t0() + jiff::SignedDuration::from_secs(10)));
        record_start(&mut st, 0, 1, "e", t0());
        let s = step(&spec, &mut st, t0() + jiff::SignedDuration::from_secs(11));
        assert_eq!(s.cancel, [0]);
        assert_eq!(st.tasks[1].phase, TaskPhase::Cancelled);
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_max() {
        let spec = wf(
            "  retry: { limit: 9, backoff: { initial: 1s, factor: 3, max: 20s } }\n  tasks:\n    - { name: a, agent: e, message: m }\n",
        );
        let p = retry_policy(&spec, 0);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(p, a).as_secs()).collect();
        assert_eq!(waits, [1, 3, 9, 20, 20]);
        assert_eq!(backoff(None, 1), DEFAULT_BACKOFF_INITIAL);
        assert_eq!(backoff(None, 60), DEFAULT_BACKOFF_MAX, "no overflow on many attempts");
    }

    #[test]
    fn a_task_waiting_for_input_holds_its_dependents_and_is_cancelled_with_the_workflow() {
        let spec = wf(DIAMOND);
        let mut st = WorkflowStatus::default();
        step(&spec, &mut st, t0());
        assert!(!waits_for_input(&spec, &st));
        record_start(&mut st, 0, 1, "e", t0());
        record_waiting(&mut st, 0, TaskPhase::InputRequired, "a2a-1".into(), "which city?".into());
        let out = step(&spec, &mut st, t0());
        assert!(out.ready.is_empty(), "nothing after a waiting task starts");
        assert!(!TaskPhase::InputRequired.is_terminal());
        assert_eq!(st.phase, Some(WorkflowPhase::Running), "a waiting task keeps the workflow running");
        assert_eq!(st.progress.as_deref(), Some("0/4"));
        assert_eq!(st.tasks[0].message.as_deref(), Some("which city?"));
        assert_eq!(st.tasks[0].a2a_task_id.as_deref(), Some("a2a-1"));
        assert!(st.tasks[1..].iter().all(|t| t.phase == TaskPhase::Pending));
        assert!(waits_for_input(&spec, &st), "nothing can move until the question is answered");
        assert_eq!(
            retry(&spec, &mut st, &[spec.tasks[0].name.clone()]).map_err(|e| e.to_string()),
            Err(format!(
                "task {:?} is InputRequired; only failed, skipped or cancelled tasks are retried",
                spec.tasks[0].name
            ))
        );
        let c = cancel(&mut st, t0());
        assert_eq!((c.running, c.abandoned), (vec![], vec![0]), "its A2A task is to be cancelled on the agent");
        assert_eq!(st.phase, Some(WorkflowPhase::Cancelled));
        assert!(st.tasks.iter().all(|t| t.phase == TaskPhase::Cancelled));
    }

    #[test]
    fn cancel_then_retry_a_task_brings_back_what_it_skipped() {
        let spec = wf(DIAMOND);
        let mut st = WorkflowStatus::default();
        step(&spec, &mut st, t0());
        record_start(&mut st, 0, 1, "e", t0());
        let running = cancel(&mut st, t0()).running;
        assert_eq!(running, [0]);
        assert_eq!(st.phase, Some(WorkflowPhase::Running), "a task still runs on its agent");
        record_cancelled(&mut st, 0, t0());
        cancel(&mut st, t0());
        assert_eq!(st.phase, Some(WorkflowPhase::Cancelled));
        assert!(st.tasks.iter().all(|t| t.phase == TaskPhase::Cancelled));
        assert_eq!(
            retry(&spec, &mut st, &["nope".into()]).map_err(|e| e.to_string()),
            Err("the workflow has no task \"nope\"".into())
        );
        assert_eq!(retry(&spec, &mut st, &["a".into()]).expect("retry"), ["a", "b", "c", "d"]);
        assert_eq!(st.phase, Some(WorkflowPhase::Running));
        let s = step(&spec, &mut st, t0());
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.ready[0].attempt, 2, "a new attempt, so a new messageId");
    }

    #[test]
    fn a_retry_naming_a_task_that_did_not_fail_changes_nothing() {
        let spec = wf(DIAMOND);
        let mut st = WorkflowStatus::default();
        step(&spec, &mut st, t0());
        record_start(&mut st, 0, 1, "e", t0());
        record_success(&mut st, 0, "A".into(), t0());
        step(&spec, &mut st, t0());
        record_start(&mut st, 1, 1, "e", t0());
        record_start(&mut st, 2, 1, "e", t0());
        assert!(!record_failure(&spec, &mut st, 1, "boom".into(), t0()), "no retries left");
        record_success(&mut st, 2, "C".into(), t0());
        step(&spec, &mut st, t0());
        assert_eq!(st.phase, Some(WorkflowPhase::Failed));
        let before = st.clone();
        assert_eq!(
            retry(&spec, &mut st, &["b".into(), "c".into()]),
            Err(RetryRefused::NotRetryable { task: "c".into(), phase: TaskPhase::Succeeded })
        );
        assert_eq!(st, before, "a refused request changes nothing");
        assert_eq!(retry(&spec, &mut st, &["b".into()]).expect("retry"), ["b", "d"]);
    }

    #[test]
    fn a_deferred_attempt_is_sent_again_as_the_same_attempt_without_using_a_retry() {
        let spec = wf("  retry: { limit: 0 }\n  tasks:\n    - { name: a, agent: e, message: m }\n");
        let mut st = WorkflowStatus::default();
        assert_eq!(step(&spec, &mut st, t0()).ready[0].attempt, 1);
        record_start(&mut st, 0, 1, "e", t0());
        let later = t0() + jiff::SignedDuration::from_secs(2);
        record_deferred(&mut st, 0, later, "RateLimited", "agent \"e\" asked to wait".into());
        let t = &st.tasks[0];
        assert_eq!((t.phase, t.attempts, t.error.as_deref()), (TaskPhase::Pending, 0, None));
        assert_eq!(
            (t.reason.as_deref(), t.message.as_deref()),
            (Some("RateLimited"), Some("agent \"e\" asked to wait"))
        );
        let s = step(&spec, &mut st, t0());
        assert!(s.ready.is_empty(), "it waits as asked");
        assert_eq!(s.wake_at, Some(later));
        let s = step(&spec, &mut st, later);
        assert_eq!(s.ready[0].attempt, 1, "the same attempt, so the same messageId");
        record_start(&mut st, 0, 1, "e", later);
        assert_eq!((st.tasks[0].reason.as_deref(), st.tasks[0].message.as_deref()), (None, None));
        assert!(!record_failure(&spec, &mut st, 0, "boom".into(), later), "retry.limit 0: a real failure is final");
        assert_eq!(st.tasks[0].phase, TaskPhase::Failed);
    }

    #[test]
    fn a_final_failure_ends_the_task_whatever_retries_remain() {
        let spec = wf("  retry: { limit: 5 }\n  tasks:\n    - { name: a, agent: e, message: m }\n");
        let mut st = WorkflowStatus::default();
        step(&spec, &mut st, t0());
        record_start(&mut st, 0, 1, "e", t0());
        record_final_failure(&mut st, 0, "RateLimited", "asked to wait 2h".into(), t0());
        step(&spec, &mut st, t0());
        assert_eq!((st.tasks[0].phase, st.tasks[0].error.as_deref()), (TaskPhase::Failed, Some("asked to wait 2h")));
        assert_eq!(st.phase, Some(WorkflowPhase::Failed));
    }

    #[test]
    fn message_ids_are_stable_and_distinct_per_attempt() {
        assert_eq!(message_id("uid-1", "fetch", 2), "uid-1-fetch-2");
        assert_ne!(message_id("uid-1", "fetch", 1), message_id("uid-1", "fetch", 2));
    }
}
