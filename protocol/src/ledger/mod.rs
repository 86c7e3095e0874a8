//! Ledger entry types and the pure verification of a hash chain.
//!
//! Each node keeps an append-only chain of entries it authored: entry `n`
//! carries `seq = n` and the *link* of entry `n - 1` (ZERO for the first),
//! and is signed by its author. An entry's link is the BLAKE3 hash of its
//! canonical bytes (the signed envelope's payload), which already hold the
//! author, seq and previous link; so the chain fixes every entry's content
//! and order, and entry `n + 1` can be built before entry `n`'s signature
//! exists (a batch of entries is signed in parallel, see [`UnsignedEntry`]).
//! The entry's public identifier stays its message id ([`Signed::id`]).
//!
//! - [`chain`]: [`verify_chain`] and the incremental [`ChainVerifier`] walk a
//!   chain and check every link and signature;
//! - `batch`: the same-signer ed25519 batch check they use.
//!
//! Values are integers only (loss in micro-units, accuracy in ppm) so every
//! node hashes the same bytes.

mod batch;
pub mod chain;

pub use chain::{ChainSummary, ChainVerifier, verify_chain};

use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::Keypair;
use crate::identity::{NodeId, OwnerId};
use crate::messages::{Allocation, AuditReport, Bid, RoundUpdate};
use crate::signed::{Signed, SignedMessage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub author: NodeId,
    pub seq: u64,
    pub prev: Hash32,
    /// Unix milliseconds, as the author's clock saw it.
    pub timestamp: u64,
    pub body: EntryBody,
}

impl SignedMessage for LedgerEntry {
    const KIND: &'static str = "ledger-entry";
    const MAX_BYTES: usize = 17 * 1024 * 1024;
}

/// One worker's part in a completed round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundParticipant {
    pub node: NodeId,
    pub owner: OwnerId,
    pub shards: Vec<u32>,
    pub samples: u64,
    pub update_hash: Hash32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryBody {
    AdvertSeen {
        advert_id: Hash32,
        node: NodeId,
        owner: OwnerId,
        seq: u64,
        expires_at: u64,
    },
    CertificateUsed {
        node: NodeId,
        owner: OwnerId,
        serial: u64,
        label: String,
        valid_until: u64,
    },
    JobSubmitted {
        job_id: Hash32,
        submitter: NodeId,
        shards: u32,
        limit_price: u64,
        alpha_ppm: u32,
    },
    /// The signed allocation and the signed bids it was cleared from, so that
    /// anyone can recompute it offline.
    AllocationMade {
        job_id: Hash32,
        allocation: Signed<Allocation>,
        bids: Vec<Signed<Bid>>,
    },
    RoundCompleted {
        job_id: Hash32,
        round: u32,
        participants: Vec<RoundParticipant>,
        /// Hash of the parameters after the round.
        model_hash: Hash32,
        train_loss_micro: u64,
        test_accuracy_ppm: Option<u32>,
    },
    Credit {
        job_id: Hash32,
        owner: OwnerId,
        /// Milli-credits earned.
        amount: u64,
        shards: u32,
        clearing_price: u64,
        allocation: Hash32,
    },
    Verification {
        job_id: Hash32,
        round: u32,
        node: NodeId,
        passed: bool,
        detail: String,
    },
    JobFinished {
        job_id: Hash32,
        rounds: u32,
        model_hash: Hash32,
        test_accuracy_ppm: u32,
        bytes_moved: u64,
    },
    /// A job ended without finishing, and why (its coordinator records it).
    JobFailed {
        job_id: Hash32,
        rounds: u32,
        reason: String,
    },
    /// An update recomputed by an auditor: the worker's signed update, how
    /// far the revealed delta was from the recomputed one and the
    /// tolerance, and the hash of the evidence file (the round's
    /// parameters, the revealed delta and residual) with which
    /// `fairgrid audit replay` reproduces the verdict offline.
    Audit {
        job_id: Hash32,
        round: u32,
        worker: NodeId,
        owner: OwnerId,
        update: Box<Signed<RoundUpdate>>,
        passed: bool,
        /// Relative L2 distance, in parts per billion (u64::MAX: not
        /// computed, the verdict came from an earlier check).
        distance_ppb: u64,
        tolerance_ppb: u64,
        detail: String,
        evidence: Hash32,
    },
    /// An audit another owner's node did for the coordinator: its signed
    /// report, and what the coordinator made of it (see [`ReportOutcome`]).
    /// An upheld report earns the auditor's owner what the audited work
    /// earns (`shards` of the worker's owner, this round).
    AuditReported {
        job_id: Hash32,
        round: u32,
        report: Box<Signed<AuditReport>>,
        auditor_owner: OwnerId,
        worker_owner: OwnerId,
        shards: u32,
        outcome: ReportOutcome,
    },
}

/// What a coordinator made of an auditor's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportOutcome {
    /// Taken as the verdict (a pass not rechecked), or the coordinator's
    /// own replay agreed: paid.
    Upheld,
    /// The coordinator's replay disagreed under a rule at least as
    /// favourable to the report (as strict for a failure, as lenient for
    /// a pass): the auditor is out of the job, its owner counts a failure.
    Overruled,
    /// They disagreed, but the coordinator judged by a rule the report's
    /// could not be held to (the two replayed on different kinds of
    /// arithmetic): neither paid nor held against the auditor.
    Unconfirmed,
}

/// The kinds of entry, one sled tree each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    AdvertSeen,
    CertificateUsed,
    JobSubmitted,
    AllocationMade,
    RoundCompleted,
    Credit,
    Verification,
    JobFinished,
    JobFailed,
    Audit,
    AuditReported,
}

