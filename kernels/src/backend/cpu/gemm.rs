//! Matrix products through the `gemm` crate, behind a bounds-checked
//! strided-matrix wrapper. Strides let the callers express transposes
//! without copying: `gemm` packs whatever layout it is given.
//!
//! Audits recompute rounds bit for bit on other machines, so a product
//! must give the same bits whichever SIMD kernels `gemm` picks at run
//! time (AVX2+FMA or AVX-512). Its packed kernels do (each element sums
//! along k in the same order at any vector width), but for small and
//! thin products it switches to dot-product and matrix-vector kernels
//! that reduce across vector lanes, whose order depends on the width: 3
//! of 400 random products differed between the two. Those shapes
//! ([`width_dependent`]) run here instead ([`portable_matmul`]). And it
//! sums long products (k > 512) in blocks sized by the L1 cache, so k is
//! cut into chunks by its size first ([`k_chunks`]).

use super::parallel::{Disjoint, Workers, split};
use crate::backend::GemmSpec;
use crate::error::{KernelError, Result};

/// Read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Writable strided matrix.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[cols, rows]` matrix.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    /// Rows `start..start + count` as their own matrix.
    pub fn row_block(self, start: usize, count: usize) -> Self {
        MatRef {
            data: &self.data[(start * self.rs).min(self.data.len())..],
            rows: count,
            ..self
        }
    }
}

impl<'a> MatMut<'a> {
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
}

/// `dst = ab_scale * lhs * rhs + dst_scale * dst`, single-threaded. With
/// `dst_scale == 0` the destination is not read.
pub(crate) fn matmul(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    ab_scale: f32,
    dst_scale: f32,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "matmul shapes: dst {m}x{n}, lhs {}x{}, rhs {}x{}",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(
        extent(m, n, dst.rs, dst.cs) <= dst.data.len(),
        "dst too short"
    );
    assert!(
        extent(m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "lhs too short"
    );
    assert!(
        extent(k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "rhs too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    // k == 0 is among these (C = dst_scale * C).
    if width_dependent(m, n, k) {
        return portable_matmul(dst, lhs, rhs, ab_scale, dst_scale);
    }
    // Each chunk of k is one call; the later ones add to what the earlier
    // left in `dst`.
    let mut scale = dst_scale;
    for (start, len) in k_chunks(k) {
        // SAFETY: the asserts above prove every index the product touches
        // is inside its slice (a chunk reads columns `start..start + len`
        // of `lhs` and the same rows of `rhs`, all below k); `dst` is a
        // unique borrow so it aliases neither input.
        unsafe {
            gemm::gemm(
                m,
                n,
                len,
                dst.data.as_mut_ptr(),
                dst.cs as isize,
                dst.rs as isize,
                scale != 0.0,
                lhs.data.as_ptr().add(start * lhs.cs),
                lhs.cs as isize,
                lhs.rs as isize,
                rhs.data.as_ptr().add(start * rhs.rs),
                rhs.cs as isize,
                rhs.rs as isize,
                scale,
                ab_scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        scale = 1.0;
    }
}

/// Most of k one `gemm` call sums. Above it, `gemm-common` 0.19 cuts k
/// into blocks sized from the L1 cache's geometry (512 on an 8-way 32 KiB
/// L1, 1024 on a 12-way 48 KiB one) and adds their partial sums, so the
/// bits of a product would follow the CPU's cache; at or below it, it
/// never cuts k. So k is cut here, by its size alone.
const MAX_GEMM_K: usize = 512;

/// `(start, len)` of each chunk of k: as few as keep each within
/// [`MAX_GEMM_K`], their sizes differing by one at most (so above 512
/// each is at least 256, and never takes `gemm`'s small-k kernels).
fn k_chunks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = k.div_ceil(MAX_GEMM_K);
    (0..count).map(move |i| (i * k / count, (i + 1) * k / count - i * k / count))
}

/// Whether `gemm` would compute an `m x n x k` product with kernels whose
/// summation order depends on the SIMD width: `gemm-common` 0.19 sends
/// m <= 1 or n <= 1 to matrix-vector kernels, k <= 2 to outer products,
/// and m x n <= 256 (with row-major A and column-major B) to dot-product
/// kernels; all of them go to [`portable_matmul`]. An upgrade of `gemm`
/// must re-check this list (the `simd_paths` test runs every product
/// shape class on both paths in CI).
pub(crate) fn width_dependent(m: usize, n: usize, k: usize) -> bool {
    m <= 1 || n <= 1 || k <= 2 || m * n <= 256
}

/// `dst = ab_scale * lhs * rhs + dst_scale * dst` with each element summed
/// along k in order, in plain f32 multiplies and adds (Rust never fuses
/// them): the same bits on every x86-64 CPU at any vector width (the
/// compiler vectorises across a row of C, never along k).
fn portable_matmul(
    dst: MatMut<'_>,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    ab_scale: f32,
    dst_scale: f32,
) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    let mut acc = vec![0.0f32; n];
    for i in 0..m {
        acc.fill(0.0);
        for p in 0..k {
            let a = lhs.data[i * lhs.rs + p * lhs.cs];
            let row = &rhs.data[p * rhs.rs..];
            if rhs.cs == 1 {
                for (s, &b) in acc.iter_mut().zip(&row[..n]) {
                    *s += a * b;
                }
            } else {
                for (j, s) in acc.iter_mut().enumerate() {
                    *s += a * row[j * rhs.cs];
                }
            }
        }
        for (j, &s) in acc.iter().enumerate() {
            let v = &mut dst.data[i * dst.rs + j * dst.cs];
            *v = if dst_scale == 0.0 {
                ab_scale * s
            } else {
                ab_scale * s + dst_scale * *v
            };
        }
    }
}

/// Which of `gemm`'s x86 kernel families this process runs: "avx512f"
/// (built with the `avx512` feature, on a CPU that has it), "fma"
/// (AVX2+FMA) or "scalar" (neither; such a CPU's rounds need not match
/// the others'). What `gemm` itself checks, in its order.
pub fn gemm_simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "fma";
        }
    }
    "scalar"
}

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;
/// A product is cut into at most this many blocks of rows of C...
const MAX_ROW_BLOCKS: usize = 64;
/// ...of at least this many rows (small enough that a batch of 64 still
/// spreads over the threads).
const MIN_ROW_BLOCK: usize = 16;

