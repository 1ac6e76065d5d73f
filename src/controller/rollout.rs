//! The rolling replacement of an agent's replicas after a spec change, as a plain function.
//!
//! A replica runs the spec whose hash it was started with; when the Agent's spec hashes to
//! something else, its replicas are replaced one at a time — a Deployment's `maxSurge: 0`,
//! `maxUnavailable: 1`: a process is stopped, and the next pass starts its replacement in
//! the same slot (same index, same cgroup, same port when free). A replica is replaced only
//! while every other replica the agent has is ready, so a replacement that does not come up
//! (it crashes, it never serves its card) stops the rollout instead of taking every replica
//! down with it.

/// What the rollout needs to know of one replica slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot<'a> {
    pub index: u32,
    /// The hash of the spec its process was started with.
    pub spec_hash: &'a str,
    /// Its process runs.
    pub running: bool,
    /// Its readiness probe passed.
    pub ready: bool,
    /// It ended and its restart policy keeps it stopped (it does not count for readiness).
    pub ended: bool,
    /// A start of it is in flight.
    pub starting: bool,
}

/// The replica to replace now, if any: the lowest-indexed one below `desired` that runs an
/// older spec, when every slot the agent has (ended ones aside) is ready. A slot without a
/// process (a replacement or restart on its way) is not ready, so at most one replica is
/// ever down for the rollout.
pub fn replace_now(spec_hash: &str, desired: u32, slots: &[Slot<'_>]) -> Option<u32> {
    let all_ready = slots.iter().filter(|s| !s.ended).all(|s| s.ready);
    if !all_ready {
        return None;
    }
    slots
        .iter()
        .filter(|s| s.index < desired && s.running && !s.starting && s.spec_hash != spec_hash)
        .map(|s| s.index)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u32, spec_hash: &str) -> Slot<'_> {
        Slot { index, spec_hash, running: true, ready: true, ended: false, starting: false }
    }

    #[test]
    fn a_spec_change_replaces_one_replica_at_a_time_while_the_others_are_ready() {
        let new = "new";
        type Row<'a> = (&'static str, u32, Vec<Slot<'a>>, Option<u32>);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("nothing to roll when every replica runs the spec", 3, vec![slot(0, new), slot(1, new), slot(2, new)], None),
            ("the lowest old replica goes first", 3, vec![slot(0, "old"), slot(1, "old"), slot(2, "old")], Some(0)),
            ("then the next old one", 3, vec![slot(0, new), slot(1, "old"), slot(2, "old")], Some(1)),
            ("a replica not ready yet holds the rollout",
                3, vec![Slot { ready: false, ..slot(0, new) }, slot(1, "old"), slot(2, "old")], None),
            ("a replacement on its way holds the rollout",
                3, vec![Slot { running: false, ready: false, starting: true, ..slot(0, "old") }, slot(1, "old")], None),
            ("a replica waiting for its restart backoff holds the rollout",
                2, vec![Slot { running: false, ready: false, ..slot(0, new) }, slot(1, "old")], None),
            ("an ended replica does not hold it",
                2, vec![Slot { running: false, ready: false, ended: true, ..slot(0, "old") }, slot(1, "old")], Some(1)),
            ("an ended replica is not replaced",
                1, vec![Slot { running: false, ready: false, ended: true, ..slot(0, "old") }], None),
            ("a replica beyond replicas is not replaced (it is stopped)", 1, vec![slot(0, new), slot(1, "old")], None),
            ("a single replica is replaced (there is no other to wait for)", 1, vec![slot(0, "old")], Some(0)),
            ("no replicas, nothing to do", 2, vec![], None),
        ];
        for (what, desired, slots, want) in table {
            assert_eq!(replace_now(new, desired, &slots), want, "{what}");
        }
    }
}
