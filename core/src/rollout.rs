//! Rollouts for RL: G samples per prompt through the batched thinking engine, each rewarded by the
//! grader (100 correct, 10 a boxed answer that is wrong, 0 no boxed answer, as in the paper), then
//! turned into the estimator's [`RlSeq`]s with RLOO advantages per prompt group.

use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::Result;
use crate::grade::{grade, ExtractOptions, Rule};
use crate::model::Model;
use crate::rl::{rloo_advantages, RlSeq, Thinking};
use crate::think::{Decoder, Generation, NoiseAt, ThinkConfig, Tokens};

/// The rewards of the paper; configurable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rewards {
    pub correct: f64,
    /// A boxed answer was extracted, but it is wrong.
    pub boxed_wrong: f64,
    /// No boxed answer.
    pub none: f64,
}

impl Default for Rewards {
    fn default() -> Self {
        Rewards {
            correct: 100.0,
            boxed_wrong: 10.0,
            none: 0.0,
        }
    }
}

/// One rollout: what was fed and produced, and how it was graded.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Index of the prompt in its batch (rollouts of one prompt form an RLOO group).
    pub group: usize,
    pub prompt: Vec<u32>,
    pub gen: Generation,
    /// The decoded answer part: prefill and answer tokens.
    pub answer_text: String,
    pub reward: f64,
    pub correct: bool,
}

/// The reward of an answer: `answer_text` starts with the forced `\boxed{` prefill, so a box is
/// extracted when the model closes it.
pub fn reward(gold: &str, answer_text: &str, r: &Rewards) -> (f64, bool) {
    let v = grade(
        gold,
        answer_text,
        &ExtractOptions {
            last_number_fallback: false,
        },
    );
    let boxed = v.extracted.as_ref().is_some_and(|e| e.rule == Rule::Boxed);
    let value = if v.correct && boxed {
        r.correct
    } else if boxed {
        r.boxed_wrong
    } else {
        r.none
    };
    (value, v.correct && boxed)
}

/// A problem ready for rollouts: its prompt ids and reference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub prompt: Vec<u32>, // prompt: [T_p]
    pub gold: String,
}

/// The rollouts of a batch of tasks, and the noise scale and placement their soft thinking had
/// (the estimator's log-density must use the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub rollouts: Vec<Rollout>,
    pub sigma: f32,
    pub noise_at: NoiseAt,
}

/// `g` rollouts of each task in one batch of `tasks.len() * g` rows. Rollout `j` of task `i`
/// uses Philox stream `stream0 + i * g + j`, so it does not depend on how rows are batched. The
/// noise scale `sigma` is `cfg.sigma(be, model)`, which the caller computes once for all its calls
/// (a pass over the embedding matrix).
#[allow(clippy::too_many_arguments)]
pub fn collect<B: Backend>(
    be: &B,
    model: &Model<B>,
    tasks: &[&Task],
    g: usize,
    stream0: u32,
    cfg: &ThinkConfig,
    sigma: f32,
    tok: &dyn Tokens,
    rewards: &Rewards,
) -> Result<Collected> {
    let mut cfg = cfg.clone();
    cfg.record_inputs = cfg.mode.is_continuous();
    let rows: Vec<Vec<u32>> = tasks
        .iter()
        .flat_map(|t| core::iter::repeat_n(t.prompt.clone(), g))
        .collect();
    if rows.is_empty() {
        return Ok(Collected {
            rollouts: Vec::new(),
            sigma,
            noise_at: cfg.noise_at,
        });
    }
    let streams: Vec<u32> = (0..rows.len() as u32).map(|r| stream0.wrapping_add(r)).collect();
    let gens = Decoder::new(be, model, &cfg, tok, &rows, &streams, sigma)?.run()?;
    let rollouts = gens
        .into_iter()
        .enumerate()
        .map(|(r, gen)| {
            let group = r / g;
            let answer_text = tok.decode(&[gen.prefill_ids.clone(), gen.answer_ids.clone()].concat())?;
            let (reward, correct) = reward(&tasks[group].gold, &answer_text, rewards);
            Ok(Rollout {
                group,
                prompt: rows[r].clone(),
                gen,
                answer_text,
                reward,
                correct,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Collected {
        rollouts,
        sigma,
        noise_at: cfg.noise_at,
    })
}

/// The estimator's sequences, with RLOO advantages computed within each group.
pub fn to_rl_seqs(rollouts: &[Rollout]) -> Result<Vec<RlSeq>> {
    let groups = rollouts.iter().map(|r| r.group + 1).max().unwrap_or(0);
    let mut adv = alloc::vec![0f64; rollouts.len()];
    for gi in 0..groups {
        let idx: Vec<usize> = (0..rollouts.len()).filter(|&i| rollouts[i].group == gi).collect();
        if idx.is_empty() {
            continue; // another rank's group
        }
        let a = rloo_advantages(&idx.iter().map(|&i| rollouts[i].reward).collect::<Vec<_>>())?;
        for (k, &i) in idx.iter().enumerate() {
            adv[i] = a[k];
        }
    }
    Ok(rollouts
        .iter()
        .zip(adv)
        .map(|(r, a)| {
            let thinking = if r.gen.think_inputs.is_empty() {
                Thinking::Tokens(r.gen.think_ids.clone())
            } else if r.gen.think_actions.is_empty() {
                Thinking::Embeds(r.gen.think_inputs.clone())
            } else {
                Thinking::Noised {
                    inputs: r.gen.think_inputs.clone(),
                    actions: r.gen.think_actions.clone(),
                }
            };
            let suffix: Vec<u32> = [r.gen.prefill_ids.clone(), r.gen.answer_ids.clone()].concat();
            let mut mask = alloc::vec![0f32; r.gen.prefill_ids.len()];
            mask.extend(core::iter::repeat_n(1f32, r.gen.answer_ids.len()));
            RlSeq {
                prompt: r.prompt.clone(),
                thinking,
                suffix,
                suffix_mask: mask,
                advantage: a as f32,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_follow_the_paper() {
        let r = Rewards::default();
        assert_eq!(reward("42", " \\boxed{42}", &r), (100.0, true));
        assert_eq!(reward("42", " \\boxed{41}", &r), (10.0, false));
        // An answer cut at the budget before its closing brace is still read from the box.
        assert_eq!(reward("42", " \\boxed{4", &r).0, 10.0);
        assert_eq!(reward("42", " \\boxed{}", &r).0, 0.0, "an empty box is no answer");
        assert_eq!(reward("42", " 42", &r).0, 0.0, "a bare number is not a boxed answer");
    }
}
