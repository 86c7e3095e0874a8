//! The digest and the clearing order against plain reference definitions:
//! bid root, seed, tie-break keys, the order (ask, tie key, node key) and
//! the shard mapping, on instances large enough for the radix sorts, with
//! asks spread over the whole u64 range, duplicate bid ids and crafted
//! tie keys that collide in their top bits.

use crate::common;

use std::collections::BTreeSet;

use common::{Rng, bid, job};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::market::{
    BID_ROOT_CONTEXT, Digest, MarketPolicy, OrderBook, TIE_BREAK_INPUT, ValidBid, clear_valid,
};

/// BLAKE3 derive_key over the sorted, distinct bid ids, concatenated.
fn reference_bid_root(bids: &[ValidBid]) -> Hash32 {
    let ids: BTreeSet<[u8; 32]> = bids.iter().map(|b| b.bid_id.0).collect();
    let bytes: Vec<u8> = ids.iter().flatten().copied().collect();
    Hash32(blake3::derive_key(BID_ROOT_CONTEXT, &bytes))
}

/// H(prev || root), then per bid the u64 at its node's rank in the XOF,
/// read one at a time by seeking.
fn reference_digest(prev: &Hash32, bids: &[ValidBid]) -> (Hash32, Hash32, Vec<u64>) {
    let root = reference_bid_root(bids);
    let seed = Hash32(*blake3::hash(&[prev.0, root.0].concat()).as_bytes());
    let nodes: Vec<_> = bids
        .iter()
        .map(|b| b.node)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ties = bids
        .iter()
        .map(|b| {
            let rank = nodes.binary_search(&b.node).unwrap() as u64;
            let mut xof = blake3::Hasher::new_keyed(&seed.0)
                .update(TIE_BREAK_INPUT)
                .finalize_xof();
            xof.set_position(8 * rank);
            let mut out = [0u8; 8];
            xof.fill(&mut out);
            u64::from_le_bytes(out)
        })
        .collect();
    (root, seed, ties)
}

/// Bids with capacity, sorted by (ask, tie, node key): bid indices.
fn reference_order(bids: &[ValidBid], ties: &[u64], units: impl Fn(&ValidBid) -> u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..bids.len() as u32)
        .filter(|&i| units(&bids[i as usize]) > 0)
        .collect();
    order.sort_by_key(|&i| {
        (
            bids[i as usize].ask,
            ties[i as usize],
            bids[i as usize].node,
        )
    });
    order
}

/// `n` bids, asks from `levels` values spread by `step`, capacity 0..=8.
fn market(seed: u64, n: u64, owners: u64, levels: u64, step: u64) -> Vec<ValidBid> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let owner = rng.range(0, owners - 1);
            let ask = rng.range(0, levels - 1) * step;
            let units = rng.range(0, 8);
            bid(seed.wrapping_mul(1_000_003) + i, owner, ask, units)
        })
        .collect()
}

fn policy() -> MarketPolicy {
    MarketPolicy {
        alpha_ppm: 200_000,
        beta_ppm: 1_000_000,
        ..Default::default()
    }
}

fn check(bids: &[ValidBid], m: u32, limit: u64) {
    let mut job = job(m, limit);
    job.prev_allocation = Hash32::of(&m.to_le_bytes());
    let (root, seed, ties) = reference_digest(&job.prev_allocation, bids);
    let digest = Digest::new(&job.prev_allocation, bids);
    assert_eq!(digest.bid_root, root);
    assert_eq!(digest.seed, seed);
    assert_eq!(digest.ties, ties);
    let policy = policy();
    let book = OrderBook::new(&job, bids, &policy).unwrap();
    let units = |b: &ValidBid| b.capacity.units_of(&job.demand_per_shard).min(m as u64);
    let order: Vec<u32> = book.nodes.iter().map(|n| n.bid).collect();
    assert_eq!(order, reference_order(bids, &ties, units));

    // The allocation cuts the shard list into runs in clearing order.
    let allocation = clear_valid(&job, bids, &policy, 0).unwrap();
    assert_eq!((allocation.bid_root, allocation.seed), (root, seed));
    let position: std::collections::BTreeMap<_, _> = order
        .iter()
        .enumerate()
        .map(|(p, &i)| (bids[i as usize].node, p))
        .collect();
    let mut next = 0usize;
    let mut last_position = None;
    for a in &allocation.assignments {
        let p = position[&a.node];
        assert!(last_position < Some(p), "winners in clearing order");
        last_position = Some(p);
        assert_eq!(a.shards, job.shards[next..next + a.shards.len()]);
        next += a.shards.len();
    }
    assert_eq!(next + allocation.shortfall as usize, m as usize);
}

