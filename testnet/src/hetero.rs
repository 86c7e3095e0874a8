//! `fairgrid-testnet hetero`: issue 12's heterogeneous-CPU benchmark.
//! Node 0 coordinates and does not train; workers 1.. train with one
//! thread each, the last of them held to a CPU quota (a cgroup: needs
//! root). The same job runs twice on fresh clusters: first with shards by
//! offered capacity (`worker.measure_speed = false`, the reference), then
//! by measured speed. Per run: the median and worst per-round straggler
//! ratio (the slowest worker's training time over the fastest's, from the
//! times the workers report in each round's event), the job's wall time
//! from submission to its end, and each worker's shards against its share
//! of the throughput observed in the rounds.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use fairgrid_sdk::jobs::{JobEvent, JobEventKind, JobRequest, WorkerRoundView};

use crate::cgroup::CpuQuota;
use crate::cluster::{Cluster, ClusterSpec};
use crate::job::{Model, Tuning, demo_request, submit_and_follow};
use crate::launcher::Launcher;
use crate::scenario::dump_logs;

#[derive(Debug, Clone, clap::Args)]
pub struct HeteroArgs {
    /// Workers (besides the coordinator); the last is slowed.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The slow worker's CPU quota, percent of one core.
    #[arg(long, default_value_t = 30)]
    pub quota_percent: u32,
    /// Shards of the job (a multiple of 4): more shards split finer.
    #[arg(long, default_value_t = 24)]
    pub shards: u64,
    #[arg(long, value_enum, default_value_t = Model::Cnn)]
    pub model: Model,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
}

/// Every worker's ask (the owners' price floors differ).
const ASK: u64 = 100;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunFigures {
    pub label: &'static str,
    /// Per round: slowest worker's training time / fastest's.
    pub straggler: Vec<f64>,
    pub wall: Duration,
    pub accuracy: f32,
    /// Per worker (by node id): shards held, observed samples per second.
    pub workers: BTreeMap<String, (u32, f64)>,
}

