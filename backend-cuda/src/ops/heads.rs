//! Rows over the vocabulary (`kernels/heads.cu`): softmax at a temperature, log-prob gather,
//! argmax, categorical sampling (the CPU backend's inverse CDF bit for bit), the cross-entropy
//! backward, the soft-token policy gradient, and the row helpers scale_rows and gather_rows.
//! Each method mirrors its `Backend` method: the same arguments, checks and error messages as the
//! CPU backend.
//!
//! `mixture` and `soft_head` keep the trait's defaults (softmax, then the GEMM; the lm_head GEMM,
//! argmax and mixture): their cost is the two GEMMs, which cuBLASLt runs near the machine's
//! rate. A fused soft head (one pass over E for tied models) is a decode optimisation still to do.

use softcot_core::{Error, Result};

use super::attention::host_copy;
use super::need;
use crate::buffer::{CudaBuf, CudaIds};
use crate::launch::{u32_of, Arg, LaunchCfg, Launcher};

/// Threads per row of the row kernels: a 152k vocabulary is ~300 elements per thread.
pub(crate) const ROW_THREADS: u32 = 512;

/// The launcher and the block size of the row kernels (any multiple of 32 up to 1024; the tests
/// sweep it). Results do not depend on it, except for the order of float sums.
pub(crate) struct Heads<'a> {
    pub l: &'a Launcher,
    pub threads: u32,
}

fn outside_vocabulary(id: u32, v: usize) -> Error {
    Error::invalid(format!("token id {id} is outside the vocabulary (size {v})"))
}

impl<'a> Heads<'a> {
    pub fn new(l: &'a Launcher) -> Self {
        Heads {
            l,
            threads: ROW_THREADS,
        }
    }

    /// One block per row of `kernel` (nothing to do for no rows).
    fn rows(&self, kernel: &str, rows: usize, args: &[Arg]) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.l
            .launch("heads", kernel, LaunchCfg::rows(rows, self.threads)?, args)
    }

    /// `p = softmax(logits / tau)` per row.  p, logits: [rows, V]
    pub fn softmax(&self, p: &mut CudaBuf, logits: &CudaBuf, rows: usize, v: usize, tau: f32) -> Result<()> {
        need(p.len(), rows * v, "softmax: p")?;
        need(logits.len(), rows * v, "softmax: logits")?;
        let args = [
            Arg::W(p),
            Arg::R(logits),
            Arg::U32(u32_of(v, "softmax: V")?),
            Arg::F32(1.0 / tau),
        ];
        self.rows("softmax_rows", rows, &args)
    }

    /// `out[r] = log_softmax(logits[r, :])[targets[r]]`.  out: [rows]; logits: [rows, V]; targets: [rows]
    pub fn logprob_gather(
        &self,
        out: &mut CudaBuf,
        logits: &CudaBuf,
        targets: &CudaIds,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        need(out.len(), rows, "logprob_gather: out")?;
        need(logits.len(), rows * v, "logprob_gather: logits")?;
        need(targets.len(), rows, "logprob_gather: targets")?;
        if let Some(&bad) = host_copy(self.l, targets, rows)?.iter().find(|&&t| t as usize >= v) {
            return Err(outside_vocabulary(bad, v));
        }
        let args = [
            Arg::W(out),
            Arg::R(logits),
            Arg::RI(targets),
            Arg::U32(u32_of(v, "logprob_gather: V")?),
        ];
        self.rows("logprob_gather", rows, &args)
    }

    /// `ids[r] = argmax(x[r, :])` (lowest index on ties).  ids: [rows]; x: [rows, V]
    pub fn argmax(&self, ids: &mut CudaIds, x: &CudaBuf, rows: usize, v: usize) -> Result<()> {
        need(ids.len(), rows, "argmax: ids")?;
        need(x.len(), rows * v, "argmax: x")?;
        let args = [Arg::WI(ids), Arg::R(x), Arg::U32(u32_of(v, "argmax: V")?)];
        self.rows("argmax_rows", rows, &args)
    }

    /// Categorical sample of `softmax(logits / tau)` per row by inverse CDF with the Philox
    /// uniform `sample_uniform(seed, streams[r], steps[r])`: the CPU backend's id, bit for bit.
    /// ids, streams, steps: [rows]; logits: [rows, V]
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        ids: &mut CudaIds,
        logits: &CudaBuf,
        rows: usize,
        v: usize,
        tau: f32,
        seed: u64,
        streams: &CudaIds,
        steps: &CudaIds,
    ) -> Result<()> {
        need(ids.len(), rows, "sample: ids")?;
        need(logits.len(), rows * v, "sample: logits")?;
        need(streams.len(), rows, "sample: streams")?;
        need(steps.len(), rows, "sample: steps")?;
        let args = [
            Arg::WI(ids),
            Arg::R(logits),
            Arg::U32(u32_of(v, "sample: V")?),
            Arg::F32(1.0 / tau),
            Arg::U64(seed),
            Arg::RI(streams),
            Arg::RI(steps),
        ];
        self.rows("sample_rows", rows, &args)
    }

    /// Weighted cross-entropy at a per-row temperature, in place (see the trait): writes
    /// `loss[r] = -w[r] log p[t[r]]` and turns the logits into `w[r] inv_tau[r] (p - onehot(t[r]))`.
    /// logits: [rows, V]; loss, weights, inv_tau: [rows]; targets: [rows]
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_backward(
        &self,
        logits: &mut CudaBuf,
        loss: &mut CudaBuf,
        targets: &CudaIds,
        weights: &CudaBuf,
        inv_tau: Option<&CudaBuf>,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        need(logits.len(), rows * v, "cross_entropy_backward: logits")?;
        need(loss.len(), rows, "cross_entropy_backward: loss")?;
        need(targets.len(), rows, "cross_entropy_backward: targets")?;
        need(weights.len(), rows, "cross_entropy_backward: weights")?;
        if let Some(it) = inv_tau {
            need(it.len(), rows, "cross_entropy_backward: inv_tau")?;
        }
        // Only rows with a weight read their target.
        let (t, w) = (host_copy(self.l, targets, rows)?, host_copy(self.l, weights, rows)?);
        if let Some(r) = (0..rows).find(|&r| w[r] != 0.0 && t[r] as usize >= v) {
            return Err(outside_vocabulary(t[r], v));
        }
        let args = [
            Arg::W(logits),
            Arg::W(loss),
            Arg::RI(targets),
            Arg::R(weights),
            inv_tau.map_or(Arg::U64(0), Arg::R), // a null `const float*`: 1 for every row
            Arg::U32(u32_of(v, "cross_entropy_backward: V")?),
        ];
        self.rows("cross_entropy_backward", rows, &args)
    }

    /// `dz[r] = c[r] * p[r] ⊙ (u[r] - <p[r], u[r]>)`.  dz, p, u: [rows, V]; c: [rows]
    pub fn soft_pg_logits(
        &self,
        dz: &mut CudaBuf,
        p: &CudaBuf,
        u: &CudaBuf,
        c: &CudaBuf,
        rows: usize,
        v: usize,
    ) -> Result<()> {
        for (len, what) in [(dz.len(), "dz"), (p.len(), "p"), (u.len(), "u")] {
            need(len, rows * v, &format!("soft_pg_logits: {what}"))?;
        }
        need(c.len(), rows, "soft_pg_logits: c")?;
        let args = [
            Arg::W(dz),
            Arg::R(p),
            Arg::R(u),
            Arg::R(c),
            Arg::U32(u32_of(v, "soft_pg_logits: V")?),
        ];
        self.rows("soft_pg_logits", rows, &args)
    }
}

