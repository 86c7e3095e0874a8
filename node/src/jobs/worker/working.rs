//! The jobs this node works on, and what each holds of its offer.
//!
//! Reservation: a bid is made only out of the capacity that the node's
//! other jobs leave free, and the job holds what its bid can win until the
//! job ends or the node leaves it. An allocation sets the hold to the
//! shards it gives (less frees capacity for other jobs; more is taken only
//! if still free, or the allocation is refused). Every change of a hold is
//! made under one lock with the sum it is checked against, so two jobs
//! never both get the same capacity and at no time do a node's holds add
//! up to more than its offer.
//!
//! A job heard of while too little was free waits here (bounded) and is
//! bid on when capacity frees: while its bid window is open, and after it
//! until the job's deadline as long as no allocation of it was gossiped
//! (it still waits for supply).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fairgrid_protocol::messages::JobSpec;
use fairgrid_protocol::{Hash32, ResourceVec, Signed};

use super::WorkerJob;
use super::policy::Terms;

/// Specs kept waiting for capacity.
pub const MAX_WAITING: usize = 64;

/// `a + b`, component-wise, saturating.
fn add(a: ResourceVec, b: ResourceVec) -> ResourceVec {
    let (a, b) = (a.as_array(), b.as_array());
    ResourceVec::from_array(std::array::from_fn(|i| a[i].saturating_add(b[i])))
}

/// Whether `need` fits in `room`, every resource.
pub fn fits(need: ResourceVec, room: ResourceVec) -> bool {
    need.as_array()
        .iter()
        .zip(room.as_array())
        .all(|(n, r)| *n <= r)
}

/// What `offer` leaves free after `holds`.
pub fn free_after(offer: ResourceVec, holds: impl IntoIterator<Item = ResourceVec>) -> ResourceVec {
    offer.saturating_sub(&holds.into_iter().fold(ResourceVec::default(), add))
}

pub struct Working {
    jobs: Mutex<BTreeMap<Hash32, Arc<WorkerJob>>>,
    /// `worker.max_jobs`.
    max: usize,
    waiting: SpecQueue,
    /// Jobs heard of, for the next admission pass (`worker::admission`).
    queued: SpecQueue,
    /// An admission pass is due.
    pass_due: AtomicBool,
    /// Why the node does not contribute now (its owner needs the machine).
    paused: Mutex<Option<String>>,
}

impl Working {
    pub fn new(max: usize) -> Working {
        Working {
            jobs: Mutex::new(BTreeMap::new()),
            max,
            waiting: Mutex::new(VecDeque::new()),
            queued: Mutex::new(VecDeque::new()),
            pass_due: AtomicBool::new(false),
            paused: Mutex::new(None),
        }
    }

    /// No new bids or holds until [`Working::resume`], for `reason`.
    pub fn pause(&self, reason: String) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    pub fn resume(&self) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Why the node does not contribute now, if it does not.
    pub fn paused(&self) -> Option<String> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn refuse_if_paused(&self) -> Result<(), String> {
        match self.paused() {
            Some(reason) => Err(format!("the owner needs the machine: {reason}")),
            None => Ok(()),
        }
    }

    /// The jobs not ended.
    pub fn active_jobs(&self) -> Vec<Arc<WorkerJob>> {
        self.lock()
            .values()
            .filter(|w| !w.is_finished())
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Hash32, Arc<WorkerJob>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &Hash32) -> Option<Arc<WorkerJob>> {
        self.lock().get(id).cloned()
    }

    /// Jobs not ended.
    pub fn active(&self) -> usize {
        self.lock().values().filter(|w| !w.is_finished()).count()
    }

    /// What the jobs not ended hold, in all.
    pub fn held(&self) -> ResourceVec {
        self.lock()
            .values()
            .filter(|w| !w.is_finished())
            .map(|w| w.hold())
            .fold(ResourceVec::default(), add)
    }

    /// Free capacity, and the jobs that hold some of it (they count
    /// against `worker.max_jobs`; a job that won nothing stands by without
    /// holding anything), leaving `except` out of both.
    fn room(
        jobs: &BTreeMap<Hash32, Arc<WorkerJob>>,
        offer: ResourceVec,
        except: Option<&Hash32>,
    ) -> (ResourceVec, usize) {
        let holds: Vec<ResourceVec> = jobs
            .values()
            .filter(|w| !w.is_finished() && Some(&w.id) != except)
            .map(|w| w.hold())
            .filter(|h| !h.is_zero())
            .collect();
        (free_after(offer, holds.iter().copied()), holds.len())
    }

