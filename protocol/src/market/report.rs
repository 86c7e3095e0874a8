//! The outcome of clearing an instance, with human names: what the CLI
//! prints as JSON and what [`explain`](super::explain) renders as text.

use serde::Serialize;

use super::book::OrderBook;
use super::instance::Instance;
use super::sweep::Sweep;
use super::{MarketError, PPM, validate_bids};
use crate::Hash32;
use crate::fairness::FairnessReport;
use crate::messages::Allocation;
use crate::resources::ResourceVec;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub job: JobSummary,
    pub algo_version: u32,
    pub allocation_hash: Hash32,
    pub bid_root: Hash32,
    pub seed: Hash32,
    pub assigned: u32,
    pub shortfall: u32,
    /// Highest ask among the winners (None if nothing was placed).
    pub clearing_price: Option<u64>,
    pub total_cost: u64,
    pub total_payment: u64,
    pub assignments: Vec<NodeAssignment>,
    /// Every bidding owner, by name.
    pub owners: Vec<OwnerOutcome>,
    /// The price levels the sweep reached, cheapest first.
    pub levels: Vec<LevelSummary>,
    pub fairness: FairnessReport,
    #[serde(skip)]
    pub allocation: Allocation,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub name: String,
    pub job_id: Hash32,
    pub shards: u32,
    pub limit_price: u64,
    pub demand_per_shard: ResourceVec,
    pub alpha_ppm: u32,
    pub beta_ppm: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeAssignment {
    pub node: String,
    pub peer_id: String,
    pub owner: String,
    pub ask: u64,
    pub count: u32,
    pub shards: Vec<u32>,
}

/// What stopped an owner from getting more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Its cap (alpha or the network window) was reached.
    OwnerCap,
    /// All the shards its nodes can hold were taken.
    Capacity,
    /// It was in the marginal level and got its Sainte-Laguë part.
    Marginal,
    /// Its (other) nodes ask more than the clearing price.
    Price,
}

#[derive(Debug, Clone, Serialize)]
pub struct OwnerOutcome {
    pub owner: String,
    pub nodes: u32,
    /// Shards its nodes could hold in total (each node at most M).
    pub offered: u64,
    /// floor(alpha * M).
    pub alpha_cap: u32,
    /// Room under the network cap (None when beta = 100%).
    pub network_room: Option<u64>,
    /// C_o = min(alpha_cap, network_room).
    pub cap: u32,
    pub shards: u32,
    pub cost: u64,
    pub payment: u64,
    pub binding: Binding,
    pub cheapest_ask: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelSummary {
    pub ask: u64,
    pub nodes: u32,
    pub supply: u64,
    pub capped_supply: u64,
    pub remaining_before: u64,
    pub taken: u64,
    pub marginal: bool,
    /// The level's nodes all bid a measured speed, so its apportionment
    /// (if marginal) follows speed rather than capacity.
    pub by_speed: bool,
    pub cap_bound: Vec<String>,
}

impl Instance {
    /// Clears the instance through the same validation and clearing code a
    /// node runs.
    pub fn clear(&self) -> Result<Outcome, MarketError> {
        let checked = validate_bids(&self.job, &self.bids, &self.trust, self.file.cleared_at);
        if let Some(rejected) = checked.rejected.first() {
            // The instance was checked when parsed; this is a bug guard.
            return Err(MarketError::instance("bids", rejected.to_string()));
        }
        let book = OrderBook::new(&self.job, &checked.valid, &self.policy)?;
        let sweep = book.sweep();
        let payments = book.payments(&sweep);
        let allocation = book.allocation(&sweep, payments, self.file.cleared_at);
        Ok(self.outcome(&book, &sweep, allocation))
    }

