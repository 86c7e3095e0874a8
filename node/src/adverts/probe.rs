//! What this machine has: CPU cores and memory (sysinfo), a measured CPU
//! GFLOP/s figure, and the GPUs the CUDA backend can use with their
//! measured SGEMM GFLOP/s (the kernels' probe; none without CUDA).

use std::time::Duration;

use fairgrid_protocol::messages::{GpuInfo, Hardware};

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
        gpus: probe_gpus(probe),
    }
}

/// Usable GPUs, each with a short SGEMM measurement. Without the CUDA
/// libraries (or with the `cuda` feature off) this is empty and cheap:
/// the probe checks that the libraries load before calling into them.
fn probe_gpus(probe: Duration) -> Vec<GpuInfo> {
    match fairgrid_kernels::probe::gpus(GPU_GEMM_SIZE, probe) {
        Ok((_, gpus)) => gpus
            .into_iter()
            .filter(|g| g.error.is_none())
            .map(|g| GpuInfo {
                model: g.name,
                mem_mib: g.memory_bytes / (1024 * 1024),
                gflops: g.sgemm_gflops.map_or(0, |f| f.round() as u32),
            })
            .collect(),
        Err(why) => {
            tracing::debug!(target: "fairgrid::adverts", %why, "no GPU to advertise");
            Vec::new()
        }
    }
}

/// Side of the square SGEMM each GPU is measured with.
const GPU_GEMM_SIZE: usize = 2048;
