//! Ended coordinated jobs kept on disk rather than in memory: a node that
//! has coordinated thousands of jobs holds a one-line summary of each (for
//! the job list and for late messages) and rebuilds a job from its final
//! checkpoint only when someone asks about it. Without this a coordinator
//! grew by every job it had ever finished (its parameters, events,
//! allocations and bids), and a restart loaded them all back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fairgrid_protocol::Hash32;
use fairgrid_sdk::jobs::JobStatus;

use super::coordinator::machine::{Coordinator, Stored};
use super::coordinator::{Checkpoint, CoordJob};
use super::events::EventLog;
use super::store::{JobStore, StoredCheckpoint};
use super::views;
use crate::ledger::now_ms;

/// The summaries of the ended jobs that are not in memory.
#[derive(Default)]
pub struct Archive {
    summaries: Mutex<BTreeMap<Hash32, JobStatus>>,
}

impl Archive {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Hash32, JobStatus>> {
        self.summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `job`'s summary; the job itself may now leave memory.
    pub fn add(&self, job: &CoordJob) {
        self.lock().insert(job.id, views::status(job));
    }

    pub fn contains(&self, id: &Hash32) -> bool {
        self.lock().contains_key(id)
    }

    pub fn summary(&self, id: &Hash32) -> Option<JobStatus> {
        self.lock().get(id).cloned()
    }

    pub fn summaries(&self) -> Vec<JobStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a stored job has ended and every entry it implies is in the
/// ledger: such a job needs nothing more done and can stay on disk.
pub fn is_settled(stored: &StoredCheckpoint<Checkpoint>) -> bool {
    stored.record.state.is_terminal() && stored.unrecorded.is_empty()
}

/// Rebuilds a settled job from its checkpoint (no data, no task): enough
/// for the API's views and for a worker's late messages.
pub fn restore(stored: StoredCheckpoint<Checkpoint>, max_bids: usize) -> Result<CoordJob, String> {
    let id = stored.job;
    if !is_settled(&stored) {
        return Err(format!("job {id} has not ended"));
    }
    let Checkpoint {
        plan,
        spec: signed,
        state,
        events,
    } = stored.record;
    if signed.id() != id {
        return Err(format!(
            "the checkpoint of job {id} holds another job's spec"
        ));
    }
    let (_, spec) = signed.verify_and_decode().map_err(|e| {
        format!("the checkpoint of job {id} holds a spec that does not verify: {e}")
    })?;
    let bytes = stored
        .params
        .as_deref()
        .ok_or_else(|| format!("the checkpoint of job {id} has no parameters"))?;
    let (params, velocity) = crate::jobs::coordinator::stored_params(&spec, bytes)
        .map_err(|e| format!("the checkpoint of job {id} has no usable parameters: {e}"))?;
    let stored = Stored {
        state,
        params,
        velocity,
        unrecorded: Vec::new(),
    };
    let (machine, outputs) = Coordinator::resume(id, spec, stored, now_ms(), max_bids, None);
    debug_assert!(outputs.is_empty() && machine.has_ended());
    Ok(CoordJob::new(
        plan,
        signed,
        None,
        EventLog::restore(events),
        machine,
    ))
}

/// Loads archived job `id` from `store`.
pub fn load(store: &JobStore, id: &Hash32, max_bids: usize) -> Result<Arc<CoordJob>, String> {
    let stored = store
        .coordinator::<Checkpoint>(id)?
        .ok_or_else(|| format!("job {id} has no checkpoint"))?;
    restore(stored, max_bids).map(Arc::new)
}
