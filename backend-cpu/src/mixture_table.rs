//! E as the untied soft head's mixture reads it: tiled so that the product streams memory in order.
//!
//! The mixture `p[m, V] @ E[V, d]` keeps m x 48 output columns in registers and runs down E's rows.
//! Stored as they are, those 48 columns of one row are 192 bytes of every 3 KiB (d = 768): the
//! hardware prefetcher cannot follow, so the kernel prefetched each next block itself, and that
//! read E at 36-40 GB/s where the memory gives ~50 (`tools/kernel-probes`, `--bin
//! mixture_layouts`). Here each vocabulary chunk of the soft head (NN_K_CHUNK rows) is stored tile
//! by tile: tile t holds columns 48t.. of all the chunk's rows, row after row, so one task reads its
//! chunk front to back, 384 KiB per tile, and the same product ran at 48-50 GB/s.
//!
//! Layout of chunk c (rows l0..l1, kc = l1 - l0), tile at column c0 of width tw = min(48, d - c0):
//! element (l, c0 + i) at `l0 * d + c0 * kc + (l - l0) * tw + i`. The copy is as large as E; it is
//! kept beside the buffer ([`crate::buffer::CpuBuf`]) until E is next written.
//!
//! Up to TILED_MAX_ROWS rows only: there a row of E costs 24 FMAs per 48 columns and the product is
//! bound by memory. From 9 rows on it is bound by its FMAs (16 rows: twice as many per byte), the
//! register tile covers fewer columns, and the row layout measured faster (the whole soft head at
//! 16 rows: 10.4-10.7 ms as stored, 11.5-12.1 tiled; `softcot bench --workload head-products
//! --batch 16`).

use rayon::prelude::*;

use crate::gemm::NN_K_CHUNK;

/// Columns of a tile: the 8-row kernel's 3 x 16 lanes.
pub(crate) const TILE: usize = 48;

/// Most rows of p a product over the tiled copy takes (module docs).
pub(crate) const TILED_MAX_ROWS: usize = 8;

/// Largest table given a tiled copy: 2^28 floats (1 GiB). Beyond it the copy's memory outweighs
/// what it saves: an untied 8B model's E (128256 x 4096, 2.1 GB) is ~6% of the weights a decode
/// step reads, so a mixture 25% faster saves ~1.5% of a step for 6% more memory.
pub(crate) const TILED_MAX_FLOATS: usize = 1 << 28;

/// Rows summed in registers before they are added to the partial sums: NN_ROW_BLOCK, the blocks
/// the row-layout kernel sums (so the two give the same floats, and a float32 sum of 64 terms
/// at a time keeps the rounding of a long chunk down).
const SUM_ROWS: usize = crate::gemm::NN_ROW_BLOCK;

/// Blocks of SUM_ROWS rows in a chunk: one bit each in [`nn_tiled`]'s mask.
pub(crate) const CHUNK_BLOCKS: usize = NN_K_CHUNK / SUM_ROWS;
const _: () = assert!(CHUNK_BLOCKS <= 64 && CHUNK_BLOCKS * SUM_ROWS == NN_K_CHUNK);

/// A [v, d] table in the tiled layout.
pub(crate) struct Table {
    pub(crate) v: usize,
    pub(crate) d: usize,
    /// data: [v * d] chunk by chunk, tile by tile (module docs)
    data: Vec<f32>,
}

/// `src` ([v, d] rows) in the tiled layout. Parallel over chunks.
pub(crate) fn tile(src: &[f32], v: usize, d: usize) -> Table {
    let mut data = vec![0f32; v * d];
    if d > 0 {
        data.par_chunks_mut(NN_K_CHUNK * d)
            .zip(src.par_chunks(NN_K_CHUNK * d))
            .for_each(|(dst, src)| {
                let kc = src.len() / d;
                for c0 in (0..d).step_by(TILE) {
                    let tw = TILE.min(d - c0);
                    let piece = &mut dst[c0 * kc..(c0 + tw) * kc];
                    for (l, out) in piece.chunks_exact_mut(tw).enumerate() {
                        out.copy_from_slice(&src[l * d + c0..l * d + c0 + tw]);
                    }
                }
            });
    }
    Table { v, d, data }
}

