//! Each submitter's share of the contended epoch against the weighted-DRF
//! solution. The jobs placed before any job finished competed for the
//! same pool; the protocol's `market::admit_epoch` says what each
//! submitter's jobs should then hold, given every node's offer, the jobs'
//! caps and the network cap. When submitters tie, the tie-break seed
//! decides who goes first, and the nodes' passes use seeds this check
//! cannot know (each pass hashes the ids of the jobs it orders), so every
//! outcome over a range of seeds counts as a DRF solution; the observed
//! shares must be within one shard of one of them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use fairgrid_protocol::market::{EpochJob, EpochPolicy, MarketJob, ValidBid, admit_epoch};
use fairgrid_protocol::messages::ShortfallPolicy;
use fairgrid_protocol::{Hash32, NodeId, OwnerId, ResourceVec};

/// Tie-break seeds tried: with three submitters each of the six orders
/// comes with a chance of 1/6 per seed, so 256 seeds miss one with a
/// probability of about 6 x (5/6)^256, below 1e-19.
const SEEDS: u16 = 256;

/// A node as its advert offers it.
#[derive(Debug, Clone)]
pub struct PoolNode {
    pub node: NodeId,
    pub owner: OwnerId,
    pub offer: ResourceVec,
    pub ask: u64,
}

/// A job of the epoch, in submission order.
#[derive(Debug, Clone)]
pub struct Contender {
    pub job_id: Hash32,
    pub submitter: NodeId,
    pub shards: u32,
    pub demand_per_shard: ResourceVec,
    pub limit_price: u64,
    pub alpha_ppm: u32,
    pub on_shortfall: ShortfallPolicy,
}

/// Shards placed per submitter.
pub type Shares = BTreeMap<NodeId, u64>;

/// Every submitter's shards in each DRF solution (one per distinct
/// outcome over the seeds), every node bidding its whole offer on every
/// job, the window empty (a fresh network).
pub fn solutions(
    jobs: &[Contender],
    pool: &[PoolNode],
    beta_ppm: u32,
) -> anyhow::Result<BTreeSet<Vec<(NodeId, u64)>>> {
    let epoch: Vec<EpochJob> = jobs.iter().map(|j| epoch_job(j, pool)).collect();
    let mut out = BTreeSet::new();
    for i in 0..SEEDS {
        let policy = EpochPolicy {
            beta_ppm,
            window: Default::default(),
            seed: Hash32::of(&i.to_le_bytes()),
        };
        let mut shares: Shares = jobs.iter().map(|j| (j.submitter, 0)).collect();
        for allocation in admit_epoch(&epoch, &policy, 0)? {
            let job = epoch
                .iter()
                .find(|j| j.job.job_id == allocation.job_id)
                .expect("an allocation of a job of the epoch");
            *shares.entry(job.submitter).or_default() += u64::from(allocation.assigned_shards());
        }
        out.insert(shares.into_iter().collect());
    }
    Ok(out)
}

fn epoch_job(job: &Contender, pool: &[PoolNode]) -> EpochJob {
    EpochJob {
        job: MarketJob {
            job_id: job.job_id,
            shards: (0..job.shards).collect(),
            demand_per_shard: job.demand_per_shard,
            limit_price: job.limit_price,
            attempt: 0,
            prev_allocation: Hash32::ZERO,
        },
        submitter: job.submitter,
        weight: 1,
        alpha_ppm: job.alpha_ppm,
        on_shortfall: job.on_shortfall,
        bids: pool
            .iter()
            .map(|n| ValidBid {
                bid_id: Hash32::of(&[job.job_id.0, n.node.0.0].concat()),
                node: n.node,
                owner: n.owner,
                ask: n.ask,
                capacity: n.offer,
                speed_milli: 0,
            })
            .collect(),
    }
}

/// The solution `observed` is within one shard of, per submitter; fails
/// naming all of them if there is none.
pub fn check(
    observed: &Shares,
    solutions: &BTreeSet<Vec<(NodeId, u64)>>,
) -> anyhow::Result<Vec<(NodeId, u64)>> {
    let near = |s: &Vec<(NodeId, u64)>| {
        s.iter()
            .all(|(who, n)| observed.get(who).copied().unwrap_or(0).abs_diff(*n) <= 1)
            && observed.keys().all(|who| s.iter().any(|(w, _)| w == who))
    };
    match solutions.iter().find(|s| near(s)) {
        Some(s) => Ok(s.clone()),
        None => bail!(
            "shards per submitter {:?} are not within one shard of any DRF solution {:?}",
            shares_text(&observed.clone().into_iter().collect::<Vec<_>>()),
            solutions.iter().map(|s| shares_text(s)).collect::<Vec<_>>()
        ),
    }
}

/// "a1b2c3d4:24 ..." for humans.
pub fn shares_text(shares: &[(NodeId, u64)]) -> String {
    shares
        .iter()
        .map(|(who, n)| format!("{}:{n}", &who.to_string()[..12]))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    fn node(i: u8) -> NodeId {
        Keypair::from_seed(&[i]).node_id()
    }

    /// Six nodes of two owners, each offering 4 shards: 24 in all.
    fn pool() -> Vec<PoolNode> {
        (0..6)
            .map(|i| PoolNode {
                node: node(i),
                owner: Keypair::from_seed(&[100 + i % 2]).owner_id(),
                offer: ResourceVec {
                    cpu_milli: 400,
                    mem_mib: 4096,
                    ..Default::default()
                },
                ask: 10,
            })
            .collect()
    }

    fn job(name: u8, submitter: u8, shards: u32) -> Contender {
        Contender {
            job_id: Hash32::of(&[name]),
            submitter: node(200 + submitter),
            shards,
            demand_per_shard: ResourceVec {
                cpu_milli: 100,
                mem_mib: 16,
                ..Default::default()
            },
            limit_price: 1_000,
            alpha_ppm: 500_000,
            on_shortfall: ShortfallPolicy::Wait,
        }
    }

    #[test]
    fn whole_jobs_in_drf_order_and_only_the_observed_ones_pass() {
        // Two submitters with two jobs of 8 shards each; the pool holds 3.
        let jobs = [job(1, 0, 8), job(2, 0, 8), job(3, 1, 8), job(4, 1, 8)];
        let all = solutions(&jobs, &pool(), 1_000_000).unwrap();
        let (a, b) = (node(200), node(201));
        // Either submitter may win the tie for the third job.
        let expected: BTreeSet<Vec<(NodeId, u64)>> = [[(a, 16), (b, 8)], [(a, 8), (b, 16)]]
            .into_iter()
            .map(|s| {
                let mut v = s.to_vec();
                v.sort();
                v
            })
            .collect();
        assert_eq!(all, expected);
        // One shard off passes; a submitter holding both its jobs while
        // the other holds none does not, nor does one left out.
        assert!(check(&Shares::from([(a, 15), (b, 8)]), &all).is_ok());
        let err = check(&Shares::from([(a, 16), (b, 0)]), &all).unwrap_err();
        assert!(err.to_string().contains("not within one shard"), "{err}");
        assert!(check(&Shares::from([(a, 16)]), &all).is_err());
    }
}
