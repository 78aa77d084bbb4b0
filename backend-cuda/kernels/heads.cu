#include "common.cuh"

// Rows over the vocabulary: softmax at a temperature, the log-probability of a target, argmax,
// categorical sampling (inverse CDF with a Philox uniform, the CPU backend's choice bit for bit),
// the weighted cross-entropy backward at per-row temperatures, the soft-token policy gradient on
// logits; and two row-wise helpers, scale_rows and gather_rows.
//
// Row kernels run one block per row (grid (rows)), the block looping over V with a stride of
// blockDim.x, so any V works (Qwen's 152k too); blockDim.x is a multiple of 32, at most 1024, and
// any such size gives the same results except where a sum's order follows the block size
// (softmax, logprob_gather, cross_entropy_backward: float32 sums, ~1e-7 relative; soft_pg_logits:
// float64). Shared memory is static (at most 256 bytes; sample_rows: 8.3 KiB), none dynamic.
//
// Entry points:
//   softmax_rows(float* p, const float* z, u32_t V, float inv_tau)
//     p, z: [rows, V]. p = softmax(z * inv_tau).
//   logprob_gather(float* out, const float* z, const u32_t* targets, u32_t V)
//     out: [rows]; z: [rows, V]; targets: [rows] (< V, checked by the caller).
//   argmax_rows(u32_t* ids, const float* x, u32_t V)
//     ids: [rows]; x: [rows, V]. Lowest index on ties; NaNs are skipped.
//   sample_rows(u32_t* ids, const float* z, u32_t V, float inv_tau, u64_t seed,
//               const u32_t* streams, const u32_t* steps)
//     ids, streams, steps: [rows]; z: [rows, V]. blockDim.x >= 32.
//   cross_entropy_backward(float* z, float* loss, const u32_t* targets, const float* weights,
//                          const float* inv_tau, u32_t V)
//     z: [rows, V] logits in, gradient out; loss, weights: [rows]; targets: [rows];
//     inv_tau: [rows] or null (1).
//   soft_pg_logits(float* dz, const float* p, const float* u, const float* c, u32_t V)
//     dz, p, u: [rows, V]; c: [rows].
//   scale_rows(float* x, const float* s, u32_t rows, u32_t n)
//     x: [rows, n]; s: [rows]. Grid-stride over rows * n (any grid, any block).
//   gather_rows(float* dst, const float* src, const u32_t* index, u32_t rows, u32_t d, u32_t n)
//     dst: [rows, d]; src: [n, d]; index: [rows]. Grid-stride over rows * d; rows whose index is
//     u32::MAX (or >= n: the caller reports those) are kept.
//   gather_rows_bf16(float* dst, const bf16_t* src, ...): the same from a bf16 src (E in the bf16
//     mode), widened.

#define HEADS_NO_INDEX 0xffffffffu

// The largest element of z[0 .. V) (NaNs skipped), to every thread. scratch: [32] shared.
static __device__ __forceinline__ float heads_row_max(const float* z, u32_t V, float* scratch) {
    float m = -SOFTCOT_INF;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, z[j]);
    return block_reduce_max(m, scratch);
}

// sum_j exp((z[j] - m) * inv_tau), to every thread. scratch: [32] shared.
static __device__ __forceinline__ float heads_row_sum_exp(const float* z, u32_t V, float m,
                                                          float inv_tau, float* scratch) {
    float s = 0.0f;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) s += expf((z[j] - m) * inv_tau);
    return block_reduce_sum(s, scratch);
}

// p = softmax(z * inv_tau) per row.  p, z: [rows, V]
extern "C" __global__ void softmax_rows(float* p, const float* z, u32_t V, float inv_tau) {
    __shared__ float scratch[32];
    z += (idx_t)blockIdx.x * V;
    p += (idx_t)blockIdx.x * V;
    float m = heads_row_max(z, V, scratch);
    float s = 0.0f;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) {
        float e = expf((z[j] - m) * inv_tau);
        p[j] = e;
        s += e;
    }
    float inv = 1.0f / block_reduce_sum(s, scratch);
    // Each thread rescales the elements it wrote itself: no barrier needed.
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) p[j] *= inv;
}

