//! ZeRO-1: AdamW whose optimizer state is sharded across ranks. Each rank keeps, for every
//! parameter tensor of n elements, the f32 master weights and the two moments of its shard of
//! `c = ceil(n / world)` elements (the tensor padded with zeros to `world * c`); the step
//! reduce-scatters the gradients (each rank receives the sum of its shard), clips with the global
//! norm (partial sums of squares all-reduced), updates its shard and all-gathers the new weights.
//! Per rank this holds 3/world of the replicated optimizer's 2 (moments) + weights, at the cost of
//! a gather scratch the size of the largest tensor.
//!
//! Padding elements stay zero: their gradient, weight and moments are zero, and AdamW keeps them so.

use alloc::vec::Vec;

use super::{Collective, Rank};
use crate::backend::{AdamwStep, Backend, Train};
use crate::error::{Error, Result};
use crate::model::train::Grads;
use crate::model::Model;
use crate::optim::{AdamW, AdamwConfig, Optimize, Update};

/// This rank's part of one parameter's optimizer state.
struct Shard<B: Backend> {
    /// Elements per shard.
    c: usize,
    master: B::Buf, // master: [c] f32 weights of elements [index * c, (index + 1) * c)
    grad: B::Buf,   // grad: [c] the reduce-scattered gradient
    m: B::Buf,      // m, v: [c]
    v: B::Buf,
}

pub struct ShardedAdamW<B: Train> {
    pub cfg: AdamwConfig,
    rank: Rank,
    shards: Vec<Shard<B>>,
    gathered: B::Buf, // gathered: [max over tensors of world * c]
    /// Steps taken so far.
    pub step: u64,
}

/// Where rank `r`'s shard lies in a tensor of `n` elements: its start and how many of its `c`
/// elements are real (the rest is padding).
fn placement(r: Rank, n: usize) -> (usize, usize, usize) {
    let c = r.shard_len(n);
    let lo = (r.index * c).min(n);
    (c, lo, (n - lo).min(c))
}

impl<B: Train> ShardedAdamW<B> {
    /// Fresh state (zero moments, step 0); master weights from `model`.
    pub fn new(be: &B, model: &Model<B>, cfg: AdamwConfig, rank: Rank) -> Result<Self> {
        let mut shards = Vec::with_capacity(model.params.len());
        let mut widest = 0;
        for p in &model.params {
            let (c, lo, len) = placement(rank, p.numel());
            let mut master = be.zeros(c)?;
            if len > 0 {
                be.copy(&mut master, 0, &p.buf, lo, len)?;
            }
            shards.push(Shard {
                c,
                master,
                grad: be.zeros(c)?,
                m: be.zeros(c)?,
                v: be.zeros(c)?,
            });
            widest = widest.max(rank.world * c);
        }
        Ok(ShardedAdamW {
            cfg,
            rank,
            shards,
            gathered: be.zeros(widest)?,
            step: 0,
        })
    }

    /// This rank's shard of a whole optimizer state (a checkpoint written by any number of ranks).
    pub fn from_full(be: &B, model: &Model<B>, full: &AdamW<B>, rank: Rank) -> Result<Self> {
        let mut s = Self::new(be, model, full.cfg, rank)?;
        if full.m.len() != s.shards.len() {
            return Err(Error::invalid(
                "sharded AdamW: the state has one moment per parameter of another model",
            ));
        }
        for (i, (p, sh)) in model.params.iter().zip(&mut s.shards).enumerate() {
            let (_, lo, len) = placement(rank, p.numel());
            if len > 0 {
                be.copy(&mut sh.m, 0, &full.m[i].buf, lo, len)?;
                be.copy(&mut sh.v, 0, &full.v[i].buf, lo, len)?;
            }
        }
        s.step = full.step;
        Ok(s)
    }

    /// The whole optimizer state, gathered on every rank (for a checkpoint that any number of
    /// ranks can resume). Allocates the full moments: call it only to save.
    pub fn gather(&mut self, be: &B, model: &Model<B>, comm: &dyn Collective<B>) -> Result<AdamW<B>> {
        let mut full = AdamW::new(be, model, self.cfg)?;
        for (i, sh) in self.shards.iter().enumerate() {
            let n = model.params[i].numel();
            comm.all_gather(be, &sh.m, &mut self.gathered, sh.c)?;
            be.copy(&mut full.m[i].buf, 0, &self.gathered, 0, n)?;
            comm.all_gather(be, &sh.v, &mut self.gathered, sh.c)?;
            be.copy(&mut full.v[i].buf, 0, &self.gathered, 0, n)?;
        }
        full.step = self.step;
        Ok(full)
    }

