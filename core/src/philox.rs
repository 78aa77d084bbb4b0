//! Philox4x32-10 (Salmon et al., 2011) and the transforms from its words to uniforms and normals.
//!
//! Every backend must reproduce these numbers bit for bit, so the transforms use only integer ops
//! and correctly rounded float32 `+`, `-`, `*` (no `sqrt`, `ln`, `sin`, division or fused multiply-add,
//! whose rounding differs between CPU libm, WGSL and CUDA). GPU kernels port these functions verbatim.
//!
//! Counters: `[step, block, stream, tag]`; the key is the 64-bit seed. `stream` is the rollout (row)
//! index, `step` the generation step, `block` the index of a group of four values within the step,
//! and `tag` separates the uses ([`TAG_NOISE`], [`TAG_SAMPLE`], [`TAG_MOMENTS`]; the data shuffle
//! uses 3) so they never share a counter.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Counter tag for Gaussian noise of soft/fuzzy thinking inputs.
pub const TAG_NOISE: u32 = 1;
/// Counter tag for uniforms that drive categorical sampling of tokens.
pub const TAG_SAMPLE: u32 = 2;
/// Counter tag for the stochastic rounding of AdamW's bf16 moments (`[step, pair, parameter, 4]`).
pub const TAG_MOMENTS: u32 = 4;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// The raw generator: 10 rounds on a 128-bit counter with a 64-bit key.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_lanes(ctr.map(|c| [c]), key).map(|[w]| w)
}

/// [`philox4x32_10`] on N counters at once, word-major (`ctr[j][lane]`): the lane loops vectorise.
/// Every function below has such a lane form, of which the scalar one is the one-lane case.
#[inline(always)]
fn philox_lanes<const N: usize>(ctr: [[u32; N]; 4], key: [u32; 2]) -> [[u32; N]; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let [c0, c1, c2, c3] = &mut c;
        for (((w0, w1), w2), w3) in c0.iter_mut().zip(c1.iter_mut()).zip(c2.iter_mut()).zip(c3.iter_mut()) {
            let (hi0, lo0) = mulhilo(M0, *w0);
            let (hi1, lo1) = mulhilo(M1, *w2);
            (*w0, *w1, *w2, *w3) = (hi1 ^ *w1 ^ k[0], lo1, hi0 ^ *w3 ^ k[1], lo0);
        }
    }
    c
}

