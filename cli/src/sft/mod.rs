//! `softcot sft`: supervised fine-tuning (the warm start before RL), with atomic checkpoints and
//! exact resume: an interrupted run resumed with `--resume` ends with the same weights, bit for
//! bit, as an uninterrupted one (CPU backend).

pub mod data;

use std::path::PathBuf;
use std::time::Instant;

use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};
use serde_json::json;
use softcot_core::io::checkpoint::{checkpoint_name, export_model, save_checkpoint, SaveAs};
use softcot_core::model::Model;
use softcot_core::optim::AdamW;
use softcot_core::sft::Step;
use softcot_core::{Error, Result, Train};

use crate::args::{BackendKind, ComputeDtype, MAX_ROWS};
use crate::metrics_plot::{draw_run, SFT_PANELS};
use crate::run_dir::{
    prepare_out, prune_checkpoints, refuse_settings_on_resume, save_settings, saved_settings, start, Metrics, Shuffle,
    Start,
};
use crate::{config_file, training_settings, with_train_backend};
pub use data::{gsm8k_completion, OnBadLine, OnLong};
use data::{Example, LoadOptions};

training_settings! {
lr = 1e-5;
/// The settings of a run (the flags, and the keys of a --config file); written to OUT/run.json
/// and read back by `--resume`.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// HF model folder to start from.
    #[arg(long, required_unless_present_any = ["resume", "config"])]
    pub model: Option<PathBuf>,
    /// JSONL: `{"prompt", "completion"}` lines, or GSM8K's `{"question", "answer"}`.
    #[arg(long, required_unless_present_any = ["resume", "config"])]
    pub data: Option<PathBuf>,
    /// Output folder: checkpoints, metrics.jsonl, tb/, metrics.png, run.json, and `final/` (the model).
    #[arg(long, required_unless_present_any = ["resume", "config"])]
    pub out: Option<PathBuf>,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Sequences per forward/backward (gradients accumulate over micro-batches); 0 = the batch.
    #[arg(long, default_value_t = 0)]
    pub micro_batch: usize,
    /// Longest sequence (prompt + completion + EOS), in tokens.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Optimizer steps (default: one epoch, or --epochs).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Wrap prompts in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, value_enum, default_value = "stop")]
    pub on_bad_line: OnBadLine,
    #[arg(long, value_enum, default_value = "truncate")]
    pub on_long: OnLong,
    /// TOML file with any of the settings above (flags given on the command line override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Resume the run in this folder from its latest checkpoint (settings come from its run.json).
    #[arg(long, conflicts_with_all = ["config", "model", "data", "out", "overwrite"])]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Replace a different run found in --out.
    #[arg(long)]
    #[serde(skip)]
    pub overwrite: bool,
    /// End this invocation after this many more steps, leaving a resumable checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub stop_after: Option<u64>,
    #[arg(long, value_enum, default_value = "cpu")]
    #[serde(skip, default = "cpu")]
    pub backend: BackendKind,
    /// The GPU to run on with --backend cuda, as `softcot devices` numbers them.
    #[arg(long, default_value_t = 0)]
    #[serde(skip)]
    pub device: usize,
    /// Compute precision: bf16 (--backend cuda's default: bf16 weights and matmul operands, f32
    /// accumulation) or f32 (the only one of cpu and wgpu).
    #[arg(long, value_enum)]
    #[serde(skip)]
    pub dtype: Option<ComputeDtype>,
}
}

fn cpu() -> BackendKind {
    BackendKind::Cpu
}

impl Default for SftConfig {
    /// The flags' defaults: one source of truth for every layer.
    fn default() -> Self {
        config_file::flag_defaults()
    }
}

/// The `sft` command: `run`, after refusing settings given beside `--resume`, with the settings
/// of a `--config` file under the flags.
pub fn run_command(a: SftConfig, matches: &ArgMatches) -> Result<()> {
    if let Some(dir) = &a.resume {
        refuse_settings_on_resume::<SftConfig>(matches, dir)?;
        return run(a);
    }
    let mut c = config_file::resolve(&a, matches, a.config.as_deref(), |_| SftConfig::default())?;
    // Not settings of the run (skipped by serde): as given on the command line.
    (c.overwrite, c.stop_after, c.backend, c.dtype) = (a.overwrite, a.stop_after, a.backend, a.dtype);
    run(c)
}

