//! The worker: hears of jobs on the jobs topic, bids, verifies the
//! allocations it is sent, fetches its shards and trains its rounds.
//!
//! - [`policy`]: whether to bid and with what;
//! - [`inbound`]: allocations (verified with `market::verify`) and round
//!   starts from the coordinator;
//! - [`shards`]: fetching, hash-checking and caching shards;
//! - [`train`]: a round of local SGD on a blocking thread, then the
//!   compressed, signed update.
//!
//! A worker's record (the spec, its bid nonce, the allocations it
//! verified) is kept on disk, so a restarted worker rejoins its jobs by
//! bidding again.

pub mod gate;
pub mod inbound;
pub mod policy;
pub mod shards;
pub mod train;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fairgrid_kernels::Shard;
use fairgrid_protocol::messages::{Bid, JobSpec, MAX_CLOCK_SKEW_MS};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::coordinator::inbound::JOB_ENDED;
use super::{ledger_sync, transport};
use crate::jobs::JobsContext;
use crate::ledger::now_ms;
use crate::net::{Request, Response, Verdict};

const TARGET: &str = "fairgrid::jobs";
/// Verified allocations remembered per job.
const MAX_ALLOCATIONS: usize = 64;

/// What a worker keeps on disk about a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub spec: Signed<JobSpec>,
    pub nonce: u64,
    /// Verified allocations: hash -> this node's shards in it.
    pub allocations: BTreeMap<Hash32, Vec<u32>>,
    pub finished: bool,
}

pub struct WorkerJob {
    pub id: Hash32,
    pub signed_spec: Signed<JobSpec>,
    pub spec: JobSpec,
    pub coordinator: NodeId,
    pub record: Mutex<WorkerRecord>,
    /// The round being trained, if any.
    pub training: Mutex<Option<gate::RoundKey>>,
    /// The last round trained and its update, kept so that a re-sent
    /// start of that round (a restarted coordinator) gets it again.
    pub trained: Mutex<Option<(gate::RoundKey, Arc<train::Trained>)>>,
    pub engine: Arc<Mutex<Option<train::Engine>>>,
    /// Shards loaded for training, by index.
    pub shards: Mutex<BTreeMap<u32, Arc<Shard>>>,
    /// One shard fetch at a time per job.
    pub fetching: tokio::sync::Mutex<()>,
}

