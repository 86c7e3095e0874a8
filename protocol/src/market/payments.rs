//! VCG (Clarke) payments per owner, with the job's limit price as the
//! reserve supplier, computed without re-clearing.
//!
//! Owner caps truncate each owner's supply to its `C_o` cheapest units (its
//! *effective* supply); the greedy takes the `M` cheapest effective units,
//! which is cost-optimal (a laminar matroid). Removing owner `o` therefore
//! leaves every other owner's taken units taken, and its `q_o` units must
//! come from the others' leftover effective supply in price order, then from
//! the reserve at the limit price. So
//!
//! `payment_o = Cost(without o) - (Cost - cost_o)`
//! `          = cost of the q_o cheapest units of (leftover - o's leftover) + reserve`,
//!
//! found with prefix sums over the leftover per price level and, per owner,
//! a binary search corrected by that owner's own leftover. The property
//! tests check this against a naive re-clear per owner.

use super::book::OrderBook;
use super::sweep::Sweep;
use crate::messages::OwnerPayment;

/// Leftover effective supply from the marginal level on.
struct Leftover {
    /// Price of each level (ascending).
    price: Vec<u64>,
    /// Prefix counts and costs: `count[j]` is the leftover below level `j`.
    count: Vec<u128>,
    cost: Vec<u128>,
    /// `(owner, level, units)` sorted by owner then level.
    by_owner: Vec<(u32, u32, u64)>,
}

impl OrderBook<'_> {
    /// One payment per winning owner, sorted by owner.
    pub fn payments(&self, sweep: &Sweep) -> Vec<OwnerPayment> {
        let mut cost = vec![0u128; self.owners.len()];
        for (node, &x) in self.nodes.iter().zip(&sweep.units) {
            cost[node.owner as usize] += node.ask as u128 * x as u128;
        }
        let leftover = self.leftover(sweep);
        let limit = self.job.limit_price as u128;
        let mut out = Vec::new();
        for (o, &q) in sweep.owner_taken.iter().enumerate() {
            if q == 0 {
                continue;
            }
            let replacement = leftover.cheapest_without(o as u32, q as u128, limit);
            out.push(OwnerPayment {
                owner: self.owners[o],
                shards: q,
                cost: to_u64(cost[o]),
                payment: to_u64(replacement),
            });
        }
        out
    }

    fn leftover(&self, sweep: &Sweep) -> Leftover {
        let mut left = Leftover {
            price: Vec::new(),
            count: vec![0],
            cost: vec![0],
            by_owner: Vec::new(),
        };
        // With a shortfall every capped unit was taken: nothing is left.
        let start = match sweep.levels.last() {
            Some(last) if sweep.shortfall == 0 => last.level,
            _ => return left,
        };
        let mut running: Vec<u64> = sweep.remaining_cap.iter().map(|&c| c as u64).collect();
        let mut supply = vec![0u64; self.owners.len()];
        let mut taken = vec![0u64; self.owners.len()];
        let mut touched: Vec<u32> = Vec::new();
        for range in &self.levels[start..] {
            touched.clear();
            for (node, &x) in self.nodes[range.clone()]
                .iter()
                .zip(&sweep.units[range.clone()])
            {
                let o = node.owner as usize;
                if supply[o] == 0 {
                    touched.push(node.owner);
                }
                supply[o] += node.units as u64;
                taken[o] += x as u64;
            }
            touched.sort_unstable();
            let j = left.price.len() as u32;
            let mut level_count = 0u64;
            for &o in &touched {
                let o = o as usize;
                // Effective units here, less what was taken.
                let spare = supply[o].min(running[o] + taken[o]) - taken[o];
                running[o] -= spare;
                if spare > 0 {
                    left.by_owner.push((o as u32, j, spare));
                    level_count += spare;
                }
                supply[o] = 0;
                taken[o] = 0;
            }
            let price = self.nodes[range.start].ask;
            left.price.push(price);
            left.count
                .push(left.count[j as usize] + level_count as u128);
            left.cost
                .push(left.cost[j as usize] + level_count as u128 * price as u128);
        }
        left.by_owner.sort_unstable();
        left
    }
}

impl Leftover {
    /// Cost of the `q` cheapest leftover units of owners other than `o`,
    /// topped up from the reserve at `limit`.
    fn cheapest_without(&self, o: u32, q: u128, limit: u128) -> u128 {
        let lo = self.by_owner.partition_point(|e| e.0 < o);
        let hi = self.by_owner.partition_point(|e| e.0 <= o);
        let own = &self.by_owner[lo..hi];
        // Own prefix sums: count and cost of o's leftover below each entry.
        let mut own_prefix: Vec<(u128, u128)> = Vec::with_capacity(own.len() + 1);
        own_prefix.push((0, 0));
        for e in own {
            let (c, k) = own_prefix[own_prefix.len() - 1];
            own_prefix.push((
                c + e.2 as u128,
                k + e.2 as u128 * self.price[e.1 as usize] as u128,
            ));
        }
        let own_below = |j: usize| own_prefix[own.partition_point(|e| (e.1 as usize) < j)];
        let levels = self.price.len();
        let others_below = |j: usize| {
            let (c, k) = own_below(j);
            (self.count[j] - c, self.cost[j] - k)
        };
        let (all_count, all_cost) = others_below(levels);
        if all_count < q {
            return all_cost + (q - all_count) * limit;
        }
        // Smallest j whose prefix through level j reaches q.
        let (mut a, mut b) = (0usize, levels - 1);
        while a < b {
            let mid = (a + b) / 2;
            if others_below(mid + 1).0 >= q {
                b = mid;
            } else {
                a = mid + 1;
            }
        }
        let (count, cost) = others_below(a);
        cost + (q - count) * self.price[a] as u128
    }
}

/// Costs and payments are at most M * limit price, checked to fit a u64
/// when the book was built.
fn to_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}
