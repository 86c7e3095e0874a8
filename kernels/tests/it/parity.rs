//! The CUDA backend against the CPU backend, op by op, on random inputs
//! (seed from `FAIRGRID_PARITY_SEED`, printed, so a failure can be
//! replayed). Every output is poisoned with NaN first, and three elements
//! past its end must stay NaN, so an element an op forgets to write, or one
//! it writes too many, fails. Tolerance: relative error (to the largest
//! reference value) of 1e-5 in fp32; TF32 has its own documented bound.
//!
//! Without a usable GPU every test prints why and passes: CI on a CPU
//! machine stays green, and `bench/gpu-check.sh` runs them on a GPU.
#![cfg(feature = "cuda")]

use fairgrid_kernels::backend::cuda::{CudaBackend, CudaOptions};
use fairgrid_kernels::backend::{
    AdamHyper, Backend, Conv2dGeometry, GemmSpec, PoolGeometry, SgdHyper, UpdateTensor,
};
use fairgrid_kernels::rng::SplitMix64;
use fairgrid_kernels::test_utils::{cpu_backend, cuda_backend, cuda_backend_with};
use fairgrid_kernels::{Arch, CpuBackend, ModelSpec, OptimizerConfig, Result, Trainer};

const TOL: f64 = 1e-5;
/// TF32 keeps 10 mantissa bits: each product is off by up to 2^-11
/// relative, and sums of K such products by about sqrt(K) times that.
/// For K up to 1152 the measured error stays below this bound.
const TF32_TOL: f64 = 1e-2;

fn seed() -> u64 {
    let seed = std::env::var("FAIRGRID_PARITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("parity seed {seed} (set FAIRGRID_PARITY_SEED to replay)");
    seed
}

pub fn randn(rng: &mut SplitMix64, len: usize, scale: f64) -> Vec<f32> {
    (0..len).map(|_| (rng.normal() * scale) as f32).collect()
}

pub fn up<B: Backend>(be: &B, v: &[f32]) -> Result<B::Buf> {
    let mut buf = be.alloc(v.len())?;
    be.upload(v, &mut buf)?;
    Ok(buf)
}

/// `len` elements plus three guards, all NaN.
pub fn poisoned<B: Backend>(be: &B, len: usize) -> Result<B::Buf> {
    let mut buf = be.alloc(len + 3)?;
    be.fill(&mut buf, len + 3, f32::NAN)?;
    Ok(buf)
}

/// The first `len` elements; the guards must still be NaN.
pub fn down<B: Backend>(be: &B, buf: &B::Buf, len: usize, guarded: bool) -> Result<Vec<f32>> {
    let mut out = vec![0.0; len + if guarded { 3 } else { 0 }];
    be.download(buf, &mut out)?;
    if guarded {
        assert!(
            out[len..].iter().all(|v| v.is_nan()),
            "op wrote past its output"
        );
        out.truncate(len);
    }
    Ok(out)
}

/// Relative error of `gpu` against `cpu`, scaled by the largest `cpu` value.
fn max_error(what: &str, gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: length");
    let scale = cpu
        .iter()
        .fold(0.0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1e-6);
    let mut worst = 0.0f64;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            !g.is_nan() || c.is_nan(),
            "{what}[{i}]: GPU left NaN (unwritten?), CPU {c}"
        );
        worst = worst.max((f64::from(g) - f64::from(c)).abs() / scale);
    }
    worst
}

pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    let err = max_error(what, gpu, cpu);
    assert!(err <= tol, "{what}: relative error {err:.2e} > {tol:.0e}");
}

pub struct Pair {
    pub cpu: CpuBackend,
    pub gpu: CudaBackend,
    pub rng: SplitMix64,
}

pub fn pair(test: &str) -> Option<Pair> {
    let gpu = cuda_backend(test)?;
    Some(Pair {
        cpu: cpu_backend(),
        gpu,
        rng: SplitMix64::new(seed()),
    })
}

