//! Matrix products. General shapes go to the `gemm` crate; the skinny products of batched decode
//! (`x[m, k] @ W^T` with m <= 16 and W stored `[n, k]`) go to [`skinny`], which streams each weight
//! row once and reuses it for every input row: decode is bound by reading the weights.

use rayon::prelude::*;
use softcot_core::backend::Gemm;
use softcot_core::Result;

use crate::{need, transpose, SendPtr};

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// How many weight rows ahead the skinny kernel prefetches. Both streaming kernels prefetch into
/// L2 (`_MM_HINT_T1`), not L1: a prefetch into L1 holds one of its few miss buffers until the line
/// arrives, which capped the stream at ~16 GB/s (skinny) and ~24 GB/s (mixture) on the EPYC machine
/// against ~35 GB/s with L2 prefetches (docs/BENCHMARKS.md).
const PREFETCH_ROWS: usize = 4;
/// The skinny kernel handles up to this many rows of `a`.
pub(crate) const SKINNY_MAX_M: usize = 16;

pub fn gemm(c: &mut [f32], a: &[f32], b: &[f32], g: Gemm) -> Result<()> {
    let (la, lb, lc) = g.required_lens();
    need(a.len(), la, "gemm: a")?;
    need(b.len(), lb, "gemm: b")?;
    need(c.len(), lc, "gemm: c")?;
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(());
    }
    // A batch of single rows against one shared `b` (the lm_head on each row's last token) is one
    // product whose rows of `a` are `stride_a` apart.
    if g.batch > 1 && g.m == 1 && g.stride_b == 0 && !g.trans_a && g.stride_c == g.n {
        let rows = Rows {
            m: g.batch,
            lda: g.stride_a,
            off_a: g.off_a,
        };
        return product(&mut c[g.off_c..], a, &b[g.off_b..], rows, g);
    }
    for i in 0..g.batch {
        let rows = Rows {
            m: g.m,
            lda: if g.trans_a { g.m } else { g.k },
            off_a: g.off_a + i * g.stride_a,
        };
        product(
            &mut c[g.off_c + i * g.stride_c..],
            a,
            &b[g.off_b + i * g.stride_b..],
            rows,
            g,
        )?;
    }
    Ok(())
}

/// The rows of `a` taking part in one product: `m` rows, `lda` apart, starting at `off_a`.
#[derive(Clone, Copy)]
struct Rows {
    m: usize,
    lda: usize,
    off_a: usize,
}

fn product(c: &mut [f32], a: &[f32], b: &[f32], rows: Rows, g: Gemm) -> Result<()> {
    let (m, n, k) = (rows.m, g.n, g.k);
    if k == 0 {
        // Empty sum: c = beta * c.
        for v in c[..m * n].iter_mut() {
            *v *= g.beta;
        }
        return Ok(());
    }
    if !g.trans_a && g.trans_b && m <= SKINNY_MAX_M {
        skinny(&mut c[..m * n], &a[rows.off_a..], rows.lda, b, m, n, k, g.alpha, g.beta);
        return Ok(());
    }
    if !g.trans_a && !g.trans_b && m <= SKINNY_MAX_M && has_avx512() {
        skinny_nn(&mut c[..m * n], &a[rows.off_a..], rows.lda, b, m, n, k, g.alpha, g.beta);
        return Ok(());
    }
    let a = &a[rows.off_a..];
    if !g.trans_a && g.trans_b && transpose::worth_it(m, n, k) {
        let g = Gemm { trans_b: false, ..g };
        return transpose::with_transposed(b, n, k, |bt| crate_product(c, a, bt, rows, g));
    }
    crate_product(c, a, b, rows, g)
}

