//! The memory plan of an RL training run: the bytes each device holds for every buffer softcot
//! allocates, from the model's config and the step's settings alone (plain arithmetic, no
//! backend). `softcot plan` prints it; the CUDA training path refuses a run whose plan exceeds
//! the device's free memory before it allocates anything.
//!
//! What it counts is what the code allocates, buffer for buffer (every buffer is f32 or u32, but
//! for the CUDA backend's bf16 mode, [`RunShape::bf16`]):
//! - weights: every parameter (`param_specs`) and the rope table (`Model::load`); in the bf16
//!   mode each parameter 2 bytes plus its f32 master (4), which a training backend makes at load;
//! - gemm scratch (bf16 mode only): the bf16 copies of a GEMM's largest f32 operands, A and B,
//!   which the backend keeps for the run (an upper bound, [`gemm_scratch_bytes`]);
//! - gradients: one buffer per parameter (`Model::new_grads`), each padded to a multiple of the
//!   ranks when there are several (`new_grads_padded`);
//! - optimizer: AdamW's m and v per parameter (`AdamW::new`; two bf16 per f32 slot with
//!   `--adam-moments bf16`); under ZeRO-1 (`dist::ShardedAdamW`)
//!   each rank holds a ceil(n / N) shard of the master weights, the reduce-scattered gradient, m
//!   and v, plus one all-gather scratch the size of the largest padded tensor;
//! - activations: `Model::new_train_acts` for the micro-batch's rows of prompt + thinking +
//!   prefix + answer positions, with or without recomputation;
//! - rl terms: what one micro-batch of `rl::rl_step` allocates on top (the uploaded layout, and for
//!   soft/fuzzy thinking three [R, V] and three [R, d] buffers of the soft-token terms);
//! - rollouts: the `Decoder` of one generation call (KV cache, workspace, step buffers);
//! - checkpoint: under ZeRO-1 a checkpoint gathers the whole m and v on every rank
//!   (`RankOpt::with_whole`), as `AdamW::new` does at the start before the shards are taken.
//!
//! Rollouts, the update and checkpoints run one after the other, with the activations, gradients
//! and optimizer kept for the whole run, so the peak is the persistent part plus the largest of
//! the three phases. With several ranks each rolls out and updates its share of the step's
//! prompts (`Rank::share`): at most ceil(P / N) prompts of G rollouts.

use alloc::vec::Vec;

use crate::backend::Moments;
use crate::model::{param_specs, ModelConfig};

/// Bytes of one buffer element: every device buffer softcot allocates is f32 or u32.
pub const ELEM: u64 = 4;

/// Validation's rows per generation call when the rollout batch is 0.
pub const VAL_ROWS_DEFAULT: usize = 64;

/// Everything the plan of a run depends on besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// P: prompts per optimizer step.
    pub prompts: usize,
    /// G: rollouts per prompt.
    pub samples: usize,
    /// Rollouts per forward/backward of the update; 0 = all of a device's rollouts.
    pub micro_batch: usize,
    /// Rollout rows per generation call; 0 = all of a device's rollouts (whole prompts otherwise).
    pub rollout_batch: usize,
    /// Validation problems (greedy, one rollout each); 0 = no validation.
    pub val_size: usize,
    /// The longest prompt, in tokens.
    pub prompt_tokens: usize,
    /// Thinking budget L.
    pub think_tokens: usize,
    /// The longer forced answer prefix, in tokens (0 without an answer).
    pub prefix_tokens: usize,
    /// Answer budget.
    pub answer_tokens: usize,
    /// Soft or fuzzy thinking: the update has soft-token terms.
    pub continuous: bool,
    /// Recompute activations per layer in backward.
    pub recompute: bool,
    /// N: data-parallel ranks, one device each.
    pub devices: usize,
    /// ZeRO-1: the optimizer state sharded over the ranks.
    pub zero: bool,
    /// AdamW's moment storage (`--adam-moments`): bf16 packs two per f32 slot.
    pub moments: Moments,
    /// The CUDA backend's bf16 compute mode: bf16 weights with f32 masters, and a GEMM scratch.
    pub bf16: bool,
}

