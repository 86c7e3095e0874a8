//! Average pooling on the CPU over channels-last data, split by samples.
//! Windows are summed in a fixed order (row, then column), so results do
//! not depend on the thread count.

use super::elementwise::check;
use super::parallel::{Disjoint, Workers, split};
use super::pool::validate;
use crate::backend::PoolGeometry;
use crate::error::Result;

const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

pub(crate) fn forward(workers: &Workers, g: &PoolGeometry, x: &[f32], y: &mut [f32]) -> Result<()> {
    validate(g)?;
    check("avgpool_forward", "input", x.len(), g.input_len())?;
    check("avgpool_forward", "output", y.len(), g.output_len())?;
    let (oh, ow, c, k) = (g.out_h(), g.out_w(), g.channels, g.kernel);
    let inv = 1.0 / (k * k) as f32;
    let out_per = oh * ow * c;
    let y = Disjoint::new(&mut y[..g.output_len()]);
    workers.run(g.input_len(), PARALLEL_MIN_ELEMENTS, |t, parts| {
        let mine = split(g.batch, parts, t);
        // SAFETY: sample ranges of different threads do not overlap.
        let ys = unsafe { y.range(mine.start * out_per..mine.end * out_per) };
        for (s, n) in mine.enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let out = &mut ys[((s * oh + oy) * ow + ox) * c..][..c];
                    out.fill(0.0);
                    for ky in 0..k {
                        for kx in 0..k {
                            let base =
                                ((n * g.in_h + oy * g.stride + ky) * g.in_w + ox * g.stride + kx)
                                    * c;
                            for (o, &v) in out.iter_mut().zip(&x[base..base + c]) {
                                *o += v;
                            }
                        }
                    }
                    out.iter_mut().for_each(|o| *o *= inv);
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
    dx: &mut [f32],
) -> Result<()> {
    validate(g)?;
    check(
        "avgpool_backward",
        "output gradient",
        dy.len(),
        g.output_len(),
    )?;
    check(
        "avgpool_backward",
        "input gradient",
        dx.len(),
        g.input_len(),
    )?;
    let (oh, ow, c, k) = (g.out_h(), g.out_w(), g.channels, g.kernel);
    let inv = 1.0 / (k * k) as f32;
    let in_per = g.in_h * g.in_w * c;
    let dx = Disjoint::new(&mut dx[..g.input_len()]);
    workers.run(g.input_len(), PARALLEL_MIN_ELEMENTS, |t, parts| {
        let mine = split(g.batch, parts, t);
        // SAFETY: sample ranges of different threads do not overlap.
        let dxs = unsafe { dx.range(mine.start * in_per..mine.end * in_per) };
        dxs.fill(0.0);
        for (s, n) in mine.enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    let grad = &dy[((n * oh + oy) * ow + ox) * c..][..c];
                    for ky in 0..k {
                        for kx in 0..k {
                            let base =
                                ((s * g.in_h + oy * g.stride + ky) * g.in_w + ox * g.stride + kx)
                                    * c;
                            for (d, &v) in dxs[base..base + c].iter_mut().zip(grad) {
                                *d += v * inv;
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(())
}
