//! What the coordinator sends a worker: the allocation (step 3, verified
//! by re-clearing it from the signed bids) and round starts (step 5).

use std::sync::Arc;

use fairgrid_protocol::market::{self, MarketJob};
use fairgrid_protocol::messages::{Allocation, Bid, Receipt, RoundRefusal, RoundStart};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use tracing::{debug, info, warn};

use super::gate::RoundKey;
use super::machine::{Input, Output, Reply, Verified};
use super::shards::{self, ShardError};
use super::train::{self, RoundInput};
use super::{WorkerJob, apply, apply_later, execute};
use super::{policy, working};
use crate::jobs::JobsContext;
use crate::jobs::{model, transport};
use crate::ledger::now_ms;
use crate::net::wire::MAX_NOTICE_BIDS;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";

// The error is the answer to send back as it is: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn own_job(ctx: &JobsContext, from: NodeId, job: &Hash32) -> Result<Arc<WorkerJob>, Response> {
    let Some(worker) = ctx.jobs.worker(job) else {
        return Err(Response::refused(format!(
            "this node did not bid on job {job}"
        )));
    };
    worker
        .machine()
        .accepts_from(from)
        .map_err(Response::refused)?;
    Ok(worker)
}

fn answer(reply: Option<Reply>) -> Response {
    match reply {
        Some(Reply::Accepted) => Response::Accepted,
        Some(Reply::Refused(reason)) => Response::refused(reason),
        None => Response::refused("no answer"),
    }
}

/// Checks the allocation as every participant must: signed by the
/// coordinator, for this job, with the job's alpha, and equal to what
/// `market::verify` recomputes from the bids. On a mismatch the node
/// refuses to take part and records why.
fn check_allocation(
    ctx: &JobsContext,
    job: &WorkerJob,
    signed: &Signed<Allocation>,
    bids: &[Signed<Bid>],
) -> Result<Allocation, String> {
    let (signer, allocation) = signed.verify_and_decode().map_err(|e| e.to_string())?;
    if signer != job.coordinator.0 {
        return Err("not signed by the job's coordinator".into());
    }
    if allocation.job_id != job.id {
        return Err(format!("allocation is for job {}", allocation.job_id));
    }
    if allocation.policy.alpha_ppm != job.spec.alpha_ppm {
        return Err(format!(
            "allocation cleared with alpha {} ppm, the job says {}",
            allocation.policy.alpha_ppm, job.spec.alpha_ppm
        ));
    }
    let m = job.spec.shard_count();
    if allocation.shards != (0..m).collect::<Vec<u32>>() {
        return Err(format!("allocation does not cover the job's {m} shards"));
    }
    if bids.len() > MAX_NOTICE_BIDS {
        return Err(format!("{} bids, more than {MAX_NOTICE_BIDS}", bids.len()));
    }
    let market_job = MarketJob {
        job_id: job.id,
        shards: allocation.shards.clone(),
        demand_per_shard: job.spec.demand_per_shard,
        limit_price: job.spec.limit_price,
        attempt: allocation.attempt,
        prev_allocation: allocation.prev_allocation,
    };
    market::verify(&allocation, &market_job, bids, &ctx.trust).map_err(|e| e.to_string())?;
    ctx.jobs.window.check(&allocation)?;
    Ok(allocation)
}

pub async fn on_allocation(
    ctx: &Arc<JobsContext>,
    from: NodeId,
    signed: Signed<Allocation>,
    bids: Vec<Signed<Bid>>,
) -> Response {
    let job = match own_job(ctx, from, &signed_job(&signed)) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let (s, j, sig) = (Arc::clone(ctx), Arc::clone(&job), signed.clone());
    let checked = tokio::task::spawn_blocking(move || check_allocation(&s, &j, &sig, &bids)).await;
    let mut freed_capacity = false;
    let checked = match checked {
        Ok(Ok(allocation)) => {
            let mine = allocation.shards_of(&ctx.node_id).to_vec();
            info!(target: TARGET, job = %job.id, attempt = allocation.attempt, shards = mine.len(), "allocation verified");
            hold_allocated(ctx, &job, mine.len()).map(|freed| {
                freed_capacity = freed;
                Verified {
                    hash: allocation.hash(),
                    attempt: allocation.attempt,
                    mine,
                }
            })
        }
        Ok(Err(reason)) => {
            warn!(target: TARGET, job = %job.id, coordinator = %from, %reason, "allocation does not verify; refusing to take part");
            Err(reason)
        }
        Err(e) => return Response::refused(format!("verifier thread: {e}")),
    };
    let reply = apply(ctx, &job, Input::Allocation { from, checked }).await;
    // Only now, with the allocation in the job's record: the job itself no
    // longer stands by for a larger bid.
    if freed_capacity {
        super::retry_waiting(ctx);
    }
    answer(reply)
}