impl RunShape {
    /// Positions of one rollout's sequence: prompt, thinking, prefix, answer.
    pub fn max_t(&self) -> usize {
        self.prompt_tokens
            .saturating_add(self.think_tokens)
            .saturating_add(self.prefix_tokens)
            .saturating_add(self.answer_tokens)
    }

    /// Rollouts of a step on the busiest device: its share of the prompts, ceil(P / N), times G.
    pub fn rollouts_per_device(&self) -> usize {
        self.prompts.div_ceil(self.devices.max(1)) * self.samples
    }

    /// Rows of one forward/backward of the update (`StepConfig::micro_rows`).
    pub fn micro_rows(&self) -> usize {
        let n = self.rollouts_per_device();
        match self.micro_batch {
            0 => n,
            m => m.min(n),
        }
        .max(1)
    }

    /// Rows of one validation generation call: the rollout batch (64 when it is 0), at most the
    /// validation problems (`softcot train`'s rule).
    pub fn val_rows(&self) -> usize {
        self.val_size.min(match self.rollout_batch {
            0 => VAL_ROWS_DEFAULT,
            r => r,
        })
    }

    /// Rows of one rollout generation call: whole prompts (G rows each), at most a device's share.
    pub fn rollout_rows(&self) -> usize {
        let n = self.rollouts_per_device();
        match self.rollout_batch {
            0 => n,
            r => ((r / self.samples.max(1)).max(1) * self.samples).min(n),
        }
        .max(1)
    }
}

/// Bytes per device of each part of a run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    /// The activations the run keeps (cached or recomputed, as it is set).
    pub activations: u64,
    /// The update's per-micro-batch buffers (layout, soft-token terms).
    pub rl_terms: u64,
    /// The rollout decoder's KV cache.
    pub kv_cache: u64,
    /// The rollout decoder's logits and probabilities ([rows, V] each).
    pub logits: u64,
    /// The rollout decoder's forward workspace and step buffers.
    pub workspace: u64,
    /// The whole m and v gathered for a checkpoint (ZeRO-1 only).
    pub checkpoint: u64,
    /// The bf16 mode's GEMM scratch, kept for the run once grown (0 in float32).
    pub scratch: u64,
}

impl Memory {
    /// Kept for the whole run.
    pub fn persistent(&self) -> u64 {
        self.weights + self.gradients + self.optimizer + self.activations + self.scratch
    }

    /// Rollouts.
    pub fn rollout(&self) -> u64 {
        self.kv_cache + self.logits + self.workspace
    }

    /// The peak: the persistent part and the largest of the phases (rollouts, update, checkpoint).
    pub fn total(&self) -> u64 {
        self.persistent() + self.rollout().max(self.rl_terms).max(self.checkpoint)
    }
}

/// Elements of every parameter tensor, in `param_specs` order (a tied head counted once).
pub fn param_numels(cfg: &ModelConfig) -> Vec<u64> {
    let (specs, _) = param_specs(cfg);
    specs.iter().map(|(_, s)| s.iter().product::<usize>() as u64).collect()
}

/// Weights: every parameter and the rope table inv_freq [hd / 2] (f32); in the bf16 mode each
/// parameter as bf16 (2 bytes) and its f32 master (4).
pub fn weights_bytes(cfg: &ModelConfig, bf16: bool) -> u64 {
    let params: u64 = param_numels(cfg).iter().sum();
    let per_param = if bf16 { 2 + ELEM } else { ELEM };
    per_param * params + ELEM * (cfg.head_dim / 2) as u64
}

