//! Who recomputes a drawn update: a node of another owner, paid like the
//! work it repeats, or the coordinator when no such node may.
//!
//! A node audits for the coordinator only if
//! - its owner is not the worker's (no owner judges its own work);
//! - it is not the coordinator (which is the fallback anyway);
//! - it has passed an audit here (a node never checked judges no one);
//! - it has not been given another update this round (it replays one at
//!   a time);
//! - its owner's audited shards this round stay within the per-owner cap
//!   of the allocation in force, the cap that bounds what the owner trains:
//!   no owner holds more of a round's verdicts than of its work.
//!
//! Among those the draw's seed picks one per update, so the worker cannot
//! choose its judge either. Assigned in node order, which fixes whose cap
//! room is used first.

use std::collections::BTreeMap;

use fairgrid_protocol::{Hash32, NodeId, OwnerId};

/// A node that may be asked to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auditor {
    pub node: NodeId,
    pub owner: OwnerId,
    /// Its clean audits in a row at this coordinator.
    pub streak: u32,
}

/// An update drawn for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub worker: NodeId,
    pub owner: OwnerId,
    /// Shards the update covers (what auditing it counts against the
    /// auditor's owner's cap).
    pub shards: u32,
}

/// For each drawn update (in order), the index in `pool` of its auditor,
/// or `None` when the coordinator audits it.
pub fn assign_auditors(
    seed: &Hash32,
    coordinator: &NodeId,
    drawn: &[Drawn],
    pool: &[Auditor],
    cap: impl Fn(&OwnerId) -> u32,
) -> Vec<Option<usize>> {
    let mut load: BTreeMap<OwnerId, u32> = BTreeMap::new();
    let mut given = vec![false; pool.len()];
    drawn
        .iter()
        .map(|d| {
            let eligible: Vec<usize> = (0..pool.len())
                .filter(|&i| {
                    let a = &pool[i];
                    a.owner != d.owner
                        && !given[i]
                        && a.node != *coordinator
                        && a.streak > 0
                        && load.get(&a.owner).copied().unwrap_or(0) + d.shards <= cap(&a.owner)
                })
                .collect();
            if eligible.is_empty() {
                return None;
            }
            let x = Hash32::of_parts(&[
                b"fairgrid/v1/auditor".as_slice(),
                seed.0.as_slice(),
                d.worker.0.as_bytes(),
            ])
            .prefix_u64();
            let chosen = eligible[(x % eligible.len() as u64) as usize];
            *load.entry(pool[chosen].owner).or_insert(0) += d.shards;
            given[chosen] = true;
            Some(chosen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    fn node(i: u8) -> NodeId {
        Keypair::from_seed(&[i]).node_id()
    }

    fn owner(i: u8) -> OwnerId {
        OwnerId(node(100 + i).0)
    }

    fn auditor(i: u8, o: u8, streak: u32) -> Auditor {
        Auditor {
            node: node(i),
            owner: owner(o),
            streak,
        }
    }

    fn drawn(i: u8, o: u8, shards: u32) -> Drawn {
        Drawn {
            worker: node(i),
            owner: owner(o),
            shards,
        }
    }

    #[test]
    fn an_auditor_is_never_of_the_workers_owner_nor_untried_nor_the_coordinator() {
        let pool = [
            auditor(1, 1, 3), // the worker's owner
            auditor(2, 2, 0), // never audited here
            auditor(0, 4, 9), // the coordinator
            auditor(5, 5, 1), // the only one left
        ];
        for s in 0..64u32 {
            let seed = Hash32::of(&s.to_le_bytes());
            let got = assign_auditors(&seed, &node(0), &[drawn(1, 1, 4)], &pool, |_| 100);
            assert_eq!(got, vec![Some(3)]);
        }
        // Without it, the coordinator audits.
        let got = assign_auditors(
            &Hash32::ZERO,
            &node(0),
            &[drawn(1, 1, 4)],
            &pool[..3],
            |_| 100,
        );
        assert_eq!(got, vec![None]);
        // A worker of another owner may judge a node that judges it.
        let both = [drawn(1, 1, 1), drawn(5, 5, 1)];
        let got = assign_auditors(&Hash32::ZERO, &node(0), &both, &pool, |_| 100);
        assert_eq!(got, vec![Some(3), Some(0)]);
    }

    #[test]
    fn an_owners_audits_in_a_round_stay_within_its_cap() {
        // Two auditors of owner 5 and one of owner 6, cap 4 shards each:
        // at most one 4-shard update per owner.
        let pool = [auditor(5, 5, 1), auditor(6, 5, 1), auditor(7, 6, 1)];
        let updates = [drawn(1, 1, 4), drawn(2, 2, 4), drawn(3, 3, 4)];
        for s in 0..64u32 {
            let seed = Hash32::of(&s.to_le_bytes());
            let got = assign_auditors(&seed, &node(0), &updates, &pool, |_| 4);
            let mut by_owner = BTreeMap::new();
            for i in got.iter().flatten() {
                *by_owner.entry(pool[*i].owner).or_insert(0) += 4;
            }
            assert!(by_owner.values().all(|&s| s <= 4), "{got:?}");
            assert_eq!(got.iter().flatten().count(), 2, "{got:?}");
            assert_eq!(got[2], None, "the third has no room left: {got:?}");
        }
    }

    #[test]
    fn a_node_is_given_one_update_a_round() {
        let pool = [auditor(5, 5, 1), auditor(6, 6, 1)];
        let updates = [drawn(1, 1, 1), drawn(2, 2, 1), drawn(3, 3, 1)];
        for s in 0..64u32 {
            let seed = Hash32::of(&s.to_le_bytes());
            let got = assign_auditors(&seed, &node(0), &updates, &pool, |_| 100);
            let given: Vec<usize> = got.iter().flatten().copied().collect();
            assert_eq!(given.len(), 2, "{got:?}");
            assert_ne!(given[0], given[1], "{got:?}");
        }
    }

    #[test]
    fn the_seed_picks_among_the_eligible_and_spreads_the_work() {
        let pool = [auditor(5, 5, 1), auditor(6, 6, 1), auditor(7, 7, 1)];
        let mut picked = [0u32; 3];
        for s in 0..300u32 {
            let seed = Hash32::of(&s.to_le_bytes());
            let got = assign_auditors(&seed, &node(0), &[drawn(1, 1, 1)], &pool, |_| 1);
            picked[got[0].unwrap()] += 1;
            // Deterministic.
            assert_eq!(
                got,
                assign_auditors(&seed, &node(0), &[drawn(1, 1, 1)], &pool, |_| 1)
            );
        }
        assert!(picked.iter().all(|&n| n > 60), "{picked:?}");
    }
}
