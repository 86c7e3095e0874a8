//! Step 1: which signed bids take part, and with what.

use super::{MarketError, MarketJob, ValidBid};
use crate::cert::TrustPolicy;
use crate::messages::Bid;
use crate::messages::MAX_SPEED_MILLI;
use crate::resources::ResourceVec;
use crate::signed::Signed;

/// The bids that passed, sorted by node key, and why the others did not,
/// sorted by their index in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BidValidation {
    pub valid: Vec<ValidBid>,
    pub rejected: Vec<MarketError>,
}

/// Validates every bid: the envelope and signature, the signer is the node
/// the bid names, the bid is for this job, the owner certificate holds at
/// `now` under `trust`, the ask is within the limit price. Of several valid
/// bids by one node only the highest nonce counts; equal nonces keep the
/// smallest bid id. A bid's capacity is bounded by its certificate's maximum.
pub fn validate_bids(
    job: &MarketJob,
    bids: &[Signed<Bid>],
    trust: &TrustPolicy,
    now: u64,
) -> BidValidation {
    let mut rejected = Vec::new();
    // (node, Reverse(nonce), bid id, input index, bid)
    let mut candidates = Vec::with_capacity(bids.len());
    for (index, signed) in bids.iter().enumerate() {
        match check_one(index, signed, job, trust, now) {
            Ok((nonce, valid)) => {
                candidates.push((valid.node, std::cmp::Reverse(nonce), index, valid))
            }
            Err(error) => {
                tracing::debug!(target: "fairgrid::market", index, %error, "bid rejected");
                rejected.push(error);
            }
        }
    }
    candidates.sort_unstable_by_key(|c| (c.0, c.1, c.3.bid_id, c.2));
    let mut valid: Vec<ValidBid> = Vec::with_capacity(candidates.len());
    let mut kept_index = 0;
    for (node, _, index, bid) in candidates {
        match valid.last() {
            Some(last) if last.node == node => {
                rejected.push(MarketError::Superseded {
                    index,
                    by: kept_index,
                });
            }
            _ => {
                kept_index = index;
                valid.push(bid);
            }
        }
    }
    rejected.sort_by_key(rejected_index);
    BidValidation { valid, rejected }
}

fn rejected_index(error: &MarketError) -> usize {
    match error {
        MarketError::BidEnvelope { index, .. }
        | MarketError::BidSignerMismatch { index, .. }
        | MarketError::BidWrongJob { index, .. }
        | MarketError::BidCertificate { index, .. }
        | MarketError::AskAboveLimit { index, .. }
        | MarketError::Superseded { index, .. } => *index,
        _ => usize::MAX,
    }
}

fn check_one(
    index: usize,
    signed: &Signed<Bid>,
    job: &MarketJob,
    trust: &TrustPolicy,
    now: u64,
) -> Result<(u64, ValidBid), MarketError> {
    let (signer, bid) = signed
        .verify_and_decode()
        .map_err(|source| MarketError::BidEnvelope { index, source })?;
    if signer != bid.node.0 {
        return Err(MarketError::BidSignerMismatch {
            index,
            signer: signer.to_hex(),
            node: bid.node.to_string(),
        });
    }
    if bid.job_id != job.job_id {
        return Err(MarketError::BidWrongJob {
            index,
            got: bid.job_id,
            expected: job.job_id,
        });
    }
    let ownership = trust
        .resolve_owner(&bid.node, bid.owner_cert.as_ref(), now)
        .map_err(|source| MarketError::BidCertificate { index, source })?;
    if bid.ask > job.limit_price {
        return Err(MarketError::AskAboveLimit {
            index,
            ask: bid.ask,
            limit: job.limit_price,
        });
    }
    let capacity = match ownership.max_capacity {
        Some(max) => ResourceVec::min(&bid.capacity, &max),
        None => bid.capacity,
    };
    Ok((
        bid.nonce,
        ValidBid {
            bid_id: signed.id(),
            node: bid.node,
            owner: ownership.owner,
            ask: bid.ask,
            capacity,
            speed_milli: bid.speed_milli.min(MAX_SPEED_MILLI),
        },
    ))
}