/// `x[r, :] *= s[r]`.  x: [rows, n]; s: [rows]
pub(crate) fn scale_rows(l: &Launcher, x: &mut CudaBuf, s: &CudaBuf, rows: usize, n: usize) -> Result<()> {
    need(x.len(), rows * n, "scale_rows: x")?;
    need(s.len(), rows, "scale_rows: s")?;
    if rows * n == 0 {
        return Ok(());
    }
    let args = [
        Arg::W(x),
        Arg::R(s),
        Arg::U32(u32_of(rows, "scale_rows: rows")?),
        Arg::U32(u32_of(n, "scale_rows: n")?),
    ];
    l.launch("heads", "scale_rows", LaunchCfg::elements(rows * n), &args)
}

/// `dst[r, :] = src[index[r], :]` for rows with `index[r] != u32::MAX`; other rows are kept.
/// dst: [rows, d]; src: [n, d]; index: [rows]
pub(crate) fn gather_rows(
    l: &Launcher,
    dst: &mut CudaBuf,
    src: &CudaBuf,
    index: &CudaIds,
    rows: usize,
    d: usize,
) -> Result<()> {
    need(dst.len(), rows * d, "gather_rows: dst")?;
    need(index.len(), rows, "gather_rows: index")?;
    for &i in host_copy(l, index, rows)?.iter().filter(|&&i| i != u32::MAX) {
        need(src.len(), (i as usize + 1) * d, "gather_rows: src")?;
    }
    if rows * d == 0 {
        return Ok(());
    }
    // Rows of src: the kernel keeps a row whose index is past them (checked above, so none).
    let n = (src.len() / d).min(u32::MAX as usize) as u32;
    let args = [
        Arg::W(dst),
        Arg::R(src),
        Arg::RI(index),
        Arg::U32(u32_of(rows, "gather_rows: rows")?),
        Arg::U32(u32_of(d, "gather_rows: d")?),
        Arg::U32(n),
    ];
    l.launch("heads", "gather_rows", LaunchCfg::elements(rows * d), &args)
}
