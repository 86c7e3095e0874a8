//! The signed record of a clearing: assignments with explicit shard indices.
//!
//! Shard mapping: winners are listed in clearing order (ask, then
//! tie key, then node key), and the job's shard list (ascending)
//! is cut into consecutive runs in that order: the first winner gets the
//! first `x_1` shard indices, the next winner the following `x_2`, and so
//! on. Unplaced shards (the shortfall) are the last ones of the list.

use super::book::OrderBook;
use super::sweep::Sweep;
use crate::Hash32;
use crate::identity::{NodeId, PublicKey};
use crate::messages::{ALGO_VERSION, Allocation, Assignment, OwnerPayment};

impl OrderBook<'_> {
    /// Builds the allocation from the sweep and the payments.
    pub fn allocation(
        &self,
        sweep: &Sweep,
        payments: Vec<OwnerPayment>,
        cleared_at: u64,
    ) -> Allocation {
        // In clearing order: owner, ask and shard run of each winner.
        let winners = sweep.units.iter().filter(|&&x| x > 0).count();
        let mut assignments: Vec<Assignment> = Vec::with_capacity(winners);
        let mut next = 0usize;
        for (node, &x) in self.nodes.iter().zip(&sweep.units) {
            if x > 0 {
                let end = next + x as usize;
                assignments.push(Assignment {
                    node: NodeId(PublicKey([0; 32])),
                    owner: self.owners[node.owner as usize],
                    bid_id: Hash32::ZERO,
                    ask: node.ask,
                    shards: self.job.shards[next..end].to_vec(),
                });
                next = end;
            }
        }
        self.fill_winner_keys(sweep, &mut assignments);
        Allocation {
            algo_version: ALGO_VERSION,
            job_id: self.job.job_id,
            attempt: self.job.attempt,
            prev_allocation: self.job.prev_allocation,
            cleared_at,
            policy: self.policy.clone(),
            shards: self.job.shards.clone(),
            bid_root: self.bid_root,
            seed: self.seed,
            assignments,
            payments,
            shortfall: sweep.shortfall,
        }
    }

    /// Copies each winner's node key and bid id from its bid. Reading the
    /// bids in clearing order jumps around a large array; when most nodes
    /// win it is several times faster to stream the bids in input order and
    /// put each winner's keys into its slot.
    fn fill_winner_keys(&self, sweep: &Sweep, assignments: &mut [Assignment]) {
        let winning = self.nodes.iter().zip(&sweep.units).filter(|&(_, &x)| x > 0);
        if assignments.len() < self.bids.len() / 8 {
            for (assignment, (node, _)) in assignments.iter_mut().zip(winning) {
                let bid = &self.bids[node.bid as usize];
                assignment.node = bid.node;
                assignment.bid_id = bid.bid_id;
            }
            return;
        }
        let mut slot = vec![u32::MAX; self.bids.len()];
        for (k, (node, _)) in winning.enumerate() {
            slot[node.bid as usize] = k as u32;
        }
        for (bid, &k) in self.bids.iter().zip(&slot) {
            if let Some(assignment) = assignments.get_mut(k as usize) {
                assignment.node = bid.node;
                assignment.bid_id = bid.bid_id;
            }
        }
    }
}