fn gemm_on<B: Backend>(
    be: &B,
    spec: GemmSpec,
    a: &[f32],
    b: &[f32],
    c0: &[f32],
) -> Result<Vec<f32>> {
    let len = spec.m * spec.n;
    let mut c = if spec.beta == 0.0 {
        poisoned(be, len)?
    } else {
        up(be, c0)?
    };
    be.gemm(spec, &up(be, a)?, &up(be, b)?, &mut c)?;
    down(be, &c, len, spec.beta == 0.0)
}

#[test]
fn gemm_matches_cpu() -> Result<()> {
    let Some(mut p) = pair("gemm_matches_cpu") else {
        return Ok(());
    };
    let shapes = [
        (1, 1, 1),
        (7, 5, 3),
        (64, 128, 1152),
        (257, 129, 300),
        (1000, 64, 9),
        (0, 4, 4),
        (4, 4, 0),
    ];
    for (m, n, k) in shapes {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (0.75, 0.5)] {
                let spec = GemmSpec {
                    m,
                    n,
                    k,
                    trans_a,
                    trans_b,
                    alpha,
                    beta,
                };
                let a = randn(&mut p.rng, m * k, 1.0);
                let b = randn(&mut p.rng, k * n, 1.0);
                let c = randn(&mut p.rng, m * n, 1.0);
                let want = gemm_on(&p.cpu, spec, &a, &b, &c)?;
                let got = gemm_on(&p.gpu, spec, &a, &b, &c)?;
                assert_close(&format!("gemm {spec:?}"), &got, &want, TOL);
            }
        }
    }
    Ok(())
}

fn elementwise_on<B: Backend>(
    be: &B,
    x: &[f32],
    bias: &[f32],
    y0: &[f32],
    rows: usize,
) -> Result<Vec<Vec<f32>>> {
    let (n, cols) = (x.len(), bias.len());
    let mut out = Vec::new();
    let mut buf = up(be, x)?;
    be.add_bias(&mut buf, &up(be, bias)?, rows, cols)?;
    out.push(down(be, &buf, n, false)?);
    let mut sums = poisoned(be, cols)?;
    be.sum_rows(&up(be, x)?, rows, cols, &mut sums)?;
    out.push(down(be, &sums, cols, true)?);
    let mut y = up(be, y0)?;
    be.axpy(-0.5, &up(be, x)?, &mut y, n)?;
    out.push(down(be, &y, n, false)?);
    let mut r = poisoned(be, n)?;
    be.relu_forward(&up(be, x)?, &mut r, n)?;
    out.push(down(be, &r, n, true)?);
    let mut dx = poisoned(be, n)?;
    be.relu_backward(&r, &up(be, y0)?, &mut dx, n)?;
    out.push(down(be, &dx, n, true)?);
    let bytes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
    let mut f = poisoned(be, n)?;
    be.upload_u8_scaled(&bytes, 1.0 / 255.0, &mut f)?;
    out.push(down(be, &f, n, true)?);
    let mut c = poisoned(be, n)?;
    be.copy(&f, &mut c, n)?;
    out.push(down(be, &c, n, true)?);
    out.push(vec![be.sum_squares(&up(be, x)?, n)? as f32]);
    Ok(out)
}

#[test]
fn elementwise_and_reductions_match_cpu() -> Result<()> {
    let Some(mut p) = pair("elementwise_and_reductions_match_cpu") else {
        return Ok(());
    };
    // Small, odd, and large enough for many blocks and the staging limit.
    for (rows, cols) in [(37, 19), (1, 1), (50_176, 64), (3, 300_001)] {
        let x = randn(&mut p.rng, rows * cols, 1.0);
        let bias = randn(&mut p.rng, cols, 1.0);
        let y = randn(&mut p.rng, rows * cols, 1.0);
        let want = elementwise_on(&p.cpu, &x, &bias, &y, rows)?;
        let got = elementwise_on(&p.gpu, &x, &bias, &y, rows)?;
        let names = [
            "add_bias",
            "sum_rows",
            "axpy",
            "relu",
            "relu backward",
            "u8 scaled",
            "copy",
            "sum_squares",
        ];
        for ((name, g), c) in names.iter().zip(&got).zip(&want) {
            // Row sums over 50k rows accumulate in a different order.
            let tol = if *name == "sum_rows" {
                1e-5
            } else if *name == "sum_squares" {
                1e-9
            } else {
                1e-7
            };
            assert_close(&format!("{name} {rows}x{cols}"), g, c, tol);
        }
    }
    // The sum of squares is computed in f64 on both: NaN must come through.
    let mut x = up(&p.gpu, &[1.0, 2.0, 3.0])?;
    p.gpu.fill(&mut x, 1, f32::NAN)?;
    assert!(p.gpu.sum_squares(&x, 3)?.is_nan());
    Ok(())
}

