//! The order book: checked inputs, node capacities, owner caps, the seed and
//! the clearing order (steps 2-4 of the market rules).

use std::ops::Range;

use super::PPM;
use super::{MAX_MARKET_SHARDS, MarketError, MarketJob, MarketPolicy, ValidBid};
use crate::identity::OwnerId;
use crate::{Hash32, merkle_root};

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
    /// Nodes in clearing order: (ask, H(seed || node key), node key).
    pub nodes: Vec<BookNode>,
    /// Ranges of `nodes` with equal ask, cheapest first.
    pub levels: Vec<Range<usize>>,
}

/// H(a || b) over the 64-byte concatenation: one BLAKE3 block.
pub fn hash_pair(a: &[u8; 32], b: &[u8; 32]) -> Hash32 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    Hash32::of(&buf)
}

/// seed = H(prev_allocation || bid_root).
pub fn seed_of(prev_allocation: &Hash32, bid_root: &Hash32) -> Hash32 {
    hash_pair(&prev_allocation.0, &bid_root.0)
}

/// Merkle root of the sorted bid ids.
pub fn bid_root_of(bids: &[ValidBid]) -> Hash32 {
    let order = sorted_by_prefix(bids.len(), |i| bids[i].bid_id.0, |i| bids[i].bid_id);
    let ids: Vec<Hash32> = order.iter().map(|&i| bids[i as usize].bid_id).collect();
    merkle_root(&ids)
}

/// Indices `0..n` sorted by a 32-byte key: by its first eight bytes (a
/// cheap integer sort), then by the whole key where those collide.
fn sorted_by_prefix<K: Ord>(
    n: usize,
    bytes: impl Fn(usize) -> [u8; 32],
    key: impl Fn(usize) -> K,
) -> Vec<u32> {
    let mut keyed: Vec<(u64, u32)> = (0..n)
        .map(|i| {
            let b = bytes(i);
            (
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                i as u32,
            )
        })
        .collect();
    keyed.sort_unstable();
    let mut out: Vec<u32> = keyed.iter().map(|k| k.1).collect();
    let mut start = 0;
    for end in 1..=keyed.len() {
        if end == keyed.len() || keyed[end].0 != keyed[start].0 {
            if end - start > 1 {
                out[start..end].sort_by_key(|&a| key(a as usize));
            }
            start = end;
        }
    }
    out
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
    if let Some(w) = job.shards.windows(2).position(|w| w[0] >= w[1]) {
        return Err(MarketError::job(
            "shards",
            format!(
                "shard indices must be strictly ascending; shards[{}] = {} is followed by {}",
                w,
                job.shards[w],
                job.shards[w + 1]
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
        let m = check_job(job)?;
        check_policy(policy)?;
        if bids.len() > u32::MAX as usize {
            return Err(MarketError::InvalidValidBid {
                index: u32::MAX as usize,
                reason: "more bids than the market can index".into(),
            });
        }
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
        }
        let bid_root = bid_root_of(bids);
        let seed = seed_of(&job.prev_allocation, &bid_root);

        // Distinct owners, sorted, and each bid's owner index.
        let by_owner = sorted_by_prefix(bids.len(), |i| bids[i].owner.0.0, |i| bids[i].owner);
        let mut owners: Vec<OwnerId> = Vec::new();
        let mut owner_of = vec![0u32; bids.len()];
        for &i in &by_owner {
            let owner = bids[i as usize].owner;
            if owners.last() != Some(&owner) {
                owners.push(owner);
            }
            owner_of[i as usize] = owners.len() as u32 - 1;
        }
        let caps = owners.iter().map(|o| owner_cap(policy, m, o)).collect();

        // Sort keys: (ask, H(seed || node key), node key). The hash's first
        // eight bytes decide all but astronomically rare ties; the full
        // hash and the node key settle those.
        let ties: Vec<Hash32> = bids
            .iter()
            .map(|bid| hash_pair(&seed.0, &bid.node.0.0))
            .collect();
        let mut tie_check: Vec<(u64, u32)> = ties
            .iter()
            .enumerate()
            .map(|(i, t)| (t.prefix_u64(), i as u32))
            .collect();
        check_unique_nodes(bids, &mut tie_check)?;
        let mut keyed: Vec<(u64, u64, u32)> = bids
            .iter()
            .zip(&tie_check_order(&ties))
            .enumerate()
            .map(|(i, (bid, &prefix))| (bid.ask, prefix, i as u32))
            .collect();
        keyed.sort_unstable_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
                let (x, y) = (a.2 as usize, b.2 as usize);
                (ties[x], bids[x].node).cmp(&(ties[y], bids[y].node))
            })
        });
        // Capacities in input order (sequential), then laid out in clearing order.
        let units: Vec<u32> = bids
            .iter()
            .map(|bid| bid.capacity.units_of(&job.demand_per_shard).min(m as u64) as u32)
            .collect();
        let nodes: Vec<BookNode> = keyed
            .into_iter()
            .filter(|&(_, _, i)| units[i as usize] > 0)
            .map(|(ask, _, i)| BookNode {
                bid: i,
                owner: owner_of[i as usize],
                ask,
                units: units[i as usize],
            })
            .collect();
        let levels = levels_of(&nodes);
        Ok(OrderBook {
            job,
            policy,
            bids,
            bid_root,
            seed,
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

/// One bid per node: a node's tie hash is the same for all its bids, so
/// duplicates share a hash prefix; compare full keys only on collision.
fn check_unique_nodes(bids: &[ValidBid], tie: &mut [(u64, u32)]) -> Result<(), MarketError> {
    tie.sort_unstable();
    for run in tie.chunk_by(|a, b| a.0 == b.0) {
        if run.len() < 2 {
            continue;
        }
        for (x, a) in run.iter().enumerate() {
            for b in &run[x + 1..] {
                if bids[a.1 as usize].node == bids[b.1 as usize].node {
                    let (first, second) = (a.1.min(b.1), a.1.max(b.1));
                    return Err(MarketError::InvalidValidBid {
                        index: second as usize,
                        reason: format!("node already bid in valid_bids[{first}]"),
                    });
                }
            }
        }
    }
    Ok(())
}

fn tie_check_order(ties: &[Hash32]) -> Vec<u64> {
    ties.iter().map(Hash32::prefix_u64).collect()
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
