// Matrix products c = alpha * op(a) @ op(b) + beta * c over element strides.
//
// The host (backend-wgpu/src/gemm.rs) turns every `Gemm` (transposes, batch strides, offsets) into
// strides of op(a)[i, p] and op(b)[p, j] and a row stride of c, and splits problems whose operands
// do not fit one storage binding; offsets are relative to the bound window of each buffer.
//
// - gemm_tiled: 64 x 64 output tiles, 16-deep k slabs in workgroup memory, 4 x 4 outputs per thread;
//   batch along the z of the grid.
// - gemv_t: at most 8 rows of a against b stored [n, k] (the linear layer x W^T in decode): 8 lanes
//   share one output column and read its weight row contiguously.
// - gemv_n: at most 8 rows of a against b stored [k, n] (the soft mixture p @ E): 64 consecutive
//   columns per workgroup, so every read of a row of b is contiguous, and 4 slices of k.
//
// b is the weight operand: its element type WT is f16 in the variant for weights stored f16
// (backend-wgpu/src/kernels.rs); every load widens to f32, and products accumulate in f32.
alias WT = f32;

struct MmParams {
    m: u32,
    n: u32,
    k: u32,
    // op(a)[i, p] = a[a_off + z * sa + i * a_rs + p * a_cs]
    a_rs: u32,
    a_cs: u32,
    // op(b)[p, j] = b[b_off + z * sb + p * b_rs + j * b_cs]
    b_rs: u32,
    b_cs: u32,
    // c[i, j] = c[c_off + z * sc + i * ldc + j]
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    sa: u32,
    sb: u32,
    sc: u32,
    alpha: f32,
    // 0 overwrites c without reading it (it may hold garbage or NaN).
    beta: f32,
    // Workgroups along x of the gemv kernels before folding into a 2D grid.
    groups: u32,
}

@group(0) @binding(0) var<uniform> P: MmParams;
@group(0) @binding(1) var<storage, read_write> c: array<f32>; // c: [batch, m, ldc] window
@group(0) @binding(2) var<storage, read> a: array<f32>;       // a: window holding op(a) of every batch item
@group(0) @binding(3) var<storage, read> b: array<WT>;        // b: window holding op(b) of every batch item

fn store(idx: u32, v: f32) {
    if (P.beta == 0.0) {
        c[idx] = P.alpha * v;
    } else {
        c[idx] = P.alpha * v + P.beta * c[idx];
    }
}

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TK, TM]: a_tile[p * TM + i] = op(a)[i0 + i, p0 + p]
var<workgroup> b_tile: array<f32, 1024>; // [TK, TN]: b_tile[p * TN + j] = op(b)[p0 + p, j0 + j]

@compute @workgroup_size(16, 16)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lxy: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i0 = wid.y * TM;
    let j0 = wid.x * TN;
    let a_base = P.a_off + wid.z * P.sa;
    let b_base = P.b_off + wid.z * P.sb;
    // Thread (tx, ty) owns rows ty + 16 r and columns tx + 16 s of the tile: strided ownership keeps
    // the reads of a_tile and b_tile in a k step conflict-free and broadcast. acc_r holds row r's
    // four columns; named vectors rather than an indexed array keep them in registers.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var p0 = 0u; p0 < P.k; p0 += TK) {
        // Each of the 256 threads loads 4 elements of each tile. Consecutive threads walk the
        // operand's contiguous dimension so that global reads coalesce.
        for (var l = 0u; l < 4u; l++) {
            let e = lid + l * 256u;
            var i: u32;
            var p: u32;
            if (P.a_cs == 1u) {
                i = e / TK;
                p = e % TK;
            } else {
                p = e / TM;
                i = e % TM;
            }
            var va = 0.0;
            if (i0 + i < P.m && p0 + p < P.k) {
                va = a[a_base + (i0 + i) * P.a_rs + (p0 + p) * P.a_cs];
            }
            a_tile[p * TM + i] = va;
            var j: u32;
            if (P.b_cs == 1u) {
                p = e / TN;
                j = e % TN;
            } else {
                j = e / TK;
                p = e % TK;
            }
            var vb = 0.0;
            if (j0 + j < P.n && p0 + p < P.k) {
                vb = f32(b[b_base + (p0 + p) * P.b_rs + (j0 + j) * P.b_cs]);
            }
            b_tile[p * TN + j] = vb;
        }
        workgroupBarrier();
        for (var p = 0u; p < TK; p++) {
            let ar = vec4<f32>(a_tile[p * TM + lxy.y], a_tile[p * TM + lxy.y + 16u],
                               a_tile[p * TM + lxy.y + 32u], a_tile[p * TM + lxy.y + 48u]);
            let bs = vec4<f32>(b_tile[p * TN + lxy.x], b_tile[p * TN + lxy.x + 16u],
                               b_tile[p * TN + lxy.x + 32u], b_tile[p * TN + lxy.x + 48u]);
            acc0 += ar.x * bs;
            acc1 += ar.y * bs;
            acc2 += ar.z * bs;
            acc3 += ar.w * bs;
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let c_base = P.c_off + wid.z * P.sc;
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + lxy.y + 16u * r;
        for (var s = 0u; s < 4u; s++) {
            let j = j0 + lxy.x + 16u * s;
            if (i < P.m && j < P.n) {
                store(c_base + i * P.ldc + j, acc[r][s]);
            }
        }
    }
}

