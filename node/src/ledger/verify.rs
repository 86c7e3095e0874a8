//! Offline verification of a ledger: the own chain's links and signatures
//! (in parallel chunks, each batch-verified) and every foreign entry's
//! signature.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fairgrid_protocol::ledger::{ChainSummary, ChainVerifier};
use fairgrid_protocol::{Hash32, NodeId};

use super::store::LedgerStore;
use crate::error::{NodeError, Result};

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub author: Option<NodeId>,
    pub own_entries: u64,
    /// Message id of the last own entry (ZERO when there is none).
    pub head: Hash32,
    pub foreign_entries: u64,
}

/// Chunks below this size are not worth a thread.
const MIN_CHUNK: u64 = 16_384;
/// Chunks per thread: a thread slowed by other work on the machine leaves
/// its share to the others instead of finishing last.
const CHUNKS_PER_THREAD: u64 = 8;

/// Verifies the whole ledger; the first fault is returned as an error
/// naming its seq.
pub fn verify_store(store: &LedgerStore) -> Result<VerifyReport> {
    let len = store.len()?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
        .clamp(1, 16);
    let chunks = (len / MIN_CHUNK).clamp(1, threads * CHUNKS_PER_THREAD);
    let bounds: Vec<(u64, u64)> = (0..chunks)
        .map(|c| (len * c / chunks, len * (c + 1) / chunks))
        .collect();
    let results = verify_chunks(store, &bounds, threads.min(chunks) as usize);
    let mut summary = ChainSummary::default();
    for result in results {
        summary = result?;
    }
    // Every row past the head would be an entry the chain walk never saw.
    // A running node may have appended since the walk began: those rows
    // are below the head as it is now, and are verified next time.
    let head_now = store.len()?.max(len);
    let handles = store.handles()?;
    if let Some(extra) = handles
        .trees
        .chain
        .range(super::store::seq_key(head_now)..)
        .next()
    {
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
    let head = match len.checked_sub(1) {
        Some(last) => {
            store
                .get(last)?
                .ok_or_else(|| NodeError::Ledger(format!("chain has no entry {last}")))?
                .id
        }
        None => Hash32::ZERO,
    };
    Ok(VerifyReport {
        author: summary.author,
        own_entries: summary.entries,
        head,
        foreign_entries: foreign,
    })
}

/// Verifies every chunk on `threads` threads, each taking the next chunk
/// not yet taken. Returns one result per chunk, in order; once a chunk
/// fails, later chunks are skipped (the earliest fault is what counts).
fn verify_chunks(
    store: &LedgerStore,
    bounds: &[(u64, u64)],
    threads: usize,
) -> Vec<Result<ChainSummary>> {
    let next = AtomicUsize::new(0);
    let first_failed = AtomicUsize::new(usize::MAX);
    let results: Vec<Mutex<Option<Result<ChainSummary>>>> =
        bounds.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    if c >= bounds.len() || c > first_failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let (start, end) = bounds[c];
                    let result = verify_range(store, start, end);
                    if result.is_err() {
                        first_failed.fetch_min(c, Ordering::Relaxed);
                    }
                    *results[c].lock().expect("result slot") = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(NodeError::Ledger("a verifier thread stopped".into())))
        })
        .collect()
}

/// Verifies entries `start..end`, starting from the link of entry
/// `start - 1` (which the previous chunk verifies).
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
            head_link: before.link(),
        })
    };
    if start == end {
        return verifier.finish().map_err(NodeError::from);
    }
    let handles = store.handles()?;
    for item in handles
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
