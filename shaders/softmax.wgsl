// Rows over the vocabulary, one workgroup of 256 threads per row: softmax at a temperature, the
// log-probability of a target, argmax (lowest index on ties) and categorical sampling by inverse
// CDF with Philox uniforms (this file is compiled after philox.wgsl).
//
// A dispatch covers rows r0 .. r0 + groups; logits and outputs are bound as windows starting at row
// r0 (offsets relative to them), id buffers are bound whole and indexed by the global row.

struct RowParams {
    groups: u32, // rows in this dispatch
    r0: u32,
    v: u32,
    inv_tau: f32,
    z_off: u32,  // row r0 of the logits window
    o_off: u32,  // row r0 of the output window (p, or out of logprob_gather)
    seed_lo: u32,
    seed_hi: u32,
}
@group(0) @binding(0) var<uniform> P: RowParams;

var<workgroup> red: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// The max of z[base .. base + v] (every thread gets it).
fn row_max(lid: u32, z_base: u32) -> f32 {
    var m = -3.0e38;
    for (var e = lid; e < P.v; e += 256u) {
        m = max(m, sm_z[z_base + e]);
    }
    return reduce_max(lid, m);
}

@group(0) @binding(1) var<storage, read_write> sm_p: array<f32>; // p: [rows, V] (softmax)
@group(0) @binding(2) var<storage, read> sm_z: array<f32>;       // logits: [rows, V]

// ---- softmax: p = softmax(z / tau) -----------------------------------------------------------------
@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= P.groups) {
        return;
    }
    let zb = P.z_off + row * P.v;
    let pb = P.o_off + row * P.v;
    let m = row_max(lid, zb);
    var s = 0.0;
    for (var e = lid; e < P.v; e += 256u) {
        let x = exp((sm_z[zb + e] - m) * P.inv_tau);
        sm_p[pb + e] = x;
        s += x;
    }
    let inv = 1.0 / reduce_sum(lid, s);
    for (var e = lid; e < P.v; e += 256u) {
        sm_p[pb + e] *= inv;
    }
}

// ---- logprob_gather: out[r] = z[r, t] - max - ln(sum exp(z - max)) ----------------------------------
@group(0) @binding(1) var<storage, read_write> lp_out: array<f32>; // out: [rows]
@group(0) @binding(3) var<storage, read> lp_targets: array<u32>;   // targets: [rows]

@compute @workgroup_size(256)
fn logprob_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= P.groups) {
        return;
    }
    let zb = P.z_off + row * P.v;
    let m = row_max(lid, zb);
    var s = 0.0;
    for (var e = lid; e < P.v; e += 256u) {
        s += exp(sm_z[zb + e] - m);
    }
    let total = reduce_sum(lid, s);
    if (lid == 0u) {
        lp_out[P.o_off + row] = sm_z[zb + lp_targets[P.r0 + row]] - m - log(total);
    }
}

// ---- argmax: ids[r] = the lowest index of the row's maximum ------------------------------------------
@group(0) @binding(1) var<storage, read_write> am_ids: array<u32>; // ids: [rows]

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= P.groups) {
        return;
    }
    let zb = P.z_off + row * P.v;
    // Each thread scans its strided elements in increasing order, keeping the first maximum.
    var best = -3.0e38;
    var best_i = 0xffffffffu;
    for (var e = lid; e < P.v; e += 256u) {
        let x = sm_z[zb + e];
        if (x > best || best_i == 0xffffffffu) {
            best = x;
            best_i = e;
        }
    }
    red[lid] = best;
    red_i[lid] = best_i;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let o = red[lid + s];
            let oi = red_i[lid + s];
            if (oi != 0xffffffffu && (o > red[lid] || (o == red[lid] && oi < red_i[lid]) || red_i[lid] == 0xffffffffu)) {
                red[lid] = o;
                red_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        am_ids[P.r0 + row] = red_i[0];
    }
}

// ---- sample: inverse CDF of softmax(z / tau) at u = sample_uniform(seed, streams[r], steps[r]) ----------
// Thread l owns the contiguous chunk [l * len, (l + 1) * len) of the row; an exclusive scan of the
// chunk sums gives each chunk's starting mass, and the first index whose running mass exceeds
// u * total wins. If rounding leaves the target above every running mass, the last index with
// positive mass wins (as on the CPU).
@group(0) @binding(1) var<storage, read_write> sa_ids: array<u32>;   // ids: [rows]
@group(0) @binding(3) var<storage, read> sa_streams: array<u32>;     // streams: [rows]
@group(0) @binding(4) var<storage, read> sa_steps: array<u32>;       // steps: [rows]

var<workgroup> chunk_start: array<f32, 256>; // mass before each thread's chunk
var<workgroup> last_i: array<u32, 256>;       // highest index with positive mass, per thread

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg);
    if (row >= P.groups) {
        return;
    }
    let zb = P.z_off + row * P.v;
    let m = row_max(lid, zb);
    let len = (P.v + 255u) / 256u;
    let e0 = min(lid * len, P.v);
    let e1 = min(e0 + len, P.v);
    var s = 0.0;
    var last_pos = 0u;
    for (var e = e0; e < e1; e++) {
        let x = exp((sm_z[zb + e] - m) * P.inv_tau);
        if (x > 0.0) {
            last_pos = e;
        }
        s += x;
    }
    chunk_start[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var acc = 0.0;
        for (var l = 0u; l < 256u; l++) {
            let c = chunk_start[l];
            chunk_start[l] = acc;
            acc += c;
        }
        let r = P.r0 + row;
        red[0] = sample_uniform(vec2<u32>(P.seed_lo, P.seed_hi), sa_streams[r], sa_steps[r]) * acc;
    }
    workgroupBarrier();
    let target_mass = red[0];
    var pick = 0xffffffffu;
    var acc = chunk_start[lid];
    for (var e = e0; e < e1; e++) {
        acc += exp((sm_z[zb + e] - m) * P.inv_tau);
        if (acc > target_mass) {
            pick = e;
            break;
        }
    }
    workgroupBarrier();
    // Lowest pick over threads, and highest index with mass as the fallback.
    red_i[lid] = pick;
    last_i[lid] = last_pos;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (lid < st) {
            red_i[lid] = min(red_i[lid], red_i[lid + st]);
            last_i[lid] = max(last_i[lid], last_i[lid + st]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var id = red_i[0];
        if (id == 0xffffffffu) {
            id = last_i[0];
        }
        sa_ids[P.r0 + row] = id;
    }
}
