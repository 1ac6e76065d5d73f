//! The `Workflow` kind: a DAG of tasks, each one A2A `SendMessage` to an agent.
// clippy reads the repeated `printcolumn(type_ = ...)` keys of the derive as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, Priority, Time, is_zero};
use super::quantity::Duration;

/// A DAG of tasks sent to agents over A2A.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "a2a.dev",
    version = "v1alpha1",
    kind = "Workflow",
    plural = "workflows",
    namespaced,
    shortname = "wf",
    category = "a2a",
    status = "WorkflowStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A DAG of tasks, each one A2A message to an agent.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority", priority = 1),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startedAt", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The tasks; `dependsOn` makes the DAG.
    #[schemars(length(min = 1))]
    pub tasks: Vec<WorkflowTask>,
    /// Values for `{{ params.NAME }}` in messages; `a2a run --param k=v` overrides them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Dispatch order against other workflows' tasks. Default `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The ResourceBudget this workflow's stdio runs are charged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// Tasks of this workflow running at once (default: unbounded, the agents' capacity rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<u32>,
    /// Retries for every task (a task's own `retry` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Time limit for one attempt of every task (a task's own `timeout` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time limit for the whole workflow, from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline: Option<Duration>,
    /// Delete the workflow this long after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    /// Where tasks may run: `local` (default: only agents of this host), `any` (a free agent of
    /// this host first, else a joined peer that has the skill) or `lan` (a joined peer first,
    /// else an agent of this host). A task's own `placement` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Answers to the agents' questions (`a2a reply`), append-only: each is delivered once,
    /// in order, to its task's A2A task when that task waits for input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<Reply>,
}

/// An answer to the question a task's agent asked (A2A `TASK_STATE_INPUT_REQUIRED` or
/// `_AUTH_REQUIRED`), sent as a message on the same A2A task. Written by `a2a reply`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reply {
    /// Unique among the workflow's replies; the task's `status.lastReply` names the last one
    /// delivered.
    pub id: String,
    /// The task whose question this answers.
    pub task: String,
    /// The answer as text (a TextPart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The answer as structured data (a DataPart), beside or instead of the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_reply_object")]
    pub data: Option<serde_json::Value>,
}

fn any_reply_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The answer as structured data (a DataPart), beside or instead of the text.",
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One task: one A2A message to one agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowTask {
    /// Unique in the workflow; lowercase letters, digits and `-`.
    pub name: String,
    /// The agent (in the workflow's namespace) to send to. Exactly one of `agent`, `skill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Send to the least-loaded ready agent with this skill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// The message text. `{{ params.x }}` and `{{ tasks.NAME.output }}` are substituted.
    pub message: String,
    /// Structured input, sent as a DataPart beside the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub data: Option<serde_json::Value>,
    /// Tasks that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Time limit for one attempt; then the task is cancelled on the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// How long the task may wait for an answer when its agent asks (InputRequired or
    /// AuthRequired); then it fails with reason `InputTimeout` and its A2A task is cancelled.
    /// Default: no limit (the workflow's `activeDeadline` still applies). `timeout` does not
    /// run while the task waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_timeout: Option<Duration>,
    /// Where this task may run (see the workflow's `placement`, which it overrides). Only a
    /// task sent by `skill` can leave the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Run this task once per item, as tasks `NAME[0]`, `NAME[1]`…: `{{ item }}` (and
    /// `{{ item.field }}`, `{{ index }}`) in the message is the item. Tasks that depend on
    /// this one wait for every expansion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// On an expansion of a `forEach` task (made by the engine, never written): its index and
    /// item.
    #[serde(skip)]
    #[schemars(skip)]
    pub item: Option<(usize, serde_json::Value)>,
}

