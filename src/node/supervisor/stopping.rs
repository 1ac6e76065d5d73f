//! Stopping: the replicas of an agent scaled down or deleted, cgroups no agent or budget
//! owns after a restart of the daemon, and the cgroups of deleted budgets.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AgentRuntime, BACKGROUND_CGROUP, Key, Node, World};
use crate::node::cgroup::{CgroupDriver, CgroupPath};
use crate::node::logs;

impl World {
    /// After a restart: stops the processes of cgroups that no agent or budget owns any more
    /// — agents (or budgets) deleted while the daemon was down, replicas beyond a lowered
    /// `replicas`, stdio runs the previous daemon left — gracefully (SIGTERM, SIGKILL after the
    /// grace period), and removes those cgroups. Runs once, after the first full pass, when
    /// every replica still wanted has been re-adopted; in the background, so the loop goes on.
    pub(super) fn sweep_strays(&self, node: &Arc<Node>) {
        let mut keep: HashSet<CgroupPath> = HashSet::new();
        let mut leaves: HashSet<CgroupPath> = HashSet::new();
        for rt in self.runtime.values() {
            for r in rt.replicas.values() {
                keep.extend(r.cgroup.ancestors_and_self());
                leaves.insert(r.cgroup.clone());
            }
        }
        for cgroup in self.starting.values().filter_map(|(_, c, _)| c.as_ref()) {
            keep.extend(cgroup.ancestors_and_self());
            leaves.insert(cgroup.clone());
        }
        // The log relays outlive their agents' cgroups by design.
        leaves.extend(logs::relay_cgroup(&node.config.layout));
        for path in self.budget_paths.values() {
            keep.extend(path.ancestors_and_self());
            if let Ok(bg) = path.child(BACKGROUND_CGROUP) {
                keep.insert(bg);
            }
        }
        let top = node.config.layout.top();
        let mut strays = Vec::new();
        let mut dirs = vec![top.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(children) = node.driver.children(&dir) else { continue };
            for c in children {
                if leaves.contains(&c) {
                    continue;
                }
                if keep.contains(&c) {
                    dirs.push(c);
                } else {
                    strays.push(c);
                }
            }
        }
        let agents: HashSet<Key> = self.agents.keys().cloned().collect();
        // The replicas whose secret files stay (see `secret_files`), by cgroup leaf name.
        let files_kept: HashSet<String> =
            leaves.iter().filter_map(|c| c.to_string().rsplit('/').next().map(str::to_owned)).collect();
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            for path in strays {
                // A stdio run that started after the listing is not a stray.
                if node.stdio_runs.lock().is_ok_and(|runs| runs.contains(&path)) {
                    continue;
                }
                let pids = node.driver.pids(&path).unwrap_or_default();
                tracing::warn!(
                    cgroup = %path, processes = pids.len(),
                    "stopping a cgroup no agent or budget owns (deleted while the daemon was down)"
                );
                stop_cgroup(node.driver.as_ref(), &path, node.config.grace);
            }
            // Their processes stopped, agents deleted while the daemon was down give back
            // their uids and homes, and replicas gone meanwhile their secret files.
            node.sandbox.release_all_but(&agents);
            node.secret_files.sweep(&files_kept);
        });
    }

    /// Removes the cgroups of deleted budgets once their agents are gone: the agents lose
    /// their admission with their budget (`BudgetNotFound`) and are stopped first; a cgroup
    /// still holding processes (a replica stopping, a stdio run) is tried again later.
    pub(super) fn remove_doomed(&mut self, node: &Node) {
        let doomed = std::mem::take(&mut self.doomed);
        for path in doomed {
            match node.driver.pids(&path) {
                Ok(pids) if !pids.is_empty() => {
                    self.doomed.insert(path);
                    continue;
                }
                // Empty, or missing in some hierarchy: removing what remains is a no-op when
                // nothing does.
                _ => {
                    if let Err(e) = node.driver.remove(&path, Duration::from_millis(100)) {
                        tracing::warn!(cgroup = %path, error = %e, "removing a deleted budget's cgroup");
                        self.doomed.insert(path.clone());
                    }
                }
            }
            self.budget_limits.retain(|p, _| !p.ancestors_and_self().any(|a| a == path));
        }
    }
}

/// Stops every process of `path` (and below) gracefully — SIGTERM, then SIGKILL after
/// `grace` — and removes the cgroup.
pub(super) fn stop_cgroup(driver: &dyn CgroupDriver, path: &CgroupPath, grace: Duration) {
    let signal_all = |sig: rustix::process::Signal| {
        for pid in driver.pids(path).unwrap_or_default() {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    };
    // Left frozen by a daemon that ended without thawing it (a crash under pressure): a
    // frozen process takes no signal until thawed. A cgroup that was never frozen, or a host
    // without a freezer, has nothing to thaw.
    if let Err(e) = driver.thaw(path) {
        tracing::debug!(cgroup = %path, error = %e, "no thaw before stopping");
    }
    signal_all(rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && driver.pids(path).is_ok_and(|p| !p.is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = driver.remove(path, Duration::from_secs(5)) {
        tracing::warn!(cgroup = %path, error = %e, "removing a stray cgroup");
    }
}

pub(super) async fn stop_replicas(node: &Node, rt: &mut AgentRuntime, which: impl Fn(u32) -> bool) {
    let doomed: Vec<u32> = rt.replicas.keys().copied().filter(|i| which(*i)).collect();
    let frozen = rt.frozen;
    for i in doomed {
        if let Some(mut r) = rt.replicas.remove(&i) {
            // A frozen process takes no signal, not even SIGKILL under the v1 freezer, until
            // it is thawed: thaw it first, so that it stops as any other does (SIGTERM, grace).
            if frozen && let Err(e) = node.driver.thaw(&r.cgroup) {
                tracing::warn!(cgroup = %r.cgroup, error = %e, "cannot thaw a frozen replica to stop it");
            }
            if let Some(mut p) = r.process.take() {
                let grace = node.config.grace;
                let _ = tokio::task::spawn_blocking(move || p.stop(grace)).await;
            }
            node.remove_secret_files(&r.cgroup);
            if let Err(e) = node.driver.remove(&r.cgroup, Duration::from_secs(5)) {
                tracing::warn!(cgroup = %r.cgroup, error = %e, "removing cgroup");
            }
        }
    }
}
