//! Node capacity in shards (step 2): `k_i = min over resources r with
//! d_r > 0 of floor(free_i,r / d_r)`, at most M. The book computes it for
//! every bid, so the divisions by the job's fixed demand go through a
//! precomputed reciprocal (a multiply and one correction) instead of a
//! hardware division per bid and resource, the slowest part of that pass.

/// `n / d` for a fixed `d > 0`, exact: with `m = floor((2^64 - 1) / d)`,
/// `q = floor(n m / 2^64)` lies in `(n/d - 1, n/d)`, so it is
/// `floor(n / d)` or one less, and the remainder tells which.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divisor {
    d: u64,
    m: u64,
}

impl Divisor {
    /// `d` must be positive.
    pub(crate) fn new(d: u64) -> Self {
        Divisor { d, m: u64::MAX / d }
    }

    pub(crate) fn divide(self, n: u64) -> u64 {
        let q = ((n as u128 * self.m as u128) >> 64) as u64;
        if n - q * self.d >= self.d { q + 1 } else { q }
    }
}

/// Shards a node can take, given the per-shard demand and M.
pub(crate) struct ShardUnits {
    /// (resource index, demand) for the resources the job uses.
    divisors: Vec<(usize, Divisor)>,
    m: u32,
}

impl ShardUnits {
    pub(crate) fn new(demand: &[u64; 4], m: u32) -> Self {
        let divisors = demand
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d > 0)
            .map(|(r, &d)| (r, Divisor::new(d)))
            .collect();
        ShardUnits { divisors, m }
    }

    pub(crate) fn of(&self, free: &[u64; 4]) -> u32 {
        let mut k = self.m as u64;
        for &(r, d) in &self.divisors {
            k = k.min(d.divide(free[r]));
        }
        k as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ResourceVec;

    #[test]
    fn reciprocal_division_is_exact() {
        let mut state = 1u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state ^ (state >> 29)
        };
        let edges = [
            0,
            1,
            2,
            3,
            7,
            1000,
            1 << 32,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut divisors: Vec<u64> = edges.iter().copied().filter(|&d| d > 0).collect();
        divisors.extend((0..200).map(|i| (next() >> (i % 64)).max(1)));
        for &d in &divisors {
            let div = Divisor::new(d);
            for &n in &edges {
                assert_eq!(div.divide(n), n / d, "{n} / {d}");
                assert_eq!(div.divide(n.wrapping_sub(d % 7)), n.wrapping_sub(d % 7) / d);
            }
            for _ in 0..200 {
                let n = next() >> (next() % 64);
                assert_eq!(div.divide(n), n / d, "{n} / {d}");
                let multiple = (n / d) * d;
                assert_eq!(div.divide(multiple), multiple / d, "{multiple} / {d}");
            }
        }
    }

    #[test]
    fn units_match_resource_vec_units_of() {
        let demand = ResourceVec {
            cpu_milli: 1000,
            mem_mib: 300,
            ..Default::default()
        };
        let units = ShardUnits::new(&demand.as_array(), 1_000);
        let mut state = 9u64;
        for _ in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let free = ResourceVec {
                cpu_milli: state >> 40,
                mem_mib: (state >> 20) % 100_000,
                gpu_milli: state % 3,
                gpu_mem_mib: 0,
            };
            let expected = free.units_of(&demand).min(1_000) as u32;
            assert_eq!(units.of(&free.as_array()), expected);
        }
        // A job that demands nothing: every node takes up to M.
        let none = ShardUnits::new(&[0; 4], 17);
        assert_eq!(none.of(&[0; 4]), 17);
    }
}
