//! `a2a validate` on the mistakes people make: each gets one exact, actionable message that
//! names the file, the document, the object and the field.

use a2a::api::manifest::load_str;

/// The error lines for `text` as `m.yaml`, or a panic if it validated.
fn errors(text: &str) -> Vec<String> {
    match load_str("m.yaml", text) {
        Ok(docs) => panic!("expected errors, got {} valid documents", docs.len()),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

/// One Agent document with `spec` given as a YAML block (indented by two spaces).
fn agent(spec: &str) -> String {
    format!("apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: bot\nspec:\n{spec}")
}

fn workflow(spec: &str) -> String {
    format!("apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: flow\nspec:\n{spec}")
}

fn budget(spec: &str) -> String {
    format!("apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata:\n  name: team\nspec:\n{spec}")
}

const A: &str = "m.yaml: document 1 (Agent/bot)";
const W: &str = "m.yaml: document 1 (Workflow/flow)";
const B: &str = "m.yaml: document 1 (ResourceBudget/team)";

#[test]
fn misspelled_field_suggests_the_right_one() {
    assert_eq!(
        errors(&agent("  command: [x]\n  replica: 2\n")),
        [format!("{A}: spec.replica: unknown field (did you mean \"replicas\"?)")]
    );
}

#[test]
fn memory_in_megabytes_suggests_mebibytes() {
    assert_eq!(
        errors(&agent("  command: [x]\n  resources:\n    limits:\n      memory: 512MB\n")),
        [format!(
            "{A}: spec.resources.limits.memory: memory quantity \"512MB\" has an unknown unit \"MB\" (did you mean Mi?); units are Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, m"
        )]
    );
}

#[test]
fn memory_in_milli_bytes_is_caught() {
    assert_eq!(
        errors(&agent("  command: [x]\n  resources:\n    limits:\n      memory: 500m\n")),
        [format!(
            "{A}: spec.resources.limits.memory: memory quantity \"500m\" is a fraction of a byte (\"m\" means milli); did you mean 500Mi?"
        )]
    );
}

#[test]
fn memory_without_unit_is_too_small() {
    assert_eq!(
        errors(&agent("  command: [x]\n  resources:\n    limits:\n      memory: 512\n")),
        [format!(
            "{A}: spec.resources.limits.memory: 512 bytes is too small to run anything; did you forget the unit (Mi, Gi)?"
        )]
    );
}

#[test]
fn cpu_with_a_size_unit_is_caught() {
    assert_eq!(
        errors(&agent("  command: [x]\n  resources:\n    limits:\n      cpu: 2Gi\n")),
        [format!(
            "{A}: spec.resources.limits.cpu: cpu quantity \"2Gi\" uses a size unit; write cores (2, 1.5) or millicores (500m)"
        )]
    );
}

#[test]
fn cpu_share_over_the_whole_host_is_caught() {
    assert_eq!(
        errors(&budget("  limits:\n    cpu: 150%\n")),
        [format!("{B}: spec.limits.cpu: cpu share \"150%\" must be above 0% and at most 100%")]
    );
}

#[test]
fn requests_above_limits_are_caught() {
    assert_eq!(
        errors(&agent("  command: [x]\n  resources:\n    requests: { memory: 1Gi }\n    limits: { memory: 512Mi }\n")),
        [format!("{A}: spec.resources.requests.memory: 1Gi is more than the limit 512Mi")]
    );
}

#[test]
fn unknown_priority_lists_the_choices() {
    assert_eq!(
        errors(&agent("  command: [x]\n  priority: urgent\n")),
        [format!("{A}: spec.priority: \"urgent\" is not one of critical, high, normal, low, background")]
    );
}

#[test]
fn capitalised_enum_value_suggests_the_spelling() {
    assert_eq!(
        errors(&agent("  command: [x]\n  protocol: STDIO\n")),
        [format!("{A}: spec.protocol: \"STDIO\" is not one of a2a, stdio (did you mean \"stdio\"?)")]
    );
}

#[test]
fn replicas_as_a_word_is_a_type_error() {
    assert_eq!(
        errors(&agent("  command: [x]\n  replicas: two\n")),
        [format!("{A}: spec.replicas: expected an integer, got a string (\"two\")")]
    );
}

#[test]
fn command_as_a_string_must_be_a_list() {
    assert_eq!(
        errors(&agent("  command: python agent.py\n")),
        [format!("{A}: spec.command: expected a list, got a string (\"python agent.py\")")]
    );
}

#[test]
fn writable_paths_must_be_plain_absolute_paths_outside_the_kernel_file_systems() {
    assert_eq!(
        errors(&agent(
            "  command: [x]\n  writablePaths: [data, /, /srv/../etc, /sys/fs/cgroup, /srv/data, /srv/data]\n"
        )),
        [
            format!(
                "{A}: spec.writablePaths[0]: \"data\" is not an absolute path without '.', '..' or a trailing '/' (and not '/')"
            ),
            format!(
                "{A}: spec.writablePaths[1]: \"/\" is not an absolute path without '.', '..' or a trailing '/' (and not '/')"
            ),
            format!(
                "{A}: spec.writablePaths[2]: \"/srv/../etc\" is not an absolute path without '.', '..' or a trailing '/' (and not '/')"
            ),
            format!("{A}: spec.writablePaths[3]: \"/sys/fs/cgroup\" is inside /sys, which agents cannot be given"),
            format!("{A}: spec.writablePaths[5]: \"/srv/data\" is listed twice"),
        ]
    );
    assert!(load_str("m.yaml", &agent("  command: [x]\n  writablePaths: [/srv/data, /var/cache/bot]\n")).is_ok());
}

#[test]
fn an_agent_with_nothing_to_run_is_caught() {
    assert_eq!(
        errors(&agent("  skills: [echo]\n")),
        [format!(
            "{A}: spec.command: nothing to run: set command (local mode), image (cluster mode), or url (an agent that runs elsewhere)"
        )]
    );
}

#[test]
fn url_and_command_together_are_caught() {
    assert_eq!(
        errors(&agent("  command: [x]\n  url: http://10.0.0.1:8080/\n")),
        [format!(
            "{A}: spec.url: an agent with url runs elsewhere and is never started; remove command/image, or remove url"
        )]
    );
}

#[test]
fn reserved_environment_variables_are_refused() {
    assert_eq!(
        errors(&agent("  command: [x]\n  env:\n    - { name: A2A_PORT, value: \"80\" }\n")),
        [format!("{A}: spec.env[0].name: A2A_PORT is set by a2a for every agent; choose another name")]
    );
}

#[test]
fn fixed_port_with_several_replicas_is_caught() {
    assert_eq!(
        errors(&agent("  command: [x]\n  port: 8080\n  replicas: 3\n")),
        [format!(
            "{A}: spec.port: a fixed port can serve only one replica, but replicas is 3; use port 0 (assigned) or replicas 1"
        )]
    );
}

#[test]
fn uppercase_names_are_not_valid_names() {
    let text = agent("  command: [x]\n").replace("name: bot", "name: My_Bot");
    assert_eq!(
        errors(&text),
        [
            "m.yaml: document 1 (Agent/My_Bot): metadata.name: \"My_Bot\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ]
    );
}

#[test]
fn missing_name_is_required() {
    let text = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {}\nspec:\n  command: [x]\n";
    assert_eq!(errors(text), ["m.yaml: document 1 (Agent/<no name>): metadata.name: required field is missing"]);
}

#[test]
fn unknown_kind_suggests_the_right_one() {
    let text = "apiVersion: a2a.dev/v1alpha1\nkind: Agnet\nmetadata: { name: x }\nspec: {}\n";
    assert_eq!(
        errors(text),
        [
            "m.yaml: document 1 (Agnet/x): kind: unknown kind \"Agnet\" in a2a.dev/v1alpha1 (did you mean \"Agent\"?); kinds are Agent, Workflow, ResourceBudget"
        ]
    );
}

#[test]
fn unknown_version_names_the_served_one() {
    let text = "apiVersion: a2a.dev/v1\nkind: Agent\nmetadata: { name: x }\nspec: { command: [x] }\n";
    assert_eq!(
        errors(text),
        ["m.yaml: document 1 (Agent/x): apiVersion: unknown version \"a2a.dev/v1\"; a2a serves a2a.dev/v1alpha1"]
    );
}

#[test]
fn foreign_kinds_are_named_as_not_ours() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: {}\n";
    assert_eq!(
        errors(text),
        [
            "m.yaml: document 1 (Deployment/web): kind: Deployment (apps/v1) is not an a2a kind; a2a applies Agent, Workflow and ResourceBudget (a2a.dev/v1alpha1)"
        ]
    );
}

#[test]
fn missing_api_version_says_what_to_write() {
    let text = "kind: Agent\nmetadata: { name: x }\nspec: { command: [x] }\n";
    assert_eq!(
        errors(text),
        ["m.yaml: document 1 (Agent/x): apiVersion: required field is missing (write apiVersion: a2a.dev/v1alpha1)"]
    );
}

#[test]
fn unknown_dependency_is_named() {
    let text = workflow(
        "  tasks:\n    - { name: fetch, agent: a, message: get it }\n    - { name: report, agent: a, message: write it, dependsOn: [fecth] }\n",
    );
    assert_eq!(
        errors(&text),
        [format!("{W}: spec.tasks[1].dependsOn[0]: unknown task \"fecth\" (did you mean \"fetch\"?)")]
    );
}

#[test]
fn dependency_cycle_is_spelled_out() {
    let text = workflow(
        "  tasks:\n    - { name: a, agent: x, message: m, dependsOn: [c] }\n    - { name: b, agent: x, message: m, dependsOn: [a] }\n    - { name: c, agent: x, message: m, dependsOn: [b] }\n",
    );
    assert_eq!(errors(&text), [format!("{W}: spec.tasks: dependency cycle: a → c → b → a")]);
}

#[test]
fn self_dependency_is_caught() {
    let text = workflow("  tasks:\n    - { name: a, agent: x, message: m, dependsOn: [a] }\n");
    assert_eq!(errors(&text), [format!("{W}: spec.tasks[0].dependsOn[0]: task \"a\" depends on itself")]);
}

#[test]
fn duplicate_task_names_point_at_the_first() {
    let text = workflow("  tasks:\n    - { name: a, agent: x, message: m }\n    - { name: a, agent: x, message: n }\n");
    assert_eq!(errors(&text), [format!("{W}: spec.tasks[1].name: duplicate task name \"a\" (also spec.tasks[0])")]);
}

#[test]
fn template_naming_a_task_that_is_not_upstream_is_caught() {
    let text = workflow(
        "  tasks:\n    - { name: a, agent: x, message: m }\n    - { name: b, agent: x, message: \"use {{ tasks.a.output }}\" }\n",
    );
    assert_eq!(
        errors(&text),
        [format!(
            "{W}: spec.tasks[1].message: {{{{ tasks.a.output }}}}: task \"a\" is not upstream of \"b\"; add it to dependsOn"
        )]
    );
}

#[test]
fn template_naming_an_undeclared_param_is_caught() {
    let text =
        workflow("  params: { topic: x }\n  tasks:\n    - { name: a, agent: x, message: \"{{ params.topc }}\" }\n");
    assert_eq!(
        errors(&text),
        [format!(
            "{W}: spec.tasks[0].message: {{{{ params.topc }}}} names a param that spec.params does not declare (did you mean \"topic\"?)"
        )]
    );
}

#[test]
fn template_with_a_wrong_accessor_says_what_to_write() {
    let text = workflow(
        "  tasks:\n    - { name: a, agent: x, message: m }\n    - { name: b, agent: x, dependsOn: [a], message: \"{{ tasks.a.result }}\" }\n",
    );
    assert_eq!(
        errors(&text),
        [format!(
            "{W}: spec.tasks[1].message: {{{{ tasks.a.result }}}}: tasks have .output and .data (write {{{{ tasks.a.output }}}}, not .result)"
        )]
    );
}

#[test]
fn task_without_agent_or_skill_is_caught() {
    let text = workflow("  tasks:\n    - { name: a, message: m }\n");
    assert_eq!(
        errors(&text),
        [format!(
            "{W}: spec.tasks[0]: no agent: set agent (an Agent's name) or skill (any ready agent with that skill)"
        )]
    );
}

#[test]
fn task_with_agent_and_skill_is_caught() {
    let text = workflow("  tasks:\n    - { name: a, agent: x, skill: y, message: m }\n");
    assert_eq!(errors(&text), [format!("{W}: spec.tasks[0]: set agent or skill, not both")]);
}

#[test]
fn missing_message_is_required() {
    let text = workflow("  tasks:\n    - { name: a, agent: x }\n");
    assert_eq!(errors(&text), [format!("{W}: spec.tasks[0].message: required field is missing")]);
}

#[test]
fn empty_task_list_is_caught() {
    assert_eq!(errors(&workflow("  tasks: []\n")), [format!("{W}: spec.tasks: needs at least 1 item")]);
}

#[test]
fn duration_in_days_says_to_use_hours() {
    let text = workflow("  timeout: 2d\n  tasks:\n    - { name: a, agent: x, message: m }\n");
    assert_eq!(errors(&text), [format!("{W}: spec.timeout: duration \"2d\": days are not a unit; write hours (24h)")]);
}

#[test]
fn duration_without_unit_suggests_units() {
    let text = workflow("  activeDeadline: \"30\"\n  tasks:\n    - { name: a, agent: x, message: m }\n");
    assert_eq!(
        errors(&text),
        [format!("{W}: spec.activeDeadline: duration \"30\" has no unit; write 30s, 30m or 30h")]
    );
}

#[test]
fn backoff_longer_than_its_maximum_is_caught() {
    let text = workflow(
        "  retry: { limit: 3, backoff: { initial: 10m, max: 1m } }\n  tasks:\n    - { name: a, agent: x, message: m }\n",
    );
    assert_eq!(errors(&text), [format!("{W}: spec.retry.backoff.initial: 10m is longer than backoff.max 1m")]);
}

#[test]
fn alert_threshold_without_percent_sign_is_caught() {
    let text = budget("  limits: { memory: 1Gi }\n  alerts:\n    - { resource: memory, above: \"90\" }\n");
    assert_eq!(
        errors(&text),
        [format!("{B}: spec.alerts[0].above: percentage \"90\" must end in % (example: \"90%\")")]
    );
}

#[test]
fn alert_on_an_unlimited_resource_is_caught() {
    let text = budget("  limits: { memory: 1Gi }\n  alerts:\n    - { resource: cpu, above: \"90%\" }\n");
    assert_eq!(
        errors(&text),
        [format!("{B}: spec.alerts[0].resource: alerts on cpu need spec.limits.cpu, which is not set")]
    );
}

#[test]
fn alert_webhook_that_is_not_an_http_url_is_caught_with_its_secret_ref() {
    let text = budget(
        "  limits: { memory: 1Gi }\n  alerts:\n    - resource: memory\n      above: \"90%\"\n      notify: { url: \"ftp://hooks.example/a2a\", secretRef: { namespace: Bad_NS, name: hook, key: \"\" } }\n",
    );
    assert_eq!(
        errors(&text),
        [
            format!(
                "{B}: spec.alerts[0].notify.url: \"ftp://hooks.example/a2a\": the scheme must be http or https, not ftp"
            ),
            format!(
                "{B}: spec.alerts[0].notify.secretRef.namespace: \"Bad_NS\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
            ),
            format!("{B}: spec.alerts[0].notify.secretRef.key: must not be empty"),
        ]
    );
    let relative = budget(
        "  limits: { memory: 1Gi }\n  alerts:\n    - { resource: memory, above: \"90%\", notify: { url: /hook } }\n",
    );
    assert_eq!(
        errors(&relative),
        [format!("{B}: spec.alerts[0].notify.url: \"/hook\" is not an absolute URL (http://host/path)")]
    );
}

#[test]
fn namespace_on_a_cluster_scoped_budget_is_caught() {
    let text = budget("  limits: { memory: 1Gi }\n").replace("name: team", "name: team\n  namespace: dev");
    assert_eq!(
        errors(&text),
        [format!(
            "{B}: metadata.namespace: ResourceBudget is cluster-scoped and has no namespace; remove namespace \"dev\""
        )]
    );
}

#[test]
fn budget_that_is_its_own_parent_is_caught() {
    assert_eq!(
        errors(&budget("  parent: team\n  limits: { memory: 1Gi }\n")),
        [format!("{B}: spec.parent: a budget cannot be its own parent")]
    );
}

#[test]
fn budget_parent_cycle_across_documents_is_caught() {
    let text = "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: a }\nspec: { parent: b }\n---\n\
                apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: b }\nspec: { parent: a }\n";
    assert_eq!(
        errors(text),
        [
            "m.yaml: document 1 (ResourceBudget/a): spec.parent: budget parents form a cycle: a → b → a",
            "m.yaml: document 2 (ResourceBudget/b): spec.parent: budget parents form a cycle: b → a → b",
        ]
    );
}

#[test]
fn child_budget_larger_than_parent_is_caught() {
    let text = "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: big }\nspec: { limits: { memory: 1Gi } }\n---\n\
                apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: small }\nspec: { parent: big, limits: { memory: 2Gi } }\n";
    assert_eq!(
        errors(text),
        [
            "m.yaml: document 2 (ResourceBudget/small): spec.limits.memory: 2Gi is more than parent budget \"big\" allows (1Gi)"
        ]
    );
}

#[test]
fn the_same_object_twice_is_caught() {
    let doc = agent("  command: [x]\n");
    assert_eq!(
        errors(&format!("{doc}---\n{doc}")),
        ["m.yaml: document 2 (Agent/bot): metadata.name: Agent \"bot\" is also defined in m.yaml document 1"]
    );
}

#[test]
fn label_values_must_be_strings() {
    let text = agent("  command: [x]\n").replace("name: bot", "name: bot\n  labels: { tier: 1 }");
    assert_eq!(
        errors(&text),
        [format!("{A}: metadata.labels.tier: values must be strings (quote it), got an integer")]
    );
}

#[test]
fn every_mistake_in_a_document_is_reported_at_once() {
    let text = agent(
        "  command: [x]\n  replica: 2\n  priority: urgent\n  resources:\n    requests: { memory: 1Gi }\n    limits: { memory: 512Mi, cpu: 2Gi }\n",
    );
    assert_eq!(
        errors(&text),
        [
            format!("{A}: spec.priority: \"urgent\" is not one of critical, high, normal, low, background"),
            format!("{A}: spec.replica: unknown field (did you mean \"replicas\"?)"),
            format!(
                "{A}: spec.resources.limits.cpu: cpu quantity \"2Gi\" uses a size unit; write cores (2, 1.5) or millicores (500m)"
            ),
            format!("{A}: spec.resources.requests.memory: 1Gi is more than the limit 512Mi"),
        ]
    );
}

#[test]
fn errors_in_several_documents_are_all_reported() {
    let text = format!(
        "{}---\n{}",
        agent("  command: [x]\n  replicas: -1\n"),
        workflow("  tasks:\n    - { name: a, agent: x, message: m, dependsOn: [zz] }\n")
    );
    assert_eq!(
        errors(&text),
        [
            format!("{A}: spec.replicas: -1 is below the minimum 0"),
            "m.yaml: document 2 (Workflow/flow): spec.tasks[0].dependsOn[0]: unknown task \"zz\"".to_owned(),
        ]
    );
}

#[test]
fn text_that_is_not_yaml_gets_the_parser_position() {
    let errs = errors("apiVersion: a2a.dev/v1alpha1\nkind: Agent\n  metadata: [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("m.yaml: document 1: not valid YAML: "), "{errs:?}");
    assert!(errs[0].contains("line 3"), "the error gives the line: {errs:?}");
}

#[test]
fn a_plain_string_document_is_not_a_manifest() {
    assert_eq!(errors("hello world\n"), ["m.yaml: document 1: expected a mapping of fields, got a string"]);
}

#[test]
fn an_empty_file_is_an_error() {
    assert_eq!(errors(""), ["m.yaml: has no documents (it is empty or only comments)"]);
    assert_eq!(errors("# just a comment\n---\n"), ["m.yaml: has no documents (it is empty or only comments)"]);
}

#[test]
fn binary_garbage_is_refused_without_panicking() {
    assert_eq!(
        errors("\0\u{1}\u{2}garbage"),
        ["m.yaml: is binary (it contains NUL bytes), not a YAML or JSON manifest"]
    );
}

#[test]
fn megabytes_of_garbage_get_one_clear_error() {
    // Deterministic pseudo-random printable junk, about 4 MiB.
    let mut x: u32 = 12345;
    let junk: String = (0..4 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            char::from(b' ' + ((x >> 16) % 95) as u8)
        })
        .collect();
    let errs = errors(&junk);
    assert_eq!(errs.len(), 1, "{:?}", errs.iter().map(|e| &e[..e.len().min(200)]).collect::<Vec<_>>());
    assert!(errs[0].starts_with("m.yaml: document 1: "), "{}", &errs[0][..200.min(errs[0].len())]);
}

#[test]
fn oversized_manifests_are_refused() {
    let big = "#".repeat(17 << 20);
    assert_eq!(errors(&big), [format!("m.yaml: is {} bytes; manifests are limited to 16 MiB", 17 << 20)]);
}

#[test]
fn placement_is_one_of_local_lan_any_and_a_task_naming_an_agent_stays_local() {
    let ok = workflow(
        "  placement: lan\n  tasks:\n    - { name: a, skill: sum, message: m }\n    - { name: b, agent: x, message: m }\n    - { name: c, skill: s, placement: any, message: m }\n",
    );
    assert!(load_str("m.yaml", &ok).is_ok(), "placement lan and any are accepted");
    let bad = workflow("  tasks:\n    - { name: a, skill: sum, placement: cloud, message: m }\n");
    let e = errors(&bad);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("spec.tasks[0].placement") && e[0].contains("local") && e[0].contains("lan"), "{e:?}");
    let pinned = workflow("  tasks:\n    - { name: a, agent: x, placement: lan, message: m }\n");
    assert_eq!(
        errors(&pinned),
        [format!(
            "{W}: spec.tasks[0].placement: is lan, but the task names agent \"x\": only a task sent by skill can run on a peer (set skill instead of agent, or placement: local)"
        )]
    );
}
