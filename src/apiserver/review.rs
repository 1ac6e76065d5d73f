//! The caller's own access, as `kubectl auth can-i`, `kubectl auth whoami` and tools' permission
//! checks ask for it: `SelfSubjectAccessReview` and `SelfSubjectRulesReview`
//! (`authorization.k8s.io/v1`) and `SelfSubjectReview` (`authentication.k8s.io/v1`), create
//! only, answered from the identity the request authenticated as.
//!
//! The answers come from the decision every request goes through ([`super::authz`]): the
//! administrator ([`super::ADMIN_USER`], holder of the token in `$A2A_HOME/kubeconfig`) is in
//! `system:masters` and may do everything; a named user ([`super::users`]) may do what its role
//! allows. Callers without a valid token never get here (401).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::authz::{self, Subject};
use super::status::{ApiError, json_response};

/// The groups the administrator belongs to, as `kubectl auth whoami` shows them.
pub const ADMIN_GROUPS: [&str; 2] = super::authz::MASTERS_GROUPS;

/// The served review kinds: (group, version, plural, kind).
pub const REVIEWS: [(&str, &str, &str, &str); 3] = [
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview"),
    ("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview"),
];

/// Discovery's entry for each review of `group/version`.
pub fn discovery(group: &str, version: &str) -> Vec<Value> {
    REVIEWS
        .iter()
        .filter(|(g, v, _, _)| *g == group && *v == version)
        .map(|(_, _, plural, kind)| {
            json!({
                "name": plural,
                "singularName": plural.trim_end_matches('s'),
                "namespaced": false,
                "kind": kind,
                "verbs": ["create"],
            })
        })
        .collect()
}

/// The `spec` of the review in the body (JSON, YAML or protobuf).
fn spec_of(kind: &str, headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if super::protobuf::body_is_protobuf(headers) {
        let Some(review) = super::computed::RESOURCES.iter().find(|r| r.kind == kind) else {
            return Err(ApiError::bad_request(format!("{kind} cannot be read from protobuf")));
        };
        let object = super::protobuf::decode(review, body)?;
        return Ok(object.get("spec").cloned().unwrap_or_else(|| json!({})));
    }
    if body.is_empty() {
        return Ok(json!({}));
    }
    let yaml = super::handlers::body_is_yaml(headers)?;
    let object = super::handlers::parse_body(body, yaml)?;
    if let Some(k) = object.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        )));
    }
    Ok(object.get("spec").cloned().unwrap_or_else(|| json!({})))
}

fn answer(kind: &str, api_version: &str, spec: Option<Value>, status: Value) -> Response {
    let mut out = Map::new();
    out.insert("kind".into(), json!(kind));
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("metadata".into(), json!({"creationTimestamp": null}));
    if let Some(spec) = spec {
        out.insert("spec".into(), spec);
    }
    out.insert("status".into(), status);
    json_response(StatusCode::CREATED, &Value::Object(out))
}

/// `POST /apis/GROUP/v1/PLURAL` for the reviews; anything else on their paths is refused as
/// the kube-apiserver refuses it (405: the reviews are create-only).
pub fn serve(
    subject: &Subject,
    method: &Method,
    plural: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({plural} are create-only)"
        )));
    }
    match plural {
        "selfsubjectaccessreviews" => {
            let kind = "SelfSubjectAccessReview";
            let spec = spec_of(kind, headers, body)?;
            let has = |f: &str| spec.get(f).is_some_and(|v| !v.is_null());
            match (has("resourceAttributes"), has("nonResourceAttributes")) {
                (true, true) => {
                    return Err(invalid(
                        kind,
                        "spec.nonResourceAttributes: Invalid value: \"\": cannot be specified in combination with \
                         resourceAttributes",
                    ));
                }
                (false, false) => {
                    return Err(invalid(
                        kind,
                        "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or \
                         resourceAttributes must be specified",
                    ));
                }
                _ => {}
            }
            let allowed = access_allowed(subject, &spec);
            // RBAC gives no reason for a request no rule allows: kubectl then prints a bare "no".
            let status = json!({"allowed": allowed});
            Ok(answer(kind, "authorization.k8s.io/v1", Some(spec), status))
        }
        "selfsubjectrulesreviews" => {
            let kind = "SelfSubjectRulesReview";
            let spec = spec_of(kind, headers, body)?;
            let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or_default();
            let status = authz::rules(subject, namespace);
            Ok(answer(kind, "authorization.k8s.io/v1", Some(spec), status))
        }
        _ => {
            let user = json!({"username": subject.user, "groups": subject.groups});
            Ok(answer("SelfSubjectReview", "authentication.k8s.io/v1", None, json!({"userInfo": user})))
        }
    }
}

