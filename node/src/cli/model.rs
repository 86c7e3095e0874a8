//! `fairgrid model compress`: magnitude pruning (with optional
//! fine-tuning that keeps the pruned weights at zero) and int8
//! quantisation with per-channel scales of a model file, reporting the
//! size and test accuracy before and after. The file written loads back
//! like any model file (the int8 layout: docs/sdk.md, "Compressed models").

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fairgrid_kernels::model::shrink::{ShrinkOptions, shrink};
use fairgrid_kernels::{CpuBackend, Model, ModelSpec, OptimizerConfig, Samples, Trainer, model};

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Prune and/or quantise a trained model file; prints size and test
    /// accuracy before and after.
    Compress(CompressArgs),
}

#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The model file (safetensors written by `fairgrid train --save` or a
    /// job's result).
    pub input: PathBuf,
    /// Where to write the compressed model.
    #[arg(long)]
    pub out: PathBuf,
    /// The data to evaluate (and fine-tune) on: `builtin`, `system` or a
    /// directory, as for `fairgrid train`.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Fraction of each weight tensor to set to zero, smallest magnitudes
    /// first (0: no pruning). Biases are kept.
    #[arg(long, default_value_t = 0.0)]
    pub prune: f64,
    /// SGD steps on the training data after pruning; pruned weights stay
    /// zero.
    #[arg(long, default_value_t = 0)]
    pub finetune_steps: u32,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Fine-tuning learning rate (SGD, momentum 0.9).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Store the weights as int8 with one scale per output channel.
    #[arg(long)]
    pub int8: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Compress(args) => compress(args).map(|_| ()),
    }
}

/// What compression did, as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    pub size_before: u64,
    pub size_after: u64,
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    pub sparsity: f64,
}

fn compress(args: CompressArgs) -> anyhow::Result<Compressed> {
    if !(0.0..1.0).contains(&args.prune) {
        bail!("--prune must be in [0, 1), got {}", args.prune);
    }
    if args.batch == 0 || !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--batch must be at least 1 and --lr a positive number");
    }
    if args.prune == 0.0 && !args.int8 {
        bail!("nothing to do: give --prune and/or --int8");
    }
    if args.finetune_steps > 0 && args.prune == 0.0 {
        bail!("--finetune-steps needs --prune");
    }
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let spec = model::read_model_spec(&bytes)
        .with_context(|| format!("{} is not a safetensors model file", args.input.display()))?
        .with_context(|| {
            format!(
                "{} has no fairgrid.model metadata: only files written by fairgrid can be compressed",
                args.input.display()
            )
        })?;
    let data = super::train::load_data(&args.data)?;
    if data.train.shape() != spec.input {
        bail!(
            "the model takes {:?} inputs, the data set has {:?}",
            spec.input,
            data.train.shape()
        );
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut trainer = Trainer::new(
        CpuBackend::new(threads)?,
        &spec,
        OptimizerConfig::sgd(args.lr, 0.9),
        args.batch,
        args.seed,
    )?;
    let params =
        params_of(&spec, &bytes).with_context(|| format!("loading {}", args.input.display()))?;
    trainer.set_params_flat(&params)?;
    let options = ShrinkOptions {
        prune: args.prune,
        finetune_steps: args.finetune_steps,
        lr: args.lr,
        int8: args.int8,
        seed: args.seed,
    };
    let (file, report) = shrink(&mut trainer, &data.train, &data.test, &options)?;
    println!(
        "model: {} ({} parameters), {} bytes, test accuracy {:.4}",
        spec.arch,
        params.len(),
        bytes.len(),
        report.accuracy_before
    );
    if let Some(pruned) = report.accuracy_pruned {
        println!(
            "pruned {:.0}% of each weight tensor: test accuracy {pruned:.4}",
            args.prune * 100.0
        );
    }
    if let Some(tuned) = report.accuracy_finetuned {
        println!(
            "fine-tuned {} steps (batch {}, lr {}): test accuracy {tuned:.4}",
            args.finetune_steps, args.batch, args.lr
        );
    }
    write_file(&args.out, &file)?;
    let result = Compressed {
        size_before: bytes.len() as u64,
        size_after: file.len() as u64,
        accuracy_before: report.accuracy_before,
        accuracy_after: report.accuracy_after,
        sparsity: report.sparsity,
    };
    println!(
        "wrote {} ({} bytes{}, {:.1}% of the weights zero)",
        args.out.display(),
        file.len(),
        if args.int8 { ", int8 weights" } else { "" },
        result.sparsity * 100.0
    );
    println!(
        "result size_before={} size_after={} size_ratio={:.3} test_accuracy_before={:.4} test_accuracy_after={:.4} weight_sparsity={:.3}",
        result.size_before,
        result.size_after,
        result.size_after as f64 / result.size_before.max(1) as f64,
        result.accuracy_before,
        result.accuracy_after,
        result.sparsity
    );
    Ok(result)
}

