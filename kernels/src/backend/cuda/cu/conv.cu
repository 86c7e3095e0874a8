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

// y[r, co] = b[co] + sum_t patch(r)[t] * w[co, t], one thread per output.
FG_KERNEL void conv_direct(const float* __restrict__ x, const float* __restrict__ w,
                           const float* __restrict__ b, float* __restrict__ y, Conv g) {
    const u32 total = (u32)g.n * g.oh * g.ow * g.co;
    FOR_EACH(i, total) {
        u32 co = i % g.co;
        u32 r = i / g.co;
        int ox = r % g.ow;
        u32 q = r / g.ow;
        int oy = q % g.oh;
        u32 nn = q / g.oh;
        float acc = b[co];
        const float* wr = w + (u64)co * g.k * g.k * g.c;
        for (int ky = 0; ky < g.k; ky++) {
            int iy = oy * g.s + ky - g.p;
            if (iy < 0 || iy >= g.h) continue;
            for (int kx = 0; kx < g.k; kx++) {
                int ix = ox * g.s + kx - g.p;
                if (ix < 0 || ix >= g.w) continue;
                const float* xp = x + (((u64)nn * g.h + iy) * g.w + ix) * g.c;
                const float* wp = wr + (ky * g.k + kx) * g.c;
                for (int ci = 0; ci < g.c; ci++) acc += xp[ci] * wp[ci];
            }
        }
        y[i] = acc;
    }
}
