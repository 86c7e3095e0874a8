//! Property tests of the clearing rules over random small instances.

use crate::common;

use std::collections::BTreeMap;

use common::{Case, Rng, SMALL, case};
use fairgrid_protocol::OwnerId;
use fairgrid_protocol::market::{clear_valid, owner_cap, verify_valid};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

fn shards_by_owner(allocation: &fairgrid_protocol::messages::Allocation) -> BTreeMap<OwnerId, u64> {
    let mut by = BTreeMap::new();
    for a in &allocation.assignments {
        *by.entry(a.owner).or_default() += a.shards.len() as u64;
    }
    by
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn clearing_ignores_bid_order(seed in any::<u64>(), shuffle in any::<u64>()) {
        let c = case(seed, SMALL);
        let mut shuffled = c.clone();
        let mut rng = Rng(shuffle);
        for i in (1..shuffled.bids.len()).rev() {
            let j = rng.range(0, i as u64) as usize;
            shuffled.bids.swap(i, j);
        }
        prop_assert_eq!(c.clear(), shuffled.clear());
    }

    #[test]
    fn caps_and_capacities_are_never_broken(seed in any::<u64>()) {
        let c = case(seed, SMALL);
        let allocation = c.clear();
        let m = c.job.shards.len() as u32;
        for (owner, shards) in shards_by_owner(&allocation) {
            prop_assert!(shards <= owner_cap(&c.policy, m, &owner) as u64);
        }
        for a in &allocation.assignments {
            let bid = c.bids.iter().find(|b| b.node == a.node).unwrap();
            prop_assert!(a.shards.len() as u64 <= c.units(bid));
            prop_assert!(!a.shards.is_empty());
        }
        for p in &allocation.payments {
            prop_assert_eq!(p.shards as u64, shards_by_owner(&allocation)[&p.owner]);
        }
    }

    #[test]
    fn assigned_is_min_of_demand_and_capped_supply(seed in any::<u64>()) {
        let c = case(seed, SMALL);
        let allocation = c.clear();
        let m = c.job.shards.len() as u64;
        prop_assert_eq!(allocation.assigned_shards() as u64, m.min(c.capped_supply()));
        prop_assert_eq!(allocation.shortfall as u64, m - allocation.assigned_shards() as u64);
        // The shard mapping: consecutive runs of the job's list, in clearing order.
        let placed: Vec<u32> = allocation.assignments.iter().flat_map(|a| a.shards.clone()).collect();
        prop_assert_eq!(&placed[..], &c.job.shards[..placed.len()]);
        // Clearing order: asks never decrease.
        prop_assert!(allocation.assignments.windows(2).all(|w| w[0].ask <= w[1].ask));
    }

    #[test]
    fn equal_asks_split_within_one_shard_of_quota(seed in any::<u64>()) {
        let mut c = case(seed, SMALL);
        c.policy.alpha_ppm = 1_000_000;
        c.policy.beta_ppm = 1_000_000;
        for b in &mut c.bids {
            b.ask = 10;
        }
        let allocation = c.clear();
        let total: u64 = c.bids.iter().map(|b| c.units(b)).sum();
        let placed = allocation.assigned_shards() as u64;
        prop_assert_eq!(placed, total.min(c.job.shards.len() as u64));
        for b in c.bids.iter().filter(|_| total > 0) {
            let got = allocation.shards_of(&b.node).len() as u64;
            // |got - k * placed / total| < 1, in integers.
            let (lhs, quota) = (got * total, c.units(b) * placed);
            prop_assert!(lhs < quota + total && quota < lhs + total,
                "node with {} units got {} of {} (capacity {})", c.units(b), got, placed, total);
        }
    }

    #[test]
    fn fast_vcg_equals_naive_reclearing(seed in any::<u64>()) {
        let c = case(seed, SMALL);
        let allocation = c.clear();
        let cost = c.cost(&allocation);
        for p in &allocation.payments {
            let naive = c.cost_without(&p.owner) - (cost - p.cost as u128);
            prop_assert_eq!(p.payment as u128, naive, "owner {:?}", p.owner);
            prop_assert!(p.payment >= p.cost);
            prop_assert!(p.payment as u128 <= p.shards as u128 * c.job.limit_price as u128);
        }
    }

    #[test]
    fn misreporting_an_ask_never_pays(seed in any::<u64>(), pick in any::<u64>(), factor in 50u64..=200) {
        let c = case(seed, SMALL);
        let owners: Vec<OwnerId> = {
            let mut o: Vec<OwnerId> = c.bids.iter().map(|b| b.owner).collect();
            o.sort();
            o.dedup();
            o
        };
        let liar = owners[(pick % owners.len() as u64) as usize];
        let true_ask: BTreeMap<_, _> = c.bids.iter().map(|b| (b.node, b.ask)).collect();
        let utility = |allocation: &fairgrid_protocol::messages::Allocation| -> i128 {
            let paid = allocation.payments.iter().find(|p| p.owner == liar).map_or(0, |p| p.payment);
            let true_cost: u64 = allocation
                .assignments
                .iter()
                .filter(|a| a.owner == liar)
                .map(|a| true_ask[&a.node] * a.shards.len() as u64)
                .sum();
            paid as i128 - true_cost as i128
        };
        let honest = utility(&c.clear());
        let mut lie = c.clone();
        lie.bids.retain_mut(|b| {
            if b.owner == liar {
                b.ask = b.ask * factor / 100;
            }
            b.ask <= c.job.limit_price
        });
        let lied = utility(&clear_valid(&lie.job, &lie.bids, &lie.policy, 0).unwrap());
        prop_assert!(lied <= honest, "honest utility {} < {} after asking x{}/100", honest, lied, factor);
        prop_assert!(honest >= 0);
    }

    #[test]
    fn verify_accepts_the_clearing_and_names_a_tampered_field(seed in any::<u64>()) {
        let c = case(seed, SMALL);
        let allocation = c.clear();
        prop_assert!(verify_valid(&allocation, &c.job, &c.bids).is_ok());
        if let Some(first) = allocation.payments.first() {
            let mut forged = allocation.clone();
            forged.payments[0].payment = first.payment + 1;
            let err = verify_valid(&forged, &c.job, &c.bids).unwrap_err().to_string();
            prop_assert!(err.contains("payments[0]"), "{}", err);
        }
    }
}

