//! The head of a soft-thinking decode step for tied embeddings, fused: one pass over E computes the
//! logits `xn E^T`, their argmax (the shadow ids) and `softmax(logits / tau) @ E` with an online
//! softmax, so E is read once per step where the unfused head reads it twice (the lm_head, then
//! the mixture). Untied models, more than 16 rows or no AVX-512 take the trait's unfused default.
//!
//! Each task owns a fixed chunk of the vocabulary (NN_K_CHUNK rows of E) and walks it in blocks of
//! BLOCK rows: the block's logits (the skinny product's own dot products, so they equal the unfused
//! logits bit for bit), their exps against the chunk's running maximum (rescaling the chunk's
//! partial mixture when the maximum grows, as flash attention does), then the block's rows of E,
//! still in L2, weighted by them. The chunks' partials are combined in chunk order, so the result
//! does not depend on the thread count.

use rayon::prelude::*;
use softcot_core::{Error, Result};

use crate::fastmath;
use crate::gemm::{dot_block, nn_block, SendPtr, NN_K_CHUNK, NN_ROW_BLOCK};
use crate::need;

/// Rows of E per block: the mixture kernel's own block (192 KiB of a 768-wide E), read for the
/// logits and again, from L2, for the mixture, which prefetches the next one.
const BLOCK: usize = NN_ROW_BLOCK;

/// One chunk's running state for one row.
#[derive(Clone, Copy)]
struct Stat {
    /// Largest logit so far (the exps are taken against it).
    max: f32,
    /// Sum of exp((z - max) / tau) so far.
    sum: f32,
    /// First index of `max`.
    arg: usize,
}

/// `e^x`, or exactly 0 where it underflows: a chunk or block whose largest term is that far below
/// the maximum adds nothing (no denormal partial mixtures in fuzzy thinking).
fn exp_or_zero(x: f32) -> f32 {
    if x < fastmath::EXP_MIN_ARG {
        0.0
    } else {
        fastmath::exp(x)
    }
}

/// logits = xn @ table^T, ids = argmax(logits), mix = softmax(logits / tau) @ table, for
/// rows <= 16 on a CPU with AVX-512 (the caller checks).
/// logits: [rows, V]; ids: [rows]; mix, xn: [rows, d]; table: [V, d]
#[allow(clippy::too_many_arguments)]
pub fn soft_head(
    logits: &mut [f32],
    ids: &mut [u32],
    mix: &mut [f32],
    xn: &[f32],
    table: &[f32],
    rows: usize,
    v: usize,
    d: usize,
    tau: f32,
) -> Result<()> {
    need(logits.len(), rows * v, "soft_head: logits")?;
    need(ids.len(), rows, "soft_head: ids")?;
    need(mix.len(), rows * d, "soft_head: mix")?;
    need(xn.len(), rows * d, "soft_head: xn")?;
    need(table.len(), v * d, "soft_head: table")?;
    if v == 0 || d == 0 {
        return Err(Error::invalid("soft_head: empty vocabulary or width"));
    }
    let inv_tau = 1.0 / tau;
    let chunks = v.div_ceil(NN_K_CHUNK);
    // partial: [chunks, rows, d] each chunk's sum of exp((z - max) / tau) E; stats: [chunks, rows]
    let mut partial = vec![0f32; chunks * rows * d];
    let fresh = Stat {
        max: f32::NEG_INFINITY,
        sum: 0.0,
        arg: 0,
    };
    let mut stats = vec![fresh; chunks * rows];
    let lp = SendPtr(logits.as_mut_ptr());
    partial
        .par_chunks_mut(rows * d)
        .zip(stats.par_chunks_mut(rows))
        .enumerate()
        .for_each_init(
            || vec![0f32; 2 * rows * BLOCK],
            |buf, (ci, (part, st))| {
                // z, e: [rows, BLOCK] the block's logits and their exps
                let (z, e) = buf.split_at_mut(rows * BLOCK);
                let (l0, l1) = (ci * NN_K_CHUNK, ((ci + 1) * NN_K_CHUNK).min(v));
                let mut j0 = l0;
                while j0 < l1 {
                    let nb = (l1 - j0).min(BLOCK);
                    dot_block(xn, d, rows, table, v, d, j0, j0 + nb, |r, j, s| {
                        z[r * BLOCK + j - j0] = s
                    });
                    for (r, s) in st.iter_mut().enumerate() {
                        let zr = &z[r * BLOCK..r * BLOCK + nb];
                        // SAFETY: logits holds rows * v floats (checked above); logits[r, j0..j0 + nb]
                        // is written by this task alone and no reference to logits exists meanwhile.
                        unsafe { std::ptr::copy_nonoverlapping(zr.as_ptr(), lp.get().add(r * v + j0), nb) };
                        let bm = fastmath::max(zr);
                        if bm > s.max {
                            s.arg = j0 + zr.iter().position(|&x| x == bm).unwrap_or(0);
                            let f = exp_or_zero((s.max - bm) * inv_tau);
                            s.sum *= f;
                            fastmath::scale(&mut part[r * d..(r + 1) * d], f);
                            s.max = bm;
                        }
                        s.sum += fastmath::exp_shifted(&mut e[r * BLOCK..r * BLOCK + nb], zr, s.max, inv_tau);
                    }
                    // The block's rows of E, from L2; the next block's stream in meanwhile.
                    let next = (j0 + nb + BLOCK).min(l1);
                    nn_block(e, BLOCK, &table[j0 * d..next * d], nb, rows, d, part);
                    j0 += nb;
                }
            },
        );
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
    Ok(())
}
