//! A new job from the API (step 1: submit), and coordinated jobs resumed
//! from their checkpoints after a restart.

use std::sync::Arc;

use fairgrid_protocol::Signed;
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_sdk::jobs::{JobAccepted, JobRequest};
use tracing::{info, warn};

use super::machine::{Coordinator, Input, Output, Stored};
use super::{Checkpoint, CoordJob, persist};
use crate::jobs::JobsContext;
use crate::jobs::JobsError;
use crate::jobs::data;
use crate::jobs::events::EventLog;
use crate::jobs::model;
use crate::jobs::request;
use crate::ledger::now_ms;
use crate::net::Topic;

const TARGET: &str = "fairgrid::jobs";

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker thread: {e}"))?
}

/// Checks the request, loads and cuts the data, signs the spec, records
/// `JobSubmitted`, gossips the spec and starts the job's driver.
pub async fn submit(ctx: &Arc<JobsContext>, request: JobRequest) -> Result<JobAccepted, JobsError> {
    let plan = request::plan(&request).map_err(JobsError::BadRequest)?;
    let active = ctx.jobs.active_coordinated();
    if active >= ctx.config.jobs.max_jobs as usize {
        return Err(JobsError::Busy(format!(
            "this node already coordinates {active} jobs (jobs.max_jobs); try again later"
        )));
    }
    let loading = plan.clone();
    let data = blocking(move || data::load(&loading))
        .await
        .map_err(JobsError::BadRequest)?;
    let now = now_ms();
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| JobsError::Internal(format!("random nonce: {e}")))?;
    let spec = plan
        .spec(ctx.node_id, u64::from_le_bytes(nonce), now, &data.facts())
        .map_err(JobsError::BadRequest)?;
    let (spec_for_init, hyper) = (spec.model.clone(), spec.hyper.clone());
    let params = blocking(move || {
        model::initial_params(&spec_for_init, &hyper).map_err(|e| format!("model: {e}"))
    })
    .await
    .map_err(JobsError::BadRequest)?;
    let signed = Signed::sign(&ctx.key, &spec);
    let id = signed.id();
    // Adverts tell us the cheapest asks even of nodes that will not bid.
    let cheapest = ctx.host.cheapest_advert(now);
    let max_bids = ctx.config.jobs.max_bids_per_job as usize;
    let (mut machine, outputs) = Coordinator::submit(id, spec, params, now, cheapest, max_bids);
    machine.set_audits(ctx.config.jobs.audits);
    let job = Arc::new(CoordJob::new(
        plan,
        signed,
        Some(Arc::new(data)),
        EventLog::new(),
        machine,
    ));
    // Accepted only once the job survives a crash: its checkpoint (with
    // `JobSubmitted` written ahead) is on disk, and the entry is recorded.
    for output in outputs {
        match output {
            Output::Event(kind) => {
                job.events.push(now, kind);
            }
            Output::WriteAhead {
                entries,
                check_ledger,
            } => {
                let done = persist::write_ahead(ctx, &job, entries, check_ledger).await;
                if let Input::WriteAheadDone { error: Some(e), .. } = &done {
                    let _ = ctx.jobs.store.remove_coordinator(&id).await;
                    return Err(JobsError::Internal(format!(
                        "storing the job failed, so it was not accepted: {e}"
                    )));
                }
                // Durable now: the bid window runs in full from here.
                let _ = job.handle(Input::Accepted);
                let _ = job.handle(done);
            }
            other => {
                job.queue(vec![other]);
            }
        }
    }
    ctx.jobs.insert_coordinated(Arc::clone(&job));
    info!(target: TARGET, job = %id, name = %job.plan.name, shards = job.spec.shard_count(), "job submitted");
    publish_spec(ctx, &job);
    bid_on_own_job(ctx, &job);
    tokio::spawn(super::driver::supervise(Arc::clone(ctx), Arc::clone(&job)));
    Ok(JobAccepted {
        job_id: id.to_hex(),
        coordinator: ctx.node_id.to_string(),
        shards: job.spec.shard_count(),
        dataset: job.spec.dataset.name.clone(),
    })
}

