//! The attempts of one workflow's tasks that are queued or running, keyed by task name.
//!
//! A task's position in `spec.tasks` is not its identity: an edit of the spec (or a
//! re-created workflow) moves tasks while their attempts are in flight. So everything the
//! engine holds about an attempt (that it is queued, its cancel handle, the token that says
//! which attempt is current) is looked up by the task's name, and an attempt's outcome is
//! recorded only while that very attempt is still the task's current one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

/// The attempts of one workflow in flight.
#[derive(Default)]
pub struct Attempts {
    /// Tasks queued for an agent slot or running.
    busy: HashSet<Arc<str>>,
    /// Running attempts: task → (the attempt's token, its cancel handle).
    running: HashMap<Arc<str>, (u64, watch::Sender<bool>)>,
}

impl Attempts {
    /// Whether task `name` is queued or running.
    pub fn is_busy(&self, name: &str) -> bool {
        self.busy.contains(name)
    }

    /// Whether nothing is queued or running.
    pub fn is_empty(&self) -> bool {
        self.busy.is_empty()
    }

    /// Marks task `name` queued; false when it was queued or running already.
    pub fn queue(&mut self, name: &Arc<str>) -> bool {
        self.busy.insert(name.clone())
    }

    /// Attempt `token` of task `name` starts: it becomes the task's current attempt, with a
    /// cancel handle whose receiver is returned.
    pub fn start(&mut self, name: &Arc<str>, token: u64) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        self.busy.insert(name.clone());
        self.running.insert(name.clone(), (token, tx));
        rx
    }

    /// Whether attempt `token` is task `name`'s current one.
    pub fn is_current(&self, name: &str, token: u64) -> bool {
        self.running.get(name).is_some_and(|(t, _)| *t == token)
    }

    /// Attempt `token` of task `name` ended. Returns whether it was the task's current attempt
    /// (only then may its outcome be recorded).
    pub fn end(&mut self, name: &str, token: u64) -> bool {
        if !self.is_current(name, token) {
            return false;
        }
        self.running.remove(name);
        self.busy.remove(name);
        true
    }

    /// Forgets a queued attempt of task `name` that will not start (its task failed).
    pub fn unqueue(&mut self, name: &str) {
        if !self.running.contains_key(name) {
            self.busy.remove(name);
        }
    }

    /// Asks the running attempt of task `name` to stop.
    pub fn cancel(&self, name: &str) {
        if let Some((_, tx)) = self.running.get(name) {
            let _ = tx.send(true);
        }
    }

    /// Asks every running attempt to stop.
    pub fn cancel_all(&self) {
        for (_, tx) in self.running.values() {
            let _ = tx.send(true);
        }
    }

    /// Forgets queued attempts that have not started (the workflow is cancelled).
    pub fn drop_queued(&mut self) {
        let running = &self.running;
        self.busy.retain(|n| running.contains_key(n));
    }

    /// Keeps the tasks `keep` accepts; the others' attempts are cancelled and forgotten, so
    /// their outcomes are never recorded. Returns the names forgotten.
    pub fn keep_only(&mut self, keep: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self.busy.iter().filter(|n| !keep(n)).cloned().collect();
        for n in &gone {
            self.cancel(n);
            self.running.remove(&**n);
            self.busy.remove(&**n);
        }
        gone
    }

    /// The running attempts, by task name.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(|n| &**n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_attempt_of_a_task_may_end_it() {
        let mut a = Attempts::default();
        let name: Arc<str> = Arc::from("fetch");
        assert!(a.queue(&name));
        assert!(!a.queue(&name), "queued once");
        let _old = a.start(&name, 1);
        let _new = a.start(&name, 2);
        assert!(!a.end("fetch", 1), "a superseded attempt records nothing");
        assert!(a.is_busy("fetch"));
        assert!(a.end("fetch", 2));
        assert!(!a.is_busy("fetch"));
        assert!(!a.end("fetch", 2), "an attempt ends once");
    }

    #[test]
    fn tasks_left_out_are_cancelled_and_forgotten() {
        let mut a = Attempts::default();
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("x"), Arc::from("y"));
        let rx = a.start(&x, 7);
        a.queue(&y);
        let gone = a.keep_only(|n| n == "y");
        assert_eq!(gone, std::slice::from_ref(&x));
        assert!(*rx.borrow(), "the running attempt was asked to stop");
        assert!(!a.end("x", 7), "and its outcome is not recorded");
        assert!(a.is_busy("y"));
    }
}
