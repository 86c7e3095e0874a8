// Max pooling over channels-last data. The argmax is the position inside
// the window, ky * k + kx, first maximum on ties (as in PyTorch).

FG_KERNEL void maxpool_forward(const float* __restrict__ x, float* __restrict__ y,
                               u32* __restrict__ argmax, Pool g) {
    const u32 total = (u32)g.n * g.oh * g.ow * g.c;
    FOR_EACH(i, total) {
        u32 ch = i % g.c;
        u32 q = i / g.c;
        u32 ox = q % g.ow;
        q /= g.ow;
        u32 oy = q % g.oh;
        u32 n = q / g.oh;
        const float* base = x + (((u64)n * g.h + oy * g.s) * g.w + ox * g.s) * g.c + ch;
        float best = base[0];
        u32 pos = 0;
        for (int ky = 0; ky < g.k; ky++) {
            for (int kx = 0; kx < g.k; kx++) {
                if (ky == 0 && kx == 0) continue;
                float v = base[((u64)ky * g.w + kx) * g.c];
                // Strictly greater keeps the first maximum; a NaN also wins.
                if (v > best || isnan(v)) {
                    best = v;
                    pos = ky * g.k + kx;
                }
            }
        }
        y[i] = best;
        argmax[i] = pos;
    }
}

// One thread per input element gathers the gradients of every window that
// chose it (no atomics, every element written).
FG_KERNEL void maxpool_backward(const float* __restrict__ dy, const u32* __restrict__ argmax,
                                float* __restrict__ dx, Pool g, u32* __restrict__ faults) {
    const u32 total = (u32)g.n * g.h * g.w * g.c;
    const u32 kk = (u32)g.k * g.k;
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
        for (int oy = oy_lo; oy <= oy_hi; oy++) {
            for (int ox = ox_lo; ox <= ox_hi; ox++) {
                u32 o = (((u32)n * g.oh + oy) * g.ow + ox) * g.c + ch;
                u32 a = argmax[o];
                if (a >= kk) {
                    atomicOr(faults, FAULT_BAD_ARGMAX);
                    continue;
                }
                u32 pos = (u32)(iy - oy * g.s) * g.k + (u32)(ix - ox * g.s);
                if (a == pos) sum += dy[o];
            }
        }
        dx[i] = sum;
    }
}

// Warp-per-pixel versions (lanes over channels, coalesced), used when there
// are at least 8 channels.
FG_KERNEL void maxpool_forward_rows(const float* __restrict__ x, float* __restrict__ y,
                                    u32* __restrict__ argmax, Pool g) {
    const u32 c = (u32)g.c;
    const u32 pixels = (u32)g.n * g.oh * g.ow;
    for (u32 p = blockIdx.x * blockDim.y + threadIdx.y; p < pixels; p += gridDim.x * blockDim.y) {
        u32 ox = p % g.ow;
        u32 q = p / g.ow;
        u32 oy = q % g.oh;
        u32 n = q / g.oh;
        const float* base = x + (((u64)n * g.h + oy * g.s) * g.w + ox * g.s) * c;
        for (u32 ch = threadIdx.x; ch < c; ch += 32) {
            float best = base[ch];
            u32 pos = 0;
            for (int ky = 0; ky < g.k; ky++) {
                for (int kx = 0; kx < g.k; kx++) {
                    if (ky == 0 && kx == 0) continue;
                    float v = base[((u64)ky * g.w + kx) * c + ch];
                    if (v > best || isnan(v)) {
                        best = v;
                        pos = ky * g.k + kx;
                    }
                }
            }
            y[(u64)p * c + ch] = best;
            argmax[(u64)p * c + ch] = pos;
        }
    }
}

FG_KERNEL void maxpool_backward_rows(const float* __restrict__ dy, const u32* __restrict__ argmax,
                                     float* __restrict__ dx, Pool g, u32* __restrict__ faults) {
    const u32 c = (u32)g.c;
    const u32 kk = (u32)g.k * g.k;
    const u32 pixels = (u32)g.n * g.h * g.w;
    for (u32 p = blockIdx.x * blockDim.y + threadIdx.y; p < pixels; p += gridDim.x * blockDim.y) {
        int ix = p % g.w;
        u32 q = p / g.w;
        int iy = q % g.h;
        u32 n = q / g.h;
        int oy_lo = iy >= g.k ? (iy - g.k) / g.s + 1 : 0;
        int ox_lo = ix >= g.k ? (ix - g.k) / g.s + 1 : 0;
        int oy_hi = min(iy / g.s, g.oh - 1);
        int ox_hi = min(ix / g.s, g.ow - 1);
        for (u32 ch = threadIdx.x; ch < c; ch += 32) {
            float sum = 0.0f;
            for (int oy = oy_lo; oy <= oy_hi; oy++) {
                for (int ox = ox_lo; ox <= ox_hi; ox++) {
                    u64 o = (((u64)n * g.oh + oy) * g.ow + ox) * c + ch;
                    u32 a = argmax[o];
                    if (a >= kk) {
                        atomicOr(faults, FAULT_BAD_ARGMAX);
                        continue;
                    }
                    u32 pos = (u32)(iy - oy * g.s) * g.k + (u32)(ix - ox * g.s);
                    if (a == pos) sum += dy[o];
                }
            }
            dx[(u64)p * c + ch] = sum;
        }
    }
}
