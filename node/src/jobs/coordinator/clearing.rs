//! Step 3 (clear and verify), coordinator side: the market's inputs from
//! the job, its bids and this node's ledger; the clearing itself
//! (`protocol::market::clear`); recording `AllocationMade`; and pushing
//! the signed allocation with its bids to every winner, who verifies it.
//!
//! Every clearing covers all of the job's shards over the bids of the
//! nodes still in the job, so the caps hold for the job as a whole after
//! churn too, and each re-clearing links the previous allocation
//! (`attempt + 1`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, EntryKind};
use fairgrid_protocol::market::{self, MarketJob, MarketPolicy, WindowUsage};
use fairgrid_protocol::messages::{Allocation, Bid, JobSpec, ShortfallPolicy};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use tracing::{info, warn};

use super::{AllocationRecord, CoordJob};
use crate::app::Shared;
use crate::jobs::transport;
use crate::ledger::now_ms;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";
/// Clearings in a row (winners refusing or unreachable) before giving up.
const MAX_CLEARINGS: usize = 16;
/// Most recent allocations the network-cap window looks at.
const MAX_WINDOW_ENTRIES: usize = 10_000;

/// The cheapest price floor among the live adverts (this node's included).
pub fn cheapest_advert(shared: &Shared, _spec: &JobSpec) -> Option<(u64, NodeId)> {
    let table = shared.adverts.lock().expect("advert table lock");
    table
        .live(now_ms())
        .into_iter()
        .map(|a| (a.advert.price_floor, a.advert.node))
        .min()
}

/// Shards each owner was allocated over the trailing window, from this
/// node's own `AllocationMade` entries (the latest allocation of each
/// other job counts once).
fn window_usage(shared: &Shared, job: &Hash32, now: u64) -> WindowUsage {
    let store = shared.ledger.store();
    let since = now.saturating_sub(shared.config.jobs.window_secs.saturating_mul(1000));
    let seqs = match store.seqs_of_kind(EntryKind::AllocationMade, None, usize::MAX) {
        Ok(s) => s,
        Err(e) => {
            warn!(target: TARGET, error = %e, "reading allocations for the network cap");
            return WindowUsage::default();
        }
    };
    let mut latest: BTreeMap<Hash32, Allocation> = BTreeMap::new();
    for seq in seqs.iter().rev().take(MAX_WINDOW_ENTRIES).rev() {
        let Ok(Some(stored)) = store.get(*seq) else {
            continue;
        };
        let Ok(entry) = stored.entry() else { continue };
        if entry.timestamp < since {
            continue;
        }
        if let EntryBody::AllocationMade {
            job_id, allocation, ..
        } = entry.body
            && job_id != *job
            && let Ok((_, a)) = allocation.verify_and_decode()
        {
            latest.insert(job_id, a);
        }
    }
    let mut usage = WindowUsage::default();
    for allocation in latest.values() {
        for pay in &allocation.payments {
            usage.total += u64::from(pay.shards);
            *usage.by_owner.entry(pay.owner).or_insert(0) += u64::from(pay.shards);
        }
    }
    usage
}

/// How a clearing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleared {
    /// An allocation every winner accepted is in force.
    Running,
    /// Nothing (or not enough, under `wait`) could be placed; try again
    /// when the next bid window closes.
    Waiting(String),
    Failed(String),
}

fn no_supply_message(spec: &JobSpec, valid_bids: usize, cheapest: Option<(u64, NodeId)>) -> String {
    if valid_bids == 0 {
        let cheapest = match cheapest {
            Some((ask, node)) => format!("{ask} (node {node})"),
            None => "none".to_string(),
        };
        format!(
            "no bid at or below the limit price {}; cheapest ask seen: {cheapest}",
            spec.limit_price
        )
    } else {
        format!(
            "{valid_bids} bid(s), but no node can hold a shard (demand {:?}) within the owner caps",
            spec.demand_per_shard
        )
    }
}

