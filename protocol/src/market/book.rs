//! The order book: checked inputs, node capacities, owner caps, the seed and
//! the clearing order (steps 2-4 of the market rules).

use std::ops::Range;

use super::PPM;
use super::capacity::ShardUnits;
use super::digest::Digest;
use super::owners::OwnerTable;
use super::radix::{Packing, sort_by_prefix};
use super::{MAX_MARKET_SHARDS, MarketError, MarketJob, MarketPolicy, ValidBid};
use crate::Hash32;
use crate::identity::OwnerId;

/// One node in clearing order, with its capacity in shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookNode {
    /// Index into the `ValidBid`s the book was built from.
    pub bid: u32,
    /// Index into [`OrderBook::owners`].
    pub owner: u32,
    pub ask: u64,
    /// k_i: whole shards the node can take (capacity / demand, at most M).
    pub units: u32,
    /// The bid's measured speed (0: none); the weight of its share at a
    /// marginal level where every node has one.
    pub speed_milli: u64,
}

/// Everything clearing needs, computed once; the sweep and the payments
/// read it. Nodes that cannot take a single shard are left out of `nodes`
/// (they still count in `bid_root`).
#[derive(Debug, Clone)]
pub struct OrderBook<'a> {
    pub job: &'a MarketJob,
    pub policy: &'a MarketPolicy,
    pub bids: &'a [ValidBid],
    pub bid_root: Hash32,
    pub seed: Hash32,
    /// Distinct owners of the nodes in the book, sorted.
    pub owners: Vec<OwnerId>,
    /// C_o per owner (same index as `owners`).
    pub caps: Vec<u32>,
    /// Nodes in clearing order: (ask, tie key, node key).
    pub nodes: Vec<BookNode>,
    /// Ranges of `nodes` with equal ask, cheapest first.
    pub levels: Vec<Range<usize>>,
}

pub(crate) fn check_job(job: &MarketJob) -> Result<u32, MarketError> {
    let m = job.shards.len();
    if m == 0 {
        return Err(MarketError::job("shards", "the job has no shards to place"));
    }
    if m > MAX_MARKET_SHARDS {
        return Err(MarketError::job(
            "shards",
            format!("{m} shards exceed the market's limit of {MAX_MARKET_SHARDS}"),
        ));
    }
    // A branch-free scan (vectorised) over the shard list; the position of
    // the first disorder is looked up only when there is one.
    let shards = &job.shards;
    let disordered = shards[..m - 1]
        .iter()
        .zip(&shards[1..])
        .fold(false, |bad, (a, b)| bad | (a >= b));
    if let Some(w) = disordered
        .then(|| shards.windows(2).position(|w| w[0] >= w[1]))
        .flatten()
    {
        return Err(MarketError::job(
            "shards",
            format!(
                "shard indices must be strictly ascending; shards[{}] = {} is followed by {}",
                w,
                shards[w],
                shards[w + 1]
            ),
        ));
    }
    // Every cost and payment is at most M * limit_price; make sure it fits.
    if (m as u128) * (job.limit_price as u128) > u64::MAX as u128 {
        return Err(MarketError::job(
            "limit_price",
            format!("{} shards at {} overflow a u64 budget", m, job.limit_price),
        ));
    }
    Ok(m as u32)
}

pub(crate) fn check_policy(policy: &MarketPolicy) -> Result<(), MarketError> {
    if policy.alpha_ppm == 0 || policy.alpha_ppm > PPM {
        return Err(MarketError::policy(
            "alpha_ppm",
            format!("{} is not in 1..=1000000", policy.alpha_ppm),
        ));
    }
    if policy.beta_ppm == 0 || policy.beta_ppm > PPM {
        return Err(MarketError::policy(
            "beta_ppm",
            format!("{} is not in 1..=1000000", policy.beta_ppm),
        ));
    }
    let mut sum: u64 = 0;
    for used in policy.window.by_owner.values() {
        sum = sum.checked_add(*used).ok_or_else(|| {
            MarketError::policy("window.by_owner", "per-owner usage overflows a u64")
        })?;
    }
    if sum > policy.window.total {
        return Err(MarketError::policy(
            "window.total",
            format!(
                "{} is less than the per-owner usage it should include ({sum})",
                policy.window.total
            ),
        ));
    }
    Ok(())
}

/// C_o = min(floor(alpha * M), W_o) with
/// W_o = floor(beta * (window total + M)) - owner's window usage
/// (saturating; beta = 100% means no network cap).
pub fn owner_cap(policy: &MarketPolicy, m: u32, owner: &OwnerId) -> u32 {
    let alpha_cap = (policy.alpha_ppm as u128 * m as u128 / PPM as u128) as u64;
    if policy.beta_ppm >= PPM {
        return alpha_cap as u32;
    }
    let window_total = policy.window.total as u128 + m as u128;
    let room = policy.beta_ppm as u128 * window_total / PPM as u128;
    let used = policy.window.by_owner.get(owner).copied().unwrap_or(0) as u128;
    let network_cap = room.saturating_sub(used);
    (alpha_cap as u128).min(network_cap) as u32
}

impl<'a> OrderBook<'a> {
    /// Checks the inputs and builds the book. Bids must satisfy
    /// `ValidBid`'s contract (ask within the limit, one bid per node).
    pub fn new(
        job: &'a MarketJob,
        bids: &'a [ValidBid],
        policy: &'a MarketPolicy,
    ) -> Result<Self, MarketError> {
        Self::with_digest(job, bids, policy, Digest::new(&job.prev_allocation, bids))
    }

