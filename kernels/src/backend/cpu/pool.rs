//! Max pooling on the CPU over channels-last data. The innermost loop runs
//! over channels, which are contiguous, so it vectorises.

use super::parallel::{Disjoint, Workers, split};
use super::simd::multiversion;
use crate::backend::PoolGeometry;
use crate::error::{KernelError, Result};

const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

pub(crate) fn validate(g: &PoolGeometry) -> Result<()> {
    if g.kernel == 0 || g.stride == 0 || g.channels == 0 {
        return Err(KernelError::config(
            "pool geometry",
            format!("zero kernel, stride or channels in {g:?}"),
        ));
    }
    if g.in_h < g.kernel || g.in_w < g.kernel {
        return Err(KernelError::config(
            "pool geometry",
            format!("window larger than the input in {g:?}"),
        ));
    }
    Ok(())
}

fn check(op: &'static str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(KernelError::shape(
            op,
            format!("{what} of at least {need}"),
            have,
        ));
    }
    Ok(())
}

pub(crate) fn forward(
    workers: &Workers,
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    validate(g)?;
    check("maxpool_forward", "input", x.len(), g.input_len())?;
    check("maxpool_forward", "output", y.len(), g.output_len())?;
    check("maxpool_forward", "argmax", argmax.len(), g.output_len())?;
    let (oh, ow, c) = (g.out_h(), g.out_w(), g.channels);
    let out_per = oh * ow * c;
    let y = Disjoint::new(&mut y[..g.output_len()]);
    let arg = Disjoint::new(&mut argmax[..g.output_len()]);
    workers.run(g.input_len(), PARALLEL_MIN_ELEMENTS, |t, parts| {
        let mine = split(g.batch, parts, t);
        // SAFETY: sample ranges of different threads do not overlap.
        let ys = unsafe { y.range(mine.start * out_per..mine.end * out_per) };
        // SAFETY: as above.
        let args = unsafe { arg.range(mine.start * out_per..mine.end * out_per) };
        forward_samples(g, x, ys, args, mine.start, mine.end);
    });
    Ok(())
}

