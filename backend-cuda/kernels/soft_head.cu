#include "common.cuh"

// The head of a soft-thinking decode step, fused: logits = xn head^T, their argmax (the shadow
// ids) and mix = softmax(logits / tau) table, with an online softmax, so that each row of the
// vocabulary is read from memory once for all three when head and table are one buffer (tied
// embeddings; the mixture re-reads a tile's rows from L1/L2 right after the logits read them).
// Backend::soft_head's contract; the CPU backend's backend-cpu/src/soft_head.rs is its reference
// design (chunks of the vocabulary, each with a running maximum, combined in chunk order).
//
// Two kernels:
//   soft_head_chunks{,_bf16}(float* logits, float* scratch, const float* xn,
//                            const W* head, const W* table, u32_t rows, u32_t V, u32_t d,
//                            u32_t chunk, float inv_tau, u32_t round_ops)
//     grid (ceil(rows / SH_ROWS), chunks); block: a multiple of 32, at most 512, with
//     d <= SH_COLS * blockDim.x.
//     Block (g, c) takes rows [4g, 4g + 4) and vocabulary rows [c chunk, (c + 1) chunk) (chunk a
//     multiple of SH_TILE). Row groups vary fastest, so the blocks of one chunk run together and
//     a chunk's rows of E come from DRAM once for every group (the rest from L2).
//     logits: [rows, V] written; scratch: partial [chunks, rows, d], each chunk's sum of
//     exp((z - max_c) / tau) table_j, then stats [chunks, rows, 3] (max_c, the sum of those
//     weights, the first argmax as a float: exact below 2^24); xn: [rows, d]; head, table: [V, d], as stored
//     (f32 or bf16, the two the same). round_ops != 0 (the bf16 compute mode): xn and f32-stored
//     head and table values are rounded to bf16 as the GEMM's operands are; the softmax weights
//     are not (the mixture is of the f32 softmax; no GEMM operand carries them).
//   soft_head_combine(u32_t* ids, float* mix, const float* scratch, u32_t chunks, u32_t rows,
//                     u32_t d, float inv_tau)
//     grid (rows); any block (a multiple of 32); chunks <= SH_MAX_CHUNKS. ids: [rows] the lowest
//     index of each row's maximum (a later chunk wins only if larger); mix: [rows, d].
//
// Registers: each thread holds SH_ROWS x SH_COLS partial sums (32 floats) and SH_ROWS dot products
// (58 registers in all at sm_90, no spills: tests/tests/nvrtc_compile.rs).

#define SH_ROWS 4
#define SH_COLS 8
#define SH_TILE 32
#define SH_MAX_CHUNKS 1024

static __device__ __forceinline__ float sh_operand(float x, u32_t round_ops) {
    return round_ops ? bf16_to_f32(f32_to_bf16(x)) : x;
}

// e^x, exactly 0 where it underflows (a tile whose terms all do adds nothing and is skipped).
static __device__ __forceinline__ float sh_exp(float x) { return x < -87.3f ? 0.0f : expf(x); }

