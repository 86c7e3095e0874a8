//! Softmax cross-entropy on the CPU, fused with its gradient.

use super::elementwise::check;
use crate::backend::LossStats;
use crate::error::{KernelError, Result};

pub(crate) fn softmax_xent(
    logits: &[f32],
    labels: &[u32],
    rows: usize,
    classes: usize,
    mut dlogits: Option<&mut [f32]>,
) -> Result<LossStats> {
    if classes == 0 {
        return Err(KernelError::config("softmax classes", "zero classes"));
    }
    check("softmax_xent", "logits", logits.len(), rows * classes)?;
    check("softmax_xent", "labels", labels.len(), rows)?;
    if let Some(d) = &dlogits {
        check("softmax_xent", "logit gradient", d.len(), rows * classes)?;
    }
    let mut stats = LossStats::default();
    let inv_rows = 1.0 / rows.max(1) as f32;
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let label = labels[r] as usize;
        if label >= classes {
            return Err(KernelError::shape(
                "softmax_xent",
                format!("labels below {classes}"),
                format!("label {label} at row {r}"),
            ));
        }
        let mut max = f32::NEG_INFINITY;
        let mut best = 0;
        for (c, &v) in row.iter().enumerate() {
            // A NaN logit takes over and poisons the loss, as it should.
            if v > max || v.is_nan() {
                max = v;
                best = c;
            }
        }
        // libm's exp and log, not the platform's: the same bits whatever
        // libc the node runs on (audits replay rounds exactly).
        let mut denom = 0.0f64;
        for &v in row {
            denom += libm::exp(f64::from(v - max));
        }
        let log_denom = libm::log(denom);
        stats.loss_sum += log_denom - f64::from(row[label] - max);
        if best == label {
            stats.correct += 1;
        }
        if let Some(d) = dlogits.as_deref_mut() {
            let drow = &mut d[r * classes..(r + 1) * classes];
            for (c, (g, &v)) in drow.iter_mut().zip(row).enumerate() {
                let p = libm::exp(f64::from(v - max) - log_denom) as f32;
                let target = if c == label { 1.0 } else { 0.0 };
                *g = (p - target) * inv_rows;
            }
        }
    }
    Ok(stats)
}
