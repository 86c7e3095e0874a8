//! The worker: hears of jobs on the jobs topic, bids, verifies the
//! allocations it is sent, fetches its shards and trains its rounds.
//!
//! - [`machine`]: the worker's part in a job as a pure state machine;
//!   everything else here is its shell;
//! - [`gate`]: whether a round start is new work, the same work, or refused;
//! - [`policy`]: whether to bid and with what;
//! - [`inbound`]: allocations (verified with `market::verify`) and round
//!   starts from the coordinator;
//! - [`shards`]: fetching, hash-checking and caching shards;
//! - [`gpus`]: which of the node's GPUs a job trains on;
//! - [`train`]: a round of local SGD on a blocking thread, then the
//!   compressed, signed update.
//!
//! A worker's record (the spec, its bid nonce, the allocations it
//! verified) is kept on disk, so a restarted worker rejoins its jobs by
//! bidding again.

pub mod admission;
pub mod auditor;
pub mod faults;
pub mod gate;
pub mod gpus;
pub mod inbound;
pub mod machine;
pub mod policy;
pub mod shards;
pub mod speed;
pub mod train;
pub mod working;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fairgrid_kernels::Shard;
use fairgrid_protocol::messages::{Bid, JobSpec, MAX_CLOCK_SKEW_MS};
use fairgrid_protocol::{Hash32, NodeId, ResourceVec, Signed};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{ledger_sync, transport};
use crate::jobs::JobsContext;
use crate::jobs::device::Device;
use crate::jobs::model;
use crate::ledger::now_ms;
use crate::net::{Request, Response, Verdict};
pub use machine::{BUSY, NOT_ADMITTED};
use machine::{BidAnswer, Input, Output, Reply, Worker};

const TARGET: &str = "fairgrid::jobs";

/// What a worker keeps on disk about a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub spec: Signed<JobSpec>,
    pub nonce: u64,
    /// Verified allocations: hash -> this node's shards in it.
    pub allocations: BTreeMap<Hash32, Vec<u32>>,
    pub finished: bool,
}

/// One job this node works on: its machine, and what the shell keeps
/// beside it (the engine, the last update, the loaded shards).
pub struct WorkerJob {
    pub id: Hash32,
    pub signed_spec: Signed<JobSpec>,
    pub spec: JobSpec,
    pub coordinator: NodeId,
    machine: Mutex<Worker>,
    /// The last round trained and its update, kept so that a re-sent
    /// start of that round (a restarted coordinator) gets it again.
    pub trained: Mutex<Option<(gate::RoundKey, Arc<train::Trained>)>>,
    pub engine: Arc<Mutex<Option<train::Engine>>>,
    /// The last rounds' raw deltas and residuals, for an audit.
    pub reveals: Mutex<std::collections::VecDeque<Arc<train::Reveal>>>,
    /// The coordinator acknowledged the last update (its residual may be
    /// carried on); cleared when an update went unacknowledged.
    pub acknowledged: std::sync::atomic::AtomicBool,
    /// Shards loaded for training, by index.
    pub shards: Mutex<BTreeMap<u32, Arc<Shard>>>,
    /// One shard fetch at a time per job.
    pub fetching: tokio::sync::Mutex<()>,
    /// One record write at a time, each of the latest record.
    saving: tokio::sync::Mutex<()>,
    /// What the job holds of this node's offer; changed only through
    /// [`working::Working`], under its lock.
    hold: Mutex<ResourceVec>,
    /// Set when the worker withdraws: training stops before its next step.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// The job was allocated without this node (its gossiped allocation
    /// said so): it holds nothing and is not bid on again, larger.
    passed_over: std::sync::atomic::AtomicBool,
}

