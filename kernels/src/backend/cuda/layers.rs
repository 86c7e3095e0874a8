//! GELU, tanh, dropout, average pooling and batch normalisation on the
//! device (kernels in `cu/layers.cu`). Batch-norm sums go through per-chunk
//! f64 partials over a grid fixed by the shape, so a run repeats bit for
//! bit on the same GPU.

use cudarc::driver::LaunchConfig;

use super::conv::pool_params;
use super::{CudaBackend, CudaBuf, check, count, launch};
use crate::backend::cpu::pool::validate as validate_pool;
use crate::backend::{Activation, DropoutMask, NormGeometry, PoolGeometry};
use crate::error::Result;

/// Row chunks of the batch-norm partial sums, at most.
const NORM_CHUNKS: usize = 64;
/// Rows per chunk, at least (enough work per thread).
const NORM_MIN_ROWS: usize = 256;

fn activation_code(kind: Activation) -> u32 {
    match kind {
        Activation::Gelu => 0,
        Activation::Tanh => 1,
    }
}

pub(super) fn activation_forward(
    be: &CudaBackend,
    kind: Activation,
    x: &CudaBuf,
    y: &mut CudaBuf,
    len: usize,
) -> Result<()> {
    let op = "activation_forward";
    check(op, "input", x.len(), len)?;
    check(op, "output", y.len(), len)?;
    let n = count(op, len)?;
    if n == 0 {
        return Ok(());
    }
    let code = activation_code(kind);
    launch!(
        be,
        activation_forward,
        be.core.grid(len),
        [x.ptr(), y.ptr(), n, code]
    )
}

pub(super) fn activation_backward(
    be: &CudaBackend,
    kind: Activation,
    (x, y): (&CudaBuf, &CudaBuf),
    dy: &CudaBuf,
    dx: &mut CudaBuf,
    len: usize,
) -> Result<()> {
    let op = "activation_backward";
    for (what, have) in [
        ("input", x.len()),
        ("output", y.len()),
        ("output gradient", dy.len()),
        ("input gradient", dx.len()),
    ] {
        check(op, what, have, len)?;
    }
    let n = count(op, len)?;
    if n == 0 {
        return Ok(());
    }
    let code = activation_code(kind);
    launch!(
        be,
        activation_backward,
        be.core.grid(len),
        [x.ptr(), y.ptr(), dy.ptr(), dx.ptr(), n, code]
    )
}

pub(super) fn dropout(
    be: &CudaBackend,
    mask: &DropoutMask,
    x: &CudaBuf,
    y: &mut CudaBuf,
    len: usize,
) -> Result<()> {
    check("dropout", "input", x.len(), len)?;
    check("dropout", "output", y.len(), len)?;
    let n = count("dropout", len)?;
    if n == 0 {
        return Ok(());
    }
    launch!(
        be,
        dropout,
        be.core.grid(len),
        [x.ptr(), y.ptr(), n, mask.seed, mask.threshold, mask.scale]
    )
}

pub(super) fn avgpool_forward(
    be: &CudaBackend,
    g: &PoolGeometry,
    x: &CudaBuf,
    y: &mut CudaBuf,
) -> Result<()> {
    let op = "avgpool_forward";
    validate_pool(g)?;
    check(op, "input", x.len(), g.input_len())?;
    check(op, "output", y.len(), g.output_len())?;
    let p = pool_params(op, g)?;
    if g.output_len() == 0 {
        return Ok(());
    }
    launch!(
        be,
        avgpool_forward,
        be.core.grid(g.output_len()),
        [x.ptr(), y.ptr(), p]
    )
}

pub(super) fn avgpool_backward(
    be: &CudaBackend,
    g: &PoolGeometry,
    dy: &CudaBuf,
    dx: &mut CudaBuf,
) -> Result<()> {
    let op = "avgpool_backward";
    validate_pool(g)?;
    check(op, "output gradient", dy.len(), g.output_len())?;
    check(op, "input gradient", dx.len(), g.input_len())?;
    let p = pool_params(op, g)?;
    if g.input_len() == 0 {
        return Ok(());
    }
    launch!(
        be,
        avgpool_backward,
        be.core.grid(g.input_len()),
        [dy.ptr(), dx.ptr(), p]
    )
}

fn validate_norm(op: &'static str, g: &NormGeometry) -> Result<(u32, u32)> {
    crate::backend::cpu::norm::validate(op, g)?;
    count(op, g.len())?;
    Ok((g.rows as u32, g.channels as u32))
}

