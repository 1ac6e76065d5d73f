//! Who may do what: the role table of named users (`admin`, `edit`, `view`, each either in one
//! namespace or in all of them), modelled on Kubernetes' default ClusterRoles, and the one
//! decision every request goes through ([`authorize`]) before any handler runs.
//!
//! The decision knows nothing of HTTP: it takes a [`Subject`] (who authenticated) and a
//! [`Request`] (the Kubernetes request attributes: verb, API group, resource, subresource,
//! namespace, name, or a non-resource path), so the API server, the access reviews
//! ([`super::review`]) and any other front door (a host's A2A gateway, which maps a routed call
//! to such attributes) share it.
//!
//! ```
//! use a2a::apiserver::authz::{Grant, Request, Role, Subject, authorize};
//! let bob = Subject::user("bob", Grant::role(Role::Edit, Some("team-a")));
//! let create = |ns: &str| Request::resource("create", "a2a.dev", "agents", ns, "");
//! assert!(authorize(&bob, &create("team-a")));
//! assert!(!authorize(&bob, &create("team-b")));
//! ```

use std::fmt;

use serde_json::{Value, json};

use super::status::ApiError;

/// The verbs a read is made of.
pub const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// Every verb of a resource.
pub const ALL_VERBS: [&str; 8] = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

/// The API group of the users API ([`super::users`]).
pub const USERS_GROUP: &str = "auth.a2a.dev";

/// The groups of the administrator (the token in `$A2A_HOME/token`).
pub const MASTERS_GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];

/// A named user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything (in its namespace when bound to one).
    Admin,
    /// Reads, and writes of namespaced resources (Secrets included).
    Edit,
    /// Reads of everything but Secrets.
    View,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["admin", "edit", "view"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Edit => "edit",
            Role::View => "view",
        }
    }

    /// Parses `admin`, `edit` or `view`.
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "edit" => Ok(Role::Edit),
            "view" => Ok(Role::View),
            other => Err(format!("unknown role {other:?}: a role is one of admin, edit, view")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a subject was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `system:masters`: everything, no table consulted.
    Masters,
    /// A role, in one namespace (as a Kubernetes RoleBinding) or in all (a ClusterRoleBinding).
    Role { role: Role, namespace: Option<String> },
    /// Another host of the cluster (a client certificate of the cluster's CA): the fixed
    /// [`node_may`] role.
    Node,
}

impl Grant {
    pub fn role(role: Role, namespace: Option<&str>) -> Grant {
        Grant::Role { role, namespace: namespace.map(str::to_string) }
    }
}

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub user: String,
    pub groups: Vec<String>,
    pub grant: Grant,
}

impl Subject {
    /// The administrator.
    pub fn masters(user: &str) -> Subject {
        Subject { user: user.to_string(), groups: MASTERS_GROUPS.map(str::to_string).to_vec(), grant: Grant::Masters }
    }

    /// A joined host: `system:node:NAME` in `system:nodes`, as a Kubernetes kubelet.
    pub fn node(name: &str) -> Subject {
        Subject {
            user: format!("{}{name}", super::join::NODE_USER_PREFIX),
            groups: vec![super::join::NODES_GROUP.to_string(), "system:authenticated".to_string()],
            grant: Grant::Node,
        }
    }

    /// A named user: in `system:authenticated` only (its role is not a group).
    pub fn user(name: &str, grant: Grant) -> Subject {
        Subject { user: name.to_string(), groups: vec!["system:authenticated".to_string()], grant }
    }
}

