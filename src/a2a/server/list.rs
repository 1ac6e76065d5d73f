//! `ListTasks` on the demo agent: filters by context, state and status time, newest update
//! first, paged by an opaque cursor.

use serde::{Deserialize, Serialize};

use super::super::types::{Task, TaskState};

/// The page size when the caller names none, and the most a page holds.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;

/// Params of `ListTasks` (camelCase, or the proto field names, as ProtoJSON allows).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    #[serde(default, alias = "context_id")]
    context_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, alias = "page_size")]
    page_size: Option<i32>,
    #[serde(default, alias = "page_token")]
    page_token: Option<String>,
    #[serde(default, alias = "history_length")]
    history_length: Option<i32>,
    #[serde(default, alias = "status_timestamp_after")]
    status_timestamp_after: Option<String>,
    #[serde(default, alias = "include_artifacts")]
    include_artifacts: Option<bool>,
}

/// Result of `ListTasks`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    /// Tasks as JSON, so `artifacts` can be left out entirely (not sent empty).
    tasks: Vec<serde_json::Value>,
    /// Always present: `""` on the last page.
    next_page_token: String,
    page_size: usize,
    total_size: usize,
}

/// Why `ListTasks` params are refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pageSize must be 1 to {MAX_PAGE_SIZE}, not {0}")]
    PageSize(i32),
    #[error("status {0:?} is not a task state (e.g. TASK_STATE_WORKING)")]
    Status(String),
    #[error("statusTimestampAfter {value:?} is not an RFC 3339 timestamp: {source}")]
    After {
        value: String,
        #[source]
        source: jiff::Error,
    },
    #[error(transparent)]
    HistoryLength(#[from] super::wire::Error),
    #[error("pageToken {0:?} was not returned by ListTasks")]
    PageToken(String),
    #[error("encoding a task: {0}")]
    Encode(#[source] serde_json::Error),
}

/// A checked `ListTasks` request.
pub struct Query {
    context_id: Option<String>,
    status: Option<TaskState>,
    after: Option<jiff::Timestamp>,
    page_size: usize,
    cursor: Option<Cursor>,
    history_length: Option<usize>,
    include_artifacts: bool,
}

/// Where a page ends in the listing order (newest update first, then id).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cursor {
    updated: std::cmp::Reverse<i128>,
    id: String,
}

impl Cursor {
    fn of(task: &Task) -> Self {
        Self { updated: std::cmp::Reverse(updated(task)), id: task.id.clone() }
    }

    fn token(&self) -> String {
        format!("{}.{}", self.updated.0, self.id)
    }

    fn parse(token: &str) -> Option<Self> {
        let (nanos, id) = token.split_once('.')?;
        Some(Self { updated: std::cmp::Reverse(nanos.parse().ok()?), id: id.to_owned() })
    }
}

/// When the task last changed, in nanoseconds since the epoch (its status time).
fn updated(task: &Task) -> i128 {
    task.status.timestamp.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map_or(0, |t| t.as_nanosecond())
}

