//! The job request: what a developer asks a coordinator to train. It is
//! the body of `POST /v1/jobs` (JSON) and a `job.toml` file (TOML): the
//! same fields, the same defaults, unknown fields refused, and names that
//! are not in the lists below refused by the parser with the field's path.
//! [`JobRequest::check`] applies every rule that does not need the data,
//! once, for the SDK, the CLI, the node and the testnet alike; each error
//! names its field. `docs/sdk.md` documents it with examples.

mod check;
mod layers;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::messages::{LrSchedule, OptimizerKind, ShortfallPolicy};

pub use check::{
    CheckedRequest, EXACT_AUDITS_ON_A_GPU, FieldError, MAX_BID_WINDOW_SECS, MAX_DEADLINE_SECS,
    MAX_NAME_BYTES, MAX_ROUND_TIMEOUT_SECS, MAX_SHARD_SAMPLES, owner_cap,
};
pub use layers::LayerChoice;

/// `POST /v1/jobs`: what a developer asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A label for humans ("fmnist-cnn-demo").
    pub name: String,
    pub model: ModelChoice,
    pub data: DataChoice,
    #[serde(default)]
    pub training: TrainingChoice,
    #[serde(default)]
    pub market: MarketChoice,
    /// What to do to the trained model before it is the job's result.
    #[serde(default, skip_serializing_if = "ResultChoice::is_plain")]
    pub result: ResultChoice,
}

/// `[result]`: compression of the final model, done by the coordinator
/// once training ends (docs/sdk.md, "Compressed models"). By default the
/// result is the fp32 model as trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultChoice {
    /// Fraction of each weight tensor set to zero, smallest magnitudes
    /// first, in [0, 1).
    pub prune: f64,
    /// SGD steps on the training data after pruning, the pruned weights
    /// held at zero (on the coordinator; at most 10,000).
    pub finetune_steps: u32,
    pub finetune_lr: f32,
    /// Store the weights as int8 with one scale per output channel.
    pub int8: bool,
}

impl Default for ResultChoice {
    fn default() -> Self {
        ResultChoice {
            prune: 0.0,
            finetune_steps: 0,
            finetune_lr: 0.01,
            int8: false,
        }
    }
}

impl ResultChoice {
    pub fn is_plain(&self) -> bool {
        *self == ResultChoice::default()
    }
}

/// The zoo's models, or `layers` for a declared architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchName {
    Cnn,
    Mlp,
    Logreg,
    Layers,
}

impl ArchName {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchName::Cnn => "cnn",
            ArchName::Mlp => "mlp",
            ArchName::Logreg => "logreg",
            ArchName::Layers => "layers",
        }
    }
}

impl std::fmt::Display for ArchName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model from the built-in zoo, or declared layer by layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    pub arch: ArchName,
    /// Hidden widths, for "mlp" only (default [256, 128]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<u32>>,
    /// The layers, for "layers" only, in PyTorch's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerChoice>>,
}

/// Where the coordinator (the node the job is submitted to) reads the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataChoice {
    /// "builtin" (the subset shipped in the repo), "system" (the Debian
    /// package's full Fashion-MNIST) or a directory of IDX files on the
    /// coordinator's machine.
    pub source: String,
    /// Samples per shard.
    #[serde(default = "default_shard_size")]
    pub shard_size: u32,
    /// Use at most this many training samples (all if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train_samples: Option<u32>,
}

fn default_shard_size() -> u32 {
    250
}

/// How updates travel from workers to the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    /// int8 blocks with a per-block scale and error feedback.
    Int8,
    Fp32,
    /// The largest `topk_permille`/1000 of the entries, with error feedback.
    Topk,
}

/// How the coordinator combines the workers' deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationName {
    Mean,
    TrimmedMean,
    CenteredClip,
}

impl std::fmt::Display for CompressionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompressionName::Int8 => "int8",
            CompressionName::Fp32 => "fp32",
            CompressionName::Topk => "topk",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingChoice {
    pub rounds: u32,
    /// Local steps per round (H); 1 is synchronous data-parallel SGD.
    pub local_steps: u32,
    /// Samples each local step takes from every shard a worker holds (a
    /// worker with k shards steps on k x batch_size: work follows shards).
    pub batch_size: u32,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    /// Step size of the coordinator's outer update (1.0 = plain averaging).
    pub outer_lr: f32,
    /// Nesterov momentum of the outer update, in [0, 1): 0 (default) is
    /// plain averaging; with many local steps (DiLoCo) 0.9 with
    /// `outer_lr` 0.7 (docs/sdk.md, "Training over slow links").
    pub outer_momentum: f32,
    /// Evaluate on the test set after every this many rounds, and after
    /// the last (1, the default: every round).
    pub eval_every: u32,
    pub compression: CompressionName,
    pub int8_block: u32,
    pub topk_permille: u32,
    pub seed: u64,
    /// The workers' learning rate over the rounds: constant, or cosine
    /// (decays towards 0 by the last round).
    pub schedule: LrSchedule,
    /// How the coordinator combines the workers' deltas: `mean`, or a
    /// robust rule bounding what one hostile worker can do,
    /// `trimmed_mean` (drops `trim` workers at each end per coordinate) or
    /// `centered_clip`.
    pub aggregation: AggregationName,
    /// Workers a trimmed mean drops at each end, per coordinate.
    pub trim: u32,
}

impl Default for TrainingChoice {
    fn default() -> Self {
        TrainingChoice {
            rounds: 20,
            local_steps: 4,
            batch_size: 64,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            momentum: 0.9,
            outer_lr: 1.0,
            outer_momentum: 0.0,
            eval_every: 1,
            compression: CompressionName::Int8,
            int8_block: 256,
            topk_permille: 10,
            seed: 1,
            schedule: LrSchedule::Constant,
            aggregation: AggregationName::Mean,
            trim: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketChoice {
    /// Highest price per shard, in milli-credits.
    pub limit_price: u64,
    /// Most of the job's shards one owner may take (0 < alpha <= 1).
    pub alpha: f64,
    /// What one shard needs from a node.
    pub demand_per_shard: ShardDemand,
    pub bid_window_secs: u64,
    pub round_timeout_secs: u64,
    /// The job is abandoned after this long.
    pub deadline_secs: u64,
    pub on_shortfall: ShortfallPolicy,
    /// Take bids from nodes the coordinator reaches only through a relay
    /// (behind a NAT or a firewall, where hole punching failed).
    pub relayed_workers: bool,
    /// Take only workers whose rounds an audit replays bit for bit
    /// (x86-64 CPUs with AVX2 and FMA), so that no declared arithmetic
    /// buys a tolerance (docs/protocol.md, "Audits"). CPU jobs only.
    pub exact_audits: bool,
}

impl Default for MarketChoice {
    fn default() -> Self {
        MarketChoice {
            limit_price: 1000,
            alpha: 0.34,
            demand_per_shard: ShardDemand::default(),
            bid_window_secs: 3,
            round_timeout_secs: 30,
            deadline_secs: 3600,
            on_shortfall: ShortfallPolicy::RunWithFewer,
            relayed_workers: true,
            exact_audits: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardDemand {
    pub cpu_milli: u64,
    pub mem_mib: u64,
    pub gpu_milli: u64,
    pub gpu_mem_mib: u64,
}

impl Default for ShardDemand {
    fn default() -> Self {
        ShardDemand {
            cpu_milli: 100,
            mem_mib: 16,
            gpu_milli: 0,
            gpu_mem_mib: 0,
        }
    }
}