impl WorkerJob {
    fn new(record: WorkerRecord, spec: JobSpec) -> WorkerJob {
        let id = record.spec.id();
        let state = machine::Record {
            nonce: record.nonce,
            allocations: record.allocations,
            finished: record.finished,
        };
        WorkerJob {
            id,
            signed_spec: record.spec,
            coordinator: spec.submitter,
            machine: Mutex::new(Worker::new(id, spec.submitter, state)),
            spec,
            trained: Mutex::new(None),
            engine: Arc::new(Mutex::new(None)),
            reveals: Mutex::new(Default::default()),
            acknowledged: std::sync::atomic::AtomicBool::new(true),
            shards: Mutex::new(BTreeMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            passed_over: std::sync::atomic::AtomicBool::new(false),
            saving: tokio::sync::Mutex::new(()),
            hold: Mutex::new(ResourceVec::default()),
            cancel: Arc::default(),
        }
    }

    /// Rounds whose reveal is kept: an audit of a round is asked for
    /// before the next round opens, so two leave slack.
    pub const REVEALS_KEPT: usize = 2;

    /// Keeps a trained round's reveal for an audit.
    pub fn keep_reveal(&self, reveal: Arc<train::Reveal>) {
        let mut reveals = self.reveals.lock().unwrap_or_else(|e| e.into_inner());
        reveals.retain(|r| r.round != reveal.round);
        reveals.push_back(reveal);
        while reveals.len() > Self::REVEALS_KEPT {
            reveals.pop_front();
        }
    }

    /// The reveal of `round`, if it is still kept.
    pub fn reveal(&self, round: u32) -> Option<Arc<train::Reveal>> {
        let reveals = self.reveals.lock().unwrap_or_else(|e| e.into_inner());
        reveals.iter().find(|r| r.round == round).cloned()
    }

    /// What the job holds of this node's offer.
    pub fn hold(&self) -> ResourceVec {
        *self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_hold(&self, hold: ResourceVec) {
        *self.hold.lock().unwrap_or_else(|e| e.into_inner()) = hold;
    }

    /// Whether the job was allocated without this node.
    pub fn passed_over(&self) -> bool {
        self.passed_over.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The machine, for a look (inputs go through [`apply`]).
    pub fn machine(&self) -> std::sync::MutexGuard<'_, Worker> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_finished(&self) -> bool {
        self.machine().is_finished()
    }

    fn record(&self) -> WorkerRecord {
        let state = self.machine().record().clone();
        WorkerRecord {
            spec: self.signed_spec.clone(),
            nonce: state.nonce,
            allocations: state.allocations,
            finished: state.finished,
        }
    }
}

/// Hands the job's machine an input and executes its outputs in order:
/// the record is written before the answer is given, slow work (sending,
/// fetching, training) goes on tasks whose results come back as inputs.
pub async fn apply(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>, input: Input) -> Option<Reply> {
    let handled = job.machine().handle(now_ms(), input);
    for output in handled.outputs {
        execute(ctx, job, output).await;
    }
    handled.reply
}

/// [`apply`] on a task of its own, for results of slow work.
pub fn apply_later(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>, input: Input) {
    let (ctx, job) = (Arc::clone(ctx), Arc::clone(job));
    tokio::spawn(async move { apply(&ctx, &job, input).await });
}

pub(super) async fn execute(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>, output: Output) {
    match output {
        Output::SendBid {
            nonce,
            ask,
            capacity,
        } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move {
                let answer = send_bid(&s, &j, nonce, ask, capacity).await;
                match &answer {
                    BidAnswer::Accepted => info!(target: TARGET, job = %j.id, ask, "bid sent"),
                    BidAnswer::Refused(reason) | BidAnswer::Failed(reason) => {
                        debug!(target: TARGET, job = %j.id, %reason, "bid not taken")
                    }
                }
                apply_later(&s, &j, Input::BidAnswered(answer));
            });
        }
        Output::Save => save(ctx, job).await,
        Output::Record(entry) => ctx.record(entry),
        Output::FetchShards(indices) => inbound::prefetch(ctx, job, indices),
        Output::Train { key, .. } => {
            // Only a round start asks for training, and its handler keeps
            // the parameters (inbound::on_round_start).
            let outcome = Err("a round to train came without its parameters".to_string());
            apply_later(ctx, job, Input::Trained { key, outcome });
        }
        Output::Deliver { key } => {
            let trained = job.trained.lock().expect("trained lock").clone();
            match trained {
                Some((kept, update)) if kept == key => {
                    let (s, j) = (Arc::clone(ctx), Arc::clone(job));
                    tokio::spawn(async move { inbound::deliver(&s, &j, key.round, &update).await });
                }
                _ => {
                    warn!(target: TARGET, job = %job.id, round = key.round, "no update kept for the round")
                }
            }
        }
        Output::RefuseRound { key, reason } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move { inbound::refuse_round(&s, &j, key, reason).await });
        }
        Output::Decline { reason } => {
            warn!(target: TARGET, job = %job.id, %reason, "withdrawing from the job");
            let request = Request::JobDecline {
                job_id: job.id,
                reason: reason.chars().take(900).collect(),
            };
            let (s, to) = (Arc::clone(ctx), job.coordinator);
            tokio::spawn(async move {
                let _ = transport::call(&s, to, request).await;
            });
        }
        Output::ExchangeLedger => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move {
                match ledger_sync::exchange(&s, j.coordinator, j.id).await {
                    Ok(_) => {
                        info!(target: TARGET, job = %j.id, "job had ended; ledger entries exchanged")
                    }
                    Err(e) => {
                        warn!(target: TARGET, job = %j.id, error = %e, "job had ended; ledger exchange failed")
                    }
                }
            });
        }
        Output::Release => {
            // A training thread holds the engine until it stops (at once if
            // cancelled): wait for it off the async threads.
            let engine = Arc::clone(&job.engine);
            let _ = tokio::task::spawn_blocking(move || {
                engine.lock().unwrap_or_else(|e| e.into_inner()).take();
            })
            .await;
            job.trained.lock().expect("trained lock").take();
            job.shards.lock().expect("shards lock").clear();
            // The job has ended: what it held is free.
            retry_waiting(ctx);
        }
        Output::Leave => {
            ctx.jobs.remove_worker(&job.id);
            retry_waiting(ctx);
        }
        Output::BidAgain => {
            info!(target: TARGET, job = %job.id, "dropped from the job's allocation; bidding again");
            if let Some(input) = rejoin_input(ctx, job) {
                apply_later(ctx, job, input);
            }
        }
        Output::Wake { at } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move {
                let wait = at.saturating_sub(now_ms());
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                apply_later(&s, &j, Input::Tick);
            });
        }
    }
}

