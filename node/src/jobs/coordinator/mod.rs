//! The coordinator: the node a job was submitted to. It signs and gossips
//! the spec, collects bids, clears and publishes allocations, runs the
//! rounds, handles churn, checkpoints, and pays at the end.
//!
//! - [`machine`]: the job's logic as a pure state machine; everything
//!   else here is its shell.
//! - [`CoordJob`] holds one job's machine; [`CoordState`] is its
//!   checkpointed state.
//! - [`round`]: one round's orders and the pure checks on updates.
//! - [`driver`]: the task that executes a job's outputs in order.
//! - [`clearing`]: the market clearing, and publishing allocations.
//! - [`inbound`]: bids, updates, shard fetches and declines from workers.
//! - [`finish`]: aggregation, evaluation and the model file.
//! - [`persist`]: checkpoints, and ledger entries written ahead into them.
//! - [`submit`]: a new job from the API, and resuming after a restart.

pub mod auditing;
pub mod awaited;
pub mod clearing;
pub mod driver;
pub mod finish;
pub mod inbound;
pub mod machine;
pub mod persist;
pub mod round;
pub mod submit;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::jobs::device::JobTrainer;
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::messages::{Allocation, Bid, JobSpec};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::JobState;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::data::JobData;
use super::events::{EventLog, EventRecord};
use super::request::JobPlan;
use crate::ledger::now_ms;
use machine::{Coordinator, Input, Output};

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
    /// Audits other owners' nodes did for the round, upheld (paid).
    pub audited: Vec<crate::jobs::credits::AuditWork>,
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
    /// Of `amount`, what audits of other owners' work earned.
    pub audits: u64,
    pub shards: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub model_hash: Hash32,
    pub test_accuracy: f32,
    pub credits: Vec<CreditRecord>,
    /// When the job asked for a compressed result: what it cost.
    pub compression: Option<CompressionReport>,
}

/// The result file against the model as trained (test accuracy of each).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompressionReport {
    pub size_before: u64,
    pub size_after: u64,
    pub accuracy_before: f32,
    pub accuracy_after: f32,
    pub weight_sparsity: f32,
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
    /// The residual each worker's last acknowledged update left (what its
    /// next update's `residual_in` must be, unless zero).
    pub residuals: BTreeMap<NodeId, Hash32>,
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
            residuals: BTreeMap::new(),
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

/// One coordinated job at run time: the state machine behind a lock that
/// is held only to hand it one input, and the queue of its outputs, which
/// the job's task (`driver`) executes in order.
pub struct CoordJob {
    pub id: Hash32,
    pub plan: JobPlan,
    pub signed_spec: Signed<JobSpec>,
    pub spec: JobSpec,
    pub param_count: usize,
    /// The shards and test set; dropped once the job ends.
    pub data: Mutex<Option<Arc<JobData>>>,
    machine: Mutex<Coordinator>,
    outputs: mpsc::UnboundedSender<Output>,
    /// Checkpoints queued so far (each `Persist` or `WriteAhead` output),
    /// and the number of the last one on disk: a request is answered only
    /// once the checkpoint that holds it is written.
    checkpoints_queued: AtomicU64,
    /// Checkpoint outputs the job's task has taken from the queue (they
    /// are taken in the order they were numbered).
    pub(crate) checkpoints_taken: AtomicU64,
    pub(crate) checkpoints_written: watch::Sender<u64>,
    /// Taken by the job's task for as long as it runs.
    pub(crate) inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Output>>,
    pub events: EventLog,
    /// The coordinator's evaluator (built on first use, blocking threads only).
    pub evaluator: Arc<Mutex<Option<JobTrainer>>>,
    /// Audit reports asked of other owners' nodes and not yet in.
    pub awaited_reports: awaited::AwaitedReports,
}

/// Read access to a job's state (the machine's lock is held meanwhile).
pub struct StateGuard<'a>(MutexGuard<'a, Coordinator>);

impl Deref for StateGuard<'_> {
    type Target = CoordState;
    fn deref(&self) -> &CoordState {
        self.0.state()
    }
}

impl CoordJob {
    pub fn new(
        plan: JobPlan,
        signed_spec: Signed<JobSpec>,
        data: Option<Arc<JobData>>,
        events: EventLog,
        machine: Coordinator,
    ) -> CoordJob {
        let (outputs, inbox) = mpsc::unbounded_channel();
        CoordJob {
            id: machine.id(),
            plan,
            signed_spec,
            spec: machine.spec().clone(),
            param_count: machine.params().len(),
            data: Mutex::new(data),
            machine: Mutex::new(machine),
            outputs,
            checkpoints_queued: AtomicU64::new(0),
            checkpoints_taken: AtomicU64::new(0),
            checkpoints_written: watch::channel(0).0,
            inbox: tokio::sync::Mutex::new(inbox),
            events,
            evaluator: Arc::new(Mutex::new(None)),
            awaited_reports: awaited::AwaitedReports::default(),
        }
    }

