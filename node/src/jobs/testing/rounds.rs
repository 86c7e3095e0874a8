//! A worker's rounds and their audit, in one process: what the audit tests
//! and the audit bench drive.

use std::sync::Arc;
use std::time::Instant;

use fairgrid_kernels::Shard;
use fairgrid_protocol::messages::{JobSpec, RoundUpdate};
use fairgrid_protocol::{Hash32, Keypair};

use crate::jobs::audit::{AuditCase, Verdict, replay};
use crate::jobs::device::Device;
use crate::jobs::model;
use crate::jobs::worker::faults::TestFault;
use crate::jobs::worker::train::{Engine, RoundInput, Trained, train_round};

/// A job's spec, id and shards, all loaded.
pub struct LoadedJob {
    pub spec: JobSpec,
    pub id: Hash32,
    pub shards: Vec<Arc<Shard>>,
}

impl LoadedJob {
    fn loaded(&self, shards: &[u32]) -> Vec<Arc<Shard>> {
        shards
            .iter()
            .map(|&s| Arc::clone(&self.shards[s as usize]))
            .collect()
    }

    /// One worker's rounds 0..=`last` on `shards` (its engine, and so its
    /// residual, carried between them); the parameters move by the
    /// worker's own decoded delta each round. Returns the last round's
    /// output, the parameters it started from, and its training seconds.
    pub fn work(
        &self,
        shards: &[u32],
        last: u32,
        device: Device,
        fault: TestFault,
    ) -> (Trained, Vec<f32>, f64) {
        let key = Keypair::from_seed(b"worker");
        let mut engine: Option<Engine> = None;
        let mut params = model::initial_params(&self.spec.model, &self.spec.hyper).unwrap();
        let threads = match device {
            Device::Cpu { threads } => threads,
            Device::Cuda { .. } => 1,
        };
        for round in 0..=last {
            let input = RoundInput {
                spec: self.spec.clone(),
                job_id: self.id,
                round,
                worker: key.node_id(),
                key: key.clone(),
                params: params.clone(),
                base_params: model::params_hash(&params),
                shards: shards.to_vec(),
                loaded: self.loaded(shards),
                threads,
                devices: vec![device],
                reset_residual: false,
                fault,
                cancel: Arc::default(),
            };
            let started = Instant::now();
            let trained = train_round(&mut engine, input).unwrap();
            let secs = started.elapsed().as_secs_f64();
            if round == last {
                return (trained, params, secs);
            }
            let delta = fairgrid_kernels::decode_update(&trained.bytes, params.len()).unwrap();
            params.iter_mut().zip(&delta).for_each(|(p, d)| *p += d);
        }
        unreachable!("the loop returns in its last round")
    }

    /// Audits `update` (claimed with `trained`'s reveal) on `device`.
    pub fn audit(
        &self,
        update: &RoundUpdate,
        trained: &Trained,
        params: &[f32],
        device: Device,
    ) -> Verdict {
        let loaded = self.loaded(&update.shards);
        let case = AuditCase {
            spec: &self.spec,
            job_id: self.id,
            params,
            update,
            loaded: &loaded,
            delta: &trained.reveal.delta,
            residual: &trained.reveal.residual,
        };
        replay(&case, device, &Arc::default())
    }
}
