//! Bench binary: inference on the built-in test set (2,000 images) with
//! the CNN in fp32 (the CPU backend's GEMM) and in int8 (`model::int8`),
//! same threads, after one epoch of training. Prints accuracy and the
//! median of 5 timed passes of each, and their ratio.
//! `cargo bench -p fairgrid-kernels --bench int8_inference [-- THREADS]`

use std::time::{Duration, Instant};

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::model::int8::Int8Model;
use fairgrid_kernels::{Arch, CpuBackend, Model, ModelSpec, OptimizerConfig, Samples, Trainer};

const BATCH: usize = 64;
const PASSES: usize = 5;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let data = builtin::fashion_mnist().expect("builtin data");
    let spec = ModelSpec::fashion_mnist(Arch::Cnn);
    let backend = CpuBackend::new(threads).expect("backend");
    let mut t = Trainer::new(backend, &spec, OptimizerConfig::sgd(0.05, 0.9), BATCH, 1).unwrap();
    t.train_epoch(&data.train, 1, &|_| 0.05, &mut |_, _| true)
        .unwrap();
    let mut fp32_times = Vec::new();
    let mut fp32 = 0.0;
    for _ in 0..PASSES {
        let started = Instant::now();
        fp32 = t.evaluate(&data.test).unwrap().accuracy;
        fp32_times.push(started.elapsed());
    }
    let backend = CpuBackend::new(threads).expect("backend");
    let mut model = Model::new(&backend, &spec, 0).unwrap();
    model
        .set_params_flat(&backend, &t.params_flat().unwrap())
        .unwrap();
    let mut int8 = Int8Model::new(model, backend, threads).unwrap();
    let mut int8_times = Vec::new();
    let mut int8_accuracy = 0.0;
    for _ in 0..PASSES {
        let started = Instant::now();
        int8_accuracy = int8.evaluate(&data.test, BATCH).unwrap().accuracy;
        int8_times.push(started.elapsed());
    }
    let (a, b) = (median(fp32_times), median(int8_times));
    println!(
        "threads {threads}, batch {BATCH}, {} test images, median of {PASSES}",
        data.test.len()
    );
    println!("| path | test accuracy | ms per pass | images/s |");
    println!("|---|---|---|---|");
    for (name, acc, d) in [("fp32", fp32, a), ("int8", int8_accuracy, b)] {
        println!(
            "| {name} | {acc:.4} | {:.1} | {:.0} |",
            d.as_secs_f64() * 1e3,
            data.test.len() as f64 / d.as_secs_f64()
        );
    }
    println!(
        "result int8_over_fp32_time={:.3} accuracy_fp32={fp32:.4} accuracy_int8={int8_accuracy:.4}",
        b.as_secs_f64() / a.as_secs_f64()
    );
}
