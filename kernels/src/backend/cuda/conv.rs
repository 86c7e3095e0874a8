//! Convolution and max pooling on the GPU, channels-last.
//!
//! Forward: `Y[rows, C_out] = col[rows, K*K*C_in] * W^T` (im2col + one
//! cuBLAS GEMM; the im2col launch also writes the bias into `Y`, and the
//! GEMM accumulates onto it). Backward re-unfolds the input (cheaper than
//! keeping the largest tensor of the step), computes `dW = dY^T col` and,
//! when asked, `dcol = dY W` into the same scratch, gathered back onto the
//! input by col2im; the bias gradient is a two-stage column sum. Batches
//! whose unfolded input would exceed the scratch cap are processed in
//! chunks of samples.
//!
//! Layers whose patch is short (a first layer over one or three channels)
//! skip im2col: a direct kernel computes the output and another the weight
//! and bias gradients, since GEMMs with K or N = 9 would only add memory
//! traffic. im2col, col2im and pooling give one warp to each pixel with
//! lanes over channels (coalesced, coordinates decoded once per pixel)
//! when there are at least 8 channels, and one thread per element below.

use cudarc::driver::LaunchConfig;

use super::{CudaBackend, CudaBuf, CudaIdxBuf, State, check, count, launch};
use crate::backend::cpu::{conv::validate as validate_conv, pool::validate as validate_pool};
use crate::backend::{Backend, Conv2dGeometry, GemmSpec, PoolGeometry};
use crate::error::{KernelError, Result};

/// Largest im2col scratch, in floats (64 MiB): a batch of 256 of the zoo
/// CNN's second layer fits in one chunk.
const COL_CAP: usize = 1 << 24;
/// Patches up to this length use the direct kernels (the weight-gradient
/// kernel keeps `patch + 1` sums per lane in 29 shared-memory slots).
const DIRECT_PATCH: usize = 27;
/// Shared memory the direct forward kernel may use for the weights.
const DIRECT_SMEM_BYTES: usize = 48 << 10;
/// Channels from which the warp-per-pixel kernels are used.
const WARP_CHANNELS: usize = 8;
/// Blocks of the direct weight-gradient kernel (a fixed count for a given
/// geometry, so the sums are reproducible).
const DIRECT_GRAD_BLOCKS: usize = 512;

fn direct(g: &Conv2dGeometry) -> bool {
    g.patch_len() <= DIRECT_PATCH && g.patch_len() * g.out_c * 4 <= DIRECT_SMEM_BYTES
}

/// Mirrors `struct Conv` in `cu/common.cuh`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvParams {
    n: i32,
    h: i32,
    w: i32,
    c: i32,
    k: i32,
    s: i32,
    p: i32,
    oh: i32,
    ow: i32,
    co: i32,
}

/// Mirrors `struct Pool` in `cu/common.cuh`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct PoolParams {
    n: i32,
    h: i32,
    w: i32,
    c: i32,
    k: i32,
    s: i32,
    oh: i32,
    ow: i32,
}

fn dim(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| KernelError::shape(op, "a dimension below 2^31", v))
}

fn conv_params(op: &'static str, g: &Conv2dGeometry) -> Result<ConvParams> {
    // Every index a kernel computes must fit its 32-bit arithmetic.
    count(op, g.input_len())?;
    count(op, g.output_len())?;
    Ok(ConvParams {
        n: dim(op, g.batch)?,
        h: dim(op, g.in_h)?,
        w: dim(op, g.in_w)?,
        c: dim(op, g.in_c)?,
        k: dim(op, g.kernel)?,
        s: dim(op, g.stride)?,
        p: dim(op, g.pad)?,
        oh: dim(op, g.out_h())?,
        ow: dim(op, g.out_w())?,
        co: dim(op, g.out_c)?,
    })
}

