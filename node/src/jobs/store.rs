//! What the jobs work keeps on disk, under `<data dir>/jobs/`:
//!
//! ```text
//! jobs/db/        sled: coordinator checkpoints, their parameters and the
//!                 ledger entries they hold as not yet recorded, worker records
//! jobs/shards/    fetched shards, named by their BLAKE3 hash (a bounded cache)
//! jobs/results/   finished jobs' models (<job id>.safetensors)
//! ```
//!
//! Every write is flushed before the caller goes on, so a checkpoint that
//! was reported is on disk. The flush is sled's blocking one on a blocking
//! thread: its `flush_async` can deadlock (sled issues 1308 and 1412). Records are bincode; a record that does not
//! decode is reported and skipped, never half-applied.

use std::path::{Path, PathBuf};

use fairgrid_protocol::Hash32;
use fairgrid_protocol::codec::{decode_exact, encode};
use fairgrid_protocol::ledger::EntryBody;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{NodeError, Result};

/// Largest record (a coordinator checkpoint without its parameters).
const MAX_RECORD: usize = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct JobStore {
    db: sled::Db,
    coordinator: sled::Tree,
    params: sled::Tree,
    unrecorded: sled::Tree,
    worker: sled::Tree,
    root: PathBuf,
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
    pub fn open(root: &Path) -> Result<JobStore> {
        for dir in ["shards", "results"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| NodeError::io(&path, e))?;
        }
        let db = sled::Config::new()
            .path(root.join("db"))
            .open()
            .map_err(|e| {
                NodeError::Ledger(format!("opening {}: {e}", root.join("db").display()))
            })?;
        Ok(JobStore {
            coordinator: db.open_tree("coordinator")?,
            params: db.open_tree("params")?,
            unrecorded: db.open_tree("unrecorded")?,
            worker: db.open_tree("worker")?,
            db,
            root: root.to_path_buf(),
        })
    }

    pub fn shard_dir(&self) -> PathBuf {
        self.root.join("shards")
    }

    pub fn result_path(&self, job: &Hash32) -> PathBuf {
        self.root
            .join("results")
            .join(format!("{}.safetensors", job.to_hex()))
    }

    async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| NodeError::Ledger(format!("flush thread: {e}")))??;
        Ok(())
    }

    /// Stores a coordinator checkpoint, the parameters it goes with and
    /// the entries it holds as not yet recorded, all or nothing.
    pub async fn put_coordinator<T: Serialize>(
        &self,
        job: &Hash32,
        record: &T,
        params: Option<&[u8]>,
        unrecorded: &[EntryBody],
    ) -> Result<()> {
        let record = encode(record);
        let unrecorded = encode(&unrecorded);
        (&self.coordinator, &self.params, &self.unrecorded)
            .transaction(|(c, p, u)| {
                c.insert(&job.0, record.as_slice())?;
                if let Some(params) = params {
                    p.insert(&job.0, params)?;
                }
                u.insert(&job.0, unrecorded.as_slice())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| {
                NodeError::Ledger(format!("checkpoint of job {job}: {e:?}"))
            })?;
        self.flush().await
    }

    /// Forgets a coordinator checkpoint (a job whose acceptance failed).
    pub async fn remove_coordinator(&self, job: &Hash32) -> Result<()> {
        self.coordinator.remove(job.0)?;
        self.params.remove(job.0)?;
        self.unrecorded.remove(job.0)?;
        self.flush().await
    }

    /// Every coordinator checkpoint that decodes, with its parameters;
    /// the others are returned as errors naming the job.
    pub fn coordinators<T: DeserializeOwned>(
        &self,
    ) -> Vec<std::result::Result<StoredCheckpoint<T>, String>> {
        self.coordinator
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|e| e.to_string())?;
                let job = Hash32(
                    key.as_ref()
                        .try_into()
                        .map_err(|_| "bad checkpoint key".to_string())?,
                );
                let record = decode_exact("checkpoint", &value, MAX_RECORD)
                    .map_err(|e| format!("checkpoint of job {job}: {e}"))?;
                let params = self
                    .params
                    .get(job.0)
                    .map_err(|e| e.to_string())?
                    .map(|v| v.to_vec());
                let unrecorded = match self.unrecorded.get(job.0).map_err(|e| e.to_string())? {
                    Some(bytes) => decode_exact("unrecorded entries", &bytes, MAX_UNRECORDED)
                        .map_err(|e| format!("unrecorded entries of job {job}: {e}"))?,
                    None => Vec::new(),
                };
                Ok(StoredCheckpoint {
                    job,
                    record,
                    params,
                    unrecorded,
                })
            })
            .collect()
    }

    pub async fn put_worker<T: Serialize>(&self, job: &Hash32, record: &T) -> Result<()> {
        self.worker.insert(job.0, encode(record))?;
        self.flush().await
    }

    pub fn workers<T: DeserializeOwned>(&self) -> Vec<std::result::Result<(Hash32, T), String>> {
        self.worker
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
        self.worker.remove(job.0)?;
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
        let store = JobStore::open(dir.path()).unwrap();
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
        let all = store.coordinators::<(u32, String)>();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].clone().unwrap(),
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
        let again = store.coordinators::<(u32, String)>()[0].clone().unwrap();
        assert_eq!(again.record, (8, "y".into()));
        assert_eq!(again.params, Some(vec![1, 2, 3]));
        assert!(again.unrecorded.is_empty());
        store.remove_coordinator(&job).await.unwrap();
        assert!(store.coordinators::<(u32, String)>().is_empty());
        store
            .coordinator
            .insert(Hash32::of(b"k").0, &[0xff, 0xff][..])
            .unwrap();
        let all = store.coordinators::<(u32, String)>();
        assert_eq!(all.iter().filter(|r| r.is_err()).count(), 1);
    }
}
