//! `Backend` for [`CudaBackend`]: memory, elementwise ops, reductions,
//! loss and statistics here; convolution and pooling in `conv.rs`, matrix
//! products in `blas.rs`, optimizer updates in `optim.rs`, quantisation in
//! `quant.rs`.

use super::memory::as_bytes;
use super::{
    CudaBackend, CudaBuf, CudaIdxBuf, CudaStats, DeviceBuf, PARTIAL_BLOCKS, check, conv, count,
    launch, layers,
};
use crate::backend::{
    Activation, AdamHyper, Backend, Conv2dGeometry, DeviceMemory, DropoutMask, GemmSpec, LossStats,
    NormGeometry, PoolGeometry, SgdHyper, StepStats, UpdateTensor,
};
use crate::error::{KernelError, Result};

const NO_STEP: u64 = u64::MAX;
/// Threads of the single-block loss kernel (`XENT_THREADS` in loss.cu).
const XENT_THREADS: u32 = 256;

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

    fn elementwise_len(&self, op: &'static str, bufs: &[(&str, usize)], len: usize) -> Result<u32> {
        for &(what, have) in bufs {
            check(op, what, have, len)?;
        }
        count(op, len)
    }
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

    fn activation_forward(
        &self,
        kind: Activation,
        x: &CudaBuf,
        y: &mut CudaBuf,
        len: usize,
    ) -> Result<()> {
        layers::activation_forward(self, kind, x, y, len)
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &CudaBuf,
        y: &CudaBuf,
        dy: &CudaBuf,
        dx: &mut CudaBuf,
        len: usize,
    ) -> Result<()> {
        layers::activation_backward(self, kind, (x, y), dy, dx, len)
    }

    fn dropout(&self, mask: &DropoutMask, x: &CudaBuf, y: &mut CudaBuf, len: usize) -> Result<()> {
        layers::dropout(self, mask, x, y, len)
    }

    fn batchnorm_forward_train(
        &self,
        g: &NormGeometry,
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        running_mean: &mut CudaBuf,
        running_var: &mut CudaBuf,
        saved_mean: &mut CudaBuf,
        saved_invstd: &mut CudaBuf,
        y: &mut CudaBuf,
    ) -> Result<()> {
        layers::batchnorm_forward_train(
            self,
            g,
            x,
            (gamma, beta),
            running_mean,
            running_var,
            saved_mean,
            saved_invstd,
            y,
        )
    }

    fn batchnorm_forward_eval(
        &self,
        g: &NormGeometry,
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        running_mean: &CudaBuf,
        running_var: &CudaBuf,
        y: &mut CudaBuf,
    ) -> Result<()> {
        layers::batchnorm_forward_eval(self, g, x, (gamma, beta), (running_mean, running_var), y)
    }

    fn batchnorm_backward(
        &self,
        g: &NormGeometry,
        x: &CudaBuf,
        dy: &CudaBuf,
        gamma: &CudaBuf,
        saved_mean: &CudaBuf,
        saved_invstd: &CudaBuf,
        dgamma: &mut CudaBuf,
        dbeta: &mut CudaBuf,
        dx: Option<&mut CudaBuf>,
    ) -> Result<()> {
        layers::batchnorm_backward(
            self,
            g,
            x,
            dy,
            gamma,
            (saved_mean, saved_invstd),
            dgamma,
            dbeta,
            dx,
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

    fn avgpool_forward(&self, g: &PoolGeometry, x: &CudaBuf, y: &mut CudaBuf) -> Result<()> {
        layers::avgpool_forward(self, g, x, y)
    }

    fn avgpool_backward(&self, g: &PoolGeometry, dy: &CudaBuf, dx: &mut CudaBuf) -> Result<()> {
        layers::avgpool_backward(self, g, dy, dx)
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
        self.quantize(x, residual, len, block, codes, scales)
    }

    fn dequantize_int8(
        &self,
        codes: &[i8],
        scales: &[f32],
        block: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.dequantize(codes, scales, block, out)
    }

    fn check_finite_all(
        &self,
        xs: &[(&CudaBuf, usize)],
        stats: &mut CudaStats,
        step: u64,
    ) -> Result<()> {
        self.check_finite_many(xs, stats, step)
    }

    fn sgd_step_all(
        &self,
        hyper: &SgdHyper,
        tensors: &mut [UpdateTensor<'_, CudaBuf>],
        guard: &CudaStats,
    ) -> Result<()> {
        self.sgd_many(hyper, tensors, guard)
    }

    fn adam_step_all(
        &self,
        hyper: &AdamHyper,
        tensors: &mut [UpdateTensor<'_, CudaBuf>],
        guard: &CudaStats,
    ) -> Result<()> {
        self.adam_many(hyper, tensors, guard)
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
