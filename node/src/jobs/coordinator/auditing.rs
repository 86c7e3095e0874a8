//! The coordinator's audits, as the shell runs them: the draw (signed by
//! this node's key, so no worker can predict it), the reveal asked of
//! each drawn worker, the evidence file, the recomputation (by a node of
//! another owner when one may, else here on a blocking thread), and the
//! node's standing. The verdicts go back to the machine as
//! [`Input::Audited`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, ReportOutcome};
use fairgrid_protocol::messages::{Arithmetic, AuditReport, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use futures::StreamExt;
use tracing::{info, warn};

use super::CoordJob;
use super::machine::{AuditCandidate, AuditVerdict, AuditorReport, Input};
use crate::jobs::audit::assign::{Auditor, Drawn, assign_auditors};
use crate::jobs::audit::reconcile::{auditor_tolerance, rechecks_pass, reconcile};
use crate::jobs::audit::standing::{SILENT_AUDITOR, UNREVEALED};
use crate::jobs::audit::{AuditRate, Evidence, TOLERANCE_PPB, Verdict, draw_seed, is_drawn};
use crate::jobs::data::JobData;
use crate::jobs::device::{evaluator_device, wants_gpu};
use crate::jobs::{JobsContext, model, transport};
use crate::net::wire::MAX_WIRE_EVIDENCE_BYTES;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::audit";

/// How long a worker has to reveal a round.
const REVEAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Audits of one round in flight at once.
const MAX_AUDITS_IN_FLIGHT: usize = 8;

/// How long an auditor has to replay a round the worker says took
/// `compute_ms`: four times that and half a minute, at most a quarter of
/// an hour; past it the coordinator replays the round itself.
fn replay_timeout(compute_ms: u64) -> Duration {
    Duration::from_millis(
        compute_ms
            .saturating_mul(4)
            .saturating_add(30_000)
            .min(900_000),
    )
}

/// Draws, audits and answers the machine.
pub async fn audit_round(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    round: u32,
    params: Arc<Vec<f32>>,
    candidates: Vec<AuditCandidate>,
    caps: BTreeMap<OwnerId, u32>,
) {
    let pairs: Vec<(NodeId, Hash32)> = candidates.iter().map(|c| (c.node, c.update_hash)).collect();
    let seed = draw_seed(&ctx.key, &job.id, round, &pairs);
    let rate = AuditRate {
        floor_ppm: ctx.config.jobs.audit_floor_ppm,
    };
    // What the round's workers say they computed.
    let worker_ms: u64 = candidates
        .iter()
        .filter_map(|c| c.signed.verify_and_decode().ok())
        .map(|(_, u)| u.compute_ms)
        .sum();
    // A node that took evidence and never reported judges no more here.
    let pool: Vec<Auditor> = candidates
        .iter()
        .filter(|c| !job.awaited_reports.went_silent(&c.node))
        .map(|c| Auditor {
            node: c.node,
            owner: c.owner,
            streak: ctx.jobs.standing.streak(&c.node),
        })
        .collect();
    let drawn: Vec<&AuditCandidate> = candidates
        .iter()
        .filter(|c| {
            let streak = ctx.jobs.standing.streak(&c.node);
            is_drawn(&seed, &c.node, rate.rate_ppm(streak))
        })
        .collect();
    let picks = assign_auditors(
        &seed,
        &ctx.node_id,
        &drawn
            .iter()
            .map(|c| Drawn {
                worker: c.node,
                owner: c.owner,
                shards: c.shards,
            })
            .collect::<Vec<_>>(),
        &pool,
        |owner| caps.get(owner).copied().unwrap_or(0),
    );
    let started = std::time::Instant::now();
    // Remote audits at once, a bounded number in flight (each holds its
    // evidence); this node's own replays one at a time.
    let shared = RoundAudit {
        ctx,
        job,
        round,
        params: &params,
        seed,
        rate,
        local: tokio::sync::Semaphore::new(1),
        arithmetic: candidates
            .iter()
            .filter_map(|c| c.signed.verify_and_decode().ok())
            .map(|(_, u)| (u.worker, u.arithmetic))
            .collect(),
    };
    let mut audits = Vec::with_capacity(drawn.len());
    for (i, (&candidate, pick)) in drawn.iter().zip(&picks).enumerate() {
        let auditor = pick.map(|i| pool[i].clone());
        let audit = audit_one(&shared, candidate, auditor);
        audits.push(async move { (i, audit.await) });
    }
    // Unordered, so a slow audit does not hold back the next ones.
    let mut verdicts: Vec<(usize, AuditVerdict)> = futures::stream::iter(audits)
        .buffer_unordered(MAX_AUDITS_IN_FLIGHT)
        .collect()
        .await;
    verdicts.sort_by_key(|(i, _)| *i);
    let verdicts: Vec<AuditVerdict> = verdicts.into_iter().map(|(_, v)| v).collect();
    let audit_ms = started.elapsed().as_millis() as u64;
    let mut remote = 0;
    for (verdict, candidate) in verdicts.iter().zip(&drawn) {
        ctx.jobs.standing.record(
            candidate.node,
            candidate.owner,
            verdict.passed,
            verdict.unrevealed,
        );
        if let Some(report) = &verdict.report {
            remote += 1;
            if report.outcome == ReportOutcome::Overruled {
                warn!(target: TARGET, job = %job.id, round, auditor = %report.auditor, worker = %candidate.node, "an auditor's failure was overruled by this node's replay");
                ctx.jobs
                    .standing
                    .record(report.auditor, report.auditor_owner, false, false);
            }
        }
        if verdict.passed {
            info!(target: TARGET, job = %job.id, round, worker = %candidate.node, detail = %verdict.detail, "audit passed");
        } else {
            warn!(target: TARGET, job = %job.id, round, worker = %candidate.node, detail = %verdict.detail, "audit failed");
        }
    }
    info!(target: TARGET, job = %job.id, round, drawn = verdicts.len(), by_other_owners = remote, updates = candidates.len(), audit_ms, worker_ms, "round audited");
    let _ = job.handle(Input::Audited { round, verdicts });
}

/// A verdict the coordinator reached without a replay (or could not).
fn decided(node: NodeId, passed: bool, unrevealed: bool, detail: String) -> AuditVerdict {
    AuditVerdict {
        node,
        passed,
        unrevealed,
        distance_ppb: u64::MAX,
        tolerance_ppb: TOLERANCE_PPB,
        detail,
        evidence: Hash32::ZERO,
        report: None,
    }
}

/// What every audit of one round shares.
struct RoundAudit<'a> {
    ctx: &'a Arc<JobsContext>,
    job: &'a Arc<CoordJob>,
    round: u32,
    params: &'a Arc<Vec<f32>>,
    seed: Hash32,
    rate: AuditRate,
    /// This node's own replays, one at a time.
    local: tokio::sync::Semaphore,
    /// The arithmetic each worker's update this round declared.
    arithmetic: BTreeMap<NodeId, Arithmetic>,
}

