#include "common.cuh"
// AdamW as torch.optim.AdamW (decoupled decay), the same operations in the same order as the CPU
// backend. p, g, m, v: [n]
extern "C" __global__ void adamw_step(float* p, const float* g, float* m, float* v, u64_t n, float lr, float beta1,
                                      float beta2, float eps, float weight_decay, float step_size, float bc2_sqrt) {
    const float decay = 1.0f - lr * weight_decay;
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        float pi = p[i] * decay;
        const float mi = m[i] + (gi - m[i]) * (1.0f - beta1);
        const float vi = v[i] * beta2 + (1.0f - beta2) * gi * gi;
        pi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}