fn conv_on<B: Backend>(
    be: &B,
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let mut y = poisoned(be, g.output_len())?;
    let (xb, wb) = (up(be, x)?, up(be, w)?);
    be.conv2d_forward(g, &xb, &wb, &up(be, b)?, &mut y)?;
    let (mut dw, mut db, mut dx) = (
        poisoned(be, w.len())?,
        poisoned(be, g.out_c)?,
        poisoned(be, x.len())?,
    );
    be.conv2d_backward(g, &xb, &wb, &up(be, dy)?, &mut dw, &mut db, Some(&mut dx))?;
    // Without dx (the first layer): the weight gradients alone.
    let (mut dw2, mut db2) = (poisoned(be, w.len())?, poisoned(be, g.out_c)?);
    be.conv2d_backward(g, &xb, &wb, &up(be, dy)?, &mut dw2, &mut db2, None)?;
    Ok(vec![
        down(be, &y, g.output_len(), true)?,
        down(be, &dw, w.len(), true)?,
        down(be, &db, g.out_c, true)?,
        down(be, &dx, x.len(), true)?,
        down(be, &dw2, w.len(), true)?,
        down(be, &db2, g.out_c, true)?,
    ])
}

fn conv_geometries() -> Vec<Conv2dGeometry> {
    let g = |batch, in_h, in_w, in_c, out_c, kernel, stride, pad| Conv2dGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        out_c,
        kernel,
        stride,
        pad,
    };
    vec![
        g(8, 28, 28, 1, 32, 3, 1, 1),    // CNN layer 1 (direct kernel)
        g(8, 14, 14, 32, 64, 3, 1, 1),   // CNN layer 2
        g(8, 7, 7, 64, 128, 3, 1, 1),    // CNN layer 3
        g(5, 32, 32, 3, 16, 3, 1, 1),    // RGB input, patch 27 (direct)
        g(3, 11, 13, 4, 5, 3, 2, 0),     // stride 2, no padding, odd sizes
        g(2, 9, 9, 6, 7, 5, 1, 2),       // 5x5
        g(4, 6, 5, 16, 24, 1, 1, 0),     // 1x1
        g(300, 14, 14, 32, 64, 3, 1, 1), // more than one im2col chunk
    ]
}

#[test]
fn conv_matches_cpu() -> Result<()> {
    let Some(mut p) = pair("conv_matches_cpu") else {
        return Ok(());
    };
    for g in conv_geometries() {
        let x = randn(&mut p.rng, g.input_len(), 1.0);
        let w = randn(&mut p.rng, g.weight_len(), 0.1);
        let b = randn(&mut p.rng, g.out_c, 0.1);
        let dy = randn(&mut p.rng, g.output_len(), 1.0);
        let want = conv_on(&p.cpu, &g, &x, &w, &b, &dy)?;
        let got = conv_on(&p.gpu, &g, &x, &w, &b, &dy)?;
        for ((name, gv), cv) in ["y", "dw", "db", "dx", "dw (no dx)", "db (no dx)"]
            .iter()
            .zip(&got)
            .zip(&want)
        {
            assert_close(&format!("conv {name} {g:?}"), gv, cv, TOL);
        }
    }
    Ok(())
}

