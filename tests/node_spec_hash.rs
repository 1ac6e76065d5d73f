//! The spec hash across a change of its algorithm, on real processes: a replica whose status
//! records an older version of the hash (as an a2a from before version 2 wrote it) is adopted
//! by a restarted daemon without a restart when that version's hash of the current spec is the
//! one recorded, its status then records the current version; a replica whose older-version
//! hash is of another spec (the spec changed while it ran) is restarted. Then, on the
//! current version, a limit change applies in place and an environment change restarts.

mod common;

use std::time::Duration;

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use a2a::node::spec_hash::{self, SpecHash};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use common::node::{Daemon, Scratch, apply, pids, tear_down, wait_agent};

const AGENTS: &str = "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: kept }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n---\n\
                      apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: changed }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n";

fn running(a: &Agent) -> bool {
    a.status.as_ref().is_some_and(|s| s.phase == Some(AgentPhase::Running) && s.ready_replicas == 1)
}

fn recorded_hash(a: &Agent) -> Option<String> {
    a.status.as_ref()?.instances.first()?.spec_hash.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_recorded_with_an_older_hash_version_is_restarted_only_when_its_spec_changed() {
    let scratch = Scratch::new("spechash");
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, AGENTS);
    let mut before = Vec::new();
    for name in ["kept", "changed"] {
        let a = wait_agent(&client, name, Duration::from_secs(60), running).await;
        assert_eq!(recorded_hash(&a).as_deref(), Some(SpecHash::of(&a.spec).as_str()), "{name}");
        assert_eq!(pids(&a).len(), 1, "{name}");
        before.push(a);
    }
    daemon.kill9();

    // With no node running, the status is rewritten as an a2a of hash version 1 left it: for
    // `kept` the version-1 hash of its spec, for `changed` the one of the spec it had before
    // a change made while no daemon ran.
    {
        let api_only = common::Daemon::spawn(home);
        let client = common::client_from(&api_only.kubeconfig, None).await;
        let agents: Api<Agent> = Api::namespaced(client, "default");
        let mut older = before[1].spec.clone();
        older.args.push("--old-flag".into());
        for (a, v1) in [(&before[0], spec_hash::v1(&before[0].spec)), (&before[1], spec_hash::v1(&older))] {
            assert_eq!(spec_hash::version_of(&v1), Some(1));
            let mut instances = a.status.as_ref().unwrap().instances.clone();
            instances[0].spec_hash = Some(v1);
            let name = a.metadata.name.as_deref().unwrap();
            agents
                .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"instances": instances}})))
                .await
                .unwrap();
        }
        api_only.kill();
    }

    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let current = SpecHash::of(&before[0].spec);
    let kept_pid = pids(&before[0]);
    let kept = wait_agent(&client, "kept", Duration::from_secs(30), |a| {
        recorded_hash(a).as_deref() == Some(current.as_str()) && running(a)
    })
    .await;
    assert_eq!(pids(&kept), kept_pid, "the replica with the same spec is adopted, not restarted");
    let changed_pid = pids(&before[1]);
    let changed = wait_agent(&client, "changed", Duration::from_secs(60), |a| {
        running(a) && !pids(a).is_empty() && pids(a) != changed_pid
    })
    .await;
    assert_eq!(recorded_hash(&changed).as_deref(), Some(current.as_str()));
    // Long enough for a wrong restart of `kept` to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = wait_agent(&client, "kept", Duration::from_secs(5), running).await;
    assert_eq!(pids(&kept), kept_pid, "kept is still the replica started before the upgrade");
    assert_eq!(kept.status.as_ref().map(|s| s.restarts), Some(0));

    // On the current version: a limit applies in place, an environment change restarts.
    let agents: Api<Agent> = Api::namespaced(client.clone(), "default");
    let patch = |spec: serde_json::Value| Patch::Merge(json!({ "spec": spec }));
    agents
        .patch("kept", &PatchParams::default(), &patch(json!({"resources": {"limits": {"pids": 64}}})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = wait_agent(&client, "kept", Duration::from_secs(5), running).await;
    assert_eq!(pids(&kept), kept_pid, "a limit change does not restart");
    agents
        .patch("kept", &PatchParams::default(), &patch(json!({"env": [{"name": "MODE", "value": "new"}]})))
        .await
        .unwrap();
    let restarted = wait_agent(&client, "kept", Duration::from_secs(60), |a| {
        running(a) && !pids(a).is_empty() && pids(a) != kept_pid
    })
    .await;
    assert_eq!(recorded_hash(&restarted).as_deref(), Some(SpecHash::of(&restarted.spec).as_str()));
    assert_ne!(SpecHash::of(&restarted.spec), current);
    tear_down(daemon).await;
}
