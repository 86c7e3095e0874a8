//! Every backend op against the f64 reference, on every backend. Outputs
//! are poisoned with NaN first, so an element an op forgets to write
//! fails the test. A new backend passes these before it is trusted.

use crate::common;

use common::*;
use fairgrid_kernels::backend::{
    AdamHyper, Backend, Conv2dGeometry, GemmSpec, PoolGeometry, SgdHyper,
};
use fairgrid_kernels::{Result, test_device};

const TOL: f64 = 1e-5;

fn upload<B: Backend>(be: &B, v: &[f64]) -> Result<B::Buf> {
    let mut buf = be.alloc(v.len())?;
    be.upload(&to_f32(v), &mut buf)?;
    Ok(buf)
}

/// A buffer of `len` NaNs (plus `extra` more, which must stay NaN).
fn poisoned<B: Backend>(be: &B, len: usize) -> Result<B::Buf> {
    let mut buf = be.alloc(len + 3)?;
    be.fill(&mut buf, len + 3, f32::NAN)?;
    Ok(buf)
}

fn download<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; len + 3];
    be.download(buf, &mut out)?;
    assert!(
        out[len..].iter().all(|v| v.is_nan()),
        "op wrote past its output"
    );
    out.truncate(len);
    Ok(out)
}

fn gemm_matches<B: Backend>(be: &B) -> Result<()> {
    for (m, n, k) in [(1, 1, 1), (7, 5, 3), (64, 128, 1152), (300, 17, 40)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = randn(1, m * k, 1.0);
            let b = randn(2, k * n, 1.0);
            let c0 = randn(3, m * n, 1.0);
            let (alpha, beta) = (0.75, 0.5);
            let mut want = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|p| {
                            let av = if ta { a[p * m + i] } else { a[i * k + p] };
                            let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                            av * bv
                        })
                        .sum();
                    want[i * n + j] = alpha * dot + beta * c0[i * n + j];
                }
            }
            let spec = GemmSpec {
                m,
                n,
                k,
                trans_a: ta,
                trans_b: tb,
                alpha: alpha as f32,
                beta: beta as f32,
            };
            let mut c = upload(be, &c0)?;
            be.gemm(spec, &upload(be, &a)?, &upload(be, &b)?, &mut c)?;
            assert_close(
                &format!("gemm {m}x{n}x{k} {ta} {tb}"),
                &download_exact(be, &c, m * n)?,
                &want,
                TOL,
            );
            // beta = 0 must not read C (poisoned).
            let mut c = poisoned(be, m * n)?;
            let spec0 = GemmSpec { beta: 0.0, ..spec };
            be.gemm(spec0, &upload(be, &a)?, &upload(be, &b)?, &mut c)?;
            let want0: Vec<f64> = want.iter().zip(&c0).map(|(w, c)| w - beta * c).collect();
            assert_close("gemm beta=0", &download(be, &c, m * n)?, &want0, TOL);
        }
    }
    Ok(())
}
test_device!(gemm_matches);

fn download_exact<B: Backend>(be: &B, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; len];
    be.download(buf, &mut out)?;
    Ok(out)
}

