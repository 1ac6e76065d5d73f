//! The replicas of one agent: taken over from status after a restart, restarted after an
//! exit, replaced on a spec change, probed until ready, scaled. The decisions are the plain
//! functions of [`lifecycle`], [`rollout`] and [`readiness`]; this is the I/O around them.

use std::time::{Duration, Instant};

use kube::{Resource, ResourceExt};

use super::ending::remove_in_background;
use super::spawn::{Previous, StartJob};
use super::stopping::stop_replicas;
use super::{AgentRuntime, Key, Node, Replica, START_STATUS_HOLD, World, agent_status, url_status, write_agent};
use crate::api::agent::{Instance, Protocol, RestartPolicy, Termination, TerminationReason};
use crate::api::common::{Time, set_condition};
use crate::controller::admission::Verdict;
use crate::controller::lifecycle::{self, NextStart, Outcome, Restart};
use crate::controller::{readiness, rollout};
use crate::node::cgroup::{CgroupLimits, CgroupPath};
use crate::node::process::{self, AgentProcess, ExitInfo};

impl World {
    /// A replica's process ended: how (exit code, signal, OOM kill), and whether and when it
    /// starts again ([`lifecycle::after_exit`]).
    pub(super) fn exited(&mut self, node: &Node, key: &Key, replica: u32, pid: u32) {
        let Some(rt) = self.runtime.get_mut(key) else { return };
        let Some(r) = rt.replicas.get_mut(&replica).filter(|r| r.pid == pid && r.process.is_some()) else { return };
        let info = r
            .process
            .as_mut()
            .and_then(|p| p.wait_timeout(Some(Duration::ZERO)).ok().flatten())
            .unwrap_or(ExitInfo { code: None, signal: None });
        let oom_after = node.driver.stats(&r.cgroup).map_or(r.oom_before, |s| s.oom_kills);
        let termination = process::classify(&info, r.oom_before, oom_after, Time::now());
        tracing::info!(agent = %key.1, replica, pid, reason = ?termination.reason, "agent replica exited");
        if termination.reason == crate::api::agent::TerminationReason::OomKilled && self.agents.contains_key(key) {
            crate::metrics::registry().agent_oom_killed(&key.0, &key.1);
        }
        r.oom_before = oom_after;
        r.process = None;
        node.remove_secret_files(&r.cgroup);
        r.ready = false;
        let policy = self.agents.get(key).map_or(RestartPolicy::Always, |a| a.spec.restart_policy());
        let backoff = lifecycle::Backoff::with_initial(node.config.restart_backoff);
        let now = Instant::now();
        let ran_for = now.saturating_duration_since(r.started);
        let (restart, crashes) = lifecycle::after_exit(policy, Outcome::of(&termination), ran_for, r.crashes, &backoff);
        r.crashes = crashes;
        match restart {
            Restart::After(wait) => {
                let next_start = now + wait;
                r.next_start = Some(next_start);
                self.deadlines.at(key, next_start);
            }
            Restart::Never => {
                r.next_start = None;
                r.ended = Some(termination.clone());
                // What the agent forked goes with it, and so does its cgroup.
                remove_in_background(node, r.cgroup.clone());
            }
        }
        rt.last_termination = Some(termination);
    }

