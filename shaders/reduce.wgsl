// sum_squares: per-workgroup partial sums of x[i]^2 over blocks of 4096 elements; the host adds
// the partials in f64 (backend-wgpu/src/layers.rs).
//
// Why blocks this small: every partial is exact to about 24 roundings of f32 (the square, 15
// sequential adds per thread, 8 levels of the tree), a relative error below 24 * 2^-24 = 1.4e-6
// whatever n is, because the terms are non-negative. Summing E of a 128256 x 3072 model in one
// f32 accumulator would instead lose digits in proportion to n. The partials are n / 4096 floats
// (96k for that model), a small read-back once per generate call.
//
// x is the weight element type (f16 variant: see backend-wgpu/src/kernels.rs); squares are f32.
alias WT = f32;

const BLOCK: u32 = 4096u; // 256 threads x 16 elements

struct SumSqParams {
    n: u32,     // elements in the bound window from x_off
    x_off: u32,
    p_off: u32,
    groups: u32,
}
@group(0) @binding(0) var<uniform> P: SumSqParams;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>; // partial: [ceil(n / BLOCK)]
@group(0) @binding(2) var<storage, read> x: array<WT>;              // x: [n] window

var<workgroup> tree: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.groups) {
        return;
    }
    // Consecutive threads read consecutive elements (coalesced), 16 strides of 256.
    let end = min(P.n, (g + 1u) * BLOCK);
    var ss = 0.0;
    for (var i = g * BLOCK + lid; i < end; i += 256u) {
        let v = f32(x[P.x_off + i]);
        ss += v * v;
    }
    tree[lid] = ss;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            tree[lid] += tree[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partial[P.p_off + g] = tree[0];
    }
}
