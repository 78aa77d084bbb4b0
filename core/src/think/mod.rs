//! Thinking modes at inference: hard, soft and fuzzy thinking, greedy or sampled; the stop phrase on
//! the (shadow) text, the thinking budget, the prefill rule, and hard answer tokens.
//!
//! Rows of a batch advance together one token per step, each in its own phase (thinking, forced
//! prefill, answering); a finished row leaves the batch and frees its slot. Per step the host
//! downloads only the argmax / sampled ids of the active rows (and, when recording, the fed inputs).

mod decoder;
mod entropy;
mod rows;

use alloc::string::String;
use alloc::vec::Vec;

pub use decoder::Decoder;
pub use entropy::Entropy;
pub use rows::{Feed, Prefills, RowState};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Model;

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

/// Where soft and fuzzy thinking draw their Gaussian noise (the paper's Table 7 ablation); see
/// docs/TRAINING.md, "Noise placement". Each placement has its own action, noise scale and exact
/// log-density in the estimator ([`crate::rl`]); the recorded fed inputs are constants either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoiseAt {
    /// The method: x = softmax(z / tau) @ E + sigma eps; the action is the fed input x (d-dim).
    #[default]
    Input,
    /// On the final-normed hidden state (the lm_head's input): h' = h + sigma eps, fed
    /// softmax(lm_head(h') / tau) @ E; the action is h' (d-dim).
    Hidden,
    /// On the logits: z' = z + sigma eps, fed softmax(z' / tau) @ E; the action is z' (V-dim).
    Logits,
}

impl NoiseAt {
    pub const ALL: [NoiseAt; 3] = [NoiseAt::Input, NoiseAt::Hidden, NoiseAt::Logits];

    /// `input`, `hidden` or `logits`: the inverse of [`NoiseAt::parse`].
    pub fn name(self) -> &'static str {
        match self {
            NoiseAt::Input => "input",
            NoiseAt::Hidden => "hidden",
            NoiseAt::Logits => "logits",
        }
    }

    pub fn parse(s: &str) -> Option<NoiseAt> {
        NoiseAt::ALL.into_iter().find(|n| n.name() == s)
    }

    /// Width of one recorded action beyond the fed input: d (hidden), V (logits), or 0 (input,
    /// whose action is the fed input itself).
    pub fn action_width(self, d: usize, v: usize) -> usize {
        match self {
            NoiseAt::Input => 0,
            NoiseAt::Hidden => d,
            NoiseAt::Logits => v,
        }
    }
}

/// The most host memory the recorded actions of one batch of rollouts may take: a logits action
/// is a [C, V] matrix per rollout (512 x 128256 floats = 250 MiB for Llama 3), which a whole
/// step's rollouts multiply.
pub const MAX_ACTION_BYTES: u64 = 4 << 30;

/// Refuses recording `rows` rollouts' actions of `think_tokens` steps of `width` floats when they
/// would take more than [`MAX_ACTION_BYTES`].
pub fn check_action_memory(noise_at: NoiseAt, rows: usize, think_tokens: usize, width: usize) -> Result<()> {
    let bytes = (rows as u64)
        .saturating_mul(think_tokens as u64)
        .saturating_mul(width as u64)
        .saturating_mul(4);
    if bytes > MAX_ACTION_BYTES {
        return Err(Error::invalid(alloc::format!(
            "--noise-at {}: recording {rows} rollouts x {think_tokens} thinking steps x {width} floats of actions \
             takes {:.1} GiB, over the {} GiB limit; lower the rollouts per step or per generation call, or --think-tokens",
            noise_at.name(),
            bytes as f64 / (1u64 << 30) as f64,
            MAX_ACTION_BYTES >> 30
        )));
    }
    Ok(())
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
    /// Where the noise goes (soft/fuzzy thinking; hard and greedy thinking draw none).
    pub noise_at: NoiseAt,
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
    /// Record the next-token entropy of every thinking step into [`Generation::think_entropy`]
    /// (evaluation's entropy profiles; a few extra ops per step, so off in training).
    pub record_entropy: bool,
}

