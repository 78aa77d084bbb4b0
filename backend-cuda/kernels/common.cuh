// common.cuh: what every kernel file shares. Plain CUDA C with no CUDA headers, so that NVRTC
// compiles it as is and a host C++ compiler compiles it through host_shim.h (forced in with
// `-include host_shim.h`, which defines SOFTCOT_HOST). Each kernel file's first line is
// `#include "common.cuh"`; the NVRTC loader splices this file in at that line.
//
// Conventions (see backend-cuda/README.md):
// - entry points are `extern "C" __global__ void name(...)`, names unique across all files;
// - buffers are raw pointers (`float*` written, `const float*` read), sizes and offsets `u32_t`
//   scalars, seeds `u64_t`; element offsets are computed in `idx_t` (64-bit) so products of sizes
//   never wrap;
// - helpers are `static __device__ __forceinline__` so that files stay independent modules.
#pragma once

typedef unsigned int u32_t;
typedef int i32_t;
typedef unsigned long long u64_t;
typedef unsigned long long idx_t;  // element offsets: 64-bit, an 8B model's tables pass 2^32 bytes
typedef unsigned short bf16_t;     // bfloat16 storage bits

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu
// +infinity without math.h (NVRTC has no INFINITY macro).
#define SOFTCOT_INF __int_as_float(0x7f800000)

// ---- bf16 <-> f32 -----------------------------------------------------------------------------

static __device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((u32_t)h) << 16);
}

// Round to nearest, ties to even (as torch and the `half` crate); NaN stays a quiet NaN.
static __device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

// A float buffer's element as f32 whether the buffer stores f32 or bf16 (weights in the bf16
// mode), and a store rounding to the destination's storage: kernels that read weights are
// templates over the weight's storage, instantiated by one extern "C" entry point per storage.
static __device__ __forceinline__ float load_f32(const float* p, idx_t i) { return p[i]; }
static __device__ __forceinline__ float load_f32(const bf16_t* p, idx_t i) { return bf16_to_f32(p[i]); }
static __device__ __forceinline__ void store_f32(float* p, idx_t i, float v) { p[i] = v; }
static __device__ __forceinline__ void store_f32(bf16_t* p, idx_t i, float v) { p[i] = f32_to_bf16(v); }

// ---- reductions -------------------------------------------------------------------------------
// Warp reductions need all 32 lanes present: kernels that call them use blockDim.x % 32 == 0.

static __device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float warp_reduce_max(float v) {
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum of `v` over the block (1-D blocks, blockDim.x % 32 == 0, at most 1024 threads), returned to
// every thread. scratch: a __shared__ float[32] of the caller's. Ends with a barrier, so the
// caller may call it again with the same scratch straight away.
static __device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const u32_t lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const u32_t warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_reduce_sum(v);  // every warp reduces the partials, so no broadcast is needed
    __syncthreads();         // scratch is free again
    return v;
}

// Max of `v` over the block, as block_reduce_sum.
static __device__ __forceinline__ float block_reduce_max(float v, float* scratch) {
    const u32_t lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const u32_t warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -SOFTCOT_INF;
    v = warp_reduce_max(v);
    __syncthreads();
    return v;
}

// ---- Philox4x32-10 ------------------------------------------------------------------------------
// core/src/philox.rs's generator, word for word: counter c (in, replaced by the output), key the
// 64-bit seed. Integer ops only, so it is the same on every device.
static __device__ __forceinline__ void philox4x32_10(u32_t c[4], u64_t seed) {
    u32_t k0 = (u32_t)seed, k1 = (u32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const u32_t hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        const u32_t hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        const u32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// Dynamic shared memory (the launch's shared_bytes), typed: `DYNAMIC_SHARED(float, smem);`.
#ifdef SOFTCOT_HOST
#define DYNAMIC_SHARED(type, name) type* name = (type*)softcot_dynamic_shared()
#else
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// Grid-stride loop over n elements of a 1-D launch.
#define GRID_STRIDE(i, n) \
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < (idx_t)(n); i += (idx_t)blockDim.x * gridDim.x)
