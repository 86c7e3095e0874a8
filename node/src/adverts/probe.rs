//! What this machine has: CPU cores and memory (sysinfo), a measured CPU
//! GFLOP/s figure (the kernels' probe), and GPUs once the CUDA backend
//! reports them.

use std::time::Duration;

use fairgrid_protocol::messages::Hardware;

/// Probes the hardware, running the CPU benchmark for about `probe`.
pub fn probe_hardware(probe: Duration) -> Hardware {
    let (cores, mem_mib) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            (sys.cpus().len() as u32, sys.total_memory() / (1024 * 1024))
        }
        Err(_) => (0, 0),
    };
    let cores = if cores == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        cores
    };
    let gflops = fairgrid_kernels::probe::cpu_gflops(cores as usize, probe);
    Hardware {
        cpu_cores: cores,
        cpu_gflops: if gflops.is_finite() {
            gflops.round() as u32
        } else {
            0
        },
        mem_mib,
        gpus: Vec::new(),
    }
}
