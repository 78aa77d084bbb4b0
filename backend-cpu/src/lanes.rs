//! The vector registers of the decode kernels' register tiles: [`Lanes`], implemented once per
//! instruction set (16 lanes of AVX-512F, 8 of AVX2 + FMA), so that each kernel in `gemm` and
//! `mixture_table` is written once and compiled for both. AVX2 without AVX-512 is most x86
//! laptops and the Zen 2 machines this project also runs on; with only AVX-512 kernels, those
//! took the unfused soft head and a 4-row dot product (soft / hard decode 1.33 on bench-125m,
//! docs/BENCHMARKS.md).
//!
//! Every method is `#[inline(always)]` and every kernel written over them too: a kernel is
//! entered from one function compiled for its level's features ([`Simd`]), and only inlined into
//! it do the intrinsics become single instructions.

/// The instruction sets the decode kernels have code for, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    Avx512,
    Avx2,
    Scalar,
}

impl Simd {
    /// What this CPU runs.
    pub(crate) fn best() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            // Every AVX-512F CPU has AVX2 and FMA; fastmath's AVX-512 build takes all three.
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                return Simd::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    /// Whether this CPU runs this level: the best one or a level below it.
    pub(crate) fn runs_here(self) -> bool {
        self as u8 >= Simd::best() as u8
    }

    /// Every level this CPU runs, best first (tests run each).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Simd> {
        [Simd::Avx512, Simd::Avx2, Simd::Scalar]
            .into_iter()
            .filter(|s| s.runs_here())
            .collect()
    }

    /// Whether the register-tile kernels (fused soft head, mixture) have code for this level.
    pub(crate) fn vector(self) -> bool {
        self != Simd::Scalar
    }
}

/// One vector register of `N` floats. The `unsafe` methods need the CPU features of the
/// implementation; pointers must hold every lane read or written.
pub(crate) trait Lanes: Copy {
    /// Floats per vector.
    const N: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// N floats from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// The first min(w, N) floats from `p`, the other lanes zero; lanes past w are not read, so
    /// `p` may point past the end of a buffer when w = 0.
    unsafe fn load_first(p: *const f32, w: usize) -> Self;
    /// N floats to `p`.
    unsafe fn store(p: *mut f32, v: Self);
    /// The first min(w, N) lanes to `p`; the floats after them are not touched.
    unsafe fn store_first(p: *mut f32, w: usize, v: Self);
    /// a * b + c, one rounding.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    /// a + b.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// The sum of the lanes (a fixed tree).
    unsafe fn sum(self) -> f32;
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{F32x16, F32x8};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// 16 lanes of AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x16(__m512);

    /// Lanes of a 16-lane vector that hold one of the `w` remaining columns.
    #[inline(always)]
    fn mask16(w: usize) -> __mmask16 {
        if w >= 16 {
            0xffff
        } else {
            ((1u32 << w) - 1) as u16
        }
    }

    impl Lanes for F32x16 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            F32x16(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            F32x16(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x16(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f32, w: usize) -> Self {
            F32x16(_mm512_maskz_loadu_ps(mask16(w), p))
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            _mm512_storeu_ps(p, v.0)
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut f32, w: usize, v: Self) {
            _mm512_mask_storeu_ps(p, mask16(w), v.0)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            F32x16(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            F32x16(_mm512_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
    }

    /// 8 lanes of AVX2 with FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct F32x8(__m256);

    /// Lanes of an 8-lane vector that hold one of the `w` remaining columns (sign bit set).
    #[inline(always)]
    unsafe fn mask8(w: usize) -> __m256i {
        let w = w.min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    impl Lanes for F32x8 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            F32x8(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            F32x8(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x8(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f32, w: usize) -> Self {
            F32x8(_mm256_maskload_ps(p, mask8(w)))
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            _mm256_storeu_ps(p, v.0)
        }
        #[inline(always)]
        unsafe fn store_first(p: *mut f32, w: usize, v: Self) {
            _mm256_maskstore_ps(p, mask8(w), v.0)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            F32x8(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            F32x8(_mm256_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            let q = _mm_add_ps(_mm256_extractf128_ps(self.0, 1), _mm256_castps256_ps128(self.0));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Partial loads and stores touch exactly the first w lanes, at every width, for every level
    /// this CPU has.
    #[test]
    fn partial_loads_and_stores_keep_to_their_lanes() {
        fn check<L: Lanes>(name: &str) {
            let src: Vec<f32> = (1..=L::N).map(|i| i as f32).collect();
            for w in 0..=L::N + 1 {
                let mut out = vec![-1f32; L::N];
                // SAFETY: the callers run this only on a CPU with L's features; both buffers hold N.
                unsafe {
                    let v = L::load_first(src.as_ptr(), w);
                    L::store(out.as_mut_ptr(), v);
                    let want: Vec<f32> = (0..L::N).map(|i| if i < w { src[i] } else { 0.0 }).collect();
                    assert_eq!(out, want, "{name} load_first({w})");
                    let mut kept = vec![-1f32; L::N];
                    L::store_first(kept.as_mut_ptr(), w, L::splat(7.0));
                    let want: Vec<f32> = (0..L::N).map(|i| if i < w { 7.0 } else { -1.0 }).collect();
                    assert_eq!(kept, want, "{name} store_first({w})");
                    assert_eq!(
                        L::load(src.as_ptr()).sum(),
                        (L::N * (L::N + 1) / 2) as f32,
                        "{name} sum"
                    );
                }
            }
            println!("{name}: partial loads and stores checked at widths 0..={}", L::N + 1);
        }
        let mut ran = 0;
        for simd in Simd::available() {
            match simd {
                Simd::Avx512 => check::<F32x16>("avx512"),
                Simd::Avx2 => check::<F32x8>("avx2"),
                Simd::Scalar => continue,
            }
            ran += 1;
        }
        if ran == 0 {
            println!("skipped: no AVX2 on this CPU");
        }
    }
}