/// Makes the job hold what its allocated shards take: less frees capacity
/// (`Ok(true)`: the jobs waiting for some are bid on once the allocation is
/// recorded); more is taken only if still free (a re-clearing that gives
/// more than the node can now hold is refused).
fn hold_allocated(ctx: &JobsContext, job: &WorkerJob, shards: usize) -> Result<bool, String> {
    let need = policy::hold(&job.spec, shards as u64);
    let before = job.hold();
    let (offered, _) = ctx.host.offer(now_ms());
    match ctx.jobs.working.hold_for(job, offered, need) {
        Ok(()) => Ok(!working::fits(before, need)),
        Err(room) => Err(format!(
            "the allocation gives this node {shards} shards, which take {need:?}; only {room:?} \
             is free beside what its other jobs hold"
        )),
    }
}

fn signed_job(signed: &Signed<Allocation>) -> Hash32 {
    fairgrid_protocol::codec::decode_exact::<Allocation>(
        "allocation",
        &signed.payload,
        <Allocation as fairgrid_protocol::SignedMessage>::MAX_BYTES,
    )
    .map(|a| a.job_id)
    .unwrap_or(Hash32::ZERO)
}

/// Fetches a new allocation's shards now, so the first round does not
/// wait for them.
pub fn prefetch(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>, indices: Vec<u32>) {
    let (s, j) = (Arc::clone(ctx), Arc::clone(job));
    tokio::spawn(async move {
        if let Err(ShardError::Corrupt(reason)) = shards::ensure(&s, &j, &indices).await {
            apply_later(&s, &j, Input::Withdraw { reason });
        }
    });
}

pub async fn on_round_start(
    ctx: &Arc<JobsContext>,
    from: NodeId,
    signed: Signed<RoundStart>,
    params: Vec<u8>,
) -> Response {
    let (signer, start) = match signed.verify_and_decode() {
        Ok(v) => v,
        Err(e) => return Response::refused(format!("round start: {e}")),
    };
    let job = match own_job(ctx, from, &start.job_id) {
        Ok(j) => j,
        Err(r) => return r,
    };
    if signer != from.0 {
        return Response::refused("round start not signed by the coordinator");
    }
    if params.len() as u64 != start.params_len.saturating_mul(4)
        || Hash32::of(&params) != start.params_hash
    {
        return Response::refused("parameters do not match the round's params_hash");
    }
    let Some(values) = model::params_from_bytes(&params) else {
        return Response::refused("parameters are not finite fp32 values");
    };
    let key = RoundKey {
        round: start.round,
        allocation: start.allocation,
        params_hash: start.params_hash,
    };
    let order = start
        .orders
        .iter()
        .find(|o| o.node == ctx.node_id)
        .map(|o| o.shards.clone());
    let input = Input::RoundStart {
        from,
        key,
        deadline: start.deadline,
        order,
    };
    let handled = job.machine().handle(now_ms(), input);
    // The parameters go to the training the machine asks for, if any.
    let mut params = Some(values);
    for output in handled.outputs {
        match output {
            Output::Train { key, shards } => {
                train(ctx, &job, key, shards, params.take().unwrap_or_default())
            }
            other => execute(ctx, &job, other).await,
        }
    }
    answer(handled.reply)
}

/// Trains a round the machine took on a task, and hands it the outcome.
fn train(
    ctx: &Arc<JobsContext>,
    job: &Arc<WorkerJob>,
    key: RoundKey,
    shards: Vec<u32>,
    params: Vec<f32>,
) {
    let (s, j) = (Arc::clone(ctx), Arc::clone(job));
    tokio::spawn(async move {
        let outcome = match work_round(&s, &j, key, params, shards).await {
            Ok(trained) => {
                *j.trained.lock().expect("trained lock") = Some((key, trained));
                Ok(())
            }
            Err(RoundFailure::Corrupt(reason)) => {
                apply(&s, &j, Input::Withdraw { reason }).await;
                return;
            }
            Err(RoundFailure::Refuse(reason)) => Err(reason),
        };
        apply_later(&s, &j, Input::Trained { key, outcome });
    });
}

/// Why a round produced no update.
enum RoundFailure {
    /// The job's data failed its checks: the worker withdraws.
    Corrupt(String),
    /// This round cannot be done: the coordinator is told at once.
    Refuse(String),
}

