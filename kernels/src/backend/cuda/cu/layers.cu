// GELU, tanh, dropout, average pooling and batch normalisation. Mirrors
// the CPU backend's formulas (cpu/smooth.rs, cpu/avgpool.rs, cpu/norm.rs).

#define ACT_GELU 0u
#define ACT_TANH 1u

FG_KERNEL void activation_forward(const float* __restrict__ x, float* __restrict__ y, u32 n,
                                  u32 kind) {
    FOR_EACH(i, n) {
        float v = x[i];
        y[i] = kind == ACT_GELU ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)) : tanhf(v);
    }
}

FG_KERNEL void activation_backward(const float* __restrict__ x, const float* __restrict__ y,
                                   const float* __restrict__ dy, float* __restrict__ dx, u32 n,
                                   u32 kind) {
    FOR_EACH(i, n) {
        float slope;
        if (kind == ACT_GELU) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
            float pdf = 0.3989423f * expf(-0.5f * v * v);
            slope = cdf + v * pdf;
        } else {
            slope = 1.0f - y[i] * y[i];
        }
        dx[i] = dy[i] * slope;
    }
}

// The keep decision of rng::dropout_keeps, bit for bit.
__device__ __forceinline__ bool dropout_keeps(u64 seed, u64 index, u32 threshold) {
    u64 z = seed ^ ((index + 1ull) * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (u32)(z >> 40) >= threshold;
}

FG_KERNEL void dropout(const float* __restrict__ x, float* __restrict__ y, u32 n, u64 seed,
                       u32 threshold, float scale) {
    FOR_EACH(i, n) y[i] = dropout_keeps(seed, i, threshold) ? x[i] * scale : 0.0f;
}

FG_KERNEL void avgpool_forward(const float* __restrict__ x, float* __restrict__ y, Pool g) {
    const u32 total = (u32)g.n * g.oh * g.ow * g.c;
    const float inv = 1.0f / (float)(g.k * g.k);
    FOR_EACH(i, total) {
        u32 ch = i % g.c;
        u32 q = i / g.c;
        u32 ox = q % g.ow;
        q /= g.ow;
        u32 oy = q % g.oh;
        u32 n = q / g.oh;
        const float* base = x + (((u64)n * g.h + oy * g.s) * g.w + ox * g.s) * g.c + ch;
        float sum = 0.0f;
        for (int ky = 0; ky < g.k; ky++)
            for (int kx = 0; kx < g.k; kx++) sum += base[((u64)ky * g.w + kx) * g.c];
        y[i] = sum * inv;
    }
}

// One thread per input element gathers from every window holding it.
FG_KERNEL void avgpool_backward(const float* __restrict__ dy, float* __restrict__ dx, Pool g) {
    const u32 total = (u32)g.n * g.h * g.w * g.c;
    const float inv = 1.0f / (float)(g.k * g.k);
    FOR_EACH(i, total) {
        u32 ch = i % g.c;
        u32 q = i / g.c;
        int ix = q % g.w;
        q /= g.w;
        int iy = q % g.h;
        u32 n = q / g.h;
        int oy_lo = iy >= g.k ? (iy - g.k) / g.s + 1 : 0;
        int ox_lo = ix >= g.k ? (ix - g.k) / g.s + 1 : 0;
        int oy_hi = min(iy / g.s, g.oh - 1);
        int ox_hi = min(ix / g.s, g.ow - 1);
        float sum = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; oy++)
            for (int ox = ox_lo; ox <= ox_hi; ox++)
                sum += dy[(((u64)n * g.oh + oy) * g.ow + ox) * g.c + ch];
        dx[i] = sum * inv;
    }
}

