//! Market clearing: who trains which shards of a job, and what they are paid.
//!
//! The normative rules are in DESIGN.md ("Market rules"). Clearing is a pure,
//! deterministic function of its inputs using integer arithmetic only, so
//! every participant can recompute an allocation from the signed bids and
//! reject one that differs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::identity::{NodeId, OwnerId};
use crate::resources::ResourceVec;

/// The policy an allocation was cleared under; recorded in the allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketPolicy {
    /// Per-job owner cap, parts per million of the job's shards.
    pub alpha_ppm: u32,
    /// Network-wide owner cap over the trailing window, parts per million.
    pub beta_ppm: u32,
    /// Shards allocated in the trailing window, from the coordinator's ledger.
    pub window: WindowUsage,
}

/// Shard usage over the trailing window, in total and per owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowUsage {
    pub total: u64,
    pub by_owner: BTreeMap<OwnerId, u64>,
}

/// What the market needs to know about the job being cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketJob {
    pub job_id: Hash32,
    /// Shard indices to place, ascending.
    pub shards: Vec<u32>,
    pub demand_per_shard: ResourceVec,
    pub limit_price: u64,
    pub attempt: u32,
    pub prev_allocation: Hash32,
}

/// A bid that passed validation (signature, certificate, ask, one per node),
/// with its owner resolved and its capacity bounded by the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidBid {
    pub bid_id: Hash32,
    pub node: NodeId,
    pub owner: OwnerId,
    pub ask: u64,
    pub capacity: ResourceVec,
}