#[inline]
pub fn key_of(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Uniform in [0, 1) with 24 random bits (exact in f32).
#[inline]
pub fn uniform_co(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform in (0, 1] with 24 random bits (exact in f32); safe for a logarithm.
#[inline]
pub fn uniform_oc(w: u32) -> f32 {
    ((w >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Natural logarithm for x in (0, 1] from mul/add only (abs error < 1e-6 over the range used).
#[inline]
pub fn det_ln(x: f32) -> f32 {
    det_ln_lanes([x])[0]
}

#[inline(always)]
fn det_ln_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    let mut e = [0i32; N];
    let mut t = [0f32; N];
    for i in 0..N {
        let bits = x[i].to_bits();
        e[i] = ((bits >> 23) & 0xff) as i32 - 127;
        let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // m in [1, 2)
        if m > core::f32::consts::SQRT_2 {
            m *= 0.5;
            e[i] += 1;
        }
        t[i] = m - 1.0; // t in [-0.2929, 0.4143]
    }
    // ln(1 + t) = t - t^2/2 + t^3/3 - ... (Horner, 20 terms: error < 1e-9 on this range)
    let mut acc = [0f32; N];
    let mut n = 20;
    while n >= 1 {
        let c = if n % 2 == 1 { 1.0 / n as f32 } else { -1.0 / n as f32 };
        for i in 0..N {
            acc[i] = acc[i] * t[i] + c;
        }
        n -= 1;
    }
    core::array::from_fn(|i| e[i] as f32 * core::f32::consts::LN_2 + acc[i] * t[i])
}

/// sqrt(x) for x in [0, 64) from mul/add only: Newton on 1/sqrt from a bit-level seed.
#[inline]
pub fn det_sqrt(x: f32) -> f32 {
    det_sqrt_lanes([x])[0]
}

#[inline(always)]
fn det_sqrt_lanes<const N: usize>(x: [f32; N]) -> [f32; N] {
    core::array::from_fn(|i| {
        let x = x[i];
        let mut y = f32::from_bits(0x5f37_59df_u32.wrapping_sub(x.to_bits() >> 1));
        for _ in 0..4 {
            y = y * (1.5 - 0.5 * x * y * y);
        }
        if x <= 0.0 {
            0.0
        } else {
            x * y
        }
    })
}

/// (cos, sin) of 2*pi*u for u = k / 2^24, k < 2^24, from the 24-bit integer k; mul/add only.
#[inline]
pub fn det_cos_sin_turn(k24: u32) -> (f32, f32) {
    let ([c], [s]) = det_cos_sin_turn_lanes(&[k24]);
    (c, s)
}

#[inline(always)]
fn det_cos_sin_turn_lanes<const N: usize>(k24: &[u32; N]) -> ([f32; N], [f32; N]) {
    // th in [0, pi/2), the angle within the quadrant
    let th: [f32; N] = core::array::from_fn(|i| {
        let frac = (k24[i] & 0x3f_ffff) as f32 * (1.0 / 4_194_304.0); // in [0, 1)
        frac * core::f32::consts::FRAC_PI_2
    });
    let t2: [f32; N] = core::array::from_fn(|i| th[i] * th[i]);
    // Taylor series to th^17 / th^16: error < 1e-10 on [0, pi/2).
    let mut s = [0.0f32; N];
    let mut c = [0.0f32; N];
    let mut n = 8;
    while n >= 1 {
        // sin: coefficient of th^(2n+1) relative to th: (-1)^n / (2n+1)!
        let (cs, cc) = (sign(n) / fact(2 * n + 1), sign(n) / fact(2 * n));
        for i in 0..N {
            s[i] = s[i] * t2[i] + cs;
            c[i] = c[i] * t2[i] + cc;
        }
        n -= 1;
    }
    let mut cos = [0f32; N];
    let mut sin = [0f32; N];
    for i in 0..N {
        let (sn, cn) = ((s[i] * t2[i] + 1.0) * th[i], c[i] * t2[i] + 1.0);
        // By quadrant q: (cos, sin) = (cn, sn), (-sn, cn), (-cn, -sn), (sn, -cn). Written as a
        // select and two sign flips (the same bits as negation), so the lanes vectorise: a
        // `match` here compiled to scalar code per lane.
        let q = (k24[i] >> 22) & 3;
        let (a, b) = if q & 1 == 1 { (sn, cn) } else { (cn, sn) };
        let (cos_neg, sin_neg) = ((q ^ (q >> 1)) & 1, q >> 1);
        cos[i] = f32::from_bits(a.to_bits() ^ (cos_neg << 31));
        sin[i] = f32::from_bits(b.to_bits() ^ (sin_neg << 31));
    }
    (cos, sin)
}

#[inline]
fn sign(n: u32) -> f32 {
    if n.is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// n! as f32 (the constant the GPU ports also compute in f32 by repeated multiplication).
#[inline]
fn fact(n: u32) -> f32 {
    let mut f = 1.0f32;
    let mut i = 2;
    while i <= n {
        f *= i as f32;
        i += 1;
    }
    f
}

/// Two standard normals from two words (Box-Muller with the deterministic transforms above).
#[inline]
pub fn normal_pair(w0: u32, w1: u32) -> (f32, f32) {
    let ([a], [b]) = normal_pair_lanes(&[w0], &[w1]);
    (a, b)
}

#[inline(always)]
fn normal_pair_lanes<const N: usize>(w0: &[u32; N], w1: &[u32; N]) -> ([f32; N], [f32; N]) {
    let ln = det_ln_lanes(w0.map(uniform_oc));
    let r = det_sqrt_lanes(ln.map(|l| -2.0 * l));
    let (c, s) = det_cos_sin_turn_lanes(&w1.map(|w| w >> 8));
    (
        core::array::from_fn(|i| r[i] * c[i]),
        core::array::from_fn(|i| r[i] * s[i]),
    )
}

/// Four standard normals for counter `[step, block, stream, TAG_NOISE]`.
#[inline]
pub fn noise4(seed: u64, stream: u32, step: u32, block: u32) -> [f32; 4] {
    noise_lanes::<1>(seed, stream, step, block).map(|[z]| z)
}

/// [`noise4`] of blocks `block0 .. block0 + N` at once: `z[j][lane]` is `noise4(.., block0 +
/// lane)[j]`, bit for bit, from lane-parallel code that vectorises.
#[inline(always)]
pub fn noise_lanes<const N: usize>(seed: u64, stream: u32, step: u32, block0: u32) -> [[f32; N]; 4] {
    let blocks = core::array::from_fn(|i| block0.wrapping_add(i as u32));
    let w = philox_lanes([[step; N], blocks, [stream; N], [TAG_NOISE; N]], key_of(seed));
    let (a, b) = normal_pair_lanes(&w[0], &w[1]);
    let (c, d) = normal_pair_lanes(&w[2], &w[3]);
    [a, b, c, d]
}

/// Element `i` of the noise vector of (stream, step): `noise4(.., i / 4)[i % 4]`.
#[inline]
pub fn noise_at(seed: u64, stream: u32, step: u32, i: u32) -> f32 {
    noise4(seed, stream, step, i / 4)[(i % 4) as usize]
}

/// The uniform in [0, 1) that samples the token of (stream, step).
#[inline]
pub fn sample_uniform(seed: u64, stream: u32, step: u32) -> f32 {
    uniform_co(philox4x32_10([step, 0, stream, TAG_SAMPLE], key_of(seed))[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_vectors_of_random123() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// Values of the scalar transforms as written before their lane forms (5211275), bit for bit:
    /// the lane rewrite must not have moved a rounding (the GPU ports compute these too).
    #[test]
    fn noise4_keeps_the_values_of_the_scalar_code() {
        // ((seed, stream, step, block), the four normals' bits)
        type Case = ((u64, u32, u32, u32), [u32; 4]);
        let cases: [Case; 3] = [
            ((0, 0, 0, 0), [0x3fd359cd, 0x3f587c38, 0xbdd11912, 0xbdecd295]),
            ((1234, 4, 0, 9), [0x3fd7179f, 0x3f870539, 0x3fcb35f3, 0xbf63a0ac]),
            (
                (u64::MAX, u32::MAX, 7, u32::MAX),
                [0xbcfd9fcc, 0xbedbb24d, 0xbd541519, 0xbf825721],
            ),
        ];
        for ((seed, stream, step, block), want) in cases {
            let got = noise4(seed, stream, step, block).map(f32::to_bits);
            assert_eq!(got, want, "noise4({seed}, {stream}, {step}, {block})");
        }
        // And 16384 normals at once: FNV-1a over their bits, as the scalar code gave it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for stream in 0..4 {
            for block in 0..1024 {
                for b in noise4(0x5eed, stream, 3, block)
                    .iter()
                    .flat_map(|v| v.to_bits().to_le_bytes())
                {
                    h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        assert_eq!(h, 0xccdb_4056_ccf4_d05d, "hash of 16384 normals");
    }

    #[test]
    fn noise_lanes_are_noise4_per_block() {
        for (seed, stream, step, b0) in [(0, 0, 0, 0), (42, 7, 3, 16), (u64::MAX, u32::MAX, 9, u32::MAX - 3)] {
            let z = noise_lanes::<16>(seed, stream, step, b0);
            for (j, zj) in z.iter().enumerate() {
                for (lane, got) in zj.iter().enumerate() {
                    let want = noise4(seed, stream, step, b0.wrapping_add(lane as u32))[j];
                    assert_eq!(got.to_bits(), want.to_bits(), "block {b0} + {lane}, element {j}");
                }
            }
        }
    }

    #[test]
    fn deterministic_math_matches_libm() {
        let mut worst = [0f64; 3];
        for k in (0..(1u32 << 24)).step_by(997) {
            let u = ((k + 1) as f32) / 16_777_216.0;
            worst[0] = worst[0].max((det_ln(u) as f64 - (u as f64).ln()).abs());
            let x = -2.0 * (u as f64).ln();
            worst[1] = worst[1].max((det_sqrt(x as f32) as f64 - x.sqrt()).abs() / x.sqrt().max(1e-3));
            let (c, s) = det_cos_sin_turn(k);
            let a = 2.0 * core::f64::consts::PI * (k as f64 / 16_777_216.0);
            worst[2] = worst[2].max((c as f64 - a.cos()).abs().max((s as f64 - a.sin()).abs()));
        }
        std::println!(
            "det_ln abs err {:.2e}, det_sqrt rel err {:.2e}, cos/sin abs err {:.2e}",
            worst[0],
            worst[1],
            worst[2]
        );
        assert!(worst[0] < 2e-6 && worst[1] < 1e-6 && worst[2] < 1e-6, "{worst:?}");
    }

    #[test]
    fn normals_have_unit_moments() {
        // 400k samples: the standard error of the mean is 1.6e-3, of the variance 2.2e-3; bounds at ~5 sigma.
        let n = 100_000u32;
        let (mut s1, mut s2, mut s4) = (0f64, 0f64, 0f64);
        for i in 0..n {
            for z in noise4(7, 3, 11, i) {
                let z = z as f64;
                s1 += z;
                s2 += z * z;
                s4 += z * z * z * z;
            }
        }
        let m = 4.0 * n as f64;
        let (mean, var, kurt) = (s1 / m, s2 / m - (s1 / m).powi(2), s4 / m);
        std::println!("normals: mean {mean:.4} var {var:.4} E[z^4] {kurt:.4}");
        assert!(mean.abs() < 8e-3 && (var - 1.0).abs() < 1.2e-2 && (kurt - 3.0).abs() < 0.08);
    }

    #[test]
    fn uniforms_are_uniform() {
        let mut bins = [0u32; 16];
        let n = 160_000u32;
        for step in 0..n {
            bins[(sample_uniform(42, 5, step) * 16.0) as usize] += 1;
        }
        // chi-square with 15 dof: P(X > 40) < 5e-4
        let e = n as f64 / 16.0;
        let chi: f64 = bins.iter().map(|&b| (b as f64 - e).powi(2) / e).sum();
        std::println!("uniform chi-square (15 dof): {chi:.2}");
        assert!(chi < 40.0);
    }
}
