//! The coordinator's audits, as the shell runs them: the draw (signed by
//! this node's key, so no worker can predict it), the reveal asked of
//! each drawn worker, the recomputation on a blocking thread, the
//! evidence file, and the node's standing. The verdicts go back to the
//! machine as [`Input::Audited`].

use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::messages::RoundUpdate;
use fairgrid_protocol::{Hash32, NodeId};
use tracing::{info, warn};

use super::CoordJob;
use super::machine::{AuditCandidate, AuditVerdict, Input};
use crate::jobs::audit::standing::UNREVEALED;
use crate::jobs::audit::{AuditRate, Evidence, TOLERANCE_PPB, draw_seed, is_drawn};
use crate::jobs::data::JobData;
use crate::jobs::device::{evaluator_device, wants_gpu};
use crate::jobs::{JobsContext, model, transport};
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::audit";

/// How long a worker has to reveal a round.
const REVEAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Draws, audits and answers the machine.
pub async fn audit_round(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    round: u32,
    params: Arc<Vec<f32>>,
    candidates: Vec<AuditCandidate>,
) {
    let pairs: Vec<(NodeId, Hash32)> = candidates.iter().map(|c| (c.node, c.update_hash)).collect();
    let seed = draw_seed(&ctx.key, &job.id, round, &pairs);
    let rate = AuditRate {
        floor_ppm: ctx.config.jobs.audit_floor_ppm,
    };
    let mut verdicts = Vec::new();
    // What the round's workers say they computed, and what auditing cost.
    let mut worker_ms = 0u64;
    let mut audit_ms = 0u64;
    let total = candidates.len();
    for candidate in candidates {
        if let Ok((_, update)) = candidate.signed.verify_and_decode() {
            worker_ms += update.compute_ms;
        }
        let streak = ctx.jobs.standing.streak(&candidate.node);
        if !is_drawn(&seed, &candidate.node, rate.rate_ppm(streak)) {
            continue;
        }
        let started = std::time::Instant::now();
        let verdict = audit_one(ctx, job, round, &params, &candidate).await;
        audit_ms += started.elapsed().as_millis() as u64;
        ctx.jobs.standing.record(
            candidate.node,
            candidate.owner,
            verdict.passed,
            verdict.unrevealed,
        );
        if verdict.passed {
            info!(target: TARGET, job = %job.id, round, worker = %candidate.node, detail = %verdict.detail, "audit passed");
        } else {
            warn!(target: TARGET, job = %job.id, round, worker = %candidate.node, detail = %verdict.detail, "audit failed");
        }
        verdicts.push(verdict);
    }
    info!(target: TARGET, job = %job.id, round, drawn = verdicts.len(), updates = total, audit_ms, worker_ms, "round audited");
    let _ = job.handle(Input::Audited { round, verdicts });
}

