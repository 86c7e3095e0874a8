//! The own chain's indexes (kind, job, owner): key-only rows derived from
//! the chain, written after it, and re-derived when they lag (see the
//! layout in [`super::store`]).

use fairgrid_protocol::ledger::{EntryBody, EntryKind};

use super::store::{META_INDEXED, StoredEntry, Trees, concat_key, seq_key, seq_of};
use crate::error::Result;

/// Position of `kind`'s tree in `Trees::kinds`.
pub fn kind_index(kind: EntryKind) -> usize {
    EntryKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("EntryKind::ALL lists every kind")
}

/// The index rows of one own entry, as keys (values are empty).
pub struct IndexRows {
    pub kind: usize,
    pub job: Option<Vec<u8>>,
    pub owners: Vec<Vec<u8>>,
}

impl IndexRows {
    pub fn of(seq: u64, body: &EntryBody) -> IndexRows {
        let key = seq_key(seq);
        IndexRows {
            kind: kind_index(body.kind()),
            job: body.job_id().map(|job| concat_key(&[&job.0, &key])),
            owners: body
                .owners()
                .iter()
                .map(|owner| concat_key(&[&owner.0.0, &key]))
                .collect(),
        }
    }
}

/// Rows for one tree, counted: an empty sled batch still writes a batch
/// marker to the log, so empty ones are skipped.
#[derive(Default)]
struct TreeBatch {
    batch: sled::Batch,
    rows: usize,
}

impl TreeBatch {
    fn insert(&mut self, key: &[u8]) {
        self.batch.insert(key, &[][..]);
        self.rows += 1;
    }

    fn apply(self, tree: &sled::Tree) -> Result<()> {
        if self.rows > 0 {
            tree.apply_batch(self.batch)?;
        }
        Ok(())
    }
}

/// Index rows for many entries, one sled batch per tree.
pub struct IndexBatches {
    kinds: Vec<TreeBatch>,
    by_job: TreeBatch,
    by_owner: TreeBatch,
    /// Seq of the last entry added.
    last: Option<u64>,
}

impl IndexBatches {
    pub fn new() -> IndexBatches {
        IndexBatches {
            kinds: EntryKind::ALL.iter().map(|_| TreeBatch::default()).collect(),
            by_job: TreeBatch::default(),
            by_owner: TreeBatch::default(),
            last: None,
        }
    }

    pub fn add(&mut self, seq: u64, rows: IndexRows) {
        self.kinds[rows.kind].insert(&seq_key(seq));
        if let Some(job) = rows.job {
            self.by_job.insert(&job);
        }
        for owner in rows.owners {
            self.by_owner.insert(&owner);
        }
        self.last = Some(seq);
    }

    /// Writes the rows, then the watermark (not flushed).
    pub fn apply(self, trees: &Trees) -> Result<()> {
        let Some(last) = self.last else {
            return Ok(());
        };
        for ((_, tree), batch) in trees.kinds.iter().zip(self.kinds) {
            batch.apply(tree)?;
        }
        self.by_job.apply(&trees.by_job)?;
        self.by_owner.apply(&trees.by_owner)?;
        trees.meta.insert(META_INDEXED, &seq_key(last))?;
        Ok(())
    }
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
        batches.add(seq, IndexRows::of(seq, &entry.body));
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
