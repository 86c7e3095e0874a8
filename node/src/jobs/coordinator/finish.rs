//! Step 7: the model file, the credits (see [`crate::jobs::credits`]),
//! `JobFinished`, and the exchange of the job's ledger entries with every
//! participant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fairgrid_kernels::model::save_safetensors;
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::messages::Allocation;
use fairgrid_protocol::{Hash32, OwnerId};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use tracing::info;

use super::{CoordJob, CreditRecord, JobResult};
use crate::app::Shared;
use crate::jobs::credits::{self, RoundWork};
use crate::jobs::{ledger_sync, model};
use crate::ledger::now_ms;

const TARGET: &str = "fairgrid::jobs";

/// Accepted shards per owner in each completed round.
pub fn round_work(job: &CoordJob) -> (Vec<Allocation>, Vec<RoundWork>) {
    let st = job.state();
    let allocations = st
        .allocations
        .iter()
        .map(|a| a.allocation.clone())
        .collect();
    let work = st
        .rounds
        .iter()
        .map(|r| {
            let mut accepted = BTreeMap::new();
            for (_, owner, shards) in &r.accepted {
                *accepted.entry(*owner).or_insert(0) += shards;
            }
            RoundWork {
                allocation: r.allocation,
                accepted_shards: accepted,
            }
        })
        .collect();
    (allocations, work)
}

/// The owners this node already credited for `job`, and whether it
/// already recorded the job's end.
fn recorded_end(shared: &Shared, job: &Hash32) -> crate::error::Result<(BTreeSet<OwnerId>, bool)> {
    let mut paid = BTreeSet::new();
    let mut finished = false;
    for stored in shared.ledger.store().entries_for_job(job)? {
        if !stored.own {
            continue;
        }
        match stored.entry()?.body {
            EntryBody::Credit { owner, .. } => {
                paid.insert(owner);
            }
            EntryBody::JobFinished { .. } => finished = true,
            _ => {}
        }
    }
    Ok((paid, finished))
}

pub async fn finish(shared: &Arc<Shared>, job: &Arc<CoordJob>) {
    let params = job.params.lock().expect("params lock").clone();
    let (spec, hyper) = (job.spec.model.clone(), job.spec.hyper.clone());
    let path = shared.jobs.store.result_path(&job.id);
    let written = tokio::task::spawn_blocking(move || {
        let mut trainer = model::trainer(&spec, &hyper, 1, 1).map_err(|e| e.to_string())?;
        trainer
            .set_params_flat(&params)
            .map_err(|e| e.to_string())?;
        let file =
            save_safetensors(trainer.model(), trainer.backend()).map_err(|e| e.to_string())?;
        crate::datadir::write_atomic(&path, &file).map_err(|e| e.to_string())?;
        Ok::<_, String>(Hash32::of(&file))
    })
    .await;
    let model_hash = match written {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return job.fail(format!("writing the model: {e}")),
        Err(e) => return job.fail(format!("model thread: {e}")),
    };
    let (allocations, work) = round_work(job);
    let owed = credits::credits(&allocations, &work, job.spec.hyper.rounds);
    // A coordinator that crashed part-way through this step and resumed
    // must not pay twice: skip what its ledger already holds.
    let (paid, finish_recorded) = match recorded_end(shared, &job.id) {
        Ok(recorded) => recorded,
        Err(e) => return job.fail(format!("reading the job's ledger entries: {e}")),
    };
    for credit in owed.iter().filter(|c| !paid.contains(&c.owner)) {
        let entry = EntryBody::Credit {
            job_id: job.id,
            owner: credit.owner,
            amount: credit.amount,
            shards: credit.shards,
            clearing_price: credit.clearing_price,
            allocation: credit.allocation,
        };
        if let Err(e) = shared.ledger.append(entry).await {
            return job.fail(format!("recording credits: {e}"));
        }
    }
    let (rounds, accuracy, bytes) = {
        let st = job.state();
        (
            st.rounds.len() as u32,
            st.rounds
                .last()
                .and_then(|r| r.test_accuracy)
                .unwrap_or(0.0),
            st.bytes_up + st.bytes_down,
        )
    };
    let entry = EntryBody::JobFinished {
        job_id: job.id,
        rounds,
        model_hash,
        test_accuracy_ppm: (f64::from(accuracy) * 1e6).round() as u32,
        bytes_moved: bytes,
    };
    if !finish_recorded && let Err(e) = shared.ledger.append(entry).await {
        return job.fail(format!("recording the end of the job: {e}"));
    }
    {
        let mut st = job.state();
        st.phase = JobState::Finished;
        st.updated_at = now_ms();
        st.result = Some(JobResult {
            model_hash,
            test_accuracy: accuracy,
            credits: owed
                .iter()
                .map(|c| CreditRecord {
                    owner: c.owner,
                    amount: c.amount,
                    shards: c.shards,
                })
                .collect(),
        });
    }
    job.event(JobEventKind::Finished {
        test_accuracy: accuracy,
        rounds,
    });
    info!(target: TARGET, job = %job.id, rounds, accuracy, credits = owed.len(), "job finished");
    super::persist::checkpoint(shared, job).await;
    let participants = job.state().participants();
    tokio::spawn(ledger_sync::push_to_participants(
        Arc::clone(shared),
        job.id,
        participants,
    ));
}