/// Launches the partial sums (mode 0: forward, 1: backward) and returns
/// the partials' device address and the chunk count.
fn norm_partials(
    be: &CudaBackend,
    g: &NormGeometry,
    x: u64,
    dy: u64,
    mean: u64,
    invstd: u64,
    mode: u32,
) -> Result<(u64, u32)> {
    let per_chunk = g.rows.div_ceil(NORM_CHUNKS).max(NORM_MIN_ROWS);
    let chunks = g.rows.div_ceil(per_chunk);
    let mut state = be.state();
    let partial = be
        .grow(&mut state.norm_partials, chunks * 2 * g.channels)?
        .ptr();
    drop(state);
    let cfg = LaunchConfig {
        grid_dim: (g.channels.div_ceil(32) as u32, chunks as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let (rows, c) = (g.rows as u32, g.channels as u32);
    launch!(
        be,
        norm_partials,
        cfg,
        [
            x,
            dy,
            mean,
            invstd,
            rows,
            c,
            per_chunk as u32,
            mode,
            partial
        ]
    )?;
    Ok((partial, chunks as u32))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn batchnorm_forward_train(
    be: &CudaBackend,
    g: &NormGeometry,
    x: &CudaBuf,
    (gamma, beta): (&CudaBuf, &CudaBuf),
    running_mean: &mut CudaBuf,
    running_var: &mut CudaBuf,
    saved_mean: &mut CudaBuf,
    saved_invstd: &mut CudaBuf,
    y: &mut CudaBuf,
) -> Result<()> {
    let op = "batchnorm_forward_train";
    let (rows, c) = validate_norm(op, g)?;
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
        check(op, what, have, g.channels)?;
    }
    let (partial, chunks) = norm_partials(be, g, x.ptr(), 0, 0, 0, 0)?;
    launch!(
        be,
        norm_finish_forward,
        be.core.grid(g.channels),
        [
            partial,
            chunks,
            rows,
            c,
            g.eps,
            g.momentum,
            running_mean.ptr(),
            running_var.ptr(),
            saved_mean.ptr(),
            saved_invstd.ptr()
        ]
    )?;
    let n = g.len() as u32;
    launch!(
        be,
        norm_apply,
        be.core.grid(g.len()),
        [
            x.ptr(),
            saved_mean.ptr(),
            saved_invstd.ptr(),
            gamma.ptr(),
            beta.ptr(),
            y.ptr(),
            n,
            c,
            0u32,
            g.eps
        ]
    )
}

pub(super) fn batchnorm_forward_eval(
    be: &CudaBackend,
    g: &NormGeometry,
    x: &CudaBuf,
    (gamma, beta): (&CudaBuf, &CudaBuf),
    (running_mean, running_var): (&CudaBuf, &CudaBuf),
    y: &mut CudaBuf,
) -> Result<()> {
    let op = "batchnorm_forward_eval";
    let (_, c) = validate_norm(op, g)?;
    check(op, "input", x.len(), g.len())?;
    check(op, "output", y.len(), g.len())?;
    for (what, have) in [
        ("gamma", gamma.len()),
        ("beta", beta.len()),
        ("running mean", running_mean.len()),
        ("running variance", running_var.len()),
    ] {
        check(op, what, have, g.channels)?;
    }
    let n = g.len() as u32;
    launch!(
        be,
        norm_apply,
        be.core.grid(g.len()),
        [
            x.ptr(),
            running_mean.ptr(),
            running_var.ptr(),
            gamma.ptr(),
            beta.ptr(),
            y.ptr(),
            n,
            c,
            1u32,
            g.eps
        ]
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn batchnorm_backward(
    be: &CudaBackend,
    g: &NormGeometry,
    x: &CudaBuf,
    dy: &CudaBuf,
    gamma: &CudaBuf,
    (mean, invstd): (&CudaBuf, &CudaBuf),
    dgamma: &mut CudaBuf,
    dbeta: &mut CudaBuf,
    dx: Option<&mut CudaBuf>,
) -> Result<()> {
    let op = "batchnorm_backward";
    let (rows, c) = validate_norm(op, g)?;
    check(op, "input", x.len(), g.len())?;
    check(op, "output gradient", dy.len(), g.len())?;
    for (what, have) in [
        ("gamma", gamma.len()),
        ("saved mean", mean.len()),
        ("saved inverse std", invstd.len()),
        ("gamma gradient", dgamma.len()),
        ("beta gradient", dbeta.len()),
    ] {
        check(op, what, have, g.channels)?;
    }
    let (partial, chunks) = norm_partials(be, g, x.ptr(), dy.ptr(), mean.ptr(), invstd.ptr(), 1)?;
    launch!(
        be,
        norm_finish_backward,
        be.core.grid(g.channels),
        [partial, chunks, c, dgamma.ptr(), dbeta.ptr()]
    )?;
    let Some(dx) = dx else { return Ok(()) };
    check(op, "input gradient", dx.len(), g.len())?;
    let n = g.len() as u32;
    launch!(
        be,
        norm_input_grad,
        be.core.grid(g.len()),
        [
            x.ptr(),
            dy.ptr(),
            mean.ptr(),
            invstd.ptr(),
            gamma.ptr(),
            dgamma.ptr(),
            dbeta.ptr(),
            dx.ptr(),
            n,
            c,
            rows
        ]
    )
}
