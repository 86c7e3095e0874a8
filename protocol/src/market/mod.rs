//! Market clearing: who trains which shards of a job, and what they are paid.
//!
//! The normative rules are in DESIGN.md ("Market rules") and `docs/market.md`.
//! Clearing is a pure, deterministic function of its inputs using integer
//! arithmetic only, so every participant can recompute an allocation from
//! the signed bids and reject one that differs ([`verify`]).
//!
//! The pipeline, one file per step:
//! - [`validate_bids`] (step 1): signed bids to [`ValidBid`]s;
//! - [`Digest::new`] (step 4): bid root, seed, tie-break keys;
//! - [`OrderBook::new`] (steps 2-4): capacities, owner caps, order;
//! - [`OrderBook::sweep`] (steps 5-6): price levels and Sainte-Laguë
//!   apportionment ([`apportion`]);
//! - [`OrderBook::payments`] (step 7): VCG payments without re-clearing;
//! - [`OrderBook::allocation`]: the record, with explicit shard indices.
//!
//! [`admit_epoch`] admits several jobs by weighted DRF; [`instance`] reads a
//! human-written JSON market and [`explain`] renders why each owner got
//! what it got.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::cert::TrustPolicy;
use crate::identity::{NodeId, OwnerId};
use crate::messages::{Allocation, Bid};
use crate::resources::ResourceVec;
use crate::signed::Signed;

pub mod admission;
pub mod apportion;
mod assemble;
mod book;
mod capacity;
mod digest;
mod epoch;
mod error;
pub mod explain;
pub mod instance;
mod owners;
mod payments;
mod radix;
pub mod report;
mod sweep;
mod validate;
mod verify;
pub mod window;

pub use admission::{Contender, drf_order};
pub use book::{BookNode, OrderBook, owner_cap};
pub use digest::{
    BID_ROOT_CONTEXT, Digest, TIE_BREAK_INPUT, bid_root_of, hash_pair, node_ranks, seed_of,
    tie_keys,
};
pub use epoch::{EpochJob, EpochPolicy, admit_epoch, verify_epoch};
pub use error::MarketError;
pub use sweep::{LevelOutcome, Sweep};
pub use validate::{BidValidation, validate_bids};
pub use verify::{first_difference, verify, verify_valid};
pub use window::{AllocationNotice, WindowBook, WindowEntry, WindowError, check_recorded};

/// Parts per million: alpha and beta are fractions of this.
pub const PPM: u32 = 1_000_000;

/// Most shards one clearing places (2^24); keeps every count in a u32 and
/// an allocation under its size limit.
pub const MAX_MARKET_SHARDS: usize = 1 << 24;

/// The policy an allocation was cleared under; recorded in the allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketPolicy {
    /// Per-job owner cap, parts per million of the job's shards.
    pub alpha_ppm: u32,
    /// Network-wide owner cap over the trailing window, parts per million
    /// (1_000_000: no network cap).
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
    /// Shard indices to place, strictly ascending.
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
    /// The bid's measured speed (milli-samples per second, 0: none), at
    /// most [`crate::messages::MAX_SPEED_MILLI`].
    pub speed_milli: u64,
}

/// Clears `job` over signed `bids`: bids that fail validation at `now`
/// are left out (see [`validate_bids`]); the rest are cleared by
/// [`clear_valid`], recording `now` as the clearing time.
pub fn clear(
    job: &MarketJob,
    bids: &[Signed<Bid>],
    trust: &TrustPolicy,
    policy: &MarketPolicy,
    now: u64,
) -> Result<Allocation, MarketError> {
    let checked = validate_bids(job, bids, trust, now);
    clear_valid(job, &checked.valid, policy, now)
}

/// The clearing core over validated bids (what the JSON instance and the
/// benchmarks call). Fails only on an unusable job, policy, or bids that
/// break `ValidBid`'s contract; shortfall is not an error.
pub fn clear_valid(
    job: &MarketJob,
    bids: &[ValidBid],
    policy: &MarketPolicy,
    cleared_at: u64,
) -> Result<Allocation, MarketError> {
    let book = OrderBook::new(job, bids, policy)?;
    let sweep = book.sweep();
    let payments = book.payments(&sweep);
    let allocation = book.allocation(&sweep, payments, cleared_at);
    tracing::debug!(
        target: "fairgrid::market",
        job = %job.job_id,
        bids = bids.len(),
        assigned = allocation.assigned_shards(),
        shortfall = allocation.shortfall,
        "cleared"
    );
    Ok(allocation)
}

/// Total cost of an allocation to the job: the asks of the placed shards
/// plus the shortfall at the limit price (the reserve supplier). This is the
/// objective the clearing minimises.
pub fn social_cost(allocation: &Allocation, limit_price: u64) -> u128 {
    allocation.total_cost() as u128 + allocation.shortfall as u128 * limit_price as u128
}
