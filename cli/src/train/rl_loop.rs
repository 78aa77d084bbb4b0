//! The RL loop of `softcot train`: per optimizer step, G rollouts of each of P prompts in the
//! training mode, graded rewards, RLOO advantages, the estimator's update (micro-batched), AdamW
//! on the cosine schedule; greedy validation on the held-out split keeps the best model.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{checkpoint_name, export_model, save_checkpoint};
use softcot_core::io::rollouts::{save_rollouts, RolloutFile, RolloutMeta};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::model::train::{Grads, TrainActs};
use softcot_core::model::Model;
use softcot_core::optim::{clip_grad_norm, grad_norm, zero_grads, AdamW};
use softcot_core::rl::{rl_step, RlSeq, RlSettings};
use softcot_core::rollout::{collect, to_rl_seqs, Rewards, Rollout};
use softcot_core::think::{after_prompt, ThinkConfig};
use softcot_core::{Backend, Error, Result};

use super::config::TrainConfig;
use crate::args::Think;
use crate::dataset::{prompt_ids, Problem};
use crate::run_dir::{interrupted, prune_checkpoints, Metrics, Shuffle};

/// A problem ready for rollouts: its prompt ids and reference answer.
pub struct Item {
    pub prompt: Vec<u32>, // prompt: [T_p]
    pub gold: String,
}

/// Positions a rollout takes after its prompt ([`after_prompt`]: thinking, prefill, answer), and
/// the prefill's length.
fn room(c: &TrainConfig, tok: &Tokenizer) -> Result<(usize, usize)> {
    after_prompt(tok, c.think_tokens, c.answer_tokens)
}

/// Refuses a budget that leaves no room in the model's context for a prompt of `longest` tokens
/// (the longest prompt a run must keep; 1 where long prompts are only left out), before any work.
pub fn check_room(c: &TrainConfig, tok: &Tokenizer, context: usize, longest: usize) -> Result<()> {
    let (after, prefix) = room(c, tok)?;
    if longest.saturating_add(after) <= context {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "--think-tokens {} + the {prefix}-token answer prefix + --answer-tokens {} leave no room for a {longest}-token prompt in the model's context of {context} positions",
        c.think_tokens, c.answer_tokens
    )))
}

/// Tokenizes problems under the run's template; problems whose prompt leaves no room for thinking
/// and answering within the model's context are left out (and counted).
pub fn items(problems: &[Problem], tok: &Tokenizer, c: &TrainConfig, context: usize) -> Result<(Vec<Item>, usize)> {
    let (after, _) = room(c, tok)?;
    let mut out = Vec::with_capacity(problems.len());
    let mut long = 0;
    for p in problems {
        let prompt = prompt_ids(tok, &c.template, c.chat, &p.question)?;
        if prompt.is_empty() || prompt.len().saturating_add(after) > context {
            long += 1;
            continue;
        }
        out.push(Item {
            prompt,
            gold: p.answer.clone(),
        });
    }
    Ok((out, long))
}

/// The rollout settings of the run in thinking mode `think` (sampled thinking and answers, as in
/// the paper's training); --tau applies to the training mode only.
pub fn think_config(c: &TrainConfig, think: Think) -> ThinkConfig {
    let mode = think.mode();
    let mut t = ThinkConfig::new(mode);
    t.tau = c.tau.filter(|_| think == c.think).unwrap_or(mode.default_tau());
    t.noise = c.noise_scale.with_gamma(c.noise_gamma);
    t.think_tokens = c.think_tokens;
    t.answer_tokens = c.answer_tokens;
    t.answer_tau = c.answer_tau;
    t.seed = c.seed;
    t
}

pub fn rewards(c: &TrainConfig) -> Rewards {
    Rewards {
        correct: c.reward_correct,
        boxed_wrong: c.reward_boxed,
        none: c.reward_none,
    }
}

