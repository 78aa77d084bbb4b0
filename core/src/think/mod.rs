//! Thinking modes at inference: hard, soft and fuzzy thinking, greedy or sampled; the stop phrase on
//! the (shadow) text, the thinking budget, the prefill rule, and hard answer tokens.
//!
//! Rows of a batch advance together one token per step, each in its own phase (thinking, forced
//! prefill, answering); a finished row leaves the batch and frees its slot. Per step the host
//! downloads only the argmax / sampled ids of the active rows (and, when recording, the fed inputs).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Batch, Input, LogitRows, Model};

/// The stop phrase of the paper's prompt format.
pub const STOP_PHRASE: &str = "The final answer is:";
/// Forced answer prefix after an early stop on the phrase.
pub const PREFILL_AFTER_STOP: &str = " \\boxed{";
/// Forced answer prefix when the thinking budget ran out (or the model emitted EOS while thinking).
pub const PREFILL_AT_BUDGET: &str = " The final answer is: \\boxed{";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkMode {
    /// Sample (or argmax) a token from softmax(z / tau) and feed its embedding.
    Hard,
    /// Feed softmax(z / tau) @ E (+ noise), tau = 0.5 by default.
    Soft,
    /// Soft with tau = 1e-4: almost the argmax token's embedding.
    Fuzzy,
}

impl ThinkMode {
    pub fn default_tau(self) -> f32 {
        match self {
            ThinkMode::Hard => 1.0,
            ThinkMode::Soft => 0.5,
            ThinkMode::Fuzzy => 1e-4,
        }
    }
    pub fn is_continuous(self) -> bool {
        self != ThinkMode::Hard
    }
    /// `hard`, `soft` or `fuzzy`: the inverse of [`ThinkMode::parse`].
    pub fn name(self) -> &'static str {
        match self {
            ThinkMode::Hard => "hard",
            ThinkMode::Soft => "soft",
            ThinkMode::Fuzzy => "fuzzy",
        }
    }
    pub fn parse(s: &str) -> Option<ThinkMode> {
        match s {
            "hard" => Some(ThinkMode::Hard),
            "soft" => Some(ThinkMode::Soft),
            "fuzzy" => Some(ThinkMode::Fuzzy),
            _ => None,
        }
    }
}

/// How the noise scale sigma is derived from the embedding matrix E [V, d].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseScale {
    /// sigma = gamma * rms(E) (root mean square of E's entries); the default.
    Rms { gamma: f32 },
    /// The literal per-coordinate reading: sigma = gamma * sqrt(mean_v ||E_v||^2).
    RowNorm { gamma: f32 },
}

impl NoiseScale {
    /// sigma from the sum of squares of E's entries.
    pub fn sigma(self, sum_sq: f64, v: usize, d: usize) -> f32 {
        let mean_row_sq = sum_sq / v as f64;
        match self {
            NoiseScale::Rms { gamma } => (gamma as f64 * libm::sqrt(mean_row_sq / d as f64)) as f32,
            NoiseScale::RowNorm { gamma } => (gamma as f64 * libm::sqrt(mean_row_sq)) as f32,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThinkConfig {
    pub mode: ThinkMode,
    /// Greedy thinking: argmax for hard, no noise for soft/fuzzy.
    pub greedy: bool,
    pub tau: f32,
    pub noise: NoiseScale,
    /// Thinking budget L.
    pub think_tokens: usize,
    /// Answer budget (hard tokens after the prefill); 0 skips the answer phase and its prefill.
    pub answer_tokens: usize,
    pub answer_greedy: bool,
    pub answer_tau: f32,
    /// Stop on the phrase and on EOS; `false` thinks exactly `think_tokens` steps.
    pub stop: bool,
    pub seed: u64,
    /// Download the fed thinking inputs (soft/fuzzy) into [`Generation::think_inputs`].
    pub record_inputs: bool,
}

impl ThinkConfig {
    pub fn new(mode: ThinkMode) -> Self {
        ThinkConfig {
            mode,
            greedy: false,
            tau: mode.default_tau(),
            noise: NoiseScale::Rms { gamma: 0.33 },
            think_tokens: 128,
            answer_tokens: 32,
            answer_greedy: false,
            answer_tau: 1.0,
            stop: true,
            seed: 0,
            record_inputs: false,
        }
    }
    /// The per-coordinate noise std these settings feed with `model`'s current E: 0 for hard or
    /// greedy thinking. The estimator's log-density must use the same value as the rollouts did.
    pub fn sigma<B: Backend>(&self, be: &B, model: &Model<B>) -> Result<f32> {
        if !self.mode.is_continuous() || self.greedy {
            return Ok(0.0);
        }
        let (v, d) = (model.cfg.vocab_size, model.cfg.d());
        Ok(self.noise.sigma(be.sum_squares(model.embed(), v * d)?, v, d))
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::invalid("--tau must be a positive number"));
        }
        let answer_tau_ok = self.answer_tau.is_finite() && self.answer_tau > 0.0;
        if !self.answer_greedy && !answer_tau_ok {
            return Err(Error::invalid("the answer temperature must be a positive number"));
        }
        let gamma = match self.noise {
            NoiseScale::Rms { gamma } | NoiseScale::RowNorm { gamma } => gamma,
        };
        if !(gamma.is_finite() && gamma >= 0.0) {
            return Err(Error::invalid("--noise-gamma must be a non-negative number"));
        }
        Ok(())
    }
}

/// Why thinking ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Phrase,
    Budget,
    Eos,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Phrase => "phrase",
            StopReason::Budget => "budget",
            StopReason::Eos => "eos",
        }
    }
}

