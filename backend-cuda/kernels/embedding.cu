#include "common.cuh"
// Embedding gather and its scatter-add backward. Ids were checked against the table on the host.

// out[r, :] = table[ids[r], :], the table stored f32 or bf16.  out: [rows, d]; table: [V, d]; ids: [rows]
template <typename W>
static __device__ __forceinline__ void embedding_body(float* out, const W* table, const u32_t* ids, u32_t rows,
                                                      u32_t d) {
    GRID_STRIDE(i, (idx_t)rows * d) out[i] = load_f32(table, (idx_t)ids[i / d] * d + i % d);
}
extern "C" __global__ void embedding_forward(float* out, const float* table, const u32_t* ids, u32_t rows, u32_t d) {
    embedding_body(out, table, ids, rows, d);
}
extern "C" __global__ void embedding_forward_bf16(float* out, const bf16_t* table, const u32_t* ids, u32_t rows,
                                                  u32_t d) {
    embedding_body(out, table, ids, rows, d);
}

// dtable[ids[r], :] += dout[r, :] (atomics: rows may repeat an id).  dtable: [V, d]; dout: [rows, d]
extern "C" __global__ void embedding_backward(float* dtable, const float* dout, const u32_t* ids, u32_t rows,
                                              u32_t d) {
    GRID_STRIDE(i, (idx_t)rows * d) atomicAdd(&dtable[(idx_t)ids[i / d] * d + i % d], dout[i]);
}
