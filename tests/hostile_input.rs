//! Hostile input to the parsers: deep YAML is refused before it is parsed, by the CLI and by
//! the API server, which keeps serving everyone else meanwhile; YAML's infinities and NaN
//! are refused wherever YAML is read; quantities with spaces and zero CPU limits are refused;
//! a byte order mark is read; a rendered message stops at its bound.

mod common;

use std::time::Duration;

use a2a::api::manifest;
use axum::http::Method;
use serde_json::Value;

use common::{raw, start};

const AGENTS: &str = "/apis/a2a.dev/v1alpha1/namespaces/default/agents";
const BUDGETS: &str = "/apis/a2a.dev/v1alpha1/resourcebudgets";

/// 100,000 levels in 200 KB: over a minute of parsing before depth was bounded.
fn deep_list() -> String {
    format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))
}

fn deep_map() -> String {
    format!("{}1{}", "{a: ".repeat(50_000), "}".repeat(50_000))
}

fn errors_of(text: &str) -> Vec<String> {
    manifest::load_str("m.yaml", text).unwrap_err().iter().map(ToString::to_string).collect()
}

fn budget(limits: &str) -> String {
    format!("apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{name: b}}\nspec:\n  limits:\n{limits}")
}

/// Runs `a2a` with `args`; its stderr, or a failure if it takes longer than `deadline`.
fn a2a_within(deadline: Duration, args: &[&str]) -> (bool, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_a2a"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("a2a {args:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn validate_refuses_deep_yaml_without_parsing_it() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("list", deep_list()), ("map", deep_map()), ("unclosed", "[".repeat(40_000))] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        // Generous: the bound makes it milliseconds; without it, seconds to minutes.
        let (ok, stderr) = a2a_within(Duration::from_secs(20), &["validate", "-f", path.to_str().unwrap()]);
        assert!(!ok, "{name}: {stderr}");
        assert!(stderr.contains("document 1: nests deeper than 100 levels (at line 1, column"), "{name}: {stderr}");
    }
}

#[test]
fn infinities_and_nan_are_refused_with_the_field_named() {
    for value in [".inf", "-.inf", ".nan", ".Inf", "+.INF", ".NaN"] {
        let errors = errors_of(&budget(&format!("    memory: {value}\n")));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("m.yaml: document 1: spec.limits.memory: "), "{value}: {errors:?}");
        assert!(errors[0].contains("is not a number a2a accepts"), "{value}: {errors:?}");
        let errors = errors_of(&budget(&format!("    cpu: {value}\n")));
        assert!(errors[0].contains("spec.limits.cpu: "), "{value}: {errors:?}");
    }
    // In an Agent, and in a later document of a stream.
    let agent = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: [x]\n  \
                 resources: {limits: {memory: 1Gi, cpu: .inf}}\n";
    let errors = errors_of(&format!("{}---\n{agent}", budget("    memory: 1Gi\n")));
    assert_eq!(
        errors,
        vec![
            "m.yaml: document 2: spec.resources.limits.cpu: .inf is not a number a2a accepts (infinity and NaN have no JSON form)"
        ]
    );
}

#[test]
fn quantities_with_spaces_and_zero_cpu_limits_are_refused() {
    let errors = errors_of(&budget("    memory: \" 64Mi\"\n"));
    assert!(errors[0].contains("spec.limits.memory: memory quantity \" 64Mi\" has spaces around it"), "{errors:?}");
    for cpu in ["0", "\"0\"", "0m", "0.0"] {
        let errors = errors_of(&budget(&format!("    cpu: {cpu}\n")));
        assert_eq!(errors.len(), 1, "{cpu}: {errors:?}");
        assert!(errors[0].contains("spec.limits.cpu: ") && errors[0].contains("leave the field out"), "{errors:?}");
    }
    let errors = errors_of(&format!("{}  backgroundCpu: 0\n", budget("    cpu: 1\n")));
    assert!(errors[0].contains("spec.backgroundCpu: 0 is not a CPU limit"), "{errors:?}");
    let agent = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {name: a}\nspec:\n  command: [x]\n  \
                 resources: {requests: {cpu: 0}, limits: {cpu: 0}}\n";
    let errors = errors_of(agent);
    assert_eq!(errors.len(), 1, "a zero request is fine, a zero limit is not: {errors:?}");
    assert!(errors[0].contains("spec.resources.limits.cpu"), "{errors:?}");
    // A leading + means what it means in Kubernetes.
    let docs = manifest::load_str("m.yaml", &budget("    memory: \"+64Mi\"\n")).unwrap();
    let a2a::api::Object::ResourceBudget(b) = &docs[0].object else { panic!() };
    assert_eq!(b.spec.limits.memory.as_ref().unwrap().value(), 64 << 20);
}

