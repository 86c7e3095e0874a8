//! The price sweep (steps 5-6): take levels from the cheapest; apportion the
//! marginal level by Sainte-Laguë within node capacities and owner caps,
//! in proportion to the nodes' measured speeds when every node at the
//! level has one (so that they finish a round together), else to their
//! capacities.

use super::apportion::apportion_weighted;
use super::book::BookNode;
use super::book::OrderBook;

/// What happened at one price level the sweep reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelOutcome {
    /// Index into [`OrderBook::levels`].
    pub level: usize,
    pub ask: u64,
    /// Sum of node capacities at this level.
    pub supply: u64,
    /// Supply after each owner's remaining cap.
    pub capped_supply: u64,
    /// Shards still unplaced when the sweep reached this level.
    pub remaining_before: u64,
    pub taken: u64,
    /// Owners whose remaining cap was below their supply here, ascending.
    pub cap_bound: Vec<u32>,
}

impl LevelOutcome {
    /// The marginal level: the remaining demand was less than the capped
    /// supply, so shards were apportioned.
    pub fn is_marginal(&self) -> bool {
        self.taken < self.capped_supply
    }
}

/// The sweep's result, indexed like the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Shards per book node (clearing order).
    pub units: Vec<u32>,
    /// Shards per owner.
    pub owner_taken: Vec<u32>,
    /// Cap left per owner after the sweep.
    pub remaining_cap: Vec<u32>,
    /// Shards no capped supply could take.
    pub shortfall: u32,
    /// The levels reached, cheapest first.
    pub levels: Vec<LevelOutcome>,
}

impl OrderBook<'_> {
    /// Runs the sweep. Deterministic; integer arithmetic only.
    pub fn sweep(&self) -> Sweep {
        let owners = self.owners.len();
        let mut units = vec![0u32; self.nodes.len()];
        let mut owner_taken = vec![0u32; owners];
        let mut remaining_cap = self.caps.clone();
        let mut remaining = self.demand() as u64;
        let mut supply_of = vec![0u64; owners];
        let mut touched: Vec<u32> = Vec::new();
        let mut levels = Vec::new();

        for (level, range) in self.levels.iter().enumerate() {
            if remaining == 0 {
                break;
            }
            let nodes = &self.nodes[range.clone()];
            touched.clear();
            let mut supply = 0u64;
            for node in nodes {
                let o = node.owner as usize;
                if supply_of[o] == 0 {
                    touched.push(node.owner);
                }
                supply_of[o] += node.units as u64;
                supply += node.units as u64;
            }
            touched.sort_unstable();
            let mut capped_supply = 0u64;
            let mut cap_bound = Vec::new();
            for &o in &touched {
                let room = remaining_cap[o as usize] as u64;
                capped_supply += supply_of[o as usize].min(room);
                if supply_of[o as usize] > room {
                    cap_bound.push(o);
                }
            }
            let take = remaining.min(capped_supply);
            let out = &mut units[range.clone()];
            if take == supply {
                // Whole level, no cap binds: every node is full.
                for (slot, node) in out.iter_mut().zip(nodes) {
                    *slot = node.units;
                }
            } else if take > 0 {
                let by_speed = weighs_by_speed(nodes);
                let items: Vec<(u64, u32, u32)> = nodes
                    .iter()
                    .map(|n| {
                        let weight = if by_speed {
                            n.speed_milli
                        } else {
                            n.units as u64
                        };
                        (weight, n.units, n.owner)
                    })
                    .collect();
                let got = apportion_weighted(&items, &remaining_cap, take);
                out.copy_from_slice(&got);
            }
            for (slot, node) in out.iter().zip(nodes) {
                remaining_cap[node.owner as usize] -= *slot;
                owner_taken[node.owner as usize] += *slot;
            }
            for &o in &touched {
                supply_of[o as usize] = 0;
            }
            remaining -= take;
            levels.push(LevelOutcome {
                level,
                ask: nodes[0].ask,
                supply,
                capped_supply,
                remaining_before: remaining + take,
                taken: take,
                cap_bound,
            });
        }
        Sweep {
            units,
            owner_taken,
            remaining_cap,
            shortfall: remaining as u32,
            levels,
        }
    }
}

/// Whether a level's shards go by speed: every node there measured one.
pub(crate) fn weighs_by_speed(nodes: &[BookNode]) -> bool {
    !nodes.is_empty() && nodes.iter().all(|n| n.speed_milli > 0)
}
