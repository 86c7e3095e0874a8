// Elementwise ops, bias, reductions and the finite check.

FG_KERNEL void fill_f32(float* __restrict__ x, u32 n, float value) {
    FOR_EACH(i, n) x[i] = value;
}

FG_KERNEL void u8_to_f32(const unsigned char* __restrict__ src, float* __restrict__ dst, u32 n, float scale) {
    // Multiply, not divide: the CPU backend computes `byte as f32 * scale`.
    FOR_EACH(i, n) dst[i] = __fmul_rn((float)src[i], scale);
}

FG_KERNEL void add_bias(float* __restrict__ x, const float* __restrict__ bias, u32 n, u32 cols) {
    FOR_EACH(i, n) x[i] += bias[i % cols];
}

FG_KERNEL void axpy(float alpha, const float* __restrict__ x, float* __restrict__ y, u32 n) {
    FOR_EACH(i, n) y[i] += alpha * x[i];
}

FG_KERNEL void relu_forward(const float* __restrict__ x, float* __restrict__ y, u32 n) {
    FOR_EACH(i, n) {
        float v = x[i];
        // NaN passes through (as in PyTorch) so that it is detected later.
        y[i] = (v > 0.0f || isnan(v)) ? v : 0.0f;
    }
}

FG_KERNEL void relu_backward(const float* __restrict__ y, const float* __restrict__ dy,
                             float* __restrict__ dx, u32 n) {
    FOR_EACH(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// Per-block partial sums of squares in f64; a fixed grid and a fixed
// reduction tree make the result reproducible.
FG_KERNEL void sum_squares_partial(const float* __restrict__ x, u32 n, double* __restrict__ partial) {
    __shared__ double acc[256];
    double s = 0.0;
    FOR_EACH(i, n) {
        double v = (double)x[i];
        s += v * v;
    }
    acc[threadIdx.x] = s;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) acc[threadIdx.x] += acc[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

// One block: out[0] = sum of `count` partials.
FG_KERNEL void sum_partials(const double* __restrict__ partial, u32 count, double* __restrict__ out) {
    __shared__ double acc[256];
    double s = 0.0;
    for (u32 i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    acc[threadIdx.x] = s;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) acc[threadIdx.x] += acc[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = acc[0];
}

// Marks `step` as failed (gradient) when any element is NaN or infinite.
// Only the first failing step is kept, with one offending value.
FG_KERNEL void check_finite(const float* __restrict__ x, u32 n, u64* __restrict__ stats, u64 step) {
    FOR_EACH(i, n) {
        float v = x[i];
        if (!isfinite(v)) {
            if (stats[STAT_BAD_GRAD_STEP] == NO_STEP &&
                atomicCAS(&stats[STAT_BAD_GRAD_STEP], NO_STEP, step) == NO_STEP) {
                stats[STAT_BAD_GRAD_VALUE] = (u64)__float_as_uint(v);
            }
            return;
        }
    }
}

FG_KERNEL void reset_stats(u64* __restrict__ stats) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        stats[STAT_LOSS] = 0;  // +0.0 as f64 bits
        stats[STAT_CORRECT] = 0;
        stats[STAT_BAD_LOSS_STEP] = NO_STEP;
        stats[STAT_BAD_LOSS_VALUE] = 0;
        stats[STAT_BAD_GRAD_STEP] = NO_STEP;
        stats[STAT_BAD_GRAD_VALUE] = 0;
    }
}

FG_KERNEL void scale_f32(float* __restrict__ x, u32 n, float factor) {
    FOR_EACH(i, n) x[i] *= factor;
}

// Column sums of a row-major [rows, cols] matrix in two deterministic
// stages. Stage 1: block (x, y) sums rows [y * rows_per_block, ...) of the
// 32 columns of tile x; its 32 x 8 threads read whole 128-byte row
// segments, then meet in a fixed tree. Stage 2 adds the partials in order.
#define COLSUM_ROWS 8

FG_KERNEL void column_partials(const float* __restrict__ x, u32 rows, u32 cols, u32 rows_per_block,
                               float* __restrict__ partial) {
    __shared__ float acc[COLSUM_ROWS][32];
    const u32 c = blockIdx.x * 32 + threadIdx.x;
    const u32 r0 = blockIdx.y * rows_per_block;
    const u32 r1 = min(r0 + rows_per_block, rows);
    float s = 0.0f;
    if (c < cols) {
        for (u32 r = r0 + threadIdx.y; r < r1; r += COLSUM_ROWS) s += x[(u64)r * cols + c];
    }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = 0.0f;
        for (int i = 0; i < COLSUM_ROWS; i++) t += acc[i][threadIdx.x];
        partial[(u64)blockIdx.y * cols + c] = t;
    }
}

// One block per column adds that column's partials: threads take the
// chunks in a fixed pattern and meet in a fixed tree (reproducible), and
// the loads run in parallel instead of one after another.
FG_KERNEL void column_finish(const float* __restrict__ partial, u32 chunks, u32 cols, float* __restrict__ out) {
    __shared__ float acc[256];
    const u32 c = blockIdx.x;
    float s = 0.0f;
    for (u32 i = threadIdx.x; i < chunks; i += blockDim.x) s += partial[(u64)i * cols + c];
    acc[threadIdx.x] = s;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) acc[threadIdx.x] += acc[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[c] = acc[0];
}

// check_finite over several tensors (in `a`) in one launch.
FG_KERNEL void check_finite_multi(Multi t, u64* __restrict__ stats, u64 step) {
    FOR_EACH_IN(i, t, j) {
        float v = ((const float*)t.a[j])[i];
        if (!isfinite(v)) {
            if (stats[STAT_BAD_GRAD_STEP] == NO_STEP &&
                atomicCAS(&stats[STAT_BAD_GRAD_STEP], NO_STEP, step) == NO_STEP) {
                stats[STAT_BAD_GRAD_VALUE] = (u64)__float_as_uint(v);
            }
            return;
        }
    }
}
