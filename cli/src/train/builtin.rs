//! `softcot train` with neither a model nor data: the whole method on a laptop CPU with no
//! download. A synthetic arithmetic task (train / validation / test splits in GSM8K's format), a
//! small Llama with softcot's byte tokenizer, a short supervised warm start on worked solutions
//! that end in the stop phrase and a boxed answer, RL in the chosen mode (or all three with
//! `--compare`), then the six decodings evaluated on the held-out test split.
//!
//! The warm start's solutions carry a habit: 60% of them write the answer negated (a sign slip).
//! A small model learns the majority of a noisy supervised set and little else, so a warm start
//! that is merely weak at arithmetic is confidently wrong, and its samples rarely find what its
//! greedy answer misses (RL then gained 2-5 points: docs/TRAINING.md). A habit on one token is
//! learnt with its rate: the warm start's greedy answers carry it, 4 in 10 of its samples do not,
//! and RL has right answers to find and reinforce, in every mode alike (the answer is sampled hard
//! in all three).
//!
//! Layout of OUT: task/ (the data), base/ (the random model), warmstart/ (the SFT run; its model in
//! warmstart/final), rl-MODE/ (each RL run), compare.png (with `--compare`: the runs' curves
//! overlaid), eval.md and eval.json (the table).

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::json;
use softcot_core::dist::Solo;
use softcot_core::io::byte_tokenizer;
use softcot_core::io::fsutil::{read_json, write_atomic};
use softcot_core::io::save::{save_json, write_random_model};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::io::ModelDir;
use softcot_core::model::init::preset;
use softcot_core::model::ModelConfig;
use softcot_core::Backend;
use softcot_core::{Error, Result};

use super::rl_loop::check_room;
use super::task::{generate, sign_slips, slipped, write_jsonl};
use super::{train, TrainArgs, TrainConfig, OUTPUTS};
use crate::args::{parse_noise_at, Think};
use crate::dataset::{self, render};
use crate::eval::profile::write_entropy_png;
use crate::eval::report::markdown;
use crate::eval::{evaluate, EvalReport, EvalSettings};
use crate::metrics_plot::{draw_compare, RL_PANELS};
use crate::run_dir::prepare_out;
use crate::sft::{self, SftConfig};
use crate::{with_backend, with_train_backend};

/// Sizes of the task: problems per split and the largest operand.
const TRAIN: usize = 4000;
const VAL: usize = 500;
const TEST: usize = 500;
const MAX_OPERAND: i64 = 9;
/// Supervised warm-start steps (batch of 32): the format and about 40% held-out greedy accuracy.
/// With 300 steps (about 15%) RL rollouts were right too rarely for 120 steps of RL to gain
/// reliably in every mode (docs/TRAINING.md).
const SFT_STEPS: u64 = 800;
/// Share of the warm start's solutions whose answer is written negated: a habit more often there
/// than not, so the warm start's greedy answers carry it while its samples often do not (its
/// pass@8 far above its pass@1, as real models' are), and RL has right answers to find.
const SIGN_SLIP_RATE: f64 = 0.6;
/// Samples per test problem of the sample decodings (pass@1 and pass@8).
const EVAL_SAMPLES: usize = 8;

/// The RL settings of the built-in task (the paper's method, sized for a small model on a CPU).
pub fn defaults() -> TrainConfig {
    TrainConfig {
        steps: 120,
        prompts_per_step: 8,
        samples_per_prompt: 8,
        think_tokens: 48,
        answer_tokens: 6,
        template: "Q: {question}\nA:".into(),
        lr: 3e-5,
        warmup: 10,
        val_every: 30,
        val_size: VAL,
        save_every: 60,
        ..TrainConfig::default()
    }
}

/// The model: a 4-layer Llama over bytes, about 0.8M parameters.
fn model_config() -> Result<ModelConfig> {
    let mut c = preset("tiny").ok_or_else(|| Error::invalid("the `tiny` preset is missing"))?;
    c.hidden_size = 128;
    c.intermediate_size = 352;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 32;
    c.max_position_embeddings = 256;
    c.bos_token_id = Some(byte_tokenizer::BOS_ID);
    c.eos_token_ids = vec![byte_tokenizer::EOS_ID];
    Ok(c)
}

