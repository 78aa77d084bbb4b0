//! The RL loop of `softcot train`: per optimizer step, G rollouts of each of P prompts in the
//! training mode, graded rewards, RLOO advantages, the estimator's update (micro-batched), AdamW
//! on the cosine schedule; greedy validation on the held-out split keeps the best model.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};
use softcot_core::dist::{Collective, RankOpt};
use softcot_core::io::checkpoint::{checkpoint_name, export_model, save_checkpoint, SaveAs};
use softcot_core::io::rollouts::{save_rollouts, RolloutFile, RolloutMeta};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::model::Model;
use softcot_core::optim::{AdamW, Update};
use softcot_core::rl::{Step, StepConfig};
use softcot_core::rollout::{collect, Collected, Rewards, Rollout, Task};
use softcot_core::think::{after_prompt, ThinkConfig};
use softcot_core::{Error, Result, Train};

use super::config::TrainConfig;
use crate::args::{parse_noise_at, Think};
use crate::dataset::{prompt_ids, Problem};
use crate::metrics_plot::{draw_run, RL_PANELS};
use crate::progress::Progress;
use crate::run_dir::{interrupted, prune_checkpoints, Metrics, Shuffle};

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
pub fn items(problems: &[Problem], tok: &Tokenizer, c: &TrainConfig, context: usize) -> Result<(Vec<Task>, usize)> {
    let (after, _) = room(c, tok)?;
    let mut out = Vec::with_capacity(problems.len());
    let mut long = 0;
    for p in problems {
        let prompt = prompt_ids(tok, &c.template, c.chat, &p.question)?;
        if prompt.is_empty() || prompt.len().saturating_add(after) > context {
            long += 1;
            continue;
        }
        out.push(Task {
            prompt,
            gold: p.answer.clone(),
        });
    }
    Ok((out, long))
}

/// The rollout settings of the run in thinking mode `think` (sampled thinking and answers, as in
/// the paper's training); --tau applies to the training mode only.
pub fn think_config(c: &TrainConfig, think: Think) -> Result<ThinkConfig> {
    let mode = think.mode();
    let mut t = ThinkConfig::new(mode);
    t.tau = c.tau.filter(|_| think == c.think).unwrap_or(mode.default_tau());
    t.noise = c.noise_scale.with_gamma(c.noise_gamma);
    t.noise_at = parse_noise_at(&c.noise_at)?;
    t.think_tokens = c.think_tokens;
    t.answer_tokens = c.answer_tokens;
    t.answer_tau = c.answer_tau;
    t.seed = c.seed;
    Ok(t)
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

/// How the run cuts each optimizer step into work.
pub fn step_config(c: &TrainConfig) -> StepConfig {
    StepConfig {
        prompts: c.prompts_per_step,
        samples: c.samples_per_prompt,
        micro_batch: c.micro_batch,
        rollout_batch: c.rollout_batch,
        max_grad_norm: c.max_grad_norm,
        recompute: c.recompute,
    }
}

/// The progress line's message after a step.
fn progress_message(line: &Value, last_val: Option<f64>) -> String {
    format!(
        "reward {:.1}  acc {:.2}  think {:.1}  val {}  {:.0} tok/s",
        line["reward"].as_f64().unwrap_or(0.0),
        line["accuracy"].as_f64().unwrap_or(0.0),
        line["think_len"].as_f64().unwrap_or(0.0),
        last_val.map_or("-".to_string(), |a| format!("{a:.2}")),
        line["tokens_per_s"].as_f64().unwrap_or(0.0)
    )
}

/// What one step did and how long its halves took.
struct StepStats {
    collected: Collected,
    update: Update,
    rollout_s: f64,
    update_s: f64,
}

/// Rows of activations the update needs: the longest prompt, the full thinking and answer budgets.
pub fn max_len(items: &[Task], c: &TrainConfig, tok: &Tokenizer) -> Result<usize> {
    let prompt = items.iter().map(|i| i.prompt.len()).max().unwrap_or(0);
    Ok(prompt.saturating_add(room(c, tok)?.0))
}

pub struct Trainer<'a, B: Train> {
    pub be: &'a B,
    pub c: &'a TrainConfig,
    pub out: PathBuf,
    pub tok: &'a Tokenizer,
    pub save_as: SaveAs,
    /// Best validation accuracy so far and its step.
    pub best: Option<(f64, u64)>,
}