/// `product` by the gemm crate. c: [m, n]; a: rows.m rows (or columns, trans_a) rows.lda apart
fn crate_product(c: &mut [f32], a: &[f32], b: &[f32], rows: Rows, g: Gemm) -> Result<()> {
    let (m, n, k) = (rows.m, g.n, g.k);
    let (a_rs, a_cs) = if g.trans_a {
        (1, rows.lda as isize)
    } else {
        (rows.lda as isize, 1)
    };
    let (b_rs, b_cs) = if g.trans_b { (1, k as isize) } else { (n as isize, 1) };
    let par = if m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths were checked against the strides by `gemm` (required_lens covers every
    // element the strides reach; a transposed copy of b holds the n * k floats its strides reach),
    // and `c` does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            g.beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            g.beta,  // the gemm crate computes dst = alpha * dst + beta * lhs @ rhs
            g.alpha, // so its alpha is our beta and its beta our alpha
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// c[m, n] = alpha * a[m, k] @ w[n, k]^T + beta * c, with a's rows `lda` apart and m small.
/// Parallel over blocks of output columns; each pair of weight rows is read once for all m rows.
#[allow(clippy::too_many_arguments)]
pub fn skinny(c: &mut [f32], a: &[f32], lda: usize, w: &[f32], m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let cp = SendPtr(c.as_mut_ptr());
    skinny_blocks(m, n, k, |j0, j1| {
        dot_block(a, lda, m, w, n, k, j0, j1, |i, j, s| {
            // SAFETY: (i, j) is inside c[m, n] (checked by the caller) and column j belongs to this
            // task alone.
            unsafe {
                let p = cp.get().add(i * n + j);
                *p = if beta == 0.0 { alpha * s } else { alpha * s + beta * *p };
            }
        });
    });
}

/// The task split of a skinny product of m rows against n weight rows of length k: `task(j0, j1)`
/// for blocks of output columns, in parallel; what the tasks return, in block order.
pub(crate) fn skinny_blocks<T: Send>(m: usize, n: usize, k: usize, task: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    let threads = rayon::current_num_threads().max(1);
    // Blocks hold whole pairs of weight rows, so that only the last block can end on a single row.
    let block = if m * n * k < PARALLEL_MIN_MACS {
        n
    } else {
        n.div_ceil(threads * 8).max(16).next_multiple_of(2)
    };
    (0..n.div_ceil(block))
        .into_par_iter()
        .map(|bi| task(bi * block, ((bi + 1) * block).min(n)))
        .collect()
}

/// Calls `out(i, j, a[i] . w[j])` for every row i < m of `a` (rows `lda` apart, m <= 16) and
/// weight row j in j0..j1 of w [n, k], reading the weight rows in pairs and prefetching those
/// PREFETCH_ROWS on into L2. The sums do not depend on how rows are paired.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dot_block(
    a: &[f32],
    lda: usize,
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    j1: usize,
    mut out: impl FnMut(usize, usize, f32),
) {
    let simd = Simd::best();
    let mut acc = [[0f32; 2]; SKINNY_MAX_M];
    let mut j = j0;
    while j < j1 {
        let pair = if j + 1 < j1 { 2 } else { 1 };
        let ahead = (j + PREFETCH_ROWS).min(n - pair);
        let (wj, aj) = (&w[j * k..(j + pair) * k], &w[ahead * k..(ahead + pair) * k]);
        // SAFETY: `simd` is what this CPU runs.
        unsafe { dot_rows(simd, a, lda, m, k, wj, aj, &mut acc[..m]) };
        for (i, s) in acc[..m].iter().enumerate() {
            for (jj, &s) in s[..pair].iter().enumerate() {
                out(i, j + jj, s);
            }
        }
        j += pair;
    }
}

pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of `b` one task of [`skinny_nn`] sums over. Fixed, so that the partial sums, and the order
/// they are added in, do not depend on the number of threads.
pub(crate) const NN_K_CHUNK: usize = 2048;
/// Rows of `b` a task finishes (every column) before it moves on: 64 rows of the 768-wide E are
/// 192 KiB, which stay in L2 while the next block is prefetched in memory order.
pub(crate) const NN_ROW_BLOCK: usize = 64;

/// c[m, n] = alpha * a[m, k] @ b[k, n] + beta * c for m <= 16 and long k: the soft-thinking mixture
/// p @ E. Each task sums one chunk of b's rows into its own partial c, block by block, so b streams
/// from memory in order; the partials are then added in chunk order. (A task per 32-column strip
/// down all of b, the first version, touched a new page on every row and read E at 8 GB/s.)
/// Needs AVX-512F (checked by the caller).
#[allow(clippy::too_many_arguments)]
fn skinny_nn(c: &mut [f32], a: &[f32], lda: usize, b: &[f32], m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let chunks = k.div_ceil(NN_K_CHUNK);
    // partial: [chunks, m, n]
    let mut partial = vec![0f32; chunks * m * n];
    let min_len = if m * n * k < PARALLEL_MIN_MACS { chunks } else { 1 };
    partial
        .par_chunks_mut(m * n)
        .with_min_len(min_len)
        .enumerate()
        .for_each(|(ci, part)| {
            let (l0, l1) = (ci * NN_K_CHUNK, ((ci + 1) * NN_K_CHUNK).min(k));
            nn_block(&a[l0..], lda, &b[l0 * n..l1 * n], l1 - l0, m, n, part);
        });
    for (idx, cv) in c[..m * n].iter_mut().enumerate() {
        let s: f32 = (0..chunks).map(|ci| partial[ci * m * n + idx]).sum();
        *cv = if beta == 0.0 { alpha * s } else { alpha * s + beta * *cv };
    }
}

/// part[m, n] += a[m, ..kc] @ b[..kc, n] with a's rows `lda` apart and m <= 16: b streamed in
/// order, in blocks of NN_ROW_BLOCK rows, each prefetching the next, also past row kc where b goes
/// on (the rows a caller reads next). Needs AVX-512F (see [`has_avx512`]).
pub(crate) fn nn_block(a: &[f32], lda: usize, b: &[f32], kc: usize, m: usize, n: usize, part: &mut [f32]) {
    assert!(m <= SKINNY_MAX_M && part.len() >= m * n && b.len() >= kc * n);
    assert!(m == 0 || a.len() >= (m - 1) * lda + kc);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (the callers check); reads stay within a[m, lda] and b[kc, n],
    // writes within part[m, n] (asserted above).
    unsafe {
        match m {
            16 => x86::nn_chunk::<16, 1>(a, lda, b, n, kc, part),
            15 => x86::nn_chunk::<15, 1>(a, lda, b, n, kc, part),
            14 => x86::nn_chunk::<14, 1>(a, lda, b, n, kc, part),
            13 => x86::nn_chunk::<13, 1>(a, lda, b, n, kc, part),
            12 => x86::nn_chunk::<12, 1>(a, lda, b, n, kc, part),
            11 => x86::nn_chunk::<11, 1>(a, lda, b, n, kc, part),
            10 => x86::nn_chunk::<10, 2>(a, lda, b, n, kc, part),
            9 => x86::nn_chunk::<9, 2>(a, lda, b, n, kc, part),
            8 => x86::nn_chunk::<8, 3>(a, lda, b, n, kc, part),
            7 => x86::nn_chunk::<7, 3>(a, lda, b, n, kc, part),
            6 => x86::nn_chunk::<6, 3>(a, lda, b, n, kc, part),
            5 => x86::nn_chunk::<5, 3>(a, lda, b, n, kc, part),
            4 => x86::nn_chunk::<4, 3>(a, lda, b, n, kc, part),
            3 => x86::nn_chunk::<3, 3>(a, lda, b, n, kc, part),
            2 => x86::nn_chunk::<2, 3>(a, lda, b, n, kc, part),
            1 => x86::nn_chunk::<1, 3>(a, lda, b, n, kc, part),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, lda, part);
}

/// The instruction sets the decode kernels have code for, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    Scalar,
}

impl Simd {
    /// What this CPU runs.
    fn best() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512() {
                return Simd::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }
}

/// out[i][j] = a[i * lda ..][..k] . w[j * k ..][..k] for i < m and j < J, the one or two rows of
/// `w` (w: [J, k]), with the kernels of `simd`; `ahead` (J rows further on) is prefetched meanwhile.
/// The level is a parameter so that the tests run every level the machine has (the dispatch alone
/// only ever runs the best).
///
/// # Safety
/// The CPU must support `simd` ([`Simd::best`] or a level below it).
#[allow(clippy::too_many_arguments)]
unsafe fn dot_rows(
    simd: Simd,
    a: &[f32],
    lda: usize,
    m: usize,
    k: usize,
    w: &[f32],
    ahead: &[f32],
    out: &mut [[f32; 2]],
) {
    let pair = w.len() / k;
    #[cfg(target_arch = "x86_64")]
    {
        if simd == Simd::Avx512 {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(8);
                let o = &mut out[i..i + r];
                macro_rules! kernel {
                    ($($r:literal)*) => {
                        match (r, pair) {
                            $(
                                ($r, 2) => x86::dot_rows_512::<$r, 2>(a, lda, i, k, w, ahead, o),
                                ($r, _) => x86::dot_rows_512::<$r, 1>(a, lda, i, k, w, ahead, o),
                            )*
                            (_, 2) => x86::dot_rows_512::<1, 2>(a, lda, i, k, w, ahead, o),
                            _ => x86::dot_rows_512::<1, 1>(a, lda, i, k, w, ahead, o),
                        }
                    };
                }
                // SAFETY: the CPU supports AVX-512F (the caller's contract); every row read is in bounds.
                unsafe { kernel!(8 7 6 5 4 3 2) }
                i += r;
            }
            return;
        }
        if simd == Simd::Avx2 {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(4);
                for j in 0..pair {
                    let (wj, mut t) = (&w[j * k..(j + 1) * k], [0f32; 4]);
                    // SAFETY: the CPU supports AVX2 and FMA (the caller's contract); every row read is in bounds.
                    unsafe {
                        match r {
                            4 => x86::dot_rows_256::<4>(a, lda, i, wj, &mut t),
                            3 => x86::dot_rows_256::<3>(a, lda, i, wj, &mut t),
                            2 => x86::dot_rows_256::<2>(a, lda, i, wj, &mut t),
                            _ => x86::dot_rows_256::<1>(a, lda, i, wj, &mut t),
                        }
                    }
                    for (o, &v) in out[i..i + r].iter_mut().zip(&t) {
                        o[j] = v;
                    }
                }
                i += r;
            }
            return;
        }
    }
    for (i, o) in out.iter_mut().enumerate().take(m) {
        let row = &a[i * lda..i * lda + k];
        for j in 0..pair {
            o[j] = row.iter().zip(&w[j * k..(j + 1) * k]).map(|(x, y)| x * y).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// R rows of `a` against J consecutive weight rows (w: [J, k]), one 16-lane accumulator per
    /// (row, weight row): each weight vector loaded serves R FMAs and each row of `a` J of them.
    /// Prefetches `ahead` (the J weight rows a few rows on) into L2, one line per row per step.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows_512<const R: usize, const J: usize>(
        a: &[f32],
        lda: usize,
        i0: usize,
        k: usize,
        w: &[f32],
        ahead: &[f32],
        out: &mut [[f32; 2]],
    ) {
        let mut acc = [[_mm512_setzero_ps(); J]; R];
        let (ap, wp, pp) = (a.as_ptr().add(i0 * lda), w.as_ptr(), ahead.as_ptr());
        let mut l = 0;
        while l < k {
            // Masked lanes are not read, so the last partial vector stays inside every row.
            let mask = lane_mask(k - l);
            let mut wv = [_mm512_setzero_ps(); J];
            for (j, wj) in wv.iter_mut().enumerate() {
                _mm_prefetch::<_MM_HINT_T1>(pp.add(j * k + l) as *const i8);
                *wj = _mm512_maskz_loadu_ps(mask, wp.add(j * k + l));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_maskz_loadu_ps(mask, ap.add(r * lda + l));
                for j in 0..J {
                    acc_r[j] = _mm512_fmadd_ps(x, wv[j], acc_r[j]);
                }
            }
            l += 16;
        }
        for (o, acc_r) in out.iter_mut().zip(&acc) {
            for j in 0..J {
                o[j] = _mm512_reduce_add_ps(acc_r[j]);
            }
        }
    }

    /// Lanes of a 16-lane vector that hold one of the `w` remaining columns.
    #[inline(always)]
    pub(crate) fn lane_mask(w: usize) -> __mmask16 {
        if w >= 16 {
            0xffff
        } else {
            ((1u32 << w) - 1) as u16
        }
    }

    /// The masks of V vectors covering the first `w` of a tile's columns.
    #[inline(always)]
    pub(crate) fn tile_masks<const V: usize>(w: usize) -> [__mmask16; V] {
        let mut mask = [0 as __mmask16; V];
        for (v, m) in mask.iter_mut().enumerate() {
            *m = lane_mask(w.saturating_sub(16 * v));
        }
        mask
    }

    /// part[r * ldp ..][..16 V] += sum over l < rows of a[r * ar + l * al] * b[l * ldb ..][..16 V]
    /// for r < R, the vectors masked by `mask`: the register tile of both mixture kernels (R x V
    /// sums, one broadcast of a[r, l] per V FMAs; a's strides (ar, al) say whether its rows or its
    /// columns are contiguous). `before_load` runs before each vector load of b (nn_chunk prefetches
    /// its next block there). Always inlined into an AVX-512F caller.
    ///
    /// # Safety
    /// AVX-512F; a[r * ar + l * al], the unmasked lanes of b's rows and of part's R rows in bounds.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) unsafe fn sum_tile<const R: usize, const V: usize>(
        a: *const f32,
        (ar, al): (usize, usize),
        b: *const f32,
        ldb: usize,
        rows: usize,
        mask: [__mmask16; V],
        part: *mut f32,
        ldp: usize,
        mut before_load: impl FnMut(),
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let mut bv = [_mm512_setzero_ps(); V];
        for l in 0..rows {
            for v in 0..V {
                before_load();
                // wrapping_add: a fully masked vector may start past the end of b; it is never read.
                bv[v] = _mm512_maskz_loadu_ps(mask[v], b.wrapping_add(l * ldb + 16 * v));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r * ar + l * al));
                for v in 0..V {
                    acc_r[v] = _mm512_fmadd_ps(x, bv[v], acc_r[v]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for v in 0..V {
                let p = part.wrapping_add(r * ldp + 16 * v);
                _mm512_mask_storeu_ps(p, mask[v], _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], p), acc_r[v]));
            }
        }
    }

    /// part[r, ..] += sum over l < kc of a[r, l] * b[l, ..] for r < R; b: [kb >= kc, n], part: [R, n].
    /// Rows go in blocks of NN_ROW_BLOCK; within a block, tiles of V x 16 columns of all R rows are
    /// summed in registers ([`sum_tile`]: V = 3 up to 8 rows, 2 up to 10, 1 up to 16), while the
    /// next block is prefetched V lines per step, in memory order.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn nn_chunk<const R: usize, const V: usize>(
        a: &[f32],
        lda: usize,
        b: &[f32],
        n: usize,
        kc: usize,
        part: &mut [f32],
    ) {
        let (bp, kb) = (b.as_ptr(), b.len() / n);
        let mut r0 = 0;
        while r0 < kc {
            let r1 = (r0 + super::NN_ROW_BLOCK).min(kc);
            // The next block's floats, [pf, pf_end) of b: past row kc too, up to b's end.
            let (mut pf, pf_end) = (r1 * n, (r1 + super::NN_ROW_BLOCK).min(kb) * n);
            let mut prefetch = || {
                if pf < pf_end {
                    _mm_prefetch::<_MM_HINT_T1>(bp.add(pf) as *const i8);
                    pf += 16;
                }
            };
            for c0 in (0..n).step_by(16 * V) {
                let (a0, b0, p0) = (a.as_ptr().add(r0), bp.add(r0 * n + c0), part.as_mut_ptr().add(c0));
                sum_tile::<R, V>(a0, (lda, 1), b0, n, r1 - r0, tile_masks(n - c0), p0, n, &mut prefetch);
            }
            r0 = r1;
        }
    }

    /// R rows against one weight row, two 8-wide accumulators per row to hide FMA latency.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_256<const R: usize>(a: &[f32], lda: usize, i0: usize, w: &[f32], out: &mut [f32]) {
        let k = w.len();
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let rows: [&[f32]; R] = core::array::from_fn(|r| &a[(i0 + r) * lda..(i0 + r) * lda + k]);
        let mut l = 0;
        while l + 16 <= k {
            let w0 = _mm256_loadu_ps(w.as_ptr().add(l));
            let w1 = _mm256_loadu_ps(w.as_ptr().add(l + 8));
            for r in 0..R {
                acc0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[r].as_ptr().add(l)), w0, acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[r].as_ptr().add(l + 8)), w1, acc1[r]);
            }
            l += 16;
        }
        for r in 0..R {
            let s = _mm256_add_ps(acc0[r], acc1[r]);
            let hi = _mm256_extractf128_ps(s, 1);
            let lo = _mm256_castps256_ps128(s);
            let q = _mm_add_ps(hi, lo);
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            let mut t = _mm_cvtss_f32(q);
            for ll in l..k {
                t += rows[r][ll] * w[ll];
            }
            out[r] = t;
        }
    }
}