pub fn run(mut a: SftConfig) -> Result<()> {
    a.backend.require_training("sft")?;
    crate::args::precision(a.backend, a.dtype)?;
    if let Some(dir) = a.resume.clone() {
        let saved: SftConfig = saved_settings(&dir, "sft")?;
        a = SftConfig {
            resume: Some(dir.clone()),
            stop_after: a.stop_after,
            backend: a.backend,
            device: a.device,
            dtype: a.dtype,
            out: Some(dir),
            ..saved
        };
    }
    validate(&a)?;
    with_train_backend!(a.backend, a.device, a.dtype, "sft", |be| train(&be, &a))
}

fn validate(a: &SftConfig) -> Result<()> {
    for (flag, v) in [("--model", &a.model), ("--data", &a.data), ("--out", &a.out)] {
        if v.is_none() {
            return Err(Error::invalid(format!(
                "{flag} is required (on the command line or as a key of the --config file)"
            )));
        }
    }
    let pos = [
        ("--batch-size", a.batch_size),
        ("--seq-len", a.seq_len),
        ("--save-every", a.save_every as usize),
        ("--keep", a.keep),
    ];
    for (flag, v) in pos {
        if v == 0 {
            return Err(Error::invalid(format!("{flag} must be positive")));
        }
    }
    if a.batch_size > MAX_ROWS {
        return Err(Error::invalid(format!("--batch-size cannot exceed {MAX_ROWS}")));
    }
    if a.micro_batch > a.batch_size {
        return Err(Error::invalid("--micro-batch cannot exceed --batch-size"));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(Error::invalid("--lr must be a positive number"));
    }
    if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) {
        return Err(Error::invalid("--beta1 and --beta2 must be in [0, 1)"));
    }
    Ok(())
}

struct Run<'a, B: Train> {
    be: &'a B,
    a: &'a SftConfig,
    out: PathBuf,
    save_as: SaveAs,
    /// Tokens read by the steps before this invocation (from the checkpoint resumed).
    tokens_before: usize,
}

fn train<B: Train>(be: &B, a: &SftConfig) -> Result<()> {
    let out = a.out.clone().ok_or_else(|| Error::invalid("--out is required"))?;
    let resume = a.resume.is_some();
    if !resume {
        prepare_out(&out, a.overwrite, &["final", "metrics.png"])?;
        if a.model.is_none() {
            return Err(Error::invalid("--model is required"));
        }
    }
    let Start {
        md,
        mut model,
        mut opt,
        step: start_step,
        state,
        ..
    } = start(be, &out, resume, true, a.model.as_deref(), a.adamw())?;
    if !resume {
        save_settings(&out, a)?;
    }
    let context = md.config.max_position_embeddings;
    if a.seq_len > context {
        return Err(Error::invalid(format!(
            "--seq-len {} exceeds the model's context of {context} positions ({})",
            a.seq_len,
            md.path.join("config.json").display()
        )));
    }
    let data_path = a.data.as_ref().ok_or_else(|| Error::invalid("--data is required"))?;
    let lo = LoadOptions {
        seq_len: a.seq_len,
        chat: a.chat,
        on_bad_line: a.on_bad_line,
        on_long: a.on_long,
        vocab: model.cfg.vocab_size,
    };
    let (examples, stats) = data::load(data_path, &md.tokenizer, &lo)?;
    if stats.skipped > 0 {
        eprintln!(
            "warning: {}: skipped {} unusable lines",
            data_path.display(),
            stats.skipped
        );
    }
    if stats.truncated > 0 {
        eprintln!(
            "warning: {}: truncated {} examples to --seq-len {}",
            data_path.display(),
            stats.truncated,
            a.seq_len
        );
    }
    if stats.long_prompts > 0 {
        eprintln!(
            "warning: {}: left out {} examples whose prompt alone fills --seq-len {}",
            data_path.display(),
            stats.long_prompts,
            a.seq_len
        );
    }
    let steps_per_epoch = examples.len().div_ceil(a.batch_size) as u64;
    let total = a.steps.unwrap_or(a.epochs.unwrap_or(1) * steps_per_epoch);
    let run = Run {
        be,
        a,
        out: out.clone(),
        save_as: a.save_as(&md)?,
        tokens_before: state["tokens"].as_u64().unwrap_or(0) as usize,
    };
    let end = a.stop_after.map_or(total, |k| (start_step + k).min(total));
    run.steps(&mut model, &mut opt, &examples, start_step, end, total)?;
    if end == total {
        export_model(be, &model, &out.join("final"), &run.save_as)?;
        eprintln!("done: {total} steps; model in {}", out.join("final").display());
    } else {
        eprintln!(
            "stopped after step {end} of {total}; continue with: softcot sft --resume {}",
            out.display()
        );
    }
    Ok(())
}

