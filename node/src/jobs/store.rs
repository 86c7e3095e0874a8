//! What the jobs work keeps on disk, under `<data dir>/jobs/`:
//!
//! ```text
//! jobs/db/        sled: coordinator checkpoints, the hash of their parameters
//!                 and the ledger entries they hold as not yet recorded,
//!                 worker records
//! jobs/params/    each checkpoint's parameters (fp32 LE, then the outer
//!                 momentum when the job has one), `<job>-<BLAKE3>.params`
//! jobs/shards/    fetched shards, named by their BLAKE3 hash (a bounded cache)
//! jobs/results/   finished jobs' models (<job id>.safetensors)
//! ```
//!
//! Every write is flushed before the caller goes on, so a checkpoint that
//! was reported is on disk. Parameters are files, not sled values: sled
//! 0.34 kept every version of a value rewritten each round in memory
//! whatever its cache size (heaptrack on a soak: 77 MB of parameters of
//! finished jobs held after 130 jobs), so a coordinator grew by about a
//! MiB a job. A parameters file is written and synced before the
//! checkpoint that names it, and older files of the job go once the
//! checkpoint is flushed. The flush is sled's blocking one on a blocking
//! thread: its `flush_async` can deadlock (sled issues 1308 and 1412). A
//! write that fails (a full disk) drops the database's handles and the
//! next operation opens it again, since sled refuses every write after a
//! failed one; a write that does not finish within 30 s is reported as
//! stuck. Records are bincode; a record that does not decode is reported
//! and skipped, never half-applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fairgrid_protocol::codec::{decode_exact, encode};
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{Hash32, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{NodeError, Result};

/// Largest record (a coordinator checkpoint without its parameters).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// The job store's sled database and its trees.
#[derive(Clone)]
struct Trees {
    db: sled::Db,
    coordinator: sled::Tree,
    params: sled::Tree,
    unrecorded: sled::Tree,
    worker: sled::Tree,
}

impl Trees {
    fn open(path: &Path, cache_bytes: u64) -> Result<Trees> {
        let db = sled::Config::new()
            .path(path)
            // sled caches up to 1 GiB by default; checkpoints rewrite a
            // job's parameters every round, and a long-running coordinator
            // grew by that much (`fairgrid-testnet soak`). Bounded by
            // `storage.jobs_cache_mib`.
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| store_error(format!("opening {}", path.display()), e))?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| store_error(format!("opening tree {name}"), e))
        };
        Ok(Trees {
            coordinator: tree("coordinator")?,
            params: tree("params")?,
            unrecorded: tree("unrecorded")?,
            worker: tree("worker")?,
            db,
        })
    }
}

fn store_error(what: impl std::fmt::Display, e: impl std::fmt::Debug) -> NodeError {
    NodeError::JobStore(format!("{what}: {e:?}"))
}

/// The handles in `slot`, opening the database at `path` again if a
/// write dropped them. Blocking.
fn open_trees(slot: &Mutex<Option<Trees>>, path: &Path, cache_bytes: u64) -> Result<Trees> {
    let mut slot = slot.lock().expect("job store lock");
    if let Some(trees) = slot.as_ref() {
        return Ok(trees.clone());
    }
    let trees = open_waiting(path, cache_bytes)?;
    tracing::info!(target: "fairgrid::jobs", path = %path.display(), "job store reopened");
    *slot = Some(trees.clone());
    Ok(trees)
}

