//! The ledger's sled layout and its read side.
//!
//! ```text
//! chain                 seq(be u64)                  -> signed entry bytes (own chain)
//! kind/<name>           first seq                    -> seqs (one tree per kind)
//! index/job             job(32) ++ first seq         -> seqs
//! index/owner           owner(32) ++ first seq       -> seqs
//! foreign               author(32) ++ seq            -> signed entry bytes (others' entries)
//! foreign/job           job(32) ++ author(32) ++ seq -> ()
//! meta                  "format" -> [2]; "indexed" -> seq(be u64)
//! ```
//! The chain is the source of truth; the kind, job and owner trees are
//! indexes derived from it: one row per tree and key prefix per group
//! commit, listing the group's seqs (be u64 each) under that prefix, so
//! an index costs sled one log record per group, not one per entry (see
//! `index.rs`). Each group commit writes the chain
//! rows first (one atomic sled batch), then the index rows, then the
//! `indexed` watermark, then flushes once. sled recovers a prefix of its
//! log, so after a crash the indexes can only lag the chain, never lead
//! it; [`catch_up_indexes`](super::index::catch_up_indexes) (run when the
//! node opens its ledger) re-derives what is missing. A foreign entry and
//! its index row are written in one transaction.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::ledger::{EntryKind, LedgerEntry};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};

use crate::error::{NodeError, Result};

/// All trees of the ledger database.
#[derive(Clone)]
pub struct Trees {
    pub chain: sled::Tree,
    pub kinds: Vec<(EntryKind, sled::Tree)>,
    pub by_job: sled::Tree,
    pub by_owner: sled::Tree,
    pub foreign: sled::Tree,
    pub foreign_by_job: sled::Tree,
    pub meta: sled::Tree,
}

/// The layout version, in `meta/format`. Format 1 (no marker) linked each
/// entry to the previous envelope's id; those ledgers do not verify now.
pub const FORMAT: u8 = 2;
pub const META_FORMAT: &[u8] = b"format";
/// Seq of the last own entry whose index rows are written.
pub const META_INDEXED: &[u8] = b"indexed";

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees> {
        let mut kinds = Vec::new();
        for kind in EntryKind::ALL {
            kinds.push((kind, db.open_tree(format!("kind/{}", kind.name()))?));
        }
        Ok(Trees {
            chain: db.open_tree("chain")?,
            kinds,
            by_job: db.open_tree("index/job")?,
            by_owner: db.open_tree("index/owner")?,
            foreign: db.open_tree("foreign")?,
            foreign_by_job: db.open_tree("foreign/job")?,
            meta: db.open_tree("meta")?,
        })
    }

    pub fn kind_tree(&self, kind: EntryKind) -> &sled::Tree {
        &self
            .kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("a tree per kind")
            .1
    }
}

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn concat_key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) fn seq_of(key: &[u8]) -> Result<u64> {
    let tail: [u8; 8] = key
        .get(key.len().saturating_sub(8)..)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| NodeError::Ledger(format!("index key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(tail))
}

/// The last own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tip {
    pub seq: u64,
    pub id: Hash32,
    pub link: Hash32,
    pub author: NodeId,
}

/// A stored entry with where it lives.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub seq: u64,
    pub id: Hash32,
    pub signed: Signed<LedgerEntry>,
    /// False for entries authored by other nodes.
    pub own: bool,
}

impl StoredEntry {
    pub(crate) fn decode(seq: u64, bytes: &[u8], own: bool) -> Result<StoredEntry> {
        let signed = Signed::<LedgerEntry>::from_bytes(bytes)
            .map_err(|e| NodeError::Ledger(format!("stored entry {seq} does not decode: {e}")))?;
        Ok(StoredEntry {
            seq,
            id: Hash32::of(bytes),
            signed,
            own,
        })
    }

    /// What the next entry of its chain links to.
    pub fn link(&self) -> Hash32 {
        LedgerEntry::link_of(&self.signed)
    }

    /// The entry's content, decoded (the signature is not re-checked).
    pub fn entry(&self) -> Result<LedgerEntry> {
        fairgrid_protocol::codec::decode_exact(
            "ledger-entry",
            &self.signed.payload,
            <LedgerEntry as fairgrid_protocol::SignedMessage>::MAX_BYTES,
        )
        .map_err(NodeError::from)
    }
}

/// The open database and its trees.
pub(crate) struct Handles {
    pub db: sled::Db,
    pub trees: Trees,
}

/// The read side of a ledger database. Opening it takes sled's lock, so a
/// stopped node's ledger can be read while the node is down, and a running
/// node's through its API.
///
/// sled refuses every write after one failed (a full disk) until the
/// database is opened again: after a failed commit the writer drops the
/// handles ([`LedgerStore::reopen_later`]), and the next call opens the
/// database again, so freed space is usable without a restart.
#[derive(Clone)]
pub struct LedgerStore {
    /// None: sled's temporary mode, nothing to open again.
    path: Option<PathBuf>,
    cache_bytes: u64,
    handles: Arc<Mutex<Option<Arc<Handles>>>>,
}

