//! `Backend` for [`CudaBackend`]: memory, elementwise ops, reductions,
//! loss, optimizers, statistics and quantisation. Convolution and pooling
//! live in `conv.rs`, matrix products in `blas.rs`.

use super::memory::as_bytes;
use super::{
    CudaBackend, CudaBuf, CudaIdxBuf, CudaStats, DeviceBuf, PARTIAL_BLOCKS, check, conv, count,
    launch,
};
use crate::backend::{
    AdamHyper, Backend, Conv2dGeometry, DeviceMemory, GemmSpec, LossStats, PoolGeometry, SgdHyper,
    StepStats, UpdateTensor,
};
use crate::compress::int8;
use crate::error::{KernelError, Result};

const NO_STEP: u64 = u64::MAX;
/// Threads of the single-block loss kernel (`XENT_THREADS` in loss.cu).
const XENT_THREADS: u32 = 256;
/// Threads per quantisation block (`QUANT_THREADS` in quant.cu).
const QUANT_THREADS: u32 = 256;

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

fn single_block(threads: u32) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    fn reset_stats(&self, words: u64) -> Result<()> {
        launch!(self, reset_stats, single_block(32), [words])
    }

    fn read_stats(&self, words: &DeviceBuf<u64>) -> Result<StepStats> {
        let mut raw = [0u64; 6];
        self.copy_out(words.ptr(), &mut raw)?;
        self.check_faults(&mut self.state())?;
        self.reset_stats(words.ptr())?;
        let failure = |step: u64, value: u64| {
            (step != NO_STEP).then_some((step, f32::from_bits(value as u32)))
        };
        Ok(StepStats {
            loss_sum: f64::from_bits(raw[0]),
            correct: raw[1],
            bad_loss: failure(raw[2], raw[3]),
            bad_grad: failure(raw[4], raw[5]),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn xent(
        &self,
        logits: &CudaBuf,
        labels: &CudaIdxBuf,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut CudaBuf>,
        stats: u64,
        step: u64,
    ) -> Result<()> {
        let op = "softmax_xent";
        if classes == 0 {
            return Err(KernelError::config("softmax classes", "zero classes"));
        }
        let need = rows * classes;
        check(op, "logits", logits.len(), need)?;
        check(op, "labels", labels.len(), rows)?;
        let dptr = match dlogits {
            Some(d) => {
                check(op, "logit gradient", d.len(), need)?;
                d.ptr()
            }
            None => 0,
        };
        let (rows32, classes32) = (count(op, rows)?, count(op, classes)?);
        count(op, need)?;
        self.state().faults_dirty = true;
        launch!(
            self,
            softmax_xent,
            single_block(XENT_THREADS),
            [
                logits.ptr(),
                labels.ptr(),
                rows32,
                classes32,
                dptr,
                stats,
                step,
                self.faults.ptr()
            ]
        )
    }

    fn sgd(
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
    fn adam(
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

    fn elementwise_len(&self, op: &'static str, bufs: &[(&str, usize)], len: usize) -> Result<u32> {
        for &(what, have) in bufs {
            check(op, what, have, len)?;
        }
        count(op, len)
    }
}

/// Adam's step size and `1 / sqrt(1 - beta2^t)`, computed in f64 on the
/// host as the CPU backend does.
fn adam_constants(h: &AdamHyper) -> (f32, f32) {
    let step = h.step.clamp(1, i32::MAX as u64) as i32;
    let bias1 = 1.0 - f64::from(h.beta1).powi(step);
    let bias2 = 1.0 - f64::from(h.beta2).powi(step);
    (
        (f64::from(h.lr) / bias1) as f32,
        (1.0 / bias2.sqrt()) as f32,
    )
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type IdxBuf = CudaIdxBuf;
    type Stats = CudaStats;

    fn name(&self) -> String {
        format!(
            "cuda:{} ({}{})",
            self.ordinal,
            self.core.name,
            if self.options.tf32 { ", TF32" } else { "" }
        )
    }

    fn alloc(&self, len: usize) -> Result<CudaBuf> {
        DeviceBuf::zeros(&self.stream, len, &self.mem)
    }

    fn alloc_idx(&self, len: usize) -> Result<CudaIdxBuf> {
        DeviceBuf::zeros(&self.stream, len, &self.mem)
    }

    fn upload(&self, src: &[f32], dst: &mut CudaBuf) -> Result<()> {
        check("upload", "buffer", dst.len(), src.len())?;
        self.copy_in(&mut self.state(), as_bytes(src), dst.ptr())
    }

    fn download(&self, src: &CudaBuf, dst: &mut [f32]) -> Result<()> {
        check("download", "buffer", src.len(), dst.len())?;
        self.copy_out(src.ptr(), dst)?;
        self.check_faults(&mut self.state())
    }

    fn upload_idx(&self, src: &[u32], dst: &mut CudaIdxBuf) -> Result<()> {
        check("upload_idx", "buffer", dst.len(), src.len())?;
        self.copy_in(&mut self.state(), as_bytes(src), dst.ptr())
    }

    fn upload_u8_scaled(&self, src: &[u8], scale: f32, dst: &mut CudaBuf) -> Result<()> {
        let op = "upload_u8_scaled";
        check(op, "destination", dst.len(), src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let n = count(op, src.len())?;
        let mut state = self.state();
        let staged;
        let bytes = if src.len() <= state.bytes.len() {
            state.bytes.ptr()
        } else {
            // Larger than the staging buffer: a temporary, freed in stream
            // order after the kernel below has read it.
            staged = DeviceBuf::<u8>::zeros(&self.stream, src.len(), &self.mem)?;
            staged.ptr()
        };
        self.copy_in(&mut state, src, bytes)?;
        drop(state);
        launch!(
            self,
            u8_to_f32,
            self.core.grid(src.len()),
            [bytes, dst.ptr(), n, scale]
        )
    }

    fn copy(&self, src: &CudaBuf, dst: &mut CudaBuf, len: usize) -> Result<()> {
        check("copy", "buffer", src.len(), len)?;
        check("copy", "buffer", dst.len(), len)?;
        if len == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both buffers are live and hold at least `len` floats.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst.ptr(),
                src.ptr(),
                len * 4,
                self.stream.cu_stream(),
            )
        }
        .map_err(|e| super::cuda_error("copying on the device", e))
    }

    fn fill(&self, dst: &mut CudaBuf, len: usize, value: f32) -> Result<()> {
        let n = self.elementwise_len("fill", &[("buffer", dst.len())], len)?;
        if n == 0 {
            return Ok(());
        }
        launch!(self, fill_f32, self.core.grid(len), [dst.ptr(), n, value])
    }

    fn gemm(&self, spec: GemmSpec, a: &CudaBuf, b: &CudaBuf, c: &mut CudaBuf) -> Result<()> {
        let op = "gemm";
        let (m, n, k) = (spec.m, spec.n, spec.k);
        check(op, "A", a.len(), m * k)?;
        check(op, "B", b.len(), k * n)?;
        check(op, "C", c.len(), m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // An empty sum: C = beta * C (not read when beta is 0).
            let len = count(op, m * n)?;
            return if spec.beta == 0.0 {
                launch!(
                    self,
                    fill_f32,
                    self.core.grid(m * n),
                    [c.ptr(), len, 0.0f32]
                )
            } else {
                launch!(
                    self,
                    scale_f32,
                    self.core.grid(m * n),
                    [c.ptr(), len, spec.beta]
                )
            };
        }
        self.blas.gemm_raw(&spec, a.ptr(), b.ptr(), c.ptr())
    }

    fn add_bias(&self, x: &mut CudaBuf, bias: &CudaBuf, rows: usize, cols: usize) -> Result<()> {
        let op = "add_bias";
        check(op, "matrix", x.len(), rows * cols)?;
        check(op, "bias", bias.len(), cols)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let (n, c) = (count(op, rows * cols)?, count(op, cols)?);
        launch!(
            self,
            add_bias,
            self.core.grid(rows * cols),
            [x.ptr(), bias.ptr(), n, c]
        )
    }

    fn sum_rows(&self, x: &CudaBuf, rows: usize, cols: usize, out: &mut CudaBuf) -> Result<()> {
        check("sum_rows", "matrix", x.len(), rows * cols)?;
        check("sum_rows", "output", out.len(), cols)?;
        conv::column_sums(self, &mut self.state(), x.ptr(), rows, cols, out.ptr())
    }

    fn axpy(&self, alpha: f32, x: &CudaBuf, y: &mut CudaBuf, len: usize) -> Result<()> {
        let n = self.elementwise_len("axpy", &[("x", x.len()), ("y", y.len())], len)?;
        if n == 0 {
            return Ok(());
        }
        launch!(
            self,
            axpy,
            self.core.grid(len),
            [alpha, x.ptr(), y.ptr(), n]
        )
    }

    fn sum_squares(&self, x: &CudaBuf, len: usize) -> Result<f64> {
        let n = self.elementwise_len("sum_squares", &[("x", x.len())], len)?;
        if n == 0 {
            return Ok(0.0);
        }
        let state = self.state();
        let partials = state.partials.ptr();
        drop(state);
        // The grid depends on the length only, so the sum is reproducible.
        let blocks = len
            .div_ceil(super::device::THREADS as usize)
            .min(PARTIAL_BLOCKS);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (super::device::THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, sum_squares_partial, cfg, [x.ptr(), n, partials])?;
        let result = partials + 8 * PARTIAL_BLOCKS as u64;
        launch!(
            self,
            sum_partials,
            single_block(256),
            [partials, blocks as u32, result]
        )?;
        let mut out = [0.0f64];
        self.copy_out(result, &mut out)?;
        Ok(out[0])
    }

    fn relu_forward(&self, x: &CudaBuf, y: &mut CudaBuf, len: usize) -> Result<()> {
        let n = self.elementwise_len(
            "relu_forward",
            &[("input", x.len()), ("output", y.len())],
            len,
        )?;
        if n == 0 {
            return Ok(());
        }
        launch!(
            self,
            relu_forward,
            self.core.grid(len),
            [x.ptr(), y.ptr(), n]
        )
    }

    fn relu_backward(&self, y: &CudaBuf, dy: &CudaBuf, dx: &mut CudaBuf, len: usize) -> Result<()> {
        let bufs = [
            ("output", y.len()),
            ("output gradient", dy.len()),
            ("input gradient", dx.len()),
        ];
        let n = self.elementwise_len("relu_backward", &bufs, len)?;
        if n == 0 {
            return Ok(());
        }
        launch!(
            self,
            relu_backward,
            self.core.grid(len),
            [y.ptr(), dy.ptr(), dx.ptr(), n]
        )
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeometry,
        x: &CudaBuf,
        w: &CudaBuf,
        b: &CudaBuf,
        y: &mut CudaBuf,
    ) -> Result<()> {
        conv::forward(self, g, x, w, b, y)
    }

    fn conv2d_backward(
        &self,
        g: &Conv2dGeometry,
        x: &CudaBuf,
        w: &CudaBuf,
        dy: &CudaBuf,
        dw: &mut CudaBuf,
        db: &mut CudaBuf,
        dx: Option<&mut CudaBuf>,
    ) -> Result<()> {
        conv::backward(self, g, x, w, dy, dw, db, dx)
    }

    fn maxpool_forward(
        &self,
        g: &PoolGeometry,
        x: &CudaBuf,
        y: &mut CudaBuf,
        argmax: &mut CudaIdxBuf,
    ) -> Result<()> {
        conv::maxpool_forward(self, g, x, y, argmax)
    }

    fn maxpool_backward(
        &self,
        g: &PoolGeometry,
        dy: &CudaBuf,
        argmax: &CudaIdxBuf,
        dx: &mut CudaBuf,
    ) -> Result<()> {
        conv::maxpool_backward(self, g, dy, argmax, dx)
    }

    fn softmax_xent(
        &self,
        logits: &CudaBuf,
        labels: &CudaIdxBuf,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut CudaBuf>,
    ) -> Result<LossStats> {
        let words = self.state().stats.ptr();
        self.reset_stats(words)?;
        self.xent(logits, labels, rows, classes, dlogits, words, 0)?;
        let mut raw = [0u64; 2];
        self.copy_out(words, &mut raw)?;
        self.check_faults(&mut self.state())?;
        Ok(LossStats {
            loss_sum: f64::from_bits(raw[0]),
            correct: raw[1],
        })
    }

    fn sgd_step(
        &self,
        hyper: &SgdHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        velocity: &mut CudaBuf,
        len: usize,
    ) -> Result<()> {
        self.sgd(hyper, param, grad, velocity, len, 0)
    }

    fn adam_step(
        &self,
        hyper: &AdamHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        len: usize,
    ) -> Result<()> {
        self.adam(hyper, param, grad, m, v, len, 0)
    }

    fn quantize_int8_ef(
        &self,
        x: &CudaBuf,
        residual: &mut CudaBuf,
        len: usize,
        block: usize,
        codes: &mut [i8],
        scales: &mut [f32],
    ) -> Result<()> {
        let op = "quantize_int8_ef";
        check(op, "buffer", x.len(), len)?;
        check(op, "buffer", residual.len(), len)?;
        if codes.len() != len {
            return Err(KernelError::shape(op, len, codes.len()));
        }
        int8::check_block(block)?;
        let blocks = int8::blocks(len, block);
        if scales.len() != blocks {
            return Err(KernelError::shape(
                op,
                format!("{len} residuals and codes, {blocks} scales"),
                format!("{} scales", scales.len()),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let (n, b) = (count(op, len)?, count(op, block)?);
        // Held until the results are on the host: the scratch is ours.
        let mut state = self.state();
        let codes_dev = self.grow(&mut state.codes, len)?.ptr();
        let scales_dev = self.grow(&mut state.scales, blocks)?.ptr();
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (count(op, blocks)?, 1, 1),
            block_dim: (QUANT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            quantize_int8_ef,
            cfg,
            [x.ptr(), residual.ptr(), n, b, codes_dev, scales_dev]
        )?;
        self.copy_out(codes_dev, codes)?;
        self.copy_out(scales_dev, scales)?;
        drop(state);
        if let Some(bad) = scales.iter().position(|s| s.is_nan()) {
            return Err(KernelError::NonFinite {
                what: format!("update element {}", bad * block),
                value: f32::NAN,
            });
        }
        Ok(())
    }

    fn dequantize_int8(
        &self,
        codes: &[i8],
        scales: &[f32],
        block: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let op = "dequantize_int8";
        check(op, "buffer", out.len(), codes.len())?;
        int8::check_block(block)?;
        let blocks = int8::blocks(codes.len(), block);
        if scales.len() != blocks {
            return Err(KernelError::shape(
                op,
                format!("{} outputs, {blocks} scales", codes.len()),
                format!("{} scales", scales.len()),
            ));
        }
        if codes.is_empty() {
            return Ok(());
        }
        let (n, b) = (count(op, codes.len())?, count(op, block)?);
        let mut state = self.state();
        let codes_dev = self.grow(&mut state.codes, codes.len())?.ptr();
        let scales_dev = self.grow(&mut state.scales, blocks)?.ptr();
        // SAFETY: i8 has the same size and alignment as u8.
        let code_bytes =
            unsafe { std::slice::from_raw_parts(codes.as_ptr() as *const u8, codes.len()) };
        self.copy_in(&mut state, code_bytes, codes_dev)?;
        self.copy_in(&mut state, as_bytes(scales), scales_dev)?;
        let launched = launch!(
            self,
            dequantize_int8,
            self.core.grid(codes.len()),
            [codes_dev, scales_dev, out.ptr(), n, b]
        );
        drop(state);
        launched
    }

    fn alloc_stats(&self) -> Result<CudaStats> {
        let words = DeviceBuf::zeros(&self.stream, 6, &self.mem)?;
        self.reset_stats(words.ptr())?;
        Ok(CudaStats { words })
    }

    fn softmax_xent_accumulate(
        &self,
        logits: &CudaBuf,
        labels: &CudaIdxBuf,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut CudaBuf>,
        stats: &mut CudaStats,
        step: u64,
    ) -> Result<()> {
        self.xent(
            logits,
            labels,
            rows,
            classes,
            dlogits,
            stats.words.ptr(),
            step,
        )
    }

    fn check_finite(
        &self,
        x: &CudaBuf,
        len: usize,
        stats: &mut CudaStats,
        step: u64,
    ) -> Result<()> {
        let n = self.elementwise_len("check_finite", &[("x", x.len())], len)?;
        if n == 0 {
            return Ok(());
        }
        launch!(
            self,
            check_finite,
            self.core.grid(len),
            [x.ptr(), n, stats.words.ptr(), step]
        )
    }

    fn check_finite_all(
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

    fn sgd_step_all(
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

    fn adam_step_all(
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

    fn take_stats(&self, stats: &mut CudaStats) -> Result<StepStats> {
        self.read_stats(&stats.words)
    }

    fn sgd_step_guarded(
        &self,
        hyper: &SgdHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        velocity: &mut CudaBuf,
        len: usize,
        guard: &CudaStats,
    ) -> Result<()> {
        self.sgd(hyper, param, grad, velocity, len, guard.words.ptr())
    }

    fn adam_step_guarded(
        &self,
        hyper: &AdamHyper,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        len: usize,
        guard: &CudaStats,
    ) -> Result<()> {
        self.adam(hyper, param, grad, m, v, len, guard.words.ptr())
    }

    fn synchronize(&self) -> Result<()> {
        self.wait()?;
        self.check_faults(&mut self.state())
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        let (free, total) = self.device_memory_info().unwrap_or((0, 0));
        Some(DeviceMemory {
            allocated: self.mem.current(),
            peak: self.mem.peak(),
            device_used: total.saturating_sub(free),
        })
    }
}
