//! Batch normalisation on the CPU over `[rows, channels]`. The per-channel
//! sums run over rows in order on one thread, vectorised across channels
//! and accumulated in f64, so the result does not depend on the thread
//! count (audits recompute rounds bit for bit); the elementwise passes are
//! split by rows.

use super::elementwise::check;
use super::parallel::{Disjoint, Workers, split};
use crate::backend::NormGeometry;
use crate::error::{KernelError, Result};

const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

pub(crate) fn validate(op: &'static str, g: &NormGeometry) -> Result<()> {
    if g.channels == 0 || g.rows == 0 {
        return Err(KernelError::config(op, format!("empty geometry {g:?}")));
    }
    if !(g.eps > 0.0 && g.eps.is_finite() && (0.0..=1.0).contains(&g.momentum)) {
        return Err(KernelError::config(
            op,
            format!("eps {} or momentum {} out of range", g.eps, g.momentum),
        ));
    }
    Ok(())
}

/// Runs `f(rows)` over disjoint row ranges of `out` (`[rows, channels]`).
fn par_rows(
    workers: &Workers,
    g: &NormGeometry,
    out: &mut [f32],
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let c = g.channels;
    let out = Disjoint::new(&mut out[..g.len()]);
    workers.run(g.len(), PARALLEL_MIN_ELEMENTS, |t, parts| {
        let rows = split(g.rows, parts, t);
        // SAFETY: row ranges of different threads do not overlap.
        let mine = unsafe { out.range(rows.start * c..rows.end * c) };
        f(rows, mine);
    });
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_train(
    workers: &Workers,
    g: &NormGeometry,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    running_mean: &mut [f32],
    running_var: &mut [f32],
    saved_mean: &mut [f32],
    saved_invstd: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    let op = "batchnorm_forward_train";
    validate(op, g)?;
    let c = g.channels;
    check(op, "input", x.len(), g.len())?;
    check(op, "output", y.len(), g.len())?;
    for (what, have) in [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("running mean", running_mean.len()),
        ("running variance", running_var.len()),
        ("saved mean", saved_mean.len()),
        ("saved inverse std", saved_invstd.len()),
    ] {
        check(op, what, have, c)?;
    }
    let mut sum = vec![0.0f64; c];
    let mut squares = vec![0.0f64; c];
    for row in x[..g.len()].chunks_exact(c) {
        for ((s, q), &v) in sum.iter_mut().zip(&mut squares).zip(row) {
            let v = f64::from(v);
            *s += v;
            *q += v * v;
        }
    }
    let n = g.rows as f64;
    let momentum = f64::from(g.momentum);
    for ch in 0..c {
        let mean = sum[ch] / n;
        let var = (squares[ch] / n - mean * mean).max(0.0);
        saved_mean[ch] = mean as f32;
        saved_invstd[ch] = (1.0 / (var + f64::from(g.eps)).sqrt()) as f32;
        // One value per channel says nothing of the variance and would pull
        // the running variance toward 0 (a worker holding only a job's
        // one-sample last shard of features); PyTorch refuses such a batch.
        if g.rows < 2 {
            continue;
        }
        let unbiased = var * n / (n - 1.0);
        running_mean[ch] =
            ((1.0 - momentum) * f64::from(running_mean[ch]) + momentum * mean) as f32;
        running_var[ch] =
            ((1.0 - momentum) * f64::from(running_var[ch]) + momentum * unbiased) as f32;
    }
    let (mean, invstd) = (&saved_mean[..c], &saved_invstd[..c]);
    par_rows(workers, g, y, |rows, out| {
        let xs = &x[rows.start * c..rows.end * c];
        for (o_row, x_row) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for ch in 0..c {
                o_row[ch] = (x_row[ch] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
            }
        }
    });
    Ok(())
}

pub(crate) fn forward_eval(
    workers: &Workers,
    g: &NormGeometry,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    (running_mean, running_var): (&[f32], &[f32]),
    y: &mut [f32],
) -> Result<()> {
    let op = "batchnorm_forward_eval";
    validate(op, g)?;
    let c = g.channels;
    check(op, "input", x.len(), g.len())?;
    check(op, "output", y.len(), g.len())?;
    for (what, have) in [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("running mean", running_mean.len()),
        ("running variance", running_var.len()),
    ] {
        check(op, what, have, c)?;
    }
    let invstd: Vec<f32> = running_var[..c]
        .iter()
        .map(|&v| (1.0 / (f64::from(v).max(0.0) + f64::from(g.eps)).sqrt()) as f32)
        .collect();
    par_rows(workers, g, y, |rows, out| {
        let xs = &x[rows.start * c..rows.end * c];
        for (o_row, x_row) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for ch in 0..c {
                o_row[ch] = (x_row[ch] - running_mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
            }
        }
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    workers: &Workers,
    g: &NormGeometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dx: Option<&mut [f32]>,
) -> Result<()> {
    let op = "batchnorm_backward";
    validate(op, g)?;
    let c = g.channels;
    check(op, "input", x.len(), g.len())?;
    check(op, "output gradient", dy.len(), g.len())?;
    for (what, have) in [
        ("gamma", gamma.len()),
        ("saved mean", mean.len()),
        ("saved inverse std", invstd.len()),
        ("gamma gradient", dgamma.len()),
        ("beta gradient", dbeta.len()),
    ] {
        check(op, what, have, c)?;
    }
    let mut sum_dy = vec![0.0f64; c];
    let mut sum_dy_xhat = vec![0.0f64; c];
    for (x_row, dy_row) in x[..g.len()].chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let xhat = (x_row[ch] - mean[ch]) * invstd[ch];
            sum_dy[ch] += f64::from(dy_row[ch]);
            sum_dy_xhat[ch] += f64::from(dy_row[ch] * xhat);
        }
    }
    for ch in 0..c {
        dbeta[ch] = sum_dy[ch] as f32;
        dgamma[ch] = sum_dy_xhat[ch] as f32;
    }
    let Some(dx) = dx else { return Ok(()) };
    check(op, "input gradient", dx.len(), g.len())?;
    let n = g.rows as f32;
    let (dgamma, dbeta) = (&dgamma[..c], &dbeta[..c]);
    par_rows(workers, g, dx, |rows, out| {
        let span = rows.start * c..rows.end * c;
        let rows_in = x[span.clone()]
            .chunks_exact(c)
            .zip(dy[span].chunks_exact(c));
        for (o_row, (x_row, dy_row)) in out.chunks_exact_mut(c).zip(rows_in) {
            for ch in 0..c {
                let xhat = (x_row[ch] - mean[ch]) * invstd[ch];
                o_row[ch] =
                    gamma[ch] * invstd[ch] / n * (n * dy_row[ch] - dbeta[ch] - xhat * dgamma[ch]);
            }
        }
    });
    Ok(())
}
