//! The `Backend` trait: every operation the layers, optimizers and update
//! compression need, on device-resident buffers.
//!
//! A backend owns its memory (`Buf` for f32, `IdxBuf` for u32) and runs
//! the ops on it. The CPU backend ([`cpu::CpuBackend`]) always builds; the
//! CUDA backend ([`cuda::CudaBackend`]) implements the same trait behind
//! the `cuda` feature and is probed at run time ([`crate::probe`]).
//!
//! Ops that return a value to the host (`download`, `sum_squares`,
//! `softmax_xent`, quantisation) wait for the device. Training avoids them:
//! it accumulates loss, accuracy and the non-finite checks in a
//! device-resident [`Backend::Stats`] and reads it only when it reports
//! (`take_stats`), while the guarded optimizer steps skip every update once
//! a step has failed, so nothing non-finite reaches the parameters in the
//! meantime.
//!
//! Conventions every implementation keeps:
//! - Activations are channels-last, `[N, H, W, C]`, row-major.
//! - Conv weights are `[C_out, KH, KW, C_in]` (OHWI); linear weights are
//!   `[out, in]`. Model files convert to PyTorch's layouts on save/load.
//! - A buffer may be longer than an op needs: ops read and write only the
//!   prefix their geometry implies. Outputs are fully overwritten (no
//!   accumulation) unless the doc says otherwise.
//! - Host-side slices (`&[f32]`, `&mut [i8]`) are the only way data enters
//!   or leaves the device.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod select;

use crate::error::Result;

/// Row-major matrix product `C = alpha * op(A) * op(B) + beta * C`, with
/// `op(A)` of shape `[m, k]` and `op(B)` of shape `[k, n]`. When
/// `trans_a`, A is stored as `[k, m]`; when `trans_b`, B as `[n, k]`.
/// `beta == 0` means C is not read (it may hold garbage or NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmSpec {
    /// `C = A * B` with no transposes.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
        }
    }
}

/// A 2-D convolution over channels-last input with OHWI weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.out_c
    }
    /// Length of one im2col row: `KH * KW * C_in`.
    pub fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.in_c
    }
    pub fn weight_len(&self) -> usize {
        self.out_c * self.patch_len()
    }
}

/// Max pooling with a square window over channels-last input; the output
/// size rounds down (PyTorch's default `ceil_mode=False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl PoolGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w - self.kernel) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.channels
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.channels
    }
}

/// A smooth activation applied elementwise (ReLU has its own ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * Phi(x)` with the exact normal CDF (PyTorch's default `GELU()`).
    Gelu,
    Tanh,
}

/// Batch normalisation over a `[rows, channels]` view of channels-last
/// activations: rows are `N * H * W` for images (`BatchNorm2d`), `N` for
/// flat features (`BatchNorm1d`). PyTorch's semantics: biased variance to
/// normalise, unbiased variance into the running estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormGeometry {
    pub rows: usize,
    pub channels: usize,
    pub eps: f32,
    /// Weight of the new batch in the running statistics (PyTorch's 0.1).
    pub momentum: f32,
}

impl NormGeometry {
    pub fn len(&self) -> usize {
        self.rows * self.channels
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which elements a dropout keeps: element `i` is kept when
/// [`crate::rng::dropout_keeps`]`(seed, i, threshold)`, and scaled by
/// `scale = 1 / (1 - p)`. A pure function of the seed, the same on every
/// backend, so an audit recomputes the same masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    pub seed: u64,
    /// `p * 2^24`, rounded.
    pub threshold: u32,
    pub scale: f32,
}

/// One SGD step (PyTorch semantics): `v = momentum * v + (g + wd * p)`;
/// `p -= lr * v`, or with Nesterov `p -= lr * (g + wd * p + momentum * v)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdHyper {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

/// One Adam step (Kingma & Ba with bias correction; `step` counts from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
}

/// Summed cross-entropy loss and the number of rows whose argmax equals
/// the label, over one batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossStats {
    pub loss_sum: f64,
    pub correct: u64,
}

