//! The CUDA backend: buffers in device memory, kernels from the `.cu` files
//! under `cu/` compiled by NVRTC at first use, matrix products in cuBLAS.
//!
//! Every op is queued on the backend's own stream and returns at once;
//! only ops that hand a value to the host (`download`, `sum_squares`,
//! `softmax_xent`, `quantize_int8_ef`, `take_stats`) wait. Uploads go
//! through pinned staging memory, so they do not wait either. Kernels do
//! not use floating-point atomics, and cuBLAS is deterministic for a given
//! device and shape, so a run repeats bit for bit on the same GPU.
//!
//! Errors a kernel detects (a max-pool argmax outside its window, a label
//! outside the classes) are raised at the next op that waits for the
//! device, not by the op that launched the kernel.
//!
//! Create one with [`CudaBackend::new`] after [`crate::probe::cuda_libraries`]
//! said yes (it checks again itself and returns
//! [`KernelError::CudaUnavailable`] rather than letting cudarc panic).

mod blas;
mod conv;
mod device;
mod layers;
mod memory;
mod ops;
mod optim;
mod quant;

use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, result};

pub use device::KERNEL_NAMES;
pub use memory::{DeviceBuf, MemStats};

use crate::error::{KernelError, Result};
use device::DeviceCore;
use memory::{STAGING_SLOT_BYTES, Staging};

/// A device buffer of f32.
pub type CudaBuf = DeviceBuf<f32>;
/// A device buffer of u32.
pub type CudaIdxBuf = DeviceBuf<u32>;

/// Device-resident training statistics (six u64 words, laid out in
/// `cu/common.cuh`).
pub struct CudaStats {
    words: DeviceBuf<u64>,
}

/// Options of a [`CudaBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CudaOptions {
    /// Let cuBLAS use TF32 tensor cores for matrix products (and so for
    /// convolutions): much faster, with about 1e-3 relative error per
    /// product instead of 1e-7 (see docs/kernels.md).
    pub tf32: bool,
}

/// Wraps a cudarc error with the operation that failed.
pub(crate) fn cuda_error(
    op: &'static str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> KernelError {
    KernelError::Cuda {
        op,
        source: Box::new(error),
    }
}

/// Launches kernel `$kernel` of `$be` with config `$cfg` and the given
/// arguments, each passed by value (types must match the `.cu` signature:
/// `u64` for pointers, `u32`, `i32`, `f32`, or a `#[repr(C)]` struct).
macro_rules! launch {
    ($be:expr, $kernel:ident, $cfg:expr, [$($arg:expr),* $(,)?]) => {
        $be.launch_raw(
            &$be.core.kernels.$kernel,
            stringify!($kernel),
            $cfg,
            &mut [$(&mut { $arg } as *mut _ as *mut ::std::ffi::c_void),*],
        )
    };
}
pub(crate) use launch;

/// Mutable per-backend state: staging, scratch and small result buffers.
pub(crate) struct State {
    staging: Staging,
    /// Device side of byte uploads (images) before conversion to f32.
    bytes: DeviceBuf<u8>,
    /// im2col / column-gradient scratch.
    col: Option<DeviceBuf<f32>>,
    /// Partial column sums (bias gradients).
    partial_sums: Option<DeviceBuf<f32>>,
    /// Per-chunk partial sums of batch normalisation.
    norm_partials: Option<DeviceBuf<f64>>,
    /// Per-block partial sums of `sum_squares` and its result.
    partials: DeviceBuf<f64>,
    /// Statistics for the synchronous `softmax_xent`.
    stats: DeviceBuf<u64>,
    /// Quantisation codes and scales on their way to or from the host.
    codes: Option<DeviceBuf<i8>>,
    scales: Option<DeviceBuf<f32>>,
    /// Whether a kernel that can raise a fault ran since the last check.
    faults_dirty: bool,
}

/// A CUDA device as a [`crate::Backend`].
pub struct CudaBackend {
    core: Arc<DeviceCore>,
    ordinal: usize,
    stream: Arc<CudaStream>,
    blas: blas::Blas,
    mem: Arc<MemStats>,
    faults: DeviceBuf<u32>,
    state: Mutex<State>,
    options: CudaOptions,
}

/// Blocks (of 256 threads) for the partial sums of `sum_squares`.
const PARTIAL_BLOCKS: usize = 1024;

impl CudaBackend {
    /// The backend on GPU `ordinal`, fp32 everywhere.
    pub fn new(ordinal: usize) -> Result<Self> {
        CudaBackend::with_options(ordinal, CudaOptions::default())
    }

