//! int8 inference on the CPU: the convolutions and linear layers of a
//! model run as int8 x int8 products with i32 sums, the rest in f32.
//!
//! Weights are quantised once, symmetric, one scale per output channel
//! (the layout `save_safetensors_int8` stores); each sample's input to a
//! convolution or linear layer is quantised on the fly with its own scale
//! (`max |x| / 127`). An output is `sum(xq * wq) * sx * sw[o] + b[o]`.
//! Layers inside residual blocks, layers with fewer than 32 inputs per
//! output (a one-channel image's first convolution), and every other
//! layer run in f32 with the model's own code, in evaluation mode.

use super::Model;
use super::compress::quantize_per_channel;
use crate::backend::Backend;
use crate::backend::cpu::CpuBackend;
use crate::backend::cpu::parallel::{Disjoint, Workers, split};
use crate::data::{Pixels, Samples, gather_batch};
use crate::error::{KernelError, Result};
use crate::layers::{Layer, Pass};
use crate::tensor::{Shape, Tensor};
use crate::train::{Metrics, PIXEL_SCALE};

/// Convolutions whose patch (or linear layers whose input) holds fewer
/// values stay in f32: the first convolution of a one-channel image (a
/// 3x3 patch of 9) is a small share of the work, and int8 sums that short
/// gain nothing. Common practice keeps the first layer in f32 too.
const MIN_INT8_ROW: usize = 32;
/// Longer rows stay in f32 too: 127 * 127 * 133,144 overflows an i32 sum.
const MAX_INT8_ROW: usize = 131_072;

/// A convolution or linear layer's weights as int8.
struct QuantLayer {
    /// `[out, row]`, row = `k * k * c_in` (OHWI) or `in_features`.
    codes: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
    out: usize,
    row: usize,
    /// `(kernel, stride, pad)` for a convolution.
    conv: Option<(usize, usize, usize)>,
}

/// A model whose convolutions and linear layers run in int8.
pub struct Int8Model {
    model: Model<CpuBackend>,
    backend: CpuBackend,
    workers: Workers,
    quant: Vec<Option<QuantLayer>>,
}

impl Int8Model {
    /// Quantises `model`'s convolution and linear weights.
    pub fn new(model: Model<CpuBackend>, backend: CpuBackend, threads: usize) -> Result<Self> {
        let flat = model.params_flat(&backend)?;
        let layout = model.param_layout();
        let mut quant = Vec::with_capacity(model.layers().len());
        for (index, layer) in model.layers().iter().enumerate() {
            let tensors: Vec<&[f32]> = layout
                .iter()
                .filter(|p| p.layer == index)
                .map(|p| &flat[p.offset..p.offset + p.len])
                .collect();
            let conv = match layer {
                Layer::Conv2d(c) => Some((c.kernel(), c.stride(), c.pad())),
                Layer::Linear(_) => None,
                _ => {
                    quant.push(None);
                    continue;
                }
            };
            let (weights, bias) = (tensors[0], tensors[1]);
            let out = bias.len();
            if !(MIN_INT8_ROW..=MAX_INT8_ROW).contains(&(weights.len() / out)) {
                quant.push(None);
                continue;
            }
            let (codes, scales) = quantize_per_channel(weights, out)?;
            quant.push(Some(QuantLayer {
                codes,
                scales,
                bias: bias.to_vec(),
                out,
                row: weights.len() / out,
                conv,
            }));
        }
        Ok(Int8Model {
            model,
            backend,
            workers: Workers::new(threads)?,
            quant,
        })
    }

    /// Logits `[n, classes]` for `n` samples of `x` (`[n, h, w, c]`, f32).
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let shape = self.model.input_shape(n);
        let mut act = Tensor::from_host(&self.backend, shape, x)?;
        for index in 0..self.model.layers().len() {
            let next = match &self.quant[index] {
                Some(q) => {
                    let input = act.shape().clone();
                    let (values, shape) = run_quant(&self.workers, q, act.buf(), &input)?;
                    Tensor::from_host(&self.backend, shape, &values)?
                }
                None => {
                    let layer = &mut self.model.layers_mut()[index];
                    layer.forward(&self.backend, &act, Pass::Eval)?;
                    let out = layer.output();
                    let mut copy = Tensor::zeros(&self.backend, out.shape().clone())?;
                    self.backend.copy(out.buf(), copy.buf_mut(), out.numel())?;
                    copy
                }
            };
            act = next;
        }
        act.to_host(&self.backend)
    }

    /// Accuracy on `data`, `batch` samples at a time (the loss is not
    /// computed: `loss` is 0).
    pub fn evaluate(&mut self, data: &dyn Samples, batch: usize) -> Result<Metrics> {
        let classes = self.model.spec().classes;
        let (mut images, mut labels) = (Pixels::empty(data.kind()), Vec::new());
        let mut correct = 0u64;
        let all: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in all.chunks(batch.max(1)) {
            gather_batch(data, chunk, &mut images, &mut labels);
            let x = images.slice(0..images.len()).to_f32(PIXEL_SCALE);
            let logits = self.forward(&x, chunk.len())?;
            for (row, &label) in logits.chunks_exact(classes).zip(&labels) {
                let best = (0..classes)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                correct += u64::from(best == label as usize);
            }
        }
        Ok(Metrics {
            loss: 0.0,
            accuracy: correct as f64 / data.len().max(1) as f64,
            samples: data.len() as u64,
        })
    }
}

