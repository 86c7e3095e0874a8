//! The network-wide window of the beta cap.
//!
//! A coordinator gossips every allocation it makes as an
//! [`AllocationNotice`]: the signed allocation with the signed bids of its
//! winners, so anyone can check whose shards it counts without trusting
//! the coordinator about owners (a bid is signed by its node and carries
//! the node's owner certificate). Every node keeps the checked notices in a
//! [`WindowBook`], the latest allocation of each job, and the same book
//! gives a coordinator the window it clears under and a worker the window
//! it checks a recorded one against ([`check_recorded`]).
//!
//! "The same history" is the set of notices a node has received. Gossip
//! reaches every connected node within about a second, so a worker checks
//! only allocations settled for `settle_ms` before the one it was handed;
//! a notice it received late, or never (a partition, a restart), makes its
//! check more lenient, never stricter. See docs/protocol.md, "Network
//! window".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::WindowUsage;
use crate::cert::TrustPolicy;
use crate::codec::{decode_exact, encode};
use crate::error::ProtocolError;
use crate::identity::{NodeId, OwnerId};
use crate::messages::{Allocation, Bid, MAX_CLOCK_SKEW_MS};
use crate::signed::Signed;
use crate::{Hash32, PublicKey};

/// Largest notice accepted (the `fairgrid/v1/allocations` topic's limit).
pub const MAX_NOTICE_BYTES: usize = 1200 * 1024;
/// Most jobs a book remembers; the ones cleared longest ago go first.
pub const MAX_BOOK_JOBS: usize = 100_000;

/// An allocation as gossiped for the network window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationNotice {
    pub allocation: Signed<Allocation>,
    /// The winners' bids, one per assignment, in assignment order.
    pub winner_bids: Vec<Signed<Bid>>,
}

/// Why a notice, or a recorded window, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("notice: {0}")]
    Envelope(#[from] ProtocolError),
    #[error("notice: {0}")]
    Invalid(String),
    #[error(
        "the recorded window counts {recorded} shards for owner {owner}; this node knows of {known} (allocations settled before it was cleared)"
    )]
    Understated {
        owner: OwnerId,
        recorded: u64,
        known: u64,
    },
    #[error(
        "the recorded window's total {total} is not the sum of its owners' usage ({owners}): usage without an owner"
    )]
    Unowned { total: u64, owners: u64 },
}

/// What the window needs of one allocation, once its notice checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowEntry {
    pub job_id: Hash32,
    pub coordinator: PublicKey,
    pub attempt: u32,
    pub cleared_at: u64,
    pub allocation: Hash32,
    /// Shards per owner.
    pub usage: BTreeMap<OwnerId, u64>,
    /// The nodes that won shards, in assignment order.
    pub winners: Vec<NodeId>,
}

impl AllocationNotice {
    /// The notice for an allocation: `bids` may hold every bid the clearing
    /// considered; only the winners' are kept.
    pub fn new(allocation: Signed<Allocation>, decoded: &Allocation, bids: &[Signed<Bid>]) -> Self {
        let by_id: BTreeMap<Hash32, &Signed<Bid>> = bids.iter().map(|b| (b.id(), b)).collect();
        let winner_bids = decoded
            .assignments
            .iter()
            .filter_map(|a| by_id.get(&a.bid_id).map(|b| (*b).clone()))
            .collect();
        Self {
            allocation,
            winner_bids,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        decode_exact("allocation notice", bytes, MAX_NOTICE_BYTES)
    }

    /// Checks the notice: the allocation's signature; one winner bid per
    /// assignment, signed by the assigned node, for this job, with the id
    /// the assignment names, whose owner (under `trust`, at the clearing
    /// time) is the assignment's owner; payments that add up to the
    /// assignments per owner; not cleared in the future.
    pub fn check(&self, trust: &TrustPolicy, now: u64) -> Result<WindowEntry, WindowError> {
        let (coordinator, allocation) = self.allocation.verify_and_decode()?;
        let bad = |reason: String| Err(WindowError::Invalid(reason));
        if allocation.cleared_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return bad(format!(
                "cleared at {} ms, more than {MAX_CLOCK_SKEW_MS} ms ahead of this node's clock",
                allocation.cleared_at
            ));
        }
        if self.winner_bids.len() != allocation.assignments.len() {
            return bad(format!(
                "{} winner bids for {} assignments",
                self.winner_bids.len(),
                allocation.assignments.len()
            ));
        }
        let mut assigned: BTreeMap<OwnerId, u64> = BTreeMap::new();
        for (i, (assignment, signed)) in allocation
            .assignments
            .iter()
            .zip(&self.winner_bids)
            .enumerate()
        {
            let (signer, bid) = signed.verify_and_decode()?;
            if signed.id() != assignment.bid_id {
                return bad(format!(
                    "winner_bids[{i}] is not the bid assignment {i} names"
                ));
            }
            if signer != bid.node.0 || bid.node != assignment.node {
                return bad(format!(
                    "winner_bids[{i}] is not signed by the assigned node {}",
                    assignment.node
                ));
            }
            if bid.job_id != allocation.job_id {
                return bad(format!("winner_bids[{i}] is for job {}", bid.job_id));
            }
            let owner = trust
                .resolve_owner(&bid.node, bid.owner_cert.as_ref(), allocation.cleared_at)
                .map_err(|e| WindowError::Invalid(format!("winner_bids[{i}]: {e}")))?
                .owner;
            if owner != assignment.owner {
                return bad(format!(
                    "assignment {i} names owner {}, its bid's certificate says {owner}",
                    assignment.owner
                ));
            }
            *assigned.entry(owner).or_default() += assignment.shards.len() as u64;
        }
        let paid: BTreeMap<OwnerId, u64> = allocation
            .payments
            .iter()
            .map(|p| (p.owner, u64::from(p.shards)))
            .collect();
        if paid != assigned || paid.len() != allocation.payments.len() {
            return bad("the payments do not add up to the assignments per owner".into());
        }
        Ok(WindowEntry {
            job_id: allocation.job_id,
            coordinator,
            attempt: allocation.attempt,
            cleared_at: allocation.cleared_at,
            allocation: allocation.hash(),
            usage: assigned,
            winners: allocation.assignments.iter().map(|a| a.node).collect(),
        })
    }
}

