//! Walking a chain: every link, sequence number, author and signature.
//!
//! Links are checked as entries arrive; signatures are checked in batches
//! (one author per chain, so [`super::batch`] checks a batch as one
//! multiscalar multiplication). A long chain can be checked in parallel
//! chunks: each chunk [`resume`](ChainVerifier::resume)s from the link of
//! the entry before it.

use crate::error::{ProtocolError, Result};
use crate::identity::{NodeId, SignatureBytes};
use crate::signed::{Signed, SignedMessage, signing_input};
use crate::{Hash32, PROTOCOL_VERSION};

use super::LedgerEntry;
use super::batch::{SignerKey, verify_same_signer};

/// What a successful chain walk found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainSummary {
    pub author: Option<NodeId>,
    pub entries: u64,
    /// Link of the last entry (ZERO for an empty chain): what the next
    /// entry's `prev` must be.
    pub head_link: Hash32,
}

/// Signatures are checked in batches of at most this many entries...
const BATCH: usize = 2048;
/// ...or this many payload bytes, whichever comes first (entries can be
/// megabytes: an `AllocationMade` holds every bid).
const BATCH_BYTES: usize = 8 << 20;

/// Walks a chain incrementally: feed entries in order with [`push`], then
/// [`finish`].
///
/// [`push`]: ChainVerifier::push
/// [`finish`]: ChainVerifier::finish
#[derive(Default)]
pub struct ChainVerifier {
    summary: ChainSummary,
    /// The author's key, decompressed once.
    key: Option<SignerKey>,
    pending: Vec<(u64, Signed<LedgerEntry>)>,
    pending_bytes: usize,
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues a chain whose first `summary.entries` entries (ending at
    /// `summary.head_link`) were verified elsewhere.
    pub fn resume(summary: ChainSummary) -> Self {
        ChainVerifier {
            summary,
            ..Self::default()
        }
    }

    pub fn push(&mut self, signed: Signed<LedgerEntry>) -> Result<()> {
        let seq = self.summary.entries;
        if let Err(link_error) = self.check_link(&signed, seq) {
            // A damaged earlier entry can also break this link; report the
            // earliest fault, which the pending signatures may hold.
            return Err(self.flush_signatures().err().unwrap_or(link_error));
        }
        self.pending_bytes += signed.payload.len();
        self.pending.push((seq, signed));
        if self.pending.len() >= BATCH || self.pending_bytes >= BATCH_BYTES {
            self.flush_signatures()?;
        }
        Ok(())
    }

    fn check_link(&mut self, signed: &Signed<LedgerEntry>, seq: u64) -> Result<()> {
        let broken = |reason: String| ProtocolError::Chain {
            seq,
            entry: signed.id(),
            reason,
        };
        if signed.version != PROTOCOL_VERSION {
            return Err(broken(format!(
                "protocol version {} where {PROTOCOL_VERSION} is supported",
                signed.version
            )));
        }
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
        if entry.prev != self.summary.head_link {
            return Err(broken(format!(
                "links to {} but the previous entry's link is {}",
                entry.prev, self.summary.head_link
            )));
        }
        if self.key.is_none() {
            self.key = SignerKey::new(&entry.author.0);
        }
        self.summary.author = Some(entry.author);
        self.summary.entries += 1;
        self.summary.head_link = LedgerEntry::link_of(signed);
        Ok(())
    }

    pub fn finish(mut self) -> Result<ChainSummary> {
        self.flush_signatures()?;
        Ok(self.summary)
    }

    fn flush_signatures(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(key) = &self.key
            && key.batchable()
        {
            // Every pending entry passed `check_link`: same signer, this
            // protocol version, so the same signing prefix.
            let prefix = signing_input(LedgerEntry::KIND, PROTOCOL_VERSION, &[]);
            let items: Vec<(&[u8], &SignatureBytes)> = batch
                .iter()
                .map(|(_, s)| (s.payload.as_slice(), &s.signature))
                .collect();
            if verify_same_signer(key, &prefix, &items) {
                return Ok(());
            }
        }
        // The batch failed (or the key cannot be batched): check one by one
        // and report the first bad entry.
        for (seq, signed) in &batch {
            if let Err(e) = signed.verify_signature() {
                return Err(ProtocolError::Chain {
                    seq: *seq,
                    entry: signed.id(),
                    reason: e.to_string(),
                });
            }
        }
        if self.key.as_ref().is_some_and(SignerKey::batchable) {
            // Each signature passes `verify_strict` alone but not the batch:
            // only a signer crafting signatures can cause this.
            return Err(ProtocolError::Chain {
                seq: batch[0].0,
                entry: batch[0].1.id(),
                reason: "the batch signature check failed".into(),
            });
        }
        Ok(())
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
    use crate::ledger::EntryBody;

    fn body(i: u64, node: NodeId) -> EntryBody {
        EntryBody::Verification {
            job_id: Hash32::of(&i.to_le_bytes()),
            round: i as u32,
            node,
            passed: true,
            detail: String::new(),
        }
    }

    fn chain(key: &Keypair, n: u64) -> Vec<Signed<LedgerEntry>> {
        let mut out: Vec<Signed<LedgerEntry>> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (i - 1, LedgerEntry::link_of(e)));
            out.push(LedgerEntry::sign_next(
                key,
                prev,
                1000 + i,
                body(i, key.node_id()),
            ));
        }
        out
    }

