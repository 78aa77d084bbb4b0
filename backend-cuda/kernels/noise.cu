#include "common.cuh"
// Philox Gaussian noise, bit for bit core/src/philox.rs's noise_at: the same integer ops and the
// same correctly rounded float32 + - * in the same order. Every float operation is written as a
// __f*_rn intrinsic, which NVRTC never contracts into an FMA (a contraction would change bits).

#define NOISE_TAG 1u

static __device__ __forceinline__ float nz_mul(float a, float b) { return __fmul_rn(a, b); }
static __device__ __forceinline__ float nz_add(float a, float b) { return __fadd_rn(a, b); }

// ln(x) for x in (0, 1]: exponent and a 20-term series of ln(1 + t) (philox.rs det_ln).
static __device__ __forceinline__ float det_ln(float x) {
    const u32_t bits = __float_as_uint(x);
    int e = (int)((bits >> 23) & 0xffu) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > __uint_as_float(0x3fb504f3u)) {  // SQRT_2
        m = nz_mul(m, 0.5f);
        e += 1;
    }
    const float t = __fsub_rn(m, 1.0f);
    float acc = 0.0f;
    for (int n = 20; n >= 1; n--) {
        const float c = (n % 2 == 1) ? __fdiv_rn(1.0f, (float)n) : __fdiv_rn(-1.0f, (float)n);
        acc = nz_add(nz_mul(acc, t), c);
    }
    return nz_add(nz_mul((float)e, __uint_as_float(0x3f317218u)), nz_mul(acc, t));  // e * LN_2 + acc * t
}

// sqrt(x) for x in [0, 64): Newton on 1/sqrt from a bit-level seed (philox.rs det_sqrt).
static __device__ __forceinline__ float det_sqrt(float x) {
    float y = __uint_as_float(0x5f3759dfu - (__float_as_uint(x) >> 1));
    for (int i = 0; i < 4; i++) y = nz_mul(y, __fsub_rn(1.5f, nz_mul(nz_mul(nz_mul(0.5f, x), y), y)));
    return x <= 0.0f ? 0.0f : nz_mul(x, y);
}

// n! by repeated float32 multiplication, as philox.rs computes its series constants.
static __device__ __forceinline__ float det_fact(int n) {
    float f = 1.0f;
    for (int i = 2; i <= n; i++) f = nz_mul(f, (float)i);
    return f;
}

// (cos, sin) of 2 pi k / 2^24 (philox.rs det_cos_sin_turn).
static __device__ __forceinline__ void det_cos_sin_turn(u32_t k24, float* cos_out, float* sin_out) {
    const float frac = nz_mul((float)(k24 & 0x3fffffu), __fdiv_rn(1.0f, 4194304.0f));
    const float th = nz_mul(frac, __uint_as_float(0x3fc90fdbu));  // FRAC_PI_2
    const float t2 = nz_mul(th, th);
    float s = 0.0f, c = 0.0f;
    for (int n = 8; n >= 1; n--) {
        const float sg = (n % 2 == 0) ? 1.0f : -1.0f;
        s = nz_add(nz_mul(s, t2), __fdiv_rn(sg, det_fact(2 * n + 1)));
        c = nz_add(nz_mul(c, t2), __fdiv_rn(sg, det_fact(2 * n)));
    }
    const float sn = nz_mul(nz_add(nz_mul(s, t2), 1.0f), th), cn = nz_add(nz_mul(c, t2), 1.0f);
    const u32_t q = (k24 >> 22) & 3u;
    const float a = (q & 1u) ? sn : cn, b = (q & 1u) ? cn : sn;
    *cos_out = __uint_as_float(__float_as_uint(a) ^ (((q ^ (q >> 1)) & 1u) << 31));
    *sin_out = __uint_as_float(__float_as_uint(b) ^ ((q >> 1) << 31));
}

// Two standard normals from two words (Box-Muller; philox.rs normal_pair).
static __device__ __forceinline__ void normal_pair(u32_t w0, u32_t w1, float* z0, float* z1) {
    const float u = nz_mul((float)((w0 >> 8) + 1u), __fdiv_rn(1.0f, 16777216.0f));  // uniform_oc
    const float r = det_sqrt(nz_mul(-2.0f, det_ln(u)));
    float c, s;
    det_cos_sin_turn(w1 >> 8, &c, &s);
    *z0 = nz_mul(r, c);
    *z1 = nz_mul(r, s);
}

// x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i): one thread per block of four
// values (one Philox call), `blocks` = ceil(d / 4) per row.  x: [rows, d]; streams, steps: [rows]
extern "C" __global__ void add_noise_f32(float* x, u32_t rows, u32_t d, float sigma, u64_t seed,
                                         const u32_t* streams, const u32_t* steps) {
    const u32_t blocks = (d + 3) / 4;
    GRID_STRIDE(t, (idx_t)rows * blocks) {
        const u32_t r = (u32_t)(t / blocks), blk = (u32_t)(t % blocks);
        u32_t w[4] = {steps[r], blk, streams[r], NOISE_TAG};
        philox4x32_10(w, seed);
        float z[4];
        normal_pair(w[0], w[1], &z[0], &z[1]);
        normal_pair(w[2], w[3], &z[2], &z[3]);
        for (u32_t j = 0; j < 4 && 4 * blk + j < d; j++) {
            float* xi = &x[(idx_t)r * d + 4 * blk + j];
            *xi = nz_add(*xi, nz_mul(sigma, z[j]));
        }
    }
}
