#include "common.cuh"

// Causal GQA attention over the slot/position KV cache: the cache writes, the forward (an online
// softmax over tiles of 32 keys, flash-attention style, never a [T x T] score matrix) and its
// backward (flash-attention-2 style: P recomputed from q, k and the saved log-sum-exp).
//
// Layouts: q, out, dq, dout: [B, T, H, hd]; k/v caches and their gradients: [S, Hkv, t_max, hd];
// lse: [B, H, T]; x of the cache writes: [B, T, Hkv, hd]; slots, start: [B]. Row b's t new tokens
// sit at positions start[b] .. start[b] + T of cache slot slots[b], and query (b, i) sees keys
// 0 ..= start[b] + i. G = H / Hkv query heads share kv head h / G.
//
// Entry points (NW = blockDim.x / 32 warps; any NW from 1 to 32; ST = hd + 1, the padded row of a
// shared tile, so that 32 lanes reading 32 rows at one column hit 32 banks):
//
//   kv_write(float* cache, const float* x, const u32_t* slots, const u32_t* start,
//            u32_t T, u32_t Hkv, u32_t hd, u32_t t_max)
//     grid (ceil(T * Hkv * hd / blockDim.x), B), any block, no shared memory.
//   kv_read(float* dx, const float* dcache, const u32_t* slots, const u32_t* start,
//           u32_t T, u32_t Hkv, u32_t hd, u32_t t_max)
//     the backward of kv_write (a gather); same grid.
//   attention_forward(float* out, float* lse, const float* q, const float* k_cache,
//                     const float* v_cache, const u32_t* slots, const u32_t* start,
//                     u32_t T, u32_t H, u32_t Hkv, u32_t hd, u32_t t_max, float scale)
//     grid (ceil(T * G / NW), Hkv, B); one warp per query row, the NW rows of a block are
//     consecutive (position, head-of-the-group) pairs, so they share the block's K/V tiles;
//     lse may be null. Shared: (2 * 32 * ST + NW * hd + NW * 32) floats.
//   attention_backward_dq(float* dq, const float* dout, const float* q, const float* k_cache,
//                         const float* v_cache, const float* out, const float* lse,
//                         const u32_t* slots, const u32_t* start,
//                         u32_t T, u32_t H, u32_t Hkv, u32_t hd, u32_t t_max, float scale)
//     writes dq; grid and block as attention_forward. Shared: (2 * 32 * ST + 2 * NW * hd + NW * 32).
//   attention_backward_dkv(float* dk_cache, float* dv_cache, const float* dout, const float* q,
//                          const float* k_cache, const float* v_cache, const float* out,
//                          const float* lse, const u32_t* slots, const u32_t* start,
//                          u32_t T, u32_t H, u32_t Hkv, u32_t hd, u32_t t_max, float scale)
//     accumulates into the cache gradients; grid (ceil(t_max / NW), Hkv, B): one warp per key,
//     the lanes over tiles of 32 query rows. Blocks whose keys lie past start[b] + T exit at once.
//     Shared: (2 * 32 * ST + 64 + 2 * NW * hd + 2 * NW * 32) floats.
//
// The backward is two kernels, each owning what it writes (dq: a query row per warp; dk, dv: a key
// per warp), instead of one pass with atomicAdd into dq or into dk/dv: no atomics, so the
// gradients are deterministic (bit-identical replays of an update), at the price of computing the
// scores twice (2 x 2 dot products per (query, key) pair instead of 2 + 2, cheap beside the
// model's GEMMs). Every cache row a call reads is in one slot, so the dkv blocks of two batch rows
// never write the same key (the Rust side refuses repeated slots, as the CPU backend does).
//
// hd <= ATT_MAX_HD: each lane keeps hd / 32 output columns in registers.

#define ATT_TILE 32
#define ATT_MAX_HD 128
#define ATT_COLS (ATT_MAX_HD / 32)
// "No score": past the row's causal length, or nothing accumulated yet. Every use tests for it, so
// no exp sees -inf - -inf.
#define ATT_NEG_INF (-SOFTCOT_INF)

// a . b over n floats (a and b in shared memory or registers' backing store).
static __device__ __forceinline__ float att_dot(const float* a, const float* b, int n) {
    float s = 0.0f;
    for (int e = 0; e < n; e++) s += a[e] * b[e];
    return s;
}