/// What one row produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Hard: the thinking tokens; soft/fuzzy: the shadow (argmax) ids, one per fed input.
    pub think_ids: Vec<u32>,
    /// Soft/fuzzy with `record_inputs`: the fed inputs. think_inputs: [C, d]
    pub think_inputs: Vec<f32>,
    /// Forced prefill tokens (empty when there is no answer phase).
    pub prefill_ids: Vec<u32>,
    /// Generated answer tokens (EOS included if it ended the answer).
    pub answer_ids: Vec<u32>,
    pub stopped_by: StopReason,
}

/// What the thinking loop needs from a tokenizer.
pub trait Tokens {
    fn decode(&self, ids: &[u32]) -> Result<String>;
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn is_eos(&self, id: u32) -> bool;
}

enum Phase {
    Think,
    Prefill(usize),
    Answer,
    Done,
}

struct Row {
    slot: u32,
    pos: u32,
    stream: u32,
    phase: Phase,
    gen: Generation,
    /// Steps taken (the Philox step counter of this row).
    steps: u32,
}

/// Number of trailing shadow ids decoded to test for the stop phrase (the phrase is a few tokens).
const STOP_WINDOW: usize = 24;

/// Positions a generation takes after its prompt, and the forced answer prefix among them: the
/// thinking budget, then (where there is an answer) the longer of the two prefills and the answer
/// tokens. Saturating, so a budget past any context is refused rather than wrapped around to a
/// small cache. The one rule for `generate` and for the commands that check prompts before it.
pub fn after_prompt(tok: &dyn Tokens, think_tokens: usize, answer_tokens: usize) -> Result<(usize, usize)> {
    let prefix = if answer_tokens > 0 {
        let budget = tok.encode(PREFILL_AT_BUDGET)?.len();
        budget.max(tok.encode(PREFILL_AFTER_STOP)?.len())
    } else {
        0
    };
    Ok((
        think_tokens.saturating_add(prefix).saturating_add(answer_tokens),
        prefix,
    ))
}

