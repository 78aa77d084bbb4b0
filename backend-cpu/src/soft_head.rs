//! The head of a soft-thinking decode step, fused: logits, their argmax (the shadow ids) and
//! `softmax(logits / tau) @ E` with no probability buffer and no separate softmax pass.
//!
//! Tied embeddings: one pass over E computes the logits `xn E^T` too, so E is read once per step
//! where the unfused head reads it twice (the lm_head, then the mixture). Untied: the lm_head is
//! its own matrix, so the skinny product writes the logits first, its tasks noting each row's
//! maximum and argmax as they go; the mixture pass then takes the exps against that maximum
//! (the unfused head scans the logits for the argmax, and its softmax scans them again, writes p,
//! rescales it and reads it back). Up to 8 rows it streams each chunk of E from the tiled copy
//! ([`crate::mixture_table`]), in memory order. More than 16 rows, or a CPU with neither AVX-512F
//! nor AVX2 + FMA, take the trait's unfused default.
//!
//! Each task owns a fixed chunk of the vocabulary (NN_K_CHUNK rows of E). Tied, or untied past 8
//! rows, it walks the chunk in blocks of BLOCK rows: the block's logits (tied: the skinny
//! product's own dot products, so they equal the unfused logits bit for bit), their exps against
//! the chunk's running maximum (tied: rescaling the chunk's partial mixture when the maximum
//! grows, as flash attention does; untied rows start at their final maximum), then the block's
//! rows of E, still in L2, weighted by them. The chunks' partials are combined in chunk
//! order, so the result does not depend on the thread count.
//!
//! A block whose every term underflows (its largest logit more than 87.3 tau below the row's
//! maximum, for every row) adds nothing and its rows of E are not read: in fuzzy thinking
//! (tau = 1e-4) that is all but the blocks around each row's argmax, so an untied fuzzy step
//! costs about what a hard one does (`softcot bench --workload soft-decode --think fuzzy`: 1.02x
//! hard decode where it cost 1.15x). Where a term underflows exp gives its floor, e^-87.3, so
//! what is left out is below that fraction of the mixture.

use rayon::prelude::*;
use softcot_core::{Error, Result};

use crate::fastmath;
use crate::gemm::{self, dot_block, nn_block, NN_K_CHUNK, NN_ROW_BLOCK, SKINNY_MAX_M};
use crate::mixture_table::{Table, TILED_MAX_ROWS};
use crate::scratch::{self, Scratch};
use crate::{need, SendPtr};

/// Rows of E per block: the mixture kernel's own block (192 KiB of a 768-wide E), read for the
/// logits and again, from L2, for the mixture, which prefetches the next one.
const BLOCK: usize = NN_ROW_BLOCK;

/// One chunk's running state for one row.
#[derive(Clone, Copy, Default)]
struct Stat {
    /// Largest logit so far (the exps are taken against it).
    max: f32,
    /// Sum of exp((z - max) / tau) so far.
    sum: f32,
    /// First index of `max`.
    arg: usize,
}

/// Whether e^x underflows: a chunk or block whose largest term is that far below the maximum adds
/// nothing (no denormal partial mixtures in fuzzy thinking, and no rows of E read for it).
fn underflows(x: f32) -> bool {
    x < fastmath::EXP_MIN_ARG
}

/// `e^x`, or exactly 0 where it [`underflows`].
fn exp_or_zero(x: f32) -> f32 {
    if underflows(x) {
        0.0
    } else {
        fastmath::exp(x)
    }
}

/// e[i] = exp((z[i] - s.max) / tau) for one row's block of logits z, whose largest is `bm`, added
/// to s.sum; or zeros where every term [`underflows`] (fuzzy thinking: all blocks but those near
/// the argmax). Returns whether the block adds anything, that is whether its rows of E are read.
fn block_exps(e: &mut [f32], z: &[f32], bm: f32, s: &mut Stat, inv_tau: f32) -> bool {
    if underflows((bm - s.max) * inv_tau) {
        e.fill(0.0);
        false
    } else {
        s.sum += fastmath::exp_shifted(e, z, s.max, inv_tau);
        true
    }
}