#[test]
fn a_manifest_with_a_byte_order_mark_is_read() {
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(include_bytes!("../examples/quickstart.yaml"));
    let text = manifest::decode("q.yaml", bytes).unwrap();
    assert_eq!(manifest::load_str("q.yaml", &text).unwrap().len(), 5);
    let json = "\u{feff}{\"apiVersion\": \"a2a.dev/v1alpha1\", \"kind\": \"ResourceBudget\", \"metadata\": {\"name\": \"b\"}, \"spec\": {\"limits\": {\"memory\": \"1Gi\"}}}";
    assert_eq!(manifest::load_str("b.json", json).unwrap().len(), 1);
    // UTF-16, as editors save "Unicode" text, with its mark, either byte order.
    let text = include_str!("../examples/quickstart.yaml");
    let le: Vec<u8> = [0xff, 0xfe].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let be: Vec<u8> = [0xfe, 0xff].into_iter().chain(text.encode_utf16().flat_map(u16::to_be_bytes)).collect();
    for bytes in [le, be] {
        let decoded = manifest::decode("q.yaml", bytes).unwrap();
        assert_eq!(manifest::load_str("q.yaml", &decoded).unwrap().len(), 5);
    }
    let odd = manifest::decode("q.yaml", vec![0xff, 0xfe, b'a']).unwrap_err();
    assert!(odd.to_string().contains("UTF-16 text"), "{odd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_yaml_bodies_are_refused_while_other_clients_are_served() {
    let t = start().await;
    let c = t.client.clone();
    // Four deep bodies at once (more than the server's two worker threads), by both YAML
    // routes, while another client lists and checks health.
    let mut deep = Vec::new();
    for i in 0..4 {
        let c = c.clone();
        deep.push(tokio::spawn(async move {
            let body = if i % 2 == 0 { deep_list() } else { deep_map() };
            if i < 2 {
                raw(&c, Method::POST, AGENTS, "application/yaml", body).await
            } else {
                let path = format!("{AGENTS}/a?fieldManager=test");
                raw(&c, Method::PATCH, &path, "application/apply-patch+yaml", body).await
            }
        }));
    }
    let other = tokio::spawn(async move {
        for _ in 0..20 {
            let (code, v) = raw(&c, Method::GET, AGENTS, "application/json", "").await;
            assert_eq!(code, 200, "{v}");
            let (code, v) = raw(&c, Method::GET, "/healthz", "application/json", "").await;
            assert_eq!(code, 200, "{v}");
        }
    });
    // Generous deadlines: the bound makes each a few milliseconds; unbounded, over a minute.
    tokio::time::timeout(Duration::from_secs(30), other).await.expect("another client was held up").unwrap();
    for d in deep {
        let (code, v) = tokio::time::timeout(Duration::from_secs(30), d).await.expect("a deep body hung").unwrap();
        assert_eq!(code, 400, "{v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("the request body nests deeper than 100 levels (at line 1, column"), "{v}");
    }
    let (_, list) = raw(&t.client, Method::GET, AGENTS, "application/json", "").await;
    assert_eq!(list["items"], Value::Array(vec![]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_limits_in_yaml_bodies_and_apply_are_refused() {
    let t = start().await;
    let c = &t.client;
    let body = budget("    memory: .inf\n    cpu: 2\n");
    let (code, v) = raw(c, Method::POST, BUDGETS, "application/yaml", body.clone()).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("spec.limits.memory: .inf is not a number a2a accepts"), "{v}");
    let (code, v) =
        raw(c, Method::PATCH, &format!("{BUDGETS}/b?fieldManager=test"), "application/apply-patch+yaml", body).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("spec.limits.memory: .inf"), "{v}");
    let (_, list) = raw(c, Method::GET, BUDGETS, "application/json", "").await;
    assert_eq!(list["items"], Value::Array(vec![]), "no budget without limits was stored: {list}");
    // With a byte order mark, the same budget with finite limits is read and stored.
    let body = format!("\u{feff}{}", budget("    memory: 1Gi\n"));
    let (code, v) = raw(c, Method::POST, BUDGETS, "application/yaml", body).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["spec"]["limits"]["memory"], "1Gi");
}

#[test]
fn a_rendered_message_stops_at_4_mib_and_fails_the_task() {
    use a2a::api::Object;
    use a2a::controller::plan;
    // 1 MiB of param used 1,000 times: a 1 GiB message if rendering were not bounded.
    let text = format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: w}}\nspec:\n  params: {{p: {}}}\n  \
         tasks:\n    - {{name: t, agent: a, message: \"{}\"}}\n",
        "x".repeat(1 << 20),
        "{{ params.p }}".repeat(1000)
    );
    let docs = manifest::load_str("w.yaml", &text).unwrap();
    let Object::Workflow(w) = &docs[0].object else { panic!() };
    let mut status = a2a::api::workflow::WorkflowStatus::default();
    plan::align(&w.spec, &mut status);
    let step = plan::step(&w.spec, &mut status, jiff::Timestamp::now());
    assert!(step.ready.is_empty(), "nothing is sent");
    let error = status.tasks[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("the rendered message is larger than 4 MiB"), "{error}");
    assert_eq!(status.tasks[0].phase, a2a::api::workflow::TaskPhase::Failed);
}

/// Found by the `patch` fuzz target: the fast reading of a JSON patch skipped an unknown
/// field without checking its bytes, so a body that is not UTF-8 (hence not JSON) was
/// accepted where json_patch's own reading refuses it.
#[test]
fn a_json_patch_that_is_not_utf8_is_refused_like_any_other_reading() {
    let body: &[u8] = b"[{\"op\":\"remove\",\"path\":\"/meta\",\"data\":{\"labe\x94\x8e\":1}}]";
    assert!(serde_json::from_slice::<json_patch::Patch>(body).is_err());
    let err = a2a::apiserver::handlers::parse_json_patch(body).unwrap_err();
    assert_eq!(err.code, 400, "{err:?}");
    assert!(err.message.contains("not a valid JSON patch"), "{err:?}");
    // The fuzzer's own input.
    let input = include_bytes!("../fuzz/seeds/patch/crash-not-utf8");
    let patch = &input[input.iter().position(|b| *b == 0).unwrap() + 1..];
    assert!(a2a::apiserver::handlers::parse_json_patch(patch).is_err());
}