fn pool_on<B: Backend>(
    be: &B,
    g: &PoolGeometry,
    x: &[f32],
    dy: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut y = poisoned(be, g.output_len())?;
    let mut arg = be.alloc_idx(g.output_len())?;
    be.maxpool_forward(g, &up(be, x)?, &mut y, &mut arg)?;
    let mut dx = poisoned(be, g.input_len())?;
    be.maxpool_backward(g, &up(be, dy)?, &arg, &mut dx)?;
    Ok((
        down(be, &y, g.output_len(), true)?,
        down(be, &dx, g.input_len(), true)?,
    ))
}

#[test]
fn maxpool_matches_cpu() -> Result<()> {
    let Some(mut p) = pair("maxpool_matches_cpu") else {
        return Ok(());
    };
    let g = |batch, in_h, in_w, channels, kernel, stride| PoolGeometry {
        batch,
        in_h,
        in_w,
        channels,
        kernel,
        stride,
    };
    for g in [
        g(8, 28, 28, 32, 2, 2),
        g(8, 7, 7, 128, 2, 2),
        g(3, 9, 11, 5, 3, 2),
        g(2, 6, 6, 3, 3, 1),
        g(2, 5, 7, 4, 2, 3),
    ] {
        let mut x = randn(&mut p.rng, g.input_len(), 1.0);
        // Ties: the first maximum must win on both.
        for v in x.iter_mut().step_by(7) {
            *v = 0.5;
        }
        let dy = randn(&mut p.rng, g.output_len(), 1.0);
        let (y_cpu, dx_cpu) = pool_on(&p.cpu, &g, &x, &dy)?;
        let (y_gpu, dx_gpu) = pool_on(&p.gpu, &g, &x, &dy)?;
        assert_eq!(y_gpu, y_cpu, "maxpool {g:?}");
        assert_close(&format!("maxpool backward {g:?}"), &dx_gpu, &dx_cpu, TOL);
    }
    Ok(())
}

fn optim_on<B: Backend>(
    be: &B,
    p0: &[f32],
    g: &[f32],
    s0: &[f32],
    s1: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let n = p0.len();
    let mut out = Vec::new();
    for nesterov in [false, true] {
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
            weight_decay: 0.01,
        };
        let (mut p, mut v) = (up(be, p0)?, up(be, s0)?);
        be.sgd_step(&h, &mut p, &up(be, g)?, &mut v, n)?;
        out.push(down(be, &p, n, false)?);
        out.push(down(be, &v, n, false)?);
    }
    let h = AdamHyper {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.001,
        step: 3,
    };
    let (mut p, mut m, mut v) = (up(be, p0)?, up(be, s0)?, up(be, s1)?);
    be.adam_step(&h, &mut p, &up(be, g)?, &mut m, &mut v, n)?;
    out.extend([
        down(be, &p, n, false)?,
        down(be, &m, n, false)?,
        down(be, &v, n, false)?,
    ]);
    Ok(out)
}

#[test]
fn optimizers_match_cpu() -> Result<()> {
    let Some(mut p) = pair("optimizers_match_cpu") else {
        return Ok(());
    };
    for n in [1, 1000, 147_584] {
        let p0 = randn(&mut p.rng, n, 1.0);
        let g = randn(&mut p.rng, n, 1.0);
        let m0 = randn(&mut p.rng, n, 0.1);
        let v0: Vec<f32> = randn(&mut p.rng, n, 0.1).iter().map(|v| v * v).collect();
        let want = optim_on(&p.cpu, &p0, &g, &m0, &v0)?;
        let got = optim_on(&p.gpu, &p0, &g, &m0, &v0)?;
        for (i, (gv, cv)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("optimizer output {i} (n = {n})"), gv, cv, TOL);
        }
    }
    Ok(())
}