    pub fn with_options(ordinal: usize, options: CudaOptions) -> Result<Self> {
        let libraries = crate::probe::cuda_libraries().map_err(KernelError::CudaUnavailable)?;
        if ordinal >= libraries.device_count {
            return Err(KernelError::config(
                "CUDA device",
                format!(
                    "GPU {ordinal} requested, {} present",
                    libraries.device_count
                ),
            ));
        }
        let core = device::core(ordinal)?;
        let stream = core
            .ctx
            .new_stream()
            .map_err(|e| cuda_error("creating a stream", e))?;
        let mem = Arc::new(MemStats::default());
        let blas = blas::Blas::new(&stream, &mem, options.tf32)?;
        let state = State {
            staging: Staging::new(&stream)?,
            bytes: DeviceBuf::zeros(&stream, STAGING_SLOT_BYTES, &mem)?,
            col: None,
            partial_sums: None,
            norm_partials: None,
            partials: DeviceBuf::zeros(&stream, PARTIAL_BLOCKS + 1, &mem)?,
            stats: DeviceBuf::zeros(&stream, 6, &mem)?,
            codes: None,
            scales: None,
            faults_dirty: false,
        };
        let backend = CudaBackend {
            faults: DeviceBuf::zeros(&stream, 1, &mem)?,
            core,
            ordinal,
            stream,
            blas,
            mem,
            state: Mutex::new(state),
            options,
        };
        tracing::debug!(
            target: "fairgrid::kernels",
            device = %backend.core.name,
            ordinal,
            tf32 = options.tf32,
            "CUDA backend ready"
        );
        Ok(backend)
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn device_name(&self) -> &str {
        &self.core.name
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.core.compute_capability
    }

    /// Device memory in bytes.
    pub fn total_memory(&self) -> usize {
        self.core.total_memory
    }

    pub fn options(&self) -> CudaOptions {
        self.options
    }

    /// Device memory this backend allocated (now and at its peak).
    pub fn memory(&self) -> &MemStats {
        &self.mem
    }

    /// Free and total device memory as the driver sees it (all processes).
    pub fn device_memory_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        result::mem_get_info().map_err(|e| cuda_error("reading free memory", e))
    }

    fn bind(&self) -> Result<()> {
        self.core
            .ctx
            .bind_to_thread()
            .map_err(|e| cuda_error("binding the context", e))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn launch_raw(
        &self,
        function: &CudaFunction,
        name: &'static str,
        cfg: LaunchConfig,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        self.bind()?;
        // SAFETY: `params` point at values whose types match the kernel's
        // signature (see `launch!`), alive for this call; device addresses
        // come from live buffers whose lengths the caller checked.
        unsafe {
            result::launch_kernel(
                function.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                self.stream.cu_stream(),
                params,
            )
        }
        .map_err(|e| cuda_error(name, e))
    }

    /// Queues a copy of `bytes` to device address `dst`.
    pub(crate) fn copy_in(&self, state: &mut State, bytes: &[u8], dst: u64) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() <= STAGING_SLOT_BYTES {
            return state.staging.upload(bytes, dst);
        }
        self.bind()?;
        // SAFETY: `dst` is a live buffer of at least `bytes.len()` bytes
        // (checked by the caller). From pageable memory the copy completes
        // before the call returns.
        unsafe { result::memcpy_htod_async(dst, bytes, self.stream.cu_stream()) }
            .map_err(|e| cuda_error("copying to the device", e))
    }

    /// Copies `dst.len()` elements from device address `src` and waits.
    pub(crate) fn copy_out<T>(&self, src: u64, dst: &mut [T]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `src` is a live buffer of at least `dst.len()` elements
        // of T (checked by the caller); the stream is synchronised before
        // `dst` is read.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| cuda_error("copying from the device", e))?;
        self.wait()
    }

    fn wait(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_error("waiting for the device", e))
    }

    /// Raises any fault a kernel recorded since the last check.
    pub(crate) fn check_faults(&self, state: &mut State) -> Result<()> {
        if !state.faults_dirty {
            return Ok(());
        }
        state.faults_dirty = false;
        let mut word = [0u32];
        self.copy_out(self.faults.ptr(), &mut word)?;
        if word[0] == 0 {
            return Ok(());
        }
        launch!(
            self,
            fill_f32,
            self.core.grid(1),
            [self.faults.ptr(), 1u32, 0.0f32]
        )?;
        if word[0] & 1 != 0 {
            return Err(KernelError::shape(
                "maxpool_backward",
                "argmax window positions below kernel * kernel",
                "a larger position",
            ));
        }
        Err(KernelError::shape(
            "softmax_xent",
            "labels below the class count",
            "a larger label",
        ))
    }

    /// Grows `slot` to at least `len` elements (contents unspecified).
    pub(crate) fn grow<'a, T>(
        &self,
        slot: &'a mut Option<DeviceBuf<T>>,
        len: usize,
    ) -> Result<&'a DeviceBuf<T>>
    where
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits,
    {
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            // Free the old one first, so peak memory does not hold both.
            *slot = None;
            *slot = Some(DeviceBuf::zeros(&self.stream, len, &self.mem)?);
        }
        Ok(slot.as_ref().expect("just allocated"))
    }
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaBackend {{ ordinal: {}, device: {:?}, tf32: {} }}",
            self.ordinal, self.core.name, self.options.tf32
        )
    }
}

/// Errors unless `have >= need` (the CPU backend's rule: buffers may be
/// longer than an op needs).
pub(crate) fn check(op: &'static str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(KernelError::shape(
            op,
            format!("{what} of at least {need}"),
            have,
        ));
    }
    Ok(())
}

/// `n` as a kernel's 32-bit element count.
pub(crate) fn count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| KernelError::shape(op, "fewer than 2^32 elements", n))
}