/// The bf16 mode's GEMM scratch, an upper bound: bf16 copies (2 bytes an element) of the largest
/// f32 A operand, [n, max(V, F, q_dim, d)] (an activation or output gradient, the [n, V] logits
/// gradient of the head's backward the largest in training; n the positions of one forward:
/// the update's micro-batch, a prefill's tokens), and of the largest f32 B operand, [n, max(d, F,
/// q_dim)] (a layer input of a weight gradient dY^T X); the mixture's p [rows, V] is an A operand
/// too. `n_train`: positions of the update's forward; `n_decode`: of a rollout forward; `rows`:
/// rollout rows.
pub fn gemm_scratch_bytes(cfg: &ModelConfig, n_train: usize, n_decode: usize, rows: usize) -> u64 {
    let (d, qd, _, f) = dims(cfg);
    let v = cfg.vocab_size as u64;
    let (nt, nd, r) = (n_train as u64, n_decode as u64, rows as u64);
    let a = (nt * v.max(f).max(qd).max(d))
        .max(nd * f.max(qd).max(d).max(v))
        .max(r * v);
    let b = nt.max(nd) * d.max(f).max(qd);
    2 * (a + b)
}

/// n rounded up to a multiple of `ranks`.
fn padded(n: u64, ranks: u64) -> u64 {
    n.div_ceil(ranks) * ranks
}

/// Gradients: one per parameter, padded to a multiple of the ranks.
pub fn gradients_bytes(cfg: &ModelConfig, devices: usize) -> u64 {
    let ranks = devices.max(1) as u64;
    ELEM * param_numels(cfg).iter().map(|&n| padded(n, ranks)).sum::<u64>()
}

/// AdamW: m and v of every parameter (`moments.slots(n)` f32 slots each: n, or ceil(n / 2) for
/// bf16); under ZeRO-1 (whose shards are f32: bf16 is refused there) a ceil(n / N) shard of master
/// weights, gradient, m and v per tensor and one all-gather scratch the size of the largest padded
/// tensor.
pub fn optimizer_bytes(cfg: &ModelConfig, devices: usize, zero: bool, moments: Moments) -> u64 {
    let numels = param_numels(cfg);
    if !zero {
        return ELEM * 2 * numels.iter().map(|&n| moments.slots(n as usize) as u64).sum::<u64>();
    }
    let ranks = devices.max(1) as u64;
    let shards: u64 = numels.iter().map(|&n| n.div_ceil(ranks)).sum();
    let scratch = numels.iter().map(|&n| padded(n, ranks)).max().unwrap_or(0);
    ELEM * (4 * shards + scratch)
}

/// A ZeRO-1 checkpoint's whole m and v, gathered on every rank; nothing without sharding (the
/// state is downloaded tensor by tensor).
pub fn checkpoint_bytes(cfg: &ModelConfig, zero: bool) -> u64 {
    if zero {
        ELEM * 2 * param_numels(cfg).iter().sum::<u64>()
    } else {
        0
    }
}

/// `Model::new_train_acts(rows, max_t, recompute)`: per layer kept (every layer, or one when
/// recomputing) n (4d + 2 qd + 4 kvd + 3F + H + 2) for its buffers and cached k, v; with
/// recomputation each layer's input n d; the model-level x, xnf, tmp, dx, rstdf and logits
/// n (4d + 1 + V); one layer's backward scratch n (d + 2 qd + 4 kvd + 3F); a zero row d; and
/// two id vectors of `rows`. n = rows x max_t.
pub fn activations_bytes(cfg: &ModelConfig, rows: usize, max_t: usize, recompute: bool) -> u64 {
    let (d, qd, kvd, f) = dims(cfg);
    let (h, v, l) = (
        cfg.num_attention_heads as u64,
        cfg.vocab_size as u64,
        cfg.num_hidden_layers as u64,
    );
    let n = (rows * max_t) as u64;
    let layer = n * (4 * d + 2 * qd + 4 * kvd + 3 * f + h + 2);
    let kept = if recompute { layer + l * n * d } else { l * layer };
    let model = n * (4 * d + 1 + v);
    let scratch = n * (d + 2 * qd + 4 * kvd + 3 * f);
    ELEM * (kept + model + scratch + d + 2 * rows as u64)
}