impl<B: Train> Trainer<'_, B> {
    /// Optimizer steps `from..to` of `total` on the rank of `comm`; returns the step reached
    /// (less than `to` on Ctrl-C). Rank 0 alone writes metrics, plots, checkpoints and models,
    /// and shows progress; every rank works on its share of each step and of the validation.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        model: &mut Model<B>,
        opt: AdamW<B>,
        comm: Box<dyn Collective<B>>,
        train: &[Task],
        val: &[Task],
        from: u64,
        to: u64,
        total: u64,
    ) -> Result<u64> {
        let (be, c) = (self.be, self.c);
        let rank = comm.rank();
        let mut rl = Step::ranked(be, model, step_config(c), max_len(train, c, self.tok)?, comm)?;
        let mut opt = RankOpt::new(be, model, opt, rank)?;
        let root = rank.is_root();
        // Rank 0's metrics file and progress.
        let mut report = match root {
            true => Some((
                Metrics::open(&self.out, from + 1)?,
                Progress::new(to - from, &format!("train {}", c.think.name()), "step"),
            )),
            false => None,
        };
        let think = think_config(c, c.think)?;
        let mut shuffle = Shuffle::new(c.seed, train.len());
        let (t0, mut generated, mut bad) = (Instant::now(), 0usize, 0u64);
        let mut step = from;
        let mut last_val = None;
        if from == 0 && !val.is_empty() {
            // Step 0: where RL starts from (the first point of the validation curve).
            let (acc, think_len) = self.validate(model, val, rl.comm())?;
            if let Some((m, _)) = &mut report {
                m.log(&json!({"step": 0, "val_acc": acc, "val_think_len": think_len}))?;
                eprintln!("validation accuracy before RL: {acc:.3}");
            }
            last_val = Some(acc);
        }
        while step < to {
            let batch: Vec<&Task> = (0..c.prompts_per_step as u64)
                .map(|j| &train[shuffle.index(step * c.prompts_per_step as u64 + j)])
                .collect();
            let lr = c.lr_at(step, total);
            let ts = Instant::now();
            let collected = rl.rollouts(be, model, &batch, step, &think, self.tok, &rewards(c))?;
            let rollout_s = ts.elapsed().as_secs_f64();
            let tu = Instant::now();
            let update = rl.learn(be, model, &mut opt, &collected, think.tau, lr)?;
            let update_s = tu.elapsed().as_secs_f64();
            step += 1;
            if !update.applied {
                bad += 1;
                if root {
                    eprintln!(
                        "warning: step {step}: non-finite loss ({}) or gradient norm ({}); update skipped",
                        update.loss, update.grad_norm
                    );
                }
                if bad >= c.max_bad_steps {
                    return Err(Error::invalid(format!(
                        "{bad} updates skipped for non-finite values; stopping (the last checkpoint is kept; try a lower --lr)"
                    )));
                }
            }
            if c.save_rollouts > 0 && step.is_multiple_of(c.save_rollouts) {
                self.save_rollouts(model, &collected, &think, step)?;
            }
            let st = StepStats {
                collected,
                update,
                rollout_s,
                update_s,
            };
            let mut line = self.metrics_line(step, lr, &st, rl.comm())?;
            generated += line["generated_tokens"].as_u64().unwrap_or(0) as usize;
            line["tokens_per_s"] = json!(generated as f64 / t0.elapsed().as_secs_f64());
            let validate = !val.is_empty() && (step.is_multiple_of(c.val_every) || step == total);
            if validate {
                let (acc, think_len) = self.validate(model, val, rl.comm())?;
                line["val_acc"] = json!(acc);
                line["val_think_len"] = json!(think_len);
                last_val = Some(acc);
                if self.best.is_none_or(|(b, _)| acc > b) {
                    self.best = Some((acc, step));
                    if root {
                        export_model(be, model, &self.out.join("best"), &self.save_as)?;
                        crate::train::save_best(&self.out, acc, step)?;
                    }
                }
            }
            if let Some((m, bar)) = &mut report {
                m.log(&line)?;
                if validate {
                    // The figure follows the run, not only its end.
                    draw_run(&self.out, RL_PANELS)?;
                }
                bar.set_message(progress_message(&line, last_val));
                bar.inc(1);
            }
            if self.end_of_step(model, &mut opt, rl.comm(), step, to)? {
                break;
            }
        }
        if let Some((_, bar)) = report {
            bar.finish();
        }
        Ok(step)
    }

    /// Checkpoints when it is time or on Ctrl-C (on any rank: the ranks agree); true to stop.
    fn end_of_step(
        &mut self,
        model: &Model<B>,
        opt: &mut RankOpt<B>,
        comm: &dyn Collective<B>,
        step: u64,
        to: u64,
    ) -> Result<bool> {
        let mut stop = [interrupted() as u8 as f64];
        comm.all_reduce_host(self.be, &mut stop)?;
        let stop = stop[0] > 0.0;
        if step.is_multiple_of(self.c.save_every) || step == to || stop {
            opt.with_whole(self.be, model, comm, |o| match comm.rank().is_root() {
                true => self.checkpoint(model, o, step),
                false => Ok(()),
            })?;
        }
        Ok(stop)
    }

    /// The step's metrics over the rollouts of every rank.
    fn metrics_line(&self, step: u64, lr: f64, st: &StepStats, comm: &dyn Collective<B>) -> Result<Value> {
        let none = self.c.reward_none;
        let terms: [&dyn Fn(&Rollout) -> f64; 8] = [
            &|_| 1.0,
            &|x| x.reward,
            &|x| x.correct as u8 as f64,
            &|x| (x.reward != none) as u8 as f64,
            &|x| x.gen.think_ids.len() as f64,
            &|x| x.gen.answer_ids.len() as f64,
            &|x| (x.gen.stopped_by == softcot_core::think::StopReason::Phrase) as u8 as f64,
            &|x| generated_tokens(x) as f64,
        ];
        // sums: [8] over this rank's rollouts, then over all ranks
        let mut sums = terms.map(|f| st.collected.rollouts.iter().map(f).sum::<f64>());
        comm.all_reduce_host(self.be, &mut sums)?;
        let mean = |k: usize| sums[k] / sums[0].max(1.0);
        Ok(json!({
            "step": step, "lr": lr, "loss": st.update.loss, "grad_norm": st.update.grad_norm,
            "applied": st.update.applied,
            "reward": mean(1), "accuracy": mean(2), "extracted": mean(3),
            "think_len": mean(4), "answer_len": mean(5), "stopped_by_phrase": mean(6),
            "generated_tokens": sums[7] as u64,
            "sigma": st.collected.sigma, "rollout_s": st.rollout_s, "update_s": st.update_s,
        }))
    }

    /// Greedy thinking (in the `val_think` mode) and answers over the validation split, each rank
    /// taking its share: accuracy and mean thinking length.
    fn validate(&self, model: &Model<B>, val: &[Task], comm: &dyn Collective<B>) -> Result<(f64, f64)> {
        let mut think = think_config(self.c, self.c.val_think)?;
        think.greedy = true;
        think.answer_greedy = true;
        let rows = match self.c.rollout_batch {
            0 => 64,
            r => r,
        };
        let sigma = think.sigma(self.be, model)?;
        // sums: [correct, thinking steps]
        let mut sums = [0f64; 2];
        for chunk in val[comm.rank().share(val.len())].chunks(rows) {
            let tasks: Vec<&Task> = chunk.iter().collect();
            let r = collect(self.be, model, &tasks, 1, 0, &think, sigma, self.tok, &rewards(self.c))?.rollouts;
            sums[0] += r.iter().filter(|x| x.correct).count() as f64;
            sums[1] += r.iter().map(|x| x.gen.think_ids.len() as f64).sum::<f64>();
        }
        comm.all_reduce_host(self.be, &mut sums)?;
        Ok((sums[0] / val.len() as f64, sums[1] / val.len() as f64))
    }

    fn save_rollouts(&self, model: &Model<B>, c: &Collected, think: &ThinkConfig, step: u64) -> Result<()> {
        let dir = self.out.join("rollouts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("{}: cannot create: {e}", dir.display())))?;
        let mut meta = RolloutMeta::new(think, c.sigma, rewards(self.c), model.cfg.d(), model.cfg.vocab_size);
        meta.step = step;
        meta.model = self.save_as.source.display().to_string();
        save_rollouts(
            &dir.join(format!("step-{step:08}.safetensors")),
            &RolloutFile {
                meta,
                rollouts: c.rollouts.clone(),
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
        save_checkpoint(self.be, &dir, model, opt, &self.save_as, &state)?;
        prune_checkpoints(&self.out, self.c.keep);
        Ok(())
    }
}
