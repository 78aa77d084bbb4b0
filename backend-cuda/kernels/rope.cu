#include "common.cuh"
// Rotary embedding, half-split layout (HF's rotate_half), in place. One thread per (token, head,
// pair); the angle pos * inv_freq[j] in float32 as HF computes it.

// For token (b, i) at position start[b] + i and pair j of each head: rotates (x[j], x[j + hd/2])
// by sign * angle, scaled by `scaling` (sign 1 forward, -1 backward: the transpose).
// x: [B, T, heads, hd]; start: [B]; inv_freq: [hd / 2]
extern "C" __global__ void rope_rotate(float* x, const u32_t* start, const float* inv_freq, u32_t T, u32_t heads,
                                       u32_t hd, float scaling, float sign, u32_t n_pairs) {
    const u32_t half = hd / 2;
    GRID_STRIDE(p, n_pairs) {
        const u32_t j = (u32_t)(p % half);
        const idx_t head = p / half;  // (token, head) index
        const idx_t tok = head / heads;
        const u32_t b = (u32_t)(tok / T), i = (u32_t)(tok % T);
        const float a = (float)(start[b] + i) * inv_freq[j];
        const float c = cosf(a) * scaling, s = sign * sinf(a) * scaling;
        float* h = x + head * hd;
        const float x1 = h[j], x2 = h[j + half];
        h[j] = x1 * c - x2 * s;
        h[j + half] = x2 * c + x1 * s;
    }
}
