// host_shim.h: the CUDA execution model on the host, so that the kernels/*.cu files compile
// unchanged as C++ (forced in with `-include host_shim.h` by build.rs; NVRTC never sees it).
//
// - A launch runs each block on one host thread of a pool (host/runtime.cpp); the block's
//   threads are fibers on that thread, switched only at barriers. So `__syncthreads` is a
//   barrier among the block's fibers, and a warp shuffle goes through a per-thread exchange slot
//   with a barrier among the warp's fibers before and after.
// - threadIdx / blockIdx / blockDim / gridDim are thread-locals that the scheduler sets before it
//   resumes a fiber.
// - `__shared__` is `static thread_local`: one copy per host thread, which runs one block at a
//   time, so it is per block and shared by the block's fibers, as on a GPU. In the
//   AddressSanitizer build it is a plain `static` instead (ASan fences globals with redzones but
//   not thread-locals), and host/runtime.cpp runs one block at a time.
// - Atomics between blocks are real atomics (blocks run on several host threads at once).
#pragma once
#define SOFTCOT_HOST 1

#include <math.h>
#include <stdint.h>
#include <string.h>

struct dim3 {
    unsigned int x, y, z;
};

extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#if defined(SOFTCOT_SANITIZE_ADDRESS)
#define __shared__ static
#else
#define __shared__ static thread_local
#endif
#define __launch_bounds__(...)

extern "C" {
// Barrier of the current block's fibers (and of the current warp's).
void softcot_syncthreads(void);
void softcot_syncwarp(void);
// The launch's dynamic shared memory of the current block.
void* softcot_dynamic_shared(void);
// The exchange slot of thread `tid` of the current block.
uint64_t* softcot_exchange(unsigned int tid);
}

static inline void __syncthreads(void) { softcot_syncthreads(); }
static inline void __syncwarp(unsigned int = 0xffffffffu) { softcot_syncwarp(); }
static inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block(void) {}

// ---- bit casts and intrinsics -------------------------------------------------------------------
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
// Correctly rounded single operations (build.rs compiles with -ffp-contract=off, so no FMA).
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fdividef(float a, float b) { return a / b; }
// glibc declares __expf and __logf itself (as expf and logf), so these are macros.
#define __expf expf
#define __logf logf
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// ---- warp shuffles ------------------------------------------------------------------------------
// Lanes outside the warp (a partial last warp) read their own value, as CUDA leaves them undefined.
template <class T>
static inline T softcot_shfl_from(T v, unsigned int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const unsigned int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned int warp0 = tid & ~31u, nthreads = blockDim.x * blockDim.y * blockDim.z;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    *softcot_exchange(tid) = bits;
    softcot_syncwarp();
    const unsigned int src = warp0 + src_lane;
    if (src_lane < 32 && src < nthreads) bits = *softcot_exchange(src);
    softcot_syncwarp();  // nobody overwrites a slot before every lane has read it
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}
static inline unsigned int softcot_lane(void) {
    return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u;
}
template <class T>
static inline T __shfl_sync(unsigned int, T v, int src, int width = 32) {
    const unsigned int lane = softcot_lane();
    return softcot_shfl_from(v, (lane & ~(unsigned)(width - 1)) + ((unsigned)src & (width - 1)));
}
template <class T>
static inline T __shfl_xor_sync(unsigned int, T v, int mask, int width = 32) {
    const unsigned int lane = softcot_lane();
    const unsigned int src = lane ^ (unsigned)mask;
    return softcot_shfl_from(v, (src / width == lane / width) ? src : lane);
}
template <class T>
static inline T __shfl_down_sync(unsigned int, T v, unsigned int d, int width = 32) {
    const unsigned int lane = softcot_lane();
    const unsigned int src = lane + d;
    return softcot_shfl_from(v, (src / width == lane / width) ? src : lane);
}
template <class T>
static inline T __shfl_up_sync(unsigned int, T v, unsigned int d, int width = 32) {
    const unsigned int lane = softcot_lane();
    const bool inside = (lane % width) >= d;
    return softcot_shfl_from(v, inside ? lane - d : lane);
}

// ---- atomics ------------------------------------------------------------------------------------
static inline float atomicAdd(float* p, float v) {
    unsigned int* u = (unsigned int*)p;
    unsigned int old = __atomic_load_n(u, __ATOMIC_RELAXED), next;
    do {
        next = __float_as_uint(__uint_as_float(old) + v);
    } while (!__atomic_compare_exchange_n(u, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return __uint_as_float(old);
}
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline unsigned int atomicMax(unsigned int* p, unsigned int v) {
    unsigned int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline unsigned int atomicCAS(unsigned int* p, unsigned int cmp, unsigned int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