// Offset of (slot, kv head, position 0) in a cache: [S, Hkv, t_max, hd].
static __device__ __forceinline__ idx_t att_cache_base(u32_t slot, int kvh, u32_t Hkv, u32_t hd, u32_t t_max) {
    return ((idx_t)slot * Hkv + kvh) * t_max * hd;
}

// Index of element e of (b, i, h) in a [B, T, heads, hd] tensor, and of the cache element it maps
// to; grid (ceil(T * heads * hd / blockDim.x), B). Returns 0 when the thread has no element.
static __device__ __forceinline__ int att_kv_index(const u32_t* slots, const u32_t* start, int T, int Hkv,
                                   int hd, int t_max, idx_t* xi, idx_t* ci) {
    idx_t idx = (idx_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (idx_t)T * Hkv * hd) return 0;
    int b = blockIdx.y;
    int e = (int)(idx % hd);
    int h = (int)((idx / hd) % Hkv);
    int i = (int)(idx / ((idx_t)hd * Hkv));
    *xi = (idx_t)b * T * Hkv * hd + idx;
    *ci = att_cache_base(slots[b], h, Hkv, hd, t_max) + (idx_t)(start[b] + i) * hd + e;
    return 1;
}

// cache[slots[b], h, start[b] + i, :] = x[b, i, h, :]
// cache: [S, Hkv, t_max, hd]; x: [B, T, Hkv, hd]; slots, start: [B]
extern "C" __global__ void kv_write(float* cache, const float* x, const u32_t* slots,
                                    const u32_t* start, u32_t T, u32_t Hkv, u32_t hd, u32_t t_max) {
    idx_t xi, ci;
    if (att_kv_index(slots, start, T, Hkv, hd, t_max, &xi, &ci)) cache[ci] = x[xi];
}

// dx[b, i, h, :] = dcache[slots[b], h, start[b] + i, :]
// dx: [B, T, Hkv, hd]; dcache: [S, Hkv, t_max, hd]; slots, start: [B]
extern "C" __global__ void kv_read(float* dx, const float* dcache, const u32_t* slots,
                                   const u32_t* start, u32_t T, u32_t Hkv, u32_t hd, u32_t t_max) {
    idx_t xi, ci;
    if (att_kv_index(slots, start, T, Hkv, hd, t_max, &xi, &ci)) dx[xi] = dcache[ci];
}

// Keys j0 .. j0 + n of one (slot, kv head) into shared tiles of ATT_TILE rows of stride hd + 1.
// ks, vs: [ATT_TILE, hd + 1]; k, v: the caches from (slot, kv head, position 0)
static __device__ __forceinline__ void att_load_kv(float* ks, float* vs, const float* k, const float* v, int j0,
                                   int n, int hd) {
    for (int idx = threadIdx.x; idx < n * hd; idx += blockDim.x) {
        int j = idx / hd, e = idx % hd;
        idx_t src = (idx_t)(j0 + j) * hd + e;
        ks[j * (hd + 1) + e] = k[src];
        vs[j * (hd + 1) + e] = v[src];
    }
}

// The query row a warp of attention_forward / attention_backward_dq owns: the block's rows are
// (position i, head of the group g) pairs, g fastest. Inactive warps (past the last row) keep
// len = 0 and take part in the block's barriers only.
struct AttRow {
    int active;
    int i, head;
    idx_t off;  // of element 0 of (b, i, head) in [B, T, H, hd]
    idx_t lse;  // index of (b, head, i) in [B, H, T]
    int len;        // keys this row sees: start[b] + i + 1
    int block_len;  // keys any row of the block sees
};

static __device__ __forceinline__ AttRow att_row(const u32_t* start, int T, int H, int Hkv, int hd) {
    AttRow r;
    int G = H / Hkv, nw = blockDim.x / 32, b = blockIdx.z;
    int row = blockIdx.x * nw + threadIdx.x / 32;
    int last = min(T * G, (int)(blockIdx.x + 1) * nw) - 1;
    r.active = row < T * G;
    r.i = row / G;
    r.head = blockIdx.y * G + row % G;
    r.off = (((idx_t)b * T + r.i) * H + r.head) * hd;
    r.lse = ((idx_t)b * H + r.head) * T + r.i;
    r.len = r.active ? (int)start[b] + r.i + 1 : 0;
    r.block_len = (int)start[b] + last / G + 1;
    return r;
}

