//! The own chain's indexes (kind, job, owner): rows derived from the
//! chain, written after it, and re-derived when they lag (see the layout
//! in [`super::store`]).
//!
//! A group commit writes one row per tree and prefix (kind tree: no
//! prefix; job or owner: the 32-byte id), keyed by the prefix and the
//! group's first seq under it, whose value lists every seq of the group
//! under it. Catching up after a crash starts at the first seq of the
//! group whose rows may be partly written, so it rewrites those rows under
//! the same keys with a superset of their seqs; readers also deduplicate.

use std::collections::BTreeMap;

use fairgrid_protocol::ledger::{EntryBody, EntryKind};

use super::store::{META_INDEXED, StoredEntry, Trees, concat_key, seq_key, seq_of};
use crate::error::{NodeError, Result};

/// Position of `kind`'s tree in `Trees::kinds`.
pub fn kind_index(kind: EntryKind) -> usize {
    EntryKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("EntryKind::ALL lists every kind")
}

/// Where one own entry is indexed: its kind, and the prefixes (job,
/// owners) it is listed under.
pub struct IndexRows {
    pub kind: usize,
    pub job: Option<[u8; 32]>,
    pub owners: Vec<[u8; 32]>,
}

impl IndexRows {
    pub fn of(body: &EntryBody) -> IndexRows {
        IndexRows {
            kind: kind_index(body.kind()),
            job: body.job_id().map(|job| job.0),
            owners: body.owners().iter().map(|owner| owner.0.0).collect(),
        }
    }
}

/// The seqs listed under each prefix of one tree, in order.
#[derive(Default)]
struct TreeRows(BTreeMap<Vec<u8>, Vec<u64>>);

impl TreeRows {
    fn add(&mut self, prefix: &[u8], seq: u64) {
        self.0.entry(prefix.to_vec()).or_default().push(seq);
    }

    /// One row per prefix: `prefix ++ first seq -> every seq`. sled writes
    /// a log record per row, so a group of entries costs one row per
    /// distinct prefix rather than one per entry.
    fn apply(self, tree: &sled::Tree) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (prefix, seqs) in self.0 {
            let key = concat_key(&[&prefix, &seq_key(seqs[0])]);
            let value: Vec<u8> = seqs.iter().flat_map(|s| seq_key(*s)).collect();
            batch.insert(key, value);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// Index rows for many entries (a group commit), one sled batch per tree.
pub struct IndexBatches {
    kinds: Vec<TreeRows>,
    by_job: TreeRows,
    by_owner: TreeRows,
    /// Seq of the last entry added.
    last: Option<u64>,
}

impl IndexBatches {
    pub fn new() -> IndexBatches {
        IndexBatches {
            kinds: EntryKind::ALL.iter().map(|_| TreeRows::default()).collect(),
            by_job: TreeRows::default(),
            by_owner: TreeRows::default(),
            last: None,
        }
    }

    /// Adds entry `seq`; seqs must be added in increasing order.
    pub fn add(&mut self, seq: u64, rows: IndexRows) {
        self.kinds[rows.kind].add(&[], seq);
        if let Some(job) = rows.job {
            self.by_job.add(&job, seq);
        }
        for owner in rows.owners {
            self.by_owner.add(&owner, seq);
        }
        self.last = Some(seq);
    }

    /// Writes the rows, then the watermark (not flushed).
    pub fn apply(self, trees: &Trees) -> Result<()> {
        let Some(last) = self.last else {
            return Ok(());
        };
        for ((_, tree), rows) in trees.kinds.iter().zip(self.kinds) {
            rows.apply(tree)?;
        }
        self.by_job.apply(&trees.by_job)?;
        self.by_owner.apply(&trees.by_owner)?;
        trees.meta.insert(META_INDEXED, &seq_key(last))?;
        Ok(())
    }
}

/// The seqs an index row lists (see [`TreeRows::apply`]).
pub fn seqs_in_row(key: &[u8], value: &[u8]) -> Result<impl Iterator<Item = u64>> {
    if value.is_empty() || !value.len().is_multiple_of(8) {
        return Err(NodeError::Ledger(format!(
            "index row {} holds {} bytes, not a list of seqs",
            hex::encode(key),
            value.len()
        )));
    }
    Ok(value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))))
}

/// Re-derives index rows the chain has but the indexes lack (after a
/// crash between a group's chain rows and its index rows, or a failed
/// commit). Returns how many entries were re-indexed. Not flushed.
pub fn catch_up_indexes(trees: &Trees) -> Result<u64> {
    let head = match trees.chain.last()? {
        Some((key, _)) => Some(seq_of(&key)?),
        None => None,
    };
    let indexed = match trees.meta.get(META_INDEXED)? {
        Some(v) => Some(seq_of(&v)?),
        None => None,
    };
    let from = match (indexed, head) {
        (Some(i), Some(h)) if i == h => return Ok(0),
        (None, None) => return Ok(0),
        (Some(i), Some(h)) if i < h => i + 1,
        (None, Some(_)) => 0,
        // The watermark is past the chain: rows were lost that the indexes
        // still name (sled should never recover that way). Rebuild all.
        _ => {
            tracing::warn!(target: "fairgrid::ledger", ?indexed, ?head, "ledger indexes ahead of the chain; rebuilding them");
            for tree in trees
                .kinds
                .iter()
                .map(|(_, t)| t)
                .chain([&trees.by_job, &trees.by_owner])
            {
                tree.clear()?;
            }
            trees.meta.remove(META_INDEXED)?;
            0
        }
    };
    let mut batches = IndexBatches::new();
    let mut count = 0;
    for item in trees.chain.range(seq_key(from)..) {
        let (key, value) = item?;
        let seq = seq_of(&key)?;
        let entry = StoredEntry::decode(seq, &value, true)?.entry()?;
        batches.add(seq, IndexRows::of(&entry.body));
        count += 1;
        if count % 4096 == 0 {
            std::mem::replace(&mut batches, IndexBatches::new()).apply(trees)?;
        }
    }
    batches.apply(trees)?;
    if count > 0 {
        tracing::info!(target: "fairgrid::ledger", from, entries = count, "ledger indexes caught up with the chain");
    }
    Ok(count)
}
