//! Samples for unit tests.

use fairgrid_protocol::messages::{
    Compression, DatasetDescriptor, HyperParams, InputShape, JobSpec, LrSchedule, ModelArch,
    ModelSpec, OptimizerKind, ShardInfo, ShortfallPolicy,
};
use fairgrid_protocol::{Hash32, Keypair, ResourceVec};

/// A small valid logreg job over `shards` shards of 100 samples.
pub fn spec_with(key: &Keypair, shards: usize, compression: Compression) -> JobSpec {
    JobSpec {
        submitter: key.node_id(),
        nonce: 1,
        model: ModelSpec {
            arch: ModelArch::LogReg,
            input: InputShape {
                channels: 1,
                height: 28,
                width: 28,
                values: fairgrid_protocol::messages::ValueKind::U8,
            },
            classes: 10,
        },
        dataset: DatasetDescriptor {
            name: "test".into(),
            shards: (0..shards)
                .map(|i| ShardInfo {
                    hash: Hash32::of(&(i as u64).to_le_bytes()),
                    samples: 100,
                })
                .collect(),
            test_hash: Hash32::ZERO,
            test_samples: 10,
        },
        hyper: HyperParams {
            rounds: 3,
            local_steps: 2,
            batch_size: 16,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            momentum: 0.0,
            outer_lr: 1.0,
            compression,
            seed: 1,
            schedule: LrSchedule::Constant,
            aggregation: Default::default(),
            outer_momentum: 0.0,
            eval_every: 1,
            result: Default::default(),
        },
        demand_per_shard: ResourceVec {
            cpu_milli: 100,
            mem_mib: 16,
            gpu_milli: 0,
            gpu_mem_mib: 0,
        },
        limit_price: 1000,
        alpha_ppm: 500_000,
        bid_window_ms: 1000,
        round_timeout_ms: 5000,
        deadline: 1_000_000,
        on_shortfall: ShortfallPolicy::RunWithFewer,
        relayed_workers: true,
        exact_audits: false,
        submitted_at: 1000,
    }
}

pub fn sample_spec(key: &Keypair) -> JobSpec {
    spec_with(key, 4, Compression::Int8 { block: 256 })
}

/// A round-0 update of one shard by `worker` (hashes are placeholders).
pub fn round_update(worker: &Keypair) -> fairgrid_protocol::messages::RoundUpdate {
    fairgrid_protocol::messages::RoundUpdate {
        job_id: Hash32::of(b"job"),
        round: 0,
        worker: worker.node_id(),
        base_params: Hash32::ZERO,
        shards: vec![0],
        samples: 16,
        loss: 1.0,
        compute_ms: 1,
        compression: Compression::Fp32,
        update_hash: Hash32::ZERO,
        update_len: 24,
        device_groups: 1,
        residual_in: Hash32::ZERO,
        residual_out: Hash32::ZERO,
        arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
    }
}
