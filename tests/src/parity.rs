//! Parity with HF transformers on the fixtures, generic over the backend: the `forward` and
//! `generate` sections. Each check prints one line per (fixture, section) with its error.

use std::path::Path;

use softcot_core::backend::Moments;
use softcot_core::io::ModelDir;
use softcot_core::model::{Batch, Input, LogitRows, Model};
use softcot_core::think::{generate, ThinkConfig, ThinkMode};
use softcot_core::{Backend, Train};

use crate::fixtures::{name, Reference};
use crate::max_abs_err;

/// Logits and soft-thinking embeddings: max abs error (the fixtures README's float32 tolerance).
pub const TOL_LOGITS: f64 = 1e-4;

/// `forward`: logits of every position of `forward.input_ids` in one batched prefill.
pub fn forward<B: Backend>(be: &B, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("forward") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let (shape, _) = r.ids("forward.input_ids");
    let (b, t) = (shape[0], shape[1]);
    let want = r.f64("forward.logits");
    let got = forward_logits(be, &model, &r);
    let err = max_abs_err(&got, &want);
    println!(
        "{:<12} forward           logits [{b}, {t}, {}] max abs err {err:.2e} (tol {TOL_LOGITS:.0e})",
        name(dir),
        model.cfg.vocab_size
    );
    assert!(err < TOL_LOGITS, "{}: forward logits error {err:.3e}", name(dir));
}

/// Logits of every position of `forward.input_ids` in one batched prefill. logits: [B * T, V]
pub fn forward_logits<B: Backend>(be: &B, model: &Model<B>, r: &Reference) -> Vec<f32> {
    let (shape, ids) = r.ids("forward.input_ids");
    let (b, t) = (shape[0], shape[1]);
    let mut ws = model.new_workspace(be, b * t, b * t).unwrap();
    let mut cache = model.new_cache(be, b, t).unwrap();
    let ids_b = be.upload_ids(&ids).unwrap();
    let slots = be.upload_ids(&(0..b as u32).collect::<Vec<_>>()).unwrap();
    let start = be.upload_ids(&vec![0; b]).unwrap();
    let batch = Batch {
        input: Input::Ids(&ids_b),
        slots: &slots,
        start: &start,
        b,
        t,
        max_end: t,
        logits: LogitRows::All,
    };
    model.forward(be, &mut ws, &mut cache, &batch).unwrap();
    be.download(&ws.logits, b * t * model.cfg.vocab_size).unwrap()
}

/// `generate`: hard greedy ids, then soft and fuzzy shadow ids and fed mixtures (no noise).
pub fn generate_sections<B: Backend>(be: &B, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("generate") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let (_, prompt) = r.ids("generate.prompt_ids");
    let (_, greedy) = r.ids("generate.greedy_ids");
    let mut cfg = ThinkConfig::new(ThinkMode::Hard);
    cfg.greedy = true;
    cfg.stop = false;
    cfg.think_tokens = greedy.len();
    cfg.answer_tokens = 0;
    let g = &generate(be, &model, std::slice::from_ref(&prompt), &[0], &cfg, &md.tokenizer).unwrap()[0];
    let same = g.think_ids.iter().zip(&greedy).take_while(|(a, b)| a == b).count();
    println!(
        "{:<12} generate.greedy   {} of {} ids equal",
        name(dir),
        same,
        greedy.len()
    );
    assert_eq!(g.think_ids, greedy, "{}: greedy ids differ", name(dir));

    for mode in [ThinkMode::Soft, ThinkMode::Fuzzy] {
        let sec = if mode == ThinkMode::Soft { "soft" } else { "fuzzy" };
        if !r.has_section(&format!("generate.{sec}")) {
            continue;
        }
        let (_, shadow) = r.ids(&format!("generate.{sec}.shadow_ids"));
        let embeds = r.f64(&format!("generate.{sec}.embeds"));
        let mut cfg = ThinkConfig::new(mode);
        cfg.greedy = true;
        cfg.stop = false;
        cfg.tau = r.scalar(&format!("generate.{sec}.tau")) as f32;
        cfg.think_tokens = shadow.len();
        cfg.answer_tokens = 0;
        cfg.record_inputs = true;
        let g = &generate(be, &model, std::slice::from_ref(&prompt), &[0], &cfg, &md.tokenizer).unwrap()[0];
        let err = max_abs_err(&g.think_inputs, &embeds);
        println!(
            "{:<12} generate.{sec:<6}   {} shadow ids exact: {}, mixtures max abs err {err:.2e} (tol {TOL_LOGITS:.0e})",
            name(dir),
            shadow.len(),
            g.think_ids == shadow
        );
        assert_eq!(g.think_ids, shadow, "{}: {sec} shadow ids differ", name(dir));
        assert!(err < TOL_LOGITS, "{}: {sec} mixture error {err:.3e}", name(dir));
    }
}

