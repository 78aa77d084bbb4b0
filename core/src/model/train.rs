//! Training passes: a forward that keeps what backward needs, and the backward from d loss / d logits
//! to every parameter gradient (under the parameters' HF names).
//!
//! Memory per token, in floats (f32), for L layers:
//! - cached activations (default): L x (4d + 2 H hd + 4 Hkv hd + 3F + H + 2);
//! - with `recompute` (gradient checkpointing): L x d for the layer inputs, plus one layer's worth,
//!   recomputed from its input during backward;
//! - either way 4d + 1 + V of model-level buffers (the logits become their gradient in place) and one
//!   layer's backward scratch, d + 2 H hd + 4 Hkv hd + 3F.

use alloc::vec::Vec;

use super::forward::Model;
use super::layer::{BackScratch, LayerBufs, Rows};
use super::params::Param;
use crate::backend::{Backend, Gemm, Train};
use crate::error::{Error, Result};

/// Activations of a training forward for up to `max_tokens` tokens in rows of up to `max_t`.
pub struct TrainActs<B: Backend> {
    pub max_tokens: usize,
    pub recompute: bool,
    x: B::Buf,     // x: [N, d] residual stream; after forward, the input of the final norm
    xnf: B::Buf,   // xnf: [N, d] final norm output
    rstdf: B::Buf, // rstdf: [N]
    tmp: B::Buf,   // tmp: [N, d]
    dx: B::Buf,    // dx: [N, d] gradient of the residual stream
    layers: Vec<(LayerBufs<B>, B::Buf, B::Buf)>, // per layer (or one, recomputed): buffers, k and v [B, Hkv, T, hd]
    x_in: Vec<B::Buf>, // recompute only: each layer's input [N, d]
    scratch: BackScratch<B>,
    zero_row: B::Buf, // zero_row: [d]
    slots: B::Ids,    // slots: [B] identity
    start: B::Ids,    // start: [B] zeros
    /// logits: [N, V] after `forward_train`; the loss turns them into d loss / d logits in place.
    pub logits: B::Buf,
}

/// Input rows fed as given vectors instead of token embeddings (the recorded soft thinking inputs
/// of RL): constants, so no gradient reaches the embedding table through them.
pub struct Overrides<'a, B: Backend> {
    /// embeds: [R, d] the vectors fed
    pub embeds: &'a B::Buf,
    /// index: [N] row r takes embeds[index[r]] where index[r] != u32::MAX
    pub index: &'a B::Ids,
    /// zero: [N] 0 where row r is overridden, u32::MAX elsewhere (drops their token gradient)
    pub zero: &'a B::Ids,
}

/// The rows whose logits a training pass computes, when not every row: the RL update scores only
/// thinking and answer positions, so prompt and padding rows skip the lm_head both ways.
pub struct HeadRows<'a, B: Backend> {
    /// index: [rows] logits row j is computed from batch row index[j]
    pub index: &'a B::Ids,
    /// back: [N] the logits row of each batch row, or u32::MAX
    pub back: &'a B::Ids,
    pub rows: usize,
}

/// A gradient on the final norm's output at some rows, beside the one the logits send: the RL
/// log-density of noise at the hidden state, whose mean is the final-normed hidden itself.
pub struct HiddenGrad<'a, B: Backend> {
    /// grad: [rows, d] d loss / d xn of each row
    pub grad: &'a B::Buf,
    /// index: [rows] the batch row of each (distinct)
    pub index: &'a B::Ids,
    pub rows: usize,
}

/// The lm_head's input and its row count: xnf itself, or its `head` rows gathered into `tmp`
/// (free once the layers ran). xnf: [N, d]; tmp: [N, d]
fn head_input<'a, B: Backend>(
    be: &B,
    tmp: &'a mut B::Buf,
    xnf: &'a B::Buf,
    head: Option<&HeadRows<'_, B>>,
    n: usize,
    d: usize,
) -> Result<(usize, &'a B::Buf)> {
    match head {
        Some(h) => {
            be.gather_rows(tmp, xnf, h.index, h.rows, d)?;
            Ok((h.rows, tmp))
        }
        None => Ok((n, xnf)),
    }
}

