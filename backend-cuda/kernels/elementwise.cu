#include "common.cuh"
// Element-wise ops and the bias gradient: grid-stride loops, one element per thread and step.
// add_bias reads a weight and copy converts between storages, so each has an entry point per
// storage (f32, bf16) over one template body.

// x[r, c] += bias[c].  x: [rows, n]; bias: [n]
template <typename W>
static __device__ __forceinline__ void add_bias_body(float* x, const W* bias, u32_t rows, u32_t n) {
    GRID_STRIDE(i, (idx_t)rows * n) x[i] += load_f32(bias, i % n);
}
extern "C" __global__ void add_bias_f32(float* x, const float* bias, u32_t rows, u32_t n) {
    add_bias_body(x, bias, rows, n);
}
extern "C" __global__ void add_bias_bf16(float* x, const bf16_t* bias, u32_t rows, u32_t n) {
    add_bias_body(x, bias, rows, n);
}

// y[i] += x[i].  y, x: [n]
extern "C" __global__ void add_f32(float* y, const float* x, u32_t n) {
    GRID_STRIDE(i, n) y[i] += x[i];
}

// dst[dst_off + i] = src[src_off + i], widened to f32 or rounded to bf16 (nearest, ties to even)
// where the storages differ.  dst, src: [>= off + n]
template <typename D, typename S>
static __device__ __forceinline__ void copy_body(D* dst, u64_t dst_off, const S* src, u64_t src_off, u64_t n) {
    GRID_STRIDE(i, n) store_f32(dst, dst_off + i, load_f32(src, src_off + i));
}
extern "C" __global__ void copy_f32(float* dst, u64_t dst_off, const float* src, u64_t src_off, u64_t n) {
    copy_body(dst, dst_off, src, src_off, n);
}
extern "C" __global__ void copy_bf16_to_f32(float* dst, u64_t dst_off, const bf16_t* src, u64_t src_off, u64_t n) {
    copy_body(dst, dst_off, src, src_off, n);
}
extern "C" __global__ void copy_f32_to_bf16(bf16_t* dst, u64_t dst_off, const float* src, u64_t src_off, u64_t n) {
    copy_body(dst, dst_off, src, src_off, n);
}
extern "C" __global__ void copy_bf16(bf16_t* dst, u64_t dst_off, const bf16_t* src, u64_t src_off, u64_t n) {
    GRID_STRIDE(i, n) dst[dst_off + i] = src[src_off + i];
}

// x[i] = value.  x: [n]
extern "C" __global__ void fill_f32(float* x, float value, u64_t n) {
    GRID_STRIDE(i, n) x[i] = value;
}

// x[i] *= s.  x: [n]
extern "C" __global__ void scale_f32(float* x, float s, u64_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).  out, gate, up: [n]
extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, u32_t n) {
    GRID_STRIDE(i, n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// With s = sigmoid(g): dgate = dout * up * s (1 + g (1 - s)), dup = dout * g s (writes both).
// dgate, dup, dout, gate, up: [n]
extern "C" __global__ void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                                           const float* up, u32_t n) {
    GRID_STRIDE(i, n) {
        const float g = gate[i], s = 1.0f / (1.0f + expf(-g));
        dgate[i] = dout[i] * up[i] * (s * (1.0f + g * (1.0f - s)));
        dup[i] = dout[i] * (g * s);
    }
}

// dbias[c] += sum over r of dy[r, c]: one thread per column, rows in order (deterministic; the
// bias gradient is small next to the matmuls around it).  dbias: [n]; dy: [rows, n]
extern "C" __global__ void sum_rows_f32(float* dbias, const float* dy, u32_t rows, u32_t n) {
    GRID_STRIDE(c, n) {
        float s = 0.0f;
        for (u32_t r = 0; r < rows; r++) s += dy[(idx_t)r * n + c];
        dbias[c] += s;
    }
}