/// The rule an honest `auditor` judged `update` by (never the one its
/// report states).
fn auditor_rule(shared: &RoundAudit<'_>, update: &RoundUpdate, auditor: &Auditor) -> u64 {
    let theirs = shared
        .arithmetic
        .get(&auditor.node)
        .copied()
        .unwrap_or(Arithmetic::OtherCpu);
    auditor_tolerance(&shared.job.spec, update.arithmetic, theirs)
}

async fn audit_one(
    shared: &RoundAudit<'_>,
    candidate: &AuditCandidate,
    auditor: Option<Auditor>,
) -> AuditVerdict {
    let RoundAudit {
        ctx,
        job,
        round,
        params,
        ..
    } = *shared;
    let node = candidate.node;
    let Ok((_, update)) = candidate.signed.verify_and_decode() else {
        let detail = "the accepted update no longer verifies".into();
        return decided(node, false, false, detail);
    };
    let (delta, residual) = match reveal(ctx, job, round, node, params.len()).await {
        Ok(revealed) => revealed,
        Err(Unrevealed::Absent(why)) => {
            return decided(node, false, true, format!("{UNREVEALED}: {why}"));
        }
        Err(Unrevealed::Malformed(why)) => {
            return decided(node, false, false, format!("malformed reveal: {why}"));
        }
    };
    let Some(data) = job.data() else {
        let detail = format!("{UNREVEALED}: the job's data is gone");
        return decided(node, false, true, detail);
    };
    let evidence = Arc::new(Evidence {
        spec: job.signed_spec.clone(),
        update: candidate.signed.as_ref().clone(),
        params: params.as_ref().clone(),
        delta,
        residual,
        shards: shard_bytes(&data, &update),
    });
    let (bytes, hash) = match keep_evidence(ctx, job, round, node, &evidence).await {
        Ok(kept) => kept,
        Err(e) => return decided(node, true, false, format!("not judged: {e}")),
    };
    let mut report = None;
    if let Some(auditor) = auditor {
        if bytes.len() > MAX_WIRE_EVIDENCE_BYTES {
            info!(target: TARGET, job = %job.id, round, bytes = bytes.len(), "evidence too big to send: audited here");
        } else {
            // The round as this node saw it: a worker's own compute_ms
            // could starve its auditor of time.
            let timeout = replay_timeout(candidate.observed_ms);
            match ask_auditor(ctx, job, &auditor, bytes, &update, timeout).await {
                Ok((signed, r)) => {
                    let recheck =
                        rechecks_pass(&shared.seed, &node, shared.rate.rate_ppm(auditor.streak));
                    if r.passed && !recheck {
                        return AuditVerdict {
                            node,
                            passed: true,
                            unrevealed: false,
                            distance_ppb: r.distance_ppb,
                            tolerance_ppb: r.tolerance_ppb,
                            detail: format!("audited by {}: {}", auditor.node, r.detail),
                            evidence: hash,
                            report: Some(auditor_report(signed, &auditor, ReportOutcome::Upheld)),
                        };
                    }
                    // A failure costs the worker its credit and its place,
                    // so this node confirms it; some passes it rechecks.
                    report = Some((signed, r, auditor));
                }
                Err(e) => {
                    warn!(target: TARGET, job = %job.id, round, auditor = %auditor.node, error = %e, "no report from the auditor: audited here");
                }
            }
        }
    }
    let verdict = {
        let _one_at_a_time = shared.local.acquire().await;
        replay_here(ctx, job, evidence).await
    };
    let verdict = match verdict {
        Ok(v) => v,
        // The evidence does not hold together: the coordinator's own
        // records are at fault, never the worker. An auditor's report is
        // still recorded, as neither upheld nor held against it.
        Err(e) => {
            let mut not_judged = decided(node, true, false, format!("not judged: {e}"));
            not_judged.report = report.map(|(signed, _, auditor)| {
                auditor_report(signed, &auditor, ReportOutcome::Unconfirmed)
            });
            return not_judged;
        }
    };
    let report = report.map(|(signed, r, auditor)| {
        let outcome = reconcile(r.passed, auditor_rule(shared, &update, &auditor), &verdict);
        auditor_report(signed, &auditor, outcome)
    });
    let detail = match &report {
        Some(r) => format!(
            "{} reported; replayed here ({:?}): {}",
            r.auditor, r.outcome, verdict.detail
        ),
        None => verdict.detail,
    };
    // The worker's verdict is this node's whenever it replayed.
    AuditVerdict {
        node,
        passed: verdict.passed,
        unrevealed: false,
        distance_ppb: verdict.distance_ppb.unwrap_or(u64::MAX),
        tolerance_ppb: verdict.tolerance_ppb,
        detail,
        evidence: hash,
        report,
    }
}

