//! E as the untied soft head's mixture reads it: tiled so that the product streams memory in order.
//!
//! The mixture `p[m, V] @ E[V, d]` keeps m x 48 output columns in registers (AVX-512; AVX2: 4 x
//! 16) and runs down E's rows.
//! Stored as they are, those 48 columns of one row are 192 bytes of every 3 KiB (d = 768): the
//! hardware prefetcher cannot follow, so the kernel prefetched each next block itself, and that
//! read E at 36-40 GB/s where the memory gives ~50 (`tools/kernel-probes`, `--bin
//! mixture_layouts`). Here each vocabulary chunk of the soft head (NN_K_CHUNK rows) is stored tile
//! by tile: tile t holds columns 48t.. of all the chunk's rows, row after row, so one task reads its
//! chunk front to back, 384 KiB per tile, and the same product ran at 48-50 GB/s. A tile is as wide
//! as the register tile of the level that reads it ([`tile_width`]): AVX2's 16 columns, read as
//! three passes over 48-column tiles, met each line of a tile's rows on a stride of three.
//!
//! Layout of chunk c (rows l0..l1, kc = l1 - l0), tile at column c0 of width tw = min(T, d - c0)
//! for the table's tile width T:
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
use crate::lanes::Simd;

/// Columns of a tile for the kernels of `simd`: their register tile's V x N (AVX-512F: 3 x 16;
/// AVX2: 2 x 8).
pub(crate) fn tile_width(simd: Simd) -> usize {
    match simd {
        Simd::Avx512 => 48,
        Simd::Avx2 | Simd::Scalar => 16,
    }
}

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

/// Blocks of SUM_ROWS rows in a chunk: one bit each in [`Table::mix_chunk`]'s mask.
pub(crate) const CHUNK_BLOCKS: usize = NN_K_CHUNK / SUM_ROWS;
const _: () = assert!(CHUNK_BLOCKS <= 64 && CHUNK_BLOCKS * SUM_ROWS == NN_K_CHUNK);

/// A [v, d] table in the tiled layout.
pub(crate) struct Table {
    pub(crate) v: usize,
    pub(crate) d: usize,
    /// The level whose kernels read it, which sets its tile width ([`tile_width`]).
    simd: Simd,
    /// data: [v * d] chunk by chunk, tile by tile (module docs)
    data: Vec<f32>,
}

/// `src` ([v, d] rows) in the tiled layout for this CPU's kernels. Parallel over chunks.
pub(crate) fn tile(src: &[f32], v: usize, d: usize) -> Table {
    tile_for(Simd::best(), src, v, d)
}