/// The peak of one micro-batch of `rl::rl_step` beyond the activations, for `rows` rollouts of
/// full budgets: n = rows x max_t positions, m = rows (L + answer) scored rows, R = rows L soft
/// rows (soft/fuzzy). Live while the soft terms are computed: the ids, override index and zero
/// rows, head back-map (4n), head index (m), soft inputs (R d), z, p, u ([R, V] each), mu, g
/// ([R, d] each) and the terms' weights (R). Then, for the token rows: z kept as d loss / d z,
/// the 4n + m + R d above, loss rows, targets, weights and 1 / tau (4m), and where there are
/// soft rows their back-map into the logits (m).
pub fn rl_terms_bytes(cfg: &ModelConfig, s: &RunShape, rows: usize) -> u64 {
    let (d, v) = (cfg.d() as u64, cfg.vocab_size as u64);
    let rows = rows as u64;
    let n = rows * s.max_t() as u64;
    let m = rows * (s.think_tokens + s.answer_tokens) as u64;
    let r = if s.continuous { rows * s.think_tokens as u64 } else { 0 };
    let layout = 4 * n + m + r * d;
    let soft = if r > 0 { 3 * r * v + 2 * r * d + r } else { 0 };
    let tokens = r * v + 4 * m + if r > 0 { m } else { 0 };
    ELEM * (layout + soft.max(tokens))
}

/// The rollout decoder's buffers for `rows` rows (`Decoder::new` and its prefill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeBytes {
    pub kv_cache: u64,
    pub logits: u64,
    pub workspace: u64,
}

/// `Decoder::new` for `rows` prompts of `prompt` tokens with `t_max` positions each, and its
/// prefill. KV cache 2 L rows Hkv t_max hd; logits and the mixture's probabilities [rows, V]
/// each; the workspace for T tokens, T (5d + 2 qd + 2 kvd + 3F) (x, xn, tmp and one layer's
/// buffers); step buffers rows (2d) and nine id vectors of rows, plus one float each for the
/// action and hidden buffers of noise at the hidden state or the logits (input noise: the plan
/// does not yet count their [rows, d] / [rows, V] sizes for `--noise-at hidden|logits`). Prompts of one length prefill
/// in one call (T = rows x prompt, its ids uploaded); otherwise one at a time (T = max(prompt,
/// rows)) through a [rows, V] stash: the plan takes the larger.
pub fn decode_bytes(cfg: &ModelConfig, rows: usize, prompt: usize, t_max: usize) -> DecodeBytes {
    let (d, qd, kvd, f) = dims(cfg);
    let (v, l) = (cfg.vocab_size as u64, cfg.num_hidden_layers as u64);
    let (b, p) = (rows as u64, prompt as u64);
    let per_token = 5 * d + 2 * qd + 2 * kvd + 3 * f;
    let step = b * 2 * d + 9 * b + 2;
    // one call: ws for b p tokens, ids b p, slots and start b each
    let one_call = (b * p).max(b) * per_token + b * p + 2 * b;
    // one by one: ws for max(p, b) tokens, a stash [b, V], ids p, slot and start 1 each
    let one_by_one = p.max(b) * per_token + p + 2;
    let (ws, stash) = if one_call >= one_by_one + b * v {
        (one_call, 0)
    } else {
        (one_by_one, b * v)
    };
    DecodeBytes {
        kv_cache: ELEM * 2 * l * b * kvd * t_max as u64,
        logits: ELEM * (2 * b * v + stash),
        workspace: ELEM * (ws + step),
    }
}

fn dims(cfg: &ModelConfig) -> (u64, u64, u64, u64) {
    (
        cfg.d() as u64,
        cfg.q_dim() as u64,
        cfg.kv_dim() as u64,
        cfg.intermediate_size as u64,
    )
}

