//! How fast manifests are parsed and validated: the quickstart, and a workflow of 1,000
//! tasks (a wide fan-out/fan-in DAG), which exercises the schema walk and the DAG checks.

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

criterion_group!(benches, bench);
criterion_main!(benches);