/// Tokens a rollout generated: thinking steps and answer tokens (the forced prefill is not generated).
fn generated_tokens(r: &Rollout) -> usize {
    r.gen.think_ids.len() + r.gen.answer_ids.len()
}

/// What one step measured.
pub struct StepStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub applied: bool,
    pub rollouts: Vec<Rollout>,
    pub sigma: f32,
    pub rollout_s: f64,
    pub update_s: f64,
}

/// The update of one step on given rollout sequences: gradients over micro-batches, clipping, and
/// AdamW unless the loss or gradient is not finite. Returns (loss, grad norm, applied).
#[allow(clippy::too_many_arguments)]
pub fn update<B: Backend>(
    be: &B,
    model: &mut Model<B>,
    opt: &mut AdamW<B>,
    acts: &mut TrainActs<B>,
    grads: &mut Grads<B>,
    seqs: &[RlSeq],
    s: &RlSettings,
    micro_batch: usize,
    max_grad_norm: f64,
    lr: f64,
) -> Result<(f64, f64, bool)> {
    zero_grads(be, grads)?;
    let mut loss = 0f64;
    for chunk in seqs.chunks(micro_batch.max(1)) {
        loss += rl_step(be, model, acts, chunk, s, grads)?;
    }
    let norm = if max_grad_norm > 0.0 {
        clip_grad_norm(be, grads, max_grad_norm)?
    } else {
        grad_norm(be, grads)?
    };
    let ok = loss.is_finite() && norm.is_finite();
    if ok {
        opt.update(be, model, grads, lr)?;
    }
    Ok((loss, norm, ok))
}

/// Rows of activations the update needs: the longest prompt, the full thinking and answer budgets.
pub fn max_len(items: &[Item], c: &TrainConfig, tok: &Tokenizer) -> Result<usize> {
    let prompt = items.iter().map(|i| i.prompt.len()).max().unwrap_or(0);
    Ok(prompt.saturating_add(room(c, tok)?.0))
}

pub struct Trainer<'a, B: Backend> {
    pub be: &'a B,
    pub c: &'a TrainConfig,
    pub out: PathBuf,
    pub tok: &'a Tokenizer,
    pub tokenizer_src: PathBuf,
    pub dtype: DType,
    /// Best validation accuracy so far and its step.
    pub best: Option<(f64, u64)>,
}