/// The attributes of a request, as the kube-apiserver's authorizer sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        /// "" for a cluster-scoped resource or a request across all namespaces. For
        /// `namespaces` it is the namespace's own name, as the kube-apiserver sets it.
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Request {
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Request {
        Request::Resource {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: String::new(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn subresource(mut self, sub: &str) -> Request {
        if let Request::Resource { subresource, .. } = &mut self {
            *subresource = sub.to_string();
        }
        self
    }

    pub fn non_resource(verb: &str, path: &str) -> Request {
        Request::NonResource { verb: verb.to_string(), path: path.to_string() }
    }
}

/// How a resource is scoped. Resources this server does not know are treated as cluster-scoped
/// (so a namespace-bound user gets none of them).
pub fn is_namespaced(group: &str, resource: &str) -> bool {
    super::resources::RESOURCES.iter().any(|r| r.group == group && r.plural == resource && r.namespaced)
}

/// The resources the tables speak of: (group, plural, namespaced), the stored kinds, the CRDs,
/// the users API and the access reviews.
pub fn known_resources() -> Vec<(&'static str, &'static str, bool)> {
    let mut out: Vec<_> = super::resources::RESOURCES.iter().map(|r| (r.group, r.plural, r.namespaced)).collect();
    out.extend(super::computed::RESOURCES.iter().map(|r| (r.group, r.plural, r.namespaced)));
    out.push((USERS_GROUP, "users", false));
    out.push((USERS_GROUP, "jointokens", false));
    out.push((USERS_GROUP, "nodes", false));
    out
}

/// Paths any authenticated caller may read, as Kubernetes' `system:discovery` and
/// `system:public-info-viewer` grant them.
fn is_discovery_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(p, "" | "/api" | "/apis" | "/version" | "/openapi" | "/healthz" | "/livez" | "/readyz")
        || ["/api/", "/apis/", "/openapi/", "/healthz/", "/livez/", "/readyz/"].iter().any(|pre| path.starts_with(pre))
}

fn is_review(group: &str, resource: &str) -> bool {
    super::review::REVIEWS.iter().any(|(g, _, p, _)| *g == group && *p == resource)
}

/// What one host may ask of another (the node role): read the agents (their cards are in
/// their status), budgets (the room left) and workflows, and submit work (create workflows);
/// never Secrets, ConfigMaps, users, tokens or anything else, and no non-resource path but
/// discovery, health and the renewal of its own certificate.
pub fn node_may(request: &Request) -> bool {
    match request {
        Request::NonResource { verb, path } => {
            (is_discovery_path(path) && (verb == "get" || verb == "head"))
                || (path == super::join::RENEW_PATH && verb == "post")
        }
        Request::Resource { verb, group, resource, subresource, .. } => {
            if is_review(group, resource) {
                return verb == "create";
            }
            if group != crate::api::GROUP {
                return false;
            }
            let read = READ_VERBS.contains(&verb.as_str());
            match (resource.as_str(), subresource.as_str()) {
                ("agents" | "resourcebudgets" | "workflows", "" | "status") if read => true,
                ("workflows", "") => verb == "create",
                _ => false,
            }
        }
    }
}

/// The one decision: may `subject` make `request`?
pub fn authorize(subject: &Subject, request: &Request) -> bool {
    let (role, bound) = match &subject.grant {
        Grant::Masters => return true,
        Grant::Node => return node_may(request),
        Grant::Role { role, namespace } => (role, namespace),
    };
    match request {
        Request::NonResource { verb, path } => {
            if is_discovery_path(path) {
                return verb == "get" || verb == "head";
            }
            // `/metrics` and anything else: the unbound admin only (Kubernetes' view and edit
            // roles hold no non-resource URLs).
            *role == Role::Admin && bound.is_none()
        }
        Request::Resource { verb, group, resource, namespace, .. } => {
            // Every authenticated user may ask what it may do (`system:basic-user`).
            if is_review(group, resource) {
                return verb == "create";
            }
            if let Some(ns) = bound
                && namespace != ns
            {
                return false;
            }
            let read = READ_VERBS.contains(&verb.as_str());
            let namespaced = is_namespaced(group, resource);
            let users = group == USERS_GROUP;
            let secret = group.is_empty() && resource == "secrets";
            match role {
                Role::View => read && !secret && !users,
                Role::Edit => (read && !users) || namespaced,
                // Bound to a namespace, an admin reads that namespace and owns what is in it,
                // as the admin ClusterRole through a RoleBinding.
                Role::Admin => bound.is_none() || namespaced || read,
            }
        }
    }
}

/// The kube-apiserver's 403 for a refused request: `agents.a2a.dev is forbidden: User "bob"
/// cannot create resource "agents" in API group "a2a.dev" in the namespace "default"`.
pub fn forbidden(subject: &Subject, request: &Request) -> ApiError {
    let user = &subject.user;
    match request {
        Request::NonResource { verb, path } => {
            ApiError::new(403, "Forbidden", format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""))
        }
        Request::Resource { verb, group, resource, subresource, namespace, name } => {
            let qualified = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
            let what = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{namespace}\"")
            };
            let subject = if name.is_empty() { qualified } else { format!("{qualified} \"{name}\"") };
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{what}\" in API group \"{group}\" \
                     {scope}"
                ),
            );
            let mut details = json!({"group": group, "kind": resource});
            if !name.is_empty() {
                details["name"] = json!(name);
            }
            e.details = Some(details);
            e
        }
    }
}

