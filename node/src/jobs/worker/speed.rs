//! How fast this node trains a job's model: a short calibrated probe on
//! synthetic samples of the model's input shape, cached per model, batch,
//! optimiser and device (a GPU, or the CPU with its thread count). The bid carries it, and the market gives
//! shards in proportion to it, so that every winner of a job finishes a
//! round at about the same time (docs/market.md, "Speed").
//!
//! The probe measures the node as it is when it bids: a node already
//! training another job measures less, which is also what the new job
//! will get from it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fairgrid_kernels::{Dataset, InputShape};
use fairgrid_protocol::ResourceVec;
use fairgrid_protocol::messages::{JobSpec, MAX_SPEED_MILLI};

use crate::jobs::device::{Device, JobTrainer};

/// Steps timed after the warm-up step, at least.
const MIN_STEPS: u32 = 3;
/// The probe times steps until this much time has passed (or
/// [`MAX_STEPS`]): ten periods of a CFS CPU quota (100 ms), so that a
/// node held to a quota measures it within about a tenth (at 500 ms the
/// hetero bench saw a 30% node measured 20% slow). A job with a short bid
/// window gets a shorter probe ([`probe_time`]): a bid after the window
/// closes counts for nothing.
const PROBE_TIME: Duration = Duration::from_millis(1_000);
/// The shortest probe, whatever the window.
const MIN_PROBE_TIME: Duration = Duration::from_millis(50);
/// The probe's batch is that of this many shards (fewer if the node
/// cannot win more): a step's fixed costs weigh less per sample in a
/// larger batch, so the probe measures at a batch like the rounds'.
pub const PROBE_SHARDS: u64 = 4;
const MAX_STEPS: u32 = 5_000;
/// Rounds shorter than this do not update the cache.
const MIN_OBSERVED_MS: u64 = 50;

/// Measured speeds, by what decides them.
#[derive(Default)]
pub struct SpeedCache {
    measured: Mutex<BTreeMap<String, u64>>,
}

impl SpeedCache {
    /// The speed measured for `spec` on `device`, if any.
    pub fn get(&self, spec: &JobSpec, device: Device) -> Option<u64> {
        let measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        measured.get(&key(spec, device)).copied()
    }

    pub fn insert(&self, spec: &JobSpec, device: Device, speed_milli: u64) {
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        measured.insert(key(spec, device), speed_milli);
    }

    /// A round trained `samples` in `compute_ms`: the speed the node's
    /// next bids on this model claim (a round is the real workload, at the
    /// real batch; rounds shorter than [`MIN_OBSERVED_MS`] say too little).
    pub fn observe(&self, spec: &JobSpec, device: Device, samples: u64, compute_ms: u64) {
        if compute_ms >= MIN_OBSERVED_MS && samples > 0 {
            let speed = speed_milli(samples, Duration::from_millis(compute_ms));
            self.insert(spec, device, speed);
        }
    }
}

/// What a step's cost depends on: the device (with its threads), the
/// model, the batch a shard brings and the optimiser.
fn key(spec: &JobSpec, device: Device) -> String {
    format!(
        "{device}|{:?}|{}|{:?}",
        spec.model, spec.hyper.batch_size, spec.hyper.optimizer
    )
}

/// How long the probe for `spec` runs: a quarter of its bid window, within
/// [`MIN_PROBE_TIME`]..=[`PROBE_TIME`].
pub fn probe_time(spec: &JobSpec) -> Duration {
    Duration::from_millis(spec.bid_window_ms / 4).clamp(MIN_PROBE_TIME, PROBE_TIME)
}

/// Trains the job's model on synthetic samples on `device` for about
/// [`probe_time`] at the batch of `shards` shards; thousandths of a sample
/// per second, at least 1. Blocking. A GPU that cannot be used is an
/// error (the node then bids without a speed), not a CPU figure.
pub fn measure(spec: &JobSpec, device: Device, shards: u64) -> Result<u64, String> {
    let batch = spec.hyper.batch_size.max(1) as usize * shards.clamp(1, PROBE_SHARDS) as usize;
    let mut trainer =
        JobTrainer::new(device, &spec.model, &spec.hyper, batch).map_err(|e| e.to_string())?;
    let data = synthetic(spec, batch)?;
    let indices: Vec<u32> = (0..batch as u32).collect();
    // lr 0: the probe times the work of a step, not where it leads.
    trainer
        .step(&data, &indices, 0.0)
        .map_err(|e| e.to_string())?;
    let budget = probe_time(spec);
    let started = Instant::now();
    let mut steps = 0u32;
    while steps < MIN_STEPS || (started.elapsed() < budget && steps < MAX_STEPS) {
        trainer
            .step(&data, &indices, 0.0)
            .map_err(|e| e.to_string())?;
        steps += 1;
    }
    Ok(speed_milli(
        u64::from(steps) * batch as u64,
        started.elapsed(),
    ))
}

/// Share of the round timeout a bid plans to fill: the rest is for the
/// parameters' transfers and a slower round than measured.
const ROUND_BUDGET_PERCENT: u128 = 60;

