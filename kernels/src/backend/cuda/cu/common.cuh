// Shared definitions for fairgrid's CUDA kernels. NVRTC compiles all .cu
// files as one program (this header first), with no system headers.

typedef unsigned int u32;
typedef unsigned long long u64;

#define FG_KERNEL extern "C" __global__

// Grid-stride loop over 0..n with 32-bit indices; the host splits work so
// that n always fits.
#define FOR_EACH(i, n) \
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// Device fault bits, reported by the host at its next synchronisation.
#define FAULT_BAD_ARGMAX 1u
#define FAULT_BAD_LABEL 2u

// Training statistics: u64 words.
//   [0] summed loss (f64 bits)       [1] correct count
//   [2] first step with a non-finite loss (or ~0)      [3] its loss (f32 bits)
//   [4] first step with a non-finite gradient (or ~0)  [5] the value (f32 bits)
#define STAT_LOSS 0
#define STAT_CORRECT 1
#define STAT_BAD_LOSS_STEP 2
#define STAT_BAD_LOSS_VALUE 3
#define STAT_BAD_GRAD_STEP 4
#define STAT_BAD_GRAD_VALUE 5
#define NO_STEP 0xffffffffffffffffull

// True once a step has failed: guarded updates then leave everything as is.
__device__ __forceinline__ bool step_failed(const u64* stats) {
    return stats != 0 && (stats[STAT_BAD_LOSS_STEP] != NO_STEP || stats[STAT_BAD_GRAD_STEP] != NO_STEP);
}

// Convolution geometry (channels-last input, OHWI weights); mirrors the
// Rust `ConvParams`.
struct Conv {
    int n, h, w, c, k, s, p, oh, ow, co;
};

// Max-pool geometry; mirrors the Rust `PoolParams`.
struct Pool {
    int n, h, w, c, k, s, oh, ow;
};

// Up to MULTI_MAX tensors for one launch (by value: 648 bytes of kernel
// parameters); mirrors the Rust `MultiTable`. Tensor j gets blocks
// [first_block[j], first_block[j + 1]).
#define MULTI_MAX 16
struct Multi {
    u64 a[MULTI_MAX];
    u64 b[MULTI_MAX];
    u64 c[MULTI_MAX];
    u64 d[MULTI_MAX];
    u32 n[MULTI_MAX];
    u32 first_block[MULTI_MAX + 1];
    u32 count;
};

// This block's tensor, its block index within that tensor and the
// tensor's block count.
__device__ __forceinline__ u32 multi_tensor(const Multi& t, u32* local, u32* blocks) {
    u32 j = 0;
    while (j + 1 < t.count && blockIdx.x >= t.first_block[j + 1]) j++;
    *local = blockIdx.x - t.first_block[j];
    *blocks = t.first_block[j + 1] - t.first_block[j];
    return j;
}

#define FOR_EACH_IN(i, t, j)                                              \
    u32 local_, blocks_;                                                  \
    const u32 j = multi_tensor(t, &local_, &blocks_);                     \
    for (u32 i = local_ * blockDim.x + threadIdx.x; i < t.n[j]; i += blocks_ * blockDim.x)
