use serde::{Deserialize, Serialize};

use crate::cert::OwnerCertificate;
use crate::error::{ProtocolError, Result};
use crate::identity::NodeId;
use crate::resources::ResourceVec;
use crate::signed::{Signed, SignedMessage};

/// What a node can do, as measured by its capacity probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_cores: u32,
    /// Measured single-precision GEMM throughput of the CPU backend.
    pub cpu_gflops: u32,
    pub mem_mib: u64,
    pub gpus: Vec<GpuInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub model: String,
    pub mem_mib: u64,
    pub gflops: u32,
}

/// How other nodes can reach the advertiser, as it knows it (declared: a
/// coordinator judges the connections it has, not this).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reach {
    /// Not known: no address confirmed from outside and no relay slot.
    #[default]
    Unknown,
    /// A peer dialled one of its addresses back (AutoNAT v2).
    Direct,
    /// Only through a relay it holds a slot on.
    Relayed,
}

impl Reach {
    pub fn name(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Direct => "direct",
            Reach::Relayed => "relayed",
        }
    }
}

/// A node's signed offer of capacity, gossiped and re-issued before expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityAdvert {
    pub node: NodeId,
    pub owner_cert: Option<Signed<OwnerCertificate>>,
    pub hardware: Hardware,
    /// What the contributor offers to the market (at most the hardware).
    pub offered: ResourceVec,
    /// Lowest ask per shard, in milli-credits.
    pub price_floor: u64,
    /// Strictly increasing per node; receivers drop lower or equal seqs.
    pub seq: u64,
    /// Unix milliseconds.
    pub issued_at: u64,
    pub expires_at: u64,
    pub reach: Reach,
}

impl SignedMessage for CapacityAdvert {
    const KIND: &'static str = "advert";
    const MAX_BYTES: usize = 8 * 1024;
}

/// Adverts may not claim to live longer than this.
pub const MAX_ADVERT_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// Clock skew tolerated on `issued_at`.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

impl CapacityAdvert {
    /// Stateless checks: signer is the node, timestamps are sane at `now`.
    /// Sequence numbers and certificates are checked by the receiver, which
    /// holds the state and trust policy.
    pub fn check(signed: &Signed<CapacityAdvert>, now: u64) -> Result<CapacityAdvert> {
        let (signer, advert) = signed.verify_and_decode()?;
        let kind = Self::KIND;
        if signer != advert.node.0 {
            return Err(ProtocolError::InvalidField {
                kind,
                field: "node",
                reason: "advert not signed by the node it describes".into(),
            });
        }
        if advert.expires_at <= advert.issued_at
            || advert.expires_at - advert.issued_at > MAX_ADVERT_LIFETIME_MS
        {
            return Err(ProtocolError::InvalidField {
                kind,
                field: "expires_at",
                reason: format!(
                    "lifetime {}..{} is empty or longer than 24 h",
                    advert.issued_at, advert.expires_at
                ),
            });
        }
        if advert.issued_at > now + MAX_CLOCK_SKEW_MS {
            return Err(ProtocolError::InvalidField {
                kind,
                field: "issued_at",
                reason: format!("issued in the future ({} > now {now})", advert.issued_at),
            });
        }
        if advert.expires_at <= now {
            return Err(ProtocolError::InvalidField {
                kind,
                field: "expires_at",
                reason: format!("expired at {} (now {now})", advert.expires_at),
            });
        }
        Ok(advert)
    }
}