/// The plan of a run with `s`'s settings.
pub fn plan(cfg: &ModelConfig, s: &RunShape) -> Memory {
    let rows = s.micro_rows();
    let max_t = s.max_t();
    let decode_rows = s.rollout_rows().max(s.val_rows());
    let dec = decode_bytes(cfg, decode_rows, s.prompt_tokens, max_t);
    // a rollout forward's positions: the larger prefill (one call for equal prompts, else the
    // longer of a prompt and the rows), at least a decode step's rows
    let n_decode = (decode_rows * s.prompt_tokens).max(decode_rows);
    Memory {
        weights: weights_bytes(cfg, s.bf16),
        gradients: gradients_bytes(cfg, s.devices),
        optimizer: optimizer_bytes(cfg, s.devices, s.zero, s.moments),
        activations: activations_bytes(cfg, rows, max_t, s.recompute),
        rl_terms: rl_terms_bytes(cfg, s, rows),
        kv_cache: dec.kv_cache,
        logits: dec.logits,
        workspace: dec.workspace,
        checkpoint: checkpoint_bytes(cfg, s.zero),
        scratch: if s.bf16 {
            gemm_scratch_bytes(cfg, rows * max_t, n_decode, decode_rows)
        } else {
            0
        },
    }
}

/// The largest rollout batch (rows per generation call, whole prompts of G rows, or a device's
/// whole share when that is smaller) whose plan fits in `budget` bytes, the rest of `s` as is.
pub fn max_rollout_batch(cfg: &ModelConfig, s: &RunShape, budget: u64) -> Option<usize> {
    let n = s.rollouts_per_device();
    let g = s.samples.max(1);
    let candidates = (1..=n.div_ceil(g)).rev().map(|k| (k * g).min(n));
    candidates.into_iter().find(|&r| {
        let t = RunShape { rollout_batch: r, ..*s };
        plan(cfg, &t).total() <= budget
    })
}

/// The largest micro-batch (rollouts per forward/backward) whose plan fits in `budget` bytes, the
/// rest of `s` as is. The plan grows with the micro-batch, so a binary search finds it.
pub fn max_micro_batch(cfg: &ModelConfig, s: &RunShape, budget: u64) -> Option<usize> {
    let fits = |m: usize| plan(cfg, &RunShape { micro_batch: m, ..*s }).total() <= budget;
    let (mut lo, mut hi) = (0usize, s.rollouts_per_device());
    if !fits(1) {
        return None;
    }
    // invariant: fits(max(lo, 1)), and hi + 1 does not fit or hi is the largest there is
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo.max(1))
}

