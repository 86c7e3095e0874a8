//! The network window of the beta cap, the node's part: every allocation a
//! coordinator makes is gossiped on `fairgrid/v1/allocations` as an
//! `AllocationNotice`; every node checks the notices it receives and keeps
//! the latest allocation of each job in a `WindowBook`. A coordinator
//! clears under the window its book gives; a worker refuses an allocation
//! whose recorded window omits usage it knows was settled before it. The
//! rules are `protocol::market::window`'s; docs/protocol.md, "Network
//! window", says what "the same history" means.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::ledger::{EntryBody, EntryKind};
use fairgrid_protocol::market::window::Inserted;
use fairgrid_protocol::market::{
    AllocationNotice, PPM, WindowBook, WindowEntry, WindowUsage, check_recorded,
};
use fairgrid_protocol::messages::Allocation;
use fairgrid_protocol::{Hash32, NodeId, ResourceVec, Signed};
use libp2p::PeerId;
use tracing::{debug, warn};

use super::JobsContext;
use crate::config::JobsConfig;
use crate::ledger::now_ms;
use crate::net::{Topic, Verdict};

const TARGET: &str = "fairgrid::jobs";
/// Own `AllocationMade` entries read back at start, newest first.
const MAX_SEEDED: usize = 10_000;

/// Demands per shard remembered for the jobs heard of.
const MAX_DEMANDS: usize = 4096;

/// This node's view of the allocations made across the network.
pub struct NetworkWindow {
    book: Mutex<WindowBook>,
    settle_ms: u64,
    beta_ppm: u32,
    /// Each job's demand per shard, from its spec, oldest first.
    demands: Mutex<VecDeque<(Hash32, ResourceVec)>>,
}

impl NetworkWindow {
    pub fn new(config: &JobsConfig) -> Self {
        Self {
            book: Mutex::new(WindowBook::new(config.window_secs.saturating_mul(1000))),
            settle_ms: config.window_settle_ms,
            beta_ppm: config.beta_ppm,
            demands: Mutex::new(VecDeque::new()),
        }
    }

    /// Remembers what a shard of a job heard of asks for, so that its
    /// allocations count in its submitter's usage.
    pub fn note_demand(&self, job: Hash32, per_shard: ResourceVec) {
        let mut demands = self.demands.lock().expect("demands lock");
        if demands.iter().any(|(id, _)| *id == job) {
            return;
        }
        if demands.len() >= MAX_DEMANDS {
            demands.pop_front();
        }
        demands.push_back((job, per_shard));
    }

    /// What each submitter's jobs were allocated over the window, in
    /// resources (shards times their demand per shard; a job whose spec
    /// this node never saw is left out): the usage admission ranks
    /// submitters by.
    pub fn usage_by_submitter(&self, now: u64) -> BTreeMap<NodeId, ResourceVec> {
        let demands: BTreeMap<Hash32, ResourceVec> = self
            .demands
            .lock()
            .expect("demands lock")
            .iter()
            .copied()
            .collect();
        let mut book = self.book();
        book.prune(now);
        let mut usage: BTreeMap<NodeId, ResourceVec> = BTreeMap::new();
        for entry in book.entries() {
            let Some(per_shard) = demands.get(&entry.job_id) else {
                continue;
            };
            let shards: u64 = entry.usage.values().sum();
            let (used, more) = (
                usage.entry(NodeId(entry.coordinator)).or_default(),
                per_shard.saturating_mul(shards).as_array(),
            );
            *used = ResourceVec::from_array(std::array::from_fn(|r| {
                used.as_array()[r].saturating_add(more[r])
            }));
        }
        usage
    }

    fn book(&self) -> std::sync::MutexGuard<'_, WindowBook> {
        self.book.lock().expect("window book lock")
    }

    pub fn record(&self, entry: WindowEntry, now: u64) -> Inserted {
        self.book().insert(entry, now)
    }

    /// The window a coordinator clears `job` under.
    pub fn window_for(&self, job: &Hash32, now: u64) -> WindowUsage {
        self.book().window_for(job, now)
    }

    /// Jobs whose latest allocation the book holds.
    pub fn jobs_known(&self) -> usize {
        self.book().len()
    }

    /// Whether an allocation of `job` has been heard of.
    pub fn has_allocation(&self, job: &Hash32) -> bool {
        self.book().contains(job)
    }

    /// The nodes that won shards in the latest allocation of `job` heard
    /// of, if any was.
    pub fn winners_of(&self, job: &Hash32) -> Option<Vec<NodeId>> {
        self.book().get(job).map(|entry| entry.winners.clone())
    }

    /// Checks the window an allocation was cleared under, as a winner must
    /// before taking part: its beta is this node's network cap or
    /// stricter, and its window counts at least the usage this node knows
    /// was settled `jobs.window_settle_ms` before the clearing.
    pub fn check(&self, allocation: &Allocation) -> Result<(), String> {
        let beta = allocation.policy.beta_ppm;
        if beta > self.beta_ppm {
            return Err(format!(
                "network window: cleared with beta {beta} ppm, above this node's network cap of {} ppm (jobs.beta_ppm)",
                self.beta_ppm
            ));
        }
        if beta >= PPM {
            return Ok(());
        }
        let known =
            self.book()
                .settled_for(&allocation.job_id, allocation.cleared_at, self.settle_ms);
        check_recorded(&allocation.policy.window, &known)
            .map_err(|e| format!("network window: {e}"))
    }

    /// Forgets every allocation: a test stands in for a node that missed
    /// the gossip.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn forget_all(&self) {
        *self.book() = WindowBook::new(u64::MAX);
    }
}

