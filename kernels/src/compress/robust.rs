//! Robust aggregation of workers' deltas, a job option (issue 13's second
//! line of defence, beside audits): a worker that sends a scaled, noised
//! or hostile delta moves the average by an unbounded amount; these rules
//! bound what one worker can do, at some cost in accuracy on honest runs
//! (measured in docs/benchmarks.md, "Robust aggregation").
//!
//! - [`trimmed_mean`]: per coordinate, the `trim` largest and `trim`
//!   smallest values are dropped and the rest averaged, weighted by
//!   samples (coordinate-wise trimmed mean, Yin et al. 2018).
//! - [`centered_clip`]: starting from the coordinate-wise median, each
//!   worker's difference from the centre is clipped to a radius `tau`
//!   and the centre moves by their weighted mean, a few times
//!   (Karimireddy, He and Jaggi 2021). `tau` is the median distance of the
//!   deltas from the coordinate-wise median, so a minority far away is
//!   clipped while honest spread is not: no tuning per model.

use super::weighted_mean;
use crate::error::{KernelError, Result};

/// Iterations of centered clipping (the paper's analysis needs few; one
/// already bounds an outlier's pull, three settle the centre).
pub const CLIP_ITERATIONS: usize = 3;

/// The deltas' common length, after checking they agree and exist.
fn common_len(deltas: &[(&[f32], u64)], what: &'static str) -> Result<usize> {
    let Some(((first, _), _)) = deltas.split_first() else {
        return Err(KernelError::config(what, "no updates to aggregate"));
    };
    let len = first.len();
    if let Some((d, _)) = deltas.iter().find(|(d, _)| d.len() != len) {
        return Err(KernelError::shape(what, len, d.len()));
    }
    if deltas.iter().all(|(_, w)| *w == 0) {
        return Err(KernelError::config(what, "total sample count is zero"));
    }
    Ok(len)
}

/// Coordinate-wise trimmed mean: per coordinate, drops the `trim` largest
/// and `trim` smallest values and averages the rest by their sample
/// weights. With fewer than `2 trim + 1` deltas it trims as many as leave
/// one (the median's neighbourhood).
pub fn trimmed_mean(deltas: &[(&[f32], u64)], trim: usize) -> Result<Vec<f32>> {
    let len = common_len(deltas, "trimmed_mean")?;
    let n = deltas.len();
    let trim = trim.min((n - 1) / 2);
    if trim == 0 {
        return weighted_mean(deltas);
    }
    let mut column: Vec<(f32, u64)> = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(len);
    for j in 0..len {
        column.clear();
        column.extend(deltas.iter().map(|(d, w)| (d[j], *w)));
        column.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let kept = &column[trim..n - trim];
        let weight: u64 = kept.iter().map(|(_, w)| w).sum();
        let value = if weight == 0 {
            // Every kept worker reported no samples: plain mean.
            kept.iter().map(|(v, _)| f64::from(*v)).sum::<f64>() / kept.len() as f64
        } else {
            kept.iter()
                .map(|(v, w)| f64::from(*v) * *w as f64)
                .sum::<f64>()
                / weight as f64
        };
        out.push(value as f32);
    }
    Ok(out)
}