/// Writes the latest record (taken once the previous write is done, so a
/// write never puts back an older record).
async fn save(ctx: &JobsContext, job: &WorkerJob) {
    let _one_at_a_time = job.saving.lock().await;
    let record = job.record();
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
    // The window as the spec states it, with the clock-skew allowance: a
    // coordinator's window runs from when it accepted the job (a slow disk
    // can gossip the spec late), and clocks differ. A bid that arrives
    // after the clearing only waits in the bid book for the next one.
    let closes = spec
        .submitted_at
        .saturating_add(spec.bid_window_ms)
        .saturating_add(MAX_CLOCK_SKEW_MS);
    if now > closes {
        // Still valid for others to see; too late to bid on.
        return Verdict::Accept;
    }
    admission::hear(ctx, signed, &spec);
    Verdict::Accept
}

/// The owner needs the machine: no new bids, training stops before its
/// next step, and every job is told that this node withdraws (its
/// coordinator re-clears its shards at once). The training state is freed
/// once the training thread has stopped, and the jobs hold nothing; they
/// stay this node's, to bid on again when it is idle ([`offer_again`]).
pub async fn withdraw_all(ctx: &Arc<JobsContext>, reason: String) {
    ctx.jobs.working.pause(reason.clone());
    let jobs = ctx.jobs.working.active_jobs();
    for job in &jobs {
        job.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for job in jobs {
        let reason = format!("the owner needs the machine: {reason}");
        apply(ctx, &job, Input::StepAside { reason }).await;
        ctx.jobs.working.drop_hold(&job);
    }
}

/// The machine is idle again: bid again on the jobs it stepped aside
/// from (a higher nonce brings it back at their next clearing), then on
/// the jobs heard of meanwhile whose window is still open.
pub fn offer_again(ctx: &Arc<JobsContext>) {
    ctx.jobs.working.resume();
    for job in ctx.jobs.working.active_jobs() {
        if !job.machine().is_aside() {
            continue;
        }
        job.cancel
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(input) = rejoin_input(ctx, &job) {
            info!(target: TARGET, job = %job.id, "idle again; bidding to rejoin");
            apply_later(ctx, &job, input);
        }
    }
    retry_waiting(ctx);
}

/// The policy's terms for `spec` out of `free` capacity beside `active`
/// other jobs, for this node (its config, its own jobs, its price floor).
fn terms_for<'a>(
    ctx: &'a JobsContext,
    spec: &'a JobSpec,
    floor: u64,
) -> impl Fn(ResourceVec, usize) -> Result<policy::Terms, String> + 'a {
    let own = spec.submitter == ctx.node_id;
    move |free, active| policy::decide(&ctx.config.worker, free, floor, active, own, spec)
}

