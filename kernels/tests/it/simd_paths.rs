//! The CPU backend gives the same bits whichever SIMD kernels the `gemm`
//! crate picks at run time (AVX-512 or AVX2+FMA), so an auditor on one
//! CPU recomputes a worker's round on another exactly. CI runs this test
//! twice: in the default build (AVX-512 on a CPU that has it) and in one
//! built `--no-default-features` (no `avx512` feature: AVX2+FMA), each
//! naming the path it must be on in `FAIRGRID_EXPECT_GEMM_PATH`, and both
//! must reach the same digest, [`DIGEST`].
//!
//! Regenerate after a deliberate numeric change with
//! `cargo test -p fairgrid-kernels --test it simd_paths -- --nocapture`
//! on both builds (the digests must still agree).

use fairgrid_kernels::backend::cpu::gemm_simd_path;
use fairgrid_kernels::backend::{Backend, GemmSpec};
use fairgrid_kernels::data::builtin;
use fairgrid_kernels::model::{LayerSpec, Op};
use fairgrid_kernels::rng::SplitMix64;
use fairgrid_kernels::{Arch, CpuBackend, ModelSpec, OptimizerConfig, Trainer};

/// BLAKE3 of every product's and the round's bits, first 16 hex digits.
const DIGEST: &str = "92050b79abf465ed";

fn products(hasher: &mut blake3::Hasher) {
    let be = CpuBackend::new(2).unwrap();
    let mut rng = SplitMix64::new(0x51_3d);
    // Small, thin and square products of every transpose, with and
    // without accumulation, and the shapes a CNN's layers multiply.
    let mut shapes: Vec<(usize, usize, usize)> = (0..300)
        .map(|_| {
            (
                1 + rng.below(300) as usize,
                1 + rng.below(300) as usize,
                1 + rng.below(700) as usize,
            )
        })
        .collect();
    shapes.extend([
        (1, 1, 1),
        (1, 10, 128),
        (16, 10, 128),
        (7, 7, 109),
        (64, 10, 128),
    ]);
    shapes.extend([
        (64, 128, 1568),
        (128, 1568, 64),
        (32, 9, 12544),
        (12544, 32, 9),
    ]);
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        let mut values = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| rng.below(2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let (a, b, c0) = (values(m * k), values(k * n), values(m * n));
        let spec = GemmSpec {
            trans_a: case % 2 == 1,
            trans_b: case % 4 >= 2,
            alpha: 1.3,
            beta: if case % 3 == 0 { 0.5 } else { 0.0 },
            ..GemmSpec::new(m, n, k)
        };
        let up = |v: &[f32]| {
            let mut buf = be.alloc(v.len()).unwrap();
            be.upload(v, &mut buf).unwrap();
            buf
        };
        let (a, b, mut c) = (up(&a), up(&b), up(&c0));
        be.gemm(spec, &a, &b, &mut c).unwrap();
        let mut out = vec![0.0; m * n];
        be.download(&c, &mut out).unwrap();
        for v in out {
            hasher.update(&v.to_bits().to_le_bytes());
        }
    }
}

/// A local round of a small declared CNN with batch norm, a residual
/// block and dropout on the built-in data.
fn local_round(hasher: &mut blake3::Hasher) {
    let data = builtin::fashion_mnist().unwrap().train.take(600);
    let conv = |out_channels| Op::Conv2d {
        out_channels,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let layers = vec![
        LayerSpec::Op(conv(8)),
        LayerSpec::Op(Op::BatchNorm),
        LayerSpec::Op(Op::Relu),
        LayerSpec::Op(Op::MaxPool2d {
            kernel: 2,
            stride: 2,
        }),
        LayerSpec::Residual(vec![conv(8), Op::Gelu]),
        LayerSpec::Op(Op::AvgPool2d {
            kernel: 2,
            stride: 2,
        }),
        LayerSpec::Op(Op::Flatten),
        LayerSpec::Op(Op::Dropout { p_ppm: 100_000 }),
        LayerSpec::Op(Op::Linear { out_features: 32 }),
        LayerSpec::Op(Op::Tanh),
        LayerSpec::Op(Op::Linear { out_features: 10 }),
    ];
    let spec = ModelSpec::fashion_mnist(Arch::Layers(layers));
    let backend = CpuBackend::new(2).unwrap();
    let mut t = Trainer::new(backend, &spec, OptimizerConfig::sgd(0.05, 0.9), 33, 7).unwrap();
    let start = t.params_flat().unwrap();
    let update = t.train_local(&start, &data, 12, 0.05, 99).unwrap();
    for v in update.delta {
        hasher.update(&v.to_bits().to_le_bytes());
    }
}

#[test]
fn products_and_a_round_give_the_same_bits_on_every_simd_path() {
    let path = gemm_simd_path();
    eprintln!("gemm SIMD path: {path}");
    if let Ok(expected) = std::env::var("FAIRGRID_EXPECT_GEMM_PATH") {
        assert_eq!(
            path, expected,
            "this build runs another SIMD path than CI asked for"
        );
    } else {
        eprintln!(
            "WARNING: FAIRGRID_EXPECT_GEMM_PATH unset: only the {path} path is checked here; \
             .ci/run checks both"
        );
    }
    let mut hasher = blake3::Hasher::new();
    products(&mut hasher);
    local_round(&mut hasher);
    let digest = hasher.finalize().to_hex()[..16].to_string();
    eprintln!("digest on {path}: {digest}");
    assert_eq!(digest, DIGEST, "the {path} path gives other bits");
}
