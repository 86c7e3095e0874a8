//! The evidence of an audit: everything a third party needs to recompute
//! the verdict offline, in one file whose hash the `Audit` entry records.
//! Nothing in it is trusted when read back: the spec and the update are
//! checked by their signatures, the parameters and shards by the hashes
//! those signed messages carry.

use std::sync::Arc;

use fairgrid_kernels::Shard;
use fairgrid_protocol::messages::{JobSpec, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use serde::{Deserialize, Serialize};

use super::replay::{AuditCase, Verdict, replay};
use crate::jobs::device::Device;
use crate::jobs::model;

/// Largest evidence file read back (a model at the wire's limit, its
/// delta and residual, and the shards of one order).
pub const MAX_EVIDENCE_BYTES: usize = 512 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    /// The job, signed by its coordinator.
    pub spec: Signed<JobSpec>,
    /// The audited update, signed by its worker.
    pub update: Signed<RoundUpdate>,
    /// The round's parameters (their hash is the update's `base_params`).
    pub params: Vec<f32>,
    /// What the worker revealed (no reveal: both empty).
    pub delta: Vec<f32>,
    pub residual: Vec<f32>,
    /// The bytes of the update's shards, in its order.
    pub shards: Vec<Vec<u8>>,
}

impl Evidence {
    pub fn to_bytes(&self) -> Vec<u8> {
        fairgrid_protocol::codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Evidence, String> {
        fairgrid_protocol::codec::decode_exact("audit evidence", bytes, MAX_EVIDENCE_BYTES)
            .map_err(|e| format!("not an audit evidence file: {e}"))
    }

    /// Checks every part against the signed messages, then replays the
    /// round: the verdict the auditor reached, reached again.
    pub fn replay(&self, device: Device) -> Result<(NodeId, Verdict), String> {
        let checked = self.check()?;
        Ok((checked.update.worker, self.replay_checked(&checked, device)))
    }

    /// Replays evidence [`Evidence::check`] passed.
    pub fn replay_checked(&self, checked: &Checked, device: Device) -> Verdict {
        let case = AuditCase {
            spec: &checked.spec,
            job_id: checked.job_id,
            params: &self.params,
            update: &checked.update,
            loaded: &checked.loaded,
            delta: &self.delta,
            residual: &self.residual,
        };
        replay(&case, device, &Arc::default())
    }

    /// Checks every part against the signed messages that pin it: the
    /// spec's and the update's signatures, the parameters against the
    /// update's base, each shard against the spec's hash.
    pub fn check(&self) -> Result<Checked, String> {
        let (_, spec) = self
            .spec
            .verify_and_decode()
            .map_err(|e| format!("the job spec: {e}"))?;
        let job_id = self.spec.id();
        let (signer, update) = self
            .update
            .verify_and_decode()
            .map_err(|e| format!("the update: {e}"))?;
        if signer != update.worker.0 {
            return Err("the update is not signed by its worker".into());
        }
        if update.job_id != job_id {
            return Err(format!(
                "the update is for job {}, not {job_id}",
                update.job_id
            ));
        }
        if model::params_hash(&self.params) != update.base_params {
            return Err("the parameters are not the ones the update started from".into());
        }
        if self.shards.len() != update.shards.len() {
            return Err(format!(
                "{} shards for an update over {}",
                self.shards.len(),
                update.shards.len()
            ));
        }
        let mut loaded = Vec::with_capacity(self.shards.len());
        for (bytes, &index) in self.shards.iter().zip(&update.shards) {
            let info = spec
                .dataset
                .shards
                .get(index as usize)
                .ok_or_else(|| format!("the job has no shard {index}"))?;
            if Hash32(Shard::hash_bytes(bytes)) != info.hash {
                return Err(format!("shard {index} is not the job's"));
            }
            let shard = Shard::from_bytes(bytes).map_err(|e| format!("shard {index}: {e}"))?;
            loaded.push(Arc::new(shard));
        }
        Ok(Checked {
            spec,
            job_id,
            update,
            loaded,
        })
    }
}

/// Evidence whose parts hold together, decoded.
pub struct Checked {
    pub spec: JobSpec,
    pub job_id: fairgrid_protocol::Hash32,
    pub update: RoundUpdate,
    pub loaded: Vec<Arc<Shard>>,
}
