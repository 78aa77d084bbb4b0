#include "common.cuh"
// RMSNorm forward and backward: one block per row (blockDim.x % 32 == 0), the row's sums by
// block reduction; the weight gradient by column, rows in order.

// The weight w is stored f32 or bf16: one entry point per storage over a template body.

// out[r, :] = w * x[r, :] / rms(x[r, :]); rstd[r] = 1 / rms when write_rstd (else rstd unused).
// out, x: [rows, d]; w: [d]; rstd: [rows]; scratch: [32] shared
template <typename W>
static __device__ __forceinline__ void rmsnorm_forward_body(float* out, float* rstd, const float* x, const W* w,
                                                            u32_t d, float eps, u32_t write_rstd, float* scratch) {
    const idx_t base = (idx_t)blockIdx.x * d;
    float ss = 0.0f;
    for (u32_t i = threadIdx.x; i < d; i += blockDim.x) ss += x[base + i] * x[base + i];
    ss = block_reduce_sum(ss, scratch);
    const float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (u32_t i = threadIdx.x; i < d; i += blockDim.x) out[base + i] = load_f32(w, i) * (x[base + i] * r);
    if (write_rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}
extern "C" __global__ void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, u32_t d,
                                           float eps, u32_t write_rstd) {
    __shared__ float scratch[32];
    rmsnorm_forward_body(out, rstd, x, w, d, eps, write_rstd, scratch);
}
extern "C" __global__ void rmsnorm_forward_bf16(float* out, float* rstd, const float* x, const bf16_t* w, u32_t d,
                                                float eps, u32_t write_rstd) {
    __shared__ float scratch[32];
    rmsnorm_forward_body(out, rstd, x, w, d, eps, write_rstd, scratch);
}

// dx[r, :] += r w dy - r^3 c x, c = mean(dy * x * w) over the row.
// dx, dy, x: [rows, d]; w: [d]; rstd: [rows]; scratch: [32] shared
template <typename W>
static __device__ __forceinline__ void rmsnorm_backward_dx_body(float* dx, const float* dy, const float* x,
                                                                const W* w, const float* rstd, u32_t d,
                                                                float* scratch) {
    const idx_t base = (idx_t)blockIdx.x * d;
    float c = 0.0f;
    for (u32_t i = threadIdx.x; i < d; i += blockDim.x) c += dy[base + i] * x[base + i] * load_f32(w, i);
    c = block_reduce_sum(c, scratch) / (float)d;
    const float r = rstd[blockIdx.x], r3c = r * r * r * c;
    for (u32_t i = threadIdx.x; i < d; i += blockDim.x)
        dx[base + i] += r * load_f32(w, i) * dy[base + i] - r3c * x[base + i];
}
extern "C" __global__ void rmsnorm_backward_dx(float* dx, const float* dy, const float* x, const float* w,
                                               const float* rstd, u32_t d) {
    __shared__ float scratch[32];
    rmsnorm_backward_dx_body(dx, dy, x, w, rstd, d, scratch);
}
extern "C" __global__ void rmsnorm_backward_dx_bf16(float* dx, const float* dy, const float* x, const bf16_t* w,
                                                    const float* rstd, u32_t d) {
    __shared__ float scratch[32];
    rmsnorm_backward_dx_body(dx, dy, x, w, rstd, d, scratch);
}

// dw[i] += sum over rows of dy[r, i] x[r, i] rstd[r]: one thread per column.
// dw: [d]; dy, x: [rows, d]; rstd: [rows]
extern "C" __global__ void rmsnorm_backward_dw(float* dw, const float* dy, const float* x, const float* rstd,
                                               u32_t rows, u32_t d) {
    GRID_STRIDE(i, d) {
        float s = 0.0f;
        for (u32_t r = 0; r < rows; r++) s += dy[(idx_t)r * d + i] * x[(idx_t)r * d + i] * rstd[r];
        dw[i] += s;
    }
}
