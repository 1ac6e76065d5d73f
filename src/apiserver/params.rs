//! Query parameters, read and checked as the kube-apiserver reads them, so that a misspelt
//! parameter is refused instead of changing what a request does: `dryRun=true` must not
//! write, `watch=maybe` must not list, `timeoutSeconds=abc` must not wait forever.
//!
//! What is malformed (a number that does not parse, a flag that is neither true nor false)
//! is a 400 `BadRequest`, as the kube-apiserver answers when it cannot decode the options;
//! what decodes but is not allowed (`dryRun` other than `All`, an unknown
//! `resourceVersionMatch`, a `propagationPolicy` other than the three) is a 422 `Invalid` on
//! the options kind (`CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: ...`),
//! as the kube-apiserver's option validation answers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::status::ApiError;

/// One field error of an options object, as apimachinery's `field.Error` renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueNotSupported`, `FieldValueInvalid`, `FieldValueForbidden`.
    pub reason: &'static str,
    pub field: String,
    /// The message without the field path (`Unsupported value: "x": supported values: ...`).
    pub message: String,
}

impl Cause {
    /// A value not among the supported ones; `value` is already rendered as Go prints it.
    pub fn not_supported(field: &str, value: String, supported: &[&str]) -> Cause {
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            message: format!("Unsupported value: {value}: supported values: {}", supported.join(", ")),
        }
    }

    pub fn invalid(field: &str, value: String, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause { reason: "FieldValueForbidden", field: field.to_string(), message: format!("Forbidden: {detail}") }
    }
}

/// The 422 the kube-apiserver answers for options that fail validation:
/// `DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: ...`.
pub fn invalid_options(kind: &str, causes: &[Cause]) -> ApiError {
    let rendered: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    let summary = if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
    let mut e = ApiError::new(422, "Invalid", format!("{kind}.meta.k8s.io \"\" is invalid: {summary}"));
    e.details = Some(json!({
        "group": "meta.k8s.io",
        "kind": kind,
        "causes": causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect::<Vec<Value>>(),
    }));
    e
}

/// The 504 the kube-apiserver answers for a resourceVersion newer than any it has.
pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"));
    e.details = Some(json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }));
    e
}

/// A Go `[]string` as `%#v` prints it: `[]string{"true"}`.
pub fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Checks `dryRun` values: only `All` is defined.
pub fn check_dry_run(values: &[String]) -> Result<bool, Cause> {
    if values.iter().all(|v| v == "All") {
        Ok(!values.is_empty())
    } else {
        Err(Cause::not_supported("dryRun", go_strings(values), &["All"]))
    }
}

/// The `dryRun` parameter of a create, update or patch (`kind` is `CreateOptions`,
/// `UpdateOptions` or `PatchOptions`); `true` when the write is only to be tried.
pub fn dry_run(q: &HashMap<String, String>, kind: &str) -> Result<bool, ApiError> {
    match q.get("dryRun") {
        None => Ok(false),
        Some(v) => check_dry_run(std::slice::from_ref(v)).map_err(|c| invalid_options(kind, &[c])),
    }
}

/// The `fieldValidation` parameter of a write: one of the values the kube-apiserver defines
/// (a2a validates strictly whatever is asked; the value only has to be one of them).
pub fn check_field_validation(q: &HashMap<String, String>, kind: &str) -> Result<(), ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("" | "Ignore" | "Warn" | "Strict") => Ok(()),
        Some(other) => Err(invalid_options(
            kind,
            &[Cause::not_supported("fieldValidation", format!("{other:?}"), &["", "Ignore", "Strict", "Warn"])],
        )),
    }
}

/// Checks the options of a create, update or patch (`dryRun`, `fieldValidation`); deletes
/// check theirs as they read them ([`super::delete::DeleteOptions::parse`]).
pub fn check_write_options(verb: &str, q: &HashMap<String, String>) -> Result<(), ApiError> {
    let kind = match verb {
        "create" => "CreateOptions",
        "update" => "UpdateOptions",
        "patch" => "PatchOptions",
        _ => return Ok(()),
    };
    dry_run(q, kind)?;
    check_field_validation(q, kind)
}

