//! A coordinated job's durability, as the job's task executes it:
//! checkpoints (state, events, parameters and the entries not yet
//! recorded) taken from the machine when their turn comes, and ledger
//! entries written ahead into the checkpoint before they are appended. A
//! coordinator that crashes between an entry's checkpoint and its append
//! appends it on resume; one that crashes after the append finds it in
//! its ledger and does not append it again.

use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::EntryBody;

use super::CoordJob;
use super::machine::Input;
use crate::jobs::JobsContext;
use crate::jobs::model;

/// Writes the job's checkpoint as the machine stands now.
pub async fn save(ctx: &JobsContext, job: &CoordJob) -> Result<(), String> {
    let (record, params, unrecorded) = job.checkpoint();
    let params = model::params_to_bytes(&params);
    ctx.jobs
        .store
        .put_coordinator(&job.id, &record, Some(&params), &unrecorded)
        .await
        .map_err(|e| e.to_string())
}

/// Checkpoints (the checkpoint holds `entries` as unrecorded), then
/// appends `entries` in order, stopping at the first error. With
/// `check_ledger` (after a restart) an entry the ledger already holds is
/// not appended again. The answer goes back to the machine.
pub async fn write_ahead(
    ctx: &JobsContext,
    job: &CoordJob,
    entries: Vec<EntryBody>,
    check_ledger: bool,
) -> Input {
    let mut recorded = Vec::new();
    let error = append_written_ahead(ctx, job, entries, check_ledger, &mut recorded)
        .await
        .err();
    Input::WriteAheadDone { recorded, error }
}

async fn append_written_ahead(
    ctx: &JobsContext,
    job: &CoordJob,
    entries: Vec<EntryBody>,
    check_ledger: bool,
    recorded: &mut Vec<EntryBody>,
) -> Result<(), String> {
    save(ctx, job)
        .await
        .map_err(|e| format!("checkpointing: {e}"))?;
    let in_ledger = if check_ledger {
        recorded_bodies(ctx, &job.id)?
    } else {
        Vec::new()
    };
    for body in entries {
        if !in_ledger.contains(&body) {
            ctx.ledger
                .append(body.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        recorded.push(body);
    }
    Ok(())
}

/// The bodies of this node's own ledger entries for `job`.
fn recorded_bodies(ctx: &JobsContext, job: &Hash32) -> Result<Vec<EntryBody>, String> {
    let stored = ctx
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
