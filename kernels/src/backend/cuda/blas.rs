//! Matrix products through cuBLAS, fp32 by default and TF32 on request.
//!
//! cuBLAS is column-major and fairgrid row-major. A row-major `C[m, n]` is
//! the column-major `C^T[n, m]`, and `C^T = op(B)^T op(A)^T`, so every
//! product is issued with the operands swapped and `m`, `n` exchanged; no
//! data is transposed.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::CudaStream;

use super::cuda_error;
use super::memory::{DeviceBuf, MemStats};
use crate::backend::GemmSpec;
use crate::error::{KernelError, Result};

/// cuBLAS workspace: what PyTorch gives it on Hopper (32 MiB), allocated
/// by us so that it is counted with the rest of the backend's memory.
const WORKSPACE_BYTES: usize = 32 << 20;

pub(crate) struct Blas {
    // Declared before the workspace so that the handle goes first.
    handle: CudaBlas,
    _workspace: DeviceBuf<u8>,
}

fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| KernelError::shape(op, format!("{what} below 2^31 (a cuBLAS limit)"), v))
}

impl Blas {
    pub(crate) fn new(stream: &Arc<CudaStream>, mem: &Arc<MemStats>, tf32: bool) -> Result<Self> {
        let handle =
            CudaBlas::new(stream.clone()).map_err(|e| cuda_error("creating a cuBLAS handle", e))?;
        let workspace = DeviceBuf::<u8>::zeros(stream, WORKSPACE_BYTES, mem)?;
        let mode = if tf32 {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a live handle; the workspace outlives it (field order)
        // and is used only on the handle's stream.
        unsafe {
            blas_sys::cublasSetWorkspace_v2(
                *handle.handle(),
                workspace.ptr() as *mut c_void,
                WORKSPACE_BYTES,
            )
            .result()
            .map_err(|e| cuda_error("setting the cuBLAS workspace", e))?;
            blas_sys::cublasSetMathMode(*handle.handle(), mode)
                .result()
                .map_err(|e| cuda_error("setting the cuBLAS math mode", e))?;
        }
        Ok(Blas {
            handle,
            _workspace: workspace,
        })
    }

    /// `c = alpha * op(a) * op(b) + beta * c` on device addresses whose
    /// lengths the caller has checked against `spec`. `m`, `n` and `k` are
    /// all positive.
    pub(crate) fn gemm_raw(&self, spec: &GemmSpec, a: u64, b: u64, c: u64) -> Result<()> {
        let op = "gemm";
        let (m, n, k) = (
            to_i32(op, "m", spec.m)?,
            to_i32(op, "n", spec.n)?,
            to_i32(op, "k", spec.k)?,
        );
        // cuBLAS's first operand is our B: stored [k, n] (ld n), or [n, k]
        // (ld k) when transposed.
        let (op_first, ld_first) = if spec.trans_b {
            (cublasOperation_t::CUBLAS_OP_T, k)
        } else {
            (cublasOperation_t::CUBLAS_OP_N, n)
        };
        // Its second is our A: stored [m, k] (ld k), or [k, m] (ld m).
        let (op_second, ld_second) = if spec.trans_a {
            (cublasOperation_t::CUBLAS_OP_T, m)
        } else {
            (cublasOperation_t::CUBLAS_OP_N, k)
        };
        // SAFETY: the caller checked that a, b and c hold the elements the
        // shapes imply; alpha and beta are host scalars (pointer mode host).
        unsafe {
            blas::sgemm(
                *self.handle.handle(),
                op_first,
                op_second,
                n,
                m,
                k,
                &spec.alpha,
                b as *const f32,
                ld_first.max(1),
                a as *const f32,
                ld_second.max(1),
                &spec.beta,
                c as *mut f32,
                n.max(1),
            )
        }
        .map_err(|e| cuda_error("cuBLAS SGEMM", e))
    }
}
