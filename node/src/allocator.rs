//! glibc malloc settings for a long-running node. By default glibc gives
//! each thread that allocates its own arena and raises its mmap threshold
//! to the largest block freed so far (up to 32 MiB), so a round's
//! parameters and a training step's buffers end up in arenas that keep
//! them after they are freed. Measured with
//! `testnet/examples/worker-rss.sh` (a 2.6 M-parameter model, offer
//! 160 MiB): peak RSS 156-196 MiB by default, 123-124 MiB with these settings;
//! CNN training speed unchanged (`fairgrid train`, docs/benchmarks.md).

/// Blocks of at least this many bytes are mapped on their own and
/// returned to the system when freed (setting it also stops glibc from
/// raising it).
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// Arenas at most: threads share them, so memory one thread freed is
/// there for the others.
const ARENA_MAX: i32 = 2;

/// Applies the settings; call it before the runtime starts its threads.
/// Environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`)
/// set by the operator win.
pub fn tune_for_node() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |variable: &str| std::env::var_os(variable).is_some();
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time from any thread.
        unsafe {
            if !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
            if !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
            }
        }
    }
}
