//! Weighted dominant-resource fairness over submitters: who goes next when
//! several jobs compete for the same capacity. [`admit_epoch`] clears the
//! jobs of one epoch in this order; a node ranks the jobs competing for
//! its free capacity with [`drf_order`] (docs/market.md, "Several jobs in one
//! epoch").
//!
//! A submitter's dominant share is `max over resources r of used_r /
//! total_r`, divided by its weight; shares are compared exactly
//! (cross-multiplied into 256-bit products built from u128 halves), ties
//! go to the smaller `H(seed || submitter)`.
//!
//! [`admit_epoch`]: super::admit_epoch

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};

use super::digest::hash_pair;
use crate::Hash32;
use crate::identity::NodeId;
use crate::resources::ResourceVec;

/// One submitter's standing in a DRF pass.
pub(crate) struct Submitter {
    weight: u32,
    tie: Hash32,
    used: [u128; 4],
    /// Its jobs not yet placed, as indices into the caller's list.
    pub(crate) queue: VecDeque<usize>,
}

impl Submitter {
    pub(crate) fn new(weight: u32, seed: &Hash32, key: &NodeId) -> Self {
        Self {
            weight,
            tie: hash_pair(&seed.0, &key.0.0),
            used: [0; 4],
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn add_use(&mut self, used: &ResourceVec) {
        for (u, x) in self.used.iter_mut().zip(used.as_array()) {
            *u += x as u128;
        }
    }
}

/// The submitter with jobs left whose weighted dominant share is smallest.
pub(crate) fn next_submitter(
    submitters: &BTreeMap<NodeId, Submitter>,
    total: &[u128; 4],
) -> Option<NodeId> {
    submitters
        .iter()
        .filter(|(_, s)| !s.queue.is_empty())
        .min_by(|a, b| compare_shares(a.1, b.1, total).then(a.0.cmp(b.0)))
        .map(|(id, _)| *id)
}

pub(crate) fn totals(capacities: impl IntoIterator<Item = ResourceVec>) -> [u128; 4] {
    let mut total = [0u128; 4];
    for cap in capacities {
        for (t, x) in total.iter_mut().zip(cap.as_array()) {
            *t += x as u128;
        }
    }
    total
}

/// A job competing for capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contender {
    pub job_id: Hash32,
    pub submitter: NodeId,
    /// The submitter's weight (> 0; a submitter's first contender's counts).
    pub weight: u32,
    /// What the whole job asks for: its shards times the demand per shard.
    pub demand: ResourceVec,
}

/// The order in which `contenders` are served: repeatedly the next job of
/// the submitter with the smallest weighted dominant share of `pool`,
/// counting `usage` (what each submitter already holds) and the demand of
/// its jobs served earlier in the order. A submitter's jobs keep their
/// input order. Returns indices into `contenders`; a weight of 0 counts
/// as 1.
pub fn drf_order(
    contenders: &[Contender],
    usage: &BTreeMap<NodeId, ResourceVec>,
    pool: &ResourceVec,
    seed: &Hash32,
) -> Vec<usize> {
    let total = totals([*pool]);
    let mut submitters: BTreeMap<NodeId, Submitter> = BTreeMap::new();
    for (index, c) in contenders.iter().enumerate() {
        submitters
            .entry(c.submitter)
            .or_insert_with(|| {
                let mut s = Submitter::new(c.weight.max(1), seed, &c.submitter);
                if let Some(used) = usage.get(&c.submitter) {
                    s.add_use(used);
                }
                s
            })
            .queue
            .push_back(index);
    }
    let mut order = Vec::with_capacity(contenders.len());
    while let Some(id) = next_submitter(&submitters, &total) {
        let s = submitters.get_mut(&id).expect("chosen from the map");
        let index = s.queue.pop_front().expect("non-empty queue");
        s.add_use(&contenders[index].demand);
        order.push(index);
    }
    order
}

/// Orders submitters by weighted dominant share, then by H(seed || key).
fn compare_shares(a: &Submitter, b: &Submitter, total: &[u128; 4]) -> Ordering {
    let (an, ad) = dominant(a, total);
    let (bn, bd) = dominant(b, total);
    cmp_fractions(an, ad, bn, bd).then(a.tie.cmp(&b.tie))
}

/// The weighted dominant share as a fraction `used_r / (total_r * weight)`.
fn dominant(s: &Submitter, total: &[u128; 4]) -> (u128, u128) {
    let mut best = (0u128, 1u128);
    for (r, &t) in total.iter().enumerate() {
        if t == 0 {
            continue;
        }
        if cmp_fractions(s.used[r], t, best.0, best.1) == Ordering::Greater {
            best = (s.used[r], t);
        }
    }
    (best.0, best.1.saturating_mul(s.weight as u128))
}

/// Compares `an / ad` with `bn / bd` exactly (`ad`, `bd` > 0).
pub(crate) fn cmp_fractions(an: u128, ad: u128, bn: u128, bd: u128) -> Ordering {
    mul_wide(an, bd).cmp(&mul_wide(bn, ad))
}

/// The exact 256-bit product of two u128s, as (high, low).
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let low = a0 * b0;
    let mid1 = a1 * b0;
    let mid2 = a0 * b1;
    let high = a1 * b1;
    let (mid, mid_carry) = mid1.overflowing_add(mid2);
    let (low, low_carry) = low.overflowing_add(mid << 64);
    let high = high + (mid >> 64) + ((mid_carry as u128) << 64) + low_carry as u128;
    (high, low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn wide_products_compare_exactly() {
        let big = u128::MAX;
        assert_eq!(mul_wide(big, big), (big - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        assert_eq!(
            cmp_fractions(big, big - 1, big - 1, big - 2),
            Ordering::Less
        );
        assert_eq!(cmp_fractions(1, 3, 2, 6), Ordering::Equal);
        assert_eq!(cmp_fractions(0, 1, 0, 7), Ordering::Equal);
    }

    fn cpu(milli: u64) -> ResourceVec {
        ResourceVec {
            cpu_milli: milli,
            ..Default::default()
        }
    }

    fn contender(job: &str, submitter: &NodeId, weight: u32, milli: u64) -> Contender {
        Contender {
            job_id: Hash32::of(job.as_bytes()),
            submitter: *submitter,
            weight,
            demand: cpu(milli),
        }
    }

    #[test]
    fn submitters_take_turns_and_history_counts() {
        let [a, b, c] = [b"a", b"b", b"c"].map(|s| Keypair::from_seed(s).node_id());
        // Two jobs each, submitted a's first: the second job of anyone
        // comes after every submitter's first.
        let jobs = [
            contender("a1", &a, 1, 800),
            contender("a2", &a, 1, 800),
            contender("b1", &b, 1, 800),
            contender("b2", &b, 1, 800),
            contender("c1", &c, 1, 800),
            contender("c2", &c, 1, 800),
        ];
        let pool = cpu(2400);
        let order = drf_order(&jobs, &BTreeMap::new(), &pool, &Hash32::ZERO);
        let firsts: Vec<usize> = order[..3].to_vec();
        assert!(firsts.iter().all(|i| i % 2 == 0), "{order:?}");
        assert!(order[3..].iter().all(|i| i % 2 == 1), "{order:?}");
        // The same inputs, the same order.
        assert_eq!(
            order,
            drf_order(&jobs, &BTreeMap::new(), &pool, &Hash32::ZERO)
        );

        // a already holds a third of the pool: b and c go first.
        let usage = BTreeMap::from([(a, cpu(800))]);
        let order = drf_order(&jobs, &usage, &pool, &Hash32::ZERO);
        assert!(order[..2].iter().all(|i| *i == 2 || *i == 4), "{order:?}");

        // Weight 3 against 1: a's three jobs share-equal b's one.
        let weighted = [
            contender("a1", &a, 3, 100),
            contender("a2", &a, 3, 100),
            contender("a3", &a, 3, 100),
            contender("b1", &b, 1, 110),
            contender("b2", &b, 1, 110),
        ];
        let order = drf_order(&weighted, &BTreeMap::new(), &cpu(1000), &Hash32::ZERO);
        let before_b2 = order.iter().position(|i| *i == 4).unwrap();
        let a_before = order[..before_b2].iter().filter(|i| **i < 3).count();
        assert_eq!(a_before, 3, "{order:?}");
    }
}
