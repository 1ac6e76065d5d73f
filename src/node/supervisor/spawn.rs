//! Starting replicas: the port and process of each start, handed off to blocking threads a
//! few at a time, and the outcome recorded when it comes back.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::{Error, Key, Node, NodeEvent, Replica, Result, World, key_of};
use crate::api::{Agent, ResourceBudget};
use crate::controller::credentials;
use crate::node::cgroup::{CgroupLimits, CgroupPath};
use crate::node::logs::{self, RelaySpec};
use crate::node::process::{self, ProcessSpec};

/// The port a replica starts with: the Agent's `port`; else (`port: 0`) the one it had,
/// while nothing else holds it; else a free one no other replica of this node has.
pub(super) fn assign_port(job: &StartJob, used: &mut HashSet<u16>) -> Result<u16> {
    if let Some(p) = job.agent.spec.port.filter(|p| *p > 0) {
        return u16::try_from(p).map_err(|_| Error::PortOutOfRange(p));
    }
    if let Some(prev) = job.previous
        && std::net::TcpListener::bind(("127.0.0.1", prev.port)).is_ok()
    {
        return Ok(prev.port);
    }
    for _ in 0..64 {
        let p = free_port().map_err(Error::NoFreePort)?;
        if used.insert(p) {
            return Ok(p);
        }
    }
    Err(Error::PortsTaken)
}

pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where an agent confined away from `$A2A_HOME` finds the gateway's CA.
const GATEWAY_CA_DIR: &str = "/run/secrets/a2a.dev/gateway";

impl Node {
    pub(super) fn process_spec(&self, agent: &Agent, replica: u32, port: u16) -> Result<ProcessSpec> {
        let (ns, name) = key_of(agent);
        let s = &agent.spec;
        let program = match s.command.first().map(String::as_str) {
            Some("a2a") => self.config.a2a_exe.to_string_lossy().into_owned(),
            Some(p) => p.to_owned(),
            None => return Err(Error::NoCommand),
        };
        let log = logs::AgentLogs::new(&self.config.home, &ns, &name).live(replica);
        let mut spec = ProcessSpec::new(program, log).args(s.command.iter().skip(1).chain(&s.args).cloned());
        spec.log_relay = Some(RelaySpec {
            program: self.config.log_relay.clone(),
            limits: self.config.log_limits,
            cgroup: self.config.enforced.then(|| logs::relay_cgroup(&self.config.layout)).flatten(),
        });
        for var in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(var) {
                spec = spec.env(var, v);
            }
        }
        // Its credentials, home and view of the system; the Agent's `env` still wins.
        self.sandbox.apply(&mut spec, &ns, &name, s)?;
        // Secrets and ConfigMaps (`envFrom`, then `env[].valueFrom`), then the literal `env`:
        // it wins over an `envFrom` key of its name (names within `env` are unique).
        let mut refs = self.resolve_refs(agent)?;
        // The host's gateway, the way this agent calls other agents: its URL, a token of its
        // own, and the CA that verifies the gateway (a file of the replica's own where the
        // agent cannot see $A2A_HOME, the CA file itself where it can).
        let mut gateway_env = Vec::new();
        if let Some(gw) = &self.config.gateway {
            let ca = match (&spec.user, &spec.confinement) {
                (Some(_), Some(_)) => {
                    refs.files.push(crate::controller::config_refs::FileSet {
                        secret: "a2a-gateway-ca".into(),
                        mount_path: GATEWAY_CA_DIR.into(),
                        files: vec![("ca.crt".into(), gw.ca_pem.clone())],
                    });
                    format!("{GATEWAY_CA_DIR}/ca.crt")
                }
                _ => gw.ca_path.to_string_lossy().into_owned(),
            };
            let uid = agent.uid().unwrap_or_default();
            gateway_env.push((crate::gateway::URL_ENV, gw.url.clone()));
            gateway_env.push((crate::gateway::TOKEN_ENV, gw.token(&ns, &name, &uid)));
            gateway_env.push((crate::gateway::CA_ENV, ca));
        }
        for (k, v) in refs.env {
            spec = spec.env(k, v);
        }
        self.mount_secret_files(&mut spec, &format!("{ns}.{name}.{replica}"), &refs.files)?;
        for e in s.env.iter().filter(|e| e.value_from.is_none()) {
            spec = spec.env(&e.name, &e.value);
        }
        spec = spec.env("A2A_PORT", port.to_string()).env("A2A_AGENT", &name).env("A2A_NAMESPACE", &ns);
        for (k, v) in gateway_env {
            spec = spec.env(k, v);
        }
        spec.working_dir = Some(match &s.working_dir {
            Some(d) => PathBuf::from(d),
            None => {
                let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                crate::node::sandbox::default_working_dir(&cwd, &spec)
            }
        });
        Ok(spec)
    }
}

