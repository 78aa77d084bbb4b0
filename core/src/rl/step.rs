//! One RL optimizer step, the one `softcot train`, `--replay` and `softcot bench --workload
//! rl-step` all run: G rollouts of each of P prompts (Philox streams numbered by step, prompt and
//! sample), rewards, RLOO advantages, the estimator's gradients over micro-batches, clipping and
//! AdamW. A [`Step`] owns the activation and gradient buffers, allocated once for the run.
//!
//! With several ranks ([`Step::ranked`]), each rank rolls out and differentiates its share of the
//! step's prompts ([`Rank::share`]); the streams and groups keep the numbers the prompts have in
//! the whole step, so the rollouts are those of one rank, and the optimizer joins the gradients.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{rl_step, RlSeq, RlSettings};
use crate::backend::Train;
use crate::dist::{Collective, Rank, Solo};
use crate::error::Result;
use crate::model::train::{Grads, TrainActs};
use crate::model::Model;
use crate::optim::{zero_grads, Optimize, Update};
use crate::rollout::{collect, to_rl_seqs, Collected, Rewards, Task};
use crate::think::{check_action_memory, ThinkConfig, Tokens};

/// How a step is cut into work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    /// P: prompts per step.
    pub prompts: usize,
    /// G: rollouts per prompt.
    pub samples: usize,
    /// Rollouts per forward/backward of the update (gradients accumulate); 0 = all at once.
    pub micro_batch: usize,
    /// Rollout rows per batched generation call; 0 = all rollouts of the step at once.
    pub rollout_batch: usize,
    /// Clip the global gradient norm to this (0 disables).
    pub max_grad_norm: f64,
    /// Recompute activations per layer in backward (less memory, about 1.3x the compute).
    pub recompute: bool,
}

impl StepConfig {
    /// Rollouts per forward/backward when a step has `rollouts` of them: the one rule of the
    /// micro-batch, for the trainer, the replay and the benchmark alike.
    pub fn micro_rows(&self, rollouts: usize) -> usize {
        match self.micro_batch {
            0 => rollouts,
            m => m.min(rollouts),
        }
        .max(1)
    }

    /// Prompts per generation call (all their G rollouts go in one batch).
    fn prompts_per_call(&self, prompts: usize) -> usize {
        match self.rollout_batch {
            0 => prompts,
            r => (r / self.samples).max(1),
        }
    }

    /// The Philox stream of rollout `j` of prompt `i` of step `step` is `(step * P + i) * G + j`:
    /// unique in the run, and the same however the rollouts are batched.
    fn stream0(&self, step: u64) -> u32 {
        (step * self.prompts as u64 * self.samples as u64) as u32
    }
}

/// The buffers of the RL step of a run (of one rank), its settings and its collective.
pub struct Step<B: Train> {
    pub cfg: StepConfig,
    acts: TrainActs<B>,
    grads: Grads<B>, // grads: one per parameter, padded to a multiple of the world size
    comm: Box<dyn Collective<B>>,
}

impl<B: Train> Step<B> {
    /// Buffers for the update of sequences of up to `max_t` positions, on one rank.
    pub fn new(be: &B, model: &Model<B>, cfg: StepConfig, max_t: usize) -> Result<Self> {
        Self::ranked(be, model, cfg, max_t, Box::new(Solo))
    }

    /// The step of one rank of a data-parallel run: it works on its share of the prompts.
    pub fn ranked(
        be: &B,
        model: &Model<B>,
        cfg: StepConfig,
        max_t: usize,
        comm: Box<dyn Collective<B>>,
    ) -> Result<Self> {
        let rank = comm.rank();
        let rows = cfg.micro_rows(rank.share(cfg.prompts).len() * cfg.samples);
        Ok(Step {
            cfg,
            acts: model.new_train_acts(be, rows, max_t.max(1), cfg.recompute)?,
            grads: model.new_grads_padded(be, rank.world)?,
            comm,
        })
    }

