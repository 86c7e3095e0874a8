//! Fused optimizer updates on the CPU: one pass over parameter, gradient
//! and state per step.

use super::elementwise::{check, par_ranges};
use super::parallel::{Disjoint, Workers};
use super::simd::multiversion;
use crate::backend::{AdamHyper, SgdHyper};
use crate::error::Result;

pub(crate) fn sgd_step(
    workers: &Workers,
    h: &SgdHyper,
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    len: usize,
) -> Result<()> {
    check("sgd_step", "param", param.len(), len)?;
    check("sgd_step", "grad", grad.len(), len)?;
    check("sgd_step", "velocity", velocity.len(), len)?;
    let p = Disjoint::new(&mut param[..len]);
    let v = Disjoint::new(&mut velocity[..len]);
    let SgdHyper {
        lr,
        momentum,
        nesterov,
        weight_decay,
    } = *h;
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges from `par_ranges`.
        let (p, v) = unsafe { (p.range(r.clone()), v.range(r.clone())) };
        if nesterov {
            sgd_kernel::<true>(lr, momentum, weight_decay, p, &grad[r], v);
        } else {
            sgd_kernel::<false>(lr, momentum, weight_decay, p, &grad[r], v);
        }
    });
    Ok(())
}

pub(crate) fn adam_step(
    workers: &Workers,
    h: &AdamHyper,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    len: usize,
) -> Result<()> {
    check("adam_step", "param", param.len(), len)?;
    check("adam_step", "grad", grad.len(), len)?;
    check("adam_step", "first moment", m.len(), len)?;
    check("adam_step", "second moment", v.len(), len)?;
    let step = h.step.max(1) as i32;
    let bias1 = 1.0 - f64::from(h.beta1).powi(step);
    let bias2 = 1.0 - f64::from(h.beta2).powi(step);
    // p -= lr / bias1 * m / (sqrt(v / bias2) + eps)
    let step_size = (f64::from(h.lr) / bias1) as f32;
    let inv_sqrt_bias2 = (1.0 / bias2.sqrt()) as f32;
    let (b1, b2, eps, wd) = (h.beta1, h.beta2, h.eps, h.weight_decay);
    let p = Disjoint::new(&mut param[..len]);
    let m = Disjoint::new(&mut m[..len]);
    let v = Disjoint::new(&mut v[..len]);
    par_ranges(workers, len, |r| {
        // SAFETY: disjoint ranges from `par_ranges`.
        let (p, m, v) = unsafe { (p.range(r.clone()), m.range(r.clone()), v.range(r.clone())) };
        let consts = [b1, b2, eps, wd, step_size, inv_sqrt_bias2];
        adam_kernel(consts, p, &grad[r], m, v);
    });
    Ok(())
}

fn sgd_kernel<const NESTEROV: bool>(
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    p: &mut [f32],
    grad: &[f32],
    v: &mut [f32],
) {
    multiversion! {
        fn run(lr: f32, momentum: f32, weight_decay: f32, nesterov: bool, p: &mut [f32], grad: &[f32], v: &mut [f32]) {
            for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(grad) {
                let g = g + weight_decay * *p;
                *v = momentum * *v + g;
                let step = if nesterov { g + momentum * *v } else { *v };
                *p -= lr * step;
            }
        }
    }
    run(lr, momentum, weight_decay, NESTEROV, p, grad, v);
}

multiversion! {
    /// `consts` = beta1, beta2, eps, weight decay, step size, 1/sqrt(bias2).
    fn adam_kernel(consts: [f32; 6], p: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let [b1, b2, eps, wd, step_size, inv_sqrt_bias2] = consts;
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad) {
            let g = g + wd * *p;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * *m / (v.sqrt() * inv_sqrt_bias2 + eps);
        }
    }
}