/// [`tile`] for the kernels of `simd` (the tests tile for each level).
fn tile_for(simd: Simd, src: &[f32], v: usize, d: usize) -> Table {
    let width = tile_width(simd);
    let mut data = vec![0f32; v * d];
    if d > 0 {
        data.par_chunks_mut(NN_K_CHUNK * d)
            .zip(src.par_chunks(NN_K_CHUNK * d))
            .for_each(|(dst, src)| {
                let kc = src.len() / d;
                for c0 in (0..d).step_by(width) {
                    let tw = width.min(d - c0);
                    let piece = &mut dst[c0 * kc..(c0 + tw) * kc];
                    for (l, out) in piece.chunks_exact_mut(tw).enumerate() {
                        out.copy_from_slice(&src[l * d + c0..l * d + c0 + tw]);
                    }
                }
            });
    }
    Table { v, d, simd, data }
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
        let (kc, width) = (chunk.len() / self.d, tile_width(self.simd));
        (0..self.d)
            .map(|c| {
                let (c0, tw) = (c - c % width, width.min(self.d - (c - c % width)));
                chunk[c0 * kc + l * tw + c % width]
            })
            .collect()
    }

    /// part[m, d] += a^T @ rows of chunk `ci` for m <= TILED_MAX_ROWS, with `at` = a^T: [kc, m]
    /// (the m weights of each row of E side by side, so the tile's broadcasts read one line per
    /// row), over the blocks of SUM_ROWS rows whose bit is set in `live` (bit b: rows 64b..; the
    /// others are neither read nor added). Each tile's sums stay in registers for SUM_ROWS rows,
    /// with the kernels of the level the table was tiled for. Does nothing where the CPU has no
    /// register-tile kernels ([`crate::gemm::has_tiles`], checked by the caller).
    pub(crate) fn mix_chunk(&self, ci: usize, at: &[f32], m: usize, live: u64, part: &mut [f32]) {
        let (chunk, d) = (self.chunk(ci), self.d);
        let kc = chunk.len() / d.max(1);
        assert!(m <= TILED_MAX_ROWS && part.len() >= m * d && at.len() >= kc * m);
        assert!(kc <= NN_K_CHUNK, "a chunk has at most {CHUNK_BLOCKS} blocks");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the table was tiled for a level this CPU runs (Simd::best() or the tests'
        // available levels); reads stay within at[kc, m] and the chunk, writes within part[m, d]
        // (asserted above).
        unsafe {
            match self.simd {
                Simd::Avx512 => x86::tiled_512(at, chunk, kc, m, d, live, part),
                Simd::Avx2 => x86::tiled_256(at, chunk, kc, m, d, live, part),
                Simd::Scalar => {}
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (at, kc, live, part);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::gemm::x86::{avx2_groups, group_pass, prefetch_l2, Tile, AVX2_ROWS};
    use crate::lanes::{F32x16, F32x8, Lanes};

    use super::SUM_ROWS;

    /// part[r, ..d] += sum over the live blocks' rows l of at[l, r] * chunk row l, for r < G R +
    /// REM (`at`: [kc, G R + REM]): per tile (V N columns: the chunk was tiled for this kernel)
    /// and per group of R rows (G groups, then the REM rows left), R x V N sums in registers over
    /// SUM_ROWS rows at a time (a [`group_pass`] each), the tile's rows read in memory order by
    /// the first group and from L1 by the others, the last of which prefetches the next block.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tiles<L: Lanes, const R: usize, const V: usize, const REM: usize>(
        groups: usize,
        at: &[f32],
        chunk: &[f32],
        kc: usize,
        d: usize,
        live: u64,
        part: &mut [f32],
    ) {
        let m = groups * R + REM;
        for c0 in (0..d).step_by(V * L::N) {
            let tw = (V * L::N).min(d - c0);
            // piece: [kc, tw] the tile's rows
            let piece = chunk.as_ptr().add(c0 * kc);
            for b0 in (0..kc).step_by(SUM_ROWS).filter(|b0| live >> (b0 / SUM_ROWS) & 1 == 1) {
                let rows = SUM_ROWS.min(kc - b0);
                let b = piece.add(b0 * tw);
                // The next block in memory order (the next tile's first after a tile's last), to
                // the chunk's end, one line per vector load of the last pass over this block: the
                // passes after the first read this block from L1, and the memory would idle. One
                // pass (AVX-512's tile) streams on the hardware prefetcher alone.
                let (mut pf, pf_end) = (b.add(rows * tw), b.add(2 * rows * tw).min(chunk.as_ptr().add(kc * d)));
                let mut prefetch = |_, _| {
                    if pf < pf_end {
                        prefetch_l2(pf);
                        pf = pf.add(16);
                    }
                };
                let t = Tile {
                    a: at.as_ptr().add(b0 * m),
                    ar: 1,
                    al: m,
                    b,
                    ldb: tw,
                    rows,
                    w: tw,
                    part: part.as_mut_ptr().add(c0),
                    ldp: d,
                };
                let passes = groups + usize::from(REM > 0);
                for p in 0..passes {
                    if p > 0 && p + 1 == passes {
                        group_pass::<L, R, V, REM>(groups, p, t, &mut prefetch);
                    } else {
                        group_pass::<L, R, V, REM>(groups, p, t, &mut |_, _| {});
                    }
                }
            }
        }
    }

    /// [`super::Table::mix_chunk`] on AVX-512F: all m rows and the tile's 48 columns in one
    /// register tile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiled_512(at: &[f32], chunk: &[f32], kc: usize, m: usize, d: usize, live: u64, part: &mut [f32]) {
        macro_rules! rows {
            ($($m:literal)*) => {
                match m {
                    $($m => tiles::<F32x16, $m, 3, 0>(1, at, chunk, kc, d, live, part),)*
                    _ => {}
                }
            };
        }
        rows!(8 7 6 5 4 3 2 1)
    }

    /// [`super::Table::mix_chunk`] on AVX2 with FMA: groups of AVX2_ROWS rows, tiles of 16 columns.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tiled_256(at: &[f32], chunk: &[f32], kc: usize, m: usize, d: usize, live: u64, part: &mut [f32]) {
        avx2_groups!(tiles, m, at, chunk, kc, d, live, part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout holds every element where `row` looks for it, over chunk and tile edges.
    #[test]
    fn tiling_keeps_every_row() {
        for simd in [Simd::Avx512, Simd::Avx2] {
            for (v, d) in [(1, 1), (5, 47), (NN_K_CHUNK + 3, 100), (2 * NN_K_CHUNK, 48)] {
                let src: Vec<f32> = (0..v * d).map(|i| i as f32).collect();
                let t = tile_for(simd, &src, v, d);
                for j in [0, v / 2, v - 1] {
                    assert_eq!(t.row(j), &src[j * d..(j + 1) * d], "{simd:?}: row {j} of [{v}, {d}]");
                }
            }
        }
    }

    /// mix_chunk against a float64 product, for every row count and a width with a partial tile.
    #[test]
    fn mix_chunk_matches_f64() {
        let (kc, d) = (37, 100);
        let e: Vec<f32> = (0..kc * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        for simd in vector_levels() {
            let t = tile_for(simd, &e, kc, d);
            let mut worst = 0f64;
            for m in 1..=TILED_MAX_ROWS {
                // at: [kc, m]
                let at: Vec<f32> = (0..kc * m).map(|i| ((i * 104729 % 997) as f32 / 997.0) - 0.5).collect();
                let mut part = vec![0.25f32; m * d];
                t.mix_chunk(0, &at, m, u64::MAX, &mut part);
                for r in 0..m {
                    for c in 0..d {
                        let want = 0.25 + (0..kc).map(|l| at[l * m + r] as f64 * e[l * d + c] as f64).sum::<f64>();
                        worst = worst.max((part[r * d + c] as f64 - want).abs());
                    }
                }
            }
            eprintln!("mix_chunk {simd:?}: max abs error {worst:.2e} (37 rows, width 100, m = 1..8)");
            assert!(worst < 1e-5, "mix_chunk {simd:?} error {worst}");
        }
    }

    /// The levels with register-tile kernels this CPU runs; a printed notice where it has none.
    fn vector_levels() -> Vec<Simd> {
        let levels: Vec<Simd> = Simd::available().into_iter().filter(|s| s.vector()).collect();
        if levels.is_empty() {
            eprintln!("skipped: no AVX2 or AVX-512F on this CPU (mix_chunk needs one)");
        }
        levels
    }

    /// Blocks left out of the mask are not added, and are not read: NaN rows there change nothing.
    #[test]
    fn mix_chunk_skips_the_blocks_left_out() {
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
        // at: [kc, m]
        let at: Vec<f32> = (0..kc * m).map(|i| ((i * 104729 % 997) as f32 / 997.0) - 0.5).collect();
        for simd in vector_levels() {
            let t = tile_for(simd, &e, kc, d);
            let mut part = vec![0f32; m * d];
            t.mix_chunk(0, &at, m, live, &mut part);
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
            eprintln!("mix_chunk {simd:?}, two blocks of four: max abs error {worst:.2e}");
            assert!(worst < 1e-5, "mix_chunk {simd:?} error {worst}");
        }
    }
}
