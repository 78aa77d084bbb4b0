//! AdamW (decoupled weight decay, exactly as `torch.optim.AdamW`), parameter groups, the cosine
//! schedule with linear warm-up, and global gradient-norm clipping.

use alloc::vec::Vec;

use crate::backend::{AdamwStep, Backend, Train};
use crate::dist::Collective;
use crate::error::{Error, Result};
use crate::model::train::Grads;
use crate::model::{Model, Param};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamwConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay norms and biases too (torch's default when all parameters are in one group; softcot's
    /// default leaves them undecayed, as is usual for LLM training).
    pub decay_norms_and_biases: bool,
}

impl Default for AdamwConfig {
    fn default() -> Self {
        AdamwConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_norms_and_biases: false,
        }
    }
}

/// Optimizer state: the two moments of every parameter and the step count.
pub struct AdamW<B: Train> {
    pub cfg: AdamwConfig,
    /// m, v: one buffer per parameter, like `Model::params`.
    pub m: Vec<Param<B::Buf>>,
    pub v: Vec<Param<B::Buf>>,
    /// Steps taken so far.
    pub step: u64,
}

/// Whether a parameter is a norm weight or a bias (the no-decay group by default).
pub fn is_norm_or_bias(name: &str) -> bool {
    name.ends_with(".bias") || name.ends_with("norm.weight")
}

impl AdamwConfig {
    /// The weight decay of parameter `name` (norms and biases are undecayed unless asked).
    pub fn decay(&self, name: &str) -> f64 {
        if self.decay_norms_and_biases || !is_norm_or_bias(name) {
            self.weight_decay
        } else {
            0.0
        }
    }
}

impl<B: Train> AdamW<B> {
    pub fn new(be: &B, model: &Model<B>, cfg: AdamwConfig) -> Result<Self> {
        let zeros = |p: &Param<B::Buf>| -> Result<Param<B::Buf>> {
            Ok(Param {
                name: p.name.clone(),
                shape: p.shape.clone(),
                buf: be.zeros(p.numel())?,
            })
        };
        Ok(AdamW {
            cfg,
            m: model.params.iter().map(zeros).collect::<Result<_>>()?,
            v: model.params.iter().map(zeros).collect::<Result<_>>()?,
            step: 0,
        })
    }

    /// One update of every parameter at learning rate `lr`.
    pub fn update(&mut self, be: &B, model: &mut Model<B>, grads: &Grads<B>, lr: f64) -> Result<()> {
        if grads.len() != model.params.len() {
            return Err(Error::invalid("adamw: one gradient per parameter is required"));
        }
        self.step += 1;
        let c = self.cfg;
        for (i, p) in model.params.iter_mut().enumerate() {
            let h = AdamwStep::new(lr, c.beta1, c.beta2, c.eps, c.decay(&p.name), self.step);
            let n = p.numel();
            be.adamw(&mut p.buf, &grads[i].buf, &mut self.m[i].buf, &mut self.v[i].buf, n, h)?;
        }
        Ok(())
    }
}

/// Learning rate at `step` (0-based): linear warm-up from lr / warmup to lr over `warmup` steps,
/// then a cosine decay to `min_lr` at `total` steps.
pub fn cosine_lr(step: u64, warmup: u64, total: u64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    if total <= warmup {
        return lr;
    }
    let progress = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + libm::cos(core::f64::consts::PI * progress))
}

/// The global L2 norm of all gradients (accumulated in float64).
pub fn grad_norm<B: Backend>(be: &B, grads: &Grads<B>) -> Result<f64> {
    let mut ss = 0f64;
    for g in grads {
        ss += be.sum_squares(&g.buf, g.numel())?;
    }
    Ok(libm::sqrt(ss))
}

/// Scales all gradients so that their global norm is at most `max_norm` (torch's
/// `clip_grad_norm_`: factor max_norm / (norm + 1e-6) when the norm exceeds it). Returns the norm
/// before clipping.
pub fn clip_grad_norm<B: Train>(be: &B, grads: &mut Grads<B>, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(be, grads)?;
    if norm.is_finite() && norm > max_norm {
        let s = (max_norm / (norm + 1e-6)) as f32;
        for g in grads.iter_mut() {
            let n = g.numel();
            be.scale(&mut g.buf, s, n)?;
        }
    }
    Ok(norm)
}

/// What an optimizer step did: the loss it saw, the gradient norm before clipping, and whether
/// AdamW was applied (not when the loss or the norm is not finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    pub loss: f64,
    pub grad_norm: f64,
    pub applied: bool,
}

/// The end of every optimizer step, supervised or RL: the global gradient norm (clipping to
/// `max_grad_norm` when it is positive), then AdamW at `lr` unless the loss or the norm is not
/// finite (the step is then skipped, and the caller decides whether to go on).
pub fn finish_step<B: Train>(
    be: &B,
    model: &mut Model<B>,
    opt: &mut AdamW<B>,
    grads: &mut Grads<B>,
    loss: f64,
    max_grad_norm: f64,
    lr: f64,
) -> Result<Update> {
    let grad_norm = if max_grad_norm > 0.0 {
        clip_grad_norm(be, grads, max_grad_norm)?
    } else {
        self::grad_norm(be, grads)?
    };
    let applied = loss.is_finite() && grad_norm.is_finite();
    if applied {
        opt.update(be, model, grads, lr)?;
    }
    Ok(Update {
        loss,
        grad_norm,
        applied,
    })
}

/// The end of an optimizer step as a data-parallel step sees it: join the ranks' gradients, clip,
/// update. Replicated AdamW all-reduces every gradient and then takes [`finish_step`] on every
/// rank; [`crate::dist::ShardedAdamW`] reduce-scatters them instead.
pub trait Optimize<B: Train> {
    /// `grads` holds this rank's sums; `loss` is already summed over ranks.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        grads: &mut Grads<B>,
        comm: &dyn Collective<B>,
        loss: f64,
        max_grad_norm: f64,
        lr: f64,
    ) -> Result<Update>;
}

impl<B: Train> Optimize<B> for AdamW<B> {
    fn apply(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        grads: &mut Grads<B>,
        comm: &dyn Collective<B>,
        loss: f64,
        max_grad_norm: f64,
        lr: f64,
    ) -> Result<Update> {
        if comm.rank().world > 1 {
            for g in grads.iter_mut() {
                let n = g.numel();
                comm.all_reduce(be, &mut g.buf, n)?;
            }
        }
        finish_step(be, model, self, grads, loss, max_grad_norm, lr)
    }
}

/// Zeroes every gradient (before accumulating a new step).
pub fn zero_grads<B: Train>(be: &B, grads: &mut Grads<B>) -> Result<()> {
    for g in grads.iter_mut() {
        let n = g.numel();
        be.fill(&mut g.buf, 0.0, n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(cosine_lr(0, 20, 100, 1.0, 0.0), 1.0 / 20.0);
        assert_eq!(cosine_lr(19, 20, 100, 1.0, 0.0), 1.0);
        assert!((cosine_lr(20, 20, 100, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(60, 20, 100, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert!((cosine_lr(100, 20, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(500, 20, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn groups() {
        assert!(is_norm_or_bias("model.layers.0.input_layernorm.weight"));
        assert!(is_norm_or_bias("model.norm.weight"));
        assert!(is_norm_or_bias("model.layers.3.self_attn.q_proj.bias"));
        assert!(!is_norm_or_bias("model.layers.3.self_attn.q_proj.weight"));
        assert!(!is_norm_or_bias("model.embed_tokens.weight"));
    }
}
