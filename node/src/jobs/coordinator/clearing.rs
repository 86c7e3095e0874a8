//! Step 3 (clear and verify), the shell's part: the network-cap window
//! from the allocations gossiped across the network (`jobs::window`), the
//! clearing itself (`protocol::market::clear`) on a blocking thread,
//! recording `AllocationMade`, gossiping it as a notice, and pushing the
//! signed allocation with its bids to every winner, who verifies it. What
//! to clear and what to make of the result is the machine's
//! (`machine::clearing`).

use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::market::{self, MarketJob, MarketPolicy};
use fairgrid_protocol::messages::{Allocation, Bid};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use tracing::{info, warn};

use super::CoordJob;
use super::machine::Input;
use crate::jobs::JobsContext;
use crate::jobs::transport;
use crate::ledger::now_ms;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";

/// Clears the market as the machine asked and hands it the result. The
/// network-cap window counts every other job's latest allocation this
/// node has heard of.
pub async fn clear(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    market_job: MarketJob,
    bids: Vec<Signed<Bid>>,
) {
    let now = now_ms();
    let window = ctx.jobs.window.window_for(&job.id, now);
    let policy = MarketPolicy {
        alpha_ppm: job.spec.alpha_ppm,
        beta_ppm: ctx.config.jobs.beta_ppm,
        window,
    };
    let trust = ctx.trust.clone();
    let cleared = tokio::task::spawn_blocking(move || {
        let valid = market::validate_bids(&market_job, &bids, &trust, now)
            .valid
            .len();
        (
            market::clear(&market_job, &bids, &trust, &policy, now),
            valid,
        )
    })
    .await;
    let input = match cleared {
        Ok((Ok(allocation), valid_bids)) => Input::Cleared {
            allocation,
            valid_bids,
        },
        Ok((Err(e), _)) => Input::ClearingFailed {
            reason: e.to_string(),
        },
        Err(e) => Input::ClearingFailed {
            reason: format!("clearing thread: {e}"),
        },
    };
    let _ = job.handle(input);
}

/// Signs the allocation, records `AllocationMade`, pushes it with its
/// bids to every winner, and tells the machine who took it. The workers
/// it drops get it too (their answers are only logged): a worker that
/// finds itself without shards bids again, and its bid brings it back at
/// the next clearing.
pub async fn publish(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    allocation: Allocation,
    bids: Vec<Signed<Bid>>,
    dropped: Vec<NodeId>,
) {
    let signed = Signed::sign(&ctx.key, &allocation);
    let entry = EntryBody::AllocationMade {
        job_id: job.id,
        allocation: signed.clone(),
        bids: bids.clone(),
    };
    if let Err(e) = ctx.ledger.append(entry).await {
        let _ = job.handle(Input::PublishFailed {
            reason: e.to_string(),
        });
        return;
    }
    if let Some(notice) = crate::jobs::window::notice_of(signed.clone(), &bids) {
        crate::jobs::window::announce(ctx, notice).await;
    }
    let winners: Vec<NodeId> = allocation.assignments.iter().map(|a| a.node).collect();
    info!(target: TARGET, job = %job.id, attempt = allocation.attempt, winners = winners.len(), assigned = allocation.assigned_shards(), shortfall = allocation.shortfall, "allocation made");
    let (refusals, _) = futures::future::join(
        push(ctx, job.id, &winners, &signed, &bids),
        tell_dropped(ctx, job.id, &dropped, &signed, &bids),
    )
    .await;
    for (node, why, _) in &refusals {
        warn!(target: TARGET, job = %job.id, %node, reason = %why, "winner did not take the allocation");
    }
    let _ = job.handle(Input::Published { signed, refusals });
}

/// Sends the allocation to the workers it dropped (once each).
async fn tell_dropped(
    ctx: &Arc<JobsContext>,
    job: Hash32,
    dropped: &[NodeId],
    signed: &Signed<Allocation>,
    bids: &[Signed<Bid>],
) {
    let sends = dropped.iter().map(|&node| {
        let request = Request::JobAllocation {
            allocation: signed.clone(),
            bids: bids.to_vec(),
        };
        async move {
            if let Err(e) = transport::call(ctx, node, request).await {
                tracing::debug!(target: TARGET, %job, %node, error = %e, "dropped worker not told");
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// Sends the allocation and its bids to every winner; returns those that
/// refused it (with their reason) or could not be reached (`true`).
async fn push(
    ctx: &Arc<JobsContext>,
    job: Hash32,
    winners: &[NodeId],
    signed: &Signed<Allocation>,
    bids: &[Signed<Bid>],
) -> Vec<(NodeId, String, bool)> {
    let sends = winners.iter().map(|&node| {
        let request = Request::JobAllocation {
            allocation: signed.clone(),
            bids: bids.to_vec(),
        };
        async move {
            let mut last = String::new();
            for attempt in 0..2 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                match transport::call(ctx, node, request.clone()).await {
                    Ok(Response::Accepted) => return None,
                    Ok(Response::Refused { reason }) => return Some((node, reason, false)),
                    Ok(_) => return Some((node, "unexpected answer".into(), false)),
                    Err(e) => last = e.to_string(),
                }
            }
            tracing::debug!(target: TARGET, %job, %node, error = %last, "allocation not delivered");
            Some((node, format!("unreachable: {last}"), true))
        }
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}
