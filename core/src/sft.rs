//! The supervised loss: mean cross-entropy over target tokens, one forward + backward with it, and
//! the supervised optimizer step built on them ([`Step`], what `softcot sft` runs).

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Backend, Train};
use crate::error::Result;
use crate::model::train::{Grads, TrainActs};
use crate::model::Model;
use crate::optim::{finish_step, zero_grads, AdamW, Update};

/// Logit row (b, t) predicts token (b, t + 1). For ids and a 0/1 target mask, both [B, T] (mask[b, t] = 1
/// where token t is a target), returns per-row targets and weights `mask[b, t + 1] / norm` (the last
/// position of each row predicts nothing), and the number of targets. `norm` is the number of targets
/// of the whole optimizer batch, so that micro-batches add up to the mean over the batch.
pub fn shifted_targets(ids: &[u32], mask: &[f32], b: usize, t: usize, norm: f32) -> (Vec<u32>, Vec<f32>) {
    let mut targets = alloc::vec![0u32; b * t];
    let mut weights = alloc::vec![0f32; b * t];
    for r in 0..b {
        for i in 0..t.saturating_sub(1) {
            let next = r * t + i + 1;
            if mask[next] != 0.0 {
                targets[r * t + i] = ids[next];
                weights[r * t + i] = mask[next] / norm;
            }
        }
    }
    (targets, weights)
}

/// Buffers of one supervised micro-batch on the device.
pub struct SftBatch<B: Backend> {
    pub ids: B::Ids,     // ids: [B * T]
    pub targets: B::Ids, // targets: [B * T]
    pub weights: B::Buf, // weights: [B * T]
    pub b: usize,
    pub t: usize,
}

impl<B: Backend> SftBatch<B> {
    /// Uploads a micro-batch; `norm` is the number of targets of the whole optimizer batch.
    pub fn new(be: &B, ids: &[u32], mask: &[f32], b: usize, t: usize, norm: f32) -> Result<Self> {
        let (targets, weights) = shifted_targets(ids, mask, b, t, norm);
        Ok(SftBatch {
            ids: be.upload_ids(ids)?,
            targets: be.upload_ids(&targets)?,
            weights: be.upload(&weights)?,
            b,
            t,
        })
    }
}

/// Forward, weighted cross-entropy and backward of one micro-batch; gradients accumulate into
/// `grads`. Returns this micro-batch's share of the loss. loss_rows: [B * T] scratch.
pub fn sft_step<B: Train>(
    be: &B,
    model: &Model<B>,
    acts: &mut TrainActs<B>,
    batch: &SftBatch<B>,
    loss_rows: &mut B::Buf,
    grads: &mut Grads<B>,
) -> Result<f64> {
    let (b, t) = (batch.b, batch.t);
    let n = b * t;
    model.forward_train(be, acts, &batch.ids, None, None, b, t)?;
    be.cross_entropy_backward(
        &mut acts.logits,
        loss_rows,
        &batch.targets,
        &batch.weights,
        None,
        n,
        model.cfg.vocab_size,
    )?;
    let loss: f64 = be.download(loss_rows, n)?.iter().map(|&x| x as f64).sum();
    model.backward(be, acts, &batch.ids, None, None, None, b, t, grads)?;
    Ok(loss)
}

/// One supervised sequence: its ids and which of them are targets. ids, mask: [T]
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// 1 where ids[t] is a target (predicted from position t - 1), else 0; mask[0] is 0.
    pub mask: Vec<f32>,
}

/// The supervised optimizer step of a run: the mean loss over every target of the batch,
/// gradients accumulated over micro-batches, clipping and AdamW. Owns its buffers.
pub struct Step<B: Train> {
    /// Sequences per forward/backward.
    micro_batch: usize,
    /// Clip the global gradient norm to this (0 disables).
    max_grad_norm: f64,
    acts: TrainActs<B>,
    grads: Grads<B>,
    loss_rows: B::Buf, // loss_rows: [micro_batch * seq_len]
}

impl<B: Train> Step<B> {
    /// Buffers for micro-batches of `micro_batch` sequences of up to `seq_len` tokens.
    pub fn new(
        be: &B,
        model: &Model<B>,
        micro_batch: usize,
        seq_len: usize,
        recompute: bool,
        max_grad_norm: f64,
    ) -> Result<Self> {
        let micro_batch = micro_batch.max(1);
        Ok(Step {
            micro_batch,
            max_grad_norm,
            acts: model.new_train_acts(be, micro_batch, seq_len, recompute)?,
            grads: model.new_grads(be)?,
            loss_rows: be.zeros(micro_batch * seq_len)?,
        })
    }

    /// Gradients of `batch` and the optimizer update at `lr` ([`finish_step`]); also returns the
    /// tokens the step read.
    pub fn update(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        opt: &mut AdamW<B>,
        batch: &[&Example],
        lr: f64,
    ) -> Result<(Update, usize)> {
        let (loss, tokens) = self.gradients(be, model, batch)?;
        let u = finish_step(be, model, opt, &mut self.grads, loss, self.max_grad_norm, lr)?;
        Ok((u, tokens))
    }

    /// Zeroed gradients, then forward + backward of every micro-batch (rows padded to the
    /// longest), the loss normalised by the targets of the whole batch; returns the loss and
    /// the tokens read.
    pub fn gradients(&mut self, be: &B, model: &Model<B>, batch: &[&Example]) -> Result<(f64, usize)> {
        let n_targets: f32 = batch.iter().map(|e| e.mask[1..].iter().sum::<f32>()).sum();
        zero_grads(be, &mut self.grads)?;
        let (mut loss, mut tokens) = (0f64, 0usize);
        for chunk in batch.chunks(self.micro_batch) {
            let t = chunk.iter().map(|e| e.ids.len()).max().unwrap_or(1);
            // ids, mask: [b, t], zero-padded
            let (mut ids, mut mask) = (vec![0u32; chunk.len() * t], vec![0f32; chunk.len() * t]);
            for (r, e) in chunk.iter().enumerate() {
                ids[r * t..r * t + e.ids.len()].copy_from_slice(&e.ids);
                mask[r * t..r * t + e.mask.len()].copy_from_slice(&e.mask);
            }
            let sb = SftBatch::new(be, &ids, &mask, chunk.len(), t, n_targets)?;
            loss += sft_step(be, model, &mut self.acts, &sb, &mut self.loss_rows, &mut self.grads)?;
            tokens += chunk.iter().map(|e| e.ids.len()).sum::<usize>();
        }
        Ok((loss, tokens))
    }
}
