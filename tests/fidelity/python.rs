//! The official Python client as programs use it: CustomObjectsApi CRUD, lists with
//! selectors and paging, patches of every type, the status subresource, and Events through
//! CoreV1Api and EventsV1Api.

use crate::harness::Server;
use crate::objects::python;

/// Create, get, list, replace and delete of each a2a kind (the budget cluster-scoped);
/// create of an existing name is 409 AlreadyExists, get of a missing one 404 NotFound, a
/// replace with an old resourceVersion 409 Conflict, all as `metav1.Status` bodies.
#[test]
fn custom_objects_crud() {
    let s = Server::start();
    python(
        &s,
        r#"
WF = ("a2a.dev", "v1alpha1", "default", "workflows")
RB = ("a2a.dev", "v1alpha1", "resourcebudgets")
wf = {"apiVersion": "a2a.dev/v1alpha1", "kind": "Workflow", "metadata": {"name": "flow"},
      "spec": {"tasks": [{"name": "draft", "agent": "echo", "message": "hello"}]}}
rb = {"apiVersion": "a2a.dev/v1alpha1", "kind": "ResourceBudget", "metadata": {"name": "pool"},
      "spec": {"parent": "host", "limits": {"memory": "1Gi"}}}
a = co.create_namespaced_custom_object(*AG, agent("echo"))
assert a["metadata"]["uid"] and a["metadata"]["resourceVersion"] and a["metadata"]["generation"] == 1, a
co.create_namespaced_custom_object(*WF, wf)
co.create_cluster_custom_object(*RB, rb)
e = refused(co.create_namespaced_custom_object, *AG, agent("echo"))
assert e.status == 409 and body(e)["reason"] == "AlreadyExists", body(e)
assert body(e)["message"] == 'agents.a2a.dev "echo" already exists', body(e)
e = refused(co.get_namespaced_custom_object, *AG, "ghost")
assert e.status == 404 and body(e)["reason"] == "NotFound" and body(e)["details"]["name"] == "ghost", body(e)
lst = co.list_namespaced_custom_object(*AG)
assert lst["kind"] == "AgentList" and lst["apiVersion"] == "a2a.dev/v1alpha1" and lst["metadata"]["resourceVersion"], lst
assert [i["metadata"]["name"] for i in lst["items"]] == ["echo"]
assert [i["metadata"]["name"] for i in co.list_cluster_custom_object("a2a.dev", "v1alpha1", "agents")["items"]] == ["echo"]
assert [i["metadata"]["name"] for i in co.list_cluster_custom_object(*RB)["items"]] == ["pool"]
got = co.get_namespaced_custom_object(*AG, "echo")
got["spec"]["replicas"] = 2
new = co.replace_namespaced_custom_object(*AG, "echo", got)
assert new["spec"]["replicas"] == 2 and new["metadata"]["generation"] == 2, new
assert int(new["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
e = refused(co.replace_namespaced_custom_object, *AG, "echo", got)
assert e.status == 409 and body(e)["reason"] == "Conflict", body(e)
assert "the object has been modified" in body(e)["message"], body(e)
b = co.get_cluster_custom_object(*RB, "pool")
b["spec"]["limits"]["memory"] = "2Gi"
assert co.replace_cluster_custom_object(*RB, "pool", b)["spec"]["limits"]["memory"] == "2Gi"
st = co.delete_namespaced_custom_object(*AG, "echo")
assert st.get("kind") in ("Status", "Agent"), st
co.delete_namespaced_custom_object(*WF, "flow")
co.delete_cluster_custom_object(*RB, "pool")
assert co.list_namespaced_custom_object(*AG)["items"] == []
e = refused(co.delete_namespaced_custom_object, *AG, "echo")
assert e.status == 404, e
"#,
    );
}

/// Lists with label selectors (equality, set-based, existence, negation) and field
/// selectors (`metadata.name`, `metadata.namespace`), and an unsupported field selector
/// refused with the kube-apiserver's 400 ("field label not supported").
#[test]
fn list_with_label_and_field_selectors() {
    let s = Server::start();
    python(
        &s,
        r#"
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
for n, labels, ns in (("a", {"team": "x", "tier": "front"}, "default"), ("b", {"team": "z"}, "default"),
                      ("c", {}, "default"), ("d", {"team": "x"}, "other")):
    co.create_namespaced_custom_object("a2a.dev", "v1alpha1", ns, "agents", agent(n, labels, ns))
def names(**kw):
    return sorted(i["metadata"]["name"] for i in co.list_cluster_custom_object("a2a.dev", "v1alpha1", "agents", **kw)["items"])
assert names(label_selector="team=x") == ["a", "d"]
assert names(label_selector="team!=x") == ["b", "c"]
assert names(label_selector="team in (x,z),tier notin (back)") == ["a", "b", "d"]
assert names(label_selector="team") == ["a", "b", "d"]
assert names(label_selector="!team") == ["c"]
assert names(label_selector="team=x,tier=front") == ["a"]
assert names(field_selector="metadata.name=b") == ["b"]
assert names(field_selector="metadata.namespace=other") == ["d"]
assert names(field_selector="metadata.namespace!=other,metadata.name!=a") == ["b", "c"]
assert names(label_selector="team=x", field_selector="metadata.namespace=default") == ["a"]
e = refused(co.list_cluster_custom_object, "a2a.dev", "v1alpha1", "agents", field_selector="spec.nothing=1")
assert e.status == 400 and "field label not supported" in body(e)["message"], body(e)
e = refused(co.list_cluster_custom_object, "a2a.dev", "v1alpha1", "agents", label_selector="team==x==y")
assert e.status == 400, body(e)
cms = core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=other")
assert cms.items == [], cms
"#,
    );
}

/// Paging with `limit` and `_continue`: every object once, in order, each page with a
/// continue token but the last, `remainingItemCount` counting what is left; a page seen
/// after later writes is still the first page's snapshot; a bad token is a 400.
#[test]
fn list_paging_with_limit_and_continue() {
    let s = Server::start();
    python(
        &s,
        r#"
for i in range(7):
    co.create_namespaced_custom_object(*AG, agent("a%d" % i))
seen, token, pages = [], None, 0
while True:
    kw = {"limit": 3}
    if token:
        kw["_continue"] = token
    page = co.list_namespaced_custom_object(*AG, **kw)
    pages += 1
    seen += [i["metadata"]["name"] for i in page["items"]]
    token = page["metadata"].get("continue")
    if pages == 1:
        assert page["metadata"]["remainingItemCount"] == 4, page["metadata"]
        co.create_namespaced_custom_object(*AG, agent("late"))
    if not token:
        break
assert pages == 3 and seen == ["a%d" % i for i in range(7)], (pages, seen)
assert len(co.list_namespaced_custom_object(*AG)["items"]) == 8
e = refused(co.list_namespaced_custom_object, *AG, limit=3, _continue="not-a-token")
assert e.status == 400, body(e)
# The same through the typed client for ConfigMaps.
for i in range(5):
    core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c%d" % i)))
p1 = core.list_namespaced_config_map("default", limit=2)
p2 = core.list_namespaced_config_map("default", limit=2, _continue=p1.metadata._continue)
p3 = core.list_namespaced_config_map("default", limit=2, _continue=p2.metadata._continue)
assert [c.metadata.name for c in p1.items + p2.items + p3.items] == ["c%d" % i for i in range(5)]
assert p3.metadata._continue is None
"#,
    );
}

/// Patches through the Python client: merge (CustomObjectsApi's default), JSON patch (a list
/// body, `application/json-patch+json`), and server-side apply (`application/apply-patch+yaml`
/// with a field manager), each answered with the patched object; an apply by another
/// manager of an owned field conflicts (409) until forced.
#[test]
fn patch_merge_json_and_apply() {
    let s = Server::start();
    python(
        &s,
        r#"
co.create_namespaced_custom_object(*AG, agent("echo", {"app": "x"}))
out = co.patch_namespaced_custom_object(*AG, "echo", {"metadata": {"labels": {"app": None, "tier": "a"}}, "spec": {"replicas": 2}})
assert out["metadata"]["labels"] == {"tier": "a"} and out["spec"]["replicas"] == 2, out
def patch(ctype, body, **query):
    path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents/echo"
    return co.api_client.call_api(path, "PATCH", query_params=list(query.items()), header_params={"Content-Type": ctype, "Accept": "application/json"},
                                  body=body, response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True)
out = patch("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 3},
                                             {"op": "add", "path": "/metadata/annotations", "value": {"n": "1"}}])
assert out["spec"]["replicas"] == 3 and out["metadata"]["annotations"] == {"n": "1"}, out
applied = {"apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "echo", "namespace": "default"},
           "spec": {"url": "http://127.0.0.1:9/", "replicas": 4}}
out = patch("application/apply-patch+yaml", applied, fieldManager="deployer", force="true")
assert out["spec"]["replicas"] == 4, out
managers = {m["manager"]: m["operation"] for m in out["metadata"]["managedFields"]}
assert managers.get("deployer") == "Apply", managers
applied["spec"]["replicas"] = 5
e = refused(patch, "application/apply-patch+yaml", applied, fieldManager="other")
assert e.status == 409 and body(e)["reason"] == "Conflict" and "deployer" in body(e)["message"], body(e)
out = patch("application/apply-patch+yaml", applied, fieldManager="other", force="true")
assert out["spec"]["replicas"] == 5
# Apply creates what is missing (201).
applied["metadata"]["name"] = "fresh"
path = "/apis/a2a.dev/v1alpha1/namespaces/default/agents/fresh"
_, code, _ = co.api_client.call_api(path, "PATCH", query_params=[("fieldManager", "deployer")], header_params={"Content-Type": "application/apply-patch+yaml"},
                                     body=applied, response_type="object", auth_settings=["BearerToken"])
assert code == 201, code
# A ConfigMap through CoreV1Api: the typed client's merge patch of a dict body.
core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1"}))
e = None
try:
    core.patch_namespaced_config_map("c", "default", [{"op": "add", "path": "/data/b", "value": "2"}])
except ApiException as err:
    e = err
assert e is None, e
assert core.read_namespaced_config_map("c", "default").data == {"a": "1", "b": "2"}
"#,
    );
}

/// The status subresource: `get_namespaced_custom_object_status` answers the object, a
/// merge patch of `/status` changes the status and not the spec (nor the generation), and a
/// patch of the main resource leaves status alone, as for a CRD with a status subresource.
#[test]
fn status_subresource_get_and_patch() {
    let s = Server::start();
    python(
        &s,
        r#"
co.create_namespaced_custom_object(*AG, agent("echo"))
got = co.get_namespaced_custom_object_status(*AG, "echo")
assert got["metadata"]["name"] == "echo" and got["kind"] == "Agent", got
out = co.patch_namespaced_custom_object_status(*AG, "echo", {"status": {"phase": "Degraded", "observedGeneration": 1}, "spec": {"replicas": 9}})
assert out["status"]["phase"] == "Degraded", out
assert out["spec"].get("replicas") is None and out["metadata"]["generation"] == 1, out
out = co.patch_namespaced_custom_object(*AG, "echo", {"status": {"phase": "Failed"}, "spec": {"replicas": 2}})
assert out["status"]["phase"] == "Degraded" and out["spec"]["replicas"] == 2 and out["metadata"]["generation"] == 2, out
full = co.get_namespaced_custom_object_status(*AG, "echo")
full["status"]["phase"] = "Stopped"
out = co.replace_namespaced_custom_object_status(*AG, "echo", full)
assert out["status"]["phase"] == "Stopped" and out["spec"]["replicas"] == 2, out
"#,
    );
}

/// What the two Events checks share: an Agent, and `ref` to it for events. The core Events
/// carry `eventTime` (and the reporting fields the kube-apiserver then asks for): without it
/// the kube-apiserver shows them through events.k8s.io/v1 with `"eventTime": null`, which the
/// Python client's EventsV1Event refuses to read.
const EVENTS: &str = r#"
import datetime
a = co.create_namespaced_custom_object(*AG, agent("echo"))
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
ref = client.V1ObjectReference(api_version="a2a.dev/v1alpha1", kind="Agent", name="echo", namespace="default", uid=a["metadata"]["uid"])
sel = "involvedObject.name=echo,involvedObject.namespace=default,involvedObject.kind=Agent,involvedObject.uid=" + a["metadata"]["uid"]
ev1 = client.EventsV1Api()
def core_event(name, reason):
    core.create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name), involved_object=ref, reason=reason, message="from core/v1",
        type="Normal", count=1, first_timestamp=now, last_timestamp=now, source=client.V1EventSource(component="fidelity"),
        event_time=datetime.datetime.now(datetime.timezone.utc), action="Test", reporting_component="example.com/fidelity",
        reporting_instance="fidelity-1"))
