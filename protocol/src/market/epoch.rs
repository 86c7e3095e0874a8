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

use std::collections::BTreeMap;

use super::admission::{Submitter, next_submitter, totals};
use super::{MarketError, MarketJob, MarketPolicy, ValidBid, WindowUsage};
use super::{clear_valid, first_difference};
use crate::Hash32;
use crate::identity::NodeId;
use crate::messages::{Allocation, ShortfallPolicy};
use crate::resources::ResourceVec;

/// One job competing in the epoch, with its validated bids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochJob {
    pub job: MarketJob,
    pub submitter: NodeId,
    /// The submitter's weight (> 0); a submitter's first job's weight counts.
    pub weight: u32,
    pub alpha_ppm: u32,
    /// `Wait`: the job is admitted only if every shard is placed; one
    /// that cannot be is left out of the epoch (takes nothing, is not in
    /// the result) and waits for the next, as its coordinator does.
    pub on_shortfall: ShortfallPolicy,
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

/// Admits the jobs in weighted-DRF order and returns each admitted job's
/// allocation in admission order (a `Wait` job with a shortfall is not
/// admitted and its submitter's next job is considered instead). A
/// submitter's jobs keep their input order.
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
    let total = totals(pool.values().copied());
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
            .or_insert_with(|| Submitter::new(job.weight, &policy.seed, &job.submitter))
            .queue
            .push_back(index);
    }

    let mut window = policy.window.clone();
    let mut out = Vec::with_capacity(jobs.len());
    while let Some(id) = next_submitter(&submitters, &total) {
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
        if allocation.shortfall > 0 && job.on_shortfall == ShortfallPolicy::Wait {
            continue;
        }
        let demand = job.job.demand_per_shard;
        for a in &allocation.assignments {
            let used = demand.saturating_mul(a.shards.len() as u64);
            let free = pool.get_mut(&a.node).expect("winner bid in the epoch");
            *free = free.saturating_sub(&used);
            submitter.add_use(&used);
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