/// `capacity` cut to the shards this node can train within
/// [`ROUND_BUDGET_PERCENT`] of the job's round timeout at `speed_milli`
/// (at least one): a cheap but slow node would otherwise win every shard
/// its offer holds and miss the round deadline. Unchanged without a
/// speed.
pub fn within_round_time(capacity: ResourceVec, spec: &JobSpec, speed_milli: u64) -> ResourceVec {
    if speed_milli == 0 {
        return capacity;
    }
    let per_shard = u128::from(spec.hyper.local_steps) * u128::from(spec.hyper.batch_size);
    let budget_ms = u128::from(spec.round_timeout_ms) * ROUND_BUDGET_PERCENT / 100;
    let shards = (u128::from(speed_milli) * budget_ms / 1_000_000 / per_shard.max(1)).max(1);
    let shards = u64::try_from(shards).unwrap_or(u64::MAX);
    ResourceVec::min(&capacity, &spec.demand_per_shard.saturating_mul(shards))
}

/// `samples` in `elapsed` as thousandths of a sample per second, within
/// 1..=[`MAX_SPEED_MILLI`].
pub fn speed_milli(samples: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    let milli = u128::from(samples) * 1_000_000_000 / micros;
    u64::try_from(milli)
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_SPEED_MILLI)
}

/// `batch` samples of the model's input shape with deterministic pixels
/// and every class among the labels.
fn synthetic(spec: &JobSpec, batch: usize) -> Result<Dataset, String> {
    let input = &spec.model.input;
    let shape = InputShape {
        channels: input.channels as usize,
        height: input.height as usize,
        width: input.width as usize,
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let images: Vec<u8> = (0..batch * shape.numel())
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    let classes = spec.model.classes as usize;
    let labels: Vec<u8> = (0..batch).map(|i| (i % classes) as u8).collect();
    Dataset::new("speed-probe", shape, classes, images, labels).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::sample_spec;
    use fairgrid_protocol::Keypair;

    #[test]
    fn measures_a_positive_speed_and_caches_it_per_device() {
        let spec = sample_spec(&Keypair::from_seed(b"speed"));
        let one = Device::Cpu { threads: 1 };
        let speed = measure(&spec, one, 2).unwrap();
        assert!(speed > 0);
        let cache = SpeedCache::default();
        assert_eq!(cache.get(&spec, one), None);
        cache.insert(&spec, one, speed);
        assert_eq!(cache.get(&spec, one), Some(speed));
        let two = Device::Cpu { threads: 2 };
        assert_eq!(cache.get(&spec, two), None, "threads are part of the key");
        let gpu = Device::Cuda { ordinal: 0 };
        assert_eq!(cache.get(&spec, gpu), None, "so is the device");
        let mut other = spec.clone();
        other.hyper.batch_size *= 2;
        assert_eq!(cache.get(&other, one), None, "so is the batch");
        // A round's figures replace the probe's; a very short one does not.
        cache.observe(&spec, one, 1_000, 2_000);
        assert_eq!(cache.get(&spec, one), Some(500_000));
        cache.observe(&spec, one, 1_000, 10);
        assert_eq!(cache.get(&spec, one), Some(500_000));
        // A GPU that is not there is an error, not a CPU figure.
        assert!(measure(&spec, Device::Cuda { ordinal: 4096 }, 1).is_err());
    }

    #[test]
    fn a_short_bid_window_gets_a_short_probe() {
        let mut spec = sample_spec(&Keypair::from_seed(b"speed"));
        spec.bid_window_ms = 1_000;
        assert_eq!(probe_time(&spec), Duration::from_millis(250));
        spec.bid_window_ms = 3_000;
        assert_eq!(probe_time(&spec), Duration::from_millis(750));
        spec.bid_window_ms = 60_000;
        assert_eq!(probe_time(&spec), PROBE_TIME);
        spec.bid_window_ms = 0;
        assert_eq!(probe_time(&spec), MIN_PROBE_TIME);
    }

    #[test]
    fn a_slow_node_offers_only_what_it_can_train_in_a_round() {
        let mut spec = sample_spec(&Keypair::from_seed(b"speed"));
        spec.round_timeout_ms = 20_000;
        spec.hyper.local_steps = 8;
        spec.hyper.batch_size = 8;
        let demand = spec.demand_per_shard;
        let offer = demand.saturating_mul(100);
        // 64 samples a shard; 12 s of the 20 s timeout at 100 samples/s:
        // 1,200 samples, 18 shards.
        let cut = within_round_time(offer, &spec, 100_000);
        assert_eq!(cut.units_of(&demand), 18);
        // Fast enough for the whole offer: unchanged.
        assert_eq!(within_round_time(offer, &spec, 100_000_000), offer);
        // Too slow for one shard: still one, the deadline decides.
        assert_eq!(within_round_time(offer, &spec, 1).units_of(&demand), 1);
        // No speed: unchanged.
        assert_eq!(within_round_time(offer, &spec, 0), offer);
    }

    #[test]
    fn converts_and_bounds_speeds() {
        assert_eq!(speed_milli(100, Duration::from_secs(2)), 50_000);
        assert_eq!(speed_milli(0, Duration::from_secs(1)), 1);
        assert_eq!(speed_milli(u64::MAX, Duration::ZERO), MAX_SPEED_MILLI);
    }
}
