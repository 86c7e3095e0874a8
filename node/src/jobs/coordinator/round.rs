//! One round in progress on the coordinator: who was asked to train what,
//! and what came back. The checks on an incoming update are a pure
//! function of (round, update, bytes, now), so they are tested without a
//! network.

use std::collections::BTreeMap;

use fairgrid_kernels::compress::robust;
use fairgrid_kernels::{decode_update, weighted_mean};
use fairgrid_protocol::messages::{Aggregation, Arithmetic, HyperParams, JobSpec, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};

use super::super::model::kernels_compression;

/// What one worker was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub owner: OwnerId,
    pub shards: Vec<u32>,
    /// Samples its H local steps process: H x min(batch, its samples).
    pub samples: u64,
    /// The speed its bid claimed (milli-samples per second, 0: none).
    pub speed_milli: u64,
}

/// An update that passed every check, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedUpdate {
    pub delta: Vec<f32>,
    pub samples: u64,
    pub loss: f32,
    pub update_hash: Hash32,
    pub bytes: u64,
    /// The worker's own measure of its training time.
    pub compute_ms: u64,
    /// The residual the worker's next update may start from.
    pub residual_out: Hash32,
    /// The signed update (what an audit records).
    pub signed: Box<Signed<RoundUpdate>>,
}

impl AcceptedUpdate {
    /// A checked update with its decoded delta; `bytes` is its encoded size.
    pub fn new(
        signed: &Signed<RoundUpdate>,
        update: &RoundUpdate,
        delta: Vec<f32>,
        bytes: u64,
    ) -> AcceptedUpdate {
        AcceptedUpdate {
            delta,
            samples: update.samples,
            loss: update.loss,
            update_hash: update.update_hash,
            bytes,
            compute_ms: update.compute_ms,
            residual_out: update.residual_out,
            signed: Box::new(signed.clone()),
        }
    }
}

/// What became of one worker's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted(AcceptedUpdate),
    /// Refused for misbehaviour (bad signature, hash, encoding, values).
    Rejected(String),
    /// Nothing usable in time (deadline, disconnect, refused the round).
    Missed(String),
}

/// Why an update was refused. `misbehaved` updates cost the worker its
/// place in the job; the others are honest mistakes (late, stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub misbehaved: bool,
}

fn misbehaved<T>(reason: String) -> Result<T, Rejection> {
    Err(Rejection {
        reason,
        misbehaved: true,
    })
}

fn refused<T>(reason: String) -> Result<T, Rejection> {
    Err(Rejection {
        reason,
        misbehaved: false,
    })
}

#[derive(Debug, Clone)]
pub struct RoundInProgress {
    pub job_id: Hash32,
    pub round: u32,
    /// Index of the allocation in force (into the job's allocations).
    pub allocation: usize,
    pub params_hash: Hash32,
    pub param_count: usize,
    pub started_ms: u64,
    pub deadline: u64,
    pub orders: BTreeMap<NodeId, Order>,
    pub outcomes: BTreeMap<NodeId, Outcome>,
    /// When each accepted update was taken (for the per-worker view).
    pub arrivals: BTreeMap<NodeId, u64>,
    pub bytes_down: u64,
    /// Upheld audits by other owners' nodes (set once audited).
    pub audited: Vec<crate::jobs::credits::AuditWork>,
}

impl RoundInProgress {
    /// Every order has an outcome.
    pub fn complete(&self) -> bool {
        self.orders.keys().all(|n| self.outcomes.contains_key(n))
    }

    /// Orders still open.
    pub fn open(&self) -> Vec<NodeId> {
        self.orders
            .keys()
            .filter(|n| !self.outcomes.contains_key(n))
            .copied()
            .collect()
    }

    /// Marks every open order missed (at the deadline).
    pub fn close(&mut self, reason: &str) -> Vec<NodeId> {
        let open = self.open();
        for node in &open {
            self.outcomes
                .insert(*node, Outcome::Missed(reason.to_string()));
        }
        open
    }

    /// Records an outcome unless the worker already has one.
    pub fn settle(&mut self, node: NodeId, outcome: Outcome) -> bool {
        if !self.orders.contains_key(&node) || self.outcomes.contains_key(&node) {
            return false;
        }
        self.outcomes.insert(node, outcome);
        true
    }

