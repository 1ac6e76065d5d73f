//! `kubectl auth can-i` and `kubectl auth whoami`: the access reviews a kube-apiserver answers
//! for a member of `system:masters`, which may do everything.

use crate::harness::Server;

/// `can-i` on an a2a kind, on everything, and on a core kind in another namespace: `yes`
/// (exit 0), as for a cluster administrator.
#[test]
fn kubectl_auth_can_i_says_yes_to_the_admin() {
    let s = Server::start();
    for k in s.kubectls() {
        for args in [
            &["auth", "can-i", "create", "agents"][..],
            &["auth", "can-i", "*", "*"],
            &["auth", "can-i", "delete", "secrets", "-n", "kube-system"],
            &["auth", "can-i", "get", "/healthz"],
        ] {
            assert_eq!(k.ok(args).trim(), "yes", "{args:?}");
        }
    }
}

/// `can-i --list`: the admin's rules are `*` on every resource and every non-resource URL.
#[test]
fn kubectl_auth_can_i_list_shows_every_verb_on_everything() {
    let s = Server::start();
    let out = s.kubectl().ok(&["auth", "can-i", "--list"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.iter().any(|r| r == &["*.*", "[]", "[]", "[*]"]), "{out}");
    assert!(rows.iter().any(|r| r == &["[*]", "[]", "[*]"]), "{out}");
}

/// `whoami` (table and JSON): the user name and groups of the kubeconfig's token.
#[test]
fn kubectl_auth_whoami_names_the_admin_and_its_groups() {
    let s = Server::start();
    for k in s.kubectls() {
        let out = k.ok(&["auth", "whoami"]);
        assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Username", "a2a-admin"]), "{out}");
        assert!(out.contains("[system:masters system:authenticated]"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&k.ok(&["auth", "whoami", "-o", "json"])).unwrap();
        assert_eq!(v["kind"], "SelfSubjectReview");
        assert_eq!(v["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(v["status"]["userInfo"]["username"], "a2a-admin");
        assert_eq!(v["status"]["userInfo"]["groups"], serde_json::json!(["system:masters", "system:authenticated"]));
    }
}

/// The Python client's SelfSubjectAccessReview (JSON body) is allowed; one with neither
/// attribute set is a 422 as in Kubernetes; the reviews are create-only (405 on GET).
#[test]
fn python_client_access_reviews_are_answered_and_checked() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1])
api = client.AuthorizationV1Api()
body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
    resource_attributes=client.V1ResourceAttributes(verb="list", group="a2a.dev", resource="workflows")))
print(api.create_self_subject_access_review(body).status.allowed)
try:
    api.create_self_subject_access_review(client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec()))
except ApiException as e:
    print(e.status)
try:
    client.ApiClient().call_api("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "GET",
                                auth_settings=["BearerToken"], _preload_content=False)
except ApiException as e:
    print(e.status)
"#,
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["True", "422", "405"], "{out}{err}");
}

/// Discovery lists the reviews with the verbs a kube-apiserver lists: only `create`.
#[test]
fn discovery_lists_the_reviews_as_create_only() {
    let s = Server::start();
    let out = s.kubectl().ok(&["api-resources", "--api-group=authorization.k8s.io", "-o", "wide", "--no-headers"]);
    for name in ["selfsubjectaccessreviews", "selfsubjectrulesreviews"] {
        let row = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        assert_eq!(row.split_whitespace().last(), Some("create"), "{row}");
    }
    let out = s.kubectl().ok(&["api-resources", "--api-group=authentication.k8s.io", "-o", "wide", "--no-headers"]);
    let row = out.lines().find(|l| l.starts_with("selfsubjectreviews")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().last(), Some("create"), "{row}");
}

/// Without the token a review is a 401, as for any request of an unauthenticated caller.
#[test]
fn reviews_need_the_token() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
c = client.Configuration()
config.load_kube_config(config_file=sys.argv[1], client_configuration=c)
c.api_key = {}
try:
    client.AuthenticationV1Api(client.ApiClient(c)).create_self_subject_review(client.V1SelfSubjectReview())
    print("accepted")
except ApiException as e:
    print(e.status)
"#,
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "401");
}