/// The fused multi-tensor updates and checks (what the trainer uses), on
/// tensors of very different lengths, more than one launch's worth.
fn multi_on<B: Backend>(
    be: &B,
    tensors: &[Vec<f32>],
    grads: &[Vec<f32>],
    adam: bool,
) -> Result<Vec<Vec<f32>>> {
    let mut params: Vec<B::Buf> = tensors.iter().map(|t| up(be, t)).collect::<Result<_>>()?;
    let gbufs: Vec<B::Buf> = grads.iter().map(|g| up(be, g)).collect::<Result<_>>()?;
    let mut first: Vec<B::Buf> = tensors
        .iter()
        .map(|t| up(be, &vec![0.01; t.len()]))
        .collect::<Result<_>>()?;
    let mut second: Vec<B::Buf> = tensors
        .iter()
        .map(|t| up(be, &vec![0.02; t.len()]))
        .collect::<Result<_>>()?;
    let mut stats = be.alloc_stats()?;
    let refs: Vec<(&B::Buf, usize)> = gbufs
        .iter()
        .zip(tensors)
        .map(|(g, t)| (g, t.len()))
        .collect();
    be.check_finite_all(&refs, &mut stats, 1)?;
    for step in 1..=2 {
        let mut second_iter = second.iter_mut();
        let mut update: Vec<UpdateTensor<'_, B::Buf>> = params
            .iter_mut()
            .zip(&gbufs)
            .zip(first.iter_mut())
            .zip(tensors)
            .map(|(((param, grad), first), t)| UpdateTensor {
                param,
                grad,
                first,
                second: second_iter.next(),
                len: t.len(),
            })
            .collect();
        if adam {
            let h = AdamHyper {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step,
            };
            be.adam_step_all(&h, &mut update, &stats)?;
        } else {
            let h = SgdHyper {
                lr: 0.1,
                momentum: 0.9,
                nesterov: step == 2,
                weight_decay: 0.01,
            };
            be.sgd_step_all(&h, &mut update, &stats)?;
        }
    }
    assert!(be.take_stats(&mut stats)?.failed_step().is_none());
    let mut out = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        out.push(down(be, &params[i], t.len(), false)?);
        out.push(down(be, &first[i], t.len(), false)?);
        if adam {
            out.push(down(be, &second[i], t.len(), false)?);
        }
    }
    Ok(out)
}

#[test]
fn multi_tensor_updates_match_cpu() -> Result<()> {
    let Some(mut p) = pair("multi_tensor_updates_match_cpu") else {
        return Ok(());
    };
    let lens = [
        1, 1000, 300_001, 0, 17, 320, 32, 18_432, 64, 73_728, 128, 147_584, 128, 1280, 10, 5, 7, 9,
    ];
    let tensors: Vec<Vec<f32>> = lens.iter().map(|&n| randn(&mut p.rng, n, 1.0)).collect();
    let grads: Vec<Vec<f32>> = lens.iter().map(|&n| randn(&mut p.rng, n, 1.0)).collect();
    for adam in [false, true] {
        let want = multi_on(&p.cpu, &tensors, &grads, adam)?;
        let got = multi_on(&p.gpu, &tensors, &grads, adam)?;
        for (i, (g, c)) in got.iter().zip(&want).enumerate() {
            assert_close(
                &format!("multi-tensor output {i} (adam: {adam})"),
                g,
                c,
                TOL,
            );
        }
    }
    // A NaN in the 17th tensor is found by the fused check.
    let mut grads = grads;
    grads[16][3] = f32::NAN;
    let bufs: Vec<_> = grads.iter().map(|g| up(&p.gpu, g)).collect::<Result<_>>()?;
    let refs: Vec<_> = bufs.iter().zip(&lens).map(|(b, &n)| (b, n)).collect();
    let mut stats = p.gpu.alloc_stats()?;
    p.gpu.check_finite_all(&refs, &mut stats, 5)?;
    assert_eq!(
        p.gpu.take_stats(&mut stats)?.bad_grad.map(|(s, _)| s),
        Some(5)
    );
    Ok(())
}

