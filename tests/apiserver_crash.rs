//! Durability: `a2a serve` is SIGKILLed again and again while clients create objects; every
//! create that was answered 2xx is there afterwards, and resourceVersions keep increasing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use a2a::api::Agent;
use kube::api::{Api, ListParams, PostParams};

use common::{Daemon, agent, client_from};

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_creates_survive_sigkill() {
    let home = tempfile::tempdir().unwrap();
    // name -> resourceVersion the server answered with.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_rv_before_round = 0u64;
    for round in 0..5u64 {
        let daemon = Daemon::spawn(home.path());
        let client = client_from(&daemon.kubeconfig, None).await;
        let api: Api<Agent> = Api::namespaced(client, "default");
        let mut writers = Vec::new();
        for w in 0..4 {
            let api = api.clone();
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    match api.create(&PostParams::default(), &agent(&name)).await {
                        Ok(a) => {
                            let rv: u64 = a.metadata.resource_version.unwrap().parse().unwrap();
                            mine.push((name, rv));
                        }
                        Err(_) => break, // the daemon is gone
                    }
                }
                mine
            }));
        }
        // Kill at a different point in each round.
        tokio::time::sleep(Duration::from_millis(250 + 170 * round)).await;
        daemon.kill();
        let mut round_rvs = Vec::new();
        for w in writers {
            for (name, rv) in w.await.unwrap() {
                round_rvs.push(rv);
                acked.insert(name, rv);
            }
        }
        assert!(!round_rvs.is_empty(), "round {round}: no create succeeded before the kill");
        let min = *round_rvs.iter().min().unwrap();
        assert!(
            min > max_rv_before_round,
            "round {round}: resourceVersion {min} is not above {max_rv_before_round} from before the restart"
        );
        max_rv_before_round = *round_rvs.iter().max().unwrap();
    }

    let daemon = Daemon::spawn(home.path());
    let client = client_from(&daemon.kubeconfig, None).await;
    let api: Api<Agent> = Api::namespaced(client, "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let stored: BTreeMap<String, u64> = list
        .items
        .iter()
        .map(|a| (a.metadata.name.clone().unwrap(), a.metadata.resource_version.clone().unwrap().parse().unwrap()))
        .collect();
    let missing: Vec<_> = acked.keys().filter(|n| !stored.contains_key(*n)).collect();
    assert!(missing.is_empty(), "{} acknowledged creates lost: {missing:?}", missing.len());
    // Controllers (status writes) may have changed objects since; never to an older version.
    for (name, rv) in &acked {
        assert!(stored[name] >= *rv, "{name} went back from version {rv} to {}", stored[name]);
    }
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= max_rv_before_round);
    let next = api.create(&PostParams::default(), &agent("after-crashes")).await.unwrap();
    let next_rv: u64 = next.metadata.resource_version.unwrap().parse().unwrap();
    assert!(next_rv > list_rv, "{next_rv} after {list_rv}");
    eprintln!("{} acknowledged creates over 5 SIGKILLs, all present; {} objects stored", acked.len(), stored.len());
}
