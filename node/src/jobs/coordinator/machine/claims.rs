//! A worker's claimed speed against the round times the coordinator
//! observes (issue 12): the bid's measured speed gives how long its
//! samples should take; a worker far slower than that for several rounds
//! is recorded once per job as a failed `Verification` ("slower than its
//! bid claimed"), the evidence that verification of work builds on. The
//! observed time runs from the round's start to the update's arrival, so
//! it includes the transfers: hence a factor and a slack, not a ratio.

use std::collections::{BTreeMap, BTreeSet};

use fairgrid_protocol::messages::Bid;
use fairgrid_protocol::{NodeId, Signed};

/// Far slower: observed > `SLOW_FACTOR` x expected + [`SLOW_SLACK_MS`].
pub const SLOW_FACTOR: u64 = 3;
pub const SLOW_SLACK_MS: u64 = 2_000;
/// Rounds far slower than claimed before the worker is recorded.
pub const SLOW_ROUNDS: u32 = 3;

/// The speeds the winners' bids claimed, by node (a bid that fails to
/// verify, which the coordinator never keeps, counts as no claim). Only
/// the winners' bids are opened: a job may keep thousands of bids, and
/// this runs as each round opens.
pub fn claimed_speeds(bids: &[Signed<Bid>], winners: &BTreeSet<NodeId>) -> BTreeMap<NodeId, u64> {
    bids.iter()
        .filter(|b| winners.contains(&NodeId(b.signer)))
        .filter_map(|b| b.verify_and_decode().ok())
        .map(|(_, bid)| (bid.node, bid.speed_milli))
        .collect()
}

/// Milliseconds `samples` take at `speed_milli`; `None` without a claim.
pub fn expected_ms(samples: u64, speed_milli: u64) -> Option<u64> {
    (speed_milli > 0).then(|| {
        let ms = u128::from(samples) * 1_000_000 / u128::from(speed_milli);
        u64::try_from(ms).unwrap_or(u64::MAX)
    })
}

pub fn far_slower(observed_ms: u64, expected_ms: u64) -> bool {
    observed_ms
        > expected_ms
            .saturating_mul(SLOW_FACTOR)
            .saturating_add(SLOW_SLACK_MS)
}

/// Rounds each worker was far slower than claimed, and who has been
/// recorded (not checkpointed: a restarted coordinator starts counting
/// again, and may record a worker a second time).
#[derive(Debug, Clone, Default)]
pub struct SlowWorkers {
    strikes: BTreeMap<NodeId, u32>,
    recorded: BTreeSet<NodeId>,
}

impl SlowWorkers {
    /// Counts a round of `node`; true when this round makes it one to
    /// record.
    pub fn observe(&mut self, node: NodeId, observed_ms: u64, expected_ms: u64) -> bool {
        if !far_slower(observed_ms, expected_ms) || self.recorded.contains(&node) {
            return false;
        }
        let strikes = self.strikes.entry(node).or_default();
        *strikes += 1;
        if *strikes < SLOW_ROUNDS {
            return false;
        }
        self.recorded.insert(node);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    #[test]
    fn expected_time_follows_the_claim() {
        // 1,000 samples at 500 samples/s: 2 s.
        assert_eq!(expected_ms(1_000, 500_000), Some(2_000));
        assert_eq!(expected_ms(1_000, 0), None);
        assert_eq!(expected_ms(u64::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn records_a_worker_once_after_enough_slow_rounds() {
        let node = Keypair::from_seed(b"slow").node_id();
        let mut slow = SlowWorkers::default();
        // Within the factor and slack: never.
        for _ in 0..10 {
            assert!(!slow.observe(node, 3 * 1_000 + 2_000, 1_000));
        }
        assert!(!slow.observe(node, 5_001, 1_000));
        assert!(!slow.observe(node, 9_000, 1_000));
        assert!(slow.observe(node, 9_000, 1_000), "the third slow round");
        assert!(!slow.observe(node, 9_000, 1_000), "recorded once");
    }
}
