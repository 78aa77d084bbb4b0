//! The RLOO policy-gradient update over recorded rollouts (DESIGN.md, "RLOO" and "The soft-token
//! log-density"): rewards -> leave-one-out advantages -> d loss / d logits per position -> model
//! backward. Loss = -(1/N) sum_g A_g ell_g, where ell_g sums, over thinking steps, log pi(x_c)
//! (Gaussian log-density of the fed vector for soft/fuzzy, token log-prob at tau for hard) and, over
//! sampled answer tokens, log p(token). The recorded inputs are constants: one teacher-forced
//! forward and backward, no backpropagation through time. [`Step`] is the whole optimizer step
//! built on it: rollouts, this update over micro-batches, clipping and AdamW.
//!
//! Soft/fuzzy thinking's action depends on where its noise is ([`NoiseAt`]); log pi is the exact
//! Gaussian log-density (constant dropped) of the recorded action around what the current
//! parameters compute at the position before the fed input:
//! - input: the fed x around mu = softmax(z / tau) @ E, reaching z and E through the mixture;
//! - hidden: h' around the final-normed hidden h, entering backward at the final norm's output
//!   (d loss / d h += -w (h' - h) / sigma^2);
//! - logits: z' around the logits z (d loss / d z = -w (z' - z) / sigma^2).

mod step;

use alloc::vec;
use alloc::vec::Vec;

use crate::backend::{Gemm, Train};
use crate::error::{Error, Result};
use crate::model::train::{Grads, HeadRows, HiddenGrad, Overrides, TrainActs};
use crate::model::Model;
use crate::think::NoiseAt;

pub use step::{Step, StepConfig};

/// A_g = r_g - mean of the other rewards of the group (G >= 2).
pub fn rloo_advantages(rewards: &[f64]) -> Result<Vec<f64>> {
    let g = rewards.len();
    if g < 2 {
        return Err(Error::invalid("RLOO needs at least 2 samples per prompt"));
    }
    let sum: f64 = rewards.iter().sum();
    Ok(rewards.iter().map(|&r| r - (sum - r) / (g - 1) as f64).collect())
}

/// What a rollout fed while thinking.
#[derive(Debug, Clone, PartialEq)]
pub enum Thinking {
    /// Hard thinking: the sampled tokens. [C]
    Tokens(Vec<u32>),
    /// Soft or fuzzy thinking with noise at the input: the noisy input vectors fed, which are
    /// the actions. [C * d]
    Embeds(Vec<f32>),
    /// Soft or fuzzy thinking with noise at the hidden state or the logits: the inputs fed
    /// [C * d] and the noisy actions drawn [C * k] (k = d or V, as [`RlSettings::noise_at`] says).
    Noised { inputs: Vec<f32>, actions: Vec<f32> },
}

/// One recorded rollout, as the update sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RlSeq {
    pub prompt: Vec<u32>,
    pub thinking: Thinking,
    /// The tokens after thinking: forced prefill, then sampled answer tokens.
    pub suffix: Vec<u32>,
    /// 1 for sampled answer tokens (they count in the log-prob), 0 for forced prefill. [S]
    pub suffix_mask: Vec<f32>,
    pub advantage: f32,
}

impl RlSeq {
    /// Positions of the teacher-forced sequence: prompt, thinking inputs (rows of `d` for
    /// soft/fuzzy), suffix.
    pub fn len(&self, d: usize) -> usize {
        let c = match &self.thinking {
            Thinking::Tokens(t) => t.len(),
            Thinking::Embeds(e) | Thinking::Noised { inputs: e, .. } => e.len() / d,
        };
        self.prompt.len() + c + self.suffix.len()
    }
}

/// Settings of the estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlSettings {
    /// Thinking temperature (of the recorded rollouts).
    pub tau: f32,
    /// Per-coordinate noise standard deviation of soft/fuzzy thinking's actions.
    pub sigma: f32,
    /// Where soft/fuzzy thinking's noise was drawn: what the recorded actions are.
    pub noise_at: NoiseAt,
    /// N, the number of rollouts of the whole optimizer step (the loss is -(1/N) sum A ell).
    pub norm: f32,
}

