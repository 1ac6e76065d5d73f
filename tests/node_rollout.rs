//! A spec change under `a2a serve` on the real kernel: the replicas are replaced one at a
//! time, lowest index first, each only once the others are ready.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use a2a::api::Agent;
use a2a::api::agent::AgentPhase;
use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;

use common::node::{Daemon, Scratch, apply, phase, pids, tear_down, wait_agent};

/// Three replicas of the demo agent. `a2a` agents run the daemon's own binary wherever it is
/// (a checkout under `/tmp` is hidden from agents, whose `/tmp` is private).
fn agent(version: &str) -> String {
    format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: rolled }}\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  replicas: 3\n  env: [{{ name: VERSION, value: \"{version}\" }}]\n---\n"
    )
}

fn all_ready(a: &Agent) -> bool {
    phase(a) == Some(AgentPhase::Running)
        && a.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == 3 && s.instances.iter().filter(|i| i.ready).count() == 3)
}

fn hashes(a: &Agent) -> BTreeSet<String> {
    a.status.as_ref().map(|s| s.instances.iter().filter_map(|i| i.spec_hash.clone()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_replaces_the_replicas_one_at_a_time_in_index_order() {
    let scratch = Scratch::new("rollout");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    apply(home, &agent("1"));
    let before = wait_agent(&client, "rolled", Duration::from_secs(30), all_ready).await;
    let old_hashes = hashes(&before);
    assert_eq!(old_hashes.len(), 1, "one spec: {old_hashes:?}");
    let old_pids = pids(&before);

    // Every status the node writes during the rollout, as the watch delivers it.
    let api: Api<Agent> = Api::namespaced(client.clone(), "default");
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    apply(home, &agent("2"));
    let mut seen = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = stream.next().await {
            let (watcher::Event::Apply(a) | watcher::Event::InitApply(a)) = ev.expect("watch") else { continue };
            if a.metadata.name.as_deref() != Some("rolled") {
                continue;
            }
            seen.push(a.clone());
            if all_ready(&a) && !hashes(&a).iter().any(|h| old_hashes.contains(h)) {
                return a;
            }
        }
        panic!("the watch ended");
    })
    .await;
    let after = done.unwrap_or_else(|_| panic!("the rollout did not end in 60 s; last status: {:#?}", seen.last()));

    assert!(
        seen.iter().any(|a| hashes(a).len() == 2),
        "a status in the middle of the rollout (both specs running) was seen: {seen:#?}"
    );
    let new_pids = pids(&after);
    assert_eq!(new_pids.len(), 3, "{new_pids:?}");
    assert!(new_pids.iter().all(|p| !old_pids.contains(p)), "every replica was replaced: {old_pids:?} → {new_pids:?}");
    for a in &seen {
        let s = a.status.as_ref().expect("status");
        // Never more than one replica down for the rollout.
        let ready = s.instances.iter().filter(|i| i.ready).count();
        assert!(ready >= 2, "two replicas down at once: {:#?}", s.instances);
        // Replaced lowest index first: the replicas on the new spec are always 0..k.
        let new: Vec<u32> = s
            .instances
            .iter()
            .filter(|i| i.spec_hash.as_ref().is_some_and(|h| !old_hashes.contains(h)))
            .map(|i| i.replica)
            .collect();
        assert_eq!(new, (0..new.len() as u32).collect::<Vec<_>>(), "replaced in index order: {:#?}", s.instances);
    }
    tear_down(daemon).await;
}
