//! The CPU side of the probe: measured GEMM throughput and FMA peak.

use std::time::{Duration, Instant};

/// Measured single-precision GEMM throughput of the CPU backend, in
/// GFLOP/s, using `threads` threads for about `budget` of wall time.
pub fn cpu_gflops(threads: usize, budget: Duration) -> f64 {
    const N: usize = 256;
    let a = vec![1.0f32; N * N];
    let b = vec![0.5f32; N * N];
    let mut c = vec![0.0f32; N * N];
    let parallelism = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    let start = Instant::now();
    let mut runs = 0u64;
    while runs < 3 || start.elapsed() < budget {
        // SAFETY: all three buffers are N*N, column-major with unit row
        // stride and column stride N, and `c` does not alias `a` or `b`.
        unsafe {
            gemm::gemm(
                N,
                N,
                N,
                c.as_mut_ptr(),
                N as isize,
                1,
                false,
                a.as_ptr(),
                N as isize,
                1,
                b.as_ptr(),
                N as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        runs += 1;
    }
    let flops = 2.0 * (N * N * N) as f64 * runs as f64;
    std::hint::black_box(&c);
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// The machine's measured single-precision FMA peak, in GFLOP/s, over
/// `threads` threads: each runs independent chains of fused multiply-adds
/// in registers (AVX-512 or AVX2 when present), so memory plays no part.
/// GEMM efficiency is reported against this figure.
pub fn fma_peak_gflops(threads: usize, budget: Duration) -> f64 {
    let threads = threads.max(1);
    let start = Instant::now();
    let flops: f64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || fma_loop(budget)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// Runs FMA chains for about `budget`; returns the flops done.
fn fma_loop(budget: Duration) -> f64 {
    const ITERS: u64 = 1 << 16;
    let start = Instant::now();
    let mut total = 0.0;
    let mut sink = 0.0f32;
    while start.elapsed() < budget {
        let (flops_per_iter, value) = fma_kernel(ITERS);
        total += flops_per_iter * ITERS as f64;
        sink += value;
    }
    std::hint::black_box(sink);
    total
}

#[cfg(target_arch = "x86_64")]
fn fma_kernel(iters: u64) -> (f64, f32) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return (12.0 * 16.0 * 2.0, unsafe { fma_avx512(iters) });
    }
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return (12.0 * 8.0 * 2.0, unsafe { fma_avx2(iters) });
    }
    (12.0 * 2.0, fma_scalar(iters))
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_kernel(iters: u64) -> (f64, f32) {
    (12.0 * 2.0, fma_scalar(iters))
}

fn fma_scalar(iters: u64) -> f32 {
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mul = _mm512_set1_ps(0.999_999);
    let add = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, mul, add);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mul = _mm256_set1_ps(0.999_999);
    let add = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, mul, add);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    // SAFETY: `lanes` holds exactly 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_reports_a_positive_finite_figure() {
        let g = super::cpu_gflops(1, std::time::Duration::from_millis(20));
        assert!(g.is_finite() && g > 0.0, "{g}");
    }

    #[test]
    fn fma_peak_reports_a_positive_figure() {
        let budget = std::time::Duration::from_millis(30);
        let peak = super::fma_peak_gflops(1, budget);
        assert!(peak.is_finite() && peak > 0.0, "{peak}");
    }
}
