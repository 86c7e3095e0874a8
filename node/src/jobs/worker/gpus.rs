//! Which of this node's GPUs a job trains on. A job's shards demand a
//! share of a GPU each (`gpu_milli`); the shards it holds need
//! `ceil(shards x gpu_milli / 1000)` GPUs, placed on the least loaded of
//! the GPUs the node offers, and kept there while the job needs as many.
//! With several GPUs the worker splits its shards among them
//! (`train::split_among`) and averages their deltas.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fairgrid_protocol::Hash32;
use fairgrid_protocol::messages::JobSpec;

use crate::jobs::device::{Device, wants_gpu};

/// A job's GPUs and the thousandths of a GPU it uses on each.
type Placement = Vec<(usize, u64)>;

#[derive(Default)]
pub struct GpuPlacer {
    placed: Mutex<BTreeMap<Hash32, Placement>>,
}

impl GpuPlacer {
    /// The GPUs `job` trains on when it needs `milli` thousandths of a GPU
    /// in all, among `gpus` GPUs. Jobs not in `live` are forgotten first
    /// (they ended). The job keeps its GPUs while it needs as many.
    pub fn place(&self, job: Hash32, milli: u64, gpus: usize, live: &[Hash32]) -> Vec<usize> {
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        placed.retain(|id, _| *id == job || live.contains(id));
        let need = gpus_needed(milli, gpus);
        let each = milli.div_ceil(need.max(1) as u64);
        if let Some(current) = placed.get_mut(&job)
            && current.len() == need
            && current.iter().all(|&(g, _)| g < gpus)
        {
            // Same GPUs; the load they carry follows the new need.
            for slot in current.iter_mut() {
                slot.1 = each;
            }
            return current.iter().map(|&(g, _)| g).collect();
        }
        placed.remove(&job);
        let mut load = vec![0u64; gpus];
        for (g, m) in placed.values().flatten() {
            if let Some(l) = load.get_mut(*g) {
                *l += m;
            }
        }
        let chosen = least_loaded(&load, need);
        placed.insert(job, chosen.iter().map(|&g| (g, each)).collect());
        chosen
    }
}

impl GpuPlacer {
    /// The GPU a new job would go to first (the least loaded of `gpus`),
    /// without placing anything: where a bid's speed probe runs.
    pub fn peek(&self, gpus: usize, live: &[Hash32]) -> usize {
        let placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        let mut load = vec![0u64; gpus.max(1)];
        for (job, slots) in placed.iter() {
            if live.contains(job) {
                for (g, m) in slots {
                    if let Some(l) = load.get_mut(*g) {
                        *l += m;
                    }
                }
            }
        }
        least_loaded(&load, 1)[0]
    }
}

/// GPUs for `milli` thousandths of a GPU: at least one, at most `gpus`.
pub fn gpus_needed(milli: u64, gpus: usize) -> usize {
    usize::try_from(milli.div_ceil(1000))
        .unwrap_or(usize::MAX)
        .clamp(1, gpus.max(1))
}

/// The `need` GPUs with the least load (ties: the lower ordinal), in
/// ordinal order.
pub fn least_loaded(load: &[u64], need: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..load.len()).collect();
    order.sort_by_key(|&g| (load[g], g));
    order.truncate(need);
    order.sort_unstable();
    order
}

/// The devices a round of `spec` on `shards` shards trains on: the CPU
/// with `threads` for a job that demands no GPU (or when the node offers
/// none), else the job's GPUs among the `offered_gpus`.
pub fn devices_for(
    placer: &GpuPlacer,
    job: Hash32,
    spec: &JobSpec,
    shards: usize,
    offered_gpus: usize,
    threads: usize,
    live: &[Hash32],
) -> Vec<Device> {
    if !wants_gpu(spec) || offered_gpus == 0 {
        return vec![Device::Cpu { threads }];
    }
    let milli = spec
        .demand_per_shard
        .gpu_milli
        .saturating_mul(shards as u64);
    placer
        .place(job, milli, offered_gpus, live)
        .into_iter()
        .map(|ordinal| Device::Cuda { ordinal })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::testing::sample_spec;
    use fairgrid_protocol::Keypair;

    #[test]
    fn jobs_spread_over_the_least_loaded_gpus_and_stay_there() {
        let placer = GpuPlacer::default();
        let (a, b, c) = (Hash32::of(b"a"), Hash32::of(b"b"), Hash32::of(b"c"));
        // Half a GPU each: a on 0, b on 1, c on 0 again (0 and 1 tie at
        // 500; the lower ordinal).
        assert_eq!(placer.place(a, 500, 2, &[]), vec![0]);
        assert_eq!(placer.place(b, 500, 2, &[a]), vec![1]);
        assert_eq!(placer.place(c, 500, 2, &[a, b]), vec![0]);
        // Asked again with the same need: the same GPU.
        assert_eq!(placer.place(b, 400, 2, &[a, c]), vec![1]);
        // Loads now: GPU 0 1000 (a, c), GPU 1 400 (b): a probe goes to 1,
        // and peeking places nothing.
        assert_eq!(placer.peek(2, &[a, b, c]), 1);
        assert_eq!(placer.peek(2, &[a, b, c]), 1);
        assert_eq!(placer.peek(2, &[b]), 0, "ended jobs carry no load");
        // 1.5 GPUs: two of them.
        assert_eq!(placer.place(b, 1500, 2, &[a, c]), vec![0, 1]);
        // a and c ended: b alone, and a new job goes where b's load is least.
        // (b holds 750 on each of 0 and 1.)
        assert_eq!(placer.place(a, 3000, 4, &[b]), vec![0, 2, 3]);
    }

    #[test]
    fn the_need_is_at_least_one_gpu_and_at_most_those_offered() {
        assert_eq!(gpus_needed(0, 4), 1);
        assert_eq!(gpus_needed(1000, 4), 1);
        assert_eq!(gpus_needed(1001, 4), 2);
        assert_eq!(gpus_needed(9000, 4), 4);
        assert_eq!(gpus_needed(9000, 0), 1);
        assert_eq!(least_loaded(&[5, 1, 1, 0], 2), vec![1, 3]);
        assert_eq!(least_loaded(&[5, 1, 1, 0], 3), vec![1, 2, 3]);
    }

    #[test]
    fn cpu_jobs_and_gpu_less_nodes_train_on_the_cpu() {
        let placer = GpuPlacer::default();
        let mut spec = sample_spec(&Keypair::from_seed(b"c"));
        let job = Hash32::of(b"job");
        let cpu = vec![Device::Cpu { threads: 3 }];
        assert_eq!(devices_for(&placer, job, &spec, 4, 2, 3, &[]), cpu);
        spec.demand_per_shard.gpu_milli = 400;
        assert_eq!(devices_for(&placer, job, &spec, 4, 0, 3, &[]), cpu);
        // 4 shards of 0.4 GPU: two GPUs.
        assert_eq!(
            devices_for(&placer, job, &spec, 4, 2, 3, &[]),
            vec![Device::Cuda { ordinal: 0 }, Device::Cuda { ordinal: 1 }]
        );
        assert_eq!(
            devices_for(&placer, job, &spec, 2, 2, 3, &[]),
            vec![Device::Cuda { ordinal: 0 }]
        );
    }
}
