// int8 block quantisation with error feedback; must match
// compress::int8::quantize_ef bit for bit (codes and scales), so the
// arithmetic uses explicit round-to-nearest intrinsics (no FMA
// contraction) and divides rather than multiplying by a reciprocal.

#define QUANT_THREADS 256

// One block per quantisation block. A block holding a NaN or infinity
// gets a NaN scale, which the host turns into an error.
FG_KERNEL void quantize_int8_ef(const float* __restrict__ x, float* __restrict__ r, u32 n, u32 block,
                                signed char* __restrict__ codes, float* __restrict__ scales) {
    __shared__ float maxes[QUANT_THREADS];
    __shared__ int bad[QUANT_THREADS];
    const u32 b = blockIdx.x;
    const u32 start = b * block;
    const u32 end = min(start + block, n);
    float m = 0.0f;
    int nonfinite = 0;
    for (u32 i = start + threadIdx.x; i < end; i += blockDim.x) {
        float v = __fadd_rn(r[i], x[i]);
        r[i] = v;
        if (!isfinite(v)) nonfinite = 1;
        m = fmaxf(m, fabsf(v));
    }
    maxes[threadIdx.x] = m;
    bad[threadIdx.x] = nonfinite;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            maxes[threadIdx.x] = fmaxf(maxes[threadIdx.x], maxes[threadIdx.x + half]);
            bad[threadIdx.x] |= bad[threadIdx.x + half];
        }
        __syncthreads();
    }
    const float scale = __fdiv_rn(maxes[0], 127.0f);
    if (threadIdx.x == 0) scales[b] = bad[0] ? __int_as_float(0x7fc00000) : scale;
    if (bad[0]) return;
    for (u32 i = start + threadIdx.x; i < end; i += blockDim.x) {
        if (scale == 0.0f) {
            codes[i] = 0;
            continue;
        }
        float v = r[i];
        float q = fminf(fmaxf(roundf(__fdiv_rn(v, scale)), -127.0f), 127.0f);
        codes[i] = (signed char)(int)q;
        r[i] = __fsub_rn(v, __fmul_rn(q, scale));
    }
}

FG_KERNEL void dequantize_int8(const signed char* __restrict__ codes, const float* __restrict__ scales,
                               float* __restrict__ out, u32 n, u32 block) {
    FOR_EACH(i, n) out[i] = __fmul_rn((float)codes[i], scales[i / block]);
}
