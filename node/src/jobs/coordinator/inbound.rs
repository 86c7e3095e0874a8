//! What workers send the coordinator: bids (step 2, and rejoins), shard
//! fetches (step 4), updates (step 5) and withdrawals. `from` is the
//! authenticated peer that sent the request.

use std::sync::Arc;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::market::{self, MarketError, MarketJob};
use fairgrid_protocol::messages::{Bid, Receipt, RoundRefusal, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use tracing::{debug, info, warn};

use super::round::{AcceptedUpdate, Outcome, Rejection, RoundInProgress};
use super::{CoordJob, driver};
use crate::app::Shared;
use crate::ledger::now_ms;
use crate::net::Response;
use crate::net::wire::{MAX_SHARD_BATCH, MAX_SHARD_BATCH_BYTES};

const TARGET: &str = "fairgrid::jobs";

/// Prefix of the refusal a bid for an ended job gets; a worker that sees
/// it exchanges the job's ledger entries instead.
pub const JOB_ENDED: &str = "job ended";

// The error is the answer to send back as it is: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn job_of(shared: &Shared, id: &Hash32) -> Result<Arc<CoordJob>, Response> {
    shared
        .jobs
        .coordinated(id)
        .ok_or_else(|| Response::refused(format!("this node coordinates no job {id}")))
}