/// Loads the shards and trains on a blocking thread.
async fn work_round(
    ctx: &Arc<JobsContext>,
    job: &Arc<WorkerJob>,
    key: RoundKey,
    params: Vec<f32>,
    mine: Vec<u32>,
) -> Result<Arc<train::Trained>, RoundFailure> {
    let loaded = match shards::ensure(ctx, job, &mine).await {
        Ok(l) => l,
        Err(ShardError::Corrupt(reason)) => return Err(RoundFailure::Corrupt(reason)),
        Err(ShardError::Unavailable(reason)) => {
            return Err(RoundFailure::Refuse(format!(
                "shards unavailable: {reason}"
            )));
        }
    };
    let threads = model::threads(ctx.config.worker.threads);
    let devices = super::round_devices(ctx, job, mine.len());
    let input = RoundInput {
        spec: job.spec.clone(),
        job_id: job.id,
        round: key.round,
        worker: ctx.node_id,
        key: ctx.key.clone(),
        params,
        base_params: key.params_hash,
        shards: mine,
        loaded,
        threads,
        devices,
        reset_residual: !job.acknowledged.load(std::sync::atomic::Ordering::SeqCst),
        fault: super::train::TestFault::from_env(),
        cancel: Arc::clone(&job.cancel),
    };
    let engine = Arc::clone(&job.engine);
    let trained = tokio::task::spawn_blocking(move || {
        let mut engine = engine.lock().expect("engine lock");
        train::train_round(&mut engine, input)
    })
    .await;
    match trained {
        Ok(Ok(t)) => {
            job.keep_reveal(Arc::clone(&t.reveal));
            if ctx.config.worker.measure_speed {
                // The cache holds one device's speed; a round over
                // several GPUs trained on each a share of the samples.
                ctx.jobs.speeds.observe(
                    &job.spec,
                    t.ran_on,
                    t.samples / t.devices_used.max(1),
                    t.compute_ms,
                );
            }
            Ok(Arc::new(t))
        }
        Ok(Err(e)) => Err(RoundFailure::Refuse(format!("training failed: {e}"))),
        Err(e) => Err(RoundFailure::Refuse(format!("training thread failed: {e}"))),
    }
}

/// Sends an update and reads the receipt.
pub async fn deliver(
    ctx: &Arc<JobsContext>,
    job: &Arc<WorkerJob>,
    round: u32,
    trained: &train::Trained,
) {
    let request = Request::RoundUpdate {
        update: trained.update.clone(),
        bytes: trained.bytes.clone(),
    };
    let acknowledged = match transport::call(ctx, job.coordinator, request).await {
        Ok(Response::Receipt(receipt)) => read_receipt(job, &receipt, round).await,
        Ok(Response::Refused { reason }) => {
            debug!(target: TARGET, job = %job.id, round, %reason, "update refused");
            false
        }
        Ok(_) => {
            warn!(target: TARGET, job = %job.id, "unexpected answer to an update");
            false
        }
        Err(e) => {
            warn!(target: TARGET, job = %job.id, round, error = %e, "update not delivered");
            false
        }
    };
    // The coordinator takes the next update's residual only if it saw
    // this one's signed: without a receipt the residual starts again.
    job.acknowledged
        .store(acknowledged, std::sync::atomic::Ordering::SeqCst);
}

/// An auditor asks for a round's raw delta and residual.
pub fn on_audit_reveal(
    ctx: &Arc<JobsContext>,
    from: NodeId,
    job_id: Hash32,
    round: u32,
) -> Response {
    let Some(job) = ctx.jobs.worker(&job_id) else {
        return Response::refused(format!("not working on job {job_id}"));
    };
    if from != job.coordinator {
        return Response::refused("only the job's coordinator audits its rounds");
    }
    match job.reveal(round) {
        Some(reveal) => Response::Revealed {
            delta: model::params_to_bytes(&reveal.delta),
            residual: model::params_to_bytes(&reveal.residual),
        },
        None => Response::refused(format!("round {round} is no longer kept")),
    }
}

/// Tells the coordinator, signed, that this round will bring no update.
pub async fn refuse_round(
    ctx: &Arc<JobsContext>,
    job: &Arc<WorkerJob>,
    key: RoundKey,
    mut reason: String,
) {
    let round = key.round;
    warn!(target: TARGET, job = %job.id, round, %reason, "refusing the round");
    crate::net::wire::clip(&mut reason, 900);
    let refusal = Signed::sign(
        &ctx.key,
        &RoundRefusal {
            job_id: job.id,
            round,
            worker: ctx.node_id,
            base_params: key.params_hash,
            reason,
            issued_at: now_ms(),
        },
    );
    match transport::call(ctx, job.coordinator, Request::RoundRefusal(refusal)).await {
        Ok(Response::Accepted) => {}
        Ok(other) => {
            debug!(target: TARGET, job = %job.id, round, answer = ?other, "round refusal not taken")
        }
        Err(e) => {
            debug!(target: TARGET, job = %job.id, round, error = %e, "round refusal not delivered")
        }
    }
}

/// Whether the receipt verifies and accepts the update.
async fn read_receipt(job: &Arc<WorkerJob>, receipt: &Signed<Receipt>, round: u32) -> bool {
    match receipt.verify_and_decode() {
        Ok((signer, r))
            if signer == job.coordinator.0 && r.job_id == job.id && r.round == round =>
        {
            if r.accepted {
                debug!(target: TARGET, job = %job.id, round, "update accepted");
            } else {
                warn!(target: TARGET, job = %job.id, round, reason = %r.reason, "update rejected by the coordinator");
            }
            r.accepted
        }
        _ => {
            warn!(target: TARGET, job = %job.id, round, "receipt does not verify");
            false
        }
    }
}
