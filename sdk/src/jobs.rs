//! The jobs API's request and response bodies (JSON). This is the wire
//! contract between the SDK, the node and any other language's client;
//! `docs/sdk.md` documents it with curl examples.
//!
//! A `job.toml` file is a [`JobRequest`] written in TOML: the same fields,
//! the same defaults, unknown fields refused.

use serde::{Deserialize, Serialize};

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
}

/// A model from the built-in zoo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    /// "cnn", "mlp" or "logreg".
    pub arch: String,
    /// Hidden widths, for "mlp" only (default [256, 128]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<u32>>,
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
    #[serde(default = "defaults::shard_size")]
    pub shard_size: u32,
    /// Use at most this many training samples (all if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train_samples: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingChoice {
    pub rounds: u32,
    /// Local steps per round (H); 1 is synchronous data-parallel SGD.
    pub local_steps: u32,
    pub batch_size: u32,
    /// "sgd", "nesterov" or "adam".
    pub optimizer: String,
    pub lr: f32,
    pub momentum: f32,
    /// Step size of the coordinator's outer update (1.0 = plain averaging).
    pub outer_lr: f32,
    /// "int8" (default, with error feedback), "fp32" or "topk".
    pub compression: String,
    pub int8_block: u32,
    pub topk_permille: u32,
    pub seed: u64,
    /// The workers' learning rate over the rounds: "constant" (default)
    /// or "cosine" (decays towards 0 by the last round).
    pub schedule: String,
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
    /// "run_with_fewer" or "wait".
    pub on_shortfall: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardDemand {
    pub cpu_milli: u64,
    pub mem_mib: u64,
    pub gpu_milli: u64,
    pub gpu_mem_mib: u64,
}

/// `POST /v1/jobs` answer (202 Accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    pub job_id: String,
    pub coordinator: String,
    pub shards: u32,
    pub dataset: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Bidding,
    Training,
    /// No capped supply could take the shards and the job waits.
    Waiting,
    Finished,
    Failed,
}

/// `GET /v1/jobs` (a list of these) and `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub name: String,
    pub state: JobState,
    pub model: String,
    pub dataset: String,
    pub shards: u32,
    pub round: u32,
    pub rounds: u32,
    pub last_loss: Option<f32>,
    pub last_accuracy: Option<f32>,
    pub workers: u32,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    /// Estimated time to finish, from the mean round time so far.
    pub eta_secs: Option<u64>,
    pub error: Option<String>,
}

/// `GET /v1/jobs/{id}/events?after=N&wait_secs=S`: events with `seq > N`,
/// waiting up to S seconds (long poll) when there are none yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvents {
    pub events: Vec<JobEvent>,
    /// Pass this as `after` in the next call.
    pub next: u64,
    pub state: JobState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub seq: u64,
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: JobEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEventKind {
    Submitted {
        shards: u32,
    },
    BidReceived {
        node: String,
        owner: String,
        ask: u64,
    },
    Cleared {
        attempt: u32,
        winners: u32,
        assigned: u32,
        shortfall: u32,
    },
    RoundStarted {
        round: u32,
        workers: u32,
    },
    RoundCompleted {
        round: u32,
        train_loss: f32,
        test_accuracy: Option<f32>,
        updates_accepted: u32,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
    },
    UpdateRejected {
        round: u32,
        node: String,
        reason: String,
    },
    WorkerMissed {
        round: u32,
        node: String,
    },
    Reallocated {
        attempt: u32,
        reason: String,
    },
    Finished {
        test_accuracy: f32,
        rounds: u32,
    },
    Failed {
        reason: String,
    },
}

/// `GET /v1/jobs/{id}/allocation`: the allocation(s) in force and the
/// fairness of the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationView {
    pub job_id: String,
    pub attempt: u32,
    pub allocation_hash: String,
    pub shards: u32,
    pub shortfall: u32,
    pub alpha: f64,
    /// Shards per owner that alpha allows.
    pub owner_cap: u32,
    pub nodes: Vec<NodeShareView>,
    pub owners: Vec<OwnerAllocationView>,
    pub hhi: u32,
    pub gini: f64,
    pub nakamoto_50: u32,
    pub nakamoto_33: u32,
    pub max_owner_share: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShareView {
    pub node: String,
    pub owner: String,
    pub ask: u64,
    pub shards: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerAllocationView {
    pub owner: String,
    pub label: String,
    pub shards: u32,
    pub cap: u32,
    pub share: f64,
    pub cost: u64,
    pub payment: u64,
}

/// `GET /v1/jobs/{id}/report`: the training report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    pub job_id: String,
    pub state: JobState,
    pub rounds: Vec<RoundReport>,
    pub final_test_accuracy: Option<f32>,
    pub allocation: Option<AllocationView>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub credits: Vec<CreditView>,
    /// Hash of the final model file (BLAKE3, hex).
    pub model_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    pub train_loss: f32,
    pub test_accuracy: Option<f32>,
    pub participants: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditView {
    pub owner: String,
    pub label: String,
    pub amount: u64,
    pub shards: u32,
}

/// Defaults shared by the serde attributes and `Default` impls.
pub mod defaults {
    pub fn shard_size() -> u32 {
        250
    }
}

impl Default for TrainingChoice {
    fn default() -> Self {
        TrainingChoice {
            rounds: 20,
            local_steps: 4,
            batch_size: 64,
            optimizer: "sgd".into(),
            lr: 0.05,
            momentum: 0.9,
            outer_lr: 1.0,
            compression: "int8".into(),
            int8_block: 256,
            topk_permille: 10,
            seed: 1,
            schedule: "constant".into(),
        }
    }
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
            on_shortfall: "run_with_fewer".into(),
        }
    }
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
