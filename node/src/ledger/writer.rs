//! The ledger's writer: a two-stage pipeline that batches appends (group
//! commit).
//!
//! - The *signer* thread drains queued operations into a batch, signs each
//!   append as the next link of the chain, and stages its rows.
//! - The *committer* thread writes each staged batch in one multi-tree
//!   sled transaction, flushes once, and only then acknowledges every
//!   operation in it.
//!
//! The two overlap (batch k+1 is signed while batch k is flushed). If a
//! commit fails, nothing in it is acknowledged, the committer re-reads the
//! durable head and bumps an epoch; batches signed on top of the failed one
//! carry the old epoch and are refused too, and the signer continues from
//! the durable head. So what is on disk is always one unbroken chain.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Hash32, Keypair, NodeId, Signed};
use sled::Transactional;
use tokio::sync::{mpsc, oneshot};

use super::store::{Trees, concat_key, seq_key};
use crate::error::{NodeError, Result};

/// Most operations committed by one flush.
pub const MAX_BATCH: usize = 4096;
/// Staged batches waiting for the committer.
const IN_FLIGHT: usize = 2;

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

/// A signed, staged batch on its way to the committer.
struct Staged {
    epoch: u64,
    /// Per tree (in `Trees::all` order): the rows to insert.
    rows: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    outcomes: Vec<Outcome>,
    close: Option<oneshot::Sender<()>>,
}

/// What the committer tells the signer after a failed commit.
#[derive(Default)]
struct Recovery {
    epoch: AtomicU64,
    head: Mutex<Option<(u64, Hash32)>>,
}

pub(crate) struct Writer {
    pub key: Keypair,
    pub trees: Trees,
    pub db: sled::Db,
    pub head: Option<(u64, Hash32)>,
}

/// Row positions in `Trees::all` order.
struct Layout {
    kinds: Vec<fairgrid_protocol::ledger::EntryKind>,
    by_job: usize,
    by_owner: usize,
    foreign: usize,
    foreign_by_job: usize,
    trees: usize,
}

impl Layout {
    fn of(trees: &Trees) -> Layout {
        let n = trees.kinds.len();
        Layout {
            kinds: trees.kinds.iter().map(|(k, _)| *k).collect(),
            by_job: 1 + n,
            by_owner: 2 + n,
            foreign: 3 + n,
            foreign_by_job: 4 + n,
            trees: 5 + n,
        }
    }

    fn kind(&self, kind: fairgrid_protocol::ledger::EntryKind) -> usize {
        1 + self
            .kinds
            .iter()
            .position(|k| *k == kind)
            .expect("a tree per kind")
    }
}