// out[r] = z[r, t] - max - ln(sum exp(z[r] - max)), t = targets[r].
// out: [rows]; z: [rows, V]; targets: [rows]
extern "C" __global__ void logprob_gather(float* out, const float* z, const u32_t* targets, u32_t V) {
    __shared__ float scratch[32];
    z += (idx_t)blockIdx.x * V;
    float m = heads_row_max(z, V, scratch);
    float s = heads_row_sum_exp(z, V, m, 1.0f, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = z[targets[blockIdx.x]] - m - logf(s);
}

// Keeps the better of (v, i) and another lane's pair: the larger value, then the lower index; a
// pair with no index loses to any pair with one.
static __device__ __forceinline__ void heads_warp_argmax(float* v, u32_t* i) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, *v, o);
        u32_t oi = __shfl_xor_sync(FULL_MASK, *i, o);
        if (oi != HEADS_NO_INDEX && (*i == HEADS_NO_INDEX || ov > *v || (ov == *v && oi < *i))) {
            *v = ov;
            *i = oi;
        }
    }
}

// ids[r] = the lowest index of row r's maximum (0 for a row of NaNs, as the CPU).
// ids: [rows]; x: [rows, V]
extern "C" __global__ void argmax_rows(u32_t* ids, const float* x, u32_t V) {
    __shared__ float warp_v[32];
    __shared__ u32_t warp_i[32];
    x += (idx_t)blockIdx.x * V;
    // Each thread's strided elements in increasing order: a strict > keeps the first maximum.
    float v = -SOFTCOT_INF;
    u32_t i = HEADS_NO_INDEX;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) {
        if (x[j] > v || (i == HEADS_NO_INDEX && x[j] == v)) {
            v = x[j];
            i = j;
        }
    }
    u32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    heads_warp_argmax(&v, &i);
    if (lane == 0) {
        warp_v[warp] = v;
        warp_i[warp] = i;
    }
    __syncthreads();
    v = lane < blockDim.x / 32 ? warp_v[lane] : -SOFTCOT_INF;
    i = lane < blockDim.x / 32 ? warp_i[lane] : HEADS_NO_INDEX;
    heads_warp_argmax(&v, &i);
    if (threadIdx.x == 0) ids[blockIdx.x] = i == HEADS_NO_INDEX ? 0 : i;
}

// ---- sampling ---------------------------------------------------------------------------------
// The CPU backend (backend-cpu/src/heads.rs) samples row r as: m = max(z); total = the sum of
// e_j = exp((z_j - m) * inv_tau) in 16 lanes (lane l adds e_j for j = l mod 16 below V rounded
// down to 16, in order; then the lanes in order from 0, then the tail in order); target =
// u * total; then a running sum in index order, picking the first j at which it exceeds target
// (or the last j with e_j > 0 if rounding leaves it short). Here each e_j is the same Cephes
// polynomial with the same correctly rounded operations (__fmul_rn and friends, which NVRTC never
// fuses into an FMA), the 16 lane sums and the running sum are kept in the same order, by one
// thread each, over tiles of e_j that the whole block computes first: the same floats, so the
// same id. The serial sums cost ~V / 16 + (the picked index) dependent adds per row.

#define HEADS_TILE 2048  // e_j per tile (a multiple of 16, so lanes stay aligned across tiles)

// The CPU backend's exp (backend-cpu/src/fastmath.rs, Cephes' polynomial), bit for bit.
static __device__ __forceinline__ float heads_exp_cpu(float x) {
    const float log2e = 1.44269504088896340736f, round = 12582912.0f;
    x = fmaxf(fminf(x, 88.7f), -87.3f);
    float t = __fadd_rn(__fmul_rn(x, log2e), round);
    float k = __fsub_rn(t, round);
    float r = __fsub_rn(__fsub_rn(x, __fmul_rn(k, 0.6933594f)), __fmul_rn(k, -2.1219444e-4f));
    float p = 1.9875691e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.333452e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665796e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    float e = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.0f);
    // 2^k from t's bits: t = 1.5 * 2^23 + k exactly.
    return __fmul_rn(e, __uint_as_float((__float_as_uint(t) - __float_as_uint(round) + 127u) << 23));
}

