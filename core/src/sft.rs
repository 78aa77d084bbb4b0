//! The supervised loss: mean cross-entropy over target tokens, and one forward + backward with it.

use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::Result;
use crate::model::train::{Grads, TrainActs};
use crate::model::Model;

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
pub fn sft_step<B: Backend>(
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
    model.backward(be, acts, &batch.ids, None, None, b, t, grads)?;
    Ok(loss)
}