#[test]
fn digest_and_order_match_the_definitions() {
    for seed in 0..6u64 {
        let n = [1, 40, 64, 700, 3000, 5000][seed as usize];
        check(&market(seed, n, 30, 7, 10), 2000, 100);
    }
}

#[test]
fn asks_spread_over_the_whole_u64_range() {
    let limit = u64::MAX / 4000;
    for seed in 10..14u64 {
        let bids = market(seed, 2500, 200, 1 << 20, limit >> 20);
        check(&bids, 4000, limit);
    }
}

#[test]
fn duplicate_bid_ids_count_once_in_the_root() {
    let mut bids = market(21, 500, 10, 3, 10);
    let twin = bids[7].bid_id;
    bids[300].bid_id = twin;
    bids[301].bid_id = twin;
    check(&bids, 1000, 100);
    let mut without: Vec<ValidBid> = bids.clone();
    without.remove(301);
    without.remove(300);
    assert_eq!(
        Digest::new(&Hash32::ZERO, &bids).bid_root,
        Digest::new(&Hash32::ZERO, &without).bid_root
    );
    assert_ne!(
        Digest::new(&Hash32::ZERO, &bids).bid_root,
        Digest::new(&Hash32::ZERO, &bids[1..]).bid_root
    );
}

#[test]
fn equal_and_nearly_equal_tie_keys_fall_back_to_the_whole_key_and_node() {
    let bids = market(33, 3000, 40, 3, 10);
    let job = job(5000, 100);
    let policy = policy();
    let mut digest = Digest::new(&job.prev_allocation, &bids);
    // Ties drawn from a handful of values that share their top 40 bits.
    let mut rng = Rng(4);
    for t in digest.ties.iter_mut() {
        *t = (0x00AB_CDEF_0123_u64 << 24) | rng.range(0, 5);
    }
    let ties = digest.ties.clone();
    let book = OrderBook::with_digest(&job, &bids, &policy, digest).unwrap();
    let units = |b: &ValidBid| b.capacity.units_of(&job.demand_per_shard).min(5000);
    let order: Vec<u32> = book.nodes.iter().map(|n| n.bid).collect();
    assert_eq!(order, reference_order(&bids, &ties, units));
}

#[test]
fn a_digest_for_other_bids_is_refused() {
    let bids = market(40, 100, 5, 3, 10);
    let job = job(100, 100);
    let policy = policy();
    let mut digest = Digest::new(&job.prev_allocation, &bids);
    digest.node_rank[3] = 100;
    assert!(OrderBook::with_digest(&job, &bids, &policy, digest).is_err());
    let short = Digest::new(&job.prev_allocation, &bids[1..]);
    assert!(OrderBook::with_digest(&job, &bids, &policy, short).is_err());
}

#[test]
fn ids_and_node_keys_that_share_their_first_bytes_are_ordered_by_whole_keys() {
    // Keys equal in their first eight bytes (and so in every bit the radix
    // sorts see) and different after: the whole keys must decide.
    let mut bids = market(50, 2000, 20, 4, 10);
    for (i, b) in bids.iter_mut().enumerate() {
        if i % 3 == 0 {
            b.bid_id.0[..8].copy_from_slice(&[0x5A; 8]);
            b.node.0.0[..8].copy_from_slice(&[0xA5; 8]);
        }
    }
    check(&bids, 3000, 100);
    // One node twice, hidden among the colliding keys, is still refused.
    let mut twice = bids.clone();
    twice[9].node = twice[3].node;
    let job = job(3000, 100);
    match clear_valid(&job, &twice, &policy(), 0) {
        Err(fairgrid_protocol::market::MarketError::InvalidValidBid { index, .. }) => {
            assert_eq!(index, 9)
        }
        other => panic!("{other:?}"),
    }
}