// core/src/philox.rs's sample_uniform: word 0 of Philox4x32-10 at counter
// [step, 0, stream, TAG_SAMPLE = 2] under key seed, as a uniform in [0, 1) with 24 bits (exact).
static __device__ __forceinline__ float heads_sample_uniform(u64_t seed, u32_t stream, u32_t step) {
    u32_t c[4] = {step, 0, stream, 2};
    philox4x32_10(c, seed);
    return __fmul_rn((float)(c[0] >> 8), 1.0f / 16777216.0f);
}

// tile[k] = exp((z[j0 + k] - m) * inv_tau) for k < n, by the whole block, then a barrier.
static __device__ __forceinline__ void heads_exp_tile(float* tile, const float* z, u32_t j0, u32_t n,
                                                      float m, float inv_tau) {
    for (u32_t k = threadIdx.x; k < n; k += blockDim.x)
        tile[k] = heads_exp_cpu(__fmul_rn(__fsub_rn(z[j0 + k], m), inv_tau));
    __syncthreads();
}

// ids[r] = the inverse-CDF sample of softmax(z[r] * inv_tau) at u = sample_uniform(seed,
// streams[r], steps[r]). ids, streams, steps: [rows]; z: [rows, V]
extern "C" __global__ void sample_rows(u32_t* ids, const float* z, u32_t V, float inv_tau, u64_t seed,
                                       const u32_t* streams, const u32_t* steps) {
    __shared__ float scratch[32];
    __shared__ float tile[HEADS_TILE];
    __shared__ float lanes[16];
    __shared__ u32_t done;
    z += (idx_t)blockIdx.x * V;
    float m = heads_row_max(z, V, scratch);
    u32_t v16 = V / 16 * 16;
    // total: threads 0..15 are the CPU's 16 lanes.
    float lane_sum = 0.0f;
    for (u32_t j0 = 0; j0 < v16; j0 += HEADS_TILE) {
        u32_t n = min((u32_t)HEADS_TILE, v16 - j0);
        heads_exp_tile(tile, z, j0, n, m, inv_tau);
        if (threadIdx.x < 16)
            for (u32_t k = threadIdx.x; k < n; k += 16) lane_sum = __fadd_rn(lane_sum, tile[k]);
        __syncthreads();
    }
    if (threadIdx.x < 16) lanes[threadIdx.x] = lane_sum;
    __syncthreads();
    float target = 0.0f;
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int l = 0; l < 16; l++) total = __fadd_rn(total, lanes[l]);
        for (u32_t j = v16; j < V; j++)
            total = __fadd_rn(total, heads_exp_cpu(__fmul_rn(__fsub_rn(z[j], m), inv_tau)));
        target = __fmul_rn(heads_sample_uniform(seed, streams[blockIdx.x], steps[blockIdx.x]), total);
        done = 0;
    }
    __syncthreads();  // done = 0 is seen by every thread
    // The running sum, by thread 0 over each tile in turn, until it passes target. `done` is
    // written by thread 0 between two barriers and read by all after the second.
    float acc = 0.0f;
    u32_t pick = HEADS_NO_INDEX, last_pos = 0;
    for (u32_t j0 = 0; j0 < V && !done; j0 += HEADS_TILE) {
        u32_t n = min((u32_t)HEADS_TILE, V - j0);
        heads_exp_tile(tile, z, j0, n, m, inv_tau);
        if (threadIdx.x == 0) {
            for (u32_t k = 0; k < n; k++) {
                float e = tile[k];
                if (e > 0.0f) last_pos = j0 + k;
                acc = __fadd_rn(acc, e);
                if (acc > target) {
                    pick = j0 + k;
                    done = 1;
                    break;
                }
            }
        }
        __syncthreads();  // the tile is free again, and done is published
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = pick != HEADS_NO_INDEX ? pick : last_pos;
}

