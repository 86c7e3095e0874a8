//! Shared generators for the market tests: small random instances over
//! validated bids, and the naive reference computations.
#![allow(dead_code)]

use std::collections::BTreeMap;

use fairgrid_protocol::market::{
    MarketJob, MarketPolicy, ValidBid, WindowUsage, clear_valid, social_cost,
};
use fairgrid_protocol::messages::Allocation;
use fairgrid_protocol::{Hash32, NodeId, OwnerId, PublicKey, ResourceVec};

/// A deterministic generator (splitmix64) so instances follow from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub fn node(i: u64) -> NodeId {
    NodeId(PublicKey(
        Hash32::of_parts(&[b"test-node", &i.to_le_bytes()]).0,
    ))
}

pub fn owner(i: u64) -> OwnerId {
    OwnerId(PublicKey(
        Hash32::of_parts(&[b"test-owner", &i.to_le_bytes()]).0,
    ))
}

/// One CPU core per shard.
pub fn demand() -> ResourceVec {
    ResourceVec {
        cpu_milli: 1000,
        ..Default::default()
    }
}

pub fn bid(i: u64, owner_ix: u64, ask: u64, units: u64) -> ValidBid {
    ValidBid {
        bid_id: Hash32::of_parts(&[b"test-bid", &i.to_le_bytes()]),
        node: node(i),
        owner: owner(owner_ix),
        ask,
        capacity: ResourceVec {
            cpu_milli: units * 1000,
            mem_mib: 1 << 20,
            ..Default::default()
        },
        speed_milli: 0,
    }
}

pub fn job(m: u32, limit: u64) -> MarketJob {
    MarketJob {
        job_id: Hash32::of(b"test-job"),
        shards: (0..m).collect(),
        demand_per_shard: demand(),
        limit_price: limit,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub job: MarketJob,
    pub bids: Vec<ValidBid>,
    pub policy: MarketPolicy,
}

/// Limits of a random case.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub max_nodes: u64,
    pub max_owners: u64,
    pub max_shards: u64,
    pub max_units: u64,
    /// Asks are multiples of 10 in `10..=10*price_levels`.
    pub price_levels: u64,
    /// Draw a network cap (beta < 100%) with a random window.
    pub with_beta: bool,
}

pub const SMALL: Shape = Shape {
    max_nodes: 10,
    max_owners: 4,
    max_shards: 40,
    max_units: 12,
    price_levels: 5,
    with_beta: true,
};

pub fn case(seed: u64, shape: Shape) -> Case {
    let mut rng = Rng(seed);
    let n = rng.range(1, shape.max_nodes);
    let owners = rng.range(1, shape.max_owners);
    let m = rng.range(1, shape.max_shards) as u32;
    let limit = 10 * shape.price_levels + rng.range(0, 30);
    let bids = (0..n)
        .map(|i| {
            bid(
                seed.wrapping_mul(1000) + i,
                rng.range(0, owners - 1),
                10 * rng.range(1, shape.price_levels),
                rng.range(0, shape.max_units),
            )
        })
        .collect();
    let alpha_ppm = [1_000_000, 500_000, 300_000, 200_000, 100_000][rng.range(0, 4) as usize];
    let mut policy = MarketPolicy {
        alpha_ppm,
        beta_ppm: 1_000_000,
        window: WindowUsage::default(),
    };
    if shape.with_beta && rng.range(0, 1) == 1 {
        policy.beta_ppm = rng.range(200_000, 900_000) as u32;
        let mut by_owner = BTreeMap::new();
        let mut total = 0;
        for o in 0..owners {
            let used = rng.range(0, 30);
            total += used;
            by_owner.insert(owner(o), used);
        }
        policy.window = WindowUsage {
            total: total + rng.range(0, 30),
            by_owner,
        };
    }
    Case {
        job: job(m, limit),
        bids,
        policy,
    }
}

impl Case {
    pub fn clear(&self) -> Allocation {
        clear_valid(&self.job, &self.bids, &self.policy, 0).expect("a generated case clears")
    }

    pub fn cost(&self, allocation: &Allocation) -> u128 {
        social_cost(allocation, self.job.limit_price)
    }

    /// Cost(without o) by re-clearing without o's bids.
    pub fn cost_without(&self, o: &OwnerId) -> u128 {
        let others: Vec<ValidBid> = self
            .bids
            .iter()
            .filter(|b| b.owner != *o)
            .cloned()
            .collect();
        let allocation = clear_valid(&self.job, &others, &self.policy, 0).expect("clears");
        self.cost(&allocation)
    }

    /// Per-node capacity in shards, bounded by M.
    pub fn units(&self, bid: &ValidBid) -> u64 {
        bid.capacity
            .units_of(&self.job.demand_per_shard)
            .min(self.job.shards.len() as u64)
    }

    /// Sum over owners of min(cap, capacity).
    pub fn capped_supply(&self) -> u64 {
        let m = self.job.shards.len() as u32;
        let mut by_owner: BTreeMap<OwnerId, u64> = BTreeMap::new();
        for b in &self.bids {
            *by_owner.entry(b.owner).or_default() += self.units(b);
        }
        by_owner
            .iter()
            .map(|(o, &k)| k.min(fairgrid_protocol::market::owner_cap(&self.policy, m, o) as u64))
            .sum()
    }
}