#[derive(clap::Parser)]
struct SftFlags {
    #[command(flatten)]
    c: SftConfig,
}

/// What the task and warm start were made from; a folder made from the same is reused.
fn recipe(c: &TrainConfig) -> serde_json::Value {
    json!({"train": TRAIN, "val": VAL, "test": TEST, "max_operand": MAX_OPERAND, "sft_steps": SFT_STEPS,
           "template": c.template, "seed": c.seed, "sign_slip_rate": SIGN_SLIP_RATE, "version": 3})
}

pub fn run(c: &TrainConfig, a: &TrainArgs) -> Result<()> {
    let out = c.out.clone();
    let t0 = std::time::Instant::now();
    let warm = warm_start(c, &out, a)?;
    let modes: Vec<Think> = if a.compare {
        vec![Think::Hard, Think::Soft, Think::Fuzzy]
    } else {
        vec![c.think]
    };
    let mut runs = Vec::new();
    let mut curves = Vec::new();
    for mode in modes {
        let rc = TrainConfig {
            model: Some(warm.clone()),
            data: Some(out.join("task/train.jsonl")),
            val_data: Some(out.join("task/val.jsonl")),
            out: out.join(format!("rl-{}", mode.name())),
            think: mode,
            ..c.clone()
        };
        prepare_out(&rc.out, a.overwrite, OUTPUTS)?;
        eprintln!("RL with {} thinking into {}", mode.name(), rc.out.display());
        with_train_backend!(a.backend, a.device(), a.dtype, "train", |be| train(
            &be,
            &rc,
            false,
            a.stop_after,
            Box::new(Solo)
        ))?;
        runs.push((format!("RL {}", mode.name()), rc.out.join("best")));
        if a.compare {
            // Redrawn after each mode, so the modes done so far can be compared at once.
            curves.push((mode.name().to_string(), rc.out.clone()));
            draw_compare(&out.join("compare.png"), &curves, RL_PANELS)?;
        }
    }
    if !a.no_eval {
        let mut models = vec![("warm start".to_string(), warm)];
        models.extend(runs);
        with_backend!(a.backend, a.device(), a.dtype, |be| evaluate_all(&be, c, &out, &models))?;
    }
    eprintln!(
        "built-in task done in {:.0} s; everything is in {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The six decodings of each model on the held-out test split: OUT/eval.md and OUT/eval.json.
fn evaluate_all<B: Backend>(be: &B, c: &TrainConfig, out: &Path, models: &[(String, PathBuf)]) -> Result<()> {
    let test = out.join("task/test.jsonl");
    let (problems, _) = dataset::load(&test, 0)?;
    let s = EvalSettings {
        samples: EVAL_SAMPLES,
        ks: vec![1, EVAL_SAMPLES],
        think_tokens: c.think_tokens,
        answer_tokens: c.answer_tokens,
        template: c.template.clone(),
        noise: c.noise_scale.with_gamma(c.noise_gamma),
        noise_at: parse_noise_at(&c.noise_at)?,
        seed: c.seed,
        ..EvalSettings::default()
    };
    let mut reports = Vec::new();
    for (label, dir) in models {
        let md = ModelDir::open(dir)?;
        eprintln!("evaluating {label} ({}) on {}", dir.display(), test.display());
        reports.push((
            label.as_str(),
            evaluate(be, &md.load(be)?, &md.tokenizer, &problems, &s)?,
        ));
    }
    let rows: Vec<(&str, &str, &EvalReport)> = reports.iter().map(|(l, r)| (*l, "arith test", r)).collect();
    let table = markdown(&rows);
    let json: Vec<_> = reports
        .iter()
        .map(|(l, r)| json!({"label": l, "decodings": r.decodings}))
        .collect();
    write_atomic(&out.join("eval.md"), table.as_bytes())?;
    write_entropy_png(
        &out.join("entropy.png"),
        &reports.iter().map(|(l, r)| (*l, r)).collect::<Vec<_>>(),
    )?;
    save_json(
        &out.join("eval.json"),
        &json!({"settings": s.to_json(), "models": json}),
    )?;
    println!("{table}");
    eprintln!(
        "wrote {}, {} and {}",
        out.join("eval.md").display(),
        out.join("eval.json").display(),
        out.join("entropy.png").display()
    );
    Ok(())
}

/// The task data and the supervised warm start (reused when OUT holds the same recipe).
/// Returns the warm-start model folder.
fn warm_start(c: &TrainConfig, out: &Path, a: &TrainArgs) -> Result<PathBuf> {
    let task = out.join("task");
    let final_dir = out.join("warmstart/final");
    let recipe_path = task.join("recipe.json");
    if final_dir.join("config.json").is_file() && read_json(&recipe_path).ok() == Some(recipe(c)) {
        eprintln!("reusing the task and warm start in {}", out.display());
        return Ok(final_dir);
    }
    std::fs::create_dir_all(&task).map_err(|e| Error::io(format!("{}: cannot create: {e}", task.display())))?;
    let all = generate(TRAIN + VAL + TEST, MAX_OPERAND, c.seed);
    let (train_p, rest) = all.split_at(TRAIN);
    let (val_p, test_p) = rest.split_at(VAL);
    write_jsonl(&task.join("train.jsonl"), train_p)?;
    write_jsonl(&task.join("val.jsonl"), val_p)?;
    write_jsonl(&task.join("test.jsonl"), test_p)?;
    // The warm start sees the prompts exactly as RL renders them.
    let slips = sign_slips(train_p.len(), SIGN_SLIP_RATE, c.seed);
    let sft_lines: String = train_p
        .iter()
        .zip(&slips)
        .filter_map(|(p, &slip)| {
            let answer = if slip { slipped(&p.answer) } else { p.answer.clone() };
            let completion = sft::gsm8k_completion(&answer)?;
            Some(format!(
                "{}\n",
                json!({"prompt": render(&c.template, &p.question), "completion": completion})
            ))
        })
        .collect();
    write_atomic(&task.join("warmstart.jsonl"), sft_lines.as_bytes())?;

    let base = out.join("base");
    let cfg = model_config()?;
    let n = write_random_model(&base, &cfg, c.seed, None, c.max_shard_size)?;
    // A budget RL cannot run with is refused before the warm start's minutes, not after them.
    let tok = Tokenizer::load_dir(&base, &cfg.eos_token_ids)?;
    let mut longest = 0;
    for p in train_p.iter().chain(val_p) {
        longest = longest.max(dataset::prompt_ids(&tok, &c.template, c.chat, &p.question)?.len());
    }
    check_room(c, &tok, cfg.max_position_embeddings, longest)?;
    eprintln!(
        "task: {TRAIN} / {VAL} / {TEST} problems in {}; model: {:.2}M parameters in {}",
        task.display(),
        n as f64 / 1e6,
        base.display()
    );
    // The sft command's own settings, as its flags would give them: only what differs is named.
    let (base, data, warm) = (
        base.display().to_string(),
        task.join("warmstart.jsonl").display().to_string(),
        out.join("warmstart").display().to_string(),
    );
    let (steps, seed) = (SFT_STEPS.to_string(), c.seed.to_string());
    #[rustfmt::skip]
    let flags = [
        "sft", "--model", &base, "--data", &data, "--out", &warm, "--overwrite",
        "--batch-size", "32", "--seq-len", "96", "--lr", "2e-3", "--min-lr", "2e-4",
        "--steps", &steps, "--save-every", &steps, "--keep", "1", "--on-long", "refuse", "--seed", &seed,
    ];
    let mut s = SftFlags::try_parse_from(flags)
        .map_err(|e| Error::invalid(format!("built-in warm start: {e}")))?
        .c;
    s.backend = a.backend;
    s.device = a.device();
    sft::run(s)?;
    save_json(&recipe_path, &recipe(c))?;
    Ok(final_dir)
}
