//! One CUDA device per process: its context, the kernels compiled by NVRTC
//! for its compute capability, and their function handles.
//!
//! The `.cu` sources are compiled at first use (no nvcc at build time) into
//! a CUBIN for the exact architecture (`sm_XY`), once per compute
//! capability and process; the module is loaded once per device. A CUBIN,
//! unlike PTX, loads on any driver of the same CUDA major version as NVRTC,
//! and needs no JIT step at load time. Backends on the same
//! device share this core but each owns its stream, cuBLAS handle and
//! scratch memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::Ptx;

use super::cuda_error;
use crate::error::{KernelError, Result};

/// The kernel sources, in the order NVRTC sees them (the header first).
const SOURCES: [(&str, &str); 8] = [
    ("common.cuh", include_str!("cu/common.cuh")),
    ("elementwise.cu", include_str!("cu/elementwise.cu")),
    ("loss.cu", include_str!("cu/loss.cu")),
    ("pool.cu", include_str!("cu/pool.cu")),
    ("conv.cu", include_str!("cu/conv.cu")),
    ("optim.cu", include_str!("cu/optim.cu")),
    ("quant.cu", include_str!("cu/quant.cu")),
    ("layers.cu", include_str!("cu/layers.cu")),
];

/// Threads per block for the grid-stride kernels.
pub(crate) const THREADS: u32 = 256;

