//! Ledger entry types and the pure verification of a hash chain.
//!
//! Each node keeps an append-only chain of entries it authored: entry `n`
//! carries `seq = n` and the id of entry `n - 1` (ZERO for the first), and is
//! signed by its author. [`verify_chain`] walks a chain and checks every
//! link and signature, batching signature checks for speed. Values are
//! integers only (loss in micro-units, accuracy in ppm) so every node hashes
//! the same bytes.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::error::{ProtocolError, Result};
use crate::identity::{NodeId, OwnerId};
use crate::messages::{Allocation, Bid};
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
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::AdvertSeen,
        EntryKind::CertificateUsed,
        EntryKind::JobSubmitted,
        EntryKind::AllocationMade,
        EntryKind::RoundCompleted,
        EntryKind::Credit,
        EntryKind::Verification,
        EntryKind::JobFinished,
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
            | EntryBody::JobFinished { job_id, .. } => Some(*job_id),
            EntryBody::AdvertSeen { .. } | EntryBody::CertificateUsed { .. } => None,
        }
    }

    /// The owners an entry concerns, for the by-owner index.
    pub fn owners(&self) -> Vec<OwnerId> {
        match self {
            EntryBody::AdvertSeen { owner, .. }
            | EntryBody::CertificateUsed { owner, .. }
            | EntryBody::Credit { owner, .. } => vec![*owner],
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
    /// Signs the next entry after `prev` (None for the first entry).
    pub fn sign_next(
        keypair: &crate::Keypair,
        prev: Option<(u64, Hash32)>,
        timestamp: u64,
        body: EntryBody,
    ) -> Signed<LedgerEntry> {
        let (seq, prev) = match prev {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, Hash32::ZERO),
        };
        Signed::sign(
            keypair,
            &LedgerEntry {
                author: keypair.node_id(),
                seq,
                prev,
                timestamp,
                body,
            },
        )
    }
}

/// What a successful chain walk found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainSummary {
    pub author: Option<NodeId>,
    pub entries: u64,
    /// Id of the last entry (ZERO for an empty chain).
    pub head: Hash32,
}

/// Signatures are checked in batches of this many.
const BATCH: usize = 512;

/// Walks a chain incrementally: feed entries in order with [`push`], then
/// [`finish`]. Links are checked as entries arrive; signatures in batches.
///
/// [`push`]: ChainVerifier::push
/// [`finish`]: ChainVerifier::finish
#[derive(Default)]
pub struct ChainVerifier {
    summary: ChainSummary,
    pending: Vec<(u64, Hash32, Signed<LedgerEntry>)>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues a chain whose first `summary.entries` entries (ending at
    /// `summary.head`) were verified elsewhere, so that a long chain can be
    /// checked in parallel chunks; each chunk starts from the id of the
    /// entry before it.
    pub fn resume(summary: ChainSummary) -> Self {
        ChainVerifier {
            summary,
            pending: Vec::new(),
        }
    }

    pub fn push(&mut self, signed: Signed<LedgerEntry>) -> Result<()> {
        let id = signed.id();
        let seq = self.summary.entries;
        match self.check_link(&signed, id, seq) {
            Ok(()) => {}
            // A damaged earlier entry also breaks this link (its id changed);
            // report the earliest fault, which the pending signatures may hold.
            Err(link_error) => return Err(self.flush_signatures().err().unwrap_or(link_error)),
        }
        self.pending.push((seq, id, signed));
        if self.pending.len() >= BATCH {
            self.flush_signatures()?;
        }
        Ok(())
    }

    fn check_link(&mut self, signed: &Signed<LedgerEntry>, id: Hash32, seq: u64) -> Result<()> {
        let broken = |reason: String| ProtocolError::Chain {
            seq,
            entry: id,
            reason,
        };
        if signed.payload.len() > LedgerEntry::MAX_BYTES {
            return Err(broken("entry exceeds the size limit".into()));
        }
        let entry: LedgerEntry =
            crate::codec::decode_exact(LedgerEntry::KIND, &signed.payload, LedgerEntry::MAX_BYTES)
                .map_err(|e| broken(e.to_string()))?;
        if entry.author.0 != signed.signer {
            return Err(broken("signer is not the entry's author".into()));
        }
        if let Some(author) = self.summary.author
            && author != entry.author
        {
            return Err(broken(format!(
                "author changed from {author} to {}",
                entry.author
            )));
        }
        if entry.seq != seq {
            return Err(broken(format!(
                "seq {} where {seq} was expected",
                entry.seq
            )));
        }
        if entry.prev != self.summary.head {
            return Err(broken(format!(
                "links to {} but the previous entry is {}",
                entry.prev, self.summary.head
            )));
        }
        self.summary.author = Some(entry.author);
        self.summary.entries += 1;
        self.summary.head = id;
        Ok(())
    }

    pub fn finish(mut self) -> Result<ChainSummary> {
        self.flush_signatures()?;
        Ok(self.summary)
    }

    fn flush_signatures(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return Ok(());
        }
        let inputs: Vec<Vec<u8>> = batch.iter().map(|(_, _, s)| s.signing_input()).collect();
        let messages: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let signatures: Vec<Signature> = batch
            .iter()
            .map(|(_, _, s)| Signature::from_bytes(&s.signature.0))
            .collect();
        // A chain has one author: decompress its key once, not per entry.
        let mut last: Option<(crate::PublicKey, VerifyingKey)> = None;
        let keys: Option<Vec<VerifyingKey>> = batch
            .iter()
            .map(|(_, _, s)| match last {
                Some((signer, key)) if signer == s.signer => Some(key),
                _ => {
                    let key = s.signer.verifying_key()?;
                    last = Some((s.signer, key));
                    Some(key)
                }
            })
            .collect();
        if let Some(keys) = keys
            && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        {
            return Ok(());
        }
        // The batch failed: find the first bad entry, checked one by one.
        for (seq, id, signed) in &batch {
            if let Err(e) = signed.verify_signature() {
                return Err(ProtocolError::Chain {
                    seq: *seq,
                    entry: *id,
                    reason: e.to_string(),
                });
            }
        }
        Err(ProtocolError::Chain {
            seq: batch[0].0,
            entry: batch[0].1,
            reason: "batch signature check failed".into(),
        })
    }
}

