//! Which layout of E lets the soft mixture `p[8, 32000] @ E[32000, 768]` stream at the memory's
//! rate (the figures behind `backend-cpu/src/mixture_table.rs`). One register-tile kernel (8 rows x
//! 48 columns summed over 64 rows of E at a time, as the backend's) runs over E stored
//!   rows:      as checkpoints store it, the next 64-row block prefetched into L2 (the kernel before),
//!   rows-nopf: the same without the prefetch (what the hardware prefetcher alone makes of it),
//!   tiled:     chunk by chunk of 2048 rows, each chunk tile by tile (48 columns of all its rows),
//!   tiled-64:  the same with the chunk cut into 64-row pieces.
//! Each call first streams 256 MB of other data (E leaves the caches, as in a decode step); a
//! round prints that stream's rate R beside each layout's median GB/s over 7 calls.
//!   cd tools/kernel-probes && RUSTFLAGS="-C target-cpu=native" cargo run --release --bin mixture_layouts

use rayon::prelude::*;
use std::arch::x86_64::*;
use std::time::Instant;

const D: usize = 768;
const V: usize = 32000;
const ROWS: usize = 8;
const CHUNK: usize = 2048;
const SUM: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Rows { prefetch: bool },
    Tiled { piece: usize },
}

/// E in `layout`: row j, column c of chunk (l0, kc) at l0 * D + c0 * kc' + (j - p0) * 48 + c % 48,
/// where pieces of `piece` rows (p0 their first) each hold all 16 tiles.
fn store(e: &[f32], layout: Layout) -> Vec<f32> {
    let Layout::Tiled { piece } = layout else { return e.to_vec() };
    let mut out = vec![0f32; V * D];
    for p0 in (0..V).step_by(piece) {
        let n = piece.min(V - p0);
        for c0 in (0..D).step_by(48) {
            for j in 0..n {
                let src = &e[(p0 + j) * D + c0..(p0 + j) * D + c0 + 48];
                out[p0 * D + c0 * n + j * 48..][..48].copy_from_slice(src);
            }
        }
    }
    out
}

/// part[8, 48] (row stride D) += a[8, rows] (row stride lda) @ b[rows, 48] (row stride ldb),
/// prefetching `pf` (one line per vector load) when given.
#[target_feature(enable = "avx512f")]
unsafe fn tile(a: *const f32, lda: usize, b: *const f32, ldb: usize, rows: usize, part: *mut f32, pf: &mut Option<*const f32>) {
    let mut acc = [[_mm512_setzero_ps(); 3]; ROWS];
    for l in 0..rows {
        let mut bv = [_mm512_setzero_ps(); 3];
        for (v, bv) in bv.iter_mut().enumerate() {
            if let Some(p) = pf {
                _mm_prefetch::<_MM_HINT_T1>(*p as *const i8);
                *p = p.wrapping_add(16);
            }
            *bv = _mm512_loadu_ps(b.add(l * ldb + 16 * v));
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.add(r * lda + l));
            for v in 0..3 {
                acc[v] = _mm512_fmadd_ps(x, bv[v], acc[v]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, acc) in acc.iter().enumerate() {
            let p = part.add(r * D + 16 * v);
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *acc));
        }
    }
}

