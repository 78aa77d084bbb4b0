// RMSNorm, one workgroup of 256 threads per row: out = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps).
// The sum of squares is f32 (per-thread partial sums, then a tree): its relative error is about
// log2(256) ulp, well inside the conformance tolerance, where the CPU accumulates in f64.
// w has element type WT: f16 in the variant for weights stored f16 (backend-wgpu/src/kernels.rs).
//
// A row larger than one storage binding is bound a piece (columns c0 .. c0 + cols) at a time, in two
// passes over its pieces: NORM_SUM adds each piece's sum of squares into `sums`, then NORM_APPLY
// writes each piece's output from the finished sum. Offsets point at column c0.
alias WT = f32;

const NORM_WHOLE: u32 = 0u;
const NORM_SUM: u32 = 1u;
const NORM_APPLY: u32 = 2u;

struct NormParams {
    rows: u32,
    d: u32,     // the full row, for the mean
    cols: u32,  // columns in this dispatch (d for NORM_WHOLE)
    ld: u32,    // row stride of out and x
    eps: f32,
    o_off: u32,
    x_off: u32,
    w_off: u32,
    r_off: u32,
    has_rstd: u32,
    mode: u32,  // NORM_WHOLE, NORM_SUM or NORM_APPLY
    first: u32, // NORM_SUM: the row's first piece (starts the sum)
}
@group(0) @binding(0) var<uniform> P: NormParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // out: [rows, ld] window
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>; // rstd: [rows] (a dummy when has_rstd = 0)
@group(0) @binding(3) var<storage, read> x: array<f32>;          // x: [rows, ld] window
@group(0) @binding(4) var<storage, read> w: array<WT>;           // w: [cols] window
@group(0) @binding(5) var<storage, read_write> sums: array<f32>; // sums: [1], a split row's running sum of squares

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.rows) {
        return;
    }
    let xb = P.x_off + row * P.ld;
    var total = 0.0;
    if (P.mode == NORM_APPLY) {
        total = sums[0];
    } else {
        var ss = 0.0;
        for (var e = lid; e < P.cols; e += 256u) {
            let v = x[xb + e];
            ss += v * v;
        }
        partial[lid] = ss;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s >>= 1u) {
            if (lid < s) {
                partial[lid] += partial[lid + s];
            }
            workgroupBarrier();
        }
        total = partial[0];
    }
    if (P.mode == NORM_SUM) {
        if (lid == 0u) {
            sums[0] = select(sums[0], 0.0, P.first != 0u) + total;
        }
        return;
    }
    let r = 1.0 / sqrt(total / f32(P.d) + P.eps);
    let ob = P.o_off + row * P.ld;
    for (var e = lid; e < P.cols; e += 256u) {
        out[ob + e] = f32(w[P.w_off + e]) * (x[xb + e] * r);
    }
    if (P.has_rstd != 0u && lid == 0u) {
        rstd[P.r_off + row] = r;
    }
}