fn auditor_report(
    signed: Signed<AuditReport>,
    auditor: &Auditor,
    outcome: ReportOutcome,
) -> AuditorReport {
    AuditorReport {
        signed: Box::new(signed),
        auditor: auditor.node,
        auditor_owner: auditor.owner,
        outcome,
    }
}

/// Encodes the evidence and keeps it under the data dir; its hash is
/// what the `Audit` entry names (`Hash32::ZERO` if it could not be kept).
async fn keep_evidence(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    round: u32,
    worker: NodeId,
    evidence: &Arc<Evidence>,
) -> Result<(Vec<u8>, Hash32), String> {
    let path = ctx.jobs.store.evidence_path(&job.id, round, &worker);
    let evidence = Arc::clone(evidence);
    let (bytes, kept) = tokio::task::spawn_blocking(move || {
        let bytes = evidence.to_bytes();
        let kept = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::datadir::write_atomic(&path, &bytes).map_err(|e| e.to_string()));
        (bytes, kept)
    })
    .await
    .map_err(|e| format!("the audit thread failed ({e})"))?;
    let hash = match kept {
        Ok(()) => Hash32::of(&bytes),
        Err(e) => {
            warn!(target: TARGET, job = %job.id, round, error = %e, "audit evidence not kept");
            Hash32::ZERO
        }
    };
    Ok((bytes, hash))
}

