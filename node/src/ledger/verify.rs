//! Offline verification of a ledger: the own chain's links and signatures
//! (in parallel chunks, each batch-verified) and every foreign entry's
//! signature.

use fairgrid_protocol::ledger::{ChainSummary, ChainVerifier};
use fairgrid_protocol::{Hash32, NodeId};

use super::store::LedgerStore;
use crate::error::{NodeError, Result};

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub author: Option<NodeId>,
    pub own_entries: u64,
    pub head: Hash32,
    pub foreign_entries: u64,
}

/// Chunks below this size are not worth a thread.
const MIN_CHUNK: u64 = 20_000;

/// Verifies the whole ledger; the first fault is returned as an error
/// naming its seq.
pub fn verify_store(store: &LedgerStore) -> Result<VerifyReport> {
    let len = store.len()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .clamp(1, 16);
    let chunks = (len / MIN_CHUNK).clamp(1, threads);
    let bounds: Vec<(u64, u64)> = (0..chunks)
        .map(|c| (len * c / chunks, len * (c + 1) / chunks))
        .collect();
    let results: Vec<Result<ChainSummary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|&(start, end)| scope.spawn(move || verify_range(store, start, end)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(NodeError::Ledger("verifier thread panicked".into())))
            })
            .collect()
    });
    let mut summary = ChainSummary::default();
    for result in results {
        summary = result?;
    }
    // Every row past the head would be an entry the chain walk never saw.
    if let Some(extra) = store.trees.chain.range(super::store::seq_key(len)..).next() {
        let (key, _) = extra?;
        return Err(NodeError::Ledger(format!(
            "chain holds a row at key {} beyond the head",
            hex::encode(key)
        )));
    }
    let mut foreign = 0;
    for item in store.iter_foreign() {
        let stored = item?;
        let (signer, entry) = stored
            .signed
            .verify_and_decode()
            .map_err(|e| NodeError::Ledger(format!("foreign entry seq {}: {e}", stored.seq)))?;
        if entry.author.0 != signer || entry.seq != stored.seq {
            return Err(NodeError::Ledger(format!(
                "foreign entry seq {} is stored under the wrong author or seq",
                stored.seq
            )));
        }
        foreign += 1;
    }
    Ok(VerifyReport {
        author: summary.author,
        own_entries: summary.entries,
        head: summary.head,
        foreign_entries: foreign,
    })
}

/// Verifies entries `start..end`, trusting only that entry `start - 1`
/// (verified by the previous chunk) is what its id says.
fn verify_range(store: &LedgerStore, start: u64, end: u64) -> Result<ChainSummary> {
    let mut verifier = if start == 0 {
        ChainVerifier::new()
    } else {
        let before = store
            .get(start - 1)?
            .ok_or_else(|| NodeError::Ledger(format!("chain has no entry {} (gap)", start - 1)))?;
        let entry = before.entry()?;
        ChainVerifier::resume(ChainSummary {
            author: Some(entry.author),
            entries: start,
            head: before.id,
        })
    };
    if start == end {
        return verifier.finish().map_err(NodeError::from);
    }
    for item in store
        .trees
        .chain
        .range(super::store::seq_key(start)..super::store::seq_key(end))
    {
        let (key, value) = item?;
        let signed = fairgrid_protocol::Signed::from_bytes(&value).map_err(|e| {
            NodeError::Ledger(format!(
                "chain row {} does not decode: {e}",
                hex::encode(&key)
            ))
        })?;
        verifier.push(signed)?;
    }
    let summary = verifier.finish()?;
    if summary.entries != end {
        return Err(NodeError::Ledger(format!(
            "chain has {} entries where {end} were expected (gap)",
            summary.entries
        )));
    }
    Ok(summary)
}
