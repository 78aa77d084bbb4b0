//! One decoder layer: `layer_forward` and, beside it, `layer_backward` (llm.c style).
//!
//! x_mid = x_in + Wo attn(rope(Wq n1), rope(Wk n1), Wv n1),  n1 = rmsnorm(x_in)
//! x_out = x_mid + Wd (silu(Wg n2) * Wu n2),                  n2 = rmsnorm(x_mid)

use alloc::format;

use super::forward::Model;
use super::params::Param;
use crate::backend::{AttnShape, Backend, Gemm, RopeShape, Train};
use crate::error::{Error, Result};
use crate::model::ModelConfig;

/// What one layer's forward writes. Inference reuses one set for every layer; training keeps one
/// per layer (or one, recomputed, with gradient checkpointing).
pub struct LayerBufs<B: Backend> {
    pub xn1: B::Buf,  // xn1: [N, d] rmsnorm(x_in)
    pub q: B::Buf,    // q: [N, H * hd] after rope
    pub k: B::Buf,    // k: [N, Hkv * hd] after rope
    pub v: B::Buf,    // v: [N, Hkv * hd]
    pub att: B::Buf,  // att: [N, H * hd] attention output
    pub xn2: B::Buf,  // xn2: [N, d] rmsnorm(x_mid)
    pub gate: B::Buf, // gate: [N, F]
    pub up: B::Buf,   // up: [N, F]
    pub act: B::Buf,  // act: [N, F] silu(gate) * up
    /// What backward needs besides the above (training only).
    pub saved: Option<Saved<B>>,
}

/// Statistics and residuals a layer's backward reads.
pub struct Saved<B: Backend> {
    pub x_in: B::Buf,  // x_in: [N, d]
    pub x_mid: B::Buf, // x_mid: [N, d]
    pub rstd1: B::Buf, // rstd1: [N]
    pub rstd2: B::Buf, // rstd2: [N]
    pub lse: B::Buf,   // lse: [B, H, T]
}

impl<B: Backend> LayerBufs<B> {
    /// Buffers for `n` tokens; `save` adds what backward needs.
    pub fn new(be: &B, c: &ModelConfig, n: usize, save: bool) -> Result<Self> {
        let (d, qd, kvd, f) = (c.d(), c.q_dim(), c.kv_dim(), c.intermediate_size);
        let saved = if save {
            Some(Saved {
                x_in: be.zeros(n * d)?,
                x_mid: be.zeros(n * d)?,
                rstd1: be.zeros(n)?,
                rstd2: be.zeros(n)?,
                lse: be.zeros(n * c.num_attention_heads)?,
            })
        } else {
            None
        };
        Ok(LayerBufs {
            xn1: be.zeros(n * d)?,
            q: be.zeros(n * qd)?,
            k: be.zeros(n * kvd)?,
            v: be.zeros(n * kvd)?,
            att: be.zeros(n * qd)?,
            xn2: be.zeros(n * d)?,
            gate: be.zeros(n * f)?,
            up: be.zeros(n * f)?,
            act: be.zeros(n * f)?,
            saved,
        })
    }
}

/// Gradient scratch of one layer's backward, shared by all layers.
pub struct BackScratch<B: Backend> {
    dxn: B::Buf,   // dxn: [N, d] gradient of a norm's output
    dq: B::Buf,    // dq: [N, H * hd]
    dk: B::Buf,    // dk: [N, Hkv * hd]
    dv: B::Buf,    // dv: [N, Hkv * hd]
    datt: B::Buf,  // datt: [N, H * hd]
    dact: B::Buf,  // dact: [N, F]
    dgate: B::Buf, // dgate: [N, F]
    dup: B::Buf,   // dup: [N, F]
    dkc: B::Buf,   // dkc: [B, Hkv, T, hd] gradient of the layer's keys in cache layout
    dvc: B::Buf,   // dvc: [B, Hkv, T, hd]
}

impl<B: Backend> BackScratch<B> {
    pub fn new(be: &B, c: &ModelConfig, n: usize) -> Result<Self> {
        let (d, qd, kvd, f) = (c.d(), c.q_dim(), c.kv_dim(), c.intermediate_size);
        Ok(BackScratch {
            dxn: be.zeros(n * d)?,
            dq: be.zeros(n * qd)?,
            dk: be.zeros(n * kvd)?,
            dv: be.zeros(n * kvd)?,
            datt: be.zeros(n * qd)?,
            dact: be.zeros(n * f)?,
            dgate: be.zeros(n * f)?,
            dup: be.zeros(n * f)?,
            dkc: be.zeros(n * kvd)?,
            dvc: be.zeros(n * kvd)?,
        })
    }
    /// gradient of the final norm's output. dxn: [N, d]
    pub fn dxn(&mut self) -> &mut B::Buf {
        &mut self.dxn
    }
}

