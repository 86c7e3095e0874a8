// Convolution helpers over channels-last data with OHWI weights: im2col
// (optionally writing the bias into the output, so that the GEMM that
// follows can accumulate onto it), its adjoint col2im as a gather, and a
// direct kernel for layers with a short patch (a first layer over one or
// three channels), where a GEMM with K = 9 would only add traffic.

// `col[r, t]` for rows r in [row0, row0 + rows), t = (ky * k + kx) * c + ci.
// When `y` is given, also `y[r, co] = bias[co]` for the same rows.
FG_KERNEL void im2col(const float* __restrict__ x, float* __restrict__ col, Conv g,
                      u32 row0, u32 rows, float* __restrict__ y, const float* __restrict__ bias) {
    const u32 patch = (u32)g.k * g.k * g.c;
    const u32 total = rows * patch;
    const u32 ytotal = y != 0 ? rows * (u32)g.co : 0;
    const u32 n = total > ytotal ? total : ytotal;
    FOR_EACH(i, n) {
        if (i < total) {
            u32 r = row0 + i / patch;
            u32 t = i % patch;
            u32 ci = t % g.c;
            u32 kk = t / g.c;
            int kx = kk % g.k;
            int ky = kk / g.k;
            u32 ox = r % g.ow;
            u32 q = r / g.ow;
            int oy = q % g.oh;
            u32 nn = q / g.oh;
            int iy = oy * g.s + ky - g.p;
            int ix = (int)ox * g.s + kx - g.p;
            float v = 0.0f;
            if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
                v = x[(((u64)nn * g.h + iy) * g.w + ix) * g.c + ci];
            }
            col[i] = v;
        }
        if (i < ytotal) y[i] = bias[i % g.co];
    }
}

// dx[n, iy, ix, ci] = sum of the column entries that came from it, for the
// samples in [n0, n0 + samples); `col` starts at sample n0's first row.
FG_KERNEL void col2im(const float* __restrict__ col, float* __restrict__ dx, Conv g, u32 n0, u32 samples) {
    const u32 patch = (u32)g.k * g.k * g.c;
    const u32 total = samples * (u32)g.h * g.w * g.c;
    FOR_EACH(i, total) {
        u32 ci = i % g.c;
        u32 q = i / g.c;
        int ix = q % g.w;
        q /= g.w;
        int iy = q % g.h;
        u32 nn = q / g.h;
        float sum = 0.0f;
        for (int ky = 0; ky < g.k; ky++) {
            int ty = iy + g.p - ky;
            if (ty < 0 || ty % g.s != 0) continue;
            int oy = ty / g.s;
            if (oy >= g.oh) continue;
            for (int kx = 0; kx < g.k; kx++) {
                int tx = ix + g.p - kx;
                if (tx < 0 || tx % g.s != 0) continue;
                int ox = tx / g.s;
                if (ox >= g.ow) continue;
                u32 r = (nn * g.oh + oy) * g.ow + ox;
                sum += col[(u64)r * patch + (ky * g.k + kx) * g.c + ci];
            }
        }
        dx[(u64)n0 * g.h * g.w * g.c + i] = sum;
    }
}

// The kernels below give one warp to one pixel (a row of the unfolded
// matrix) and let its lanes walk the channels, which are contiguous: every
// load and store is coalesced, and the pixel's coordinates are decoded once
// per warp instead of once per element. Blocks are 32 x 8 threads. The
// per-element versions above remain for layers with fewer than 8 input
// channels, where most lanes would idle.

// `col` rows [0, rows) for output pixels row0 + [0, rows); with `y`, also
// y[r, co] = bias[co] for the same pixels (y points at row0's output).
FG_KERNEL void im2col_rows(const float* __restrict__ x, float* __restrict__ col, Conv g,
                           u32 row0, u32 rows, float* __restrict__ y, const float* __restrict__ bias) {
    const u32 lane = threadIdx.x;
    const u32 c = (u32)g.c;
    const u32 patch = (u32)g.k * g.k * c;
    for (u32 rr = blockIdx.x * blockDim.y + threadIdx.y; rr < rows; rr += gridDim.x * blockDim.y) {
        u32 r = row0 + rr;
        int ox = r % g.ow;
        u32 q = r / g.ow;
        int oy = q % g.oh;
        u32 nn = q / g.oh;
        float* dst = col + (u64)rr * patch;
        for (int ky = 0; ky < g.k; ky++) {
            int iy = oy * g.s + ky - g.p;
            for (int kx = 0; kx < g.k; kx++) {
                int ix = ox * g.s + kx - g.p;
                float* d = dst + (u32)(ky * g.k + kx) * c;
                if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
                    const float* src = x + (((u64)nn * g.h + iy) * g.w + ix) * c;
                    for (u32 ci = lane; ci < c; ci += 32) d[ci] = src[ci];
                } else {
                    for (u32 ci = lane; ci < c; ci += 32) d[ci] = 0.0f;
                }
            }
        }
        if (y != 0) {
            float* yr = y + (u64)rr * g.co;
            for (u32 co = lane; co < (u32)g.co; co += 32) yr[co] = bias[co];
        }
    }
}

