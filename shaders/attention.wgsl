// KV-cache writes and causal GQA attention over the cache.
//
// The cache is [slots, Hkv, t_max, hd], worked on as lanes of t_max positions, one per (slot, kv
// head): lane = slot * Hkv + kv head. A cache larger than one storage binding is processed a tile at
// a time: lanes l0 .. l1, positions p0 .. p1 (whole lanes, p0 = 0 and p1 = t_max, where a lane fits
// a binding; else a range of positions of one lane). The bound window starts at position p0 of lane
// l0, so position p of lane l is at (l - l0) * t_max * hd + (p - p0) * hd. Rows whose lane or
// position lies outside the tile are skipped, so every row is handled by exactly the tiles that
// hold it. Queries, keys' sources and outputs are tiles of tokens by heads (h0 .. h0 + hw of every
// token, all heads unless a token's heads exceed a binding). Offsets are relative to the bound
// windows; slots and start are bound whole and indexed by the global batch row.

// ---- kv_write: cache[slots[b], h, start[b] + i, :] = x[b, i, h, :] -------------------------------
struct KvParams {
    n: u32,      // elements of x in this dispatch: tokens * hw * hd
    tok0: u32,   // global index (b * t + i) of the first token of this dispatch
    t: u32,
    hkv: u32,
    h0: u32,     // first kv head of the x tile
    hw: u32,     // kv heads in the x tile
    hd: u32,
    t_max: u32,
    l0: u32,
    l1: u32,
    p0: u32,
    p1: u32,
    c_off: u32,  // lane l0, position p0 in the cache window
    x_off: u32,  // token tok0, head h0 in the x window
}
@group(0) @binding(0) var<uniform> kv_p: KvParams;
@group(0) @binding(1) var<storage, read_write> kv_cache: array<f32>; // cache: lanes l0 .. l1, positions p0 .. p1 window
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
    let hh = (e / kv_p.hd) % kv_p.hw;
    let local = e / (kv_p.hd * kv_p.hw);
    let tok = kv_p.tok0 + local;
    let b = tok / kv_p.t;
    let lane = kv_slots[b] * kv_p.hkv + kv_p.h0 + hh;
    let pos = kv_start[b] + tok % kv_p.t;
    if (lane < kv_p.l0 || lane >= kv_p.l1 || pos < kv_p.p0 || pos >= kv_p.p1) {
        return;
    }
    let c = kv_p.c_off + ((lane - kv_p.l0) * kv_p.t_max + pos - kv_p.p0) * kv_p.hd + dd;
    kv_cache[c] = kv_x[kv_p.x_off + (local * kv_p.hkv + hh) * kv_p.hd + dd];
}

// ---- attention: one workgroup of 64 threads per query (b, i, head) ------------------------------
// Keys are visited in blocks of 64 (one per thread) with an online softmax: the running max m and
// sum are rescaled by exp(m_old - m_new) when a block raises the max (as flash attention does), so
// no scores buffer exists. Thread l accumulates output dimensions l, l + 64, ... (hd <= 256).
// A query whose keys 0 .. len span several position tiles of its lane carries its state between
// them: a tile with p0 > 0 resumes from (m, sum) in `state` and the unnormalised output in `out`; a
// tile with p1 < len leaves them there; the tile holding key len - 1 normalises.
struct AttnParams {
    tok0: u32,   // global index (b * t + i) of the first token of this dispatch
    t: u32,
    heads: u32,
    h0: u32,     // first head of the query tile
    hw: u32,     // heads in the query tile
    hkv: u32,
    hd: u32,
    t_max: u32,
    scale: f32,
    l0: u32,
    l1: u32,
    p0: u32,
    p1: u32,
    k_off: u32,  // lane l0, position p0 in the k and v windows
    v_off: u32,
    q_off: u32,  // token tok0, head h0 in the q and out windows
    o_off: u32,
    s_off: u32,  // token tok0, head h0 in the state window
    l_off: u32,  // element l_lo of lse in its window
    l_lo: u32,
    has_lse: u32,
    groups: u32, // tokens * hw
}
@group(0) @binding(0) var<uniform> P: AttnParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;   // out: [tokens, H, hd] window
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;   // lse: [B, H, T] window (a dummy when has_lse = 0)
@group(0) @binding(3) var<storage, read> q: array<f32>;           // q: [tokens, H, hd] window
@group(0) @binding(4) var<storage, read> k: array<f32>;           // k: lanes l0 .. l1, positions p0 .. p1 window
@group(0) @binding(5) var<storage, read> v: array<f32>;           // v: the same window of the v cache
@group(0) @binding(6) var<storage, read> slots: array<u32>;       // slots: [B]
@group(0) @binding(7) var<storage, read> start: array<u32>;       // start: [B]
@group(0) @binding(8) var<storage, read_write> state: array<f32>; // state: [tokens, H, 2] window of (m, sum) (a dummy unless lanes are split)

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
    let hh = g % P.hw;
    let head = P.h0 + hh;
    let local = g / P.hw;
    let tok = P.tok0 + local;
    let b = tok / P.t;
    let i = tok % P.t;
    let lane = slots[b] * P.hkv + head / (P.heads / P.hkv);
    let len = start[b] + i + 1u;
    if (lane < P.l0 || lane >= P.l1 || len <= P.p0) {
        return;
    }
    let end = min(P.p1, len);
    let kb = P.k_off + (lane - P.l0) * P.t_max * P.hd;
    let vb = P.v_off + (lane - P.l0) * P.t_max * P.hd;
    let qb = P.q_off + (local * P.heads + hh) * P.hd;
    let ob = P.o_off + (local * P.heads + hh) * P.hd;
    let sb = P.s_off + (local * P.heads + hh) * 2u;
    for (var e = lid; e < P.hd; e += 64u) {
        qs[e] = q[qb + e];
    }
    workgroupBarrier();

    var m = NEG_BIG;
    var sum = 0.0;
    var acc = vec4<f32>(0.0);
    if (P.p0 > 0u) {
        m = state[sb];
        sum = state[sb + 1u];
        for (var u = 0u; u < 4u; u++) {
            let e = lid + 64u * u;
            if (e < P.hd) {
                acc[u] = out[ob + e];
            }
        }
    }
    for (var j0 = P.p0; j0 < end; j0 += 64u) {
        let j = j0 + lid;
        var s = NEG_BIG;
        if (j < end) {
            var dot = 0.0;
            for (var e = 0u; e < P.hd; e++) {
                dot += qs[e] * k[kb + (j - P.p0) * P.hd + e];
            }
            s = dot * P.scale;
        }
        let m_new = max(m, block_reduce(lid, s, true));
        let p = exp(s - m_new);
        ps[lid] = p;
        let c = exp(m - m_new);
        sum = sum * c + block_reduce(lid, p, false);
        acc = acc * c;
        let nj = min(64u, end - j0);
        for (var jj = 0u; jj < nj; jj++) {
            let row = vb + (j0 + jj - P.p0) * P.hd;
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
    // The last tile of this query's keys normalises; an earlier one leaves its running state.
    let last = end == len;
    let inv = select(1.0, 1.0 / sum, last);
    for (var u = 0u; u < 4u; u++) {
        let e = lid + 64u * u;
        if (e < P.hd) {
            out[ob + e] = acc[u] * inv;
        }
    }
    if (lid == 0u && !last) {
        state[sb] = m;
        state[sb + 1u] = sum;
    }
    if (P.has_lse != 0u && lid == 0u && last) {
        lse[P.l_off + (b * P.heads + head) * P.t + i - P.l_lo] = m + log(sum);
    }
}