impl Query {
    pub fn new(p: ListTasksRequest) -> Result<Self, Error> {
        let page_size = match p.page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) => usize::try_from(n).ok().filter(|n| *n <= MAX_PAGE_SIZE).ok_or(Error::PageSize(n))?,
        };
        let status = match p.status.as_deref() {
            None | Some("" | "TASK_STATE_UNSPECIFIED") => None,
            Some(s) => {
                let state: TaskState = serde_json::from_value(serde_json::Value::String(s.to_owned()))
                    .map_err(|_| Error::Status(s.to_owned()))?;
                if state.as_str() != s {
                    return Err(Error::Status(s.to_owned()));
                }
                Some(state)
            }
        };
        let after = match p.status_timestamp_after {
            None => None,
            Some(value) => Some(value.parse().map_err(|source| Error::After { value, source })?),
        };
        let cursor = match p.page_token.as_deref() {
            None | Some("") => None,
            Some(t) => Some(Cursor::parse(t).ok_or_else(|| Error::PageToken(t.to_owned()))?),
        };
        Ok(Self {
            context_id: p.context_id.filter(|c| !c.is_empty()),
            status,
            after,
            page_size,
            cursor,
            history_length: super::wire::history_length(p.history_length)?,
            include_artifacts: p.include_artifacts.unwrap_or(false),
        })
    }

    fn admits(&self, t: &Task) -> bool {
        self.context_id.as_ref().is_none_or(|c| *c == t.context_id)
            && self.status.is_none_or(|s| s == t.status.state)
            && self.after.is_none_or(|a| updated(t) > a.as_nanosecond())
    }

    /// The page of `tasks` this query asks for.
    pub fn page(&self, tasks: impl Iterator<Item = Task>) -> Result<ListTasksResponse, Error> {
        let mut matching: Vec<(Cursor, Task)> = tasks.filter(|t| self.admits(t)).map(|t| (Cursor::of(&t), t)).collect();
        matching.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let total_size = matching.len();
        let start = match &self.cursor {
            None => 0,
            Some(c) => matching.partition_point(|(k, _)| k <= c),
        };
        let end = (start + self.page_size).min(total_size);
        let next_page_token = if end < total_size { matching[end - 1].0.token() } else { String::new() };
        let tasks = matching
            .drain(start..end)
            .map(|(_, t)| {
                let mut v = serde_json::to_value(super::trim_history(t, self.history_length)).map_err(Error::Encode)?;
                if !self.include_artifacts
                    && let Some(o) = v.as_object_mut()
                {
                    o.remove("artifacts");
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(ListTasksResponse { page_size: tasks.len(), tasks, next_page_token, total_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::a2a::types::TaskStatus;

    fn task(id: &str, context: &str, state: TaskState, second: u32) -> Task {
        Task {
            id: id.to_owned(),
            context_id: context.to_owned(),
            status: TaskStatus { state, message: None, timestamp: Some(format!("2026-01-01T00:00:{second:02}Z")) },
            ..Default::default()
        }
    }

    fn query(json: serde_json::Value) -> Result<Query, Error> {
        Query::new(serde_json::from_value(json).unwrap())
    }

    fn ids(r: &ListTasksResponse) -> Vec<&str> {
        r.tasks.iter().map(|t| t["id"].as_str().unwrap_or_default()).collect()
    }

    #[test]
    fn pages_run_newest_first_and_end_with_an_empty_token() {
        let all =
            || (0..5).map(|i| task(&format!("t{i}"), if i % 2 == 0 { "even" } else { "odd" }, TaskState::Completed, i));
        let first = query(serde_json::json!({"pageSize": 2})).unwrap().page(all()).unwrap();
        assert_eq!((ids(&first), first.total_size), (vec!["t4", "t3"], 5));
        let second =
            query(serde_json::json!({"pageSize": 2, "pageToken": first.next_page_token})).unwrap().page(all()).unwrap();
        assert_eq!(ids(&second), ["t2", "t1"]);
        let last = query(serde_json::json!({"pageSize": 2, "pageToken": second.next_page_token}))
            .unwrap()
            .page(all())
            .unwrap();
        assert_eq!((ids(&last), last.next_page_token.as_str()), (vec!["t0"], ""));
        let odd = query(serde_json::json!({"contextId": "odd"})).unwrap().page(all()).unwrap();
        assert_eq!(ids(&odd), ["t3", "t1"]);
    }

    #[test]
    fn filters_by_state_and_time_and_omits_artifacts_by_default() {
        let mut done = task("done", "c", TaskState::Completed, 1);
        done.artifacts.push(Default::default());
        let all = || [done.clone(), task("asks", "c", TaskState::InputRequired, 2)].into_iter();
        let r = query(serde_json::json!({"status": "TASK_STATE_INPUT_REQUIRED"})).unwrap().page(all()).unwrap();
        assert_eq!(ids(&r), ["asks"]);
        let r =
            query(serde_json::json!({"statusTimestampAfter": "2026-01-01T00:00:01Z"})).unwrap().page(all()).unwrap();
        assert_eq!(ids(&r), ["asks"]);
        let r = query(serde_json::json!({"status": "TASK_STATE_COMPLETED"})).unwrap().page(all()).unwrap();
        assert!(r.tasks[0].get("artifacts").is_none(), "{:?}", r.tasks[0]);
        let r = query(serde_json::json!({"status": "TASK_STATE_COMPLETED", "includeArtifacts": true}))
            .unwrap()
            .page(all())
            .unwrap();
        assert_eq!(r.tasks[0]["artifacts"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn bad_params_are_refused_by_name() {
        let e = |j| query(j).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e(serde_json::json!({"pageSize": 101})).contains("pageSize"));
        assert!(e(serde_json::json!({"pageSize": -1})).contains("pageSize"));
        assert!(e(serde_json::json!({"status": "DONE"})).contains("DONE"));
        assert!(e(serde_json::json!({"historyLength": -2})).contains("historyLength"));
        assert!(e(serde_json::json!({"pageToken": "nope"})).contains("nope"));
        assert!(e(serde_json::json!({"statusTimestampAfter": "yesterday"})).contains("yesterday"));
    }
}