// The score of key j0 + lane against the warp's query row qs (scaled), or ATT_NEG_INF past the row's
// causal length or the tile. qs: [hd]; ks: [ATT_TILE, hd + 1]
static __device__ __forceinline__ float att_score(const float* qs, const float* ks, int j0, int n, int len, int hd,
                                  float scale) {
    int lane = threadIdx.x % 32;
    if (lane >= n || j0 + lane >= len) return ATT_NEG_INF;
    return att_dot(qs, ks + lane * (hd + 1), hd) * scale;
}

// acc[c] (column lane + 32 c) += sum_j w[j] * tile[j, lane + 32 c] over the tile's n rows.
// acc: [ATT_COLS] registers; w: [ATT_TILE]; tile: [ATT_TILE, hd + 1]
static __device__ __forceinline__ void att_accumulate(float* acc, const float* w, const float* tile, int n, int hd) {
    int lane = threadIdx.x % 32;
    for (int j = 0; j < n; j++) {
        float p = w[j];
        for (int c = 0; c < ATT_COLS; c++) {
            int e = lane + 32 * c;
            if (e < hd) acc[c] += p * tile[j * (hd + 1) + e];
        }
    }
}

// A row of hd floats from global memory into shared, one warp (lanes over columns).
static __device__ __forceinline__ void att_warp_copy(float* dst, const float* src, int hd) {
    for (int e = threadIdx.x % 32; e < hd; e += 32) dst[e] = src[e];
}

// out[b, i, h] = softmax_j(q . k_j * scale) @ v over keys j <= start[b] + i (online softmax over
// tiles of 32 keys: running maximum m and sum l, acc rescaled when m grows); lse = m + ln l.
// out, q: [B, T, H, hd]; k_cache, v_cache: [S, Hkv, t_max, hd]; lse: [B, H, T] or null;
// slots, start: [B]
extern "C" __global__ void attention_forward(float* out, float* lse, const float* q,
                                             const float* k_cache, const float* v_cache,
                                             const u32_t* slots, const u32_t* start, u32_t T,
                                             u32_t H, u32_t Hkv, u32_t hd, u32_t t_max, float scale) {
    DYNAMIC_SHARED(float, smem);
    int nw = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* ks = smem;                     // [ATT_TILE, hd + 1]
    float* vs = ks + ATT_TILE * (hd + 1); // [ATT_TILE, hd + 1]
    float* qs = vs + ATT_TILE * (hd + 1); // [NW, hd] each warp's query row
    float* ps = qs + nw * hd;             // [NW, ATT_TILE] each warp's probabilities of a tile
    qs += w * hd;
    ps += w * ATT_TILE;
    AttRow r = att_row(start, T, H, Hkv, hd);
    idx_t base = att_cache_base(slots[blockIdx.z], blockIdx.y, Hkv, hd, t_max);
    if (r.active) att_warp_copy(qs, q + r.off, hd);
    float acc[ATT_COLS];
    for (int c = 0; c < ATT_COLS; c++) acc[c] = 0.0f;
    float m = ATT_NEG_INF, l = 0.0f;
    for (int j0 = 0; j0 < r.block_len; j0 += ATT_TILE) {
        int n = min(ATT_TILE, r.block_len - j0);
        att_load_kv(ks, vs, k_cache + base, v_cache + base, j0, n, hd);
        __syncthreads();
        float s = att_score(qs, ks, j0, n, r.len, hd, scale);
        float m_new = fmaxf(m, warp_reduce_max(s));
        // Nothing accumulated yet (m = -inf): nothing to rescale. A tile with no key for this row
        // leaves m_new = m, c = 1, p = 0.
        float c = m == ATT_NEG_INF ? 0.0f : expf(m - m_new);
        float p = s == ATT_NEG_INF ? 0.0f : expf(s - m_new);
        l = l * c + warp_reduce_sum(p);
        m = m_new;
        ps[lane] = p;
        for (int k = 0; k < ATT_COLS; k++) acc[k] *= c;
        __syncthreads();
        att_accumulate(acc, ps, vs, n, hd);
        __syncthreads();
    }
    if (!r.active) return;
    float inv = 1.0f / l;
    for (int c = 0; c < ATT_COLS; c++) {
        u32_t e = lane + 32 * c;
        if (e < hd) out[r.off + e] = acc[c] * inv;
    }
    if (lse && lane == 0) lse[r.lse] = m + logf(l);
}

