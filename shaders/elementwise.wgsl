// Elementwise ops and row gathers: one thread per element.
//
// Offsets (`*_off`) are relative to the window of each buffer that the host binds (a buffer larger
// than the storage binding limit is bound a window at a time). Grids wider than the adapter allows
// fold into 2D: the linear workgroup index is wid.x + wid.y * nwg.x, and `groups` bounds it.

// Weights read here (the bias, the embedding table) have element type WT: f16 in the variant for
// weights stored f16 (backend-wgpu/src/kernels.rs), widened to f32 on load.
alias WT = f32;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// ---- add: y[i] += x[i] -----------------------------------------------------------------------
struct AddParams {
    n: u32,
    y_off: u32,
    x_off: u32,
}
@group(0) @binding(0) var<uniform> add_p: AddParams;
@group(0) @binding(1) var<storage, read_write> add_y: array<f32>; // y: [n]
@group(0) @binding(2) var<storage, read> add_x: array<f32>;       // x: [n]

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < add_p.n) {
        add_y[add_p.y_off + i] += add_x[add_p.x_off + i];
    }
}

// ---- add_bias: x[r, e] += bias[e] --------------------------------------------------------------
// The dispatch covers columns c0 .. c0 + cols of its rows (all of them unless a row is larger than a
// binding); offsets point at column c0 of the first row and of the bias.
struct BiasParams {
    n: u32, // rows * cols
    cols: u32,
    ld: u32, // row stride of x
    x_off: u32,
    b_off: u32,
}
@group(0) @binding(0) var<uniform> bias_p: BiasParams;
@group(0) @binding(1) var<storage, read_write> bias_x: array<f32>; // x: [rows, ld] window
@group(0) @binding(2) var<storage, read> bias_b: array<WT>;        // bias: [cols] window

@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bias_p.n) {
        let e = i % bias_p.cols;
        bias_x[bias_p.x_off + (i / bias_p.cols) * bias_p.ld + e] += f32(bias_b[bias_p.b_off + e]);
    }
}

// ---- swiglu: out = silu(gate) * up ----------------------------------------------------------------
struct SwigluParams {
    n: u32,
    o_off: u32,
    g_off: u32,
    u_off: u32,
}
@group(0) @binding(0) var<uniform> sw_p: SwigluParams;
@group(0) @binding(1) var<storage, read_write> sw_out: array<f32>; // out: [n]
@group(0) @binding(2) var<storage, read> sw_gate: array<f32>;      // gate: [n]
@group(0) @binding(3) var<storage, read> sw_up: array<f32>;        // up: [n]

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < sw_p.n) {
        let g = sw_gate[sw_p.g_off + i];
        sw_out[sw_p.o_off + i] = g / (1.0 + exp(-g)) * sw_up[sw_p.u_off + i];
    }
}

// ---- gather: dst[r, :] = src[index[r], :] (embedding lookup and gather_rows) --------------------
// The bound window of src holds rows lo .. hi; rows whose index falls outside (u32::MAX = keep, or a
// row of another window) are left alone, so a table larger than one binding takes several passes.
// The dispatch copies columns c0 .. c0 + cols (all of them unless a row is larger than a binding);
// offsets point at column c0.
struct GatherParams {
    n: u32,    // rows * cols
    cols: u32,
    ld: u32,   // row stride of dst and src (d)
    lo: u32,
    hi: u32,
    dst_off: u32,
    src_off: u32, // row `lo`, column c0 in the src window
    idx_off: u32,
}
@group(0) @binding(0) var<uniform> ga_p: GatherParams;
@group(0) @binding(1) var<storage, read_write> ga_dst: array<f32>; // dst: [rows, d] window
@group(0) @binding(2) var<storage, read> ga_src: array<WT>;        // src: [hi - lo, d] window
@group(0) @binding(3) var<storage, read> ga_idx: array<u32>;       // index: [rows]

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= ga_p.n) {
        return;
    }
    let r = i / ga_p.cols;
    let e = i % ga_p.cols;
    let s = ga_idx[ga_p.idx_off + r];
    if (s >= ga_p.lo && s < ga_p.hi) {
        ga_dst[ga_p.dst_off + r * ga_p.ld + e] = f32(ga_src[ga_p.src_off + (s - ga_p.lo) * ga_p.ld + e]);
    }
}
