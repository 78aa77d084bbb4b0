#include "../kernels/common.cuh"

// Kernels with the bugs the sanitizers are there to find, one bug each: src/sanitize.rs runs
// them under AddressSanitizer and ThreadSanitizer and fails unless each is reported, so that a
// clean run of the shipped kernels means something. Built only into the sanitized host libraries
// (build.rs): never shipped, never given to NVRTC.

// y[i] = x[i + 1]: the last thread reads one element past x.  y, x: [n]
extern "C" __global__ void bug_read_past_end(float* y, const float* x, u32_t n) {
    GRID_STRIDE(i, n) y[i] = x[i + 1];
}

// y[t] = tile[t] + tile[t + 1] over a static shared tile of 32: thread 31 reads past it.
// y, x: [32]; one block of 32 threads.
extern "C" __global__ void bug_shared_past_end(float* y, const float* x) {
    __shared__ float tile[32];
    const u32_t t = threadIdx.x;
    tile[t] = x[t];
    __syncthreads();
    y[t] = tile[t] + tile[t + 1];
}

// As bug_shared_past_end over the launch's dynamic shared memory (32 floats).
extern "C" __global__ void bug_dynamic_shared_past_end(float* y, const float* x) {
    DYNAMIC_SHARED(float, tile);
    const u32_t t = threadIdx.x;
    tile[t] = x[t];
    __syncthreads();
    y[t] = tile[t] + tile[t + 1];
}

// A block's sum with the barrier between writing the warps' partials and reading them left out:
// thread 0 reads the other warps' slots while they write them.  out: [1]; x: [n]; one block.
extern "C" __global__ void bug_reduce_missing_sync(float* out, const float* x, u32_t n) {
    __shared__ float partial[32];
    const u32_t lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    float v = 0.0f;
    for (u32_t i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
    v = warp_reduce_sum(v);
    if (lane == 0) partial[warp] = v;
    // the __syncthreads() that belongs here is missing
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (u32_t w = 0; w < blockDim.x / WARP_SIZE; w++) s += partial[w];
        out[0] = s;
    }
}

// out[0] += x[block] from every block, without an atomic: blocks race on out[0].
// out: [1]; x: [gridDim.x]
extern "C" __global__ void bug_blocks_race(float* out, const float* x) {
    if (threadIdx.x == 0) out[0] += x[blockIdx.x];
}

// A tiled dot product whose loop lacks its trailing barrier: a thread refills the tile for the
// next round while another still reads the last one (what compute-sanitizer's racecheck calls a
// write-after-read hazard).  out: [32]; x: [32 * rounds]; one block of 32 threads.
extern "C" __global__ void bug_tile_reuse_missing_sync(float* out, const float* x, u32_t rounds) {
    __shared__ float tile[32];
    const u32_t t = threadIdx.x;
    float acc = 0.0f;
    for (u32_t r = 0; r < rounds; r++) {
        tile[t] = x[r * 32 + t];
        __syncthreads();
        acc += tile[(t + 1) % 32];
        // the __syncthreads() that belongs here is missing
    }
    out[t] = acc;
}
