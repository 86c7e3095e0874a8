//! Auditing for a coordinator: a node that works on a job recomputes
//! another owner's drawn round when the job's coordinator asks, and signs
//! its verdict (docs/protocol.md, "Audits"). The evidence carries
//! everything the replay needs and is checked against the signatures and
//! hashes that pin it; evidence that does not hold together is refused,
//! never judged against the worker.

use std::sync::Arc;

use fairgrid_protocol::messages::AuditReport;
use fairgrid_protocol::{Hash32, NodeId, Signed};
use tracing::{debug, info, warn};

use crate::jobs::audit::{Evidence, Verdict};
use crate::jobs::device::{evaluator_device, wants_gpu};
use crate::jobs::{JobsContext, model, transport};
use crate::ledger::now_ms;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::audit";

/// The coordinator of a job this node works on asks it to audit an
/// update: checked and taken at once, replayed on a blocking thread, and
/// the signed report sent to the coordinator as a request of its own.
pub async fn on_audit_replay(ctx: &Arc<JobsContext>, from: NodeId, bytes: Vec<u8>) -> Response {
    // Only a coordinator of a job this node works on, before any decoding.
    if !ctx
        .jobs
        .working
        .active_jobs()
        .iter()
        .any(|job| job.coordinator == from)
    {
        return Response::refused(
            "only the coordinator of a job this node works on asks for audits",
        );
    }
    // One audit at a time: it takes a round's compute.
    let Ok(permit) = Arc::clone(&ctx.jobs.auditing).try_acquire_owned() else {
        return Response::Busy;
    };
    // Decoding and checking up to 64 MiB is blocking work.
    let checked = tokio::task::spawn_blocking(move || {
        let evidence_hash = Hash32::of(&bytes);
        let evidence = Evidence::from_bytes(&bytes)?;
        drop(bytes);
        // Evidence that does not hold together is the coordinator's
        // fault, never the worker's: refused, not judged.
        let checked = evidence
            .check()
            .map_err(|e| format!("the evidence does not hold together: {e}"))?;
        Ok::<_, String>((evidence_hash, evidence, checked))
    })
    .await;
    let (evidence_hash, evidence, checked) = match checked {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Response::refused(e),
        Err(e) => return Response::refused(format!("the audit thread failed: {e}")),
    };
    let job_id = checked.job_id;
    let Some(job) = ctx.jobs.worker(&job_id) else {
        return Response::refused(format!("not working on job {job_id}"));
    };
    if from != job.coordinator {
        return Response::refused("only the job's coordinator asks for its audits");
    }
    let (round, worker) = (checked.update.round, checked.update.worker);
    if worker == ctx.node_id {
        return Response::refused("a node does not audit its own update");
    }
    #[cfg(test)]
    if ctx
        .jobs
        .silent_auditor
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return Response::Accepted;
    }
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let _permit = permit;
        let offers_gpus = ctx.host.offer(now_ms()).0.gpu_milli > 0;
        let device = evaluator_device(
            offers_gpus && wants_gpu(&job.spec),
            model::threads(ctx.config.worker.threads),
        );
        let started = std::time::Instant::now();
        let replayed =
            tokio::task::spawn_blocking(move || evidence.replay_checked(&checked, device)).await;
        let verdict = match replayed {
            Ok(verdict) => verdict,
            Err(e) => {
                warn!(target: TARGET, job = %job_id, round, error = %e, "the audit thread failed");
                return;
            }
        };
        let verdict = lie_if_told(&ctx, verdict);
        info!(target: TARGET, job = %job_id, round, %worker, passed = verdict.passed, ms = started.elapsed().as_millis() as u64, "audited for the coordinator");
        let mut detail = verdict.detail;
        crate::net::wire::clip(&mut detail, 1024);
        let report = Signed::sign(
            &ctx.key,
            &AuditReport {
                job_id,
                round,
                worker,
                auditor: ctx.node_id,
                evidence: evidence_hash,
                passed: verdict.passed,
                distance_ppb: verdict.distance_ppb.unwrap_or(u64::MAX),
                tolerance_ppb: verdict.tolerance_ppb,
                detail,
                issued_at: now_ms(),
            },
        );
        match transport::call(&ctx, job.coordinator, Request::AuditReport(report)).await {
            Ok(Response::Accepted) => {}
            Ok(other) => {
                debug!(target: TARGET, job = %job_id, round, answer = ?other, "audit report not taken")
            }
            Err(e) => {
                debug!(target: TARGET, job = %job_id, round, error = %e, "audit report not delivered")
            }
        }
    });
    Response::Accepted
}

/// Tests only: a node told to lie reports every round failed.
#[cfg(test)]
fn lie_if_told(ctx: &JobsContext, verdict: Verdict) -> Verdict {
    if ctx
        .jobs
        .lying_auditor
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        Verdict {
            passed: false,
            detail: "lying".into(),
            ..verdict
        }
    } else {
        verdict
    }
}

#[cfg(not(test))]
fn lie_if_told(_: &JobsContext, verdict: Verdict) -> Verdict {
    verdict
}
