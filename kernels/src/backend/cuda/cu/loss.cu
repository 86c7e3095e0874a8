// Softmax cross-entropy fused with its gradient, and the loss/accuracy
// reduction, in one single-block launch: each thread takes whole rows, and
// the per-thread sums meet in a fixed tree, so results are reproducible.
// The math follows the CPU backend (f64 exponentials and sums).

#define XENT_THREADS 256

FG_KERNEL void softmax_xent(const float* __restrict__ logits, const u32* __restrict__ labels,
                            u32 rows, u32 classes, float* __restrict__ dlogits,
                            u64* __restrict__ stats, u64 step, u32* __restrict__ faults) {
    __shared__ double loss_acc[XENT_THREADS];
    __shared__ u32 correct_acc[XENT_THREADS];
    double loss = 0.0;
    u32 correct = 0;
    const float inv_rows = 1.0f / (float)(rows > 0 ? rows : 1);
    for (u32 r = threadIdx.x; r < rows; r += blockDim.x) {
        const float* row = logits + (u64)r * classes;
        u32 label = labels[r];
        if (label >= classes) {
            atomicOr(faults, FAULT_BAD_LABEL);
            continue;
        }
        float max = __int_as_float(0xff800000);  // -inf
        u32 best = 0;
        for (u32 c = 0; c < classes; c++) {
            float v = row[c];
            // A NaN logit takes over and poisons the loss, as it should.
            if (v > max || isnan(v)) {
                max = v;
                best = c;
            }
        }
        double denom = 0.0;
        for (u32 c = 0; c < classes; c++) denom += exp((double)(row[c] - max));
        double log_denom = log(denom);
        loss += log_denom - (double)(row[label] - max);
        if (best == label) correct++;
        if (dlogits != 0) {
            float* drow = dlogits + (u64)r * classes;
            for (u32 c = 0; c < classes; c++) {
                float p = (float)exp((double)(row[c] - max) - log_denom);
                float target = c == label ? 1.0f : 0.0f;
                drow[c] = (p - target) * inv_rows;
            }
        }
    }
    loss_acc[threadIdx.x] = loss;
    correct_acc[threadIdx.x] = correct;
    __syncthreads();
    for (u32 half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            loss_acc[threadIdx.x] += loss_acc[threadIdx.x + half];
            correct_acc[threadIdx.x] += correct_acc[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double batch = loss_acc[0];
        double total = __longlong_as_double((long long)stats[STAT_LOSS]) + batch;
        stats[STAT_LOSS] = (u64)__double_as_longlong(total);
        stats[STAT_CORRECT] += correct_acc[0];
        if (!isfinite(batch) && stats[STAT_BAD_LOSS_STEP] == NO_STEP) {
            stats[STAT_BAD_LOSS_STEP] = step;
            stats[STAT_BAD_LOSS_VALUE] = (u64)__float_as_uint((float)(batch / (rows > 0 ? rows : 1)));
        }
    }
}
