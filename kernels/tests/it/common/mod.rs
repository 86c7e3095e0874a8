//! f64 reference implementations of every op, written for clarity, not
//! speed. Layouts match the backends: activations `[N, H, W, C]`, conv
//! weights `[O, K, K, I]`, linear weights `[out, in]`.
#![allow(dead_code)]

use fairgrid_kernels::rng::SplitMix64;

pub fn randn(seed: u64, len: usize, scale: f64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.normal() * scale).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

#[derive(Clone, Copy, Debug)]
pub struct Conv {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
}

pub fn conv2d(g: &Conv, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut y = vec![0.0; g.n * oh * ow * g.o];
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..g.o {
                    let mut s = b[o];
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            for c in 0..g.c {
                                let xv = x[((n * g.h + iy as usize) * g.w + ix as usize) * g.c + c];
                                let wv = w[((o * g.k + ky) * g.k + kx) * g.c + c];
                                s += xv * wv;
                            }
                        }
                    }
                    y[((n * oh + oy) * ow + ox) * g.o + o] = s;
                }
            }
        }
    }
    y
}

pub fn linear(x: &[f64], w: &[f64], b: &[f64], n: usize, i: usize, o: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for r in 0..n {
        for j in 0..o {
            y[r * o + j] = b[j] + (0..i).map(|p| x[r * i + p] * w[j * i + p]).sum::<f64>();
        }
    }
    y
}

pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

pub fn maxpool(x: &[f64], n: usize, h: usize, w: usize, c: usize, k: usize, s: usize) -> Vec<f64> {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut y = vec![f64::NEG_INFINITY; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let out = &mut y[((b * oh + oy) * ow + ox) * c + ch];
                    for ky in 0..k {
                        for kx in 0..k {
                            let v = x[((b * h + oy * s + ky) * w + ox * s + kx) * c + ch];
                            *out = out.max(v);
                        }
                    }
                }
            }
        }
    }
    y
}

/// Mean softmax cross-entropy.
pub fn xent(logits: &[f64], labels: &[u32], classes: usize) -> f64 {
    let rows = labels.len();
    let mut total = 0.0;
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse - row[labels[r] as usize];
    }
    total / rows as f64
}

/// Central-difference gradient of `f` at `x` for the coordinates `which`.
pub fn numeric_grad(x: &[f64], which: &[usize], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    which
        .iter()
        .map(|&i| {
            let orig = x[i];
            let h = 1e-6 * (1.0 + orig.abs());
            x[i] = orig + h;
            let up = f(&x);
            x[i] = orig - h;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Asserts `got` (f32 from a backend) is close to `want` (f64 reference)
/// relative to the scale of `want`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs() / scale;
        assert!(
            err <= tol,
            "{what}[{i}]: got {g}, want {w} (relative error {err:.2e} > {tol:.0e})"
        );
    }
}

/// Up to `count` coordinates spread over `0..len`.
pub fn sample_coords(len: usize, count: usize, seed: u64) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    let mut rng = SplitMix64::new(seed);
    let mut out: Vec<usize> = (0..count).map(|_| rng.below(len as u64) as usize).collect();
    out.sort_unstable();
    out.dedup();
    out
}