macro_rules! kernel_table {
    ($($name:ident),* $(,)?) => {
        /// Every kernel of the program, by its `extern "C"` name.
        pub(crate) struct Kernels {
            $(pub $name: CudaFunction,)*
        }

        impl Kernels {
            fn load(module: &Arc<CudaModule>) -> Result<Self> {
                Ok(Kernels {
                    $($name: module
                        .load_function(stringify!($name))
                        .map_err(|e| cuda_error(concat!("loading kernel ", stringify!($name)), e))?,)*
                })
            }
        }

        /// Names of every kernel (for the compile smoke test and docs).
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

kernel_table!(
    fill_f32,
    scale_f32,
    u8_to_f32,
    add_bias,
    axpy,
    relu_forward,
    relu_backward,
    sum_squares_partial,
    sum_partials,
    column_partials,
    column_finish,
    check_finite,
    check_finite_multi,
    reset_stats,
    softmax_xent,
    maxpool_forward,
    maxpool_backward,
    maxpool_forward_rows,
    maxpool_backward_rows,
    im2col,
    col2im,
    im2col_rows,
    col2im_rows,
    conv_direct,
    conv_direct_weight_grad,
    conv_direct_weight_finish,
    sgd_step,
    adam_step,
    sgd_step_multi,
    adam_step_multi,
    quantize_int8_ef,
    dequantize_int8,
    activation_forward,
    activation_backward,
    dropout,
    avgpool_forward,
    avgpool_backward,
    norm_partials,
    norm_finish_forward,
    norm_finish_backward,
    norm_apply,
    norm_input_grad,
);

/// A device's context and kernels, shared by every backend on it.
pub(crate) struct DeviceCore {
    pub ctx: Arc<CudaContext>,
    pub kernels: Kernels,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: u32,
    pub total_memory: usize,
}

impl DeviceCore {
    /// A grid-stride launch over `n` elements: enough blocks to fill the
    /// device, never more than the work needs.
    pub fn grid(&self, n: usize) -> LaunchConfig {
        let wanted = n.div_ceil(THREADS as usize).max(1);
        let cap = self.multiprocessors as usize * 16;
        LaunchConfig {
            grid_dim: (wanted.min(cap) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A launch of 32 x 8 blocks that gives one warp to each of `items`
    /// (pixels), lanes walking the channels.
    pub fn warp_grid(&self, items: usize) -> LaunchConfig {
        let wanted = items.div_ceil(8).max(1);
        let cap = self.multiprocessors as usize * 32;
        LaunchConfig {
            grid_dim: (wanted.min(cap) as u32, 1, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// The core for device `ordinal`, created (context, compile, load) on first
/// use. The caller has checked that the CUDA libraries are present.
pub(crate) fn core(ordinal: usize) -> Result<Arc<DeviceCore>> {
    static CORES: OnceLock<Mutex<HashMap<usize, Arc<DeviceCore>>>> = OnceLock::new();
    let cores = CORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cores = cores
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(core) = cores.get(&ordinal) {
        return Ok(core.clone());
    }
    let core = Arc::new(create_core(ordinal)?);
    cores.insert(ordinal, core.clone());
    Ok(core)
}

fn create_core(ordinal: usize) -> Result<DeviceCore> {
    let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error("creating the context", e))?;
    // Each backend uses only its own stream and never shares buffers with
    // another, so cudarc's per-buffer events (a record per kernel argument
    // once several streams exist) would be pure overhead.
    // SAFETY: called before this context allocates anything.
    unsafe { ctx.disable_event_tracking() };
    let compute_capability = ctx
        .compute_capability()
        .map_err(|e| cuda_error("reading the compute capability", e))?;
    let multiprocessors = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| cuda_error("reading the multiprocessor count", e))?;
    let name = ctx
        .name()
        .map_err(|e| cuda_error("reading the device name", e))?;
    let total_memory = ctx
        .total_mem()
        .map_err(|e| cuda_error("reading the device memory", e))?;
    let cubin = compiled_cubin(compute_capability)?;
    let module = ctx
        .load_module(Ptx::from_binary(cubin))
        .map_err(|e| KernelError::Backend {
            backend: "cuda",
            reason: format!(
                "the driver cannot load the kernels NVRTC compiled for sm_{}{} ({e})",
                compute_capability.0, compute_capability.1
            ),
        })?;
    let kernels = Kernels::load(&module)?;
    Ok(DeviceCore {
        ctx,
        kernels,
        name,
        compute_capability,
        multiprocessors: multiprocessors.max(1) as u32,
        total_memory,
    })
}

/// The program compiled for compute capability `cc`, once per process.
fn compiled_cubin(cc: (i32, i32)) -> Result<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<(i32, i32), Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cubin) = cache.get(&cc) {
        return Ok(cubin.clone());
    }
    let cubin = compile_cubin(cc)?;
    cache.insert(cc, cubin.clone());
    Ok(cubin)
}

/// Compiles every `.cu` source as one NVRTC program into a CUBIN for
/// `sm_{cc}`. The caller has checked that NVRTC is loadable.
pub(crate) fn compile_cubin(cc: (i32, i32)) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
    use std::ffi::{CStr, CString};

    let source: String = SOURCES
        .iter()
        .map(|(file, text)| format!("// ---- {file}\n{text}\n"))
        .collect();
    let arch = format!("--gpu-architecture=sm_{}{}", cc.0, cc.1);
    let fail = |what: String| KernelError::Backend {
        backend: "cuda",
        reason: format!("NVRTC ({arch}): {what}"),
    };
    let source = CString::new(source).map_err(|e| fail(e.to_string()))?;
    let name = CString::new("fairgrid.cu").map_err(|e| fail(e.to_string()))?;
    let prog = nvrtc::create_program(&source, Some(&name)).map_err(|e| fail(e.to_string()))?;
    let options = [arch.clone(), "--std=c++17".to_string()];
    // SAFETY: `prog` is live until the destroy below; `source` and `name`
    // outlive it. The buffers are sized by NVRTC's own size queries.
    let result = unsafe {
        match nvrtc::compile_program(prog, &options) {
            Err(error) => {
                let log = nvrtc::get_program_log(prog).unwrap_or_default();
                let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
                Err(fail(format!("compilation failed ({error}):\n{log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| fail(format!("no CUBIN ({e})")))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        nvrtc_sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut _)
                            .result()
                            .map_err(|e| fail(format!("no CUBIN ({e})")))?;
                        Ok(cubin)
                    })
            }
        }
    };
    // SAFETY: created above and not yet destroyed.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only NVRTC, no GPU: every kernel compiles for the
    /// architectures fairgrid targets and is present in the CUBIN.
    #[test]
    fn nvrtc_compiles_every_kernel() {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            // CI installs NVRTC and sets this: there the test must run.
            assert!(
                std::env::var_os("FAIRGRID_REQUIRE_NVRTC").is_none(),
                "FAIRGRID_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
            );
            eprintln!("SKIPPED nvrtc_compiles_every_kernel: libnvrtc not found (CI installs it)");
            return;
        }
        for cc in [(7, 5), (8, 0), (8, 9), (9, 0)] {
            let cubin = compile_cubin(cc).unwrap_or_else(|e| panic!("sm_{}{}: {e}", cc.0, cc.1));
            for name in KERNEL_NAMES {
                let found = cubin
                    .windows(name.len() + 1)
                    .any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
                assert!(
                    found,
                    "kernel {name} missing from the sm_{}{} CUBIN",
                    cc.0, cc.1
                );
            }
        }
    }
}
