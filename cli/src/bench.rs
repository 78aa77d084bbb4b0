//! `softcot bench`: throughput of the workloads of docs/BENCHMARKS.md, to run alternately with
//! `shared/tools/pytorch_bench.py` on the same machine.
//!
//! - `prefill`: B x P random tokens, one forward with the last position's logits; B*P / time.
//! - `decode`: B prompts of P tokens, then N greedy hard tokens with the KV cache, prefill included;
//!   B*N / time (as `model.generate` is timed).
//! - `soft-decode`: the same with soft thinking (tau 0.5, noise gamma 0.33), or with `--think
//!   fuzzy` fuzzy thinking (tau 1e-4), each run paired with a hard one.
//! - `matmul`: an N x N x N float32 product (the machine's GEMM rate, the physical yardstick).
//! - `memory`: `Backend::sum_squares` over 400 MiB of float32, GB/s read: the memory's streaming
//!   rate, the yardstick of the decode kernels (a decode step of bench-125m reads ~400 MB).
//! - `head-products`: the two products that stream a [V, d] matrix once per decode step, for B
//!   rows: the lm_head `x[B, d] @ W^T` and the soft mixture `p[B, V] @ E`, GB/s of each; and the
//!   whole head of a soft step (`Backend::soft_head`: logits, argmax, softmax, mixture) against its
//!   unfused default, ms of each. All four in turns, so that the machine's drift hits them alike.
//! - `rl-step`: the two halves of an RL step, hard and soft (or `--think fuzzy`) thinking: rollouts
//!   and the update, timed apart, beside a supervised step over as many tokens (issue 5's targets).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde_json::json;
use softcot_core::backend::{soft_head_unfused, Gemm};
use softcot_core::io::checkpoint::load_fresh;
use softcot_core::io::ModelDir;
use softcot_core::model::{Batch, Input, LogitRows, Model};
use softcot_core::optim::{AdamW, AdamwConfig};
use softcot_core::rl::{RlSeq, RlSettings, Step as RlStep, StepConfig};
use softcot_core::rollout::{to_rl_seqs, Collected, Rewards, Task};
use softcot_core::sft::{Example, Step as SftStep};
use softcot_core::think::{generate, ThinkConfig, ThinkMode, Tokens, PREFILL_AT_BUDGET};
use softcot_core::{philox, Backend, Error, Result, Train};

use crate::args::{BackendKind, ComputeDtype, Format, Think, MAX_ROWS};
use crate::progress::Progress;
use crate::{with_backend, with_train_backend};

/// Floats the `memory` workload reads per repeat (400 MiB: far beyond any cache).
const MEMORY_FLOATS: usize = 100 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Prefill,
    Decode,
    /// Soft thinking decode (tau 0.5, gamma 0.33; fuzzy with --think fuzzy); each timed run is
    /// paired with a hard decode timed beside it, for `soft_over_hard`.
    SoftDecode,
    Matmul,
    /// The backend's read rate: sum of squares over 400 MiB of float32 (GB/s).
    Memory,
    /// Forward + cross-entropy + backward + AdamW on --batch x --seq-len random tokens.
    TrainStep,
    /// Gradings per second on one thread (softcot_core::grade::workload::TYPICAL).
    Grade,
    /// One RL step of --batch prompts (default 2) x --samples rollouts with --new-tokens thinking and
    /// --answer-tokens answer tokens, hard and soft (or --think fuzzy): rollouts and update timed
    /// apart, and an SFT step.
    RlStep,
    /// The lm_head product and the soft mixture product of a decode step, and the whole soft head
    /// fused and unfused, for --batch rows, in turns.
    HeadProducts,
}