impl Writer {
    /// Runs until a `Close` arrives or every sender is dropped.
    pub fn run(self, mut rx: mpsc::Receiver<WriteOp>) {
        let recovery = Arc::new(Recovery::default());
        let (to_committer, from_signer) = std::sync::mpsc::sync_channel::<Staged>(IN_FLIGHT);
        let committer = {
            let all = self.trees.all();
            let db = self.db.clone();
            let chain = self.trees.chain.clone();
            let recovery = Arc::clone(&recovery);
            std::thread::Builder::new()
                .name("ledger-commit".into())
                .spawn(move || commit_loop(&all, &db, &chain, from_signer, &recovery))
                .expect("spawning the ledger committer")
        };
        let layout = Layout::of(&self.trees);
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
                epoch = current;
                head = *recovery.head.lock().expect("recovery lock");
                recent_foreign.clear();
            }
            let mut staged = Staged {
                epoch,
                rows: vec![Vec::new(); layout.trees],
                outcomes: Vec::with_capacity(ops.len()),
                close: None,
            };
            let mut batch_foreign = HashMap::new();
            for op in ops.drain(..) {
                match op {
                    WriteOp::Close { ack } => staged.close = Some(ack),
                    WriteOp::Append {
                        body,
                        timestamp,
                        ack,
                    } => {
                        let appended =
                            self.stage_append(&layout, &mut staged, head, body, timestamp);
                        head = Some((appended.seq, appended.id));
                        staged.outcomes.push(Outcome::Appended(ack, appended));
                    }
                    WriteOp::Foreign { signed, entry, ack } => {
                        let result = self.stage_foreign(
                            &layout,
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

    fn stage_append(
        &self,
        layout: &Layout,
        staged: &mut Staged,
        head: Option<(u64, Hash32)>,
        body: EntryBody,
        timestamp: u64,
    ) -> Appended {
        let kind = body.kind();
        let job = body.job_id();
        let owners = body.owners();
        let signed = LedgerEntry::sign_next(&self.key, head, timestamp, body);
        let bytes = signed.to_bytes();
        let id = Hash32::of(&bytes);
        let seq = head.map_or(0, |(s, _)| s + 1);
        let key = seq_key(seq);
        staged.rows[0].push((key.to_vec(), bytes));
        // Index rows are keys only: smaller sled nodes, cheaper commits.
        staged.rows[layout.kind(kind)].push((key.to_vec(), Vec::new()));
        if let Some(job) = job {
            staged.rows[layout.by_job].push((concat_key(&[&job.0, &key]), Vec::new()));
        }
        for owner in owners {
            staged.rows[layout.by_owner].push((concat_key(&[&owner.0.0, &key]), Vec::new()));
        }
        Appended { seq, id }
    }

    fn stage_foreign(
        &self,
        layout: &Layout,
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
            None => self.trees.foreign.get(&key)?.map(|b| Hash32::of(&b)),
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
                staged.rows[layout.foreign].push((key.clone(), bytes));
                if let Some(job) = entry.body.job_id() {
                    staged.rows[layout.foreign_by_job]
                        .push((concat_key(&[&job.0, &key]), Vec::new()));
                }
                batch.insert(key, id);
                Ok(stored(false))
            }
        }
    }
}

fn commit_loop(
    all: &[sled::Tree],
    db: &sled::Db,
    chain: &sled::Tree,
    batches: std::sync::mpsc::Receiver<Staged>,
    recovery: &Recovery,
) {
    let mut epoch = 0;
    for staged in batches {
        if staged.epoch != epoch {
            for outcome in staged.outcomes {
                outcome.fail("an earlier batch failed to commit; nothing in this one was written");
            }
        } else {
            match commit(all, db, &staged.rows) {
                Ok(()) => staged.outcomes.into_iter().for_each(Outcome::succeed),
                Err(e) => {
                    tracing::error!(target: "fairgrid::ledger", error = %e, "ledger batch failed; nothing in it was acknowledged");
                    let reason = format!("batch commit failed: {e}");
                    for outcome in staged.outcomes {
                        outcome.fail(&reason);
                    }
                    // Continue from what is durable.
                    let durable = chain.last().ok().flatten().and_then(|(key, value)| {
                        let k = <[u8; 8]>::try_from(key.as_ref()).ok()?;
                        Some((u64::from_be_bytes(k), Hash32::of(&value)))
                    });
                    *recovery.head.lock().expect("recovery lock") = durable;
                    epoch += 1;
                    recovery.epoch.store(epoch, Ordering::Release);
                }
            }
        }
        if let Some(ack) = staged.close {
            if let Err(e) = db.flush() {
                tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
            }
            let _ = ack.send(());
        }
    }
    if let Err(e) = db.flush() {
        tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
    }
}

/// One transaction over every tree, then one flush.
fn commit(all: &[sled::Tree], db: &sled::Db, rows: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Result<()> {
    if rows.iter().all(Vec::is_empty) {
        return Ok(());
    }
    let batches: Vec<sled::Batch> = rows
        .iter()
        .map(|rows| {
            let mut batch = sled::Batch::default();
            for (k, v) in rows {
                batch.insert(k.as_slice(), v.as_slice());
            }
            batch
        })
        .collect();
    all.transaction(|trees| {
        for (tree, batch) in trees.iter().zip(&batches) {
            tree.apply_batch(batch)?;
        }
        Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
    })
    .map_err(|e| NodeError::Ledger(format!("transaction: {e:?}")))?;
    db.flush()?;
    Ok(())
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
