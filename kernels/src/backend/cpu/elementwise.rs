//! Elementwise ops, bias and reductions on the CPU. Large ones are split
//! statically across threads; small ones run inline.

use super::parallel::{Disjoint, Workers, split};
use crate::error::{KernelError, Result};

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
        let out = unsafe { y.range(r.clone()) };
        for (o, &i) in out.iter_mut().zip(&x[r]) {
            // NaN passes through (as in PyTorch) so that it is detected later.
            *o = if i > 0.0 || i.is_nan() { i } else { 0.0 };
        }
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
        let out = unsafe { dx.range(r.clone()) };
        for ((o, &yv), &g) in out.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
            *o = if yv > 0.0 { g } else { 0.0 };
        }
    });
    Ok(())
}

pub(crate) fn add_bias(x: &mut [f32], bias: &[f32], rows: usize, cols: usize) -> Result<()> {
    check("add_bias", "matrix", x.len(), rows * cols)?;
    check("add_bias", "bias", bias.len(), cols)?;
    if cols == 0 {
        return Ok(());
    }
    for row in x[..rows * cols].chunks_exact_mut(cols) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
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
    for row in x[..rows * cols].chunks_exact(cols) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
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
        let out = unsafe { y.range(r.clone()) };
        for (o, v) in out.iter_mut().zip(&x[r]) {
            *o += alpha * v;
        }
    });
    Ok(())
}

pub(crate) fn sum_squares(x: &[f32], len: usize) -> Result<f64> {
    check("sum_squares", "x", x.len(), len)?;
    // Eight independent f64 lanes keep the loop vectorisable and accurate.
    let mut acc = [0.0f64; 8];
    let chunks = x[..len].chunks_exact(8);
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
    Ok(total)
}

pub(crate) fn u8_scaled(src: &[u8], scale: f32, dst: &mut [f32]) -> Result<()> {
    check("upload_u8_scaled", "destination", dst.len(), src.len())?;
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from(s) * scale;
    }
    Ok(())
}
