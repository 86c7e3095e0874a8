//! `fairgrid-testnet bench`: the job benchmarks, each against its
//! reference measured in the same run.
//!
//! - **Communication overhead**: the median round time of a job on the
//!   node processes against the same per-node work done in one process
//!   (one thread per worker, same shards, steps, batch and int8 encoding,
//!   then the same aggregation and test-set evaluation), no network.
//! - **Bytes per round**: the same job with int8 updates and with fp32.
//! - **Recovery**: a worker is SIGKILLed after a round; the time and the
//!   rounds until a round completes with every remaining worker under the
//!   new allocation.
//! - `--accuracy`: one job to the end against single-node training with
//!   the same total samples and steps (the workers' combined batch, the
//!   same local steps and rounds).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fairgrid_kernels::data::{SYSTEM_FASHION_MNIST_DIR, builtin};
use fairgrid_kernels::{
    Compression, Compressor, CpuBackend, FashionMnist, ModelSpec, OptimizerConfig, Shard, ShardSet,
    Trainer, decode_update, weighted_mean,
};
use fairgrid_node::cli::job::follow_with_progress;
use fairgrid_protocol::messages::{self, HyperParams, OptimizerKind};
use fairgrid_sdk::Client;
use fairgrid_sdk::jobs::{CompressionName, JobEventKind, JobRequest, JobState, TrainingReport};

use crate::launcher::Launcher;
use crate::scenario::{self, ScenarioArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Run one job to the end against single-node training instead of
    /// the overhead, bytes and recovery benchmarks.
    #[arg(long)]
    pub accuracy: bool,
    /// Synchronous int8 training (one local step per round, the job's
    /// rounds x local steps rounds) against the job as given (many local
    /// steps, the outer step of --outer-lr and --outer-momentum: DiLoCo),
    /// one after the other on the same nodes: accuracy and bytes.
    #[arg(long)]
    pub diloco: bool,
    /// With --diloco: the synchronous run's learning rate (default: the
    /// job's). Its momentum restarts every round, so it wants a larger
    /// rate than many local steps with momentum do.
    #[arg(long)]
    pub sync_lr: Option<f32>,
}

pub async fn run(launcher: Launcher, args: &BenchArgs) -> anyhow::Result<String> {
    let mut prepared = scenario::prepare(launcher, &args.scenario).await?;
    let client = prepared.cluster.nodes[0].client()?;
    let request = prepared.request.clone();
    let result = if args.diloco {
        diloco(&client, &request, args.sync_lr).await
    } else if args.accuracy {
        accuracy(&client, &request).await
    } else {
        timings(&mut prepared, &client, &request).await
    };
    if result.is_err() {
        scenario::dump_logs(&prepared.cluster);
    }
    result
}

