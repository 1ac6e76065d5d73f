//! Nested ResourceBudgets under `a2a serve` on the real kernel: a child's limit over its
//! parent's is clamped to the parent's, visibly (a condition and an Event), and enforced;
//! deleting nested budgets leaves no cgroup in any hierarchy; a budget's alerts fire from the
//! use the node measures.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use a2a::api::agent::AgentPhase;
use a2a::api::common::ConditionStatus;
use a2a::api::{Agent, ResourceBudget};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::DeleteParams;

use common::node::{Daemon, Scratch, apply, tear_down};

async fn wait_for<K>(api: &Api<K>, name: &str, within: Duration, ok: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await
            && ok(&o)
        {
            return o;
        }
        assert!(Instant::now() < deadline, "{name} never reached the expected state: {:#?}", api.get_opt(name).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The directories of cgroup `rel` in every hierarchy mounted under /sys/fs/cgroup (every v1
/// controller's, and the unified one).
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join(rel)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    if root.join(rel).is_dir() {
        out.push(root.join(rel));
    }
    out
}

fn phase(a: &Agent) -> Option<AgentPhase> {
    a.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_budget_over_its_parent_is_clamped_visibly_and_nested_budgets_leave_no_cgroup() {
    let scratch = Scratch::new("nested");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // The host budget has "60%" of the host's CPU; "team" asks for all of it (over its parent
    // only once the share is resolved, which no validation can see), "squad" for more memory
    // than "team" (applied apart, as a later edit would be).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let host_millis = cores * 600;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: team }}\nspec: {{ parent: host, limits: {{ cpu: \"{cores}\", memory: 256Mi }} }}\n"
        ),
    );
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: squad }\nspec: { parent: team, limits: { memory: 512Mi } }\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: inner }\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  budget: squad\n  resources: { limits: { cpu: 500m, memory: 64Mi } }\n",
    );
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    let clamped = |name: &'static str| {
        let budgets = budgets.clone();
        async move {
            let b = wait_for(&budgets, name, Duration::from_secs(20), |b| {
                b.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.type_ == "LimitsClamped" && c.status == ConditionStatus::True)
                })
            })
            .await;
            b.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "LimitsClamped")).expect("condition")
        }
    };
    let show = a2a::api::quantity::format_millicores;
    let team_cond = clamped("team").await;
    assert_eq!(team_cond.reason, "OverParent");
    assert_eq!(
        team_cond.message,
        format!(
            "limits.cpu {} is over budget \"host\"'s {}: {} is enforced",
            show(cores * 1000),
            show(host_millis),
            show(host_millis)
        )
    );
    let cond = clamped("squad").await;
    assert_eq!(cond.message, "limits.memory 512Mi is over budget \"team\"'s 256Mi: 256Mi is enforced");
    let host = wait_for(&budgets, "host", Duration::from_secs(10), |b| b.status.is_some()).await;
    let host_cond = host.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "LimitsClamped"));
    assert_eq!(host_cond.map(|c| c.status), Some(ConditionStatus::False), "host has no parent");

    // An Event says it too.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        if let Some(e) = list.items.iter().find(|e| {
            e.involved_object.name.as_deref() == Some("squad") && e.reason.as_deref() == Some("LimitsClamped")
        }) {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.message.as_deref(), Some(cond.message.as_str()));
            break;
        }
        assert!(Instant::now() < deadline, "no LimitsClamped event: {:#?}", list.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The kernel enforces the parent's limits on the child's cgroup.
    let team_dir = format!("{top}/host/team");
    let squad_dir = format!("{team_dir}/squad");
    let quota = host_millis * 100;
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (cpu_file, cpu_want, mem_file) = if v2 {
        (
            format!("/sys/fs/cgroup/{team_dir}/cpu.max"),
            format!("{quota} 100000\n"),
            format!("/sys/fs/cgroup/{squad_dir}/memory.max"),
        )
    } else {
        (
            format!("/sys/fs/cgroup/cpu/{team_dir}/cpu.cfs_quota_us"),
            format!("{quota}\n"),
            format!("/sys/fs/cgroup/memory/{squad_dir}/memory.limit_in_bytes"),
        )
    };
    assert_eq!(std::fs::read_to_string(&cpu_file).expect("cpu quota"), cpu_want);
    assert_eq!(std::fs::read_to_string(&mem_file).expect("memory limit").trim(), (256u64 << 20).to_string());

    // Admission holds agents to the same limits: what fits in the declared limits of "team"
    // but not in what the kernel enforces waits.
    let agents: Api<Agent> = Api::namespaced(client.clone(), "default");
    wait_for(&agents, "inner", Duration::from_secs(30), |a| phase(a) == Some(AgentPhase::Running)).await;
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: greedy }}\nspec:\n  command: [a2a, demo-agent, --skill, echo]\n  budget: squad\n  resources: {{ limits: {{ cpu: {host_millis}m }} }}\n"
        ),
    );
    let greedy = wait_for(&agents, "greedy", Duration::from_secs(10), |a| phase(a) == Some(AgentPhase::Pending)).await;
    let admitted = greedy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Admitted")).cloned();
    let message = admitted.map(|c| c.message).unwrap_or_default();
    assert!(message.starts_with(&format!("needs {} cpu but budget", show(host_millis))), "{message}");

    // Deleting the parent first, then the child: nothing of either stays in any hierarchy.
    assert!(!cgroup_dirs(&squad_dir).is_empty());
    budgets.delete("team", &DeleteParams::default()).await.expect("delete team");
    wait_for(&agents, "inner", Duration::from_secs(20), |a| phase(a) == Some(AgentPhase::Pending)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cgroup_dirs(&team_dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new(), "the parent's cgroup (and the child's) went");
    // The child budget, whose parent is gone, is not given a cgroup again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new(), "no cgroup is made again for the orphaned child");
    budgets.delete("squad", &DeleteParams::default()).await.expect("delete squad");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cgroup_dirs(&team_dir), Vec::<PathBuf>::new());
    assert!(!cgroup_dirs(&format!("{top}/host")).is_empty(), "the host budget's cgroup stays");
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_over_its_cpu_alert_threshold_fires_from_measured_use_with_an_event() {
    let scratch = Scratch::new("alerts");
    let (home, top) = (scratch.home(), scratch.top());
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    // A busy loop held to 100m uses up to 20% of the budget's 500m: over the CPU alert's 4%
    // even on a loaded host, and far under the memory alert's 99%.
    apply(
        home,
        "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: { name: alarm }\nspec:\n  parent: host\n  limits: { memory: 64Mi, cpu: 500m }\n  alerts: [{ resource: memory, above: \"99%\" }, { resource: cpu, above: \"4%\" }]\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: { name: spin }\nspec:\n  command: [sh, -c, \"while :; do :; done\"]\n  budget: alarm\n  resources: { limits: { cpu: 100m, memory: 64Mi } }\n",
    );
    let budgets: Api<ResourceBudget> = Api::all(client.clone());
    let firing = |b: &ResourceBudget| {
        b.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "AlertFiring" && c.status == ConditionStatus::True))
    };
    let b = wait_for(&budgets, "alarm", Duration::from_secs(60), firing).await;
    let s = b.status.expect("status");
    let cond =
        |t: &str| s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status, c.reason.clone(), c.message.clone()));
    assert_eq!(
        cond("AlertFiring"),
        Some((ConditionStatus::True, "ThresholdCrossed".into(), "cpu above 4%".into())),
        "the CPU alert is evaluated from the replicas' CPU; the memory alert does not fire"
    );
    assert_eq!(cond("Pressure").map(|c| (c.0, c.1)), Some((ConditionStatus::False, "Room".into())));
    let used = s.used.expect("used is measured");
    assert!(used.memory_bytes > 0, "{used:?}");
    assert!(used.cpu_millicores >= 20, "CPU use is measured locally: {used:?}");
    assert!(used.pids > 0, "{used:?}");
    assert_eq!(s.allocated.map(|a| (a.memory_bytes, a.cpu_millicores)), Some((64 << 20, 100)));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events.list(&Default::default()).await.expect("events");
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.involved_object.name.as_deref() == Some("alarm") && e.reason.as_deref() == Some("AlertFiring"))
        {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert_eq!(e.message.as_deref(), Some("cpu use is above the 4% threshold"));
            break;
        }
        assert!(Instant::now() < deadline, "no AlertFiring event: {:#?}", list.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tear_down(daemon).await;
}

