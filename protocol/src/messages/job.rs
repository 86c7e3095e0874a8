use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::error::{ProtocolError, Result};
use crate::identity::NodeId;
use crate::resources::ResourceVec;
use crate::signed::SignedMessage;

/// A model from the built-in zoo. Jobs name a model; they never ship code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelArch {
    LogReg,
    Mlp {
        hidden: Vec<u32>,
    },
    /// conv32-pool-conv64-pool-conv128-pool-fc128-fc10 (the seed paper's CNN).
    Cnn,
    /// A declared list of layers, run in order (docs/protocol.md,
    /// "Declared architectures"). Shapes are checked by the kernels.
    Layers(Vec<Layer>),
}

/// Most layers a declared architecture holds, counting those inside
/// residual blocks.
pub const MAX_DECLARED_LAYERS: usize = 64;
/// Most layers inside one residual block.
pub const MAX_RESIDUAL_LAYERS: usize = 16;

/// One entry of a declared architecture: a layer, or a residual block
/// `x + f(x)` of plain layers. Blocks do not nest, so decoding stays two
/// levels deep whatever a peer sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Op(LayerOp),
    Residual(Vec<LayerOp>),
}

/// A layer of a declared architecture (PyTorch's module in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOp {
    /// `Conv2d(in, out_channels, kernel, stride, padding)`.
    Conv2d {
        out_channels: u32,
        kernel: u32,
        stride: u32,
        padding: u32,
    },
    MaxPool2d {
        kernel: u32,
        stride: u32,
    },
    AvgPool2d {
        kernel: u32,
        stride: u32,
    },
    Linear {
        out_features: u32,
    },
    Relu,
    /// `GELU()` (exact, with erf).
    Gelu,
    Tanh,
    /// `Dropout(p)`, p in parts per million.
    Dropout {
        p_ppm: u32,
    },
    /// `BatchNorm2d` on images, `BatchNorm1d` on features.
    BatchNorm,
    Flatten,
}

/// A sample's shape as the data holds it: `channels x height x width`
/// values (row-major `(h, w, c)`), `F x 1 x 1` for F tabular features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub values: ValueKind,
}

/// How a shard stores its values, and what the model sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueKind {
    /// One byte each (shard magic `FGSHARD1`), scaled by 1/255.
    #[default]
    U8,
    /// f32 little-endian (shard magic `FGSHARDF`), used as they are.
    F32,
}

