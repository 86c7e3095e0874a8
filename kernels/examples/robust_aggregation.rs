//! Robust aggregation's price and payoff (issue 13, point 5): five workers
//! train data-parallel (one shard each, H local steps per round, the
//! coordinator's outer step is plain averaging), and their deltas are
//! combined by the sample-weighted mean, a coordinate-wise trimmed mean
//! (one worker dropped at each end) or centered clipping. Each rule runs
//! on honest workers and with worker 5 sending -4x its honest delta (a
//! sign-flipped, scaled update that passes the node's bound and
//! finiteness checks). Test accuracy at the end, per rule and seed.
//!
//! `cargo run --release -p fairgrid-kernels --example robust_aggregation [rounds] [seeds]`

mod common;

use fairgrid_kernels::compress::robust::{centered_clip, trimmed_mean};
use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{CpuBackend, OptimizerConfig, Result, Samples, Trainer, weighted_mean};

const WORKERS: usize = 5;
const LOCAL_STEPS: u32 = 10;
const BATCH: usize = 32;
const LR: f32 = 0.05;

#[derive(Clone, Copy, Debug)]
enum Rule {
    Mean,
    Trimmed,
    Clipped,
}

fn combine(rule: Rule, deltas: &[(&[f32], u64)]) -> Result<Vec<f32>> {
    match rule {
        Rule::Mean => weighted_mean(deltas),
        Rule::Trimmed => trimmed_mean(deltas, 1),
        Rule::Clipped => centered_clip(deltas),
    }
}

fn run(rule: Rule, attacked: bool, rounds: u32, seed: u64) -> Result<f64> {
    let data = builtin::fashion_mnist()?;
    let spec = common::mlp_128();
    let shard_size = data.train.len() / WORKERS;
    let shards = data.train.shards(shard_size, seed)?;
    let optimizer = OptimizerConfig::sgd(LR, 0.9);
    let mut trainer = Trainer::new(CpuBackend::new(1)?, &spec, optimizer, BATCH, seed)?;
    let mut params = trainer.params_flat()?;
    for round in 0..rounds {
        let mut deltas: Vec<(Vec<f32>, u64)> = Vec::with_capacity(WORKERS);
        for (w, shard) in shards.iter().take(WORKERS).enumerate() {
            let local = trainer.train_local(
                &params,
                shard,
                LOCAL_STEPS,
                LR,
                seed ^ (u64::from(round) << 8) ^ w as u64,
            )?;
            let mut delta = local.delta;
            if attacked && w == WORKERS - 1 {
                delta.iter_mut().for_each(|v| *v *= -4.0);
            }
            deltas.push((delta, local.samples));
        }
        let refs: Vec<(&[f32], u64)> = deltas.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let step = combine(rule, &refs)?;
        params.iter_mut().zip(&step).for_each(|(p, d)| *p += d);
    }
    trainer.set_params_flat(&params)?;
    Ok(trainer.evaluate(&data.test)?.accuracy)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let seeds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!(
        "{WORKERS} workers, MLP 784-128-10 on the built-in Fashion-MNIST subset, {rounds} rounds of {LOCAL_STEPS} local steps at batch {BATCH}; test accuracy"
    );
    println!("{:<14} {:>8} {:>20}", "rule", "seed", "honest / attacked");
    for rule in [Rule::Mean, Rule::Trimmed, Rule::Clipped] {
        let (mut honest_sum, mut attacked_sum) = (0.0, 0.0);
        for seed in 1..=seeds {
            let honest = run(rule, false, rounds, seed)?;
            let attacked = run(rule, true, rounds, seed)?;
            honest_sum += honest;
            attacked_sum += attacked;
            println!(
                "{:<14} {seed:>8} {:>9.4} / {:.4}",
                format!("{rule:?}"),
                honest,
                attacked
            );
        }
        let n = seeds as f64;
        println!(
            "{:<14} {:>8} {:>9.4} / {:.4}",
            format!("{rule:?}"),
            "mean",
            honest_sum / n,
            attacked_sum / n
        );
    }
    Ok(())
}
