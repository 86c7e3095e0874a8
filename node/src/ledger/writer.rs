//! The ledger's writer: a two-stage pipeline that batches appends (group
//! commit).
//!
//! - The *batcher* thread drains queued operations into a batch and builds
//!   each append as the next link of the chain (encode and hash, in order;
//!   cheap). Each entry links the hash of the previous entry's content, not
//!   its signature, so the batch is then signed in parallel on the ledger's
//!   signing pool (one thread per core) before its rows are staged.
//! - The *committer* thread writes each staged batch (the chain rows as one
//!   atomic sled batch, then the index rows and their watermark; see
//!   [`super::store`]), flushes once, and only then acknowledges every
//!   operation in it.
//!
//! The two overlap (batch k+1 is built and signed while batch k is
//! flushed). If a commit fails, nothing in it is acknowledged, the
//! committer re-reads the head and bumps an epoch; batches built on top of
//! the failed one carry the old epoch and are refused too, and the batcher
//! continues from that head. So what is on disk is always one unbroken
//! chain.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry, UnsignedEntry};
use fairgrid_protocol::{Hash32, Keypair, NodeId, Signed};
use rayon::prelude::*;
use sled::Transactional;
use tokio::sync::{mpsc, oneshot};

use super::index::{IndexBatches, IndexRows, catch_up_indexes};
use super::store::{LedgerStore, StoredEntry, Trees, concat_key, seq_key, seq_of};
use crate::error::{NodeError, Result};

/// Most operations committed by one flush.
pub const MAX_BATCH: usize = 4096;
/// Staged batches waiting for the committer.
const IN_FLIGHT: usize = 2;
/// Batches smaller than this are signed on the batcher thread: handing
/// them to the pool would cost more than it saves.
const PARALLEL_FROM: usize = 8;

/// An own entry, durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub id: Hash32,
}

/// A foreign entry, durable (or already held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignStored {
    pub author: NodeId,
    pub seq: u64,
    pub id: Hash32,
    pub already_held: bool,
}

pub(crate) enum WriteOp {
    Append {
        body: EntryBody,
        timestamp: u64,
        ack: oneshot::Sender<Result<Appended>>,
    },
    Foreign {
        signed: Signed<LedgerEntry>,
        entry: LedgerEntry,
        ack: oneshot::Sender<Result<ForeignStored>>,
    },
    /// Commit what came before, flush, and stop.
    Close { ack: oneshot::Sender<()> },
}

enum Outcome {
    Appended(oneshot::Sender<Result<Appended>>, Appended),
    Foreign(
        oneshot::Sender<Result<ForeignStored>>,
        Result<ForeignStored>,
    ),
}

impl Outcome {
    fn succeed(self) {
        match self {
            Outcome::Appended(ack, a) => {
                let _ = ack.send(Ok(a));
            }
            Outcome::Foreign(ack, r) => {
                let _ = ack.send(r);
            }
        }
    }

    fn fail(self, reason: &str) {
        let err = || NodeError::Ledger(reason.to_string());
        match self {
            Outcome::Appended(ack, _) => {
                let _ = ack.send(Err(err()));
            }
            Outcome::Foreign(ack, _) => {
                let _ = ack.send(Err(err()));
            }
        }
    }
}

/// A foreign entry's rows: its key, its bytes, its by-job index key.
type ForeignRows = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// A signed, staged batch on its way to the committer.
struct Staged {
    epoch: u64,
    chain: sled::Batch,
    appended: usize,
    indexes: IndexBatches,
    foreign: Vec<ForeignRows>,
    outcomes: Vec<Outcome>,
    close: Option<oneshot::Sender<()>>,
}

/// What the committer tells the batcher after a failed commit.
#[derive(Default)]
struct Recovery {
    epoch: AtomicU64,
    /// `(seq, link)` of the chain's last entry; `None` while the database
    /// could not be opened again to read it (the disk still full).
    head: Mutex<Option<Option<(u64, Hash32)>>>,
}