/// Refuses a run whose plan exceeds the device's free memory, with the plan's numbers, before
/// anything is allocated. `free` is what the device reports free now.
pub fn check_fits(m: &Memory, free: u64, device: &str) -> crate::Result<()> {
    let total = m.total();
    if total <= free {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(crate::Error::invalid(alloc::format!(
        "{device}: the run needs {:.2} GiB ({total} bytes) but {:.2} GiB ({free} bytes) are free (weights {:.2}, gradients {:.2}, optimizer {:.2}, activations {:.2}, rl terms {:.2}, kv cache {:.2}, logits {:.2}, workspace {:.2}, checkpoint {:.2}, gemm scratch {:.2} GiB); see `softcot plan` (--micro-batch, --rollout-batch, --recompute)",
        gib(total),
        gib(free),
        gib(m.weights),
        gib(m.gradients),
        gib(m.optimizer),
        gib(m.activations),
        gib(m.rl_terms),
        gib(m.kv_cache),
        gib(m.logits),
        gib(m.workspace),
        gib(m.checkpoint),
        gib(m.scratch),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::init::preset;

    /// d 4, F 8, 1 layer, 2 heads of 2, 1 kv head, V 10, untied: 236 parameters (by hand below).
    fn small() -> ModelConfig {
        ModelConfig {
            vocab_size: 10,
            hidden_size: 4,
            intermediate_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 2,
            ..preset("tiny").unwrap()
        }
    }

    fn shape() -> RunShape {
        RunShape {
            prompts: 1,
            samples: 2,
            micro_batch: 0,
            rollout_batch: 0,
            val_size: 0,
            prompt_tokens: 3,
            think_tokens: 2,
            prefix_tokens: 1,
            answer_tokens: 1,
            continuous: true,
            recompute: false,
            devices: 1,
            zero: false,
            moments: Moments::F32,
            bf16: false,
        }
    }

    #[test]
    fn parameters_gradients_and_optimizer_by_hand() {
        let c = small();
        // embed 40, input norm 4, q 16, k 8, v 8, o 16, post norm 4, gate/up/down 32 each,
        // final norm 4, lm_head 40
        assert_eq!(param_numels(&c).iter().sum::<u64>(), 236);
        assert_eq!(weights_bytes(&c, false), 4 * (236 + 1), "plus inv_freq [hd / 2]");
        assert_eq!(
            weights_bytes(&c, true),
            6 * 236 + 4,
            "bf16 and its f32 master; inv_freq f32"
        );
        assert_eq!(gradients_bytes(&c, 1), 4 * 236);
        assert_eq!(optimizer_bytes(&c, 3, false, Moments::F32), 4 * 2 * 236);
        // bf16 moments: ceil(n / 2) slots per tensor, 20 + 2 + 8 + 4 + 4 + 8 + 2 + 3 x 16 + 2 + 20
        assert_eq!(optimizer_bytes(&c, 1, false, Moments::Bf16), 4 * 2 * 118);
        // 3 ranks: each tensor padded to a multiple of 3
        // 42 + 6 + 18 + 9 + 9 + 18 + 6 + 3 x 33 + 6 + 42
        assert_eq!(gradients_bytes(&c, 3), 4 * 255);
        // shards of ceil(n / 3): 14 + 2 + 6 + 3 + 3 + 6 + 2 + 3 x 11 + 2 + 14 = 85, four of them
        // (master, gradient, m, v), plus a 42-element all-gather scratch
        assert_eq!(optimizer_bytes(&c, 3, true, Moments::F32), 4 * (4 * 85 + 42));
        // one rank: ZeRO-1 is a master copy and a gradient more than plain AdamW
        assert_eq!(optimizer_bytes(&c, 1, true, Moments::F32), 4 * (4 * 236 + 40));
        // its checkpoints gather the whole m and v
        assert_eq!(
            (checkpoint_bytes(&c, true), checkpoint_bytes(&c, false)),
            (4 * 2 * 236, 0)
        );
    }

    #[test]
    fn activations_by_hand() {
        let c = small();
        // n = 2 rows x 3 = 6; a layer 6 (4d 16 + 2qd 8 + 4kvd 8 + 3F 24 + H 2 + 2) = 360;
        // model-level 6 (16 + 1 + 10) = 162; scratch 6 (4 + 8 + 8 + 24) = 264; zero row 4;
        // slots and start 2 + 2
        assert_eq!(activations_bytes(&c, 2, 3, false), 4 * (360 + 162 + 264 + 8));
        // recompute keeps one layer's buffers and each layer's input 6 x 4
        assert_eq!(activations_bytes(&c, 2, 3, true), 4 * (360 + 24 + 162 + 264 + 8));
        let big = ModelConfig {
            num_hidden_layers: 8,
            ..c
        };
        assert!(activations_bytes(&big, 2, 3, true) < activations_bytes(&big, 2, 3, false) / 3);
    }

    #[test]
    fn rl_terms_and_decoder_by_hand() {
        let (c, s) = (small(), shape());
        assert_eq!(s.max_t(), 7);
        // rows 2: n 14, m 2 (2 + 1) = 6, R 4; layout 4n + m + Rd = 78; soft 3RV 120 + 2Rd 32 + R 4
        assert_eq!(rl_terms_bytes(&c, &s, 2), 4 * (78 + 156));
        // hard: no soft rows; layout 62, then loss rows, targets, weights, 1 / tau
        let hard = RunShape { continuous: false, ..s };
        assert_eq!(rl_terms_bytes(&c, &hard, 2), 4 * (62 + 24));
        // 2 rows, prompt 3, t_max 5: kv 2 L b kvd t_max = 40; logits and p 2 x 2 x 10;
        // workspace for 6 tokens of 5d + 2qd + 2kvd + 3F = 56, ids 6, slots 2, start 2, step
        // buffers 2 x 2d + 9 x 2 + 2
        let dec = decode_bytes(&c, 2, 3, 5);
        assert_eq!(dec.kv_cache, 4 * 40);
        assert_eq!(dec.logits, 4 * 40);
        assert_eq!(dec.workspace, 4 * (6 * 56 + 6 + 4 + 36));
        // one prompt row of 1 token: prefilled one by one would need a stash; one call is larger
        let one = decode_bytes(&c, 1, 1, 5);
        assert_eq!(one.workspace, 4 * (56 + 1 + 2 + 2 * 4 + 9 + 2));
    }

    #[test]
    fn shares_batches_and_the_peak() {
        let c = small();
        let s = RunShape {
            prompts: 2,
            samples: 32,
            devices: 8,
            ..shape()
        };
        // the prompts are shared out: two ranks get one prompt's 32 rollouts, six get none
        assert_eq!(
            (s.rollouts_per_device(), s.micro_rows(), s.rollout_rows()),
            (32, 32, 32)
        );
        let s = RunShape { prompts: 9, ..s };
        assert_eq!(s.rollouts_per_device(), 2 * 32);
        let s = RunShape {
            prompts: 4,
            samples: 8,
            rollout_batch: 20,
            micro_batch: 5,
            devices: 1,
            ..s
        };
        assert_eq!((s.micro_rows(), s.rollout_rows()), (5, 16), "whole prompts of G rows");
        let m = plan(&c, &s);
        assert_eq!(m.total(), m.persistent() + m.rollout().max(m.rl_terms));
        let z = plan(&c, &RunShape { zero: true, ..s });
        assert_eq!(
            z.total(),
            z.persistent() + z.rollout().max(z.rl_terms).max(z.checkpoint)
        );
        assert_eq!(m.activations, activations_bytes(&c, 5, 7, false));
        // the largest batches that fit a budget are the largest whose plan fits
        let budget = plan(&c, &RunShape { micro_batch: 3, ..s }).total();
        assert_eq!(max_micro_batch(&c, &s, budget), Some(3));
        assert_eq!(max_micro_batch(&c, &s, 0), None);
        let s = RunShape { micro_batch: 1, ..s };
        let at = |rb: usize| plan(&c, &RunShape { rollout_batch: rb, ..s }).total();
        assert!(at(8) < at(16) && at(16) < at(32), "the rollout phase dominates here");
        for rb in [8, 16, 32] {
            assert_eq!(max_rollout_batch(&c, &s, at(rb)), Some(rb));
            assert_eq!(max_rollout_batch(&c, &s, at(rb) - 1), Some(rb - 8).filter(|&r| r > 0));
        }
    }

    #[test]
    fn a_run_that_does_not_fit_is_refused_with_the_numbers() {
        let m = Memory {
            weights: 32 << 30,
            gradients: 32 << 30,
            optimizer: 64 << 30,
            activations: 10 << 30,
            rl_terms: 1 << 30,
            kv_cache: 2 << 30,
            logits: 1 << 30,
            workspace: 1 << 30,
            checkpoint: 0,
            scratch: 0,
        };
        assert_eq!(m.total(), 142 << 30);
        assert!(check_fits(&m, 142 << 30, "cuda 0").is_ok());
        let e = check_fits(&m, 79 << 30, "cuda 0").unwrap_err();
        println!("{}", e.msg);
        assert!(e.msg.starts_with(
            "cuda 0: the run needs 142.00 GiB (152471339008 bytes) but 79.00 GiB (84825604096 bytes) are free"
        ));
        assert!(e.msg.contains("optimizer 64.00") && e.msg.contains("kv cache 2.00"));
        assert!(!e.msg.contains('\n'));
    }
}