/// One tensor of a fused optimizer step over several tensors.
pub struct UpdateTensor<'a, T> {
    pub param: &'a mut T,
    pub grad: &'a T,
    /// SGD's velocity or Adam's first moment.
    pub first: &'a mut T,
    /// Adam's second moment (`None` for SGD).
    pub second: Option<&'a mut T>,
    pub len: usize,
}

/// A device's memory as a backend sees it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceMemory {
    /// Allocated by this backend now (buffers, scratch, library workspace).
    pub allocated: usize,
    /// The most it had allocated at once.
    pub peak: usize,
    /// In use on the whole device, as the driver reports it (every process,
    /// contexts and libraries included).
    pub device_used: usize,
}

/// What a [`Backend::Stats`] accumulated since it was last taken.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepStats {
    /// Summed cross-entropy loss over every row seen.
    pub loss_sum: f64,
    /// Rows whose argmax was their label.
    pub correct: u64,
    /// The first step whose batch loss was not finite, with that mean loss.
    pub bad_loss: Option<(u64, f32)>,
    /// The first step with a non-finite gradient, with one offending value.
    pub bad_grad: Option<(u64, f32)>,
}

impl StepStats {
    /// The first failure, as the error training reports: a loss failure
    /// wins over a gradient failure of the same step (the loss is checked
    /// first).
    pub fn failure(&self) -> Option<crate::error::KernelError> {
        let loss = self.bad_loss.map(|(s, v)| (s, false, v));
        let grad = self.bad_grad.map(|(s, v)| (s, true, v));
        let (step, is_grad, value) = [loss, grad]
            .into_iter()
            .flatten()
            .min_by_key(|&(step, is_grad, _)| (step, is_grad))?;
        let what = if is_grad {
            format!("gradient at step {step}")
        } else {
            format!("training loss at step {step}")
        };
        Some(crate::error::KernelError::NonFinite { what, value })
    }

    /// The step of the first failure, if any.
    pub fn failed_step(&self) -> Option<u64> {
        [self.bad_loss, self.bad_grad]
            .into_iter()
            .flatten()
            .map(|(step, _)| step)
            .min()
    }
}

