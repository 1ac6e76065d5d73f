//! The global dispatch queue: ready tasks of every workflow, ordered by priority then age,
//! matched to agents with free slots. A task naming a skill goes to the least-loaded ready
//! agent with that skill. Pure data structure; the engine does the sending.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::api::Priority;

/// Where a task must go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An agent by name (in the task's namespace).
    Agent(String),
    /// Any ready agent (in the namespace) with this skill.
    Skill(String),
}

/// A task waiting for an agent slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued<T> {
    pub namespace: String,
    pub target: Target,
    pub priority: Priority,
    /// The engine's payload (workflow key, task index, attempt...).
    pub item: T,
}

/// What the queue knows about an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    pub ready: bool,
    /// `replicas × maxConcurrentTasks` of ready replicas.
    pub capacity: u32,
    pub in_flight: u32,
    pub skills: BTreeSet<String>,
}

impl Slots {
    fn free(&self) -> bool {
        self.ready && self.in_flight < self.capacity
    }
}

/// An entry's place: (priority, then arrival).
type Key = (std::cmp::Reverse<u8>, u64);

/// Ordered by (priority, then arrival): `BTreeMap` key `(Reverse(rank), seq)`.
#[derive(Debug)]
pub struct DispatchQueue<T> {
    entries: BTreeMap<Key, Queued<T>>,
    /// The same entries' keys by where they must go, `(namespace, target)`: a pass looks only
    /// at the targets some free agent can take, so a long queue for a busy agent costs nothing
    /// while another agent has room.
    by_target: HashMap<(String, Target), BTreeSet<Key>>,
    next_seq: u64,
    /// `(namespace, agent)` → slots.
    agents: BTreeMap<(String, String), Slots>,
}

impl<T> Default for DispatchQueue<T> {
    fn default() -> Self {
        DispatchQueue { entries: BTreeMap::new(), by_target: HashMap::new(), next_seq: 0, agents: BTreeMap::new() }
    }
}

/// A decision: send `item` to `agent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment<T> {
    pub namespace: String,
    pub agent: String,
    pub item: T,
}

