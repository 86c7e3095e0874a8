use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::codec::encode;
use crate::identity::{NodeId, OwnerId};
use crate::market::MarketPolicy;
use crate::signed::SignedMessage;

/// Version of the clearing algorithm. Bump on any change to `market::clear`
/// that can change an outcome; verifiers refuse versions they don't run.
pub const ALGO_VERSION: u32 = 2;

/// The outcome of clearing one job (or the remaining shards of a job after
/// churn), signed by the coordinator. Anyone holding the bids can recompute
/// it with `market::verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub algo_version: u32,
    pub job_id: Hash32,
    /// 0 for the first clearing, +1 for each re-clearing after churn.
    pub attempt: u32,
    /// Hash of the allocation this one follows (ZERO for the first).
    pub prev_allocation: Hash32,
    /// Unix milliseconds; certificates are checked at this time.
    pub cleared_at: u64,
    pub policy: MarketPolicy,
    /// The shard indices that were cleared, ascending.
    pub shards: Vec<u32>,
    /// BLAKE3 root of the sorted ids of the bids considered (`market::bid_root_of`).
    pub bid_root: Hash32,
    /// H(prev_allocation || bid_root): the tie-break seed.
    pub seed: Hash32,
    /// Winning nodes in clearing order, each with its shard indices.
    pub assignments: Vec<Assignment>,
    /// One entry per winning owner, sorted by owner.
    pub payments: Vec<OwnerPayment>,
    /// Shards no capped supply could take.
    pub shortfall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub node: NodeId,
    pub owner: OwnerId,
    pub bid_id: Hash32,
    pub ask: u64,
    pub shards: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerPayment {
    pub owner: OwnerId,
    pub shards: u32,
    /// Sum of the owner's asks over its shards.
    pub cost: u64,
    /// VCG (Clarke) payment, in milli-credits; at least `cost`.
    pub payment: u64,
}

impl SignedMessage for Allocation {
    const KIND: &'static str = "allocation";
    const MAX_BYTES: usize = 16 * 1024 * 1024;
}

impl Allocation {
    /// Hash of the allocation's canonical encoding (the chain link for the
    /// next allocation of the same job and what the ledger records).
    pub fn hash(&self) -> Hash32 {
        Hash32::of(&encode(self))
    }

    pub fn assigned_shards(&self) -> u32 {
        self.assignments.iter().map(|a| a.shards.len() as u32).sum()
    }

    pub fn total_cost(&self) -> u64 {
        self.payments.iter().map(|p| p.cost).sum()
    }

    pub fn total_payment(&self) -> u64 {
        self.payments.iter().map(|p| p.payment).sum()
    }

    /// The shards assigned to `node`, if any.
    pub fn shards_of(&self, node: &NodeId) -> &[u32] {
        self.assignments
            .iter()
            .find(|a| a.node == *node)
            .map(|a| a.shards.as_slice())
            .unwrap_or(&[])
    }
}