pub async fn on_bid(shared: &Arc<Shared>, from: NodeId, signed: Signed<Bid>) -> Response {
    let (signer, bid) = match signed.verify_and_decode() {
        Ok(v) => v,
        Err(e) => return Response::refused(format!("bid: {e}")),
    };
    if signer != from.0 || bid.node != from {
        return Response::refused("a bid must be signed and sent by the node it names");
    }
    let job = match job_of(shared, &bid.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let now = now_ms();
    let market_job = MarketJob {
        job_id: job.id,
        shards: (0..job.spec.shard_count()).collect(),
        demand_per_shard: job.spec.demand_per_shard,
        limit_price: job.spec.limit_price,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    };
    let checked = market::validate_bids(
        &market_job,
        std::slice::from_ref(&signed),
        &shared.trust,
        now,
    );
    if let Some(rejected) = checked.rejected.first() {
        if let MarketError::AskAboveLimit { ask, .. } = rejected {
            let mut st = job.state();
            if st.cheapest_ask.is_none_or(|(c, _)| *ask < c) {
                st.cheapest_ask = Some((*ask, from));
            }
        }
        return Response::refused(format!("bid refused: {rejected}"));
    }
    let ownership = match shared
        .trust
        .resolve_owner(&bid.node, bid.owner_cert.as_ref(), now)
    {
        Ok(o) => o,
        Err(e) => return Response::refused(format!("bid certificate: {e}")),
    };
    let resend = {
        let mut st = job.state();
        if st.is_terminal() {
            return Response::refused(format!("{JOB_ENDED}: {:?}", st.phase));
        }
        if st.banned.contains(&from) {
            return Response::refused("excluded from this job");
        }
        if let Some(old) = st.bids.get(&from)
            && let Ok((_, old)) = old.verify_and_decode()
            && old.nonce >= bid.nonce
        {
            return Response::refused(format!("nonce {} is not above {}", bid.nonce, old.nonce));
        }
        if !st.bids.contains_key(&from)
            && st.bids.len() >= shared.config.jobs.max_bids_per_job as usize
        {
            return Response::refused("this job's bid book is full");
        }
        st.bids.insert(from, signed);
        st.owners
            .insert(from, (ownership.owner, ownership.label.clone()));
        if st.cheapest_ask.is_none_or(|(c, _)| bid.ask < c) {
            st.cheapest_ask = Some((bid.ask, from));
        }
        let mut resend = false;
        if matches!(st.phase, JobState::Training | JobState::Waiting) {
            if st.missing.remove(&from) {
                info!(target: TARGET, job = %job.id, node = %from, "worker rejoins the job");
                st.needs_reclear = Some(format!("{from} rejoined"));
                if st.phase == JobState::Waiting {
                    st.bidding_until = st.bidding_until.min(now);
                }
            } else {
                resend = true;
            }
        }
        resend
    };
    job.event(JobEventKind::BidReceived {
        node: from.to_string(),
        owner: ownership.owner.to_string(),
        ask: bid.ask,
    });
    if resend {
        resend_start(shared, &job, from);
    }
    let (s, j) = (Arc::clone(shared), Arc::clone(&job));
    tokio::spawn(async move { super::persist::checkpoint(&s, &j).await });
    Response::Accepted
}

/// A worker in the round that bids again has restarted: send it the
/// round's start again if it still owes an update.
fn resend_start(shared: &Arc<Shared>, job: &Arc<CoordJob>, node: NodeId) {
    let pending = job
        .round
        .lock()
        .expect("round lock")
        .as_ref()
        .filter(|r| r.orders.contains_key(&node) && !r.outcomes.contains_key(&node))
        .and_then(|r| r.start.clone());
    if let Some((start, params)) = pending {
        debug!(target: TARGET, job = %job.id, %node, "sending the open round to a restarted worker");
        tokio::spawn(driver::send_start(
            Arc::clone(shared),
            Arc::clone(job),
            node,
            start,
            params,
        ));
    }
}

pub fn on_fetch_shards(
    shared: &Shared,
    from: NodeId,
    job_id: Hash32,
    indices: Vec<u32>,
) -> Response {
    let job = match job_of(shared, &job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    if indices.is_empty() || indices.len() > MAX_SHARD_BATCH {
        return Response::refused(format!("ask for 1..={MAX_SHARD_BATCH} shards at a time"));
    }
    let Some(data) = job.data() else {
        return Response::refused("the job has ended; its shards are no longer served");
    };
    {
        let st = job.state();
        if let Some(&i) = indices.iter().find(|&&i| !st.holds(&from, i)) {
            return Response::refused(format!("shard {i} is not allocated to {from}"));
        }
    }
    let mut total = 0usize;
    let mut out = Vec::with_capacity(indices.len());
    for i in indices {
        let Some(bytes) = data.shard_bytes.get(i as usize) else {
            return Response::refused(format!("no shard {i}"));
        };
        total += bytes.len();
        if total > MAX_SHARD_BATCH_BYTES {
            return Response::refused(format!(
                "the shards asked for exceed {MAX_SHARD_BATCH_BYTES} bytes; ask for fewer"
            ));
        }
        out.push(bytes.as_ref().clone());
    }
    Response::Shards(out)
}

fn receipt(
    shared: &Shared,
    job_id: Hash32,
    round: u32,
    worker: NodeId,
    update_hash: Hash32,
    result: Result<(), String>,
) -> Response {
    let (accepted, reason) = match result {
        Ok(()) => (true, String::new()),
        Err(mut r) => {
            crate::net::wire::clip(&mut r, 900);
            (false, r)
        }
    };
    Response::Receipt(Signed::sign(
        &shared.key,
        &Receipt {
            job_id,
            round,
            worker,
            update_hash,
            accepted,
            reason,
            issued_at: now_ms(),
        },
    ))
}

pub async fn on_update(
    shared: &Arc<Shared>,
    from: NodeId,
    signed: Signed<RoundUpdate>,
    bytes: Vec<u8>,
) -> Response {
    // The job and round are read from the payload before anything else is
    // trusted; the checks below verify the signature.
    let Ok(claimed) = fairgrid_protocol::codec::decode_exact::<RoundUpdate>(
        "round-update",
        &signed.payload,
        256 * 1024,
    ) else {
        return Response::refused("update payload does not decode");
    };
    let job = match job_of(shared, &claimed.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let checked = {
        let guard = job.round.lock().expect("round lock");
        match guard.as_ref() {
            None => Err(Rejection {
                reason: "no round is open".into(),
                misbehaved: false,
            }),
            Some(round) => round
                .check(from, &signed, &bytes, &job.spec, now_ms())
                .map(|u| (u, round.param_count)),
        }
    };
    let (update, param_count) = match checked {
        Ok(v) => v,
        Err(rejection) => return reject(shared, &job, from, &claimed, rejection),
    };
    let len = bytes.len() as u64;
    let decoded =
        tokio::task::spawn_blocking(move || RoundInProgress::decode(&bytes, param_count)).await;
    let delta = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(rejection)) => return reject(shared, &job, from, &claimed, rejection),
        Err(e) => return Response::refused(format!("decoding thread: {e}")),
    };
    let settled = job
        .round
        .lock()
        .expect("round lock")
        .as_mut()
        .filter(|r| r.round == update.round)
        .is_some_and(|r| {
            r.settle(
                from,
                Outcome::Accepted(AcceptedUpdate {
                    delta,
                    samples: update.samples,
                    loss: update.loss,
                    update_hash: update.update_hash,
                    bytes: len,
                }),
            )
        });
    if !settled {
        return receipt(
            shared,
            job.id,
            update.round,
            from,
            update.update_hash,
            Err("the round closed before the update was taken".into()),
        );
    }
    job.wake.notify_one();
    debug!(target: TARGET, job = %job.id, round = update.round, worker = %from, bytes = len, "update accepted");
    receipt(
        shared,
        job.id,
        update.round,
        from,
        update.update_hash,
        Ok(()),
    )
}

/// Refuses an update. Misbehaviour (bad signature, hash, size, values)
/// also settles the worker's order as rejected, puts it out of the job,
/// and is recorded as a failed `Verification`.
fn reject(
    shared: &Arc<Shared>,
    job: &Arc<CoordJob>,
    from: NodeId,
    claimed: &RoundUpdate,
    rejection: Rejection,
) -> Response {
    if rejection.misbehaved {
        warn!(target: TARGET, job = %job.id, round = claimed.round, node = %from, reason = %rejection.reason, "update rejected");
        let settled = job
            .round
            .lock()
            .expect("round lock")
            .as_mut()
            .filter(|r| r.round == claimed.round)
            .is_some_and(|r| r.settle(from, Outcome::Rejected(rejection.reason.clone())));
        {
            let mut st = job.state();
            st.banned.insert(from);
            st.needs_reclear = Some(format!("{from} sent a bad update: {}", rejection.reason));
        }
        job.event(JobEventKind::UpdateRejected {
            round: claimed.round,
            node: from.to_string(),
            reason: rejection.reason.clone(),
        });
        shared.record(EntryBody::Verification {
            job_id: job.id,
            round: claimed.round,
            node: from,
            passed: false,
            detail: format!("update rejected: {}", rejection.reason),
        });
        if settled {
            job.wake.notify_one();
        }
    } else {
        debug!(target: TARGET, job = %job.id, round = claimed.round, node = %from, reason = %rejection.reason, "update refused");
    }
    receipt(
        shared,
        job.id,
        claimed.round,
        from,
        claimed.update_hash,
        Err(rejection.reason),
    )
}

/// A worker that cannot take part (e.g. its shards failed their hash
/// checks twice) withdraws; it is out of the job.
pub fn on_decline(shared: &Shared, from: NodeId, job_id: Hash32, reason: String) -> Response {
    let job = match job_of(shared, &job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    warn!(target: TARGET, job = %job_id, node = %from, %reason, "worker withdrew");
    {
        let mut st = job.state();
        st.banned.insert(from);
        if st
            .current()
            .is_some_and(|a| !a.allocation.shards_of(&from).is_empty())
        {
            st.needs_reclear = Some(format!("{from} withdrew: {reason}"));
        }
    }
    let round = job
        .round
        .lock()
        .expect("round lock")
        .as_ref()
        .map(|r| r.round);
    if let Some(round) = round {
        driver::settle_missed(&job, from, round, format!("withdrew: {reason}"));
    }
    Response::Accepted
}

/// A worker will not deliver this round (its shards could not be had, or
/// training failed): its order is settled as missed now, so the round
/// does not wait for the deadline, and its shards go to others at the
/// next clearing. A new bid brings it back.
pub fn on_round_refusal(shared: &Shared, from: NodeId, signed: Signed<RoundRefusal>) -> Response {
    let (signer, refusal) = match signed.verify_and_decode() {
        Ok(v) => v,
        Err(e) => return Response::refused(format!("round refusal: {e}")),
    };
    if signer != from.0 || refusal.worker != from {
        return Response::refused("a round refusal must be signed and sent by the worker it names");
    }
    let job = match job_of(shared, &refusal.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let open = job
        .round
        .lock()
        .expect("round lock")
        .as_ref()
        .is_some_and(|r| {
            r.round == refusal.round
                && r.params_hash == refusal.base_params
                && r.orders.contains_key(&from)
                && !r.outcomes.contains_key(&from)
        });
    if !open {
        return Response::refused(format!(
            "{from} owes no update in an open round {}",
            refusal.round
        ));
    }
    warn!(target: TARGET, job = %job.id, round = refusal.round, node = %from, reason = %refusal.reason, "worker refused the round");
    driver::settle_missed(
        &job,
        from,
        refusal.round,
        format!("refused the round: {}", refusal.reason),
    );
    Response::Accepted
}
