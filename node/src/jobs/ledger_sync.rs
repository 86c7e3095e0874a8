//! Step 7's ledger exchange: once a job ends, its coordinator sends the
//! job's entries to every participant, which stores them as foreign
//! entries (each signature checked) and answers with its own entries for
//! the job (its verifications). A worker that was down at the end asks
//! the same way when it comes back. So every participant holds the whole
//! record of the job.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use tracing::{debug, info, warn};

use super::transport;
use crate::jobs::JobsContext;
use crate::net::wire::MAX_LEDGER_BATCH_BYTES;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";
/// Tries per participant, 3 s apart (a participant may be restarting).
const PUSH_TRIES: u32 = 40;

/// The job's entries this node authored.
pub fn own_entries(ctx: &JobsContext, job: &Hash32) -> Vec<Signed<LedgerEntry>> {
    match ctx.ledger.store().entries_for_job(job) {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.own)
            .map(|e| e.signed)
            .collect(),
        Err(e) => {
            warn!(target: TARGET, %job, error = %e, "reading the job's ledger entries");
            Vec::new()
        }
    }
}

/// Splits entries into messages within the wire limit.
pub fn batches(entries: Vec<Signed<LedgerEntry>>) -> Vec<Vec<Signed<LedgerEntry>>> {
    let mut out: Vec<Vec<Signed<LedgerEntry>>> = Vec::new();
    let mut size = 0;
    for entry in entries {
        let len = entry.payload.len() + 256;
        if out.is_empty() || size + len > MAX_LEDGER_BATCH_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(entry);
    }
    out
}

/// Stores entries `from` authored for `job` as foreign entries. Entries
/// by another author or for another job are refused, as is any entry
/// whose signature fails.
pub async fn store_from(
    ctx: &JobsContext,
    from: NodeId,
    job: &Hash32,
    entries: Vec<Signed<LedgerEntry>>,
) -> Result<(usize, bool), String> {
    let mut stored = 0;
    let mut finished = false;
    for signed in entries {
        let (_, entry): (_, LedgerEntry) = signed
            .verify_and_decode()
            .map_err(|e| format!("ledger entry: {e}"))?;
        if entry.author != from {
            return Err(format!(
                "entry seq {} is by {}, not by the sender",
                entry.seq, entry.author
            ));
        }
        if entry.body.job_id() != Some(*job) {
            return Err(format!("entry seq {} is not about job {job}", entry.seq));
        }
        finished |= matches!(entry.body, EntryBody::JobFinished { .. });
        ctx.ledger
            .store_foreign(signed)
            .await
            .map_err(|e| format!("storing entry seq {}: {e}", entry.seq))?;
        stored += 1;
    }
    Ok((stored, finished))
}

/// Sends this node's entries for `job` to `peer` and stores what it sends
/// back. Returns whether the answers included the end of the job.
pub async fn exchange(ctx: &Arc<JobsContext>, peer: NodeId, job: Hash32) -> Result<bool, String> {
    let mut finished = false;
    let mut parts = batches(own_entries(ctx, &job));
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    for entries in parts {
        let request = Request::JobLedger {
            job_id: job,
            entries,
        };
        match transport::call(ctx, peer, request).await {
            Ok(Response::JobLedger(theirs)) => {
                let (n, done) = store_from(ctx, peer, &job, theirs).await?;
                finished |= done;
                debug!(target: TARGET, %job, %peer, stored = n, "job ledger entries exchanged");
            }
            Ok(Response::Refused { reason }) => return Err(format!("refused: {reason}")),
            Ok(_) => return Err("unexpected answer".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(finished)
}

/// The coordinator's side at the end of a job: exchange with every
/// participant, retrying for a while for those that are down.
pub async fn push_to_participants(
    ctx: Arc<JobsContext>,
    job: Hash32,
    participants: BTreeSet<NodeId>,
) {
    // This node's own worker part (a coordinator that works on its own
    // job) ends here: its entries are already in this ledger. Without
    // this it stayed unfinished, and after `worker.max_jobs` jobs the
    // coordinator stopped bidding on its own jobs until it restarted.
    if let Some(worker) = ctx.jobs.worker(&job) {
        super::worker::finished(&ctx, &worker).await;
    }
    let sends = participants
        .into_iter()
        .filter(|p| *p != ctx.node_id)
        .map(|peer| {
            let ctx = Arc::clone(&ctx);
            async move {
                let mut stop = ctx.jobs.stop_signal();
                for attempt in 0..PUSH_TRIES {
                    match exchange(&ctx, peer, job).await {
                        Ok(_) => {
                            info!(target: TARGET, %job, %peer, "job ledger delivered");
                            return;
                        }
                        Err(e) => debug!(target: TARGET, %job, %peer, attempt, error = %e, "job ledger not delivered yet"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                        _ = stop.changed() => return,
                    }
                }
                warn!(target: TARGET, %job, %peer, "gave up delivering the job's ledger entries; the participant can ask for them");
            }
        });
    futures::future::join_all(sends).await;
}

/// Answers a `JobLedger` request: from a job's coordinator (this node
/// worked on the job) or from a participant (this node coordinates it).
pub async fn on_request(
    ctx: &Arc<JobsContext>,
    from: NodeId,
    job: Hash32,
    entries: Vec<Signed<LedgerEntry>>,
) -> Response {
    let coordinated = match ctx.jobs.find_coordinated(&job).await {
        Ok(found) => found,
        Err(e) => return Response::refused(format!("job {job}: {e}")),
    };
    let allowed = if let Some(coordinated) = coordinated {
        let st = coordinated.state();
        st.is_terminal() && st.participants().contains(&from)
    } else {
        ctx.jobs.worker(&job).is_some_and(|w| w.coordinator == from)
    };
    if !allowed {
        return Response::refused(format!("no ended job {job} ctx with {from}"));
    }
    let finished = match store_from(ctx, from, &job, entries).await {
        Ok((_, finished)) => finished,
        Err(e) => {
            warn!(target: TARGET, %job, peer = %from, error = %e, "job ledger entries refused");
            return Response::refused(e);
        }
    };
    if finished && let Some(worker) = ctx.jobs.worker(&job) {
        super::worker::finished(ctx, &worker).await;
    }
    let mine = batches(own_entries(ctx, &job))
        .into_iter()
        .next()
        .unwrap_or_default();
    Response::JobLedger(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    #[test]
    fn batches_stay_under_the_wire_limit() {
        let key = Keypair::from_seed(b"k");
        let big = "x".repeat(5 * 1024 * 1024);
        let entries: Vec<Signed<LedgerEntry>> = (0..11)
            .map(|i| {
                LedgerEntry::sign_next(
                    &key,
                    None,
                    i,
                    EntryBody::Verification {
                        job_id: Hash32::ZERO,
                        round: 0,
                        node: key.node_id(),
                        passed: true,
                        detail: big.clone(),
                    },
                )
            })
            .collect();
        let parts = batches(entries);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 11);
        assert!(parts.len() >= 3);
        for part in &parts {
            let size: usize = part.iter().map(|e| e.payload.len() + 256).sum();
            assert!(size <= MAX_LEDGER_BATCH_BYTES);
        }
        assert!(batches(Vec::new()).is_empty());
    }
}
