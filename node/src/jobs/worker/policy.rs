//! Whether this node bids on a job it heard of, and with what (step 2),
//! and what the job then holds of the node's offer (its reservation). Pure
//! functions of the configuration, the capacity still free and the job.

use fairgrid_kernels::MAX_TRAINING_BYTES;
use fairgrid_protocol::ResourceVec;
use fairgrid_protocol::messages::{Arithmetic, JobSpec};

use crate::config::WorkerConfig;
use crate::jobs::device::wants_gpu;
use crate::jobs::model::kernels_spec;
use crate::net::wire::MAX_PARAM_BYTES;

/// Copies of the model's parameters a worker holds besides the trainer's
/// own (weights, gradients, optimiser state, counted by
/// `training_bytes`): the round's parameters as received and decoded, the
/// local delta, the error-feedback residual of int8/top-k compression,
/// and the last update kept for a re-sent round start, with one to spare
/// for the transient copy while a round start is decoded. Measured: a
/// 2.6 M-parameter logreg on 512x512 images held 158 MiB over the idle
/// node when only the trainer's share was counted (73 MiB estimated).
pub const WORKER_PARAM_COPIES: u128 = 6;

/// Memory a worker needs for a job whatever its shards: the trainer's
/// parameters, gradients and optimiser state, and the copies of the
/// parameters a round keeps.
pub fn job_fixed_bytes(spec: &JobSpec) -> u128 {
    let model = kernels_spec(&spec.model);
    model.training_bytes(0) + WORKER_PARAM_COPIES * 4 * model.param_count()
}

/// Memory each shard a worker holds adds besides its data: every step
/// takes `batch_size` samples from each shard, so the batch and its
/// activations grow with the shards.
pub fn per_shard_batch_bytes(spec: &JobSpec) -> u128 {
    let model = kernels_spec(&spec.model);
    let batch = spec.hyper.batch_size as usize;
    model.training_bytes(batch) - model.training_bytes(0)
}

/// Largest batch a trainer takes (the kernels' limit).
const MAX_BATCH: u64 = 65_536;

/// The terms of a bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub ask: u64,
    pub capacity: ResourceVec,
    /// What the job holds of the offer while the bid stands: the most
    /// shards the bid can win ([`hold`]), never more than was free.
    pub hold: ResourceVec,
}

/// What `shards` shards of the job hold of a node's offer: their CPU and
/// GPU demand, in memory the model with the copies a round keeps plus
/// each shard's data and batch, and in GPU memory (a GPU job) at least
/// what its trainer takes there. Nothing for no shards.
pub fn hold(spec: &JobSpec, shards: u64) -> ResourceVec {
    if shards == 0 {
        return ResourceVec::default();
    }
    let demand = spec.demand_per_shard;
    let per_shard = per_shard_batch_bytes(spec) + (u128::from(demand.mem_mib) << 20);
    let mem = (job_fixed_bytes(spec) + per_shard * u128::from(shards)).div_ceil(1 << 20);
    let mut held = ResourceVec {
        mem_mib: u64::try_from(mem).unwrap_or(u64::MAX),
        ..demand.saturating_mul(shards)
    };
    if wants_gpu(spec) {
        // On the GPU: what the trainer really takes, if more than declared.
        let gpu = (u128::from(GPU_CONTEXT_MIB) << 20)
            + kernels_spec(&spec.model).training_bytes(0)
            + per_shard_batch_bytes(spec) * u128::from(shards);
        let gpu = u64::try_from(gpu.div_ceil(1 << 20)).unwrap_or(u64::MAX);
        held.gpu_mem_mib = held.gpu_mem_mib.max(gpu);
    }
    held
}

/// GPU memory a trainer takes besides the model's tensors: the CUDA
/// context, cuBLAS's workspace and the backend's staging buffers
/// (measured on an H200: 855 MiB in use after training the CNN, of which
/// the backend's own buffers were 232 MiB).
pub const GPU_CONTEXT_MIB: u64 = 640;

