//! Training loops: one step, one epoch, evaluation, and the local-SGD
//! round a worker runs for the network ([`Trainer::train_local`]).
//!
//! A [`Trainer`] owns the backend, the model, the optimizer state and the
//! batch buffers; all are sized once, so steps do not allocate. Every loss
//! and every gradient is checked: a NaN or infinity stops training with an
//! error instead of spreading into the parameters and over the network.
//!
//! The checks and the loss/accuracy sums stay on the device
//! ([`Backend::Stats`]) and are read every [`Trainer::set_report_interval`]
//! steps, so a GPU is not made to wait for the host after every step. The
//! optimizer's updates are guarded on the device: once a step has failed,
//! no later update runs, and the error names the failed step, whose
//! parameters are exactly those before it.

use crate::backend::{Backend, StepStats};
use crate::data::{PixelKind, Pixels, Samples, ShardSet, gather_batch};
use crate::error::{KernelError, Result};
use crate::layers::Pass;
use crate::model::{Model, ModelSpec};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::rng::SplitMix64;
use crate::tensor::{IndexTensor, Tensor};

/// Pixels are bytes; the network sees them scaled to [0, 1].
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// Most memory a trainer may plan to use (activations, gradients,
/// parameters, optimizer state). A job whose model and batch need more is
/// refused up front instead of failing half-way through an allocation.
pub const MAX_TRAINING_BYTES: u128 = 6 << 30;

/// Loss and accuracy over some samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    pub samples: u64,
}

/// What a worker sends back after a round of local training.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// Final parameters minus the starting ones (flat-buffer order).
    pub delta: Vec<f32>,
    /// Samples processed (steps x batch, counting repeats).
    pub samples: u64,
    /// Mean training loss over the local steps.
    pub mean_loss: f32,
    pub steps: u32,
}

