//! Step 5, worker side: one round of local SGD on a blocking thread, the
//! delta compressed (the compressor and its error-feedback residual live
//! as long as the job), and the signed update.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

pub use super::faults::TestFault;

use fairgrid_kernels::{Compressor, LocalUpdate, Samples, Shard, ShardSet};
use fairgrid_protocol::messages::{JobSpec, RoundUpdate};
use fairgrid_protocol::{Hash32, Keypair, NodeId, Signed};

use crate::jobs::device::{Device, JobTrainer, arithmetic};
use crate::jobs::model;

/// A trainer on one device, built for one batch size.
struct Placed {
    /// The device asked for.
    device: Device,
    /// The device the trainer runs on (the CPU if the GPU fell back).
    runs_on: Device,
    batch: usize,
    trainer: JobTrainer,
}

/// A worker's training state for one job.
pub struct Engine {
    /// One trainer per device the job's shards are split over, each built
    /// for a batch of `batch_size` samples per shard it holds; built again
    /// when the split changes.
    placed: Vec<Placed>,
    pub compressor: Compressor,
    /// The last round's parameters, kept only for the stale-base cheat.
    previous_params: Option<Vec<f32>>,
}

impl Engine {
    pub fn new(spec: &JobSpec) -> Result<Engine, String> {
        let compressor = Compressor::new(model::kernels_compression(spec.hyper.compression))
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            placed: Vec::new(),
            compressor,
            previous_params: None,
        })
    }

    /// Trainers for `batches[i]` samples on `devices[i]`, reusing those
    /// already built for the same device and batch.
    fn place(
        &mut self,
        spec: &JobSpec,
        devices: &[Device],
        batches: &[usize],
        threads: usize,
        cancel: &Arc<AtomicBool>,
    ) -> Result<(), String> {
        let same = self.placed.len() == devices.len()
            && self
                .placed
                .iter()
                .zip(devices.iter().zip(batches))
                .all(|(p, (d, b))| p.device == *d && p.batch == *b);
        if same {
            return Ok(());
        }
        // Free the old trainers (and their GPU memory) before building.
        self.placed.clear();
        // GPUs that fall back to the CPU share its threads.
        let fallback_threads = (threads / devices.len().max(1)).max(1);
        for (&device, &batch) in devices.iter().zip(batches) {
            let (mut trainer, runs_on) =
                JobTrainer::new_or_cpu(device, fallback_threads, &spec.model, &spec.hyper, batch)
                    .map_err(|e| e.to_string())?;
            trainer.set_cancel(Arc::clone(cancel));
            tracing::info!(target: "fairgrid::jobs", device = %runs_on, batch, "trainer built");
            self.placed.push(Placed {
                device,
                runs_on,
                batch,
                trainer,
            });
        }
        Ok(())
    }
}