    /// Checks an update's envelope and metadata against this round, before
    /// its bytes are decoded. `from` is the authenticated peer that sent it.
    pub fn check(
        &self,
        from: NodeId,
        signed: &Signed<RoundUpdate>,
        bytes: &[u8],
        spec: &JobSpec,
        now: u64,
    ) -> Result<RoundUpdate, Rejection> {
        let (signer, update) = match signed.verify_and_decode() {
            Ok(v) => v,
            Err(e) => return misbehaved(format!("update envelope: {e}")),
        };
        if signer != from.0 || update.worker != from {
            return misbehaved(format!(
                "update signed by key {} for worker {}, but sent by {from}",
                signer.to_hex(),
                update.worker
            ));
        }
        if update.job_id != self.job_id {
            return refused(format!(
                "update for job {}, not {}",
                update.job_id, self.job_id
            ));
        }
        if update.round != self.round {
            return refused(format!(
                "update for round {}, but round {} is open",
                update.round, self.round
            ));
        }
        let Some(order) = self.orders.get(&from) else {
            return refused(format!("{from} has no order in round {}", self.round));
        };
        if let Some(outcome) = self.outcomes.get(&from) {
            let what = match outcome {
                Outcome::Accepted(_) => "already has an accepted update",
                Outcome::Rejected(_) => "was already rejected",
                Outcome::Missed(_) => "was already counted as missed",
            };
            return refused(format!("{from} {what} in round {}", self.round));
        }
        if now > self.deadline {
            return refused(format!(
                "update arrived {} ms after the round's deadline",
                now - self.deadline
            ));
        }
        if update.base_params != self.params_hash {
            return refused("update starts from other parameters than this round's".into());
        }
        if update.shards != order.shards {
            return misbehaved(format!(
                "update covers shards {:?}, the order was {:?}",
                update.shards, order.shards
            ));
        }
        if update.device_groups == 0 || update.device_groups as usize > update.shards.len() {
            return misbehaved(format!(
                "update split {} shards into {} device groups",
                update.shards.len(),
                update.device_groups
            ));
        }
        if update.compression != spec.hyper.compression {
            return misbehaved(format!(
                "update uses {:?}, the job asks for {:?}",
                update.compression, spec.hyper.compression
            ));
        }
        let expected_len =
            kernels_compression(spec.hyper.compression).encoded_len(self.param_count);
        if update.update_len != bytes.len() as u64 || bytes.len() != expected_len {
            return misbehaved(format!(
                "update is {} bytes (claims {}), an encoded update of this model is {expected_len}",
                bytes.len(),
                update.update_len
            ));
        }
        if Hash32::of(bytes) != update.update_hash {
            return misbehaved("update bytes do not match the signed update_hash".into());
        }
        if update.samples != order.samples {
            return misbehaved(format!(
                "update claims {} samples, its order trains {}",
                update.samples, order.samples
            ));
        }
        // A job of exact audits takes no arithmetic that buys a tolerance
        // (a CPU job's `gpu` is judged as x86_avx2_fma anyway).
        if spec.exact_audits && update.arithmetic == Arithmetic::OtherCpu {
            return misbehaved(
                "update declares other_cpu arithmetic; the job takes only exact audits (x86_avx2_fma)"
                    .into(),
            );
        }
        if !update.loss.is_finite() || update.loss < 0.0 {
            return misbehaved(format!("update reports loss {}", update.loss));
        }
        Ok(update)
    }

    /// Decodes checked bytes (CPU work: call it off the async threads).
    /// A delta value beyond [`MAX_DELTA_ABS`] is misbehaviour: finite but
    /// huge values would overflow the aggregate and fail the job for all.
    pub fn decode(bytes: &[u8], param_count: usize) -> Result<Vec<f32>, Rejection> {
        let delta = decode_update(bytes, param_count)
            .or_else(|e| misbehaved(format!("update does not decode: {e}")))?;
        if let Some(i) = delta.iter().position(|v| v.abs() > MAX_DELTA_ABS) {
            return misbehaved(format!(
                "update value {i} is {}, beyond the bound {MAX_DELTA_ABS}",
                delta[i]
            ));
        }
        Ok(delta)
    }

    /// Accepted updates, by worker.
    pub fn accepted(&self) -> impl Iterator<Item = (&NodeId, &AcceptedUpdate)> {
        self.outcomes.iter().filter_map(|(n, o)| match o {
            Outcome::Accepted(u) => Some((n, u)),
            _ => None,
        })
    }
}

/// The largest magnitude a delta value may have. Local SGD moves weights
/// by far less than this; the bound keeps the sum of a few thousand
/// updates well inside f32.
pub const MAX_DELTA_ABS: f32 = 1.0e4;

/// What the coordinator's aggregation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub params: Vec<f32>,
    /// The outer momentum to carry to the next round (empty without
    /// momentum).
    pub velocity: Vec<f32>,
    /// Sample-weighted mean of the workers' training losses.
    pub train_loss: f32,
    pub samples: u64,
}