// dx for samples [n0, n0 + samples), one warp per input pixel; `col` holds
// those samples' rows.
FG_KERNEL void col2im_rows(const float* __restrict__ col, float* __restrict__ dx, Conv g, u32 n0, u32 samples) {
    const u32 lane = threadIdx.x;
    const u32 c = (u32)g.c;
    const u32 patch = (u32)g.k * g.k * c;
    const u32 pixels = samples * (u32)g.h * g.w;
    for (u32 pp = blockIdx.x * blockDim.y + threadIdx.y; pp < pixels; pp += gridDim.x * blockDim.y) {
        int ix = pp % g.w;
        u32 q = pp / g.w;
        int iy = q % g.h;
        u32 nn = q / g.h;
        float* out = dx + ((u64)n0 * g.h * g.w + pp) * c;
        for (u32 ci = lane; ci < c; ci += 32) {
            float sum = 0.0f;
            for (int ky = 0; ky < g.k; ky++) {
                int ty = iy + g.p - ky;
                if (ty < 0 || ty % g.s != 0) continue;
                int oy = ty / g.s;
                if (oy >= g.oh) continue;
                for (int kx = 0; kx < g.k; kx++) {
                    int tx = ix + g.p - kx;
                    if (tx < 0 || tx % g.s != 0) continue;
                    int ox = tx / g.s;
                    if (ox >= g.ow) continue;
                    u32 r = (nn * g.oh + oy) * g.ow + ox;
                    sum += col[(u64)r * patch + (u32)(ky * g.k + kx) * c + ci];
                }
            }
            out[ci] = sum;
        }
    }
}

// Direct kernels for short patches (at most DIRECT_MAX taps). Lane t of a
// warp owns tap t = (ky, kx, ci): for each pixel it loads that one input
// value (zero outside the image), and the warp passes all of them around
// with shuffles, so a pixel costs one round trip to memory, not one per
// tap.
#define DIRECT_MAX 27
#define FULL_MASK 0xffffffffu

struct Tap {
    int ky, kx, ci;
};

__device__ __forceinline__ Tap lane_tap(const Conv& g, u32 lane) {
    Tap tap = {0, 0, 0};
    u32 patch = (u32)g.k * g.k * g.c;
    if (lane < patch) {
        tap.ci = lane % g.c;
        u32 q = lane / g.c;
        tap.kx = q % g.k;
        tap.ky = q / g.k;
    }
    return tap;
}

// This lane's tap value for output pixel r (warp-uniform r).
__device__ __forceinline__ float tap_value(const float* __restrict__ x, const Conv& g, Tap tap, u32 lane, u32 r) {
    int ox = r % g.ow;
    u32 q = r / g.ow;
    int oy = q % g.oh;
    u32 nn = q / g.oh;
    int iy = oy * g.s + tap.ky - g.p;
    int ix = ox * g.s + tap.kx - g.p;
    bool inside = lane < (u32)g.k * g.k * g.c && iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
    return inside ? x[(((u64)nn * g.h + iy) * g.w + ix) * g.c + tap.ci] : 0.0f;
}

