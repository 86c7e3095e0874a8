//! The CPU backend: buffers are `Vec`s in host memory, matrix products go
//! through the `gemm` crate, and a persistent pool of `threads` workers
//! runs every large op (see [`parallel`] for how work is split).

mod avgpool;
pub(crate) mod conv;
mod elementwise;
mod gemm;
pub use gemm::gemm_simd_path;
mod loss;
pub(crate) mod norm;
mod optim;
pub(crate) mod parallel;
pub(crate) mod pool;
pub(crate) mod simd;

/// Whether this CPU runs the kernels' AVX2+FMA code (its own loops and
/// the GEMM's AVX2 or AVX-512 kernels, which give the same bits): every
/// such CPU trains a round to the same bits.
pub fn has_avx2_fma() -> bool {
    simd::has_avx2()
}
mod smooth;

use crate::backend::{
    Activation, AdamHyper, Backend, Conv2dGeometry, DropoutMask, GemmSpec, LossStats, NormGeometry,
    PoolGeometry, SgdHyper, StepStats,
};
use crate::compress::int8;
use crate::error::{KernelError, Result};
use parallel::Workers;

/// Multi-threaded CPU backend.
pub struct CpuBackend {
    workers: Workers,
}

impl CpuBackend {
    /// A backend running on `threads` worker threads (at least 1).
    pub fn new(threads: usize) -> Result<Self> {
        Ok(CpuBackend {
            workers: Workers::new(threads)?,
        })
    }

    /// One thread per available core.
    pub fn with_all_cores() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuBackend::new(cores)
    }

    pub fn threads(&self) -> usize {
        self.workers.threads()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBackend {{ threads: {} }}", self.threads())
    }
}