/// The coordinator's outer step. The round's combined delta `d` is the
/// negated outer gradient; with Nesterov momentum `mu` (DiLoCo's outer
/// optimizer) the velocity is `v = mu v + d` and the step
/// `params + lr (d + mu v)`. With `mu = 0` it is `params + lr d`, plain
/// averaging when `lr = 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OuterStep {
    pub lr: f32,
    pub momentum: f32,
}

impl OuterStep {
    pub fn of(hyper: &HyperParams) -> OuterStep {
        OuterStep {
            lr: hyper.outer_lr,
            momentum: hyper.outer_momentum,
        }
    }

    /// No momentum: `params + lr d`.
    pub fn plain(lr: f32) -> OuterStep {
        OuterStep { lr, momentum: 0.0 }
    }

    /// The new parameters and the new velocity (empty without momentum;
    /// an empty `velocity` counts as zeros).
    pub fn apply(&self, params: &[f32], delta: &[f32], velocity: &[f32]) -> (Vec<f32>, Vec<f32>) {
        if self.momentum == 0.0 {
            let new = params
                .iter()
                .zip(delta)
                .map(|(p, d)| p + self.lr * d)
                .collect();
            return (new, Vec::new());
        }
        let mu = self.momentum;
        let v: Vec<f32> = if velocity.len() == delta.len() {
            velocity
                .iter()
                .zip(delta)
                .map(|(v, d)| mu * v + d)
                .collect()
        } else {
            delta.to_vec()
        };
        let new = params
            .iter()
            .zip(delta.iter().zip(&v))
            .map(|(p, (d, v))| p + self.lr * (d + mu * v))
            .collect();
        (new, v)
    }
}

/// Applies the sample-weighted mean of the accepted deltas with a plain
/// outer step: `params + outer_lr * mean`.
pub fn aggregate(
    params: &[f32],
    updates: &[&AcceptedUpdate],
    outer_lr: f32,
) -> Result<Aggregate, String> {
    aggregate_with(
        params,
        updates,
        OuterStep::plain(outer_lr),
        &[],
        Aggregation::Mean,
        &[],
    )
}

/// [`aggregate`] with the job's rule for combining the deltas (the mean,
/// or a robust rule: `fairgrid_kernels::compress::robust`) and its outer
/// step. `velocity` is the outer momentum carried into this round; the
/// result carries the next one. In `statistics` (batch norm's running
/// mean and variance: `ModelSpec::statistics_ranges`) the new values are
/// the plain combination, `params + mean`, with no outer learning rate or
/// momentum: they are averages the workers measured, not a gradient step,
/// and an outer step could push a variance below zero.
pub fn aggregate_with(
    params: &[f32],
    updates: &[&AcceptedUpdate],
    outer: OuterStep,
    velocity: &[f32],
    rule: Aggregation,
    statistics: &[std::ops::Range<usize>],
) -> Result<Aggregate, String> {
    let deltas: Vec<(&[f32], u64)> = updates
        .iter()
        .map(|u| (u.delta.as_slice(), u.samples))
        .collect();
    let mean = match rule {
        Aggregation::Mean => weighted_mean(&deltas),
        Aggregation::TrimmedMean { trim } => robust::trimmed_mean(&deltas, trim as usize),
        Aggregation::CenteredClip => robust::centered_clip(&deltas),
    }
    .map_err(|e| e.to_string())?;
    if mean.len() != params.len() {
        return Err(format!(
            "{} deltas for {} parameters",
            mean.len(),
            params.len()
        ));
    }
    let (mut new, mut next_velocity) = outer.apply(params, &mean, velocity);
    for range in statistics {
        let Some(values) = new.get_mut(range.clone()) else {
            return Err(format!(
                "statistics at {range:?} outside {} parameters",
                params.len()
            ));
        };
        for ((v, p), d) in values
            .iter_mut()
            .zip(&params[range.clone()])
            .zip(&mean[range.clone()])
        {
            *v = p + d;
        }
        if let Some(velocity) = next_velocity.get_mut(range.clone()) {
            velocity.fill(0.0);
        }
    }
    if let Some(i) = new.iter().position(|v| !v.is_finite()) {
        return Err(format!("aggregated parameter {i} is not finite"));
    }
    let samples: u64 = updates.iter().map(|u| u.samples).sum();
    let loss = updates
        .iter()
        .map(|u| f64::from(u.loss) * u.samples as f64)
        .sum::<f64>()
        / samples.max(1) as f64;
    Ok(Aggregate {
        params: new,
        velocity: next_velocity,
        train_loss: loss as f32,
        samples,
    })
}

#[cfg(test)]
mod tests;
