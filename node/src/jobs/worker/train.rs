//! Step 5, worker side: one round of local SGD on a blocking thread, the
//! delta compressed (the compressor and its error-feedback residual live
//! as long as the job), and the signed update.

use std::sync::Arc;

use fairgrid_kernels::{Compressor, CpuBackend, Shard, ShardSet, Trainer};
use fairgrid_protocol::messages::{JobSpec, RoundUpdate};
use fairgrid_protocol::{Hash32, Keypair, NodeId, Signed};

use crate::jobs::model;

/// A worker's training state for one job.
pub struct Engine {
    pub trainer: Trainer<CpuBackend>,
    pub compressor: Compressor,
}

impl Engine {
    pub fn new(spec: &JobSpec, threads: usize) -> Result<Engine, String> {
        let trainer = model::trainer(
            &spec.model,
            &spec.hyper,
            spec.hyper.batch_size as usize,
            threads,
        )
        .map_err(|e| e.to_string())?;
        let compressor = Compressor::new(model::kernels_compression(spec.hyper.compression))
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            trainer,
            compressor,
        })
    }
}

/// What a round produced, ready to send.
pub struct Trained {
    pub update: Signed<RoundUpdate>,
    pub bytes: Vec<u8>,
}

/// Everything a round's training needs (moved onto the blocking thread).
pub struct RoundInput {
    pub spec: JobSpec,
    pub job_id: Hash32,
    pub round: u32,
    pub worker: NodeId,
    pub key: Keypair,
    pub params: Vec<f32>,
    pub base_params: Hash32,
    pub shards: Vec<u32>,
    pub loaded: Vec<Arc<Shard>>,
    pub threads: usize,
    pub fault: TestFault,
}

/// Deliberate misbehaviour, for the multi-process tests that prove a
/// coordinator catches it. Only debug builds read it (environment variable
/// `FAIRGRID_TEST_FAULT`: `corrupt_update` puts a NaN in the update,
/// correctly hashed and signed; `wrong_signer` signs it with a throwaway
/// key); a release build cannot be made to misbehave, and it is no part of
/// the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    None,
    CorruptUpdate,
    WrongSigner,
}

impl TestFault {
    pub fn from_env() -> TestFault {
        if !cfg!(debug_assertions) {
            return TestFault::None;
        }
        match std::env::var("FAIRGRID_TEST_FAULT").as_deref() {
            Ok("corrupt_update") => TestFault::CorruptUpdate,
            Ok("wrong_signer") => TestFault::WrongSigner,
            _ => TestFault::None,
        }
    }
}

/// Trains `local_steps` steps from the round's parameters over the
/// worker's shards, encodes the delta and signs the update. Blocking.
pub fn train_round(engine: &mut Option<Engine>, input: RoundInput) -> Result<Trained, String> {
    if engine.is_none() {
        *engine = Some(Engine::new(&input.spec, input.threads)?);
    }
    let engine = engine.as_mut().expect("built above");
    let set =
        ShardSet::new(input.loaded.iter().map(Arc::as_ref).collect()).map_err(|e| e.to_string())?;
    let hyper = &input.spec.hyper;
    let seed = model::round_seed(hyper.seed, &input.job_id, input.round, &input.worker);
    let local = engine
        .trainer
        .train_local(
            &input.params,
            &set,
            hyper.local_steps,
            hyper.lr_at(input.round),
            seed,
        )
        .map_err(|e| e.to_string())?;
    let mut bytes = engine
        .compressor
        .encode(&local.delta)
        .map_err(|e| e.to_string())?;
    if input.fault == TestFault::CorruptUpdate && bytes.len() >= 24 {
        // The first value (fp32) or block scale (int8) becomes NaN; the
        // update is otherwise well formed, hashed and signed.
        bytes[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let update = RoundUpdate {
        job_id: input.job_id,
        round: input.round,
        worker: input.worker,
        base_params: input.base_params,
        shards: input.shards,
        samples: local.samples,
        loss: local.mean_loss,
        compression: hyper.compression,
        update_hash: Hash32::of(&bytes),
        update_len: bytes.len() as u64,
    };
    let signer = match input.fault {
        TestFault::WrongSigner => Keypair::generate(),
        _ => input.key,
    };
    Ok(Trained {
        update: Signed::sign(&signer, &update),
        bytes,
    })
}
