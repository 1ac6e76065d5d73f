//! The engine's pass that says why queued tasks are not dispatched (see [`crate::controller::stuck`]):
//! the reason goes into each task's status entry, an Event is recorded when a reason
//! appears, and a task whose agent can never be admitted fails at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;

use super::{AgentView, Engine, Key, State, Work, lock};
use crate::api::common::Time;
use crate::api::workflow::TaskPhase;
use crate::controller::dispatch::{DispatchQueue, Target};
use crate::controller::events;
use crate::controller::rate::RATE_LIMITED;
use crate::controller::stuck::{self, AgentFacts, Stuck};

static NO_SKILLS: BTreeSet<String> = BTreeSet::new();

/// New reasons of one workflow's tasks, for its Events: (reason, message) → tasks.
type Appeared = BTreeMap<(&'static str, String), Vec<Arc<str>>>;

fn agent_facts<'a>(
    agents: &'a HashMap<Key, AgentView>,
    queue: &'a DispatchQueue<Work>,
    ns: &str,
    name: &'a str,
) -> Option<AgentFacts<'a>> {
    let view = agents.get(&(ns.to_owned(), name.to_owned()))?;
    let slots = queue.agent(ns, name);
    Some(AgentFacts {
        name,
        agent: &view.agent,
        ready: slots.is_some_and(|s| s.ready && s.capacity > 0),
        skills: slots.map_or(&NO_SKILLS, |s| &s.skills),
    })
}

/// Why work for `target` in namespace `ns` cannot be dispatched now, if something is known
/// to hold it (`None`: it waits only for a busy slot, or goes on the next pass).
pub(super) fn why_waiting(
    agents: &HashMap<Key, AgentView>,
    queue: &DispatchQueue<Work>,
    budgets: &HashMap<String, crate::api::ResourceBudget>,
    rates: &crate::controller::rate::RateLimits,
    ns: &str,
    target: &Target,
) -> Option<Stuck> {
    match target {
        Target::Agent(name) => stuck::for_agent(ns, name, agent_facts(agents, queue, ns, name))
            .or_else(|| super::throttle::held_reason(agents, budgets, rates, ns, name)),
        Target::Skill(skill) => {
            let candidates =
                || agents.keys().filter(|(n, _)| n == ns).filter_map(|(n, name)| agent_facts(agents, queue, n, name));
            stuck::for_skill(ns, skill, candidates()).or_else(|| {
                // Every ready agent with the skill is held by a rate limit: the first one's
                // reason (in name order) stands for them.
                let mut ready: Vec<&str> =
                    candidates().filter(|f| f.ready && f.skills.contains(skill)).map(|f| f.name).collect();
                ready.sort_unstable();
                let mut held = ready.iter().map(|name| super::throttle::held_reason(agents, budgets, rates, ns, name));
                let first = held.next().flatten()?;
                held.all(|h| h.is_some()).then_some(first)
            })
        }
    }
}

impl Engine {
    /// Sets (or clears) the reason of every queued task, and fails the tasks that can never
    /// run. Runs when asked to, at most once per timer tick.
    pub(super) fn explain(self: &Arc<Self>) {
        let now = Timestamp::now();
        let mut appeared: HashMap<Key, (String, Appeared)> = HashMap::new();
        let mut failed: HashSet<Key> = HashSet::new();
        {
            let mut st = lock(&self.state);
            if !std::mem::take(&mut st.explain) {
                return;
            }
            let State { workflows, agents, queue, budgets, rates, .. } = &mut *st;
            let mut whys: HashMap<(&str, &Target), Option<Stuck>> = HashMap::new();
            let mut never: Vec<(Key, Arc<str>, Stuck)> = Vec::new();
            for q in queue.iter() {
                // Calls say why they wait to their caller (see `call`).
                let Some(t) = q.item.task() else { continue };
                // A resumed attempt runs on its agent already; it only waits to be followed.
                if t.resume.is_some() {
                    continue;
                }
                let why = whys
                    .entry((q.namespace.as_str(), &q.target))
                    .or_insert_with(|| why_waiting(agents, queue, budgets, rates, &q.namespace, &q.target));
                let Some(w) = workflows.get_mut(&t.workflow).filter(|w| *w.uid == *t.uid) else { continue };
                let Some(i) = w.index.position(&t.task) else { continue };
                let task = &mut w.status.tasks[i];
                if task.phase != TaskPhase::Pending {
                    continue;
                }
                let (reason, message) = match why {
                    Some(s) => (Some(s.reason), Some(&s.message)),
                    None => (None, None),
                };
                if task.reason.as_deref() != reason || task.message.as_ref() != message {
                    // A rate limit's next slot moves with every request: one Event when the
                    // task starts to wait for it, not one per slot.
                    let moved = reason == Some(RATE_LIMITED) && task.reason.as_deref() == reason;
                    task.reason = reason.map(str::to_owned);
                    task.message = message.cloned();
                    w.touch(i);
                    if let Some(s) = why.as_ref().filter(|s| !s.never && !moved) {
                        let (_, by_reason) =
                            appeared.entry(t.workflow.clone()).or_insert_with(|| (w.uid.clone(), Appeared::new()));
                        by_reason.entry((s.reason, s.message.clone())).or_default().push(t.task.clone());
                    }
                }
                if let Some(s) = why.as_ref().filter(|s| s.never) {
                    never.push((t.workflow.clone(), t.task.clone(), s.clone()));
                }
            }
            // Work that can never run fails now, instead of waiting forever.
            let mut dropped: HashSet<(Key, Arc<str>)> = HashSet::new();
            for (k, task, s) in never {
                let Some(w) = workflows.get_mut(&k) else { continue };
                let Some(i) = w.index.position(&task) else { continue };
                let t = &mut w.status.tasks[i];
                t.phase = TaskPhase::Failed;
                t.reason = Some(s.reason.to_owned());
                t.message = Some(s.message.clone());
                t.error = Some(s.message.clone());
                t.next_attempt_at = None;
                t.finished_at = Some(Time(now));
                w.touch(i);
                w.attempts.unqueue(&task);
                let (_, by_reason) = appeared.entry(k.clone()).or_insert_with(|| (w.uid.clone(), Appeared::new()));
                by_reason.entry((s.reason, s.message)).or_default().push(task.clone());
                failed.insert(k.clone());
                dropped.insert((k, task));
            }
            if !dropped.is_empty() {
                queue.retain(|w| w.task().is_none_or(|t| !dropped.contains(&(t.workflow.clone(), t.task.clone()))));
            }
        }
        for k in &failed {
            self.schedule(k);
        }
        if !appeared.is_empty() {
            self.flush.notify_one();
        }
        for ((ns, name), (uid, by_reason)) in appeared {
            for ((reason, message), tasks) in by_reason {
                let warning = reason == stuck::UNSCHEDULABLE;
                let what = if warning { "failed" } else { "waits" };
                let note = format!("{} {what}: {message}", events::tasks_phrase(&tasks));
                events::record(&self.client, &ns, &name, &uid, warning, reason, note);
            }
        }
    }
}