#[test]
fn loss_and_statistics_match_cpu() -> Result<()> {
    let Some(mut p) = pair("loss_and_statistics_match_cpu") else {
        return Ok(());
    };
    for (rows, classes) in [(9, 10), (300, 10), (1000, 37), (1, 2)] {
        let logits = randn(&mut p.rng, rows * classes, 3.0);
        let labels: Vec<u32> = (0..rows)
            .map(|_| p.rng.below(classes as u64) as u32)
            .collect();
        let cpu = loss_on(&p.cpu, &logits, &labels, classes)?;
        let gpu = loss_on(&p.gpu, &logits, &labels, classes)?;
        assert!(
            (gpu.0 - cpu.0).abs() <= 1e-9 * cpu.0.abs().max(1.0),
            "loss {} vs {}",
            gpu.0,
            cpu.0
        );
        assert_eq!(gpu.1, cpu.1, "correct count");
        assert_close("dlogits", &gpu.2, &cpu.2, TOL);
        // The deferred path sums the same numbers.
        assert!((gpu.3 - cpu.3).abs() <= 1e-9 * cpu.3.abs().max(1.0));
    }
    Ok(())
}

/// (loss, correct, dlogits, twice the loss through the deferred statistics)
fn loss_on<B: Backend>(
    be: &B,
    logits: &[f32],
    labels: &[u32],
    classes: usize,
) -> Result<(f64, u64, Vec<f32>, f64)> {
    let rows = labels.len();
    let mut lab = be.alloc_idx(rows)?;
    be.upload_idx(labels, &mut lab)?;
    let lg = up(be, logits)?;
    let mut d = poisoned(be, rows * classes)?;
    let stats = be.softmax_xent(&lg, &lab, rows, classes, Some(&mut d))?;
    let mut acc = be.alloc_stats()?;
    be.softmax_xent_accumulate(&lg, &lab, rows, classes, None, &mut acc, 1)?;
    be.softmax_xent_accumulate(&lg, &lab, rows, classes, None, &mut acc, 2)?;
    let deferred = be.take_stats(&mut acc)?;
    assert_eq!(deferred.correct, 2 * stats.correct);
    assert!(deferred.failed_step().is_none());
    Ok((
        stats.loss_sum,
        stats.correct,
        down(be, &d, rows * classes, true)?,
        deferred.loss_sum,
    ))
}

#[test]
fn failed_steps_are_recorded_and_guard_the_updates() -> Result<()> {
    let Some(p) = pair("failed_steps_are_recorded_and_guard_the_updates") else {
        return Ok(());
    };
    for be in [&p.gpu as &dyn GuardCheck, &p.cpu as &dyn GuardCheck] {
        be.check()?;
    }
    Ok(())
}

trait GuardCheck {
    fn check(&self) -> Result<()>;
}

impl<B: Backend> GuardCheck for B {
    fn check(&self) -> Result<()> {
        let n = 1000;
        let p0: Vec<f32> = (0..n).map(|i| i as f32 / 100.0).collect();
        let mut grad = vec![0.5f32; n];
        let (mut param, mut vel) = (up(self, &p0)?, self.alloc(n)?);
        let mut stats = self.alloc_stats()?;
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        };
        // Step 1 is fine and updates.
        let g = up(self, &grad)?;
        self.check_finite(&g, n, &mut stats, 1)?;
        self.sgd_step_guarded(&h, &mut param, &g, &mut vel, n, &stats)?;
        let after_one = down(self, &param, n, false)?;
        assert_ne!(after_one, p0);
        // Step 2 has an infinite gradient: it and step 3 change nothing.
        grad[567] = f32::INFINITY;
        let g = up(self, &grad)?;
        self.check_finite(&g, n, &mut stats, 2)?;
        self.sgd_step_guarded(&h, &mut param, &g, &mut vel, n, &stats)?;
        grad[567] = 0.5;
        let g = up(self, &grad)?;
        self.check_finite(&g, n, &mut stats, 3)?;
        self.sgd_step_guarded(&h, &mut param, &g, &mut vel, n, &stats)?;
        let taken = self.take_stats(&mut stats)?;
        assert_eq!(taken.bad_grad.map(|(s, _)| s), Some(2), "{}", self.name());
        assert_eq!(taken.failed_step(), Some(2));
        assert!(
            taken
                .failure()
                .unwrap()
                .to_string()
                .contains("gradient at step 2")
        );
        assert_eq!(down(self, &param, n, false)?, after_one, "{}", self.name());
        // Taking resets: the next step updates again.
        self.sgd_step_guarded(&h, &mut param, &g, &mut vel, n, &stats)?;
        assert_ne!(down(self, &param, n, false)?, after_one);
        Ok(())
    }
}