/// Relative gradient error allowed (fixtures README: a correct float32 implementation lands near 1e-5).
pub const TOL_GRAD: f64 = 1e-3;

/// The weights a parity run loads: as the fixture stores them, or each perturbed by one
/// bf16-sized relative rounding ([`Perturbed`], drawn from the seed given), which measures how
/// sensitive the model is; or,
/// for the AdamW trajectory, as stored but read by each step's forward and backward rounded to
/// bf16 while AdamW updates the unrounded values: a float32 backend's emulation of the bf16
/// mode's f32 masters and bf16 storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    AsStored,
    Perturbed(u64),
    RoundedForward,
}

fn load_model<B: Backend>(be: &B, dir: &Path, weights: Weights) -> Model<B> {
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    match weights {
        Weights::AsStored | Weights::RoundedForward => md.load(be),
        Weights::Perturbed(seed) => Model::load(be, md.config.clone(), &Perturbed::new(&md.checkpoint, seed)),
    }
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Errors of one training section against the reference: the loss (absolute for sft, relative
/// for rl) and the worst parameter gradient (relative error, name).
pub struct TrainErrors {
    pub loss: f64,
    pub grad: (f64, String),
    pub grads: usize,
}

/// The fixture's `sft` step (cached activations, or recomputed) on `weights`; None without an
/// `sft` section.
pub fn sft_errors<B: Train>(be: &B, dir: &Path, weights: Weights, recompute: bool) -> Option<TrainErrors> {
    use softcot_core::sft::{sft_step, SftBatch};
    let r = Reference::open(dir);
    if !r.has_section("sft") {
        return None;
    }
    let model = load_model(be, dir, weights);
    let (shape, ids) = r.ids("sft.input_ids");
    let (b, t) = (shape[0], shape[1]);
    let mask = r.f32("sft.target_mask").1;
    let n_targets = mask.iter().enumerate().filter(|(i, &m)| i % t != 0 && m != 0.0).count() as f32;
    let batch = SftBatch::new(be, &ids, &mask, b, t, n_targets).unwrap();
    let mut acts = model.new_train_acts(be, b, t, recompute).unwrap();
    let mut grads = model.new_grads(be).unwrap();
    let mut loss_rows = be.zeros(b * t).unwrap();
    let loss = sft_step(be, &model, &mut acts, &batch, &mut loss_rows, &mut grads).unwrap();
    let mut worst = (0f64, String::new());
    for g in &grads {
        let want = r.f64(&format!("sft.grad.{}", g.name));
        let e = crate::rel_err(&be.download(&g.buf, g.numel()).unwrap(), &want);
        if e > worst.0 {
            worst = (e, g.name.clone());
        }
    }
    let names = r.names().iter().filter(|n| n.starts_with("sft.grad.")).count();
    assert_eq!(names, grads.len(), "{}: gradient count", name(dir));
    Some(TrainErrors {
        loss: (loss - r.scalar("sft.loss")).abs(),
        grad: worst,
        grads: grads.len(),
    })
}

/// `sft`: the loss and every parameter gradient, with cached activations and with recomputation.
pub fn sft<B: Train>(be: &B, dir: &Path) {
    for recompute in [false, true] {
        let Some(e) = sft_errors(be, dir, Weights::AsStored, recompute) else {
            return;
        };
        println!(
            "{:<12} sft{}  loss abs err {:.2e}; {} gradients, worst rel err {:.2e} ({})",
            name(dir),
            if recompute { " (recompute)" } else { "            " },
            e.loss,
            e.grads,
            e.grad.0,
            e.grad.1
        );
        assert!(e.loss < 1e-4, "{}: sft loss error {:.3e}", name(dir), e.loss);
        assert!(
            e.grad.0 < TOL_GRAD,
            "{}: gradient of {} off by {:.3e}",
            name(dir),
            e.grad.1,
            e.grad.0
        );
    }
}

/// `sft` in the bf16 compute mode (cached activations). Loss: a mean of log-softmax values, each
/// moved by at most twice the largest logit error, so within 2 x [`tol_logits_bf16`]. Gradients:
/// within [`BF16_FACTOR`] times the float32 gradients' error on perturbed weights (the backward
/// GEMMs round their operands, gradients and activations, by up to u as the forward ones do).
pub fn sft_bf16<B: Train, F: Train>(be: &B, f32_be: &F, dir: &Path) {
    let (Some(b), Some(p)) = (
        sft_errors(be, dir, Weights::AsStored, false),
        sft_errors(f32_be, dir, Weights::Perturbed(PERTURB_SEED), false),
    ) else {
        return;
    };
    let (tol_loss, tol_grad) = (2.0 * tol_logits_bf16(f32_be, dir).0, BF16_FACTOR * p.grad.0);
    println!(
        "{:<12} sft (bf16)        loss err {:.2e} (tol {tol_loss:.2e} = 2 x logits tol); worst gradient rel err {:.2e} ({}) \
         (tol {tol_grad:.2e} = 2 sqrt(2) x {:.2e}, f32 on perturbed weights)",
        name(dir),
        b.loss,
        b.grad.0,
        b.grad.1,
        p.grad.0
    );
    assert!(b.loss < tol_loss, "{}: sft bf16 loss error {:.3e}", name(dir), b.loss);
    assert!(
        b.grad.0 < tol_grad,
        "{}: sft bf16 gradient of {} off by {:.3e}",
        name(dir),
        b.grad.1,
        b.grad.0
    );
}

/// `adamw`: the sft loss before each of 10 full-batch AdamW steps and after the last.
pub fn adamw<B: Train>(be: &B, dir: &Path) {
    let Some(run) = adamw_trajectory(be, dir, Moments::F32, Weights::AsStored) else {
        return;
    };
    println!(
        "{:<12} adamw             {} losses, max abs err {:.2e} (tol 1e-3)",
        name(dir),
        run.losses,
        run.loss_err
    );
    assert!(
        run.loss_err < 1e-3,
        "{}: AdamW trajectory off by {:.3e}",
        name(dir),
        run.loss_err
    );
}

/// The fixture's AdamW trajectory on bf16 moments against the same on f32 moments: the loss
/// error against PyTorch (the fixture's tolerance, as for f32) and how far the final weights
/// drift from the f32 run's. Each step moves a weight by at most about lr (|m^| <= sqrt(v^) for
/// AdamW's early steps, bias-corrected), and bf16 storage perturbs m and v by at most one bf16
/// ulp, a relative 2^-7, so a step's update differs by at most about lr * 1.5 * 2^-7 and the
/// drift after S steps stays under S * lr * 2^-5 (a factor 2.7 for the compounding of earlier
/// moment errors); the measured drift is recorded in docs/TRAINING.md.
pub fn adamw_bf16_moments<B: Train>(be: &B, dir: &Path) {
    let (Some(f32_run), Some(bf16_run)) = (
        adamw_trajectory(be, dir, Moments::F32, Weights::AsStored),
        adamw_trajectory(be, dir, Moments::Bf16, Weights::AsStored),
    ) else {
        return;
    };
    let mut drift = 0f64;
    for (a, b) in f32_run.weights.iter().zip(&bf16_run.weights) {
        drift = drift.max(crate::max_abs_err(b, &a.iter().map(|&x| x as f64).collect::<Vec<_>>()));
    }
    let steps = (bf16_run.losses - 1) as f64;
    let bound = steps * bf16_run.lr * 2f64.powi(-5);
    println!(
        "{:<12} adamw bf16 moments: loss max abs err {:.2e} (f32 moments {:.2e}, tol 1e-3); weights vs f32 moments max abs {drift:.2e} = {:.4} lr (tol {:.3} lr)",
        name(dir),
        bf16_run.loss_err,
        f32_run.loss_err,
        drift / bf16_run.lr,
        bound / bf16_run.lr
    );
    assert!(
        bf16_run.loss_err < 1e-3,
        "{}: bf16-moment AdamW trajectory off by {:.3e}",
        name(dir),
        bf16_run.loss_err
    );
    assert!(
        drift < bound,
        "{}: bf16 moments moved the weights {drift:.3e} from f32 moments'",
        name(dir)
    );
}

/// One AdamW run of the fixture: the number of losses, their max abs error against PyTorch, the
/// learning rate, and the final weights.
struct AdamwRun {
    losses: usize,
    /// The loss before each step and after the last.
    losses_got: Vec<f64>,
    loss_err: f64,
    lr: f64,
    weights: Vec<Vec<f32>>,
}

/// The fixture's 10 full-batch AdamW steps with moments stored as `moments`; `None` when the
/// fixture has no `adamw` section.
fn adamw_trajectory<B: Train>(be: &B, dir: &Path, moments: Moments, weights: Weights) -> Option<AdamwRun> {
    use softcot_core::optim::{AdamW, AdamwConfig};
    use softcot_core::sft::{sft_step, SftBatch};
    let r = Reference::open(dir);
    if !r.has_section("adamw") {
        return None;
    }
    let mut model = load_model(be, dir, weights);
    let (shape, ids) = r.ids("sft.input_ids");
    let (b, t) = (shape[0], shape[1]);
    let mask = r.f32("sft.target_mask").1;
    let n_targets = mask.iter().enumerate().filter(|(i, &m)| i % t != 0 && m != 0.0).count() as f32;
    let batch = SftBatch::new(be, &ids, &mask, b, t, n_targets).unwrap();
    let cfg = AdamwConfig {
        beta1: r.scalar("adamw.beta1"),
        beta2: r.scalar("adamw.beta2"),
        eps: r.scalar("adamw.eps"),
        weight_decay: r.scalar("adamw.weight_decay"),
        decay_norms_and_biases: true, // the fixture decays every parameter
        moments,
        ..AdamwConfig::default()
    };
    let lr = r.scalar("adamw.lr");
    let want = r.f64("adamw.losses");
    let mut opt = AdamW::new(be, &model, cfg).unwrap();
    let mut acts = model.new_train_acts(be, b, t, false).unwrap();
    let mut grads = model.new_grads(be).unwrap();
    let mut loss_rows = be.zeros(b * t).unwrap();
    let mut worst = 0f64;
    let mut losses_got = Vec::with_capacity(want.len());
    for (step, &w) in want.iter().enumerate() {
        softcot_core::optim::zero_grads(be, &mut grads).unwrap();
        let masters: Vec<Vec<f32>> = match weights {
            Weights::RoundedForward => model
                .params
                .iter_mut()
                .map(|p| {
                    let m = be.download(&p.buf, p.numel()).unwrap();
                    be.write(
                        &mut p.buf,
                        &crate::conformance::stored(softcot_core::dtype::DType::BF16, &m),
                    )
                    .unwrap();
                    m
                })
                .collect(),
            _ => Vec::new(),
        };
        let loss = sft_step(be, &model, &mut acts, &batch, &mut loss_rows, &mut grads).unwrap();
        for (p, m) in model.params.iter_mut().zip(&masters) {
            be.write(&mut p.buf, m).unwrap();
        }
        worst = worst.max((loss - w).abs());
        losses_got.push(loss);
        if step + 1 < want.len() {
            opt.update(be, &mut model, &grads, lr).unwrap();
        }
    }
    let weights = model
        .params
        .iter()
        .map(|p| be.download(&p.buf, p.numel()).unwrap())
        .collect();
    Some(AdamwRun {
        losses: want.len(),
        losses_got,
        loss_err: worst,
        lr,
        weights,
    })
}

/// `adamw` in the bf16 compute mode (weights training through f32 masters; `be` made for
/// training, so an f32 checkpoint's values are the masters). PyTorch's float32
/// trajectory is not its reference: an update smaller than half a bf16 ulp of its weight (lr =
/// 1e-3 on a norm weight near 1, whose ulp is 2^-7) stays in the master and reaches the forward
/// only once several accumulate, which slows the descent by a model-dependent amount (tiny-llama:
/// 2.7e-2 after the first step). The reference is that same rule emulated in float32
/// ([`Weights::RoundedForward`] on `f32_be`), whose losses the bf16 mode must meet within twice
/// the logits' bf16 tolerance ([`tol_logits_bf16`]): a loss is a mean of log-softmax values, each
/// moved by at most twice the largest logit error.
pub fn adamw_bf16<B: Train, F: Train>(be: &B, f32_be: &F, dir: &Path) {
    let (Some(b), Some(e)) = (
        adamw_trajectory(be, dir, Moments::F32, Weights::AsStored),
        adamw_trajectory(f32_be, dir, Moments::F32, Weights::RoundedForward),
    ) else {
        return;
    };
    let tol = 2.0 * tol_logits_bf16(f32_be, dir).0;
    let worst = b
        .losses_got
        .iter()
        .zip(&e.losses_got)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    println!(
        "{:<12} adamw (bf16)      {} losses: max abs err {worst:.2e} vs f32 emulating masters + bf16 storage \
         (tol {tol:.2e} = 2 x logits tol); vs PyTorch's f32 run {:.2e} (the emulation's {:.2e})",
        name(dir),
        b.losses,
        b.loss_err,
        e.loss_err
    );
    assert!(worst < tol, "{}: bf16 AdamW trajectory off by {worst:.3e}", name(dir));
}

/// `rl.soft`, `rl.fuzzy`, `rl.hard` and the noise placements `rl.{soft,fuzzy}_{hidden,logits}`
/// (tests/fixtures/README.md): RLOO advantages from the rewards, then the loss and every parameter
/// gradient of -(1/G) sum_g A_g ell_g on the recorded rollouts.
pub fn rl<B: Train>(be: &B, dir: &Path) {
    for mode in RL_MODES {
        let Some((adv_err, e)) = rl_errors(be, dir, mode, Weights::AsStored) else {
            continue;
        };
        println!(
            "{:<12} rl.{mode:<12}   advantages err {adv_err:.1e}; loss rel err {:.2e}; {} gradients, worst rel err {:.2e} ({})",
            name(dir),
            e.loss,
            e.grads,
            e.grad.0,
            e.grad.1
        );
        assert!(adv_err < 1e-4, "{}: RLOO advantages differ by {adv_err}", name(dir));
        assert!(e.loss < 1e-3, "{}: rl.{mode} loss rel err {:.3e}", name(dir), e.loss);
        assert!(
            e.grad.0 < TOL_GRAD,
            "{}: rl.{mode} gradient of {} off by {:.3e}",
            name(dir),
            e.grad.1,
            e.grad.0
        );
    }
}

/// Every `rl.*` section in the bf16 compute mode against the model's measured sensitivity: `s`,
/// the largest float32 error (loss, and the worst gradient) over [`RL_DRAWS`] perturbations of the
/// weights ([`Perturbed`], seeds 24, 25, ..). One draw does not measure it: errors scatter 10x
/// between draws, and fuzzy thinking (tau = 1e-4) turns a near-tie's logit error into another
/// argmax on some (docs/CUDA.md). Then as for sft: within [`BF16_FACTOR`] s, loss and gradients.
pub fn rl_bf16<B: Train, F: Train>(be: &B, f32_be: &F, dir: &Path) {
    for mode in RL_MODES {
        let Some((_, b)) = rl_errors(be, dir, mode, Weights::AsStored) else {
            continue;
        };
        let (mut s_loss, mut s_grad) = (0f64, 0f64);
        for k in 0..RL_DRAWS {
            let (_, p) = rl_errors(f32_be, dir, mode, Weights::Perturbed(PERTURB_SEED + k)).unwrap();
            (s_loss, s_grad) = (s_loss.max(p.loss), s_grad.max(p.grad.0));
        }
        let (tol_loss, tol_grad) = (BF16_FACTOR * s_loss, BF16_FACTOR * s_grad);
        println!(
            "{:<12} rl.{mode:<12} (bf16) loss rel err {:.2e} (tol {tol_loss:.2e} = 2 sqrt(2) x {s_loss:.2e}); \
             worst gradient rel err {:.2e} ({}) (tol {tol_grad:.2e} = 2 sqrt(2) x {s_grad:.2e}); s: f32, max of {RL_DRAWS} perturbations",
            name(dir),
            b.loss,
            b.grad.0,
            b.grad.1,
        );
        assert!(
            b.loss < tol_loss,
            "{}: rl.{mode} bf16 loss rel err {:.3e}",
            name(dir),
            b.loss
        );
        assert!(
            b.grad.0 < tol_grad,
            "{}: rl.{mode} bf16 gradient of {} off by {:.3e}",
            name(dir),
            b.grad.1,
            b.grad.0
        );
    }
}

/// Perturbation draws measuring the RL sections' sensitivity ([`rl_bf16`]).
const RL_DRAWS: u64 = 6;

const RL_MODES: [&str; 7] = [
    "soft",
    "fuzzy",
    "hard",
    "soft_hidden",
    "fuzzy_hidden",
    "soft_logits",
    "fuzzy_logits",
];

/// Section `rl.<mode>` on `weights`: the RLOO advantages' error and the loss (relative) and
/// gradient errors; None without the section.
fn rl_errors<B: Train>(be: &B, dir: &Path, mode: &str, weights: Weights) -> Option<(f64, TrainErrors)> {
    use softcot_core::rl::{rl_step, rloo_advantages, RlSeq, RlSettings, Thinking};
    use softcot_core::think::NoiseAt;
    let r = Reference::open(dir);
    let sec = format!("rl.{mode}");
    let noise_at = match mode.split_once('_') {
        Some((_, at)) => NoiseAt::parse(at).unwrap_or_else(|| panic!("{sec}: unknown placement")),
        None => NoiseAt::Input,
    };
    if !r.has_section(&sec) {
        return None;
    }
    let model = load_model(be, dir, weights);
    let d = model.cfg.d();
    let (_, prompt) = r.ids(&format!("{sec}.prompt_ids"));
    let (sshape, suffix) = r.ids(&format!("{sec}.suffix_ids"));
    let (g, sl) = (sshape[0], sshape[1]);
    let mask = r.f32(&format!("{sec}.suffix_mask")).1;
    let rewards = r.f64(&format!("{sec}.rewards"));
    let adv = rloo_advantages(&rewards).unwrap();
    let adv_err = crate::max_abs_err(
        &adv.iter().map(|&a| a as f32).collect::<Vec<_>>(),
        &r.f64(&format!("{sec}.advantages")),
    );
    let thinking: Vec<Thinking> = if mode == "hard" {
        let (cs, ids) = r.ids(&format!("{sec}.cot_ids"));
        ids.chunks(cs[1]).map(|c| Thinking::Tokens(c.to_vec())).collect()
    } else if noise_at == NoiseAt::Input {
        let (cs, e) = r.f32(&format!("{sec}.cot_embeds"));
        e.chunks(cs[1] * d).map(|c| Thinking::Embeds(c.to_vec())).collect()
    } else {
        let (cs, e) = r.f32(&format!("{sec}.cot_embeds"));
        let (ks, a) = r.f32(&format!("{sec}.cot_actions"));
        e.chunks(cs[1] * d)
            .zip(a.chunks(ks[1] * ks[2]))
            .map(|(e, a)| Thinking::Noised {
                inputs: e.to_vec(),
                actions: a.to_vec(),
            })
            .collect()
    };
    let seqs: Vec<RlSeq> = (0..g)
        .map(|i| RlSeq {
            prompt: prompt.clone(),
            thinking: thinking[i].clone(),
            suffix: suffix[i * sl..(i + 1) * sl].to_vec(),
            suffix_mask: mask[i * sl..(i + 1) * sl].to_vec(),
            advantage: adv[i] as f32,
        })
        .collect();
    let sigma = if mode == "hard" {
        1.0
    } else {
        r.scalar(&format!("{sec}.sigma")) as f32
    };
    let s = RlSettings {
        tau: r.scalar(&format!("{sec}.tau")) as f32,
        sigma,
        noise_at,
        norm: g as f32,
    };
    let t = seqs.iter().map(|q| q.len(d)).max().unwrap();
    let mut acts = model.new_train_acts(be, g, t, false).unwrap();
    let mut grads = model.new_grads(be).unwrap();
    let loss = rl_step(be, &model, &mut acts, &seqs, &s, &mut grads).unwrap();
    let want_loss = r.scalar(&format!("{sec}.loss"));
    let mut worst = (0f64, String::new());
    for p in &grads {
        let e = crate::rel_err(
            &be.download(&p.buf, p.numel()).unwrap(),
            &r.f64(&format!("{sec}.grad.{}", p.name)),
        );
        if e > worst.0 {
            worst = (e, p.name.clone());
        }
    }
    let loss_rel = (loss - want_loss).abs() / want_loss.abs().max(1e-12);
    Some((
        adv_err,
        TrainErrors {
            loss: loss_rel,
            grad: worst,
            grads: grads.len(),
        },
    ))
}

/// The spacing of bf16 values around `x`: 2^-7 of the power of two at or below |x| (bf16 keeps 8
/// significant bits); 0 for zeros and subnormals, which the perturbation leaves alone.
fn bf16_ulp(x: f32) -> f64 {
    let e = (x.to_bits() >> 23) & 0xff;
    if e <= 7 {
        0.0
    } else {
        f32::from_bits((e - 7) << 23) as f64
    }
}

/// The seed of the perturbation a single-draw sensitivity uses (the forward and sft tolerances).
const PERTURB_SEED: u64 = 24;

/// The fixture's weights, each moved by xi times half its bf16 spacing ([`bf16_ulp`]), xi uniform
/// in [-1, 1) from the seed, and stored f32: the error of a bf16 rounding at a random offset, so up
/// to 2^-8 of a value just above a power of two and 2^-9 of one just below the next.
struct Perturbed {
    tensors: std::collections::HashMap<String, (Vec<usize>, Vec<u8>)>,
}

impl Perturbed {
    fn new(ck: &softcot_core::io::safetensors::Checkpoint, seed: u64) -> Perturbed {
        use softcot_core::dtype::{decode_into, encode, DType};
        use softcot_core::model::TensorSource;
        let mut rng = crate::TestRng(seed);
        let tensors = ck
            .names()
            .into_iter()
            .map(|n| {
                let (dtype, shape, bytes) = ck.tensor(&n).unwrap();
                let mut v = vec![0f32; bytes.len() / dtype.size()];
                decode_into(dtype, bytes, &mut v).unwrap();
                for x in &mut v {
                    *x = (*x as f64 + 0.5 * rng.uniform() as f64 * bf16_ulp(*x)) as f32;
                }
                (n, (shape, encode(DType::F32, &v)))
            })
            .collect();
        Perturbed { tensors }
    }
}

impl softcot_core::model::TensorSource for Perturbed {
    fn tensor(&self, name: &str) -> softcot_core::Result<(softcot_core::dtype::DType, Vec<usize>, &[u8])> {
        let (shape, bytes) = &self.tensors[name];
        Ok((softcot_core::dtype::DType::F32, shape.clone(), bytes))
    }
    fn origin(&self) -> &str {
        "fixture with perturbed weights"
    }
}

/// The bf16 compute mode's logits tolerance for the fixture in `dir`, from the model's measured
/// sensitivity: `s` = the max logit change (in float32, on `f32_be`) when every weight is
/// moved by a bf16 rounding's error at a random offset ([`Perturbed`]). A fixed a-priori bound does
/// not fit: random models amplify perturbations by model-dependent factors (the fixtures
/// README), 2x apart between these fixtures. The bf16 mode rounds both operands of every
/// product (weights, unless stored bf16, and activations) by such an error each, of random signs: two
/// independent perturbations of the size `s` measures, sqrt(2) s in the typical case; the tolerance
/// is twice that for the spread of a max over 10^4..10^5 logits: tol = 2 sqrt(2) s. Returns (tol, s).
pub fn tol_logits_bf16<F: Backend>(f32_be: &F, dir: &Path) -> (f64, f64) {
    let r = Reference::open(dir);
    let model = load_model(f32_be, dir, Weights::Perturbed(PERTURB_SEED));
    let s = max_abs_err(&forward_logits(f32_be, &model, &r), &r.f64("forward.logits"));
    (BF16_FACTOR * s, s)
}

/// The bf16 mode's errors over the float32 errors on perturbed weights: 2 sqrt(2) (see
/// [`tol_logits_bf16`]; the same argument holds for losses and gradients, whose backward GEMMs
/// round their operands, gradients and activations, as the forward ones do).
pub const BF16_FACTOR: f64 = 2.0 * std::f64::consts::SQRT_2;

/// `forward` in the bf16 compute mode: HF's logits within [`tol_logits_bf16`] (the error is
/// operand rounding, not a bug: the float32 mode meets [`TOL_LOGITS`]).
pub fn forward_bf16<B: Backend, F: Backend>(be: &B, f32_be: &F, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("forward") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let want = r.f64("forward.logits");
    let got = forward_logits(be, &model, &r);
    let err = max_abs_err(&got, &want);
    let (tol, s) = tol_logits_bf16(f32_be, dir);
    println!(
        "{:<12} forward (bf16)    logits max abs err {err:.2e} (tol {tol:.2e} = 2 sqrt(2) x {s:.2e}, the f32 logits' response \
         to a bf16 rounding's error in every weight; {:.2} of tol)",
        name(dir),
        err / tol
    );
    assert!(
        err < tol,
        "{}: bf16 forward logits error {err:.3e} (tol {tol:.3e})",
        name(dir)
    );
}

/// `generate.greedy` in the bf16 compute mode. Greedy ids legitimately differ from HF's where two
/// logits are closer than the bf16 error, so the check is: along HF's path, every step whose
/// top-2 margin (from `f32_be`'s teacher-forced logits, HF's within [`TOL_LOGITS`]) exceeds twice
/// [`tol_logits_bf16`] picks HF's id, up to the first step whose margin is below it (after which
/// the contexts may differ). Prints how many steps were compared.
pub fn greedy_bf16<B: Backend, F: Backend>(be: &B, f32_be: &F, dir: &Path) {
    let r = Reference::open(dir);
    if !r.has_section("generate") {
        return;
    }
    let md = ModelDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let model = md.load(be).unwrap_or_else(|e| panic!("{e}"));
    let f32_model = md.load(f32_be).unwrap_or_else(|e| panic!("{e}"));
    let (_, prompt) = r.ids("generate.prompt_ids");
    let (_, greedy) = r.ids("generate.greedy_ids");
    // Teacher-forced logits of HF's path in f32: position p - 1 + i predicts greedy[i].
    let path: Vec<u32> = prompt.iter().chain(&greedy[..greedy.len() - 1]).copied().collect();
    let v = model.cfg.vocab_size;
    let logits = path_logits(f32_be, &f32_model, &path);
    let (tol, _) = tol_logits_bf16(f32_be, dir);
    let margins: Vec<f32> = (0..greedy.len())
        .map(|i| {
            let row = &logits[(prompt.len() - 1 + i) * v..][..v];
            let mut top = [f32::NEG_INFINITY; 2];
            for &z in row {
                if z > top[0] {
                    top = [z, top[0]];
                } else if z > top[1] {
                    top[1] = z;
                }
            }
            top[0] - top[1]
        })
        .collect();
    let mut cfg = ThinkConfig::new(ThinkMode::Hard);
    cfg.greedy = true;
    cfg.stop = false;
    cfg.think_tokens = greedy.len();
    cfg.answer_tokens = 0;
    let g = &generate(be, &model, std::slice::from_ref(&prompt), &[0], &cfg, &md.tokenizer).unwrap()[0];
    let safe = margins.iter().take_while(|&&m| m as f64 > 2.0 * tol).count();
    let same = g.think_ids.iter().zip(&greedy).take_while(|(a, b)| a == b).count();
    println!(
        "{:<12} generate.greedy (bf16) {same} of {} ids equal HF's; the first {safe} steps have top-2 margins > 2 tol = {:.2e} and must",
        name(dir),
        greedy.len(),
        2.0 * tol
    );
    assert!(
        same >= safe,
        "{}: bf16 greedy id {same} differs from HF's where the margin {:.3e} exceeds 2 tol",
        name(dir),
        margins[same]
    );
}

/// Logits of every position of one row of `ids`. logits: [len, V]
fn path_logits<B: Backend>(be: &B, model: &Model<B>, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    let mut ws = model.new_workspace(be, t, t).unwrap();
    let mut cache = model.new_cache(be, 1, t).unwrap();
    let ids_b = be.upload_ids(ids).unwrap();
    let zero = be.upload_ids(&[0]).unwrap();
    let batch = Batch {
        input: Input::Ids(&ids_b),
        slots: &zero,
        start: &zero,
        b: 1,
        t,
        max_end: t,
        logits: LogitRows::All,
    };
    model.forward(be, &mut ws, &mut cache, &batch).unwrap();
    be.download(&ws.logits, t * model.cfg.vocab_size).unwrap()
}
