//! Next-token entropy of the rows of a decode step, for the entropy profiles of thinking (the
//! paper's Figure 4): H = -sum_j p_j log p_j of p = softmax(z), the model's own distribution
//! (temperature 1, whatever temperature a decoding mixes or samples at), so decodings and models
//! compare on one scale.
//!
//! Composed from backend ops, so every backend has it: with `a` the row's argmax,
//! H = lse(z) - E_p[z] = -log p_a - (E_p[z] - z_a). One softmax and one batched dot product read
//! the [rows, V] logits the step already holds; the log-prob and the argmax logit are gathers. Only
//! three numbers per row come back to the host.

use alloc::vec::Vec;

use crate::backend::{Backend, Gemm};
use crate::error::{Error, Result};

/// Device and host buffers for the entropy of up to `rows` rows, allocated once.
pub struct Entropy<B: Backend> {
    mean_z: B::Buf, // mean_z: [rows] E_p[z]
    lp_top: B::Buf, // lp_top: [rows] log p of the argmax
    z_top: B::Buf,  // z_top: [rows] the argmax logit
    at: B::Ids,     // at: [rows] flat index r * V + argmax of each row
    host_at: Vec<u32>,
    host: [Vec<f32>; 3], // the three per-row numbers above, downloaded
}

impl<B: Backend> Entropy<B> {
    pub fn new(be: &B, rows: usize) -> Result<Self> {
        Ok(Entropy {
            mean_z: be.zeros(rows)?,
            lp_top: be.zeros(rows)?,
            z_top: be.zeros(rows)?,
            at: be.ids_zeros(rows)?,
            host_at: Vec::with_capacity(rows),
            host: [(); 3].map(|_| Vec::with_capacity(rows)),
        })
    }

    /// Writes H(softmax(logits[r])) in nats for r < n into `out` (replacing what it held).
    /// `top` holds each row's argmax on the device and `top_host` the same ids on the host.
    /// p: [n, V] scratch; logits: [n, V]; top: [n]
    #[allow(clippy::too_many_arguments)]
    pub fn compute(
        &mut self,
        be: &B,
        out: &mut Vec<f32>,
        p: &mut B::Buf,
        logits: &B::Buf,
        top: &B::Ids,
        top_host: &[u32],
        n: usize,
        v: usize,
    ) -> Result<()> {
        if n.saturating_mul(v) > u32::MAX as usize {
            return Err(Error::invalid("entropy: rows x vocabulary exceed 2^32 logits"));
        }
        be.softmax(p, logits, n, v, 1.0)?;
        // mean_z[r] = p[r, :] . logits[r, :]: n products of [1, V] @ [V, 1].
        let dot = Gemm {
            batch: n,
            stride_a: v,
            stride_b: v,
            stride_c: 1,
            ..Gemm::linear(1, 1, v)
        };
        be.gemm(&mut self.mean_z, p, logits, dot)?;
        be.logprob_gather(&mut self.lp_top, logits, top, n, v)?;
        // The argmax logits, gathered as 1-wide rows of the flattened logits.
        self.host_at.clear();
        self.host_at
            .extend(top_host[..n].iter().enumerate().map(|(r, &a)| (r * v) as u32 + a));
        be.write_ids(&mut self.at, &self.host_at)?;
        be.embedding(&mut self.z_top, logits, &self.at, n, 1)?;
        let [mean_z, lp_top, z_top] = &mut self.host;
        be.download_into(&self.mean_z, n, mean_z)?;
        be.download_into(&self.lp_top, n, lp_top)?;
        be.download_into(&self.z_top, n, z_top)?;
        out.clear();
        out.extend((0..n).map(|r| -lp_top[r] - (mean_z[r] - z_top[r])));
        Ok(())
    }
}