impl<B: Backend> Trainer<'_, B> {
    fn micro_batch(&self) -> usize {
        match self.c.micro_batch {
            0 => self.c.prompts_per_step * self.c.samples_per_prompt,
            m => m,
        }
    }

    /// Rollouts of `batch` (G each), generated `rollout_batch` rows at a time.
    fn rollouts(&self, model: &Model<B>, batch: &[&Item], step: u64, think: &ThinkConfig) -> Result<Vec<Rollout>> {
        let c = self.c;
        let g = c.samples_per_prompt;
        let per_call = match c.rollout_batch {
            0 => batch.len(),
            r => (r / g).max(1),
        };
        // Rollout j of prompt i of this step uses stream (step * P + i) * G + j: unique in the run.
        let stream0 = (step * c.prompts_per_step as u64 * g as u64) as u32;
        let mut all = Vec::with_capacity(batch.len() * g);
        for (k, chunk) in batch.chunks(per_call).enumerate() {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|i| i.prompt.clone()).collect();
            let golds: Vec<String> = chunk.iter().map(|i| i.gold.clone()).collect();
            let s0 = stream0.wrapping_add((k * per_call * g) as u32);
            let mut r = collect(self.be, model, &prompts, &golds, g, s0, think, self.tok, &rewards(c))?;
            for x in r.iter_mut() {
                x.group += k * per_call;
            }
            all.extend(r);
        }
        Ok(all)
    }

    /// Optimizer steps `from..to` of `total`; returns the step reached (less than `to` on Ctrl-C).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        model: &mut Model<B>,
        opt: &mut AdamW<B>,
        train: &[Item],
        val: &[Item],
        from: u64,
        to: u64,
        total: u64,
    ) -> Result<u64> {
        let (be, c) = (self.be, self.c);
        let mb = self.micro_batch();
        let mut acts = model.new_train_acts(be, mb, max_len(train, c, self.tok)?, c.recompute)?;
        let mut grads = model.new_grads(be)?;
        let mut metrics = Metrics::open(&self.out)?;
        let think = think_config(c, c.think);
        let bar = crate::progress::bar(to - from, &format!("train {}", c.think.name()));
        let mut shuffle = Shuffle::new(c.seed, train.len());
        let (t0, mut generated, mut bad) = (Instant::now(), 0usize, 0u64);
        let mut step = from;
        let mut last_val = None;
        if from == 0 && !val.is_empty() {
            // Step 0: where RL starts from (the first point of the validation curve).
            let (acc, think_len) = self.validate(model, val)?;
            metrics.log(&json!({"step": 0, "val_acc": acc, "val_think_len": think_len}))?;
            eprintln!("validation accuracy before RL: {acc:.3}");
            last_val = Some(acc);
        }
        while step < to {
            let batch: Vec<&Item> = (0..c.prompts_per_step as u64)
                .map(|j| &train[shuffle.index(step * c.prompts_per_step as u64 + j)])
                .collect();
            let lr = c.schedule.lr(step, c.warmup, total, c.lr, c.min_lr);
            let ts = Instant::now();
            let sigma = think.sigma(be, model)?;
            let rollouts = self.rollouts(model, &batch, step, &think)?;
            let rollout_s = ts.elapsed().as_secs_f64();
            let seqs = to_rl_seqs(&rollouts)?;
            let s = RlSettings {
                tau: think.tau,
                sigma,
                norm: seqs.len() as f32,
            };
            let tu = Instant::now();
            let (loss, norm, applied) = update(
                be,
                model,
                opt,
                &mut acts,
                &mut grads,
                &seqs,
                &s,
                mb,
                c.max_grad_norm,
                lr,
            )?;
            let update_s = tu.elapsed().as_secs_f64();
            step += 1;
            if !applied {
                bad += 1;
                eprintln!("warning: step {step}: non-finite loss ({loss}) or gradient norm ({norm}); update skipped");
                if bad >= c.max_bad_steps {
                    return Err(Error::invalid(format!(
                        "{bad} updates skipped for non-finite values; stopping (the last checkpoint is kept; try a lower --lr)"
                    )));
                }
            }
            if c.save_rollouts > 0 && step.is_multiple_of(c.save_rollouts) {
                self.save_rollouts(model, &rollouts, &think, sigma, step)?;
            }
            let st = StepStats {
                loss,
                grad_norm: norm,
                applied,
                rollouts,
                sigma,
                rollout_s,
                update_s,
            };
            generated += st.rollouts.iter().map(generated_tokens).sum::<usize>();
            let mut line = self.metrics_line(step, lr, &st);
            line["tokens_per_s"] = json!(generated as f64 / t0.elapsed().as_secs_f64());
            if !val.is_empty() && (step.is_multiple_of(c.val_every) || step == total) {
                let (acc, think_len) = self.validate(model, val)?;
                line["val_acc"] = json!(acc);
                line["val_think_len"] = json!(think_len);
                last_val = Some(acc);
                if self.best.is_none_or(|(b, _)| acc > b) {
                    self.best = Some((acc, step));
                    export_model(be, model, &self.out.join("best"), self.dtype, &self.tokenizer_src)?;
                    crate::train::save_best(&self.out, acc, step)?;
                }
            }
            metrics.log(&line)?;
            bar.set_message(format!(
                "reward {:.1}  acc {:.2}  think {:.1}  val {}  {:.0} tok/s",
                line["reward"].as_f64().unwrap_or(0.0),
                line["accuracy"].as_f64().unwrap_or(0.0),
                line["think_len"].as_f64().unwrap_or(0.0),
                last_val.map_or("-".to_string(), |a| format!("{a:.2}")),
                line["tokens_per_s"].as_f64().unwrap_or(0.0)
            ));
            bar.inc(1);
            let stop = interrupted();
            if step.is_multiple_of(c.save_every) || step == to || stop {
                self.checkpoint(model, opt, step)?;
            }
            if stop {
                break;
            }
        }
        bar.finish();
        Ok(step)
    }

    fn metrics_line(&self, step: u64, lr: f64, st: &StepStats) -> Value {
        let r = &st.rollouts;
        let n = r.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Rollout) -> f64| r.iter().map(f).sum::<f64>() / n;
        let none = self.c.reward_none;
        json!({
            "step": step, "lr": lr, "loss": st.loss, "grad_norm": st.grad_norm, "applied": st.applied,
            "reward": mean(&|x| x.reward),
            "accuracy": mean(&|x| x.correct as u8 as f64),
            "extracted": mean(&|x| (x.reward != none) as u8 as f64),
            "think_len": mean(&|x| x.gen.think_ids.len() as f64),
            "answer_len": mean(&|x| x.gen.answer_ids.len() as f64),
            "stopped_by_phrase": mean(&|x| (x.gen.stopped_by == softcot_core::think::StopReason::Phrase) as u8 as f64),
            "generated_tokens": r.iter().map(generated_tokens).sum::<usize>(),
            "sigma": st.sigma, "rollout_s": st.rollout_s, "update_s": st.update_s,
        })
    }

    /// Greedy thinking (in the `val_think` mode) and answers over the validation split: accuracy
    /// and mean thinking length.
    fn validate(&self, model: &Model<B>, val: &[Item]) -> Result<(f64, f64)> {
        let mut think = think_config(self.c, self.c.val_think);
        think.greedy = true;
        think.answer_greedy = true;
        let rows = match self.c.rollout_batch {
            0 => 64,
            r => r,
        };
        let (mut correct, mut len) = (0usize, 0usize);
        for chunk in val.chunks(rows) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|i| i.prompt.clone()).collect();
            let golds: Vec<String> = chunk.iter().map(|i| i.gold.clone()).collect();
            let r = collect(
                self.be,
                model,
                &prompts,
                &golds,
                1,
                0,
                &think,
                self.tok,
                &rewards(self.c),
            )?;
            correct += r.iter().filter(|x| x.correct).count();
            len += r.iter().map(|x| x.gen.think_ids.len()).sum::<usize>();
        }
        Ok((correct as f64 / val.len() as f64, len as f64 / val.len() as f64))
    }

    fn save_rollouts(&self, model: &Model<B>, r: &[Rollout], think: &ThinkConfig, sigma: f32, step: u64) -> Result<()> {
        let dir = self.out.join("rollouts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("{}: cannot create: {e}", dir.display())))?;
        let mut meta = RolloutMeta::new(think, sigma, rewards(self.c), model.cfg.d(), model.cfg.vocab_size);
        meta.step = step;
        meta.model = self.tokenizer_src.display().to_string();
        save_rollouts(
            &dir.join(format!("step-{step:08}.safetensors")),
            &RolloutFile {
                meta,
                rollouts: r.to_vec(),
            },
        )
    }

    fn checkpoint(&self, model: &Model<B>, opt: &AdamW<B>, step: u64) -> Result<()> {
        let mut state = json!({"step": step, "seed": self.c.seed});
        if let Some((acc, at)) = self.best {
            state["best_val_acc"] = json!(acc);
            state["best_step"] = json!(at);
        }
        let dir = self.out.join(checkpoint_name(step));
        save_checkpoint(self.be, &dir, model, opt, self.dtype, &self.tokenizer_src, &state)?;
        prune_checkpoints(&self.out, self.c.keep);
        Ok(())
    }
}