/// One parameter gradient per parameter, same names and order as `Model::params` (a tied lm_head
/// shares the embedding's).
pub type Grads<B> = Vec<Param<<B as Backend>::Buf>>;

impl<B: Backend> TrainActs<B> {
    /// The final norm's output of the last `forward_train`, the lm_head's input. xn: [N, d]
    pub fn final_hidden(&self) -> &B::Buf {
        &self.xnf
    }
}

impl<B: Train> Model<B> {
    pub fn new_train_acts(&self, be: &B, max_rows: usize, max_t: usize, recompute: bool) -> Result<TrainActs<B>> {
        let c = &self.cfg;
        let n = max_rows * max_t;
        let d = c.d();
        let kv = n * c.kv_dim();
        let copies = if recompute { 1 } else { c.num_hidden_layers };
        let mut layers = Vec::with_capacity(copies);
        for _ in 0..copies {
            layers.push((LayerBufs::new(be, c, n, true)?, be.zeros(kv)?, be.zeros(kv)?));
        }
        let x_in = if recompute {
            (0..c.num_hidden_layers)
                .map(|_| be.zeros(n * d))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(TrainActs {
            max_tokens: n,
            recompute,
            x: be.zeros(n * d)?,
            xnf: be.zeros(n * d)?,
            rstdf: be.zeros(n)?,
            tmp: be.zeros(n * d)?,
            dx: be.zeros(n * d)?,
            layers,
            x_in,
            scratch: BackScratch::new(be, c, n)?,
            zero_row: be.zeros(d)?,
            slots: be.upload_ids(&(0..max_rows as u32).collect::<Vec<_>>())?,
            start: be.upload_ids(&alloc::vec![0u32; max_rows])?,
            logits: be.zeros(n * c.vocab_size)?,
        })
    }

    /// Zeroed gradients for every parameter.
    pub fn new_grads(&self, be: &B) -> Result<Grads<B>> {
        self.new_grads_padded(be, 1)
    }

    /// Zeroed gradients, each buffer padded with zeros to a multiple of `multiple` elements (the
    /// world size, for the reduce-scatter of the sharded optimizer). Backward writes only the
    /// first `numel` elements, so the padding stays zero.
    pub fn new_grads_padded(&self, be: &B, multiple: usize) -> Result<Grads<B>> {
        self.params
            .iter()
            .map(|p| {
                Ok(Param {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    buf: be.zeros(p.numel().next_multiple_of(multiple.max(1)))?,
                })
            })
            .collect()
    }

    /// Forward of `b` rows of `t` tokens (ids: [B * T]), keeping activations; fills `acts.logits`
    /// [N, V], or [head.rows, V] for the rows `head` names. `overrides` replaces the input rows it
    /// names (see [`Overrides`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_train(
        &self,
        be: &B,
        acts: &mut TrainActs<B>,
        ids: &B::Ids,
        overrides: Option<&Overrides<'_, B>>,
        head: Option<&HeadRows<'_, B>>,
        b: usize,
        t: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let (n, d) = (b * t, c.d());
        if n > acts.max_tokens || n == 0 {
            return Err(Error::invalid(alloc::format!(
                "training batch of {n} tokens: activations hold {}",
                acts.max_tokens
            )));
        }
        if t > c.max_position_embeddings {
            return Err(Error::invalid(alloc::format!(
                "sequence of {t} tokens exceeds the context of {}",
                c.max_position_embeddings
            )));
        }
        let rows = Rows::new(c, &acts.slots, &acts.start, b, t, t);
        be.embedding(&mut acts.x, self.embed(), ids, n, d)?;
        if let Some(o) = overrides {
            be.gather_rows(&mut acts.x, o.embeds, o.index, n, d)?;
        }
        for l in 0..c.num_hidden_layers {
            let slot = if acts.recompute {
                be.copy(&mut acts.x_in[l], 0, &acts.x, 0, n * d)?;
                0
            } else {
                l
            };
            let (lb, kc, vc) = &mut acts.layers[slot];
            self.layer_forward(be, l, &mut acts.x, lb, kc, vc, &mut acts.tmp, &rows)?;
        }
        let eps = c.rms_norm_eps as f32;
        be.rmsnorm(
            &mut acts.xnf,
            Some(&mut acts.rstdf),
            &acts.x,
            self.w(self.idx.norm),
            n,
            d,
            eps,
        )?;
        // logits = xh @ head^T
        let (m, xh) = head_input(be, &mut acts.tmp, &acts.xnf, head, n, d)?;
        be.gemm(
            &mut acts.logits,
            xh,
            self.w(self.idx.lm_head),
            Gemm::linear(m, c.vocab_size, d),
        )
    }