/// Verifies a whole chain given in order.
pub fn verify_chain(
    entries: impl IntoIterator<Item = Signed<LedgerEntry>>,
) -> Result<ChainSummary> {
    let mut verifier = ChainVerifier::new();
    for entry in entries {
        verifier.push(entry)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn chain(key: &Keypair, n: u64) -> Vec<Signed<LedgerEntry>> {
        let mut out: Vec<Signed<LedgerEntry>> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (i - 1, e.id()));
            let body = EntryBody::Verification {
                job_id: Hash32::of(&i.to_le_bytes()),
                round: i as u32,
                node: key.node_id(),
                passed: true,
                detail: String::new(),
            };
            out.push(LedgerEntry::sign_next(key, prev, 1000 + i, body));
        }
        out
    }

    #[test]
    fn valid_chain_verifies() {
        let key = Keypair::from_seed(b"author");
        let entries = chain(&key, 1200);
        let head = entries.last().unwrap().id();
        let summary = verify_chain(entries).unwrap();
        assert_eq!(summary.entries, 1200);
        assert_eq!(summary.head, head);
    }

    #[test]
    fn chunks_resumed_from_a_summary_verify_like_the_whole() {
        let key = Keypair::from_seed(b"author");
        let entries = chain(&key, 900);
        let mut first = ChainVerifier::new();
        for e in &entries[..400] {
            first.push(e.clone()).unwrap();
        }
        let start = first.finish().unwrap();
        let mut second = ChainVerifier::resume(start);
        for e in &entries[400..] {
            second.push(e.clone()).unwrap();
        }
        assert_eq!(
            second.finish().unwrap(),
            verify_chain(entries.clone()).unwrap()
        );

        let wrong_start = ChainSummary {
            head: Hash32::of(b"elsewhere"),
            ..verify_chain(entries[..400].to_vec()).unwrap()
        };
        let mut resumed = ChainVerifier::resume(wrong_start);
        assert!(matches!(
            resumed.push(entries[400].clone()),
            Err(ProtocolError::Chain { seq: 400, .. })
        ));
    }

    #[test]
    fn each_kind_of_damage_is_found_at_its_seq() {
        let key = Keypair::from_seed(b"author");
        let good = chain(&key, 700);

        let mut dropped = good.clone();
        dropped.remove(600);
        assert!(matches!(
            verify_chain(dropped),
            Err(ProtocolError::Chain { seq: 600, .. })
        ));

        let mut swapped = good.clone();
        swapped.swap(10, 11);
        assert!(matches!(
            verify_chain(swapped),
            Err(ProtocolError::Chain { seq: 10, .. })
        ));

        let mut bad_sig = good.clone();
        bad_sig[650].signature.0[5] ^= 1;
        assert!(matches!(
            verify_chain(bad_sig),
            Err(ProtocolError::Chain { seq: 650, .. })
        ));

        let other = Keypair::from_seed(b"intruder");
        let mut foreign = good.clone();
        let entry = foreign[3].verify_and_decode().unwrap().1;
        foreign[3] = Signed::sign(&other, &entry);
        assert!(matches!(
            verify_chain(foreign),
            Err(ProtocolError::Chain { seq: 3, .. })
        ));
    }
}
