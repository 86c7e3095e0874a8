//! Where a job's model trains and is evaluated: the CPU backend with some
//! threads, or one GPU through the CUDA backend. [`JobTrainer`] is the
//! kernels' `Trainer` on either, so the worker, the speed probe and the
//! coordinator's evaluator are written once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use fairgrid_kernels::{
    CpuBackend, LocalUpdate, Metrics, Samples, ShardSet, Trainer, backend::select,
};
use fairgrid_protocol::messages::{Arithmetic, HyperParams, ModelSpec};
use tracing::warn;

use super::model;

/// A device a trainer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu { threads: usize },
    Cuda { ordinal: usize },
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu { threads } => write!(f, "cpu({threads} threads)"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The arithmetic of a round trained on `devices` (each group's): a GPU if
/// any group ran on one, else this CPU's class.
pub fn arithmetic(devices: impl IntoIterator<Item = Device>) -> Arithmetic {
    if devices
        .into_iter()
        .any(|d| matches!(d, Device::Cuda { .. }))
    {
        Arithmetic::Gpu
    } else {
        cpu_arithmetic()
    }
}

/// This CPU's arithmetic class.
pub fn cpu_arithmetic() -> Arithmetic {
    if fairgrid_kernels::backend::cpu::has_avx2_fma() {
        Arithmetic::X86Avx2Fma
    } else {
        Arithmetic::OtherCpu
    }
}

/// The kernels' trainer on whichever backend the device needs.
pub enum JobTrainer {
    // Both boxed: the two trainers differ much in size.
    Cpu(Box<Trainer<CpuBackend>>),
    #[cfg(feature = "cuda")]
    Cuda(Box<Trainer<fairgrid_kernels::backend::cuda::CudaBackend>>),
}

/// Runs `$body` with `$t` bound to the trainer inside, whatever its
/// backend.
macro_rules! on_trainer {
    ($trainer:expr, $t:ident => $body:expr) => {
        match $trainer {
            JobTrainer::Cpu($t) => $body,
            #[cfg(feature = "cuda")]
            JobTrainer::Cuda($t) => $body,
        }
    };
}

impl JobTrainer {
    /// A trainer for the job's model at batch `batch` on `device`; an
    /// error if the device cannot be used (no CUDA libraries, no such
    /// GPU, a build without the `cuda` feature).
    pub fn new(
        device: Device,
        spec: &ModelSpec,
        hyper: &HyperParams,
        batch: usize,
    ) -> fairgrid_kernels::Result<JobTrainer> {
        match device {
            Device::Cpu { threads } => {
                model::trainer(spec, hyper, batch, threads).map(|t| JobTrainer::Cpu(Box::new(t)))
            }
            Device::Cuda { ordinal } => cuda_trainer(ordinal, spec, hyper, batch),
        }
    }

    /// [`JobTrainer::new`], falling back to the CPU with `threads` (and a
    /// warning) when the GPU cannot be used: the update is the same
    /// computation either way, only slower, and a slower round is what
    /// the coordinator's speed check looks for.
    pub fn new_or_cpu(
        device: Device,
        threads: usize,
        spec: &ModelSpec,
        hyper: &HyperParams,
        batch: usize,
    ) -> fairgrid_kernels::Result<(JobTrainer, Device)> {
        match JobTrainer::new(device, spec, hyper, batch) {
            Ok(trainer) => Ok((trainer, device)),
            Err(error) if matches!(device, Device::Cuda { .. }) => {
                warn!(target: "fairgrid::jobs", %device, %error, "GPU not usable; training on the CPU");
                let cpu = Device::Cpu { threads };
                Ok((JobTrainer::new(cpu, spec, hyper, batch)?, cpu))
            }
            Err(error) => Err(error),
        }
    }

    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        on_trainer!(self, t => t.set_cancel(flag))
    }

    pub fn set_params_flat(&mut self, flat: &[f32]) -> fairgrid_kernels::Result<()> {
        on_trainer!(self, t => t.set_params_flat(flat))
    }

    pub fn evaluate(&mut self, data: &dyn Samples) -> fairgrid_kernels::Result<Metrics> {
        on_trainer!(self, t => t.evaluate(data))
    }

    pub fn step(
        &mut self,
        data: &dyn Samples,
        indices: &[u32],
        lr: f32,
    ) -> fairgrid_kernels::Result<(f64, u64)> {
        on_trainer!(self, t => t.step(data, indices, lr))
    }

    pub fn train_local_per_shard(
        &mut self,
        start: &[f32],
        data: &ShardSet<'_>,
        per_shard: usize,
        steps: u32,
        lr: f32,
        seeds: &[u64],
    ) -> fairgrid_kernels::Result<LocalUpdate> {
        on_trainer!(self, t => t.train_local_per_shard(start, data, per_shard, steps, lr, seeds))
    }
}

#[cfg(feature = "cuda")]
fn cuda_trainer(
    ordinal: usize,
    spec: &ModelSpec,
    hyper: &HyperParams,
    batch: usize,
) -> fairgrid_kernels::Result<JobTrainer> {
    use fairgrid_kernels::backend::cuda::CudaBackend;
    let kernels_spec = model::kernels_spec(spec);
    let backend = CudaBackend::new(ordinal)?;
    if fairgrid_kernels::model::selfcheck::uses_declared_layers(&kernels_spec) {
        declared_layers_checked(ordinal, &backend)?;
    }
    fairgrid_kernels::Trainer::new(
        backend,
        &kernels_spec,
        model::optimizer(hyper),
        batch,
        hyper.seed,
    )
    .map(|trainer| JobTrainer::Cuda(Box::new(trainer)))
}

/// The GPU's verdict on the declared architectures' layers (checked
/// against the CPU once per GPU and process; see `model::selfcheck`).
#[cfg(feature = "cuda")]
fn declared_layers_checked(
    ordinal: usize,
    backend: &fairgrid_kernels::backend::cuda::CudaBackend,
) -> fairgrid_kernels::Result<()> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static VERDICTS: Mutex<Option<HashMap<usize, Result<(), String>>>> = Mutex::new(None);
    use fairgrid_kernels::model::selfcheck;
    let mut verdicts = VERDICTS.lock().unwrap_or_else(|p| p.into_inner());
    let verdicts = verdicts.get_or_insert_with(HashMap::new);
    let verdict = match verdicts.get(&ordinal) {
        Some(verdict) => verdict.clone(),
        None => match selfcheck::agrees_with_cpu(backend) {
            Ok(()) => {
                tracing::info!(target: "fairgrid::jobs", ordinal, "GPU agrees with the CPU on the declared layers");
                verdicts.insert(ordinal, Ok(()));
                Ok(())
            }
            // A wrong result is kept for the process's life; a check
            // that could not run (out of memory, say) is tried again.
            Err(e) if selfcheck::is_mismatch(&e) => {
                warn!(target: "fairgrid::jobs", ordinal, error = %e, "GPU fails the declared layers' self-check; such jobs train on the CPU");
                verdicts.insert(ordinal, Err(e.to_string()));
                Err(e.to_string())
            }
            Err(e) => return Err(e),
        },
    };
    verdict.map_err(|reason| fairgrid_kernels::KernelError::Backend {
        backend: "cuda",
        reason,
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_trainer(
    _ordinal: usize,
    _spec: &ModelSpec,
    _hyper: &HyperParams,
    _batch: usize,
) -> fairgrid_kernels::Result<JobTrainer> {
    Err(fairgrid_kernels::KernelError::config(
        "device",
        "this build has no CUDA backend (built without the `cuda` feature)",
    ))
}

/// Where the coordinator evaluates: GPU 0 when this node offers GPUs and
/// CUDA is usable (probed, never panicking), else the CPU.
pub fn evaluator_device(offers_gpus: bool, threads: usize) -> Device {
    if offers_gpus
        && let Ok(select::DeviceChoice::Cuda { ordinal }) =
            select::choose_device(select::DevicePreference::Auto)
    {
        return Device::Cuda { ordinal };
    }
    Device::Cpu { threads }
}

/// Whether a job trains on GPUs: its shards demand GPU time. A CPU-only
/// node never wins such shards (it offers no `gpu_milli`), and a GPU node
/// trains a CPU job on its CPU.
pub fn wants_gpu(spec: &fairgrid_protocol::messages::JobSpec) -> bool {
    spec.demand_per_shard.gpu_milli > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::sample_spec;
    use fairgrid_protocol::Keypair;

    #[test]
    fn a_gpu_that_cannot_be_used_falls_back_to_the_cpu_with_the_same_model() {
        let spec = sample_spec(&Keypair::from_seed(b"c"));
        // An ordinal no machine has: refused by `new`, the CPU by
        // `new_or_cpu`.
        let gpu = Device::Cuda { ordinal: 4096 };
        assert!(JobTrainer::new(gpu, &spec.model, &spec.hyper, 8).is_err());
        let (mut trainer, device) =
            JobTrainer::new_or_cpu(gpu, 1, &spec.model, &spec.hyper, 8).unwrap();
        assert_eq!(device, Device::Cpu { threads: 1 });
        let params = model::initial_params(&spec.model, &spec.hyper).unwrap();
        trainer.set_params_flat(&params).unwrap();
        assert_eq!(device.to_string(), "cpu(1 threads)");
        assert_eq!(gpu.to_string(), "cuda:4096");
    }

    #[test]
    fn a_node_without_gpus_evaluates_on_the_cpu() {
        assert_eq!(evaluator_device(false, 3), Device::Cpu { threads: 3 });
    }
}
