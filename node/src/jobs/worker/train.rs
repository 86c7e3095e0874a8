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
    /// Built for a batch of `batch_size` samples per shard held; built
    /// again when the worker's shard count changes.
    trainer: Option<(usize, Trainer<CpuBackend>)>,
    pub compressor: Compressor,
}

impl Engine {
    pub fn new(spec: &JobSpec) -> Result<Engine, String> {
        let compressor = Compressor::new(model::kernels_compression(spec.hyper.compression))
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            trainer: None,
            compressor,
        })
    }

    /// The trainer for a batch of `batch` samples.
    fn trainer(
        &mut self,
        spec: &JobSpec,
        batch: usize,
        threads: usize,
        cancel: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<&mut Trainer<CpuBackend>, String> {
        if self.trainer.as_ref().is_none_or(|(b, _)| *b != batch) {
            self.trainer = None;
            let mut trainer = model::trainer(&spec.model, &spec.hyper, batch, threads)
                .map_err(|e| e.to_string())?;
            trainer.set_cancel(Arc::clone(cancel));
            self.trainer = Some((batch, trainer));
        }
        Ok(&mut self.trainer.as_mut().expect("built above").1)
    }
}

/// What a round produced, ready to send.
pub struct Trained {
    pub update: Signed<RoundUpdate>,
    pub bytes: Vec<u8>,
    /// Samples trained and how long it took (what the speed cache learns).
    pub samples: u64,
    pub compute_ms: u64,
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
    /// Stops the training before its next step once set.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
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
    // Withdrawn before this thread got the engine: build nothing (the
    // withdrawal has already freed the engine, or is waiting to).
    if input.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("training cancelled: the node withdrew".into());
    }
    if engine.is_none() {
        *engine = Some(Engine::new(&input.spec)?);
    }
    let engine = engine.as_mut().expect("built above");
    if input.loaded.len() != input.shards.len() {
        return Err(format!(
            "{} shards loaded for an order of {}",
            input.loaded.len(),
            input.shards.len()
        ));
    }
    let set =
        ShardSet::new(input.loaded.iter().map(Arc::as_ref).collect()).map_err(|e| e.to_string())?;
    let hyper = &input.spec.hyper;
    // Each shard is a unit of work: a batch of `batch_size` from each.
    let per_shard = hyper.batch_size as usize;
    let seeds: Vec<u64> = input
        .shards
        .iter()
        .map(|&shard| model::shard_seed(hyper.seed, &input.job_id, input.round, shard))
        .collect();
    let batch = per_shard * input.shards.len();
    let started = std::time::Instant::now();
    let local = engine
        .trainer(&input.spec, batch, input.threads, &input.cancel)?
        .train_local_per_shard(
            &input.params,
            &set,
            per_shard,
            hyper.local_steps,
            hyper.lr_at(input.round),
            &seeds,
        )
        .map_err(|e| e.to_string())?;
    let compute_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
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
        compute_ms,
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
        samples: local.samples,
        compute_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::coordinator::round::{AcceptedUpdate, aggregate};
    use crate::jobs::testing::spec_with;
    use fairgrid_kernels::data::builtin;
    use fairgrid_protocol::messages::Compression;

    fn round(spec: &JobSpec, shards: &[(u32, Arc<Shard>)], key: &Keypair) -> Trained {
        let params = model::initial_params(&spec.model, &spec.hyper).unwrap();
        let input = RoundInput {
            spec: spec.clone(),
            job_id: Hash32::of(b"job"),
            round: 0,
            worker: key.node_id(),
            key: key.clone(),
            base_params: model::params_hash(&params),
            params,
            shards: shards.iter().map(|(i, _)| *i).collect(),
            loaded: shards.iter().map(|(_, s)| Arc::clone(s)).collect(),
            threads: 1,
            fault: TestFault::None,
            cancel: Arc::default(),
        };
        train_round(&mut None, input).unwrap()
    }

    /// Issue 12's proof that a shard is a unit of work, through the
    /// worker's round and the coordinator's aggregation: one worker with
    /// four shards and four workers with one each give the same new
    /// parameters (one step of plain SGD, fp32 updates), and each
    /// update's weight is its shards' samples.
    #[test]
    fn one_worker_with_four_shards_updates_like_four_with_one() {
        let mut spec = spec_with(&Keypair::from_seed(b"c"), 4, Compression::Fp32);
        spec.hyper.local_steps = 1;
        let data = builtin::fashion_mnist().unwrap();
        let shards: Vec<(u32, Arc<Shard>)> = data
            .train
            .take(400)
            .shards(100, 3)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32, Arc::new(s)))
            .collect();
        let accepted = |trained: &Trained| {
            let (_, update) = trained.update.verify_and_decode().unwrap();
            let params = model::initial_params(&spec.model, &spec.hyper).unwrap();
            let delta = fairgrid_kernels::decode_update(&trained.bytes, params.len()).unwrap();
            AcceptedUpdate::new(&update, delta, trained.bytes.len() as u64)
        };
        let start = model::initial_params(&spec.model, &spec.hyper).unwrap();
        let one = accepted(&round(&spec, &shards, &Keypair::from_seed(b"w")));
        assert_eq!(one.samples, 4 * 16);
        let four: Vec<AcceptedUpdate> = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                let key = Keypair::from_seed(format!("w{i}").as_bytes());
                accepted(&round(&spec, std::slice::from_ref(shard), &key))
            })
            .collect();
        assert!(four.iter().all(|u| u.samples == 16));
        let alone = aggregate(&start, &[&one], 1.0).unwrap();
        let together = aggregate(&start, &four.iter().collect::<Vec<_>>(), 1.0).unwrap();
        let moved = alone
            .params
            .iter()
            .zip(&start)
            .fold(0f32, |m, (a, s)| m.max((a - s).abs()));
        let differ = alone
            .params
            .iter()
            .zip(&together.params)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-4, "the round moved the parameters ({moved})");
        assert!(
            differ <= 1e-5 * moved,
            "new parameters differ by {differ} (moved {moved})"
        );
        assert_eq!(alone.samples, together.samples);
    }
}
