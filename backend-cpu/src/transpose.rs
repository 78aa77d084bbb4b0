//! A transposed copy of a linear layer's weight, for the prefill-sized products `a @ w^T` whose
//! `w` is at least as long as it is wide (k >= n): the gemm crate packs a transposed right operand
//! slowly, and transposing `w` first then multiplying it as stored `[k, n]` costs less (measured
//! on bench-125m's shapes with m = 512: [768, 2048] 12-14 -> 8.5-11 ms, [768, 768] 3.3 -> 3.0-3.1,
//! [256, 768] 1.12 -> 0.97; for n > k, as in gate/up and the lm_head, it gained nothing; rerun with
//! `tools/kernel-probes`, `--bin linear_layouts`, before and after a71397e). The copy
//! lives in a per-thread scratch that is kept between calls, bounded by [`MAX_FLOATS`].

use std::cell::RefCell;

use rayon::prelude::*;

/// The largest weight transposed so (floats): a 64 MiB scratch at most, kept per calling thread.
pub const MAX_FLOATS: usize = 1 << 24;
/// Rows of `a` from which the copy pays for itself (a decode step's few rows never take it).
pub const MIN_ROWS: usize = 64;
/// Tile side: 16 x 16 floats, the fastest of 8x64, 16x16, 16x64, 32x32 and 64x16 on bench-125m's
/// shapes (`tools/kernel-probes`, `--bin transpose_tiles`; 32 x 32 took 1.7x as long for w: [768, 2048]).
const TILE: usize = 16;

thread_local! {
    /// This thread's transposed weight, kept between calls (allocating it per call costs a page
    /// fault per 4 KiB).
    static COPY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether `a[m, k] @ w[n, k]^T` runs on a transposed copy of w.
pub fn worth_it(m: usize, n: usize, k: usize) -> bool {
    m >= MIN_ROWS && k >= n && n * k <= MAX_FLOATS
}

/// Runs `f(wt)` with wt: [k, n] = w^T, where w: [n, k] (its first n * k floats).
pub fn with_transposed<R>(w: &[f32], n: usize, k: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    COPY.with(|c| {
        // A thread waiting inside the gemm crate's parallel loop may run another task that lands
        // here: the scratch is then in use, and that call gets a buffer of its own.
        let mut own = Vec::new();
        let mut held = c.try_borrow_mut().ok();
        let buf: &mut Vec<f32> = match held.as_deref_mut() {
            Some(v) => v,
            None => &mut own,
        };
        if buf.len() < n * k {
            buf.resize(n * k, 0.0);
        }
        transpose(&mut buf[..n * k], &w[..n * k], n, k);
        f(&buf[..n * k])
    })
}

/// wt[i, j] = w[j, i]. wt: [k, n]; w: [n, k]. Parallel over bands of TILE rows of wt.
fn transpose(wt: &mut [f32], w: &[f32], n: usize, k: usize) {
    wt.par_chunks_mut(TILE * n).enumerate().for_each(|(band, rows)| {
        let k0 = band * TILE;
        let kr = rows.len() / n;
        for n0 in (0..n).step_by(TILE) {
            let n1 = (n0 + TILE).min(n);
            for i in 0..kr {
                let dst = &mut rows[i * n + n0..i * n + n1];
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = w[(n0 + jj) * k + k0 + i];
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    /// Every element lands where it should, for shapes that are and are not multiples of the tile,
    /// and a second, smaller call reuses the larger scratch.
    #[test]
    fn transposes_exactly() {
        for &(n, k) in &[(1, 1), (3, 40), (16, 16), (33, 70), (100, 17), (2, 5)] {
            let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
            super::with_transposed(&w, n, k, |wt| {
                assert_eq!(wt.len(), n * k);
                for i in 0..k {
                    for j in 0..n {
                        assert_eq!(wt[i * n + j], w[j * k + i], "({n}, {k}) at ({i}, {j})");
                    }
                }
            });
        }
    }

    /// A call made while this thread's scratch is in use (as from a task run while waiting inside
    /// the gemm crate's parallel loop) gets its own buffer instead of panicking on the borrow.
    #[test]
    fn nested_calls_get_their_own_buffer() {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            (0..12).map(|i| i as f32).collect(),
            (0..6).map(|i| -(i as f32)).collect(),
        );
        super::with_transposed(&a, 3, 4, |at| {
            super::with_transposed(&b, 2, 3, |bt| assert_eq!(bt, [0.0, -3.0, -1.0, -4.0, -2.0, -5.0]));
            assert_eq!(at, [0.0, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0]);
        });
    }
}