/// Samples per im2col chunk: as many as fit the cap (at least one), with
/// every chunk-local index below 2^31.
fn chunk_samples(op: &'static str, g: &Conv2dGeometry) -> Result<usize> {
    let per_sample = g.out_h() * g.out_w() * g.patch_len().max(g.out_c);
    let chunk = (COL_CAP / per_sample.max(1)).clamp(1, g.batch.max(1));
    if chunk * per_sample > i32::MAX as usize {
        return Err(KernelError::shape(
            op,
            "one sample's unfolded input below 2^31",
            per_sample,
        ));
    }
    Ok(chunk)
}

pub(super) fn forward(
    be: &CudaBackend,
    g: &Conv2dGeometry,
    x: &CudaBuf,
    w: &CudaBuf,
    b: &CudaBuf,
    y: &mut CudaBuf,
) -> Result<()> {
    let op = "conv2d_forward";
    validate_conv(g)?;
    check(op, "input", x.len(), g.input_len())?;
    check(op, "weight", w.len(), g.weight_len())?;
    check(op, "bias", b.len(), g.out_c)?;
    check(op, "output", y.len(), g.output_len())?;
    let p = conv_params(op, g)?;
    if g.batch == 0 {
        return Ok(());
    }
    let pixels = g.out_h() * g.out_w();
    if direct(g) {
        let cfg = LaunchConfig {
            shared_mem_bytes: (g.patch_len() * g.out_c * 4) as u32,
            ..be.core.warp_grid(g.batch * pixels)
        };
        return launch!(
            be,
            conv_direct,
            cfg,
            [x.ptr(), w.ptr(), b.ptr(), y.ptr(), p]
        );
    }
    let patch = g.patch_len();
    let chunk = chunk_samples(op, g)?;
    // Held for the whole op: the scratch is ours until the last launch.
    let mut state = be.state();
    let col = be.grow(&mut state.col, chunk * pixels * patch)?.ptr();
    let mut n0 = 0;
    while n0 < g.batch {
        let samples = chunk.min(g.batch - n0);
        let rows = samples * pixels;
        let y_chunk = y.ptr() + 4 * (n0 * pixels * g.out_c) as u64;
        unfold(be, g, p, x.ptr(), col, n0 * pixels, rows, y_chunk, b.ptr())?;
        let spec = GemmSpec {
            trans_b: true,
            beta: 1.0,
            ..GemmSpec::new(rows, g.out_c, patch)
        };
        be.blas.gemm_raw(&spec, col, w.ptr(), y_chunk)?;
        n0 += samples;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    be: &CudaBackend,
    g: &Conv2dGeometry,
    x: &CudaBuf,
    w: &CudaBuf,
    dy: &CudaBuf,
    dw: &mut CudaBuf,
    db: &mut CudaBuf,
    dx: Option<&mut CudaBuf>,
) -> Result<()> {
    let op = "conv2d_backward";
    validate_conv(g)?;
    check(op, "input", x.len(), g.input_len())?;
    check(op, "weight", w.len(), g.weight_len())?;
    check(op, "output gradient", dy.len(), g.output_len())?;
    check(op, "weight gradient", dw.len(), g.weight_len())?;
    check(op, "bias gradient", db.len(), g.out_c)?;
    if let Some(dx) = &dx {
        check(op, "input gradient", dx.len(), g.input_len())?;
    }
    let p = conv_params(op, g)?;
    let pixels = g.out_h() * g.out_w();
    let patch = g.patch_len();
    if g.batch == 0 || pixels == 0 {
        // Empty sums: zero gradients.
        be.fill(dw, g.weight_len(), 0.0)?;
        be.fill(db, g.out_c, 0.0)?;
        if let Some(dx) = dx {
            be.fill(dx, g.input_len(), 0.0)?;
        }
        return Ok(());
    }
    // Held for the whole op: the scratch is ours until the last launch.
    let mut state = be.state();
    let short = direct(g);
    if short {
        direct_weight_grad(be, &mut state, g, p, x.ptr(), dy.ptr(), dw.ptr(), db.ptr())?;
        if dx.is_none() {
            return Ok(());
        }
    }
    let chunk = chunk_samples(op, g)?;
    let col = be.grow(&mut state.col, chunk * pixels * patch)?.ptr();
    let dx_ptr = dx.map(|d| d.ptr());
    let mut n0 = 0;
    while n0 < g.batch {
        let samples = chunk.min(g.batch - n0);
        let rows = samples * pixels;
        let dy_chunk = dy.ptr() + 4 * (n0 * pixels * g.out_c) as u64;
        if !short {
            unfold(be, g, p, x.ptr(), col, n0 * pixels, rows, 0, 0)?;
            // dW (+)= dY^T col
            let spec = GemmSpec {
                trans_a: true,
                beta: if n0 == 0 { 0.0 } else { 1.0 },
                ..GemmSpec::new(g.out_c, patch, rows)
            };
            be.blas.gemm_raw(&spec, dy_chunk, col, dw.ptr())?;
        }
        if let Some(dx_ptr) = dx_ptr {
            // dcol = dY W, into the scratch the product above has read.
            let spec = GemmSpec::new(rows, patch, g.out_c);
            be.blas.gemm_raw(&spec, dy_chunk, w.ptr(), col)?;
            let args = (col, dx_ptr, p, n0 as u32, samples as u32);
            if g.in_c >= WARP_CHANNELS {
                let cfg = be.core.warp_grid(samples * g.in_h * g.in_w);
                launch!(
                    be,
                    col2im_rows,
                    cfg,
                    [args.0, args.1, args.2, args.3, args.4]
                )?;
            } else {
                let cfg = be.core.grid(samples * g.in_h * g.in_w * g.in_c);
                launch!(be, col2im, cfg, [args.0, args.1, args.2, args.3, args.4])?;
            }
        }
        n0 += samples;
    }
    if short {
        return Ok(());
    }
    column_sums(
        be,
        &mut state,
        dy.ptr(),
        g.batch * pixels,
        g.out_c,
        db.ptr(),
    )
}

/// im2col of output pixels `row0..row0 + rows` into `col`; with `y` (not
/// 0), also the bias into those pixels' outputs.
#[allow(clippy::too_many_arguments)]
fn unfold(
    be: &CudaBackend,
    g: &Conv2dGeometry,
    p: ConvParams,
    x: u64,
    col: u64,
    row0: usize,
    rows: usize,
    y: u64,
    bias: u64,
) -> Result<()> {
    let (row0, count) = (row0 as u32, rows as u32);
    if g.in_c >= WARP_CHANNELS {
        let cfg = be.core.warp_grid(rows);
        launch!(be, im2col_rows, cfg, [x, col, p, row0, count, y, bias])
    } else {
        let outputs = if y == 0 { 0 } else { g.out_c };
        let cfg = be.core.grid(rows * g.patch_len().max(outputs));
        launch!(be, im2col, cfg, [x, col, p, row0, count, y, bias])
    }
}

/// Weight and bias gradients of a short-patch layer, without im2col.
#[allow(clippy::too_many_arguments)]
fn direct_weight_grad(
    be: &CudaBackend,
    state: &mut State,
    g: &Conv2dGeometry,
    p: ConvParams,
    x: u64,
    dy: u64,
    dw: u64,
    db: u64,
) -> Result<()> {
    let pixels = g.batch * g.out_h() * g.out_w();
    let blocks = pixels.div_ceil(256).clamp(1, DIRECT_GRAD_BLOCKS);
    let slots = g.out_c * (g.patch_len() + 1);
    let partial = be.grow(&mut state.partial_sums, blocks * slots)?.ptr();
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        ..be.core.warp_grid(1)
    };
    launch!(be, conv_direct_weight_grad, cfg, [x, dy, partial, p])?;
    let finish = LaunchConfig {
        grid_dim: (slots as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(
        be,
        conv_direct_weight_finish,
        finish,
        [partial, blocks as u32, p, dw, db]
    )
}

/// Rows per block of the column-sum kernel: enough work per thread, and
/// at most [`COLSUM_CHUNKS`] blocks down the rows.
const COLSUM_MIN_ROWS: usize = 256;
const COLSUM_CHUNKS: usize = 1024;

/// `out[c] = sum_r x[r, c]` (lengths checked by the caller), in two
/// deterministic stages (see `column_partials` in elementwise.cu).
pub(super) fn column_sums(
    be: &CudaBackend,
    state: &mut State,
    x: u64,
    rows: usize,
    cols: usize,
    out: u64,
) -> Result<()> {
    if cols == 0 {
        return Ok(());
    }
    let op = "sum_rows";
    let n = count(op, cols)?;
    if rows == 0 {
        return launch!(be, fill_f32, be.core.grid(cols), [out, n, 0.0f32]);
    }
    count(op, rows * cols)?;
    let per_block = rows.div_ceil(COLSUM_CHUNKS).max(COLSUM_MIN_ROWS);
    let chunks = rows.div_ceil(per_block);
    let partial = be.grow(&mut state.partial_sums, chunks * cols)?.ptr();
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(32) as u32, chunks as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    launch!(
        be,
        column_partials,
        cfg,
        [x, rows as u32, n, per_block as u32, partial]
    )?;
    let finish = LaunchConfig {
        grid_dim: (n, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(be, column_finish, finish, [partial, chunks as u32, n, out])
}

pub(super) fn pool_params(op: &'static str, g: &PoolGeometry) -> Result<PoolParams> {
    count(op, g.input_len())?;
    Ok(PoolParams {
        n: dim(op, g.batch)?,
        h: dim(op, g.in_h)?,
        w: dim(op, g.in_w)?,
        c: dim(op, g.channels)?,
        k: dim(op, g.kernel)?,
        s: dim(op, g.stride)?,
        oh: dim(op, g.out_h())?,
        ow: dim(op, g.out_w())?,
    })
}

pub(super) fn maxpool_forward(
    be: &CudaBackend,
    g: &PoolGeometry,
    x: &CudaBuf,
    y: &mut CudaBuf,
    argmax: &mut CudaIdxBuf,
) -> Result<()> {
    let op = "maxpool_forward";
    validate_pool(g)?;
    check(op, "input", x.len(), g.input_len())?;
    check(op, "output", y.len(), g.output_len())?;
    check(op, "argmax", argmax.len(), g.output_len())?;
    let p = pool_params(op, g)?;
    if g.output_len() == 0 {
        return Ok(());
    }
    let args = (x.ptr(), y.ptr(), argmax.ptr(), p);
    if g.channels >= WARP_CHANNELS {
        let cfg = be.core.warp_grid(g.batch * g.out_h() * g.out_w());
        launch!(
            be,
            maxpool_forward_rows,
            cfg,
            [args.0, args.1, args.2, args.3]
        )
    } else {
        let cfg = be.core.grid(g.output_len());
        launch!(be, maxpool_forward, cfg, [args.0, args.1, args.2, args.3])
    }
}

pub(super) fn maxpool_backward(
    be: &CudaBackend,
    g: &PoolGeometry,
    dy: &CudaBuf,
    argmax: &CudaIdxBuf,
    dx: &mut CudaBuf,
) -> Result<()> {
    let op = "maxpool_backward";
    validate_pool(g)?;
    check(op, "output gradient", dy.len(), g.output_len())?;
    check(op, "argmax", argmax.len(), g.output_len())?;
    check(op, "input gradient", dx.len(), g.input_len())?;
    let p = pool_params(op, g)?;
    if g.input_len() == 0 {
        return Ok(());
    }
    be.state().faults_dirty = true;
    let args = (dy.ptr(), argmax.ptr(), dx.ptr(), p, be.faults.ptr());
    if g.channels >= WARP_CHANNELS {
        let cfg = be.core.warp_grid(g.batch * g.in_h * g.in_w);
        launch!(
            be,
            maxpool_backward_rows,
            cfg,
            [args.0, args.1, args.2, args.3, args.4]
        )
    } else {
        let cfg = be.core.grid(g.input_len());
        launch!(
            be,
            maxpool_backward,
            cfg,
            [args.0, args.1, args.2, args.3, args.4]
        )
    }
}