/// Bids on a job the node heard of (or its own), if the policy says so,
/// out of the capacity its other jobs leave free. A job that only lacks
/// free capacity waits for some (see [`retry_waiting`]). A coordinator
/// that cannot be reached, or is busy, may be restarting: the machine tries
/// the bid again for a while.
pub async fn bid(ctx: &Arc<JobsContext>, signed: Signed<JobSpec>, spec: JobSpec) {
    let id = signed.id();
    if ctx.jobs.worker(&id).is_some() {
        return;
    }
    let (offered, floor) = ctx.host.offer(now_ms());
    let record = WorkerRecord {
        spec: signed.clone(),
        nonce: 0,
        allocations: BTreeMap::new(),
        finished: false,
    };
    let job = Arc::new(WorkerJob::new(record, spec));
    let terms_of = terms_for(ctx, &job.spec, floor);
    let decided = ctx
        .jobs
        .working
        .reserve_new(Arc::clone(&job), offered, &terms_of);
    let terms = match decided {
        Ok(terms) => terms,
        Err(reason) => {
            // Would an idle node bid? Then only capacity is lacking.
            if terms_of(offered, 0).is_ok() {
                info!(target: TARGET, job = %id, %reason, "not bidding yet: waiting for capacity");
                ctx.jobs.working.wait_for_capacity(signed);
            } else {
                info!(target: TARGET, job = %id, %reason, "not bidding");
            }
            return;
        }
    };
    info!(target: TARGET, job = %id, hold = ?terms.hold, "capacity reserved for the bid");
    // An allocation made without this node may have been heard of before
    // the job was added here, when there was nothing to stand by: the
    // notice found no job and no later one comes. Without this the hold
    // stayed until the job's deadline (the node is no participant, so the
    // job's end never reaches it).
    if let Some(winners) = ctx.jobs.window.winners_of(&id) {
        allocated_without_us(ctx, &id, &winners);
    }
    let input = Input::Bid {
        ask: terms.ask,
        capacity: terms.capacity,
    };
    apply(ctx, &job, input).await;
}