/// Submits `request` and follows it to the end; the report.
async fn run_job(client: &Client, request: &JobRequest) -> anyhow::Result<TrainingReport> {
    let accepted = client.submit_job(request).await?;
    let followed =
        follow_with_progress(client, &accepted.job_id, request.training.rounds, |_| {}).await?;
    if followed.state != JobState::Finished {
        bail!(
            "job {} failed: {}",
            request.name,
            followed.failure.as_deref().unwrap_or("?")
        );
    }
    Ok(client.job_report(&accepted.job_id).await?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

async fn timings(
    prepared: &mut scenario::Prepared,
    client: &Client,
    request: &JobRequest,
) -> anyhow::Result<String> {
    // 1. The job on the nodes, int8 updates (round 0 warms caches: skipped).
    let int8 = run_job(client, request).await?;
    let allocation = int8.allocation.clone().context("no allocation")?;
    let per_node: Vec<u32> = allocation
        .nodes
        .iter()
        .map(|n| n.shards)
        .filter(|&s| s > 0)
        .collect();
    let rounds_ms: Vec<f64> = int8
        .rounds
        .iter()
        .skip(1)
        .map(|r| r.duration_ms as f64)
        .collect();
    let distributed = median(rounds_ms);

    // 2. The same per-node work in one process.
    let reference = {
        let request = request.clone();
        let per_node = per_node.clone();
        tokio::task::spawn_blocking(move || local_rounds(&request, &per_node)).await??
    };
    let overhead = distributed / reference - 1.0;

    // 3. Bytes per round, int8 against fp32.
    let mut fp32_request = request.clone();
    fp32_request.name = format!("{}-fp32", request.name);
    fp32_request.training.compression = CompressionName::Fp32;
    fp32_request.training.rounds = 3;
    let fp32 = run_job(client, &fp32_request).await?;
    let per_round = |r: &TrainingReport| {
        let n = r.rounds.len().max(1) as f64;
        (r.bytes_up as f64 / n, r.bytes_down as f64 / n)
    };
    let (int8_up, int8_down) = per_round(&int8);
    let (fp32_up, fp32_down) = per_round(&fp32);

    // 4. Recovery after a worker is killed.
    let (recovery_secs, recovery_rounds, victim) = recovery(prepared, client, request).await?;

    println!();
    println!("| measure | value | reference | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| round time, {} nodes ({} workers) vs one process | {distributed:.0} ms | {reference:.0} ms | {:.3}x (overhead {:+.1}%) |",
        prepared.cluster.nodes.len(),
        per_node.len(),
        distributed / reference,
        overhead * 100.0
    );
    println!(
        "| update bytes up per round, int8 vs fp32 | {int8_up:.0} B | {fp32_up:.0} B | {:.3}x |",
        int8_up / fp32_up
    );
    println!(
        "| all bytes per round (params down + updates up) | {:.0} B | {:.0} B | {:.3}x |",
        int8_up + int8_down,
        fp32_up + fp32_down,
        (int8_up + int8_down) / (fp32_up + fp32_down)
    );
    println!(
        "| recovery after SIGKILL of node {victim} | {recovery_secs:.2} s, {recovery_rounds} round(s) | target 10 s, 2 rounds | |"
    );
    Ok(format!(
        "bench round_ms={distributed:.0} reference_ms={reference:.0} overhead={:.3} int8_vs_fp32_up={:.3} int8_vs_fp32_all={:.3} recovery_secs={recovery_secs:.2} recovery_rounds={recovery_rounds}",
        overhead,
        int8_up / fp32_up,
        (int8_up + int8_down) / (fp32_up + fp32_down)
    ))
}

fn load(source: &str) -> anyhow::Result<FashionMnist> {
    Ok(match source {
        "builtin" => builtin::fashion_mnist()?,
        "system" => FashionMnist::load_dir(SYSTEM_FASHION_MNIST_DIR.as_ref())?,
        dir => FashionMnist::load_dir(dir.as_ref())?,
    })
}

fn arch(request: &JobRequest) -> anyhow::Result<ModelSpec> {
    let wire = fairgrid_protocol::messages::ModelSpec {
        arch: request.check()?.arch,
        input: fairgrid_protocol::messages::InputShape {
            channels: 1,
            height: 28,
            width: 28,
            values: fairgrid_protocol::messages::ValueKind::U8,
        },
        classes: 10,
    };
    Ok(fairgrid_node::jobs::model::kernels_spec(&wire))
}

/// The shards of `request`, cut as the coordinator cuts them.
fn shards(request: &JobRequest) -> anyhow::Result<(Vec<Shard>, FashionMnist)> {
    let data = load(&request.data.source)?;
    let train = match request.data.max_train_samples {
        Some(n) => data.train.take(n as usize),
        None => data.train.clone(),
    };
    let shards = train.shards(request.data.shard_size as usize, request.training.seed)?;
    Ok((shards, data))
}

/// Median wall time of a round done in one process: one thread per worker
/// (a one-thread backend each, as a node's worker has), int8 encoding,
/// then the weighted mean, the outer step and the test-set evaluation.
fn local_rounds(request: &JobRequest, per_node: &[u32]) -> anyhow::Result<f64> {
    let (all, data) = shards(request)?;
    let spec = arch(request)?;
    let t = &request.training;
    let mut sets = Vec::new();
    let mut next = 0usize;
    for &n in per_node {
        sets.push(&all[next..next + n as usize]);
        next += n as usize;
    }
    let optimizer = OptimizerConfig::sgd(t.lr, t.momentum);
    let mut workers: Vec<(Trainer<CpuBackend>, Compressor)> = per_node
        .iter()
        .map(|_| {
            Ok((
                Trainer::new(
                    CpuBackend::new(1)?,
                    &spec,
                    optimizer,
                    t.batch_size as usize,
                    t.seed,
                )?,
                Compressor::new(Compression::Int8 {
                    block: t.int8_block,
                })?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut evaluator = Trainer::new(CpuBackend::new(1)?, &spec, optimizer, 256, t.seed)?;
    let mut params = evaluator.params_flat()?;
    let mut times = Vec::new();
    for round in 0..t.rounds {
        let start = Instant::now();
        let deltas: Vec<(Vec<f32>, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter_mut()
                .zip(&sets)
                .enumerate()
                .map(|(i, ((trainer, compressor), shards))| {
                    let params = &params;
                    scope.spawn(move || -> anyhow::Result<(Vec<f32>, u64)> {
                        let set = ShardSet::new(shards.iter().collect())?;
                        let seed = t.seed ^ (u64::from(round) << 8) ^ i as u64;
                        let local = trainer.train_local(
                            params,
                            &set,
                            t.local_steps,
                            lr_at(t, round),
                            seed,
                        )?;
                        let bytes = compressor.encode(&local.delta)?;
                        Ok((decode_update(&bytes, params.len())?, local.samples))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker thread"))
                .collect::<anyhow::Result<_>>()
        })?;
        let refs: Vec<(&[f32], u64)> = deltas.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let mean = weighted_mean(&refs)?;
        for (p, d) in params.iter_mut().zip(&mean) {
            *p += t.outer_lr * d;
        }
        evaluator.set_params_flat(&params)?;
        evaluator.evaluate(&data.test)?;
        if round > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(median(times))
}

/// Runs `request` again, SIGKILLs the last worker once round 2 is done,
/// and times the way back to a full round under the new allocation.
async fn recovery(
    prepared: &mut scenario::Prepared,
    client: &Client,
    request: &JobRequest,
) -> anyhow::Result<(f64, u32, usize)> {
    let mut request = request.clone();
    request.name = format!("{}-recovery", request.name);
    request.training.rounds = request.training.rounds.max(8);
    let accepted = client.submit_job(&request).await?;
    // The victim: the last node besides the coordinator that holds shards.
    let deadline = Instant::now() + Duration::from_secs(request.market.bid_window_secs + 60);
    let allocation = loop {
        match client.job_allocation(&accepted.job_id).await {
            Ok(allocation) => break allocation,
            Err(e) if e.status() == Some(409) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("waiting for the recovery job's allocation"),
        }
    };
    let victim = (1..prepared.cluster.nodes.len())
        .rev()
        .find(|&i| {
            let peer = &prepared.cluster.nodes[i].peer_id;
            allocation
                .nodes
                .iter()
                .any(|n| &n.node == peer && n.shards > 0)
        })
        .context("no worker besides the coordinator holds shards")?;
    let cluster = &mut prepared.cluster;
    let mut killed_at: Option<u64> = None;
    let followed = follow_with_progress(client, &accepted.job_id, request.training.rounds, |e| {
        if let JobEventKind::RoundCompleted { round, .. } = e.kind
            && round >= 2
            && killed_at.is_none()
        {
            cluster.nodes[victim].kill();
            killed_at = Some(e.at_ms.max(now_ms()));
        }
    })
    .await?;
    if followed.state != JobState::Finished {
        bail!("the recovery job did not finish");
    }
    let killed_at = killed_at.context("the job ended before the kill")?;
    // After the kill: rounds until one completes with every worker of the
    // allocation in force (a reallocation came first).
    let mut reallocated = false;
    let mut rounds = 0;
    for e in followed.events.iter().filter(|e| e.at_ms >= killed_at) {
        match &e.kind {
            JobEventKind::Reallocated { .. } => reallocated = true,
            JobEventKind::RoundCompleted {
                updates_accepted, ..
            } => {
                rounds += 1;
                let workers = prepared_workers(&followed.events, e.seq);
                if reallocated && *updates_accepted == workers {
                    return Ok(((e.at_ms - killed_at) as f64 / 1000.0, rounds, victim));
                }
            }
            _ => {}
        }
    }
    bail!("no full round after the kill")
}

/// Workers in the latest clearing before event `seq`.
fn prepared_workers(events: &[fairgrid_sdk::jobs::JobEvent], seq: u64) -> u32 {
    events
        .iter()
        .filter(|e| e.seq < seq)
        .filter_map(|e| match e.kind {
            JobEventKind::Cleared { winners, .. } => Some(winners),
            _ => None,
        })
        .next_back()
        .unwrap_or(0)
}

/// The job's learning rate in `round`, as the workers compute it.
fn lr_at(t: &fairgrid_sdk::jobs::TrainingChoice, round: u32) -> f32 {
    let hyper = HyperParams {
        rounds: t.rounds,
        local_steps: t.local_steps,
        batch_size: t.batch_size,
        optimizer: OptimizerKind::Sgd,
        lr: t.lr,
        momentum: t.momentum,
        outer_lr: t.outer_lr,
        compression: messages::Compression::Fp32,
        seed: t.seed,
        schedule: t.schedule,
        aggregation: Default::default(),
        outer_momentum: t.outer_momentum,
        eval_every: t.eval_every,
        result: Default::default(),
    };
    hyper.lr_at(round)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One job to the end against single-node training on the same total
/// samples and steps.
async fn accuracy(client: &Client, request: &JobRequest) -> anyhow::Result<String> {
    let started = Instant::now();
    let report = run_job(client, request).await?;
    let job_secs = started.elapsed().as_secs_f64();
    let distributed = report.final_test_accuracy.context("no accuracy")?;
    let workers = report
        .allocation
        .as_ref()
        .map_or(0, |a| a.nodes.iter().filter(|n| n.shards > 0).count());
    let request = request.clone();
    let started = Instant::now();
    let single = tokio::task::spawn_blocking(move || single_node(&request, workers)).await??;
    let single_secs = started.elapsed().as_secs_f64();
    println!();
    println!("| run | test accuracy | wall |");
    println!("|---|---:|---:|");
    println!(
        "| {workers} workers on the nodes | {:.2}% | {job_secs:.0} s |",
        distributed * 100.0
    );
    println!(
        "| single node, same samples and steps | {:.2}% | {single_secs:.0} s |",
        single * 100.0
    );
    Ok(format!(
        "bench accuracy distributed={distributed:.4} single={single:.4} diff_pp={:.2}",
        (distributed - single) * 100.0
    ))
}

/// The job as synchronous int8 SGD (H = 1, as many rounds as the job has
/// local steps in all, a plain outer step) and as given.
async fn diloco(
    client: &Client,
    request: &JobRequest,
    sync_lr: Option<f32>,
) -> anyhow::Result<String> {
    let t = &request.training;
    let mut sync = request.clone();
    sync.name = format!("{}-sync", request.name);
    sync.training.rounds = t.rounds * t.local_steps;
    sync.training.local_steps = 1;
    sync.training.outer_lr = 1.0;
    sync.training.outer_momentum = 0.0;
    // Bytes to equal accuracy needs every round's accuracy.
    sync.training.eval_every = 1;
    sync.training.lr = sync_lr.unwrap_or(t.lr);
    let mut runs = Vec::new();
    for job in [&sync, request] {
        let started = Instant::now();
        let report = run_job(client, job).await?;
        let wall = started.elapsed().as_secs_f64();
        let accuracy = report.final_test_accuracy.context("no accuracy")?;
        runs.push((job.training.clone(), accuracy, report, wall));
    }
    // Equal accuracy: the synchronous run's accuracy (reported as its
    // accuracy: the mean over its
    // last tenth of rounds: one round's figure swings by a point or two)
    // less 0.5 pp.
    let target = settled_accuracy(&runs[0].2.rounds) - 0.005;
    println!();
    println!(
        "| run | rounds x H | lr | outer lr, momentum | test accuracy | bytes (up + down) | bytes to {:.2}% | wall |",
        target * 100.0
    );
    println!("|---|---|---|---|---:|---:|---:|---:|");
    let mut to_target = Vec::new();
    for ((t, accuracy, report, wall), label) in runs.iter().zip(["synchronous int8", "as given"]) {
        let reached = bytes_to_accuracy(&report.rounds, target);
        to_target.push(reached);
        println!(
            "| {label} | {} x {} | {} | {}, {} | {:.2}% | {} | {} | {wall:.0} s |",
            t.rounds,
            t.local_steps,
            t.lr,
            t.outer_lr,
            t.outer_momentum,
            accuracy * 100.0,
            report.bytes_up + report.bytes_down,
            reached.map_or("never".to_string(), |b| b.to_string()),
        );
    }
    let ratio = match (to_target[0], to_target[1]) {
        (Some(sync), Some(given)) => format!("{:.1}", sync as f64 / given.max(1) as f64),
        _ => "none".into(),
    };
    Ok(format!(
        "bench diloco sync_accuracy={:.4} accuracy={:.4} diff_pp={:.2} fewer_bytes_to_equal_accuracy={ratio}",
        target + 0.005,
        runs[1].1,
        (runs[1].1 - target - 0.005) * 100.0,
    ))
}

/// The mean test accuracy over the last tenth of the rounds (at least one).
fn settled_accuracy(rounds: &[fairgrid_sdk::jobs::RoundReport]) -> f32 {
    let last: Vec<f32> = rounds
        .iter()
        .rev()
        .take(rounds.len().div_ceil(10).max(1))
        .filter_map(|r| r.test_accuracy)
        .collect();
    last.iter().sum::<f32>() / last.len().max(1) as f32
}

/// Bytes moved (up and down) until a round's test accuracy first reached
/// `target`; `None` if none did.
fn bytes_to_accuracy(rounds: &[fairgrid_sdk::jobs::RoundReport], target: f32) -> Option<u64> {
    let mut total = 0;
    for round in rounds {
        total += round.bytes_up + round.bytes_down;
        if round.test_accuracy.is_some_and(|a| a >= target) {
            return Some(total);
        }
    }
    None
}

/// One trainer on all the shards with the workers' combined batch, the
/// same local steps per round and the same rounds and outer step.
fn single_node(request: &JobRequest, workers: usize) -> anyhow::Result<f32> {
    let (all, data) = shards(request)?;
    let spec = arch(request)?;
    let t = &request.training;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut trainer = Trainer::new(
        CpuBackend::new(threads)?,
        &spec,
        OptimizerConfig::sgd(t.lr, t.momentum),
        t.batch_size as usize * workers.max(1),
        t.seed,
    )?;
    let set = ShardSet::new(all.iter().collect())?;
    let mut params = trainer.params_flat()?;
    for round in 0..t.rounds {
        let update = trainer.train_local(
            &params,
            &set,
            t.local_steps,
            lr_at(t, round),
            1000 + u64::from(round),
        )?;
        for (p, d) in params.iter_mut().zip(&update.delta) {
            *p += t.outer_lr * d;
        }
    }
    trainer.set_params_flat(&params)?;
    Ok(trainer.evaluate(&data.test)?.accuracy as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_until_the_accuracy_is_first_reached() {
        let round = |accuracy: Option<f32>| fairgrid_sdk::jobs::RoundReport {
            round: 0,
            train_loss: 1.0,
            test_accuracy: accuracy,
            participants: 1,
            bytes_up: 10,
            bytes_down: 30,
            duration_ms: 1,
        };
        let rounds: Vec<_> = [0.5, 0.7, 0.8, 0.75]
            .into_iter()
            .map(|a| round(Some(a)))
            .collect();
        assert_eq!(bytes_to_accuracy(&rounds, 0.7), Some(80));
        assert_eq!(bytes_to_accuracy(&rounds, 0.9), None);
        assert_eq!(settled_accuracy(&rounds), 0.75, "the last tenth: one round");
        let many: Vec<_> = (0..20).map(|i| round(Some(i as f32 / 100.0))).collect();
        assert!(
            (settled_accuracy(&many) - 0.185).abs() < 1e-6,
            "mean of the last two"
        );
    }

    #[test]
    fn median_takes_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn workers_come_from_the_latest_clearing() {
        let event = |seq, kind| fairgrid_sdk::jobs::JobEvent {
            seq,
            at_ms: 0,
            kind,
        };
        let cleared = |winners| JobEventKind::Cleared {
            attempt: 0,
            winners,
            assigned: 16,
            shortfall: 0,
        };
        let events = vec![event(1, cleared(4)), event(5, cleared(3))];
        assert_eq!(prepared_workers(&events, 3), 4);
        assert_eq!(prepared_workers(&events, 9), 3);
    }
}