    /// One agent's pass: its replicas adopted, stopped, replaced, started or probed as the
    /// decisions say, and its status queued.
    pub(super) async fn reconcile_agent(&mut self, node: &Node, k: &Key, verdict: Option<Verdict>) {
        let Some(agent) = self.agents.get(k).cloned() else {
            // Deleted: stop and clean up.
            self.waiting.remove(k);
            if let Some(mut rt) = self.runtime.remove(k) {
                stop_replicas(node, &mut rt, |_| true).await;
            }
            // Its processes are gone: its uid and home go too (awaited, so that an agent
            // created anew under the name starts after the release, not during it).
            let (sandbox, (ns, name)) = (node.sandbox.clone(), k.clone());
            let _ = tokio::task::spawn_blocking(move || sandbox.release(&ns, &name)).await;
            return;
        };
        let rt = self.runtime.entry(k.clone()).or_default();
        if !rt.adopted {
            rt.adopted = true;
            let status = agent.status.clone().unwrap_or_default();
            rt.restarts_base = status.restarts;
            rt.last_termination = status.last_termination.clone();
            rt.card = status.card.clone();
            adopt(node, k, rt, &status.instances, agent.spec.restart_policy());
        }
        if let Some(url) = &agent.spec.url {
            // An agent that had a command when it was created holds the finalizer (see
            // `release_if_deleted`): released here too, or it would never go.
            let starting = self.starting.keys().any(|(key, _)| key == k);
            if release_if_deleted(node, &agent, rt.replicas.is_empty() && !starting) {
                return;
            }
            if readiness::external_probe_due(rt.url_probing, rt.url_next_probe, Instant::now()) {
                rt.url_probing = true;
                node.probe(k.clone(), u32::MAX, 0, url.clone(), Some(agent.clone()));
            }
            let status = url_status(&agent, rt);
            write_agent(node, &agent, rt, status);
            return;
        }
        let admitted = matches!(verdict, Some(Verdict::Admitted));
        let desired = if admitted && agent.spec.protocol() == Protocol::A2a { agent.spec.replicas() } else { 0 };
        // Scale down, and stop everything of an agent that lost its admission.
        stop_replicas(node, rt, |i| i >= desired).await;
        let starting = self.starting.keys().any(|(key, _)| key == k);
        if release_if_deleted(node, &agent, rt.replicas.is_empty() && !starting) {
            return;
        }
        // Its Secrets and ConfigMaps: one missing keeps new replicas from starting (running
        // ones keep what they started with, as containers do), and their data is hashed, so a
        // change rolls the replicas as a spec change does.
        let resolved = node.resolve_refs(&agent);
        rt.refs.report(node, &agent, &resolved);
        let refs_ok = resolved.is_ok();
        let restart_spec = crate::node::spec_hash::RestartSpec {
            secrets: node.ref_digests(&agent),
            ..crate::node::spec_hash::RestartSpec::of(&agent.spec)
        };
        let hash = crate::node::spec_hash::SpecHash::of_restart_spec(&restart_spec);
        // A replica recorded by an older version of the hash that runs this very spec is
        // recorded anew, not replaced.
        for r in rt.replicas.values_mut() {
            if r.spec_hash != hash.as_str() && hash.matches(&r.spec_hash, &agent.spec) {
                r.spec_hash = hash.to_string();
            }
        }
        let limits = CgroupLimits::for_agent(&agent.spec.resources, agent.spec.priority(), node.host_cores);
        let policy = agent.spec.restart_policy();
        // A spec change replaces one replica at a time, when all others are ready.
        let slots: Vec<rollout::Slot<'_>> = rt
            .replicas
            .iter()
            .map(|(i, r)| rollout::Slot {
                index: *i,
                spec_hash: &r.spec_hash,
                running: r.process.is_some(),
                ready: r.ready,
                ended: r.ended.is_some(),
                starting: self.starting.contains_key(&(k.clone(), *i)),
            })
            .collect();
        let replace = rollout::replace_now(hash.as_str(), desired, &slots).filter(|_| refs_ok);
        // Whether this pass decided a start for the agent (its status then waits, see below).
        let mut start_decided = false;
        for i in 0..desired {
            if self.starting.contains_key(&(k.clone(), i)) {
                continue;
            }
            let exists = rt.replicas.get(&i).is_some_and(|r| r.process.is_some());
            if exists {
                let r = rt.replicas.get_mut(&i).expect("checked above");
                if replace == Some(i) {
                    // Off the runtime's worker threads, as `stop_replicas` does: the grace
                    // period may run its full length.
                    if let Some(mut p) = r.process.take() {
                        let grace = node.config.grace;
                        let _ = tokio::task::spawn_blocking(move || p.stop(grace)).await;
                    }
                    node.remove_secret_files(&r.cgroup);
                    r.ready = false;
                    r.next_start = None;
                } else {
                    if r.limits != limits {
                        match node.driver.update(&r.cgroup, &limits) {
                            Ok(()) => r.limits = limits.clone(),
                            Err(e) => tracing::warn!(agent = %k.1, error = %e, "updating limits"),
                        }
                    }
                    continue;
                }
            }
            let slot = rt.replicas.get(&i);
            let ended = slot.and_then(|r| r.ended.as_ref()).map(Outcome::of);
            match lifecycle::next_start(policy, ended, slot.and_then(|r| r.next_start), Instant::now()) {
                NextStart::Stopped => continue,
                NextStart::At(t) => {
                    self.deadlines.at(k, t);
                    continue;
                }
                NextStart::Now if !refs_ok => continue,
                NextStart::Now => {}
            }
            if let Some(t) = rt.start_retry_at.filter(|t| *t > Instant::now()) {
                self.deadlines.at(k, t);
                continue;
            }
            // Started with the other starts of this pass, concurrently (see `hand_off_starts`).
            start_decided = true;
            self.starts.push(StartJob {
                key: k.clone(),
                replica: i,
                agent: agent.clone(),
                limits: limits.clone(),
                hash: hash.to_string(),
                previous: rt.replicas.get(&i).map(|r| Previous {
                    port: r.port,
                    restarts: r.restarts,
                    crashes: r.crashes,
                }),
            });
        }
        // Replicas not ready yet wait for their card (see `probes`).
        let unready: Vec<u32> = rt
            .replicas
            .iter()
            .filter(|(_, r)| readiness::replica_probe_due(r.process.is_some(), r.ready, r.probing))
            .map(|(i, _)| *i)
            .collect();
        let now = Instant::now();
        for i in unready {
            self.await_card(node, k, i, now);
        }
        let Some(rt) = self.runtime.get_mut(k) else { return };
        // A stdio agent needs only its cgroup parent (runs get their own cgroups): the budget's
        // cgroup, made with the budget's limits (ensuring it here with no limits would lift them).
        if admitted
            && agent.spec.protocol() == Protocol::Stdio
            && let Some(parent) = node.replica_cgroup(&self.budgets, &agent, 0).and_then(|p| p.parent())
            && !node.driver.exists(&parent)
        {
            rt.last_error = Some(format!("its budget's cgroup {parent} does not exist"));
        }
        // Agents that wait for room (host memory can free without any event) or failed to
        // start are looked at again every tick.
        if !admitted || (rt.last_error.is_some() && rt.start_retry_at.is_none()) {
            self.waiting.insert(k.clone());
            self.deadlines.at(k, Instant::now() + node.config.tick);
        } else {
            self.waiting.remove(k);
        }
        // A start on its way: its outcome is the next status, unless it takes long.
        let start_due = (0..desired)
            .filter_map(|i| self.starting.get(&(k.clone(), i)).map(|(.., since)| *since + START_STATUS_HOLD))
            .chain(start_decided.then_some(now + START_STATUS_HOLD))
            .min();
        if let Some(due) = start_due.filter(|due| *due > now) {
            self.deadlines.at(k, due);
            return;
        }
        let mut status = agent_status(node.config.enforced, &agent, rt, verdict.as_ref());
        set_condition(&mut status.conditions, node.sandbox.condition(&k.0, &k.1, &agent.spec));
        write_agent(node, &agent, rt, status);
    }
}

