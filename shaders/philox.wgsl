// Philox4x32-10 and its transforms to uniforms and normals: a verbatim port of
// core/src/philox.rs, which every backend reproduces bit for bit.
//
// Bit-identity rules kept here:
// - the same operations in the same order, on f32 with round-to-nearest (WGSL's `+ - *` on f32
//   are correctly rounded where the driver does not contract them);
// - exact constants: hex float literals, and the Taylor coefficients as f32 bit patterns (the
//   values the CPU computes in f32: `1.0 / n as f32`, `sign(n) / fact(n)` with f32 factorials); the
//   unit test `philox_constants_match_the_core` in backend-wgpu recomputes and checks all of them;
// - no fused multiply-add: SPIR-V lets a driver fuse `a * b + c` unless the result is marked
//   NoContraction, which naga does not emit. Every product that feeds an addition is therefore
//   multiplied by `PHILOX_ONE`, a 1.0 that the kernel loads from its uniform parameters: a driver
//   may still fuse `(a * b) * one + c`, but `fma(p, 1.0, c)` rounds exactly like `p + c`, and it
//   cannot see that `one` is 1 to remove the multiplication that rounds `a * b`.
//
// This file has no entry point: it is prepended to the kernels that draw random numbers.

// 1.0 from the kernel's uniform parameters (see above); set by the entry point before any use.
var<private> PHILOX_ONE: f32;

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const TAG_NOISE: u32 = 1u;
const TAG_SAMPLE: u32 = 2u;

// 2^-24 and 2^-22 (exact), sqrt(2), ln(2), pi/2: the CPU's f32 constants as hex float literals.
const TWO_M24: f32 = 0x1p-24f;
const TWO_M22: f32 = 0x1p-22f;
const SQRT_2: f32 = 0x1.6a09e6p+0f;
const LN_2: f32 = 0x1.62e430p-1f;
const FRAC_PI_2: f32 = 0x1.921fb6p+0f;

// ln(1 + t) Taylor coefficients (-1)^(n+1) / n for n = 1..20 (index n - 1), f32 as the CPU rounds them.
const LN_COEF = array<u32, 20>(
    0x3f800000u, 0xbf000000u, 0x3eaaaaabu, 0xbe800000u, 0x3e4ccccdu, 0xbe2aaaabu, 0x3e124925u,
    0xbe000000u, 0x3de38e39u, 0xbdcccccdu, 0x3dba2e8cu, 0xbdaaaaabu, 0x3d9d89d9u, 0xbd924925u,
    0x3d888889u, 0xbd800000u, 0x3d70f0f1u, 0xbd638e39u, 0x3d579436u, 0xbd4ccccdu);
// sin: (-1)^n / (2n + 1)!, cos: (-1)^n / (2n)!, for n = 1..8 (index n - 1).
const SIN_COEF = array<u32, 8>(
    0xbe2aaaabu, 0x3c088889u, 0xb9500d01u, 0x3638ef1du, 0xb2d7322bu, 0x2f309231u, 0xab573fa0u, 0x274a963cu);
const COS_COEF = array<u32, 8>(
    0xbf000000u, 0x3d2aaaabu, 0xbab60b61u, 0x37d00d01u, 0xb493f27eu, 0x310f76c7u, 0xad49cba6u, 0x29573fa0u);

// a * b rounded to f32 before any addition consumes it (see the header).
fn mul_r(a: f32, b: f32) -> f32 {
    return (a * b) * PHILOX_ONE;
}

// The 64-bit product of two u32 as (hi, lo), from 16-bit limbs: WGSL has no 64-bit integers.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    // Carries out of bits 16..31: three terms below 2^16 each, so no overflow.
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Uniform in [0, 1) with 24 random bits (exact in f32).
fn uniform_co(w: u32) -> f32 {
    return f32(w >> 8u) * TWO_M24;
}

// Uniform in (0, 1] with 24 random bits (exact in f32).
fn uniform_oc(w: u32) -> f32 {
    return f32((w >> 8u) + 1u) * TWO_M24;
}

// ln(x) for x in (0, 1]: exponent times ln 2 plus a Horner series for the mantissa.
fn det_ln(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var e = i32((bits >> 23u) & 0xffu) - 127;
    var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    if (m > SQRT_2) {
        m = m * 0.5;
        e = e + 1;
    }
    let t = m - 1.0;
    var acc = 0.0;
    for (var n = 20; n >= 1; n--) {
        acc = mul_r(acc, t) + bitcast<f32>(LN_COEF[n - 1]);
    }
    let ln_m = mul_r(acc, t);
    return mul_r(f32(e), LN_2) + ln_m;
}

// sqrt(x) for x in [0, 64): four Newton steps on 1/sqrt from a bit-level seed.
fn det_sqrt(x: f32) -> f32 {
    if (x <= 0.0) {
        return 0.0;
    }
    var y = bitcast<f32>(0x5f3759dfu - (bitcast<u32>(x) >> 1u));
    for (var i = 0; i < 4; i++) {
        y = y * (1.5 - mul_r(0.5 * x * y, y));
    }
    return x * y;
}

// (cos, sin) of 2 pi k / 2^24 for a 24-bit k: quadrant from the top two bits, Taylor series inside.
fn det_cos_sin_turn(k24: u32) -> vec2<f32> {
    let quadrant = (k24 >> 22u) & 3u;
    let frac = f32(k24 & 0x3fffffu) * TWO_M22;
    let th = frac * FRAC_PI_2;
    let t2 = th * th;
    var s = 0.0;
    var c = 0.0;
    for (var n = 8; n >= 1; n--) {
        s = mul_r(s, t2) + bitcast<f32>(SIN_COEF[n - 1]);
        c = mul_r(c, t2) + bitcast<f32>(COS_COEF[n - 1]);
    }
    let sn = (mul_r(s, t2) + 1.0) * th;
    let cs = mul_r(c, t2) + 1.0;
    switch quadrant {
        case 0u: { return vec2<f32>(cs, sn); }
        case 1u: { return vec2<f32>(-sn, cs); }
        case 2u: { return vec2<f32>(-cs, -sn); }
        default: { return vec2<f32>(sn, -cs); }
    }
}

// Two standard normals from two words (Box-Muller).
fn normal_pair(w0: u32, w1: u32) -> vec2<f32> {
    let r = det_sqrt(-2.0 * det_ln(uniform_oc(w0)));
    let cs = det_cos_sin_turn(w1 >> 8u);
    return vec2<f32>(r * cs.x, r * cs.y);
}

// Four standard normals for counter [step, block, stream, TAG_NOISE] under key `seed` (lo, hi).
fn noise4(seed: vec2<u32>, stream: u32, step: u32, block: u32) -> vec4<f32> {
    let w = philox4x32_10(vec4<u32>(step, block, stream, TAG_NOISE), seed);
    return vec4<f32>(normal_pair(w.x, w.y), normal_pair(w.z, w.w));
}

// The uniform in [0, 1) that samples the token of (stream, step).
fn sample_uniform(seed: vec2<u32>, stream: u32, step: u32) -> f32 {
    return uniform_co(philox4x32_10(vec4<u32>(step, 0u, stream, TAG_SAMPLE), seed).x);
}