/// Clears the job over the bids of the nodes still in it, records and
/// pushes the allocation, and repeats without the winners that refuse it.
pub async fn clear_and_publish(
    shared: &Arc<Shared>,
    job: &Arc<CoordJob>,
    mut reason: String,
) -> Cleared {
    let spec = &job.spec;
    for _ in 0..MAX_CLEARINGS {
        let now = now_ms();
        let (market_job, bids, training, cheapest) = {
            let st = job.state();
            let bids: Vec<Signed<Bid>> = st
                .bids
                .iter()
                .filter(|(n, _)| !st.missing.contains(n) && !st.banned.contains(n))
                .map(|(_, b)| b.clone())
                .collect();
            let market_job = MarketJob {
                job_id: job.id,
                shards: (0..spec.shard_count()).collect(),
                demand_per_shard: spec.demand_per_shard,
                limit_price: spec.limit_price,
                attempt: st.allocations.len() as u32,
                prev_allocation: st.current().map_or(Hash32::ZERO, |a| a.allocation.hash()),
            };
            (
                market_job,
                bids,
                st.phase == JobState::Training,
                st.cheapest_ask,
            )
        };
        let window_shared = Arc::clone(shared);
        let id = job.id;
        let window = tokio::task::spawn_blocking(move || window_usage(&window_shared, &id, now))
            .await
            .unwrap_or_default();
        let policy = MarketPolicy {
            alpha_ppm: spec.alpha_ppm,
            beta_ppm: shared.config.jobs.beta_ppm,
            window,
        };
        let trust = shared.trust.clone();
        let (mj, b) = (market_job.clone(), bids.clone());
        let cleared = tokio::task::spawn_blocking(move || {
            let valid = market::validate_bids(&mj, &b, &trust, now).valid.len();
            (market::clear(&mj, &b, &trust, &policy, now), valid)
        })
        .await;
        let (allocation, valid) = match cleared {
            Ok((Ok(a), valid)) => (a, valid),
            Ok((Err(e), _)) => return Cleared::Failed(format!("clearing failed: {e}")),
            Err(e) => return Cleared::Failed(format!("clearing thread: {e}")),
        };
        if allocation.assigned_shards() == 0 {
            return Cleared::Waiting(no_supply_message(spec, valid, cheapest));
        }
        if allocation.shortfall > 0 && !training && spec.on_shortfall == ShortfallPolicy::Wait {
            return Cleared::Waiting(format!(
                "{} of {} shards could not be placed within the caps; waiting (on_shortfall = wait)",
                allocation.shortfall,
                spec.shard_count()
            ));
        }
        let signed = Signed::sign(&shared.key, &allocation);
        if let Err(e) = shared
            .ledger
            .append(EntryBody::AllocationMade {
                job_id: job.id,
                allocation: signed.clone(),
                bids: bids.clone(),
            })
            .await
        {
            return Cleared::Failed(format!("recording the allocation: {e}"));
        }
        let attempt = allocation.attempt;
        let winners: Vec<NodeId> = allocation.assignments.iter().map(|a| a.node).collect();
        if attempt > 0 {
            job.event(JobEventKind::Reallocated {
                attempt,
                reason: reason.clone(),
            });
        }
        job.event(JobEventKind::Cleared {
            attempt,
            winners: winners.len() as u32,
            assigned: allocation.assigned_shards(),
            shortfall: allocation.shortfall,
        });
        info!(target: TARGET, job = %job.id, attempt, winners = winners.len(), assigned = allocation.assigned_shards(), shortfall = allocation.shortfall, "allocation made");
        {
            let mut st = job.state();
            st.allocations.push(AllocationRecord {
                signed: signed.clone(),
                allocation: allocation.clone(),
                bids: bids.clone(),
                reason: reason.clone(),
            });
            st.updated_at = now_ms();
        }
        let refusals = push(shared, job.id, &winners, &signed, &bids).await;
        if refusals.is_empty() {
            let mut st = job.state();
            st.phase = JobState::Training;
            st.needs_reclear = None;
            return Cleared::Running;
        }
        let mut st = job.state();
        let mut names = Vec::new();
        for (node, why, unreachable) in refusals {
            warn!(target: TARGET, job = %job.id, %node, reason = %why, "winner did not take the allocation");
            if unreachable {
                st.missing.insert(node);
            } else {
                st.banned.insert(node);
            }
            names.push(format!("{node}: {why}"));
        }
        reason = format!("winners left out: {}", names.join("; "));
    }
    Cleared::Failed(format!(
        "no allocation was accepted after {MAX_CLEARINGS} clearings"
    ))
}

/// Sends the allocation and its bids to every winner; returns those that
/// refused it (with their reason) or could not be reached (`true`).
async fn push(
    shared: &Arc<Shared>,
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
                match transport::call(shared, node, request.clone()).await {
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

/// The owner of each winner of an allocation, for orders and credits.
pub fn owners_of(allocation: &Allocation) -> BTreeMap<NodeId, OwnerId> {
    allocation
        .assignments
        .iter()
        .map(|a| (a.node, a.owner))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::{Keypair, PublicKey};

    #[test]
    fn the_no_bid_message_names_the_limit_and_the_cheapest_ask() {
        let key = Keypair::from_seed(b"c");
        let mut spec = crate::jobs::testing::sample_spec(&key);
        spec.limit_price = 100;
        let node = NodeId(PublicKey([7; 32]));
        let m = no_supply_message(&spec, 0, Some((250, node)));
        assert_eq!(
            m,
            format!("no bid at or below the limit price 100; cheapest ask seen: 250 (node {node})")
        );
        assert!(no_supply_message(&spec, 0, None).ends_with("cheapest ask seen: none"));
        assert!(no_supply_message(&spec, 3, None).starts_with("3 bid(s)"));
    }
}
