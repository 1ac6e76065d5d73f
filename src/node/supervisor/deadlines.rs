//! One timer for every agent that waits for a time (restart backoffs, retries, probes).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::Key;

/// Keys to look at again at a given time (restart backoffs, retries, url probes): one
/// timer for all of them, the earliest deadline per key.
#[derive(Default)]
pub(super) struct Deadlines {
    by_time: BTreeSet<(Instant, Key)>,
    by_key: HashMap<Key, Instant>,
}

impl Deadlines {
    pub(super) fn at(&mut self, key: &Key, when: Instant) {
        if let Some(old) = self.by_key.get(key) {
            if *old <= when {
                return;
            }
            self.by_time.remove(&(*old, key.clone()));
        }
        self.by_key.insert(key.clone(), when);
        self.by_time.insert((when, key.clone()));
    }

    /// Drops the key's deadline, for a caller about to look at the key anyway: that look
    /// sets again whatever wait the key still has (only the earliest is kept per key, so a
    /// deadline that went stale would otherwise cost a look of its own when it comes).
    pub(super) fn forget(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Removes and returns the keys due at `now`.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.by_time.first()
            && *t <= now
        {
            if let Some((_, k)) = self.by_time.pop_first() {
                self.by_key.remove(&k);
                out.push(k);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_key_keeps_its_earliest_deadline_and_comes_out_once_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let (a, b) = (("ns".to_owned(), "a".to_owned()), ("ns".to_owned(), "b".to_owned()));
        let mut d = Deadlines::default();
        d.at(&a, t0 + 5 * s);
        d.at(&a, t0 + 2 * s);
        // A later deadline for a key that has an earlier one changes nothing.
        d.at(&a, t0 + 9 * s);
        d.at(&b, t0 + 3 * s);
        assert_eq!(d.next(), Some(t0 + 2 * s));
        assert_eq!(d.due(t0 + s), Vec::<Key>::new());
        assert_eq!(d.due(t0 + 2 * s), vec![a.clone()]);
        assert_eq!(d.next(), Some(t0 + 3 * s));
        assert_eq!(d.due(t0 + 10 * s), vec![b]);
        assert_eq!(d.next(), None);
        // Once due, a key takes a new deadline.
        d.at(&a, t0 + 20 * s);
        assert_eq!(d.next(), Some(t0 + 20 * s));
    }

    #[test]
    fn a_forgotten_key_never_comes_out_and_takes_a_later_deadline_after() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let (a, b) = (("ns".to_owned(), "a".to_owned()), ("ns".to_owned(), "b".to_owned()));
        let mut d = Deadlines::default();
        d.at(&a, t0 + 5 * s);
        d.at(&b, t0 + 7 * s);
        d.forget(&a);
        d.forget(&("ns".to_owned(), "none".to_owned()));
        assert_eq!(d.next(), Some(t0 + 7 * s));
        assert_eq!(d.due(t0 + 6 * s), Vec::<Key>::new());
        // Kept, this earlier deadline would have swallowed the later one.
        d.at(&a, t0 + 9 * s);
        assert_eq!(d.due(t0 + 10 * s), vec![b, a]);
    }
}