/// Host-side layout of a micro-batch: ids, override rows and per-row loss terms.
struct Layout {
    b: usize,
    t: usize,
    ids: Vec<u32>,         // ids: [B * T]
    embeds: Vec<f32>,      // embeds: [R, d] soft inputs, in soft-row order
    actions: Vec<f32>,     // actions: [R, k] hidden/logits noisy actions, in soft-row order
    index: Vec<u32>,       // index: [B * T] input row -> embeds row, or MAX
    zero: Vec<u32>,        // zero: [B * T] 0 for overridden input rows, else MAX
    targets: Vec<u32>,     // targets: [M] token predicted from each logit row
    weights: Vec<f32>,     // weights: [M] A / N for scored token rows, else 0
    inv_tau: Vec<f32>,     // inv_tau: [M]
    soft_rows: Vec<u32>,   // soft_rows: [R] logit row (batch row for hidden noise) before soft input j
    soft_weight: Vec<f32>, // soft_weight: [R] A / N
    head: Vec<u32>,        // head: [M] the batch rows that get logits: scored tokens, soft inputs
    back: Vec<u32>,        // back: [B * T] logit row of each batch row, or MAX
}

impl Layout {
    /// Keeps logits only for the rows that are scored (a token with non-zero weight, or the
    /// prediction of a soft input whose log-density reads logits): prompt, prefill and padding
    /// rows need none. Turns the per-row terms, laid out over all B * T rows so far, into terms
    /// over the M logit rows.
    fn keep_scored_rows(&mut self, soft_logits: bool) {
        let n = self.ids.len();
        let mut scored: Vec<bool> = self.weights.iter().map(|&w| w != 0.0).collect();
        if soft_logits {
            for &r in &self.soft_rows {
                scored[r as usize] = true;
            }
        }
        self.head = (0..n as u32).filter(|&r| scored[r as usize]).collect();
        self.back = vec![u32::MAX; n];
        for (j, &r) in self.head.iter().enumerate() {
            self.back[r as usize] = j as u32;
        }
        let pick = |x: &[f32], head: &[u32]| head.iter().map(|&r| x[r as usize]).collect::<Vec<f32>>();
        self.targets = self.head.iter().map(|&r| self.targets[r as usize]).collect();
        self.weights = pick(&self.weights, &self.head);
        self.inv_tau = pick(&self.inv_tau, &self.head);
        if soft_logits {
            for r in self.soft_rows.iter_mut() {
                *r = self.back[*r as usize];
            }
        }
    }
}

fn layout(seqs: &[RlSeq], d: usize, v: usize, s: &RlSettings) -> Result<Layout> {
    let k = s.noise_at.action_width(d, v);
    let b = seqs.len();
    let t = seqs.iter().map(|q| q.len(d)).max().unwrap_or(0);
    let n = b * t;
    let mut l = Layout {
        b,
        t,
        ids: vec![0; n],
        embeds: Vec::new(),
        actions: Vec::new(),
        index: vec![u32::MAX; n],
        zero: vec![u32::MAX; n],
        targets: vec![0; n],
        weights: vec![0.0; n],
        inv_tau: vec![1.0; n],
        soft_rows: Vec::new(),
        soft_weight: Vec::new(),
        head: Vec::new(),
        back: Vec::new(),
    };
    for (r, q) in seqs.iter().enumerate() {
        if q.prompt.is_empty() || q.suffix.len() != q.suffix_mask.len() {
            return Err(Error::invalid(alloc::format!(
                "rollout {r}: empty prompt or suffix mask of the wrong length"
            )));
        }
        let w = q.advantage / s.norm;
        let base = r * t;
        let mut pos = 0;
        let token = |l: &mut Layout, pos: usize, id: u32, weight: f32, inv_tau: f32| -> Result<()> {
            if id as usize >= v {
                return Err(Error::invalid(alloc::format!(
                    "rollout {r}: token id {id} is outside the vocabulary"
                )));
            }
            l.ids[base + pos] = id;
            if pos > 0 && weight != 0.0 {
                l.targets[base + pos - 1] = id;
                l.weights[base + pos - 1] = weight;
                l.inv_tau[base + pos - 1] = inv_tau;
            }
            Ok(())
        };
        for &id in &q.prompt {
            token(&mut l, pos, id, 0.0, 1.0)?;
            pos += 1;
        }
        match &q.thinking {
            Thinking::Tokens(toks) => {
                for &id in toks {
                    token(&mut l, pos, id, w, 1.0 / s.tau)?;
                    pos += 1;
                }
            }
            Thinking::Embeds(e) | Thinking::Noised { inputs: e, .. } => {
                if e.len() % d != 0 {
                    return Err(Error::invalid(alloc::format!(
                        "rollout {r}: thinking inputs are not rows of {d}"
                    )));
                }
                match (&q.thinking, s.noise_at) {
                    (Thinking::Embeds(_), NoiseAt::Input) => {}
                    (Thinking::Noised { actions, .. }, NoiseAt::Hidden | NoiseAt::Logits)
                        if actions.len() == e.len() / d * k =>
                    {
                        l.actions.extend_from_slice(actions)
                    }
                    _ => {
                        return Err(Error::invalid(alloc::format!(
                        "rollout {r}: its recorded actions do not fit noise at the {} ({} floats per thinking step)",
                        s.noise_at.name(),
                        k.max(d)
                    )))
                    }
                }
                for x in e.chunks_exact(d) {
                    let j = l.soft_rows.len() as u32;
                    l.index[base + pos] = j;
                    l.zero[base + pos] = 0;
                    l.embeds.extend_from_slice(x);
                    l.soft_rows.push((base + pos - 1) as u32);
                    l.soft_weight.push(w);
                    pos += 1;
                }
            }
        }
        for (&id, &m) in q.suffix.iter().zip(&q.suffix_mask) {
            token(&mut l, pos, id, w * m, 1.0)?;
            pos += 1;
        }
    }
    l.keep_scored_rows(s.noise_at != NoiseAt::Hidden);
    Ok(l)
}

