//! Bench binary: CNN training-step throughput and a per-op breakdown.
//! `cargo bench -p fairgrid-kernels --bench cnn_step -- [threads] [batch] [steps]`

use std::time::Instant;

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{Arch, CpuBackend, ModelSpec, OptimizerConfig, Samples, Trainer};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let steps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let data = builtin::fashion_mnist().expect("builtin data").train;
    let backend = CpuBackend::new(threads).expect("backend");
    let spec = ModelSpec::fashion_mnist(Arch::Cnn);
    let mut trainer =
        Trainer::new(backend, &spec, OptimizerConfig::sgd(0.01, 0.9), batch, 1).unwrap();
    let n = data.len() as u32;
    let idx: Vec<Vec<u32>> = (0..steps + 10)
        .map(|s| {
            (0..batch as u32)
                .map(|i| (s as u32 * batch as u32 + i) % n)
                .collect()
        })
        .collect();
    for b in &idx[..10] {
        trainer.step(&data, b, 0.01).unwrap();
    }
    let start = Instant::now();
    for b in &idx[10..] {
        trainer.step(&data, b, 0.01).unwrap();
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "cnn threads={threads} batch={batch} steps={steps} samples_per_sec={:.0} ms_per_step={:.2}",
        (steps * batch) as f64 / dt,
        dt * 1000.0 / steps as f64
    );
}
