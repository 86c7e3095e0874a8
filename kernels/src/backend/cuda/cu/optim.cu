// Fused optimizer updates, PyTorch semantics. With `stats` given, they do
// nothing once a step has failed, so a NaN never reaches the parameters
// even though the host has not looked yet.

FG_KERNEL void sgd_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ v,
                        u32 n, float lr, float momentum, float weight_decay, int nesterov,
                        const u64* __restrict__ stats) {
    if (step_failed(stats)) return;
    FOR_EACH(i, n) {
        float gi = g[i] + weight_decay * p[i];
        float vi = momentum * v[i] + gi;
        v[i] = vi;
        float step = nesterov ? gi + momentum * vi : vi;
        p[i] -= lr * step;
    }
}

// step_size = lr / (1 - beta1^t); inv_sqrt_bias2 = 1 / sqrt(1 - beta2^t),
// both computed on the host in f64 as the CPU backend does.
FG_KERNEL void adam_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                         float* __restrict__ v, u32 n, float beta1, float beta2, float eps,
                         float weight_decay, float step_size, float inv_sqrt_bias2,
                         const u64* __restrict__ stats) {
    if (step_failed(stats)) return;
    FOR_EACH(i, n) {
        float gi = g[i] + weight_decay * p[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + eps);
    }
}

// The same updates over several tensors in one launch: a = parameters,
// b = gradients, c = velocity or first moment, d = second moment.
FG_KERNEL void sgd_step_multi(Multi t, float lr, float momentum, float weight_decay, int nesterov,
                              const u64* __restrict__ stats) {
    if (step_failed(stats)) return;
    FOR_EACH_IN(i, t, j) {
        float* p = (float*)t.a[j];
        const float* g = (const float*)t.b[j];
        float* v = (float*)t.c[j];
        float gi = g[i] + weight_decay * p[i];
        float vi = momentum * v[i] + gi;
        v[i] = vi;
        float step = nesterov ? gi + momentum * vi : vi;
        p[i] -= lr * step;
    }
}

FG_KERNEL void adam_step_multi(Multi t, float beta1, float beta2, float eps, float weight_decay,
                               float step_size, float inv_sqrt_bias2, const u64* __restrict__ stats) {
    if (step_failed(stats)) return;
    FOR_EACH_IN(i, t, j) {
        float* p = (float*)t.a[j];
        const float* g = (const float*)t.b[j];
        float* m = (float*)t.c[j];
        float* v = (float*)t.d[j];
        float gi = g[i] + weight_decay * p[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bias2 + eps);
    }
}