/// One chunk's rows [l0, l0 + kc) of `e` in `layout`, summed into part[8, D].
#[target_feature(enable = "avx512f")]
unsafe fn chunk(p: &[f32], e: &[f32], layout: Layout, l0: usize, kc: usize, part: &mut [f32]) {
    let (a, ep, out) = (p.as_ptr().add(l0), e.as_ptr(), part.as_mut_ptr());
    match layout {
        Layout::Rows { prefetch } => {
            for b0 in (0..kc).step_by(SUM) {
                let rows = SUM.min(kc - b0);
                // The next block, in memory order, over this block's tiles.
                let next = ((l0 + b0 + rows) * D).min(e.len() - 16);
                let mut pf = prefetch.then(|| ep.add(next));
                for c0 in (0..D).step_by(48) {
                    tile(a.add(b0), V, ep.add((l0 + b0) * D + c0), D, rows, out.add(c0), &mut pf);
                }
            }
        }
        Layout::Tiled { piece } => {
            for q0 in (0..kc).step_by(piece) {
                let n = piece.min(kc - q0);
                let base = ep.add((l0 + q0) * D);
                for c0 in (0..D).step_by(48) {
                    for b0 in (0..n).step_by(SUM) {
                        let b = base.add(c0 * n + b0 * 48);
                        tile(a.add(q0 + b0), V, b, 48, SUM.min(n - b0), out.add(c0), &mut None);
                    }
                }
            }
        }
    }
}

/// mix[8, D] = p @ E, chunks in parallel, partials added in chunk order.
fn mixture(p: &[f32], e: &[f32], layout: Layout, partial: &mut [f32]) -> Vec<f32> {
    partial.fill(0.0);
    partial.par_chunks_mut(ROWS * D).enumerate().for_each(|(ci, part)| {
        let l0 = ci * CHUNK;
        // SAFETY: AVX-512F checked in main; every read is inside p and e.
        unsafe { chunk(p, e, layout, l0, CHUNK.min(V - l0), part) }
    });
    let mut mix = vec![0f32; ROWS * D];
    for part in partial.chunks_exact(ROWS * D) {
        mix.iter_mut().zip(part).for_each(|(m, x)| *m += x);
    }
    mix
}

/// Two threads streaming `x` (its sum, so that the reads are not optimised away); GB/s.
fn stream(x: &[f32]) -> f64 {
    let t = Instant::now();
    // 64 running sums per thread: vector adds, not one dependent chain.
    let lanes = |c: &[f32]| c.chunks_exact(64).fold([0f32; 64], |mut a, x| {
        a.iter_mut().zip(x).for_each(|(a, x)| *a += x);
        a
    });
    let s: f32 = x.par_chunks(x.len() / 2).map(|c| lanes(c).iter().sum::<f32>()).sum();
    std::hint::black_box(s);
    (x.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    assert!(std::is_x86_feature_detected!("avx512f"), "this probe needs AVX-512F");
    let p: Vec<f32> = (0..ROWS * V).map(|i| (i % 97) as f32 * 1e-5).collect();
    let e: Vec<f32> = (0..V * D).map(|i| (i % 89) as f32 * 1e-3).collect();
    let other: Vec<f32> = (0..64 << 20).map(|i| (i % 7) as f32).collect();
    let layouts = [
        ("rows", Layout::Rows { prefetch: true }),
        ("rows-nopf", Layout::Rows { prefetch: false }),
        ("tiled", Layout::Tiled { piece: CHUNK }),
        ("tiled-64", Layout::Tiled { piece: SUM }),
    ];
    let stored: Vec<Vec<f32>> = layouts.iter().map(|&(_, l)| store(&e, l)).collect();
    let mut partial = vec![0f32; V.div_ceil(CHUNK) * ROWS * D];
    let want = mixture(&p, &e, layouts[0].1, &mut partial);
    for round in 0..4 {
        let mut line = format!("round {round}: R {:5.1} GB/s |", stream(&other));
        for ((name, layout), e) in layouts.iter().zip(&stored) {
            let mut secs: Vec<f64> = (0..7)
                .map(|_| {
                    stream(&other);
                    let t = Instant::now();
                    let got = mixture(&p, e, *layout, &mut partial);
                    let s = t.elapsed().as_secs_f64();
                    assert_eq!(got, want, "{name}: another result than rows");
                    s
                })
                .collect();
            secs.sort_by(f64::total_cmp);
            line += &format!(" {name} {:.2} ms {:.1} GB/s |", secs[3] * 1e3, (V * D * 4) as f64 / secs[3] / 1e9);
        }
        println!("{line}");
    }
}