    pub fn rank(&self) -> Rank {
        self.comm.rank()
    }

    /// How this rank talks to the others (to sum metrics over ranks, or gather a checkpoint).
    pub fn comm(&self) -> &dyn Collective<B> {
        self.comm.as_ref()
    }

    /// The G rollouts of each task of this rank's share of `batch` at step `step` (0-based),
    /// generated `rollout_batch` rows at a time; groups are numbered by the task's place in `batch`.
    #[allow(clippy::too_many_arguments)]
    pub fn rollouts(
        &self,
        be: &B,
        model: &Model<B>,
        batch: &[&Task],
        step: u64,
        think: &ThinkConfig,
        tok: &dyn Tokens,
        rewards: &Rewards,
    ) -> Result<Collected> {
        let share = self.rank().share(batch.len());
        let (g, per_call) = (self.cfg.samples, self.cfg.prompts_per_call(batch.len()));
        let stream0 = self.cfg.stream0(step);
        if think.mode.is_continuous() && !think.greedy {
            // The whole step's actions are held until the update.
            let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
            let k = think.noise_at.action_width(d, v);
            check_action_memory(think.noise_at, share.len() * g, think.think_tokens, k)?;
        }
        let mut all = Collected {
            rollouts: Vec::with_capacity(share.len() * g),
            sigma: think.sigma(be, model)?,
            noise_at: think.noise_at,
        };
        for (k, chunk) in batch[share.clone()].chunks(per_call).enumerate() {
            let first = share.start + k * per_call;
            let s0 = stream0.wrapping_add((first * g) as u32);
            let c = collect(be, model, chunk, g, s0, think, all.sigma, tok, rewards)?;
            all.rollouts.extend(c.rollouts.into_iter().map(|mut r| {
                r.group += first;
                r
            }));
        }
        Ok(all)
    }

    /// The update of collected rollouts at thinking temperature `tau`: RLOO advantages per group,
    /// the loss normalised by the number of rollouts of all ranks, then [`Step::update`].
    pub fn learn(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        opt: &mut impl Optimize<B>,
        c: &Collected,
        tau: f32,
        lr: f64,
    ) -> Result<Update> {
        let seqs = to_rl_seqs(&c.rollouts)?;
        let mut n = [seqs.len() as f64];
        self.comm.all_reduce_host(be, &mut n)?;
        let s = RlSettings {
            tau,
            sigma: c.sigma,
            noise_at: c.noise_at,
            norm: n[0] as f32,
        };
        self.update(be, model, opt, &seqs, &s, lr)
    }

    /// Gradients of this rank's `seqs` ([`Step::gradients`]), the loss summed over ranks, then
    /// the optimizer joins the gradients, clips and updates unless the loss or the gradient norm
    /// is not finite.
    pub fn update(
        &mut self,
        be: &B,
        model: &mut Model<B>,
        opt: &mut impl Optimize<B>,
        seqs: &[RlSeq],
        s: &RlSettings,
        lr: f64,
    ) -> Result<Update> {
        let mut loss = [self.gradients(be, model, seqs, s)?];
        self.comm.all_reduce_host(be, &mut loss)?;
        let comm = self.comm.as_ref();
        opt.apply(be, model, &mut self.grads, comm, loss[0], self.cfg.max_grad_norm, lr)
    }

    /// Zeroed gradients, then the estimator over micro-batches of `seqs`, accumulating; returns
    /// the loss. The forward and backward half of an update, which the benchmark times alone.
    pub fn gradients(&mut self, be: &B, model: &Model<B>, seqs: &[RlSeq], s: &RlSettings) -> Result<f64> {
        zero_grads(be, &mut self.grads)?;
        let mut loss = 0f64;
        for chunk in seqs.chunks(self.cfg.micro_rows(seqs.len())) {
            loss += rl_step(be, model, &mut self.acts, chunk, s, &mut self.grads)?;
        }
        Ok(loss)
    }
}