/// The shards' positions split into at most `devices` contiguous groups
/// of sizes differing by at most one (earlier groups larger): the same
/// shards on the same number of devices always split the same way.
pub fn split_among(shards: usize, devices: usize) -> Vec<std::ops::Range<usize>> {
    let groups = devices.clamp(1, shards.max(1));
    let (base, extra) = (shards / groups, shards % groups);
    let mut start = 0;
    (0..groups)
        .map(|g| {
            let len = base + usize::from(g < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The local updates of the groups as one: deltas averaged by samples
/// (what the coordinator would compute from one worker per device),
/// samples summed, loss averaged by samples.
fn combine(parts: Vec<LocalUpdate>) -> Result<LocalUpdate, String> {
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let weighted: Vec<(&[f32], u64)> = parts
        .iter()
        .map(|p| (p.delta.as_slice(), p.samples))
        .collect();
    let delta = fairgrid_kernels::weighted_mean(&weighted).map_err(|e| e.to_string())?;
    let samples: u64 = parts.iter().map(|p| p.samples).sum();
    let loss = parts
        .iter()
        .map(|p| f64::from(p.mean_loss) * p.samples as f64)
        .sum::<f64>()
        / samples.max(1) as f64;
    Ok(LocalUpdate {
        delta,
        samples,
        mean_loss: loss as f32,
        steps: parts.iter().map(|p| p.steps).max().unwrap_or(0),
    })
}

/// What a round produced, ready to send.
pub struct Trained {
    pub update: Signed<RoundUpdate>,
    pub bytes: Vec<u8>,
    /// Samples trained and how long it took (what the speed cache learns).
    pub samples: u64,
    pub compute_ms: u64,
    /// Where the first group trained (after any fallback to the CPU), and
    /// how many devices shared the samples.
    pub ran_on: Device,
    pub devices_used: u64,
    /// What an audit of this round asks for.
    pub reveal: Arc<Reveal>,
}

/// The raw delta of a round and the residual it was encoded with: what the
/// worker shows an auditor (the update's bytes are their encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct Reveal {
    pub round: u32,
    pub delta: Vec<f32>,
    /// Empty when the residual was zero.
    pub residual: Vec<f32>,
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
    /// CPU threads (training on the CPU, or falling back to it).
    pub threads: usize,
    /// Where to train: one device, or several GPUs the shards are split
    /// over (each trains its group; the deltas are averaged by samples).
    pub devices: Vec<Device>,
    /// The coordinator did not acknowledge the last update: its residual
    /// is forgotten, as the coordinator only takes a residual it has seen
    /// signed (or none).
    pub reset_residual: bool,
    pub fault: TestFault,
    /// Stops the training before its next step once set.
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// What a round's training is a function of: an auditor that knows these
/// computes the same delta (up to the rounding of its hardware).
pub struct RoundWork<'a> {
    pub spec: &'a JobSpec,
    pub job_id: Hash32,
    pub round: u32,
    pub params: &'a [f32],
    pub loaded: &'a [Arc<Shard>],
    pub steps: u32,
    /// The shard each sample order is drawn for (the shard itself, but
    /// for a test cheat).
    pub seed_shards: Vec<u32>,
}

impl<'a> RoundWork<'a> {
    /// The work a round start asks of a worker holding `loaded`, the
    /// bytes of `shards` in the same order.
    pub fn honest(
        spec: &'a JobSpec,
        job_id: Hash32,
        round: u32,
        params: &'a [f32],
        shards: &[u32],
        loaded: &'a [Arc<Shard>],
    ) -> RoundWork<'a> {
        RoundWork {
            spec,
            job_id,
            round,
            params,
            loaded,
            steps: spec.hyper.local_steps,
            seed_shards: shards.to_vec(),
        }
    }
}

/// Trains `work` with the shards split into groups over `devices`, and
/// combines the groups' deltas. Returns the update, the number of groups,
/// the device the first ran on and the milliseconds the training took
/// (timed after the trainers are built: a CUDA context's start is not the
/// device's speed).
pub fn train_work(
    engine: &mut Engine,
    work: &RoundWork<'_>,
    devices: &[Device],
    threads: usize,
    cancel: &Arc<AtomicBool>,
) -> Result<(LocalUpdate, usize, Device, u64), String> {
    if work.loaded.len() != work.seed_shards.len() {
        return Err(format!(
            "{} shards loaded for an order of {}",
            work.loaded.len(),
            work.seed_shards.len()
        ));
    }
    if work.loaded.is_empty() || devices.is_empty() {
        return Err("a round needs at least one shard and one device".into());
    }
    let hyper = &work.spec.hyper;
    // Each shard is a unit of work: a batch of `batch_size` from each.
    let per_shard = hyper.batch_size as usize;
    let seeds: Vec<u64> = work
        .seed_shards
        .iter()
        .map(|&shard| model::shard_seed(hyper.seed, &work.job_id, work.round, shard))
        .collect();
    let groups = split_among(work.loaded.len(), devices.len());
    let devices = &devices[..groups.len()];
    let batches: Vec<usize> = groups.iter().map(|g| per_shard * g.len()).collect();
    engine.place(work.spec, devices, &batches, threads, cancel)?;
    let started = std::time::Instant::now();
    let lr = hyper.lr_at(work.round);
    let train_group = |placed: &mut Placed, group: &std::ops::Range<usize>| {
        if work.steps == 0 {
            return Ok(LocalUpdate {
                delta: vec![0.0; work.params.len()],
                samples: 0,
                mean_loss: 0.0,
                steps: 0,
            });
        }
        let set = ShardSet::new(work.loaded[group.clone()].iter().map(Arc::as_ref).collect())
            .map_err(|e| e.to_string())?;
        placed
            .trainer
            .train_local_per_shard(
                work.params,
                &set,
                per_shard,
                work.steps,
                lr,
                &seeds[group.clone()],
            )
            .map_err(|e| e.to_string())
    };
    let parts: Vec<LocalUpdate> = if groups.len() == 1 {
        vec![train_group(&mut engine.placed[0], &groups[0])?]
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = engine
                .placed
                .iter_mut()
                .zip(&groups)
                .map(|(placed, group)| scope.spawn(|| train_group(placed, group)))
                .collect();
            running
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a device's training thread panicked".into()))
                })
                .collect::<Result<Vec<_>, String>>()
        })?
    };
    let compute_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((
        combine(parts)?,
        groups.len(),
        engine.placed[0].runs_on,
        compute_ms,
    ))
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
    let fault = input.fault;
    let base = fault.base(&input.params, engine.previous_params.as_deref());
    let data = fault.data(&input.loaded);
    let mut work = RoundWork::honest(
        &input.spec,
        input.job_id,
        input.round,
        base.as_deref().unwrap_or(&input.params),
        &input.shards,
        data.as_deref().unwrap_or(&input.loaded),
    );
    work.steps = fault.steps(work.steps);
    work.seed_shards = input.shards.iter().map(|&s| fault.seed_shard(s)).collect();
    let (mut local, groups, ran_on, compute_ms) =
        train_work(engine, &work, &input.devices, input.threads, &input.cancel)?;
    if fault == TestFault::StaleBase {
        engine.previous_params = Some(input.params.clone());
    }
    fault.delta(&mut local.delta);
    if matches!(fault, TestFault::OneStepShort | TestFault::ZeroUpdate) {
        // The cheat claims the samples of the full round.
        let per_step: u64 = input
            .loaded
            .iter()
            .map(|s| (input.spec.hyper.batch_size as usize).min(s.len()) as u64)
            .sum();
        local.samples = u64::from(input.spec.hyper.local_steps) * per_step;
    }
    if input.reset_residual {
        engine.compressor.reset();
    }
    let residual = engine.compressor.residual().to_vec();
    let residual_in = residual_hash(&residual);
    let mut bytes = engine
        .compressor
        .encode(&local.delta)
        .map_err(|e| e.to_string())?;
    let residual_out = residual_hash(engine.compressor.residual());
    if fault == TestFault::CorruptUpdate && bytes.len() >= 24 {
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
        compression: input.spec.hyper.compression,
        update_hash: Hash32::of(&bytes),
        update_len: bytes.len() as u64,
        device_groups: groups as u32,
        residual_in,
        residual_out,
        arithmetic: arithmetic(engine.placed.iter().take(groups).map(|p| p.runs_on)),
    };
    let signer = match fault {
        TestFault::WrongSigner => Keypair::generate(),
        _ => input.key,
    };
    let reveal = Reveal {
        round: input.round,
        delta: local.delta,
        residual: if residual_in == Hash32::ZERO {
            Vec::new()
        } else {
            residual
        },
    };
    Ok(Trained {
        update: Signed::sign(&signer, &update),
        bytes,
        samples: local.samples,
        compute_ms,
        ran_on,
        devices_used: groups as u64,
        reveal: Arc::new(reveal),
    })
}

