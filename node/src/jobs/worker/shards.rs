//! Step 4: a worker's shards. Each comes from the disk cache if it is
//! there and intact, else from the coordinator by request-response. Every
//! shard's BLAKE3 hash is checked against the signed spec; one that fails
//! is fetched once more, and a second failure is recorded (a failed
//! `Verification`) and ends the worker's part in the job.

use std::sync::Arc;

use fairgrid_kernels::{Samples, Shard};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::EntryBody;
use tracing::{debug, warn};

use super::WorkerJob;
use crate::jobs::JobsContext;
use crate::jobs::transport;
use crate::net::wire::{MAX_SHARD_BATCH, MAX_SHARD_BATCH_BYTES};
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";

/// Canonical size of shard `index` of the job (header, pixels, labels).
fn shard_len(job: &WorkerJob, index: u32) -> usize {
    let info = &job.spec.dataset.shards[index as usize];
    // Bounded by MAX_SHARD_BYTES (JobSpec::validate).
    info.bytes(&job.spec.model.input) as usize
}

/// Why shards could not be had.
#[derive(Debug)]
pub enum ShardError {
    /// The coordinator could not be asked (or refused): try again later.
    Unavailable(String),
    /// A shard failed its hash check twice: the job's data cannot be trusted.
    Corrupt(String),
}

/// Makes sure every shard in `indices` is loaded, fetching what is missing.
pub async fn ensure(
    ctx: &Arc<JobsContext>,
    job: &Arc<WorkerJob>,
    indices: &[u32],
) -> Result<Vec<Arc<Shard>>, ShardError> {
    let _one_at_a_time = job.fetching.lock().await;
    let mut missing = Vec::new();
    for &i in indices {
        if (i as usize) >= job.spec.dataset.shards.len() {
            return Err(ShardError::Corrupt(format!("shard {i} is not in the job")));
        }
        if job.shards.lock().expect("shards lock").contains_key(&i) {
            continue;
        }
        let hash = job.spec.dataset.shards[i as usize].hash;
        let cached = ctx
            .jobs
            .shards
            .get(&hash)
            .and_then(|b| Shard::from_bytes(&b).ok());
        match cached {
            Some(shard) => {
                job.shards
                    .lock()
                    .expect("shards lock")
                    .insert(i, Arc::new(shard));
            }
            None => missing.push(i),
        }
    }
    for batch in batches(job, &missing) {
        let fetched = fetch(ctx, job, &batch).await?;
        let mut retry = Vec::new();
        for (i, bytes) in batch.iter().zip(fetched) {
            match accept(ctx, job, *i, &bytes) {
                Ok(()) => {}
                Err(reason) => {
                    warn!(target: TARGET, job = %job.id, shard = i, %reason, "shard failed its check; fetching it again");
                    retry.push(*i);
                }
            }
        }
        for i in retry {
            let again = fetch(ctx, job, &[i]).await?;
            let bytes = again.into_iter().next().unwrap_or_default();
            if let Err(reason) = accept(ctx, job, i, &bytes) {
                let detail = format!("shard {i} failed its check twice: {reason}");
                ctx.record(EntryBody::Verification {
                    job_id: job.id,
                    round: 0,
                    node: job.coordinator,
                    passed: false,
                    detail: detail.clone(),
                });
                return Err(ShardError::Corrupt(detail));
            }
        }
    }
    let loaded = job.shards.lock().expect("shards lock");
    indices
        .iter()
        .map(|i| {
            loaded
                .get(i)
                .cloned()
                .ok_or_else(|| ShardError::Unavailable(format!("shard {i} not loaded")))
        })
        .collect()
}

/// Splits indices into requests within the count and size limits.
fn batches(job: &WorkerJob, indices: &[u32]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut size = 0;
    for &i in indices {
        let len = shard_len(job, i);
        let full = out
            .last()
            .is_none_or(|b| b.len() >= MAX_SHARD_BATCH || size + len > MAX_SHARD_BATCH_BYTES);
        if full {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(i);
    }
    out
}

async fn fetch(
    ctx: &Arc<JobsContext>,
    job: &WorkerJob,
    indices: &[u32],
) -> Result<Vec<Vec<u8>>, ShardError> {
    let request = Request::FetchShards {
        job_id: job.id,
        indices: indices.to_vec(),
    };
    match transport::call(ctx, job.coordinator, request).await {
        Ok(Response::Shards(list)) if list.len() == indices.len() => {
            debug!(target: TARGET, job = %job.id, shards = list.len(), "shards fetched");
            Ok(list)
        }
        Ok(Response::Shards(list)) => Err(ShardError::Unavailable(format!(
            "asked for {} shards, got {}",
            indices.len(),
            list.len()
        ))),
        Ok(Response::Refused { reason }) => Err(ShardError::Unavailable(reason)),
        Ok(_) => Err(ShardError::Unavailable(
            "unexpected answer to a shard fetch".into(),
        )),
        Err(e) => Err(ShardError::Unavailable(e.to_string())),
    }
}

/// Checks a fetched shard against the spec, decodes, caches and loads it.
fn accept(ctx: &JobsContext, job: &WorkerJob, index: u32, bytes: &[u8]) -> Result<(), String> {
    let info = &job.spec.dataset.shards[index as usize];
    if bytes.len() != shard_len(job, index) {
        return Err(format!(
            "{} bytes, expected {}",
            bytes.len(),
            shard_len(job, index)
        ));
    }
    let hash = Hash32(Shard::hash_bytes(bytes));
    if hash != info.hash {
        return Err(format!("hash {hash} is not the spec's {}", info.hash));
    }
    let shard = Shard::from_bytes(bytes).map_err(|e| e.to_string())?;
    if shard.len() != info.samples as usize {
        return Err("sample count differs from the spec".into());
    }
    let input = &job.spec.model.input;
    let shape = shard.shape();
    let kind = crate::jobs::data::value_kind(shard.kind());
    if (shape.channels, shape.height, shape.width, kind)
        != (
            input.channels as usize,
            input.height as usize,
            input.width as usize,
            input.values,
        )
    {
        return Err(format!(
            "{shape:?} of {kind:?} values, the spec says {input:?}"
        ));
    }
    if let Err(e) = ctx.jobs.shards.put(&hash, bytes) {
        warn!(target: TARGET, job = %job.id, error = %e, "shard not cached");
    }
    job.shards
        .lock()
        .expect("shards lock")
        .insert(index, Arc::new(shard));
    Ok(())
}
