//! GELU, tanh and dropout on the CPU, split across threads by element
//! ranges (each element depends only on itself, so any split gives the
//! same bits). `exp`, `erf` and `tanh` come from the `libm` crate (musl's
//! algorithms in Rust), not the platform's maths library, whose last bits
//! differ between libc builds: an audit replays a round exactly.

use super::elementwise::{check, par_ranges};
use super::parallel::{Disjoint, Workers};
use crate::backend::{Activation, DropoutMask};
use crate::error::Result;
use crate::rng::dropout_keeps;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2 * pi)`.
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * FRAC_1_SQRT_2))
}

fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * libm::expf(-0.5 * x * x);
    cdf + x * pdf
}

pub(crate) fn activation_forward(
    workers: &Workers,
    kind: Activation,
    x: &[f32],
    y: &mut [f32],
    len: usize,
) -> Result<()> {
    check("activation_forward", "input", x.len(), len)?;
    check("activation_forward", "output", y.len(), len)?;
    let y = Disjoint::new(&mut y[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: `par_ranges` hands out disjoint ranges.
        let out = unsafe { y.range(r.clone()) };
        for (o, &v) in out.iter_mut().zip(&x[r]) {
            *o = match kind {
                Activation::Gelu => gelu(v),
                Activation::Tanh => libm::tanhf(v),
            };
        }
    });
    Ok(())
}

pub(crate) fn activation_backward(
    workers: &Workers,
    kind: Activation,
    (x, y): (&[f32], &[f32]),
    dy: &[f32],
    dx: &mut [f32],
    len: usize,
) -> Result<()> {
    for (what, have) in [
        ("input", x.len()),
        ("output", y.len()),
        ("output gradient", dy.len()),
    ] {
        check("activation_backward", what, have, len)?;
    }
    check("activation_backward", "input gradient", dx.len(), len)?;
    let dx = Disjoint::new(&mut dx[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges.
        let out = unsafe { dx.range(r.clone()) };
        for (i, o) in r.zip(out.iter_mut()) {
            let slope = match kind {
                Activation::Gelu => gelu_grad(x[i]),
                Activation::Tanh => 1.0 - y[i] * y[i],
            };
            *o = dy[i] * slope;
        }
    });
    Ok(())
}

pub(crate) fn dropout(
    workers: &Workers,
    mask: &DropoutMask,
    x: &[f32],
    y: &mut [f32],
    len: usize,
) -> Result<()> {
    check("dropout", "input", x.len(), len)?;
    check("dropout", "output", y.len(), len)?;
    let y = Disjoint::new(&mut y[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges.
        let out = unsafe { y.range(r.clone()) };
        for (i, o) in r.zip(out.iter_mut()) {
            *o = if dropout_keeps(mask.seed, i as u64, mask.threshold) {
                x[i] * mask.scale
            } else {
                0.0
            };
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_pytorch_values() {
        // torch.nn.functional.gelu(torch.tensor([-3., -1., 0., 0.5, 2.]))
        let want = [-0.004_049_65, -0.158_655_25, 0.0, 0.345_731_14, 1.954_499_8];
        for (x, w) in [-3.0f32, -1.0, 0.0, 0.5, 2.0].into_iter().zip(want) {
            assert!((gelu(x) - w).abs() < 1e-6, "gelu({x}) = {}", gelu(x));
        }
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_is_a_function_of_the_seed() {
        let threshold = (0.3f64 * f64::from(1u32 << 24)).round() as u32;
        let kept = (0..100_000u64)
            .filter(|&i| dropout_keeps(7, i, threshold))
            .count();
        assert!((69_000..71_000).contains(&kept), "{kept}");
        let a: Vec<bool> = (0..64).map(|i| dropout_keeps(7, i, threshold)).collect();
        let b: Vec<bool> = (0..64).map(|i| dropout_keeps(8, i, threshold)).collect();
        assert_ne!(a, b);
        assert!((0..64).all(|i| dropout_keeps(1, i, 0)), "p = 0 keeps all");
    }
}
