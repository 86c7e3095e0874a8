//! `fairgrid devices`: what this node can offer, measured: the CPU and each
//! GPU (name, memory, measured SGEMM GFLOP/s), or exactly why CUDA is not
//! usable here. The same probe feeds the node's capacity advert.

use std::time::Duration;

use clap::Args;
use fairgrid_kernels::probe::{ProbeOptions, devices};

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Threads the CPU benchmark may use (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Side of the square fp32 GEMM timed on each GPU (0: no GPU benchmark).
    #[arg(long, default_value_t = 2048)]
    pub gemm_size: usize,
    /// Wall time of each benchmark, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub budget_ms: u64,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    if args.budget_ms == 0 || args.budget_ms > 60_000 {
        anyhow::bail!("--budget-ms must be in 1..=60000");
    }
    if args.gemm_size > 32_768 {
        anyhow::bail!("--gemm-size must be at most 32768");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ProbeOptions {
        cpu_threads: args.threads.unwrap_or(cores).max(1),
        budget: Duration::from_millis(args.budget_ms),
        gpu_gemm_size: args.gemm_size,
    };
    let report = devices(&options);
    let cpu = report.cpu;
    // The GEMM kernels and the arithmetic class an update declares
    // (audits replay an x86_avx2_fma round exactly).
    println!(
        "cpu  cores={} threads={} sgemm_gflops={:.1} fma_peak_gflops={:.1} gemm_kernels={} arithmetic={}",
        cpu.cores,
        cpu.threads,
        cpu.sgemm_gflops,
        cpu.fma_peak_gflops,
        fairgrid_kernels::backend::cpu::gemm_simd_path(),
        match crate::jobs::device::cpu_arithmetic() {
            fairgrid_protocol::messages::Arithmetic::X86Avx2Fma => "x86_avx2_fma",
            _ => "other_cpu",
        }
    );
    match report.cuda {
        Err(why) => println!("cuda unavailable: {why}"),
        Ok((libraries, gpus)) => {
            let v = |(major, minor): (i32, i32)| format!("{major}.{minor}");
            println!(
                "cuda driver={} nvrtc={} cublas={} gpus={}",
                v(libraries.driver),
                v(libraries.nvrtc),
                v(libraries.cublas),
                gpus.len()
            );
            for gpu in gpus {
                let speed = gpu.sgemm_gflops.map_or_else(
                    || "sgemm_gflops=-".to_string(),
                    |g| format!("sgemm_gflops={g:.1} sgemm_size={}", args.gemm_size),
                );
                let (major, minor) = gpu.compute_capability;
                print!(
                    "gpu{} name={:?} memory_gib={:.1} compute_capability={major}.{minor} {speed}",
                    gpu.ordinal,
                    gpu.name,
                    gpu.memory_bytes as f64 / (1u64 << 30) as f64,
                );
                match gpu.error {
                    Some(error) => println!(" unusable: {error}"),
                    None => println!(),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_without_panicking_and_refuses_bad_settings() {
        let args = |budget_ms, gemm_size| DevicesArgs {
            threads: Some(1),
            gemm_size,
            budget_ms,
        };
        run(args(20, 64)).unwrap();
        assert!(run(args(0, 64)).is_err());
        assert!(run(args(20, 1 << 20)).is_err());
    }
}