/// Coordinate-wise median (the lower of the two middle values for an even
/// count, so the result is one of the inputs per coordinate).
pub fn coordinate_median(deltas: &[(&[f32], u64)]) -> Result<Vec<f32>> {
    let len = common_len(deltas, "coordinate_median")?;
    let n = deltas.len();
    let mut column: Vec<f32> = Vec::with_capacity(n);
    Ok((0..len)
        .map(|j| {
            column.clear();
            column.extend(deltas.iter().map(|(d, _)| d[j]));
            let mid = (n - 1) / 2;
            *column.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
        })
        .collect())
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// Centered clipping around the coordinate-wise median with the radius
/// `tau` = the median distance of the deltas from it (see the module).
pub fn centered_clip(deltas: &[(&[f32], u64)]) -> Result<Vec<f32>> {
    let len = common_len(deltas, "centered_clip")?;
    let total: u64 = deltas.iter().map(|(_, w)| w).sum();
    let mut centre: Vec<f64> = coordinate_median(deltas)?
        .into_iter()
        .map(f64::from)
        .collect();
    let as_f32 = |c: &[f64]| -> Vec<f32> { c.iter().map(|&v| v as f32).collect() };
    let mut distances: Vec<f64> = deltas
        .iter()
        .map(|(d, _)| distance(d, &as_f32(&centre)))
        .collect();
    distances.sort_unstable_by(f64::total_cmp);
    let tau = distances[(distances.len() - 1) / 2];
    if tau == 0.0 {
        // At least half the deltas are the median itself.
        return Ok(as_f32(&centre));
    }
    let mut step = vec![0.0f64; len];
    for _ in 0..CLIP_ITERATIONS {
        step.iter_mut().for_each(|s| *s = 0.0);
        let c32 = as_f32(&centre);
        for (delta, weight) in deltas {
            let r = distance(delta, &c32);
            let scale = if r > tau { tau / r } else { 1.0 };
            let w = *weight as f64 / total as f64 * scale;
            for ((s, &d), &c) in step.iter_mut().zip(delta.iter()).zip(&centre) {
                *s += w * (f64::from(d) - c);
            }
        }
        for (c, s) in centre.iter_mut().zip(&step) {
            *c += s;
        }
    }
    Ok(as_f32(&centre))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn honest(i: usize) -> Vec<f32> {
        // Around (1, -1, 0.5) with a small spread.
        let e = (i as f32 - 2.0) * 0.01;
        vec![1.0 + e, -1.0 - e, 0.5 + e]
    }

    #[test]
    fn without_outliers_the_rules_agree_with_the_mean() {
        let owned: Vec<Vec<f32>> = (0..5).map(honest).collect();
        let deltas: Vec<(&[f32], u64)> = owned.iter().map(|d| (d.as_slice(), 10)).collect();
        let mean = weighted_mean(&deltas).unwrap();
        for rule in [
            trimmed_mean(&deltas, 1).unwrap(),
            centered_clip(&deltas).unwrap(),
        ] {
            for (a, b) in rule.iter().zip(&mean) {
                assert!((a - b).abs() < 1e-4, "{rule:?} vs {mean:?}");
            }
        }
    }

    #[test]
    fn one_hostile_worker_of_five_is_bounded() {
        let mut owned: Vec<Vec<f32>> = (0..4).map(honest).collect();
        owned.push(vec![-1000.0, 1000.0, 1e6]);
        let deltas: Vec<(&[f32], u64)> = owned.iter().map(|d| (d.as_slice(), 10)).collect();
        let mean = weighted_mean(&deltas).unwrap();
        assert!(mean[2] > 1e5, "the plain mean follows the attacker");
        let truth = [1.0f32, -1.0, 0.5];
        for rule in [
            trimmed_mean(&deltas, 1).unwrap(),
            centered_clip(&deltas).unwrap(),
        ] {
            for (a, b) in rule.iter().zip(&truth) {
                assert!((a - b).abs() < 0.1, "{rule:?}");
            }
        }
    }

    #[test]
    fn trimming_weighs_the_kept_values_by_samples() {
        let a = [0.0f32];
        let b = [1.0f32];
        let c = [2.0f32];
        let d = [100.0f32];
        let deltas: Vec<(&[f32], u64)> = vec![(&a, 1), (&b, 3), (&c, 1), (&d, 1)];
        // Drops 0 and 100; (1 x 3 + 2 x 1) / 4.
        assert_eq!(trimmed_mean(&deltas, 1).unwrap(), vec![1.25]);
        // Too few to trim 2 from each end: trims one.
        assert_eq!(trimmed_mean(&deltas, 2).unwrap(), vec![1.25]);
        assert_eq!(coordinate_median(&deltas).unwrap(), vec![1.0]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(trimmed_mean(&[], 1).is_err());
        assert!(centered_clip(&[]).is_err());
        let a = [1.0f32, 2.0];
        let b = [1.0f32];
        assert!(trimmed_mean(&[(&a, 1), (&b, 1)], 0).is_err());
        assert!(centered_clip(&[(&a, 0), (&a, 0)]).is_err());
    }
}
