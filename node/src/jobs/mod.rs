//! Training jobs over the network: the coordinator (the node a job is
//! submitted to) and the worker (every node that bids), the node-to-node
//! job protocol, checkpoints, churn, credits and the ledger exchange.
//! `docs/protocol.md` ("Jobs") describes the flow step by step.
//!
//! - [`request`]: a developer's `JobRequest` checked into a [`request::JobPlan`];
//!   [`data`] loads and cuts the data; [`model`] maps the protocol's model
//!   and training description onto the kernels.
//! - [`coordinator`]: submission, bid window, clearing, rounds, churn,
//!   finishing; [`credits`]: who earned what (pure).
//! - [`worker`]: bidding policy, allocation verification, shards, training.
//! - [`ledger_sync`]: the exchange of a job's entries at its end.
//! - [`store`]: checkpoints and worker records in sled, the shard cache;
//!   [`archive`]: ended jobs kept on disk, a summary in memory.
//! - [`events`]: each job's event log for the API; [`views`]: API answers.
//! - [`transport`]: requests to other nodes, or to this one.
//!
//! Training, evaluation, decoding and verification run on blocking
//! threads; the async tasks only wait and route. Everything is bounded:
//! jobs per node (both sides), bids per job, events per job, update and
//! parameter sizes (the wire limits), the shard cache.

pub mod archive;
pub mod audit;
mod context;
pub mod coordinator;
pub mod credits;
pub mod data;
pub mod device;
pub mod events;
pub mod ledger_sync;
pub mod listing;
pub mod model;
pub mod request;
pub mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod transport;
pub mod views;
pub mod window;
pub mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::{Hash32, NodeId};
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tokio::sync::{Semaphore, watch};
use tracing::warn;

use crate::config::Config;
use crate::error::Result;
use crate::net::{Request, Response};
pub use context::{Host, JobsContext};
use coordinator::CoordJob;
use store::{JobStore, ShardCache};
use worker::WorkerJob;

const TARGET: &str = "fairgrid::jobs";
/// Job requests from peers handled at once; more are refused as busy.
const MAX_INBOUND: usize = 256;

/// Errors the API turns into HTTP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsError {
    BadRequest(String),
    Busy(String),
    Internal(String),
}

/// The jobs this node coordinates and works on.
pub struct Jobs {
    pub store: JobStore,
    pub shards: ShardCache,
    /// Jobs bidding or training, and the most recently ended ones.
    coordinated: Mutex<BTreeMap<Hash32, Arc<CoordJob>>>,
    /// Every other ended job: a summary here, the rest on disk.
    archive: archive::Archive,
    /// Ended jobs kept whole in memory (`jobs.ended_in_memory`).
    ended_in_memory: usize,
    max_bids: usize,
    /// Jobs this node works on, and what they hold of its offer.
    pub working: worker::working::Working,
    /// The allocations made across the network (the beta cap's window).
    pub window: window::NetworkWindow,
    /// This node's measured training speeds, for its bids.
    pub speeds: worker::speed::SpeedCache,
    /// Which of this node's GPUs each job trains on.
    pub gpus: worker::gpus::GpuPlacer,
    /// Each node's and owner's audit record (from the ledger at start).
    pub standing: audit::Standing,
    stop: watch::Sender<bool>,
    inbound: Arc<Semaphore>,
    /// Audits this node runs for coordinators: one at a time.
    pub auditing: Arc<Semaphore>,
    /// Tests only: this node's audit reports all say "failed".
    #[cfg(test)]
    pub lying_auditor: AtomicBool,
    /// Tests only: this node takes evidence and never reports.
    #[cfg(test)]
    pub silent_auditor: AtomicBool,
    /// Every checkpointed job is back (see [`resume`]).
    resumed: AtomicBool,
}

impl Jobs {
    /// Opens `<data dir>/jobs`.
    pub fn open(data_root: &Path, config: &Config) -> Result<Jobs> {
        let root = data_root.join("jobs");
        let store = JobStore::open(&root, config.storage.jobs_cache_mib << 20)?;
        let shards = ShardCache::new(store.shard_dir(), config.worker.shard_cache_mib);
        Ok(Jobs {
            store,
            shards,
            coordinated: Mutex::new(BTreeMap::new()),
            archive: archive::Archive::default(),
            ended_in_memory: config.jobs.ended_in_memory as usize,
            max_bids: config.jobs.max_bids_per_job as usize,
            working: worker::working::Working::new(config.worker.max_jobs as usize),
            window: window::NetworkWindow::new(&config.jobs),
            speeds: worker::speed::SpeedCache::default(),
            gpus: worker::gpus::GpuPlacer::default(),
            standing: audit::Standing::default(),
            stop: watch::channel(false).0,
            inbound: Arc::new(Semaphore::new(MAX_INBOUND)),
            auditing: Arc::new(Semaphore::new(1)),
            #[cfg(test)]
            lying_auditor: AtomicBool::new(false),
            #[cfg(test)]
            silent_auditor: AtomicBool::new(false),
            resumed: AtomicBool::new(false),
        })
    }