#[derive(Args)]
pub struct BenchArgs {
    /// HF model folder (not needed for `matmul`).
    #[arg(long, required_unless_present_any = ["workload"])]
    model: Option<PathBuf>,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Rows per batch (default 8; 4 for train-step).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// `rl-step`: rollouts per prompt (G).
    #[arg(long, default_value_t = 8)]
    samples: usize,
    /// `rl-step`: hard answer tokens after the thinking and its forced prefill.
    #[arg(long, default_value_t = 16)]
    answer_tokens: usize,
    /// Sequence length of the `train-step` workload.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// `train-step`: recompute activations per layer instead of caching them.
    #[arg(long)]
    recompute: bool,
    /// `soft-decode`, `rl-step`: the continuous thinking mode timed against hard thinking, soft
    /// (the default) or fuzzy (the JSON's `soft` fields then hold that mode's figures).
    #[arg(long, value_enum)]
    think: Option<Think>,
    /// `decode`, `soft-decode`: record every thinking step's next-token entropy, as `softcot eval`
    /// does for its entropy profiles (the cost of recording is the difference from a run without).
    #[arg(long)]
    record_entropy: bool,
    /// Timed repeats after one untimed warm-up.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Matrix size of the `matmul` workload.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// The GPU to run on with --backend cuda, as `softcot devices` numbers them.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Compute precision: bf16 (--backend cuda's default: bf16 weights and matmul operands, f32
    /// accumulation) or f32 (the only one of cpu and wgpu).
    #[arg(long, value_enum)]
    dtype: Option<ComputeDtype>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl BenchArgs {
    /// The continuous mode `soft-decode` and `rl-step` time; `--think` anywhere else, or hard, is
    /// an error rather than a flag silently ignored.
    fn think(&self) -> Result<Think> {
        match (self.think, self.workload) {
            (None, _) => Ok(Think::Soft),
            (Some(Think::Hard), _) => Err(Error::invalid(
                "--think: soft-decode and rl-step time soft or fuzzy thinking against hard",
            )),
            (Some(t), Workload::SoftDecode | Workload::RlStep) => Ok(t),
            (Some(_), w) => Err(Error::invalid(format!(
                "--think applies to soft-decode and rl-step, not to {}",
                w.to_possible_value()
                    .map_or(String::new(), |v| v.get_name().to_string())
            ))),
        }
    }

    /// Sizes past any benchmark's are refused before anything is allocated: rows, and the
    /// matmul's side (three N x N float32 matrices; 2^15 is 12 GiB).
    fn check_sizes(&self) -> Result<()> {
        if self.repeats == 0 || self.batch() == 0 {
            return Err(Error::invalid("--repeats and --batch must be positive"));
        }
        let rows = match self.workload {
            Workload::RlStep => self.batch().saturating_mul(self.samples),
            _ => self.batch(),
        };
        if rows > MAX_ROWS {
            return Err(Error::invalid(format!(
                "--batch (x --samples for rl-step) cannot exceed {MAX_ROWS} rows"
            )));
        }
        if self.workload == Workload::Matmul && self.size > 1 << 15 {
            return Err(Error::invalid("--size cannot exceed 32768"));
        }
        Ok(())
    }

    /// Positions a sequence of the workload takes (saturating), checked against the context.
    fn positions(&self) -> usize {
        match self.workload {
            Workload::Prefill => self.prompt_len,
            Workload::Decode | Workload::SoftDecode => self.prompt_len.saturating_add(self.new_tokens),
            Workload::RlStep => self
                .prompt_len
                .saturating_add(self.new_tokens)
                .saturating_add(self.answer_tokens),
            Workload::TrainStep => self.seq_len,
            _ => 0,
        }
    }

    fn batch(&self) -> usize {
        self.batch.unwrap_or(match self.workload {
            Workload::TrainStep => 4,
            Workload::RlStep => 2,
            _ => 8,
        })
    }
}

/// The per-repeat measure of a workload: (work units, seconds).
type Sample = (f64, f64);

pub fn run(a: BenchArgs) -> Result<()> {
    a.check_sizes()?;
    a.think()?;
    match a.workload {
        Workload::RlStep | Workload::TrainStep => {
            a.backend.require_training("bench --workload train-step|rl-step")?;
            with_train_backend!(a.backend, a.device, a.dtype, "bench", |be| train_bench_on(&be, &a))
        }
        _ => with_backend!(a.backend, a.device, a.dtype, |be| bench_on(&be, &a)),
    }
}

/// The workloads that train: an RL step, or a supervised one.
fn train_bench_on<B: Train>(be: &B, a: &BenchArgs) -> Result<()> {
    if a.workload == Workload::RlStep {
        return rl_step_bench(be, a);
    }
    // model_dir checks the workload against the model's context.
    let dir = model_dir(a)?.0;
    let (_, model, opt) = load_fresh(be, dir, AdamwConfig::default())?;
    let (arch, flop_params) = (model.cfg.name_hint(), model.cfg.matmul_params());
    let samples = train_step(be, model, opt, a)?;
    // The yardstick of issue 3: 6 x (non-embedding parameters + lm_head) x tokens per step.
    let mut rates: Vec<f64> = samples
        .iter()
        .map(|(w, s)| 6.0 * flop_params as f64 * w / s / 1e9)
        .collect();
    rates.sort_by(f64::total_cmp);
    let extra = json!({"model": dir.display().to_string(), "arch": arch, "batch": a.batch(),
                       "seq_len": a.seq_len, "recompute": a.recompute, "gflops": rates[rates.len() / 2],
                       "peak_rss_mib": peak_rss_mib()});
    report(be, a, "train-step", "tokens_per_s", &samples, &extra, None)
}

fn bench_on<B: Backend>(be: &B, a: &BenchArgs) -> Result<()> {
    if a.workload == Workload::HeadProducts {
        return head_products_bench(be, a);
    }
    let mut soft_over_hard: Option<[f64; 3]> = None;
    let (label, unit, samples, extra) = if a.workload == Workload::Grade {
        use softcot_core::grade::{grade, workload::TYPICAL, ExtractOptions};
        let opts = ExtractOptions::default();
        let rounds = 200;
        let samples = repeat(be, a.repeats, || {
            let mut correct = 0usize;
            for _ in 0..rounds {
                correct += TYPICAL.iter().filter(|(g, p)| grade(g, p, &opts).correct).count();
            }
            std::hint::black_box(correct);
            Ok((rounds * TYPICAL.len()) as f64)
        })?;
        (
            "grade",
            "gradings_per_s",
            samples,
            json!({"pairs": TYPICAL.len(), "threads": 1}),
        )
    } else if a.workload == Workload::Memory {
        let n = MEMORY_FLOATS;
        let x = be.upload(&vec![0.5f32; n])?;
        let samples = repeat(be, a.repeats, || {
            std::hint::black_box(be.sum_squares(&x, n)?);
            Ok((n * 4) as f64 / 1e9)
        })?;
        ("memory", "gb_per_s", samples, json!({"bytes": n * 4}))
    } else if a.workload == Workload::Matmul {
        let n = a.size;
        let g = Gemm::nn(n, n, n);
        let x = be.upload(&random_vec(n * n, a.seed))?;
        let mut c = be.zeros(n * n)?;
        let samples = repeat(be, a.repeats, || {
            be.gemm(&mut c, &x, &x, g)?;
            Ok(2.0 * (n as f64).powi(3) / 1e9)
        })?;
        ("matmul", "gflops", samples, json!({"size": n}))
    } else {
        let (dir, md) = model_dir(a)?;
        let model = md.load(be)?;
        let arch = model.cfg.name_hint();
        let prompts = random_prompts(a, model.cfg.vocab_size);
        let samples = match a.workload {
            Workload::Prefill => prefill(be, &model, &prompts, a.repeats)?,
            Workload::Decode | Workload::SoftDecode => {
                let config = |mode: ThinkMode| ThinkConfig {
                    greedy: mode == ThinkMode::Hard,
                    stop: false,
                    think_tokens: a.new_tokens,
                    answer_tokens: 0,
                    seed: a.seed,
                    record_entropy: a.record_entropy,
                    ..ThinkConfig::new(mode)
                };
                let (hard, soft) = (config(ThinkMode::Hard), config(a.think()?.mode()));
                let streams: Vec<u32> = (0..a.batch() as u32).collect();
                let decode = |cfg: &ThinkConfig| -> Result<f64> {
                    generate(be, &model, &prompts, &streams, cfg, &md.tokenizer)?;
                    Ok((a.batch() * a.new_tokens) as f64)
                };
                if a.workload == Workload::Decode {
                    repeat(be, a.repeats, || decode(&hard))?
                } else {
                    let (samples, ratios) = paired(be, a.repeats, || decode(&hard), || decode(&soft))?;
                    soft_over_hard = Some(spread(ratios));
                    samples
                }
            }
            Workload::Matmul
            | Workload::Memory
            | Workload::Grade
            | Workload::RlStep
            | Workload::TrainStep
            | Workload::HeadProducts => unreachable!("handled above"),
        };
        let label = match a.workload {
            Workload::Prefill => "prefill",
            Workload::Decode => "decode",
            _ => "soft-decode",
        };
        let mut extra = json!({"model": dir.display().to_string(), "arch": arch,
                               "batch": a.batch(), "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
                               "record_entropy": a.record_entropy});
        if let (Workload::SoftDecode, Some(e)) = (a.workload, extra.as_object_mut()) {
            e.insert("think".into(), json!(a.think()?.name()));
        }
        if let (Some([median, min, max]), Some(e)) = (soft_over_hard, extra.as_object_mut()) {
            e.insert(
                "soft_over_hard".into(),
                json!({"median": median, "min": min, "max": max}),
            );
        }
        (label, "tokens_per_s", samples, extra)
    };
    report(be, a, label, unit, &samples, &extra, soft_over_hard)
}

/// Prints a workload's rate (median, min, max over its samples) and its extra fields.
fn report<B: Backend>(
    be: &B,
    a: &BenchArgs,
    label: &str,
    unit: &str,
    samples: &[Sample],
    extra: &serde_json::Value,
    soft_over_hard: Option<[f64; 3]>,
) -> Result<()> {
    let [median, min, max] = spread(samples.iter().map(|(w, s)| w / s).collect());
    match a.format {
        Format::Json => {
            let mut v = json!({"workload": label, "backend": be.name(), "repeats": a.repeats,
                               unit: {"median": median, "min": min, "max": max},
                               "seconds": samples.iter().map(|s| s.1).collect::<Vec<_>>()});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            println!("{v}");
        }
        Format::Text => {
            println!(
                "{label}: {median:.1} {unit} (median of {}, min {min:.1}, max {max:.1}) on {}",
                a.repeats,
                be.name()
            );
            if let Some([median, min, max]) = soft_over_hard {
                let think = a.think()?.name();
                println!("{think} / hard decode time, per pair: {median:.3} (median; min {min:.3}, max {max:.3})");
            }
        }
    }
    Ok(())
}

/// Median, min and max of a non-empty list.
fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// What `f` returns, and the seconds it took with the device synchronised.
fn timed<B: Backend, T>(be: &B, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let out = f()?;
    be.sync()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

/// One untimed warm-up, then `n` timed runs of `f` (which returns its work units).
fn repeat<B: Backend>(be: &B, n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<Sample>> {
    let progress = runs(n + 1);
    let mut run = || {
        let sample = timed(be, &mut f);
        progress.inc(1);
        sample
    };
    run()?;
    (0..n).map(|_| run()).collect()
}

/// The progress of a workload's `n` runs (warm-ups included).
fn runs(n: usize) -> Progress {
    Progress::new(n as u64, "bench", "run")
}

/// After one untimed run of each, `n` timed runs of `base` and of `f` back to back, in alternating
/// order: the samples of `f`, and the time ratio f / base of each pair, in which the machine's drift
/// (10-25% between runs here) largely cancels.
fn paired<B: Backend>(
    be: &B,
    n: usize,
    mut base: impl FnMut() -> Result<f64>,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<(Vec<Sample>, Vec<f64>)> {
    let progress = runs(n + 1);
    timed(be, &mut base)?;
    timed(be, &mut f)?;
    progress.inc(1);
    let (mut samples, mut ratios) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let (b, s) = if i % 2 == 0 {
            let b = timed(be, &mut base)?;
            (b, timed(be, &mut f)?)
        } else {
            let s = timed(be, &mut f)?;
            (timed(be, &mut base)?, s)
        };
        ratios.push(s.1 / b.1);
        samples.push(s);
        progress.inc(1);
    }
    Ok((samples, ratios))
}

/// The `--model` folder, opened.
fn model_dir(a: &BenchArgs) -> Result<(&PathBuf, ModelDir)> {
    let dir = a
        .model
        .as_ref()
        .ok_or_else(|| Error::invalid("--model is required for this workload"))?;
    let md = ModelDir::open(dir)?;
    let (context, positions) = (md.config.max_position_embeddings, a.positions());
    if positions > context {
        return Err(Error::invalid(format!(
            "the workload's sequences take {positions} positions (--prompt-len, --new-tokens, --answer-tokens or --seq-len), more than the model's context of {context}"
        )));
    }
    Ok((dir, md))
}

/// --batch prompts of --prompt-len random tokens.
fn random_prompts(a: &BenchArgs, v: usize) -> Vec<Vec<u32>> {
    (0..a.batch())
        .map(|b| (0..a.prompt_len).map(|i| random_id(a.seed, b, i, v)).collect())
        .collect()
}

fn prefill<B: Backend>(be: &B, model: &Model<B>, prompts: &[Vec<u32>], repeats: usize) -> Result<Vec<Sample>> {
    let (b, p) = (prompts.len(), prompts[0].len());
    let mut ws = model.new_workspace(be, b * p, b)?;
    let mut cache = model.new_cache(be, b, p)?;
    let ids = be.upload_ids(&prompts.concat())?;
    let slots = be.upload_ids(&(0..b as u32).collect::<Vec<_>>())?;
    let start = be.upload_ids(&vec![0; b])?;
    repeat(be, repeats, || {
        let batch = Batch {
            input: Input::Ids(&ids),
            slots: &slots,
            start: &start,
            b,
            t: p,
            max_end: p,
            logits: LogitRows::Last,
        };
        model.forward(be, &mut ws, &mut cache, &batch)?;
        Ok((b * p) as f64)
    })
}

/// B supervised examples of T random tokens; every token but the first of a row is a target.
fn random_examples(v: usize, b: usize, t: usize, seed: u64) -> Vec<Example> {
    (0..b)
        .map(|r| Example {
            ids: (0..t).map(|i| random_id(seed, r, i, v)).collect(),
            mask: (0..t).map(|i| if i == 0 { 0.0 } else { 1.0 }).collect(),
        })
        .collect()
}

/// The supervised optimizer step (`softcot_core::sft::Step`: forward, weighted cross-entropy,
/// backward, gradient norm, AdamW) on random tokens; work = tokens per step.
fn train_step<B: Train>(be: &B, mut model: Model<B>, mut opt: AdamW<B>, a: &BenchArgs) -> Result<Vec<Sample>> {
    let (b, t) = (a.batch(), a.seq_len);
    let examples = random_examples(model.cfg.vocab_size, b, t, a.seed);
    let batch: Vec<&Example> = examples.iter().collect();
    let mut step = SftStep::new(be, &model, b, t, a.recompute, 0.0)?;
    repeat(be, a.repeats, || {
        step.update(be, &mut model, &mut opt, &batch, 1e-4)?;
        Ok((b * t) as f64)
    })
}

/// The parts of one RL step the `rl-step` workload times, run through the core's steps.
struct RlParts<'a, B: Train> {
    be: &'a B,
    model: &'a Model<B>,
    tok: &'a dyn Tokens,
    tasks: Vec<&'a Task>,
    /// [hard, soft (or fuzzy)] thinking
    think: [ThinkConfig; 2],
    rl: RlStep<B>,
    sft: SftStep<B>,
}

impl<B: Train> RlParts<'_, B> {
    /// Rollouts of step 0 in mode `k` (`Step::rollouts`: prompt prefill, thinking, answers, grading).
    fn rollouts(&self, k: usize) -> Result<Collected> {
        let (be, model) = (self.be, self.model);
        self.rl
            .rollouts(be, model, &self.tasks, 0, &self.think[k], self.tok, &Rewards::default())
    }
}

/// `rl-step`: the rollouts (`Step::rollouts`) and the update (`Step::gradients` over all rollouts
/// of the step in one micro-batch: forward + backward, no optimizer) of one RL step, for hard and
/// for soft thinking, and a supervised step (`sft::Step::gradients`) over the same rows x tokens.
/// Thinking never stops early, so every rollout uses its whole budget. After one untimed round,
/// each timed round runs every part once (the two rollouts first, their order alternating between
/// rounds), so that the machine's drift largely cancels in the per-round ratios.
fn rl_step_bench<B: Train>(be: &B, a: &BenchArgs) -> Result<()> {
    if a.samples < 2 {
        return Err(Error::invalid(
            "--samples must be at least 2 (RLOO compares each rollout with the others)",
        ));
    }
    let (dir, md) = model_dir(a)?;
    let model = md.load(be)?;
    let (d, v) = (model.cfg.d(), model.cfg.vocab_size);
    let tasks: Vec<Task> = random_prompts(a, v)
        .into_iter()
        .map(|prompt| Task {
            prompt,
            gold: String::new(),
        })
        .collect();
    let (g, rows) = (a.samples, tasks.len() * a.samples);
    let think = a.think()?;
    let cfgs = [ThinkMode::Hard, think.mode()].map(|mode| ThinkConfig {
        stop: false,
        think_tokens: a.new_tokens,
        answer_tokens: a.answer_tokens,
        seed: a.seed,
        ..ThinkConfig::new(mode)
    });
    let step_cfg = StepConfig {
        prompts: tasks.len(),
        samples: g,
        micro_batch: 0,
        rollout_batch: 0,
        max_grad_norm: 0.0,
        recompute: a.recompute,
    };
    // The update's rows are as long as the prompt and the whole budgets.
    let t = a
        .positions()
        .saturating_add(md.tokenizer.encode(PREFILL_AT_BUDGET)?.len());
    let mut parts = RlParts {
        be,
        model: &model,
        tok: &md.tokenizer,
        tasks: tasks.iter().collect(),
        think: cfgs,
        rl: RlStep::new(be, &model, step_cfg, t)?,
        sft: SftStep::new(be, &model, rows, t, a.recompute, 0.0)?,
    };

    // The untimed round's rollouts are the update's input. Random weights earn no reward: spread
    // the rewards so that every advantage, hence every loss term, is non-zero.
    let mut seqs: Vec<Vec<RlSeq>> = Vec::new();
    let mut settings = Vec::new();
    let mut sigma = 0.0;
    for k in 0..2 {
        let mut c = parts.rollouts(k)?;
        for (i, r) in c.rollouts.iter_mut().enumerate() {
            r.reward = (i % g) as f64;
        }
        seqs.push(to_rl_seqs(&c.rollouts)?);
        settings.push(RlSettings {
            tau: parts.think[k].tau,
            sigma: c.sigma,
            noise_at: c.noise_at,
            norm: rows as f32,
        });
        sigma = c.sigma;
    }
    let t = seqs.iter().flatten().map(|q| q.len(d)).max().unwrap_or(1);
    let sft_examples = random_examples(v, rows, t, a.seed);
    let sft_batch: Vec<&Example> = sft_examples.iter().collect();
    let update = |parts: &mut RlParts<B>, k: usize| -> Result<f64> {
        if k < 2 {
            parts.rl.gradients(be, &model, &seqs[k], &settings[k])
        } else {
            Ok(parts.sft.gradients(be, &model, &sft_batch)?.0)
        }
    };
    for k in 0..3 {
        update(&mut parts, k)?;
    }
    // secs[r]: [hard rollouts, soft rollouts, hard update, soft update, SFT step] of round r
    let mut secs: Vec<[f64; 5]> = Vec::with_capacity(a.repeats);
    let progress = runs(a.repeats);
    for r in 0..a.repeats {
        let mut round = [0f64; 5];
        // The two rollouts back to back, in alternating order: a rollout timed right after the
        // hard update ran up to 30% slower, so neither mode always takes the same place.
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            round[k] = timed(be, || parts.rollouts(k))?.1;
        }
        for k in 0..3 {
            round[2 + k] = timed(be, || update(&mut parts, k))?.1;
        }
        secs.push(round);
        progress.inc(1);
    }
    progress.finish();
    let col = |i: usize| spread(secs.iter().map(|r| r[i]).collect());
    let ratio = |i: usize, j: usize| spread(secs.iter().map(|r| r[i] / r[j]).collect());
    let names = [
        "rollouts_hard",
        "rollouts_soft",
        "update_hard",
        "update_soft",
        "sft_step",
    ];
    let (soft_hard, upd_hard, upd_soft) = (ratio(1, 0), ratio(2, 4), ratio(3, 4));
    match a.format {
        Format::Json => {
            let triple = |[median, min, max]: [f64; 3]| json!({"median": median, "min": min, "max": max});
            let seconds: serde_json::Map<String, serde_json::Value> =
                (0..5).map(|i| (names[i].to_string(), triple(col(i)))).collect();
            println!(
                "{}",
                json!({"workload": "rl-step", "backend": be.name(), "repeats": a.repeats,
                       "model": dir.display().to_string(), "arch": model.cfg.name_hint(),
                       "think": think.name(), "prompts": tasks.len(), "samples": g, "prompt_len": a.prompt_len,
                       "think_tokens": a.new_tokens, "answer_tokens": a.answer_tokens, "rows": rows, "seq_len": t,
                       "sigma": sigma, "seconds": seconds,
                       "soft_over_hard_rollouts": triple(soft_hard),
                       "update_over_sft": {"hard": triple(upd_hard), "soft": triple(upd_soft)},
                       "peak_rss_mib": peak_rss_mib()})
            );
        }
        Format::Text => {
            let s = |i: usize| col(i)[0];
            println!(
                "rl-step: {} prompts x {g} samples, {} + {} thinking + {} answer tokens; update and SFT over {rows} x {t} tokens; medians of {} rounds on {}",
                tasks.len(),
                a.prompt_len,
                a.new_tokens,
                a.answer_tokens,
                a.repeats,
                be.name()
            );
            let think = think.name();
            println!(
                "  rollouts  hard {:.3} s  {think} {:.3} s  {think}/hard {:.3} (target <= 1.15)",
                s(0),
                s(1),
                soft_hard[0]
            );
            println!(
                "  update    hard {:.3} s  {think} {:.3} s  SFT step {:.3} s  update/SFT hard {:.3} {think} {:.3} (target <= 1.10)",
                s(2),
                s(3),
                s(4),
                upd_hard[0],
                upd_soft[0]
            );
            println!("  sigma {sigma:.6} (NoiseScale::sigma of the sum of squares of E)");
        }
    }
    Ok(())
}

