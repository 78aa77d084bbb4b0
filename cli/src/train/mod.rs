//! `softcot train`: RL of thinking (hard, soft or fuzzy) with RLOO on a model and a dataset, or,
//! with neither given, the whole method on the built-in task (see `builtin`). Runs are resumable
//! (`--resume`), Ctrl-C leaves a checkpoint, and `--replay` re-performs one saved update.

mod builtin;
pub mod config;
mod ranks;
mod replay;
mod rl_loop;
mod task;

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args};
use serde_json::json;
use softcot_core::dist::Collective;
use softcot_core::io::checkpoint::{export_model, list_checkpoints};
use softcot_core::io::save::save_json;
use softcot_core::io::ModelDir;
use softcot_core::rollout::Task;
use softcot_core::{Backend, Error, Result, Train};

use crate::args::{BackendKind, ComputeDtype};
use crate::dataset;
use crate::metrics_plot::{draw_run, RL_PANELS};
use crate::run_dir::{
    catch_interrupt, prepare_out, refuse_settings_on_resume, save_settings, saved_settings, start, Start,
};
use crate::with_train_backend;
pub use config::TrainConfig;
use rl_loop::{check_room, items, Trainer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub cfg: TrainConfig,
    /// TOML file with any of the settings above (flags given on the command line override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint (settings from its run.json).
    #[arg(long, conflicts_with_all = ["config", "model", "data", "out", "overwrite", "replay"])]
    pub resume: Option<PathBuf>,
    /// Perform the update of a saved rollout file (OUT/rollouts/step-N.safetensors) on --model; a
    /// checkpoint folder there restores the optimizer state, reproducing the step exactly.
    #[arg(long, requires = "model")]
    pub replay: Option<PathBuf>,
    /// Replace a different run found in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// End this invocation after this many more steps, leaving a resumable checkpoint.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Built-in task only: train hard, soft and fuzzy from the same warm start; print one table.
    #[arg(long)]
    pub compare: bool,
    /// Built-in task only: skip the evaluation of the six decodings at the end.
    #[arg(long)]
    pub no_eval: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Train data-parallel on these devices, one rank each, with the optimizer state sharded
    /// (ZeRO-1): GPU ordinals with --backend cuda (`0,1,2,3`, one thread per GPU, NCCL between
    /// them); with --backend cpu, thread ranks on the CPU (the multi-rank path without GPUs).
    /// Under torchrun or SLURM the environment names the ranks instead (docs/CLUSTER.md).
    /// `--device N` is `--devices N`: one rank, on GPU N.
    #[arg(long, alias = "device", value_delimiter = ',', value_name = "LIST")]
    pub devices: Vec<usize>,
    /// Compute precision: bf16 (--backend cuda's default: bf16 weights and matmul operands, f32
    /// accumulation) or f32 (the only one of cpu and wgpu).
    #[arg(long, value_enum)]
    pub dtype: Option<ComputeDtype>,
}

impl TrainArgs {
    /// The device of a one-rank run (`--device N`, or the one entry of `--devices`; else 0).
    fn device(&self) -> usize {
        self.devices.first().copied().unwrap_or(0)
    }
}

/// Files and folders of a run, besides run.json, metrics.jsonl and checkpoints.
const OUTPUTS: &[&str] = &["best", "best.json", "final", "metrics.png", "rollouts"];

pub fn run(a: TrainArgs, matches: &ArgMatches) -> Result<()> {
    a.backend.require_training("train")?;
    crate::args::precision(a.backend, a.dtype)?;
    catch_interrupt();
    if let Some(dir) = &a.resume {
        refuse_settings_on_resume::<TrainArgs>(matches, dir)?;
        let mut c: TrainConfig = saved_settings(dir, "train")?;
        c.out = dir.clone();
        c.validate()?;
        if let Some((_, ck)) = list_checkpoints(dir).pop() {
            refuse_unless_fits(a.backend, &a.devices, a.dtype, &c, &ck)?;
        }
        return ranks::train_on(a.backend, &a.devices, a.dtype, &c, true, a.stop_after);
    }
    let c = config::resolve(&a.cfg, matches, a.config.as_deref(), |builtin| {
        if builtin {
            builtin::defaults()
        } else {
            TrainConfig::default()
        }
    })?;
    if let Some(file) = &a.replay {
        c.validate_update()?;
        return with_train_backend!(a.backend, a.device(), a.dtype, "train", |be| replay::run(&be, &c, file));
    }
    c.validate()?;
    if c.is_builtin() {
        if a.devices.len() > 1 {
            return Err(Error::invalid(
                "--devices: the built-in task trains on one rank (give --model and --data for several)",
            ));
        }
        return builtin::run(&c, &a);
    }
    if a.compare {
        return Err(Error::invalid(
            "--compare runs on the built-in task only (give neither --model nor --data)",
        ));
    }
    if is_root_process()? {
        prepare_out(&c.out, a.overwrite, OUTPUTS)?;
    }
    if let Some(model) = &c.model {
        refuse_unless_fits(a.backend, &a.devices, a.dtype, &c, model)?;
    }
    ranks::train_on(a.backend, &a.devices, a.dtype, &c, false, a.stop_after)
}

/// Whether this process is rank 0 of its launch (or the only process): the one that prepares
/// the output folder.
fn is_root_process() -> Result<bool> {
    let launch = softcot_core::dist::Launch::from_env(|k| std::env::var(k).ok())?;
    Ok(launch.is_none_or(|l| l.rank.is_root()))
}

