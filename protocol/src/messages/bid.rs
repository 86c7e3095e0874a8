use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::cert::OwnerCertificate;
use crate::identity::NodeId;
use crate::resources::ResourceVec;
use crate::signed::{Signed, SignedMessage};

/// A node's signed offer to train shards of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub job_id: Hash32,
    pub node: NodeId,
    pub owner_cert: Option<Signed<OwnerCertificate>>,
    /// Asked price per shard, in milli-credits.
    pub ask: u64,
    /// Capacity offered to this job.
    pub capacity: ResourceVec,
    /// The node's measured training speed on the job's model with what it
    /// offers, in thousandths of a sample per second (0: not measured).
    /// Among bids at one price, shards go in proportion to it when every
    /// one of them carries it (docs/market.md, "Speed").
    pub speed_milli: u64,
    /// A node's later bid (higher nonce) replaces its earlier one.
    pub nonce: u64,
    pub issued_at: u64,
}

/// The largest speed the market counts (about 10^12 samples per second);
/// a claim above it counts as this, so sums of speeds stay far from
/// overflowing.
pub const MAX_SPEED_MILLI: u64 = 1 << 50;

impl SignedMessage for Bid {
    const KIND: &'static str = "bid";
    const MAX_BYTES: usize = 2048;
}
