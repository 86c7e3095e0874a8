//! The whole compression of a trained model, for `fairgrid model compress`
//! and for a job that asks for a compressed result: magnitude pruning,
//! optional fine-tuning that keeps the pruned weights at zero, int8
//! storage, and the test accuracy at each stage (the last one measured on
//! the file as written, read back).

use super::compress::{apply_mask, prune_by_magnitude, weight_sparsity};
use super::{load_safetensors, save_safetensors, save_safetensors_int8};
use crate::backend::Backend;
use crate::data::Samples;
use crate::error::{KernelError, Result};
use crate::train::Trainer;

/// What to do to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkOptions {
    /// Fraction of each weight tensor set to zero, in [0, 1).
    pub prune: f64,
    /// SGD steps on the training data after pruning (at the trainer's
    /// batch size and optimizer); pruned weights stay zero.
    pub finetune_steps: u32,
    pub lr: f32,
    /// Store weights as int8 with one scale per output channel.
    pub int8: bool,
    /// Seeds the fine-tuning's sample order.
    pub seed: u64,
}

impl ShrinkOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(KernelError::config("model compression", reason));
        if !(0.0..1.0).contains(&self.prune) {
            return bad(format!("prune {} is not in [0, 1)", self.prune));
        }
        if self.finetune_steps > 0 && self.prune == 0.0 {
            return bad("fine-tuning needs pruning".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {}", self.lr));
        }
        if self.prune == 0.0 && !self.int8 {
            return bad("nothing to do: prune and/or int8".into());
        }
        Ok(())
    }
}

/// Test accuracy and size at each stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ShrinkReport {
    pub size_before: u64,
    pub size_after: u64,
    pub accuracy_before: f64,
    /// After pruning, before fine-tuning.
    pub accuracy_pruned: Option<f64>,
    pub accuracy_finetuned: Option<f64>,
    /// Of the file as written, read back.
    pub accuracy_after: f64,
    /// Fraction of the weight tensors' entries that are zero.
    pub sparsity: f64,
}

/// Compresses the model `trainer` holds; returns the file and the report.
/// The trainer ends holding the parameters of the file.
pub fn shrink<B: Backend>(
    trainer: &mut Trainer<B>,
    train: &dyn Samples,
    test: &dyn Samples,
    options: &ShrinkOptions,
) -> Result<(Vec<u8>, ShrinkReport)> {
    options.validate()?;
    let size_before = save_safetensors(trainer.model(), trainer.backend())?.len() as u64;
    let accuracy_before = trainer.evaluate(test)?.accuracy;
    let (mut accuracy_pruned, mut accuracy_finetuned) = (None, None);
    if options.prune > 0.0 {
        let mut flat = trainer.params_flat()?;
        let layout = trainer.model().param_layout().to_vec();
        let keep = prune_by_magnitude(&layout, &mut flat, options.prune)?;
        trainer.set_params_flat(&flat)?;
        accuracy_pruned = Some(trainer.evaluate(test)?.accuracy);
        if options.finetune_steps > 0 {
            finetune(trainer, train, &keep, options)?;
            accuracy_finetuned = Some(trainer.evaluate(test)?.accuracy);
        }
    }
    let file = if options.int8 {
        save_safetensors_int8(trainer.model(), trainer.backend())?
    } else {
        save_safetensors(trainer.model(), trainer.backend())?
    };
    let written = {
        let backend = trainer.backend();
        let mut model = super::Model::new(backend, trainer.model().spec(), 0)?;
        load_safetensors(&mut model, backend, &file)?;
        model.params_flat(backend)?
    };
    trainer.set_params_flat(&written)?;
    let accuracy_after = trainer.evaluate(test)?.accuracy;
    let sparsity = weight_sparsity(trainer.model().param_layout(), &written);
    let report = ShrinkReport {
        size_before,
        size_after: file.len() as u64,
        accuracy_before,
        accuracy_pruned,
        accuracy_finetuned,
        accuracy_after,
        sparsity,
    };
    Ok((file, report))
}

/// `finetune_steps` steps over a seeded order of the training samples, the
/// pruned weights put back to zero after each.
fn finetune<B: Backend>(
    trainer: &mut Trainer<B>,
    train: &dyn Samples,
    keep: &[bool],
    options: &ShrinkOptions,
) -> Result<()> {
    if train.is_empty() {
        return Err(KernelError::config("fine-tuning", "no training samples"));
    }
    let n = train.len() as u64;
    let batch = trainer.batch_size().min(train.len());
    let mut state = options.seed ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..options.finetune_steps {
        let indices: Vec<u32> = (0..batch)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) % n) as u32
            })
            .collect();
        trainer.step(train, &indices, options.lr)?;
        let mut flat = trainer.params_flat()?;
        apply_mask(&mut flat, keep);
        trainer.set_params_flat(&flat)?;
    }
    Ok(())
}