impl WorkerJob {
    fn new(record: WorkerRecord, spec: JobSpec) -> WorkerJob {
        WorkerJob {
            id: record.spec.id(),
            signed_spec: record.spec.clone(),
            coordinator: spec.submitter,
            spec,
            record: Mutex::new(record),
            training: Mutex::new(None),
            trained: Mutex::new(None),
            engine: Arc::new(Mutex::new(None)),
            shards: Mutex::new(BTreeMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn record(&self) -> std::sync::MutexGuard<'_, WorkerRecord> {
        self.record.lock().expect("worker record lock")
    }

    pub fn is_finished(&self) -> bool {
        self.record().finished
    }

    /// This node's shards in a verified allocation.
    pub fn shards_in(&self, allocation: &Hash32) -> Option<Vec<u32>> {
        self.record().allocations.get(allocation).cloned()
    }

    fn remember(&self, allocation: Hash32, shards: Vec<u32>) {
        let mut record = self.record();
        record.allocations.insert(allocation, shards);
        while record.allocations.len() > MAX_ALLOCATIONS {
            let first = *record.allocations.keys().next().expect("non-empty");
            record.allocations.remove(&first);
        }
    }
}

pub async fn save(ctx: &JobsContext, job: &WorkerJob) {
    let record = job.record().clone();
    if let Err(e) = ctx.jobs.store.put_worker(&job.id, &record).await {
        warn!(target: TARGET, job = %job.id, error = %e, "saving the worker record failed");
    }
}

/// Validates a gossiped job spec (the verdict decides forwarding) and, if
/// this node should work on it, bids in the background.
pub fn on_gossip(ctx: &Arc<JobsContext>, source: PeerId, data: &[u8]) -> Verdict {
    let checked = Signed::<JobSpec>::from_bytes(data)
        .map_err(|e| e.to_string())
        .and_then(|signed| {
            let (signer, spec) = signed.verify_and_decode().map_err(|e| e.to_string())?;
            if signer != spec.submitter.0 {
                return Err("job spec not signed by its submitter".into());
            }
            spec.validate().map_err(|e| e.to_string())?;
            Ok((signed, spec))
        });
    let (signed, spec) = match checked {
        Ok(v) => v,
        Err(reason) => {
            warn!(target: TARGET, peer = %source, %reason, "job spec rejected");
            return Verdict::Reject;
        }
    };
    let now = now_ms();
    if spec.deadline <= now || spec.submitted_at > now + MAX_CLOCK_SKEW_MS {
        debug!(target: TARGET, peer = %source, "job spec out of its time window; ignored");
        return Verdict::Ignore;
    }
    if now > spec.submitted_at.saturating_add(spec.bid_window_ms) {
        // Still valid for others to see; too late to bid on.
        return Verdict::Accept;
    }
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move { bid(&ctx, signed, spec).await });
    Verdict::Accept
}

/// Bids on a job the node heard of (or its own), if the policy says so.
pub async fn bid(ctx: &Arc<JobsContext>, signed: Signed<JobSpec>, spec: JobSpec) {
    let id = signed.id();
    if ctx.jobs.worker(&id).is_some() {
        return;
    }
    let now = now_ms();
    let (offered, floor) = ctx.host.offer(now);
    let terms = match policy::decide(
        &ctx.config.worker,
        offered,
        floor,
        ctx.jobs.active_workers(),
        spec.submitter == ctx.node_id,
        &spec,
    ) {
        Ok(t) => t,
        Err(reason) => {
            info!(target: TARGET, job = %id, %reason, "not bidding");
            return;
        }
    };
    let record = WorkerRecord {
        spec: signed,
        nonce: now,
        allocations: BTreeMap::new(),
        finished: false,
    };
    let job = Arc::new(WorkerJob::new(record, spec));
    if !ctx.jobs.insert_worker(Arc::clone(&job)) {
        return;
    }
    // A coordinator that cannot be reached may be restarting: it resumes
    // with a fresh bid window, so the bid is tried again for a while.
    let mut last = String::new();
    for attempt in 0..BID_TRIES {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        match send_bid(ctx, &job, terms.ask, terms.capacity).await {
            Ok(()) => {
                info!(target: TARGET, job = %id, ask = terms.ask, "bid sent");
                save(ctx, &job).await;
                return;
            }
            Err(BidError::Refused(reason)) => {
                info!(target: TARGET, job = %id, %reason, "bid not taken");
                ctx.jobs.remove_worker(&id);
                return;
            }
            Err(BidError::Retry(reason)) => {
                debug!(target: TARGET, job = %id, attempt, %reason, "coordinator not reachable or busy; bidding again shortly");
                last = reason;
            }
        }
    }
    info!(target: TARGET, job = %id, reason = %last, "bid not delivered");
    ctx.jobs.remove_worker(&id);
}

/// How a refusal that is worth trying again begins.
pub const BUSY: &str = "busy";

/// Tries of a bid whose coordinator cannot be reached, 1 s apart.
const BID_TRIES: u32 = 15;

enum BidError {
    Refused(String),
    /// Unreachable, or busy (e.g. still loading its jobs after a restart).
    Retry(String),
}

async fn send_bid(
    ctx: &Arc<JobsContext>,
    job: &WorkerJob,
    ask: u64,
    capacity: fairgrid_protocol::ResourceVec,
) -> Result<(), BidError> {
    let nonce = job.record().nonce;
    let bid = Signed::sign(
        &ctx.key,
        &Bid {
            job_id: job.id,
            node: ctx.node_id,
            owner_cert: ctx.cert.clone(),
            ask,
            capacity,
            nonce,
            issued_at: now_ms(),
        },
    );
    match transport::call(ctx, job.coordinator, Request::JobBid(bid)).await {
        Ok(Response::Accepted) => Ok(()),
        Ok(Response::Refused { reason }) if reason.starts_with(BUSY) => {
            Err(BidError::Retry(reason))
        }
        Ok(Response::Refused { reason }) => Err(BidError::Refused(reason)),
        Ok(_) => Err(BidError::Refused("unexpected answer to a bid".into())),
        Err(e) => Err(BidError::Retry(e.to_string())),
    }
}

/// Bids again on a job this node worked on (after a restart, or after the
/// coordinator stopped counting on it), with a higher nonce. If the job
/// has ended, exchanges its ledger entries instead.
pub async fn rejoin(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>) {
    let now = now_ms();
    {
        let mut record = job.record();
        record.nonce = record.nonce.saturating_add(1).max(now);
    }
    let (offered, floor) = ctx.host.offer(now);
    let ask = if ctx.config.worker.ask > 0 {
        ctx.config.worker.ask
    } else {
        floor
    };
    save(ctx, job).await;
    for attempt in 0..10u32 {
        match send_bid(ctx, job, ask, offered).await {
            Ok(()) => {
                info!(target: TARGET, job = %job.id, "rejoined the job");
                return;
            }
            Err(BidError::Refused(reason)) if reason.contains(JOB_ENDED) => {
                match ledger_sync::exchange(ctx, job.coordinator, job.id).await {
                    Ok(_) => {
                        info!(target: TARGET, job = %job.id, "job had ended; ledger entries exchanged")
                    }
                    Err(e) => {
                        warn!(target: TARGET, job = %job.id, error = %e, "job had ended; ledger exchange failed")
                    }
                }
                finished(ctx, job).await;
                return;
            }
            Err(BidError::Retry(reason)) => {
                debug!(target: TARGET, job = %job.id, attempt, %reason, "coordinator not reachable or busy yet");
            }
            Err(BidError::Refused(reason)) => {
                info!(target: TARGET, job = %job.id, %reason, "rejoin refused; leaving the job");
                finished(ctx, job).await;
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    warn!(target: TARGET, job = %job.id, "coordinator unreachable; will try again on the next start");
}

/// The job ended (its ledger entries arrived, or the coordinator says
/// so): free the training state and remember it as finished.
pub async fn finished(ctx: &JobsContext, job: &WorkerJob) {
    job.record().finished = true;
    job.engine.lock().expect("engine lock").take();
    job.trained.lock().expect("trained lock").take();
    job.shards.lock().expect("shards lock").clear();
    save(ctx, job).await;
}

/// Loads the worker records of a restarted node; returns the jobs that
/// have not ended, to rejoin.
pub fn load(ctx: &Arc<JobsContext>) -> Vec<Arc<WorkerJob>> {
    let mut rejoining = Vec::new();
    for item in ctx.jobs.store.workers::<WorkerRecord>() {
        let (id, record) = match item {
            Ok(v) => v,
            Err(e) => {
                warn!(target: TARGET, error = %e, "skipping a worker record");
                continue;
            }
        };
        if record.finished {
            continue;
        }
        let Ok((_, spec)) = record.spec.verify_and_decode() else {
            let _ = ctx.jobs.store.remove_worker(&id);
            continue;
        };
        if spec.deadline <= now_ms() {
            let _ = ctx.jobs.store.remove_worker(&id);
            continue;
        }
        let job = Arc::new(WorkerJob::new(record, spec));
        if ctx.jobs.insert_worker(Arc::clone(&job)) {
            rejoining.push(job);
        }
    }
    rejoining
}
