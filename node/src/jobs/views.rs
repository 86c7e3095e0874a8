//! A coordinated job as the API shows it (the SDK's `jobs` types), and
//! the market's `--explain` account of the allocation in force.

use std::collections::BTreeMap;

use fairgrid_protocol::fairness::FairnessReport;
use fairgrid_protocol::market::instance::{
    Instance, InstanceFile, JobSection, PolicySection, WindowSection,
};
use fairgrid_protocol::market::{self, MarketJob, PPM};
use fairgrid_protocol::messages::ModelArch;
use fairgrid_protocol::{NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::{
    AllocationView, CreditView, JobState, JobStatus, NodeShareView, OwnerAllocationView,
    RoundReport, TrainingReport,
};

use super::coordinator::{AllocationRecord, CoordJob, CoordState};
use crate::jobs::JobsContext;

fn model_name(arch: &ModelArch) -> String {
    match arch {
        ModelArch::LogReg => "logreg".into(),
        ModelArch::Cnn => "cnn".into(),
        ModelArch::Mlp { hidden } => {
            let widths: Vec<String> = hidden.iter().map(|w| w.to_string()).collect();
            format!("mlp({})", widths.join("-"))
        }
        ModelArch::Layers(layers) => format!("layers({})", layers.len()),
    }
}

pub fn status(job: &CoordJob) -> JobStatus {
    let st = job.state();
    let last = st.rounds.last();
    let rounds = job.spec.hyper.rounds;
    let eta_secs = (!st.rounds.is_empty() && !st.is_terminal()).then(|| {
        let mean = st.rounds.iter().map(|r| r.duration_ms).sum::<u64>() / st.rounds.len() as u64;
        mean * u64::from(rounds.saturating_sub(st.next_round)) / 1000
    });
    JobStatus {
        job_id: job.id.to_hex(),
        name: job.plan.name.clone(),
        state: st.phase,
        model: model_name(&job.spec.model.arch),
        dataset: job.spec.dataset.name.clone(),
        shards: job.spec.shard_count(),
        round: st.next_round,
        rounds,
        last_loss: last.map(|r| r.train_loss),
        last_accuracy: last.and_then(|r| r.test_accuracy),
        workers: st
            .current()
            .map_or(0, |a| a.allocation.assignments.len() as u32),
        submitted_at_ms: st.submitted_at,
        updated_at_ms: st.updated_at,
        eta_secs,
        error: st.error.clone(),
    }
}

fn owner_label(st: &CoordState, owner: &OwnerId) -> String {
    st.owners
        .values()
        .find(|(o, _)| o == owner)
        .map(|(_, label)| label.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| owner.short())
}

pub fn allocation(job: &CoordJob, st: &CoordState, record: &AllocationRecord) -> AllocationView {
    let a = &record.allocation;
    let m = job.spec.shard_count();
    let fairness = FairnessReport::of_allocation(a);
    AllocationView {
        job_id: job.id.to_hex(),
        attempt: a.attempt,
        allocation_hash: a.hash().to_hex(),
        shards: m,
        shortfall: a.shortfall,
        alpha: f64::from(job.spec.alpha_ppm) / f64::from(PPM),
        owner_cap: (u64::from(job.spec.alpha_ppm) * u64::from(m) / u64::from(PPM)) as u32,
        nodes: a
            .assignments
            .iter()
            .map(|x| NodeShareView {
                node: x.node.to_string(),
                owner: x.owner.to_string(),
                ask: x.ask,
                shards: x.shards.len() as u32,
            })
            .collect(),
        owners: a
            .payments
            .iter()
            .map(|p| OwnerAllocationView {
                owner: p.owner.to_string(),
                label: owner_label(st, &p.owner),
                shards: p.shards,
                cap: market::owner_cap(&a.policy, m, &p.owner),
                share: f64::from(p.shards) / f64::from(m.max(1)),
                cost: p.cost,
                payment: p.payment,
            })
            .collect(),
        hhi: fairness.hhi,
        gini: fairness.gini,
        nakamoto_50: fairness.nakamoto_50,
        nakamoto_33: fairness.nakamoto_33,
        max_owner_share: f64::from(fairness.max_share_ppm) / f64::from(PPM),
    }
}

pub fn current_allocation(job: &CoordJob) -> Option<AllocationView> {
    let st = job.state();
    st.current().map(|record| allocation(job, &st, record))
}

pub fn report(job: &CoordJob) -> TrainingReport {
    let st = job.state();
    TrainingReport {
        job_id: job.id.to_hex(),
        state: st.phase,
        rounds: st
            .rounds
            .iter()
            .map(|r| RoundReport {
                round: r.round,
                train_loss: r.train_loss,
                test_accuracy: r.test_accuracy,
                participants: r.accepted.len() as u32,
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
                duration_ms: r.duration_ms,
            })
            .collect(),
        final_test_accuracy: st.result.as_ref().map(|r| r.test_accuracy),
        allocation: st.current().map(|record| allocation(job, &st, record)),
        bytes_up: st.bytes_up,
        bytes_down: st.bytes_down,
        credits: st
            .result
            .as_ref()
            .map(|r| {
                r.credits
                    .iter()
                    .map(|c| CreditView {
                        owner: c.owner.to_string(),
                        label: owner_label(&st, &c.owner),
                        amount: c.amount,
                        audit_amount: c.audits,
                        shards: c.shards,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        model_hash: st.result.as_ref().map(|r| r.model_hash.to_hex()),
        compression: st.result.as_ref().and_then(|r| r.compression).map(|c| {
            fairgrid_sdk::jobs::CompressionView {
                size_before: c.size_before,
                size_after: c.size_after,
                test_accuracy_before: c.accuracy_before,
                test_accuracy_after: c.accuracy_after,
                weight_sparsity: c.weight_sparsity,
            }
        }),
    }
}

pub fn is_finished(job: &CoordJob) -> bool {
    job.state().phase == JobState::Finished
}

/// The market's explanation of the allocation in force, with nodes named
/// by their PeerIds and owners by their certificate labels.
pub fn explain(ctx: &JobsContext, job: &CoordJob) -> Option<Result<String, String>> {
    let st = job.state();
    let record = st.current()?;
    let a = &record.allocation;
    let market_job = MarketJob {
        job_id: job.id,
        shards: a.shards.clone(),
        demand_per_shard: job.spec.demand_per_shard,
        limit_price: job.spec.limit_price,
        attempt: a.attempt,
        prev_allocation: a.prev_allocation,
    };
    // Only the bids that took part (clearing drops the others).
    let checked = market::validate_bids(&market_job, &record.bids, &ctx.trust, a.cleared_at);
    let valid: std::collections::BTreeSet<_> = checked.valid.iter().map(|b| b.bid_id).collect();
    let bids: Vec<Signed<fairgrid_protocol::messages::Bid>> = record
        .bids
        .iter()
        .filter(|b| valid.contains(&b.id()))
        .cloned()
        .collect();
    let node_names: BTreeMap<NodeId, String> = checked
        .valid
        .iter()
        .map(|b| (b.node, b.node.to_string()))
        .collect();
    let owner_names: BTreeMap<OwnerId, String> = checked
        .valid
        .iter()
        .map(|b| (b.owner, owner_label(&st, &b.owner)))
        .collect();
    let instance = Instance {
        file: InstanceFile {
            job: JobSection {
                name: job.plan.name.clone(),
                shards: Some(a.shards.len() as u32),
                shard_indices: None,
                demand_per_shard: job.spec.demand_per_shard,
                limit_price: job.spec.limit_price,
                attempt: a.attempt,
                prev_allocation: Some(a.prev_allocation),
            },
            policy: PolicySection {
                alpha_ppm: a.policy.alpha_ppm,
                beta_ppm: a.policy.beta_ppm,
                window: WindowSection::default(),
            },
            bids: Vec::new(),
            cleared_at: a.cleared_at,
        },
        job: market_job,
        policy: a.policy.clone(),
        bids,
        trust: ctx.trust.clone(),
        node_names,
        owner_names,
    };
    Some(instance.clear().map_err(|e| e.to_string()).map(|outcome| {
        let mut text = format!(
            "Allocation {} (attempt {}{}).\n",
            a.hash(),
            a.attempt,
            if record.reason.is_empty() {
                String::new()
            } else {
                format!(", {}", record.reason)
            }
        );
        if outcome.allocation != *a {
            text.push_str("WARNING: re-clearing the recorded bids gives a different allocation.\n");
        }
        text.push_str(&fairgrid_protocol::market::explain::explain(&outcome));
        text
    }))
}