/// How long an open waits for sled's lock: a database closed in this
/// process lets go of it only when sled's background threads end, which
/// took longer than an immediate reopen on a loaded machine (a test's
/// reopen failed as "locked"). A lock that a running node holds is
/// reported after this wait.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_handles(path: &Path, cache_bytes: u64) -> Result<Handles> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let db = loop {
        let opened = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // sled caches up to 1 GiB by default: bounded (`storage.
            // ledger_cache_mib`) for a node that runs for months.
            .cache_capacity(cache_bytes)
            .open();
        match opened {
            Ok(db) => break db,
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                return Err(NodeError::Ledger(format!(
                    "{} is locked by a running node; query it through its API instead",
                    path.display()
                )));
            }
            Err(other) => {
                return Err(NodeError::Ledger(format!(
                    "opening {}: {other}",
                    path.display()
                )));
            }
        }
    };
    let trees = Trees::open(&db)?;
    Ok(Handles { db, trees })
}

impl LedgerStore {
    /// A store in sled's temporary mode (gone when dropped).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn temporary() -> Result<LedgerStore> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| NodeError::Ledger(format!("opening an in-memory ledger: {e}")))?;
        let trees = Trees::open(&db)?;
        Ok(LedgerStore {
            path: None,
            cache_bytes: 0,
            handles: Arc::new(Mutex::new(Some(Arc::new(Handles { db, trees })))),
        })
    }

    /// Opens the ledger at `path` with the default page cache (for tools
    /// that read a ledger once).
    pub fn open(path: &Path) -> Result<LedgerStore> {
        let cache_mib = crate::config::StorageConfig::default().ledger_cache_mib;
        LedgerStore::open_with_cache(path, cache_mib << 20)
    }

    /// Opens the ledger at `path`, letting sled cache up to `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<LedgerStore> {
        let handles = open_handles(path, cache_bytes)?;
        let trees = &handles.trees;
        let format = trees.meta.get(META_FORMAT)?;
        if format.as_deref() != Some(&[FORMAT][..]) && !trees.chain.is_empty() {
            return Err(NodeError::Ledger(format!(
                "{} holds a ledger in format {} but this fairgrid reads format {FORMAT} \
                 (entries now link the hash of the previous entry's content); \
                 keep its export and start a new data dir",
                path.display(),
                format.map_or("1".to_string(), |f| format!("{f:?}")),
            )));
        }
        Ok(LedgerStore {
            path: Some(path.to_path_buf()),
            cache_bytes,
            handles: Arc::new(Mutex::new(Some(Arc::new(handles)))),
        })
    }

    /// The open database, opened again first if a failed write dropped it.
    pub(crate) fn handles(&self) -> Result<Arc<Handles>> {
        let mut slot = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handles) = slot.as_ref() {
            return Ok(Arc::clone(handles));
        }
        let Some(path) = &self.path else {
            return Err(NodeError::Ledger("the in-memory ledger failed".into()));
        };
        let handles = Arc::new(open_handles(path, self.cache_bytes)?);
        *slot = Some(Arc::clone(&handles));
        tracing::info!(target: "fairgrid::ledger", "ledger database opened again after a failed write");
        Ok(handles)
    }

    /// Drops this store's handles after a failed write; the next call opens
    /// the database again (once every other handle is gone).
    pub(crate) fn reopen_later(&self) {
        if self.path.is_some() {
            self.handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
    }

    /// Marks an empty ledger as this format (the writer does, on open).
    pub(crate) fn mark_format(&self) -> Result<()> {
        self.handles()?.trees.meta.insert(META_FORMAT, &[FORMAT])?;
        Ok(())
    }

    /// The last own entry: where the next append continues.
    pub(crate) fn tip(&self) -> Result<Option<Tip>> {
        let Some((key, value)) = self.handles()?.trees.chain.last()? else {
            return Ok(None);
        };
        let seq = seq_of(&key)?;
        let stored = StoredEntry::decode(seq, &value, true)?;
        let entry = stored.entry()?;
        if entry.seq != seq {
            return Err(NodeError::Ledger(format!(
                "chain key {seq} holds entry seq {}",
                entry.seq
            )));
        }
        Ok(Some(Tip {
            seq,
            id: stored.id,
            link: stored.link(),
            author: entry.author,
        }))
    }

    /// `(seq, id)` of the last own entry, and its author.
    pub fn head(&self) -> Result<Option<(u64, Hash32, NodeId)>> {
        // Every status answer reads it: the call a stuck sled blocks first.
        let _watched = crate::watchdog::watch("ledger head");
        Ok(self.tip()?.map(|t| (t.seq, t.id, t.author)))
    }

    /// Number of own entries (the head's seq + 1).
    pub fn len(&self) -> Result<u64> {
        Ok(self.head()?.map_or(0, |(seq, _, _)| seq + 1))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    pub fn get(&self, seq: u64) -> Result<Option<StoredEntry>> {
        self.handles()?
            .trees
            .chain
            .get(seq_key(seq))?
            .map(|v| StoredEntry::decode(seq, &v, true))
            .transpose()
    }

    /// Own entries with seq > `after` (all when None), at most `limit`.
    pub fn page(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredEntry>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        if after == Some(u64::MAX) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let handles = self.handles()?;
        for item in handles.trees.chain.range(seq_key(start)..).take(limit) {
            let (key, value) = item?;
            out.push(StoredEntry::decode(seq_of(&key)?, &value, true)?);
        }
        Ok(out)
    }

    /// Every own entry in order (for export and verification).
    pub fn iter_own(&self) -> Box<dyn Iterator<Item = Result<StoredEntry>> + '_> {
        match self.handles() {
            Ok(handles) => Box::new(handles.trees.chain.iter().map(|item| {
                let (key, value) = item?;
                StoredEntry::decode(seq_of(&key)?, &value, true)
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// Every foreign entry, grouped by author then seq.
    pub fn iter_foreign(&self) -> Box<dyn Iterator<Item = Result<StoredEntry>> + '_> {
        match self.handles() {
            Ok(handles) => Box::new(handles.trees.foreign.iter().map(|item| {
                let (key, value) = item?;
                StoredEntry::decode(seq_of(&key)?, &value, false)
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    pub fn foreign_count(&self) -> Result<usize> {
        Ok(self.handles()?.trees.foreign.len())
    }

    /// Seqs of own entries of one kind, after `after`, at most `limit`.
    pub fn seqs_of_kind(
        &self,
        kind: EntryKind,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let handles = self.handles()?;
        let tree = handles.trees.kind_tree(kind);
        // A row is keyed by its first seq: the row before `start` may list
        // seqs from `start` on.
        let rows = tree
            .range(..seq_key(start))
            .next_back()
            .into_iter()
            .chain(tree.range(seq_key(start)..));
        let mut out = Vec::new();
        let mut last = None;
        for row in rows {
            let (key, value) = row?;
            for seq in super::index::seqs_in_row(&key, &value)? {
                if seq < start || last.is_some_and(|l| seq <= l) {
                    continue;
                }
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(seq);
                last = Some(seq);
            }
        }
        Ok(out)
    }

    /// Seqs of own entries listed under `prefix` in an index tree, in
    /// order, each once.
    fn indexed_seqs(tree: &sled::Tree, prefix: &[u8]) -> Result<BTreeSet<u64>> {
        let mut seqs = BTreeSet::new();
        for row in tree.scan_prefix(prefix) {
            let (key, value) = row?;
            seqs.extend(super::index::seqs_in_row(&key, &value)?);
        }
        Ok(seqs)
    }

    /// Own and foreign entries that belong to `job`, own first.
    pub fn entries_for_job(&self, job: &Hash32) -> Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        let handles = self.handles()?;
        for seq in Self::indexed_seqs(&handles.trees.by_job, &job.0)? {
            if let Some(entry) = self.get(seq)? {
                out.push(entry);
            }
        }
        for item in handles.trees.foreign_by_job.scan_prefix(job.0) {
            let (key, _) = item?;
            let foreign_key = key.get(32..).unwrap_or_default();
            if let Some(bytes) = handles.trees.foreign.get(foreign_key)? {
                out.push(StoredEntry::decode(seq_of(&key)?, &bytes, false)?);
            }
        }
        Ok(out)
    }

    pub fn has_job(&self, job: &Hash32) -> Result<bool> {
        let handles = self.handles()?;
        Ok(handles.trees.by_job.scan_prefix(job.0).next().is_some()
            || handles
                .trees
                .foreign_by_job
                .scan_prefix(job.0)
                .next()
                .is_some())
    }

    /// Seqs of the own entries that concern `owner` (its index), in order.
    pub fn seqs_for_owner(&self, owner: &OwnerId) -> Result<BTreeSet<u64>> {
        Self::indexed_seqs(&self.handles()?.trees.by_owner, &owner.0.0)
    }

    /// Own entries that concern `owner`.
    pub fn entries_for_owner(&self, owner: &OwnerId) -> Result<Vec<StoredEntry>> {
        let mut out = Vec::new();
        let by_owner = self.handles()?.trees.by_owner.clone();
        for seq in Self::indexed_seqs(&by_owner, &owner.0.0)? {
            if let Some(entry) = self.get(seq)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Number of own entries of each kind (as the kind trees list them;
    /// a row that does not read is not counted).
    pub fn kind_counts(&self) -> Result<Vec<(EntryKind, usize)>> {
        Ok(self
            .handles()?
            .trees
            .kinds
            .iter()
            .map(|(kind, tree)| {
                let listed = tree
                    .iter()
                    .filter_map(std::result::Result::ok)
                    .map(|(_, value)| value.len() / 8)
                    .sum();
                (*kind, listed)
            })
            .collect())
    }

    pub fn flush(&self) -> Result<()> {
        self.handles()?.db.flush()?;
        Ok(())
    }
}
