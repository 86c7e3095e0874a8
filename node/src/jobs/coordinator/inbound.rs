//! What workers send the coordinator: bids (step 2, and rejoins), shard
//! fetches (step 4), updates (step 5) and withdrawals. `from` is the
//! authenticated peer that sent the request.

use std::sync::Arc;

use fairgrid_protocol::market::{self, MarketError, MarketJob};
use fairgrid_protocol::messages::{Bid, Receipt, RoundRefusal, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use tracing::{debug, warn};

use super::CoordJob;
use super::machine::Input;
use super::round::{AcceptedUpdate, Rejection, RoundInProgress};
use crate::jobs::JobsContext;
use crate::jobs::worker::BUSY;
use crate::ledger::now_ms;
use crate::net::Response;
use crate::net::wire::{MAX_SHARD_BATCH, MAX_SHARD_BATCH_BYTES};

const TARGET: &str = "fairgrid::jobs";

pub use super::machine::JOB_ENDED;

/// How long a bid waits for the checkpoint that stores it.
const BID_STORE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

// The error is the answer to send back as it is: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn job_of(ctx: &JobsContext, id: &Hash32) -> Result<Arc<CoordJob>, Response> {
    match ctx.jobs.coordinated(id) {
        Some(job) => Ok(job),
        // A worker asking a restarted coordinator tries again shortly.
        None if !ctx.jobs.resumed() => Err(Response::refused(format!(
            "{BUSY}: this node is still loading its jobs"
        ))),
        // Ended and archived: the same answer as from the job in memory.
        None if let Some(ended) = ctx.jobs.archived(id) => {
            Err(Response::refused(format!("{JOB_ENDED}: {:?}", ended.state)))
        }
        None => Err(Response::refused(format!(
            "this node coordinates no job {id}"
        ))),
    }
}