pub struct Trainer<B: Backend> {
    backend: B,
    model: Model<B>,
    optimizer: Optimizer<B>,
    batch: usize,
    x: Tensor<B>,
    labels: IndexTensor<B>,
    dlogits: Tensor<B>,
    host_images: Pixels,
    host_labels: Vec<u32>,
    steps: u64,
    stats: B::Stats,
    report_interval: u32,
    step_limit: Option<u64>,
    /// The model's seed: dropout masks of `step` and `train_epoch` derive
    /// from it.
    seed: u64,
    /// Checked before every step of local training.
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<B: Backend> Trainer<B> {
    /// A model built from `spec` with weights drawn from `seed`.
    pub fn new(
        backend: B,
        spec: &ModelSpec,
        optimizer: OptimizerConfig,
        batch: usize,
        seed: u64,
    ) -> Result<Self> {
        if batch == 0 || batch > 65_536 {
            return Err(KernelError::config(
                "batch size",
                format!("{batch} is not in 1..=65536"),
            ));
        }
        spec.validate()?;
        // Parameters, gradients and two optimizer states, before allocating.
        let needed = 16 * spec.param_count();
        if needed > MAX_TRAINING_BYTES {
            return Err(KernelError::config(
                "model size",
                format!(
                    "{} needs {} MiB of parameters and state",
                    spec.arch,
                    needed >> 20
                ),
            ));
        }
        let model = Model::new(&backend, spec, seed)?;
        let needed = model.training_bytes(batch);
        if needed > MAX_TRAINING_BYTES {
            return Err(KernelError::config(
                "batch size",
                format!(
                    "{} at batch {batch} needs {} MiB, more than the {} MiB limit",
                    spec.arch,
                    needed >> 20,
                    MAX_TRAINING_BYTES >> 20
                ),
            ));
        }
        let optimizer = Optimizer::new(&backend, optimizer, &model)?;
        let x = Tensor::zeros(&backend, model.input_shape(batch))?;
        let labels = IndexTensor::zeros(&backend, batch)?;
        let dlogits = Tensor::zeros(&backend, crate::tensor::Shape::new([batch, spec.classes]))?;
        let stats = backend.alloc_stats()?;
        Ok(Trainer {
            backend,
            model,
            optimizer,
            batch,
            x,
            labels,
            dlogits,
            host_images: Pixels::empty(PixelKind::U8),
            host_labels: Vec::with_capacity(batch),
            steps: 0,
            stats,
            report_interval: 1,
            step_limit: None,
            seed,
            cancel: None,
        })
    }

    /// How many steps [`Trainer::train_epoch`] runs between reads of the
    /// statistics (and calls of its `progress`); 1, the default, reads
    /// after every step. On a GPU each read waits for the device, so a
    /// larger interval keeps it busy.
    pub fn set_report_interval(&mut self, steps: u32) {
        self.report_interval = steps.max(1);
    }

    /// Stops [`Trainer::train_epoch`] once [`Trainer::steps`] reaches
    /// `limit` (for benchmarks and `--max-steps`).
    pub fn set_step_limit(&mut self, limit: Option<u64>) {
        self.step_limit = limit;
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn model(&self) -> &Model<B> {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut Model<B> {
        &mut self.model
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn params_flat(&self) -> Result<Vec<f32>> {
        self.model.params_flat(&self.backend)
    }

    pub fn set_params_flat(&mut self, flat: &[f32]) -> Result<()> {
        self.model.set_params_flat(&self.backend, flat)
    }

    fn check_data(&self, data: &dyn Samples) -> Result<()> {
        let spec = self.model.spec();
        if data.shape() != spec.input || data.classes() > spec.classes {
            return Err(KernelError::shape(
                "training data",
                format!("{:?} with at most {} classes", spec.input, spec.classes),
                format!("{:?} with {} classes", data.shape(), data.classes()),
            ));
        }
        Ok(())
    }

    /// Uploads the samples `indices` into the batch buffers.
    fn load_batch(&mut self, data: &dyn Samples, indices: &[u32]) -> Result<()> {
        if indices.is_empty() || indices.len() > self.batch {
            return Err(KernelError::shape(
                "batch",
                format!("1..={}", self.batch),
                indices.len(),
            ));
        }
        if let Some(&i) = indices.iter().find(|&&i| i as usize >= data.len()) {
            return Err(KernelError::shape(
                "batch index",
                format!("< {}", data.len()),
                i,
            ));
        }
        gather_batch(data, indices, &mut self.host_images, &mut self.host_labels);
        let n = indices.len();
        self.x.resize(&self.backend, self.model.input_shape(n))?;
        match &self.host_images {
            Pixels::U8(bytes) => {
                self.backend
                    .upload_u8_scaled(bytes, PIXEL_SCALE, self.x.buf_mut())?;
            }
            Pixels::F32(values) => self.backend.upload(values, self.x.buf_mut())?,
        }
        self.labels.write_host(&self.backend, &self.host_labels)
    }

    /// One optimizer step on the samples `indices` of `data` with learning
    /// rate `lr`. Returns the batch's mean loss and correct count (waiting
    /// for the device to compute them).
    pub fn step(&mut self, data: &dyn Samples, indices: &[u32], lr: f32) -> Result<(f64, u64)> {
        let pass_seed = SplitMix64::derive(self.seed, self.steps + 1).next_u64();
        self.queue_step(data, indices, lr, pass_seed)?;
        let stats = self.collect()?;
        Ok((stats.loss_sum / indices.len() as f64, stats.correct))
    }

    /// Queues one step without waiting for the device: forward, loss into
    /// the statistics, backward, the gradient checks, the guarded update.
    /// Dropout masks derive from `pass_seed`.
    fn queue_step(
        &mut self,
        data: &dyn Samples,
        indices: &[u32],
        lr: f32,
        pass_seed: u64,
    ) -> Result<()> {
        self.check_data(data)?;
        self.model.set_pass(Pass::Train { seed: pass_seed });
        self.load_batch(data, indices)?;
        let n = indices.len();
        let step = self.steps + 1;
        let classes = self.model.spec().classes;
        self.model.forward(&self.backend, &self.x)?;
        self.dlogits
            .resize(&self.backend, crate::tensor::Shape::new([n, classes]))?;
        self.backend.softmax_xent_accumulate(
            self.model.logits().buf(),
            self.labels.buf(),
            n,
            classes,
            Some(self.dlogits.buf_mut()),
            &mut self.stats,
            step,
        )?;
        self.model.backward(&self.backend, &self.x, &self.dlogits)?;
        // A finite loss can still give an overflowing gradient; catch it
        // before it reaches the parameters.
        let grads: Vec<_> = self
            .model
            .trainable_params()
            .map(|p| (p.grad.buf(), p.numel()))
            .collect();
        self.backend
            .check_finite_all(&grads, &mut self.stats, step)?;
        self.optimizer
            .step_guarded(&self.backend, &mut self.model, lr, &self.stats)?;
        self.steps = step;
        Ok(())
    }

    /// Reads the statistics of the steps queued since the last read. If one
    /// failed, the step counters go back to just before it (the guarded
    /// updates skipped it and everything after) and its error is returned.
    fn collect(&mut self) -> Result<StepStats> {
        let stats = self.backend.take_stats(&mut self.stats)?;
        if let (Some(error), Some(failed)) = (stats.failure(), stats.failed_step()) {
            let undone = self.steps.saturating_sub(failed - 1);
            self.steps -= undone;
            self.optimizer
                .rewind(self.optimizer.steps().saturating_sub(undone));
            return Err(error);
        }
        Ok(stats)
    }

    /// One pass over `data` in an order shuffled by `seed`. `lr(step)`
    /// gives the learning rate of each global step; `progress(done, loss)`
    /// is called every report interval (see
    /// [`Trainer::set_report_interval`]) with the samples done so far and
    /// the mean loss since the previous call, and ends the epoch early by
    /// returning `false`. The epoch also ends at the step limit.
    pub fn train_epoch(
        &mut self,
        data: &dyn Samples,
        seed: u64,
        lr: &dyn Fn(u64) -> f32,
        progress: &mut dyn FnMut(usize, f64) -> bool,
    ) -> Result<Metrics> {
        let order = SplitMix64::new(seed).permutation(data.len());
        let mut metrics = Metrics::default();
        let mut loss_sum = 0.0;
        let mut correct = 0;
        let mut pending_steps = 0;
        let mut pending_samples = 0u64;
        let mut chunks = order.chunks(self.batch).peekable();
        while let Some(chunk) = chunks.next() {
            if self.step_limit.is_some_and(|limit| self.steps >= limit) {
                break;
            }
            let pass_seed = SplitMix64::derive(seed, self.steps + 1).next_u64();
            self.queue_step(data, chunk, lr(self.steps), pass_seed)?;
            pending_steps += 1;
            pending_samples += chunk.len() as u64;
            let at_limit = self.step_limit.is_some_and(|limit| self.steps >= limit);
            if pending_steps < self.report_interval && chunks.peek().is_some() && !at_limit {
                continue;
            }
            let stats = self.collect()?;
            loss_sum += stats.loss_sum;
            correct += stats.correct;
            metrics.samples += pending_samples;
            let mean = stats.loss_sum / pending_samples as f64;
            pending_steps = 0;
            pending_samples = 0;
            if !progress(metrics.samples as usize, mean) {
                break;
            }
        }
        let n = metrics.samples.max(1) as f64;
        metrics.loss = loss_sum / n;
        metrics.accuracy = correct as f64 / n;
        Ok(metrics)
    }

    /// Loss and accuracy of the current parameters on `data` (one wait for
    /// the device, at the end).
    pub fn evaluate(&mut self, data: &dyn Samples) -> Result<Metrics> {
        self.check_data(data)?;
        self.model.set_pass(Pass::Eval);
        let classes = self.model.spec().classes;
        let all: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in all.chunks(self.batch) {
            self.load_batch(data, chunk)?;
            self.model.forward(&self.backend, &self.x)?;
            self.backend.softmax_xent_accumulate(
                self.model.logits().buf(),
                self.labels.buf(),
                chunk.len(),
                classes,
                None,
                &mut self.stats,
                0,
            )?;
        }
        // Evaluation changes nothing, so a non-finite loss is reported as
        // such rather than as a failed training step.
        let stats = self.backend.take_stats(&mut self.stats)?;
        let n = data.len().max(1) as f64;
        if !stats.loss_sum.is_finite() {
            return Err(KernelError::NonFinite {
                what: "evaluation loss".into(),
                value: stats.loss_sum as f32,
            });
        }
        Ok(Metrics {
            loss: stats.loss_sum / n,
            accuracy: stats.correct as f64 / n,
            samples: data.len() as u64,
        })
    }

    /// One step on `indices` timed layer by layer (see
    /// [`Model::profile`]), plus the gradient checks and the optimizer as
    /// their own rows. The step is applied like any other.
    pub fn profile_step(
        &mut self,
        data: &dyn Samples,
        indices: &[u32],
        lr: f32,
    ) -> Result<Vec<crate::model::LayerTiming>> {
        use std::time::Instant;
        self.check_data(data)?;
        self.backend.synchronize()?;
        let started = Instant::now();
        self.load_batch(data, indices)?;
        self.backend.synchronize()?;
        let mut rows = vec![crate::model::LayerTiming {
            name: "batch upload".into(),
            forward: started.elapsed(),
            backward: std::time::Duration::ZERO,
        }];
        let n = indices.len();
        let step = self.steps + 1;
        self.model.set_pass(Pass::Train {
            seed: SplitMix64::derive(self.seed, step).next_u64(),
        });
        let classes = self.model.spec().classes;
        self.dlogits
            .resize(&self.backend, crate::tensor::Shape::new([n, classes]))?;
        let (labels, stats) = (&self.labels, &mut self.stats);
        let mut loss = |be: &B, logits: &Tensor<B>, dlogits: &mut Tensor<B>| {
            be.softmax_xent_accumulate(
                logits.buf(),
                labels.buf(),
                n,
                classes,
                Some(dlogits.buf_mut()),
                stats,
                step,
            )
        };
        rows.extend(
            self.model
                .profile(&self.backend, &self.x, &mut self.dlogits, &mut loss)?,
        );
        let started = Instant::now();
        let grads: Vec<_> = self
            .model
            .trainable_params()
            .map(|p| (p.grad.buf(), p.numel()))
            .collect();
        self.backend
            .check_finite_all(&grads, &mut self.stats, step)?;
        self.backend.synchronize()?;
        let checks = started.elapsed();
        let started = Instant::now();
        self.optimizer
            .step_guarded(&self.backend, &mut self.model, lr, &self.stats)?;
        self.backend.synchronize()?;
        rows.push(crate::model::LayerTiming {
            name: "gradient checks / optimizer".into(),
            forward: checks,
            backward: started.elapsed(),
        });
        self.steps = step;
        self.collect()?;
        Ok(rows)
    }

    /// A worker's round of local SGD: loads `start` (the coordinator's
    /// parameters), resets the optimizer state, runs `steps` steps of the
    /// trainer's batch size over `data` in an order drawn from `seed`
    /// (reshuffling after each full pass), and returns the parameter delta.
    /// The result is a pure function of its inputs for a given backend and
    /// thread count, so a spot-check can recompute it.
    pub fn train_local(
        &mut self,
        start: &[f32],
        data: &dyn Samples,
        steps: u32,
        lr: f32,
        seed: u64,
    ) -> Result<LocalUpdate> {
        let per_step = self.batch.min(data.len());
        let mut order = SampleOrder::new(seed, 0..data.len());
        self.run_local(start, data, steps, lr, seed, |batch| {
            for _ in 0..per_step {
                batch.push(order.next());
            }
        })
    }

    /// A round of local SGD in which each shard is a unit of work: every
    /// step takes `per_shard` samples from each shard of `data` (fewer from
    /// a smaller shard), each shard in its own order drawn from
    /// `seeds[k]`. A worker with k shards thus computes on k times the data
    /// of one with a single shard, and its batch's mean gradient is the
    /// mean over its shards' samples: with one step and plain SGD, the
    /// sample-weighted average of the deltas of any split of the shards
    /// among workers is the delta of one worker holding them all (up to
    /// float rounding). The trainer's batch size must hold a step.
    pub fn train_local_per_shard(
        &mut self,
        start: &[f32],
        data: &ShardSet<'_>,
        per_shard: usize,
        steps: u32,
        lr: f32,
        seeds: &[u64],
    ) -> Result<LocalUpdate> {
        if seeds.len() != data.shard_count() {
            return Err(KernelError::config(
                "shard seeds",
                format!("{} seeds for {} shards", seeds.len(), data.shard_count()),
            ));
        }
        let takes: Vec<usize> = (0..data.shard_count())
            .map(|k| per_shard.min(data.shard_range(k).len()))
            .collect();
        let per_step: usize = takes.iter().sum();
        if per_shard == 0 || per_step > self.batch {
            return Err(KernelError::config(
                "batch size",
                format!(
                    "a step takes {per_shard} samples from each of {} shards ({per_step}); the trainer's batch is {}",
                    data.shard_count(),
                    self.batch
                ),
            ));
        }
        let mut orders: Vec<SampleOrder> = seeds
            .iter()
            .enumerate()
            .map(|(k, &seed)| SampleOrder::new(seed, data.shard_range(k)))
            .collect();
        // Dropout masks follow the shards' seeds too.
        let pass_seed = seeds
            .iter()
            .fold(0x5EED_u64, |acc, &s| SplitMix64::derive(acc, s).next_u64());
        self.run_local(start, data, steps, lr, pass_seed, |batch| {
            for (order, &take) in orders.iter_mut().zip(&takes) {
                for _ in 0..take {
                    batch.push(order.next());
                }
            }
        })
    }

    /// Local training stops with [`KernelError::Cancelled`] before the next
    /// step once `flag` is set (a worker whose owner wants the machine back
    /// stops within one step).
    pub fn set_cancel(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.cancel = Some(flag);
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Runs `steps` steps from `start`, each on the batch `fill` draws;
    /// returns the delta.
    fn run_local(
        &mut self,
        start: &[f32],
        data: &dyn Samples,
        steps: u32,
        lr: f32,
        pass_seed: u64,
        mut fill: impl FnMut(&mut Vec<u32>),
    ) -> Result<LocalUpdate> {
        if steps == 0 {
            return Err(KernelError::config("local steps", "zero"));
        }
        if data.is_empty() {
            return Err(KernelError::config("local training data", "no samples"));
        }
        self.check_data(data)?;
        self.model.set_params_flat(&self.backend, start)?;
        self.optimizer.reset(&self.backend)?;
        let mut batch = Vec::with_capacity(self.batch);
        let mut samples = 0u64;
        for step in 0..steps {
            if self.cancelled() {
                return Err(KernelError::Cancelled);
            }
            batch.clear();
            fill(&mut batch);
            let step_seed = SplitMix64::derive(pass_seed, u64::from(step)).next_u64();
            self.queue_step(data, &batch, lr, step_seed)?;
            samples += batch.len() as u64;
        }
        let stats = self.collect()?;
        let mut delta = self.params_flat()?;
        for (d, s) in delta.iter_mut().zip(start) {
            *d -= s;
        }
        if let Some(i) = delta.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                what: format!("update element {i}"),
                value: delta[i],
            });
        }
        Ok(LocalUpdate {
            delta,
            samples,
            // Every step has the same batch size, so this is the mean of
            // the steps' mean losses.
            mean_loss: (stats.loss_sum / samples as f64) as f32,
            steps,
        })
    }
}

/// The order a range of samples is visited in: a permutation drawn from
/// `seed`, then a new one from the seed and the pass number after each
/// full pass.
struct SampleOrder {
    seed: u64,
    range: std::ops::Range<usize>,
    pass: u64,
    order: Vec<u32>,
    cursor: usize,
}

impl SampleOrder {
    fn new(seed: u64, range: std::ops::Range<usize>) -> Self {
        let order = SplitMix64::derive(seed, 0).permutation(range.len());
        SampleOrder {
            seed,
            range,
            pass: 0,
            order,
            cursor: 0,
        }
    }

    fn next(&mut self) -> u32 {
        if self.cursor == self.order.len() {
            self.pass += 1;
            self.order = SplitMix64::derive(self.seed, self.pass).permutation(self.range.len());
            self.cursor = 0;
        }
        // Sample counts are at most u32 (shards hold at most 2^20).
        let i = self.range.start as u32 + self.order[self.cursor];
        self.cursor += 1;
        i
    }
}
