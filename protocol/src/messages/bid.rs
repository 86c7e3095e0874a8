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
    /// A node's later bid (higher nonce) replaces its earlier one.
    pub nonce: u64,
    pub issued_at: u64,
}

impl SignedMessage for Bid {
    const KIND: &'static str = "bid";
    const MAX_BYTES: usize = 2048;
}
