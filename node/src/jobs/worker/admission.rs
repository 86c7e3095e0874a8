//! Admission across jobs: which of the jobs competing for this node's free
//! capacity it bids on first.
//!
//! Jobs heard of within `worker.admission_delay_ms` of each other, and the
//! jobs waiting for capacity when some frees, are bid on in one pass, in
//! weighted dominant-resource-fairness order of their submitters
//! (`protocol::market::drf_order`): a submitter's usage is what its jobs
//! were allocated over the network window (from the gossiped allocation
//! notices), its share is of the pool the live adverts offer, and each job
//! served earlier in the pass counts at its whole demand. Bids reserve
//! capacity in that order, so when the pool cannot take every job, the
//! submitters holding least go first and a submitter's second job waits
//! for everyone's first. Every node that heard the same jobs and the same
//! notices computes the same order (docs/market.md, "Several jobs in one
//! epoch").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::market::{Contender, drf_order};
use fairgrid_protocol::messages::{JobSpec, MAX_CLOCK_SKEW_MS};
use fairgrid_protocol::{Hash32, NodeId, ResourceVec, Signed};
use tracing::debug;

use crate::jobs::JobsContext;
use crate::ledger::now_ms;

const TARGET: &str = "fairgrid::jobs";

/// A job heard of: queued for the next admission pass, which starts
/// `worker.admission_delay_ms` after the first job queued for it.
pub fn hear(ctx: &Arc<JobsContext>, signed: Signed<JobSpec>, spec: &JobSpec) {
    ctx.jobs
        .window
        .note_demand(signed.id(), spec.demand_per_shard);
    ctx.jobs.working.queue_for_admission(signed);
    schedule(
        ctx,
        Duration::from_millis(ctx.config.worker.admission_delay_ms),
    );
}

/// Runs a pass after `delay`, unless one is already due.
pub fn schedule(ctx: &Arc<JobsContext>, delay: Duration) {
    if !ctx.jobs.working.claim_pass() {
        return;
    }
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        ctx.jobs.working.release_pass();
        pass(&ctx).await;
    });
}

/// Bids, one after the other, on the queued jobs still open, in DRF order.
async fn pass(ctx: &Arc<JobsContext>) {
    let now = now_ms();
    let mut open: Vec<(Signed<JobSpec>, JobSpec)> = Vec::new();
    for signed in ctx.jobs.working.take_queued() {
        let Ok((_, spec)) = signed.verify_and_decode() else {
            continue;
        };
        let closes = spec
            .submitted_at
            .saturating_add(spec.bid_window_ms)
            .saturating_add(MAX_CLOCK_SKEW_MS);
        let known = ctx.jobs.worker(&signed.id()).is_some();
        // A coordinator resuming its own job opens a fresh bid window, and
        // a job still waiting for supply (no allocation gossiped yet) takes
        // bids until its deadline; one allocated without this node does
        // not need a standby bid that would hold capacity.
        let own = spec.submitter == ctx.node_id;
        let allocated = ctx.jobs.window.has_allocation(&signed.id());
        if (now > closes && !own && allocated) || spec.deadline <= now || known {
            continue;
        }
        open.push((signed, spec));
    }
    if open.is_empty() {
        return;
    }
    let usage = ctx.jobs.window.usage_by_submitter(now);
    let pool = ctx.host.pool(now);
    let weights = ctx.config.worker.weights();
    let ordered = admission_order(open, &usage, &pool, &weights);
    debug!(target: TARGET, jobs = ordered.len(), "admission pass");
    for (signed, spec) in ordered {
        super::bid(ctx, signed, spec).await;
    }
}