impl Table {
    /// Chunk `ci`'s rows, tiled: [kc * d].
    pub(crate) fn chunk(&self, ci: usize) -> &[f32] {
        let (l0, l1) = (ci * NN_K_CHUNK, ((ci + 1) * NN_K_CHUNK).min(self.v));
        &self.data[l0 * self.d..l1 * self.d]
    }

    /// Row j gathered back (the layout's definition, for tests).
    #[cfg(test)]
    pub(crate) fn row(&self, j: usize) -> Vec<f32> {
        let (ci, l) = (j / NN_K_CHUNK, j % NN_K_CHUNK);
        let chunk = self.chunk(ci);
        let kc = chunk.len() / self.d;
        (0..self.d)
            .map(|c| {
                let (c0, tw) = (c - c % TILE, TILE.min(self.d - (c - c % TILE)));
                chunk[c0 * kc + l * tw + c % TILE]
            })
            .collect()
    }
}

/// part[m, d] += a^T @ rows for m <= TILED_MAX_ROWS, with `at` = a^T: [kc, m] (the m weights of
/// each row of E side by side, so the tile's broadcasts read one line per row) and `chunk` one
/// chunk of a [`Table`] ([kc * d], tiled), over the blocks of SUM_ROWS rows whose bit is set in
/// `live` (bit b: rows 64b..; the others are neither read nor added). Each tile's m x 48 sums
/// stay in registers for SUM_ROWS rows. Needs AVX-512F ([`crate::gemm::has_avx512`], checked by
/// the caller).
pub(crate) fn nn_tiled(at: &[f32], chunk: &[f32], kc: usize, m: usize, d: usize, live: u64, part: &mut [f32]) {
    assert!(m <= TILED_MAX_ROWS && part.len() >= m * d && chunk.len() == kc * d && at.len() >= kc * m);
    assert!(kc <= NN_K_CHUNK, "a chunk has at most {CHUNK_BLOCKS} blocks");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (the callers check); reads stay within at[kc, m] and chunk,
    // writes within part[m, d] (asserted above).
    unsafe {
        match m {
            8 => x86::tiles::<8>(at, chunk, kc, d, live, part),
            7 => x86::tiles::<7>(at, chunk, kc, d, live, part),
            6 => x86::tiles::<6>(at, chunk, kc, d, live, part),
            5 => x86::tiles::<5>(at, chunk, kc, d, live, part),
            4 => x86::tiles::<4>(at, chunk, kc, d, live, part),
            3 => x86::tiles::<3>(at, chunk, kc, d, live, part),
            2 => x86::tiles::<2>(at, chunk, kc, d, live, part),
            1 => x86::tiles::<1>(at, chunk, kc, d, live, part),
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, chunk, kc, d, live, part);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::gemm::x86::{sum_tile, tile_masks};

    use super::{SUM_ROWS, TILE};

    /// part[r, ..d] += sum over the live blocks' rows l of at[l, r] * chunk row l, for r < R: per
    /// tile, R x 48 sums in registers over SUM_ROWS rows at a time ([`sum_tile`]), the tile's rows
    /// read in memory order.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles<const R: usize>(at: &[f32], chunk: &[f32], kc: usize, d: usize, live: u64, part: &mut [f32]) {
        for c0 in (0..d).step_by(TILE) {
            let tw = TILE.min(d - c0);
            // piece: [kc, tw] the tile's rows
            let piece = chunk.as_ptr().add(c0 * kc);
            for b0 in (0..kc).step_by(SUM_ROWS).filter(|b0| live >> (b0 / SUM_ROWS) & 1 == 1) {
                let (a0, rows) = (at.as_ptr().add(b0 * R), SUM_ROWS.min(kc - b0));
                let (b, p0) = (piece.add(b0 * tw), part.as_mut_ptr().add(c0));
                sum_tile::<R, 3>(a0, (1, R), b, tw, rows, tile_masks(tw), p0, d, || {});
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout holds every element where `row` looks for it, over chunk and tile edges.
    #[test]
    fn tiling_keeps_every_row() {
        for (v, d) in [(1, 1), (5, 47), (NN_K_CHUNK + 3, 100), (2 * NN_K_CHUNK, 48)] {
            let src: Vec<f32> = (0..v * d).map(|i| i as f32).collect();
            let t = tile(&src, v, d);
            for j in [0, v / 2, v - 1] {
                assert_eq!(t.row(j), &src[j * d..(j + 1) * d], "row {j} of [{v}, {d}]");
            }
        }
    }

    /// nn_tiled against a float64 product, for every row count and a width with a partial tile.
    #[test]
    fn nn_tiled_matches_f64() {
        if !crate::gemm::has_avx512() {
            eprintln!("skipped: no AVX-512F on this CPU (nn_tiled needs it)");
            return;
        }
        let (kc, d) = (37, 100);
        let e: Vec<f32> = (0..kc * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let t = tile(&e, kc, d);
        let mut worst = 0f64;
        for m in 1..=TILED_MAX_ROWS {
            // at: [kc, m]
            let at: Vec<f32> = (0..kc * m).map(|i| ((i * 104729 % 997) as f32 / 997.0) - 0.5).collect();
            let mut part = vec![0.25f32; m * d];
            nn_tiled(&at, t.chunk(0), kc, m, d, u64::MAX, &mut part);
            for r in 0..m {
                for c in 0..d {
                    let want = 0.25 + (0..kc).map(|l| at[l * m + r] as f64 * e[l * d + c] as f64).sum::<f64>();
                    worst = worst.max((part[r * d + c] as f64 - want).abs());
                }
            }
        }
        eprintln!("nn_tiled: max abs error {worst:.2e} (37 rows, width 100, m = 1..8)");
        assert!(worst < 1e-5, "nn_tiled error {worst}");
    }

    /// Blocks left out of the mask are not added, and are not read: NaN rows there change nothing.
    #[test]
    fn nn_tiled_skips_the_blocks_left_out() {
        if !crate::gemm::has_avx512() {
            eprintln!("skipped: no AVX-512F on this CPU (nn_tiled needs it)");
            return;
        }
        let (kc, d, m) = (200, 50, 3);
        let live = 0b1010u64; // rows 64..128 and 192..200
        let is_live = |l: usize| live >> (l / SUM_ROWS) & 1 == 1;
        let e: Vec<f32> = (0..kc * d)
            .map(|i| {
                if is_live(i / d) {
                    ((i * 7919 % 1000) as f32 / 500.0) - 1.0
                } else {
                    f32::NAN
                }
            })
            .collect();
        let t = tile(&e, kc, d);
        // at: [kc, m]
        let at: Vec<f32> = (0..kc * m).map(|i| ((i * 104729 % 997) as f32 / 997.0) - 0.5).collect();
        let mut part = vec![0f32; m * d];
        nn_tiled(&at, t.chunk(0), kc, m, d, live, &mut part);
        let mut worst = 0f64;
        for r in 0..m {
            for c in 0..d {
                let want: f64 = (0..kc)
                    .filter(|&l| is_live(l))
                    .map(|l| at[l * m + r] as f64 * e[l * d + c] as f64)
                    .sum();
                worst = worst.max((part[r * d + c] as f64 - want).abs());
            }
        }
        eprintln!("nn_tiled, two blocks of four: max abs error {worst:.2e}");
        assert!(worst < 1e-5, "nn_tiled error {worst}");
    }
}