/// Each repeat runs, in turns and ten times each for --batch rows, the lm_head product `x @ W^T`
/// and the mixture product `p @ E` (random x, a softmax-like p; GB/s = the matrix's bytes / time),
/// then the whole soft head `Backend::soft_head` and its unfused default (ms per call, and their
/// ratio per repeat). Taking turns keeps other bytes between two reads of one matrix, as in decode
/// (a loop over one matrix finds part of it in L3). For a tied model both products read E.
fn head_products_bench<B: Backend>(be: &B, a: &BenchArgs) -> Result<()> {
    let (dir, md) = model_dir(a)?;
    let model = md.load(be)?;
    let (b, v, d) = (a.batch(), model.cfg.vocab_size, model.cfg.d());
    let x = be.upload(&random_vec(b * d, a.seed))?;
    // p: [B, V] positive, each row summing to 1 (the mixture's numerics do not depend on them).
    let p = be.upload(&vec![1.0 / v as f32; b * v])?;
    // logits, scratch: [B, V]; mix: [B, d]; ids: [B]
    let (mut logits, mut scratch, mut mix) = (be.zeros(b * v)?, be.zeros(b * v)?, be.zeros(b * d)?);
    let mut ids = be.ids_zeros(b)?;
    let (head, e) = (model.lm_head(), model.embed());
    let gb = (v * d * 4) as f64 / 1e9;
    let tau = ThinkConfig::new(ThinkMode::Soft).tau;
    // One round: lm_head GB/s, mixture GB/s, soft_head ms, soft_head_unfused ms over 10 calls each.
    let mut round = || -> Result<[f64; 4]> {
        let mut secs = [0f64; 4];
        for _ in 0..10 {
            secs[0] += timed(be, || be.gemm(&mut logits, &x, head, Gemm::linear(b, v, d)))?.1;
            secs[1] += timed(be, || be.gemm(&mut mix, &p, e, Gemm::nn(b, d, v)))?.1;
            let args = (&mut logits, &mut ids, &mut mix, &mut scratch);
            secs[2] += timed(be, || {
                be.soft_head(args.0, args.1, args.2, args.3, &x, head, e, b, v, d, tau)
            })?
            .1;
            let args = (&mut logits, &mut ids, &mut mix, &mut scratch);
            secs[3] += timed(be, || {
                soft_head_unfused(be, args.0, args.1, args.2, args.3, &x, head, e, b, v, d, tau)
            })?
            .1;
        }
        Ok([10.0 * gb / secs[0], 10.0 * gb / secs[1], 1e2 * secs[2], 1e2 * secs[3]])
    };
    let progress = runs(a.repeats + 1);
    let rates: Vec<[f64; 4]> = (0..=a.repeats)
        .map(|_| round().inspect(|_| progress.inc(1)))
        .collect::<Result<_>>()?;
    progress.finish();
    // The first round warmed up.
    let rates = &rates[1..];
    let [head_gbs, mix_gbs, fused_ms, unfused_ms] = [0, 1, 2, 3].map(|i| spread(rates.iter().map(|r| r[i]).collect()));
    let ratio = spread(rates.iter().map(|r| r[2] / r[3]).collect());
    match a.format {
        Format::Json => println!(
            "{}",
            json!({"workload": "head-products", "backend": be.name(), "repeats": a.repeats,
                   "model": dir.display().to_string(), "batch": b, "vocab": v, "d": d,
                   "tied": std::ptr::eq(head, e),
                   "lm_head_gb_per_s": {"median": head_gbs[0], "min": head_gbs[1], "max": head_gbs[2]},
                   "mixture_gb_per_s": {"median": mix_gbs[0], "min": mix_gbs[1], "max": mix_gbs[2]},
                   "soft_head_ms": {"median": fused_ms[0], "min": fused_ms[1], "max": fused_ms[2]},
                   "soft_head_unfused_ms": {"median": unfused_ms[0], "min": unfused_ms[1], "max": unfused_ms[2]},
                   "soft_head_over_unfused": {"median": ratio[0], "min": ratio[1], "max": ratio[2]}})
        ),
        Format::Text => {
            let ms = |r: f64| 1e3 * gb / r;
            println!(
                "head-products: {b} rows, [{v}, {d}], {} (medians of {} repeats) on {}",
                if std::ptr::eq(head, e) { "tied" } else { "untied" },
                a.repeats,
                be.name()
            );
            for (what, r) in [("lm_head x @ W^T ", head_gbs), ("mixture p @ E   ", mix_gbs)] {
                println!(
                    "  {what} {:.1} GB/s ({:.2} ms; min {:.1}, max {:.1})",
                    r[0],
                    ms(r[0]),
                    r[1],
                    r[2]
                );
            }
            for (what, t) in [("soft_head       ", fused_ms), ("  unfused       ", unfused_ms)] {
                println!("  {what} {:.2} ms (min {:.2}, max {:.2})", t[0], t[1], t[2]);
            }
            println!(
                "  soft_head / unfused {:.3} (min {:.3}, max {:.3}, per repeat)",
                ratio[0], ratio[1], ratio[2]
            );
        }
    }
    Ok(())
}

/// Peak resident memory of this process (Linux; 0 where /proc is absent).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

fn random_id(seed: u64, b: usize, i: usize, v: usize) -> u32 {
    let w = philox::philox4x32_10([i as u32, 0, b as u32, 7], philox::key_of(seed));
    ((w[0] as u64 * v as u64) >> 32) as u32
}

fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| philox::noise_at(seed, 99, 0, i as u32)).collect()
}