fn elementwise_ops_match<B: Backend>(be: &B) -> Result<()> {
    let (rows, cols) = (37, 19);
    let x = randn(4, rows * cols, 1.0);
    let bias = randn(5, cols, 1.0);
    // add_bias
    let mut buf = upload(be, &x)?;
    be.add_bias(&mut buf, &upload(be, &bias)?, rows, cols)?;
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % cols])
        .collect();
    assert_close(
        "add_bias",
        &download_exact(be, &buf, rows * cols)?,
        &want,
        TOL,
    );
    // sum_rows
    let mut out = poisoned(be, cols)?;
    be.sum_rows(&upload(be, &x)?, rows, cols, &mut out)?;
    let want: Vec<f64> = (0..cols)
        .map(|c| (0..rows).map(|r| x[r * cols + c]).sum())
        .collect();
    assert_close("sum_rows", &download(be, &out, cols)?, &want, TOL);
    // axpy
    let y0 = randn(6, x.len(), 1.0);
    let mut y = upload(be, &y0)?;
    be.axpy(-0.5, &upload(be, &x)?, &mut y, x.len())?;
    let want: Vec<f64> = y0.iter().zip(&x).map(|(y, x)| y - 0.5 * x).collect();
    assert_close("axpy", &download_exact(be, &y, x.len())?, &want, TOL);
    // sum_squares, and NaN detection through it
    let s = be.sum_squares(&upload(be, &x)?, x.len())?;
    let want: f64 = to_f64(&to_f32(&x)).iter().map(|v| v * v).sum();
    assert!((s - want).abs() < 1e-6 * want, "{s} vs {want}");
    let mut with_nan = upload(be, &x)?;
    be.fill(&mut with_nan, 1, f32::NAN)?;
    assert!(be.sum_squares(&with_nan, x.len())?.is_nan());
    // relu forward and backward
    let mut y = poisoned(be, x.len())?;
    be.relu_forward(&upload(be, &x)?, &mut y, x.len())?;
    assert_close("relu", &download(be, &y, x.len())?, &relu(&x), TOL);
    let dy = randn(7, x.len(), 1.0);
    let mut dx = poisoned(be, x.len())?;
    be.relu_backward(&y, &upload(be, &dy)?, &mut dx, x.len())?;
    let want: Vec<f64> = x
        .iter()
        .zip(&dy)
        .map(|(x, d)| if *x > 0.0 { *d } else { 0.0 })
        .collect();
    assert_close("relu backward", &download(be, &dx, x.len())?, &want, TOL);
    // bytes to floats, copy
    let bytes: Vec<u8> = (0..=255).collect();
    let mut f = poisoned(be, 256)?;
    be.upload_u8_scaled(&bytes, 1.0 / 255.0, &mut f)?;
    let want: Vec<f64> = (0..256)
        .map(|i| f64::from(i as f32 * (1.0f32 / 255.0)))
        .collect();
    assert_close("u8 scaled", &download(be, &f, 256)?, &want, 1e-7);
    let mut c = poisoned(be, 256)?;
    be.copy(&f, &mut c, 256)?;
    assert_close("copy", &download(be, &c, 256)?, &want, 1e-7);
    Ok(())
}
test_device!(elementwise_ops_match);

