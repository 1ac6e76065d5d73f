//! A seeded, bounded property test of task identity through the real daemon: random DAGs of
//! 1–200 tasks run on demo agents while the test SIGKILLs agent processes at random moments,
//! SIGKILLs `a2a serve` three times (a new one takes over each time) and tries an edit of the
//! running workflow's tasks, which is refused. Whatever happens, every task ends exactly once
//! in status, Succeeded, and its output is its own input transformed: never another task's.
//!
//! Cases come from seeds (`A2A_PROPERTY_SEEDS=7,8` to choose them; a failure names its seed).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use a2a::api::Workflow;
use a2a::api::workflow::{TaskPhase, WorkflowPhase};
use common::agent_processes_of;
use common::node::{Daemon, Scratch, apply, events, tear_down};
use kube::Api;

/// One random workflow and what each task must answer.
struct Case {
    yaml: String,
    /// Task name → expected output, in spec order.
    expected: Vec<(String, String)>,
}

/// A random DAG over the demo agent: a task is either `sleep Nms` (answers `slept Nms`, N
/// unique per task) or `uppercase TOKEN {{ upstream output }}` (answers the rendered text in
/// upper case); dependencies point only to earlier tasks, so it is acyclic.
fn case(rng: &mut fastrand::Rng) -> Case {
    let n = rng.usize(1..=200);
    let mut expected: Vec<(String, String)> = Vec::with_capacity(n);
    let mut tasks = String::new();
    for i in 0..n {
        let name = format!("t{i}");
        let mut deps: Vec<usize> = (0..rng.usize(0..=3.min(i))).map(|_| rng.usize(0..i)).collect();
        deps.sort_unstable();
        deps.dedup();
        let (message, output) = if rng.bool() {
            let ms = 150 + i;
            (format!("sleep {ms}ms"), format!("slept {ms}ms"))
        } else {
            let token: String = (0..6).map(|_| rng.alphabetic().to_ascii_lowercase()).collect();
            match deps.first() {
                Some(&d) => (
                    format!("uppercase {name}-{token} {{{{ tasks.t{d}.output }}}}"),
                    format!("{name}-{token} {}", expected[d].1).to_uppercase(),
                ),
                None => (format!("uppercase {name}-{token}"), format!("{name}-{token}").to_uppercase()),
            }
        };
        let deps: Vec<String> = deps.iter().map(|d| format!("t{d}")).collect();
        tasks.push_str(&format!(
            "    - {{ name: {name}, agent: worker, dependsOn: [{}], message: \"{message}\" }}\n",
            deps.join(", ")
        ));
        expected.push((name, output));
    }
    let yaml = format!(
        "apiVersion: a2a.dev/v1alpha1\nkind: Agent\nmetadata: {{ name: worker }}\n\
         spec: {{ command: [a2a, demo-agent, --skill, uppercase, --skill, sleep], replicas: 2, maxConcurrentTasks: 8 }}\n---\n\
         apiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{ name: prop }}\nspec:\n\
         \x20 retry: {{ limit: 30, backoff: {{ initial: 50ms, factor: 2, max: 1s }} }}\n  tasks:\n{tasks}"
    );
    Case { yaml, expected }
}

async fn workflow(client: &kube::Client) -> Option<Workflow> {
    Api::<Workflow>::namespaced(client.clone(), "default").get_opt("prop").await.ok().flatten()
}

fn done(wf: &Workflow) -> bool {
    matches!(
        wf.status.as_ref().and_then(|s| s.phase),
        Some(WorkflowPhase::Succeeded | WorkflowPhase::Failed | WorkflowPhase::Cancelled)
    )
}

/// Finished tasks, from `status.progress` (`finished/all`), which a workflow of any size keeps
/// in its object (a big one keeps its task entries beside it).
fn finished_tasks(wf: &Workflow) -> usize {
    let progress = wf.status.as_ref().and_then(|s| s.progress.as_deref()).unwrap_or("0/0");
    progress.split_once('/').and_then(|(done, _)| done.parse().ok()).unwrap_or(0)
}