    /// Whether the jobs checkpointed before the last stop are loaded: until
    /// then a request for an unknown job may be for one still loading.
    pub fn resumed(&self) -> bool {
        self.resumed.load(Ordering::SeqCst)
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops every job task at its next wait (checkpoints are on disk).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A coordinated job that is in memory (bidding, training, or ended
    /// recently); see [`Jobs::find_coordinated`] for the others.
    pub fn coordinated(&self, id: &Hash32) -> Option<Arc<CoordJob>> {
        self.coordinated.lock().expect("jobs lock").get(id).cloned()
    }

    /// A coordinated job, loaded from its checkpoint if it has ended and
    /// left memory; `Ok(None)` if this node coordinates no such job.
    pub async fn find_coordinated(&self, id: &Hash32) -> Result<Option<Arc<CoordJob>>, String> {
        if let Some(job) = self.coordinated(id) {
            return Ok(Some(job));
        }
        if !self.archive.contains(id) {
            return Ok(None);
        }
        let (store, id, max_bids) = (self.store.clone(), *id, self.max_bids);
        tokio::task::spawn_blocking(move || archive::load(&store, &id, max_bids))
            .await
            .map_err(|e| format!("loading job {id}: {e}"))?
            .map(Some)
    }

    /// The summary of an ended job that is not in memory.
    pub fn archived(&self, id: &Hash32) -> Option<fairgrid_sdk::jobs::JobStatus> {
        self.archive.summary(id)
    }

    /// Every coordinated job in memory, oldest first.
    pub fn all_coordinated(&self) -> Vec<Arc<CoordJob>> {
        let mut jobs: Vec<Arc<CoordJob>> = self
            .coordinated
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        jobs.sort_by_key(|j| (j.spec.submitted_at, j.id));
        jobs
    }

    /// The status of every job this node coordinates or has coordinated,
    /// oldest first.
    pub fn statuses(&self) -> Vec<fairgrid_sdk::jobs::JobStatus> {
        let mut all: Vec<_> = self
            .all_coordinated()
            .iter()
            .map(|j| views::status(j))
            .collect();
        all.extend(self.archive.summaries());
        all.sort_by(|a, b| (a.submitted_at_ms, &a.job_id).cmp(&(b.submitted_at_ms, &b.job_id)));
        all
    }

    /// Coordinated jobs still bidding, waiting or training.
    pub fn active_coordinated(&self) -> usize {
        self.all_coordinated()
            .iter()
            .filter(|j| !j.state().is_terminal())
            .count()
    }

    /// Adds a coordinated job. Ended jobs beyond `jobs.ended_in_memory`
    /// (the longest ended first) leave memory for the archive, once their
    /// task has stopped: their final checkpoint is on disk.
    pub fn insert_coordinated(&self, job: Arc<CoordJob>) {
        let mut jobs = self.coordinated.lock().expect("jobs lock");
        jobs.insert(job.id, job);
        self.archive_beyond_limit(&mut jobs);
    }

    /// Moves ended jobs beyond `jobs.ended_in_memory` to the archive (a
    /// job's task calls it as it stops).
    pub fn archive_ended(&self) {
        let mut jobs = self.coordinated.lock().expect("jobs lock");
        self.archive_beyond_limit(&mut jobs);
    }

    fn archive_beyond_limit(&self, jobs: &mut BTreeMap<Hash32, Arc<CoordJob>>) {
        let mut ended: Vec<(u64, Hash32)> = jobs
            .values()
            .filter(|j| j.machine().has_ended() && j.inbox.try_lock().is_ok())
            .map(|j| (j.state().updated_at, j.id))
            .collect();
        if ended.len() > self.ended_in_memory {
            ended.sort();
            for (_, id) in &ended[..ended.len() - self.ended_in_memory] {
                if let Some(job) = jobs.remove(id) {
                    self.archive.add(&job);
                }
            }
        }
    }

    pub fn worker(&self, id: &Hash32) -> Option<Arc<WorkerJob>> {
        self.working.get(id)
    }

    pub fn remove_worker(&self, id: &Hash32) {
        self.working.remove(id);
        let _ = self.store.remove_worker(id);
    }
}

/// Resumes coordinated jobs from their checkpoints and rejoins the jobs
/// this node was working on.
pub async fn resume(ctx: Arc<JobsContext>) {
    // The worker side is loaded first and rejoins last: a resumed round
    // that reaches this node's own worker finds it, and its rejoining bid
    // finds the coordinated job.
    window::seed_from_ledger(&ctx);
    if let Err(e) = ctx.jobs.standing.replay_ledger(&ctx.ledger) {
        warn!(target: TARGET, error = %e, "cannot read past audits from the ledger");
    }
    let rejoining = worker::load(&ctx);
    let ids = ctx.jobs.store.coordinator_ids().unwrap_or_else(|e| {
        warn!(target: TARGET, error = %e, "cannot list the checkpointed jobs");
        Vec::new()
    });
    // One checkpoint in memory at a time: ended jobs only leave a summary.
    for id in ids {
        match ctx.jobs.store.coordinator::<coordinator::Checkpoint>(&id) {
            Ok(Some(stored)) if archive::is_settled(&stored) => {
                match archive::restore(stored, ctx.jobs.max_bids) {
                    Ok(job) => ctx.jobs.archive.add(&job),
                    Err(e) => warn!(target: TARGET, job = %id, error = %e, "skipping a checkpoint"),
                }
            }
            Ok(Some(stored)) => {
                coordinator::submit::resume(&ctx, stored.record, stored.params, stored.unrecorded)
                    .await
            }
            Ok(None) => {}
            Err(e) => warn!(target: TARGET, error = %e, "skipping a checkpoint"),
        }
    }
    ctx.jobs.resumed.store(true, Ordering::SeqCst);
    for job in rejoining {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move { worker::rejoin(&ctx, &job).await });
    }
}

/// Dispatches a job request (from a peer, or from this node itself).
pub async fn handle(ctx: Arc<JobsContext>, from: NodeId, request: Request) -> Response {
    let ctx = &ctx;
    match request {
        Request::JobBid(bid) => coordinator::inbound::on_bid(ctx, from, bid).await,
        Request::FetchShards { job_id, indices } => {
            coordinator::inbound::on_fetch_shards(ctx, from, job_id, indices)
        }
        Request::RoundUpdate { update, bytes } => {
            coordinator::inbound::on_update(ctx, from, update, bytes).await
        }
        Request::JobDecline { job_id, reason } => {
            coordinator::inbound::on_decline(ctx, from, job_id, reason)
        }
        Request::RoundRefusal(refusal) => {
            coordinator::inbound::on_round_refusal(ctx, from, refusal)
        }
        Request::JobAllocation { allocation, bids } => {
            worker::inbound::on_allocation(ctx, from, allocation, bids).await
        }
        Request::RoundStart { start, params } => {
            worker::inbound::on_round_start(ctx, from, start, params).await
        }
        Request::JobLedger { job_id, entries } => {
            ledger_sync::on_request(ctx, from, job_id, entries).await
        }
        Request::AuditReveal { job_id, round } => {
            worker::inbound::on_audit_reveal(ctx, from, job_id, round)
        }
        Request::AuditReplay { evidence } => {
            worker::auditor::on_audit_replay(ctx, from, evidence).await
        }
        Request::AuditReport(report) => coordinator::inbound::on_audit_report(ctx, from, report),
        Request::Hello(_) | Request::AdvertSnapshot => Response::refused("not a job request"),
    }
}

/// A job request from a peer: handled on its own task (never in the
/// application's event loop), at most [`MAX_INBOUND`] at once.
pub fn handle_request(
    ctx: &Arc<JobsContext>,
    peer: PeerId,
    request: Request,
    channel: ResponseChannel<Response>,
) {
    let ctx = Arc::clone(ctx);
    let permit = Arc::clone(&ctx.jobs.inbound).try_acquire_owned();
    tokio::spawn(async move {
        let response = match (permit, peer.to_string().parse::<NodeId>()) {
            _ if ctx.consortium() && !ctx.host.admitted(&peer) => Response::refused(format!(
                "{}: present a certificate first",
                worker::NOT_ADMITTED
            )),
            (Err(_), _) => Response::refused("busy: too many job requests in flight"),
            (_, Err(_)) => Response::refused("peer id is not an ed25519 node key"),
            (Ok(_permit), Ok(from)) => handle(Arc::clone(&ctx), from, request).await,
        };
        let _ = ctx.net.respond(channel, response).await;
    });
}

/// A peer went away: any round it owed an update in counts it as missed
/// now, so its shards are reassigned without waiting for the deadline.
pub fn on_disconnected(ctx: &JobsContext, peer: &PeerId) {
    let Ok(node) = peer.to_string().parse::<NodeId>() else {
        return;
    };
    for job in ctx.jobs.all_coordinated() {
        if job.machine().open_round().is_some() {
            let _ = job.handle(coordinator::machine::Input::PeerLost { node });
        }
    }
}
