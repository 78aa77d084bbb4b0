//! The `Train` contract: what a backend adds to [`Backend`] to train. No op has a default: a
//! backend that cannot train does not implement the trait, so `softcot train --backend X` for such
//! a backend does not compile rather than failing at run time (the program refuses it by name
//! before loading anything).
//!
//! The ops are listed in the order of the forward ops of [`Backend`] they undo, each beside the
//! forward it belongs to; then the loss heads (their forwards are the softmax and the mixture) and
//! the optimizer. "Writes" overwrites the output; "accumulates" adds into it (zeroing is explicit,
//! with [`Train::fill`]).

use super::{AdamwStep, AttnShape, Backend, RopeShape};
use crate::error::Result;

pub trait Train: Backend {
    // ---- dense algebra: gemm's backward is two more gemms; add_bias's is sum_rows -----------
    /// `x[..n] = value`.
    fn fill(&self, x: &mut Self::Buf, value: f32, n: usize) -> Result<()>;
    /// `x[..n] *= s`.
    fn scale(&self, x: &mut Self::Buf, s: f32, n: usize) -> Result<()>;
    /// `x[r, :] *= s[r]`.  x: [rows, n]; s: [rows]
    fn scale_rows(&self, x: &mut Self::Buf, s: &Self::Buf, rows: usize, n: usize) -> Result<()>;
    /// Backward of [`Backend::add_bias`]: accumulates the column sums of `dy`.  dbias: [n]; dy: [rows, n]
    fn sum_rows(&self, dbias: &mut Self::Buf, dy: &Self::Buf, rows: usize, n: usize) -> Result<()>;

    // ---- transformer layers ------------------------------------------------------------------
    /// Backward of [`Backend::rmsnorm`]: accumulates into `dx` and `dw`.
    /// dx, dy, x: [rows, d]; dw, w: [d]; rstd: [rows] (as written by the forward)
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        rows: usize,
        d: usize,
    ) -> Result<()>;
    /// Backward of [`Backend::rope`], in place: rotates the gradient back by the same angles.
    /// dx: [B, T, heads, hd]
    fn rope_backward(&self, dx: &mut Self::Buf, start: &Self::Ids, inv_freq: &Self::Buf, s: RopeShape) -> Result<()>;
    /// Backward of [`Backend::kv_write`]: writes `dx[b, i, h, :] = dcache[slots[b], h, start[b] + i, :]`.
    /// dx: [B, T, Hkv, hd]; dcache: [slots, Hkv, t_max, hd]
    fn kv_read(
        &self,
        dx: &mut Self::Buf,
        dcache: &Self::Buf,
        slots: &Self::Ids,
        start: &Self::Ids,
        s: AttnShape,
    ) -> Result<()>;
    /// Backward of [`Backend::attention`]: writes `dq`, accumulates into `dk_cache` and `dv_cache`.
    /// dq, dout, q, out: [B, T, H, hd]; k/v caches and their gradients: [slots, Hkv, t_max, hd]; lse: [B, H, T]
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dq: &mut Self::Buf,
        dk_cache: &mut Self::Buf,
        dv_cache: &mut Self::Buf,
        dout: &Self::Buf,
        q: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        slots: &Self::Ids,
        start: &Self::Ids,
        s: AttnShape,
    ) -> Result<()>;
    /// Backward of [`Backend::swiglu`]: writes `dgate` and `dup`.  all: [n]
    #[allow(clippy::too_many_arguments)]
    fn swiglu_backward(
        &self,
        dgate: &mut Self::Buf,
        dup: &mut Self::Buf,
        dout: &Self::Buf,
        gate: &Self::Buf,
        up: &Self::Buf,
        n: usize,
    ) -> Result<()>;
    /// Backward of [`Backend::embedding`]: scatter-adds rows into the table's gradient.
    /// dtable: [V, d]; dout: [rows, d]; ids: [rows]
    fn embedding_backward(
        &self,
        dtable: &mut Self::Buf,
        dout: &Self::Buf,
        ids: &Self::Ids,
        rows: usize,
        d: usize,
    ) -> Result<()>;

    // ---- the loss heads ----------------------------------------------------------------------
    /// Weighted cross-entropy at a per-row temperature, in place (the backward of
    /// [`Backend::softmax`] and [`Backend::logprob_gather`] composed with the loss): with
    /// p = softmax(z[r] * inv_tau[r]) (inv_tau 1 when `None`), writes `loss[r] = -w[r] * log p[t[r]]`
    /// and turns the logits into their gradient `w[r] * inv_tau[r] * (p - onehot(t[r]))`. Rows with
    /// w = 0 get zero gradient (their target is not read). The supervised loss, and the token terms
    /// of the RL loss (w = A / N).
    /// logits: [rows, V]; loss, weights, inv_tau: [rows]; targets: [rows]
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(
        &self,
        logits: &mut Self::Buf,
        loss: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        inv_tau: Option<&Self::Buf>,
        rows: usize,
        v: usize,
    ) -> Result<()>;
    /// The backward of [`Backend::mixture`]'s softmax under the soft-token log-density: the policy
    /// gradient on logits `dz[r] = c[r] * p[r] ⊙ (u[r] - <p[r], u[r]>)` (with p = softmax(z / tau),
    /// u = E g and c = -w / tau, this is d loss / d z of loss = -w log pi(x),
    /// log pi(x) = -||x - p E||^2 / (2 sigma^2), g = (x - p E) / sigma^2).
    /// dz, p, u: [rows, V]; c: [rows]
    fn soft_pg_logits(
        &self,
        dz: &mut Self::Buf,
        p: &Self::Buf,
        u: &Self::Buf,
        c: &Self::Buf,
        rows: usize,
        v: usize,
    ) -> Result<()>;

    // ---- the optimizer -----------------------------------------------------------------------
    /// One AdamW step as `torch.optim.AdamW` takes it (decoupled decay):
    /// `p *= 1 - lr * wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    ///  p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)` with `bc = 1 - beta^step`.
    /// With `h.moments` bf16, m and v are packed bf16 (see [`super::moments`]): each is read as
    /// f32, updated in f32 with correctly rounded operations in the order above (no fused
    /// multiply-add, so every backend computes the same f32), used unrounded for p, then stored
    /// rounded stochastically with the Philox words of its pair.
    /// p, g: [n]; m, v: [h.moments.slots(n)]
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        n: usize,
        h: AdamwStep,
    ) -> Result<()>;
}