pub async fn on_bid(ctx: &Arc<JobsContext>, from: NodeId, signed: Signed<Bid>) -> Response {
    let (signer, bid) = match signed.verify_and_decode() {
        Ok(v) => v,
        Err(e) => return Response::refused(format!("bid: {e}")),
    };
    if signer != from.0 || bid.node != from {
        return Response::refused("a bid must be signed and sent by the node it names");
    }
    let job = match job_of(ctx, &bid.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    if !job.spec.relayed_workers && reached_only_through_a_relay(ctx, &from).await {
        return Response::refused(
            "this job takes no workers reachable only through a relay (market.relayed_workers = false); \
             a direct connection (a public address, a forwarded port, or a punched hole) is needed",
        );
    }
    let now = now_ms();
    let market_job = MarketJob {
        job_id: job.id,
        shards: (0..job.spec.shard_count()).collect(),
        demand_per_shard: job.spec.demand_per_shard,
        limit_price: job.spec.limit_price,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    };
    let checked =
        market::validate_bids(&market_job, std::slice::from_ref(&signed), &ctx.trust, now);
    if let Some(rejected) = checked.rejected.first() {
        if let MarketError::AskAboveLimit { ask, .. } = rejected {
            let _ = job.handle(Input::AskAboveLimit { from, ask: *ask });
        }
        return Response::refused(format!("bid refused: {rejected}"));
    }
    let ownership = match ctx
        .trust
        .resolve_owner(&bid.node, bid.owner_cert.as_ref(), now)
    {
        Ok(o) => o,
        Err(e) => return Response::refused(format!("bid certificate: {e}")),
    };
    let limit = ctx.config.jobs.refuse_owner_after_failed_audits;
    let failures = ctx.jobs.standing.failures(&ownership.owner);
    if limit > 0 && failures >= limit {
        return Response::refused(format!(
            "owner {} failed {failures} audits here; its bids are refused (jobs.refuse_owner_after_failed_audits = {limit})",
            ownership.owner
        ));
    }
    let input = Input::Bid {
        from,
        signed,
        bid,
        owner: ownership.owner,
        label: ownership.label,
    };
    // A bid is acknowledged once the checkpoint that holds it is on disk:
    // a worker told "accepted" does not bid again after a crash.
    match job.handle_durably(input) {
        (Err(reason), _) => Response::refused(reason),
        (Ok(()), None) => Response::Accepted,
        (Ok(()), Some(ticket)) if job.checkpointed(ticket, BID_STORE_LIMIT).await => {
            Response::Accepted
        }
        (Ok(()), Some(_)) => {
            Response::refused(format!("{BUSY}: the bid could not be stored in time"))
        }
    }
}

pub fn on_fetch_shards(
    ctx: &JobsContext,
    from: NodeId,
    job_id: Hash32,
    indices: Vec<u32>,
) -> Response {
    let job = match job_of(ctx, &job_id) {
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
    ctx: &JobsContext,
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
        &ctx.key,
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
    ctx: &Arc<JobsContext>,
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
    let job = match job_of(ctx, &claimed.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let checked = job.machine().check_update(from, &signed, &bytes, now_ms());
    let (update, param_count) = match checked {
        Ok(v) => v,
        Err(rejection) => return reject(ctx, &job, from, &claimed, rejection),
    };
    let len = bytes.len() as u64;
    let decoded =
        tokio::task::spawn_blocking(move || RoundInProgress::decode(&bytes, param_count)).await;
    let delta = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(rejection)) => return reject(ctx, &job, from, &claimed, rejection),
        Err(e) => return Response::refused(format!("decoding thread: {e}")),
    };
    let accepted = AcceptedUpdate::new(&signed, &update, delta, len);
    let taken = job.handle(Input::Update {
        from,
        round: update.round,
        accepted,
    });
    if taken.is_ok() {
        debug!(target: TARGET, job = %job.id, round = update.round, worker = %from, bytes = len, "update accepted");
    }
    receipt(ctx, job.id, update.round, from, update.update_hash, taken)
}

/// Refuses an update. Misbehaviour (bad signature, hash, size, values)
/// also settles the worker's order as rejected, puts it out of the job,
/// and is recorded as a failed `Verification`.
fn reject(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    from: NodeId,
    claimed: &RoundUpdate,
    rejection: Rejection,
) -> Response {
    if rejection.misbehaved {
        warn!(target: TARGET, job = %job.id, round = claimed.round, node = %from, reason = %rejection.reason, "update rejected");
    } else {
        debug!(target: TARGET, job = %job.id, round = claimed.round, node = %from, reason = %rejection.reason, "update refused");
    }
    let _ = job.handle(Input::UpdateRejected {
        from,
        round: claimed.round,
        rejection: rejection.clone(),
    });
    receipt(
        ctx,
        job.id,
        claimed.round,
        from,
        claimed.update_hash,
        Err(rejection.reason),
    )
}

/// A worker that cannot take part (e.g. its shards failed their hash
/// checks twice) withdraws; it is out of the job.
pub fn on_decline(ctx: &JobsContext, from: NodeId, job_id: Hash32, reason: String) -> Response {
    let job = match job_of(ctx, &job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    warn!(target: TARGET, job = %job_id, node = %from, %reason, "worker withdrew");
    let _ = job.handle(Input::Declined { from, reason });
    Response::Accepted
}

/// A worker will not deliver this round (its shards could not be had, or
/// training failed): its order is settled as missed now, so the round
/// does not wait for the deadline, and its shards go to others at the
/// next clearing. A new bid brings it back.
pub fn on_round_refusal(ctx: &JobsContext, from: NodeId, signed: Signed<RoundRefusal>) -> Response {
    let (signer, refusal) = match signed.verify_and_decode() {
        Ok(v) => v,
        Err(e) => return Response::refused(format!("round refusal: {e}")),
    };
    if signer != from.0 || refusal.worker != from {
        return Response::refused("a round refusal must be signed and sent by the worker it names");
    }
    let job = match job_of(ctx, &refusal.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    match job.handle(Input::RoundRefused { from, refusal }) {
        Ok(()) => {
            warn!(target: TARGET, job = %job.id, node = %from, "worker refused the round");
            Response::Accepted
        }
        Err(reason) => Response::refused(reason),
    }
}

/// An auditor's report on an update this node asked it to replay.
pub fn on_audit_report(
    ctx: &JobsContext,
    from: NodeId,
    signed: Signed<fairgrid_protocol::messages::AuditReport>,
) -> Response {
    let job_id = match signed.verify_and_decode() {
        Ok((_, r)) => r.job_id,
        Err(e) => return Response::refused(format!("audit report: {e}")),
    };
    let job = match job_of(ctx, &job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    match job.awaited_reports.deliver(from, signed) {
        Ok(()) => Response::Accepted,
        Err(reason) => Response::refused(reason),
    }
}

/// Whether every connection this node has to `node` goes through a relay
/// (observed, not declared: hole punching may have made a direct one since
/// the node first connected). Not connected, or the network cannot say:
/// false.
async fn reached_only_through_a_relay(ctx: &JobsContext, node: &NodeId) -> bool {
    let Ok(peer) = crate::jobs::transport::peer_id(node) else {
        return false;
    };
    match ctx.net.transports(peer).await {
        Ok(links) => crate::net::reach::only_relayed(&links),
        Err(_) => false,
    }
}