fn copy_len(op: &'static str, have: usize, need: usize) -> Result<()> {
    elementwise::check(op, "buffer", have, need)
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type IdxBuf = Vec<u32>;
    type Stats = StepStats;

    fn name(&self) -> String {
        format!("cpu({} threads)", self.threads())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn alloc_idx(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        copy_len("upload", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        copy_len("download", src.len(), dst.len())?;
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }

    fn upload_idx(&self, src: &[u32], dst: &mut Vec<u32>) -> Result<()> {
        copy_len("upload_idx", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn upload_u8_scaled(&self, src: &[u8], scale: f32, dst: &mut Vec<f32>) -> Result<()> {
        elementwise::u8_scaled(src, scale, dst)
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, len: usize) -> Result<()> {
        copy_len("copy", src.len(), len)?;
        copy_len("copy", dst.len(), len)?;
        dst[..len].copy_from_slice(&src[..len]);
        Ok(())
    }

    fn fill(&self, dst: &mut Vec<f32>, len: usize, value: f32) -> Result<()> {
        copy_len("fill", dst.len(), len)?;
        dst[..len].fill(value);
        Ok(())
    }

    fn gemm(&self, spec: GemmSpec, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        gemm::gemm_op(&self.workers, spec, a, b, c)
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize) -> Result<()> {
        elementwise::add_bias(x, bias, rows, cols)
    }

    fn sum_rows(&self, x: &Vec<f32>, rows: usize, cols: usize, out: &mut Vec<f32>) -> Result<()> {
        elementwise::sum_rows(x, rows, cols, out)
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) -> Result<()> {
        elementwise::axpy(&self.workers, alpha, x, y, len)
    }

    fn sum_squares(&self, x: &Vec<f32>, len: usize) -> Result<f64> {
        elementwise::sum_squares(x, len)
    }

    fn relu_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) -> Result<()> {
        elementwise::relu_forward(&self.workers, x, y, len)
    }

    fn relu_backward(
        &self,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        elementwise::relu_backward(&self.workers, y, dy, dx, len)
    }

    fn activation_forward(
        &self,
        kind: Activation,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        smooth::activation_forward(&self.workers, kind, x, y, len)
    }

    fn activation_backward(
        &self,
        kind: Activation,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        smooth::activation_backward(&self.workers, kind, (x, y), dy, dx, len)
    }

    fn dropout(
        &self,
        mask: &DropoutMask,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        smooth::dropout(&self.workers, mask, x, y, len)
    }

    fn batchnorm_forward_train(
        &self,
        g: &NormGeometry,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        saved_mean: &mut Vec<f32>,
        saved_invstd: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        norm::forward_train(
            &self.workers,
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
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &Vec<f32>,
        running_var: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        norm::forward_eval(
            &self.workers,
            g,
            x,
            (gamma, beta),
            (running_mean, running_var),
            y,
        )
    }

    fn batchnorm_backward(
        &self,
        g: &NormGeometry,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        saved_mean: &Vec<f32>,
        saved_invstd: &Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        norm::backward(
            &self.workers,
            g,
            x,
            dy,
            gamma,
            (saved_mean, saved_invstd),
            dgamma,
            dbeta,
            dx.map(|d| d.as_mut_slice()),
        )
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeometry,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        conv::forward(&self.workers, g, x, w, b, y)
    }

    fn conv2d_backward(
        &self,
        g: &Conv2dGeometry,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        conv::backward(
            &self.workers,
            g,
            x,
            w,
            dy,
            dw,
            db,
            dx.map(|d| d.as_mut_slice()),
        )
    }

    fn maxpool_forward(
        &self,
        g: &PoolGeometry,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        argmax: &mut Vec<u32>,
    ) -> Result<()> {
        pool::forward(&self.workers, g, x, y, argmax)
    }

    fn maxpool_backward(
        &self,
        g: &PoolGeometry,
        dy: &Vec<f32>,
        argmax: &Vec<u32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        pool::backward(&self.workers, g, dy, argmax, dx)
    }

    fn avgpool_forward(&self, g: &PoolGeometry, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        avgpool::forward(&self.workers, g, x, y)
    }

    fn avgpool_backward(&self, g: &PoolGeometry, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        avgpool::backward(&self.workers, g, dy, dx)
    }

    fn softmax_xent(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<u32>,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut Vec<f32>>,
    ) -> Result<LossStats> {
        loss::softmax_xent(
            logits,
            labels,
            rows,
            classes,
            dlogits.map(|d| d.as_mut_slice()),
        )
    }

    fn sgd_step(
        &self,
        hyper: &SgdHyper,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        velocity: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        optim::sgd_step(&self.workers, hyper, param, grad, velocity, len)
    }

    fn adam_step(
        &self,
        hyper: &AdamHyper,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
    ) -> Result<()> {
        optim::adam_step(&self.workers, hyper, param, grad, m, v, len)
    }

    fn quantize_int8_ef(
        &self,
        x: &Vec<f32>,
        residual: &mut Vec<f32>,
        len: usize,
        block: usize,
        codes: &mut [i8],
        scales: &mut [f32],
    ) -> Result<()> {
        copy_len("quantize_int8_ef", x.len(), len)?;
        copy_len("quantize_int8_ef", residual.len(), len)?;
        if codes.len() != len {
            return Err(KernelError::shape("quantize_int8_ef", len, codes.len()));
        }
        int8::quantize_ef(&x[..len], &mut residual[..len], block, codes, scales)
    }

    fn dequantize_int8(
        &self,
        codes: &[i8],
        scales: &[f32],
        block: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        copy_len("dequantize_int8", out.len(), codes.len())?;
        int8::dequantize(codes, scales, block, &mut out[..codes.len()])
    }

    fn alloc_stats(&self) -> Result<StepStats> {
        Ok(StepStats::default())
    }

    fn softmax_xent_accumulate(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<u32>,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut Vec<f32>>,
        stats: &mut StepStats,
        step: u64,
    ) -> Result<()> {
        let batch = self.softmax_xent(logits, labels, rows, classes, dlogits)?;
        stats.loss_sum += batch.loss_sum;
        stats.correct += batch.correct;
        if !batch.loss_sum.is_finite() && stats.bad_loss.is_none() {
            stats.bad_loss = Some((step, (batch.loss_sum / rows.max(1) as f64) as f32));
        }
        Ok(())
    }

    fn check_finite(
        &self,
        x: &Vec<f32>,
        len: usize,
        stats: &mut StepStats,
        step: u64,
    ) -> Result<()> {
        // One vectorised pass; the sum of squares is NaN or infinite exactly
        // when an element is (or when it overflows, which is as bad).
        let norm = self.sum_squares(x, len)?;
        if !norm.is_finite() && stats.bad_grad.is_none() {
            stats.bad_grad = Some((step, norm as f32));
        }
        Ok(())
    }

    fn take_stats(&self, stats: &mut StepStats) -> Result<StepStats> {
        Ok(std::mem::take(stats))
    }

    fn sgd_step_guarded(
        &self,
        hyper: &SgdHyper,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        velocity: &mut Vec<f32>,
        len: usize,
        guard: &StepStats,
    ) -> Result<()> {
        if guard.failed_step().is_some() {
            return Ok(());
        }
        self.sgd_step(hyper, param, grad, velocity, len)
    }

    fn adam_step_guarded(
        &self,
        hyper: &AdamHyper,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
        guard: &StepStats,
    ) -> Result<()> {
        if guard.failed_step().is_some() {
            return Ok(());
        }
        self.adam_step(hyper, param, grad, m, v, len)
    }
}