/// What a webhook receiver got: the `Authorization` header and the JSON body of each POST.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// An HTTP webhook receiver on 127.0.0.1 that answers its first request 500 and the others
/// 200, as a receiver that is briefly down would.
async fn webhook_receiver() -> (std::net::SocketAddr, Received) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Received = Received::default();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get(hyper::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push((auth, json));
                            seen.len()
                        };
                        let status = if n == 1 { 500 } else { 200 };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_reaches_its_webhook_in_alertmanagers_format_retried_and_then_resolved() {
    use k8s_openapi::api::core::v1::Secret;
    let scratch = Scratch::new("notify");
    let (home, top) = (scratch.home(), scratch.top());
    let (addr, got) = webhook_receiver().await;
    let daemon = Daemon::start(home, top, &[]);
    let client = daemon.client().await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hook", "namespace": "default"},
        "stringData": {"token": "s3cret-token\n"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default").create(&Default::default(), &secret).await.expect("secret");
    // One sleeping process is 1% of 100 pids: the alert fires while the agent runs.
    apply(
        home,
        &format!(
            "apiVersion: a2a.dev/v1alpha1\nkind: ResourceBudget\nmetadata: {{ name: paged }}\nspec:\n  parent: host\n  limits: {{ memory: 64Mi, cpu: 500m, pids: 100 }}\n  alerts:\n  - resource: pids\n    above: \"1%\"\n    notify: {{ url: \"http://{addr}/hook\", secretRef: {{ name: hook, key: token }} }}\n---\n\
             apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: sleeper }}\nspec:\n  command: [sleep, \"1000\"]\n  budget: paged\n  resources: {{ limits: {{ cpu: 100m, memory: 32Mi }} }}\n"
        ),
    );
    let received = |n: usize| {
        let got = got.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = got.lock().unwrap().clone();
                if now.len() >= n {
                    return now;
                }
                assert!(Instant::now() < deadline, "the receiver got {} of {n} requests: {now:#?}", now.len());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // Answered 500, the firing notification is sent again.
    let firing = received(2).await;
    assert_eq!(firing[0], firing[1], "the retry sends the same payload");
    let (auth, body) = &firing[1];
    assert_eq!(auth.as_deref(), Some("Bearer s3cret-token"), "the token of the Secret, without its newline");
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "a2a");
    assert_eq!(body["truncatedAlerts"], 0);
    assert_eq!(
        body["groupLabels"],
        serde_json::json!({"alertname": "ResourceBudgetAlert", "budget": "paged", "resource": "pids"})
    );
    let labels = serde_json::json!({"alertname": "ResourceBudgetAlert", "budget": "paged", "resource": "pids", "severity": "warning"});
    assert_eq!(body["commonLabels"], labels);
    assert!(body["groupKey"].as_str().is_some_and(|k| k.contains("budget=\"paged\"")), "{body}");
    let external = body["externalURL"].as_str().expect("externalURL");
    assert!(external.starts_with("https://127.0.0.1:"), "{body}");
    let alerts = body["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"], labels);
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z", "a firing alert has not ended");
    let starts: jiff::Timestamp = alert["startsAt"].as_str().expect("startsAt").parse().expect("RFC 3339");
    assert_eq!(alert["generatorURL"], format!("{external}/apis/a2a.dev/v1alpha1/resourcebudgets/paged"));
    assert_eq!(alert["fingerprint"].as_str().map(str::len), Some(16));
    assert!(alert["annotations"]["summary"].as_str().is_some_and(|s| s.contains("pids use above 1%")), "{body}");
    assert!(alert["annotations"]["description"].is_string());
    assert_eq!(body["commonAnnotations"], alert["annotations"]);

    // The agent goes: no pid is left, and the alert resolves.
    Api::<Agent>::namespaced(client.clone(), "default")
        .delete("sleeper", &DeleteParams::default())
        .await
        .expect("delete the agent");
    let all = received(3).await;
    let (auth, body) = &all[2];
    assert_eq!(auth.as_deref(), Some("Bearer s3cret-token"));
    assert_eq!(body["status"], "resolved");
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["fingerprint"], firing[1].1["alerts"][0]["fingerprint"], "the same alert");
    assert_eq!(alert["startsAt"], firing[1].1["alerts"][0]["startsAt"]);
    let ends: jiff::Timestamp = alert["endsAt"].as_str().expect("endsAt").parse().expect("RFC 3339");
    assert!(ends >= starts, "{body}");
    tear_down(daemon).await;
}