/// Each row's largest logit in a block of the lm_head product, and its first index.
type BlockMax = [(f32, usize); SKINNY_MAX_M];

thread_local! {
    /// [chunks, rows, d] each chunk's partial mixture
    static PARTIAL: Scratch<f32> = const { std::cell::RefCell::new(Vec::new()) };
    /// [chunks, rows] each chunk's running state
    static STATS: Scratch<Stat> = const { std::cell::RefCell::new(Vec::new()) };
    /// [blocks] what each block of the lm_head product found
    static FOUND: Scratch<BlockMax> = const { std::cell::RefCell::new(Vec::new()) };
    /// a task's exps (and logits, tied)
    static TASK: Scratch<f32> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a block's logits come from.
#[derive(Clone, Copy)]
enum Logits<'a> {
    /// Tied: computed from `xn` and the block's rows of E, then stored through the pointer.
    Compute(&'a [f32], SendPtr),
    /// Untied: already in the buffer (the lm_head product ran first), each row's maximum known;
    /// E read from its tiled copy where there is one (up to 8 rows), else as stored.
    Given(&'a [f32], Option<&'a Table>),
}

/// logits = xn @ head^T, ids = argmax(logits), mix = softmax(logits / tau) @ table, for
/// rows <= 16 (more is an error) on a CPU with the register-tile kernels (the caller checks);
/// `head` and `table` are the same slice for tied embeddings; `tiled`, `table` in the tiled
/// layout, is what an untied head of up to TILED_MAX_ROWS rows reads instead (an error if of
/// another shape or for more rows).
/// logits: [rows, V]; ids: [rows]; mix, xn: [rows, d]; head, table: [V, d]
#[allow(clippy::too_many_arguments)]
pub fn soft_head(
    logits: &mut [f32],
    ids: &mut [u32],
    mix: &mut [f32],
    xn: &[f32],
    head: &[f32],
    table: &[f32],
    tiled: Option<&Table>,
    rows: usize,
    v: usize,
    d: usize,
    tau: f32,
) -> Result<()> {
    need(logits.len(), rows * v, "soft_head: logits")?;
    need(ids.len(), rows, "soft_head: ids")?;
    need(mix.len(), rows * d, "soft_head: mix")?;
    need(xn.len(), rows * d, "soft_head: xn")?;
    need(head.len(), v * d, "soft_head: head")?;
    need(table.len(), v * d, "soft_head: table")?;
    if v == 0 || d == 0 {
        return Err(Error::invalid("soft_head: empty vocabulary or width"));
    }
    if rows > SKINNY_MAX_M {
        return Err(Error::invalid(format!(
            "soft_head: {rows} rows, the fused kernel takes at most {SKINNY_MAX_M}"
        )));
    }
    let inv_tau = 1.0 / tau;
    let chunks = v.div_ceil(NN_K_CHUNK);
    // start: [rows] the state every chunk begins from
    let mut start = [Stat {
        max: f32::NEG_INFINITY,
        sum: 0.0,
        arg: 0,
    }; SKINNY_MAX_M];
    let start = &mut start[..rows];
    let source = if std::ptr::eq(head, table) {
        Logits::Compute(xn, SendPtr(logits.as_mut_ptr()))
    } else {
        if let Some(t) = tiled {
            if (t.v, t.d) != (v, d) || rows > TILED_MAX_ROWS {
                return Err(Error::invalid(format!(
                    "soft_head: the table's tiled copy is [{}, {}] for up to {TILED_MAX_ROWS} rows, the call reads it as [{v}, {d}] for {rows}",
                    t.v, t.d
                )));
            }
        }
        // The skinny product's own tasks and dot products (the unfused head's logits bit for bit),
        // each task keeping its rows' largest logit and its first index as it writes them.
        let lp = SendPtr(logits.as_mut_ptr());
        let (block, blocks) = gemm::skinny_split(rows, v, d);
        scratch::with(&FOUND, blocks, |found| {
            found.par_iter_mut().enumerate().for_each(|(bi, best)| {
                *best = [(f32::NEG_INFINITY, 0usize); SKINNY_MAX_M];
                let (j0, j1) = (bi * block, ((bi + 1) * block).min(v));
                dot_block(xn, d, rows, head, v, d, j0, j1, |r, j, s| {
                    // SAFETY: (r, j) is inside logits[rows, v] (checked above) and column j
                    // belongs to this task alone.
                    unsafe { *lp.get().add(r * v + j) = s };
                    // Columns come in increasing order per row: a tie keeps the first index.
                    if s > best[r].0 {
                        best[r] = (s, j);
                    }
                });
            });
            // Blocks in order, a later one wins only if larger: the lowest index on ties.
            for block in found.iter() {
                for (s, &(m, j)) in start.iter_mut().zip(block) {
                    if m > s.max {
                        (s.max, s.arg) = (m, j);
                    }
                }
            }
        });
        Logits::Given(logits, tiled)
    };
    // partial: [chunks, rows, d] each chunk's sum of exp((z - max) / tau) E; stats: [chunks, rows]
    scratch::with(&PARTIAL, chunks * rows * d, |partial| {
        scratch::with(&STATS, chunks * rows, |stats| {
            partial.fill(0.0);
            for st in stats.chunks_exact_mut(rows) {
                st.copy_from_slice(start);
            }
            mix_chunks(partial, stats, source, table, rows, v, d, inv_tau);
            combine(mix, ids, partial, stats, chunks, rows, d, inv_tau);
        })
    });
    Ok(())
}

/// Each chunk of the vocabulary (a task each) summed into its part of `partial`, its state kept
/// in its part of `stats` (both [chunks, rows, ..], starting from zeros and the rows' starting
/// states).
#[allow(clippy::too_many_arguments)]
fn mix_chunks(
    partial: &mut [f32],
    stats: &mut [Stat],
    source: Logits<'_>,
    table: &[f32],
    rows: usize,
    v: usize,
    d: usize,
    inv_tau: f32,
) {
    // Each task's scratch. Tiled: at [NN_K_CHUNK, rows] the chunk's exps, then one row's block of
    // them. Rows: z, e [rows, BLOCK] a block's logits (when computed) and their exps.
    let scratch = match source {
        Logits::Given(_, Some(_)) => rows * NN_K_CHUNK + BLOCK,
        _ => 2 * rows * BLOCK,
    };
    partial
        .par_chunks_mut(rows * d)
        .zip(stats.par_chunks_mut(rows))
        .enumerate()
        .for_each(|(ci, (part, st))| {
            scratch::with(&TASK, scratch, |buf| {
                let (l0, l1) = (ci * NN_K_CHUNK, ((ci + 1) * NN_K_CHUNK).min(v));
                if let Logits::Given(all, Some(tiled)) = source {
                    // Every row starts at its final maximum: nothing to rescale. Summed by blocks,
                    // as the row path sums them; stored side by side per row of E, so that the
                    // mixture's broadcasts read one line per row of E. live: bit b set where
                    // block b adds something for some row.
                    let (at, e) = buf.split_at_mut(rows * NN_K_CHUNK);
                    let mut live = 0u64;
                    for (r, s) in st.iter_mut().enumerate() {
                        for j0 in (l0..l1).step_by(BLOCK) {
                            let z = &all[r * v + j0..][..(l1 - j0).min(BLOCK)];
                            let e = &mut e[..z.len()];
                            if block_exps(e, z, fastmath::max(z), s, inv_tau) {
                                live |= 1 << ((j0 - l0) / BLOCK);
                            }
                            for (i, &x) in e.iter().enumerate() {
                                at[(j0 - l0 + i) * rows + r] = x;
                            }
                        }
                    }
                    tiled.mix_chunk(ci, at, rows, live, part);
                    return;
                }
                let (z, e) = buf.split_at_mut(rows * BLOCK);
                let mut j0 = l0;
                while j0 < l1 {
                    let nb = (l1 - j0).min(BLOCK);
                    if let Logits::Compute(xn, _) = source {
                        dot_block(xn, d, rows, table, v, d, j0, j0 + nb, |r, j, s| {
                            z[r * BLOCK + j - j0] = s
                        });
                    }
                    let mut live = false;
                    for (r, s) in st.iter_mut().enumerate() {
                        let (zr, bm) = match source {
                            Logits::Compute(_, lp) => {
                                let zr = &z[r * BLOCK..r * BLOCK + nb];
                                // SAFETY: logits holds rows * v floats (checked above);
                                // logits[r, j0..j0 + nb] is written by this task alone and no
                                // reference to logits exists meanwhile (Compute holds none).
                                unsafe { std::ptr::copy_nonoverlapping(zr.as_ptr(), lp.get().add(r * v + j0), nb) };
                                let bm = fastmath::max(zr);
                                if bm > s.max {
                                    s.arg = j0 + zr.iter().position(|&x| x == bm).unwrap_or(0);
                                    let f = exp_or_zero((s.max - bm) * inv_tau);
                                    s.sum *= f;
                                    fastmath::scale(&mut part[r * d..(r + 1) * d], f);
                                    s.max = bm;
                                }
                                (zr, bm)
                            }
                            // Already at the row's maximum: nothing to rescale.
                            Logits::Given(all, _) => {
                                let zr = &all[r * v + j0..r * v + j0 + nb];
                                (zr, fastmath::max(zr))
                            }
                        };
                        live |= block_exps(&mut e[r * BLOCK..r * BLOCK + nb], zr, bm, s, inv_tau);
                    }
                    // The block's rows of E, from L2; the next block's stream in meanwhile.
                    if live {
                        let next = (j0 + nb + BLOCK).min(l1);
                        nn_block(e, BLOCK, &table[j0 * d..next * d], nb, rows, d, part);
                    }
                    j0 += nb;
                }
            })
        });
}

/// The chunks' partial mixtures and states combined into each row's shadow id and mixture, chunks
/// in order (so the result does not depend on the thread count).
/// mix: [rows, d]; ids: [rows]; partial: [chunks, rows, d]; stats: [chunks, rows]
#[allow(clippy::too_many_arguments)]
fn combine(
    mix: &mut [f32],
    ids: &mut [u32],
    partial: &[f32],
    stats: &[Stat],
    chunks: usize,
    rows: usize,
    d: usize,
    inv_tau: f32,
) {
    for r in 0..rows {
        // The row's maximum and its first index: chunks in order, a later chunk wins only if larger.
        let (mut big, mut arg) = (f32::NEG_INFINITY, 0);
        for c in 0..chunks {
            let s = stats[c * rows + r];
            if s.max > big {
                (big, arg) = (s.max, s.arg);
            }
        }
        ids[r] = arg as u32;
        let weight = |c: usize| exp_or_zero((stats[c * rows + r].max - big) * inv_tau);
        let total: f32 = (0..chunks).map(|c| weight(c) * stats[c * rows + r].sum).sum();
        let out = &mut mix[r * d..(r + 1) * d];
        out.fill(0.0);
        for c in 0..chunks {
            let f = weight(c) / total;
            if f != 0.0 {
                fastmath::axpy(out, f, &partial[(c * rows + r) * d..(c * rows + r + 1) * d]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// More rows than the kernel's register tiles hold is an error, not an out-of-bounds panic.
    #[test]
    fn too_many_rows_is_an_error() {
        let (rows, v, d) = (17, 8, 4);
        let (mut logits, mut ids, mut mix) = (vec![0f32; rows * v], vec![0u32; rows], vec![0f32; rows * d]);
        let (xn, e) = (vec![0.5f32; rows * d], vec![0.25f32; v * d]);
        let err = super::soft_head(&mut logits, &mut ids, &mut mix, &xn, &e, &e, None, rows, v, d, 0.5).unwrap_err();
        assert!(err.to_string().contains("17 rows"), "{err}");
    }
}