/// Rows of C per single-threaded product. It depends on the shape alone,
/// never on the thread count: the `gemm` crate picks its blocking and
/// kernels from the shape of each call, so an element of C computed in a
/// call of another height can differ in its last bits. With blocks fixed
/// by the shape, a product gives the same bits on any number of threads
/// (audits recompute rounds exactly; see docs/kernels.md).
fn row_block(m: usize) -> usize {
    m.div_ceil(MAX_ROW_BLOCKS).max(MIN_ROW_BLOCK)
}

/// The backend's general GEMM: C is cut into blocks of rows fixed by the
/// shape ([`row_block`]); the blocks are split statically across the
/// worker threads, each running single-threaded products.
pub(crate) fn gemm_op(
    workers: &Workers,
    spec: GemmSpec,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<()> {
    let GemmSpec { m, n, k, .. } = spec;
    let need_a = m * k;
    let need_b = k * n;
    let need_c = m * n;
    if a.len() < need_a || b.len() < need_b || c.len() < need_c {
        return Err(KernelError::shape(
            "gemm",
            format!("buffers of at least {need_a}, {need_b}, {need_c}"),
            format!("{}, {}, {}", a.len(), b.len(), c.len()),
        ));
    }
    let lhs = if spec.trans_a {
        MatRef::transposed(a, m, k)
    } else {
        MatRef::rows(a, m, k)
    };
    let rhs = if spec.trans_b {
        MatRef::transposed(b, k, n)
    } else {
        MatRef::rows(b, k, n)
    };
    let block = row_block(m);
    let blocks = m.div_ceil(block);
    let c = Disjoint::new(&mut c[..need_c]);
    workers.run(m * n * k, PARALLEL_MIN_FLOPS, |t, parts| {
        for index in split(blocks, parts, t) {
            let start = index * block;
            let rows = block.min(m - start);
            // SAFETY: blocks are disjoint and each belongs to one thread.
            let dst = unsafe { c.range(start * n..(start + rows) * n) };
            matmul(
                MatMut::rows(dst, rows, n),
                lhs.row_block(start, rows),
                rhs,
                spec.alpha,
                spec.beta,
            );
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn k_is_cut_by_its_size_alone_into_chunks_gemm_never_cuts() {
        let chunks = |k| super::k_chunks(k).collect::<Vec<_>>();
        assert_eq!(chunks(0), vec![]);
        assert_eq!(chunks(3), vec![(0, 3)]);
        assert_eq!(chunks(512), vec![(0, 512)]);
        assert_eq!(chunks(784), vec![(0, 392), (392, 392)]);
        assert_eq!(chunks(513), vec![(0, 256), (256, 257)]);
        assert_eq!(
            chunks(1568),
            vec![(0, 392), (392, 392), (784, 392), (1176, 392)]
        );
        for k in 513..5000 {
            let all = chunks(k);
            assert_eq!(all.iter().map(|c| c.1).sum::<usize>(), k);
            assert!(
                all.iter().all(|c| (256..=512).contains(&c.1)),
                "{k}: {all:?}"
            );
        }
    }

    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], ta: bool, tb: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += f64::from(av) * f64::from(bv);
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_for_every_transpose() {
        let workers = Workers::new(2).unwrap();
        let (m, n, k) = (37, 23, 61);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let spec = GemmSpec {
                trans_a: ta,
                trans_b: tb,
                ..GemmSpec::new(m, n, k)
            };
            let mut c = vec![f32::NAN; m * n];
            gemm_op(&workers, spec, &a, &b, &mut c).unwrap();
            let want = naive(m, n, k, &a, &b, ta, tb);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn gemm_accumulates_with_beta() {
        let workers = Workers::new(1).unwrap();
        let a = [1.0, 2.0];
        let b = [3.0, 4.0];
        let mut c = [10.0];
        let spec = GemmSpec {
            alpha: 2.0,
            beta: 0.5,
            ..GemmSpec::new(1, 1, 2)
        };
        gemm_op(&workers, spec, &a, &b, &mut c).unwrap();
        assert_eq!(c[0], 2.0 * 11.0 + 5.0);
    }

    #[test]
    fn short_buffers_are_an_error() {
        let workers = Workers::new(1).unwrap();
        let mut c = [0.0; 4];
        let err = gemm_op(
            &workers,
            GemmSpec::new(2, 2, 2),
            &[0.0; 3],
            &[0.0; 4],
            &mut c,
        );
        assert!(matches!(err, Err(KernelError::ShapeMismatch { .. })));
    }
}