/// The most shards of a GPU job that fit in `free_gpu_mib` of GPU memory:
/// the context, the model's parameters, gradients and optimiser state,
/// and each shard's share of a step's batch (its activations). A node
/// whose free GPU memory holds not even one shard does not bid.
pub fn gpu_shards(spec: &JobSpec, free_gpu_mib: u64) -> Result<u64, String> {
    let fixed = (u128::from(GPU_CONTEXT_MIB) << 20) + kernels_spec(&spec.model).training_bytes(0);
    let per_shard = per_shard_batch_bytes(spec).max(1);
    let free = u128::from(free_gpu_mib) << 20;
    if free < fixed + per_shard {
        return Err(format!(
            "training the job's model on a GPU at batch {} needs {} MiB of GPU memory, more than the {free_gpu_mib} MiB this node has free",
            spec.hyper.batch_size,
            (fixed + per_shard).div_ceil(1 << 20)
        ));
    }
    Ok(u64::try_from((free - fixed) / per_shard).unwrap_or(u64::MAX))
}

/// The most shards of a GPU job the node can bid out of `free` so that
/// every GPU they are placed on holds its share in memory. The worker
/// places `s` shards on `ceil(s x gpu_milli / 1000)` GPUs
/// (`gpus::gpus_needed`) and splits them evenly, and each GPU used holds
/// the context and the model once: so `s` fits when `ceil(s / gpus)`
/// shards fit in one GPU's memory. The GPUs with free time are
/// `ceil(free.gpu_milli / 1000)`, each taken to have an equal share of
/// `free.gpu_mem_mib` (a node's GPUs are usually alike).
pub fn gpu_bid_shards(spec: &JobSpec, free: ResourceVec) -> Result<u64, String> {
    let gpus = free.gpu_milli.div_ceil(1000).max(1);
    let per_gpu = gpu_shards(spec, free.gpu_mem_mib / gpus)?;
    let by_time = free.gpu_milli / spec.demand_per_shard.gpu_milli.max(1);
    let mut shards = by_time.min(per_gpu.saturating_mul(gpus)).max(1);
    while shards > 1 {
        let used = u64::try_from(super::gpus::gpus_needed(
            shards.saturating_mul(spec.demand_per_shard.gpu_milli),
            usize::try_from(gpus).unwrap_or(usize::MAX),
        ))
        .unwrap_or(u64::MAX);
        if shards.div_ceil(used.max(1)) <= per_gpu {
            break;
        }
        shards -= 1;
    }
    Ok(shards)
}

/// The most shards of the job one owner can win: alpha of them (at least
/// one, and never more than the job has).
pub fn owner_cap_of(spec: &JobSpec) -> u64 {
    let m = u64::from(spec.shard_count());
    (u64::from(spec.alpha_ppm) * m / u64::from(fairgrid_protocol::market::PPM)).clamp(1, m.max(1))
}

/// A job that takes only exact audits wants workers whose rounds replay
/// bit for bit; any other would be refused its updates.
pub fn exact_audits_fit(spec: &JobSpec, this_cpu: Arithmetic) -> Result<(), String> {
    if spec.exact_audits && this_cpu != Arithmetic::X86Avx2Fma {
        return Err(format!(
            "the job takes only exact audits (x86_avx2_fma) and this CPU is {this_cpu:?}"
        ));
    }
    Ok(())
}