/// Replays the round on this node: a GPU job on its GPU if it offers one
/// (a GPU repeats a round bit for bit), otherwise on the CPU.
async fn replay_here(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    evidence: Arc<Evidence>,
) -> Result<Verdict, String> {
    let threads = model::threads(ctx.config.jobs.threads);
    let offers_gpus = ctx.host.offer(crate::ledger::now_ms()).0.gpu_milli > 0;
    let device = evaluator_device(offers_gpus && wants_gpu(&job.spec), threads);
    tokio::task::spawn_blocking(move || evidence.replay(device))
        .await
        .map_err(|e| format!("the audit thread failed ({e})"))?
        .map(|(_, verdict)| verdict)
}

/// Sends the evidence to `auditor`, waits for its report (sent back as a
/// request of its own) and checks it is its own, for this update and
/// these bytes.
async fn ask_auditor(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    auditor: &Auditor,
    evidence: Vec<u8>,
    update: &RoundUpdate,
    timeout: Duration,
) -> Result<(Signed<AuditReport>, AuditReport), String> {
    // What is sent, whether or not this node could keep a copy.
    let hash = Hash32::of(&evidence);
    let awaited = &job.awaited_reports;
    let report = awaited.expect(update.round, update.worker, auditor.node);
    let asked = async {
        let request = Request::AuditReplay { evidence };
        match transport::call(ctx, auditor.node, request).await {
            Ok(Response::Accepted) => {}
            Ok(Response::Refused { reason }) => return Err(format!("refused: {reason}")),
            Ok(Response::Busy) => return Err("busy".into()),
            Ok(other) => return Err(format!("answered {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
        match tokio::time::timeout(timeout, report).await {
            Ok(report) => report.map_err(|_| "the wait for the report was dropped".to_string()),
            Err(_) => {
                awaited.silenced(auditor.node);
                let why = format!("took the evidence, no report in {} s", timeout.as_secs());
                // Its clean record ends, as a worker's that does not
                // reveal, and stays ended when this node restarts.
                ctx.jobs.standing.end_streak(auditor.node);
                ctx.record(EntryBody::Verification {
                    job_id: job.id,
                    round: update.round,
                    node: auditor.node,
                    passed: false,
                    detail: format!("{SILENT_AUDITOR}: {why} (auditing {})", update.worker),
                });
                Err(why)
            }
        }
    };
    let signed = asked.await;
    awaited.forget(update.round, &update.worker);
    let signed = signed?;
    let (signer, report) = signed
        .verify_and_decode()
        .map_err(|e| format!("the report: {e}"))?;
    check_report(&report, signer, auditor.node, update, hash)?;
    Ok((signed, report))
}

/// A report counts only if the auditor asked signed it, for the update
/// and the evidence it was sent.
fn check_report(
    report: &AuditReport,
    signer: fairgrid_protocol::PublicKey,
    auditor: NodeId,
    update: &RoundUpdate,
    evidence: Hash32,
) -> Result<(), String> {
    if signer != auditor.0 || report.auditor != auditor {
        return Err("the report is not the auditor's".into());
    }
    if report.job_id != update.job_id
        || report.round != update.round
        || report.worker != update.worker
    {
        return Err("the report is for another update".into());
    }
    if report.evidence != evidence {
        return Err("the report judged other evidence".into());
    }
    Ok(())
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
