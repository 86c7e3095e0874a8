//! `fairgrid devices`: what this node can offer, measured.

use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Threads the CPU benchmark may use (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = args.threads.unwrap_or(cores).max(1);
    let gflops = fairgrid_kernels::probe::cpu_gflops(threads, Duration::from_millis(300));
    println!("cpu  cores={cores} threads={threads} sgemm_gflops={gflops:.1}");
    Ok(())
}