/// Where a task may run: on this host only, or also on the hosts that joined its cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Only agents of this host (nothing leaves the host).
    #[default]
    Local,
    /// A joined peer that advertises the skill first (least loaded by its advertised room),
    /// else an agent of this host.
    Lan,
    /// A free agent of this host first, else a joined peer that advertises the skill.
    Any,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Local => "local",
            Placement::Lan => "lan",
            Placement::Any => "any",
        }
    }

    /// The placement of task `task` of `spec`: its own, else the workflow's, else `local`.
    pub fn of(spec: &WorkflowSpec, task: &WorkflowTask) -> Placement {
        task.placement.or(spec.placement).unwrap_or_default()
    }

    /// Whether the task may run on a peer at all.
    pub fn may_leave(self) -> bool {
        self != Placement::Local
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `forEach` task runs over: exactly one of `items`, `count`, `task`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForEach {
    /// A literal list: one task per element (strings, numbers or objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_items")]
    pub items: Option<Vec<serde_json::Value>>,
    /// The numbers `0..count`: one task per number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// An upstream task whose output is a JSON array (its data part, else its text): one task
    /// per element, made when that task has succeeded. It need not be in `dependsOn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

fn any_items(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A literal list: one task per element (strings, numbers or objects).",
        "type": "array",
        "nullable": true,
        "items": {"x-kubernetes-preserve-unknown-fields": true},
    })
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Structured input, sent as a DataPart beside the text.",
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// How often, and how patiently, a failed attempt is tried again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Exponential backoff: `initial × factor^n`, at most `max`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub factor: Option<u32>,
    /// Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// What happened to a workflow.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkflowPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Finished tasks out of all: `3/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Each task's status, in spec order — here while the workflow has at most 100 tasks;
    /// a bigger one keeps them beside it (`taskStatusRef`) and only a summary here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
    /// Where each task's status is kept when it is not in `tasks` (a workflow of more than
    /// 100 tasks): ConfigMaps owned by the workflow, one per range of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status_ref: Option<TaskStatusRef>,
    /// Tasks by phase (`{"Succeeded": 9990, "Running": 10}`), when `tasks` is kept beside the
    /// workflow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_counts: BTreeMap<String, u32>,
    /// Why waiting tasks are stuck, by reason, with the first few tasks of each, when `tasks`
    /// is kept beside the workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<StuckTasks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where a big workflow's per-task status is kept: task `i`'s entry is in the JSON array of
/// the ConfigMaps `{configMapPrefix}-{i / tasksPerChunk}-0`, `-1`… (data key `output`), in
/// spec order. `a2a describe` and `a2a output` read them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusRef {
    /// `WORKFLOW.status`: range `k` is in the ConfigMaps named `WORKFLOW.status-k-0`, …
    pub config_map_prefix: String,
    /// Tasks in all.
    pub tasks: u32,
    /// Tasks per range.
    pub tasks_per_chunk: u32,
    /// Ranges (`ceil(tasks / tasksPerChunk)`).
    pub chunks: u32,
}

/// Tasks stuck for one reason (see a task's `reason`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckTasks {
    pub reason: String,
    pub count: u32,
    /// The first few tasks stuck for it, in spec order.
    pub tasks: Vec<String>,
    /// The first one's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkflowPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowPhase {
    /// Whether the workflow has finished (Succeeded, Failed or Cancelled): nothing more is
    /// dispatched until `a2a retry` asks for it.
    pub fn is_terminal(self) -> bool {
        matches!(self, WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)
    }
}

/// What happened to one task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub name: String,
    pub phase: TaskPhase,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// The agent the current (or last) attempt went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The A2A task id the agent gave the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_task_id: Option<String>,
    /// The A2A `contextId` a2a chose for the current attempt's message (from the workflow's
    /// uid, the task and the attempt), written before a message that names no task in its
    /// answer until the end is sent: after a restart, the attempt's A2A task is found by it
    /// with `ListTasks` instead of being sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The first 64 KiB of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Where the whole output is kept when it is longer than 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a Pending task cannot be dispatched: `AgentNotFound`, `AgentNotAdmitted`,
    /// `NoReadyReplica` or `NoAgentWithSkill`; or `Unschedulable` for a task failed because
    /// its agent can never be admitted, `InputTimeout` for one whose question was not answered
    /// within its `inputTimeout`. Cleared when an attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason in words, e.g. `agent "researcher" is not admitted: needs 1 cpu but budget
    /// "host" has 400m of 1200m left`; for an InputRequired or AuthRequired task, what the
    /// agent asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// After a failed attempt: when the next one may start (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// Since when an InputRequired or AuthRequired task waits (`inputTimeout` counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// The id of the last `spec.replies` entry delivered to this task's agent: replies up to
    /// it are consumed and never sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    /// The output's data parts as JSON — the one data part's value, or an array of several —
    /// when at most 64 KiB; `{{ tasks.NAME.data }}` and `{{ tasks.NAME.data.field }}` read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub data: Option<serde_json::Value>,
    /// Every part of the output in order (its artifacts', else its status message's): kind,
    /// name, media type, size and, for a file, where its bytes are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<OutputPart>,
}

fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The output's data parts as JSON (one part: its value; several: an array).",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One part of a task's output, as `a2a output --list` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputPart {
    /// `text`, `data` or `file`.
    pub kind: String,
    /// A file's name (its `filename`, else `file-N`); unique in the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Size in bytes (a file's decoded bytes; text and data as UTF-8 / JSON).
    #[serde(default)]
    pub bytes: u64,
    /// A file given by reference: its URL (the bytes are not fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where a file's bytes (base64) or data over 64 KiB are kept: the ConfigMaps beside the
    /// workflow whose names start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// Why a part was not kept (over the 16 MiB cap, bytes that are not base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskStatus {
    pub fn pending(name: &str) -> Self {
        TaskStatus {
            name: name.to_owned(),
            phase: TaskPhase::Pending,
            attempts: 0,
            agent: None,
            a2a_task_id: None,
            a2a_context_id: None,
            started_at: None,
            finished_at: None,
            output: None,
            output_ref: None,
            error: None,
            reason: None,
            message: None,
            next_attempt_at: None,
            waiting_since: None,
            last_reply: None,
            data: None,
            parts: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaskPhase {
    Pending,
    Running,
    /// The agent asked a question (A2A `TASK_STATE_INPUT_REQUIRED`): the task waits for an
    /// answer, with the question in `message` and the A2A task in `a2aTaskId`.
    InputRequired,
    /// The agent needs credentials (A2A `TASK_STATE_AUTH_REQUIRED`); it waits as InputRequired.
    AuthRequired,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskPhase {
    /// Whether the task will not run again (without `a2a retry`).
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Skipped | TaskPhase::Cancelled)
    }

    /// Whether the agent holds the task and waits for the user (input or auth required):
    /// not terminal, not running, and nothing is sent or polled until it is answered.
    pub fn is_waiting(self) -> bool {
        matches!(self, TaskPhase::InputRequired | TaskPhase::AuthRequired)
    }

    /// Whether `a2a retry` may run the task again: it failed, or never ran to its end
    /// (skipped or cancelled).
    pub fn is_retryable(self) -> bool {
        matches!(self, TaskPhase::Failed | TaskPhase::Skipped | TaskPhase::Cancelled)
    }
}

/// What `a2a retry` asks of the workflow engine, written as JSON in the workflow's
/// `a2a.dev/retry` annotation: `{"nonce":"1733230000000","tasks":["fetch"]}`. The engine
/// handles a request once (the `Retried` condition records the annotation it handled), so
/// each request carries a fresh nonce.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryRequest {
    /// Makes this request distinct from the ones handled before.
    pub nonce: String,
    /// Only these tasks (and what was skipped or cancelled because of them); empty: every
    /// failed, skipped or cancelled task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
}

/// An `a2a.dev/retry` annotation that is not a retry request.
#[derive(Debug, thiserror::Error)]
#[error("the a2a.dev/retry annotation is not a retry request ({{\"nonce\": \"...\", \"tasks\": [...]}}): {source}")]
pub struct RetryRequestError {
    #[source]
    source: serde_json::Error,
}

impl RetryRequest {
    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an annotation's value: the JSON object [`RetryRequest::to_annotation`] writes,
    /// or the `NONCE` / `NONCE:task,task` text earlier versions wrote (a stored workflow may
    /// still carry one).
    pub fn parse(text: &str) -> Result<RetryRequest, RetryRequestError> {
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|source| RetryRequestError { source });
        }
        let (nonce, tasks) = text.split_once(':').unwrap_or((text, ""));
        let tasks = tasks.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
        Ok(RetryRequest { nonce: nonce.to_owned(), tasks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_request_reads_back_what_it_writes() {
        let r = RetryRequest { nonce: "17".into(), tasks: vec!["a".into(), "b,c".into()] };
        assert_eq!(r.to_annotation(), r#"{"nonce":"17","tasks":["a","b,c"]}"#);
        assert_eq!(RetryRequest::parse(&r.to_annotation()).expect("parse"), r);
        let all = RetryRequest { nonce: "18".into(), tasks: vec![] };
        assert_eq!(all.to_annotation(), r#"{"nonce":"18"}"#);
        assert_eq!(RetryRequest::parse(&all.to_annotation()).expect("parse"), all);
    }

    #[test]
    fn a_retry_request_in_the_old_text_form_is_still_read() {
        let r = RetryRequest::parse("17:a, b,").expect("parse");
        assert_eq!(r, RetryRequest { nonce: "17".into(), tasks: vec!["a".into(), "b".into()] });
        assert_eq!(RetryRequest::parse("18").expect("parse"), RetryRequest { nonce: "18".into(), tasks: vec![] });
    }

    #[test]
    fn a_malformed_retry_request_is_refused_with_the_reason() {
        let e = RetryRequest::parse(r#"{"nonce": 1}"#).expect_err("a number is not a nonce");
        assert!(e.to_string().contains("invalid type: integer"), "{e}");
        let e = RetryRequest::parse(r#"{"nonce": "1", "task": ["a"]}"#).expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `task`"), "{e}");
    }
}