/// Called when a job frees capacity: bids on the jobs that waited for some
/// and whose bid window is still open (in an admission pass: the
/// submitters holding least first), and bids again, larger, on the jobs
/// that have sent no allocation yet (a job waiting for supply clears again
/// with the larger bid).
pub fn retry_waiting(ctx: &Arc<JobsContext>) {
    for job in ctx.jobs.working.awaiting_allocation() {
        if let Some(input) = grown_bid(ctx, &job) {
            info!(target: TARGET, job = %job.id, "capacity freed; bidding again, larger");
            apply_later(ctx, &job, input);
        }
    }
    let waiting = ctx.jobs.working.take_waiting();
    if waiting.is_empty() {
        return;
    }
    for signed in waiting {
        ctx.jobs.working.queue_for_admission(signed);
    }
    // The admission pass drops the jobs whose window has closed.
    admission::schedule(ctx, std::time::Duration::ZERO);
}

async fn send_bid(
    ctx: &Arc<JobsContext>,
    job: &WorkerJob,
    nonce: u64,
    ask: u64,
    capacity: ResourceVec,
) -> BidAnswer {
    let speed_milli = speed_of(ctx, &job.spec, capacity).await;
    let capacity = speed::within_round_time(capacity, &job.spec, speed_milli);
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
            speed_milli,
        },
    );
    match transport::call(ctx, job.coordinator, Request::JobBid(bid)).await {
        Ok(Response::Accepted) => BidAnswer::Accepted,
        Ok(Response::Refused { reason }) => BidAnswer::Refused(reason),
        Ok(_) => BidAnswer::Failed("unexpected answer to a bid".into()),
        Err(e) => BidAnswer::Failed(e.to_string()),
    }
}

/// This node's speed on the job's model for its bid: measured once per
/// model (on a blocking thread) unless `worker.measure_speed` is off, at
/// the batch of the shards the bid can win (up to
/// [`speed::PROBE_SHARDS`]), then refined by the rounds it trains; 0
/// (none) if the probe fails, which the log says.
async fn speed_of(ctx: &Arc<JobsContext>, spec: &JobSpec, capacity: ResourceVec) -> u64 {
    if !ctx.config.worker.measure_speed {
        return 0;
    }
    let shards = capacity
        .units_of(&spec.demand_per_shard)
        .min(policy::owner_cap_of(spec));
    // One device's speed: a node that wins more GPUs than one trains
    // faster than it claims, never slower. Probing places nothing.
    let device = probe_device(ctx, spec);
    if let Some(known) = ctx.jobs.speeds.get(spec, device) {
        return known;
    }
    let probed = spec.clone();
    let measured =
        tokio::task::spawn_blocking(move || speed::measure(&probed, device, shards)).await;
    match measured {
        Ok(Ok(speed_milli)) => {
            info!(target: TARGET, samples_per_sec = speed_milli / 1000, %device, "measured this node's speed on the job's model");
            ctx.jobs.speeds.insert(spec, device, speed_milli);
            speed_milli
        }
        Ok(Err(e)) => {
            warn!(target: TARGET, error = %e, %device, "could not measure this node's speed; bidding without it");
            0
        }
        Err(e) => {
            warn!(target: TARGET, error = %e, "the speed probe stopped; bidding without it");
            0
        }
    }
}

/// Where a bid's speed probe runs: the CPU for a job that demands no GPU,
/// else the least loaded offered GPU.
fn probe_device(ctx: &Arc<JobsContext>, spec: &JobSpec) -> Device {
    let threads = model::threads(ctx.config.worker.threads);
    let gpus = offered_gpus(ctx);
    if !crate::jobs::device::wants_gpu(spec) || gpus == 0 {
        return Device::Cpu { threads };
    }
    Device::Cuda {
        ordinal: ctx.jobs.gpus.peek(gpus, &live_jobs(ctx)),
    }
}

/// GPUs this node offers now: its offer's `gpu_milli` in whole GPUs,
/// rounded up (a certificate may grant half a GPU).
fn offered_gpus(ctx: &Arc<JobsContext>) -> usize {
    let (offered, _) = ctx.host.offer(now_ms());
    usize::try_from(offered.gpu_milli.div_ceil(1000)).unwrap_or(usize::MAX)
}

