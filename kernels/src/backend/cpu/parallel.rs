//! The CPU backend's threading: one persistent rayon pool, static
//! partitioning, and per-thread scratch space.
//!
//! Work is split statically (thread `t` of `T` always gets the same range).
//! Reductions over the batch go through chunks fixed whatever `T` (see
//! `conv::backward`), so results are the same bit for bit on any thread
//! count. Each thread owns one scratch
//! slot; buffers in it grow to the largest size seen and are then reused,
//! so a training step does not allocate.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use crate::error::{KernelError, Result};

/// Per-thread reusable buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    /// im2col / column-gradient block.
    pub col: Vec<f32>,
}

/// Grows `buf` to at least `len` elements (never shrinks) and returns the
/// first `len`.
pub(crate) fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

pub(crate) struct Workers {
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    scratch: Vec<Mutex<Scratch>>,
    /// Scratch for the calling thread, outside any parallel section.
    shared: Mutex<Vec<f32>>,
}

impl Workers {
    pub fn new(threads: usize) -> Result<Self> {
        if threads == 0 || threads > 1024 {
            return Err(KernelError::config(
                "thread count",
                format!("{threads} is not in 1..=1024"),
            ));
        }
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("fairgrid-cpu-{i}"))
                .build()
                .map_err(|e| KernelError::Backend {
                    backend: "cpu",
                    reason: format!("cannot start {threads} threads: {e}"),
                })?;
            Some(pool)
        } else {
            None
        };
        let scratch = (0..threads)
            .map(|_| Mutex::new(Scratch::default()))
            .collect();
        Ok(Workers {
            threads,
            pool,
            scratch,
            shared: Mutex::new(Vec::new()),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(t)` once for every thread index `t` in `0..threads()`, in
    /// parallel, and returns when all are done. With `work` below
    /// `min_work` (an element count) it runs `f(0..)` inline instead, using
    /// only thread index 0, since waking threads costs more than it saves.
    /// `f` gets `(t, parts)`; the number of parts used is returned.
    pub fn run(&self, work: usize, min_work: usize, f: impl Fn(usize, usize) + Sync) -> usize {
        match &self.pool {
            Some(pool) if work >= min_work => {
                let parts = self.threads;
                pool.broadcast(|ctx| f(ctx.index(), parts));
                parts
            }
            _ => {
                f(0, 1);
                1
            }
        }
    }

    /// Locks the calling thread's scratch (not for use inside `run`).
    pub fn shared_scratch(&self) -> MutexGuard<'_, Vec<f32>> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks thread `t`'s scratch slot (never contended: one user each).
    pub fn scratch(&self, t: usize) -> MutexGuard<'_, Scratch> {
        self.scratch[t]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `part`-th of `parts` near-equal contiguous ranges of `0..n`.
pub(crate) fn split(n: usize, parts: usize, part: usize) -> Range<usize> {
    let start = n * part / parts;
    let end = n * (part + 1) / parts;
    start..end
}

/// A mutable slice that several threads write through, each to its own
/// disjoint range.
pub(crate) struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: PhantomData<&'a mut [T]>,
}

// SAFETY: `Disjoint` only hands out ranges through `range`, whose contract
// requires that concurrent callers use non-overlapping ranges; with that,
// sharing it across threads is like sharing disjoint `&mut` sub-slices.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}
// SAFETY: as above; the pointer is only dereferenced through `range`.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        Disjoint {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _slice: PhantomData,
        }
    }

    /// The sub-slice `r`.
    ///
    /// # Safety
    /// No two live slices obtained from the same `Disjoint` may overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, r: Range<usize>) -> &mut [T] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "range {r:?} out of {}",
            self.len
        );
        // SAFETY: in bounds (checked above); exclusivity is the caller's
        // contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_once() {
        for n in [0, 1, 7, 64, 1000] {
            for parts in 1..5 {
                let mut next = 0;
                for p in 0..parts {
                    let r = split(n, parts, p);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn run_visits_every_thread_index() {
        let workers = Workers::new(3).unwrap();
        let mut hits = vec![0u32; 3];
        let shared = Disjoint::new(&mut hits);
        workers.run(10, 0, |t, parts| {
            assert_eq!(parts, 3);
            // SAFETY: each thread index writes only its own element.
            unsafe { shared.range(t..t + 1)[0] += 1 };
        });
        assert_eq!(hits, vec![1, 1, 1]);
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(Workers::new(0).is_err());
    }
}