/// Decides whether to bid out of the capacity `free` (the offer less what
/// the node's other jobs hold); `Err` says why not (for the logs).
pub fn decide(
    config: &WorkerConfig,
    free: ResourceVec,
    price_floor: u64,
    active_jobs: usize,
    own_job: bool,
    spec: &JobSpec,
) -> Result<Terms, String> {
    if !config.enabled {
        return Err("worker.enabled is false".into());
    }
    if own_job && !config.work_own_jobs {
        return Err("worker.work_own_jobs is false".into());
    }
    if active_jobs >= config.max_jobs as usize {
        return Err(format!(
            "already working on {active_jobs} jobs (worker.max_jobs)"
        ));
    }
    let ask = if config.ask > 0 {
        config.ask
    } else {
        price_floor
    };
    if ask > spec.limit_price {
        return Err(format!(
            "ask {ask} is above the job's limit price {}",
            spec.limit_price
        ));
    }
    exact_audits_fit(spec, crate::jobs::device::cpu_arithmetic())?;
    let model = kernels_spec(&spec.model);
    if model.validate().is_err() || model.param_count() * 4 > MAX_PARAM_BYTES as u128 {
        return Err("the job's model is not one this node trains".into());
    }
    // Refused now, so that it never wins shards it cannot train. A shard
    // costs its data and its share of each step's batch.
    let fixed = job_fixed_bytes(spec);
    let per_shard_batch = per_shard_batch_bytes(spec);
    let per_shard = per_shard_batch + (u128::from(spec.demand_per_shard.mem_mib) << 20);
    let limit = u128::from(free.mem_mib) << 20;
    if spec.demand_per_shard.mem_mib == 0 || fixed + per_shard > limit {
        return Err(format!(
            "training the job's model on one shard at batch {} (with the copies of its parameters a round keeps) needs {} MiB, more than the {} MiB this node has free",
            spec.hyper.batch_size,
            (fixed + per_shard).div_ceil(1 << 20),
            free.mem_mib
        ));
    }
    let mut shards = (limit - fixed) / per_shard;
    shards = shards.min(u128::from(
        MAX_BATCH / u64::from(spec.hyper.batch_size.max(1)),
    ));
    if let Some(by_trainer) = MAX_TRAINING_BYTES
        .saturating_sub(fixed)
        .checked_div(per_shard_batch)
    {
        shards = shards.min(by_trainer);
    }
    // The bid's memory holds exactly the shards that fit with their
    // batches and the model, so the market never gives it more.
    let mut capacity = free;
    let shards = u64::try_from(shards).unwrap_or(u64::MAX);
    capacity.mem_mib = shards.saturating_mul(spec.demand_per_shard.mem_mib);
    if wants_gpu(spec) {
        // The shards that fit in the GPU memory free, GPU by GPU; a GPU
        // shard always demands GPU time, so cutting that cuts the bid.
        let on_gpu = gpu_bid_shards(spec, free)?;
        let demand = spec.demand_per_shard;
        capacity.gpu_milli = capacity
            .gpu_milli
            .min(on_gpu.saturating_mul(demand.gpu_milli));
        if demand.gpu_mem_mib > 0 {
            capacity.gpu_mem_mib = capacity
                .gpu_mem_mib
                .min(on_gpu.saturating_mul(demand.gpu_mem_mib));
        }
    }
    let fit = capacity.units_of(&spec.demand_per_shard);
    if fit == 0 {
        return Err(format!(
            "the free capacity {free:?} cannot hold one shard of demand {:?} beside the model's training memory",
            spec.demand_per_shard
        ));
    }
    // No owner wins more than alpha of the job's shards: holding more
    // would keep capacity from other jobs for nothing.
    let winnable = fit.min(owner_cap_of(spec));
    Ok(Terms {
        ask,
        capacity,
        hold: hold(spec, winnable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::sample_spec;
    use fairgrid_protocol::Keypair;

    fn offer() -> ResourceVec {
        ResourceVec {
            cpu_milli: 2000,
            mem_mib: 4096,
            gpu_milli: 0,
            gpu_mem_mib: 0,
        }
    }

    #[test]
    fn bids_at_its_floor_or_configured_ask() {
        let spec = sample_spec(&Keypair::from_seed(b"c"));
        let config = WorkerConfig::default();
        let terms = decide(&config, offer(), 30, 0, false, &spec).unwrap();
        assert_eq!(terms.ask, 30);
        // The bid offers the memory of the shards that fit beside the
        // model and their batches.
        let per_shard =
            per_shard_batch_bytes(&spec) + (u128::from(spec.demand_per_shard.mem_mib) << 20);
        let fitting = ((4096u128 << 20) - job_fixed_bytes(&spec)) / per_shard;
        let mut capacity = offer();
        capacity.mem_mib = fitting as u64 * spec.demand_per_shard.mem_mib;
        assert_eq!(terms.capacity, capacity);
        let config = WorkerConfig {
            ask: 70,
            ..WorkerConfig::default()
        };
        assert_eq!(
            decide(&config, offer(), 30, 0, false, &spec).unwrap().ask,
            70
        );
    }

    #[test]
    fn holds_no_more_than_one_owner_can_win() {
        // 4 shards at alpha 50%: an owner wins 2 at most, though the node
        // could fit all four.
        let spec = sample_spec(&Keypair::from_seed(b"c"));
        assert_eq!(owner_cap_of(&spec), 2);
        let terms = decide(&WorkerConfig::default(), offer(), 0, 0, false, &spec).unwrap();
        assert!(terms.capacity.units_of(&spec.demand_per_shard) >= 4);
        assert_eq!(terms.hold, hold(&spec, 2));
        let mut alone = spec.clone();
        alone.alpha_ppm = 1_000_000;
        assert_eq!(owner_cap_of(&alone), 4);
        alone.alpha_ppm = 1;
        assert_eq!(owner_cap_of(&alone), 1, "never below one shard");
    }

    #[test]
    fn declines_with_a_reason() {
        let spec = sample_spec(&Keypair::from_seed(b"c"));
        let d = WorkerConfig::default();
        let off = WorkerConfig {
            enabled: false,
            ..d.clone()
        };
        assert!(decide(&off, offer(), 0, 0, false, &spec).is_err());
        let not_own = WorkerConfig {
            work_own_jobs: false,
            ..d.clone()
        };
        assert!(decide(&not_own, offer(), 0, 0, true, &spec).is_err());
        assert!(decide(&not_own, offer(), 0, 0, false, &spec).is_ok());
        let e = decide(&d, offer(), 5000, 0, false, &spec).unwrap_err();
        assert!(e.contains("limit price 1000"), "{e}");
        assert!(decide(&d, offer(), 0, d.max_jobs as usize, false, &spec).is_err());
        let tiny = ResourceVec {
            cpu_milli: 50,
            ..offer()
        };
        assert!(
            decide(&d, tiny, 0, 0, false, &spec)
                .unwrap_err()
                .contains("cannot hold")
        );
    }

    #[test]
    fn only_cpus_of_the_exact_class_bid_for_exact_audits() {
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        for cpu in [Arithmetic::X86Avx2Fma, Arithmetic::OtherCpu] {
            assert!(exact_audits_fit(&spec, cpu).is_ok());
        }
        spec.exact_audits = true;
        assert!(exact_audits_fit(&spec, Arithmetic::X86Avx2Fma).is_ok());
        let e = exact_audits_fit(&spec, Arithmetic::OtherCpu).unwrap_err();
        assert!(e.contains("exact audits") && e.contains("OtherCpu"), "{e}");
    }

    #[test]
    fn declines_a_model_that_needs_more_memory_than_it_offers() {
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        spec.hyper.batch_size = 4096;
        spec.demand_per_shard.mem_mib = 1;
        let needed = job_fixed_bytes(&spec) + per_shard_batch_bytes(&spec) + (1 << 20);
        let enough = ResourceVec {
            mem_mib: needed.div_ceil(1 << 20) as u64 + 1,
            ..offer()
        };
        let short = ResourceVec {
            mem_mib: (needed >> 20) as u64 - 1,
            ..offer()
        };
        let config = WorkerConfig::default();
        assert!(decide(&config, enough, 0, 0, false, &spec).is_ok());
        let why = decide(&config, short, 0, 0, false, &spec).unwrap_err();
        assert!(
            why.contains("one shard at batch 4096") && why.contains("MiB this node has free"),
            "{why}"
        );
    }

    /// The attack from issue 11: a worker offering 64 MiB won all 7 shards
    /// of 60 images of 512x512 (15 MiB each) and grew to 175 MB. Now each
    /// shard demands its size, and the bid leaves the training memory out.
    #[test]
    fn shards_and_training_together_stay_within_the_offer() {
        use fairgrid_protocol::messages::{InputShape, ShardInfo};
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        spec.model.input = InputShape {
            channels: 1,
            height: 512,
            width: 512,
            values: fairgrid_protocol::messages::ValueKind::U8,
        };
        spec.model.classes = 2;
        spec.hyper.batch_size = 4;
        for shard in &mut spec.dataset.shards {
            *shard = ShardInfo {
                samples: 60,
                ..*shard
            };
        }
        let shard_bytes = spec.dataset.shards[0].bytes(&spec.model.input);
        // What the submitter declared is too little: the spec is refused.
        spec.demand_per_shard.mem_mib = 1;
        assert!(spec.validate().is_err());
        spec.demand_per_shard.mem_mib = shard_bytes.div_ceil(1 << 20);
        spec.validate().unwrap();
        let offered = ResourceVec {
            mem_mib: 64,
            ..offer()
        };
        let terms = decide(&WorkerConfig::default(), offered, 0, 0, false, &spec).unwrap();
        let shards = terms.capacity.units_of(&spec.demand_per_shard);
        let model = kernels_spec(&spec.model);
        let training = model.training_bytes(4 * shards as usize) as u64;
        let params = model.param_count() as u64;
        assert!(shards >= 1);
        // Shards, their batches, the trainer and the round's copies of the
        // parameters, all within the offer.
        assert!(
            shards * shard_bytes + training + 24 * params <= 64 << 20,
            "{shards} shards of {shard_bytes} bytes and {training} bytes of training in 64 MiB"
        );
    }

    #[test]
    fn gpu_jobs_go_only_to_gpus_with_the_memory_for_them() {
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        spec.demand_per_shard.gpu_milli = 250;
        // A batch whose activations take more than a MiB a shard.
        spec.hyper.batch_size = 4096;
        assert!(per_shard_batch_bytes(&spec) > 1 << 20);
        let config = WorkerConfig::default();
        // A CPU-only node does not bid on GPU shards.
        let why = decide(&config, offer(), 0, 0, false, &spec).unwrap_err();
        assert!(why.contains("GPU memory"), "{why}");
        // One GPU with room: up to four shards of a quarter GPU each.
        let gpu = ResourceVec {
            gpu_milli: 1000,
            gpu_mem_mib: 80_000,
            ..offer()
        };
        let terms = decide(&config, gpu, 0, 0, false, &spec).unwrap();
        assert_eq!(terms.capacity.units_of(&spec.demand_per_shard), 4);
        assert!(terms.hold.gpu_mem_mib > GPU_CONTEXT_MIB, "{:?}", terms.hold);
        // GPU memory for the context and the model but one shard's batch
        // only: one shard.
        let fixed =
            (u128::from(GPU_CONTEXT_MIB) << 20) + kernels_spec(&spec.model).training_bytes(0);
        let one = (fixed + per_shard_batch_bytes(&spec)).div_ceil(1 << 20) as u64;
        let tight = ResourceVec {
            gpu_mem_mib: one,
            ..gpu
        };
        let terms = decide(&config, tight, 0, 0, false, &spec).unwrap();
        assert_eq!(terms.capacity.units_of(&spec.demand_per_shard), 1);
        assert!(terms.hold.gpu_mem_mib <= one);
        // Less than that: no bid, saying how much it needs.
        let short = ResourceVec {
            gpu_mem_mib: one - 1,
            ..gpu
        };
        let why = decide(&config, short, 0, 0, false, &spec).unwrap_err();
        assert!(
            why.contains(&format!("needs {one} MiB of GPU memory")),
            "{why}"
        );
    }

    /// Issue found in review: two 24 GiB GPUs are not one 48 GiB GPU.
    /// Shards of a twentieth of a GPU all go on one GPU, so the bid holds
    /// what one GPU's memory takes, not what both together would.
    #[test]
    fn gpu_memory_is_counted_per_gpu() {
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        spec.demand_per_shard.gpu_milli = 50;
        spec.hyper.batch_size = 4096;
        let per_shard = per_shard_batch_bytes(&spec).div_ceil(1 << 20) as u64;
        let fixed = ((u128::from(GPU_CONTEXT_MIB) << 20)
            + kernels_spec(&spec.model).training_bytes(0))
        .div_ceil(1 << 20) as u64;
        // Room for 3 shards on each of 2 GPUs.
        let per_gpu = fixed + 3 * per_shard + 1;
        let two = ResourceVec {
            gpu_milli: 2000,
            gpu_mem_mib: 2 * per_gpu,
            ..offer()
        };
        // 3 shards need 150 milli: one GPU, which holds 3.
        assert_eq!(gpu_bid_shards(&spec, two).unwrap(), 3);
        // Shards of 600 milli: 2 on 2 GPUs (one each) or 3 on 2 GPUs
        // (two on one): 3 still fit (2 per GPU <= 3).
        spec.demand_per_shard.gpu_milli = 600;
        assert_eq!(gpu_bid_shards(&spec, two).unwrap(), 3);
        // One GPU of the same memory: 1 shard of 600 milli by time.
        let one = ResourceVec {
            gpu_milli: 1000,
            gpu_mem_mib: per_gpu,
            ..offer()
        };
        assert_eq!(gpu_bid_shards(&spec, one).unwrap(), 1);
    }
}