    fn outcome(&self, book: &OrderBook<'_>, sweep: &Sweep, allocation: Allocation) -> Outcome {
        let m = book.demand();
        let owners = self.owner_outcomes(book, sweep, &allocation);
        let shares: Vec<u64> = owners.iter().map(|o| o.shards as u64).collect();
        let entitled: Vec<u64> = owners.iter().map(|o| o.offered.min(o.cap as u64)).collect();
        let levels = sweep
            .levels
            .iter()
            .map(|l| LevelSummary {
                ask: l.ask,
                nodes: book.levels[l.level].len() as u32,
                supply: l.supply,
                capped_supply: l.capped_supply,
                remaining_before: l.remaining_before,
                taken: l.taken,
                marginal: l.is_marginal(),
                by_speed: super::sweep::weighs_by_speed(&book.nodes[book.levels[l.level].clone()]),
                cap_bound: l
                    .cap_bound
                    .iter()
                    .map(|&o| self.owner_name(&book.owners[o as usize]))
                    .collect(),
            })
            .collect();
        let assignments = allocation
            .assignments
            .iter()
            .map(|a| NodeAssignment {
                node: self.node_name(&a.node),
                peer_id: a.node.to_peer_id_string(),
                owner: self.owner_name(&a.owner),
                ask: a.ask,
                count: a.shards.len() as u32,
                shards: a.shards.clone(),
            })
            .collect();
        Outcome {
            job: JobSummary {
                name: self.file.job.name.clone(),
                job_id: self.job.job_id,
                shards: m,
                limit_price: self.job.limit_price,
                demand_per_shard: self.job.demand_per_shard,
                alpha_ppm: self.policy.alpha_ppm,
                beta_ppm: self.policy.beta_ppm,
            },
            algo_version: allocation.algo_version,
            allocation_hash: allocation.hash(),
            bid_root: allocation.bid_root,
            seed: allocation.seed,
            assigned: allocation.assigned_shards(),
            shortfall: allocation.shortfall,
            clearing_price: allocation.assignments.iter().map(|a| a.ask).max(),
            total_cost: allocation.total_cost(),
            total_payment: allocation.total_payment(),
            assignments,
            owners,
            levels,
            fairness: FairnessReport::new(&shares, &entitled),
            allocation,
        }
    }

    fn owner_outcomes(
        &self,
        book: &OrderBook<'_>,
        sweep: &Sweep,
        allocation: &Allocation,
    ) -> Vec<OwnerOutcome> {
        let m = book.demand();
        let n = book.owners.len();
        let (mut nodes, mut offered, mut cheapest) =
            (vec![0u32; n], vec![0u64; n], vec![u64::MAX; n]);
        for node in &book.nodes {
            let o = node.owner as usize;
            nodes[o] += 1;
            offered[o] += node.units as u64;
            cheapest[o] = cheapest[o].min(node.ask);
        }
        let mut cap_bound = vec![false; n];
        for level in &sweep.levels {
            for &o in &level.cap_bound {
                cap_bound[o as usize] = true;
            }
        }
        let marginal = sweep.levels.last().filter(|l| l.is_marginal());
        let in_marginal = |o: usize| {
            marginal.is_some_and(|l| {
                book.nodes[book.levels[l.level].clone()]
                    .iter()
                    .any(|x| x.owner as usize == o)
            })
        };
        let alpha_cap = (self.policy.alpha_ppm as u64 * m as u64 / PPM as u64) as u32;
        let mut out: Vec<OwnerOutcome> = (0..n)
            .map(|o| {
                let id = book.owners[o];
                let pay = allocation.payments.iter().find(|p| p.owner == id);
                let shards = sweep.owner_taken[o];
                let binding = if (cap_bound[o] && shards == book.caps[o])
                    || (book.caps[o] == 0 && offered[o] > 0)
                {
                    Binding::OwnerCap
                } else if shards as u64 == offered[o] {
                    Binding::Capacity
                } else if in_marginal(o) {
                    Binding::Marginal
                } else {
                    Binding::Price
                };
                let network_room = (self.policy.beta_ppm < PPM).then(|| {
                    let room = self.policy.beta_ppm as u128
                        * (self.policy.window.total as u128 + m as u128)
                        / PPM as u128;
                    let used = self.policy.window.by_owner.get(&id).copied().unwrap_or(0);
                    room.saturating_sub(used as u128) as u64
                });
                OwnerOutcome {
                    owner: self.owner_name(&id),
                    nodes: nodes[o],
                    offered: offered[o],
                    alpha_cap,
                    network_room,
                    cap: book.caps[o],
                    shards,
                    cost: pay.map_or(0, |p| p.cost),
                    payment: pay.map_or(0, |p| p.payment),
                    binding,
                    cheapest_ask: if nodes[o] == 0 { 0 } else { cheapest[o] },
                }
            })
            .collect();
        out.sort_by(|a, b| a.owner.cmp(&b.owner));
        out
    }
}
