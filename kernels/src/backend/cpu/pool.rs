//! Max pooling on the CPU over channels-last data. The innermost loop runs
//! over channels, which are contiguous, so it vectorises.

use super::parallel::{Disjoint, Workers, split};
use crate::backend::PoolGeometry;
use crate::error::{KernelError, Result};

const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

pub(crate) fn validate(g: &PoolGeometry) -> Result<()> {
    if g.kernel == 0 || g.stride == 0 || g.channels == 0 {
        return Err(KernelError::config(
            "max-pool geometry",
            format!("zero kernel, stride or channels in {g:?}"),
        ));
    }
    if g.in_h < g.kernel || g.in_w < g.kernel {
        return Err(KernelError::config(
            "max-pool geometry",
            format!("window larger than the input in {g:?}"),
        ));
    }
    if g.input_len() > u32::MAX as usize {
        return Err(KernelError::config(
            "max-pool geometry",
            "input too large for u32 argmax indices",
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
        let mut o = 0;
        for n in mine {
            for oy in 0..oh {
                for ox in 0..ow {
                    let out = &mut ys[o * c..(o + 1) * c];
                    let idx = &mut args[o * c..(o + 1) * c];
                    let mut first = true;
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            let iy = oy * g.stride + ky;
                            let ix = ox * g.stride + kx;
                            let base = ((n * g.in_h + iy) * g.in_w + ix) * c;
                            let src = &x[base..base + c];
                            if first {
                                out.copy_from_slice(src);
                                for (ch, i) in idx.iter_mut().enumerate() {
                                    *i = (base + ch) as u32;
                                }
                                first = false;
                            } else {
                                for ch in 0..c {
                                    // `>` keeps the first maximum, as PyTorch does;
                                    // `!(<=)` also lets a NaN win, so it propagates.
                                    if !(src[ch] <= out[ch]) {
                                        out[ch] = src[ch];
                                        idx[ch] = (base + ch) as u32;
                                    }
                                }
                            }
                        }
                    }
                    o += 1;
                }
            }
        }
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
        dxs.fill(0.0);
        let outs = mine.start * out_per..mine.end * out_per;
        for (&i, &d) in argmax[outs.clone()].iter().zip(&dy[outs]) {
            // An argmax always points into its own sample; anything else
            // means the buffer was not written by `forward`.
            match (i as usize).checked_sub(lo).and_then(|j| dxs.get_mut(j)) {
                Some(slot) => *slot += d,
                None => bad_index.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
    });
    if bad_index.into_inner() {
        return Err(KernelError::shape(
            "maxpool_backward",
            "argmax indices inside each sample",
            "an index outside its sample",
        ));
    }
    Ok(())
}