fn conv_and_pool_ops_match<B: Backend>(be: &B) -> Result<()> {
    let g = Conv {
        n: 5,
        h: 14,
        w: 14,
        c: 32,
        o: 64,
        k: 3,
        stride: 1,
        pad: 1,
    };
    let geo = Conv2dGeometry {
        batch: g.n,
        in_h: g.h,
        in_w: g.w,
        in_c: g.c,
        out_c: g.o,
        kernel: g.k,
        stride: g.stride,
        pad: g.pad,
    };
    let x = randn(8, geo.input_len(), 1.0);
    let w = randn(9, geo.weight_len(), 0.1);
    let b = randn(10, g.o, 0.1);
    let mut y = poisoned(be, geo.output_len())?;
    be.conv2d_forward(
        &geo,
        &upload(be, &x)?,
        &upload(be, &w)?,
        &upload(be, &b)?,
        &mut y,
    )?;
    assert_close(
        "conv forward",
        &download(be, &y, geo.output_len())?,
        &conv2d(&g, &x, &w, &b),
        TOL,
    );
    // Backward against the adjoint identities: <dy, conv(x)> derivatives.
    let dy = randn(11, geo.output_len(), 1.0);
    let (mut dw, mut db, mut dx) = (
        poisoned(be, w.len())?,
        poisoned(be, g.o)?,
        poisoned(be, x.len())?,
    );
    be.conv2d_backward(
        &geo,
        &upload(be, &x)?,
        &upload(be, &w)?,
        &upload(be, &dy)?,
        &mut dw,
        &mut db,
        Some(&mut dx),
    )?;
    let (oh, ow) = (g.oh(), g.ow());
    let mut want_dw = vec![0.0; w.len()];
    let mut want_dx = vec![0.0; x.len()];
    let mut want_db = vec![0.0; g.o];
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..g.o {
                    let d = dy[((n * oh + oy) * ow + ox) * g.o + o];
                    want_db[o] += d;
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let iy = (oy + ky) as isize - 1;
                            let ix = (ox + kx) as isize - 1;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            for c in 0..g.c {
                                let xi = ((n * g.h + iy as usize) * g.w + ix as usize) * g.c + c;
                                let wi = ((o * g.k + ky) * g.k + kx) * g.c + c;
                                want_dw[wi] += d * x[xi];
                                want_dx[xi] += d * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    assert_close("conv dw", &download(be, &dw, w.len())?, &want_dw, TOL);
    assert_close("conv db", &download(be, &db, g.o)?, &want_db, TOL);
    assert_close("conv dx", &download(be, &dx, x.len())?, &want_dx, TOL);
    // Max pooling, forward and backward, on the conv output.
    let yv = conv2d(&g, &x, &w, &b);
    let pg = PoolGeometry {
        batch: g.n,
        in_h: oh,
        in_w: ow,
        channels: g.o,
        kernel: 2,
        stride: 2,
    };
    let mut p = poisoned(be, pg.output_len())?;
    let mut arg = be.alloc_idx(pg.output_len())?;
    be.maxpool_forward(&pg, &upload(be, &yv)?, &mut p, &mut arg)?;
    assert_close(
        "maxpool",
        &download(be, &p, pg.output_len())?,
        &maxpool(&yv, g.n, oh, ow, g.o, 2, 2),
        TOL,
    );
    let dp = randn(12, pg.output_len(), 1.0);
    let mut dyv = poisoned(be, pg.input_len())?;
    be.maxpool_backward(&pg, &upload(be, &dp)?, &arg, &mut dyv)?;
    let got = download(be, &dyv, pg.input_len())?;
    // Each output's gradient lands on its window's maximum, nowhere else.
    let mut want = vec![0.0; pg.input_len()];
    for n in 0..g.n {
        for py in 0..oh / 2 {
            for px in 0..ow / 2 {
                for c in 0..g.o {
                    let at = |y: usize, x: usize| ((n * oh + y) * ow + x) * g.o + c;
                    let cells = [
                        at(2 * py, 2 * px),
                        at(2 * py, 2 * px + 1),
                        at(2 * py + 1, 2 * px),
                        at(2 * py + 1, 2 * px + 1),
                    ];
                    let best = cells
                        .iter()
                        .copied()
                        .fold(cells[0], |m, i| if yv[i] > yv[m] { i } else { m });
                    want[best] = dp[((n * (oh / 2) + py) * (ow / 2) + px) * g.o + c];
                }
            }
        }
    }
    assert_close("maxpool backward", &got, &want, TOL);
    Ok(())
}
test_device!(conv_and_pool_ops_match);

fn optimizer_steps_match<B: Backend>(be: &B) -> Result<()> {
    let len = 1000;
    let p0 = randn(13, len, 1.0);
    let g = randn(14, len, 1.0);
    let v0 = randn(15, len, 0.1);
    for nesterov in [false, true] {
        let h = SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
            weight_decay: 0.01,
        };
        let (mut p, mut v) = (upload(be, &p0)?, upload(be, &v0)?);
        be.sgd_step(&h, &mut p, &upload(be, &g)?, &mut v, len)?;
        let mut want_p = vec![0.0; len];
        let mut want_v = vec![0.0; len];
        for i in 0..len {
            let gi = g[i] + 0.01 * p0[i];
            want_v[i] = 0.9 * v0[i] + gi;
            let step = if nesterov {
                gi + 0.9 * want_v[i]
            } else {
                want_v[i]
            };
            want_p[i] = p0[i] - 0.1 * step;
        }
        assert_close("sgd p", &download_exact(be, &p, len)?, &want_p, TOL);
        assert_close("sgd v", &download_exact(be, &v, len)?, &want_v, TOL);
    }
    let m0 = randn(16, len, 0.1);
    let s0: Vec<f64> = randn(17, len, 0.1).iter().map(|v| v * v).collect();
    let h = AdamHyper {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 3,
    };
    let (mut p, mut m, mut s) = (upload(be, &p0)?, upload(be, &m0)?, upload(be, &s0)?);
    be.adam_step(&h, &mut p, &upload(be, &g)?, &mut m, &mut s, len)?;
    let mut want = vec![0.0; len];
    for i in 0..len {
        let mi = 0.9 * m0[i] + 0.1 * g[i];
        let si = 0.999 * s0[i] + 0.001 * g[i] * g[i];
        let mhat = mi / (1.0 - 0.9f64.powi(3));
        let shat = si / (1.0 - 0.999f64.powi(3));
        want[i] = p0[i] - 0.01 * mhat / (shat.sqrt() + 1e-8);
    }
    assert_close("adam p", &download_exact(be, &p, len)?, &want, 1e-4);
    Ok(())
}
test_device!(optimizer_steps_match);

fn softmax_and_quantisation_match<B: Backend>(be: &B) -> Result<()> {
    let (rows, classes) = (9, 10);
    let logits = randn(18, rows * classes, 2.0);
    let labels: Vec<u32> = (0..rows as u32).map(|r| r % 10).collect();
    let mut lab = be.alloc_idx(rows)?;
    be.upload_idx(&labels, &mut lab)?;
    let mut d = poisoned(be, rows * classes)?;
    let stats = be.softmax_xent(&upload(be, &logits)?, &lab, rows, classes, Some(&mut d))?;
    let want = xent(&to_f64(&to_f32(&logits)), &labels, classes);
    assert!((stats.loss_sum / rows as f64 - want).abs() < 1e-5);
    let got = download(be, &d, rows * classes)?;
    for r in 0..rows {
        let row_sum: f32 = got[r * classes..(r + 1) * classes].iter().sum();
        assert!(row_sum.abs() < 1e-6, "softmax gradient rows sum to zero");
    }
    // int8 with error feedback: codes, scales and residual all match the
    // host reference.
    let len = 1000;
    let block = 64;
    let x = randn(19, len, 0.01);
    let r0 = randn(20, len, 0.001);
    let mut r = upload(be, &r0)?;
    let mut codes = vec![0i8; len];
    let mut scales = vec![0.0f32; len.div_ceil(block)];
    be.quantize_int8_ef(
        &upload(be, &x)?,
        &mut r,
        len,
        block,
        &mut codes,
        &mut scales,
    )?;
    let mut ref_r = to_f32(&r0);
    let mut ref_codes = vec![0i8; len];
    let mut ref_scales = vec![0.0f32; scales.len()];
    fairgrid_kernels::compress::int8::quantize_ef(
        &to_f32(&x),
        &mut ref_r,
        block,
        &mut ref_codes,
        &mut ref_scales,
    )?;
    assert_eq!(codes, ref_codes);
    assert_eq!(scales, ref_scales);
    assert_close(
        "residual",
        &download_exact(be, &r, len)?,
        &to_f64(&ref_r),
        1e-6,
    );
    let mut out = poisoned(be, len)?;
    be.dequantize_int8(&codes, &scales, block, &mut out)?;
    let want: Vec<f64> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| f64::from(c) * f64::from(scales[i / block]))
        .collect();
    assert_close("dequantize", &download(be, &out, len)?, &want, 1e-7);
    Ok(())
}
test_device!(softmax_and_quantisation_match);
