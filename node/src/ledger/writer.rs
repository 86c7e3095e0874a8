//! The ledger's single writer: a thread that batches appends (group
//! commit), writes each batch in one multi-tree transaction, flushes once,
//! and only then acknowledges every append of the batch.

use std::collections::HashMap;

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Hash32, Keypair, NodeId, Signed};
use sled::Transactional;
use tokio::sync::{mpsc, oneshot};

use super::store::{Trees, concat_key, seq_key};
use crate::error::{NodeError, Result};

/// Most operations committed by one flush.
pub const MAX_BATCH: usize = 4096;

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

/// One pending write, per tree, of the batch being built.
struct Staged {
    /// Per tree (in `Trees::all` order): the rows to insert.
    rows: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

pub(crate) struct Writer {
    pub key: Keypair,
    pub trees: Trees,
    pub db: sled::Db,
    pub head: Option<(u64, Hash32)>,
}

impl Writer {
    /// Runs until every sender is dropped, then flushes.
    pub fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let all = self.trees.all();
        let kind_index = |kind| {
            1 + self
                .trees
                .kinds
                .iter()
                .position(|(k, _)| *k == kind)
                .expect("a tree per kind")
        };
        let n_kinds = self.trees.kinds.len();
        let (by_job, by_owner, foreign, foreign_by_job) =
            (1 + n_kinds, 2 + n_kinds, 3 + n_kinds, 4 + n_kinds);
        let mut ops = Vec::with_capacity(MAX_BATCH);
        let mut closing = None;
        while let Some(first) = rx.blocking_recv() {
            ops.push(first);
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let mut staged = Staged {
                rows: vec![Vec::new(); all.len()],
            };
            let mut outcomes = Vec::with_capacity(ops.len());
            let mut head = self.head;
            // Foreign rows written earlier in this same batch.
            let mut batch_foreign: HashMap<Vec<u8>, Hash32> = HashMap::new();
            for op in ops.drain(..) {
                match op {
                    WriteOp::Close { ack } => {
                        closing = Some(ack);
                    }
                    WriteOp::Append {
                        body,
                        timestamp,
                        ack,
                    } => {
                        let kind = body.kind();
                        let job = body.job_id();
                        let owners = body.owners();
                        let signed = LedgerEntry::sign_next(&self.key, head, timestamp, body);
                        let bytes = signed.to_bytes();
                        let id = Hash32::of(&bytes);
                        let seq = head.map_or(0, |(s, _)| s + 1);
                        let key = seq_key(seq);
                        staged.rows[0].push((key.to_vec(), bytes));
                        staged.rows[kind_index(kind)].push((key.to_vec(), id.0.to_vec()));
                        if let Some(job) = job {
                            staged.rows[by_job].push((concat_key(&[&job.0, &key]), id.0.to_vec()));
                        }
                        for owner in owners {
                            staged.rows[by_owner]
                                .push((concat_key(&[&owner.0.0, &key]), id.0.to_vec()));
                        }
                        head = Some((seq, id));
                        outcomes.push(Outcome::Appended(ack, Appended { seq, id }));
                    }
                    WriteOp::Foreign { signed, entry, ack } => {
                        let bytes = signed.to_bytes();
                        let id = Hash32::of(&bytes);
                        let key = concat_key(&[&entry.author.0.0, &seq_key(entry.seq)]);
                        let held = match batch_foreign.get(&key) {
                            Some(existing) => Ok(Some(*existing)),
                            None => self
                                .trees
                                .foreign
                                .get(&key)
                                .map(|v| v.map(|b| Hash32::of(&b))),
                        };
                        let result = match held {
                            Err(e) => Err(NodeError::from(e)),
                            Ok(Some(existing)) if existing == id => Ok(ForeignStored {
                                author: entry.author,
                                seq: entry.seq,
                                id,
                                already_held: true,
                            }),
                            Ok(Some(_)) => Err(NodeError::Equivocation {
                                author: entry.author.to_string(),
                                seq: entry.seq,
                            }),
                            Ok(None) => {
                                staged.rows[foreign].push((key.clone(), bytes));
                                if let Some(job) = entry.body.job_id() {
                                    staged.rows[foreign_by_job]
                                        .push((concat_key(&[&job.0, &key]), id.0.to_vec()));
                                }
                                batch_foreign.insert(key, id);
                                Ok(ForeignStored {
                                    author: entry.author,
                                    seq: entry.seq,
                                    id,
                                    already_held: false,
                                })
                            }
                        };
                        outcomes.push(Outcome::Foreign(ack, result));
                    }
                }
            }
            match self.commit(&all, &staged) {
                Ok(()) => {
                    self.head = head;
                    for outcome in outcomes {
                        match outcome {
                            Outcome::Appended(ack, a) => {
                                let _ = ack.send(Ok(a));
                            }
                            Outcome::Foreign(ack, r) => {
                                let _ = ack.send(r);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(target: "fairgrid::ledger", error = %e, "ledger batch failed; nothing in it was acknowledged");
                    for outcome in outcomes {
                        let err = || NodeError::Ledger(format!("batch commit failed: {e}"));
                        match outcome {
                            Outcome::Appended(ack, _) => {
                                let _ = ack.send(Err(err()));
                            }
                            Outcome::Foreign(ack, _) => {
                                let _ = ack.send(Err(err()));
                            }
                        }
                    }
                    // The in-memory head may be ahead of disk now; re-read it.
                    if let Ok(Some((key, value))) = self.trees.chain.last()
                        && let Ok(k) = <[u8; 8]>::try_from(key.as_ref())
                    {
                        self.head = Some((u64::from_be_bytes(k), Hash32::of(&value)));
                    }
                }
            }
            if let Some(ack) = closing.take() {
                rx.close();
                // Appends that raced the close are refused, never dropped silently.
                while let Ok(op) = rx.try_recv() {
                    refuse(op);
                }
                if let Err(e) = self.db.flush() {
                    tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
                }
                let _ = ack.send(());
                return;
            }
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(target: "fairgrid::ledger", error = %e, "final ledger flush failed");
        }
    }

    /// One transaction over every tree, then one flush.
    fn commit(&self, all: &[sled::Tree], staged: &Staged) -> Result<()> {
        if staged.rows.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let batches: Vec<sled::Batch> = staged
            .rows
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
        self.db.flush()?;
        Ok(())
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