// Batch norm over [rows, c]. Partial per-channel sums: block (32, 8),
// blockIdx.x over channel groups of 32, blockIdx.y over row chunks of
// `per_chunk` rows; partial[(chunk * 2 + j) * c + ch] for the two sums.
// Forward (mode 0): sum x, sum x^2. Backward (mode 1): sum dy, sum dy * xhat.
FG_KERNEL void norm_partials(const float* __restrict__ x, const float* __restrict__ dy,
                             const float* __restrict__ mean, const float* __restrict__ invstd,
                             u32 rows, u32 c, u32 per_chunk, u32 mode,
                             double* __restrict__ partial) {
    __shared__ double a[8][33];
    __shared__ double b[8][33];
    const u32 ch = blockIdx.x * 32 + threadIdx.x;
    const u32 lo = blockIdx.y * per_chunk;
    const u32 hi = min(rows, lo + per_chunk);
    double s1 = 0.0, s2 = 0.0;
    if (ch < c) {
        for (u32 r = lo + threadIdx.y; r < hi; r += 8) {
            float v = x[(u64)r * c + ch];
            if (mode == 0) {
                s1 += (double)v;
                s2 += (double)v * (double)v;
            } else {
                float g = dy[(u64)r * c + ch];
                float xhat = (v - mean[ch]) * invstd[ch];
                s1 += (double)g;
                s2 += (double)(g * xhat);
            }
        }
    }
    a[threadIdx.y][threadIdx.x] = s1;
    b[threadIdx.y][threadIdx.x] = s2;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        for (int k = 1; k < 8; k++) {
            s1 += a[k][threadIdx.x];
            s2 += b[k][threadIdx.x];
        }
        partial[((u64)blockIdx.y * 2) * c + ch] = s1;
        partial[((u64)blockIdx.y * 2 + 1) * c + ch] = s2;
    }
}

// One thread per channel: the batch statistics and the running update.
FG_KERNEL void norm_finish_forward(const double* __restrict__ partial, u32 chunks, u32 rows, u32 c,
                                   float eps, float momentum, float* __restrict__ running_mean,
                                   float* __restrict__ running_var, float* __restrict__ saved_mean,
                                   float* __restrict__ saved_invstd) {
    FOR_EACH(ch, c) {
        double s1 = 0.0, s2 = 0.0;
        for (u32 k = 0; k < chunks; k++) {
            s1 += partial[((u64)k * 2) * c + ch];
            s2 += partial[((u64)k * 2 + 1) * c + ch];
        }
        double n = (double)rows;
        double mean = s1 / n;
        double var = fmax(s2 / n - mean * mean, 0.0);
        double m = (double)momentum;
        saved_mean[ch] = (float)mean;
        saved_invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
        // One value per channel: the running statistics stay (the CPU's rule).
        if (rows < 2) continue;
        double unbiased = var * n / (n - 1.0);
        running_mean[ch] = (float)((1.0 - m) * (double)running_mean[ch] + m * mean);
        running_var[ch] = (float)((1.0 - m) * (double)running_var[ch] + m * unbiased);
    }
}

FG_KERNEL void norm_finish_backward(const double* __restrict__ partial, u32 chunks, u32 c,
                                    float* __restrict__ dgamma, float* __restrict__ dbeta) {
    FOR_EACH(ch, c) {
        double s1 = 0.0, s2 = 0.0;
        for (u32 k = 0; k < chunks; k++) {
            s1 += partial[((u64)k * 2) * c + ch];
            s2 += partial[((u64)k * 2 + 1) * c + ch];
        }
        dbeta[ch] = (float)s1;
        dgamma[ch] = (float)s2;
    }
}

// y = (x - mean) * invstd * gamma + beta. With `eval`, `stat` holds the
// running variance (a negative one counts as 0) and invstd is computed
// from it.
FG_KERNEL void norm_apply(const float* __restrict__ x, const float* __restrict__ mean,
                          const float* __restrict__ stat, const float* __restrict__ gamma,
                          const float* __restrict__ beta, float* __restrict__ y, u32 n, u32 c,
                          u32 eval, float eps) {
    FOR_EACH(i, n) {
        u32 ch = i % c;
        float invstd = eval ? (float)(1.0 / sqrt(fmax((double)stat[ch], 0.0) + (double)eps)) : stat[ch];
        y[i] = (x[i] - mean[ch]) * invstd * gamma[ch] + beta[ch];
    }
}

FG_KERNEL void norm_input_grad(const float* __restrict__ x, const float* __restrict__ dy,
                               const float* __restrict__ mean, const float* __restrict__ invstd,
                               const float* __restrict__ gamma, const float* __restrict__ dgamma,
                               const float* __restrict__ dbeta, float* __restrict__ dx, u32 n,
                               u32 c, u32 rows) {
    const float count = (float)rows;
    FOR_EACH(i, n) {
        u32 ch = i % c;
        float xhat = (x[i] - mean[ch]) * invstd[ch];
        dx[i] = gamma[ch] * invstd[ch] / count * (count * dy[i] - dbeta[ch] - xhat * dgamma[ch]);
    }
}