/// The attributes a SelfSubjectAccessReview asks about.
fn access_request(spec: &Value) -> authz::Request {
    let field = |obj: &str, f: &str| spec.pointer(&format!("/{obj}/{f}")).and_then(Value::as_str).unwrap_or_default();
    if spec.get("nonResourceAttributes").is_some_and(|v| !v.is_null()) {
        return authz::Request::non_resource(
            field("nonResourceAttributes", "verb"),
            field("nonResourceAttributes", "path"),
        );
    }
    let a = |f: &str| field("resourceAttributes", f);
    let (group, resource, namespace, name) = (a("group"), a("resource"), a("namespace"), a("name"));
    // A namespace is in itself (as for requests).
    let namespace = if group.is_empty() && resource == "namespaces" && !name.is_empty() { name } else { namespace };
    authz::Request::resource(a("verb"), group, resource, namespace, name).subresource(a("subresource"))
}

/// Whether a SelfSubjectAccessReview is allowed; the verb `*` is every verb.
fn access_allowed(subject: &Subject, spec: &Value) -> bool {
    match access_request(spec) {
        authz::Request::Resource { verb, group, resource, subresource, namespace, name } if verb == "*" => {
            authz::ALL_VERBS.iter().all(|v| {
                let r = authz::Request::resource(v, &group, &resource, &namespace, &name).subresource(&subresource);
                authz::authorize(subject, &r)
            })
        }
        request => authz::authorize(subject, &request),
    }
}

fn invalid(kind: &str, cause: &str) -> ApiError {
    let mut e = ApiError::new(422, "Invalid", format!("{kind}.authorization.k8s.io \"\" is invalid: {cause}"));
    e.details = Some(json!({"group": "authorization.k8s.io", "kind": kind}));
    e
}

/// Whether a path is one of the reviews: answers its plural.
pub fn plural_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["apis", group, version, plural] = segs.as_slice() else { return None };
    REVIEWS.iter().find(|(g, v, p, _)| g == group && v == version && p == plural).map(|(_, _, p, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_TYPE, "application/json".parse().unwrap());
        h
    }

    #[test]
    fn an_access_review_is_allowed_and_echoes_its_spec() {
        let body = Bytes::from(
            r#"{"kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"create","resource":"agents"}}}"#,
        );
        let admin = Subject::masters("a2a-admin");
        let r = serve(&admin, &Method::POST, "selfsubjectaccessreviews", &json_headers(), &body).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let e =
            serve(&admin, &Method::POST, "selfsubjectaccessreviews", &json_headers(), &Bytes::from("{}")).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        let e = serve(&admin, &Method::GET, "selfsubjectreviews", &json_headers(), &Bytes::new()).unwrap_err();
        assert_eq!(e.code, 405);
    }

    #[test]
    fn only_the_review_paths_are_reviews() {
        assert_eq!(
            plural_of("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some("selfsubjectaccessreviews")
        );
        assert_eq!(plural_of("/apis/authentication.k8s.io/v1/selfsubjectreviews"), Some("selfsubjectreviews"));
        assert_eq!(plural_of("/apis/authorization.k8s.io/v1/subjectaccessreviews"), None);
        assert_eq!(discovery("authorization.k8s.io", "v1").len(), 2);
    }
}