impl<B: Train> Run<'_, B> {
    fn steps(
        &self,
        model: &mut Model<B>,
        opt: &mut AdamW<B>,
        ex: &[Example],
        from: u64,
        to: u64,
        total: u64,
    ) -> Result<()> {
        let (be, a) = (self.be, self.a);
        let mb = if a.micro_batch == 0 {
            a.batch_size
        } else {
            a.micro_batch
        };
        let mut sft = Step::new(be, model, mb, a.seq_len, a.recompute, a.max_grad_norm)?;
        let mut metrics = Metrics::open(&self.out, from + 1)?;
        let bar = crate::progress::Progress::new(to - from, "sft", "step");
        let t0 = Instant::now();
        let mut shuffle = Shuffle::new(a.seed, ex.len());
        let (mut tokens, mut bad) = (self.tokens_before, 0u64);
        let mut step = from;
        while step < to {
            let ts = Instant::now();
            let batch: Vec<&Example> = (0..a.batch_size as u64)
                .map(|j| &ex[shuffle.index(step * a.batch_size as u64 + j)])
                .collect();
            let lr = a.lr_at(step, total);
            let (u, read) = sft.update(be, model, opt, &batch, lr)?;
            tokens += read;
            let (loss, norm) = (u.loss, u.grad_norm);
            if !u.applied {
                bad += 1;
                eprintln!(
                    "warning: step {}: non-finite loss ({loss}) or gradient norm ({norm}); update refused",
                    step + 1
                );
                if bad >= a.max_bad_steps {
                    return Err(Error::invalid(format!(
                        "{bad} steps refused for non-finite values; stopping (the last good checkpoint is kept; try a lower --lr)"
                    )));
                }
            }
            step += 1;
            let elapsed = t0.elapsed().as_secs_f64();
            let line = json!({"step": step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens": tokens,
                              "tokens_per_s": (tokens - self.tokens_before) as f64 / elapsed,
                              "step_s": ts.elapsed().as_secs_f64()});
            metrics.log(&line)?;
            bar.set_message(format!(
                "loss {loss:.4}  lr {lr:.2e}  {:.0} tok/s",
                line["tokens_per_s"].as_f64().unwrap_or(0.0)
            ));
            bar.inc(1);
            if step.is_multiple_of(a.save_every) || step == to {
                self.checkpoint(model, opt, step, tokens)?;
                draw_run(&self.out, SFT_PANELS)?;
            }
        }
        bar.finish();
        Ok(())
    }

    /// Saves checkpoint `step`; `tokens` (read by steps 1..=step) carries the metric on across a resume.
    fn checkpoint(&self, model: &Model<B>, opt: &AdamW<B>, step: u64, tokens: usize) -> Result<()> {
        let state = json!({"step": step, "seed": self.a.seed, "batch_size": self.a.batch_size,
                           "examples_seen": step * self.a.batch_size as u64, "tokens": tokens});
        let dir = self.out.join(checkpoint_name(step));
        save_checkpoint(self.be, &dir, model, opt, &self.save_as, &state)?;
        prune_checkpoints(&self.out, self.a.keep);
        Ok(())
    }
}