// With p_ij = exp(q_i . k_j * scale - lse_i), D_i = dout_i . out_i and
// ds_ij = p_ij (dout_i . v_j - D_i) * scale:
//   dq_i = sum_j ds_ij k_j        (attention_backward_dq, written)
//   dk_j += sum_i ds_ij q_i       (attention_backward_dkv, accumulated)
//   dv_j += sum_i p_ij dout_i     (attention_backward_dkv, accumulated)

// D of one query row: dout . out, by one warp (every lane gets it). dout, out: [hd] in global memory
static __device__ __forceinline__ float att_row_d(const float* dout, const float* out, int hd) {
    float d = 0.0f;
    for (int e = threadIdx.x % 32; e < hd; e += 32) d += dout[e] * out[e];
    return warp_reduce_sum(d);
}

// dq: [B, T, H, hd] written; dout, q, out: [B, T, H, hd]; k_cache, v_cache: [S, Hkv, t_max, hd];
// lse: [B, H, T]; slots, start: [B]
extern "C" __global__ void attention_backward_dq(float* dq, const float* dout, const float* q,
                                                 const float* k_cache, const float* v_cache,
                                                 const float* out, const float* lse,
                                                 const u32_t* slots, const u32_t* start,
                                                 u32_t T, u32_t H, u32_t Hkv, u32_t hd, u32_t t_max,
                                                 float scale) {
    DYNAMIC_SHARED(float, smem);
    int nw = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* ks = smem;                     // [ATT_TILE, hd + 1]
    float* vs = ks + ATT_TILE * (hd + 1); // [ATT_TILE, hd + 1]
    float* qs = vs + ATT_TILE * (hd + 1); // [NW, hd] each warp's query row
    float* gs = qs + nw * hd;             // [NW, hd] each warp's dout row
    float* dss = gs + nw * hd;            // [NW, ATT_TILE] each warp's ds of a tile
    qs += w * hd;
    gs += w * hd;
    dss += w * ATT_TILE;
    AttRow r = att_row(start, T, H, Hkv, hd);
    idx_t base = att_cache_base(slots[blockIdx.z], blockIdx.y, Hkv, hd, t_max);
    float dd = 0.0f, row_lse = 0.0f;
    if (r.active) {
        att_warp_copy(qs, q + r.off, hd);
        att_warp_copy(gs, dout + r.off, hd);
        dd = att_row_d(dout + r.off, out + r.off, hd);
        row_lse = lse[r.lse];
    }
    float acc[ATT_COLS];
    for (int c = 0; c < ATT_COLS; c++) acc[c] = 0.0f;
    for (int j0 = 0; j0 < r.block_len; j0 += ATT_TILE) {
        int n = min(ATT_TILE, r.block_len - j0);
        att_load_kv(ks, vs, k_cache + base, v_cache + base, j0, n, hd);
        __syncthreads();
        float s = att_score(qs, ks, j0, n, r.len, hd, scale);
        float ds = 0.0f;
        if (s != ATT_NEG_INF) {
            float p = expf(s - row_lse);
            ds = p * (att_dot(gs, vs + lane * (hd + 1), hd) - dd) * scale;
        }
        dss[lane] = ds;
        __syncthreads();
        att_accumulate(acc, dss, ks, n, hd);
        __syncthreads();
    }
    if (!r.active) return;
    for (int c = 0; c < ATT_COLS; c++) {
        u32_t e = lane + 32 * c;
        if (e < hd) dq[r.off + e] = acc[c];
    }
}

