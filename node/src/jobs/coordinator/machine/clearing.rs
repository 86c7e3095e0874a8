//! Step 3 as decisions: which bids a clearing covers, and what to make of
//! its result (wait for more supply, fail, or publish), and of the
//! winners' answers (train, or clear again without those who refused).
//!
//! Every clearing covers all of the job's shards over the bids of the
//! nodes still in the job, so the caps hold for the job as a whole after
//! churn too, and each re-clearing links the previous allocation
//! (`attempt + 1`).

use std::collections::BTreeSet;

use fairgrid_protocol::market::MarketJob;
use fairgrid_protocol::messages::{Allocation, JobSpec, ShortfallPolicy};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};

use super::super::AllocationRecord;
use super::{Busy, Clearing, Coordinator, MAX_CLEARINGS, Output};

/// Why nothing could be placed: no acceptable bid (with the cheapest ask
/// seen), or bids that cannot hold a shard within the caps.
pub fn no_supply_message(
    spec: &JobSpec,
    valid_bids: usize,
    cheapest: Option<(u64, NodeId)>,
) -> String {
    let limit = spec.limit_price;
    if valid_bids == 0 {
        match cheapest {
            // Someone asks little enough: the price is not why nobody bid.
            Some((ask, node)) if ask <= limit => format!(
                "no node bid on the job, though node {node} asks {ask}, within the limit price \
                 {limit}: the nodes that heard of it are at their worker.max_jobs, hold \
                 their capacity for other jobs (on_shortfall = \"wait\" waits for it), cannot \
                 train it within their offer, or could not reach this node"
            ),
            Some((ask, node)) => format!(
                "no bid at or below the limit price {limit}; cheapest ask seen: {ask} (node {node})"
            ),
            None => format!(
                "no bid at or below the limit price {limit}; cheapest ask seen: none \
                 (no bids and no live adverts)"
            ),
        }
    } else {
        format!(
            "{valid_bids} bid(s), but no node can hold a shard (demand {:?}) within the owner caps",
            spec.demand_per_shard
        )
    }
}

impl Coordinator {
    /// Asks the shell to clear over the bids of the nodes still in the job.
    pub(super) fn start_clearing(
        &mut self,
        reason: String,
        first: bool,
        attempt: u32,
        out: &mut Vec<Output>,
    ) {
        let st = &self.state;
        let bids: Vec<_> = st
            .bids
            .iter()
            .filter(|(n, _)| !st.missing.contains(n) && !st.banned.contains(n))
            .map(|(_, b)| b.clone())
            .collect();
        let market_job = MarketJob {
            job_id: self.id,
            shards: (0..self.spec.shard_count()).collect(),
            demand_per_shard: self.spec.demand_per_shard,
            limit_price: self.spec.limit_price,
            attempt: st.allocations.len() as u32,
            prev_allocation: st.current().map_or(Hash32::ZERO, |a| a.allocation.hash()),
        };
        out.push(Output::Clear {
            market_job,
            bids: bids.clone(),
        });
        let missing = self.state.missing.clone();
        self.busy = Some(Busy::Clearing(Clearing {
            reason,
            first,
            attempt,
            bids,
            missing,
        }));
    }