/// A boolean parameter. The kube-apiserver reads anything but `false` and `0` as true, so
/// `watch=maybe` would start a watch; here only the spellings of true and false are taken
/// (`true`, `false`, `1`, `0`, `t`, `f`, in any case, and an empty value as true) and
/// anything else is a 400.
pub fn flag(q: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    let Some(v) = q.get(name) else { return Ok(false) };
    match v.to_ascii_lowercase().as_str() {
        "" | "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!("invalid value for {name}: {v:?}: expected true or false"))),
    }
}

/// An integer parameter; a value that does not parse is a 400.
pub fn integer(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}: expected an integer"))),
    }
}

/// How a list's `resourceVersion` is to be matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionMatch {
    /// Unset, or `NotOlderThan`: the latest state, which is never older than any version.
    NotOlderThan,
    /// `Exact`: the state at that version (from the history).
    Exact,
}

/// The parameters of a list or a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOptions {
    /// `resourceVersion` (empty and absent alike are `None`).
    pub resource_version: Option<u64>,
    pub version_match: VersionMatch,
    /// `timeoutSeconds` (a watch ends after it).
    pub timeout: Option<Duration>,
    pub allow_bookmarks: bool,
    /// `sendInitialEvents` (watch only): with `true`, the current state as ADDED events, then
    /// a bookmark annotated `k8s.io/initial-events-end`; with `false`, no initial events.
    pub send_initial_events: Option<bool>,
}

