//! The protocol's description of a job's model and training turned into
//! the kernels' types, and the trainers both sides build from it.

use fairgrid_kernels::model::{LayerSpec, Op};
use fairgrid_kernels::{Arch, CpuBackend, OptimizerConfig, Trainer};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::messages::{
    Compression, HyperParams, Layer, LayerOp, ModelArch, ModelSpec, OptimizerKind,
};

pub fn kernels_spec(spec: &ModelSpec) -> fairgrid_kernels::ModelSpec {
    fairgrid_kernels::ModelSpec {
        arch: match &spec.arch {
            ModelArch::LogReg => Arch::LogReg,
            ModelArch::Mlp { hidden } => Arch::Mlp {
                hidden: hidden.iter().map(|&w| w as usize).collect(),
            },
            ModelArch::Cnn => Arch::Cnn,
            ModelArch::Layers(layers) => Arch::Layers(layers.iter().map(kernels_layer).collect()),
        },
        input: fairgrid_kernels::InputShape {
            channels: spec.input.channels as usize,
            height: spec.input.height as usize,
            width: spec.input.width as usize,
        },
        classes: spec.classes as usize,
    }
}

fn kernels_layer(layer: &Layer) -> LayerSpec {
    match layer {
        Layer::Op(op) => LayerSpec::Op(kernels_op(*op)),
        Layer::Residual(ops) => LayerSpec::Residual(ops.iter().map(|&op| kernels_op(op)).collect()),
    }
}

fn kernels_op(op: LayerOp) -> Op {
    let n = |v: u32| v as usize;
    match op {
        LayerOp::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        } => Op::Conv2d {
            out_channels: n(out_channels),
            kernel: n(kernel),
            stride: n(stride),
            padding: n(padding),
        },
        LayerOp::MaxPool2d { kernel, stride } => Op::MaxPool2d {
            kernel: n(kernel),
            stride: n(stride),
        },
        LayerOp::AvgPool2d { kernel, stride } => Op::AvgPool2d {
            kernel: n(kernel),
            stride: n(stride),
        },
        LayerOp::Linear { out_features } => Op::Linear {
            out_features: n(out_features),
        },
        LayerOp::Relu => Op::Relu,
        LayerOp::Gelu => Op::Gelu,
        LayerOp::Tanh => Op::Tanh,
        LayerOp::Dropout { p_ppm } => Op::Dropout { p_ppm },
        LayerOp::BatchNorm => Op::BatchNorm,
        LayerOp::Flatten => Op::Flatten,
    }
}

pub fn kernels_compression(c: Compression) -> fairgrid_kernels::Compression {
    match c {
        Compression::Fp32 => fairgrid_kernels::Compression::Fp32,
        Compression::Int8 { block } => fairgrid_kernels::Compression::Int8 { block },
        Compression::TopK { permille } => fairgrid_kernels::Compression::TopK { permille },
    }
}

pub fn optimizer(h: &HyperParams) -> OptimizerConfig {
    match h.optimizer {
        OptimizerKind::Sgd => OptimizerConfig::sgd(h.lr, h.momentum),
        OptimizerKind::Nesterov => OptimizerConfig::nesterov(h.lr, h.momentum),
        OptimizerKind::Adam => OptimizerConfig::adam(h.lr),
    }
}

/// Threads for a training backend: 0 means one per core.
pub fn threads(configured: u32) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured as usize
    }
}

/// A CPU trainer for the job's model. (The CUDA backend plugs in behind
/// the same `Backend` trait once it lands.)
pub fn trainer(
    spec: &ModelSpec,
    hyper: &HyperParams,
    batch: usize,
    threads: usize,
) -> fairgrid_kernels::Result<Trainer<CpuBackend>> {
    Trainer::new(
        CpuBackend::new(threads)?,
        &kernels_spec(spec),
        optimizer(hyper),
        batch,
        hyper.seed,
    )
}

/// The job's initial parameters: the zoo model built from the job's seed.
pub fn initial_params(spec: &ModelSpec, hyper: &HyperParams) -> fairgrid_kernels::Result<Vec<f32>> {
    trainer(spec, hyper, 1, 1)?.params_flat()
}

/// fp32 parameters as little-endian bytes (what a round start carries).
pub fn params_to_bytes(params: &[f32]) -> Vec<u8> {
    params.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of [`params_to_bytes`]; `None` if the length is not a
/// multiple of 4 or a value is not finite.
pub fn params_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let params: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    params.iter().all(|v| v.is_finite()).then_some(params)
}

/// BLAKE3 of the parameters' fp32 bytes (`RoundStart::params_hash`).
pub fn params_hash(params: &[f32]) -> Hash32 {
    Hash32::of(&params_to_bytes(params))
}

/// The seed of one shard's sample order in one round: a function of the
/// job's seed, the round and the shard (not of the worker holding it, so
/// that how shards are split among workers does not change what is
/// computed, and a spot-check can recompute it).
pub fn shard_seed(job_seed: u64, job: &Hash32, round: u32, shard: u32) -> u64 {
    Hash32::of_parts(&[
        b"fairgrid/v2/shard-seed",
        &job_seed.to_le_bytes(),
        &job.0,
        &round.to_le_bytes(),
        &shard.to_le_bytes(),
    ])
    .prefix_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_refuse_non_finite() {
        let p = vec![1.0f32, -2.5, 0.0];
        assert_eq!(params_from_bytes(&params_to_bytes(&p)).unwrap(), p);
        assert!(params_from_bytes(&[0, 0, 0]).is_none());
        assert!(params_from_bytes(&f32::NAN.to_le_bytes()).is_none());
    }
}
