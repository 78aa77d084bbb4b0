//! The fused soft head (`kernels/soft_head.cu`): a soft-thinking decode step's logits, shadow ids
//! and mixture with one read of the vocabulary's rows for tied embeddings (the unfused head reads
//! E twice: the lm_head GEMM, then the mixture GEMM), and no softmax pass or probability buffer
//! for untied ones. The caller's `p` ([rows, V]) holds the chunks' partial sums instead.
//!
//! Not fused (`Ok(false)`, the caller runs the unfused head): head and table stored differently,
//! widths past COLS x MAX_THREADS (4096), or a vocabulary too short for one chunk's partials in `p`
//! (V < d + 3).

use softcot_core::Result;

use super::{by_precision, need};
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Rows of a block, mixture columns per thread, vocabulary rows per tile, and the most chunks the
/// combine kernel takes: `kernels/soft_head.cu`'s SH_ROWS, SH_COLS, SH_TILE, SH_MAX_CHUNKS.
const ROWS: usize = 4;
const COLS: usize = 8;
const TILE: usize = 32;
const MAX_CHUNKS: usize = 1024;
/// The chunk kernel's launch bounds (128 registers a thread).
const MAX_THREADS: usize = 512;
/// Chunks the vocabulary is cut into at most: two blocks per SM of an H100 (132) for each group
/// of 4 rows, where `p` has room for their partials.
const TARGET_CHUNKS: usize = 264;
/// Threads per row of the combine kernel.
const COMBINE_THREADS: u32 = 256;

/// The fused soft head on a launcher, with its block size: None picks the smallest for the width
/// (d / 4 rounded up to a warp); the tests sweep others.
pub(crate) struct SoftHead<'a> {
    pub l: &'a Launcher,
    pub threads: Option<u32>,
}

/// How a call is cut: vocabulary rows per chunk (a multiple of TILE) and chunks.
fn chunks_for(rows: usize, v: usize, d: usize, scratch: usize) -> Option<(usize, usize)> {
    let room = scratch / (rows * (d + 3));
    let want = TARGET_CHUNKS.min(v.div_ceil(TILE)).min(room);
    if want == 0 {
        return None;
    }
    let chunk = v.div_ceil(want).next_multiple_of(TILE);
    Some((chunk, v.div_ceil(chunk)))
}

