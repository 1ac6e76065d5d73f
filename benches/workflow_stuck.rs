//! How fast stuck work is said and impossible work fails: the local API server and the
//! workflow engine in this process; Agents stored with the status the node writes for each
//! case (no such agent; not admitted; admitted with no ready replica; over a budget's whole
//! limit) and a skill no agent offers. Each run creates a one-task Workflow per case and
//! measures, from the create request, the time until the task's status (read back from the
//! API server, as `a2a run` and `kubectl` see it) carries its reason, and for the impossible
//! case until the workflow is Failed. Goals: a reason within 1 s, a failure within 5 s.
//!
//! `cargo bench --bench workflow_stuck` (or `-- RUNS`, default 20).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use a2a::api::workflow::WorkflowPhase;
use a2a::api::{Agent, Workflow};
use a2a::controller::engine::{Engine, EngineConfig};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

const CASES: [(&str, &str, &str); 5] = [
    ("missing", "agent: nobody", "AgentNotFound"),
    ("admission", "agent: waiting", "AgentNotAdmitted"),
    ("replica", "agent: starting", "NoReadyReplica"),
    ("skill", "skill: no-such-skill", "NoAgentWithSkill"),
    ("never", "agent: huge", "Unschedulable"),
];

async fn agent(client: &kube::Client, name: &str, status: serde_json::Value) {
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let agent: Agent = serde_json::from_value(serde_json::json!({
        "apiVersion": "a2a.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {"command": ["a2a", "demo-agent"]}
    }))
    .expect("agent");
    api.create(&PostParams::default(), &agent).await.expect("create agent");
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&serde_json::json!({ "status": status })))
        .await
        .expect("agent status");
}

fn admitted(ok: bool, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!([{"type": "Admitted", "status": if ok { "True" } else { "False" }, "reason": reason, "message": message}])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let home = tempfile::tempdir().expect("tempdir");
        let (_server, client) = common::api_server(home.path()).await;
        agent(&client, "waiting", serde_json::json!({"phase": "Pending", "conditions": admitted(false, "InsufficientQuota", "needs 1 cpu but budget \"host\" has 400m of 1200m left")})).await;
        agent(&client, "starting", serde_json::json!({"phase": "Starting", "replicas": 1, "conditions": admitted(true, "Admitted", "fits in its budget")})).await;
        agent(&client, "huge", serde_json::json!({"phase": "Pending", "conditions": admitted(false, "ExceedsBudgetLimit", "needs 1500m cpu, more than budget \"host\"'s whole limit of 1200m")})).await;
        let engine = Engine::new(client.clone(), EngineConfig::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(Arc::clone(&engine).run(async move {
            let _ = stop_rx.await;
        }));
        let api: Api<Workflow> = Api::namespaced(client.clone(), "default");
        let mut reason_times: Vec<Duration> = Vec::new();
        let mut failure_times: Vec<Duration> = Vec::new();
        for run in 0..runs {
            for (case, target, reason) in CASES {
                let name = format!("{case}-{run}");
                let wf: Workflow = serde_yaml_ng::from_str(&format!(
                    "apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: {name} }}\nspec:\n  tasks:\n    - {{ name: t, {target}, message: hi }}\n"
                ))
                .expect("workflow");
                let started = Instant::now();
                api.create(&PostParams::default(), &wf).await.expect("create");
                let mut said = None;
                loop {
                    let got = api.get(&name).await.expect("get");
                    let status = got.status.unwrap_or_default();
                    if said.is_none() && status.tasks.first().and_then(|t| t.reason.as_deref()) == Some(reason) {
                        said = Some(started.elapsed());
                        reason_times.push(started.elapsed());
                    }
                    let failed = status.phase == Some(WorkflowPhase::Failed);
                    if failed {
                        failure_times.push(started.elapsed());
                    }
                    if said.is_some() && (reason != "Unschedulable" || failed) {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(30), "{name}: no {reason} within 30s");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        reason_times.sort();
        failure_times.sort();
        println!(
            "stuck reason in status, from create ({} workflows): p50 {:?}, p99 {:?}, max {:?}",
            reason_times.len(),
            percentile(&reason_times, 0.5),
            percentile(&reason_times, 0.99),
            reason_times.last().copied().unwrap_or_default()
        );
        println!(
            "never-fits task failed and workflow Failed, from create ({} workflows): p50 {:?}, p99 {:?}, max {:?}",
            failure_times.len(),
            percentile(&failure_times, 0.5),
            percentile(&failure_times, 0.99),
            failure_times.last().copied().unwrap_or_default()
        );
        let _ = stop_tx.send(());
        let _ = running.await;
    });
}