// dk_cache, dv_cache: [S, Hkv, t_max, hd] accumulated; dout, q, out: [B, T, H, hd];
// k_cache, v_cache: [S, Hkv, t_max, hd]; lse: [B, H, T]; slots, start: [B]
extern "C" __global__ void attention_backward_dkv(float* dk_cache, float* dv_cache,
                                                  const float* dout, const float* q,
                                                  const float* k_cache, const float* v_cache,
                                                  const float* out, const float* lse,
                                                  const u32_t* slots, const u32_t* start,
                                                  u32_t T, u32_t H, u32_t Hkv, u32_t hd, u32_t t_max,
                                                  float scale) {
    DYNAMIC_SHARED(float, smem);
    int nw = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    int G = H / Hkv, b = blockIdx.z, st = (int)start[b];
    int keys = st + T;  // keys 0 .. start + T of the slot get gradient
    int k_first = blockIdx.x * nw;
    if (k_first >= keys) return;  // the whole block: no barrier is skipped by only some threads
    float* qs = smem;                       // [ATT_TILE, hd + 1] a tile of query rows
    float* gs = qs + ATT_TILE * (hd + 1);   // [ATT_TILE, hd + 1] their dout rows
    float* lse_s = gs + ATT_TILE * (hd + 1); // [ATT_TILE] their lse
    float* dd_s = lse_s + ATT_TILE;          // [ATT_TILE] their D
    float* kw = dd_s + ATT_TILE;             // [NW, hd] each warp's key
    float* vw = kw + nw * hd;                // [NW, hd] each warp's value
    float* ps = vw + nw * hd;                // [NW, ATT_TILE] each warp's p of a tile
    float* dss = ps + nw * ATT_TILE;         // [NW, ATT_TILE] each warp's ds of a tile
    kw += w * hd;
    vw += w * hd;
    ps += w * ATT_TILE;
    dss += w * ATT_TILE;
    int kj = k_first + w;
    int key_active = kj < keys;
    idx_t base = att_cache_base(slots[b], blockIdx.y, Hkv, hd, t_max);
    if (key_active) {
        att_warp_copy(kw, k_cache + base + (idx_t)kj * hd, hd);
        att_warp_copy(vw, v_cache + base + (idx_t)kj * hd, hd);
    }
    float dk[ATT_COLS], dv[ATT_COLS];
    for (int c = 0; c < ATT_COLS; c++) dk[c] = dv[c] = 0.0f;
    // Query rows (i, g), g fastest; key k_first is first seen by position i = k_first - start.
    int rows = T * G;
    for (int r0 = max(0, k_first - st) * G; r0 < rows; r0 += ATT_TILE) {
        int n = min(ATT_TILE, rows - r0);
        for (int idx = threadIdx.x; idx < n * (int)hd; idx += blockDim.x) {
            int rr = idx / hd, e = idx % hd, row = r0 + rr;
            idx_t off = (((idx_t)b * T + row / G) * H + blockIdx.y * G + row % G) * hd;
            qs[rr * (hd + 1) + e] = q[off + e];
            gs[rr * (hd + 1) + e] = dout[off + e];
        }
        for (int rr = w; rr < n; rr += nw) {
            int row = r0 + rr, i = row / G, head = blockIdx.y * G + row % G;
            idx_t off = (((idx_t)b * T + i) * H + head) * hd;
            float dd = att_row_d(dout + off, out + off, hd);
            if (lane == 0) {
                dd_s[rr] = dd;
                lse_s[rr] = lse[((idx_t)b * H + head) * T + i];
            }
        }
        __syncthreads();
        // Lane rr: the pair (query row r0 + rr, this warp's key), if the query sees the key.
        float p = 0.0f, ds = 0.0f;
        if (key_active && lane < n && st + (r0 + lane) / G >= kj) {
            const float* qr = qs + lane * (hd + 1);
            const float* gr = gs + lane * (hd + 1);
            p = expf(att_dot(qr, kw, hd) * scale - lse_s[lane]);
            ds = p * (att_dot(gr, vw, hd) - dd_s[lane]) * scale;
        }
        ps[lane] = p;
        dss[lane] = ds;
        __syncthreads();
        att_accumulate(dv, ps, gs, n, hd);
        att_accumulate(dk, dss, qs, n, hd);
        __syncthreads();
    }
    if (!key_active) return;
    for (int c = 0; c < ATT_COLS; c++) {
        u32_t e = lane + 32 * c;
        if (e < hd) {
            dk_cache[base + (idx_t)kj * hd + e] += dk[c];
            dv_cache[base + (idx_t)kj * hd + e] += dv[c];
        }
    }
}