    /// The machine. A panic while it was held does not make it unusable:
    /// the supervisor still has to fail the job through it.
    pub fn machine(&self) -> MutexGuard<'_, Coordinator> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> StateGuard<'_> {
        StateGuard(self.machine())
    }

    /// Hands the machine one input now and queues its outputs for the
    /// job's task (under the lock, so they queue in the machine's order);
    /// returns the answer for the peer that sent it.
    pub fn handle(&self, input: Input) -> Result<(), String> {
        self.handle_durably(input).0
    }

    /// [`CoordJob::handle`], also giving the number of the checkpoint
    /// that holds the input's effect, if it queued one (see
    /// [`CoordJob::checkpointed`]).
    pub fn handle_durably(&self, input: Input) -> (Result<(), String>, Option<u64>) {
        let mut machine = self.machine();
        let ended_before = machine.has_ended();
        let handled = machine.handle(now_ms(), input);
        if ended_before {
            // The job's task stopped at its end: a late message's outputs
            // would only pile up in its queue.
            return (handled.reply, None);
        }
        let ticket = self.queue(handled.outputs);
        (handled.reply, ticket)
    }

    /// Queues outputs for the job's task; returns the number of the last
    /// checkpoint among them. Once the task has stopped they are dropped:
    /// the job has ended, or the node is stopping.
    pub fn queue(&self, outputs: Vec<Output>) -> Option<u64> {
        let mut ticket = None;
        for output in outputs {
            if matches!(output, Output::Persist | Output::WriteAhead { .. }) {
                ticket = Some(self.checkpoints_queued.fetch_add(1, Ordering::SeqCst) + 1);
            }
            let _ = self.outputs.send(output);
        }
        ticket
    }

    /// Waits until checkpoint `ticket` (or a later one) is on disk;
    /// false if that takes longer than `limit`.
    pub async fn checkpointed(&self, ticket: u64, limit: Duration) -> bool {
        let mut written = self.checkpoints_written.subscribe();
        tokio::time::timeout(limit, written.wait_for(|&n| n >= ticket))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn data(&self) -> Option<Arc<JobData>> {
        self.data.lock().expect("job data lock").clone()
    }

    /// The checkpoint of the machine as it stands, with the parameters
    /// (followed by the outer velocity, when the job has one: see
    /// [`split_params`]) and the entries not yet recorded.
    pub fn checkpoint(&self) -> (Checkpoint, Vec<f32>, Vec<EntryBody>) {
        let snapshot = self.machine().snapshot();
        let checkpoint = Checkpoint {
            plan: self.plan.clone(),
            spec: self.signed_spec.clone(),
            state: snapshot.state,
            events: self.events.record(),
        };
        let mut stored = Vec::with_capacity(snapshot.params.len() + snapshot.velocity.len());
        stored.extend_from_slice(&snapshot.params);
        stored.extend_from_slice(&snapshot.velocity);
        (checkpoint, stored, snapshot.unrecorded)
    }
}

/// A checkpoint's parameter bytes (fp32 LE) for `spec`'s model, as the
/// parameters and the outer velocity.
pub fn stored_params(
    spec: &fairgrid_protocol::messages::JobSpec,
    bytes: &[u8],
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let stored = crate::jobs::model::params_from_bytes(bytes)
        .ok_or("the parameters are not finite fp32 values")?;
    let count = crate::jobs::model::kernels_spec(&spec.model).param_count();
    let count = usize::try_from(count).map_err(|e| e.to_string())?;
    split_params(stored, count)
}

/// A checkpoint's stored values as the parameters and the outer velocity:
/// `param_count` values, then as many again when the job carries outer
/// momentum (none otherwise). Anything else does not fit the job.
pub fn split_params(
    mut stored: Vec<f32>,
    param_count: usize,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    if stored.len() == param_count {
        return Ok((stored, Vec::new()));
    }
    if param_count > 0 && stored.len() == 2 * param_count {
        let velocity = stored.split_off(param_count);
        return Ok((stored, velocity));
    }
    Err(format!(
        "{} stored values for a model of {param_count} parameters",
        stored.len()
    ))
}

#[cfg(test)]
mod stored_params_tests {
    use super::split_params;

    #[test]
    fn stored_values_are_the_parameters_then_the_velocity_or_nothing_else() {
        assert_eq!(
            split_params(vec![1.0, 2.0], 2).unwrap(),
            (vec![1.0, 2.0], vec![])
        );
        assert_eq!(
            split_params(vec![1.0, 2.0, 0.5, 0.25], 2).unwrap(),
            (vec![1.0, 2.0], vec![0.5, 0.25])
        );
        let err = split_params(vec![1.0, 2.0, 3.0], 2).unwrap_err();
        assert!(
            err.contains("3 stored values for a model of 2 parameters"),
            "{err}"
        );
        assert!(split_params(vec![], 0).is_ok());
        assert!(split_params(vec![1.0], 0).is_err());
    }
}
