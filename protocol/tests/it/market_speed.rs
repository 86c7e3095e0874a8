//! Shards by measured speed (docs/market.md, "Speed"): at a level where
//! every bid carries a speed the split follows the speeds within each
//! node's capacity and its owner's cap, and nothing else about the
//! clearing changes (who is in, the cost, the shortfall).

use fairgrid_protocol::OwnerId;
use fairgrid_protocol::market::{ValidBid, clear_valid};
use fairgrid_protocol::messages::MAX_SPEED_MILLI;

use crate::common::{Case, Rng, SMALL, bid, case, job};

fn with_speed(mut b: ValidBid, speed_milli: u64) -> ValidBid {
    b.speed_milli = speed_milli;
    b
}

/// Shards per bid when `bids` clear 24 shards at limit 100, no caps.
fn split(bids: &[ValidBid]) -> Vec<usize> {
    let case = Case {
        job: job(24, 100),
        bids: bids.to_vec(),
        policy: fairgrid_protocol::market::MarketPolicy {
            alpha_ppm: 1_000_000,
            beta_ppm: 1_000_000,
            window: Default::default(),
        },
    };
    let allocation = case.clear();
    bids.iter()
        .map(|b| allocation.shards_of(&b.node).len())
        .collect()
}

#[test]
fn a_three_times_faster_node_gets_three_times_the_shards() {
    let bids = [
        with_speed(bid(1, 1, 50, 24), 3_000_000),
        with_speed(bid(2, 2, 50, 24), 1_000_000),
    ];
    assert_eq!(split(&bids), vec![18, 6]);
}

#[test]
fn a_level_with_a_bid_without_speed_goes_by_capacity() {
    let bids = [with_speed(bid(1, 1, 50, 24), 3_000_000), bid(2, 2, 50, 24)];
    assert_eq!(split(&bids), vec![12, 12]);
}

#[test]
fn capacity_still_bounds_a_fast_node() {
    // The fast node's offer holds 10 shards: it gets 10, the rest goes on.
    let bids = [
        with_speed(bid(1, 1, 50, 10), 9_000_000),
        with_speed(bid(2, 2, 50, 24), 1_000_000),
        with_speed(bid(3, 3, 50, 24), 1_000_000),
    ];
    assert_eq!(split(&bids), vec![10, 7, 7]);
}

/// Random markets, cleared with and without speeds: the same cost and
/// shortfall, every node within its capacity and every owner within its
/// cap; and an absurd claim changes nothing but the split.
#[test]
fn speeds_move_shards_within_a_level_and_nothing_else() {
    let mut rng = Rng(17);
    for seed in 0..1500 {
        let plain = case(seed, SMALL);
        let mut fast = plain.clone();
        for b in &mut fast.bids {
            b.speed_milli = match rng.range(0, 9) {
                0 => MAX_SPEED_MILLI,
                _ => rng.range(1, 5_000_000),
            };
        }
        let (a, b) = (plain.clear(), fast.clear());
        assert_eq!(plain.cost(&a), fast.cost(&b), "seed {seed}");
        assert_eq!(a.shortfall, b.shortfall, "seed {seed}");
        let m = fast.job.shards.len() as u32;
        let mut per_owner: std::collections::BTreeMap<OwnerId, u64> = Default::default();
        for bid in &fast.bids {
            let got = b.shards_of(&bid.node).len() as u64;
            assert!(got <= fast.units(bid), "seed {seed}: over capacity");
            *per_owner.entry(bid.owner).or_default() += got;
        }
        for (o, got) in per_owner {
            let cap = fairgrid_protocol::market::owner_cap(&fast.policy, m, &o);
            assert!(got <= u64::from(cap), "seed {seed}: owner over its cap");
        }
        // Deterministic: the same inputs clear the same way.
        assert_eq!(
            clear_valid(&fast.job, &fast.bids, &fast.policy, 0).unwrap(),
            b
        );
    }
}