/// One micro-batch of the update: forward over [prompt, thinking inputs, suffix], d loss / d logits
/// for every scored position (fused ops on the logits), the mixture's gradient into E, and the
/// model backward; gradients accumulate into `grads`. Returns this micro-batch's loss.
pub fn rl_step<B: Train>(
    be: &B,
    model: &Model<B>,
    acts: &mut TrainActs<B>,
    seqs: &[RlSeq],
    s: &RlSettings,
    grads: &mut Grads<B>,
) -> Result<f64> {
    let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
    let l = layout(seqs, d, v, s)?;
    let m = l.head.len();
    if m == 0 {
        // No row is scored (every advantage is zero, no soft input): no loss and no gradient.
        return Ok(0.0);
    }
    let (b, t) = (l.b, l.t);
    let ids = be.upload_ids(&l.ids)?;
    let r = l.soft_rows.len();
    let embeds = be.upload(&l.embeds)?;
    let (index, zero) = (be.upload_ids(&l.index)?, be.upload_ids(&l.zero)?);
    let ov = Overrides {
        embeds: &embeds,
        index: &index,
        zero: &zero,
    };
    let overrides = (r > 0).then_some(&ov);
    let (head_index, head_back) = (be.upload_ids(&l.head)?, be.upload_ids(&l.back)?);
    let head = HeadRows {
        index: &head_index,
        back: &head_back,
        rows: m,
    };
    model.forward_train(be, acts, &ids, overrides, Some(&head), b, t)?;

    let mut loss = 0f64;
    // Soft rows first: the cross-entropy below zeroes every row it does not score. Their
    // gradient goes to their logits rows (input, logits noise) or to the final norm's output.
    let (mut dz_soft, mut dh) = (None, None);
    if r > 0 {
        match s.noise_at {
            NoiseAt::Input => dz_soft = Some(soft_terms(be, model, acts, &l, &embeds, s, grads, &mut loss)?),
            NoiseAt::Logits => {
                let rows = be.upload_ids(&l.soft_rows)?;
                let mut z = be.zeros(r * v)?; // z: [R, V] logits before each soft input
                be.gather_rows(&mut z, &acts.logits, &rows, r, v)?;
                let a = be.upload(&l.actions)?; // a: [R, V] the recorded z'
                dz_soft = Some(gaussian_terms(be, &z, &a, &l.soft_weight, s.sigma, v, &mut loss)?);
            }
            NoiseAt::Hidden => {
                let rows = be.upload_ids(&l.soft_rows)?;
                let mut h = be.zeros(r * d)?; // h: [R, d] final-normed hidden before each soft input
                be.gather_rows(&mut h, acts.final_hidden(), &rows, r, d)?;
                let a = be.upload(&l.actions)?; // a: [R, d] the recorded h'
                dh = Some((gaussian_terms(be, &h, &a, &l.soft_weight, s.sigma, d, &mut loss)?, rows));
            }
        }
    }
    let mut loss_rows = be.zeros(m)?;
    let (targets, weights, inv_tau) = (
        be.upload_ids(&l.targets)?,
        be.upload(&l.weights)?,
        be.upload(&l.inv_tau)?,
    );
    be.cross_entropy_backward(
        &mut acts.logits,
        &mut loss_rows,
        &targets,
        &weights,
        Some(&inv_tau),
        m,
        v,
    )?;
    loss += be.download(&loss_rows, m)?.iter().map(|&x| x as f64).sum::<f64>();
    if let Some(dz) = dz_soft {
        let mut back = vec![u32::MAX; m];
        for (j, &row) in l.soft_rows.iter().enumerate() {
            back[row as usize] = j as u32;
        }
        be.gather_rows(&mut acts.logits, &dz, &be.upload_ids(&back)?, m, v)?;
    }
    let hidden = dh.as_ref().map(|(grad, index)| HiddenGrad { grad, index, rows: r });
    model.backward(be, acts, &ids, overrides, Some(&head), hidden.as_ref(), b, t, grads)?;
    Ok(loss)
}