impl ValueKind {
    pub fn bytes(self) -> u64 {
        match self {
            ValueKind::U8 => 1,
            ValueKind::F32 => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: ModelArch,
    pub input: InputShape,
    pub classes: u32,
}

/// One shard of the training set: its content hash and sample count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub hash: Hash32,
    pub samples: u32,
}

/// Bytes of a shard's header on the wire (magic, version, shape, count).
pub const SHARD_HEADER_BYTES: u64 = 28;
/// Largest shard, in bytes on the wire: one shard fits in one fetch answer.
pub const MAX_SHARD_BYTES: u64 = 16 * 1024 * 1024;

impl ShardInfo {
    /// Its size on the wire and in a worker's memory: the header, then
    /// each sample's values (1 or 4 bytes each) and one label byte.
    pub fn bytes(&self, input: &InputShape) -> u64 {
        let per_sample = u64::from(input.channels)
            .saturating_mul(u64::from(input.height))
            .saturating_mul(u64::from(input.width))
            .saturating_mul(input.values.bytes())
            .saturating_add(1);
        SHARD_HEADER_BYTES.saturating_add(per_sample.saturating_mul(u64::from(self.samples)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetDescriptor {
    /// e.g. "fashion-mnist/builtin".
    pub name: String,
    pub shards: Vec<ShardInfo>,
    /// Hash of the held-out test set the coordinator evaluates on.
    pub test_hash: Hash32,
    pub test_samples: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Nesterov,
    Adam,
}

/// How workers encode their updates on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Fp32,
    /// int8 block quantisation with a per-block scale and error feedback.
    Int8 {
        block: u32,
    },
    /// Keep the largest `permille`/1000 of the entries (with error feedback).
    TopK {
        permille: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HyperParams {
    pub rounds: u32,
    /// Local steps per round (H). H = 1 is synchronous data-parallel SGD.
    pub local_steps: u32,
    /// Samples each local step takes from every shard a worker holds.
    pub batch_size: u32,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    /// Step size of the coordinator's outer update (1.0 = plain averaging).
    pub outer_lr: f32,
    pub compression: Compression,
    pub seed: u64,
    /// How the workers' learning rate changes over the rounds.
    pub schedule: LrSchedule,
    /// How the coordinator combines the round's deltas.
    pub aggregation: Aggregation,
    /// Nesterov momentum of the coordinator's outer step, in [0, 1): 0 is
    /// plain `params + outer_lr x mean`; DiLoCo uses 0.9 (docs/protocol.md,
    /// "Outer step").
    pub outer_momentum: f32,
    /// The coordinator evaluates the new parameters on the test set after
    /// every `eval_every`-th round and after the last (1: every round).
    /// Evaluation is on the round's critical path: over long links with
    /// a large test set, evaluating less often shortens rounds.
    pub eval_every: u32,
    /// What the coordinator does to the final model before it is the
    /// job's result (nothing by default).
    pub result: ModelCompression,
}

/// Compression of a job's final model (docs/sdk.md, "Compressed models"):
/// magnitude pruning of each weight tensor, fine-tuning with the pruned
/// weights held at zero, int8 storage with per-channel scales.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelCompression {
    /// Fraction of each weight tensor set to zero, in parts per million
    /// (below 10^6; 0: no pruning).
    pub prune_ppm: u32,
    /// Fine-tuning steps on the coordinator after pruning (0: none).
    pub finetune_steps: u32,
    pub finetune_lr: f32,
    pub int8: bool,
}

/// Most fine-tuning steps a job may ask of its coordinator.
pub const MAX_FINETUNE_STEPS: u32 = 10_000;

impl ModelCompression {
    /// Whether the result is compressed at all.
    pub fn is_requested(&self) -> bool {
        self.prune_ppm > 0 || self.int8
    }
}

impl HyperParams {
    /// Whether the coordinator evaluates after `round` (counted from 0):
    /// every `eval_every`-th round and always the last.
    pub fn evaluates_after(&self, round: u32) -> bool {
        (round + 1).is_multiple_of(self.eval_every.max(1)) || round + 1 >= self.rounds
    }
}

/// How the coordinator combines a round's accepted deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The sample-weighted mean.
    #[default]
    Mean,
    /// Coordinate-wise trimmed mean: per coordinate, the `trim` largest and
    /// `trim` smallest values are dropped (fewer if too few workers).
    TrimmedMean { trim: u32 },
    /// Centered clipping around the coordinate-wise median, with the
    /// median distance from it as the radius.
    CenteredClip,
}

/// Most workers a trimmed mean may drop at each end.
pub const MAX_TRIM: u32 = 1_000;

/// The workers' learning rate over the rounds of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` in every round.
    #[default]
    Constant,
    /// `lr * (1 + cos(pi * round / rounds)) / 2`: from `lr` in round 0
    /// towards 0 in the last round.
    Cosine,
}

impl HyperParams {
    /// The workers' learning rate in `round`.
    pub fn lr_at(&self, round: u32) -> f32 {
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let progress = f64::from(round.min(self.rounds)) / f64::from(self.rounds.max(1));
                (f64::from(self.lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
            }
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            other => Err(format!("{other:?} is not constant or cosine")),
        }
    }
}

/// What to do when the market cannot place every shard within the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortfallPolicy {
    /// Train on the shards that were placed.
    RunWithFewer,
    /// Wait for another bid window.
    Wait,
}

/// A training job, signed by its submitter's node (the coordinator). Its
/// id is the id of the signed message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub submitter: NodeId,
    pub nonce: u64,
    pub model: ModelSpec,
    pub dataset: DatasetDescriptor,
    pub hyper: HyperParams,
    pub demand_per_shard: ResourceVec,
    /// Highest price per shard the submitter pays, in milli-credits.
    pub limit_price: u64,
    /// Most of this job's shards one owner may take, in parts per million.
    pub alpha_ppm: u32,
    pub bid_window_ms: u64,
    pub round_timeout_ms: u64,
    /// Unix milliseconds after which the job is abandoned.
    pub deadline: u64,
    pub on_shortfall: ShortfallPolicy,
    /// Whether nodes the coordinator reaches only through a relay may bid
    /// (a relayed link is slower and costs the relay's bandwidth).
    pub relayed_workers: bool,
    /// Whether only updates an audit replays bit for bit are taken: a
    /// worker must declare `Arithmetic::X86Avx2Fma` (a CPU job only).
    pub exact_audits: bool,
    pub submitted_at: u64,
}

impl SignedMessage for JobSpec {
    const KIND: &'static str = "job";
    const MAX_BYTES: usize = 1024 * 1024;
}

pub const PPM: u32 = 1_000_000;
pub const MAX_SHARDS: usize = 25_000;
pub const MAX_ROUNDS: u32 = 100_000;

impl JobSpec {
    /// Checks that the spec is internally consistent. Every field a worker
    /// relies on is checked here, so a bad spec is refused before it is
    /// acted on.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| {
            Err(ProtocolError::InvalidField {
                kind: Self::KIND,
                field,
                reason,
            })
        };
        if self.alpha_ppm == 0 || self.alpha_ppm > PPM {
            return bad(
                "alpha_ppm",
                format!("{} is not in 1..=1000000", self.alpha_ppm),
            );
        }
        let shards = self.dataset.shards.len();
        if shards == 0 || shards > MAX_SHARDS {
            return bad(
                "dataset.shards",
                format!("{shards} shards, need 1..={MAX_SHARDS}"),
            );
        }
        if self.dataset.shards.iter().any(|s| s.samples == 0) {
            return bad("dataset.shards", "a shard has zero samples".into());
        }
        // What a worker holds is bounded by what it offers: a shard fits in
        // the memory each shard demands (so the market never gives a node
        // more data than its memory), and in one fetch answer.
        let largest = self
            .dataset
            .shards
            .iter()
            .map(|s| s.bytes(&self.model.input))
            .max()
            .unwrap_or(0);
        if largest > MAX_SHARD_BYTES {
            return bad(
                "dataset.shards",
                format!("a shard of {largest} bytes; at most {MAX_SHARD_BYTES}"),
            );
        }
        if self.exact_audits && self.demand_per_shard.gpu_milli > 0 {
            return bad(
                "exact_audits",
                crate::request::EXACT_AUDITS_ON_A_GPU.to_string(),
            );
        }
        let demanded = self.demand_per_shard.mem_mib.saturating_mul(1 << 20);
        if demanded < largest {
            return bad(
                "demand_per_shard.mem_mib",
                format!(
                    "{} MiB is less than the largest shard ({} MiB)",
                    self.demand_per_shard.mem_mib,
                    largest.div_ceil(1 << 20)
                ),
            );
        }
        let h = &self.hyper;
        if h.rounds == 0 || h.rounds > MAX_ROUNDS {
            return bad(
                "hyper.rounds",
                format!("{} is not in 1..={MAX_ROUNDS}", h.rounds),
            );
        }
        if h.local_steps == 0 || h.local_steps > 10_000 {
            return bad(
                "hyper.local_steps",
                format!("{} is not in 1..=10000", h.local_steps),
            );
        }
        if h.batch_size == 0 || h.batch_size > 65_536 {
            return bad(
                "hyper.batch_size",
                format!("{} is not in 1..=65536", h.batch_size),
            );
        }
        for (field, value) in [("hyper.lr", h.lr), ("hyper.outer_lr", h.outer_lr)] {
            if !value.is_finite() || value <= 0.0 || value > 100.0 {
                return bad(field, format!("{value} is not a positive finite step size"));
            }
        }
        if !h.momentum.is_finite() || !(0.0..1.0).contains(&h.momentum) {
            return bad("hyper.momentum", format!("{} is not in [0, 1)", h.momentum));
        }
        if !h.outer_momentum.is_finite() || !(0.0..1.0).contains(&h.outer_momentum) {
            return bad(
                "hyper.outer_momentum",
                format!("{} is not in [0, 1)", h.outer_momentum),
            );
        }
        if h.eval_every == 0 {
            return bad("hyper.eval_every", "0 is not at least 1".to_string());
        }
        match h.compression {
            Compression::Int8 { block } if block == 0 || block > 1 << 20 => {
                return bad(
                    "hyper.compression",
                    format!("int8 block {block} not in 1..=2^20"),
                );
            }
            Compression::TopK { permille } if permille == 0 || permille > 1000 => {
                return bad(
                    "hyper.compression",
                    format!("top-k {permille} permille not in 1..=1000"),
                );
            }
            _ => {}
        }
        let r = &h.result;
        if r.prune_ppm >= PPM
            || r.finetune_steps > MAX_FINETUNE_STEPS
            || (r.finetune_steps > 0
                && (r.prune_ppm == 0 || !(r.finetune_lr.is_finite() && r.finetune_lr > 0.0)))
        {
            return bad(
                "hyper.result",
                format!(
                    "pruning below 1, at most {MAX_FINETUNE_STEPS} fine-tuning steps, and those only after pruning with a positive rate: {r:?}"
                ),
            );
        }
        if let Aggregation::TrimmedMean { trim } = h.aggregation
            && (trim == 0 || trim > MAX_TRIM)
        {
            return bad(
                "hyper.aggregation",
                format!("trimmed mean of {trim} per end not in 1..={MAX_TRIM}"),
            );
        }
        let input = &self.model.input;
        if input.channels == 0 || input.height == 0 || input.width == 0 {
            return bad("model.input", "zero dimension".into());
        }
        // `F x 1 x 1` is F features (tabular data); anything else an image.
        // The kernels' `InputShape::check_bounds` holds the same rule.
        let features = input.height == 1 && input.width == 1;
        if features && input.channels > 4096 {
            return bad("model.input", "more than 4096 features".into());
        }
        if !features && (input.channels > 16 || input.height > 512 || input.width > 512) {
            return bad("model.input", "an image larger than 16x512x512".into());
        }
        if self.model.classes < 2 || self.model.classes > 10_000 {
            return bad(
                "model.classes",
                format!("{} is not in 2..=10000", self.model.classes),
            );
        }
        if let ModelArch::Mlp { hidden } = &self.model.arch
            && (hidden.is_empty() || hidden.len() > 8 || hidden.iter().any(|&w| w == 0 || w > 8192))
        {
            return bad(
                "model.arch",
                "MLP needs 1..=8 hidden layers of 1..=8192".into(),
            );
        }
        if let ModelArch::Layers(layers) = &self.model.arch {
            let total: usize = layers
                .iter()
                .map(|l| match l {
                    Layer::Op(_) => 1,
                    Layer::Residual(inner) => 1 + inner.len(),
                })
                .sum();
            let block_too_big = layers.iter().any(
                |l| matches!(l, Layer::Residual(inner) if inner.is_empty() || inner.len() > MAX_RESIDUAL_LAYERS),
            );
            if layers.is_empty() || total > MAX_DECLARED_LAYERS || block_too_big {
                return bad(
                    "model.layers",
                    format!(
                        "need 1..={MAX_DECLARED_LAYERS} layers in all and 1..={MAX_RESIDUAL_LAYERS} per residual block"
                    ),
                );
            }
        }
        if self.round_timeout_ms == 0 {
            return bad("round_timeout_ms", "must be positive".into());
        }
        if self.deadline <= self.submitted_at {
            return bad("deadline", "is not after submitted_at".into());
        }
        Ok(())
    }

    pub fn shard_count(&self) -> u32 {
        self.dataset.shards.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper(schedule: LrSchedule) -> HyperParams {
        HyperParams {
            rounds: 10,
            local_steps: 1,
            batch_size: 1,
            optimizer: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.0,
            outer_lr: 1.0,
            compression: Compression::Fp32,
            seed: 0,
            schedule,
            aggregation: Default::default(),
            outer_momentum: 0.0,
            eval_every: 1,
            result: ModelCompression::default(),
        }
    }

    #[test]
    fn cosine_decays_from_lr_to_zero_and_constant_stays() {
        let cosine = hyper(LrSchedule::Cosine);
        assert_eq!(cosine.lr_at(0), 0.1);
        assert!((cosine.lr_at(5) - 0.05).abs() < 1e-7);
        assert!(cosine.lr_at(9) > 0.0 && cosine.lr_at(9) < 0.003);
        assert!(cosine.lr_at(10) < 1e-9);
        assert!((1..10).all(|r| cosine.lr_at(r) < cosine.lr_at(r - 1)));
        assert_eq!(hyper(LrSchedule::Constant).lr_at(7), 0.1);
    }

    #[test]
    fn evaluation_every_nth_round_and_always_the_last() {
        let every = |n: u32| {
            let h = HyperParams {
                eval_every: n,
                ..hyper(LrSchedule::Constant)
            };
            (0..10)
                .filter(|&r| h.evaluates_after(r))
                .collect::<Vec<_>>()
        };
        assert_eq!(every(1), (0..10).collect::<Vec<_>>());
        assert_eq!(every(4), vec![3, 7, 9], "the 4th, the 8th and the last");
        assert_eq!(every(10), vec![9]);
        assert_eq!(every(50), vec![9], "the last round is always evaluated");
    }
}