impl World {
    /// Hands the starts the pass decided to blocking threads, `START_CONCURRENCY` at a time,
    /// so the loop goes on with the next events while processes start; each result comes
    /// back as a `Started` event.
    pub(super) fn hand_off_starts(&mut self, node: &Arc<Node>) {
        if self.starts.is_empty() {
            return;
        }
        // Ports are assigned here, one job after the other: two replicas never get the same
        // free port (a port is free again until the agent binds it).
        let mut used: HashSet<u16> = self
            .runtime
            .values()
            .flat_map(|rt| rt.replicas.values().map(|r| r.port))
            .chain(self.starting.values().map(|(port, ..)| *port))
            .collect();
        let budgets = Arc::new(self.budgets.clone());
        for job in std::mem::take(&mut self.starts) {
            let port = assign_port(&job, &mut used);
            let cgroup = node.replica_cgroup(&self.budgets, &job.agent, job.replica);
            let since = Instant::now();
            self.starting.insert((job.key.clone(), job.replica), (port.as_ref().map_or(0, |p| *p), cgroup, since));
            let (node, budgets) = (node.clone(), budgets.clone());
            tokio::spawn(async move {
                let (key, replica) = (job.key.clone(), job.replica);
                // The agent's object stays until its processes are gone (see `deletion`); the
                // finalizer's write overlaps the start instead of delaying it.
                let unheld = (!crate::cluster::finalizer::has(&job.agent, crate::node::deletion::PROCESSES_FINALIZER))
                    .then(|| job.agent.clone());
                let hold = async {
                    match unheld {
                        Some(agent) => crate::node::deletion::hold(&node.client, &agent).await,
                        None => Ok(()),
                    }
                };
                // The agent's own token, derived from its namespace's key (read once per
                // namespace, then as the Secret watch brings it), handed to it as
                // A2A_AGENT_TOKEN; the engine presents the same token on every call.
                let start = async {
                    let token = match credentials::has_token(&job.agent) {
                        true => node.agent_token(&job.agent).await.map(Some).map_err(Error::Token),
                        false => Ok(None),
                    };
                    let slot = node.start_slots.clone().acquire_owned().await;
                    let worker = node.clone();
                    tokio::task::spawn_blocking(move || {
                        let _slot = slot;
                        let ready = port.and_then(|port| token.map(|token| (port, token)));
                        ready.and_then(|(port, token)| start_replica(&worker, &budgets, &job, port, token))
                    })
                    .await
                };
                let (held, result) = tokio::join!(hold, start);
                if let Err(e) = held {
                    tracing::warn!(agent = %key.1, error = %e, "the agent's object may go before its processes");
                }
                let result = result.unwrap_or_else(|source| Err(Error::Panicked { what: "the start", source }));
                let _ = node.tx.send(NodeEvent::Started { key, replica, result: Box::new(result) });
            });
        }
    }