/// Where a call's rows live: cache slots, start positions, and the derived op shapes.
pub struct Rows<'a, B: Backend> {
    pub slots: &'a B::Ids,
    pub start: &'a B::Ids,
    pub n: usize,
    pub attn: AttnShape,
    pub rope_q: RopeShape,
    pub rope_k: RopeShape,
}

impl<'a, B: Backend> Rows<'a, B> {
    pub fn new(c: &ModelConfig, slots: &'a B::Ids, start: &'a B::Ids, b: usize, t: usize, t_max: usize) -> Self {
        let attn = AttnShape {
            b,
            t,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            t_max,
            scale: 1.0 / libm::sqrtf(c.head_dim as f32),
        };
        let rope_q = RopeShape {
            b,
            t,
            heads: c.num_attention_heads,
            head_dim: c.head_dim,
            scaling: 1.0,
        };
        let rope_k = RopeShape {
            heads: c.num_key_value_heads,
            ..rope_q
        };
        Rows {
            slots,
            start,
            n: b * t,
            attn,
            rope_q,
            rope_k,
        }
    }
}

/// `acc += a^T @ b` for a: [n, p], b: [n, q] (a weight gradient from activations).
fn grad_w(p: usize, q: usize, n: usize) -> Gemm {
    Gemm {
        trans_a: true,
        beta: 1.0,
        ..Gemm::nn(p, q, n)
    }
}

/// `c (+)= a @ W` for a: [n, out] and W stored [out, in] (the input gradient of a linear layer).
fn grad_x(n: usize, inp: usize, out: usize, accumulate: bool) -> Gemm {
    Gemm {
        beta: if accumulate { 1.0 } else { 0.0 },
        ..Gemm::nn(n, inp, out)
    }
}

impl<B: Backend> Model<B> {
    /// Layer `l` on the residual stream `x` (updated in place). k_cache, v_cache: [slots, Hkv, t_max, hd];
    /// tmp: [N, d] scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_forward(
        &self,
        be: &B,
        l: usize,
        x: &mut B::Buf,
        lb: &mut LayerBufs<B>,
        k_cache: &mut B::Buf,
        v_cache: &mut B::Buf,
        tmp: &mut B::Buf,
        r: &Rows<'_, B>,
    ) -> Result<()> {
        let c = &self.cfg;
        let li = self.idx.layers[l];
        let (n, d, qd, kvd, f) = (r.n, c.d(), c.q_dim(), c.kv_dim(), c.intermediate_size);
        let eps = c.rms_norm_eps as f32;
        let mut saved = lb.saved.as_mut();
        if let Some(s) = saved.as_deref_mut() {
            be.copy(&mut s.x_in, 0, x, 0, n * d)?;
        }
        // --- attention sublayer ---
        be.rmsnorm(
            &mut lb.xn1,
            saved.as_deref_mut().map(|s| &mut s.rstd1),
            x,
            self.w(li.input_norm),
            n,
            d,
            eps,
        )?;
        be.gemm(&mut lb.q, &lb.xn1, self.w(li.q), Gemm::linear(n, qd, d))?;
        be.gemm(&mut lb.k, &lb.xn1, self.w(li.k), Gemm::linear(n, kvd, d))?;
        be.gemm(&mut lb.v, &lb.xn1, self.w(li.v), Gemm::linear(n, kvd, d))?;
        if let (Some(qb), Some(kb), Some(vb)) = (li.q_bias, li.k_bias, li.v_bias) {
            be.add_bias(&mut lb.q, self.w(qb), n, qd)?;
            be.add_bias(&mut lb.k, self.w(kb), n, kvd)?;
            be.add_bias(&mut lb.v, self.w(vb), n, kvd)?;
        }
        be.rope(&mut lb.q, r.start, &self.inv_freq, r.rope_q)?;
        be.rope(&mut lb.k, r.start, &self.inv_freq, r.rope_k)?;
        be.kv_write(k_cache, &lb.k, r.slots, r.start, r.attn)?;
        be.kv_write(v_cache, &lb.v, r.slots, r.start, r.attn)?;
        let lse = saved.as_deref_mut().map(|s| &mut s.lse);
        be.attention(&mut lb.att, lse, &lb.q, k_cache, v_cache, r.slots, r.start, r.attn)?;
        be.gemm(tmp, &lb.att, self.w(li.o), Gemm::linear(n, d, qd))?;
        if let Some(ob) = li.o_bias {
            be.add_bias(tmp, self.w(ob), n, d)?;
        }
        be.add(x, tmp, n * d)?;
        if let Some(s) = saved.as_deref_mut() {
            be.copy(&mut s.x_mid, 0, x, 0, n * d)?;
        }
        // --- MLP sublayer ---
        be.rmsnorm(
            &mut lb.xn2,
            saved.map(|s| &mut s.rstd2),
            x,
            self.w(li.post_norm),
            n,
            d,
            eps,
        )?;
        be.gemm(&mut lb.gate, &lb.xn2, self.w(li.gate), Gemm::linear(n, f, d))?;
        be.gemm(&mut lb.up, &lb.xn2, self.w(li.up), Gemm::linear(n, f, d))?;
        be.swiglu(&mut lb.act, &lb.gate, &lb.up, n * f)?;
        be.gemm(tmp, &lb.act, self.w(li.down), Gemm::linear(n, d, f))?;
        be.add(x, tmp, n * d)
    }
}

