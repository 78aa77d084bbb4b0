// Philox Gaussian noise, x[r, i] += sigma * noise_at(seed, streams[r], steps[r], i), bit-identical
// to the CPU (this file is compiled after philox.wgsl). One thread per group of four values, the
// four normals of one Philox call.

struct NoiseParams {
    rows: u32,
    r0: u32,     // global row of the first row in this dispatch
    d: u32,
    sigma: f32,
    seed_lo: u32,
    seed_hi: u32,
    x_off: u32,  // row r0, element 4 * blk0 of the x window
    one: f32,    // 1.0, opaque to the compiler (see philox.wgsl)
    blk0: u32,   // first block of 4 in this dispatch (0 unless a row is larger than a binding)
    blocks: u32, // blocks per row in this dispatch
}
@group(0) @binding(0) var<uniform> P: NoiseParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;   // x: [rows, d] window
@group(0) @binding(2) var<storage, read> streams: array<u32>;   // streams: [rows] (whole)
@group(0) @binding(3) var<storage, read> steps: array<u32>;     // steps: [rows] (whole)

@compute @workgroup_size(256)
fn add_noise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    PHILOX_ONE = P.one;
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.rows * P.blocks) {
        return;
    }
    let r = i / P.blocks;
    let blk = P.blk0 + i % P.blocks;
    let g = P.r0 + r;
    let z = noise4(vec2<u32>(P.seed_lo, P.seed_hi), streams[g], steps[g], blk);
    for (var q = 0u; q < 4u; q++) {
        let e = blk * 4u + q;
        if (e < P.d) {
            let idx = P.x_off + r * P.d + e - P.blk0 * 4u;
            x[idx] = x[idx] + mul_r(P.sigma, z[q]);
        }
    }
}
