//! Stdio agents: each task a fresh process in a cgroup of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;

use super::{Error, Node, Result};
use crate::api::common::Time;
use crate::api::{Agent, ResourceBudget};
use crate::node::cgroup::{CgroupLimits, CgroupPath};
use crate::node::process::{self, ExitInfo};

/// Runs stdio tasks: each one is a fresh process in its own cgroup (the agent's limits),
/// the message on stdin, stdout the result; a non-zero exit fails with stderr.
pub struct StdioTasks {
    node: Arc<Node>,
    budgets: Arc<std::sync::Mutex<BTreeMap<String, ResourceBudget>>>,
    next: std::sync::atomic::AtomicU64,
}

impl StdioTasks {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(StdioTasks { node, budgets: Arc::default(), next: std::sync::atomic::AtomicU64::new(0) })
    }
}

impl crate::controller::engine::StdioRunner for StdioTasks {
    fn run(
        &self,
        agent: &Agent,
        input: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, crate::controller::engine::StdioError>> + Send>,
    > {
        let node = self.node.clone();
        let agent = agent.clone();
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let budgets = self.budgets.lock().map(|b| b.clone()).unwrap_or_default();
        Box::pin(async move {
            // Runs are numbered past any replica index, so they never share a replica's cgroup.
            let slot = 1_000_000 + u32::try_from(n % 1_000_000).unwrap_or(0);
            let api: Api<ResourceBudget> = Api::all(node.client.clone());
            let budgets = if budgets.is_empty() {
                api.list(&Default::default())
                    .await
                    .map(|l| l.items.into_iter().map(|b| (b.name_any(), b)).collect())
                    .unwrap_or_default()
            } else {
                budgets
            };
            let cgroup = node.replica_cgroup(&budgets, &agent, slot).ok_or(Error::NoCgroupPath)?;
            let limits = CgroupLimits::for_agent(&agent.spec.resources, agent.spec.priority(), node.host_cores);
            tokio::task::spawn_blocking(move || {
                let track = |add: bool| {
                    let mut runs = node.stdio_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Checked under the lock `stop_stdio_runs` takes: a run either is seen there
                    // or never starts.
                    if add && node.closing.load(std::sync::atomic::Ordering::Acquire) {
                        return false;
                    }
                    if add {
                        runs.insert(cgroup.clone())
                    } else {
                        runs.remove(&cgroup)
                    };
                    true
                };
                if !track(true) {
                    return Err(Error::Stopping);
                }
                let result = node
                    .driver
                    .create(&cgroup, &limits)
                    .map_err(Error::from)
                    .and_then(|()| run_stdio(&node, &agent, &cgroup, input));
                let _ = node.driver.remove(&cgroup, Duration::from_secs(5));
                track(false);
                result
            })
            .await
            .unwrap_or_else(|source| Err(Error::Panicked { what: "the stdio run", source }))
            .map_err(Into::into)
        })
    }
}

fn run_stdio(node: &Node, agent: &Agent, cgroup: &CgroupPath, input: String) -> Result<String> {
    use std::io::{Read, Write};
    let spec = node.process_spec(agent, 0, 0)?;
    let mut p = process::spawn_piped(node.driver.as_ref(), cgroup, &spec)?;
    let process::Pipes { mut stdin, mut stdout, mut stderr } = p.take_pipes().ok_or(Error::NoPipes)?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).map_err(Error::Stdout)?;
    let _ = writer.join();
    let err = err_reader.join().unwrap_or_default();
    let oom_before = 0;
    let info = p.wait_timeout(None)?.unwrap_or(ExitInfo { code: None, signal: None });
    let oom_after = node.driver.stats(cgroup).map_or(0, |s| s.oom_kills);
    let t = process::classify(&info, oom_before, oom_after, Time::now());
    match (info.code, t.reason) {
        (Some(0), _) => Ok(String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned()),
        (_, crate::api::agent::TerminationReason::OomKilled) => Err(Error::OomKilled),
        (Some(code), _) => Err(Error::Exited { code, stderr: err.trim().to_owned() }),
        (None, _) => Err(Error::Signaled { signal: info.signal.unwrap_or(0), stderr: err.trim().to_owned() }),
    }
}
