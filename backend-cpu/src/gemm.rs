//! Matrix products. General shapes go to the `gemm` crate; the skinny products of batched decode
//! (`x[m, k] @ W^T` with m <= 16 and W stored `[n, k]`) go to [`skinny`], which streams each weight
//! row once and reuses it for every input row: decode is bound by reading the weights.

use rayon::prelude::*;
use softcot_core::backend::Gemm;
use softcot_core::Result;

use crate::need;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;
/// How many weight rows ahead the skinny kernel prefetches.
const PREFETCH_ROWS: usize = 4;
/// The skinny kernel handles up to this many rows of `a`.
const SKINNY_MAX_M: usize = 16;

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
        for i0 in (0..m).step_by(8) {
            let r = (m - i0).min(8);
            skinny_nn(
                &mut c[i0 * n..(i0 + r) * n],
                &a[rows.off_a + i0 * rows.lda..],
                rows.lda,
                b,
                r,
                n,
                k,
                g.alpha,
                g.beta,
            );
        }
        return Ok(());
    }
    let a = &a[rows.off_a..];
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
    // SAFETY: the lengths were checked against the strides above (required_lens covers every element
    // the strides reach), and `c` does not alias `a` or `b` (distinct borrows).
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

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint columns of `c` (see `skinny`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`, which is `Send`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// c[m, n] = alpha * a[m, k] @ w[n, k]^T + beta * c, with a's rows `lda` apart and m small.
/// Parallel over blocks of output columns; each weight row is read once for all m rows.
#[allow(clippy::too_many_arguments)]
pub fn skinny(c: &mut [f32], a: &[f32], lda: usize, w: &[f32], m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let threads = rayon::current_num_threads().max(1);
    let block = if m * n * k < PARALLEL_MIN_MACS {
        n
    } else {
        n.div_ceil(threads * 8).max(16)
    };
    let cp = SendPtr(c.as_mut_ptr());
    (0..n.div_ceil(block)).into_par_iter().for_each(|bi| {
        let j0 = bi * block;
        let j1 = (j0 + block).min(n);
        let mut acc = [0f32; SKINNY_MAX_M];
        for j in j0..j1 {
            let wr = &w[j * k..(j + 1) * k];
            let ahead = (j + PREFETCH_ROWS).min(n - 1);
            dot_rows(a, lda, m, wr, &w[ahead * k..(ahead + 1) * k], &mut acc[..m]);
            for (i, &s) in acc[..m].iter().enumerate() {
                // SAFETY: (i, j) is inside c[m, n] (checked by the caller) and column j belongs to
                // this task alone.
                unsafe {
                    let p = cp.get().add(i * n + j);
                    *p = if beta == 0.0 { alpha * s } else { alpha * s + beta * *p };
                }
            }
        }
    });
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns of `c` one task of [`skinny_nn`] keeps in registers (two 16-lane vectors per row).
const NN_COLS: usize = 32;

/// c[m, n] = alpha * a[m, k] @ b[k, n] + beta * c for m <= 8 and long k: the soft-thinking mixture
/// p @ E. Each task owns 32 columns for all m rows in registers and streams b's rows once
/// (prefetching ahead, as the rows are n floats apart). Needs AVX-512F (checked by the caller).
#[allow(clippy::too_many_arguments)]
fn skinny_nn(c: &mut [f32], a: &[f32], lda: usize, b: &[f32], m: usize, n: usize, k: usize, alpha: f32, beta: f32) {
    let cp = SendPtr(c.as_mut_ptr());
    let min_len = if m * n * k < PARALLEL_MIN_MACS { n } else { 1 };
    (0..n.div_ceil(NN_COLS))
        .into_par_iter()
        .with_min_len(min_len)
        .for_each(|chunk| {
            let c0 = chunk * NN_COLS;
            let width = (n - c0).min(NN_COLS);
            let mut acc = [[0f32; NN_COLS]; 8];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is present (the caller checked); reads stay within a[m, lda] and b[k, n].
            unsafe {
                match m {
                    8 => x86::nn_block::<8>(a, lda, b, n, k, c0, width, &mut acc),
                    7 => x86::nn_block::<7>(a, lda, b, n, k, c0, width, &mut acc),
                    6 => x86::nn_block::<6>(a, lda, b, n, k, c0, width, &mut acc),
                    5 => x86::nn_block::<5>(a, lda, b, n, k, c0, width, &mut acc),
                    4 => x86::nn_block::<4>(a, lda, b, n, k, c0, width, &mut acc),
                    3 => x86::nn_block::<3>(a, lda, b, n, k, c0, width, &mut acc),
                    2 => x86::nn_block::<2>(a, lda, b, n, k, c0, width, &mut acc),
                    _ => x86::nn_block::<1>(a, lda, b, n, k, c0, width, &mut acc),
                }
            }
            for (i, row) in acc.iter().enumerate().take(m) {
                for (j, &s) in row.iter().enumerate().take(width) {
                    // SAFETY: (i, c0 + j) lies in c[m, n]; these columns belong to this task alone.
                    unsafe {
                        let p = cp.get().add(i * n + c0 + j);
                        *p = if beta == 0.0 { alpha * s } else { alpha * s + beta * *p };
                    }
                }
            }
        });
}

/// out[i] = a[i * lda ..][..k] . w for i < m; `next` is the weight row that follows (prefetched).
fn dot_rows(a: &[f32], lda: usize, m: usize, w: &[f32], next: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(8);
                // SAFETY: the CPU supports AVX-512F (checked above); every row read is in bounds.
                unsafe {
                    match r {
                        8 => x86::dot_rows_512::<8>(a, lda, i, w, next, &mut out[i..i + 8]),
                        7 => x86::dot_rows_512::<7>(a, lda, i, w, next, &mut out[i..i + 7]),
                        6 => x86::dot_rows_512::<6>(a, lda, i, w, next, &mut out[i..i + 6]),
                        5 => x86::dot_rows_512::<5>(a, lda, i, w, next, &mut out[i..i + 5]),
                        4 => x86::dot_rows_512::<4>(a, lda, i, w, next, &mut out[i..i + 4]),
                        3 => x86::dot_rows_512::<3>(a, lda, i, w, next, &mut out[i..i + 3]),
                        2 => x86::dot_rows_512::<2>(a, lda, i, w, next, &mut out[i..i + 2]),
                        _ => x86::dot_rows_512::<1>(a, lda, i, w, next, &mut out[i..i + 1]),
                    }
                }
                i += r;
            }
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(4);
                // SAFETY: the CPU supports AVX2 and FMA (checked above); every row read is in bounds.
                unsafe {
                    match r {
                        4 => x86::dot_rows_256::<4>(a, lda, i, w, &mut out[i..i + 4]),
                        3 => x86::dot_rows_256::<3>(a, lda, i, w, &mut out[i..i + 3]),
                        2 => x86::dot_rows_256::<2>(a, lda, i, w, &mut out[i..i + 2]),
                        _ => x86::dot_rows_256::<1>(a, lda, i, w, &mut out[i..i + 1]),
                    }
                }
                i += r;
            }
            return;
        }
    }
    let _ = next;
    for (i, o) in out.iter_mut().enumerate().take(m) {
        let row = &a[i * lda..i * lda + w.len()];
        *o = row.iter().zip(w).map(|(x, y)| x * y).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// R rows against one weight row, 16 lanes x 2 accumulators per row; prefetches `next` (the
    /// weight row a few rows ahead) so the stream of weights arrives before it is needed.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows_512<const R: usize>(
        a: &[f32],
        lda: usize,
        i0: usize,
        w: &[f32],
        next: &[f32],
        out: &mut [f32],
    ) {
        let k = w.len();
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let rows: [&[f32]; R] = core::array::from_fn(|r| &a[(i0 + r) * lda..(i0 + r) * lda + k]);
        let mut l = 0;
        while l + 32 <= k {
            if l < next.len() {
                _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(l) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add((l + 16).min(next.len() - 1)) as *const i8);
            }
            let w0 = _mm512_loadu_ps(w.as_ptr().add(l));
            let w1 = _mm512_loadu_ps(w.as_ptr().add(l + 16));
            for r in 0..R {
                acc0[r] = _mm512_fmadd_ps(_mm512_loadu_ps(rows[r].as_ptr().add(l)), w0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(rows[r].as_ptr().add(l + 16)), w1, acc1[r]);
            }
            l += 32;
        }
        for r in 0..R {
            let mut t = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
            for ll in l..k {
                t += rows[r][ll] * w[ll];
            }
            out[r] = t;
        }
    }

    /// acc[r][..width] = sum over l of a[r, l] * b[l, c0 .. c0 + width] for r < R, width <= 32.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn nn_block<const R: usize>(
        a: &[f32],
        lda: usize,
        b: &[f32],
        n: usize,
        k: usize,
        c0: usize,
        width: usize,
        acc: &mut [[f32; 32]; 8],
    ) {
        const AHEAD: usize = 16;
        let m0: __mmask16 = if width >= 16 {
            0xffff
        } else {
            (1u32 << width) as u16 - 1
        };
        let m1: __mmask16 = if width >= 32 {
            0xffff
        } else if width > 16 {
            (1u32 << (width - 16)) as u16 - 1
        } else {
            0
        };
        let mut s0 = [_mm512_setzero_ps(); R];
        let mut s1 = [_mm512_setzero_ps(); R];
        let bp = b.as_ptr().add(c0);
        for l in 0..k {
            if l + AHEAD < k {
                _mm_prefetch::<_MM_HINT_T0>(bp.add((l + AHEAD) * n) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(bp.add((l + AHEAD) * n + width - 1) as *const i8);
            }
            let b0 = _mm512_maskz_loadu_ps(m0, bp.add(l * n));
            let b1 = _mm512_maskz_loadu_ps(m1, bp.add(l * n + 16));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.get_unchecked(r * lda + l));
                s0[r] = _mm512_fmadd_ps(x, b0, s0[r]);
                s1[r] = _mm512_fmadd_ps(x, b1, s1[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(acc[r].as_mut_ptr(), s0[r]);
            _mm512_storeu_ps(acc[r].as_mut_ptr().add(16), s1[r]);
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