/// Gossips the signed spec on the jobs topic, retrying while no peer has
/// subscribed yet, until the bid window closes.
pub fn publish_spec(ctx: &Arc<JobsContext>, job: &Arc<CoordJob>) {
    let ctx = Arc::clone(ctx);
    let bytes = job.signed_spec.to_bytes();
    let until = job.state().bidding_until;
    let id = job.id;
    tokio::spawn(async move {
        loop {
            match ctx.net.publish(Topic::Jobs, bytes.clone()).await {
                Ok(()) => {
                    info!(target: TARGET, job = %id, "job spec gossiped");
                    return;
                }
                Err(e) if now_ms() + 200 < until => {
                    tracing::debug!(target: TARGET, job = %id, error = %e, "job spec not gossiped yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => {
                    warn!(target: TARGET, job = %id, error = %e, "job spec could not be gossiped before the bid window closed");
                    return;
                }
            }
        }
    });
}

/// Resumes a checkpointed job: records the entries its checkpoint holds
/// as unrecorded (unless the ledger has them), re-cuts its data (checked
/// against the spec's hashes) unless it has ended, and restarts its driver.
pub async fn resume(
    ctx: &Arc<JobsContext>,
    checkpoint: Checkpoint,
    params: Option<Vec<u8>>,
    unrecorded: Vec<EntryBody>,
) {
    let Checkpoint {
        plan,
        spec: signed,
        state,
        events,
    } = checkpoint;
    let id = signed.id();
    let spec = match signed.verify_and_decode() {
        Ok((_, spec)) => spec,
        Err(e) => {
            warn!(target: TARGET, job = %id, error = %e, "checkpoint holds a spec that does not verify; skipped");
            return;
        }
    };
    let Some(bytes) = params else {
        warn!(target: TARGET, job = %id, "checkpoint has no parameters; skipped");
        return;
    };
    let (params, velocity) = match super::stored_params(&spec, &bytes) {
        Ok(split) => split,
        Err(e) => {
            warn!(target: TARGET, job = %id, error = %e, "checkpoint has no usable parameters; skipped");
            return;
        }
    };
    let mut data = None;
    let mut cannot_resume = None;
    if !state.is_terminal() {
        let loading = plan.clone();
        match blocking(move || data::load(&loading)).await {
            Ok(loaded) => match loaded.matches(&spec) {
                Ok(()) => data = Some(Arc::new(loaded)),
                Err(e) => cannot_resume = Some(format!("cannot resume: {e}")),
            },
            Err(e) => cannot_resume = Some(format!("cannot resume: {e}")),
        }
    }
    let stored = Stored {
        state,
        params,
        velocity,
        unrecorded,
    };
    let max_bids = ctx.config.jobs.max_bids_per_job as usize;
    let (mut machine, outputs) =
        Coordinator::resume(id, spec, stored, now_ms(), max_bids, cannot_resume);
    machine.set_audits(ctx.config.jobs.audits);
    let state = machine.state();
    if !state.is_terminal() {
        info!(target: TARGET, job = %id, round = state.next_round, phase = ?state.phase, "resuming job from its checkpoint");
    }
    let ended = machine.has_ended();
    let job = Arc::new(CoordJob::new(
        plan,
        signed,
        data,
        EventLog::restore(events),
        machine,
    ));
    job.queue(outputs);
    ctx.jobs.insert_coordinated(Arc::clone(&job));
    if !ended {
        bid_on_own_job(ctx, &job);
        tokio::spawn(super::driver::supervise(Arc::clone(ctx), job));
    }
}

/// Gossip does not come back to its sender: this node's own worker bids
/// on the job directly (unless it already works on it: a resumed worker
/// record rejoins by itself).
fn bid_on_own_job(ctx: &Arc<JobsContext>, job: &CoordJob) {
    crate::jobs::worker::admission::hear(ctx, job.signed_spec.clone(), &job.spec);
}
