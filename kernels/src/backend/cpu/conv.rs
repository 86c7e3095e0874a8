//! Convolution on the CPU: blocked im2col + GEMM over channels-last data.
//!
//! The batch is split statically across threads; each thread walks its
//! samples a few at a time, unfolding them into an im2col block sized to
//! stay in its L2 cache and multiplying that block straight into the
//! output. With channels-last input and OHWI weights the product needs no
//! transposes: `Y[rows, C_out] = col[rows, KH*KW*C_in] * W^T`, and the
//! output rows are already `[N, H, W, C]`. The backward pass re-unfolds
//! the input instead of keeping the (large) im2col matrix from the forward
//! pass, accumulates the weight gradient of each of a fixed number of
//! batch chunks on its own, and sums those in chunk order, so results are
//! the same bit for bit whatever the thread count.

use super::elementwise::{accumulate_column_sums, add_assign, add_bias_rows};
use super::gemm::{MatMut, MatRef, matmul};
use super::parallel::{Disjoint, Workers, grow, split};
use super::simd::multiversion;
use crate::backend::Conv2dGeometry;
use crate::error::{KernelError, Result};

/// Target size of one im2col block, in floats (512 KiB: half of one
/// core's L2 on current x86 parts).
const COL_BLOCK_FLOATS: usize = 128 * 1024;
/// Below this many multiply-adds a convolution runs on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 17;
/// The backward pass cuts the batch into at most this many chunks, fixed
/// whatever the thread count, and sums their weight gradients in chunk
/// order: a round is then the same bit for bit on 1 or 64 threads (an
/// audit recomputes it on another machine). A chunk holds at least one
/// im2col block, so products keep their size, and the partials at most
/// [`MAX_PARTIAL_FLOATS`] (32 MiB); more threads than chunks wait.
const GRAD_CHUNKS: usize = 64;
const MAX_PARTIAL_FLOATS: usize = 8 << 20;

pub(crate) fn validate(g: &Conv2dGeometry) -> Result<()> {
    let bad = |reason: String| Err(KernelError::config("conv2d geometry", reason));
    if g.kernel == 0 || g.stride == 0 || g.in_c == 0 || g.out_c == 0 {
        return bad(format!("zero kernel, stride or channel count in {g:?}"));
    }
    if g.in_h + 2 * g.pad < g.kernel || g.in_w + 2 * g.pad < g.kernel {
        return bad(format!("kernel larger than the padded input in {g:?}"));
    }
    if g.pad >= g.kernel {
        return bad(format!("padding {} not below kernel {}", g.pad, g.kernel));
    }
    Ok(())
}

fn check_len(op: &'static str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(KernelError::shape(
            op,
            format!("{what} of at least {need}"),
            have,
        ));
    }
    Ok(())
}

/// Samples per im2col block.
fn block_samples(g: &Conv2dGeometry) -> usize {
    let per_sample = g.out_h() * g.out_w() * g.patch_len();
    (COL_BLOCK_FLOATS / per_sample.max(1)).max(1)
}

/// Patch length of a 3x3 kernel over one input channel (the first layer
/// of an image model). Its weight-gradient product has N = 9, too narrow
/// for GEMM to reach speed, so it gets its own register-blocked kernel
/// (measured 1.4x faster here; the forward product stays on GEMM, which
/// was faster than a direct kernel).
const SHORT_PATCH: usize = 9;

fn short_patch(g: &Conv2dGeometry) -> bool {
    g.patch_len() == SHORT_PATCH && g.out_c.is_multiple_of(8)
}