/// Codes, scales, residual and dequantised values.
type Quantised = (Vec<i8>, Vec<f32>, Vec<f32>, Vec<f32>);

fn quant_on<B: Backend>(be: &B, x: &[f32], r0: &[f32], block: usize) -> Result<Quantised> {
    let n = x.len();
    let mut r = up(be, r0)?;
    let mut codes = vec![0i8; n];
    let mut scales = vec![0.0f32; n.div_ceil(block)];
    be.quantize_int8_ef(&up(be, x)?, &mut r, n, block, &mut codes, &mut scales)?;
    let mut out = poisoned(be, n)?;
    be.dequantize_int8(&codes, &scales, block, &mut out)?;
    Ok((
        codes,
        scales,
        down(be, &r, n, false)?,
        down(be, &out, n, true)?,
    ))
}

#[test]
fn quantisation_matches_cpu_exactly() -> Result<()> {
    let Some(mut p) = pair("quantisation_matches_cpu_exactly") else {
        return Ok(());
    };
    for (n, block) in [(1000, 64), (241_546, 256), (5, 4096), (3_000_001, 1024)] {
        let mut x = randn(&mut p.rng, n, 0.01);
        x[n / 2] = 0.0;
        let r0 = randn(&mut p.rng, n, 0.001);
        let want = quant_on(&p.cpu, &x, &r0, block)?;
        let got = quant_on(&p.gpu, &x, &r0, block)?;
        assert_eq!(got.0, want.0, "codes n={n} block={block}");
        assert_eq!(got.1, want.1, "scales n={n} block={block}");
        assert_close("residual", &got.2, &want.2, 1e-6);
        assert_eq!(got.3, want.3, "dequantised n={n} block={block}");
    }
    // A NaN is refused, as on the CPU.
    let mut r = p.gpu.alloc(4)?;
    let (mut codes, mut scales) = ([0i8; 4], [0.0f32; 1]);
    let err = p.gpu.quantize_int8_ef(
        &up(&p.gpu, &[1.0, f32::NAN, 0.0, 2.0])?,
        &mut r,
        4,
        4,
        &mut codes,
        &mut scales,
    );
    assert!(
        matches!(err, Err(fairgrid_kernels::KernelError::NonFinite { .. })),
        "{err:?}"
    );
    Ok(())
}

/// A few CNN training steps on both backends stay together, and a
/// local-SGD round on the GPU repeats bit for bit.
#[test]
fn cnn_training_steps_match_cpu_and_repeat() -> Result<()> {
    let Some(gpu) = cuda_backend("cnn_training_steps_match_cpu_and_repeat") else {
        return Ok(());
    };
    let data = fairgrid_kernels::data::builtin::fashion_mnist()?;
    let spec = ModelSpec::fashion_mnist(Arch::Cnn);
    let opt = OptimizerConfig::sgd(0.05, 0.9);
    let mut on_cpu = Trainer::new(cpu_backend(), &spec, opt, 64, 3)?;
    let mut on_gpu = Trainer::new(gpu, &spec, opt, 64, 3)?;
    assert_eq!(
        on_gpu.params_flat()?,
        on_cpu.params_flat()?,
        "same initial weights"
    );
    for step in 0..5u32 {
        let batch: Vec<u32> = (step * 64..(step + 1) * 64).collect();
        let (loss_cpu, correct_cpu) = on_cpu.step(&data.train, &batch, 0.05)?;
        let (loss_gpu, correct_gpu) = on_gpu.step(&data.train, &batch, 0.05)?;
        assert!(
            (loss_cpu - loss_gpu).abs() < 1e-4 * loss_cpu.abs(),
            "step {step}: loss {loss_gpu} vs {loss_cpu}"
        );
        assert!(
            correct_cpu.abs_diff(correct_gpu) <= 1,
            "step {step}: correct {correct_gpu} vs {correct_cpu}"
        );
    }
    let (cpu_params, gpu_params) = (on_cpu.params_flat()?, on_gpu.params_flat()?);
    assert_close("parameters after 5 steps", &gpu_params, &cpu_params, 1e-4);
    let start = on_gpu.params_flat()?;
    let first = on_gpu.train_local(&start, &data.train, 8, 0.05, 11)?;
    let again = on_gpu.train_local(&start, &data.train, 8, 0.05, 11)?;
    assert_eq!(first.delta, again.delta, "a GPU round repeats bit for bit");
    let on_cpu_round = on_cpu.train_local(&start, &data.train, 8, 0.05, 11)?;
    assert_close("local round delta", &first.delta, &on_cpu_round.delta, 1e-3);
    Ok(())
}