impl EntryKind {
    pub const ALL: [EntryKind; 11] = [
        EntryKind::AdvertSeen,
        EntryKind::CertificateUsed,
        EntryKind::JobSubmitted,
        EntryKind::AllocationMade,
        EntryKind::RoundCompleted,
        EntryKind::Credit,
        EntryKind::Verification,
        EntryKind::JobFinished,
        EntryKind::JobFailed,
        EntryKind::Audit,
        EntryKind::AuditReported,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::AdvertSeen => "advert_seen",
            EntryKind::CertificateUsed => "certificate_used",
            EntryKind::JobSubmitted => "job_submitted",
            EntryKind::AllocationMade => "allocation_made",
            EntryKind::RoundCompleted => "round_completed",
            EntryKind::Credit => "credit",
            EntryKind::Verification => "verification",
            EntryKind::JobFinished => "job_finished",
            EntryKind::JobFailed => "job_failed",
            EntryKind::Audit => "audit",
            EntryKind::AuditReported => "audit_reported",
        }
    }
}

impl EntryBody {
    pub fn kind(&self) -> EntryKind {
        match self {
            EntryBody::AdvertSeen { .. } => EntryKind::AdvertSeen,
            EntryBody::CertificateUsed { .. } => EntryKind::CertificateUsed,
            EntryBody::JobSubmitted { .. } => EntryKind::JobSubmitted,
            EntryBody::AllocationMade { .. } => EntryKind::AllocationMade,
            EntryBody::RoundCompleted { .. } => EntryKind::RoundCompleted,
            EntryBody::Credit { .. } => EntryKind::Credit,
            EntryBody::Verification { .. } => EntryKind::Verification,
            EntryBody::JobFinished { .. } => EntryKind::JobFinished,
            EntryBody::JobFailed { .. } => EntryKind::JobFailed,
            EntryBody::Audit { .. } => EntryKind::Audit,
            EntryBody::AuditReported { .. } => EntryKind::AuditReported,
        }
    }

    /// The job an entry belongs to, for the by-job index.
    pub fn job_id(&self) -> Option<Hash32> {
        match self {
            EntryBody::JobSubmitted { job_id, .. }
            | EntryBody::AllocationMade { job_id, .. }
            | EntryBody::RoundCompleted { job_id, .. }
            | EntryBody::Credit { job_id, .. }
            | EntryBody::Verification { job_id, .. }
            | EntryBody::JobFinished { job_id, .. }
            | EntryBody::JobFailed { job_id, .. }
            | EntryBody::Audit { job_id, .. }
            | EntryBody::AuditReported { job_id, .. } => Some(*job_id),
            EntryBody::AdvertSeen { .. } | EntryBody::CertificateUsed { .. } => None,
        }
    }

    /// The owners an entry concerns, for the by-owner index.
    pub fn owners(&self) -> Vec<OwnerId> {
        match self {
            EntryBody::AdvertSeen { owner, .. }
            | EntryBody::CertificateUsed { owner, .. }
            | EntryBody::Credit { owner, .. }
            | EntryBody::Audit { owner, .. } => vec![*owner],
            EntryBody::AuditReported { auditor_owner, .. } => vec![*auditor_owner],
            EntryBody::RoundCompleted { participants, .. } => {
                let mut owners: Vec<OwnerId> = participants.iter().map(|p| p.owner).collect();
                owners.sort();
                owners.dedup();
                owners
            }
            _ => Vec::new(),
        }
    }
}

impl LedgerEntry {
    /// Signs the next entry after `prev`, given as `(seq, link)` of the
    /// previous entry (None for the first entry).
    pub fn sign_next(
        keypair: &Keypair,
        prev: Option<(u64, Hash32)>,
        timestamp: u64,
        body: EntryBody,
    ) -> Signed<LedgerEntry> {
        LedgerEntry::prepare_next(keypair.node_id(), prev, timestamp, body).sign(keypair)
    }

    /// Builds and encodes the next entry after `prev` (`(seq, link)` of the
    /// previous entry, None for the first) without signing it.
    pub fn prepare_next(
        author: NodeId,
        prev: Option<(u64, Hash32)>,
        timestamp: u64,
        body: EntryBody,
    ) -> UnsignedEntry {
        let (seq, prev) = match prev {
            Some((seq, link)) => (seq + 1, link),
            None => (0, Hash32::ZERO),
        };
        let payload = crate::codec::encode(&LedgerEntry {
            author,
            seq,
            prev,
            timestamp,
            body,
        });
        UnsignedEntry {
            author,
            seq,
            link: Hash32::of(&payload),
            payload,
        }
    }

    /// The link of a signed entry: what the next entry's `prev` must be.
    pub fn link_of(signed: &Signed<LedgerEntry>) -> Hash32 {
        Hash32::of(&signed.payload)
    }
}

/// An entry encoded as the next link of a chain but not yet signed.
/// Building one is cheap and must happen in chain order; signing, the
/// costly part, can then happen on any thread.
#[derive(Debug, Clone)]
pub struct UnsignedEntry {
    author: NodeId,
    seq: u64,
    link: Hash32,
    payload: Vec<u8>,
}

impl UnsignedEntry {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the next entry's `prev` is.
    pub fn link(&self) -> Hash32 {
        self.link
    }

    /// Signs the entry with its author's key.
    ///
    /// # Panics
    /// If `keypair` is not the key of the author the entry was prepared for
    /// (a programming error: the result could never verify).
    pub fn sign(self, keypair: &Keypair) -> Signed<LedgerEntry> {
        assert_eq!(
            keypair.node_id(),
            self.author,
            "a ledger entry is signed by its author"
        );
        Signed::sign_encoded(keypair, self.payload)
    }
}