async fn audit_one(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    round: u32,
    params: &Arc<Vec<f32>>,
    candidate: &AuditCandidate,
) -> AuditVerdict {
    let verdict =
        |passed: bool, unrevealed: bool, distance: Option<u64>, detail: String| AuditVerdict {
            node: candidate.node,
            passed,
            unrevealed,
            distance_ppb: distance.unwrap_or(u64::MAX),
            tolerance_ppb: TOLERANCE_PPB,
            detail,
            evidence: Hash32::ZERO,
        };
    let Ok((_, update)) = candidate.signed.verify_and_decode() else {
        return verdict(
            false,
            false,
            None,
            "the accepted update no longer verifies".into(),
        );
    };
    let (delta, residual) = match reveal(ctx, job, round, candidate.node, params.len()).await {
        Ok(revealed) => revealed,
        Err(Unrevealed::Absent(why)) => {
            return verdict(false, true, None, format!("{UNREVEALED}: {why}"));
        }
        Err(Unrevealed::Malformed(why)) => {
            return verdict(false, false, None, format!("malformed reveal: {why}"));
        }
    };
    let Some(data) = job.data() else {
        return verdict(
            false,
            true,
            None,
            format!("{UNREVEALED}: the job's data is gone"),
        );
    };
    let evidence = Evidence {
        spec: job.signed_spec.clone(),
        update: candidate.signed.as_ref().clone(),
        params: params.as_ref().clone(),
        delta,
        residual,
        shards: shard_bytes(&data, &update),
    };
    // A GPU job is replayed on this node's GPU if it offers one (a GPU
    // repeats a round bit for bit); otherwise on the CPU, judged coarsely.
    let threads = model::threads(ctx.config.jobs.threads);
    let offers_gpus = ctx.host.offer(crate::ledger::now_ms()).0.gpu_milli > 0;
    let device = evaluator_device(offers_gpus && wants_gpu(&job.spec), threads);
    let path = ctx
        .jobs
        .store
        .evidence_path(&job.id, round, &candidate.node);
    let replayed = tokio::task::spawn_blocking(move || {
        let bytes = evidence.to_bytes();
        let kept = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::datadir::write_atomic(&path, &bytes).map_err(|e| e.to_string()));
        // The entry names the evidence only if it was kept.
        let hash = if kept.is_ok() {
            Hash32::of(&bytes)
        } else {
            Hash32::ZERO
        };
        (evidence.replay(device), hash, kept)
    })
    .await;
    let (outcome, hash, kept) = match replayed {
        Ok(done) => done,
        Err(e) => {
            return verdict(
                true,
                false,
                None,
                format!("the audit thread failed ({e}); not judged"),
            );
        }
    };
    if let Err(e) = kept {
        warn!(target: TARGET, job = %job.id, round, error = %e, "audit evidence not kept");
    }
    match outcome {
        Ok((_, v)) => AuditVerdict {
            evidence: hash,
            tolerance_ppb: v.tolerance_ppb,
            ..verdict(v.passed, false, v.distance_ppb, v.detail)
        },
        // The evidence does not hold together: the coordinator's own
        // records are at fault, never the worker.
        Err(e) => verdict(true, false, None, format!("not judged: {e}")),
    }
}

/// Why a worker's round was not revealed.
enum Unrevealed {
    /// Unreachable, too slow, or it no longer has the round: the update
    /// leaves the round, the worker stays.
    Absent(String),
    /// It answered with something that cannot be its round: a failure.
    Malformed(String),
}

/// Asks the worker for its raw delta and residual.
async fn reveal(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    round: u32,
    node: NodeId,
    params: usize,
) -> Result<(Vec<f32>, Vec<f32>), Unrevealed> {
    let request = Request::AuditReveal {
        job_id: job.id,
        round,
    };
    let answer = tokio::time::timeout(REVEAL_TIMEOUT, transport::call(ctx, node, request))
        .await
        .map_err(|_| Unrevealed::Absent(format!("no answer in {} s", REVEAL_TIMEOUT.as_secs())))?
        .map_err(|e| Unrevealed::Absent(e.to_string()))?;
    match answer {
        Response::Revealed { delta, residual } => {
            let delta = f32s(&delta, params, "delta").map_err(Unrevealed::Malformed)?;
            let residual = f32s(&residual, params, "residual").map_err(Unrevealed::Malformed)?;
            Ok((delta, residual))
        }
        Response::Refused { reason } => Err(Unrevealed::Absent(reason)),
        Response::Busy => Err(Unrevealed::Absent("busy".into())),
        other => Err(Unrevealed::Malformed(format!("answered {other:?}"))),
    }
}

/// Little-endian finite f32s: `expected` of them, or none.
fn f32s(bytes: &[u8], expected: usize, what: &str) -> Result<Vec<f32>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() != 4 * expected {
        return Err(format!(
            "a {what} of {} bytes for {expected} parameters",
            bytes.len()
        ));
    }
    model::params_from_bytes(bytes)
        .ok_or_else(|| format!("a {what} with a value that is not finite"))
}

fn shard_bytes(data: &JobData, update: &RoundUpdate) -> Vec<Vec<u8>> {
    update
        .shards
        .iter()
        .filter_map(|&i| data.shard_bytes.get(i as usize))
        .map(|b| b.as_ref().clone())
        .collect()
}