    pub(super) fn on_cleared(
        &mut self,
        now: u64,
        allocation: Allocation,
        valid_bids: usize,
        out: &mut Vec<Output>,
    ) {
        let Some(Busy::Clearing(clearing)) = self.busy.take() else {
            return;
        };
        if allocation.assigned_shards() == 0 {
            let message = no_supply_message(&self.spec, valid_bids, self.state.cheapest_ask);
            return self.wait_for_bids(now, message, clearing.first, out);
        }
        let training = self.state.phase == JobState::Training;
        if allocation.shortfall > 0 && !training && self.spec.on_shortfall == ShortfallPolicy::Wait
        {
            let message = format!(
                "{} of {} shards could not be placed within the caps; waiting (on_shortfall = wait)",
                allocation.shortfall,
                self.spec.shard_count()
            );
            return self.wait_for_bids(now, message, clearing.first, out);
        }
        let st = &self.state;
        let winners: BTreeSet<NodeId> = allocation.assignments.iter().map(|a| a.node).collect();
        let before = st
            .current()
            .into_iter()
            .flat_map(|a| a.allocation.assignments.iter().map(|x| x.node));
        let dropped: Vec<NodeId> = before
            .chain(st.missing.iter().copied())
            .filter(|n| !winners.contains(n) && !st.banned.contains(n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        out.push(Output::Publish {
            allocation,
            bids: clearing.bids.clone(),
            dropped,
        });
        self.busy = Some(Busy::Publishing(clearing));
    }

    /// Nothing (or not enough) could be placed: try again when the next
    /// bid window closes. A job that no bid could serve at its first
    /// clearing fails unless it asked to wait.
    fn wait_for_bids(&mut self, now: u64, message: String, first: bool, out: &mut Vec<Output>) {
        if first
            && self.state.allocations.is_empty()
            && self.spec.on_shortfall == ShortfallPolicy::RunWithFewer
        {
            return self.fail(now, message, out);
        }
        let st = &mut self.state;
        st.phase = JobState::Waiting;
        st.error = Some(message);
        st.bidding_until = now + self.spec.bid_window_ms;
        st.needs_reclear = None;
        st.updated_at = now;
        self.persist(out);
    }

    pub(super) fn on_published(
        &mut self,
        now: u64,
        signed: Signed<Allocation>,
        refusals: Vec<(NodeId, String, bool)>,
        out: &mut Vec<Output>,
    ) {
        let Some(Busy::Publishing(clearing)) = self.busy.take() else {
            return;
        };
        let Ok((_, allocation)) = signed.verify_and_decode() else {
            return self.fail(
                now,
                "the shell published an allocation that does not verify".into(),
                out,
            );
        };
        if allocation.attempt > 0 {
            out.push(Output::Event(JobEventKind::Reallocated {
                attempt: allocation.attempt,
                reason: clearing.reason.clone(),
            }));
        }
        out.push(Output::Event(JobEventKind::Cleared {
            attempt: allocation.attempt,
            winners: allocation.assignments.len() as u32,
            assigned: allocation.assigned_shards(),
            shortfall: allocation.shortfall,
        }));
        let st = &mut self.state;
        // A winner that withdrew or misbehaved while the market cleared
        // holds shards it will not train: clear again before any round.
        // (Missing nodes' bids were left out of the clearing, so a winner
        // counted missing now withdrew meanwhile.)
        let gone: Vec<String> = allocation
            .assignments
            .iter()
            .filter(|a| st.banned.contains(&a.node) || st.missing.contains(&a.node))
            .map(|a| a.node.to_string())
            .collect();
        st.allocations.push(AllocationRecord {
            signed,
            allocation,
            bids: clearing.bids,
            reason: clearing.reason,
        });
        st.updated_at = now;
        if refusals.is_empty() {
            st.phase = JobState::Training;
            st.error = None;
            // A worker left out for missed work that bid again meanwhile
            // (it was told it was dropped) comes back at once.
            let rejoined: Vec<String> = clearing
                .missing
                .iter()
                .filter(|n| !st.missing.contains(n) && !st.banned.contains(n))
                .map(NodeId::to_string)
                .collect();
            st.needs_reclear = if !gone.is_empty() {
                Some(format!(
                    "left the job while it was cleared: {}",
                    gone.join(", ")
                ))
            } else {
                (!rejoined.is_empty())
                    .then(|| format!("rejoined while the market cleared: {}", rejoined.join(", ")))
            };
            return self.persist(out);
        }
        let mut names = Vec::new();
        for (node, why, unreachable) in refusals {
            if unreachable {
                st.missing.insert(node);
            } else {
                st.banned.insert(node);
            }
            names.push(format!("{node}: {why}"));
        }
        let attempt = clearing.attempt + 1;
        if attempt >= MAX_CLEARINGS {
            let reason = format!("no allocation was accepted after {MAX_CLEARINGS} clearings");
            return self.fail(now, reason, out);
        }
        self.persist(out);
        let reason = format!("winners left out: {}", names.join("; "));
        self.start_clearing(reason, clearing.first, attempt, out);
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    #[test]
    fn the_no_supply_message_names_the_true_reason() {
        let key = Keypair::from_seed(b"submitter");
        let node = Keypair::from_seed(b"worker").node_id();
        let mut spec = crate::jobs::testing::sample_spec(&key);
        spec.limit_price = 100;
        let too_dear = no_supply_message(&spec, 0, Some((250, node)));
        assert!(
            too_dear.starts_with("no bid at or below the limit price 100; cheapest ask seen: 250"),
            "{too_dear}"
        );
        // Every node busy: their asks are fine, the price is not the reason.
        let busy = no_supply_message(&spec, 0, Some((0, node)));
        assert!(busy.starts_with("no node bid on the job"), "{busy}");
        assert!(busy.contains("worker.max_jobs") && !busy.contains("cheapest ask seen"));
        let nobody = no_supply_message(&spec, 0, None);
        assert!(nobody.contains("no bids and no live adverts"), "{nobody}");
        let capped = no_supply_message(&spec, 3, Some((0, node)));
        assert!(
            capped.starts_with("3 bid(s), but no node can hold a shard"),
            "{capped}"
        );
    }
}