/// A notice from the network: checked, recorded, forwarded if new.
pub fn on_gossip(ctx: &Arc<JobsContext>, source: PeerId, data: &[u8]) -> Verdict {
    let now = now_ms();
    let entry = AllocationNotice::from_bytes(data)
        .map_err(|e| e.to_string())
        .and_then(|notice| notice.check(&ctx.trust, now).map_err(|e| e.to_string()));
    let entry = match entry {
        Ok(entry) => entry,
        Err(reason) => {
            warn!(target: TARGET, peer = %source, %reason, "allocation notice rejected");
            return Verdict::Reject;
        }
    };
    let (job, winners) = (entry.job_id, entry.winners.clone());
    match ctx.jobs.window.record(entry, now) {
        Inserted::Recorded => {
            super::worker::allocated_without_us(ctx, &job, &winners);
            Verdict::Accept
        }
        Inserted::OtherCoordinator => {
            warn!(target: TARGET, peer = %source, %job, "allocation notice signed by another coordinator than the job's first; ignored");
            Verdict::Ignore
        }
        Inserted::Stale | Inserted::Expired => Verdict::Ignore,
    }
}

/// Records this node's own allocation and gossips it (gossip does not
/// come back to its sender). A notice that cannot be gossiped (no peer, or
/// over the topic's limit) leaves the network window without it; the
/// allocation itself goes ahead.
pub async fn announce(ctx: &Arc<JobsContext>, notice: AllocationNotice) {
    let now = now_ms();
    match notice.check(&ctx.trust, now) {
        Ok(entry) => {
            let (job, winners) = (entry.job_id, entry.winners.clone());
            ctx.jobs.window.record(entry, now);
            super::worker::allocated_without_us(ctx, &job, &winners);
        }
        Err(e) => {
            warn!(target: TARGET, error = %e, "own allocation notice does not check; not announced");
            return;
        }
    }
    let bytes = notice.to_bytes();
    if bytes.len() > Topic::Allocations.max_bytes() {
        warn!(target: TARGET, len = bytes.len(), "allocation notice over the gossip limit; not announced");
        return;
    }
    if let Err(e) = ctx.net.publish(Topic::Allocations, bytes).await {
        debug!(target: TARGET, error = %e, "allocation notice not gossiped");
    }
}

/// Fills the book from this node's own `AllocationMade` entries in the
/// window, so a restarted coordinator still counts the jobs it cleared.
pub fn seed_from_ledger(ctx: &JobsContext) {
    let store = ctx.ledger.store();
    let seqs = match store.seqs_of_kind(EntryKind::AllocationMade, None, usize::MAX) {
        Ok(s) => s,
        Err(e) => {
            warn!(target: TARGET, error = %e, "reading allocations for the network window");
            return;
        }
    };
    let now = now_ms();
    let mut seeded = 0;
    for seq in seqs.iter().rev().take(MAX_SEEDED) {
        let Ok(Some(stored)) = store.get(*seq) else {
            continue;
        };
        let Ok(entry) = stored.entry() else { continue };
        let EntryBody::AllocationMade {
            allocation, bids, ..
        } = entry.body
        else {
            continue;
        };
        let Some(notice) = notice_of(allocation, &bids) else {
            continue;
        };
        if let Ok(checked) = notice.check(&ctx.trust, now)
            && ctx.jobs.window.record(checked, now) == Inserted::Recorded
        {
            seeded += 1;
        }
    }
    debug!(target: TARGET, seeded, "network window seeded from the ledger");
}

/// The notice for a signed allocation and the bids it was cleared from.
pub fn notice_of(
    signed: Signed<Allocation>,
    bids: &[Signed<fairgrid_protocol::messages::Bid>],
) -> Option<AllocationNotice> {
    let (_, allocation) = signed.verify_and_decode().ok()?;
    Some(AllocationNotice::new(signed, &allocation, bids))
}
