//! Log-likelihood of token sequences under a model, batched: what `softcot score` reports per
//! token and what multiple-choice evaluation sums over each choice's continuation.
//!
//! Sequences are taken longest first and packed into forward calls of at most `tokens` positions:
//! several short sequences side by side (each in its own cache slot, padded to the longest of its
//! group; causal attention keeps padding out of every real position), or one long sequence in
//! chunks through the KV cache. Logits are thus never more than [tokens, V]; a chunk with no scored
//! position skips the lm_head.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::check::ids_in_vocab;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Batch, Input, KvCache, LogitRows, Model, Workspace};

/// One sequence to score: the log-probabilities of `ids[from..]`, each given the ids before it.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub ids: &'a [u32],
    /// The first scored position, at least 1 (the first token has nothing to condition on).
    pub from: usize,
}

/// Buffers of batched scoring, sized once: a workspace of `tokens` positions with logits for all of
/// them, and one KV cache of `max(tokens, longest)` positions that each group of sequences divides
/// into its slots.
pub struct LogLik<B: Backend> {
    ws: Workspace<B>,
    cache: KvCache<B>,
    lp: B::Buf, // lp: [tokens] log-probs of one forward call
    tokens: usize,
    max_rows: usize,
    /// Positions the cache holds in all (slots x t_max of any group).
    capacity: usize,
}

impl<B: Backend> LogLik<B> {
    /// Scoring of sequences of up to `longest` ids, at most `tokens` positions and `max_rows`
    /// sequences per forward call.
    pub fn new(be: &B, model: &Model<B>, tokens: usize, max_rows: usize, longest: usize) -> Result<Self> {
        if tokens == 0 || max_rows == 0 {
            return Err(Error::invalid(
                "scoring needs at least one position and one row per call",
            ));
        }
        let capacity = tokens.max(longest);
        Ok(LogLik {
            ws: model.new_workspace(be, tokens, tokens)?,
            cache: model.new_cache(be, 1, capacity)?,
            lp: be.zeros(tokens)?,
            tokens,
            max_rows,
            capacity,
        })
    }

    /// log p(ids[t] | ids[<t]) for t in `from..ids.len()` of each sequence, in the order given.
    /// Refuses (naming the sequence by its index) an empty or too long sequence, `from` outside
    /// 1..=len, or an id outside the vocabulary. `done(n)` is called as sequences finish.
    pub fn logprobs(
        &mut self,
        be: &B,
        model: &Model<B>,
        seqs: &[Scored<'_>],
        done: &dyn Fn(usize),
    ) -> Result<Vec<Vec<f32>>> {
        self.check(model, seqs)?;
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| core::cmp::Reverse(seqs[i].ids.len()));
        let mut out: Vec<Vec<f32>> = seqs.iter().map(|s| Vec::with_capacity(s.ids.len() - s.from)).collect();
        let mut i = 0;
        while i < order.len() {
            let longest = seqs[order[i]].ids.len();
            let rows = (self.tokens / longest).clamp(1, self.max_rows).min(order.len() - i);
            let group = &order[i..i + rows];
            self.score_group(be, model, seqs, group, longest, &mut out)?;
            done(rows);
            i += rows;
        }
        Ok(out)
    }

    fn check(&self, model: &Model<B>, seqs: &[Scored<'_>]) -> Result<()> {
        let (v, ctx) = (model.cfg.vocab_size, model.cfg.max_position_embeddings);
        for (n, s) in seqs.iter().enumerate() {
            let len = s.ids.len();
            if len > ctx {
                return Err(Error::invalid(format!(
                    "sequence {n}: {len} tokens exceed the model's context of {ctx} positions"
                )));
            }
            if len > self.capacity {
                return Err(Error::invalid(format!(
                    "sequence {n}: {len} tokens exceed the {} positions the scorer was sized for",
                    self.capacity
                )));
            }
            if s.from == 0 || s.from > len {
                return Err(Error::invalid(format!(
                    "sequence {n}: scored positions start at {} of {len} tokens (expected 1..={len})",
                    s.from
                )));
            }
            ids_in_vocab(s.ids, v).map_err(|e| Error::invalid(format!("sequence {n}: {e}")))?;
        }
        Ok(())
    }

    /// Scores `group` (sequences no longer than `longest`), one per cache slot, in chunks of
    /// positions whose logits fit the workspace.
    fn score_group(
        &mut self,
        be: &B,
        model: &Model<B>,
        seqs: &[Scored<'_>],
        group: &[usize],
        longest: usize,
        out: &mut [Vec<f32>],
    ) -> Result<()> {
        let (rows, v) = (group.len(), model.cfg.vocab_size);
        // The cache's positions, divided into this group's slots.
        self.cache.slots = rows;
        self.cache.t_max = self.capacity / rows;
        let chunk = (self.tokens / rows).max(1);
        let slots = be.upload_ids(&(0..rows as u32).collect::<Vec<_>>())?;
        let mut ids = vec![0u32; rows * chunk]; // ids: [rows, chunk] inputs, 0-padded
        let mut targets = vec![0u32; rows * chunk]; // targets: [rows, chunk] next ids, 0 where unscored
        let mut s = 0;
        while s < longest {
            let t = chunk.min(longest - s);
            let mut scored = false;
            for (r, &q) in group.iter().enumerate() {
                let seq = seqs[q].ids;
                for j in 0..t {
                    let p = s + j;
                    ids[r * t + j] = seq.get(p).copied().unwrap_or(0);
                    // Logits at p predict p + 1.
                    let hit = p + 1 >= seqs[q].from && p + 1 < seq.len();
                    targets[r * t + j] = if hit { seq[p + 1] } else { 0 };
                    scored |= hit;
                }
            }
            let dev_ids = be.upload_ids(&ids[..rows * t])?;
            let start = be.upload_ids(&vec![s as u32; rows])?;
            let batch = Batch {
                input: Input::Ids(&dev_ids),
                slots: &slots,
                start: &start,
                b: rows,
                t,
                max_end: s + t,
                logits: if scored { LogitRows::All } else { LogitRows::None },
            };
            model.forward(be, &mut self.ws, &mut self.cache, &batch)?;
            if scored {
                let dev_targets = be.upload_ids(&targets[..rows * t])?;
                be.logprob_gather(&mut self.lp, &self.ws.logits, &dev_targets, rows * t, v)?;
                let lp = be.download(&self.lp, rows * t)?;
                for (r, &q) in group.iter().enumerate() {
                    let (from, len) = (seqs[q].from, seqs[q].ids.len());
                    let (lo, hi) = ((from - 1).max(s), (len - 1).min(s + t));
                    if lo < hi {
                        out[q].extend_from_slice(&lp[r * t + lo - s..r * t + hi - s]);
                    }
                }
            }
            s += t;
        }
        Ok(())
    }
}
