//! Several jobs in one epoch (the demand side): weighted dominant-resource
//! fairness over submitters decides which job is admitted next; each
//! admission clears that job against what node capacity is still free.
//!
//! A node's pool for the epoch is the component-wise maximum of the
//! capacities in its bids (all its bids describe the same machine). A job
//! sees, per node, the smaller of its bid's capacity and what is left of
//! the pool; admitting it consumes `shards x demand` of each winner's pool.
//! The network window grows by each admission, so the beta cap holds
//! across the epoch. Submitter shares are compared exactly: fractions are
//! cross-multiplied into 256-bit products built from u128 halves.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};

use super::{MarketError, MarketJob, MarketPolicy, ValidBid, WindowUsage, digest::hash_pair};
use super::{clear_valid, first_difference};
use crate::Hash32;
use crate::identity::NodeId;
use crate::messages::Allocation;
use crate::resources::ResourceVec;

/// One job competing in the epoch, with its validated bids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochJob {
    pub job: MarketJob,
    pub submitter: NodeId,
    /// The submitter's weight (> 0); a submitter's first job's weight counts.
    pub weight: u32,
    pub alpha_ppm: u32,
    pub bids: Vec<ValidBid>,
}

/// What all jobs of the epoch share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochPolicy {
    pub beta_ppm: u32,
    /// Usage before the epoch.
    pub window: WindowUsage,
    /// Tie-break seed, e.g. the hash of the previous epoch's last allocation.
    pub seed: Hash32,
}

struct Submitter {
    weight: u32,
    tie: Hash32,
    used: [u128; 4],
    queue: VecDeque<usize>,
}

/// Admits the jobs in weighted-DRF order and returns each job's
/// allocation in admission order. A submitter's jobs keep their input
/// order.
pub fn admit_epoch(
    jobs: &[EpochJob],
    policy: &EpochPolicy,
    cleared_at: u64,
) -> Result<Vec<Allocation>, MarketError> {
    let mut pool: BTreeMap<NodeId, ResourceVec> = BTreeMap::new();
    for job in jobs {
        for bid in &job.bids {
            let slot = pool.entry(bid.node).or_default();
            let (a, b) = (slot.as_array(), bid.capacity.as_array());
            *slot = ResourceVec::from_array(std::array::from_fn(|r| a[r].max(b[r])));
        }
    }
    let mut total = [0u128; 4];
    for cap in pool.values() {
        for (t, x) in total.iter_mut().zip(cap.as_array()) {
            *t += x as u128;
        }
    }
    let mut submitters: BTreeMap<NodeId, Submitter> = BTreeMap::new();
    for (index, job) in jobs.iter().enumerate() {
        if job.weight == 0 {
            return Err(MarketError::job(
                "weight",
                format!("jobs[{index}] has weight 0"),
            ));
        }
        submitters
            .entry(job.submitter)
            .or_insert_with(|| Submitter {
                weight: job.weight,
                tie: hash_pair(&policy.seed.0, &job.submitter.0.0),
                used: [0; 4],
                queue: VecDeque::new(),
            })
            .queue
            .push_back(index);
    }

    let mut window = policy.window.clone();
    let mut out = Vec::with_capacity(jobs.len());
    loop {
        let next = submitters
            .iter()
            .filter(|(_, s)| !s.queue.is_empty())
            .min_by(|a, b| compare_shares(a.1, b.1, &total).then(a.0.cmp(b.0)))
            .map(|(id, _)| *id);
        let Some(id) = next else { break };
        let submitter = submitters.get_mut(&id).expect("chosen from the map");
        let index = submitter.queue.pop_front().expect("non-empty queue");
        let job = &jobs[index];
        let bids: Vec<ValidBid> = job
            .bids
            .iter()
            .map(|b| ValidBid {
                capacity: ResourceVec::min(&b.capacity, &pool[&b.node]),
                ..b.clone()
            })
            .collect();
        let market_policy = MarketPolicy {
            alpha_ppm: job.alpha_ppm,
            beta_ppm: policy.beta_ppm,
            window: window.clone(),
        };
        let allocation = clear_valid(&job.job, &bids, &market_policy, cleared_at)?;
        let demand = job.job.demand_per_shard;
        for a in &allocation.assignments {
            let used = demand.saturating_mul(a.shards.len() as u64);
            let free = pool.get_mut(&a.node).expect("winner bid in the epoch");
            *free = free.saturating_sub(&used);
            for (u, x) in submitter.used.iter_mut().zip(used.as_array()) {
                *u += x as u128;
            }
            window.total = window.total.saturating_add(a.shards.len() as u64);
            let by = window.by_owner.entry(a.owner).or_default();
            *by = by.saturating_add(a.shards.len() as u64);
        }
        out.push(allocation);
    }
    Ok(out)
}

/// Recomputes the epoch and names the first allocation that differs.
pub fn verify_epoch(
    allocations: &[Allocation],
    jobs: &[EpochJob],
    policy: &EpochPolicy,
) -> Result<(), MarketError> {
    let cleared_at = allocations.first().map(|a| a.cleared_at).unwrap_or(0);
    let expected = admit_epoch(jobs, policy, cleared_at)?;
    if expected.len() != allocations.len() {
        return Err(MarketError::mismatch(
            "allocations.len",
            expected.len(),
            allocations.len(),
        ));
    }
    for (i, (e, f)) in expected.iter().zip(allocations).enumerate() {
        first_difference(e, f).map_err(|err| match err {
            MarketError::Mismatch {
                field,
                expected,
                found,
            } => MarketError::Mismatch {
                field: format!("allocations[{i}].{field}"),
                expected,
                found,
            },
            other => other,
        })?;
    }
    Ok(())
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
}