/// Generates for each prompt: thinking, then (if `answer_tokens > 0`) prefill and hard answer.
/// `streams[r]` keys row r's randomness, so a rollout's noise does not depend on its batch.
pub fn generate<B: Backend>(
    be: &B,
    model: &Model<B>,
    prompts: &[Vec<u32>],
    streams: &[u32],
    cfg: &ThinkConfig,
    tok: &dyn Tokens,
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    let c = &model.cfg;
    let (d, v) = (c.d(), c.vocab_size);
    let nb = prompts.len();
    if nb == 0 {
        return Ok(Vec::new());
    }
    if streams.len() != nb {
        return Err(Error::invalid("generate: one stream per prompt is required"));
    }
    let prefill_stop = tok.encode(PREFILL_AFTER_STOP)?;
    let prefill_budget = tok.encode(PREFILL_AT_BUDGET)?;
    let (after, prefix) = after_prompt(tok, cfg.think_tokens, cfg.answer_tokens)?;
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    for (r, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::invalid(alloc::format!("prompt {r} is empty")));
        }
        if let Some(&bad) = p.iter().find(|&&id| id as usize >= v) {
            return Err(Error::invalid(alloc::format!(
                "prompt {r}: token id {bad} is outside the vocabulary (size {v})"
            )));
        }
    }
    let t_max = max_prompt.saturating_add(after);
    if t_max > c.max_position_embeddings {
        let answer = match cfg.answer_tokens {
            0 => String::new(),
            n => alloc::format!(" + answer ({n} tokens after a {prefix}-token prefix)"),
        };
        return Err(Error::invalid(alloc::format!(
            "prompt ({max_prompt} tokens) + thinking ({}){answer} exceed the model's context of {} positions",
            cfg.think_tokens,
            c.max_position_embeddings
        )));
    }

    let same_len = prompts.iter().all(|p| p.len() == max_prompt);
    let prefill_tokens = if same_len { nb * max_prompt } else { max_prompt };
    let mut ws = model.new_workspace(be, prefill_tokens.max(nb), nb)?;
    let mut cache = model.new_cache(be, nb, t_max)?;

    // --- prefill the prompts; logits of the last prompt position land in ws.logits rows ---
    if same_len {
        let ids = be.upload_ids(&prompts.concat())?;
        let slots = be.upload_ids(&(0..nb as u32).collect::<Vec<_>>())?;
        let start = be.upload_ids(&vec![0u32; nb])?;
        let batch = Batch {
            input: Input::Ids(&ids),
            slots: &slots,
            start: &start,
            b: nb,
            t: max_prompt,
            max_end: max_prompt,
            logits: LogitRows::Last,
        };
        model.forward(be, &mut ws, &mut cache, &batch)?;
    } else {
        let mut stash = be.zeros(nb * v)?; // stash: [B, V]
        let start = be.upload_ids(&[0])?;
        for (r, p) in prompts.iter().enumerate() {
            let ids = be.upload_ids(p)?;
            let slots = be.upload_ids(&[r as u32])?;
            let batch = Batch {
                input: Input::Ids(&ids),
                slots: &slots,
                start: &start,
                b: 1,
                t: p.len(),
                max_end: p.len(),
                logits: LogitRows::Last,
            };
            model.forward(be, &mut ws, &mut cache, &batch)?;
            be.copy(&mut stash, r * v, &ws.logits, 0, v)?;
        }
        be.copy(&mut ws.logits, 0, &stash, 0, nb * v)?;
    }

    let sigma = cfg.sigma(be, model)?;
    let record = cfg.mode.is_continuous() && cfg.record_inputs;
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .map(|(r, p)| Row {
            slot: r as u32,
            pos: p.len() as u32,
            stream: streams[r],
            phase: if cfg.think_tokens > 0 {
                Phase::Think
            } else {
                Phase::Prefill(0)
            },
            // Sized for the budgets, so that the step loop below does not grow them.
            gen: Generation {
                think_ids: Vec::with_capacity(cfg.think_tokens),
                think_inputs: Vec::with_capacity(if record { cfg.think_tokens * d } else { 0 }),
                prefill_ids: Vec::new(),
                answer_ids: Vec::with_capacity(cfg.answer_tokens),
                stopped_by: StopReason::Budget,
            },
            steps: 0,
        })
        .collect();
    if cfg.think_tokens == 0 {
        for row in rows.iter_mut() {
            start_answer(row, cfg, &prefill_budget, StopReason::Budget);
        }
    }

    // Step buffers, allocated once. x_in, mix: [B, d]; p: [B, V]
    let mut x_in = be.zeros(nb * d)?;
    let mut mix = be.zeros(nb * d)?;
    let mut p = be.zeros(nb * v)?;
    let mut argmax_ids = be.ids_zeros(nb)?;
    let mut sampled_ids = be.ids_zeros(nb)?;
    let mut in_ids = be.ids_zeros(nb)?;
    let mut mask = be.ids_zeros(nb)?; // mask: [B] mixture row of each input, or u32::MAX
    let mut slots = be.ids_zeros(nb)?;
    let mut start = be.ids_zeros(nb)?;
    let mut streams_buf = be.ids_zeros(nb)?;
    let mut steps_buf = be.ids_zeros(nb)?;
    let mut active: Vec<usize> = (0..nb).collect(); // logits row i belongs to rows[active[i]]
    let mut next_active: Vec<(usize, usize)> = Vec::with_capacity(nb); // (row, logits row) fed next
    let mut record_rows: Vec<(usize, usize)> = Vec::with_capacity(nb); // (row, mix row) to record
    let (mut h_ids, mut h_mask, mut h_slots, mut h_start, mut h_streams, mut h_steps) = (
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
        Vec::with_capacity(nb),
    );
    // What the host reads back each step, into the same vectors every step.
    let (mut argmax_h, mut sampled_h, mut resampled_h) =
        (Vec::with_capacity(nb), Vec::with_capacity(nb), Vec::with_capacity(nb));
    let mut host_mix = Vec::with_capacity(if record { nb * d } else { 0 });

    // The last forward stopped at the final norm because its rows think softly next: `soft_head`
    // then computes logits, shadow ids and mixture together (one pass over E where it is fused).
    let mut head_pending = false;
    while !active.is_empty() {
        let n = active.len();
        // --- what the logits of each active row decide ---
        let any_soft_think = any_soft_thinking(cfg, &rows, active.iter().copied());
        let need_sample = active.iter().any(|&r| match rows[r].phase {
            Phase::Think => cfg.mode == ThinkMode::Hard && !cfg.greedy,
            Phase::Answer => !cfg.answer_greedy,
            _ => false,
        });
        h_streams.clear();
        h_steps.clear();
        for &r in &active {
            h_streams.push(rows[r].stream);
            h_steps.push(rows[r].steps);
        }
        be.write_ids(&mut streams_buf, &h_streams)?;
        be.write_ids(&mut steps_buf, &h_steps)?;
        if head_pending {
            let (head, e) = (model.lm_head(), model.embed());
            be.soft_head(
                &mut ws.logits,
                &mut argmax_ids,
                &mut mix,
                &mut p,
                &ws.xn,
                head,
                e,
                n,
                v,
                d,
                cfg.tau,
            )?;
        } else {
            be.argmax(&mut argmax_ids, &ws.logits, n, v)?;
        }
        be.download_ids_into(&argmax_ids, n, &mut argmax_h)?;
        if need_sample {
            // Hard thinking samples at tau, answers at answer_tau; both cannot differ within one call,
            // so rows of the other kind are re-sampled below only if their temperatures differ.
            let tau = if cfg.mode == ThinkMode::Hard && active.iter().any(|&r| matches!(rows[r].phase, Phase::Think)) {
                cfg.tau
            } else {
                cfg.answer_tau
            };
            be.sample(
                &mut sampled_ids,
                &ws.logits,
                n,
                v,
                tau,
                cfg.seed,
                &streams_buf,
                &steps_buf,
            )?;
            be.download_ids_into(&sampled_ids, n, &mut sampled_h)?;
            if cfg.mode == ThinkMode::Hard
                && tau != cfg.answer_tau
                && active.iter().any(|&r| matches!(rows[r].phase, Phase::Answer))
            {
                be.sample(
                    &mut sampled_ids,
                    &ws.logits,
                    n,
                    v,
                    cfg.answer_tau,
                    cfg.seed,
                    &streams_buf,
                    &steps_buf,
                )?;
                be.download_ids_into(&sampled_ids, n, &mut resampled_h)?;
                for (i, &r) in active.iter().enumerate() {
                    if matches!(rows[r].phase, Phase::Answer) {
                        sampled_h[i] = resampled_h[i];
                    }
                }
            }
        } else {
            // Nothing sampled this step: no row may read last step's draws.
            sampled_h.clear();
        }
        if any_soft_think {
            if !head_pending {
                be.mixture(&mut mix, &mut p, &ws.logits, model.embed(), n, v, d, cfg.tau)?;
            }
            if sigma > 0.0 {
                be.add_noise(&mut mix, n, d, sigma, cfg.seed, &streams_buf, &steps_buf)?;
            }
        }

        // --- advance each row's state machine; collect the next inputs ---
        h_ids.clear();
        h_mask.clear();
        next_active.clear();
        record_rows.clear();
        for (i, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            row.steps += 1;
            let feed: Option<(u32, bool)> = match row.phase {
                Phase::Think => {
                    let id = if cfg.mode == ThinkMode::Hard && !cfg.greedy {
                        sampled_h[i]
                    } else {
                        argmax_h[i]
                    };
                    if cfg.stop && tok.is_eos(id) {
                        row.gen.stopped_by = StopReason::Eos;
                        start_answer(row, cfg, &prefill_budget, StopReason::Eos);
                        first_prefill(row)
                    } else {
                        row.gen.think_ids.push(id);
                        if record {
                            record_rows.push((r, i));
                        }
                        let c_len = row.gen.think_ids.len();
                        if cfg.stop && ends_with_stop(tok, &row.gen.think_ids)? {
                            start_answer(row, cfg, &prefill_stop, StopReason::Phrase);
                        } else if c_len >= cfg.think_tokens {
                            start_answer(row, cfg, &prefill_budget, StopReason::Budget);
                        }
                        Some((id, cfg.mode.is_continuous()))
                    }
                }
                Phase::Prefill(_) => first_prefill(row),
                Phase::Answer => {
                    let id = if cfg.answer_greedy { argmax_h[i] } else { sampled_h[i] };
                    row.gen.answer_ids.push(id);
                    if tok.is_eos(id) || row.gen.answer_ids.len() >= cfg.answer_tokens {
                        row.phase = Phase::Done;
                        None
                    } else {
                        Some((id, false))
                    }
                }
                Phase::Done => None,
            };
            if let Some((id, from_mix)) = feed {
                h_ids.push(id);
                // Soft inputs come from row i of the mixture; hard ones from the embedding gather.
                h_mask.push(if from_mix { i as u32 } else { u32::MAX });
                next_active.push((r, i));
            }
        }
        if !record_rows.is_empty() {
            be.download_into(&mix, n * d, &mut host_mix)?;
            for &(r, i) in &record_rows {
                rows[r]
                    .gen
                    .think_inputs
                    .extend_from_slice(&host_mix[i * d..(i + 1) * d]);
            }
        }
        if next_active.is_empty() {
            break;
        }

        // --- feed one token per remaining row ---
        let m = next_active.len();
        h_slots.clear();
        h_start.clear();
        for &(r, _) in &next_active {
            h_slots.push(rows[r].slot);
            h_start.push(rows[r].pos);
        }
        be.write_ids(&mut in_ids, &h_ids)?;
        be.embedding(&mut x_in, model.embed(), &in_ids, m, d)?;
        if h_mask.iter().any(|&f| f != u32::MAX) {
            be.write_ids(&mut mask, &h_mask)?;
            be.gather_rows(&mut x_in, &mix, &mask, m, d)?;
        }
        be.write_ids(&mut slots, &h_slots)?;
        be.write_ids(&mut start, &h_start)?;
        let max_end = h_start.iter().map(|&s| s as usize + 1).max().unwrap_or(0);
        head_pending = any_soft_thinking(cfg, &rows, next_active.iter().map(|&(r, _)| r));
        let batch = Batch {
            input: Input::Embeds(&x_in),
            slots: &slots,
            start: &start,
            b: m,
            t: 1,
            max_end,
            logits: if head_pending { LogitRows::None } else { LogitRows::Last },
        };
        model.forward(be, &mut ws, &mut cache, &batch)?;
        for &(r, _) in &next_active {
            rows[r].pos += 1;
        }
        active.clear();
        active.extend(next_active.iter().map(|&(r, _)| r));
    }
    Ok(rows.into_iter().map(|r| r.gen).collect())
}