/// SIGKILLs one of the agent processes of `home`, chosen by `rng` (none when none runs).
fn kill_an_agent(home: &Path, rng: &mut fastrand::Rng) {
    let pids = agent_processes_of(home);
    if !pids.is_empty() {
        let pid = pids[rng.usize(0..pids.len())];
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// Waits (generously) until `pred` holds for the workflow or it is finished.
async fn until(client: &kube::Client, what: &str, pred: impl Fn(&Workflow) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(wf) = workflow(client).await
            && (pred(&wf) || done(&wf))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let case = case(&mut rng);
    let scratch = Scratch::new(&format!("wfprop{seed}"));
    let (home, top) = (scratch.home(), scratch.top());
    let mut daemon = Daemon::start(home, top, &["--restart-backoff", "100ms"]);
    apply(home, &case.yaml);
    let total = case.expected.len();
    let (mut mid_run, mut agent_kills, mut refused) = (0, 0, false);
    for kill in 0..3 {
        let client = daemon.client().await;
        // Somewhere in the run: after a random share of the tasks finished.
        let at = rng.usize(0..=total / 2);
        until(&client, "progress", |wf| finished_tasks(wf) >= at).await;
        if rng.bool() {
            kill_an_agent(home, &mut rng);
            agent_kills += 1;
        }
        if kill == 1 {
            // An edit of the running workflow's tasks is refused, naming the field; nothing changes.
            let edited = case.yaml.replace("uppercase ", "uppercase edited ").replace("sleep 1", "sleep 9");
            let file = home.join("edited.yaml");
            std::fs::write(&file, &edited).expect("write");
            let out = Command::new(env!("CARGO_BIN_EXE_a2a"))
                .args(["apply", "-f"])
                .arg(&file)
                .env("A2A_HOME", home)
                .output()
                .expect("a2a apply");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let running = workflow(&client).await.is_some_and(|wf| !done(&wf));
            if running {
                assert!(!out.status.success(), "seed {seed}: the edit was accepted");
                assert!(stderr.contains("spec.tasks: Invalid value: field is immutable"), "seed {seed}: {stderr}");
                refused = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..300))).await;
        mid_run += usize::from(workflow(&client).await.is_some_and(|wf| !done(&wf)));
        daemon.kill9();
        if rng.bool() {
            kill_an_agent(home, &mut rng);
            agent_kills += 1;
        }
        daemon = Daemon::start(home, top, &["--restart-backoff", "100ms"]);
    }
    let client = daemon.client().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut wf = loop {
        let wf = workflow(&client).await.expect("the workflow exists");
        if done(&wf) {
            break wf;
        }
        assert!(Instant::now() < deadline, "seed {seed}: not finished: {:?}", wf.status.and_then(|s| s.progress));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    a2a::controller::offload::fill(&client, &mut wf).await.expect("the task entries beside a big workflow");
    let status = wf.status.clone().expect("status");
    eprintln!(
        "seed {seed}: {total} tasks; daemon SIGKILLed 3 times ({mid_run} while the workflow ran), \
         {agent_kills} agent processes SIGKILLed, edit refused: {refused}"
    );
    // Every task ends exactly once in status, in spec order, Succeeded, with its own output.
    let names: Vec<&str> = status.tasks.iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = case.expected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want, "seed {seed}: one status entry per task");
    for (t, (name, output)) in status.tasks.iter().zip(&case.expected) {
        assert_eq!(t.phase, TaskPhase::Succeeded, "seed {seed}: {t:#?}");
        assert_eq!(t.output.as_deref(), Some(output.as_str()), "seed {seed}: task {name} got another output");
    }
    assert_eq!(status.phase, Some(WorkflowPhase::Succeeded), "seed {seed}");
    // On the agents: every attempt that ran was an attempt of a task of this spec, and the
    // attempt each task records really ended on an agent. (Attempts may run more than once or
    // be lost to a SIGKILL: status writes are batched, so one sent just before a kill, whose
    // start or A2A task id was not stored yet, is sent again; its result goes nowhere else.)
    let uid = wf.metadata.uid.clone().expect("uid");
    let ends = events(home, "worker", "end");
    for id in ends.keys() {
        let task = id.strip_prefix(&format!("{uid}-")).and_then(|rest| rest.rsplit_once('-')).map(|(task, _)| task);
        assert!(
            task.is_some_and(|task| want.contains(&task)),
            "seed {seed}: the agents ran an attempt of no task of the spec: {id}"
        );
    }
    for t in &status.tasks {
        let id = a2a::controller::plan::message_id(&uid, &t.name, t.attempts);
        assert!(ends.contains_key(&id), "seed {seed}: the recorded attempt {id} never ended on an agent");
    }
    tear_down(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_dags_survive_agent_crashes_daemon_kills_and_a_refused_edit_with_every_output_its_own() {
    let seeds: Vec<u64> = std::env::var("A2A_PROPERTY_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    for seed in seeds {
        run_case(seed).await;
    }
}