    /// [`OrderBook::new`] with the digest already computed by
    /// [`Digest::new`] for these bids and `job.prev_allocation`.
    pub fn with_digest(
        job: &'a MarketJob,
        bids: &'a [ValidBid],
        policy: &'a MarketPolicy,
        digest: Digest,
    ) -> Result<Self, MarketError> {
        let m = check_job(job)?;
        check_policy(policy)?;
        let n = bids.len();
        if n > u32::MAX as usize || digest.ties.len() != n || digest.node_rank.len() != n {
            return Err(MarketError::InvalidValidBid {
                index: n.min(digest.ties.len()).min(digest.node_rank.len()),
                reason: "bid count does not match the digest or exceeds u32".into(),
            });
        }
        check_unique_nodes(&digest.node_rank)?;

        // One pass over the bids: the ask bound, k_i and the owner's group,
        // in input order.
        let mut asks = Vec::with_capacity(n);
        let mut units = Vec::with_capacity(n);
        let mut groups = Vec::with_capacity(n);
        let mut owner_table = OwnerTable::new(&digest.seed);
        let shard_units = ShardUnits::new(&job.demand_per_shard.as_array(), m);
        for (index, bid) in bids.iter().enumerate() {
            if bid.ask > job.limit_price {
                return Err(MarketError::InvalidValidBid {
                    index,
                    reason: format!(
                        "ask {} exceeds the limit price {}",
                        bid.ask, job.limit_price
                    ),
                });
            }
            asks.push(bid.ask);
            units.push(shard_units.of(&bid.capacity.as_array()));
            groups.push(owner_table.group_of(&bid.owner));
        }

        let (owners, owner_of) = owner_table.finish(groups);
        let caps = owners.iter().map(|o| owner_cap(policy, m, o)).collect();
        let order = clearing_order(&asks, &units, &digest);
        let nodes: Vec<BookNode> = order
            .into_iter()
            .map(|i| {
                let i = i as usize;
                BookNode {
                    bid: i as u32,
                    owner: owner_of[i],
                    ask: asks[i],
                    units: units[i],
                    speed_milli: bids[i].speed_milli,
                }
            })
            .collect();
        let levels = levels_of(&nodes);
        Ok(OrderBook {
            job,
            policy,
            bids,
            bid_root: digest.bid_root,
            seed: digest.seed,
            owners,
            caps,
            nodes,
            levels,
        })
    }

    /// M, the number of shards to place.
    pub fn demand(&self) -> u32 {
        self.job.shards.len() as u32
    }
}

/// Bids that can take a shard, sorted by (ask, tie key, node key); node
/// ranks order like node keys. One radix sort on a packed key: the ask's
/// level (its offset from the cheapest ask, or its rank among the distinct
/// asks if the offsets need more than 32 bits) in the top bits, the tie
/// key's top bits below, the bid index in the lowest bits ([`Packing`]).
/// Equal kept keys (rare) are settled by the whole tie key and the rank.
fn clearing_order(asks: &[u64], units: &[u32], digest: &Digest) -> Vec<u32> {
    let live = || (0..asks.len()).filter(|&i| units[i] > 0);
    let min = live().map(|i| asks[i]).min().unwrap_or(0);
    let max = live().map(|i| asks[i]).max().unwrap_or(0);
    let span_bits = 64 - (max - min).leading_zeros();
    // Asks too far apart for 32 bits: their ranks among the distinct asks.
    let distinct: Option<Vec<u64>> = (span_bits > 32).then(|| {
        let mut distinct: Vec<u64> = live().map(|i| asks[i]).collect();
        sort_by_prefix(&mut distinct, |&a| a);
        distinct.dedup();
        distinct
    });
    let level_bits = match &distinct {
        Some(distinct) => 64 - (distinct.len() as u64 - 1).leading_zeros(),
        None => span_bits,
    };
    let packing = Packing::for_len(asks.len());
    let mut keyed: Vec<u64> = live()
        .map(|i| {
            let level = match &distinct {
                Some(distinct) => distinct.partition_point(|&a| a < asks[i]) as u64,
                None => asks[i] - min,
            };
            let tie = digest.ties[i];
            let key = match level_bits {
                0 => tie,
                bits => (level << (64 - bits)) | (tie >> bits),
            };
            packing.pack(key, i)
        })
        .collect();
    sort_by_prefix(&mut keyed, |&k| k);
    // Runs of one kept key (one level, rare) are in bid order: settle them
    // by the whole tie key and the rank.
    let mut order: Vec<u32> = Vec::with_capacity(keyed.len());
    packing.for_runs(&keyed, |run| {
        let start = order.len();
        order.extend(run.iter().map(|&k| packing.index(k) as u32));
        if run.len() > 1 {
            order[start..]
                .sort_unstable_by_key(|&i| (digest.ties[i as usize], digest.node_rank[i as usize]));
        }
    });
    order
}

/// One bid per node: bids of one node share a rank in the digest.
fn check_unique_nodes(node_rank: &[u32]) -> Result<(), MarketError> {
    let mut first = vec![u32::MAX; node_rank.len()];
    for (index, &r) in node_rank.iter().enumerate() {
        let slot = first
            .get_mut(r as usize)
            .ok_or_else(|| MarketError::InvalidValidBid {
                index,
                reason: format!("node rank {r} is out of range: the digest is not for these bids"),
            })?;
        if *slot != u32::MAX {
            return Err(MarketError::InvalidValidBid {
                index,
                reason: format!("node already bid in valid_bids[{}]", *slot),
            });
        }
        *slot = index as u32;
    }
    Ok(())
}

fn levels_of(nodes: &[BookNode]) -> Vec<Range<usize>> {
    let mut levels = Vec::new();
    let mut start = 0;
    for i in 1..=nodes.len() {
        if i == nodes.len() || nodes[i].ask != nodes[start].ask {
            if i > start {
                levels.push(start..i);
            }
            start = i;
        }
    }
    levels
}
