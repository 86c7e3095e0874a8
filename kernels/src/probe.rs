//! Capacity probe: a short measured benchmark of what this machine can do.
//! The node's capacity advert and `fairgrid devices` both use it.

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

#[cfg(test)]
mod tests {
    #[test]
    fn probe_reports_a_positive_finite_figure() {
        let g = super::cpu_gflops(1, std::time::Duration::from_millis(20));
        assert!(g.is_finite() && g > 0.0, "{g}");
    }
}