/// What [`WindowBook::insert`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The first allocation of its job the book holds, or a later attempt.
    Recorded,
    /// The book already holds this attempt or a later one.
    Stale,
    /// Another coordinator's allocation of the job is on record: the first
    /// coordinator seen binds the job id.
    OtherCoordinator,
    /// Cleared before the window the book keeps.
    Expired,
}

/// The latest allocation of each job over the trailing window.
#[derive(Debug, Clone)]
pub struct WindowBook {
    window_ms: u64,
    jobs: BTreeMap<Hash32, WindowEntry>,
}

impl WindowBook {
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            jobs: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether the book holds an allocation of `job`.
    pub fn contains(&self, job: &Hash32) -> bool {
        self.jobs.contains_key(job)
    }

    /// The latest allocation of `job` the book holds.
    pub fn get(&self, job: &Hash32) -> Option<&WindowEntry> {
        self.jobs.get(job)
    }

    /// Each job's latest allocation the book holds, by job id.
    pub fn entries(&self) -> impl Iterator<Item = &WindowEntry> {
        self.jobs.values()
    }

    /// Records `entry` if it is its job's latest; `now` prunes what has
    /// left the window and bounds the book to [`MAX_BOOK_JOBS`].
    pub fn insert(&mut self, entry: WindowEntry, now: u64) -> Inserted {
        self.prune(now);
        if entry.cleared_at < now.saturating_sub(self.window_ms) {
            return Inserted::Expired;
        }
        if let Some(held) = self.jobs.get(&entry.job_id) {
            if held.coordinator != entry.coordinator {
                return Inserted::OtherCoordinator;
            }
            if held.attempt >= entry.attempt {
                return Inserted::Stale;
            }
        }
        self.jobs.insert(entry.job_id, entry);
        if self.jobs.len() > MAX_BOOK_JOBS {
            let oldest = self
                .jobs
                .values()
                .min_by_key(|e| (e.cleared_at, e.job_id))
                .map(|e| e.job_id)
                .expect("the book is not empty");
            self.jobs.remove(&oldest);
        }
        Inserted::Recorded
    }

    /// Forgets allocations cleared before the window.
    pub fn prune(&mut self, now: u64) {
        let since = now.saturating_sub(self.window_ms);
        self.jobs.retain(|_, e| e.cleared_at >= since);
    }

    /// Shards per owner over the jobs other than `exclude` whose latest
    /// allocation the book holds was cleared in `since..=until`. A job
    /// whose latest allocation is newer than `until` is left out, not
    /// counted at an older attempt: the book no longer knows it.
    pub fn usage(&self, exclude: &Hash32, since: u64, until: u64) -> WindowUsage {
        let mut usage = WindowUsage::default();
        for entry in self.jobs.values() {
            if entry.job_id == *exclude || entry.cleared_at < since || entry.cleared_at > until {
                continue;
            }
            for (owner, shards) in &entry.usage {
                usage.total = usage.total.saturating_add(*shards);
                let by = usage.by_owner.entry(*owner).or_default();
                *by = by.saturating_add(*shards);
            }
        }
        usage
    }

    /// The window a coordinator clears `job` under at `now`: every other
    /// job's latest allocation in the trailing window.
    pub fn window_for(&self, job: &Hash32, now: u64) -> WindowUsage {
        self.usage(job, now.saturating_sub(self.window_ms), now)
    }

    /// What a worker holds a recorded window to for an allocation of `job`
    /// cleared at `cleared_at`: the allocations it knows that were settled
    /// `settle_ms` before it.
    pub fn settled_for(&self, job: &Hash32, cleared_at: u64, settle_ms: u64) -> WindowUsage {
        self.usage(
            job,
            cleared_at.saturating_sub(self.window_ms),
            cleared_at.saturating_sub(settle_ms),
        )
    }
}

/// Checks a recorded window against what this node knows: every owner's
/// recorded usage is at least what the node knows of it, and the total is
/// exactly the owners' sum (usage nobody owns would only raise every
/// owner's room). A recorded window may hold more than the node knows
/// (allocations it has not heard of): that is not a fault.
pub fn check_recorded(recorded: &WindowUsage, known: &WindowUsage) -> Result<(), WindowError> {
    let owners = recorded
        .by_owner
        .values()
        .fold(0u64, |sum, used| sum.saturating_add(*used));
    if owners != recorded.total {
        return Err(WindowError::Unowned {
            total: recorded.total,
            owners,
        });
    }
    for (owner, known) in &known.by_owner {
        let recorded = recorded.by_owner.get(owner).copied().unwrap_or(0);
        if recorded < *known {
            return Err(WindowError::Understated {
                owner: *owner,
                recorded,
                known: *known,
            });
        }
    }
    Ok(())
}
