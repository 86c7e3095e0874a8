//! The node's ledger in sled: its own signed, hash-chained entries and the
//! entries of other nodes it holds for jobs it took part in.
//!
//! - [`Ledger`] is the running node's handle: cloneable, async appends that
//!   resolve only once the entry is flushed to disk (group commit, see
//!   [`writer`]).
//! - [`LedgerStore`] is the read side; it also opens a stopped node's
//!   ledger for `fairgrid ledger verify|show|export`.
//! - [`verify`] walks the chain and checks every link and signature.
//!
//! Adding an entry kind is a protocol change (`EntryBody` and `EntryKind`);
//! the store opens one tree per `EntryKind::ALL` and indexes by
//! `EntryBody::job_id` and `EntryBody::owners` without further changes here
//! (see `index.rs`).

mod index;
mod store;
pub mod verify;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Keypair, NodeId, Signed};
use tokio::sync::{mpsc, oneshot};

pub use store::{LedgerStore, StoredEntry};
pub use writer::{Appended, ForeignStored, MAX_BATCH};

use crate::error::{NodeError, Result};

/// Appends waiting for the writer, at most (callers wait beyond that).
const QUEUE: usize = 16 * 1024;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A running node's ledger. Clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    store: LedgerStore,
    author: NodeId,
    tx: mpsc::Sender<writer::WriteOp>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    commits: Arc<AtomicU64>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` for the node `key`, recovering
    /// the chain head. A ledger written by a different node key is refused.
    pub fn open(path: &Path, key: Keypair) -> Result<Ledger> {
        let store = LedgerStore::open(path)?;
        Ledger::start(store, key, &path.display().to_string())
    }

    /// [`Ledger::open`] with sled's page cache bounded to `cache_bytes`.
    pub fn open_with_cache(path: &Path, key: Keypair, cache_bytes: u64) -> Result<Ledger> {
        let store = LedgerStore::open_with_cache(path, cache_bytes)?;
        Ledger::start(store, key, &path.display().to_string())
    }

    /// A ledger that lives in memory (sled's temporary mode), for tests
    /// that need a real ledger but no disk.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn in_memory(key: Keypair) -> Result<Ledger> {
        Ledger::start(LedgerStore::temporary()?, key, "an in-memory ledger")
    }

    fn start(store: LedgerStore, key: Keypair, origin: &str) -> Result<Ledger> {
        let author = key.node_id();
        let head = match store.tip()? {
            Some(tip) => {
                if tip.author != author {
                    return Err(NodeError::Ledger(format!(
                        "{origin} belongs to node {}, not {author}",
                        tip.author
                    )));
                }
                Some((tip.seq, tip.link))
            }
            None => {
                store.mark_format()?;
                None
            }
        };
        index::catch_up_indexes(&store.handles()?.trees)?;
        store.flush()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = writer::Writer {
            key,
            store: store.clone(),
            head,
            commits: Arc::clone(&commits),
        };
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| NodeError::Ledger(format!("starting the writer of {origin}: {e}")))?;
        Ok(Ledger {
            store,
            author,
            tx,
            thread: Arc::new(Mutex::new(Some(thread))),
            commits,
        })
    }

    /// Group commits (flushes that made appends or foreign entries
    /// durable) since this ledger was opened.
    pub fn group_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &LedgerStore {
        &self.store
    }

    pub fn author(&self) -> NodeId {
        self.author
    }

    /// Signs `body` as the next entry of this node's chain and returns once
    /// it is on disk. Any kind of entry goes through here.
    pub async fn append(&self, body: EntryBody) -> Result<Appended> {
        self.append_at(body, now_ms()).await
    }

    /// As [`append`](Self::append) with an explicit timestamp.
    pub async fn append_at(&self, body: EntryBody, timestamp: u64) -> Result<Appended> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(writer::WriteOp::Append {
                body,
                timestamp,
                ack,
            })
            .await
            .map_err(|_| NodeError::WriterStopped)?;
        done.await.map_err(|_| NodeError::WriterStopped)?
    }

    /// Blocking form of [`append`](Self::append) for non-async callers.
    pub fn append_blocking(&self, body: EntryBody) -> Result<Appended> {
        let (ack, done) = oneshot::channel();
        self.tx
            .blocking_send(writer::WriteOp::Append {
                body,
                timestamp: now_ms(),
                ack,
            })
            .map_err(|_| NodeError::WriterStopped)?;
        done.blocking_recv().map_err(|_| NodeError::WriterStopped)?
    }

    /// Stores another node's entry (received for a job this node is part
    /// of) after checking its signature. Storing the same entry twice is
    /// fine; a different entry under the same `(author, seq)` is refused as
    /// equivocation.
    pub async fn store_foreign(&self, signed: Signed<LedgerEntry>) -> Result<ForeignStored> {
        let (signer, entry) = signed.verify_and_decode()?;
        if entry.author.0 != signer {
            return Err(NodeError::Ledger(format!(
                "foreign entry claims author {} but is signed by another key",
                entry.author
            )));
        }
        if entry.author == self.author {
            return Err(NodeError::Ledger(
                "an entry of this node's own chain cannot be stored as foreign".into(),
            ));
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(writer::WriteOp::Foreign { signed, entry, ack })
            .await
            .map_err(|_| NodeError::WriterStopped)?;
        done.await.map_err(|_| NodeError::WriterStopped)?
    }

    /// Lets the writer commit every append queued before this call, flushes,
    /// and stops it; appends through any clone fail afterwards.
    pub fn close(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        if self
            .tx
            .blocking_send(writer::WriteOp::Close { ack })
            .is_ok()
        {
            let _ = done.blocking_recv();
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.store.flush()
    }

    /// [`close`](Self::close) for async callers.
    pub async fn close_async(&self) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.close())
            .await
            .map_err(|e| NodeError::Ledger(format!("closing: {e}")))?
    }
}

#[cfg(test)]
mod tests;