/// The jobs in the order they are bid on: each submitter's jobs by
/// submission time (then id), submitters by weighted DRF over `usage` and
/// `pool` (`weights` from `worker.submitter_weights`, 1 for a submitter
/// not listed), ties broken by a seed all nodes hearing the same jobs
/// share (the hash of their sorted ids).
pub fn admission_order(
    mut jobs: Vec<(Signed<JobSpec>, JobSpec)>,
    usage: &BTreeMap<NodeId, ResourceVec>,
    pool: &ResourceVec,
    weights: &BTreeMap<NodeId, u32>,
) -> Vec<(Signed<JobSpec>, JobSpec)> {
    jobs.sort_by_key(|(signed, spec)| (spec.submitted_at, signed.id()));
    let mut ids: Vec<Hash32> = jobs.iter().map(|(s, _)| s.id()).collect();
    ids.sort();
    let seed = Hash32::of(&ids.iter().flat_map(|id| id.0).collect::<Vec<u8>>());
    let contenders: Vec<Contender> = jobs
        .iter()
        .map(|(signed, spec)| Contender {
            job_id: signed.id(),
            submitter: spec.submitter,
            weight: weights.get(&spec.submitter).copied().unwrap_or(1).max(1),
            demand: spec
                .demand_per_shard
                .saturating_mul(u64::from(spec.shard_count())),
        })
        .collect();
    let order = drf_order(&contenders, usage, pool, &seed);
    let mut slots: Vec<Option<(Signed<JobSpec>, JobSpec)>> = jobs.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::sample_spec;
    use fairgrid_protocol::Keypair;

    fn job(submitter: &Keypair, at: u64) -> (Signed<JobSpec>, JobSpec) {
        let mut spec = sample_spec(submitter);
        spec.submitted_at = at;
        (Signed::sign(submitter, &spec), spec)
    }

    #[test]
    fn every_submitters_first_job_before_anyones_second() {
        let [a, b, c] = [b"a", b"b", b"c"].map(|s| Keypair::from_seed(s));
        // Heard in submission order: both of a's, then b's, then c's.
        let jobs = vec![
            job(&a, 1),
            job(&a, 2),
            job(&b, 3),
            job(&b, 4),
            job(&c, 5),
            job(&c, 6),
        ];
        let pool = jobs[0].1.demand_per_shard.saturating_mul(100);
        let order = admission_order(jobs.clone(), &BTreeMap::new(), &pool, &BTreeMap::new());
        let submitters: Vec<NodeId> = order.iter().map(|(_, s)| s.submitter).collect();
        let firsts: std::collections::BTreeSet<NodeId> = submitters[..3].iter().copied().collect();
        assert_eq!(firsts.len(), 3, "one job of each submitter first");
        // A submitter's jobs keep their order.
        let a_jobs: Vec<u64> = order
            .iter()
            .filter(|(_, s)| s.submitter == a.node_id())
            .map(|(_, s)| s.submitted_at)
            .collect();
        assert_eq!(a_jobs, vec![1, 2]);
        // The order does not depend on the order jobs were heard in.
        let mut reversed = jobs.clone();
        reversed.reverse();
        let again: Vec<Hash32> =
            admission_order(reversed, &BTreeMap::new(), &pool, &BTreeMap::new())
                .iter()
                .map(|(s, _)| s.id())
                .collect();
        let first: Vec<Hash32> = order.iter().map(|(s, _)| s.id()).collect();
        assert_eq!(again, first);

        // b already holds much of the pool: its jobs come last.
        let usage = BTreeMap::from([(b.node_id(), pool)]);
        let order = admission_order(jobs.clone(), &usage, &pool, &BTreeMap::new());
        let last_two: Vec<NodeId> = order[4..].iter().map(|(_, s)| s.submitter).collect();
        assert_eq!(last_two, vec![b.node_id(), b.node_id()]);
    }

    #[test]
    fn a_heavier_submitter_goes_before_one_holding_less() {
        let [a, b, c] = [b"a", b"b", b"c"].map(|s| Keypair::from_seed(s));
        let jobs = vec![job(&a, 1), job(&b, 2), job(&c, 3)];
        let pool = jobs[0].1.demand_per_shard.saturating_mul(100);
        // a holds 40% of the pool, c 30%, b nothing.
        let usage = BTreeMap::from([
            (a.node_id(), jobs[0].1.demand_per_shard.saturating_mul(40)),
            (c.node_id(), jobs[0].1.demand_per_shard.saturating_mul(30)),
        ]);
        let submitters = |weights: &BTreeMap<NodeId, u32>| -> Vec<NodeId> {
            admission_order(jobs.clone(), &usage, &pool, weights)
                .iter()
                .map(|(_, s)| s.submitter)
                .collect()
        };
        let (a, b, c) = (a.node_id(), b.node_id(), c.node_id());
        assert_eq!(submitters(&BTreeMap::new()), vec![b, c, a]);
        // Weight 2: a's 40% counts as 20%, less than c's 30%.
        assert_eq!(submitters(&BTreeMap::from([(a, 2)])), vec![b, a, c]);
    }
}
