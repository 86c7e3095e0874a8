//! Why clearing, validating or verifying an allocation failed.

use crate::Hash32;
use crate::error::{CertError, ProtocolError};

/// Everything that can go wrong in the market. Variants name the input at
/// fault (a bid's index, a field path) so a caller can say exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    /// The job description is unusable (empty or unsorted shards, overflow).
    #[error("job field `{field}` is invalid: {reason}")]
    InvalidJob { field: &'static str, reason: String },
    /// The policy is unusable (alpha or beta out of range, inconsistent window).
    #[error("policy field `{field}` is invalid: {reason}")]
    InvalidPolicy { field: &'static str, reason: String },
    /// A pre-validated bid handed to `clear_valid` breaks its contract.
    #[error("valid_bids[{index}] is invalid: {reason}")]
    InvalidValidBid { index: usize, reason: String },

    /// Bid rejections (reported by `validate_bids`, never fatal to clearing).
    #[error("bids[{index}]: envelope does not verify: {source}")]
    BidEnvelope {
        index: usize,
        #[source]
        source: ProtocolError,
    },
    #[error("bids[{index}]: signed by {signer}, not by the node it names ({node})")]
    BidSignerMismatch {
        index: usize,
        signer: String,
        node: String,
    },
    #[error("bids[{index}]: bid is for job {got}, not {expected}")]
    BidWrongJob {
        index: usize,
        got: Hash32,
        expected: Hash32,
    },
    #[error("bids[{index}]: owner certificate refused: {source}")]
    BidCertificate {
        index: usize,
        #[source]
        source: CertError,
    },
    #[error("bids[{index}]: ask {ask} exceeds the job's limit price {limit}")]
    AskAboveLimit { index: usize, ask: u64, limit: u64 },
    #[error("bids[{index}]: superseded by bids[{by}] of the same node")]
    Superseded { index: usize, by: usize },

    /// Verification found a difference between the allocation and the
    /// recomputation. `field` is a path such as `assignments[3].shards`.
    #[error(
        "allocation differs from the recomputation at `{field}`: expected {expected}, found {found}"
    )]
    Mismatch {
        field: String,
        expected: String,
        found: String,
    },
    #[error("allocation uses clearing algorithm {got}; this node runs {supported}")]
    UnsupportedAlgo { got: u32, supported: u32 },

    /// A JSON market instance is malformed or inconsistent; `field` is the
    /// path of the offending value, e.g. `bids[3].ask`.
    #[error("{field}: {reason}")]
    Instance { field: String, reason: String },
}

impl MarketError {
    pub(crate) fn job(field: &'static str, reason: impl Into<String>) -> Self {
        MarketError::InvalidJob {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn policy(field: &'static str, reason: impl Into<String>) -> Self {
        MarketError::InvalidPolicy {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn instance(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MarketError::Instance {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn mismatch(
        field: impl Into<String>,
        expected: impl std::fmt::Debug,
        found: impl std::fmt::Debug,
    ) -> Self {
        MarketError::Mismatch {
            field: field.into(),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        }
    }
}
