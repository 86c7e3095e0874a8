//! Bench binary: bytes per parameter and the error each update encoding
//! adds, measured on a real update (the CNN's delta after 20 local steps on
//! the built-in subset). Prints a table.
//! `cargo bench -p fairgrid-kernels --bench compression`

use std::time::Instant;

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{
    Arch, Compression, Compressor, CpuBackend, ModelSpec, OptimizerConfig, Trainer, decode_update,
};

fn main() {
    let data = builtin::fashion_mnist().expect("builtin data").train;
    let spec = ModelSpec::fashion_mnist(Arch::Cnn);
    let backend = CpuBackend::new(2).expect("backend");
    let mut trainer = Trainer::new(backend, &spec, OptimizerConfig::sgd(0.05, 0.9), 64, 1).unwrap();
    let start = trainer.params_flat().unwrap();
    let update = trainer.train_local(&start, &data, 20, 0.05, 1).unwrap();
    let delta = &update.delta;
    let norm = delta
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    let max = delta.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!(
        "update: {} parameters, L2 norm {norm:.4}, max |x| {max:.5}",
        delta.len()
    );
    println!(
        "| scheme | bytes/param | relative L2 error | max abs error / max abs | encode+decode ms |"
    );
    println!("|---|---|---|---|---|");
    for scheme in [
        Compression::Fp32,
        Compression::Int8 { block: 64 },
        Compression::Int8 { block: 256 },
        Compression::Int8 { block: 4096 },
        Compression::TopK { permille: 100 },
        Compression::TopK { permille: 10 },
    ] {
        let t = Instant::now();
        let bytes = Compressor::new(scheme).unwrap().encode(delta).unwrap();
        let back = decode_update(&bytes, delta.len()).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let err = delta
            .iter()
            .zip(&back)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let max_err = delta
            .iter()
            .zip(&back)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "| {scheme:?} | {:.4} | {:.2e} | {:.2e} | {ms:.1} |",
            bytes.len() as f64 / delta.len() as f64,
            err / norm,
            max_err / max
        );
    }
}