    /// Backward from `acts.logits`, which must hold d loss / d logits ([N, V], or [head.rows, V])
    /// for the batch of the last `forward_train`, plus `hidden`'s gradient on the final norm's
    /// output; accumulates into `grads`. `overrides` and `head` must be those of the forward:
    /// overridden rows send no gradient to the embedding table.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        be: &B,
        acts: &mut TrainActs<B>,
        ids: &B::Ids,
        overrides: Option<&Overrides<'_, B>>,
        head: Option<&HeadRows<'_, B>>,
        hidden: Option<&HiddenGrad<'_, B>>,
        b: usize,
        t: usize,
        grads: &mut Grads<B>,
    ) -> Result<()> {
        let c = &self.cfg;
        let (n, d, v) = (b * t, c.d(), c.vocab_size);
        let rows = Rows::new(c, &acts.slots, &acts.start, b, t, t);
        let w_head = self.w(self.idx.lm_head);
        // logits = xh @ head^T; xh is gathered again (a copy of rows x d) so that backward does not
        // depend on tmp surviving from the forward
        let (m, xh) = head_input(be, &mut acts.tmp, &acts.xnf, head, n, d)?;
        be.gemm(
            &mut grads[self.idx.lm_head].buf,
            &acts.logits,
            xh,
            Gemm {
                trans_a: true,
                beta: 1.0,
                ..Gemm::nn(v, d, m)
            },
        )?;
        match head {
            Some(h) => {
                // dxh: [rows, d] into tmp (xh is spent), then back to its batch rows; the others
                // had no logits and get no gradient.
                be.gemm(&mut acts.tmp, &acts.logits, w_head, Gemm::nn(m, d, v))?;
                be.fill(acts.scratch.dxn(), 0.0, n * d)?;
                be.gather_rows(acts.scratch.dxn(), &acts.tmp, h.back, n, d)?;
            }
            None => be.gemm(acts.scratch.dxn(), &acts.logits, w_head, Gemm::nn(n, d, v))?,
        }
        if let Some(g) = hidden {
            // dxn[index[j]] += grad[j]: the scatter-add of the embedding's backward, over batch rows
            be.embedding_backward(acts.scratch.dxn(), g.grad, g.index, g.rows, d)?;
        }
        be.fill(&mut acts.dx, 0.0, n * d)?;
        let w_norm = self.w(self.idx.norm);
        be.rmsnorm_backward(
            &mut acts.dx,
            &mut grads[self.idx.norm].buf,
            acts.scratch.dxn(),
            &acts.x,
            w_norm,
            &acts.rstdf,
            n,
            d,
        )?;
        for l in (0..c.num_hidden_layers).rev() {
            let slot = if acts.recompute {
                // Gradient checkpointing: rebuild this layer's activations from its saved input
                // (acts.x is free once the final norm's backward has read it).
                be.copy(&mut acts.x, 0, &acts.x_in[l], 0, n * d)?;
                let (lb, kc, vc) = &mut acts.layers[0];
                self.layer_forward(be, l, &mut acts.x, lb, kc, vc, &mut acts.tmp, &rows)?;
                0
            } else {
                l
            };
            let (lb, kc, vc) = &acts.layers[slot];
            self.layer_backward(be, l, &mut acts.dx, lb, kc, vc, grads, &mut acts.scratch, &rows)?;
        }
        if let Some(o) = overrides {
            be.gather_rows(&mut acts.dx, &acts.zero_row, o.zero, n, d)?;
        }
        be.embedding_backward(&mut grads[self.idx.embed].buf, &acts.dx, ids, n, d)
    }
}