impl<T> DispatchQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues a task behind everything of equal or higher priority.
    pub fn push(&mut self, q: Queued<T>) {
        let key = (std::cmp::Reverse(q.priority.rank()), self.next_seq);
        self.next_seq += 1;
        self.by_target.entry((q.namespace.clone(), q.target.clone())).or_default().insert(key);
        self.entries.insert(key, q);
    }

    /// Takes entry `key` out of the queue and of its target's index.
    fn remove_entry(&mut self, key: &Key) -> Option<Queued<T>> {
        let q = self.entries.remove(key)?;
        unindex(&mut self.by_target, &q, key);
        Some(q)
    }

    /// The queued entries, highest priority and oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Queued<T>> {
        self.entries.values()
    }

    /// Takes out the queued entries `pick` chooses, highest priority and oldest first.
    pub fn take(&mut self, mut pick: impl FnMut(&Queued<T>) -> bool) -> Vec<Queued<T>> {
        let keys: Vec<_> = self.entries.iter().filter(|(_, q)| pick(q)).map(|(k, _)| *k).collect();
        keys.into_iter().filter_map(|k| self.remove_entry(&k)).collect()
    }

    /// Removes queued entries the predicate rejects (a cancelled workflow's tasks).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let by_target = &mut self.by_target;
        self.entries.retain(|key, q| {
            let kept = keep(&q.item);
            if !kept {
                unindex(by_target, q, key);
            }
            kept
        });
    }

    /// Sets what is known of an agent (readiness, capacity, skills); keeps its in-flight count.
    pub fn set_agent(&mut self, namespace: &str, name: &str, ready: bool, capacity: u32, skills: BTreeSet<String>) {
        let slot = self.agents.entry((namespace.to_owned(), name.to_owned())).or_default();
        slot.ready = ready;
        slot.capacity = capacity;
        slot.skills = skills;
    }

    pub fn remove_agent(&mut self, namespace: &str, name: &str) {
        self.agents.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Every agent known, by (namespace, name).
    pub fn agents(&self) -> impl Iterator<Item = (&(String, String), &Slots)> {
        self.agents.iter()
    }

    pub fn agent(&self, namespace: &str, name: &str) -> Option<&Slots> {
        self.agents.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// A task on `agent` finished: its slot is free again.
    pub fn release(&mut self, namespace: &str, agent: &str) {
        if let Some(s) = self.agents.get_mut(&(namespace.to_owned(), agent.to_owned())) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Counts a task already running on `agent` (re-adopted after a restart).
    pub fn occupy(&mut self, namespace: &str, agent: &str) {
        if let Some(s) = self.agents.get_mut(&(namespace.to_owned(), agent.to_owned())) {
            s.in_flight += 1;
        }
    }

    /// Takes every queued task that has a free agent slot now, highest priority and oldest
    /// first. Tasks whose agent is busy or not ready stay queued in their place.
    pub fn dispatch(&mut self) -> Vec<Assignment<T>> {
        self.dispatch_gated(&mut Open).into_iter().map(|(a, ())| a).collect()
    }

    /// [`Self::dispatch`], where `gate` also decides whether a request to a free agent may
    /// start now (its rate limits): a task whose agent the gate holds stays queued in its
    /// place, without holding back tasks for other agents. Each assignment comes with the
    /// gate's pass for it.
    pub fn dispatch_gated<G: Gate<T>>(&mut self, gate: &mut G) -> Vec<(Assignment<T>, G::Pass)> {
        let mut out = Vec::new();
        // Nothing can move while every agent is full; and the pass stops once they all are.
        let mut free_agents = self.agents.values().filter(|s| s.free()).count();
        if free_agents == 0 {
            return out;
        }
        // The targets a free agent can take, each at its first entry: a pass walks these in
        // queue order (a target's next entry joins when its first is taken), never the entries
        // of targets nobody can take now. Agents only fill up within a pass, so a target found
        // with no agent for it stays without one until the pass ends.
        let mut heads: BTreeMap<Key, (String, Target)> = BTreeMap::new();
        for ((ns, target), keys) in &self.by_target {
            let open = match target {
                Target::Agent(name) => self.agents.get(&(ns.clone(), name.clone())).is_some_and(Slots::free),
                Target::Skill(skill) => self
                    .agents
                    .range((ns.clone(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .any(|(_, s)| s.free() && s.skills.contains(skill)),
            };
            if let (true, Some(first)) = (open, keys.first()) {
                heads.insert(*first, (ns.clone(), target.clone()));
            }
        }
        // Agents the gate held in this pass: they take nothing more in it.
        let mut held: Vec<(String, String)> = Vec::new();
        while free_agents > 0 {
            let Some((key, (ns, target))) = heads.pop_first() else { break };
            let Some(q) = self.entries.get(&key) else { continue };
            let mut open = |ns: &str, name: &str| {
                // Few agents are held at once: a scan beats a key built per queued task.
                if held.iter().any(|(n, a)| n == ns && a == name) {
                    return false;
                }
                if gate.allows(ns, name, &q.item) {
                    return true;
                }
                held.push((ns.to_owned(), name.to_owned()));
                free_agents -= 1;
                false
            };
            let chosen = match &target {
                Target::Agent(name) => self
                    .agents
                    .get(&(ns.clone(), name.clone()))
                    .filter(|s| s.free() && open(&ns, name))
                    .map(|_| name.clone()),
                Target::Skill(skill) => self
                    .agents
                    .range((ns.clone(), String::new())..)
                    .take_while(|((n, _), _)| *n == ns)
                    .filter(|((n, name), s)| s.free() && s.skills.contains(skill) && open(n, name))
                    // Least loaded: lowest in_flight/capacity, compared without division.
                    .min_by(|(ka, a), (kb, b)| {
                        (u64::from(a.in_flight) * u64::from(b.capacity))
                            .cmp(&(u64::from(b.in_flight) * u64::from(a.capacity)))
                            .then(ka.cmp(kb))
                    })
                    .map(|((_, name), _)| name.clone()),
            };
            // No agent for this target now: none for the rest of the pass either.
            let Some(agent) = chosen else { continue };
            let Some(q) = self.remove_entry(&key) else { continue };
            if let Some(next) = self.by_target.get(&(ns.clone(), target.clone())).and_then(|k| k.first()) {
                heads.insert(*next, (ns, target));
            }
            let pass = gate.pass(&q.namespace, &agent, &q.item);
            if let Some(s) = self.agents.get_mut(&(q.namespace.clone(), agent.clone())) {
                s.in_flight += 1;
                if !s.free() {
                    free_agents -= 1;
                }
            }
            out.push((Assignment { namespace: q.namespace, agent, item: q.item }, pass));
        }
        out
    }
}

/// Takes `key` out of the index of `q`'s target (and the target, once it has no entries).
fn unindex<T>(by_target: &mut HashMap<(String, Target), BTreeSet<Key>>, q: &Queued<T>, key: &Key) {
    let at = (q.namespace.clone(), q.target.clone());
    if let Some(keys) = by_target.get_mut(&at) {
        keys.remove(key);
        if keys.is_empty() {
            by_target.remove(&at);
        }
    }
}

/// Decides whether a request to a free agent may start now (the engine's rate limits).
pub trait Gate<T> {
    /// What a request that starts carries (its share of the limits).
    type Pass;
    /// Whether a request for `item` to agent `namespace/name` may start now.
    fn allows(&mut self, namespace: &str, name: &str, item: &T) -> bool;
    /// The request for `item` to `namespace/name` starts.
    fn pass(&mut self, namespace: &str, name: &str, item: &T) -> Self::Pass;
}

/// The gate that holds nothing.
pub struct Open;

impl<T> Gate<T> for Open {
    type Pass = ();
    fn allows(&mut self, _: &str, _: &str, _: &T) -> bool {
        true
    }
    fn pass(&mut self, _: &str, _: &str, _: &T) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(target: Target, priority: Priority, item: &'static str) -> Queued<&'static str> {
        Queued { namespace: "default".into(), target, priority, item }
    }

    fn skills(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn a_high_task_queued_after_ten_low_ones_is_dispatched_next() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("default", "busy", true, 1, skills(&[]));
        dq.occupy("default", "busy");
        let lows = ["l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9"];
        for item in lows {
            dq.push(q(Target::Agent("busy".into()), Priority::Low, item));
        }
        dq.push(q(Target::Agent("busy".into()), Priority::High, "high"));
        assert!(dq.dispatch().is_empty(), "the only slot is taken");
        dq.release("default", "busy");
        let sent: Vec<_> = dq.dispatch().into_iter().map(|a| a.item).collect();
        assert_eq!(sent, ["high"]);
        dq.release("default", "busy");
        assert_eq!(dq.dispatch()[0].item, "l0", "then the oldest low one");
    }

    #[test]
    fn skill_routing_picks_the_least_loaded_ready_agent() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("default", "a", true, 4, skills(&["sum"]));
        dq.set_agent("default", "b", true, 4, skills(&["sum"]));
        dq.set_agent("default", "c", false, 4, skills(&["sum"]));
        dq.set_agent("default", "d", true, 4, skills(&["other"]));
        dq.occupy("default", "a");
        for item in ["1", "2", "3"] {
            dq.push(q(Target::Skill("sum".into()), Priority::Normal, item));
        }
        let to: Vec<(String, &str)> = dq.dispatch().into_iter().map(|a| (a.agent, a.item)).collect();
        assert_eq!(to, [("b".into(), "1"), ("a".into(), "2"), ("b".into(), "3")]);
    }

    #[test]
    fn agents_that_are_not_ready_get_nothing_and_the_task_waits() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("default", "x", false, 2, skills(&[]));
        dq.push(q(Target::Agent("x".into()), Priority::Critical, "t"));
        dq.push(q(Target::Agent("missing".into()), Priority::Critical, "u"));
        assert!(dq.dispatch().is_empty());
        assert_eq!(dq.len(), 2);
        dq.set_agent("default", "x", true, 2, skills(&[]));
        assert_eq!(dq.dispatch().len(), 1);
    }

    #[test]
    fn a_busy_agent_does_not_block_tasks_for_other_agents() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("default", "busy", true, 1, skills(&[]));
        dq.set_agent("default", "idle", true, 1, skills(&[]));
        dq.occupy("default", "busy");
        dq.push(q(Target::Agent("busy".into()), Priority::Critical, "first"));
        dq.push(q(Target::Agent("idle".into()), Priority::Low, "second"));
        let sent: Vec<_> = dq.dispatch().into_iter().map(|a| a.item).collect();
        assert_eq!(sent, ["second"]);
    }

    #[test]
    fn namespaces_are_separate() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("other", "a", true, 1, skills(&["s"]));
        dq.push(q(Target::Skill("s".into()), Priority::Normal, "t"));
        assert!(dq.dispatch().is_empty(), "an agent in another namespace is not a candidate");
    }

    /// Holds the agents named, counts the passes given.
    struct Holding(Vec<&'static str>, Vec<String>);

    impl Gate<&'static str> for Holding {
        type Pass = usize;
        fn allows(&mut self, _: &str, name: &str, _: &&'static str) -> bool {
            !self.0.contains(&name)
        }
        fn pass(&mut self, _: &str, name: &str, _: &&'static str) -> usize {
            self.1.push(name.to_owned());
            self.1.len()
        }
    }

    #[test]
    fn a_held_agent_keeps_its_tasks_queued_without_holding_back_other_agents_or_skills() {
        let mut dq = DispatchQueue::new();
        dq.set_agent("default", "limited", true, 4, skills(&["sum"]));
        dq.set_agent("default", "other", true, 4, skills(&["sum"]));
        dq.push(q(Target::Agent("limited".into()), Priority::Critical, "first"));
        dq.push(q(Target::Agent("other".into()), Priority::Low, "second"));
        dq.push(q(Target::Skill("sum".into()), Priority::Low, "third"));
        let mut gate = Holding(vec!["limited"], Vec::new());
        let sent: Vec<(&str, String, usize)> =
            dq.dispatch_gated(&mut gate).into_iter().map(|(a, pass)| (a.item, a.agent, pass)).collect();
        assert_eq!(sent, [("second", "other".to_owned(), 1), ("third", "other".to_owned(), 2)]);
        assert_eq!(dq.len(), 1, "the held agent's task waits in its place");
        let sent: Vec<&str> =
            dq.dispatch_gated(&mut Holding(vec![], vec![])).into_iter().map(|(a, _)| a.item).collect();
        assert_eq!(sent, ["first"], "and goes once the gate opens");
    }

    /// Holds the agents named, for queues of numbered items.
    struct HoldingU32(Vec<String>);

    impl Gate<u32> for HoldingU32 {
        type Pass = ();
        fn allows(&mut self, _: &str, name: &str, _: &u32) -> bool {
            !self.0.iter().any(|h| h == name)
        }
        fn pass(&mut self, _: &str, _: &str, _: &u32) {}
    }

    /// The plain walk of every entry in queue order that the per-target walk replaced: what
    /// a pass must decide, entry by entry.
    fn walk_every_entry(dq: &mut DispatchQueue<u32>, gate: &mut HoldingU32) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let keys: Vec<Key> = dq.entries.keys().copied().collect();
        for key in keys {
            let q = &dq.entries[&key];
            let candidates: Vec<String> = dq
                .agents
                .iter()
                .filter(|((ns, name), s)| {
                    *ns == q.namespace
                        && s.free()
                        && match &q.target {
                            Target::Agent(a) => a == name,
                            Target::Skill(k) => s.skills.contains(k),
                        }
                        && gate.allows(ns, name, &q.item)
                })
                .min_by(|((_, na), a), ((_, nb), b)| {
                    (u64::from(a.in_flight) * u64::from(b.capacity))
                        .cmp(&(u64::from(b.in_flight) * u64::from(a.capacity)))
                        .then(na.cmp(nb))
                })
                .map(|((_, name), _)| name.clone())
                .into_iter()
                .collect();
            if let Some(agent) = candidates.into_iter().next() {
                let q = dq.remove_entry(&key).expect("queued");
                dq.agents.get_mut(&(q.namespace.clone(), agent.clone())).expect("agent").in_flight += 1;
                out.push((agent, q.item));
            }
        }
        out
    }

    #[test]
    fn a_pass_decides_as_a_walk_of_every_entry_in_order_would() {
        let names = ["a", "b", "c", "d"];
        let skill_names = ["x", "y"];
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut ours = DispatchQueue::new();
            let mut plain = DispatchQueue::new();
            for ns in ["default", "other"] {
                for name in names {
                    let (ready, capacity) = (rng.u8(..10) > 1, rng.u32(0..4));
                    let sk: BTreeSet<String> =
                        skill_names.iter().filter(|_| rng.bool()).map(|s| (*s).to_owned()).collect();
                    let busy = rng.u32(0..3);
                    for dq in [&mut ours, &mut plain] {
                        dq.set_agent(ns, name, ready, capacity, sk.clone());
                        for _ in 0..busy {
                            dq.occupy(ns, name);
                        }
                    }
                }
            }
            let priorities = [Priority::Low, Priority::Normal, Priority::High];
            for item in 0..rng.u32(0..60) {
                let ns = if rng.u8(..4) == 0 { "other" } else { "default" };
                let target = if rng.bool() {
                    Target::Agent(names[rng.usize(..names.len())].to_owned())
                } else {
                    Target::Skill(skill_names[rng.usize(..skill_names.len())].to_owned())
                };
                let priority = priorities[rng.usize(..priorities.len())];
                for dq in [&mut ours, &mut plain] {
                    dq.push(Queued { namespace: ns.into(), target: target.clone(), priority, item });
                }
            }
            // Some entries leave before the pass, as a cancelled workflow's do.
            let gone = rng.u32(0..60);
            ours.retain(|i| *i != gone);
            plain.retain(|i| *i != gone);
            let held: Vec<String> = names.iter().filter(|_| rng.u8(..5) == 0).map(|n| (*n).to_owned()).collect();
            let got: Vec<(String, u32)> = ours
                .dispatch_gated(&mut HoldingU32(held.clone()))
                .into_iter()
                .map(|(a, ())| (a.agent, a.item))
                .collect();
            let want = walk_every_entry(&mut plain, &mut HoldingU32(held));
            assert_eq!(got, want, "seed {seed}");
            assert_eq!(ours.len(), plain.len(), "seed {seed}");
            // What stays queued is still indexed: a second pass with every agent free again
            // takes the same entries either way.
            for dq in [&mut ours, &mut plain] {
                for s in dq.agents.values_mut() {
                    s.in_flight = 0;
                }
            }
            let again: Vec<u32> = ours.dispatch().into_iter().map(|a| a.item).collect();
            let want: Vec<u32> =
                walk_every_entry(&mut plain, &mut HoldingU32(Vec::new())).into_iter().map(|a| a.1).collect();
            assert_eq!(again, want, "seed {seed}, second pass");
            let indexed: usize = ours.by_target.values().map(BTreeSet::len).sum();
            assert_eq!(indexed, ours.len(), "seed {seed}: every queued entry indexed once");
        }
    }
}