def v1_event(name, reason):
    ev1.create_namespaced_event("default", client.EventsV1Event(
        metadata=client.V1ObjectMeta(name=name), event_time=datetime.datetime.now(datetime.timezone.utc), action="Test",
        reason=reason, note="from events/v1", type="Warning", reporting_controller="example.com/fidelity",
        reporting_instance="fidelity-1", regarding=ref))
"#;

/// Events through CoreV1Api (listed with the field selectors `kubectl describe` uses) and
/// through EventsV1Api (events.k8s.io/v1, listed by `regarding`), each read back as written
/// and deleted.
#[test]
fn events_through_core_v1_and_events_v1() {
    let s = Server::start();
    python(
        &s,
        &format!(
            "{EVENTS}{}",
            r#"
core_event("echo.1", "Tested")
core_event("other.1", "Other")
listed = core.list_namespaced_event("default", field_selector=sel + ",reason=Tested").items
assert [(e.reason, e.message, e.source.component, e.count) for e in listed] == [("Tested", "from core/v1", "fidelity", 1)], listed
v1_event("echo.2", "Noted")
listed = ev1.list_namespaced_event("default", field_selector="regarding.name=echo,regarding.kind=Agent").items
uid = a["metadata"]["uid"]
assert sorted((e.reason, e.note, e.regarding.uid) for e in listed) == [
    ("Noted", "from events/v1", uid), ("Other", "from core/v1", uid), ("Tested", "from core/v1", uid)], listed
ev1.delete_namespaced_event("echo.2", "default")
core.delete_namespaced_event("echo.1", "default")
core.delete_namespaced_event("other.1", "default")
assert core.list_namespaced_event("default", field_selector=sel).items == []
"#
        ),
    );
}

/// One store for both Events APIs, as in Kubernetes: an event recorded through
/// events.k8s.io/v1 (as kube-runtime's and client-go's new recorders write them) is listed
/// by CoreV1Api (which `kubectl describe` reads), `note` as `message` and `regarding` as
/// `involvedObject`, and a core/v1 event is listed by EventsV1Api.
#[test]
fn events_written_through_one_api_are_read_through_the_other() {
    let s = Server::start();
    python(
        &s,
        &format!(
            "{EVENTS}{}",
            r#"
core_event("echo.1", "Tested")
v1_event("echo.2", "Noted")
listed = core.list_namespaced_event("default", field_selector=sel).items
assert sorted(e.reason for e in listed) == ["Noted", "Tested"], [e.metadata.name for e in listed]
noted = [e for e in listed if e.reason == "Noted"][0]
assert noted.message == "from events/v1" and noted.involved_object.name == "echo", noted
v1 = ev1.list_namespaced_event("default").items
assert sorted(e.metadata.name for e in v1) == ["echo.1", "echo.2"], [e.metadata.name for e in v1]
tested = [e for e in v1 if e.reason == "Tested"][0]
assert tested.note == "from core/v1" and tested.regarding.name == "echo", tested
"#
        ),
    );
}