impl SoftHead<'_> {
    /// The block size for width `d`, or None where a block cannot hold a row's columns.
    fn threads_for(&self, d: usize) -> Option<u32> {
        let least = d.div_ceil(COLS).next_multiple_of(32).max(32);
        let t = self.threads.map_or(least, |t| t as usize);
        (t >= least && t <= MAX_THREADS && t.is_multiple_of(32)).then_some(t as u32)
    }

    /// `logits = xn @ head^T`, `ids = argmax(logits)`, `mix = softmax(logits / tau) @ table`,
    /// with `p` as scratch; `round_ops` rounds xn, head and table to bf16 as the bf16 mode's GEMM
    /// operands are (the softmax weights stay f32). Ok(false): not fused, nothing written.
    /// logits, p: [rows, V]; ids: [rows]; mix, xn: [rows, d]; head, table: [V, d]
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        logits: &mut CudaBuf,
        ids: &mut CudaIds,
        mix: &mut CudaBuf,
        p: &mut CudaBuf,
        xn: &CudaBuf,
        head: &CudaBuf,
        table: &CudaBuf,
        (rows, v, d): (usize, usize, usize),
        tau: f32,
        round_ops: bool,
    ) -> Result<bool> {
        need(logits.len(), rows * v, "soft_head: logits")?;
        need(ids.len(), rows, "soft_head: ids")?;
        need(mix.len(), rows * d, "soft_head: mix")?;
        need(p.len(), rows * v, "soft_head: p")?;
        need(xn.len(), rows * d, "soft_head: xn")?;
        need(head.len(), v * d, "soft_head: head")?;
        need(table.len(), v * d, "soft_head: table")?;
        if rows == 0 || v == 0 || d == 0 {
            return Ok(rows == 0);
        }
        let (Some(threads), Some((chunk, chunks))) = (self.threads_for(d), chunks_for(rows, v, d, p.len())) else {
            return Ok(false);
        };
        if head.prec != table.prec || chunks > MAX_CHUNKS {
            return Ok(false);
        }
        let (r32, v32, d32) = (
            u32_of(rows, "soft_head: rows")?,
            u32_of(v, "soft_head: V")?,
            u32_of(d, "soft_head: d")?,
        );
        let inv_tau = 1.0 / tau;
        let grid = [u32_of(rows.div_ceil(ROWS), "soft_head: row groups")?, chunks as u32, 1];
        self.l.launch(
            "soft_head",
            by_precision(head, "soft_head_chunks", "soft_head_chunks_bf16"),
            LaunchCfg {
                grid,
                block: [threads, 1, 1],
                shared_bytes: 0,
            },
            &[
                Arg::W(logits),
                Arg::W(p),
                Arg::R(xn),
                Arg::RS(head),
                Arg::RS(table),
                Arg::U32(r32),
                Arg::U32(v32),
                Arg::U32(d32),
                Arg::U32(chunk as u32),
                Arg::F32(inv_tau),
                Arg::U32(round_ops as u32),
            ],
        )?;
        self.l.launch(
            "soft_head",
            "soft_head_combine",
            LaunchCfg::rows(rows, COMBINE_THREADS)?,
            &[
                Arg::WI(ids),
                Arg::W(mix),
                Arg::R(p),
                Arg::U32(chunks as u32),
                Arg::U32(r32),
                Arg::U32(d32),
                Arg::F32(inv_tau),
            ],
        )?;
        Ok(true)
    }
}

#[cfg(all(test, feature = "host"))]
pub(crate) mod tests {
    use super::*;
    use crate::host::Host;
    use crate::ops::attention::tests::{buf, max_err, random, read};

    /// Each row's logits, first argmax and mixture in float64 of the given (already rounded) values.
    fn reference(
        xn: &[f32],
        e: &[f32],
        table: &[f32],
        rows: usize,
        v: usize,
        d: usize,
        tau: f64,
    ) -> (Vec<f64>, Vec<u32>, Vec<f64>) {
        let mut z = vec![0f64; rows * v];
        for (i, z) in z.iter_mut().enumerate() {
            let (r, j) = (i / v, i % v);
            *z = (0..d).map(|k| xn[r * d + k] as f64 * e[j * d + k] as f64).sum();
        }
        let (mut ids, mut mix) = (vec![0u32; rows], vec![0f64; rows * d]);
        for r in 0..rows {
            let zr = &z[r * v..(r + 1) * v];
            let m = zr.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            ids[r] = zr.iter().position(|&x| x == m).unwrap() as u32;
            let w: Vec<f64> = zr.iter().map(|&x| ((x - m) / tau).exp()).collect();
            let s: f64 = w.iter().sum();
            for k in 0..d {
                mix[r * d + k] = (0..v).map(|j| w[j] * table[j * d + k] as f64).sum::<f64>() / s;
            }
        }
        (z, ids, mix)
    }

    /// One call (float32 operands) on fresh outputs, the logits filled with 7: whether it fused,
    /// and the logits, ids and mixture it left.
    fn call(
        sh: &SoftHead,
        xb: &CudaBuf,
        eb: &CudaBuf,
        tb: &CudaBuf,
        (rows, v, d): (usize, usize, usize),
        tau: f32,
    ) -> (bool, Vec<f32>, Vec<u32>, Vec<f32>) {
        let (mut logits, mut mix, mut p) = (
            buf(&vec![7.0; rows * v]),
            buf(&vec![0.0; rows * d]),
            buf(&vec![0.0; rows * v]),
        );
        let mut ids: CudaIds = buf(&vec![0u32; rows]);
        let fused = sh
            .run(
                &mut logits,
                &mut ids,
                &mut mix,
                &mut p,
                xb,
                eb,
                tb,
                (rows, v, d),
                tau,
                false,
            )
            .unwrap();
        (fused, read(&logits), read(&ids), read(&mix))
    }

