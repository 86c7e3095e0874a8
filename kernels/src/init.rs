//! Seeded parameter initialisation.

use crate::rng::SplitMix64;

/// How a weight tensor is drawn. Biases start at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// He et al. (2015): normal with std `sqrt(2 / fan_in)`, for layers
    /// followed by a ReLU.
    KaimingNormal,
    /// Glorot & Bengio (2010): uniform in `±sqrt(6 / (fan_in + fan_out))`,
    /// for the output layer.
    XavierUniform,
}

impl Init {
    /// `len` values for a weight with the given fans, from `rng`.
    pub fn sample(
        self,
        rng: &mut SplitMix64,
        len: usize,
        fan_in: usize,
        fan_out: usize,
    ) -> Vec<f32> {
        match self {
            Init::KaimingNormal => {
                let std = (2.0 / fan_in.max(1) as f64).sqrt();
                (0..len).map(|_| (rng.normal() * std) as f32).collect()
            }
            Init::XavierUniform => {
                let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                (0..len)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * limit) as f32)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_has_the_right_spread_and_is_seeded() {
        let a = Init::KaimingNormal.sample(&mut SplitMix64::new(1), 50_000, 200, 10);
        let b = Init::KaimingNormal.sample(&mut SplitMix64::new(1), 50_000, 200, 10);
        assert_eq!(a, b);
        let var = a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var - 0.01).abs() < 0.0005, "{var}");
    }

    #[test]
    fn xavier_stays_in_its_limit() {
        let limit = (6.0f64 / 30.0).sqrt() as f32;
        let w = Init::XavierUniform.sample(&mut SplitMix64::new(2), 1000, 20, 10);
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().any(|v| v.abs() > limit * 0.9));
    }
}