// y[r, co] = b[co] + sum_t patch(r)[t] * w[co, t]. The weights sit
// transposed in dynamic shared memory (wt[t][co], patch * co floats), so
// lanes (output channels) read consecutive words.
FG_KERNEL void conv_direct(const float* __restrict__ x, const float* __restrict__ w,
                           const float* __restrict__ b, float* __restrict__ y, Conv g) {
    extern __shared__ float wt[];
    const u32 lane = threadIdx.x;
    const u32 co_n = (u32)g.co;
    const u32 patch = (u32)g.k * g.k * g.c;
    for (u32 i = threadIdx.y * blockDim.x + lane; i < patch * co_n; i += blockDim.x * blockDim.y) {
        wt[(i % patch) * co_n + i / patch] = w[i];
    }
    __syncthreads();
    const Tap tap = lane_tap(g, lane);
    const u32 pixels = (u32)g.n * g.oh * g.ow;
    for (u32 r = blockIdx.x * blockDim.y + threadIdx.y; r < pixels; r += gridDim.x * blockDim.y) {
        float mine = tap_value(x, g, tap, lane, r);
        float xs[DIRECT_MAX];
#pragma unroll
        for (int t = 0; t < DIRECT_MAX; t++) xs[t] = __shfl_sync(FULL_MASK, mine, t);
        for (u32 co = lane; co < co_n; co += 32) {
            float acc = b[co];
#pragma unroll
            for (int t = 0; t < DIRECT_MAX; t++) {
                if (t < patch) acc += xs[t] * wt[t * co_n + co];
            }
            y[(u64)r * co_n + co] = acc;
        }
    }
}

// Weight and bias gradients of a short-patch convolution without im2col:
// lanes take output channels co0 + lane, warps take pixels, and each lane
// keeps dY[r, co] * patch(r)[t] summed per tap in registers (and dY for the
// bias). The warps of a block then meet in shared memory, and block b
// writes partial[(b * co + co) * (patch + 1) + t], t = patch being the
// bias; the finish kernel adds the blocks.
#define DIRECT_SLOTS 29
FG_KERNEL void conv_direct_weight_grad(const float* __restrict__ x, const float* __restrict__ dy,
                                       float* __restrict__ partial, Conv g) {
    __shared__ float red[8][32][DIRECT_SLOTS];
    const u32 lane = threadIdx.x, warp = threadIdx.y;
    const u32 co_n = (u32)g.co;
    const u32 patch = (u32)g.k * g.k * g.c;
    const u32 pixels = (u32)g.n * g.oh * g.ow;
    const Tap tap = lane_tap(g, lane);
    for (u32 co0 = 0; co0 < co_n; co0 += 32) {
        const u32 co = co0 + lane;
        const bool active = co < co_n;
        float acc[DIRECT_MAX + 1];
#pragma unroll
        for (int t = 0; t <= DIRECT_MAX; t++) acc[t] = 0.0f;
        for (u32 r = blockIdx.x * blockDim.y + warp; r < pixels; r += gridDim.x * blockDim.y) {
            float mine = tap_value(x, g, tap, lane, r);
            float d = active ? dy[(u64)r * co_n + co] : 0.0f;
#pragma unroll
            for (int t = 0; t < DIRECT_MAX; t++) {
                float xv = __shfl_sync(FULL_MASK, mine, t);
                if (t < patch) acc[t] += d * xv;
            }
            acc[DIRECT_MAX] += d;
        }
#pragma unroll
        for (int t = 0; t < DIRECT_MAX; t++) {
            if (t < patch) red[warp][lane][t] = acc[t];
        }
        red[warp][lane][patch] = acc[DIRECT_MAX];
        __syncthreads();
        for (u32 t = warp; t <= patch; t += blockDim.y) {
            float s = 0.0f;
            for (u32 wi = 0; wi < blockDim.y; wi++) s += red[wi][lane][t];
            if (active) partial[((u64)blockIdx.x * co_n + co) * (patch + 1) + t] = s;
        }
        __syncthreads();
    }
}

// One block per gradient element adds the blocks' partials (in a fixed
// tree, loads in parallel).
FG_KERNEL void conv_direct_weight_finish(const float* __restrict__ partial, u32 blocks, Conv g,
                                         float* __restrict__ dw, float* __restrict__ db) {
    __shared__ float acc[256];
    const u32 co_n = (u32)g.co;
    const u32 patch = (u32)g.k * g.k * g.c;
    const u32 slots = co_n * (patch + 1);
    const u32 i = blockIdx.x;
    float s = 0.0f;
    for (u32 b = threadIdx.x; b < blocks; b += blockDim.x) s += partial[(u64)b * slots + i];
    acc[threadIdx.x] = s;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) acc[threadIdx.x] += acc[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        u32 co = i / (patch + 1), t = i % (patch + 1);
        if (t == patch) {
            db[co] = acc[0];
        } else {
            dw[co * patch + t] = acc[0];
        }
    }
}
