//! Optimizer updates and gradient checks on the GPU: per tensor, and
//! fused over all of a model's tensors (one launch for up to 16 tensors,
//! their addresses passed by value in the kernel's parameters).

use super::{CudaBackend, CudaBuf, CudaStats, check, count, launch};
use crate::backend::{AdamHyper, SgdHyper, UpdateTensor};
use crate::error::{KernelError, Result};

/// Tensors per multi-tensor launch (`MULTI_MAX` in common.cuh).
const MULTI_MAX: usize = 16;
/// Most blocks one tensor gets in a multi-tensor launch (they stride).
const MULTI_BLOCKS: usize = 256;

/// Mirrors `struct Multi` in common.cuh.
#[repr(C)]
#[derive(Clone, Copy)]
struct MultiTable {
    a: [u64; MULTI_MAX],
    b: [u64; MULTI_MAX],
    c: [u64; MULTI_MAX],
    d: [u64; MULTI_MAX],
    n: [u32; MULTI_MAX],
    first_block: [u32; MULTI_MAX + 1],
    count: u32,
}

/// One tensor of a multi-tensor launch: up to four device addresses and
/// an element count.
type MultiEntry = ([u64; 4], usize);

/// Adam's step size and `1 / sqrt(1 - beta2^t)`, computed in f64 on the
/// host as the CPU backend does.
pub(super) fn adam_constants(h: &AdamHyper) -> (f32, f32) {
    let step = h.step.clamp(1, i32::MAX as u64) as i32;
    let bias1 = 1.0 - f64::from(h.beta1).powi(step);
    let bias2 = 1.0 - f64::from(h.beta2).powi(step);
    (
        (f64::from(h.lr) / bias1) as f32,
        (1.0 / bias2.sqrt()) as f32,
    )
}

impl CudaBackend {
    pub(super) fn sgd(
        &self,
        h: &SgdHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        velocity: &mut CudaBuf,
        len: usize,
        guard: u64,
    ) -> Result<()> {
        let op = "sgd_step";
        check(op, "param", param.len(), len)?;
        check(op, "grad", grad.len(), len)?;
        check(op, "velocity", velocity.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let n = count(op, len)?;
        launch!(
            self,
            sgd_step,
            self.core.grid(len),
            [
                param.ptr(),
                grad.ptr(),
                velocity.ptr(),
                n,
                h.lr,
                h.momentum,
                h.weight_decay,
                i32::from(h.nesterov),
                guard
            ]
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn adam(
        &self,
        h: &AdamHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        len: usize,
        guard: u64,
    ) -> Result<()> {
        let op = "adam_step";
        check(op, "param", param.len(), len)?;
        check(op, "grad", grad.len(), len)?;
        check(op, "first moment", m.len(), len)?;
        check(op, "second moment", v.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        let n = count(op, len)?;
        let (step_size, inv_sqrt_bias2) = adam_constants(h);
        launch!(
            self,
            adam_step,
            self.core.grid(len),
            [
                param.ptr(),
                grad.ptr(),
                m.ptr(),
                v.ptr(),
                n,
                h.beta1,
                h.beta2,
                h.eps,
                h.weight_decay,
                step_size,
                inv_sqrt_bias2,
                guard
            ]
        )
    }

    /// Launches `kernel` once per group of up to [`MULTI_MAX`] tensors,
    /// each tensor getting blocks in proportion to its length.
    fn multi_launch(
        &self,
        op: &'static str,
        entries: &[MultiEntry],
        mut kernel: impl FnMut(MultiTable, cudarc::driver::LaunchConfig) -> Result<()>,
    ) -> Result<()> {
        for group in entries.chunks(MULTI_MAX) {
            let mut table = MultiTable {
                a: [0; MULTI_MAX],
                b: [0; MULTI_MAX],
                c: [0; MULTI_MAX],
                d: [0; MULTI_MAX],
                n: [0; MULTI_MAX],
                first_block: [0; MULTI_MAX + 1],
                count: group.len() as u32,
            };
            let mut blocks = 0u32;
            for (j, (ptrs, len)) in group.iter().enumerate() {
                [table.a[j], table.b[j], table.c[j], table.d[j]] = *ptrs;
                table.n[j] = count(op, *len)?;
                table.first_block[j] = blocks;
                blocks += len
                    .div_ceil(super::device::THREADS as usize)
                    .clamp(1, MULTI_BLOCKS) as u32;
            }
            table.first_block[group.len()] = blocks;
            let cfg = cudarc::driver::LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (super::device::THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            kernel(table, cfg)?;
        }
        Ok(())
    }

    pub(super) fn check_finite_many(
        &self,
        xs: &[(&CudaBuf, usize)],
        stats: &mut CudaStats,
        step: u64,
    ) -> Result<()> {
        let op = "check_finite";
        let mut entries = Vec::with_capacity(xs.len());
        for &(x, len) in xs {
            check(op, "x", x.len(), len)?;
            entries.push(([x.ptr(), 0, 0, 0], len));
        }
        let words = stats.words.ptr();
        self.multi_launch(op, &entries, |table, cfg| {
            launch!(self, check_finite_multi, cfg, [table, words, step])
        })
    }

    pub(super) fn sgd_many(
        &self,
        h: &SgdHyper,
        tensors: &mut [UpdateTensor<'_, CudaBuf>],
        guard: &CudaStats,
    ) -> Result<()> {
        let op = "sgd_step";
        let mut entries = Vec::with_capacity(tensors.len());
        for t in tensors.iter() {
            check(op, "param", t.param.len(), t.len)?;
            check(op, "grad", t.grad.len(), t.len)?;
            check(op, "velocity", t.first.len(), t.len)?;
            entries.push(([t.param.ptr(), t.grad.ptr(), t.first.ptr(), 0], t.len));
        }
        let guard = guard.words.ptr();
        let nesterov = i32::from(h.nesterov);
        self.multi_launch(op, &entries, |table, cfg| {
            launch!(
                self,
                sgd_step_multi,
                cfg,
                [table, h.lr, h.momentum, h.weight_decay, nesterov, guard]
            )
        })
    }

    pub(super) fn adam_many(
        &self,
        h: &AdamHyper,
        tensors: &mut [UpdateTensor<'_, CudaBuf>],
        guard: &CudaStats,
    ) -> Result<()> {
        let op = "adam_step";
        let mut entries = Vec::with_capacity(tensors.len());
        for t in tensors.iter() {
            let second = t.second.as_deref().ok_or_else(|| {
                KernelError::config("adam_step_all", "a tensor without a second moment")
            })?;
            check(op, "param", t.param.len(), t.len)?;
            check(op, "grad", t.grad.len(), t.len)?;
            check(op, "first moment", t.first.len(), t.len)?;
            check(op, "second moment", second.len(), t.len)?;
            entries.push((
                [t.param.ptr(), t.grad.ptr(), t.first.ptr(), second.ptr()],
                t.len,
            ));
        }
        let (step_size, inv_sqrt_bias2) = adam_constants(h);
        let guard = guard.words.ptr();
        self.multi_launch(op, &entries, |table, cfg| {
            launch!(
                self,
                adam_step_multi,
                cfg,
                [
                    table,
                    h.beta1,
                    h.beta2,
                    h.eps,
                    h.weight_decay,
                    step_size,
                    inv_sqrt_bias2,
                    guard
                ]
            )
        })
    }
}
