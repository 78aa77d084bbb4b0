//! A vectorisable float32 `exp` (Cephes' polynomial, ~2 ulp on the range used) and the row
//! reductions of softmax built on it. Each public function dispatches at run time to an AVX-512F or
//! AVX2+FMA build of the same code, so results are identical whichever path runs.

#[cfg(target_arch = "x86_64")]
use crate::lanes::Simd;

const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer, held in the low bits.
const ROUND: f32 = 12_582_912.0;

/// Below this, [`exp`] returns its smallest value, e^-87.3 > 0, which stands for underflow.
pub const EXP_MIN_ARG: f32 = -87.3;

/// e^x for any x (clamped to the normal range: see [`EXP_MIN_ARG`]).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN_ARG, 88.7);
    // k = round(x * log2(e)) by the 1.5 * 2^23 trick (no libm call, vectorises).
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes' 5.0000001e-1 rounds to 0.5 in f32
    let e = p * r * r + r + 1.0;
    e * pow2_of_rounded(t)
}

/// 2^k for t = ROUND + k, k an integer with |k| <= 128, from t's own bits: t = 1.5 * 2^23 + k
/// exactly, so its bits are ROUND's plus k. (`k as i32`, a saturating conversion, compiled to a
/// scalar convert and two compares per lane: `exp` ran at ~6 cycles a value.)
#[inline(always)]
fn pow2_of_rounded(t: f32) -> f32 {
    f32::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23)
}

/// Runs `f` from a function compiled with AVX-512F (else AVX2 and FMA) when the CPU has it, so
/// that the loops inside `f` are vectorised 16 (8) wide; otherwise runs it as compiled. The loops
/// are written in 16 lanes with no fused multiply-adds and no reassociation, so every width gives
/// the same bits; 16 wide, softmax of [8, 32000] on one thread takes 139 us where 8 wide took 217
/// (`tools/kernel-probes --bin softmax_rate`). Reached through [`simd!`], which
/// passes an `#[inline(always)]` closure: a closure LLVM leaves out of line keeps its own (SSE)
/// code, which is what every caller ran until 2026-12-01 (`objdump -d` showed no ymm register in
/// any of them).
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match Simd::best() {
            // SAFETY: the CPU has the features `avx512` was compiled for.
            Simd::Avx512 => return unsafe { avx512(f) },
            // SAFETY: the CPU has the features `avx2` was compiled for.
            Simd::Avx2 => return unsafe { avx2(f) },
            Simd::Scalar => {}
        }
    }
    f()
}

/// Maximum of a row (NaN-free input assumed; NaNs are skipped).
pub fn max(z: &[f32]) -> f32 {
    simd!(body::max(z))
}

/// out[i] = exp((z[i] - m) * inv_tau); returns the sum of out (lane-wise partial sums).
pub fn exp_shifted(out: &mut [f32], z: &[f32], m: f32, inv_tau: f32) -> f32 {
    simd!({
        let mut lanes = [0f32; 16];
        let n = z.len() / 16 * 16;
        for (oc, zc) in out[..n].chunks_exact_mut(16).zip(z[..n].chunks_exact(16)) {
            for ((o, &x), l) in oc.iter_mut().zip(zc).zip(lanes.iter_mut()) {
                *o = exp((x - m) * inv_tau);
                *l += *o;
            }
        }
        let mut s: f32 = lanes.iter().sum();
        for (o, &x) in out[n..].iter_mut().zip(&z[n..]) {
            *o = exp((x - m) * inv_tau);
            s += *o;
        }
        s
    })
}

/// z[i] <- exp((z[i] - m) * inv_tau) in place; returns the sum.
pub fn exp_shifted_inplace(z: &mut [f32], m: f32, inv_tau: f32) -> f32 {
    simd!(body::exp_shifted_inplace(z, m, inv_tau))
}

/// The bodies of [`max`], [`exp_shifted_inplace`] and [`sum_squares`], always inlined and without
/// the run-time dispatch: for kernels that already run inside [`simd`], whose features their loops
/// then take.
pub mod body {
    use super::exp;