// ---- backward heads ---------------------------------------------------------------------------

// In place, with p = softmax(z[r] * it), it = inv_tau[r] (1 if null), w = weights[r],
// t = targets[r]: loss[r] = -w log p[t], z[r] = w it (p - onehot(t)); rows with w = 0 get zeros
// (their target is not read).
// z: [rows, V]; loss, weights, inv_tau: [rows]; targets: [rows]
extern "C" __global__ void cross_entropy_backward(float* z, float* loss, const u32_t* targets,
                                                  const float* weights, const float* inv_tau,
                                                  u32_t V) {
    __shared__ float scratch[32];
    u32_t r = blockIdx.x;
    z += (idx_t)r * V;
    float w = weights[r];
    if (w == 0.0f) {
        for (u32_t j = threadIdx.x; j < V; j += blockDim.x) z[j] = 0.0f;
        if (threadIdx.x == 0) loss[r] = 0.0f;
        return;
    }
    float it = inv_tau ? inv_tau[r] : 1.0f;
    u32_t t = targets[r];
    float zt = z[t];                      // read by every thread before the barriers below,
    float m = heads_row_max(z, V, scratch);  // so before any thread overwrites z
    float s = 0.0f;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) {
        float e = expf((z[j] - m) * it);
        z[j] = e;
        s += e;
    }
    s = block_reduce_sum(s, scratch);
    if (threadIdx.x == 0) loss[r] = -w * ((zt - m) * it - logf(s));
    float f = w * it / s;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) z[j] = j == t ? z[j] * f - w * it : z[j] * f;
}

// block_reduce_sum in float64. scratch: [32] shared.
static __device__ __forceinline__ double heads_block_sum_f64(double v, double* scratch) {
    u32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? scratch[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// dz[r] = c[r] p[r] (u[r] - <p[r], u[r]>).  dz, p, u: [rows, V]; c: [rows]
extern "C" __global__ void soft_pg_logits(float* dz, const float* p, const float* u, const float* c,
                                          u32_t V) {
    __shared__ double scratch[32];
    idx_t off = (idx_t)blockIdx.x * V;
    // <p, u> in float64, as the CPU sums it: a vocabulary of terms of mixed signs.
    double s = 0.0;
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) s += (double)p[off + j] * u[off + j];
    float mean = (float)heads_block_sum_f64(s, scratch);
    float cr = c[blockIdx.x];
    for (u32_t j = threadIdx.x; j < V; j += blockDim.x) dz[off + j] = cr * p[off + j] * (u[off + j] - mean);
}

// x[r, :] *= s[r].  x: [rows, n]; s: [rows]
extern "C" __global__ void scale_rows(float* x, const float* s, u32_t rows, u32_t n) {
    GRID_STRIDE(i, (idx_t)rows * n) x[i] *= s[i / n];
}

// dst[r, :] = src[index[r], :] where index[r] < n; other rows are kept.
// dst: [rows, d]; src: [n, d]; index: [rows]
template <typename W>
static __device__ __forceinline__ void gather_rows_body(float* dst, const W* src, const u32_t* index, u32_t rows,
                                                        u32_t d, u32_t n) {
    GRID_STRIDE(i, (idx_t)rows * d) {
        u32_t from = index[i / d];
        if (from < n) dst[i] = load_f32(src, (idx_t)from * d + i % d);
    }
}
extern "C" __global__ void gather_rows(float* dst, const float* src, const u32_t* index, u32_t rows,
                                       u32_t d, u32_t n) {
    gather_rows_body(dst, src, index, rows, d, n);
}
extern "C" __global__ void gather_rows_bf16(float* dst, const bf16_t* src, const u32_t* index, u32_t rows,
                                            u32_t d, u32_t n) {
    gather_rows_body(dst, src, index, rows, d, n);
}
