//! Concentration metrics over per-owner shares: how spread out the compute
//! of an allocation (or of a ledger window) is.
//!
//! These are reports, not consensus: max share, HHI and the Nakamoto
//! coefficients are exact integers; Gini and Jain's index are `f64`.

use serde::{Deserialize, Serialize};

use crate::messages::Allocation;

/// The concentration of one distribution of shards over owners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessReport {
    /// Owners counted (with and without shards).
    pub owners: u32,
    pub total: u64,
    /// Largest owner's share, parts per million (floor).
    pub max_share_ppm: u32,
    /// Herfindahl-Hirschman index, 0..=10000 (floor of sum of squared percent shares).
    pub hhi: u32,
    /// Gini coefficient of the shares, 0 (equal) .. 1.
    pub gini: f64,
    /// Fewest owners that together hold more than half of the shards.
    pub nakamoto_50: u32,
    /// Fewest owners that together hold more than a third of the shards.
    pub nakamoto_33: u32,
    /// Jain's index over share / entitlement, 1/n .. 1 (1 when every owner
    /// gets the same multiple of its entitlement).
    pub jain: f64,
}

/// Largest share in parts per million.
pub fn max_share_ppm(shares: &[u64]) -> u32 {
    let total: u128 = shares.iter().map(|&s| s as u128).sum();
    match shares.iter().max() {
        Some(&max) if total > 0 => (max as u128 * 1_000_000 / total) as u32,
        _ => 0,
    }
}

/// HHI on the 0..=10000 scale: `floor(10000 * sum s_i^2 / T^2)`.
pub fn hhi(shares: &[u64]) -> u32 {
    let total: u128 = shares.iter().map(|&s| s as u128).sum();
    if total == 0 {
        return 0;
    }
    // Exact while T < 2^56 (10000 * T^2 fits a u128); beyond that every
    // share is scaled down by the same power of two, which stays within one
    // point of the exact value for realistic shard counts.
    let shift = (128 - total.leading_zeros()).saturating_sub(56);
    let t = total >> shift;
    let squares: u128 = shares
        .iter()
        .map(|&s| {
            let s = (s as u128) >> shift;
            s * s
        })
        .sum();
    if t == 0 {
        return 0;
    }
    (squares * 10_000 / (t * t)) as u32
}

/// Fewest owners whose combined shares exceed `num/den` of the total
/// (0 when the total is 0).
pub fn nakamoto(shares: &[u64], num: u64, den: u64) -> u32 {
    let total: u128 = shares.iter().map(|&s| s as u128).sum();
    if total == 0 {
        return 0;
    }
    let mut sorted = shares.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut sum = 0u128;
    for (i, s) in sorted.iter().enumerate() {
        sum += *s as u128;
        if sum * den as u128 > total * num as u128 {
            return i as u32 + 1;
        }
    }
    sorted.len() as u32
}

/// Gini coefficient: mean absolute difference over twice the mean.
pub fn gini(shares: &[u64]) -> f64 {
    let n = shares.len();
    let total: f64 = shares.iter().map(|&s| s as f64).sum();
    if n == 0 || total == 0.0 {
        return 0.0;
    }
    let mut sorted = shares.to_vec();
    sorted.sort_unstable();
    // sum_i (2i - n - 1) x_(i) over 1-based ranks, divided by n * total.
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * x as f64)
        .sum();
    weighted / (n as f64 * total)
}

/// Jain's index of `x_i = share_i / entitlement_i` over owners with a
/// positive entitlement: `(sum x)^2 / (n sum x^2)`; 1 when nobody got
/// anything.
pub fn jain(shares: &[u64], entitlements: &[u64]) -> f64 {
    let x: Vec<f64> = shares
        .iter()
        .zip(entitlements)
        .filter(|&(_, &e)| e > 0)
        .map(|(&s, &e)| s as f64 / e as f64)
        .collect();
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || squares == 0.0 {
        return 1.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

impl FairnessReport {
    /// Metrics of `shares` (one entry per owner); Jain's index compares
    /// each share to the owner's `entitlements` entry (same order).
    pub fn new(shares: &[u64], entitlements: &[u64]) -> Self {
        FairnessReport {
            owners: shares.len() as u32,
            total: shares.iter().sum(),
            max_share_ppm: max_share_ppm(shares),
            hhi: hhi(shares),
            gini: gini(shares),
            nakamoto_50: nakamoto(shares, 1, 2),
            nakamoto_33: nakamoto(shares, 1, 3),
            jain: jain(shares, entitlements),
        }
    }

    /// Metrics of an allocation's winning owners, each entitled equally
    /// (the allocation does not record offered capacity; callers that know
    /// it use [`FairnessReport::new`]).
    pub fn of_allocation(allocation: &Allocation) -> Self {
        let shares: Vec<u64> = allocation
            .payments
            .iter()
            .map(|p| p.shards as u64)
            .collect();
        FairnessReport::new(&shares, &vec![1; shares.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_distributions() {
        let equal = [25, 25, 25, 25];
        assert_eq!(hhi(&equal), 2500);
        assert_eq!(max_share_ppm(&equal), 250_000);
        assert_eq!(nakamoto(&equal, 1, 2), 3);
        assert_eq!(nakamoto(&equal, 1, 3), 2);
        assert!(gini(&equal).abs() < 1e-12);
        assert!((jain(&equal, &[1, 1, 1, 1]) - 1.0).abs() < 1e-12);

        let monopoly = [100, 0, 0, 0];
        assert_eq!(hhi(&monopoly), 10_000);
        assert_eq!(nakamoto(&monopoly, 1, 2), 1);
        assert!((gini(&monopoly) - 0.75).abs() < 1e-12);
        assert!((jain(&monopoly, &[1, 1, 1, 1]) - 0.25).abs() < 1e-12);

        // 60/30/10: HHI 3600+900+100.
        assert_eq!(hhi(&[60, 30, 10]), 4600);
        assert_eq!(nakamoto(&[60, 30, 10], 1, 2), 1);
        assert_eq!(nakamoto(&[30, 30, 40], 1, 2), 2);
        // Exactly half is not more than half.
        assert_eq!(nakamoto(&[50, 50], 1, 2), 2);
        // Proportional to entitlement is perfectly fair for Jain.
        assert!((jain(&[10, 20, 40], &[1, 2, 4]) - 1.0).abs() < 1e-12);
        assert_eq!(FairnessReport::new(&[], &[]).hhi, 0);
    }

    #[test]
    fn hhi_is_exact_below_2_pow_56_and_close_above() {
        assert_eq!(hhi(&[1 << 40, 1 << 40]), 5000);
        assert_eq!(hhi(&[3 << 50, 1 << 50]), 6250);
        let s = [u64::MAX, u64::MAX];
        assert!((4999..=5000).contains(&hhi(&s)));
        assert_eq!(max_share_ppm(&s), 500_000);
    }
}