/// What `subject` may do in `namespace`, as a SelfSubjectRulesReview's status: derived from
/// [`authorize`] resource by resource, so the list and the decision cannot disagree.
pub fn rules(subject: &Subject, namespace: &str) -> Value {
    if subject.grant == Grant::Masters {
        return json!({
            "resourceRules": [
                {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                 "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
                {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            ],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        });
    }
    let mut resource_rules: Vec<Value> = Vec::new();
    for (group, plural, namespaced) in known_resources() {
        let ns = if namespaced { namespace } else { "" };
        let verbs: Vec<&str> = if is_review(group, plural) {
            vec!["create"]
        } else {
            ALL_VERBS
                .iter()
                .copied()
                .filter(|v| authorize(subject, &Request::resource(v, group, plural, ns, "")))
                .collect()
        };
        if verbs.is_empty() {
            continue;
        }
        // Rules with the same group and verbs are merged, as RBAC rules usually are written.
        match resource_rules.iter_mut().find(|r| r["apiGroups"] == json!([group]) && r["verbs"] == json!(verbs)) {
            Some(rule) => {
                if let Some(list) = rule["resources"].as_array_mut() {
                    list.push(json!(plural));
                }
            }
            None => resource_rules.push(json!({"verbs": verbs, "apiGroups": [group], "resources": [plural]})),
        }
    }
    // A namespace-bound user may read its own namespace object.
    if let Grant::Role { namespace: Some(bound), .. } = &subject.grant
        && bound == namespace
    {
        resource_rules.push(json!({
            "verbs": READ_VERBS, "apiGroups": [""], "resources": ["namespaces"], "resourceNames": [bound],
        }));
    }
    let mut non_resource = vec![json!({
        "verbs": ["get"],
        "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/",
                            "/healthz", "/livez", "/readyz"],
    })];
    if authorize(subject, &Request::non_resource("get", "/metrics")) {
        non_resource.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource, "incomplete": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, ns: Option<&str>) -> Subject {
        Subject::user("u", Grant::role(role, ns))
    }

    fn may(s: &Subject, verb: &str, group: &str, resource: &str, ns: &str) -> bool {
        authorize(s, &Request::resource(verb, group, resource, ns, ""))
    }

    #[test]
    fn view_reads_everything_but_secrets_and_writes_nothing() {
        let v = user(Role::View, None);
        for verb in READ_VERBS {
            assert!(may(&v, verb, "a2a.dev", "agents", "default"), "{verb} agents");
            assert!(may(&v, verb, "a2a.dev", "resourcebudgets", ""), "{verb} budgets");
            assert!(may(&v, verb, "", "namespaces", ""), "{verb} namespaces");
            assert!(may(&v, verb, "", "configmaps", "default"), "{verb} configmaps");
            assert!(!may(&v, verb, "", "secrets", "default"), "{verb} secrets");
            assert!(!may(&v, verb, "", "secrets", ""), "{verb} secrets in all namespaces");
            assert!(!may(&v, verb, USERS_GROUP, "users", ""), "{verb} users");
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(!may(&v, verb, "a2a.dev", "agents", "default"), "{verb} agents");
            assert!(!may(&v, verb, "", "namespaces", ""), "{verb} namespaces");
        }
        let status = Request::resource("patch", "a2a.dev", "workflows", "default", "w").subresource("status");
        assert!(!authorize(&v, &status));
        assert!(!authorize(&v, &Request::non_resource("get", "/metrics")));
        assert!(authorize(&v, &Request::non_resource("get", "/apis/a2a.dev/v1alpha1")));
        assert!(authorize(&v, &Request::non_resource("get", "/openapi/v3")));
    }

    #[test]
    fn edit_writes_namespaced_resources_but_not_namespaces_budgets_crds_or_users() {
        let e = user(Role::Edit, None);
        for verb in ALL_VERBS {
            assert!(may(&e, verb, "a2a.dev", "agents", "default"), "{verb} agents");
            assert!(may(&e, verb, "", "secrets", "default"), "{verb} secrets");
            assert!(may(&e, verb, "coordination.k8s.io", "leases", "default"), "{verb} leases");
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(!may(&e, verb, "", "namespaces", ""), "{verb} namespaces");
            assert!(!may(&e, verb, "a2a.dev", "resourcebudgets", ""), "{verb} budgets");
            assert!(!may(&e, verb, "apiextensions.k8s.io", "customresourcedefinitions", ""), "{verb} crds");
            assert!(!may(&e, verb, USERS_GROUP, "users", ""), "{verb} users");
        }
        assert!(may(&e, "list", "a2a.dev", "resourcebudgets", ""));
    }

    #[test]
    fn a_namespace_binds_the_role_to_it_and_refuses_the_cluster_scope() {
        let e = user(Role::Edit, Some("team-a"));
        assert!(may(&e, "create", "a2a.dev", "agents", "team-a"));
        assert!(!may(&e, "create", "a2a.dev", "agents", "team-b"));
        assert!(!may(&e, "list", "a2a.dev", "agents", ""), "a list across all namespaces");
        assert!(!may(&e, "list", "a2a.dev", "resourcebudgets", ""));
        // Its own namespace object is in the namespace (as the kube-apiserver sees it).
        assert!(authorize(&e, &Request::resource("get", "", "namespaces", "team-a", "team-a")));
        assert!(!authorize(&e, &Request::resource("delete", "", "namespaces", "team-a", "team-a")));
        let a = user(Role::Admin, Some("team-a"));
        assert!(may(&a, "delete", "", "secrets", "team-a"));
        assert!(!authorize(&a, &Request::resource("delete", "", "namespaces", "team-a", "team-a")));
        assert!(!may(&a, "create", USERS_GROUP, "users", ""));
        assert!(!authorize(&a, &Request::non_resource("get", "/metrics")));
    }

    #[test]
    fn admin_and_masters_do_everything_and_everyone_may_review_itself() {
        let a = user(Role::Admin, None);
        let m = Subject::masters("a2a-admin");
        for s in [&a, &m] {
            assert!(may(s, "create", USERS_GROUP, "users", ""));
            assert!(may(s, "delete", "", "namespaces", ""));
            assert!(may(s, "get", "", "secrets", "x"));
            assert!(authorize(s, &Request::non_resource("get", "/metrics")));
        }
        let v = user(Role::View, Some("x"));
        assert!(may(&v, "create", "authorization.k8s.io", "selfsubjectaccessreviews", ""));
        assert!(may(&v, "create", "authentication.k8s.io", "selfsubjectreviews", ""));
    }

    #[test]
    fn refusals_read_as_the_kube_apiservers() {
        let s = Subject::user("bob", Grant::role(Role::View, None));
        let e = forbidden(&s, &Request::resource("create", "a2a.dev", "agents", "default", ""));
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "agents.a2a.dev is forbidden: User \"bob\" cannot create resource \"agents\" in API group \"a2a.dev\" in \
             the namespace \"default\""
        );
        let e = forbidden(&s, &Request::resource("get", "", "secrets", "default", "db"));
        assert_eq!(
            e.message,
            "secrets \"db\" is forbidden: User \"bob\" cannot get resource \"secrets\" in API group \"\" in the \
             namespace \"default\""
        );
        let e = forbidden(&s, &Request::resource("create", "", "namespaces", "", ""));
        assert!(e.message.ends_with("at the cluster scope"), "{}", e.message);
        let e = forbidden(&s, &Request::non_resource("get", "/metrics"));
        assert_eq!(e.message, "forbidden: User \"bob\" cannot get path \"/metrics\"");
    }

    #[test]
    fn the_rules_review_lists_what_the_decision_allows() {
        let v = user(Role::View, None);
        let r = rules(&v, "default");
        let all: Vec<String> = r["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["resources"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()))
            .collect();
        assert!(all.contains(&"agents".to_string()));
        assert!(!all.contains(&"secrets".to_string()));
        assert!(!all.contains(&"users".to_string()));
    }

    #[test]
    fn a_node_reads_agents_and_submits_workflows_but_never_reads_secrets_or_users() {
        let n = Subject::node("host-b");
        assert_eq!(n.user, "system:node:host-b");
        assert!(n.groups.contains(&"system:nodes".to_string()));
        for verb in READ_VERBS {
            assert!(may(&n, verb, "a2a.dev", "agents", "default"), "{verb} agents");
            assert!(may(&n, verb, "a2a.dev", "agents", ""), "{verb} agents everywhere");
            assert!(may(&n, verb, "a2a.dev", "workflows", "team-a"), "{verb} workflows");
            assert!(may(&n, verb, "a2a.dev", "resourcebudgets", ""), "{verb} budgets");
            assert!(!may(&n, verb, "", "secrets", "default"), "{verb} secrets");
            assert!(!may(&n, verb, "", "configmaps", "default"), "{verb} configmaps");
            assert!(!may(&n, verb, USERS_GROUP, "users", ""), "{verb} users");
            assert!(!may(&n, verb, USERS_GROUP, "jointokens", ""), "{verb} tokens");
        }
        assert!(may(&n, "create", "a2a.dev", "workflows", "default"));
        for verb in ["update", "patch", "delete", "deletecollection"] {
            assert!(!may(&n, verb, "a2a.dev", "workflows", "default"), "{verb} workflows");
        }
        assert!(!may(&n, "create", "a2a.dev", "agents", "default"));
        assert!(!may(&n, "create", "", "namespaces", ""));
        let status = Request::resource("patch", "a2a.dev", "workflows", "default", "w").subresource("status");
        assert!(!authorize(&n, &status));
        assert!(!authorize(&n, &Request::non_resource("get", "/metrics")));
        assert!(authorize(&n, &Request::non_resource("get", "/apis")));
        assert!(may(&n, "create", "authentication.k8s.io", "selfsubjectreviews", ""));
    }

    #[test]
    fn roles_parse_with_a_clear_error() {
        assert_eq!(Role::parse("edit"), Ok(Role::Edit));
        let e = Role::parse("owner").unwrap_err();
        assert!(e.contains("\"owner\"") && e.contains("admin, edit, view"), "{e}");
    }
}