    /// Records a finished start. An agent deleted (or scaled down) meanwhile has the new
    /// process stopped right away, or by its next pass.
    pub(super) fn started(&mut self, node: &Arc<Node>, key: Key, i: u32, result: Result<Replica>) {
        self.starting.remove(&(key.clone(), i));
        // The pass this outcome brings sets the key's waits again: the one for this start's
        // status (`START_STATUS_HOLD`) is over, and would otherwise bring a pass of its own,
        // one for each of 500 agents started together, seconds after they all run.
        self.deadlines.forget(&key);
        self.dirty.insert(key.clone());
        let Some(rt) = self.runtime.get_mut(&key).filter(|_| self.agents.contains_key(&key)) else {
            if let Ok(mut r) = result {
                let node = node.clone();
                tokio::task::spawn_blocking(move || {
                    if let Some(mut p) = r.process.take() {
                        let _ = p.stop(node.config.grace);
                    }
                    node.remove_secret_files(&r.cgroup);
                    let _ = node.driver.remove(&r.cgroup, Duration::from_secs(5));
                });
            }
            return;
        };
        match result {
            Ok(r) => {
                let restarted = rt.replicas.contains_key(&i);
                node.watch_exit(key.clone(), i, r.process.as_ref().expect("just started"));
                rt.replicas.insert(i, Box::new(r));
                if restarted {
                    rt.restarts_base += 1;
                }
                rt.last_error = None;
                rt.start_failures = 0;
                rt.start_retry_at = None;
                rt.first_usage_at = Some(super::usage::first_usage_at(Instant::now(), fastrand::f64()));
                self.restart_listen_checks(Instant::now());
            }
            Err(e) => {
                rt.start_failures = rt.start_failures.saturating_add(1);
                let backoff = crate::controller::lifecycle::Backoff::with_initial(node.config.restart_backoff);
                // The first retry after a second at least: a start fails in milliseconds.
                let wait = crate::controller::lifecycle::delay(rt.start_failures + 1, &backoff);
                let at = Instant::now() + wait;
                tracing::warn!(agent = %key.1, replica = i, error = %e, retry_in = ?wait, "could not start");
                rt.last_error = Some(e.to_string());
                rt.start_retry_at = Some(at);
                self.deadlines.at(&key, at);
            }
        }
    }
}

/// What a new start of a replica keeps from the one before it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Previous {
    pub(super) port: u16,
    pub(super) restarts: u32,
    pub(super) crashes: u32,
}

/// One replica to start, decided by a pass and run with the others of the pass.
pub(super) struct StartJob {
    pub(super) key: Key,
    pub(super) replica: u32,
    pub(super) agent: Agent,
    pub(super) limits: CgroupLimits,
    pub(super) hash: String,
    pub(super) previous: Option<Previous>,
}

/// How many replicas start at once. A start mostly waits on the kernel (cgroup migration
/// takes a global lock and an RCU grace period; exec), so starts overlap well even on two
/// cores; the bound keeps a burst from taking every blocking thread.
pub(super) const START_CONCURRENCY: usize = 8;

pub(super) fn start_replica(
    node: &Node,
    budgets: &BTreeMap<String, ResourceBudget>,
    job: &StartJob,
    port: u16,
    token: Option<String>,
) -> Result<Replica> {
    let StartJob { agent, replica: i, limits, hash, previous, .. } = job;
    let (i, previous) = (*i, *previous);
    if node.closing.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::Stopping);
    }
    let cgroup = node.replica_cgroup(budgets, agent, i).ok_or(Error::NoCgroupPath)?;
    // A restart reuses its cgroup when nothing is left in it: remaking it costs an rmdir and a
    // mkdir in every hierarchy (five on v1) on the way of a crashed agent back to running. Its
    // OOM count carries over, as the new baseline; usage is sampled as differences anyway.
    let empty = |c: &CgroupPath| {
        node.driver.pids(c).is_ok_and(|p| p.is_empty()) && node.driver.children(c).is_ok_and(|c| c.is_empty())
    };
    let reused = previous.is_some()
        && node.driver.exists(&cgroup)
        && empty(&cgroup)
        && node.driver.update(&cgroup, limits).is_ok();
    // Otherwise a fresh cgroup (create remakes a leftover empty one), so counters start at zero.
    if !reused {
        match node.driver.create(&cgroup, limits) {
            // Leftovers of the previous run (children the agent forked): kill them, start clean.
            Err(crate::node::cgroup::Error::InUse { .. }) => {
                node.driver.remove(&cgroup, Duration::from_secs(5))?;
                node.driver.create(&cgroup, limits)?;
            }
            other => other?,
        }
    }
    let oom_before = if reused { node.driver.stats(&cgroup).map_or(0, |s| s.oom_kills) } else { 0 };
    let mut spec = node.process_spec(agent, i, port)?;
    if let Some(token) = token {
        spec = spec.env(credentials::TOKEN_ENV, token);
    }
    let p = process::spawn(node.driver.as_ref(), &cgroup, &spec)?;
    tracing::info!(agent = %agent.name_any(), replica = i, pid = p.pid(), port, "started agent replica");
    let restarts = previous.as_ref().map_or(0, |r| r.restarts + 1);
    Ok(Replica {
        limits: limits.clone(),
        pid: p.pid(),
        start_time: Some(p.start_time()),
        process: Some(p),
        crashes: previous.as_ref().map_or(0, |r| r.crashes),
        oom_before,
        ..Replica::new(cgroup, port, hash.to_owned(), restarts)
    })
}
