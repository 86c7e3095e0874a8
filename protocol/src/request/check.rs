//! Every rule a job request must keep that does not need its data, in one
//! place; and the two that need the shard count (how many shards, and
//! whether the owner cap can hold one).

use std::borrow::Cow;
use std::fmt;

use super::{AggregationName, ArchName, CompressionName, JobRequest};
use crate::ResourceVec;
use crate::messages::{
    Aggregation, Compression, HyperParams, MAX_FINETUNE_STEPS, MAX_ROUNDS, MAX_SHARDS, MAX_TRIM,
    ModelArch, ModelCompression, PPM, ShortfallPolicy,
};

/// Longest job name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most samples in one shard (the kernels' shard limit).
pub const MAX_SHARD_SAMPLES: u32 = 1 << 20;
pub const MAX_BID_WINDOW_SECS: u64 = 3600;
pub const MAX_ROUND_TIMEOUT_SECS: u64 = 24 * 3600;
pub const MAX_DEADLINE_SECS: u64 = 30 * 24 * 3600;
const MAX_LOCAL_STEPS: u32 = 10_000;
const MAX_BATCH: u32 = 65_536;
const MAX_INT8_BLOCK: u32 = 1 << 20;
const DEFAULT_HIDDEN: [u32; 2] = [256, 128];

/// A request field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, as the request spells it ("market.alpha",
    /// "model.layers[3].p").
    pub field: Cow<'static, str>,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

pub(super) fn bad<T>(
    field: impl Into<Cow<'static, str>>,
    reason: impl Into<String>,
) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.into(),
        reason: reason.into(),
    })
}

fn in_range(field: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), FieldError> {
    match value {
        v if (lo..=hi).contains(&v) => Ok(()),
        0 => bad(field, format!("is zero; it must be in {lo}..={hi}")),
        v => bad(field, format!("{v} is not in {lo}..={hi}")),
    }
}

/// A request that keeps every rule, in the protocol's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRequest {
    /// The name, trimmed.
    pub name: String,
    /// "builtin", "system" or a directory on the coordinator.
    pub source: String,
    pub shard_size: u32,
    pub max_train_samples: Option<u32>,
    pub arch: ModelArch,
    pub hyper: HyperParams,
    pub demand: ResourceVec,
    pub limit_price: u64,
    pub alpha_ppm: u32,
    pub bid_window_ms: u64,
    pub round_timeout_ms: u64,
    pub deadline_ms: u64,
    pub on_shortfall: ShortfallPolicy,
    pub relayed_workers: bool,
    pub exact_audits: bool,
}

/// Why a GPU job cannot ask for exact audits.
pub const EXACT_AUDITS_ON_A_GPU: &str = "a GPU's rounds cannot be replayed bit for bit on another machine: exact audits are for CPU jobs (demand_per_shard.gpu_milli = 0)";

