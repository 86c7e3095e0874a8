//! The order book: checked inputs, node capacities, owner caps, the seed and
//! the clearing order (steps 2-4 of the market rules).

use std::ops::Range;

use super::PPM;
use super::radix::{radix_sort, radix_sort_bits};
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

/// Indices `0..n` sorted by a 32-byte key: by its top bits (a cheap radix
/// sort), then by the whole key where those collide.
fn sorted_by_prefix<K: Ord>(
    n: usize,
    bytes: impl Fn(usize) -> [u8; 32],
    key: impl Fn(usize) -> K,
) -> Vec<u32> {
    let mut keyed: Vec<(u64, u32)> = (0..n).map(|i| (prefix_of(&bytes(i)), i as u32)).collect();
    radix_sort_bits(&mut keyed, PREFIX_BITS);
    let mut out: Vec<u32> = keyed.iter().map(|k| k.1).collect();
    for_runs(&keyed, |run| out[run].sort_by_key(|&a| key(a as usize)));
    out
}

/// Bits of a hash prefix the radix sorts use; equal prefixes are settled
/// by comparing whole keys.
const PREFIX_BITS: u32 = 33;

/// The top `PREFIX_BITS` bits of a 32-byte key.
fn prefix_of(bytes: &[u8; 32]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) >> (64 - PREFIX_BITS)
}

/// Calls `f` on each range of two or more equal keys in sorted `keyed`.
fn for_runs(keyed: &[(u64, u32)], mut f: impl FnMut(Range<usize>)) {
    let mut start = 0;
    for end in 1..=keyed.len() {
        if end == keyed.len() || keyed[end].0 != keyed[start].0 {
            if end - start > 1 {
                f(start..end);
            }
            start = end;
        }
    }
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

/// What the order depends on besides the asks: the bid root, the seed and
/// each bid's tie-break hash `H(seed || node key)`. It is a function of the
/// bid set and the previous allocation only, so a coordinator can compute it
/// once per bid set (the benchmarks time it apart from the sort and sweep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub bid_root: Hash32,
    pub seed: Hash32,
    /// `H(seed || node key)` per bid, in input order.
    pub ties: Vec<Hash32>,
}

impl Digest {
    pub fn new(prev_allocation: &Hash32, bids: &[ValidBid]) -> Self {
        let bid_root = bid_root_of(bids);
        let seed = seed_of(prev_allocation, &bid_root);
        let ties = bids
            .iter()
            .map(|bid| hash_pair(&seed.0, &bid.node.0.0))
            .collect();
        Digest {
            bid_root,
            seed,
            ties,
        }
    }
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
        if bids.len() > u32::MAX as usize || digest.ties.len() != bids.len() {
            return Err(MarketError::InvalidValidBid {
                index: bids.len().min(digest.ties.len()),
                reason: "bid count does not match the digest or exceeds u32".into(),
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
        let Digest {
            bid_root,
            seed,
            ties,
        } = digest;

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
        // Radix-sort by tie prefix (this also finds a node that bid twice),
        // then stably by ask: the order is (ask, tie prefix), and the rare
        // equal pairs are settled by the full hash and the node key.
        let mut keyed: Vec<(u64, u32)> = ties
            .iter()
            .enumerate()
            .map(|(i, t)| (prefix_of(&t.0), i as u32))
            .collect();
        radix_sort_bits(&mut keyed, PREFIX_BITS);
        check_unique_nodes(bids, &keyed)?;
        let mut prefix = vec![0u64; bids.len()];
        for &(p, i) in &keyed {
            prefix[i as usize] = p;
        }
        let asks: Vec<u64> = bids.iter().map(|b| b.ask).collect();
        let mut keyed: Vec<(u64, u32)> = keyed
            .into_iter()
            .map(|(_, i)| (asks[i as usize], i))
            .collect();
        radix_sort(&mut keyed);
        let mut start = 0;
        for end in 1..=keyed.len() {
            let same = |a: (u64, u32), b: (u64, u32)| {
                a.0 == b.0 && prefix[a.1 as usize] == prefix[b.1 as usize]
            };
            if end == keyed.len() || !same(keyed[start], keyed[end]) {
                if end - start > 1 {
                    keyed[start..end]
                        .sort_by_key(|&(_, i)| (ties[i as usize], bids[i as usize].node));
                }
                start = end;
            }
        }

        // Capacities in input order (sequential), then laid out in clearing order.
        let units: Vec<u32> = bids
            .iter()
            .map(|bid| bid.capacity.units_of(&job.demand_per_shard).min(m as u64) as u32)
            .collect();
        let nodes: Vec<BookNode> = keyed
            .into_iter()
            .filter(|&(_, i)| units[i as usize] > 0)
            .map(|(ask, i)| BookNode {
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
/// duplicates are neighbours in `by_tie` (sorted by tie prefix); only on a
/// repeated prefix are the full node keys compared.
fn check_unique_nodes(bids: &[ValidBid], by_tie: &[(u64, u32)]) -> Result<(), MarketError> {
    let mut start = 0;
    for end in 1..=by_tie.len() {
        if end == by_tie.len() || by_tie[end].0 != by_tie[start].0 {
            if end - start > 1 {
                let mut run: Vec<(crate::NodeId, u32)> = by_tie[start..end]
                    .iter()
                    .map(|&(_, i)| (bids[i as usize].node, i))
                    .collect();
                run.sort_unstable();
                if let Some(w) = run.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(MarketError::InvalidValidBid {
                        index: w[1].1 as usize,
                        reason: format!("node already bid in valid_bids[{}]", w[0].1),
                    });
                }
            }
            start = end;
        }
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
