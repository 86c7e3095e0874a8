//! Recompute an allocation from the signed bids and name the first
//! difference.

use super::{MarketError, MarketJob, ValidBid, clear, clear_valid};
use crate::cert::TrustPolicy;
use crate::messages::{ALGO_VERSION, Allocation, Bid};
use crate::signed::Signed;

/// Re-clears `job` over `bids` with the allocation's recorded policy and
/// time, and rejects any difference. The caller still checks that the
/// recorded policy is the one it expects (the job's alpha, its own ledger's
/// window).
pub fn verify(
    allocation: &Allocation,
    job: &MarketJob,
    bids: &[Signed<Bid>],
    trust: &TrustPolicy,
) -> Result<(), MarketError> {
    check_algo(allocation)?;
    let expected = clear(job, bids, trust, &allocation.policy, allocation.cleared_at)?;
    first_difference(&expected, allocation)
}

/// [`verify`] over already validated bids.
pub fn verify_valid(
    allocation: &Allocation,
    job: &MarketJob,
    bids: &[ValidBid],
) -> Result<(), MarketError> {
    check_algo(allocation)?;
    let expected = clear_valid(job, bids, &allocation.policy, allocation.cleared_at)?;
    first_difference(&expected, allocation)
}

fn check_algo(allocation: &Allocation) -> Result<(), MarketError> {
    if allocation.algo_version != ALGO_VERSION {
        return Err(MarketError::UnsupportedAlgo {
            got: allocation.algo_version,
            supported: ALGO_VERSION,
        });
    }
    Ok(())
}

/// `Ok` if equal, otherwise a `Mismatch` naming the first differing field.
pub fn first_difference(expected: &Allocation, found: &Allocation) -> Result<(), MarketError> {
    macro_rules! same {
        ($field:ident) => {
            if expected.$field != found.$field {
                return Err(MarketError::mismatch(
                    stringify!($field),
                    &expected.$field,
                    &found.$field,
                ));
            }
        };
    }
    same!(algo_version);
    same!(job_id);
    same!(attempt);
    same!(prev_allocation);
    same!(cleared_at);
    same!(policy);
    if expected.shards != found.shards {
        return Err(MarketError::mismatch(
            "shards",
            format!("{} shards", expected.shards.len()),
            format!("{} shards", found.shards.len()),
        ));
    }
    same!(bid_root);
    same!(seed);
    for (i, (e, f)) in expected
        .assignments
        .iter()
        .zip(&found.assignments)
        .enumerate()
    {
        let at = |field: &str| format!("assignments[{i}].{field}");
        if e.node != f.node {
            return Err(MarketError::mismatch(at("node"), e.node, f.node));
        }
        if e.owner != f.owner {
            return Err(MarketError::mismatch(at("owner"), e.owner, f.owner));
        }
        if e.bid_id != f.bid_id {
            return Err(MarketError::mismatch(at("bid_id"), e.bid_id, f.bid_id));
        }
        if e.ask != f.ask {
            return Err(MarketError::mismatch(at("ask"), e.ask, f.ask));
        }
        if e.shards != f.shards {
            return Err(MarketError::mismatch(at("shards"), &e.shards, &f.shards));
        }
    }
    if expected.assignments.len() != found.assignments.len() {
        return Err(MarketError::mismatch(
            "assignments.len",
            expected.assignments.len(),
            found.assignments.len(),
        ));
    }
    for (i, (e, f)) in expected.payments.iter().zip(&found.payments).enumerate() {
        if e != f {
            return Err(MarketError::mismatch(format!("payments[{i}]"), e, f));
        }
    }
    if expected.payments.len() != found.payments.len() {
        return Err(MarketError::mismatch(
            "payments.len",
            expected.payments.len(),
            found.payments.len(),
        ));
    }
    same!(shortfall);
    // Every field is compared above; this catches any field added later.
    if expected != found {
        return Err(MarketError::mismatch("allocation", "equal", "different"));
    }
    Ok(())
}