/// NaN in the parameters: the step fails naming itself, the parameters
/// stay as they were, and evaluation refuses, as on the CPU.
#[test]
fn nan_is_caught_on_the_gpu() -> Result<()> {
    let Some(gpu) = cuda_backend("nan_is_caught_on_the_gpu") else {
        return Ok(());
    };
    let data = fairgrid_kernels::data::builtin::fashion_mnist()?;
    let spec = ModelSpec::fashion_mnist(Arch::LogReg);
    let mut t = Trainer::new(gpu, &spec, OptimizerConfig::sgd(0.1, 0.0), 16, 1)?;
    t.set_params_flat(&vec![1e38f32; t.model().param_count()])?;
    let before = t.params_flat()?;
    let err = t
        .step(&data.train, &(0..16).collect::<Vec<u32>>(), 0.1)
        .unwrap_err();
    assert!(err.to_string().contains("step 1"), "{err}");
    assert_eq!(t.params_flat()?, before);
    assert_eq!(t.steps(), 0);
    assert!(t.evaluate(&data.test).is_err());
    Ok(())
}

/// TF32: products within the documented bound (and printed, for the docs).
#[test]
fn tf32_stays_within_its_bound() -> Result<()> {
    let Some(tf32) = cuda_backend_with("tf32_stays_within_its_bound", CudaOptions { tf32: true })
    else {
        return Ok(());
    };
    let cpu = cpu_backend();
    let mut rng = SplitMix64::new(seed());
    for (m, n, k) in [(256, 128, 1152), (50_176 / 8, 64, 288), (128, 288, 6272)] {
        let spec = GemmSpec {
            trans_b: true,
            ..GemmSpec::new(m, n, k)
        };
        let a = randn(&mut rng, m * k, 1.0);
        let b = randn(&mut rng, k * n, 1.0);
        let want = gemm_on(&cpu, spec, &a, &b, &[])?;
        let got = gemm_on(&tf32, spec, &a, &b, &[])?;
        let err = max_error("tf32 gemm", &got, &want);
        eprintln!("TF32 GEMM {m}x{n}x{k}: max relative error {err:.2e}");
        assert!(
            err <= TF32_TOL,
            "TF32 GEMM {m}x{n}x{k}: {err:.2e} > {TF32_TOL:.0e}"
        );
    }
    let g = conv_geometries()[1];
    let x = randn(&mut rng, g.input_len(), 1.0);
    let w = randn(&mut rng, g.weight_len(), 0.1);
    let b = randn(&mut rng, g.out_c, 0.1);
    let dy = randn(&mut rng, g.output_len(), 1.0);
    let want = conv_on(&cpu, &g, &x, &w, &b, &dy)?;
    let got = conv_on(&tf32, &g, &x, &w, &b, &dy)?;
    for ((name, gv), cv) in ["y", "dw", "db", "dx"].iter().zip(&got).zip(&want) {
        let err = max_error(name, gv, cv);
        eprintln!("TF32 conv {name}: max relative error {err:.2e}");
        assert!(err <= TF32_TOL, "TF32 conv {name}: {err:.2e}");
    }
    Ok(())
}