    /// The fused head against float64 at every block size its width allows (llm.c's sweep, up to
    /// the kernel's launch bounds), rows over one to three groups of 4, vocabularies over many chunks with a partial last tile, tied
    /// and untied, soft and fuzzy temperatures; ties go to the lower index across chunks.
    #[test]
    fn fused_soft_head_at_every_block_size() {
        let l = Launcher::Host(Host);
        // Under a sanitizer (a child of sanitize.rs) one small shape that still spans two row
        // groups, several chunks and a partial tile: each barrier there costs per live thread.
        let shapes: &[(usize, usize, usize)] = if std::env::var_os(crate::sanitize::SANITIZE_ENV).is_some() {
            &[(5, 301, 40)]
        } else {
            &[(3, 1001, 24), (11, 2100, 100), (8, 777, 130)]
        };
        for &(rows, v, d) in shapes {
            let xn = random(rows * d, 1.0, 21);
            let mut e = random(v * d, 1.0, 22);
            // Row 0's largest logit at 5 and at v - 3 (different chunks): the lower index wins.
            for j in [5, v - 3] {
                for k in 0..d {
                    e[j * d + k] = xn[k].signum();
                }
            }
            let untied = random(v * d, 1.0, 23);
            for tied in [true, false] {
                let table = if tied { &e } else { &untied };
                let (xb, eb, ub) = (buf(&xn), buf(&e), buf(table));
                let tb = if tied { &eb } else { &ub };
                for tau in [0.5f32, 1e-4] {
                    let (z, want_ids, want_mix) = reference(&xn, &e, table, rows, v, d, tau as f64);
                    assert_eq!(want_ids[0], 5);
                    for threads in crate::sanitize::sweep([32u32, 64, 96, 128, 256, 512]) {
                        let sh = SoftHead {
                            l: &l,
                            threads: Some(threads),
                        };
                        if sh.threads_for(d).is_none() {
                            continue;
                        }
                        let (fused, logits, ids, mix) = call(&sh, &xb, &eb, tb, (rows, v, d), tau);
                        assert!(fused);
                        let (ez, em) = (max_err(&logits, &z), max_err(&mix, &want_mix));
                        println!(
                            "soft_head {rows}x{v}x{d} tied={tied} threads={threads} tau={tau}: logits err {ez:.1e}, mixture err {em:.1e}"
                        );
                        assert!(ez < 4e-5 * (d as f64).sqrt(), "logits err {ez}");
                        assert!(em < 2e-6 * (v as f64 / 1001.0).sqrt().max(1.0), "mixture err {em}");
                        assert_eq!(ids, want_ids, "ids threads={threads} tau={tau}");
                    }
                }
            }
        }
    }

    /// Where the head cannot be fused the op says so and writes nothing: a width past 4096, a
    /// vocabulary too short for one chunk's partials.
    #[test]
    fn unfusable_shapes_are_declined() {
        let l = Launcher::Host(Host);
        let sh = SoftHead { l: &l, threads: None };
        for (rows, v, d) in [(2, 8, 4100), (2, 8, 16)] {
            let (xb, eb) = (buf(&random(rows * d, 1.0, 1)), buf(&random(v * d, 1.0, 2)));
            let (fused, logits, _, _) = call(&sh, &xb, &eb, &eb, (rows, v, d), 0.5);
            assert!(!fused, "{rows}x{v}x{d}");
            assert!(logits.iter().all(|&x| x == 7.0));
        }
    }
}