/// On CUDA, refuses a run whose memory plan exceeds the GPU's free memory, with the plan's
/// numbers, before the model is loaded (an 8B model would otherwise fail deep inside an
/// allocation, or after its first rollouts).
/// With `--devices`, the plan is a rank's (its share of the step, ZeRO-1 shards) on the first
/// device listed. A torchrun/SLURM process checks nothing here yet.
fn refuse_unless_fits(
    backend: BackendKind,
    devices: &[usize],
    dtype: Option<ComputeDtype>,
    c: &TrainConfig,
    model: &Path,
) -> Result<()> {
    if backend != BackendKind::Cuda || !is_root_process()? {
        return Ok(());
    }
    let bf16 = crate::args::precision(backend, dtype)? == softcot_cuda::Precision::Bf16;
    let be = softcot_cuda::CudaBackend::new(devices.first().copied().unwrap_or(0))?;
    match be.memory()? {
        Some((free, _)) => crate::plan::check_run(c, model, free as u64, &be.name(), devices.len().max(1), bf16),
        None => Ok(()),
    }
}

/// Tokens of the longest prompt of the run's training and validation problems (after the
/// template, less those left out for want of room): what the activations and KV caches hold.
pub fn longest_prompt(c: &TrainConfig, md: &ModelDir) -> Result<usize> {
    let (train, val, _) = split_problems(c, md)?;
    Ok(train.iter().chain(&val).map(|t| t.prompt.len()).max().unwrap_or(0))
}

/// Trains `c` into `c.out` (a fresh, prepared folder, or one to resume) as the rank of `comm`;
/// rank 0 writes the files.
pub fn train<B: Train>(
    be: &B,
    c: &TrainConfig,
    resume: bool,
    stop_after: Option<u64>,
    comm: Box<dyn Collective<B>>,
) -> Result<()> {
    let out = &c.out;
    let root = comm.rank().is_root();
    if !resume && root {
        save_settings(out, c)?;
    }
    let Start {
        md,
        mut model,
        opt,
        step: from,
        state,
    } = start(be, out, resume, root, c.model.as_deref(), c.adamw())?;
    let best = state["best_val_acc"].as_f64().zip(state["best_step"].as_u64());
    let (train_items, val_items) = splits(c, &md)?;
    let total = c.steps;
    let end = stop_after.map_or(total, |k| (from + k).min(total));
    let mut t = Trainer {
        be,
        c,
        out: out.clone(),
        tok: &md.tokenizer,
        // Checkpoints carry the tokenizer and generation config of the model the run started from.
        save_as: c.save_as(&md)?,
        best,
    };
    let reached = t.run(&mut model, opt, comm, &train_items, &val_items, from, end, total)?;
    if !root {
        return Ok(());
    }
    draw_run(out, RL_PANELS)?;
    if reached == total {
        export_model(be, &model, &out.join("final"), &t.save_as)?;
        eprintln!("done: {total} steps; final model in {}", out.join("final").display());
        if let Some((acc, step)) = t.best {
            eprintln!(
                "best validation accuracy {acc:.3} at step {step}: {}",
                out.join("best").display()
            );
        }
    } else {
        eprintln!(
            "stopped after step {reached} of {total}; continue with: softcot train --resume {}",
            out.display()
        );
        if reached < end {
            return Err(Error::invalid("interrupted (a resumable checkpoint was saved)"));
        }
    }
    Ok(())
}

/// The training and validation problems: --val-data, or the last --val-size problems of --data
/// held out (at most a quarter of them); prints what was left out.
fn splits(c: &TrainConfig, md: &ModelDir) -> Result<(Vec<Task>, Vec<Task>)> {
    let (train, val, warnings) = split_problems(c, md)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok((train, val))
}

/// [`splits`], returning its warnings instead of printing them (the memory plan reads the
/// prompts before the run, which prints them).
fn split_problems(c: &TrainConfig, md: &ModelDir) -> Result<(Vec<Task>, Vec<Task>, Vec<String>)> {
    let context = md.config.max_position_embeddings;
    check_room(c, &md.tokenizer, context, 1)?;
    let data = c.data.as_deref().unwrap_or(Path::new(""));
    let mut warnings = Vec::new();
    let mut load = |p: &Path| -> Result<Vec<dataset::Problem>> {
        let (problems, skipped) = dataset::load(p, 0)?;
        warnings.extend(skipped.report(p));
        Ok(problems)
    };
    let mut train = load(data)?;
    let val = match &c.val_data {
        Some(p) => {
            let mut v = load(p)?;
            v.truncate(c.val_size);
            v
        }
        None => {
            let k = c.val_size.min(train.len() / 4);
            train.split_off(train.len() - k)
        }
    };
    let (train, long) = items(&train, &md.tokenizer, c, context)?;
    let (val, long_val) = items(&val, &md.tokenizer, c, context)?;
    if long + long_val > 0 {
        warnings.push(format!(
            "left out {} problem(s) whose prompt leaves no room for {} thinking and {} answer tokens in the context of {context}",
            long + long_val,
            c.think_tokens,
            c.answer_tokens
        ));
    }
    if train.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no usable training problems",
            data.display()
        )));
    }
    if val.is_empty() {
        warnings.push("no validation split (too few problems); the best model is not tracked".into());
    }
    Ok((train, val, warnings))
}

pub fn save_best(out: &Path, acc: f64, step: u64) -> Result<()> {
    save_json(&out.join("best.json"), &json!({"val_acc": acc, "step": step}))
}
