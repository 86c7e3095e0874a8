//! A coordinated job's durability: checkpoints (state, events,
//! parameters and the entries not yet recorded) written one at a time, and
//! ledger entries written ahead into the checkpoint before they are
//! appended. A coordinator that crashes between an entry's checkpoint and
//! its append appends it on resume; one that crashes after the append
//! finds it in its ledger and does not append it again.

use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::EntryBody;
use tracing::warn;

use super::CoordJob;
use crate::app::Shared;
use crate::jobs::model;

const TARGET: &str = "fairgrid::jobs";

/// Writes the job's checkpoint. Checkpoints of one job are serialised and
/// each snapshot is taken once its turn has come, so they never go back.
pub async fn save(shared: &Shared, job: &CoordJob) -> Result<(), String> {
    let _turn = job.persisting.lock().await;
    let record = job.checkpoint();
    let params = model::params_to_bytes(&job.params.lock().expect("params lock"));
    let unrecorded = job.unrecorded.lock().expect("unrecorded lock").clone();
    shared
        .jobs
        .store
        .put_coordinator(&job.id, &record, Some(&params), &unrecorded)
        .await
        .map_err(|e| e.to_string())
}

/// A checkpoint whose failure the job survives (the previous one stays
/// valid, and the next one carries the same state): logged.
pub async fn checkpoint(shared: &Shared, job: &CoordJob) {
    if let Err(e) = save(shared, job).await {
        warn!(target: TARGET, job = %job.id, error = %e, "checkpoint failed");
    }
}

/// A job that ended: checkpointed, its last entries (`JobFinished` is
/// recorded by the finish step, `JobFailed` here) appended, and
/// checkpointed again without them. An append that fails is retried on
/// the next start (the entries stay in the checkpoint).
pub async fn record_end(shared: &Shared, job: &CoordJob) {
    checkpoint(shared, job).await;
    match record(shared, job, false).await {
        Ok(()) => checkpoint(shared, job).await,
        Err(e) => {
            warn!(target: TARGET, job = %job.id, error = %e, "recording the job's end failed; retried on the next start")
        }
    }
}

/// Appends the entries held as unrecorded, in order, forgetting each once
/// it is in the ledger (the next checkpoint stores the shorter list). With
/// `check_ledger` (after a restart) an entry the ledger already holds is
/// skipped. On an error the entries not yet appended stay held.
pub async fn record(shared: &Shared, job: &CoordJob, check_ledger: bool) -> Result<(), String> {
    let pending = job.unrecorded.lock().expect("unrecorded lock").len();
    if pending == 0 {
        return Ok(());
    }
    let recorded = if check_ledger {
        recorded_bodies(shared, &job.id)?
    } else {
        Vec::new()
    };
    for _ in 0..pending {
        let Some(body) = job
            .unrecorded
            .lock()
            .expect("unrecorded lock")
            .first()
            .cloned()
        else {
            break;
        };
        if !recorded.contains(&body) {
            shared
                .ledger
                .append(body)
                .await
                .map_err(|e| e.to_string())?;
        }
        job.unrecorded.lock().expect("unrecorded lock").remove(0);
    }
    Ok(())
}

/// The bodies of this node's own ledger entries for `job`.
fn recorded_bodies(shared: &Shared, job: &Hash32) -> Result<Vec<EntryBody>, String> {
    let stored = shared
        .ledger
        .store()
        .entries_for_job(job)
        .map_err(|e| format!("reading the job's ledger entries: {e}"))?;
    stored
        .into_iter()
        .filter(|s| s.own)
        .map(|s| s.entry().map(|e| e.body).map_err(|e| e.to_string()))
        .collect()
}
