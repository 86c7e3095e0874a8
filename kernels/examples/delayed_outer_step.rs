//! What overlapping a round's communication with the next round's
//! computation would cost in accuracy (issue 16, point 3). In the
//! synchronous protocol every worker trains round r from the parameters
//! the outer step of round r - 1 produced, so the exchange between
//! rounds is exposed. A delayed outer step hides it: round r trains from
//! the parameters before round r - 1's outer step (which the worker
//! already holds), and its deltas are applied one round late to the
//! newest parameters. Two stand-ins for the mean a worker has not
//! received yet, added to those parameters: its own delta of round r - 1
//! (`OwnDelta`), or that delta for its share and the other workers'
//! deltas of round r - 2 for theirs (`Eager`, after the eager updates of
//! Kale, Douillard and Donchev, 2025). This harness trains the same job
//! each way, in one process, and prints test accuracy after every round.
//!
//! Workers train H local steps of SGD (momentum restarted each round) on
//! one shard each; the outer step is `v = mu v + d`, `params + lr (d + mu
//! v)` on the mean delta `d`, as the coordinator's (`OuterStep`).
//!
//! `cargo run --release -p fairgrid-kernels --example delayed_outer_step -- R H OUTER_LR MU SEEDS`

mod common;

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{CpuBackend, OptimizerConfig, Result, Samples, Trainer, weighted_mean};

const WORKERS: usize = 4;
const BATCH: usize = 8;
const LR: f32 = 0.02;

struct Outer {
    lr: f32,
    momentum: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Sync,
    Delayed,
    OwnDelta,
    Eager,
}

/// Test accuracy after each round.
fn run(mode: Mode, rounds: u32, h: u32, outer: &Outer, seed: u64) -> Result<Vec<f64>> {
    let data = builtin::fashion_mnist()?;
    let spec = common::mlp_128();
    let shards = data.train.shards(data.train.len() / WORKERS, seed)?;
    let optimizer = OptimizerConfig::sgd(LR, 0.9);
    let mut trainer = Trainer::new(CpuBackend::new(1)?, &spec, optimizer, BATCH, seed)?;
    let mut params = trainer.params_flat()?;
    // The parameters round r trains from when delayed: those before the
    // last outer step.
    let mut previous = params.clone();
    let mut velocity = vec![0.0f32; params.len()];
    let mut accuracy = Vec::with_capacity(rounds as usize);
    let n = params.len();
    // Each worker's deltas of rounds r - 1 and r - 2, and the mean of
    // round r - 2 (zero before there were any).
    let mut own_last = vec![vec![0.0f32; n]; WORKERS];
    let mut own_before = vec![vec![0.0f32; n]; WORKERS];
    let mut mean_before = vec![0.0f32; n];
    let mut last_mean = vec![0.0f32; n];
    let m = WORKERS as f32;
    for round in 0..rounds {
        let mut deltas: Vec<(Vec<f32>, u64)> = Vec::with_capacity(WORKERS);
        for (w, shard) in shards.iter().take(WORKERS).enumerate() {
            let mut base = match mode {
                Mode::Sync => params.clone(),
                _ => previous.clone(),
            };
            let (fresh, stale) = (&own_last[w], &own_before[w]);
            match mode {
                Mode::OwnDelta => base.iter_mut().zip(fresh).for_each(|(b, d)| *b += d),
                Mode::Eager => {
                    for (i, b) in base.iter_mut().enumerate() {
                        let others = m * mean_before[i] - stale[i];
                        *b += outer.lr * (fresh[i] + others) / m;
                    }
                }
                Mode::Sync | Mode::Delayed => {}
            }
            let round_seed = seed ^ (u64::from(round) << 8) ^ w as u64;
            let local = trainer.train_local(&base, shard, h, LR, round_seed)?;
            own_before[w] = std::mem::replace(&mut own_last[w], local.delta.clone());
            deltas.push((local.delta, local.samples));
        }
        let refs: Vec<(&[f32], u64)> = deltas.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let mean = weighted_mean(&refs)?;
        mean_before = std::mem::replace(&mut last_mean, mean.clone());
        previous.clone_from(&params);
        for ((p, v), d) in params.iter_mut().zip(&mut velocity).zip(&mean) {
            *v = outer.momentum * *v + d;
            *p += outer.lr * (d + outer.momentum * *v);
        }
        trainer.set_params_flat(&params)?;
        accuracy.push(trainer.evaluate(&data.test)?.accuracy);
    }
    Ok(accuracy)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: u32 = arg(&args, 0, 10);
    let h: u32 = arg(&args, 1, 100);
    let outer = Outer {
        lr: arg(&args, 2, 1.0),
        momentum: arg(&args, 3, 0.0),
    };
    let seeds: u64 = arg(&args, 4, 3);
    println!(
        "{WORKERS} workers, MLP 784-128-10, built-in Fashion-MNIST subset, {rounds} rounds x {h} local steps \
         (batch {BATCH}, lr {LR}), outer lr {} momentum {}; test accuracy by round",
        outer.lr, outer.momentum
    );
    let modes = [Mode::Sync, Mode::Delayed, Mode::OwnDelta, Mode::Eager];
    let mut finals = [0.0f64; 4];
    for seed in 1..=seeds {
        for (i, mode) in modes.into_iter().enumerate() {
            let accuracy = run(mode, rounds, h, &outer, seed)?;
            let shown: Vec<String> = accuracy.iter().map(|v| format!("{v:.4}")).collect();
            println!("seed {seed} {:<8} {}", format!("{mode:?}"), shown.join(" "));
            // The last rounds swing by a few points: their mean.
            let tail = &accuracy[accuracy.len() - accuracy.len().div_ceil(4)..];
            finals[i] += tail.iter().sum::<f64>() / tail.len() as f64;
        }
    }
    let n = seeds as f64;
    let sync = finals[0] / n;
    for (i, mode) in modes.into_iter().enumerate() {
        let mean = finals[i] / n;
        println!(
            "accuracy over the last quarter of the rounds, mean of {seeds} seeds, {mode:?}: {mean:.4} ({:+.2} pp against Sync)",
            (mean - sync) * 100.0
        );
    }
    Ok(())
}