/// Whether any of these rows feeds a soft or fuzzy thinking input next (its step needs a mixture).
fn any_soft_thinking(cfg: &ThinkConfig, rows: &[Row], mut idx: impl Iterator<Item = usize>) -> bool {
    cfg.mode.is_continuous() && idx.any(|r| matches!(rows[r].phase, Phase::Think))
}

/// Enters the answer phase with `prefill` (or ends the row when there is no answer phase).
fn start_answer(row: &mut Row, cfg: &ThinkConfig, prefill: &[u32], why: StopReason) {
    row.gen.stopped_by = why;
    if cfg.answer_tokens == 0 {
        row.phase = Phase::Done;
    } else {
        row.gen.prefill_ids = prefill.to_vec();
        row.phase = if prefill.is_empty() {
            Phase::Answer
        } else {
            Phase::Prefill(0)
        };
    }
}

/// The next forced prefill token of a row in its prefill phase (advancing it).
fn first_prefill(row: &mut Row) -> Option<(u32, bool)> {
    match row.phase {
        Phase::Prefill(k) => {
            let id = row.gen.prefill_ids[k];
            row.phase = if k + 1 < row.gen.prefill_ids.len() {
                Phase::Prefill(k + 1)
            } else {
                Phase::Answer
            };
            Some((id, false))
        }
        Phase::Done => None,
        _ => None,
    }
}

fn ends_with_stop(tok: &dyn Tokens, ids: &[u32]) -> Result<bool> {
    let from = ids.len().saturating_sub(STOP_WINDOW);
    let text = tok.decode(&ids[from..])?;
    Ok(text.trim_end().ends_with(STOP_PHRASE))
}