/// Opens the database, waiting up to [`REOPEN_WAIT`] while an earlier
/// handle's background threads still hold its lock (a store dropped and
/// opened again in one process: sled lets go of the lock only when they
/// end). Blocking.
fn open_waiting(path: &Path, cache_bytes: u64) -> Result<Trees> {
    let deadline = std::time::Instant::now() + REOPEN_WAIT;
    loop {
        match Trees::open(path, cache_bytes) {
            Ok(trees) => return Ok(trees),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the params tree holds for a checkpoint: this tag and the BLAKE3
/// of its parameters file. Any other value is parameters stored inline by
/// an older fairgrid.
const PARAMS_FILE_TAG: &[u8] = b"file:";

fn params_pointer(hash: &Hash32) -> Vec<u8> {
    [PARAMS_FILE_TAG, &hash.0[..]].concat()
}

fn params_path(dir: &Path, job: &Hash32, hash: &Hash32) -> PathBuf {
    dir.join(format!("{}-{}.params", job.to_hex(), hash.to_hex()))
}

/// The parameters a params-tree value names, checked against its hash.
fn read_params(dir: &Path, job: &Hash32, value: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let Some(hash) = value.strip_prefix(PARAMS_FILE_TAG) else {
        return Ok(value.to_vec());
    };
    let hash = Hash32(
        hash.try_into()
            .map_err(|_| format!("job {job}: a parameters pointer of {} bytes", value.len()))?,
    );
    let path = params_path(dir, job, &hash);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if Hash32::of(&bytes) != hash {
        return Err(format!(
            "{}: the parameters do not match their hash (corrupt file)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a synced temporary file, then syncs
/// the directory, so the file is whole and durable once this returns.
fn write_synced(path: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    use std::io::Write;
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

/// How long a write and its flush may take before the caller is told the
/// store is stuck.
const WRITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a reopen waits for the old handles' background threads to let
/// go of the database's lock.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The job store. Sled refuses every write after one failed (a full disk,
/// say) until it is opened again, so a failed write drops the handles and
/// the next operation reopens the database: storage that recovers (space
/// freed) is usable again without restarting the node. Clones share the
/// database.
#[derive(Clone)]
pub struct JobStore {
    trees: Arc<Mutex<Option<Trees>>>,
    root: PathBuf,
    cache_bytes: u64,
}

/// A stored coordinator checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint<T> {
    pub job: Hash32,
    pub record: T,
    pub params: Option<Vec<u8>>,
    /// Ledger entries the checkpoint's state implies that may not be in
    /// the ledger yet (written ahead of the append).
    pub unrecorded: Vec<EntryBody>,
}

/// Largest list of not yet recorded entries of one job.
const MAX_UNRECORDED: usize = 64 * 1024 * 1024;

impl JobStore {
    /// Opens the store under `root`, letting sled cache up to
    /// `cache_bytes`.
    pub fn open(root: &Path, cache_bytes: u64) -> Result<JobStore> {
        for dir in ["shards", "results", "params"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| NodeError::io(&path, e))?;
        }
        let trees = open_waiting(&root.join("db"), cache_bytes)?;
        Ok(JobStore {
            trees: Arc::new(Mutex::new(Some(trees))),
            root: root.to_path_buf(),
            cache_bytes,
        })
    }

    pub fn shard_dir(&self) -> PathBuf {
        self.root.join("shards")
    }

    fn params_dir(&self) -> PathBuf {
        self.root.join("params")
    }

    /// Where the evidence of an audit of `worker`'s update in `round` is
    /// kept (`fairgrid audit replay` reads it).
    pub fn evidence_path(&self, job: &Hash32, round: u32, worker: &NodeId) -> PathBuf {
        self.root
            .join("audits")
            .join(job.to_hex())
            .join(format!("{round}-{worker}.evidence"))
    }

    pub fn result_path(&self, job: &Hash32) -> PathBuf {
        self.root
            .join("results")
            .join(format!("{}.safetensors", job.to_hex()))
    }

    /// The open database, reopened first if a write failed since.
    /// Blocking while it reopens: the async paths go through [`Self::write`].
    fn trees(&self) -> Result<Trees> {
        open_trees(&self.trees, &self.root.join("db"), self.cache_bytes)
    }

    /// Runs a write and flushes it, on a blocking thread; on failure the
    /// handles are dropped so that the next operation reopens the database.
    async fn write(
        &self,
        what: String,
        op: impl FnOnce(&Trees) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<()> {
        let (slot, path) = (Arc::clone(&self.trees), self.root.join("db"));
        let cache_bytes = self.cache_bytes;
        let (stuck_slot, stuck_what) = (Arc::clone(&slot), what.clone());
        let write = tokio::task::spawn_blocking(move || {
            let _watched = crate::watchdog::watch("job store write");
            let done = open_trees(&slot, &path, cache_bytes)
                .map_err(|e| e.to_string())
                .and_then(|trees| {
                    op(&trees)?;
                    trees
                        .db
                        .flush()
                        .map(|_| ())
                        .map_err(|e| format!("flush: {e:?}"))
                });
            if done.is_err() {
                slot.lock().expect("job store lock").take();
            }
            done
        });
        // Sled can block for good on an I/O error (a full disk): the caller
        // gets an error instead of waiting with it.
        let done = match tokio::time::timeout(WRITE_LIMIT, write).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(format!("store thread: {e}"))),
            Err(_) => {
                stuck_slot.lock().expect("job store lock").take();
                tracing::error!(target: "fairgrid::jobs", what = %stuck_what, "the job store did not answer");
                Err(format!(
                    "the job store did not answer within {} s (is the disk full?)",
                    WRITE_LIMIT.as_secs()
                ))
            }
        };
        done.map_err(|e| NodeError::JobStore(format!("{what}: {e}")))
    }

    /// Stores a coordinator checkpoint, the parameters it goes with and
    /// the entries it holds as not yet recorded, all or nothing: the
    /// parameters file is on disk before the checkpoint that names it.
    pub async fn put_coordinator<T: Serialize>(
        &self,
        job: &Hash32,
        record: &T,
        params: Option<&[u8]>,
        unrecorded: &[EntryBody],
    ) -> Result<()> {
        let record = encode(record);
        let unrecorded = encode(&unrecorded);
        let params = params.map(|p| (Hash32::of(p), p.to_vec()));
        let kept = params.as_ref().map(|(hash, _)| *hash);
        let (key, job_id, dir) = (job.0, *job, self.params_dir());
        self.write(format!("checkpoint of job {job}"), move |t| {
            let pointer = match &params {
                Some((hash, bytes)) => {
                    write_synced(&params_path(&dir, &job_id, hash), bytes)?;
                    Some(params_pointer(hash))
                }
                None => None,
            };
            (&t.coordinator, &t.params, &t.unrecorded)
                .transaction(|(c, p, u)| {
                    c.insert(&key, record.as_slice())?;
                    if let Some(pointer) = &pointer {
                        p.insert(&key, pointer.as_slice())?;
                    }
                    u.insert(&key, unrecorded.as_slice())?;
                    Ok(())
                })
                .map_err(|e: sled::transaction::TransactionError<()>| format!("{e:?}"))
        })
        .await?;
        if let Some(hash) = kept {
            self.prune_params(job, Some(hash)).await;
        }
        Ok(())
    }

    /// Removes the job's parameters files but `keep` (the flushed
    /// checkpoint's); a failure only leaves a file behind.
    async fn prune_params(&self, job: &Hash32, keep: Option<Hash32>) {
        let (dir, job) = (self.params_dir(), *job);
        let _ = tokio::task::spawn_blocking(move || {
            let prefix = format!("{}-", job.to_hex());
            let keep = keep.map(|hash| params_path(&dir, &job, &hash));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let ours = entry.file_name().to_string_lossy().starts_with(&prefix);
                if ours
                    && Some(&path) != keep.as_ref()
                    && let Err(e) = std::fs::remove_file(&path)
                {
                    tracing::warn!(target: "fairgrid::jobs", path = %path.display(), error = %e, "removing old parameters");
                }
            }
        })
        .await;
    }

    /// Forgets a coordinator checkpoint (a job whose acceptance failed).
    pub async fn remove_coordinator(&self, job: &Hash32) -> Result<()> {
        let key = job.0;
        self.write(format!("removing job {job}"), move |t| {
            for tree in [&t.coordinator, &t.params, &t.unrecorded] {
                tree.remove(key).map_err(|e| format!("{e:?}"))?;
            }
            Ok(())
        })
        .await?;
        self.prune_params(job, None).await;
        Ok(())
    }

    /// The jobs that have a coordinator checkpoint, in key order.
    pub fn coordinator_ids(&self) -> Result<Vec<Hash32>> {
        let t = self.trees()?;
        t.coordinator
            .iter()
            .keys()
            .map(|key| {
                let key = key.map_err(|e| NodeError::JobStore(e.to_string()))?;
                key.as_ref()
                    .try_into()
                    .map(Hash32)
                    .map_err(|_| NodeError::JobStore("bad checkpoint key".into()))
            })
            .collect()
    }

    /// One job's coordinator checkpoint, with its parameters and the
    /// entries not yet recorded; `None` if it has none, an error naming
    /// the job if it does not decode.
    pub fn coordinator<T: DeserializeOwned>(
        &self,
        job: &Hash32,
    ) -> std::result::Result<Option<StoredCheckpoint<T>>, String> {
        let t = self.trees().map_err(|e| e.to_string())?;
        let Some(value) = t.coordinator.get(job.0).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let record = decode_exact("checkpoint", &value, MAX_RECORD)
            .map_err(|e| format!("checkpoint of job {job}: {e}"))?;
        let params = match t.params.get(job.0).map_err(|e| e.to_string())? {
            None => None,
            Some(value) => Some(read_params(&self.params_dir(), job, &value)?),
        };
        let unrecorded = match t.unrecorded.get(job.0).map_err(|e| e.to_string())? {
            Some(bytes) => decode_exact("unrecorded entries", &bytes, MAX_UNRECORDED)
                .map_err(|e| format!("unrecorded entries of job {job}: {e}"))?,
            None => Vec::new(),
        };
        Ok(Some(StoredCheckpoint {
            job: *job,
            record,
            params,
            unrecorded,
        }))
    }

    pub async fn put_worker<T: Serialize>(&self, job: &Hash32, record: &T) -> Result<()> {
        let (key, value) = (job.0, encode(record));
        self.write(format!("worker record of job {job}"), move |t| {
            t.worker
                .insert(key, value)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })
        .await
    }

    pub fn workers<T: DeserializeOwned>(&self) -> Vec<std::result::Result<(Hash32, T), String>> {
        let t = match self.trees() {
            Ok(t) => t,
            Err(e) => return vec![Err(e.to_string())],
        };
        t.worker
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|e| e.to_string())?;
                let job = Hash32(
                    key.as_ref()
                        .try_into()
                        .map_err(|_| "bad worker key".to_string())?,
                );
                let record = decode_exact("worker record", &value, MAX_RECORD)
                    .map_err(|e| format!("worker record of job {job}: {e}"))?;
                Ok((job, record))
            })
            .collect()
    }

    pub fn remove_worker(&self, job: &Hash32) -> Result<()> {
        let t = self.trees()?;
        t.worker
            .remove(job.0)
            .map_err(|e| store_error(format!("removing worker record of job {job}"), e))?;
        Ok(())
    }
}

use sled::Transactional;

/// A bounded on-disk cache of shards, named by hash. Reads re-check the
/// hash, so a damaged file is a miss, not bad training data.
pub struct ShardCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl ShardCache {
    pub fn new(dir: PathBuf, max_mib: u64) -> Self {
        ShardCache {
            dir,
            max_bytes: max_mib.saturating_mul(1 << 20),
        }
    }

    fn path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// The shard's bytes if cached and intact.
    pub fn get(&self, hash: &Hash32) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(hash)).ok()?;
        if Hash32(fairgrid_kernels::Shard::hash_bytes(&bytes)) == *hash {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(self.path(hash));
            None
        }
    }

    /// Stores a shard (already hash-checked), then evicts the oldest files
    /// until the cache fits its budget. A shard larger than the whole
    /// budget is not cached.
    pub fn put(&self, hash: &Hash32, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.max_bytes {
            return Ok(());
        }
        crate::datadir::write_atomic(&self.path(hash), bytes)?;
        self.evict(Some(hash))
    }

    fn evict(&self, keep: Option<&Hash32>) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NodeError::io(&self.dir, e))?;
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let keep = keep.map(|h| self.path(h));
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if Some(&path) == keep.as_ref() {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_cache_checks_hashes_and_stays_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ShardCache::new(dir.path().to_path_buf(), 1);
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 400 * 1024]).collect();
        let hashes: Vec<Hash32> = blobs
            .iter()
            .map(|b| Hash32(fairgrid_kernels::Shard::hash_bytes(b)))
            .collect();
        for (h, b) in hashes.iter().zip(&blobs) {
            cache.put(h, b).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 1 << 20, "{total}");
        assert_eq!(cache.get(&hashes[4]).unwrap(), blobs[4], "the newest stays");
        assert!(cache.get(&hashes[0]).is_none(), "the oldest went");
        // A damaged file is a miss and is removed.
        std::fs::write(dir.path().join(hashes[4].to_hex()), b"junk").unwrap();
        assert!(cache.get(&hashes[4]).is_none());
        assert!(!dir.path().join(hashes[4].to_hex()).exists());
    }

    #[tokio::test]
    async fn checkpoints_round_trip_and_bad_records_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path(), 1 << 20).unwrap();
        let job = Hash32::of(b"j");
        let entry = EntryBody::JobSubmitted {
            job_id: job,
            submitter: fairgrid_protocol::Keypair::from_seed(b"s").node_id(),
            shards: 3,
            limit_price: 10,
            alpha_ppm: 500_000,
        };
        store
            .put_coordinator(
                &job,
                &(7u32, "x".to_string()),
                Some(&[1, 2, 3]),
                std::slice::from_ref(&entry),
            )
            .await
            .unwrap();
        assert_eq!(store.coordinator_ids().unwrap(), vec![job]);
        assert_eq!(
            store.coordinator::<(u32, String)>(&job).unwrap().unwrap(),
            StoredCheckpoint {
                job,
                record: (7, "x".into()),
                params: Some(vec![1, 2, 3]),
                unrecorded: vec![entry],
            }
        );
        // A later checkpoint without parameters keeps the stored ones and
        // replaces the unrecorded list.
        store
            .put_coordinator(&job, &(8u32, "y".to_string()), None, &[])
            .await
            .unwrap();
        let again = store.coordinator::<(u32, String)>(&job).unwrap().unwrap();
        assert_eq!(again.record, (8, "y".into()));
        assert_eq!(again.params, Some(vec![1, 2, 3]));
        assert!(again.unrecorded.is_empty());
        store.remove_coordinator(&job).await.unwrap();
        assert!(store.coordinator_ids().unwrap().is_empty());
        assert_eq!(store.coordinator::<(u32, String)>(&job), Ok(None));
        let bad = Hash32::of(b"k");
        store
            .trees()
            .unwrap()
            .coordinator
            .insert(bad.0, &[0xff, 0xff][..])
            .unwrap();
        let error = store.coordinator::<(u32, String)>(&bad).unwrap_err();
        assert!(error.contains(&bad.to_string()), "{error}");
    }

    fn params_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("params"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Parameters live in one file per job (the latest checkpoint's), not
    /// in sled, which kept every version in memory.
    #[tokio::test]
    async fn parameters_are_one_file_per_job_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path(), 1 << 20).unwrap();
        let (a, b) = (Hash32::of(b"a"), Hash32::of(b"b"));
        for round in 0..5u8 {
            for job in [a, b] {
                let params = vec![round; 4096];
                store
                    .put_coordinator(&job, &u32::from(round), Some(&params), &[])
                    .await
                    .unwrap();
            }
        }
        let files = params_files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        let stored = store.coordinator::<u32>(&a).unwrap().unwrap();
        assert_eq!(stored.params, Some(vec![4u8; 4096]));
        // The sled value is a pointer, not the parameters.
        let pointer = store.trees().unwrap().params.get(a.0).unwrap().unwrap();
        assert_eq!(pointer.len(), PARAMS_FILE_TAG.len() + 32);

        // A damaged file is an error naming it, never other parameters.
        let path = params_path(&dir.path().join("params"), &a, &Hash32::of(&[4u8; 4096]));
        std::fs::write(&path, b"junk").unwrap();
        let error = store.coordinator::<u32>(&a).unwrap_err();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("corrupt"), "{error}");

        // Parameters stored inline by an older fairgrid still read.
        store
            .trees()
            .unwrap()
            .params
            .insert(b.0, &[9u8, 9, 9][..])
            .unwrap();
        let old = store.coordinator::<u32>(&b).unwrap().unwrap();
        assert_eq!(old.params, Some(vec![9, 9, 9]));

        store.remove_coordinator(&a).await.unwrap();
        assert!(
            !params_files(dir.path())
                .iter()
                .any(|f| f.starts_with(&a.to_hex()))
        );
    }
}