/// One quantised layer on `x` (shape `input`); returns its output and shape.
fn run_quant(
    workers: &Workers,
    q: &QuantLayer,
    x: &[f32],
    input: &Shape,
) -> Result<(Vec<f32>, Shape)> {
    let dims = input.dims();
    let n = dims[0];
    let per_in = input.per_item();
    let (out_shape, pixels) = match (q.conv, dims) {
        (Some((k, s, p)), &[_, h, w, c]) => {
            if k * k * c != q.row || h + 2 * p < k || w + 2 * p < k {
                return Err(KernelError::shape("int8 conv", q.row, input));
            }
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            (Shape::new([n, oh, ow, q.out]), oh * ow)
        }
        (None, &[_, f]) if f == q.row => (Shape::new([n, q.out]), 1),
        _ => return Err(KernelError::shape("int8 layer", q.row, input)),
    };
    let per_out = pixels * q.out;
    let mut y = vec![0.0f32; n * per_out];
    let ys = Disjoint::new(&mut y);
    workers.run(n * per_out * q.row, 1 << 16, |t, parts| {
        let mut xq = vec![0i8; per_in];
        let mut patch = vec![0i8; q.row];
        let mut acc = vec![0i32; q.out];
        for sample in split(n, parts, t) {
            let xs = &x[sample * per_in..(sample + 1) * per_in];
            let sx = quantize_sample(xs, &mut xq);
            // SAFETY: each sample's outputs belong to one thread.
            let out = unsafe { ys.range(sample * per_out..(sample + 1) * per_out) };
            for pixel in 0..pixels {
                let row: &[i8] = match q.conv {
                    Some((k, s, p)) => {
                        im2col_pixel(&xq, &dims[1..], (k, s, p), pixel, &mut patch);
                        &patch
                    }
                    None => &xq,
                };
                dot_rows(row, &q.codes, q.row, &mut acc);
                let o = &mut out[pixel * q.out..(pixel + 1) * q.out];
                for (((y, &a), &sw), &b) in o.iter_mut().zip(&acc).zip(&q.scales).zip(&q.bias) {
                    *y = a as f32 * (sx * sw) + b;
                }
            }
        }
    });
    Ok((y, out_shape))
}

/// Quantises one sample symmetrically; returns its scale.
fn quantize_sample(x: &[f32], out: &mut [i8]) -> f32 {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// The `(ky, kx, c)` patch of output pixel `pixel` (zero padded).
fn im2col_pixel(
    xq: &[i8],
    hwc: &[usize],
    (k, s, p): (usize, usize, usize),
    pixel: usize,
    patch: &mut [i8],
) {
    let (h, w, c) = (hwc[0], hwc[1], hwc[2]);
    let ow = (w + 2 * p - k) / s + 1;
    let (oy, ox) = (pixel / ow, pixel % ow);
    for ky in 0..k {
        for kx in 0..k {
            let dst = &mut patch[(ky * k + kx) * c..(ky * k + kx + 1) * c];
            let (iy, ix) = (
                (oy * s + ky) as isize - p as isize,
                (ox * s + kx) as isize - p as isize,
            );
            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                dst.fill(0);
            } else {
                let at = (iy as usize * w + ix as usize) * c;
                dst.copy_from_slice(&xq[at..at + c]);
            }
        }
    }
}

/// `acc[o] = sum_j row[j] * w[o * len + j]` for every output `o`.
fn dot_rows(row: &[i8], w: &[i8], len: usize, acc: &mut [i32]) {
    assert!(
        row.len() >= len && w.len() >= acc.len() * len,
        "dot_rows bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::simd::has_avx2() {
        // SAFETY: AVX2 is present (checked just above); the bounds are
        // asserted above and every load stays inside them.
        return unsafe { dot_rows_avx2(row, w, len, acc) };
    }
    for (o, a) in acc.iter_mut().enumerate() {
        let wr = &w[o * len..(o + 1) * len];
        *a = row[..len]
            .iter()
            .zip(wr)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
    }
}

/// AVX2: 16 values sign-extended to i16, multiplied and summed in pairs
/// into eight i32 lanes (`vpmaddwd`), four outputs per pass so that each
/// converted slice of `row` serves four weight rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_rows_avx2(row: &[i8], w: &[i8], len: usize, acc: &mut [i32]) {
    use std::arch::x86_64::*;
    let load16 = |p: *const i8| {
        // SAFETY: callers pass pointers with 16 readable bytes.
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i)) }
    };
    let hsum = |v: __m256i| {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v) };
        lanes.iter().sum::<i32>()
    };
    let full = len / 16 * 16;
    let tail = |o: usize| -> i32 {
        (full..len)
            .map(|j| i32::from(row[j]) * i32::from(w[o * len + j]))
            .sum()
    };
    let (xp, wp) = (row.as_ptr(), w.as_ptr());
    let mut o = 0;
    while o + 4 <= acc.len() {
        let mut sums = [_mm256_setzero_si256(); 4];
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 <= len, within `row` and each weight row.
            let x = load16(unsafe { xp.add(j) });
            for (r, sum) in sums.iter_mut().enumerate() {
                // SAFETY: as above, in weight row o + r < acc.len().
                let y = load16(unsafe { wp.add((o + r) * len + j) });
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(x, y));
            }
            j += 16;
        }
        for (r, sum) in sums.iter().enumerate() {
            acc[o + r] = hsum(*sum) + tail(o + r);
        }
        o += 4;
    }
    while o < acc.len() {
        let mut sum = _mm256_setzero_si256();
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 <= len, within `row` and weight row o.
            let (x, y) = unsafe { (load16(xp.add(j)), load16(wp.add(o * len + j))) };
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(x, y));
            j += 16;
        }
        acc[o] = hsum(sum) + tail(o);
        o += 1;
    }
}
