// KV-cache writes and causal GQA attention over the cache.
//
// The cache is [slots, Hkv, t_max, hd]. A cache larger than one storage binding is processed a
// window of slots at a time ([lo, hi)); rows whose slot lies outside the bound window are skipped,
// so every row is handled by exactly one pass. Offsets are relative to the bound windows; slots and
// start are bound whole and indexed by the global batch row.

// ---- kv_write: cache[slots[b], h, start[b] + i, :] = x[b, i, h, :] -------------------------------
struct KvParams {
    n: u32,      // elements of x in this dispatch: tokens * hkv * hd
    tok0: u32,   // global index (b * t + i) of the first token of this dispatch
    t: u32,
    hkv: u32,
    hd: u32,
    t_max: u32,
    lo: u32,
    hi: u32,
    c_off: u32,  // offset of slot `lo` in the cache window
    x_off: u32,
}
@group(0) @binding(0) var<uniform> kv_p: KvParams;
@group(0) @binding(1) var<storage, read_write> kv_cache: array<f32>; // cache: [hi - lo, Hkv, t_max, hd] window
@group(0) @binding(2) var<storage, read> kv_x: array<f32>;           // x: [tokens, Hkv, hd] window
@group(0) @binding(3) var<storage, read> kv_slots: array<u32>;       // slots: [B]
@group(0) @binding(4) var<storage, read> kv_start: array<u32>;       // start: [B]

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (e >= kv_p.n) {
        return;
    }
    let dd = e % kv_p.hd;
    let h = (e / kv_p.hd) % kv_p.hkv;
    let tok = kv_p.tok0 + e / (kv_p.hd * kv_p.hkv);
    let b = tok / kv_p.t;
    let slot = kv_slots[b];
    if (slot < kv_p.lo || slot >= kv_p.hi) {
        return;
    }
    let pos = kv_start[b] + tok % kv_p.t;
    let slot_len = kv_p.hkv * kv_p.t_max * kv_p.hd;
    kv_cache[kv_p.c_off + (slot - kv_p.lo) * slot_len + (h * kv_p.t_max + pos) * kv_p.hd + dd] = kv_x[kv_p.x_off + e];
}

// ---- attention: one workgroup of 64 threads per query (b, i, head) ------------------------------
// Keys are visited in blocks of 64 (one per thread) with an online softmax: the running max m and
// sum are rescaled by exp(m_old - m_new) when a block raises the max (as flash attention does), so
// no scores buffer exists. Thread l accumulates output dimensions l, l + 64, ... (hd <= 256).
struct AttnParams {
    tok0: u32,   // global index (b * t + i) of the first token of this dispatch
    t: u32,
    heads: u32,
    hkv: u32,
    hd: u32,
    t_max: u32,
    scale: f32,
    lo: u32,
    hi: u32,
    k_off: u32,  // offset of slot `lo` in the k and v windows
    v_off: u32,
    q_off: u32,
    o_off: u32,
    l_off: u32,  // offset of batch row l_b0 in the lse window
    l_b0: u32,
    has_lse: u32,
    groups: u32, // tokens * heads
}
@group(0) @binding(0) var<uniform> P: AttnParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // out: [tokens, H, hd] window
@group(0) @binding(2) var<storage, read_write> lse: array<f32>; // lse: [B, H, T] window of whole rows (a dummy when has_lse = 0)
@group(0) @binding(3) var<storage, read> q: array<f32>;         // q: [tokens, H, hd] window
@group(0) @binding(4) var<storage, read> k: array<f32>;         // k: [hi - lo, Hkv, t_max, hd] window
@group(0) @binding(5) var<storage, read> v: array<f32>;         // v: [hi - lo, Hkv, t_max, hd] window
@group(0) @binding(6) var<storage, read> slots: array<u32>;     // slots: [B]
@group(0) @binding(7) var<storage, read> start: array<u32>;     // start: [B]

const NEG_BIG: f32 = -1.0e30;

var<workgroup> qs: array<f32, 256>;  // the query row
var<workgroup> ps: array<f32, 64>;   // scores, then probabilities, of the current block of keys
var<workgroup> red: array<f32, 64>;  // reductions

fn block_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.groups) {
        return;
    }
    let head = g % P.heads;
    let local = g / P.heads;
    let tok = P.tok0 + local;
    let b = tok / P.t;
    let i = tok % P.t;
    let slot = slots[b];
    if (slot < P.lo || slot >= P.hi) {
        return;
    }
    let len = start[b] + i + 1u;
    let kv_head = head / (P.heads / P.hkv);
    let slot_len = P.hkv * P.t_max * P.hd;
    let kb = P.k_off + (slot - P.lo) * slot_len + kv_head * P.t_max * P.hd;
    let vb = P.v_off + (slot - P.lo) * slot_len + kv_head * P.t_max * P.hd;
    let qb = P.q_off + (local * P.heads + head) * P.hd;
    for (var e = lid; e < P.hd; e += 64u) {
        qs[e] = q[qb + e];
    }
    workgroupBarrier();

    var m = NEG_BIG;
    var sum = 0.0;
    var acc = vec4<f32>(0.0);
    for (var j0 = 0u; j0 < len; j0 += 64u) {
        let j = j0 + lid;
        var s = NEG_BIG;
        if (j < len) {
            var dot = 0.0;
            for (var e = 0u; e < P.hd; e++) {
                dot += qs[e] * k[kb + j * P.hd + e];
            }
            s = dot * P.scale;
        }
        let m_new = max(m, block_reduce(lid, s, true));
        let p = exp(s - m_new);
        ps[lid] = p;
        let c = exp(m - m_new);
        sum = sum * c + block_reduce(lid, p, false);
        acc = acc * c;
        let nj = min(64u, len - j0);
        for (var jj = 0u; jj < nj; jj++) {
            let row = vb + (j0 + jj) * P.hd;
            let pj = ps[jj];
            for (var u = 0u; u < 4u; u++) {
                let e = lid + 64u * u;
                if (e < P.hd) {
                    acc[u] += pj * v[row + e];
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let ob = P.o_off + (local * P.heads + head) * P.hd;
    let inv = 1.0 / sum;
    for (var u = 0u; u < 4u; u++) {
        let e = lid + 64u * u;
        if (e < P.hd) {
            out[ob + e] = acc[u] * inv;
        }
    }
    if (P.has_lse != 0u && lid == 0u) {
        lse[P.l_off + ((b - P.l_b0) * P.heads + head) * P.t + i] = m + log(sum);
    }
}