impl ListOptions {
    /// Reads and checks the parameters of a list (`watch` false) or a watch.
    pub fn parse(q: &HashMap<String, String>, watch: bool) -> Result<ListOptions, ApiError> {
        let raw_version = q.get("resourceVersion").map(String::as_str).unwrap_or_default();
        let resource_version = match raw_version {
            "" => None,
            s => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}: expected a number")))?,
            ),
        };
        let timeout = match integer(q, "timeoutSeconds")? {
            None => None,
            Some(s) if s < 0 => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for timeoutSeconds: \"{s}\": expected a non-negative integer"
                )));
            }
            Some(s) => Some(Duration::from_secs(s.unsigned_abs())),
        };
        let allow_bookmarks = flag(q, "allowWatchBookmarks")?;
        let mut causes = Vec::new();
        let send_initial_events =
            if q.contains_key("sendInitialEvents") { Some(flag(q, "sendInitialEvents")?) } else { None };
        let raw_match = q.get("resourceVersionMatch").map(String::as_str).unwrap_or_default();
        let continues = q.get("continue").is_some_and(|c| !c.is_empty());
        // As the kube-apiserver's ValidateListOptions, for lists and for watches.
        let version_match = if watch {
            if send_initial_events.is_some() {
                if raw_match != "NotOlderThan" {
                    causes.push(Cause::forbidden(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    ));
                }
                if send_initial_events == Some(true) && !allow_bookmarks {
                    causes.push(Cause::forbidden(
                        "allowWatchBookmarks",
                        "sendInitialEvents requires setting allowWatchBookmarks to true",
                    ));
                }
            }
            if !raw_match.is_empty() {
                if send_initial_events.is_none() {
                    causes.push(Cause::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if raw_match != "NotOlderThan" {
                    causes.push(Cause::not_supported(
                        "resourceVersionMatch",
                        format!("{raw_match:?}"),
                        &["NotOlderThan"],
                    ));
                }
                if continues {
                    causes.push(Cause::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
            VersionMatch::NotOlderThan
        } else {
            if send_initial_events.is_some() {
                causes.push(Cause::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
            }
            match raw_match {
                "" => VersionMatch::NotOlderThan,
                m => {
                    if raw_version.is_empty() {
                        causes.push(Cause::forbidden(
                            "resourceVersionMatch",
                            "resourceVersionMatch is forbidden unless resourceVersion is provided",
                        ));
                    }
                    if continues {
                        causes.push(Cause::forbidden(
                            "resourceVersionMatch",
                            "resourceVersionMatch is forbidden when continue is provided",
                        ));
                    }
                    match m {
                        "Exact" if raw_version == "0" => {
                            causes.push(Cause::forbidden(
                                "resourceVersionMatch",
                                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                            ));
                            VersionMatch::Exact
                        }
                        "Exact" => VersionMatch::Exact,
                        "NotOlderThan" => VersionMatch::NotOlderThan,
                        other => {
                            causes.push(Cause::not_supported(
                                "resourceVersionMatch",
                                format!("{other:?}"),
                                &["Exact", "NotOlderThan", ""],
                            ));
                            VersionMatch::NotOlderThan
                        }
                    }
                }
            }
        };
        if !causes.is_empty() {
            return Err(invalid_options("ListOptions", &causes));
        }
        Ok(ListOptions { resource_version, version_match, timeout, allow_bookmarks, send_initial_events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_all_is_a_dry_run_and_anything_else_is_refused_as_the_kube_apiserver_words_it() {
        assert!(!dry_run(&q(&[]), "CreateOptions").unwrap());
        assert!(dry_run(&q(&[("dryRun", "All")]), "CreateOptions").unwrap());
        for bad in ["true", "all", "Bogus", ""] {
            let e = dry_run(&q(&[("dryRun", bad)]), "DeleteOptions").unwrap_err();
            assert_eq!(e.code, 422);
            assert_eq!(
                e.message,
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{{{bad:?}}}: \
                     supported values: \"All\""
                )
            );
            let details = e.details.unwrap();
            assert_eq!(details["causes"][0]["reason"], "FieldValueNotSupported");
            assert_eq!(details["causes"][0]["field"], "dryRun");
        }
    }

    #[test]
    fn flags_are_true_or_false_and_nothing_else() {
        assert!(flag(&q(&[("watch", "true")]), "watch").unwrap());
        assert!(flag(&q(&[("watch", "1")]), "watch").unwrap());
        assert!(!flag(&q(&[("watch", "False")]), "watch").unwrap());
        assert!(!flag(&q(&[]), "watch").unwrap());
        let e = flag(&q(&[("watch", "maybe")]), "watch").unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert!(e.message.contains("\"maybe\""), "{}", e.message);
    }

    #[test]
    fn list_options_refuse_what_does_not_parse_or_is_not_defined() {
        let bad = |pairs: &[(&str, &str)], watch: bool| ListOptions::parse(&q(pairs), watch).unwrap_err();
        assert_eq!(bad(&[("resourceVersion", "abc")], false).code, 400);
        assert_eq!(bad(&[("timeoutSeconds", "abc")], true).code, 400);
        assert_eq!(bad(&[("timeoutSeconds", "-5")], true).code, 400);
        let e = bad(&[("resourceVersion", "5"), ("resourceVersionMatch", "Bogus")], false);
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Bogus\": \
             supported values: \"Exact\", \"NotOlderThan\", \"\""
        );
        // A watch list needs NotOlderThan and bookmarks; a list takes no sendInitialEvents.
        let e = bad(&[("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan")], true);
        assert_eq!(e.code, 422);
        assert!(e.message.contains("allowWatchBookmarks: Forbidden"), "{}", e.message);
        let e = bad(&[("sendInitialEvents", "true"), ("allowWatchBookmarks", "true")], true);
        assert!(e.message.contains("requires setting resourceVersionMatch to NotOlderThan"), "{}", e.message);
        let e = bad(&[("sendInitialEvents", "true")], false);
        assert!(e.message.contains("sendInitialEvents is forbidden for list"), "{}", e.message);
        let ok = ListOptions::parse(
            &q(&[
                ("sendInitialEvents", "true"),
                ("resourceVersionMatch", "NotOlderThan"),
                ("allowWatchBookmarks", "1"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(ok.send_initial_events, Some(true));
        let e = bad(&[("resourceVersionMatch", "Exact")], false);
        assert!(e.message.contains("forbidden unless resourceVersion is provided"), "{}", e.message);
        let ok = ListOptions::parse(
            &q(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact"), ("timeoutSeconds", "30")]),
            false,
        )
        .unwrap();
        assert_eq!(ok.resource_version, Some(7));
        assert_eq!(ok.version_match, VersionMatch::Exact);
        assert_eq!(ok.timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_version_from_the_future_is_the_kube_apiservers_504() {
        let e = too_large_resource_version(99, 7);
        assert_eq!((e.code, e.reason), (504, "Timeout"));
        assert_eq!(e.message, "Too large resource version: 99, current: 7");
        assert_eq!(e.details.unwrap()["causes"][0]["reason"], "ResourceVersionTooLarge");
    }
}