pub(crate) fn backward(
    workers: &Workers,
    g: &PoolGeometry,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    validate(g)?;
    check(
        "maxpool_backward",
        "output gradient",
        dy.len(),
        g.output_len(),
    )?;
    check("maxpool_backward", "argmax", argmax.len(), g.output_len())?;
    check(
        "maxpool_backward",
        "input gradient",
        dx.len(),
        g.input_len(),
    )?;
    let in_per = g.in_h * g.in_w * g.channels;
    let out_per = g.out_h() * g.out_w() * g.channels;
    let dx = Disjoint::new(&mut dx[..g.input_len()]);
    let bad_index = std::sync::atomic::AtomicBool::new(false);
    workers.run(g.input_len(), PARALLEL_MIN_ELEMENTS, |t, parts| {
        let mine = split(g.batch, parts, t);
        let lo = mine.start * in_per;
        // SAFETY: sample ranges of different threads do not overlap.
        let dxs = unsafe { dx.range(lo..mine.end * in_per) };
        let outs = mine.start * out_per..mine.end * out_per;
        if g.kernel == g.stride {
            // Windows do not overlap: write every input position once,
            // with no separate zeroing pass.
            backward_tiled(g, &dy[outs.clone()], &argmax[outs], dxs);
            return;
        }
        dxs.fill(0.0);
        let (oh, ow, c, k) = (g.out_h(), g.out_w(), g.channels, g.kernel);
        for (o, (&pos, &d)) in argmax[outs.clone()].iter().zip(&dy[outs]).enumerate() {
            let pos = pos as usize;
            if pos >= k * k {
                // Not written by `forward`: refuse rather than guess.
                bad_index.store(true, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let (ch, pixel) = (o % c, o / c);
            let (n, oy, ox) = (pixel / (oh * ow), pixel / ow % oh, pixel % ow);
            let (iy, ix) = (oy * g.stride + pos / k, ox * g.stride + pos % k);
            dxs[((n * g.in_h + iy) * g.in_w + ix) * c + ch] += d;
        }
    });
    if bad_index.into_inner() {
        return Err(KernelError::shape(
            "maxpool_backward",
            format!("argmax window positions below {}", g.kernel * g.kernel),
            "a larger position",
        ));
    }
    Ok(())
}

/// One 2x2 window across all channels: the maximum of the four inputs and
/// its position. Values stay in registers and each output is stored once
/// (a conditional store would compile to slow masked stores).
#[inline(always)]
fn window2(src: [&[f32]; 4], out: &mut [f32], idx: &mut [u32]) {
    let c = out.len();
    let (a, b, d, e) = (&src[0][..c], &src[1][..c], &src[2][..c], &src[3][..c]);
    let idx = &mut idx[..c];
    for ch in 0..c {
        let mut best = a[ch];
        let mut pos = 0u32;
        for (p, v) in [(1u32, b[ch]), (2, d[ch]), (3, e[ch])] {
            // Strictly greater keeps the first maximum, as PyTorch does; a
            // NaN also wins, so it propagates.
            let take = v > best || v.is_nan();
            best = if take { v } else { best };
            pos = if take { p } else { pos };
        }
        out[ch] = best;
        idx[ch] = pos;
    }
}

multiversion! {
    /// Forward pass over samples `start..end`; `ys` and `args` start at
    /// sample `start`'s outputs.
    fn forward_samples(
        g: &PoolGeometry,
        x: &[f32],
        ys: &mut [f32],
        args: &mut [u32],
        start: usize,
        end: usize,
    ) {
        let (oh, ow, c) = (g.out_h(), g.out_w(), g.channels);
        let mut o = 0;
        for n in start..end {
            for oy in 0..oh {
                for ox in 0..ow {
                    let out = &mut ys[o * c..(o + 1) * c];
                    let idx = &mut args[o * c..(o + 1) * c];
                    let pixel = |ky: usize, kx: usize| {
                        ((n * g.in_h + oy * g.stride + ky) * g.in_w + ox * g.stride + kx) * c
                    };
                    if g.kernel == 2 {
                        window2(
                            [
                                &x[pixel(0, 0)..][..c],
                                &x[pixel(0, 1)..][..c],
                                &x[pixel(1, 0)..][..c],
                                &x[pixel(1, 1)..][..c],
                            ],
                            out,
                            idx,
                        );
                        o += 1;
                        continue;
                    }
                    let first = pixel(0, 0);
                    out.copy_from_slice(&x[first..first + c]);
                    idx.fill(0);
                    for window_pos in 1..g.kernel * g.kernel {
                        let base = pixel(window_pos / g.kernel, window_pos % g.kernel);
                        let src = &x[base..base + c];
                        let pos = window_pos as u32;
                        for ((o, i), &v) in out.iter_mut().zip(idx.iter_mut()).zip(src) {
                            // Strictly greater keeps the first maximum, as
                            // PyTorch does; a NaN also wins, so it propagates.
                            let take = v > *o || v.is_nan();
                            *o = if take { v } else { *o };
                            *i = if take { pos } else { *i };
                        }
                    }
                    o += 1;
                }
            }
        }

    }
}

multiversion! {
    /// Backward for `kernel == stride`: each input position belongs to at most
    /// one window, so it gets that window's gradient or zero. `dx`, `dy` and
    /// `argmax` hold the same whole samples.
    fn backward_tiled(
        g: &PoolGeometry,
        dy: &[f32],
        argmax: &[u32],
        dx: &mut [f32],
    ) {
        let (oh, ow, c, k) = (g.out_h(), g.out_w(), g.channels, g.kernel);
        let in_per = g.in_h * g.in_w * c;
        let samples = dx.len() / in_per;
        for n in 0..samples {
            let sample = &mut dx[n * in_per..(n + 1) * in_per];
            // Rows and columns past the last full window get no gradient.
            sample[oh * k * g.in_w * c..].fill(0.0);
            for iy in 0..oh * k {
                let row = &mut sample[iy * g.in_w * c..(iy + 1) * g.in_w * c];
                row[ow * k * c..].fill(0.0);
                let oy = iy / k;
                for ix in 0..ow * k {
                let o = ((n * oh + oy) * ow + ix / k) * c;
                let pos = ((iy % k) * k + ix % k) as u32;
                let cell = &mut row[ix * c..(ix + 1) * c];
                for ((d, &a), &grad) in cell.iter_mut().zip(&argmax[o..o + c]).zip(&dy[o..o + c]) {
                    *d = if a == pos { grad } else { 0.0 };
                }
            }
        }
    }
}
}