impl Recovery {
    /// The head to continue from after a failed commit, read from the
    /// database (opened again) if the committer could not.
    fn head(&self, store: &LedgerStore) -> Result<Option<(u64, Hash32)>> {
        let mut head = self.head.lock().expect("recovery lock");
        if let Some(known) = *head {
            return Ok(known);
        }
        let read = chain_head(&store.handles()?.trees);
        *head = Some(read);
        Ok(read)
    }
}

/// An append waiting for its signature.
struct Pending {
    seq: u64,
    rows: IndexRows,
    ack: oneshot::Sender<Result<Appended>>,
}

pub(crate) struct Writer {
    pub key: Keypair,
    pub store: LedgerStore,
    /// `(seq, link)` of the last entry.
    pub head: Option<(u64, Hash32)>,
    /// Counts successful group commits.
    pub commits: Arc<AtomicU64>,
}

impl Writer {
    /// Runs until a `Close` arrives or every sender is dropped.
    pub fn run(self, mut rx: mpsc::Receiver<WriteOp>) {
        let recovery = Arc::new(Recovery::default());
        let (to_committer, from_signer) = std::sync::mpsc::sync_channel::<Staged>(IN_FLIGHT);
        let committer = {
            let store = self.store.clone();
            let recovery = Arc::clone(&recovery);
            let commits = Arc::clone(&self.commits);
            std::thread::Builder::new()
                .name("ledger-commit".into())
                .spawn(move || commit_loop(&store, from_signer, &recovery, &commits))
                .expect("spawning the ledger committer")
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ledger-sign-{i}"))
            .build()
            .map_err(|e| tracing::warn!(target: "fairgrid::ledger", error = %e, "no signing pool; signing on one thread"))
            .ok();
        let author = self.key.node_id();
        let mut head = self.head;
        let mut epoch = 0;
        // Foreign rows staged in batches that may not be committed yet.
        let mut recent_foreign: VecDeque<HashMap<Vec<u8>, Hash32>> = VecDeque::new();
        let mut ops = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            ops.push(first);
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let current = recovery.epoch.load(Ordering::Acquire);
            if current != epoch {
                match recovery.head(&self.store) {
                    Ok(recovered) => {
                        epoch = current;
                        head = recovered;
                        recent_foreign.clear();
                    }
                    Err(e) => {
                        // Still no database (the disk still full): these
                        // fail now; the next batch tries again.
                        let reason = format!("ledger unavailable after a failed write: {e}");
                        let closing = ops.iter().any(|op| matches!(op, WriteOp::Close { .. }));
                        ops.drain(..).for_each(|op| fail_op(op, &reason));
                        if closing {
                            break;
                        }
                        continue;
                    }
                }
            }
            let mut staged = Staged {
                epoch,
                chain: sled::Batch::default(),
                appended: 0,
                indexes: IndexBatches::new(),
                foreign: Vec::new(),
                outcomes: Vec::with_capacity(ops.len()),
                close: None,
            };
            let mut unsigned = Vec::new();
            let mut pending = Vec::new();
            let mut batch_foreign = HashMap::new();
            for op in ops.drain(..) {
                match op {
                    WriteOp::Close { ack } => staged.close = Some(ack),
                    WriteOp::Append {
                        body,
                        timestamp,
                        ack,
                    } => {
                        let seq = head.map_or(0, |(s, _)| s + 1);
                        let rows = IndexRows::of(&body);
                        let entry = LedgerEntry::prepare_next(author, head, timestamp, body);
                        head = Some((entry.seq(), entry.link()));
                        unsigned.push(entry);
                        pending.push(Pending { seq, rows, ack });
                    }
                    WriteOp::Foreign { signed, entry, ack } => {
                        let result = self.stage_foreign(
                            &mut staged,
                            &recent_foreign,
                            &mut batch_foreign,
                            signed,
                            &entry,
                        );
                        staged.outcomes.push(Outcome::Foreign(ack, result));
                    }
                }
            }
            let signed = sign_all(&self.key, pool.as_ref(), unsigned);
            for (p, (bytes, id)) in pending.into_iter().zip(signed) {
                staged.chain.insert(&seq_key(p.seq), bytes);
                staged.indexes.add(p.seq, p.rows);
                staged.appended += 1;
                let appended = Appended { seq: p.seq, id };
                staged.outcomes.push(Outcome::Appended(p.ack, appended));
            }
            recent_foreign.push_back(batch_foreign);
            if recent_foreign.len() > IN_FLIGHT + 2 {
                recent_foreign.pop_front();
            }
            let closing = staged.close.is_some();
            if to_committer.send(staged).is_err() {
                break;
            }
            if closing {
                rx.close();
                // Appends that raced the close are refused, never dropped silently.
                while let Ok(op) = rx.try_recv() {
                    refuse(op);
                }
                break;
            }
        }
        drop(to_committer);
        let _ = committer.join();
    }