impl ThinkConfig {
    pub fn new(mode: ThinkMode) -> Self {
        ThinkConfig {
            mode,
            greedy: false,
            tau: mode.default_tau(),
            noise: NoiseScale::Rms { gamma: 0.33 },
            noise_at: NoiseAt::Input,
            think_tokens: 128,
            answer_tokens: 32,
            answer_greedy: false,
            answer_tau: 1.0,
            stop: true,
            seed: 0,
            record_inputs: false,
            record_entropy: false,
        }
    }
    /// The per-coordinate noise std these settings draw with `model`'s current weights: 0 for
    /// hard or greedy thinking. The estimator's log-density must use the same value as the
    /// rollouts did. Each placement's scale is gamma times the typical size of a coordinate of
    /// its own space, so that the noise's norm is about gamma times the norm of what it perturbs:
    /// - input: gamma rms(E) ([`NoiseScale`]);
    /// - hidden: gamma rms(w_norm), w_norm the final norm's weight: h = x / rms(x) * w_norm has
    ///   coordinates of rms about rms(w_norm) whatever the residual stream's scale;
    /// - logits: gamma sqrt(d) rms(w_norm) rms(W_head), the rms of a logit h . W_v when h and the
    ///   head's rows are unrelated: the per-logit std that hidden noise of the hidden scale puts on
    ///   the logits, so that hidden and logits compare placements at one noise level. Not relative
    ///   to tau: softmax(z' / tau) at fuzzy's tau = 1e-4 would then see no noise at all.
    pub fn sigma<B: Backend>(&self, be: &B, model: &Model<B>) -> Result<f32> {
        if !self.mode.is_continuous() || self.greedy {
            return Ok(0.0);
        }
        let (v, d) = (model.cfg.vocab_size, model.cfg.d());
        let gamma = match self.noise {
            NoiseScale::Rms { gamma } | NoiseScale::RowNorm { gamma } => gamma as f64,
        };
        let rms_norm = || -> Result<f64> { Ok(libm::sqrt(be.sum_squares(model.w(model.idx.norm), d)? / d as f64)) };
        Ok(match self.noise_at {
            NoiseAt::Input => self.noise.sigma(be.sum_squares(model.embed(), v * d)?, v, d),
            NoiseAt::Hidden => (gamma * rms_norm()?) as f32,
            NoiseAt::Logits => {
                let rms_head = libm::sqrt(be.sum_squares(model.lm_head(), v * d)? / (v * d) as f64);
                (gamma * libm::sqrt(d as f64) * rms_norm()? * rms_head) as f32
            }
        })
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
        if matches!(self.noise, NoiseScale::RowNorm { .. }) && self.noise_at != NoiseAt::Input {
            return Err(Error::invalid(alloc::format!(
                "--noise-scale row-norm reads E's rows, which only --noise-at input perturbs; --noise-at {} takes rms",
                self.noise_at.name()
            )));
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
    /// Soft/fuzzy with `record_inputs` and noise at the hidden state or the logits: the noisy
    /// actions drawn, one per fed input. think_actions: [C, d] (hidden) or [C, V] (logits)
    pub think_actions: Vec<f32>,
    /// With `record_entropy`: H(softmax(z)) in nats of the distribution each thinking token was
    /// chosen from, one per thinking step ([`Entropy`]); a step that chose EOS (which is not fed)
    /// has one too.
    pub think_entropy: Vec<f32>,
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

/// Generates for each prompt: thinking, then (if `answer_tokens > 0`) prefill and hard answer, with
/// the noise scale of `cfg` on `model` ([`ThinkConfig::sigma`]). `streams[r]` keys row r's
/// randomness, so a rollout's noise does not depend on its batch.
pub fn generate<B: Backend>(
    be: &B,
    model: &Model<B>,
    prompts: &[Vec<u32>],
    streams: &[u32],
    cfg: &ThinkConfig,
    tok: &dyn Tokens,
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let sigma = cfg.sigma(be, model)?;
    Decoder::new(be, model, cfg, tok, prompts, streams, sigma)?.run()
}
