//! Capacity probe: what this machine can do, measured. The node's capacity
//! advert and `fairgrid devices` both use it.
//!
//! - [`devices`] returns a [`DeviceReport`]: the CPU (cores, measured GEMM
//!   GFLOP/s, FMA peak) and either every GPU ([`GpuReport`]: name, memory,
//!   compute capability, measured SGEMM GFLOP/s) or the reason CUDA cannot
//!   be used ([`CudaUnavailable`]).
//! - [`cuda_libraries`] only checks the driver, NVRTC and cuBLAS (cheap,
//!   cached); the CUDA backend calls it before touching cudarc, because
//!   cudarc panics when a library it needs is missing.
//!
//! Nothing here panics when CUDA is absent, broken or compiled out.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use std::fmt;
use std::time::Duration;

pub use cpu::{cpu_gflops, fma_peak_gflops};

/// Why CUDA cannot be used on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaUnavailable {
    /// This build has no CUDA backend (the `cuda` feature was off).
    NotCompiled,
    /// The NVIDIA driver library (libcuda) could not be loaded.
    NoDriver(String),
    /// The runtime compiler (libnvrtc) could not be loaded.
    NoNvrtc(String),
    /// cuBLAS (libcublas) could not be loaded.
    NoCublas(String),
    /// A library is present but too old, or newer than the driver.
    WrongVersion(String),
    /// The driver loaded but reports no usable GPU.
    NoDevice(String),
}

impl fmt::Display for CudaUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaUnavailable::NotCompiled => {
                write!(
                    f,
                    "this build has no CUDA backend (built without the `cuda` feature)"
                )
            }
            CudaUnavailable::NoDriver(why) => {
                write!(f, "no NVIDIA driver: libcuda could not be loaded ({why})")
            }
            CudaUnavailable::NoNvrtc(why) => write!(
                f,
                "no NVRTC: libnvrtc could not be loaded ({why}); install the CUDA toolkit's \
                 NVRTC (or the nvidia-cuda-nvrtc wheel) and put its lib directory on \
                 LD_LIBRARY_PATH"
            ),
            CudaUnavailable::NoCublas(why) => write!(
                f,
                "no cuBLAS: libcublas could not be loaded ({why}); install cuBLAS (or the \
                 nvidia-cublas wheel) and put its lib directory on LD_LIBRARY_PATH"
            ),
            CudaUnavailable::WrongVersion(why) => write!(f, "wrong version: {why}"),
            CudaUnavailable::NoDevice(why) => write!(f, "no usable GPU: {why}"),
        }
    }
}

/// Versions of the CUDA libraries found, as `(major, minor)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaLibraries {
    /// The newest CUDA version the driver supports.
    pub driver: (i32, i32),
    pub nvrtc: (i32, i32),
    pub cublas: (i32, i32),
    /// GPUs the driver sees.
    pub device_count: usize,
}

/// One GPU, measured.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReport {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
    pub compute_capability: (i32, i32),
    /// cuBLAS SGEMM throughput (fp32, no TF32) on square matrices, GFLOP/s;
    /// `None` when the benchmark was not run or failed (see `error`).
    pub sgemm_gflops: Option<f64>,
    /// Why this GPU cannot be used, if it cannot (the others may still be).
    pub error: Option<String>,
}

/// The CPU, measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuReport {
    pub cores: usize,
    pub threads: usize,
    pub sgemm_gflops: f64,
    pub fma_peak_gflops: f64,
}

/// Everything the node can offer.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    pub cpu: CpuReport,
    /// The libraries and GPUs, or why CUDA cannot be used.
    pub cuda: Result<(CudaLibraries, Vec<GpuReport>), CudaUnavailable>,
}

/// How long and how big the probe's benchmarks are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOptions {
    /// CPU threads to measure with.
    pub cpu_threads: usize,
    /// Wall time of each benchmark.
    pub budget: Duration,
    /// Side of the square SGEMM run on each GPU; 0 skips the GPU benchmark.
    pub gpu_gemm_size: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            budget: Duration::from_millis(300),
            gpu_gemm_size: 2048,
        }
    }
}

/// Measures the CPU and every GPU.
pub fn devices(options: &ProbeOptions) -> DeviceReport {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = options.cpu_threads.max(1);
    let cpu = CpuReport {
        cores,
        threads,
        sgemm_gflops: cpu_gflops(threads, options.budget),
        fma_peak_gflops: fma_peak_gflops(threads, options.budget.mul_f32(0.7)),
    };
    DeviceReport {
        cpu,
        cuda: gpus(options.gpu_gemm_size, options.budget),
    }
}

/// Every GPU with its measured SGEMM throughput (`gemm_size` 0: no
/// benchmark), or why CUDA cannot be used.
pub fn gpus(
    gemm_size: usize,
    budget: Duration,
) -> Result<(CudaLibraries, Vec<GpuReport>), CudaUnavailable> {
    #[cfg(feature = "cuda")]
    {
        cuda::gpus(gemm_size, budget)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (gemm_size, budget);
        Err(CudaUnavailable::NotCompiled)
    }
}

/// Checks (once per process) that the driver, NVRTC and cuBLAS load and
/// have usable versions, without creating a context.
pub fn cuda_libraries() -> Result<CudaLibraries, CudaUnavailable> {
    #[cfg(feature = "cuda")]
    {
        cuda::libraries()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(CudaUnavailable::NotCompiled)
    }
}
