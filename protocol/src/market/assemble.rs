//! The signed record of a clearing: assignments with explicit shard indices.
//!
//! Shard mapping: winners are listed in clearing order (ask, then
//! H(seed || node key), then node key), and the job's shard list (ascending)
//! is cut into consecutive runs in that order: the first winner gets the
//! first `x_1` shard indices, the next winner the following `x_2`, and so
//! on. Unplaced shards (the shortfall) are the last ones of the list.

use super::book::OrderBook;
use super::sweep::Sweep;
use crate::messages::{ALGO_VERSION, Allocation, Assignment, OwnerPayment};

impl OrderBook<'_> {
    /// Builds the allocation from the sweep and the payments.
    pub fn allocation(
        &self,
        sweep: &Sweep,
        payments: Vec<OwnerPayment>,
        cleared_at: u64,
    ) -> Allocation {
        // Two passes: the winners' keys first (independent reads of the
        // bids, which the CPU overlaps), then their shard runs (one small
        // allocation each).
        let winners = sweep.units.iter().filter(|&&x| x > 0).count();
        let mut assignments: Vec<Assignment> = Vec::with_capacity(winners);
        for (node, &x) in self.nodes.iter().zip(&sweep.units) {
            if x > 0 {
                let bid = &self.bids[node.bid as usize];
                assignments.push(Assignment {
                    node: bid.node,
                    owner: self.owners[node.owner as usize],
                    bid_id: bid.bid_id,
                    ask: node.ask,
                    shards: Vec::new(),
                });
            }
        }
        let taken = sweep.units.iter().filter(|&&x| x > 0);
        let mut next = 0usize;
        for (assignment, &x) in assignments.iter_mut().zip(taken) {
            let end = next + x as usize;
            assignment.shards = self.job.shards[next..end].to_vec();
            next = end;
        }
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
}