impl<B: Train> Model<B> {
    /// Backward of layer `l`: `dx` holds d loss / d x_out and becomes d loss / d x_in; parameter
    /// gradients accumulate into `grads` (indexed like `self.params`).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        be: &B,
        l: usize,
        dx: &mut B::Buf,
        lb: &LayerBufs<B>,
        k_cache: &B::Buf,
        v_cache: &B::Buf,
        grads: &mut [Param<B::Buf>],
        s: &mut BackScratch<B>,
        r: &Rows<'_, B>,
    ) -> Result<()> {
        let c = &self.cfg;
        let li = self.idx.layers[l];
        let (n, d, qd, kvd, f) = (r.n, c.d(), c.q_dim(), c.kv_dim(), c.intermediate_size);
        let sv = lb
            .saved
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("layer {l}: no saved activations")))?;
        // --- MLP: x_out = x_mid + act Wd^T ---
        be.gemm(&mut s.dact, dx, self.w(li.down), grad_x(n, f, d, false))?;
        be.gemm(&mut grads[li.down].buf, dx, &lb.act, grad_w(d, f, n))?;
        be.swiglu_backward(&mut s.dgate, &mut s.dup, &s.dact, &lb.gate, &lb.up, n * f)?;
        be.gemm(&mut s.dxn, &s.dgate, self.w(li.gate), grad_x(n, d, f, false))?;
        be.gemm(&mut s.dxn, &s.dup, self.w(li.up), grad_x(n, d, f, true))?;
        be.gemm(&mut grads[li.gate].buf, &s.dgate, &lb.xn2, grad_w(f, d, n))?;
        be.gemm(&mut grads[li.up].buf, &s.dup, &lb.xn2, grad_w(f, d, n))?;
        let w_post = self.w(li.post_norm);
        be.rmsnorm_backward(
            dx,
            &mut grads[li.post_norm].buf,
            &s.dxn,
            &sv.x_mid,
            w_post,
            &sv.rstd2,
            n,
            d,
        )?;
        // --- attention: x_mid = x_in + att Wo^T (+ bo) ---
        be.gemm(&mut s.datt, dx, self.w(li.o), grad_x(n, qd, d, false))?;
        be.gemm(&mut grads[li.o].buf, dx, &lb.att, grad_w(d, qd, n))?;
        if let Some(ob) = li.o_bias {
            be.sum_rows(&mut grads[ob].buf, dx, n, d)?;
        }
        let cache_len = r.attn.b * kvd * r.attn.t_max;
        be.fill(&mut s.dkc, 0.0, cache_len)?;
        be.fill(&mut s.dvc, 0.0, cache_len)?;
        be.attention_backward(
            &mut s.dq, &mut s.dkc, &mut s.dvc, &s.datt, &lb.q, k_cache, v_cache, &lb.att, &sv.lse, r.slots, r.start,
            r.attn,
        )?;
        be.kv_read(&mut s.dk, &s.dkc, r.slots, r.start, r.attn)?;
        be.kv_read(&mut s.dv, &s.dvc, r.slots, r.start, r.attn)?;
        be.rope_backward(&mut s.dq, r.start, &self.inv_freq, r.rope_q)?;
        be.rope_backward(&mut s.dk, r.start, &self.inv_freq, r.rope_k)?;
        if let (Some(qb), Some(kb), Some(vb)) = (li.q_bias, li.k_bias, li.v_bias) {
            be.sum_rows(&mut grads[qb].buf, &s.dq, n, qd)?;
            be.sum_rows(&mut grads[kb].buf, &s.dk, n, kvd)?;
            be.sum_rows(&mut grads[vb].buf, &s.dv, n, kvd)?;
        }
        be.gemm(&mut s.dxn, &s.dq, self.w(li.q), grad_x(n, d, qd, false))?;
        be.gemm(&mut s.dxn, &s.dk, self.w(li.k), grad_x(n, d, kvd, true))?;
        be.gemm(&mut s.dxn, &s.dv, self.w(li.v), grad_x(n, d, kvd, true))?;
        be.gemm(&mut grads[li.q].buf, &s.dq, &lb.xn1, grad_w(qd, d, n))?;
        be.gemm(&mut grads[li.k].buf, &s.dk, &lb.xn1, grad_w(kvd, d, n))?;
        be.gemm(&mut grads[li.v].buf, &s.dv, &lb.xn1, grad_w(kvd, d, n))?;
        let w_in = self.w(li.input_norm);
        be.rmsnorm_backward(
            dx,
            &mut grads[li.input_norm].buf,
            &s.dxn,
            &sv.x_in,
            w_in,
            &sv.rstd1,
            n,
            d,
        )
    }
}