template <typename W>
static __device__ __forceinline__ void soft_head_chunks_body(float* logits, float* partial,
                                                             const float* xn, const W* head, const W* table,
                                                             u32_t rows, u32_t V, u32_t d, u32_t chunk,
                                                             float inv_tau, u32_t round_ops) {
    __shared__ float tile[SH_ROWS][SH_TILE];  // a tile's logits, then their exps
    __shared__ float run_max[SH_ROWS], run_sum[SH_ROWS], rescale[SH_ROWS];
    __shared__ u32_t run_arg[SH_ROWS];
    __shared__ u32_t row_live[SH_ROWS];  // some exp of the row's tile is not 0 (one writer each)
    const u32_t r0 = blockIdx.x * SH_ROWS, nr = min((u32_t)SH_ROWS, rows - r0);
    const u32_t c = blockIdx.y, j_begin = c * chunk, j_end = min(V, j_begin + chunk);
    const u32_t lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE, warps = blockDim.x / WARP_SIZE;
    float* stats = partial + (idx_t)gridDim.y * rows * d;
    float acc[SH_ROWS][SH_COLS];
    for (int r = 0; r < SH_ROWS; r++)
        for (int k = 0; k < SH_COLS; k++) acc[r][k] = 0.0f;
    if (threadIdx.x < SH_ROWS) {
        run_max[threadIdx.x] = -SOFTCOT_INF;
        run_sum[threadIdx.x] = 0.0f;
        run_arg[threadIdx.x] = j_begin;
        row_live[threadIdx.x] = 0;
        rescale[threadIdx.x] = 1.0f;  // rows past the call's stay 1
    }
    __syncthreads();
    for (u32_t j0 = j_begin; j0 < j_end; j0 += SH_TILE) {
        const u32_t nt = min((u32_t)SH_TILE, j_end - j0);
        // 1. The tile's logits: a warp per vocabulary row, its lanes along d.
        for (u32_t t = warp; t < nt; t += warps) {
            const idx_t hrow = (idx_t)(j0 + t) * d;
            float dot[SH_ROWS];
            for (int r = 0; r < SH_ROWS; r++) dot[r] = 0.0f;
            for (u32_t i = lane; i < d; i += WARP_SIZE) {
                const float h = sh_operand(load_f32(head, hrow + i), round_ops);
                for (int r = 0; r < SH_ROWS; r++)
                    if ((u32_t)r < nr) dot[r] += sh_operand(xn[(idx_t)(r0 + r) * d + i], round_ops) * h;
            }
            for (int r = 0; r < SH_ROWS; r++) {
                if ((u32_t)r < nr) {  // nr is the same in every lane: the shuffles stay converged
                    const float z = warp_reduce_sum(dot[r]);
                    if (lane == 0) {
                        tile[r][t] = z;
                        logits[(idx_t)(r0 + r) * V + j0 + t] = z;
                    }
                }
            }
        }
        __syncthreads();
        // 2. Per row (a thread each): the running maximum and its first index, the rescale of what
        // was summed against the old maximum, and the tile's exps against the new one.
        if (threadIdx.x < nr) {
            const u32_t r = threadIdx.x;
            float bm = -SOFTCOT_INF;
            u32_t ba = 0;
            for (u32_t t = 0; t < nt; t++)
                if (tile[r][t] > bm) {  // strict: the first index of a tie; NaNs never win
                    bm = tile[r][t];
                    ba = j0 + t;
                }
            float m = run_max[r], f = 1.0f;
            if (bm > m) {
                f = m == -SOFTCOT_INF ? 0.0f : sh_exp((m - bm) * inv_tau);
                run_sum[r] *= f;
                run_max[r] = m = bm;
                run_arg[r] = ba;
            }
            rescale[r] = f;
            float s = 0.0f;
            for (u32_t t = 0; t < nt; t++) {
                const float e = m == -SOFTCOT_INF ? 0.0f : sh_exp((tile[r][t] - m) * inv_tau);
                tile[r][t] = e;
                s += e;
            }
            run_sum[r] += s;
            row_live[r] = s > 0.0f;
        }
        __syncthreads();
        // 3. The mixture: each thread its columns, the tile's rows of table (L1/L2 when tied).
        // A tile that adds nothing (all exps underflow: fuzzy thinking, far from the argmax) is
        // skipped; the maximum grew only where its own exp, 1, is in it, so no rescale is lost.
        u32_t live = 0;
        for (int r = 0; r < SH_ROWS; r++) live |= row_live[r];
        if (live) {
            for (int r = 0; r < SH_ROWS; r++)
                for (int k = 0; k < SH_COLS; k++) acc[r][k] *= rescale[r];
            for (u32_t t = 0; t < nt; t++) {
                float w[SH_ROWS];
                for (int r = 0; r < SH_ROWS; r++) w[r] = tile[r][t];
                for (int k = 0; k < SH_COLS; k++) {
                    const u32_t col = threadIdx.x + k * blockDim.x;
                    if (col < d) {
                        const float ev = sh_operand(load_f32(table, (idx_t)(j0 + t) * d + col), round_ops);
                        for (int r = 0; r < SH_ROWS; r++) acc[r][k] += w[r] * ev;
                    }
                }
            }
        }
        __syncthreads();  // tile, rescale and row_live are free again
    }
    for (int k = 0; k < SH_COLS; k++) {
        const u32_t col = threadIdx.x + k * blockDim.x;
        for (int r = 0; r < SH_ROWS; r++)
            if (col < d && (u32_t)r < nr) partial[((idx_t)c * rows + r0 + r) * d + col] = acc[r][k];
    }
    if (threadIdx.x < nr) {
        const idx_t s = ((idx_t)c * rows + r0 + threadIdx.x) * 3;
        stats[s] = run_max[threadIdx.x];
        stats[s + 1] = run_sum[threadIdx.x];
        stats[s + 2] = (float)run_arg[threadIdx.x];
    }
}