impl JobRequest {
    /// Checks every field that can be checked without the data.
    pub fn check(&self) -> Result<CheckedRequest, FieldError> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return bad(
                "name",
                format!("must be 1..={MAX_NAME_BYTES} bytes of printable text"),
            );
        }
        let arch = self.arch()?;
        let hyper = self.hyper()?;
        let d = &self.data;
        if d.source.is_empty() {
            return bad("data.source", "is empty");
        }
        in_range(
            "data.shard_size",
            d.shard_size.into(),
            1,
            MAX_SHARD_SAMPLES.into(),
        )?;
        if d.max_train_samples == Some(0) {
            return bad(
                "data.max_train_samples",
                "is zero; leave it out to use every sample",
            );
        }
        let m = &self.market;
        if !(m.alpha.is_finite() && m.alpha > 0.0 && m.alpha <= 1.0) {
            return bad(
                "market.alpha",
                format!(
                    "{} is not in (0, 1]: it is the share of the job one owner may take",
                    m.alpha
                ),
            );
        }
        let alpha_ppm = (m.alpha * f64::from(PPM)).round() as u32;
        if alpha_ppm == 0 {
            return bad(
                "market.alpha",
                format!("{} is below one part per million", m.alpha),
            );
        }
        let s = &m.demand_per_shard;
        let demand = ResourceVec {
            cpu_milli: s.cpu_milli,
            mem_mib: s.mem_mib,
            gpu_milli: s.gpu_milli,
            gpu_mem_mib: s.gpu_mem_mib,
        };
        if demand.is_zero() {
            return bad(
                "market.demand_per_shard",
                "is zero in every resource; a shard must need something",
            );
        }
        if m.exact_audits && demand.gpu_milli > 0 {
            return bad("market.exact_audits", EXACT_AUDITS_ON_A_GPU);
        }
        in_range(
            "market.bid_window_secs",
            m.bid_window_secs,
            1,
            MAX_BID_WINDOW_SECS,
        )?;
        in_range(
            "market.round_timeout_secs",
            m.round_timeout_secs,
            1,
            MAX_ROUND_TIMEOUT_SECS,
        )?;
        if m.deadline_secs <= m.bid_window_secs || m.deadline_secs > MAX_DEADLINE_SECS {
            return bad(
                "market.deadline_secs",
                format!(
                    "{} must exceed the {} s bid window and be at most {MAX_DEADLINE_SECS}",
                    m.deadline_secs, m.bid_window_secs
                ),
            );
        }
        Ok(CheckedRequest {
            name: name.to_string(),
            source: d.source.clone(),
            shard_size: d.shard_size,
            max_train_samples: d.max_train_samples,
            arch,
            hyper,
            demand,
            limit_price: m.limit_price,
            alpha_ppm,
            bid_window_ms: m.bid_window_secs * 1000,
            round_timeout_ms: m.round_timeout_secs * 1000,
            deadline_ms: m.deadline_secs * 1000,
            on_shortfall: m.on_shortfall,
            relayed_workers: m.relayed_workers,
            exact_audits: m.exact_audits,
        })
    }

    fn result_compression(&self) -> Result<ModelCompression, FieldError> {
        let r = &self.result;
        if !(r.prune.is_finite() && (0.0..1.0).contains(&r.prune)) {
            return bad("result.prune", format!("{} is not in [0, 1)", r.prune));
        }
        if r.finetune_steps > MAX_FINETUNE_STEPS {
            return bad(
                "result.finetune_steps",
                format!("{} is more than {MAX_FINETUNE_STEPS}", r.finetune_steps),
            );
        }
        if r.finetune_steps > 0 && r.prune == 0.0 {
            return bad(
                "result.finetune_steps",
                "fine-tuning repairs pruning: set result.prune too",
            );
        }
        if !(r.finetune_lr.is_finite() && r.finetune_lr > 0.0) {
            return bad(
                "result.finetune_lr",
                format!("{} is not a positive number", r.finetune_lr),
            );
        }
        Ok(ModelCompression {
            prune_ppm: ((r.prune * f64::from(PPM)).round() as u32).min(PPM - 1),
            finetune_steps: r.finetune_steps,
            finetune_lr: r.finetune_lr,
            int8: r.int8,
        })
    }

    fn arch(&self) -> Result<ModelArch, FieldError> {
        match (self.model.arch, &self.model.hidden) {
            (ArchName::Layers, None) => match &self.model.layers {
                Some(layers) => Ok(ModelArch::Layers(super::layers::to_wire(layers)?)),
                None => bad(
                    "model.layers",
                    "arch \"layers\" needs a layers list (docs/sdk.md, \"Your own architecture\")",
                ),
            },
            (_, _) if self.model.layers.is_some() && self.model.arch != ArchName::Layers => bad(
                "model.layers",
                format!(
                    "a {} has its own layers; set arch = \"layers\" to declare them",
                    self.model.arch
                ),
            ),
            (ArchName::Logreg, None) => Ok(ModelArch::LogReg),
            (ArchName::Cnn, None) => Ok(ModelArch::Cnn),
            (ArchName::Mlp, hidden) => {
                let hidden = hidden.clone().unwrap_or_else(|| DEFAULT_HIDDEN.to_vec());
                if hidden.is_empty()
                    || hidden.len() > 8
                    || hidden.iter().any(|&w| w == 0 || w > 8192)
                {
                    return bad(
                        "model.hidden",
                        format!("{hidden:?}: an mlp needs 1..=8 hidden layers of 1..=8192 units"),
                    );
                }
                Ok(ModelArch::Mlp { hidden })
            }
            (other, Some(_)) => bad(
                "model.hidden",
                format!("only an mlp has hidden widths, not a {other}"),
            ),
        }
    }

    fn hyper(&self) -> Result<HyperParams, FieldError> {
        let t = &self.training;
        in_range("training.rounds", t.rounds.into(), 1, MAX_ROUNDS.into())?;
        in_range(
            "training.local_steps",
            t.local_steps.into(),
            1,
            MAX_LOCAL_STEPS.into(),
        )?;
        in_range(
            "training.batch_size",
            t.batch_size.into(),
            1,
            MAX_BATCH.into(),
        )?;
        for (field, value) in [("training.lr", t.lr), ("training.outer_lr", t.outer_lr)] {
            if !value.is_finite() || value <= 0.0 || value > 100.0 {
                return bad(field, format!("{value} is not a step size in (0, 100]"));
            }
        }
        for (field, value) in [
            ("training.momentum", t.momentum),
            ("training.outer_momentum", t.outer_momentum),
        ] {
            if !value.is_finite() || !(0.0..1.0).contains(&value) {
                return bad(field, format!("{value} is not in [0, 1)"));
            }
        }
        in_range(
            "training.eval_every",
            t.eval_every.into(),
            1,
            MAX_ROUNDS.into(),
        )?;
        let compression = match t.compression {
            CompressionName::Int8 => {
                in_range(
                    "training.int8_block",
                    t.int8_block.into(),
                    1,
                    MAX_INT8_BLOCK.into(),
                )?;
                Compression::Int8 {
                    block: t.int8_block,
                }
            }
            CompressionName::Topk => {
                in_range("training.topk_permille", t.topk_permille.into(), 1, 1000)?;
                Compression::TopK {
                    permille: t.topk_permille,
                }
            }
            CompressionName::Fp32 => Compression::Fp32,
        };
        let aggregation = match t.aggregation {
            AggregationName::Mean => Aggregation::Mean,
            AggregationName::TrimmedMean => {
                in_range("training.trim", t.trim.into(), 1, MAX_TRIM.into())?;
                Aggregation::TrimmedMean { trim: t.trim }
            }
            AggregationName::CenteredClip => Aggregation::CenteredClip,
        };
        Ok(HyperParams {
            rounds: t.rounds,
            local_steps: t.local_steps,
            batch_size: t.batch_size,
            optimizer: t.optimizer,
            lr: t.lr,
            momentum: t.momentum,
            outer_lr: t.outer_lr,
            compression,
            seed: t.seed,
            schedule: t.schedule,
            aggregation,
            outer_momentum: t.outer_momentum,
            eval_every: t.eval_every,
            result: self.result_compression()?,
        })
    }
}

