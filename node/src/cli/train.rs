//! `fairgrid train`: trains a zoo model on this machine alone (on the CPU
//! or a GPU: `--device cpu|cuda|auto`), with a progress bar, per-epoch loss
//! and accuracy, and one machine-readable `result ...` line at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fairgrid_kernels::backend::select::{DeviceChoice, DevicePreference, choose_device};
use fairgrid_kernels::data::{SYSTEM_FASHION_MNIST_DIR, builtin};
use fairgrid_kernels::{
    Arch, Backend, CpuBackend, FashionMnist, ModelSpec, OptimizerConfig, Samples, Trainer, model,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    Cnn,
    Mlp,
    Logreg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum.
    Sgd,
    /// SGD with Nesterov momentum.
    Nesterov,
    Adam,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    /// Cosine decay from --lr to zero over the run.
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// GPU 0 when CUDA is usable, else the CPU (saying why).
    Auto,
    Cpu,
    /// GPU 0; an error when CUDA is not usable.
    Cuda,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Where to train.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Let GPU matrix products use TF32 tensor cores (faster, about 1e-3
    /// relative error per product; see docs/kernels.md).
    #[arg(long)]
    pub tf32: bool,
    /// Read the loss and checks every N steps (on a GPU each read waits for
    /// the device; default: 1 on the CPU, 25 on a GPU).
    #[arg(long)]
    pub report_every: Option<u32>,
    /// After training, time N more steps layer by layer (each layer waits
    /// for the device, so this is for comparing layers, not throughput)
    /// and print the median of each.
    #[arg(long, default_value_t = 0)]
    pub profile_steps: u32,
    /// Which zoo model to train.
    #[arg(long, value_enum, default_value = "cnn")]
    pub model: ModelArg,
    /// Hidden widths of the MLP, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "256,128")]
    pub hidden: Vec<usize>,
    /// `builtin` (the subset compiled into the binary), `system`
    /// (/usr/share/datasets/fashion-mnist) or a directory: the four
    /// Fashion-MNIST IDX files (raw or .gz), CIFAR-10/100 binary batches, or
    /// NumPy arrays (train_images.npy, train_labels.npy, test_images.npy,
    /// test_labels.npy).
    #[arg(long, default_value = "builtin")]
    pub data: String,
    #[arg(long, default_value_t = 2)]
    pub epochs: u32,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate (default: 0.05 for SGD, 0.001 for Adam).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerArg,
    /// Momentum for SGD and Nesterov.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many optimizer steps (for benchmarks).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Write the trained model here (safetensors, loadable in PyTorch).
    #[arg(long)]
    pub save: Option<PathBuf>,
}

pub(crate) fn load_data(which: &str) -> anyhow::Result<FashionMnist> {
    match which {
        "builtin" => builtin::fashion_mnist().context("decoding the built-in subset"),
        "system" => FashionMnist::load_dir(SYSTEM_FASHION_MNIST_DIR.as_ref()).with_context(|| {
            format!("reading {SYSTEM_FASHION_MNIST_DIR} (Debian package dataset-fashion-mnist)")
        }),
        dir => FashionMnist::load_dir(dir.as_ref()).with_context(|| format!("reading {dir}")),
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let arch = match args.model {
        ModelArg::Cnn => Arch::Cnn,
        ModelArg::Logreg => Arch::LogReg,
        ModelArg::Mlp => Arch::Mlp {
            hidden: args.hidden.clone(),
        },
    };
    let data = load_data(&args.data)?;
    let shape = data.train.shape();
    println!(
        "dataset: {} ({} train / {} test samples of {}x{}x{}, {} classes)",
        data.source,
        data.train.len(),
        data.test.len(),
        shape.channels,
        shape.height,
        shape.width,
        data.train.classes()
    );
    let spec = ModelSpec {
        arch,
        input: shape,
        classes: data.train.classes(),
    };
    let optimizer = match args.optimizer {
        OptimizerArg::Sgd => OptimizerConfig::Sgd {
            lr: args.lr.unwrap_or(0.05),
            momentum: args.momentum,
            nesterov: false,
            weight_decay: args.weight_decay,
        },
        OptimizerArg::Nesterov => OptimizerConfig::Sgd {
            lr: args.lr.unwrap_or(0.05),
            momentum: args.momentum,
            nesterov: true,
            weight_decay: args.weight_decay,
        },
        OptimizerArg::Adam => match OptimizerConfig::adam(args.lr.unwrap_or(0.001)) {
            OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
                ..
            } => OptimizerConfig::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay: args.weight_decay,
            },
            other => other,
        },
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let preference = match args.device {
        DeviceArg::Auto => DevicePreference::Auto,
        DeviceArg::Cpu => DevicePreference::Cpu,
        DeviceArg::Cuda => DevicePreference::Cuda,
    };
    match choose_device(preference).context("choosing the device")? {
        DeviceChoice::Cpu { cuda_unavailable } => {
            if let Some(why) = cuda_unavailable {
                println!("device: cpu (CUDA not used: {why})");
            }
            let backend = CpuBackend::new(threads).context("starting the CPU backend")?;
            train(backend, &args, &data, &spec, optimizer, 1)
        }
        DeviceChoice::Cuda { ordinal } => train_cuda(ordinal, &args, &data, &spec, optimizer),
    }
}

#[cfg(feature = "cuda")]
fn train_cuda(
    ordinal: usize,
    args: &TrainArgs,
    data: &FashionMnist,
    spec: &ModelSpec,
    optimizer: OptimizerConfig,
) -> anyhow::Result<()> {
    use fairgrid_kernels::backend::cuda::{CudaBackend, CudaOptions};
    let options = CudaOptions { tf32: args.tf32 };
    let backend = CudaBackend::with_options(ordinal, options)
        .with_context(|| format!("starting the CUDA backend on GPU {ordinal}"))?;
    train(backend, args, data, spec, optimizer, 25)
}

#[cfg(not(feature = "cuda"))]
fn train_cuda(
    _ordinal: usize,
    _args: &TrainArgs,
    _data: &FashionMnist,
    _spec: &ModelSpec,
    _optimizer: OptimizerConfig,
) -> anyhow::Result<()> {
    bail!("this build has no CUDA backend (built without the `cuda` feature)")
}

fn train<B: Backend>(
    backend: B,
    args: &TrainArgs,
    data: &FashionMnist,
    spec: &ModelSpec,
    optimizer: OptimizerConfig,
    default_report_every: u32,
) -> anyhow::Result<()> {
    let device = backend.name();
    let mut trainer = Trainer::new(backend, spec, optimizer, args.batch, args.seed)
        .context("building the model")?;
    trainer.set_report_interval(args.report_every.unwrap_or(default_report_every));
    println!(
        "model: {} ({} parameters) on {device}; {optimizer:?}; schedule {:?}; batch {}; {} epochs",
        spec.arch,
        trainer.model().param_count(),
        args.schedule,
        args.batch,
        args.epochs
    );
    let steps_per_epoch = data.train.len().div_ceil(args.batch) as u64;
    let planned = steps_per_epoch * u64::from(args.epochs);
    let total_steps = args.max_steps.map_or(planned, |m| m.min(planned));
    trainer.set_step_limit(Some(total_steps));
    let base_lr = optimizer.lr();
    let schedule = args.schedule;
    let lr = move |step: u64| match schedule {
        ScheduleArg::Constant => base_lr,
        ScheduleArg::Cosine => {
            let t = step.min(total_steps) as f64 / total_steps.max(1) as f64;
            (f64::from(base_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
        }
    };
    let mut train_time = Duration::ZERO;
    let mut train_samples = 0u64;
    let mut test_accuracy = 0.0;
    for epoch in 1..=args.epochs {
        if trainer.steps() >= total_steps {
            break;
        }
        let bar = ProgressBar::new(data.train.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} loss {msg} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", args.epochs));
        let started = Instant::now();
        let metrics = trainer
            .train_epoch(
                &data.train,
                args.seed.wrapping_add(u64::from(epoch)),
                &lr,
                &mut |done, loss| {
                    bar.set_position(done as u64);
                    bar.set_message(format!("{loss:.4}"));
                    true
                },
            )
            .with_context(|| format!("training epoch {epoch}"))?;
        let elapsed = started.elapsed();
        bar.finish_and_clear();
        train_time += elapsed;
        train_samples += metrics.samples;
        let test = trainer
            .evaluate(&data.test)
            .context("evaluating on the test set")?;
        test_accuracy = test.accuracy;
        println!(
            "epoch {epoch}/{} train_loss={:.4} train_acc={:.4} test_loss={:.4} test_acc={:.4} \
             samples_per_sec={:.0} time={:.1}s",
            args.epochs,
            metrics.loss,
            metrics.accuracy,
            test.loss,
            test.accuracy,
            metrics.samples as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    if args.profile_steps > 0 {
        profile(&mut trainer, data, args.batch, args.profile_steps)?;
    }
    if let Some(path) = &args.save {
        let bytes = model::save_safetensors(trainer.model(), trainer.backend())?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        println!("saved {} ({} bytes)", path.display(), bytes.len());
    }
    let device_memory = trainer
        .backend()
        .device_memory()
        .map(|m| {
            let mb = |bytes: usize| bytes as f64 / (1 << 20) as f64;
            format!(
                " device_peak_mb={:.1} device_used_mb={:.0}",
                mb(m.peak),
                mb(m.device_used)
            )
        })
        .unwrap_or_default();
    println!(
        "result test_accuracy={test_accuracy:.4} train_samples_per_sec={:.0} peak_rss_mb={:.0}{device_memory}",
        train_samples as f64 / train_time.as_secs_f64().max(1e-9),
        peak_rss_mb()
    );
    Ok(())
}

/// Prints the median time of each layer over `steps` profiled steps
/// (learning rate 0, so the model is left as trained).
fn profile<B: Backend>(
    trainer: &mut Trainer<B>,
    data: &FashionMnist,
    batch: usize,
    steps: u32,
) -> anyhow::Result<()> {
    let indices: Vec<u32> = (0..batch.min(data.train.len()) as u32).collect();
    let mut runs = Vec::new();
    for _ in 0..steps {
        runs.push(trainer.profile_step(&data.train, &indices, 0.0)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut total = (0.0, 0.0);
    for (i, row) in runs[0].iter().enumerate() {
        let forward = median(
            runs.iter()
                .map(|r| r[i].forward.as_secs_f64() * 1e6)
                .collect(),
        );
        let backward = median(
            runs.iter()
                .map(|r| r[i].backward.as_secs_f64() * 1e6)
                .collect(),
        );
        total = (total.0 + forward, total.1 + backward);
        println!(
            "profile forward_us={forward:.1} backward_us={backward:.1} layer={:?}",
            row.name
        );
    }
    println!(
        "profile forward_us={:.1} backward_us={:.1} layer=\"total\"",
        total.0, total.1
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(model: ModelArg, data: &str) -> TrainArgs {
        TrainArgs {
            device: DeviceArg::Cpu,
            tf32: false,
            report_every: None,
            profile_steps: 0,
            model,
            hidden: vec![16],
            data: data.into(),
            epochs: 1,
            batch: 32,
            lr: None,
            optimizer: OptimizerArg::Sgd,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: ScheduleArg::Cosine,
            threads: Some(2),
            seed: 1,
            max_steps: Some(5),
            save: None,
        }
    }

    #[test]
    fn trains_the_builtin_subset_and_saves_a_loadable_model() {
        let path =
            std::env::temp_dir().join(format!("fairgrid-train-{}.safetensors", std::process::id()));
        let mut a = args(ModelArg::Mlp, "builtin");
        a.save = Some(path.clone());
        run(a).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let spec = model::read_model_spec(&bytes).unwrap().unwrap();
        assert_eq!(spec.arch, Arch::Mlp { hidden: vec![16] });
    }

    #[test]
    fn bad_data_and_settings_are_clear_errors() {
        let err = run(args(ModelArg::Logreg, "/nonexistent/dir")).unwrap_err();
        assert!(
            format!("{err:#}").contains("dataset file not found"),
            "{err:#}"
        );
        let mut a = args(ModelArg::Logreg, "builtin");
        a.lr = Some(-1.0);
        assert!(format!("{:#}", run(a).unwrap_err()).contains("learning rate"));
        let mut a = args(ModelArg::Logreg, "builtin");
        a.epochs = 0;
        assert!(run(a).is_err());
    }

    #[test]
    fn peak_rss_is_reported() {
        assert!(peak_rss_mb() > 0.0);
    }
}
