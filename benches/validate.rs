//! How fast manifests are parsed and validated: the quickstart, and a workflow of 1,000
//! tasks (a wide fan-out/fan-in DAG), which exercises the schema walk and the DAG checks.
//! And the bounds on hostile YAML: a 3 MiB body (the API server's default limit) at the
//! depth bound, the worst case for libyaml, and a 100,000-level body refused.

use criterion::{Criterion, criterion_group, criterion_main};

fn big_workflow(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: { name: big }\nspec:\n  params: { p: x }\n  tasks:\n    - { name: root, agent: a, message: start }\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    - {{ name: t{i}, agent: a, dependsOn: [root], message: \"{{{{ tasks.root.output }}}} {{{{ params.p }}}}\" }}\n"
        ));
    }
    s.push_str("    - name: join\n      agent: a\n      message: done\n      dependsOn:\n");
    for i in 0..n {
        s.push_str(&format!("        - t{i}\n"));
    }
    s
}

fn bench(c: &mut Criterion) {
    let quickstart = include_str!("../examples/quickstart.yaml");
    c.bench_function("validate quickstart (5 documents)", |b| {
        b.iter(|| a2a::api::manifest::load_str("quickstart.yaml", quickstart).map(|d| d.len()))
    });
    let big = big_workflow(1000);
    c.bench_function("validate workflow with 1,000 tasks", |b| {
        b.iter(|| a2a::api::manifest::load_str("big.yaml", &big).map(|d| d.len()))
    });
}

/// About `bytes` of YAML at the depth bound: `[[[…100…[a, a, a, …]…]]]`. libyaml's scanner
/// revisits each open flow level per token, so this is its slowest shape per byte.
fn deepest_allowed(bytes: usize) -> String {
    let depth = a2a::api::yaml::MAX_DEPTH;
    let items = (bytes - 2 * depth) / 3;
    let mut s = "[".repeat(depth);
    s.push_str(&"a, ".repeat(items));
    s.push('a');
    s.push_str(&"]".repeat(depth));
    s
}

fn hostile(c: &mut Criterion) {
    let mut g = c.benchmark_group("hostile yaml");
    g.sample_size(10);
    let deep = deepest_allowed(3 << 20);
    g.bench_function("parse a 3 MiB body nested 100 deep (the worst allowed)", |b| {
        b.iter(|| a2a::api::yaml::from_str(&deep).map(|v| v.is_array()))
    });
    let wide = big_workflow(26_000);
    assert!(wide.len() > 2 << 20 && wide.len() <= 3 << 20, "{}", wide.len());
    g.bench_function(format!("parse a {} KiB workflow body", wide.len() >> 10), |b| {
        b.iter(|| a2a::api::yaml::from_str(&wide).map(|v| v.is_object()))
    });
    let refused = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    g.bench_function("refuse a 200 KB body nested 100,000 deep", |b| {
        b.iter(|| a2a::api::yaml::from_str(&refused).is_err())
    });
    g.finish();
}

criterion_group!(benches, bench, hostile);
criterion_main!(benches);
