//! Events the workflow engine records about Workflows (core v1, shown by `a2a describe` and
//! `kubectl describe`, locally and on a cluster alike).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::api::{Api, PostParams};

use crate::api::Workflow;

/// Records an Event about the workflow `namespace/name` (uid `uid`), without waiting for it:
/// an event that cannot be written is logged and dropped, it never holds up the engine.
pub fn record(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    warning: bool,
    reason: &str,
    message: String,
) {
    use kube::Resource;
    let about = ObjectReference {
        api_version: Some(Workflow::api_version(&()).into_owned()),
        kind: Some(Workflow::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        uid: Some(uid.to_owned()),
        ..Default::default()
    };
    post(client, namespace, about, warning, reason, message);
}

/// Records an Event about host `node` (a peer of this one: its circuit breaker), in
/// namespace `default`, without waiting for it.
pub fn record_about_node(client: &kube::Client, node: &str, warning: bool, reason: &str, message: String) {
    let about = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.to_owned()),
        ..Default::default()
    };
    post(client, "default", about, warning, reason, message);
}

/// Creates the Event about `about` in `namespace` in the background; a failure is logged at
/// debug level and dropped.
fn post(client: &kube::Client, namespace: &str, about: ObjectReference, warning: bool, reason: &str, message: String) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let event = Event {
        metadata: kube::api::ObjectMeta {
            generate_name: about.name.as_ref().map(|n| format!("{n}.")),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        involved_object: about,
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        source: Some(EventSource { component: Some("a2a-engine".into()), host: None }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

/// `task "b"`, `tasks "b", "c"` or `tasks "b", "c", "d" and 7 more`.
pub fn tasks_phrase(names: &[impl AsRef<str>]) -> String {
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("{:?}", n.as_ref())).collect();
    let more = names.len().saturating_sub(shown.len());
    let list = shown.join(", ");
    match (names.len(), more) {
        (1, _) => format!("task {list}"),
        (_, 0) => format!("tasks {list}"),
        _ => format!("tasks {list} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn task_lists_stay_short() {
        assert_eq!(super::tasks_phrase(&["b"]), "task \"b\"");
        assert_eq!(super::tasks_phrase(&["b", "c"]), "tasks \"b\", \"c\"");
        assert_eq!(super::tasks_phrase(&["a", "b", "c", "d", "e"]), "tasks \"a\", \"b\", \"c\" and 2 more");
    }
}