// Partial sums of the gemv kernels: red[r * 256 + lid] for row r < 8.
var<workgroup> red: array<f32, 2048>;

// Offsets of rows 0-3 and 4-7 of a, clamped to the last row: rows past m repeat it (their sums
// are never stored), so the loads need no branch and the four rows form one vector.
fn gemv_rows(first: u32) -> vec4<u32> {
    let last = P.m - 1u;
    return vec4<u32>(min(first, last), min(first + 1u, last), min(first + 2u, last), min(first + 3u, last)) * P.a_rs;
}

fn gemv_a(ai: u32, rows: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(a[ai + rows.x], a[ai + rows.y], a[ai + rows.z], a[ai + rows.w]);
}

// Accumulates op(a)[0..8, p] * op(b)[p, j] for p = p_first, p_first + step, ... into two vectors
// (rows 0-3, 4-7) and leaves them in red[.. + lid].
fn gemv_partial(lid: u32, j: u32, p_first: u32, step: u32) {
    let lo_rows = gemv_rows(0u);
    let hi_rows = gemv_rows(4u);
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    if (j < P.n) {
        for (var p = p_first; p < P.k; p += step) {
            let bv = f32(b[P.b_off + p * P.b_rs + j * P.b_cs]);
            let ai = P.a_off + p * P.a_cs;
            // Uniform branches: a single row (decode at batch 1) loads one value of a, not four.
            if (P.m == 1u) {
                lo.x += a[ai] * bv;
            } else {
                lo += gemv_a(ai, lo_rows) * bv;
                if (P.m > 4u) {
                    hi += gemv_a(ai, hi_rows) * bv;
                }
            }
        }
    }
    red[lid] = lo.x;
    red[256u + lid] = lo.y;
    red[512u + lid] = lo.z;
    red[768u + lid] = lo.w;
    red[1024u + lid] = hi.x;
    red[1280u + lid] = hi.y;
    red[1536u + lid] = hi.z;
    red[1792u + lid] = hi.w;
}

@compute @workgroup_size(256)
fn gemv_t(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.groups) {
        return;
    }
    // 32 columns per workgroup, 8 lanes per column splitting k.
    let col = lid / 8u;
    let lane = lid % 8u;
    let j = g * 32u + col;
    gemv_partial(lid, j, lane, 8u);
    workgroupBarrier();
    if (lane == 0u && j < P.n) {
        for (var r = 0u; r < P.m; r++) {
            var s = 0.0;
            for (var q = 0u; q < 8u; q++) {
                s += red[r * 256u + lid + q];
            }
            store(P.c_off + r * P.ldc + j, s);
        }
    }
}

@compute @workgroup_size(256)
fn gemv_n(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.groups) {
        return;
    }
    // 64 consecutive columns per workgroup, 4 slices of k.
    let col = lid % 64u;
    let slice = lid / 64u;
    let j = g * 64u + col;
    gemv_partial(lid, j, slice, 4u);
    workgroupBarrier();
    if (slice == 0u && j < P.n) {
        for (var r = 0u; r < P.m; r++) {
            let s = red[r * 256u + col] + red[r * 256u + 64u + col] + red[r * 256u + 128u + col]
                + red[r * 256u + 192u + col];
            store(P.c_off + r * P.ldc + j, s);
        }
    }
}