    fn stage_foreign(
        &self,
        staged: &mut Staged,
        recent: &VecDeque<HashMap<Vec<u8>, Hash32>>,
        batch: &mut HashMap<Vec<u8>, Hash32>,
        signed: Signed<LedgerEntry>,
        entry: &LedgerEntry,
    ) -> Result<ForeignStored> {
        let bytes = signed.to_bytes();
        let id = Hash32::of(&bytes);
        let key = concat_key(&[&entry.author.0.0, &seq_key(entry.seq)]);
        let pending = batch
            .get(&key)
            .or_else(|| recent.iter().rev().find_map(|m| m.get(&key)))
            .copied();
        let held = match pending {
            Some(existing) => Some(existing),
            None => {
                let handles = self.store.handles()?;
                handles.trees.foreign.get(&key)?.map(|b| Hash32::of(&b))
            }
        };
        let stored = |already_held| ForeignStored {
            author: entry.author,
            seq: entry.seq,
            id,
            already_held,
        };
        match held {
            Some(existing) if existing == id => Ok(stored(true)),
            Some(_) => Err(NodeError::Equivocation {
                author: entry.author.to_string(),
                seq: entry.seq,
            }),
            None => {
                let job_key = entry.body.job_id().map(|job| concat_key(&[&job.0, &key]));
                staged.foreign.push((key.clone(), bytes, job_key));
                batch.insert(key, id);
                Ok(stored(false))
            }
        }
    }
}

/// Signs every entry (in parallel when there are enough) and returns each
/// one's envelope bytes and message id, in order.
fn sign_all(
    key: &Keypair,
    pool: Option<&rayon::ThreadPool>,
    unsigned: Vec<UnsignedEntry>,
) -> Vec<(Vec<u8>, Hash32)> {
    let sign = |entry: UnsignedEntry| {
        let bytes = entry.sign(key).to_bytes();
        let id = Hash32::of(&bytes);
        (bytes, id)
    };
    match pool {
        Some(pool) if unsigned.len() >= PARALLEL_FROM => pool.install(|| {
            unsigned
                .into_par_iter()
                .with_min_len(PARALLEL_FROM / 2)
                .map(sign)
                .collect()
        }),
        _ => unsigned.into_iter().map(sign).collect(),
    }
}