/// A compute device. All methods take `&self`: backends keep their own
/// scratch space and thread pools behind interior mutability.
pub trait Backend: Send + Sync + 'static {
    /// A device buffer of f32.
    type Buf: Send + Sync + 'static;
    /// A device buffer of u32 (labels, argmax indices).
    type IdxBuf: Send + Sync + 'static;
    /// Device-resident training statistics (see [`StepStats`]).
    type Stats: Send + Sync + 'static;

    /// Short name for logs and test names ("cpu", "cuda:0").
    fn name(&self) -> String;

    // ---- memory ----
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn alloc_idx(&self, len: usize) -> Result<Self::IdxBuf>;
    /// Copies `src` into the first `src.len()` elements of `dst`.
    fn upload(&self, src: &[f32], dst: &mut Self::Buf) -> Result<()>;
    /// Copies the first `dst.len()` elements of `src` to the host.
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    fn upload_idx(&self, src: &[u32], dst: &mut Self::IdxBuf) -> Result<()>;
    /// Converts bytes to f32 on the device: `dst[i] = src[i] as f32 * scale`.
    /// Images travel as bytes, four times fewer than floats.
    fn upload_u8_scaled(&self, src: &[u8], scale: f32, dst: &mut Self::Buf) -> Result<()>;
    /// `dst[..len] = src[..len]`.
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf, len: usize) -> Result<()>;
    /// `dst[..len] = value`.
    fn fill(&self, dst: &mut Self::Buf, len: usize, value: f32) -> Result<()>;

    // ---- dense algebra ----
    fn gemm(&self, spec: GemmSpec, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf) -> Result<()>;
    /// `x[r, c] += bias[c]` for a `[rows, cols]` matrix.
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Buf, rows: usize, cols: usize)
    -> Result<()>;
    /// `out[c] = sum_r x[r, c]` (the bias gradient).
    fn sum_rows(&self, x: &Self::Buf, rows: usize, cols: usize, out: &mut Self::Buf) -> Result<()>;
    /// `y[..len] += alpha * x[..len]`.
    fn axpy(&self, alpha: f32, x: &Self::Buf, y: &mut Self::Buf, len: usize) -> Result<()>;
    /// `sum x[i]^2` over `x[..len]` in f64; NaN or infinite if any element is.
    fn sum_squares(&self, x: &Self::Buf, len: usize) -> Result<f64>;

    // ---- activations ----
    /// `y = max(x, 0)` over `len` elements.
    fn relu_forward(&self, x: &Self::Buf, y: &mut Self::Buf, len: usize) -> Result<()>;
    /// `dx = dy * (y > 0)` over `len` elements.
    fn relu_backward(
        &self,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;

    /// `y = f(x)` over `len` elements.
    fn activation_forward(
        &self,
        kind: Activation,
        x: &Self::Buf,
        y: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;
    /// `dx = dy * f'(x)` over `len` elements (`y` is the forward output).
    fn activation_backward(
        &self,
        kind: Activation,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;
    /// `y[i] = x[i] * scale` where the mask keeps `i`, else 0. The same op
    /// with the same mask is the backward pass (`x` = output gradient).
    fn dropout(
        &self,
        mask: &DropoutMask,
        x: &Self::Buf,
        y: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;

    // ---- batch normalisation ----
    /// Training mode: normalises with the batch's statistics, writes the
    /// batch mean and `1 / sqrt(var + eps)` per channel (for backward), and
    /// moves the running statistics towards the batch's.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self,
        g: &NormGeometry,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &mut Self::Buf,
        running_var: &mut Self::Buf,
        saved_mean: &mut Self::Buf,
        saved_invstd: &mut Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Evaluation mode: normalises with the running statistics.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_eval(
        &self,
        g: &NormGeometry,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Gradients of the training-mode forward: `dgamma`, `dbeta`
    /// (overwritten) and, when given, `dx` (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        g: &NormGeometry,
        x: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        saved_mean: &Self::Buf,
        saved_invstd: &Self::Buf,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    // ---- convolution (channels-last input, OHWI weights) ----
    /// `y = conv(x, w) + b`.
    fn conv2d_forward(
        &self,
        g: &Conv2dGeometry,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Weight and bias gradients (overwritten) and, when `dx` is given, the
    /// input gradient (overwritten).
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        g: &Conv2dGeometry,
        x: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    // ---- pooling ----
    /// Max pooling; `argmax[o]` receives the position of output `o`'s
    /// maximum inside its window, `ky * kernel + kx` (the first one on ties,
    /// as in PyTorch).
    fn maxpool_forward(
        &self,
        g: &PoolGeometry,
        x: &Self::Buf,
        y: &mut Self::Buf,
        argmax: &mut Self::IdxBuf,
    ) -> Result<()>;
    /// `dx` is overwritten: each output's gradient goes to the input its
    /// argmax names (summed where windows overlap), zero elsewhere. An
    /// argmax of `kernel * kernel` or more is an error.
    fn maxpool_backward(
        &self,
        g: &PoolGeometry,
        dy: &Self::Buf,
        argmax: &Self::IdxBuf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// Average pooling (no padding, every window full): `y` is the mean
    /// of its window.
    fn avgpool_forward(&self, g: &PoolGeometry, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `dx` is overwritten: each input gets `dy / (kernel * kernel)` of
    /// every window holding it.
    fn avgpool_backward(&self, g: &PoolGeometry, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;

    // ---- loss ----
    /// Softmax cross-entropy over `[rows, classes]` logits. Returns the
    /// summed loss and the correct count; when `dlogits` is given it gets
    /// the gradient of the *mean* loss, `(softmax - onehot) / rows`.
    /// Labels must be `< classes` (checked by the caller).
    fn softmax_xent(
        &self,
        logits: &Self::Buf,
        labels: &Self::IdxBuf,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut Self::Buf>,
    ) -> Result<LossStats>;

    // ---- optimizers (fused, in place) ----
    fn sgd_step(
        &self,
        hyper: &SgdHyper,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        velocity: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn adam_step(
        &self,
        hyper: &AdamHyper,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        len: usize,
    ) -> Result<()>;

    // ---- update compression ----
    /// int8 block quantisation with error feedback over `x[..len]`:
    /// `r += x`; per block of `block` elements, `scale = max|r| / 127`,
    /// `code = round(r / scale)`; then `r -= code * scale`. Codes and
    /// scales go to the host (they are about to be sent).
    fn quantize_int8_ef(
        &self,
        x: &Self::Buf,
        residual: &mut Self::Buf,
        len: usize,
        block: usize,
        codes: &mut [i8],
        scales: &mut [f32],
    ) -> Result<()>;
    /// `out[i] = codes[i] * scales[i / block]` for `codes.len()` elements.
    fn dequantize_int8(
        &self,
        codes: &[i8],
        scales: &[f32],
        block: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    // ---- deferred statistics (no host synchronisation per step) ----
    /// Fresh statistics: zero loss and count, no failed step.
    fn alloc_stats(&self) -> Result<Self::Stats>;
    /// [`Backend::softmax_xent`] that adds the loss and correct count into
    /// `stats` instead of returning them; a non-finite batch loss records
    /// `step` as failed. Does not wait for the device.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_accumulate(
        &self,
        logits: &Self::Buf,
        labels: &Self::IdxBuf,
        rows: usize,
        classes: usize,
        dlogits: Option<&mut Self::Buf>,
        stats: &mut Self::Stats,
        step: u64,
    ) -> Result<()>;
    /// Records `step` as failed (gradient) when any of `x[..len]` is NaN or
    /// infinite. Does not wait for the device.
    fn check_finite(
        &self,
        x: &Self::Buf,
        len: usize,
        stats: &mut Self::Stats,
        step: u64,
    ) -> Result<()>;
    /// Waits for the device, returns what `stats` accumulated and resets it.
    fn take_stats(&self, stats: &mut Self::Stats) -> Result<StepStats>;
    /// [`Backend::sgd_step`] that changes nothing once `guard` holds a
    /// failed step.
    #[allow(clippy::too_many_arguments)]
    fn sgd_step_guarded(
        &self,
        hyper: &SgdHyper,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        velocity: &mut Self::Buf,
        len: usize,
        guard: &Self::Stats,
    ) -> Result<()>;
    /// [`Backend::adam_step`] that changes nothing once `guard` holds a
    /// failed step.
    #[allow(clippy::too_many_arguments)]
    fn adam_step_guarded(
        &self,
        hyper: &AdamHyper,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        len: usize,
        guard: &Self::Stats,
    ) -> Result<()>;
    /// [`Backend::check_finite`] over several tensors (one launch on a GPU).
    fn check_finite_all(
        &self,
        xs: &[(&Self::Buf, usize)],
        stats: &mut Self::Stats,
        step: u64,
    ) -> Result<()> {
        for &(x, len) in xs {
            self.check_finite(x, len, stats, step)?;
        }
        Ok(())
    }
    /// [`Backend::sgd_step_guarded`] over several tensors (one launch on a
    /// GPU).
    fn sgd_step_all(
        &self,
        hyper: &SgdHyper,
        tensors: &mut [UpdateTensor<'_, Self::Buf>],
        guard: &Self::Stats,
    ) -> Result<()> {
        for t in tensors.iter_mut() {
            self.sgd_step_guarded(hyper, t.param, t.grad, t.first, t.len, guard)?;
        }
        Ok(())
    }
    /// [`Backend::adam_step_guarded`] over several tensors (one launch on a
    /// GPU); every tensor needs its second moment.
    fn adam_step_all(
        &self,
        hyper: &AdamHyper,
        tensors: &mut [UpdateTensor<'_, Self::Buf>],
        guard: &Self::Stats,
    ) -> Result<()> {
        for t in tensors.iter_mut() {
            let second = t.second.as_deref_mut().ok_or_else(|| {
                crate::error::KernelError::config(
                    "adam_step_all",
                    "a tensor without a second moment",
                )
            })?;
            self.adam_step_guarded(hyper, t.param, t.grad, t.first, second, t.len, guard)?;
        }
        Ok(())
    }
    /// Waits until every queued operation has finished (for timing).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// Device memory figures, for backends with their own memory (`None`
    /// for the CPU).
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }
}
