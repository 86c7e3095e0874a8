//! Deliberate misbehaviour, for the tests that prove a coordinator catches
//! it: the catalogue of cheats of issue 13 and two malformed updates.
//!
//! Only debug builds read it (environment variable `FAIRGRID_TEST_FAULT`);
//! a release build cannot be made to misbehave, and it is no part of the
//! configuration. Each cheat saves work or steers the model while the
//! update stays well formed, hashed and signed: only an audit tells.

use std::sync::Arc;

use fairgrid_kernels::data::{PixelKind, Pixels};
use fairgrid_kernels::rng::SplitMix64;
use fairgrid_kernels::{Dataset, Samples, Shard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    None,
    /// A NaN in the update (caught by the value checks).
    CorruptUpdate,
    /// Signed with a throwaway key (caught by the signature check).
    WrongSigner,
    /// Sends a zero delta without training.
    ZeroUpdate,
    /// Trains from the previous round's parameters (in its first round,
    /// from the round's parameters scaled by 0.9).
    StaleBase,
    /// One local step fewer than the job asks.
    OneStepShort,
    /// Trains on other samples than the round's (the next shard's sample
    /// order), as a node that did not fetch its shards would.
    WrongShard,
    /// Sends half its delta.
    ScaledDelta,
    /// Adds Gaussian noise of 10% of the delta's RMS to each value.
    NoisedDelta,
    /// Trains on random pixels and labels instead of its shards.
    RandomData,
    /// Sends 99.9% of its delta: within the 1% tolerance (skipping the
    /// last of a thousand local steps moves a delta about as much), so
    /// only the exact rule catches it.
    NudgedDelta,
}

/// Every cheat of the catalogue (the copied delta is another worker's
/// update under this worker's name, tested where two workers exist).
pub const CHEATS: [TestFault; 7] = [
    TestFault::ZeroUpdate,
    TestFault::StaleBase,
    TestFault::OneStepShort,
    TestFault::WrongShard,
    TestFault::ScaledDelta,
    TestFault::NoisedDelta,
    TestFault::RandomData,
];

impl TestFault {
    pub fn from_env() -> TestFault {
        if !cfg!(debug_assertions) {
            return TestFault::None;
        }
        std::env::var("FAIRGRID_TEST_FAULT")
            .ok()
            .and_then(|name| TestFault::parse(&name))
            .unwrap_or(TestFault::None)
    }

    pub fn parse(name: &str) -> Option<TestFault> {
        Some(match name {
            "corrupt_update" => TestFault::CorruptUpdate,
            "wrong_signer" => TestFault::WrongSigner,
            "zero_update" => TestFault::ZeroUpdate,
            "stale_base" => TestFault::StaleBase,
            "one_step_short" => TestFault::OneStepShort,
            "wrong_shard" => TestFault::WrongShard,
            "scaled_delta" => TestFault::ScaledDelta,
            "noised_delta" => TestFault::NoisedDelta,
            "random_data" => TestFault::RandomData,
            "nudged_delta" => TestFault::NudgedDelta,
            _ => return None,
        })
    }

    /// The local steps the cheat trains.
    pub fn steps(self, asked: u32) -> u32 {
        match self {
            TestFault::OneStepShort => asked.saturating_sub(1),
            TestFault::ZeroUpdate => 0,
            _ => asked,
        }
    }

    /// The parameters the cheat trains from.
    pub fn base(self, params: &[f32], previous: Option<&[f32]>) -> Option<Vec<f32>> {
        match (self, previous) {
            (TestFault::StaleBase, Some(previous)) if previous.len() == params.len() => {
                Some(previous.to_vec())
            }
            (TestFault::StaleBase, _) => Some(params.iter().map(|p| p * 0.9).collect()),
            _ => None,
        }
    }

    /// The shard a sample order is drawn for (another one for WrongShard).
    pub fn seed_shard(self, shard: u32) -> u32 {
        match self {
            TestFault::WrongShard => shard.wrapping_add(1),
            _ => shard,
        }
    }

    /// Random data of the shards' shape instead of the shards.
    pub fn data(self, loaded: &[Arc<Shard>]) -> Option<Vec<Arc<Shard>>> {
        if self != TestFault::RandomData {
            return None;
        }
        let mut rng = SplitMix64::new(0xbad_da7a);
        Some(
            loaded
                .iter()
                .map(|shard| {
                    let real = shard.dataset();
                    let classes = real.classes() as u64;
                    let count = real.images().len();
                    let images = match real.images().kind() {
                        PixelKind::U8 => {
                            Pixels::U8((0..count).map(|_| rng.below(256) as u8).collect())
                        }
                        PixelKind::F32 => Pixels::F32(
                            (0..count)
                                .map(|_| rng.below(1 << 16) as f32 / 65536.0)
                                .collect(),
                        ),
                    };
                    let labels = (0..real.labels().len())
                        .map(|_| rng.below(classes) as u8)
                        .collect();
                    let fake =
                        Dataset::new("random", real.shape(), classes as usize, images, labels)
                            .and_then(Shard::new)
                            .expect("random data of a real shard's shape");
                    Arc::new(fake)
                })
                .collect(),
        )
    }

    /// The delta the cheat sends instead of the one it computed.
    pub fn delta(self, delta: &mut [f32]) {
        match self {
            TestFault::ZeroUpdate => delta.fill(0.0),
            TestFault::ScaledDelta => delta.iter_mut().for_each(|d| *d *= 0.5),
            TestFault::NudgedDelta => delta.iter_mut().for_each(|d| *d *= 0.999),
            TestFault::NoisedDelta => {
                let rms = (delta.iter().map(|d| f64::from(*d).powi(2)).sum::<f64>()
                    / delta.len().max(1) as f64)
                    .sqrt();
                let mut rng = SplitMix64::new(0x0157);
                for d in delta.iter_mut() {
                    *d += (0.1 * rms * rng.normal()) as f32;
                }
            }
            _ => {}
        }
    }
}