/// A deleted agent with no process left or starting (`idle`): its finalizer (put on at create
/// by the API server, or by an older node before its first start) is removed in the
/// background, with its logs. Returns whether the agent was deleted so.
fn release_if_deleted(node: &Node, agent: &crate::api::Agent, idle: bool) -> bool {
    if agent.meta().deletion_timestamp.is_none()
        || !idle
        || !crate::cluster::finalizer::has(agent, crate::node::deletion::PROCESSES_FINALIZER)
    {
        return false;
    }
    let (client, home, agent) = (node.client.clone(), node.config.home.clone(), agent.clone());
    tokio::spawn(async move {
        if let Err(e) = crate::node::deletion::release(&client, &home, &agent).await {
            tracing::warn!(agent = %agent.name_any(), error = %e, "releasing a deleted agent");
        }
    });
    true
}

/// Takes over the replicas listed in status: re-adopts those whose process still runs in its
/// cgroup; keeps those listed as ended stopped (unless the policy now restarts them); and
/// treats one whose process is gone as ended with its exit status lost — started again at once
/// unless its policy is `Never` (see [`lifecycle`]).
pub(super) fn adopt(node: &Node, k: &Key, rt: &mut AgentRuntime, instances: &[Instance], policy: RestartPolicy) {
    for inst in instances {
        let (Some(cgroup), Some(port)) = (inst.cgroup.as_deref(), inst.port) else { continue };
        let Ok(path) = CgroupPath::parse(cgroup) else { continue };
        let Some(pid) = inst.pid.and_then(|p| u32::try_from(p).ok()) else {
            if let Some(t) = &inst.termination {
                rt.replicas.insert(inst.replica, Box::new(Replica::gone(path, port, inst, Some(t.clone()))));
            }
            continue;
        };
        match AgentProcess::adopt(node.driver.as_ref(), &path, pid, inst.pid_start_time) {
            Ok(p) => {
                tracing::info!(agent = %k.1, replica = inst.replica, pid, "re-adopted a running replica");
                node.watch_exit(k.clone(), inst.replica, &p);
                let oom_before = node.driver.stats(&path).map_or(0, |s| s.oom_kills);
                rt.replicas.insert(
                    inst.replica,
                    Box::new(Replica {
                        // Unknown after a restart: the first pass writes the current limits once.
                        limits: CgroupLimits { pids_max: Some(u64::MAX), ..Default::default() },
                        start_time: Some(p.start_time()),
                        process: Some(p),
                        pid,
                        started_at: inst.started_at.unwrap_or_else(Time::now),
                        ready: inst.ready,
                        oom_before,
                        ..Replica::new(path, port, inst.spec_hash.clone().unwrap_or_default(), inst.restarts)
                    }),
                );
            }
            Err(e) => {
                let lost =
                    Termination { reason: TerminationReason::Unknown, exit_code: None, signal: None, at: Time::now() };
                let restart = lifecycle::starts_again(policy, Outcome::Unknown);
                tracing::info!(
                    agent = %k.1, replica = inst.replica, pid, error = %e, restart,
                    "its process ended while no node watched it"
                );
                // Whatever is left in its cgroup goes (a start makes the cgroup anew anyway).
                if !restart {
                    remove_in_background(node, path.clone());
                }
                rt.replicas
                    .insert(inst.replica, Box::new(Replica::gone(path, port, inst, (!restart).then(|| lost.clone()))));
                rt.last_termination = Some(lost);
            }
        }
    }
}
