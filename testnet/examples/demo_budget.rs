//! What the demo job costs and reaches, without the network: the same
//! local-SGD rounds the testnet's workers run (W workers, H local steps of
//! batch B over their shards, int8 updates with error feedback, averaged
//! weighted by samples, test accuracy after each round), in one process
//! with one training thread. Used to choose the demo's defaults (see
//! `testnet/src/job.rs` and docs/benchmarks.md "Testnet demo").
//!
//! ```sh
//! cargo run --release -p fairgrid-testnet --example demo_budget -- cnn 30 8 32 0.05 3
//! #                                                        model rounds H B lr workers
//! ```

use std::time::Instant;

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{
    Arch, Compression, Compressor, CpuBackend, ModelSpec, OptimizerConfig, Samples, ShardSet,
    Trainer, decode_update, weighted_mean,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let arch = match arg(0, "cnn").as_str() {
        "mlp" => Arch::Mlp {
            hidden: vec![256, 128],
        },
        _ => Arch::Cnn,
    };
    let rounds: u32 = arg(1, "30").parse()?;
    let local_steps: u32 = arg(2, "8").parse()?;
    let batch: usize = arg(3, "32").parse()?;
    let lr: f32 = arg(4, "0.05").parse()?;
    let workers: usize = arg(5, "3").parse()?;
    let shards_per_worker = 4;

    let data = builtin::fashion_mnist()?;
    let shard_count = workers * shards_per_worker;
    let shard_size = data.train.len().div_ceil(shard_count);
    let shards = data.train.shards(shard_size, 1)?;
    let spec = ModelSpec::fashion_mnist(arch.clone());
    let mut coordinator = Trainer::new(
        CpuBackend::new(1)?,
        &spec,
        OptimizerConfig::sgd(lr, 0.9),
        256,
        1,
    )?;
    let mut trainers = (0..workers)
        .map(|_| {
            Trainer::new(
                CpuBackend::new(1)?,
                &spec,
                OptimizerConfig::sgd(lr, 0.9),
                batch,
                1,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut compressors = (0..workers)
        .map(|_| Compressor::new(Compression::Int8 { block: 256 }))
        .collect::<Result<Vec<_>, _>>()?;
    let mut params = coordinator.params_flat()?;
    println!(
        "{arch} | {workers} workers x {shards_per_worker} shards of {shard_size} | {rounds} rounds x H={local_steps} x B={batch}, lr {lr}, int8"
    );
    println!("round  train_loss  test_acc  train_s  eval_s  bytes_up");
    let (mut train_total, mut eval_total) = (0.0, 0.0);
    for round in 1..=rounds {
        let started = Instant::now();
        let mut decoded = Vec::new();
        let mut loss = 0.0;
        let mut bytes_up = 0;
        for (w, trainer) in trainers.iter_mut().enumerate() {
            let mine: Vec<_> = shards[w * shards_per_worker..(w + 1) * shards_per_worker]
                .iter()
                .collect();
            let set = ShardSet::new(mine)?;
            let seed = u64::from(round) << 16 | w as u64;
            let update = trainer.train_local(&params, &set, local_steps, lr, seed)?;
            let bytes = compressors[w].encode(&update.delta)?;
            bytes_up += bytes.len();
            decoded.push((decode_update(&bytes, params.len())?, update.samples));
            loss += update.mean_loss / workers as f32;
        }
        let deltas: Vec<(&[f32], u64)> = decoded.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
        let mean = weighted_mean(&deltas)?;
        for (p, d) in params.iter_mut().zip(&mean) {
            *p += d;
        }
        let train_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        coordinator.set_params_flat(&params)?;
        let metrics = coordinator.evaluate(&data.test)?;
        let eval_s = started.elapsed().as_secs_f64();
        train_total += train_s;
        eval_total += eval_s;
        println!(
            "{round:>5}  {loss:>10.4}  {:>7.2}%  {train_s:>7.2}  {eval_s:>6.2}  {bytes_up:>8}",
            metrics.accuracy * 100.0
        );
    }
    println!(
        "compute: {train_total:.1} s training (one thread, workers in turn), {eval_total:.1} s evaluating; test set {} samples",
        data.test.len()
    );
    Ok(())
}