/// The parameters in a model file, loaded into a fresh model of `spec`.
fn params_of(spec: &ModelSpec, bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
    let backend = CpuBackend::new(1)?;
    let mut model = Model::new(&backend, spec, 0)?;
    model::load_safetensors(&mut model, &backend, bytes)?;
    Ok(model.params_flat(&backend)?)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: &Path, out: &Path) -> CompressArgs {
        CompressArgs {
            input: input.to_path_buf(),
            out: out.to_path_buf(),
            data: "builtin".into(),
            prune: 0.5,
            finetune_steps: 30,
            batch: 64,
            lr: 0.01,
            int8: true,
            threads: Some(2),
            seed: 1,
        }
    }

    /// A trained MLP, pruned by half, fine-tuned and stored as int8: the
    /// file is under a third of the size, half its weights are zero, it
    /// loads back, and its accuracy stays close.
    #[test]
    fn prunes_and_quantises_a_trained_model() {
        let dir = tempfile::tempdir().unwrap();
        let trained = dir.path().join("mlp.safetensors");
        let out = dir.path().join("mlp-int8.safetensors");
        super::super::main_with([
            "fairgrid",
            "train",
            "--device",
            "cpu",
            "--model",
            "mlp",
            "--hidden",
            "64",
            "--epochs",
            "1",
            "--threads",
            "2",
            "--save",
            trained.to_str().unwrap(),
        ]);
        let result = compress(args(&trained, &out)).unwrap();
        assert!(result.accuracy_before > 0.7, "{result:?}");
        assert!(result.size_after * 3 < result.size_before, "{result:?}");
        assert!((result.sparsity - 0.5).abs() < 0.01, "{result:?}");
        assert!(
            result.accuracy_after > result.accuracy_before - 0.05,
            "{result:?}"
        );
        let spec = model::read_model_spec(&std::fs::read(&out).unwrap())
            .unwrap()
            .unwrap();
        assert!(params_of(&spec, &std::fs::read(&out).unwrap()).is_ok());
    }

    #[test]
    fn bad_files_and_settings_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a model").unwrap();
        let err = format!("{:#}", compress(args(&junk, &out)).unwrap_err());
        assert!(err.contains("is not a safetensors model file"), "{err}");
        let missing = dir.path().join("missing.safetensors");
        let err = format!("{:#}", compress(args(&missing, &out)).unwrap_err());
        assert!(
            err.contains("reading") && err.contains("missing.safetensors"),
            "{err}"
        );
        let mut bad = args(&junk, &out);
        bad.prune = 1.0;
        assert!(format!("{:#}", compress(bad).unwrap_err()).contains("--prune"));
        let mut idle = args(&junk, &out);
        idle.prune = 0.0;
        idle.int8 = false;
        assert!(format!("{:#}", compress(idle).unwrap_err()).contains("nothing to do"));
        // A safetensors file without fairgrid's metadata.
        let bare = dir.path().join("bare.safetensors");
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4][..])
                .unwrap();
        std::fs::write(&bare, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let err = format!("{:#}", compress(args(&bare, &out)).unwrap_err());
        assert!(err.contains("no fairgrid.model metadata"), "{err}");
        assert!(!out.exists(), "nothing was written");
    }
}