impl CheckedRequest {
    /// The shards `available` training samples make (after
    /// `max_train_samples`), within the protocol's bound.
    pub fn shards(&self, available: u64) -> Result<u64, FieldError> {
        let used = self
            .max_train_samples
            .map_or(available, |m| u64::from(m).min(available));
        let shards = used.div_ceil(u64::from(self.shard_size));
        if shards == 0 {
            return bad("data", "the dataset has no training samples");
        }
        if shards > MAX_SHARDS as u64 {
            return bad(
                "data.shard_size",
                format!(
                    "{used} samples in shards of {} make {shards} shards; at most {MAX_SHARDS}",
                    self.shard_size
                ),
            );
        }
        Ok(shards)
    }
}

/// Shards one owner may take of `shards`: floor(alpha x shards), which
/// must be at least one.
pub fn owner_cap(alpha_ppm: u32, shards: u64) -> Result<u64, FieldError> {
    let ppm = u64::from(PPM);
    let cap = u64::from(alpha_ppm) * shards / ppm;
    if cap == 0 {
        let least = ppm.div_ceil(shards.max(1)) as f64 / ppm as f64;
        return bad(
            "market.alpha",
            format!(
                "impossible cap: alpha {} of {shards} shards lets an owner take 0 shards \
                 (alpha x shards < 1); raise alpha to at least {least:.6} or cut more shards",
                f64::from(alpha_ppm) / ppm as f64
            ),
        );
    }
    Ok(cap)
}