/// The hash a residual is signed as: [`Hash32::ZERO`] when every value is
/// zero (or there is none), else BLAKE3 of its f32 little-endian bytes.
pub fn residual_hash(residual: &[f32]) -> Hash32 {
    if residual.iter().all(|v| *v == 0.0) {
        return Hash32::ZERO;
    }
    let mut hasher = blake3::Hasher::new();
    for v in residual {
        hasher.update(&v.to_le_bytes());
    }
    Hash32(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::coordinator::round::{AcceptedUpdate, aggregate};
    use crate::jobs::testing::spec_with;
    use fairgrid_kernels::data::builtin;
    use fairgrid_protocol::messages::Compression;

    fn round(spec: &JobSpec, shards: &[(u32, Arc<Shard>)], key: &Keypair) -> Trained {
        round_on(spec, shards, key, vec![Device::Cpu { threads: 1 }])
    }

    fn round_on(
        spec: &JobSpec,
        shards: &[(u32, Arc<Shard>)],
        key: &Keypair,
        devices: Vec<Device>,
    ) -> Trained {
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
            devices,
            reset_residual: false,
            fault: TestFault::None,
            cancel: Arc::default(),
        };
        train_round(&mut None, input).unwrap()
    }

    /// A job of one plain SGD step per round (fp32 updates) and four
    /// shards of 100 built-in samples.
    fn one_step_job_with_four_shards() -> (JobSpec, Vec<(u32, Arc<Shard>)>) {
        let mut spec = spec_with(&Keypair::from_seed(b"c"), 4, Compression::Fp32);
        spec.hyper.local_steps = 1;
        let data = builtin::fashion_mnist().unwrap();
        let shards = data
            .train
            .take(400)
            .shards(100, 3)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32, Arc::new(s)))
            .collect();
        (spec, shards)
    }

    /// Issue 12's proof that a shard is a unit of work, through the
    /// worker's round and the coordinator's aggregation: one worker with
    /// four shards and four workers with one each give the same new
    /// parameters (one step of plain SGD, fp32 updates), and each
    /// update's weight is its shards' samples.
    #[test]
    fn one_worker_with_four_shards_updates_like_four_with_one() {
        let (spec, shards) = one_step_job_with_four_shards();
        let accepted = |trained: &Trained| {
            let (_, update) = trained.update.verify_and_decode().unwrap();
            let params = model::initial_params(&spec.model, &spec.hyper).unwrap();
            let delta = fairgrid_kernels::decode_update(&trained.bytes, params.len()).unwrap();
            AcceptedUpdate::new(&trained.update, &update, delta, trained.bytes.len() as u64)
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

    #[test]
    fn shards_split_evenly_and_deterministically_among_devices() {
        assert_eq!(split_among(4, 1), vec![0..4]);
        assert_eq!(split_among(5, 2), vec![0..3, 3..5]);
        assert_eq!(
            split_among(2, 4),
            vec![0..1, 1..2],
            "no device without a shard"
        );
        assert_eq!(split_among(7, 3), vec![0..3, 3..5, 5..7]);
    }

    /// Several devices (here two CPU backends standing in for two GPUs)
    /// train a share of the shards each; with one step of plain SGD the
    /// combined update is the one-device update up to float rounding, and
    /// its samples are all the shards'.
    #[test]
    fn a_round_split_over_two_devices_updates_like_one() {
        let (spec, shards) = one_step_job_with_four_shards();
        let key = Keypair::from_seed(b"w");
        let delta = |t: &Trained| {
            let n = model::initial_params(&spec.model, &spec.hyper)
                .unwrap()
                .len();
            fairgrid_kernels::decode_update(&t.bytes, n).unwrap()
        };
        let one = round(&spec, &shards, &key);
        let cpu = Device::Cpu { threads: 1 };
        let two = round_on(&spec, &shards, &key, vec![cpu, Device::Cpu { threads: 2 }]);
        let (a, b) = (delta(&one), delta(&two));
        let size = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let differ = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            size > 1e-4 && differ <= 1e-5 * size,
            "differ {differ}, size {size}"
        );
        let (_, u1) = one.update.verify_and_decode().unwrap();
        let (_, u2) = two.update.verify_and_decode().unwrap();
        assert_eq!(u1.samples, u2.samples);
        assert_eq!(u2.shards, vec![0, 1, 2, 3]);
    }
}
