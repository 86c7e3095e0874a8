//! Resource vectors in integer units, as the market counts them.

use serde::{Deserialize, Serialize};

/// An amount of each resource the market allocates, in integer units.
/// Used for what a node offers, what a certificate allows at most, and what
/// one shard of a job needs.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct ResourceVec {
    /// CPU, in thousandths of a core.
    #[serde(default)]
    pub cpu_milli: u64,
    /// Host memory, in MiB.
    #[serde(default)]
    pub mem_mib: u64,
    /// GPUs, in thousandths of a device.
    #[serde(default)]
    pub gpu_milli: u64,
    /// GPU memory, in MiB.
    #[serde(default)]
    pub gpu_mem_mib: u64,
}

impl ResourceVec {
    pub const KINDS: [&'static str; 4] = ["cpu_milli", "mem_mib", "gpu_milli", "gpu_mem_mib"];

    pub fn as_array(&self) -> [u64; 4] {
        [
            self.cpu_milli,
            self.mem_mib,
            self.gpu_milli,
            self.gpu_mem_mib,
        ]
    }

    pub fn from_array(a: [u64; 4]) -> Self {
        ResourceVec {
            cpu_milli: a[0],
            mem_mib: a[1],
            gpu_milli: a[2],
            gpu_mem_mib: a[3],
        }
    }

    /// Component-wise minimum.
    pub fn min(&self, other: &ResourceVec) -> ResourceVec {
        let (a, b) = (self.as_array(), other.as_array());
        ResourceVec::from_array(std::array::from_fn(|i| a[i].min(b[i])))
    }

    /// Component-wise saturating subtraction.
    pub fn saturating_sub(&self, other: &ResourceVec) -> ResourceVec {
        let (a, b) = (self.as_array(), other.as_array());
        ResourceVec::from_array(std::array::from_fn(|i| a[i].saturating_sub(b[i])))
    }

    /// Component-wise `self * n`, saturating.
    pub fn saturating_mul(&self, n: u64) -> ResourceVec {
        ResourceVec::from_array(self.as_array().map(|x| x.saturating_mul(n)))
    }

    pub fn is_zero(&self) -> bool {
        self.as_array().iter().all(|&x| x == 0)
    }

    /// How many whole units of `demand` fit in `self`: the minimum over the
    /// resources that `demand` uses. A demand of all zeros fits `u64::MAX`
    /// times (callers bound it by the job size).
    pub fn units_of(&self, demand: &ResourceVec) -> u64 {
        self.as_array()
            .iter()
            .zip(demand.as_array())
            .filter(|&(_, d)| d > 0)
            .map(|(&free, d)| free / d)
            .min()
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_of_takes_the_scarcest_resource() {
        let free = ResourceVec {
            cpu_milli: 8000,
            mem_mib: 1000,
            gpu_milli: 0,
            gpu_mem_mib: 0,
        };
        let demand = ResourceVec {
            cpu_milli: 1000,
            mem_mib: 300,
            ..Default::default()
        };
        assert_eq!(free.units_of(&demand), 3);
        let gpu = ResourceVec {
            gpu_milli: 500,
            ..Default::default()
        };
        assert_eq!(free.units_of(&gpu), 0);
        assert_eq!(free.units_of(&ResourceVec::default()), u64::MAX);
    }
}