/// A single-threaded product on strided operands, for callers that are already parallel:
/// c[i * ldc + j] = alpha * sum_l a[i * a_rs + l * a_cs] * b[l * b_rs + j * b_cs] + beta * c.
/// The caller guarantees every index reached lies inside its slice.
#[derive(Clone, Copy)]
pub struct Strided {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ldc: usize,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b_rs: usize,
    pub b_cs: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// # Safety
/// `c`, `a` and `b` must point to buffers that hold every element the strides reach, and `c` must
/// not overlap `a` or `b` nor be written by another thread meanwhile.
pub unsafe fn strided(c: *mut f32, a: *const f32, b: *const f32, s: Strided) {
    if s.m == 0 || s.n == 0 {
        return;
    }
    gemm::gemm(
        s.m,
        s.n,
        s.k,
        c,
        1,
        s.ldc as isize,
        s.beta != 0.0,
        a,
        s.a_cs as isize,
        s.a_rs as isize,
        b,
        s.b_cs as isize,
        s.b_rs as isize,
        s.beta,
        s.alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel level this CPU has, on pairs and single weight rows, m up to 16 (two groups of
    /// rows), k with a partial last vector, against float64.
    #[test]
    fn dot_rows_levels_agree_with_f64() {
        let mut levels = vec![Simd::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                levels.push(Simd::Avx2);
            }
            if has_avx512() {
                levels.push(Simd::Avx512);
            }
        }
        let (lda, k) = (53, 45);
        let val = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 250.0;
        let a: Vec<f32> = (0..16 * lda).map(val).collect();
        let w: Vec<f32> = (0..3 * k).map(|i| val(i + 17)).collect();
        for simd in levels {
            let mut worst = 0f64;
            for m in [1, 3, 8, 11, 16] {
                for pair in [1, 2] {
                    let mut out = [[0f32; 2]; 16];
                    // SAFETY: only levels this CPU reports are in `levels`.
                    unsafe {
                        dot_rows(
                            simd,
                            &a,
                            lda,
                            m,
                            k,
                            &w[..pair * k],
                            &w[k..(pair + 1) * k],
                            &mut out[..m],
                        )
                    };
                    for (i, o) in out[..m].iter().enumerate() {
                        for (j, &got) in o[..pair].iter().enumerate() {
                            let want: f64 = (0..k).map(|l| a[i * lda + l] as f64 * w[j * k + l] as f64).sum();
                            worst = worst.max((got as f64 - want).abs());
                        }
                    }
                }
            }
            println!("dot_rows {simd:?}: max abs err {worst:.2e} vs f64");
            assert!(worst < 1e-4, "{simd:?}: {worst}");
        }
    }
}
