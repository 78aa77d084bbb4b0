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

// x rounded to bf16, up with probability (dropped bits) / 2^16 from the high 16 bits of the
// uniform word r (core/src/backend/moments.rs's round_bf16_stochastic). NaN stays a quiet NaN.
static __device__ __forceinline__ u32_t bf16_round_stochastic(float x, u32_t r) {
    const u32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + (r >> 16)) >> 16;
}

// The same step on bf16 moments packed two per slot (element 2j in the low half of slot j, 2j + 1
// in the high half), one thread per slot. The moments are updated in f32 with explicitly rounded
// operations (no fused multiply-add, so the f32 values are the CPU's bit for bit), the weight
// steps with them unrounded (as the f32 kernel, within f32 rounding of the CPU), and they are stored rounded stochastically with Philox counter
// [step, slot, stream, TAG_MOMENTS = 4] keyed by seed: word k rounds m of element 2j + k, word
// 2 + k its v. p, g: [n]; m, v: [ceil(n / 2)]
extern "C" __global__ void adamw_step_bf16(float* p, const float* g, float* m, float* v, u64_t n, float lr,
                                           float beta1, float beta2, float eps, float weight_decay, float step_size,
                                           float bc2_sqrt, u64_t seed, u32_t stream, u32_t step) {
    const float decay = 1.0f - lr * weight_decay;
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    GRID_STRIDE(j, (n + 1) / 2) {
        u32_t w[4] = {step, (u32_t)j, stream, 4u};
        philox4x32_10(w, seed);
        const u32_t ms = __float_as_uint(m[j]), vs = __float_as_uint(v[j]);
        u32_t mo = 0, vo = 0;
        for (u32_t k = 0; k < 2 && 2 * j + k < n; k++) {
            const idx_t i = 2 * j + k;
            const float gi = g[i];
            const float m0 = __uint_as_float(k ? ms & 0xffff0000u : ms << 16);
            const float v0 = __uint_as_float(k ? vs & 0xffff0000u : vs << 16);
            const float mi = __fadd_rn(m0, __fmul_rn(__fsub_rn(gi, m0), c1));
            const float vi = __fadd_rn(__fmul_rn(v0, beta2), __fmul_rn(__fmul_rn(c2, gi), gi));
            p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
            mo |= bf16_round_stochastic(mi, w[k]) << (16 * k);
            vo |= bf16_round_stochastic(vi, w[2 + k]) << (16 * k);
        }
        m[j] = __uint_as_float(mo);
        v[j] = __uint_as_float(vo);
    }
}