// At most 512 threads (d = 4096), so 128 registers a thread: the launch bounds tell the compiler.
extern "C" __launch_bounds__(512) __global__ void soft_head_chunks(float* logits, float* scratch, const float* xn,
                                                                    const float* head, const float* table,
                                                                    u32_t rows, u32_t V, u32_t d, u32_t chunk,
                                                                    float inv_tau, u32_t round_ops) {
    soft_head_chunks_body(logits, scratch, xn, head, table, rows, V, d, chunk, inv_tau, round_ops);
}
extern "C" __launch_bounds__(512) __global__ void soft_head_chunks_bf16(float* logits, float* scratch,
                                                                         const float* xn, const bf16_t* head,
                                                                         const bf16_t* table, u32_t rows, u32_t V,
                                                                         u32_t d, u32_t chunk, float inv_tau,
                                                                         u32_t round_ops) {
    soft_head_chunks_body(logits, scratch, xn, head, table, rows, V, d, chunk, inv_tau, round_ops);
}

// Row r's shadow id and mixture from the chunks' partials, chunks in order (the result does not
// depend on how many blocks ran them).
extern "C" __global__ void soft_head_combine(u32_t* ids, float* mix, const float* partial, u32_t chunks,
                                             u32_t rows, u32_t d, float inv_tau) {
    const float* stats = partial + (idx_t)chunks * rows * d;
    __shared__ float weight[SH_MAX_CHUNKS];  // exp((max_c - max) / tau) / total
    __shared__ float scratch[32];
    const u32_t r = blockIdx.x;
    // The row's maximum and its first index, by every thread (chunks is small).
    float big = -SOFTCOT_INF;
    u32_t arg = 0;
    for (u32_t c = 0; c < chunks; c++) {
        const float m = stats[((idx_t)c * rows + r) * 3];
        if (m > big) {
            big = m;
            arg = (u32_t)stats[((idx_t)c * rows + r) * 3 + 2];
        }
    }
    float part = 0.0f;
    for (u32_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        const float m = stats[((idx_t)c * rows + r) * 3];
        const float w = m == -SOFTCOT_INF ? 0.0f : sh_exp((m - big) * inv_tau);
        weight[c] = w;
        part += w * stats[((idx_t)c * rows + r) * 3 + 1];
    }
    const float inv_total = 1.0f / block_reduce_sum(part, scratch);  // its barrier publishes weight
    if (threadIdx.x == 0) ids[r] = arg;
    for (u32_t col = threadIdx.x; col < d; col += blockDim.x) {
        float s = 0.0f;
        for (u32_t c = 0; c < chunks; c++)
            if (weight[c] != 0.0f) s += weight[c] * partial[((idx_t)c * rows + r) * d + col];
        mix[(idx_t)r * d + col] = s * inv_total;
    }
}