fn live_jobs(ctx: &Arc<JobsContext>) -> Vec<Hash32> {
    ctx.jobs
        .working
        .active_jobs()
        .iter()
        .map(|j| j.id)
        .collect()
}

/// The devices a round of `job` on `shards` shards trains on (see
/// [`gpus::devices_for`]).
pub fn round_devices(ctx: &Arc<JobsContext>, job: &WorkerJob, shards: usize) -> Vec<Device> {
    gpus::devices_for(
        &ctx.jobs.gpus,
        job.id,
        &job.spec,
        shards,
        offered_gpus(ctx),
        model::threads(ctx.config.worker.threads),
        &live_jobs(ctx),
    )
}

/// Bids again on a job this node worked on (after a restart), with a
/// higher nonce. If the job has ended, exchanges its ledger entries.
pub async fn rejoin(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>) {
    if let Some(input) = rejoin_input(ctx, job) {
        apply(ctx, job, input).await;
    }
}

/// The rejoining bid's input, out of what the job holds and what is free
/// (the job's hold becomes the new bid's); `None` (logged) if the node can
/// no longer take the job.
fn rejoin_input(ctx: &JobsContext, job: &WorkerJob) -> Option<Input> {
    let (offered, floor) = ctx.host.offer(now_ms());
    let own = job.spec.submitter == ctx.node_id;
    // The same terms as a first bid (this job is not counted against
    // `worker.max_jobs`: it is already one of them).
    let decided = ctx
        .jobs
        .working
        .reserve_again(job, offered, |free, others| {
            policy::decide(&ctx.config.worker, free, floor, others, own, &job.spec)
        });
    let terms = match decided {
        Ok(terms) => terms,
        Err(reason) => {
            info!(target: TARGET, job = %job.id, %reason, "not bidding again");
            return None;
        }
    };
    Some(Input::Rejoin {
        ask: terms.ask,
        capacity: terms.capacity,
    })
}

/// A larger bid for a job that has sent no allocation yet, if freed
/// capacity allows one; the job's hold grows with it.
fn grown_bid(ctx: &JobsContext, job: &WorkerJob) -> Option<Input> {
    let (offered, floor) = ctx.host.offer(now_ms());
    let own = job.spec.submitter == ctx.node_id;
    let before = job.hold();
    let grown = ctx
        .jobs
        .working
        .reserve_again(job, offered, |free, others| {
            let terms = policy::decide(&ctx.config.worker, free, floor, others, own, &job.spec)?;
            if terms.hold == before || !working::fits(before, terms.hold) {
                return Err("no larger bid".into());
            }
            Ok(terms)
        });
    grown.ok().map(|terms| Input::Rejoin {
        ask: terms.ask,
        capacity: terms.capacity,
    })
}

/// A job's allocation was made without this node (its notice names the
/// winners): if the node has had no allocation of the job, the job stands
/// by holding nothing, and the capacity goes to the jobs waiting for some.
/// A later re-clearing may still give it shards (taken if free).
pub fn allocated_without_us(ctx: &Arc<JobsContext>, job_id: &Hash32, winners: &[NodeId]) {
    if winners.contains(&ctx.node_id) {
        return;
    }
    let Some(job) = ctx.jobs.worker(job_id) else {
        return;
    };
    if job.is_finished() || !job.machine().record().allocations.is_empty() {
        return;
    }
    if ctx.jobs.working.stand_by(&job) {
        info!(target: TARGET, job = %job.id, "allocated without this node; its capacity is free again");
        retry_waiting(ctx);
    }
}

/// The job ended (its ledger entries arrived): free the training state
/// and remember it as finished.
pub async fn finished(ctx: &Arc<JobsContext>, job: &Arc<WorkerJob>) {
    apply(ctx, job, Input::JobEnded).await;
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
        if ctx.jobs.working.insert_loaded(Arc::clone(&job)) {
            rejoining.push(job);
        }
    }
    rejoining
}