    /// The global gradient norm from the shards, clipping them to `max_grad_norm` when positive
    /// (as `clip_grad_norm`).
    fn clip(&mut self, be: &B, comm: &dyn Collective<B>, max_grad_norm: f64) -> Result<f64> {
        let mut ss = [0f64];
        for sh in &self.shards {
            ss[0] += be.sum_squares(&sh.grad, sh.c)?;
        }
        comm.all_reduce_host(be, &mut ss)?;
        let norm = libm::sqrt(ss[0]);
        if max_grad_norm > 0.0 && norm.is_finite() && norm > max_grad_norm {
            let s = (max_grad_norm / (norm + 1e-6)) as f32;
            for sh in self.shards.iter_mut() {
                be.scale(&mut sh.grad, s, sh.c)?;
            }
        }
        Ok(norm)
    }

    /// AdamW on this rank's shards, then every rank gathers every tensor's new weights.
    fn update(&mut self, be: &B, model: &mut Model<B>, comm: &dyn Collective<B>, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        for (p, sh) in model.params.iter_mut().zip(&mut self.shards) {
            let h = AdamwStep::new(lr, c.beta1, c.beta2, c.eps, c.decay(&p.name), self.step);
            be.adamw(&mut sh.master, &sh.grad, &mut sh.m, &mut sh.v, sh.c, h)?;
            comm.all_gather(be, &sh.master, &mut self.gathered, sh.c)?;
            let n = p.numel();
            be.copy(&mut p.buf, 0, &self.gathered, 0, n)?;
        }
        Ok(())
    }
}

impl<B: Train> Optimize<B> for ShardedAdamW<B> {
    /// `grads` must be padded to a multiple of the world size ([`Model::new_grads_padded`]).
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
        if comm.rank() != self.rank || grads.len() != self.shards.len() {
            return Err(Error::invalid(
                "sharded AdamW: called with another rank's collective or another model's gradients",
            ));
        }
        for (g, sh) in grads.iter().zip(&mut self.shards) {
            comm.reduce_scatter(be, &g.buf, &mut sh.grad, sh.c)?;
        }
        let grad_norm = self.clip(be, comm, max_grad_norm)?;
        let applied = loss.is_finite() && grad_norm.is_finite();
        if applied {
            self.update(be, model, comm, lr)?;
        }
        Ok(Update {
            loss,
            grad_norm,
            applied,
        })
    }
}

/// A rank's optimizer: AdamW whole on one rank, sharded (ZeRO-1) over several. Checkpoints hold
/// the whole state either way, so a run resumes on any number of ranks.
pub enum RankOpt<B: Train> {
    Whole(AdamW<B>),
    Sharded(ShardedAdamW<B>),
}

impl<B: Train> RankOpt<B> {
    /// From a whole state (fresh or loaded from a checkpoint); with several ranks it keeps only
    /// this rank's shard.
    pub fn new(be: &B, model: &Model<B>, whole: AdamW<B>, rank: Rank) -> Result<Self> {
        Ok(match rank.world {
            1 => RankOpt::Whole(whole),
            _ => RankOpt::Sharded(ShardedAdamW::from_full(be, model, &whole, rank)?),
        })
    }

    /// Calls `f` with the whole state, gathered from the shards first: every rank must call it.
    pub fn with_whole<R>(
        &mut self,
        be: &B,
        model: &Model<B>,
        comm: &dyn Collective<B>,
        f: impl FnOnce(&AdamW<B>) -> Result<R>,
    ) -> Result<R> {
        match self {
            RankOpt::Whole(o) => f(o),
            RankOpt::Sharded(s) => f(&s.gather(be, model, comm)?),
        }
    }
}

impl<B: Train> Optimize<B> for RankOpt<B> {
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
        match self {
            RankOpt::Whole(o) => o.apply(be, model, grads, comm, loss, max_grad_norm, lr),
            RankOpt::Sharded(s) => s.apply(be, model, grads, comm, loss, max_grad_norm, lr),
        }
    }
}