    #[test]
    fn valid_chain_verifies() {
        let key = Keypair::from_seed(b"author");
        let entries = chain(&key, 2500);
        let head = LedgerEntry::link_of(entries.last().unwrap());
        let summary = verify_chain(entries).unwrap();
        assert_eq!(summary.entries, 2500);
        assert_eq!(summary.head_link, head);
        assert_eq!(summary.author, Some(key.node_id()));
        assert_eq!(verify_chain([]).unwrap(), ChainSummary::default());
    }

    #[test]
    fn entries_prepared_in_order_and_signed_in_any_order_are_the_same_chain() {
        let key = Keypair::from_seed(b"author");
        let expected = chain(&key, 50);
        let mut prev = None;
        let mut unsigned = Vec::new();
        for i in 0..50 {
            let entry =
                LedgerEntry::prepare_next(key.node_id(), prev, 1000 + i, body(i, key.node_id()));
            prev = Some((entry.seq(), entry.link()));
            unsigned.push(entry);
        }
        // Sign back to front: nothing about an entry depends on an earlier
        // entry's signature.
        let mut signed: Vec<_> = unsigned.into_iter().rev().map(|u| u.sign(&key)).collect();
        signed.reverse();
        assert_eq!(signed, expected);
        verify_chain(signed).unwrap();
    }

    #[test]
    #[should_panic(expected = "signed by its author")]
    fn an_entry_cannot_be_signed_by_another_key() {
        let author = Keypair::from_seed(b"author");
        let entry = LedgerEntry::prepare_next(author.node_id(), None, 0, body(0, author.node_id()));
        let _ = entry.sign(&Keypair::from_seed(b"other"));
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
            head_link: Hash32::of(b"elsewhere"),
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
        let good = chain(&key, 2100);

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

        // In the first batch, in a later one, and in the last, partial one.
        for seq in [650, 2047, 2048, 2099] {
            let mut bad_sig = good.clone();
            bad_sig[seq].signature.0[5] ^= 1;
            let err = verify_chain(bad_sig).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Chain { seq: s, .. } if s == seq as u64),
                "{err}"
            );
        }

        let mut bad_payload = good.clone();
        let last = bad_payload[1500].payload.len() - 1;
        bad_payload[1500].payload[last] ^= 1;
        assert!(matches!(
            verify_chain(bad_payload),
            Err(ProtocolError::Chain { seq: 1500, .. })
        ));

        let mut future = good.clone();
        future[70].version += 1;
        assert!(matches!(
            verify_chain(future),
            Err(ProtocolError::Chain { seq: 70, .. })
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

    #[test]
    fn a_chain_linked_by_envelope_ids_is_refused() {
        // The links before payload hashes: `prev` was the previous
        // envelope's message id.
        let key = Keypair::from_seed(b"author");
        let first = LedgerEntry::sign_next(&key, None, 1, body(0, key.node_id()));
        let second = LedgerEntry::sign_next(&key, Some((0, first.id())), 2, body(1, key.node_id()));
        assert!(matches!(
            verify_chain([first, second]),
            Err(ProtocolError::Chain { seq: 1, .. })
        ));
    }
}
