// Rows over the vocabulary, one workgroup of 256 threads per row: softmax at a temperature, the
// log-probability of a target, argmax (lowest index on ties) and categorical sampling by inverse
// CDF with Philox uniforms (this file is compiled after philox.wgsl).
//
// A dispatch covers rows r0 .. r0 + groups; logits and outputs are bound as windows starting at row
// r0 (offsets relative to them), id buffers are bound whole and indexed by the global row.
//
// A row larger than one storage binding is bound a piece (columns c0 .. c0 + cols) at a time, one
// row per dispatch: `row_stats` folds each piece, in order, into the row's running state (max,
// sum of exps at that max, first argmax, the target's logit), then `argmax_finish` or
// `logprob_finish` write the result, `softmax_apply` writes each piece of p, or `sample_pick` walks
// the pieces again for the inverse CDF.

struct RowParams {
    groups: u32, // rows in this dispatch
    r0: u32,
    v: u32,
    inv_tau: f32,
    z_off: u32,  // row r0 of the logits window
    o_off: u32,  // row r0 of the output window (p, or out of logprob_gather)
    seed_lo: u32,
    seed_hi: u32,
    c0: u32,     // first column of a piece of a split row (0 for whole rows)
    cols: u32,   // columns of the piece (v for whole rows)
    has_target: u32, // row_stats: keep the logit of targets[r0] (logprob_gather)
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

// The lowest index of the maximum of z[zb .. zb + n] (every thread gets it). Each thread scans its
// strided elements in increasing order, keeping the first maximum; the tree keeps the lower index on
// ties.
fn first_max(lid: u32, zb: u32, n: u32) -> u32 {
    var best = -3.0e38;
    var best_i = 0xffffffffu;
    for (var e = lid; e < n; e += 256u) {
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
    let r = red_i[0];
    workgroupBarrier();
    return r;
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
    let best = first_max(lid, zb, P.v);
    if (lid == 0u) {
        am_ids[P.r0 + row] = best;
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
    let r = P.r0 + row;
    let u = sample_uniform(vec2<u32>(P.seed_lo, P.seed_hi), sa_streams[r], sa_steps[r]);
    let found = pick(lid, zb, P.v, m, 0.0, u, 0.0);
    if (lid == 0u) {
        // Without a pick (rounding left the target above every running mass), the last index
        // with positive mass.
        sa_ids[r] = select(found.last, found.pick, found.pick != 0xffffffffu);
    }
}

struct Pick {
    pick: u32,   // the first index whose running mass exceeds the target, or 0xffffffff
    last: u32,   // the highest index with positive mass (0 if none)
    mass: f32,   // the mass of z[zb .. zb + n]
}

// The inverse CDF over z[zb .. zb + n] at the mass `u * total` when total > 0, else
// `u * (base + the mass of this range)` (a whole row: its mass is the total); `base` is the mass
// before this range. Thread l owns the contiguous chunk [l * len, (l + 1) * len); an exclusive scan
// of the chunk sums gives each chunk's starting mass (every thread gets the result).
fn pick(lid: u32, zb: u32, n: u32, m: f32, base: f32, u: f32, total: f32) -> Pick {
    let len = (n + 255u) / 256u;
    let e0 = min(lid * len, n);
    let e1 = min(e0 + len, n);
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
        red[0] = acc;
        red[1] = u * select(base + acc, total, total > 0.0);
    }
    workgroupBarrier();
    let mass = red[0];
    let target_mass = red[1];
    var found = 0xffffffffu;
    var acc = base + chunk_start[lid];
    for (var e = e0; e < e1; e++) {
        acc += exp((sm_z[zb + e] - m) * P.inv_tau);
        if (acc > target_mass) {
            found = e;
            break;
        }
    }
    workgroupBarrier();
    // Lowest pick over threads, and highest index with mass.
    red_i[lid] = found;
    last_i[lid] = last_pos;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (lid < st) {
            red_i[lid] = min(red_i[lid], red_i[lid + st]);
            last_i[lid] = max(last_i[lid], last_i[lid + st]);
        }
        workgroupBarrier();
    }
    let out = Pick(red_i[0], last_i[0], mass);
    workgroupBarrier();
    return out;
}

// ---- split rows: one row per dispatch, a piece of it at a time ----------------------------------
// state: [8] per row, of which (m, sum, argmax, target logit, mass before the piece, pick, last);
// indices as exact f32 (V < 2^24).
@group(0) @binding(5) var<storage, read_write> st: array<f32>;

// Folds piece c0 .. c0 + cols of row r0 into the state (the first piece starts it). With
// has_target = 1 (logprob_gather) it also keeps the target's logit (lp_targets bound).

@compute @workgroup_size(256)
fn row_stats(@builtin(local_invocation_index) lid: u32) {
    let zb = P.z_off;
    let ip = first_max(lid, zb, P.cols);
    let mp = sm_z[zb + ip];
    var s = 0.0;
    for (var e = lid; e < P.cols; e += 256u) {
        s += exp((sm_z[zb + e] - mp) * P.inv_tau);
    }
    let sp = reduce_sum(lid, s);
    if (lid != 0u) {
        return;
    }
    if (P.c0 == 0u) {
        st[0] = mp;
        st[1] = sp;
        st[2] = f32(ip);
        st[4] = 0.0;
        st[5] = -1.0;
        st[6] = 0.0;
    } else {
        let m0 = st[0];
        let m = max(m0, mp);
        st[1] = st[1] * exp((m0 - m) * P.inv_tau) + sp * exp((mp - m) * P.inv_tau);
        if (mp > m0) {
            st[0] = mp;
            st[2] = f32(P.c0 + ip);
        }
    }
    if (P.has_target != 0u) {
        let t = lp_targets[P.r0];
        if (t >= P.c0 && t < P.c0 + P.cols) {
            st[3] = sm_z[zb + t - P.c0];
        }
    }
}

@compute @workgroup_size(1)
fn argmax_finish() {
    am_ids[P.r0] = u32(st[2]);
}

@compute @workgroup_size(1)
fn logprob_finish() {
    lp_out[P.o_off] = st[3] - st[0] - log(st[1]);
}

// p over piece c0 .. c0 + cols of row r0 from the finished state.
@compute @workgroup_size(256)
fn softmax_apply(@builtin(local_invocation_index) lid: u32) {
    let inv = 1.0 / st[1];
    for (var e = lid; e < P.cols; e += 256u) {
        sm_p[P.o_off + e] = exp((sm_z[P.z_off + e] - st[0]) * P.inv_tau) * inv;
    }
}

// The inverse CDF over piece c0 .. c0 + cols of row r0, pieces in order: the first piece whose
// running mass passes the target picks; the last piece writes the id.
@compute @workgroup_size(256)
fn sample_pick(@builtin(local_invocation_index) lid: u32) {
    let r = P.r0;
    let u = sample_uniform(vec2<u32>(P.seed_lo, P.seed_hi), sa_streams[r], sa_steps[r]);
    let found = pick(lid, P.z_off, P.cols, st[0], st[4], u, st[1]);
    if (lid != 0u) {
        return;
    }
    if (st[5] < 0.0) {
        if (found.pick != 0xffffffffu) {
            st[5] = f32(P.c0 + found.pick);
        } else {
            st[4] = st[4] + found.mass;
        }
    }
    if (found.mass > 0.0) {
        st[6] = f32(P.c0 + found.last);
    }
    if (P.c0 + P.cols == P.v) {
        sa_ids[r] = u32(select(st[6], st[5], st[5] >= 0.0));
    }
}
