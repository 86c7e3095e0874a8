//! Elementwise ops, bias and reductions on the CPU. Large ones are split
//! statically across threads; small ones run inline.

use super::parallel::{Disjoint, Workers, split};
use super::simd::multiversion;
use crate::error::{KernelError, Result};

multiversion! {
    fn relu_kernel(x: &[f32], y: &mut [f32]) {
        for (o, &i) in y.iter_mut().zip(x) {
            // NaN passes through (as in PyTorch) so that it is detected later.
            *o = if i > 0.0 || i.is_nan() { i } else { 0.0 };
        }
    }
}

multiversion! {
    fn relu_backward_kernel(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((o, &yv), &g) in dx.iter_mut().zip(y).zip(dy) {
            *o = if yv > 0.0 { g } else { 0.0 };
        }
    }
}

multiversion! {
    fn axpy_kernel(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (o, v) in y.iter_mut().zip(x) {
            *o += alpha * v;
        }
    }
}

multiversion! {
    /// `x[r, c] += bias[c]` for every row of `x`.
    pub(crate) fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// `out[c] += sum_r x[r, c]`.
    pub(crate) fn accumulate_column_sums(x: &[f32], out: &mut [f32]) {
        for row in x.chunks_exact(out.len()) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
    }
}

multiversion! {
    /// `dst += src`.
    pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

multiversion! {
    fn sum_squares_kernel(x: &[f32]) -> f64 {
        // Eight independent f64 lanes keep the loop vectorisable and accurate.
        let mut acc = [0.0f64; 8];
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f64::from(v) * f64::from(v);
            }
        }
        let mut total: f64 = acc.iter().sum();
        for &v in tail {
            total += f64::from(v) * f64::from(v);
        }
        total
    }
}

multiversion! {
    fn u8_scaled_kernel(src: &[u8], scale: f32, dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from(s) * scale;
        }
    }
}

const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

pub(crate) fn check(op: &'static str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(KernelError::shape(
            op,
            format!("{what} of at least {need}"),
            have,
        ));
    }
    Ok(())
}

/// Runs `f(range)` over `0..len` split across threads; `f` gets disjoint
/// ranges.
pub(crate) fn par_ranges(workers: &Workers, len: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    workers.run(len, PARALLEL_MIN_ELEMENTS, |t, parts| {
        f(split(len, parts, t))
    });
}

pub(crate) fn relu_forward(workers: &Workers, x: &[f32], y: &mut [f32], len: usize) -> Result<()> {
    check("relu_forward", "input", x.len(), len)?;
    check("relu_forward", "output", y.len(), len)?;
    let y = Disjoint::new(&mut y[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: `par_ranges` hands out disjoint ranges.
        relu_kernel(&x[r.clone()], unsafe { y.range(r) });
    });
    Ok(())
}

pub(crate) fn relu_backward(
    workers: &Workers,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    len: usize,
) -> Result<()> {
    check("relu_backward", "output", y.len(), len)?;
    check("relu_backward", "output gradient", dy.len(), len)?;
    check("relu_backward", "input gradient", dx.len(), len)?;
    let dx = Disjoint::new(&mut dx[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges.
        relu_backward_kernel(&y[r.clone()], &dy[r.clone()], unsafe { dx.range(r) });
    });
    Ok(())
}

pub(crate) fn add_bias(x: &mut [f32], bias: &[f32], rows: usize, cols: usize) -> Result<()> {
    check("add_bias", "matrix", x.len(), rows * cols)?;
    check("add_bias", "bias", bias.len(), cols)?;
    if cols == 0 {
        return Ok(());
    }
    add_bias_rows(&mut x[..rows * cols], &bias[..cols]);
    Ok(())
}

pub(crate) fn sum_rows(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) -> Result<()> {
    check("sum_rows", "matrix", x.len(), rows * cols)?;
    check("sum_rows", "output", out.len(), cols)?;
    let out = &mut out[..cols];
    out.fill(0.0);
    if cols == 0 {
        return Ok(());
    }
    accumulate_column_sums(&x[..rows * cols], out);
    Ok(())
}

pub(crate) fn axpy(
    workers: &Workers,
    alpha: f32,
    x: &[f32],
    y: &mut [f32],
    len: usize,
) -> Result<()> {
    check("axpy", "x", x.len(), len)?;
    check("axpy", "y", y.len(), len)?;
    let y = Disjoint::new(&mut y[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges.
        axpy_kernel(alpha, &x[r.clone()], unsafe { y.range(r) });
    });
    Ok(())
}

pub(crate) fn sum_squares(x: &[f32], len: usize) -> Result<f64> {
    check("sum_squares", "x", x.len(), len)?;
    Ok(sum_squares_kernel(&x[..len]))
}

pub(crate) fn u8_scaled(src: &[u8], scale: f32, dst: &mut [f32]) -> Result<()> {
    check("upload_u8_scaled", "destination", dst.len(), src.len())?;
    u8_scaled_kernel(src, scale, dst);
    Ok(())
}