fn commit_loop(
    store: &LedgerStore,
    batches: std::sync::mpsc::Receiver<Staged>,
    recovery: &Recovery,
    commits: &AtomicU64,
) {
    let mut epoch = 0;
    // Set after a failed commit, which may have left index rows unwritten.
    let mut indexes_behind = false;
    for staged in batches {
        if staged.epoch != epoch {
            for outcome in staged.outcomes {
                outcome.fail("an earlier batch failed to commit; nothing in this one was written");
            }
        } else {
            let Staged {
                chain,
                appended,
                indexes,
                foreign,
                outcomes,
                ..
            } = staged;
            let watched = crate::watchdog::watch("ledger commit");
            stall_if_asked();
            let committed = store.handles().and_then(|handles| {
                let trees = &handles.trees;
                commit(
                    trees,
                    &handles.db,
                    chain,
                    appended,
                    indexes,
                    foreign,
                    indexes_behind,
                )
            });
            drop(watched);
            match committed {
                Ok(()) => {
                    indexes_behind = false;
                    commits.fetch_add(1, Ordering::Relaxed);
                    outcomes.into_iter().for_each(Outcome::succeed);
                }
                Err(e) => {
                    tracing::error!(target: "fairgrid::ledger", error = %e, "ledger batch failed; nothing in it was acknowledged");
                    let reason = format!("batch commit failed: {e}");
                    for outcome in outcomes {
                        outcome.fail(&reason);
                    }
                    indexes_behind = true;
                    // sled refuses every write after a failed one: open
                    // the database again, and continue from what its chain
                    // holds (read later, by the batcher, if it cannot be
                    // opened now).
                    store.reopen_later();
                    let head = store.handles().ok().map(|h| chain_head(&h.trees));
                    *recovery.head.lock().expect("recovery lock") = head;
                    epoch += 1;
                    recovery.epoch.store(epoch, Ordering::Release);
                }
            }
        }
        if let Some(ack) = staged.close {
            let _watched = crate::watchdog::watch("ledger flush");
            if let Err(e) = store.flush() {
                tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
            }
            let _ = ack.send(());
        }
    }
    if let Err(e) = store.flush() {
        tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
    }
}

/// Test-only: debug builds started with `FAIRGRID_TEST_FAULT=stall_ledger`
/// never finish a ledger commit, for the test that proves the storage
/// watchdog stops such a node. A release build cannot be made to stall.
fn stall_if_asked() {
    if cfg!(debug_assertions)
        && std::env::var("FAIRGRID_TEST_FAULT").as_deref() == Ok("stall_ledger")
    {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// `(seq, link)` of the chain's last entry, as the tree holds it now.
fn chain_head(trees: &Trees) -> Option<(u64, Hash32)> {
    let (key, value) = trees.chain.last().ok()??;
    let seq = seq_of(&key).ok()?;
    Some((seq, StoredEntry::decode(seq, &value, true).ok()?.link()))
}

/// The chain rows, then the index rows and watermark, then the foreign
/// rows, then one flush.
fn commit(
    trees: &Trees,
    db: &sled::Db,
    chain: sled::Batch,
    appended: usize,
    indexes: IndexBatches,
    foreign: Vec<ForeignRows>,
    indexes_behind: bool,
) -> Result<()> {
    if appended > 0 {
        trees.chain.apply_batch(chain)?;
    }
    if indexes_behind {
        catch_up_indexes(trees)?;
    } else {
        indexes.apply(trees)?;
    }
    if !foreign.is_empty() {
        (&trees.foreign, &trees.foreign_by_job)
            .transaction(|(rows, by_job)| {
                for (key, bytes, job_key) in &foreign {
                    rows.insert(key.as_slice(), bytes.as_slice())?;
                    if let Some(job_key) = job_key {
                        by_job.insert(job_key.as_slice(), &[][..])?;
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| NodeError::Ledger(format!("foreign entry transaction: {e:?}")))?;
    }
    if appended > 0 || !foreign.is_empty() || indexes_behind {
        db.flush()?;
    }
    Ok(())
}

fn fail_op(op: WriteOp, reason: &str) {
    let err = || NodeError::Ledger(reason.to_string());
    match op {
        WriteOp::Append { ack, .. } => {
            let _ = ack.send(Err(err()));
        }
        WriteOp::Foreign { ack, .. } => {
            let _ = ack.send(Err(err()));
        }
        WriteOp::Close { ack } => {
            let _ = ack.send(());
        }
    }
}

fn refuse(op: WriteOp) {
    match op {
        WriteOp::Append { ack, .. } => {
            let _ = ack.send(Err(NodeError::WriterStopped));
        }
        WriteOp::Foreign { ack, .. } => {
            let _ = ack.send(Err(NodeError::WriterStopped));
        }
        WriteOp::Close { ack } => {
            let _ = ack.send(());
        }
    }
}
