// Rotary embedding of half-split layout (HF's rotate_half), in place. One thread per (token, pair):
// the angle pos * inv_freq[j] is computed in f32 as HF does, reduced to [-pi, pi] (Cody-Waite, 2 pi
// in three parts) because Vulkan only bounds the error of sin and cos on that range, then rotates
// pair j of every head of the token in the dispatch (all of them unless a token's heads are larger
// than a binding).

struct RopeParams {
    tokens: u32, // tokens in this dispatch
    tok0: u32,   // global index of the first one (b = token / t)
    t: u32,
    heads: u32,  // heads in this dispatch
    hd: u32,
    scaling: f32,
    x_off: u32,  // first head of the dispatch in the first token
    ld: u32,     // row stride of x (all heads of a token)
}
@group(0) @binding(0) var<uniform> P: RopeParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // x: [tokens, ld] window
@group(0) @binding(2) var<storage, read> start: array<u32>;    // start: [B]
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>; // inv_freq: [hd / 2]

// 2 pi = C1 + C2 + C3 with C1, C2 short enough that n * C1 and n * C2 are exact for n < 2^13.
const TWO_PI_C1: f32 = 6.28125;
const TWO_PI_C2: f32 = 1.93500518798828125e-3;
const TWO_PI_C3: f32 = 3.01991598195675e-7;
const INV_TWO_PI: f32 = 0.15915494309189535;

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let half = P.hd / 2u;
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= P.tokens * half) {
        return;
    }
    let tok = i / half;
    let j = i % half;
    let g = P.tok0 + tok;
    let pos = start[g / P.t] + g % P.t;
    let a = f32(pos) * inv_freq[j];
    let n = round(a * INV_TWO_PI);
    let r = ((a - n * TWO_PI_C1) - n * TWO_PI_C2) - n * TWO_PI_C3;
    let c = cos(r) * P.scaling;
    let s = sin(r) * P.scaling;
    let row = P.x_off + tok * P.ld;
    for (var h = 0u; h < P.heads; h++) {
        let i1 = row + h * P.hd + j;
        let x1 = x[i1];
        let x2 = x[i1 + half];
        x[i1] = x1 * c - x2 * s;
        x[i1 + half] = x2 * c + x1 * s;
    }
}
