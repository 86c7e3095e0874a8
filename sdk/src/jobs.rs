//! The jobs API's request and response bodies (JSON). This is the wire
//! contract between the SDK, the node and any other language's client;
//! `docs/sdk.md` documents it with curl examples.
//!
//! A `job.toml` file is a [`JobRequest`] written in TOML: the same fields,
//! the same defaults, unknown fields refused.

use serde::{Deserialize, Serialize};

pub use fairgrid_protocol::messages::{LrSchedule, OptimizerKind, ShortfallPolicy};
/// The job request is the protocol's: one type, checked once
/// ([`JobRequest::check`]), for the SDK, the CLI, the node and the testnet.
pub use fairgrid_protocol::request::{
    AggregationName, ArchName, CompressionName, DataChoice, JobRequest, LayerChoice, MarketChoice,
    ModelChoice, ResultChoice, ShardDemand, TrainingChoice,
};

/// `POST /v1/jobs` answer (202 Accepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    pub job_id: String,
    pub coordinator: String,
    pub shards: u32,
    pub dataset: String,
}

/// `GET /v1/jobs`: one page of the jobs a node coordinates, newest first
/// (by submission time, then job id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobStatus>,
    /// Pass this as `before` to get the next (older) page; absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The query of `GET /v1/jobs?limit=N&before=CURSOR&id_prefix=HEX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListQuery {
    /// Jobs per page: 1..=[`MAX_JOBS_PER_PAGE`]; the node's default
    /// ([`DEFAULT_JOBS_PER_PAGE`]) when absent.
    pub limit: Option<u32>,
    /// A previous page's `next`: the jobs submitted before it.
    pub before: Option<String>,
    /// Only jobs whose id starts with these (lower-case) hex digits.
    pub id_prefix: Option<String>,
}

/// Jobs per page when the query does not say.
pub const DEFAULT_JOBS_PER_PAGE: u32 = 50;
/// Most jobs per page.
pub const MAX_JOBS_PER_PAGE: u32 = 500;

impl JobListQuery {
    /// The query string, `?` included (empty when nothing is set). Cursors
    /// and prefixes hold only digits, hex and `-`: nothing to escape.
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.limit {
            parts.push(format!("limit={limit}"));
        }
        if let Some(before) = &self.before {
            parts.push(format!("before={before}"));
        }
        if let Some(prefix) = &self.id_prefix {
            parts.push(format!("id_prefix={prefix}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
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

/// `GET /v1/jobs` (pages of these) and `GET /v1/jobs/{id}`.
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
        /// Each accepted worker's part (absent from nodes before 0.1 and
        /// after a coordinator restart mid-round).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        workers: Vec<WorkerRoundView>,
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

/// One worker's part in a completed round, as its coordinator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRoundView {
    pub node: String,
    pub owner: String,
    pub shards: u32,
    pub samples: u64,
    /// Bytes of its update.
    pub bytes_up: u64,
    /// From the round's start until its update was taken.
    pub millis: u64,
    /// Its training time by its own clock.
    #[serde(default)]
    pub compute_millis: u64,
    /// The time its bid's measured speed gives for its samples, if the bid
    /// carried one.
    #[serde(default)]
    pub expected_millis: Option<u64>,
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
    /// When the job asked for a compressed result (`[result]`): the file
    /// against the model as trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionView>,
}

/// Size and test accuracy of the compressed result against the model as
/// trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionView {
    pub size_before: u64,
    pub size_after: u64,
    pub test_accuracy_before: f32,
    pub test_accuracy_after: f32,
    /// Fraction of the weight tensors' entries that are zero.
    pub weight_sparsity: f32,
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
    /// Milli-credits earned, audits included.
    pub amount: u64,
    /// Of `amount`, what auditing other owners' work earned (paid like
    /// the work it replayed, on top of the allocation's payments).
    #[serde(default)]
    pub audit_amount: u64,
    pub shards: u32,
}