    /// Adds a job and its hold, with the terms `decide` makes out of the
    /// free capacity and the number of active jobs; atomic with every other
    /// reservation. `Err` if the job is there already or `decide` says no.
    pub fn reserve_new(
        &self,
        job: Arc<WorkerJob>,
        offer: ResourceVec,
        decide: impl FnOnce(ResourceVec, usize) -> Result<Terms, String>,
    ) -> Result<Terms, String> {
        self.refuse_if_paused()?;
        let mut jobs = self.lock();
        if jobs.contains_key(&job.id) {
            return Err("already working on the job".into());
        }
        let (free, active) = Working::room(&jobs, offer, None);
        if active >= self.max {
            return Err(format!(
                "already working on {active} jobs (worker.max_jobs)"
            ));
        }
        let terms = decide(free, active)?;
        job.set_hold(terms.hold);
        // Ended jobs beyond `max` are forgotten.
        let ended: Vec<Hash32> = jobs
            .values()
            .filter(|w| w.is_finished())
            .map(|w| w.id)
            .collect();
        for id in ended.iter().take(ended.len().saturating_sub(self.max)) {
            jobs.remove(id);
        }
        jobs.insert(job.id, job);
        Ok(terms)
    }

    /// Adds a job read back from disk, holding nothing until it bids again;
    /// false if it is there already or the node is at `worker.max_jobs`.
    pub fn insert_loaded(&self, job: Arc<WorkerJob>) -> bool {
        let mut jobs = self.lock();
        let active = jobs.values().filter(|w| !w.is_finished()).count();
        if jobs.contains_key(&job.id) || active >= self.max {
            return false;
        }
        job.set_hold(ResourceVec::default());
        jobs.insert(job.id, job);
        true
    }

    /// New terms for a job already here (it bids again), out of what it
    /// holds and what is free; its hold becomes the new terms'.
    pub fn reserve_again(
        &self,
        job: &WorkerJob,
        offer: ResourceVec,
        decide: impl FnOnce(ResourceVec, usize) -> Result<Terms, String>,
    ) -> Result<Terms, String> {
        self.refuse_if_paused()?;
        let jobs = self.lock();
        let (free, others) = Working::room(&jobs, offer, Some(&job.id));
        let terms = decide(free, others)?;
        job.set_hold(terms.hold);
        Ok(terms)
    }

    /// Sets a job's hold to `need` (what an allocation's shards take) if it
    /// fits in what the job holds and what is free; otherwise `Err` with
    /// the room there was.
    pub fn hold_for(
        &self,
        job: &WorkerJob,
        offer: ResourceVec,
        need: ResourceVec,
    ) -> Result<(), ResourceVec> {
        let jobs = self.lock();
        let (room, _) = Working::room(&jobs, offer, Some(&job.id));
        if !fits(need, room) {
            return Err(room);
        }
        job.set_hold(need);
        Ok(())
    }

    /// Jobs not ended that have no allocation yet (see
    /// `Worker::awaits_allocation`) and were not allocated without this
    /// node.
    pub fn awaiting_allocation(&self) -> Vec<Arc<WorkerJob>> {
        self.lock()
            .values()
            .filter(|w| !w.passed_over() && w.machine().awaits_allocation())
            .cloned()
            .collect()
    }

    /// The job holds nothing of the offer (its node stepped aside).
    pub fn drop_hold(&self, job: &WorkerJob) {
        let _jobs = self.lock();
        job.set_hold(ResourceVec::default());
    }

    /// The job was allocated without this node: it holds nothing from now
    /// on and is not bid on again, larger. True if that freed capacity.
    pub fn stand_by(&self, job: &WorkerJob) -> bool {
        let _jobs = self.lock();
        job.passed_over
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let freed = !job.hold().is_zero();
        job.set_hold(ResourceVec::default());
        freed
    }

    pub fn remove(&self, id: &Hash32) {
        self.lock().remove(id);
    }

    /// Keeps a spec to bid on when capacity frees (oldest dropped first).
    pub fn wait_for_capacity(&self, spec: Signed<JobSpec>) {
        push_once(&self.waiting, spec);
    }

    /// The specs waiting for capacity, taken out (a bid that still does
    /// not fit puts its spec back).
    pub fn take_waiting(&self) -> Vec<Signed<JobSpec>> {
        drain(&self.waiting)
    }

    /// Queues a spec for the next admission pass (at most `MAX_WAITING`,
    /// oldest dropped; once per job).
    pub fn queue_for_admission(&self, spec: Signed<JobSpec>) {
        push_once(&self.queued, spec);
    }

    /// The specs queued for admission, taken out.
    pub fn take_queued(&self) -> Vec<Signed<JobSpec>> {
        drain(&self.queued)
    }

    /// True if no admission pass was due: the caller schedules one.
    pub fn claim_pass(&self) -> bool {
        !self.pass_due.swap(true, Ordering::SeqCst)
    }

    /// The due pass starts: what is queued from now on needs another.
    pub fn release_pass(&self) {
        self.pass_due.store(false, Ordering::SeqCst);
    }
}

type SpecQueue = Mutex<VecDeque<Signed<JobSpec>>>;

/// Appends `spec` unless its job is queued already; at most
/// [`MAX_WAITING`], the oldest dropped.
fn push_once(queue: &SpecQueue, spec: Signed<JobSpec>) {
    let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    let id = spec.id();
    if queue.iter().any(|s| s.id() == id) {
        return;
    }
    if queue.len() >= MAX_WAITING {
        queue.pop_front();
    }
    queue.push_back(spec);
}

fn drain(queue: &SpecQueue) -> Vec<Signed<JobSpec>> {
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect()
}

#[cfg(test)]
mod tests;