impl RunFigures {
    pub fn median_straggler(&self) -> f64 {
        let mut v = self.straggler.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub fn worst_straggler(&self) -> f64 {
        self.straggler.iter().copied().fold(f64::NAN, f64::max)
    }

    /// The largest distance between a worker's shards and its share of
    /// the job's shards by observed throughput.
    pub fn off_share(&self) -> f64 {
        let total: f64 = self.workers.values().map(|(_, t)| t).sum();
        let shards: u32 = self.workers.values().map(|(s, _)| s).sum();
        self.workers
            .values()
            .map(|&(s, t)| (f64::from(s) - f64::from(shards) * t / total).abs())
            .fold(0.0, f64::max)
    }

    fn describe(&self) -> String {
        let split: Vec<String> = self
            .workers
            .values()
            .map(|(s, t)| format!("{s} shards at {t:.0} samples/s"))
            .collect();
        format!(
            "{}: straggler ratio median {:.2}, worst {:.2}; wall {:.1} s; accuracy {:.4}; {}; furthest from its throughput share by {:.2} shards",
            self.label,
            self.median_straggler(),
            self.worst_straggler(),
            self.wall.as_secs_f64(),
            self.accuracy,
            split.join(", "),
            self.off_share()
        )
    }
}

pub async fn run(launcher: Launcher, args: &HeteroArgs) -> anyhow::Result<String> {
    if args.workers < 2 {
        bail!("--workers must be at least 2");
    }
    if args.shards < 4 || !args.shards.is_multiple_of(4) {
        bail!("--shards must be a positive multiple of 4");
    }
    let before = one_run(&launcher, args, false).await?;
    println!("{}", before.describe());
    let after = one_run(&launcher, args, true).await?;
    println!("{}", after.describe());
    Ok(format!(
        "result straggler_before={:.2} straggler_after={:.2} worst_before={:.2} worst_after={:.2} wall_before={:.1} wall_after={:.1} off_share_after={:.2} accuracy_before={:.4} accuracy_after={:.4}",
        before.median_straggler(),
        after.median_straggler(),
        before.worst_straggler(),
        after.worst_straggler(),
        before.wall.as_secs_f64(),
        after.wall.as_secs_f64(),
        after.off_share(),
        before.accuracy,
        after.accuracy
    ))
}

/// The job: the demo's, cut into `--shards` shards (4 per demo owner)
/// that any worker can hold all of, and no owner cap, so that speed alone
/// decides the split.
fn request(args: &HeteroArgs, small_cpu_milli: u64) -> anyhow::Result<JobRequest> {
    let tuning = Tuning {
        rounds: Some(args.tuning.rounds.unwrap_or(10)),
        // A 4 s window lets the nodes probe their speed for the full 1 s.
        bid_window_secs: Some(args.tuning.bid_window_secs.unwrap_or(4)),
        alpha: Some(1.0),
        ..args.tuning.clone()
    };
    let demo_owners = (args.shards / 4) as usize;
    let mut request = demo_request(args.model, "builtin", demo_owners, small_cpu_milli, &tuning)?;
    request.market.demand_per_shard.cpu_milli = (small_cpu_milli / args.shards).max(1);
    request.name = "testnet-hetero".into();
    Ok(request)
}

async fn one_run(
    launcher: &Launcher,
    args: &HeteroArgs,
    by_speed: bool,
) -> anyhow::Result<RunFigures> {
    let nodes = args.workers + 1;
    let mut spec = ClusterSpec::new(nodes, nodes)?;
    spec.env
        .push(("FAIRGRID_WORKER_MEASURE_SPEED".into(), by_speed.to_string()));
    // One price for all: the cheapest node would otherwise take every
    // shard it can hold, whatever its speed.
    spec.env
        .push(("FAIRGRID_WORKER_ASK".into(), ASK.to_string()));
    spec.node_env
        .push((0, "FAIRGRID_WORKER_ENABLED".into(), "false".into()));
    // What is measured is how shards follow the workers' speeds; the
    // coordinator's audits (replays on its CPU, a machine the workers
    // share here) are load this comparison should not carry.
    spec.node_env
        .push((0, "FAIRGRID_JOBS_AUDITS".into(), "false".into()));
    let request = request(args, spec.owners.small_cpu_milli)?;
    let cluster = Cluster::start(launcher.clone(), &spec).await?;
    let slow = cluster.nodes.last().context("no nodes")?.pid;
    let _quota = CpuQuota::apply(slow, args.quota_percent)?;
    let label = if by_speed {
        "by measured speed"
    } else {
        "by offered capacity (reference)"
    };
    let result = measure(&cluster, &request, label, args.timeout_secs).await;
    if result.is_err() {
        dump_logs(&cluster);
    }
    result
}

async fn measure(
    cluster: &Cluster,
    request: &JobRequest,
    label: &'static str,
    timeout_secs: u64,
) -> anyhow::Result<RunFigures> {
    cluster
        .wait_until_meshed(Duration::from_secs(60))
        .await
        .context("waiting for the nodes to see each other")?;
    let client = cluster.nodes[0].client()?;
    let (job_id, followed, wall) = submit_and_follow(&client, request, timeout_secs).await?;
    let report = client.job_report(&job_id).await?;
    let allocation = report.allocation.context("no allocation in the report")?;
    let rounds = round_workers(&followed.events);
    let mut workers: BTreeMap<String, (u32, f64)> = BTreeMap::new();
    for node in &allocation.nodes {
        let (samples, millis) = rounds
            .iter()
            .flatten()
            .filter(|w| w.node == node.node)
            .fold((0u64, 0u64), |(s, m), w| {
                (s + w.samples, m + w.compute_millis)
            });
        let speed = samples as f64 * 1000.0 / millis.max(1) as f64;
        workers.insert(node.node.clone(), (node.shards, speed));
    }
    Ok(RunFigures {
        label,
        straggler: rounds.iter().filter_map(|w| straggler_ratio(w)).collect(),
        wall,
        accuracy: report.final_test_accuracy.unwrap_or(0.0),
        workers,
    })
}

/// Each completed round's workers, in order.
pub fn round_workers(events: &[JobEvent]) -> Vec<Vec<WorkerRoundView>> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            JobEventKind::RoundCompleted { workers, .. } => Some(workers.clone()),
            _ => None,
        })
        .collect()
}

/// Slowest training time over the fastest in one round (`None` with
/// fewer than two workers or a zero time).
pub fn straggler_ratio(workers: &[WorkerRoundView]) -> Option<f64> {
    let times = workers.iter().map(|w| w.compute_millis);
    let (min, max) = (times.clone().min()?, times.max()?);
    (workers.len() >= 2 && min > 0).then(|| max as f64 / min as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(node: &str, millis: u64) -> WorkerRoundView {
        WorkerRoundView {
            node: node.into(),
            owner: "o".into(),
            shards: 1,
            samples: 10,
            bytes_up: 0,
            millis,
            compute_millis: millis,
            expected_millis: None,
        }
    }

    #[test]
    fn straggler_ratio_is_slowest_over_fastest() {
        assert_eq!(
            straggler_ratio(&[worker("a", 100), worker("b", 250)]),
            Some(2.5)
        );
        assert_eq!(straggler_ratio(&[worker("a", 100)]), None);
        assert_eq!(straggler_ratio(&[worker("a", 0), worker("b", 5)]), None);
    }

    #[test]
    fn share_distance_uses_observed_throughput() {
        let figures = RunFigures {
            label: "t",
            straggler: vec![1.0, 3.0, 2.0],
            wall: Duration::from_secs(1),
            accuracy: 0.5,
            workers: BTreeMap::from([("a".into(), (6, 300.0)), ("b".into(), (6, 100.0))]),
        };
        // Shares by throughput: 9 and 3; each is 3 away.
        assert!((figures.off_share() - 3.0).abs() < 1e-9);
        assert_eq!(figures.median_straggler(), 2.0);
        assert_eq!(figures.worst_straggler(), 3.0);
    }
}
