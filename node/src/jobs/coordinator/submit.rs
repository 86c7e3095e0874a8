//! A new job from the API (step 1: submit), and coordinated jobs resumed
//! from their checkpoints after a restart.

use std::sync::{Arc, Mutex};

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::messages::JobSpec;
use fairgrid_protocol::{Hash32, Signed};
use fairgrid_sdk::jobs::{JobAccepted, JobEventKind, JobRequest, JobState};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{Checkpoint, CoordJob, CoordState, persist};
use crate::app::Shared;
use crate::jobs::JobsError;
use crate::jobs::data::{self, JobData};
use crate::jobs::events::EventLog;
use crate::jobs::model;
use crate::jobs::request::{self, JobPlan};
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
pub async fn submit(shared: &Arc<Shared>, request: JobRequest) -> Result<JobAccepted, JobsError> {
    let plan = request::plan(&request).map_err(JobsError::BadRequest)?;
    let active = shared.jobs.active_coordinated();
    if active >= shared.config.jobs.max_jobs as usize {
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
        .spec(
            shared.node_id,
            u64::from_le_bytes(nonce),
            now,
            &data.facts(),
        )
        .map_err(JobsError::BadRequest)?;
    let (spec_for_init, hyper) = (spec.model.clone(), spec.hyper.clone());
    let params = blocking(move || {
        model::initial_params(&spec_for_init, &hyper).map_err(|e| format!("model: {e}"))
    })
    .await
    .map_err(JobsError::BadRequest)?;
    let signed = Signed::sign(&shared.key, &spec);
    let id = signed.id();
    let job = Arc::new(new_job(
        id,
        plan,
        signed,
        spec,
        Some(Arc::new(data)),
        CoordState::new(now, 0),
        EventLog::new(),
        params,
    ));
    {
        let mut state = job.state();
        state.bidding_until = now + job.spec.bid_window_ms;
        // Adverts tell us the cheapest asks even of nodes that will not bid.
        state.cheapest_ask = super::clearing::cheapest_advert(shared, &job.spec);
    }
    job.unrecorded
        .lock()
        .expect("unrecorded lock")
        .push(EntryBody::JobSubmitted {
            job_id: id,
            submitter: shared.node_id,
            shards: job.spec.shard_count(),
            limit_price: job.spec.limit_price,
            alpha_ppm: job.spec.alpha_ppm,
        });
    job.event(JobEventKind::Submitted {
        shards: job.spec.shard_count(),
    });
    // Accepted only once the job survives a crash: its checkpoint (with
    // `JobSubmitted` written ahead) is on disk, then the entry is recorded.
    if let Err(e) = persist::save(shared, &job).await {
        let _ = shared.jobs.store.remove_coordinator(&id).await;
        return Err(JobsError::Internal(format!(
            "storing the job failed, so it was not accepted: {e}"
        )));
    }
    if let Err(e) = persist::record(shared, &job, false).await {
        let _ = shared.jobs.store.remove_coordinator(&id).await;
        return Err(JobsError::Internal(format!(
            "recording the job in the ledger failed, so it was not accepted: {e}"
        )));
    }
    shared.jobs.insert_coordinated(Arc::clone(&job));
    persist::checkpoint(shared, &job).await;
    info!(target: TARGET, job = %id, name = %job.plan.name, shards = job.spec.shard_count(), "job submitted");
    publish_spec(shared, &job);
    // Gossip does not come back to its sender: bid on our own job directly.
    let (s, signed, spec) = (
        Arc::clone(shared),
        job.signed_spec.clone(),
        job.spec.clone(),
    );
    tokio::spawn(async move { crate::jobs::worker::bid(&s, signed, spec).await });
    tokio::spawn(super::driver::supervise(
        Arc::clone(shared),
        Arc::clone(&job),
    ));
    Ok(JobAccepted {
        job_id: id.to_hex(),
        coordinator: shared.node_id.to_string(),
        shards: job.spec.shard_count(),
        dataset: job.spec.dataset.name.clone(),
    })
}

#[allow(clippy::too_many_arguments)]
fn new_job(
    id: Hash32,
    plan: JobPlan,
    signed_spec: Signed<JobSpec>,
    spec: JobSpec,
    data: Option<Arc<JobData>>,
    state: CoordState,
    events: EventLog,
    params: Vec<f32>,
) -> CoordJob {
    CoordJob {
        id,
        param_count: params.len(),
        plan,
        signed_spec,
        spec,
        data: Mutex::new(data),
        state: Mutex::new(state),
        params: Mutex::new(Arc::new(params)),
        round: Mutex::new(None),
        events,
        wake: Notify::new(),
        evaluator: Arc::new(Mutex::new(None)),
        unrecorded: Mutex::new(Vec::new()),
        persisting: tokio::sync::Mutex::new(()),
    }
}

/// Gossips the signed spec on the jobs topic, retrying while no peer has
/// subscribed yet, until the bid window closes.
pub fn publish_spec(shared: &Arc<Shared>, job: &Arc<CoordJob>) {
    let shared = Arc::clone(shared);
    let bytes = job.signed_spec.to_bytes();
    let until = job.state().bidding_until;
    let id = job.id;
    tokio::spawn(async move {
        loop {
            match shared.net.publish(Topic::Jobs, bytes.clone()).await {
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
    shared: &Arc<Shared>,
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
    let params = params.as_deref().and_then(model::params_from_bytes);
    let Some(params) = params else {
        warn!(target: TARGET, job = %id, "checkpoint has no usable parameters; skipped");
        return;
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
    let job = Arc::new(new_job(
        id,
        plan,
        signed,
        spec,
        data,
        state,
        EventLog::restore(events),
        params,
    ));
    *job.unrecorded.lock().expect("unrecorded lock") = unrecorded;
    if let Err(e) = persist::record(shared, &job, true).await {
        job.fail(format!("cannot resume: recording its entries: {e}"));
    }
    if let Some(reason) = cannot_resume {
        job.fail(reason);
    }
    let terminal = job.state().is_terminal();
    if !terminal {
        let mut st = job.state();
        info!(target: TARGET, job = %id, round = st.next_round, phase = ?st.phase, "resuming job from its checkpoint");
        // A bid window cut short by the restart gets its full length again.
        if matches!(st.phase, JobState::Bidding | JobState::Waiting) {
            st.bidding_until = st.bidding_until.max(now_ms() + job.spec.bid_window_ms);
        }
    }
    shared.jobs.insert_coordinated(Arc::clone(&job));
    tokio::spawn(super::driver::supervise(Arc::clone(shared), job));
}