/// The Gaussian log-density terms of recorded actions around their means: with a the actions
/// [R, k] and mu the means [R, k], adds
/// sum_j w_j ||a_j - mu_j||^2 / (2 sigma^2) = -sum_j w_j log pi(a_j) to `loss` and returns
/// d loss / d mu = -w (a - mu) / sigma^2, [R, k].
fn gaussian_terms<B: Train>(
    be: &B,
    mu: &B::Buf,
    a: &B::Buf,
    w: &[f32],
    sigma: f32,
    k: usize,
    loss: &mut f64,
) -> Result<B::Buf> {
    let r = w.len();
    let mut g = be.zeros(r * k)?; // g: [R, k] = a - mu
    be.copy(&mut g, 0, mu, 0, r * k)?;
    be.scale(&mut g, -1.0, r * k)?;
    be.add(&mut g, a, r * k)?;
    let gh = be.download(&g, r * k)?;
    let inv_2var = 0.5 / ((sigma as f64) * (sigma as f64));
    for (j, row) in gh.chunks_exact(k).enumerate() {
        let sq: f64 = row.iter().map(|&a| (a as f64) * (a as f64)).sum();
        *loss += w[j] as f64 * inv_2var * sq;
    }
    let c: Vec<f32> = w.iter().map(|w| -w / (sigma * sigma)).collect();
    be.scale_rows(&mut g, &be.upload(&c)?, r, k)?;
    Ok(g)
}

/// d loss / d logits of the soft rows (returned, [R, V]) and the mixture's gradient into E
/// (accumulated) for noise at the input; adds their loss -w log pi(x) = w ||x - mu||^2 / (2 sigma^2)
/// to `loss`. With dmu = d loss / d mu = -w (x - mu) / sigma^2 and mu = softmax(z / tau) E:
/// d loss / d z = (1 / tau) p ⊙ (u - <p, u>), u = dmu E^T, and dE += p^T dmu.
#[allow(clippy::too_many_arguments)]
fn soft_terms<B: Train>(
    be: &B,
    model: &Model<B>,
    acts: &TrainActs<B>,
    l: &Layout,
    x: &B::Buf,
    s: &RlSettings,
    grads: &mut Grads<B>,
    loss: &mut f64,
) -> Result<B::Buf> {
    let (d, v, r) = (model.cfg.d(), model.cfg.vocab_size, l.soft_rows.len());
    let e = model.embed();
    let mut z = be.zeros(r * v)?; // z: [R, V] logits that predicted each soft input
    be.gather_rows(&mut z, &acts.logits, &be.upload_ids(&l.soft_rows)?, r, v)?;
    let (mut p, mut mu) = (be.zeros(r * v)?, be.zeros(r * d)?);
    be.mixture(&mut mu, &mut p, &z, e, r, v, d, s.tau)?; // mu = softmax(z / tau) E
    let dmu = gaussian_terms(be, &mu, x, &l.soft_weight, s.sigma, d, loss)?; // dmu: [R, d]
    let mut u = be.zeros(r * v)?; // u: [R, V] = dmu E^T
    be.gemm(&mut u, &dmu, e, Gemm::linear(r, v, d))?;
    let c = vec![1.0 / s.tau; r];
    be.soft_pg_logits(&mut z, &p, &u, &be.upload(&c)?, r, v)?; // z becomes d loss / d z
    let embed = model.idx.embed;
    be.gemm(
        &mut grads[embed].buf,
        &p,
        &dmu,
        Gemm {
            trans_a: true,
            beta: 1.0,
            ..Gemm::nn(v, d, r)
        },
    )?; // dE += p^T dmu
    Ok(z)
}