multiversion! {
    /// `dw[co, t] += sum_r col[r, t] * dy[r, co]`, eight output channels at
    /// a time: the nine 8-wide accumulators stay in registers across rows.
    fn short_patch_weight_grad(col: &[f32], dy: &[f32], dw: &mut [f32], out_c: usize) {
        for chunk in 0..out_c / 8 {
            let mut acc = [[0.0f32; 8]; SHORT_PATCH];
            for (c, d) in col.chunks_exact(SHORT_PATCH).zip(dy.chunks_exact(out_c)) {
                let d = &d[chunk * 8..chunk * 8 + 8];
                for (row, &cv) in acc.iter_mut().zip(c) {
                    for (a, &dv) in row.iter_mut().zip(d) {
                        *a += cv * dv;
                    }
                }
            }
            for (tap, row) in acc.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    dw[(chunk * 8 + j) * SHORT_PATCH + tap] += a;
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, with the tiny lengths of single-channel
/// inputs copied inline rather than through a `memcpy` call.
#[inline(always)]
fn copy_into(dst: &mut [f32], src: &[f32]) {
    match dst.len() {
        1 => dst[0] = src[0],
        3 => dst.copy_from_slice(&src[..3]),
        5 => dst.copy_from_slice(&src[..5]),
        _ => dst.copy_from_slice(src),
    }
}

multiversion! {
/// Unfolds `samples` consecutive samples of `x` into `col`, one row of
/// `KH*KW*C_in` per output pixel.
fn im2col(g: &Conv2dGeometry, x: &[f32], samples: usize, col: &mut [f32]) {
    let (oh, ow, k, c) = (g.out_h(), g.out_w(), g.kernel, g.in_c);
    let (ih, iw) = (g.in_h as isize, g.in_w as isize);
    let patch = g.patch_len();
    let kc = k * c;
    let mut row = 0;
    for n in 0..samples {
        let xs = &x[n * g.in_h * g.in_w * c..(n + 1) * g.in_h * g.in_w * c];
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = &mut col[row * patch..(row + 1) * patch];
                let ix0 = (ox * g.stride) as isize - g.pad as isize;
                for ky in 0..k {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    let seg = &mut dst[ky * kc..(ky + 1) * kc];
                    if iy < 0 || iy >= ih {
                        seg.fill(0.0);
                        continue;
                    }
                    let line = iy as usize * g.in_w;
                    if ix0 >= 0 && ix0 + k as isize <= iw {
                        let start = (line + ix0 as usize) * c;
                        copy_into(seg, &xs[start..start + kc]);
                    } else {
                        for kx in 0..k {
                            let ix = ix0 + kx as isize;
                            let cell = &mut seg[kx * c..(kx + 1) * c];
                            if ix < 0 || ix >= iw {
                                cell.fill(0.0);
                            } else {
                                let start = (line + ix as usize) * c;
                                copy_into(cell, &xs[start..start + c]);
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

}

multiversion! {
/// The adjoint of [`im2col`]: adds each column row back onto the input
/// pixels it came from. `dx` must be zeroed by the caller.
fn col2im(g: &Conv2dGeometry, col: &[f32], samples: usize, dx: &mut [f32]) {
    let (oh, ow, k, c) = (g.out_h(), g.out_w(), g.kernel, g.in_c);
    let (ih, iw) = (g.in_h as isize, g.in_w as isize);
    let patch = g.patch_len();
    let kc = k * c;
    let mut row = 0;
    for n in 0..samples {
        let xs = &mut dx[n * g.in_h * g.in_w * c..(n + 1) * g.in_h * g.in_w * c];
        for oy in 0..oh {
            for ox in 0..ow {
                let src = &col[row * patch..(row + 1) * patch];
                let ix0 = (ox * g.stride) as isize - g.pad as isize;
                for ky in 0..k {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= ih {
                        continue;
                    }
                    let seg = &src[ky * kc..(ky + 1) * kc];
                    let line = iy as usize * g.in_w;
                    if ix0 >= 0 && ix0 + k as isize <= iw {
                        let start = (line + ix0 as usize) * c;
                        for (d, s) in xs[start..start + kc].iter_mut().zip(seg) {
                            *d += s;
                        }
                    } else {
                        for kx in 0..k {
                            let ix = ix0 + kx as isize;
                            if ix < 0 || ix >= iw {
                                continue;
                            }
                            let start = (line + ix as usize) * c;
                            for (d, s) in xs[start..start + c].iter_mut().zip(&seg[kx * c..]) {
                                *d += s;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}
}

pub(crate) fn forward(
    workers: &Workers,
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) -> Result<()> {
    validate(g)?;
    check_len("conv2d_forward", "input", x.len(), g.input_len())?;
    check_len("conv2d_forward", "weight", w.len(), g.weight_len())?;
    check_len("conv2d_forward", "bias", b.len(), g.out_c)?;
    check_len("conv2d_forward", "output", y.len(), g.output_len())?;
    let in_per = g.in_h * g.in_w * g.in_c;
    let pixels = g.out_h() * g.out_w();
    let out_per = pixels * g.out_c;
    let patch = g.patch_len();
    let block = block_samples(g);
    let weights_t = MatRef::transposed(&w[..g.weight_len()], patch, g.out_c);
    let bias = &b[..g.out_c];
    let y = Disjoint::new(&mut y[..g.output_len()]);
    let flops = g.output_len() * patch;
    workers.run(flops, PARALLEL_MIN_FLOPS, |t, parts| {
        let mine = split(g.batch, parts, t);
        let mut scratch = workers.scratch(t);
        let mut n0 = mine.start;
        while n0 < mine.end {
            let count = block.min(mine.end - n0);
            let rows = count * pixels;
            let col = grow(&mut scratch.col, rows * patch);
            im2col(g, &x[n0 * in_per..(n0 + count) * in_per], count, col);
            // SAFETY: sample ranges of different threads do not overlap.
            let out = unsafe { y.range(n0 * out_per..(n0 + count) * out_per) };
            matmul(
                MatMut::rows(&mut *out, rows, g.out_c),
                MatRef::rows(col, rows, patch),
                weights_t,
                1.0,
                0.0,
            );
            // The block is still in cache; adding the bias here is cheaper
            // than pre-filling rows for the product to read.
            add_bias_rows(out, bias);
            n0 += count;
        }
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    workers: &Workers,
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dx: Option<&mut [f32]>,
) -> Result<()> {
    validate(g)?;
    check_len("conv2d_backward", "input", x.len(), g.input_len())?;
    check_len("conv2d_backward", "weight", w.len(), g.weight_len())?;
    check_len(
        "conv2d_backward",
        "output gradient",
        dy.len(),
        g.output_len(),
    )?;
    check_len(
        "conv2d_backward",
        "weight gradient",
        dw.len(),
        g.weight_len(),
    )?;
    check_len("conv2d_backward", "bias gradient", db.len(), g.out_c)?;
    if let Some(dx) = &dx {
        check_len("conv2d_backward", "input gradient", dx.len(), g.input_len())?;
    }
    let in_per = g.in_h * g.in_w * g.in_c;
    let pixels = g.out_h() * g.out_w();
    let out_per = pixels * g.out_c;
    let patch = g.patch_len();
    let wlen = g.weight_len();
    let block = block_samples(g);
    let weights = MatRef::rows(&w[..wlen], g.out_c, patch);
    let dx = match dx {
        // With stride 1 and "same" padding, the input gradient is itself a
        // forward convolution of dY with the flipped, channel-transposed
        // kernel: a product with K = KH*KW*C_out and N = C_in, instead of
        // K = C_out plus a col2im scatter. It wins when C_out is short
        // (measured: 32->64 channels 1.45x faster, 64->128 slower).
        Some(dx) if g.stride == 1 && 2 * g.pad + 1 == g.kernel && g.out_c <= 64 && g.in_c >= 16 => {
            input_grad_as_conv(workers, g, w, dy, dx)?;
            None
        }
        other => other,
    };
    let dx = dx.map(|d| Disjoint::new(&mut d[..g.input_len()]));
    let short = short_patch(g);
    let flops = g.output_len() * patch * if dx.is_some() { 2 } else { 1 };
    // One partial weight and bias gradient per chunk of the batch, each
    // summed over its samples in order, then the partials in chunk order:
    // the chunks do not depend on the thread count, so neither does the
    // result.
    let partial_len = wlen + g.out_c;
    let chunks = GRAD_CHUNKS
        .min(g.batch.div_ceil(block))
        .min(MAX_PARTIAL_FLOATS / partial_len)
        .max(1);
    let mut partials_guard = workers.shared_scratch();
    let partials = Disjoint::new(grow(&mut partials_guard, chunks * partial_len));
    workers.run(flops, PARALLEL_MIN_FLOPS, |t, parts| {
        let mut guard = workers.scratch(t);
        let scratch = &mut *guard;
        for chunk in (t..chunks).step_by(parts) {
            // SAFETY: each chunk's partial is written by one thread only.
            let partial = unsafe { partials.range(chunk * partial_len..(chunk + 1) * partial_len) };
            partial.fill(0.0);
            let (chunk_dw, chunk_db) = partial.split_at_mut(wlen);
            let samples = split(g.batch, chunks, chunk);
            let mut n0 = samples.start;
            while n0 < samples.end {
                let count = block.min(samples.end - n0);
                let rows = count * pixels;
                let dy_block = &dy[n0 * out_per..(n0 + count) * out_per];
                let col = grow(&mut scratch.col, rows * patch);
                im2col(g, &x[n0 * in_per..(n0 + count) * in_per], count, col);
                // dW += dY^T * col
                if short {
                    short_patch_weight_grad(col, dy_block, chunk_dw, g.out_c);
                } else {
                    matmul(
                        MatMut::rows(chunk_dw, g.out_c, patch),
                        MatRef::transposed(dy_block, g.out_c, rows),
                        MatRef::rows(col, rows, patch),
                        1.0,
                        1.0,
                    );
                }
                accumulate_column_sums(dy_block, chunk_db);
                if let Some(dx) = &dx {
                    // dcol = dY * W, then fold back onto the input pixels.
                    matmul(
                        MatMut::rows(col, rows, patch),
                        MatRef::rows(dy_block, rows, g.out_c),
                        weights,
                        1.0,
                        0.0,
                    );
                    // SAFETY: sample ranges of different chunks do not overlap.
                    let dx_block = unsafe { dx.range(n0 * in_per..(n0 + count) * in_per) };
                    dx_block.fill(0.0);
                    col2im(g, col, count, dx_block);
                }
                n0 += count;
            }
        }
    });
    let (dw, db) = (&mut dw[..wlen], &mut db[..g.out_c]);
    for (chunk, partial) in partials_guard[..chunks * partial_len]
        .chunks_exact(partial_len)
        .enumerate()
    {
        let (chunk_dw, chunk_db) = partial.split_at(wlen);
        if chunk == 0 {
            dw.copy_from_slice(chunk_dw);
            db.copy_from_slice(chunk_db);
        } else {
            add_assign(dw, chunk_dw);
            add_assign(db, chunk_db);
        }
    }
    Ok(())
}

/// `dx = conv(dy, W')` with `W'[ci, ky, kx, co] = W[co, K-1-ky, K-1-kx, ci]`,
/// for stride 1 and padding `(K-1)/2`, where that equals the adjoint of the
/// forward convolution.
fn input_grad_as_conv(
    workers: &Workers,
    g: &Conv2dGeometry,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let (k, ci_n, co_n) = (g.kernel, g.in_c, g.out_c);
    let mut flipped = workers.shared_scratch();
    let buf = grow(&mut flipped, g.weight_len() + ci_n);
    let (wt, zero_bias) = buf.split_at_mut(g.weight_len());
    for co in 0..co_n {
        for ky in 0..k {
            for kx in 0..k {
                let src = &w[((co * k + ky) * k + kx) * ci_n..][..ci_n];
                let (fy, fx) = (k - 1 - ky, k - 1 - kx);
                for (ci, &v) in src.iter().enumerate() {
                    wt[((ci * k + fy) * k + fx) * co_n + co] = v;
                }
            }
        }
    }
    zero_bias.fill(0.0);
    let transposed = Conv2dGeometry {
        in_c: co_n,
        out_c: ci_n,
        ..*g
    };
    forward(workers, &transposed, dy, wt, zero_bias, dx)
}
