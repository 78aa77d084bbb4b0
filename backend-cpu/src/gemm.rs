//! Matrix products. General shapes go to the `gemm` crate; the skinny products of batched decode
//! (`x[m, k] @ W^T` with m <= 16 and W stored `[n, k]`) go to [`skinny`], which streams each weight
//! row once and reuses it for every input row: decode is bound by reading the weights.

use rayon::prelude::*;
use softcot_core::backend::Gemm;
use softcot_core::Result;

use crate::lanes::Simd;
use crate::scratch::{self, Scratch};
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
    if !g.trans_a && !g.trans_b && m <= SKINNY_MAX_M && has_tiles() {
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
    let (block, blocks) = skinny_split(m, n, k);
    (0..blocks).into_par_iter().for_each(|bi| {
        let (j0, j1) = (bi * block, ((bi + 1) * block).min(n));
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

/// The task split of a skinny product of m rows against n weight rows of length k: (block,
/// blocks), task `bi` taking output columns bi * block .. min((bi + 1) * block, n), in parallel.
pub(crate) fn skinny_split(m: usize, n: usize, k: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    // Blocks hold whole pairs of weight rows, so that only the last block can end on a single row.
    let block = if m * n * k < PARALLEL_MIN_MACS {
        n.max(1)
    } else {
        n.div_ceil(threads * 8).max(16).next_multiple_of(2)
    };
    (block, n.div_ceil(block))
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

/// Whether this CPU has the register-tile kernels ([`nn_block`] and the fused soft head).
pub(crate) fn has_tiles() -> bool {
    Simd::best().vector()
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
/// Needs the register-tile kernels ([`has_tiles`], checked by the caller).
#[allow(clippy::too_many_arguments)]
fn skinny_nn(c: &mut [f32], a: &[f32], lda: usize, b: &[f32], m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let chunks = k.div_ceil(NN_K_CHUNK);
    let min_len = if m * n * k < PARALLEL_MIN_MACS { chunks } else { 1 };
    // partial: [chunks, m, n]
    scratch::with(&PARTIAL, chunks * m * n, |partial| {
        partial.fill(0.0);
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
    })
}

thread_local! {
    /// [`skinny_nn`]'s partial products, [chunks, m, n].
    static PARTIAL: Scratch<f32> = const { std::cell::RefCell::new(Vec::new()) };
}

/// part[m, n] += a[m, ..kc] @ b[..kc, n] with a's rows `lda` apart and m <= 16: b streamed in
/// order, in blocks of NN_ROW_BLOCK rows, each prefetching the next, also past row kc where b goes
/// on (the rows a caller reads next). Does nothing where the CPU has no register-tile kernels
/// (see [`has_tiles`]).
pub(crate) fn nn_block(a: &[f32], lda: usize, b: &[f32], kc: usize, m: usize, n: usize, part: &mut [f32]) {
    nn_block_at(Simd::best(), a, lda, b, kc, m, n, part)
}

/// [`nn_block`] with the kernels of `simd`, a level this CPU runs (the tests run each).
#[allow(clippy::too_many_arguments)]
fn nn_block_at(simd: Simd, a: &[f32], lda: usize, b: &[f32], kc: usize, m: usize, n: usize, part: &mut [f32]) {
    assert!(simd.runs_here(), "{simd:?} on this CPU");
    assert!(m <= SKINNY_MAX_M && part.len() >= m * n && b.len() >= kc * n);
    assert!(m == 0 || a.len() >= (m - 1) * lda + kc);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `simd` runs on this CPU; reads stay within a[m, lda] and b[kc, n], writes within
    // part[m, n] (asserted above).
    unsafe {
        match simd {
            Simd::Avx512 => x86::nn_block_512(a, lda, b, n, kc, m, part),
            Simd::Avx2 => x86::nn_block_256(a, lda, b, n, kc, m, part),
            Simd::Scalar => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (simd, a, lda, part);
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
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the CPU supports `simd` (the caller's contract); every row read is in bounds.
        match simd {
            Simd::Avx512 => return unsafe { x86::dot_rows_512(a, lda, m, k, w, ahead, out) },
            Simd::Avx2 => return unsafe { x86::dot_rows_256(a, lda, m, k, w, ahead, out) },
            Simd::Scalar => {}
        }
    }
    let pair = w.len() / k;
    let _ = ahead;
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

    use crate::lanes::{F32x16, F32x8, Lanes};

    /// Rows of `a` one AVX2 tile takes: with two weight rows (dot products) or two vectors of
    /// columns (mixtures), 8 accumulators of AVX2's 16 registers, beside the loaded vectors and
    /// the broadcast. (Zen 2's two FMA units of latency 5 would take 10 independent sums to stay
    /// full; 12 leave no register for the loads.) AVX-512's 32 registers take up to 8 rows with
    /// three vectors.
    pub(crate) const AVX2_ROWS: usize = 4;

    /// Prefetches the line holding `p` into L2 (`_MM_HINT_T1`: see PREFETCH_ROWS).
    #[inline(always)]
    pub(crate) unsafe fn prefetch_l2(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }

    /// R rows of `a` (from row i0) against J consecutive weight rows (w: [J, k]), one accumulator
    /// per (row, weight row): each weight vector loaded serves R FMAs and each vector of `a` J of
    /// them. Prefetches `ahead` (the J weight rows a few rows on) into L2, one line per row per 16
    /// floats. The last partial vector is read masked, so it stays inside every row.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn dot_tile<L: Lanes, const R: usize, const J: usize>(
        a: &[f32],
        lda: usize,
        i0: usize,
        k: usize,
        w: &[f32],
        ahead: &[f32],
        out: &mut [[f32; 2]],
    ) {
        let mut acc = [[L::zero(); J]; R];
        let (ap, wp, pp) = (a.as_ptr().add(i0 * lda), w.as_ptr(), ahead.as_ptr());
        // A line (16 floats) of each weight row per iteration, prefetching the line `ahead`: one
        // vector of AVX-512, two of AVX2 (unrolled, so that the loop's own instructions do not
        // take the issue slots the loads and FMAs need). Then the vectors left, the last partial.
        let mut l = 0;
        while l + 16 <= k {
            for j in 0..J {
                prefetch_l2(pp.add(j * k + l));
            }
            for u in 0..16 / L::N {
                dot_step::<L, R, J, true>(&mut acc, ap, lda, wp, k, l + u * L::N);
            }
            l += 16;
        }
        while l + L::N <= k {
            dot_step::<L, R, J, true>(&mut acc, ap, lda, wp, k, l);
            l += L::N;
        }
        if l < k {
            dot_step::<L, R, J, false>(&mut acc, ap, lda, wp, k, l);
        }
        for (o, acc_r) in out.iter_mut().zip(&acc) {
            for j in 0..J {
                o[j] = acc_r[j].sum();
            }
        }
    }

    /// One vector of columns (from l) of [`dot_tile`]: whole (FULL) or the last, partial one.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn dot_step<L: Lanes, const R: usize, const J: usize, const FULL: bool>(
        acc: &mut [[L; J]; R],
        ap: *const f32,
        lda: usize,
        wp: *const f32,
        k: usize,
        l: usize,
    ) {
        let mut wv = [L::zero(); J];
        for (j, wj) in wv.iter_mut().enumerate() {
            let p = wp.add(j * k + l);
            *wj = if FULL { L::load(p) } else { L::load_first(p, k - l) };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let p = ap.add(r * lda + l);
            let x = if FULL { L::load(p) } else { L::load_first(p, k - l) };
            for j in 0..J {
                acc_r[j] = L::fmadd(x, wv[j], acc_r[j]);
            }
        }
    }

    /// `dot_rows` for up to 16 rows, in groups of the first (largest) row count listed: the tile
    /// for each group of rows and the one or two weight rows in `w`.
    macro_rules! dot_groups {
        ($L:ty, $($r:literal)* ; $a:ident, $lda:ident, $m:ident, $k:ident, $w:ident, $ahead:ident, $out:ident) => {{
            let (pair, most) = ($w.len() / $k, [$($r),*][0]);
            let mut i = 0;
            while i < $m {
                let (r, o) = (($m - i).min(most), &mut $out[i..]);
                match (r, pair) {
                    $(
                        ($r, 2) => dot_tile::<$L, $r, 2>($a, $lda, i, $k, $w, $ahead, o),
                        ($r, _) => dot_tile::<$L, $r, 1>($a, $lda, i, $k, $w, $ahead, o),
                    )*
                    (_, 2) => dot_tile::<$L, 1, 2>($a, $lda, i, $k, $w, $ahead, o),
                    _ => dot_tile::<$L, 1, 1>($a, $lda, i, $k, $w, $ahead, o),
                }
                i += r;
            }
        }};
    }

    /// `dot_rows` on AVX-512F: up to 8 rows per tile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows_512(
        a: &[f32],
        lda: usize,
        m: usize,
        k: usize,
        w: &[f32],
        ahead: &[f32],
        out: &mut [[f32; 2]],
    ) {
        dot_groups!(F32x16, 8 7 6 5 4 3 2; a, lda, m, k, w, ahead, out)
    }

    /// `dot_rows` on AVX2 with FMA: up to AVX2_ROWS rows per tile.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_256(
        a: &[f32],
        lda: usize,
        m: usize,
        k: usize,
        w: &[f32],
        ahead: &[f32],
        out: &mut [[f32; 2]],
    ) {
        dot_groups!(F32x8, 4 3 2; a, lda, m, k, w, ahead, out)
    }

    /// One register tile's operands: part[r * ldp ..][..w] += sum over l < rows of a[r * ar + l *
    /// al] * b[l * ldb ..][..w] (a's strides (ar, al) say whether its rows or its columns are
    /// contiguous).
    #[derive(Clone, Copy)]
    pub(crate) struct Tile {
        pub(crate) a: *const f32,
        pub(crate) ar: usize,
        pub(crate) al: usize,
        pub(crate) b: *const f32,
        pub(crate) ldb: usize,
        pub(crate) rows: usize,
        pub(crate) w: usize,
        pub(crate) part: *mut f32,
        pub(crate) ldp: usize,
    }

    /// The sums of [`Tile`] for r < R, w <= V N columns: the register tile of both mixture
    /// kernels (R x V sums, one broadcast of a[r, l] per V FMAs). `after_load(l V + v, x)` runs
    /// after each vector x of b is loaded (row l, vector v): the kernels prefetch there, and
    /// nn_chunk packs the tile. Lanes past w are neither read nor written.
    ///
    /// # Safety
    /// L's features; a[r * ar + l * al], the first w floats of b's rows and of part's R rows in
    /// bounds.
    #[inline(always)]
    pub(crate) unsafe fn sum_tile<L: Lanes, const R: usize, const V: usize>(
        t: Tile,
        after_load: &mut impl FnMut(usize, L),
    ) {
        if t.w >= V * L::N {
            tile_sums::<L, R, V, true>(t, after_load)
        } else {
            tile_sums::<L, R, V, false>(t, after_load)
        }
    }

    /// Pass p of a tile over G groups of R rows and then the REM rows left (p = G): [`sum_tile`]
    /// on that group's rows of `a` and `part`.
    #[inline(always)]
    pub(crate) unsafe fn group_pass<L: Lanes, const R: usize, const V: usize, const REM: usize>(
        groups: usize,
        p: usize,
        t: Tile,
        after_load: &mut impl FnMut(usize, L),
    ) {
        let t = Tile {
            a: t.a.add(p * R * t.ar),
            part: t.part.add(p * R * t.ldp),
            ..t
        };
        if REM == 0 || p < groups {
            sum_tile::<L, R, V>(t, after_load)
        } else {
            sum_tile::<L, REM, V>(t, after_load)
        }
    }

    /// [`sum_tile`] with its width known whole (FULL: plain loads) or partial (masked loads).
    #[inline(always)]
    unsafe fn tile_sums<L: Lanes, const R: usize, const V: usize, const FULL: bool>(
        t: Tile,
        after_load: &mut impl FnMut(usize, L),
    ) {
        let Tile {
            a,
            ar,
            al,
            b,
            ldb,
            rows,
            w,
            part,
            ldp,
        } = t;
        // Vector v holds w - v N of the tile's w columns (at most N); a fully masked vector may start
        // past the end of b (wrapping_add): it is never read.
        let mut acc = [[L::zero(); V]; R];
        let mut bv = [L::zero(); V];
        for l in 0..rows {
            for (v, bv) in bv.iter_mut().enumerate() {
                let p = b.wrapping_add(l * ldb + v * L::N);
                *bv = if FULL {
                    L::load(p)
                } else {
                    L::load_first(p, w.saturating_sub(v * L::N))
                };
                after_load(l * V + v, *bv);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = L::splat(*a.add(r * ar + l * al));
                for v in 0..V {
                    acc_r[v] = L::fmadd(x, bv[v], acc_r[v]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, &s) in acc_r.iter().enumerate() {
                let p = part.wrapping_add(r * ldp + v * L::N);
                if FULL {
                    L::store(p, L::add(L::load(p), s));
                } else {
                    let wv = w.saturating_sub(v * L::N);
                    L::store_first(p, wv, L::add(L::load_first(p, wv), s));
                }
            }
        }
    }

    /// Floats per row of nn_chunk's packed tile: the widest tile that takes several passes
    /// (AVX2's 2 x 8).
    const PACKED_WIDTH: usize = 16;

    /// part[r, ..] += sum over l < kc of a[r, l] * b[l, ..] for r < G R + REM; b: [kb >= kc, n],
    /// part: [G R + REM, n]. Rows go in blocks of NN_ROW_BLOCK; within a block, tiles of V N
    /// columns are summed in registers ([`sum_tile`]) for each group of R rows of `a` (G groups,
    /// then the REM rows left). One pass per tile (AVX-512) prefetches the next block one line
    /// per vector load, in memory order. Where a tile takes several passes (AVX2), the first
    /// copies its rows into `packed`, contiguous, and the others read them there: b's rows are n
    /// floats apart (3 KiB for d = 768, which puts a tile's 64 lines in 4 of L1's 64 sets), so
    /// read in place they came from L2 on every pass; and it prefetches each row's line two tiles
    /// on, which measured faster there than the next-block stream (8.8-8.9 against 10.0-10.6 ms
    /// for the mixture of 16 rows, `softcot bench --workload head-products --batch 16`, Zen 2).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn nn_chunk<L: Lanes, const R: usize, const V: usize, const REM: usize>(
        groups: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        n: usize,
        kc: usize,
        part: &mut [f32],
    ) {
        let (bp, kb) = (b.as_ptr(), b.len() / n);
        let (passes, vn) = (groups + usize::from(REM > 0), V * L::N);
        assert!(
            passes == 1 || vn <= PACKED_WIDTH,
            "a packed tile holds {PACKED_WIDTH} columns"
        );
        // packed: [NN_ROW_BLOCK, vn] the tile's rows, for the passes after the first. Left
        // uninitialised: a pass reads only the rows and columns the first pass of its tile wrote,
        // and one pass (AVX-512) never touches it, so zeroing it was 4 KiB of stores per call
        // (a tied soft head calls once per 64-row block of E).
        let mut packed = core::mem::MaybeUninit::<[f32; super::NN_ROW_BLOCK * PACKED_WIDTH]>::uninit();
        let pk = packed.as_mut_ptr() as *mut f32;
        let mut r0 = 0;
        while r0 < kc {
            let r1 = (r0 + super::NN_ROW_BLOCK).min(kc);
            // The next block's floats, [pf, pf_end) of b: past row kc too, up to b's end.
            let (mut pf, pf_end) = (r1 * n, (r1 + super::NN_ROW_BLOCK).min(kb) * n);
            for c0 in (0..n).step_by(vn) {
                let (rows, w) = (r1 - r0, n - c0);
                let t = Tile {
                    a: a.as_ptr().add(r0),
                    ar: lda,
                    al: 1,
                    b: bp.add(r0 * n + c0),
                    ldb: n,
                    rows,
                    w,
                    part: part.as_mut_ptr().add(c0),
                    ldp: n,
                };
                let mut first = |i: usize, x: L| {
                    if passes == 1 {
                        if pf < pf_end {
                            prefetch_l2(bp.add(pf));
                            pf += 16;
                        }
                        return;
                    }
                    L::store(pk.add(i * L::N), x);
                    // Row l's line two tiles on (one line: vn <= 16), past the block's last tiles
                    // the next block's first ones.
                    let (l, c2) = (i / V, c0 + 2 * vn);
                    if i.is_multiple_of(V) {
                        if c2 < n {
                            prefetch_l2(bp.add((r0 + l) * n + c2));
                        } else if r1 + l < kb {
                            prefetch_l2(bp.add((r1 + l) * n + c2 - n));
                        }
                    }
                };
                group_pass::<L, R, V, REM>(groups, 0, t, &mut first);
                let packed = Tile { b: pk, ldb: vn, ..t };
                for p in 1..passes {
                    group_pass::<L, R, V, REM>(groups, p, packed, &mut |_, _| {});
                }
            }
            r0 = r1;
        }
    }

    /// [`super::nn_block`] on AVX-512F: all m rows in one tile, V = 3 vectors up to 8 rows, 2 up
    /// to 10, 1 up to 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn nn_block_512(a: &[f32], lda: usize, b: &[f32], n: usize, kc: usize, m: usize, part: &mut [f32]) {
        macro_rules! rows {
            ($($m:literal => $v:literal),*) => {
                match m {
                    $($m => nn_chunk::<F32x16, $m, $v, 0>(1, a, lda, b, n, kc, part),)*
                    _ => {}
                }
            };
        }
        rows!(16 => 1, 15 => 1, 14 => 1, 13 => 1, 12 => 1, 11 => 1, 10 => 2, 9 => 2,
              8 => 3, 7 => 3, 6 => 3, 5 => 3, 4 => 3, 3 => 3, 2 => 3, 1 => 3)
    }

    /// `kernel::<F32x8, AVX2_ROWS, 2, m % AVX2_ROWS>(m / AVX2_ROWS, args..)`: a kernel over
    /// groups of rows entered for AVX2's register tile (AVX2_ROWS rows x 2 vectors).
    macro_rules! avx2_groups {
        ($kernel:ident, $m:expr, $($arg:expr),*) => {{
            let g = $m / AVX2_ROWS;
            match $m % AVX2_ROWS {
                0 => $kernel::<F32x8, AVX2_ROWS, 2, 0>(g, $($arg),*),
                1 => $kernel::<F32x8, AVX2_ROWS, 2, 1>(g, $($arg),*),
                2 => $kernel::<F32x8, AVX2_ROWS, 2, 2>(g, $($arg),*),
                _ => $kernel::<F32x8, AVX2_ROWS, 2, 3>(g, $($arg),*),
            }
        }};
    }
    pub(crate) use avx2_groups;
    const _: () = assert!(AVX2_ROWS == 4, "avx2_groups has an arm per remainder");

    /// [`super::nn_block`] on AVX2 with FMA: groups of AVX2_ROWS rows, two vectors of columns.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn nn_block_256(a: &[f32], lda: usize, b: &[f32], n: usize, kc: usize, m: usize, part: &mut [f32]) {
        avx2_groups!(nn_chunk, m, a, lda, b, n, kc, part)
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
        let (lda, k) = (53, 45);
        let val = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 250.0;
        let a: Vec<f32> = (0..16 * lda).map(val).collect();
        let w: Vec<f32> = (0..3 * k).map(|i| val(i + 17)).collect();
        for simd in Simd::available() {
            let mut worst = 0f64;
            for m in [1, 2, 3, 5, 8, 11, 14, 16] {
                for pair in [1, 2] {
                    let mut out = [[0f32; 2]; 16];
                    // SAFETY: Simd::available() holds only the levels this CPU runs.
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

    /// nn_block at every level with register-tile kernels this CPU has, m = 1..16 (every group
    /// and remainder of rows), a width ending on a partial vector, a chunk crossing a block and b
    /// going on past it (prefetched, not summed), against float64.
    #[test]
    fn nn_block_levels_agree_with_f64() {
        let (kc, n, lda) = (NN_ROW_BLOCK + 9, 53, NN_ROW_BLOCK + 12);
        let val = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 500.0;
        // a: [16, lda]; b: [kc + 5, n]
        let a: Vec<f32> = (0..16 * lda).map(val).collect();
        let b: Vec<f32> = (0..(kc + 5) * n).map(|i| val(i + 31)).collect();
        let levels: Vec<Simd> = Simd::available().into_iter().filter(|s| s.vector()).collect();
        if levels.is_empty() {
            println!("skipped: no AVX2 or AVX-512F on this CPU (nn_block needs one)");
        }
        for simd in levels {
            let mut worst = 0f64;
            for m in 1..=SKINNY_MAX_M {
                let mut part = vec![0.5f32; m * n];
                nn_block_at(simd, &a, lda, &b, kc, m, n, &mut part);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = 0.5
                            + (0..kc)
                                .map(|l| a[i * lda + l] as f64 * b[l * n + j] as f64)
                                .sum::<f64>();
                        worst = worst.max((part[i * n + j] as f64 - want).abs());
                    }
                }
            }
            println!("nn_block {simd:?}: max abs err {worst:.2e} vs f64 (m = 1..16, {kc} x {n})");
            assert!(worst < 1e-4, "{simd:?}: {worst}");
        }
    }
}