    /// Sum of x[i]^2 in float64, in 16 lanes (a fixed order, so deterministic).
    #[inline(always)]
    pub fn sum_squares(x: &[f32]) -> f64 {
        let mut lanes = [0f64; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += v as f64 * v as f64;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&v| v as f64 * v as f64).sum();
        lanes.iter().sum::<f64>() + tail
    }

    /// Maximum of a row (NaN-free input assumed; NaNs are skipped).
    #[inline(always)]
    pub fn max(z: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = z.chunks_exact(16);
        for c in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l = if x > *l { x } else { *l };
            }
        }
        let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for &x in chunks.remainder() {
            m = if x > m { x } else { m };
        }
        m
    }

    /// z[i] <- exp((z[i] - m) * inv_tau) in place; returns the sum (lane-wise partial sums).
    #[inline(always)]
    pub fn exp_shifted_inplace(z: &mut [f32], m: f32, inv_tau: f32) -> f32 {
        let mut lanes = [0f32; 16];
        let mut chunks = z.chunks_exact_mut(16);
        for c in &mut chunks {
            for (x, l) in c.iter_mut().zip(lanes.iter_mut()) {
                *x = exp((*x - m) * inv_tau);
                *l += *x;
            }
        }
        let mut s: f32 = lanes.iter().sum();
        for x in chunks.into_remainder() {
            *x = exp((*x - m) * inv_tau);
            s += *x;
        }
        s
    }
}

/// Sum of exp((z[i] - m) * inv_tau), without storing the terms.
pub fn sum_exp_shifted(z: &[f32], m: f32, inv_tau: f32) -> f32 {
    simd!({
        let mut lanes = [0f32; 16];
        let mut chunks = z.chunks_exact(16);
        for c in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += exp((x - m) * inv_tau);
            }
        }
        let mut s: f32 = lanes.iter().sum();
        for &x in chunks.remainder() {
            s += exp((x - m) * inv_tau);
        }
        s
    })
}

/// Sum of x[i]^2 in float64, in 16 lanes (vectorised, a fixed order, so deterministic).
pub fn sum_squares(x: &[f32]) -> f64 {
    simd!(body::sum_squares(x))
}

/// a . b in 16 lanes (vectorised; the lane order is fixed, so results are deterministic).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// y += alpha * x.
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(a, &b)| *a += alpha * b);
}

/// `simd!(expr)`: evaluates `expr` with AVX-512F or AVX2+FMA code generation when the CPU has it (see
/// [`with_simd`]), as an always-inlined closure: for callers whose loops use the `#[inline(always)]`
/// helpers here (`exp`, `dot`, `axpy`, [`body`]).
macro_rules! simd {
    ($body:expr) => {
        $crate::fastmath::with_simd(
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use simd;

/// x[i] *= s.
pub fn scale(x: &mut [f32], s: f32) {
    simd!(x.iter_mut().for_each(|v| *v *= s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let r = (super::exp(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(r);
            x += 0.0137;
        }
        println!("fast exp: worst relative error {worst:.2e}");
        assert!(worst < 4e-7, "{worst}");
    }

    /// 2^k taken from t's bits is what the float-to-int conversion gave, bit for bit, for every
    /// t that `exp` forms (x over the whole clamped range and past both ends).
    #[test]
    fn pow2_of_rounded_keeps_the_values_of_the_conversion() {
        use super::{pow2_of_rounded, EXP_MIN_ARG, LOG2E, ROUND};
        let mut n = 0;
        let mut x = -100.0f32;
        while x < 100.0 {
            let t = x.clamp(EXP_MIN_ARG, 88.7) * LOG2E + ROUND;
            let converted = f32::from_bits((((t - ROUND) as i32 + 127) << 23) as u32);
            assert_eq!(pow2_of_rounded(t).to_bits(), converted.to_bits(), "2^k at x = {x}");
            x += 0.000_37;
            n += 1;
        }
        println!("fast exp: 2^k at {n} values bit for bit that of the conversion");
    }
}
