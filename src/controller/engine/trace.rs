//! The engine's spans: one per attempt, under the workflow's root span (see [`crate::traces`]).

use jiff::Timestamp;

use super::Key;
use crate::api::workflow::{WorkflowPhase, WorkflowStatus};
use crate::traces::{self, Span, SpanKind, SpanStatus, Value};

/// What an attempt's span says, gathered before its outcome is recorded.
pub(super) struct AttemptSpan<'a> {
    pub workflow: &'a Key,
    pub uid: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    pub reply: Option<&'a str>,
    pub agent: Option<String>,
    pub skill: Option<String>,
    pub a2a_task_id: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl AttemptSpan<'_> {
    /// Records the span with the attempt's outcome (as the metrics name it), its reason and,
    /// for a failure, the error.
    pub fn record(&self, outcome: &str, reason: &str, error: Option<&str>) {
        traces::record(|| {
            let (ns, name) = self.workflow;
            let mut attributes: Vec<(&'static str, Value)> = vec![
                ("a2a.workflow.namespace", ns.as_str().into()),
                ("a2a.workflow.name", name.as_str().into()),
                ("a2a.workflow.uid", self.uid.into()),
                ("a2a.task.name", self.task.into()),
                ("a2a.task.attempt", i64::from(self.attempt).into()),
                ("a2a.task.outcome", outcome.into()),
                ("a2a.task.reason", reason.into()),
            ];
            if let Some(a) = &self.agent {
                attributes.push(("a2a.agent.name", a.as_str().into()));
            }
            if let Some(s) = &self.skill {
                attributes.push(("a2a.skill", s.as_str().into()));
            }
            if let Some(id) = &self.a2a_task_id {
                attributes.push(("a2a.a2a_task.id", id.as_str().into()));
            }
            if let Some(r) = self.reply {
                attributes.push(("a2a.reply.id", r.into()));
            }
            let status = match (outcome, error) {
                ("succeeded" | "waiting", _) => SpanStatus::Ok,
                (_, Some(e)) => SpanStatus::Error(e.to_owned()),
                (_, None) => SpanStatus::Error(reason.to_owned()),
            };
            Span {
                trace_id: traces::trace_id(self.uid),
                span_id: traces::attempt_span_id(self.uid, self.task, self.attempt, self.reply),
                parent: Some(traces::workflow_span_id(self.uid)),
                name: format!("task {}", self.task),
                kind: SpanKind::Client,
                start: self.start,
                end: self.end,
                attributes,
                status,
            }
        });
    }
}

/// Records the root span of a workflow that finished: from its start to its end.
pub(super) fn workflow_ended(k: &Key, uid: &str, status: &WorkflowStatus) {
    traces::record(|| {
        let end = status.finished_at.map_or_else(Timestamp::now, |t| t.0);
        let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        let mut attributes: Vec<(&'static str, Value)> = vec![
            ("a2a.workflow.namespace", k.0.as_str().into()),
            ("a2a.workflow.name", k.1.as_str().into()),
            ("a2a.workflow.uid", uid.into()),
            ("a2a.workflow.phase", phase.clone().into()),
        ];
        if let Some(p) = &status.progress {
            attributes.push(("a2a.workflow.progress", p.as_str().into()));
        }
        let status_of = match status.phase {
            Some(WorkflowPhase::Succeeded) => SpanStatus::Ok,
            _ => SpanStatus::Error(format!("the workflow ended {phase}")),
        };
        Span {
            trace_id: traces::trace_id(uid),
            span_id: traces::workflow_span_id(uid),
            parent: None,
            name: format!("workflow {}/{}", k.0, k.1),
            kind: SpanKind::Internal,
            start: status.started_at.map_or(end, |t| t.0),
            end,
            attributes,
            status: status_of,
        }
    });
}
