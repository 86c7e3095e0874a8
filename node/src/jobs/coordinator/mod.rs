//! The coordinator: the node a job was submitted to. It signs and gossips
//! the spec, collects bids, clears and publishes allocations, runs the
//! rounds, handles churn, checkpoints, and pays at the end.
//!
//! - [`CoordJob`] is one job's runtime state; [`CoordState`] its
//!   checkpointed part.
//! - [`round`]: one round's orders and the pure checks on updates.
//! - [`clearing`]: market inputs, clearing and publishing allocations.
//! - [`driver`]: the task that moves a job through its phases.
//! - [`inbound`]: bids, updates, shard fetches and declines from workers.
//! - [`finish`]: the model file, credits and the final ledger entries.
//! - [`persist`]: checkpoints, and ledger entries written ahead into them.
//! - [`submit`]: a new job from the API, and resuming after a restart.

pub mod clearing;
pub mod driver;
pub mod finish;
pub mod inbound;
pub mod persist;
pub mod round;
pub mod submit;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use fairgrid_kernels::{CpuBackend, Trainer};
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::messages::{Allocation, Bid, JobSpec};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::data::JobData;
use super::events::{EventLog, EventRecord};
use super::request::JobPlan;
use crate::ledger::now_ms;
use round::RoundInProgress;

/// An allocation as recorded, with the bids it was cleared from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllocationRecord {
    pub signed: Signed<Allocation>,
    pub allocation: Allocation,
    pub bids: Vec<Signed<Bid>>,
    pub reason: String,
}

/// A completed round, for the report and the credits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    pub allocation: usize,
    /// Workers whose updates were accepted: (node, owner, shards).
    pub accepted: Vec<(NodeId, OwnerId, u32)>,
    pub train_loss: f32,
    pub test_accuracy: Option<f32>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
}

/// An owner's credit as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreditRecord {
    pub owner: OwnerId,
    pub amount: u64,
    pub shards: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub model_hash: Hash32,
    pub test_accuracy: f32,
    pub credits: Vec<CreditRecord>,
}

/// The checkpointed state of a coordinated job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordState {
    pub phase: JobState,
    pub error: Option<String>,
    pub submitted_at: u64,
    pub updated_at: u64,
    /// The latest bid of each node (bounded by `jobs.max_bids_per_job`).
    pub bids: BTreeMap<NodeId, Signed<Bid>>,
    /// Owner and owner label of each bidder, as its certificate says.
    pub owners: BTreeMap<NodeId, (OwnerId, String)>,
    /// Nodes left out of the next clearing because they missed work; a
    /// new bid brings them back.
    pub missing: BTreeSet<NodeId>,
    /// Nodes that misbehaved or refused the allocation: out for good.
    pub banned: BTreeSet<NodeId>,
    /// The allocation in force no longer matches who can work.
    pub needs_reclear: Option<String>,
    /// Cheapest ask seen (bids and adverts), for the no-bid message.
    pub cheapest_ask: Option<(u64, NodeId)>,
    /// When the current bid window closes.
    pub bidding_until: u64,
    pub allocations: Vec<AllocationRecord>,
    pub next_round: u32,
    pub rounds: Vec<RoundRecord>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Rounds in a row that ended without an accepted update.
    pub empty_rounds: u32,
    pub result: Option<JobResult>,
}

impl CoordState {
    pub fn new(now: u64, bid_window_ms: u64) -> Self {
        CoordState {
            phase: JobState::Bidding,
            error: None,
            submitted_at: now,
            updated_at: now,
            bids: BTreeMap::new(),
            owners: BTreeMap::new(),
            missing: BTreeSet::new(),
            banned: BTreeSet::new(),
            needs_reclear: None,
            cheapest_ask: None,
            bidding_until: now + bid_window_ms,
            allocations: Vec::new(),
            next_round: 0,
            rounds: Vec::new(),
            bytes_up: 0,
            bytes_down: 0,
            empty_rounds: 0,
            result: None,
        }
    }

    pub fn current(&self) -> Option<&AllocationRecord> {
        self.allocations.last()
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, JobState::Finished | JobState::Failed)
    }

    /// Every node that holds shards in any allocation of the job.
    pub fn participants(&self) -> BTreeSet<NodeId> {
        self.allocations
            .iter()
            .flat_map(|a| a.allocation.assignments.iter().map(|x| x.node))
            .collect()
    }

    /// Whether `node` holds shard `index` in any allocation of the job.
    pub fn holds(&self, node: &NodeId, index: u32) -> bool {
        self.allocations
            .iter()
            .any(|a| a.allocation.shards_of(node).binary_search(&index).is_ok())
    }
}

/// What a checkpoint holds (the parameters are stored beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub plan: JobPlan,
    pub spec: Signed<JobSpec>,
    pub state: CoordState,
    pub events: EventRecord,
}

/// One coordinated job at run time.
pub struct CoordJob {
    pub id: Hash32,
    pub plan: JobPlan,
    pub signed_spec: Signed<JobSpec>,
    pub spec: JobSpec,
    pub param_count: usize,
    /// The shards and test set; dropped once the job ends.
    pub data: Mutex<Option<Arc<JobData>>>,
    pub state: Mutex<CoordState>,
    pub params: Mutex<Arc<Vec<f32>>>,
    pub round: Mutex<Option<RoundInProgress>>,
    pub events: EventLog,
    /// Wakes the driver when an update or a disconnect settles an order.
    pub wake: Notify,
    /// The coordinator's evaluator (built on first use, blocking threads only).
    pub evaluator: Arc<Mutex<Option<Trainer<CpuBackend>>>>,
    /// Ledger entries the job's state implies but the ledger may not hold
    /// yet. They go into the checkpoint before they are appended, so a
    /// crash between the two neither loses nor doubles them.
    pub unrecorded: Mutex<Vec<EntryBody>>,
    /// Checkpoints are written one at a time, each from the state as it is
    /// when its turn comes, so an older one never lands after a newer one.
    pub persisting: tokio::sync::Mutex<()>,
}

impl CoordJob {
    pub fn state(&self) -> std::sync::MutexGuard<'_, CoordState> {
        self.state.lock().expect("job state lock")
    }

    pub fn event(&self, kind: JobEventKind) {
        self.events.push(now_ms(), kind);
    }

    pub fn data(&self) -> Option<Arc<JobData>> {
        self.data.lock().expect("job data lock").clone()
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            plan: self.plan.clone(),
            spec: self.signed_spec.clone(),
            state: self.state().clone(),
            events: self.events.record(),
        }
    }

    /// Moves the job to Failed with `reason` (once). The `JobFailed`
    /// entry is written ahead; the driver checkpoints and records it.
    pub fn fail(&self, reason: String) {
        let mut state = self.state();
        if state.is_terminal() {
            return;
        }
        state.phase = JobState::Failed;
        state.error = Some(reason.clone());
        state.updated_at = now_ms();
        let rounds = state.rounds.len() as u32;
        drop(state);
        let mut clipped = reason.clone();
        crate::net::wire::clip(&mut clipped, 900);
        self.unrecorded
            .lock()
            .expect("unrecorded lock")
            .push(EntryBody::JobFailed {
                job_id: self.id,
                rounds,
                reason: clipped,
            });
        self.event(JobEventKind::Failed { reason });
    }
}