/// Cases where the fast VCG shortcut is easiest to get wrong: an owner
/// capped mid-level, leftover spread over several levels, shortfall.
#[test]
fn fast_vcg_equals_naive_on_tight_and_capped_cases() {
    let shapes = [
        common::Shape {
            max_nodes: 16,
            max_owners: 3,
            max_shards: 60,
            max_units: 20,
            price_levels: 3,
            with_beta: true,
        },
        common::Shape {
            max_nodes: 6,
            max_owners: 6,
            max_shards: 80,
            max_units: 8,
            price_levels: 8,
            with_beta: false,
        },
    ];
    for (s, shape) in shapes.into_iter().enumerate() {
        for seed in 0..300u64 {
            let c: Case = case(seed * 7 + s as u64, shape);
            let allocation = c.clear();
            let cost = c.cost(&allocation);
            for p in &allocation.payments {
                let naive = c.cost_without(&p.owner) - (cost - p.cost as u128);
                assert_eq!(p.payment as u128, naive, "seed {seed} shape {s}");
            }
        }
    }
}

#[test]
fn clear_valid_refuses_a_node_twice_and_asks_above_the_limit() {
    use fairgrid_protocol::market::MarketError;
    let c = case(5, SMALL);
    let mut twice = c.bids.clone();
    let mut copy = twice[0].clone();
    copy.ask = c.job.limit_price;
    copy.bid_id = fairgrid_protocol::Hash32::of(b"another bid");
    twice.push(copy);
    let last = twice.len() - 1;
    match clear_valid(&c.job, &twice, &c.policy, 0) {
        Err(MarketError::InvalidValidBid { index, .. }) => assert_eq!(index, last),
        other => panic!("{other:?}"),
    }
    let mut dear = c.bids.clone();
    dear[0].ask = c.job.limit_price + 1;
    assert!(matches!(
        clear_valid(&c.job, &dear, &c.policy, 0),
        Err(MarketError::InvalidValidBid { index: 0, .. })
    ));
}
