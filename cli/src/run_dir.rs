//! What a training run (`sft`, `train`) keeps in its output folder and how it walks its data:
//! the deterministic shuffle, the learning-rate schedule, the stored dtype, checkpoint pruning,
//! the metrics log, and the Ctrl-C flag that turns an interrupt into a resumable checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use softcot_core::dtype::DType;
use softcot_core::io::checkpoint::{list_checkpoints, load_checkpoint, load_fresh};
use softcot_core::io::fsutil::{clean_leftovers, read_json, remove_dir_atomic, write_atomic};
use softcot_core::io::ModelDir;
use softcot_core::model::Model;
use softcot_core::optim::{cosine_lr, AdamW, AdamwConfig};
use softcot_core::{philox, Error, Result, Train};

use crate::tensorboard::EventWriter;

/// The folder of a run's TensorBoard event files.
pub const TB_DIR: &str = "tb";

/// Declares the settings struct of a training command (`sft`, `train`: their flags and run.json)
/// with the settings every training run shares appended: the optimizer, the schedule, clipping
/// and checkpoints, written once here. `lr` is the command's default learning rate.
#[macro_export]
macro_rules! training_settings {
    (lr = $lr:expr; $(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Peak learning rate.
            #[arg(long, default_value_t = $lr)]
            pub lr: f64,
            /// Learning rate at the end of the cosine decay.
            #[arg(long, default_value_t = 0.0)]
            pub min_lr: f64,
            /// Warm-up steps (linear, from lr / warmup).
            #[arg(long, default_value_t = 20)]
            pub warmup: u64,
            #[arg(long, value_enum, default_value = "cosine")]
            pub schedule: $crate::run_dir::Schedule,
            /// AdamW's decoupled weight decay (norms and biases are not decayed).
            #[arg(long, default_value_t = 0.0)]
            pub weight_decay: f64,
            #[arg(long, default_value_t = 0.9)]
            pub beta1: f64,
            #[arg(long, default_value_t = 0.999)]
            pub beta2: f64,
            #[arg(long, default_value_t = 1e-8)]
            pub eps: f64,
            /// How AdamW stores its moments: bf16 (stochastic rounding) halves the optimizer state.
            #[arg(long, value_enum, default_value = "f32")]
            pub adam_moments: $crate::run_dir::AdamMoments,
            /// Clip the global gradient norm to this (0 disables).
            #[arg(long, default_value_t = 1.0)]
            pub max_grad_norm: f64,
            #[arg(long, default_value_t = 0)]
            pub seed: u64,
            /// Save a checkpoint every this many steps (and at the end).
            #[arg(long, default_value_t = 100)]
            pub save_every: u64,
            /// Checkpoints to keep.
            #[arg(long, default_value_t = 2)]
            pub keep: usize,
            #[arg(long, value_enum, default_value = "source")]
            pub save_dtype: $crate::run_dir::SaveDtype,
            /// Largest weight file of saved models, as transformers' max_shard_size: 5GB, 500MB,
            /// 2GiB or bytes; larger models are sharded with an index.
            #[arg(long, default_value = "5GB")]
            #[serde(default)]
            pub max_shard_size: softcot_core::io::save::ShardSize,
            /// Recompute activations per layer in backward (less memory, about 1.3x the compute).
            #[arg(long)]
            pub recompute: bool,
            /// Stop after this many refused steps (non-finite loss or gradient).
            #[arg(long, default_value_t = 5)]
            pub max_bad_steps: u64,
        }

        impl $name {
            /// The optimizer these settings ask for.
            pub fn adamw(&self) -> softcot_core::optim::AdamwConfig {
                softcot_core::optim::AdamwConfig {
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps: self.eps,
                    weight_decay: self.weight_decay,
                    decay_norms_and_biases: false,
                    moments: self.adam_moments.moments(),
                    seed: self.seed,
                }
            }

            /// How this run saves the model it loaded from `md` (checkpoints and final models).
            pub fn save_as(
                &self,
                md: &softcot_core::io::ModelDir,
            ) -> softcot_core::Result<softcot_core::io::checkpoint::SaveAs> {
                softcot_core::io::checkpoint::SaveAs::new(
                    self.save_dtype.resolve(md.config.dtype),
                    self.max_shard_size,
                    &md.path,
                )
            }

            /// The learning rate of optimizer step `step` (0-based) of `total`.
            pub fn lr_at(&self, step: u64, total: u64) -> f64 {
                self.schedule.lr(step, self.warmup, total, self.lr, self.min_lr)
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Schedule {
    /// Linear warm-up, then cosine decay to --min-lr.
    Cosine,
    /// Linear warm-up, then constant.
    Constant,
}

/// The storage of AdamW's moments, as flags and config files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdamMoments {
    /// float32 m and v (8 bytes per parameter).
    F32,
    /// bfloat16 m and v with stochastic rounding (4 bytes per parameter).
    Bf16,
}

impl AdamMoments {
    pub fn moments(self) -> softcot_core::backend::Moments {
        match self {
            AdamMoments::F32 => softcot_core::backend::Moments::F32,
            AdamMoments::Bf16 => softcot_core::backend::Moments::Bf16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum SaveDtype {
    /// The dtype of the model that was loaded.
    Source,
    Float32,
    Bfloat16,
    Float16,
}

/// Where one optimizer step takes its examples: positions `step * B ..` of an endless stream of
/// epochs, each a Philox-keyed shuffle of the data. Deterministic in (seed, step): nothing to save.
/// The current epoch's order is kept, and rebuilt only when the stream enters the next epoch.
pub struct Shuffle {
    seed: u64,
    n: usize,
    epoch: Option<u64>,
    order: Vec<usize>, // order: [n] the data index at each position of the epoch
}

impl Shuffle {
    pub fn new(seed: u64, n: usize) -> Self {
        Shuffle {
            seed,
            n,
            epoch: None,
            order: Vec::with_capacity(n),
        }
    }

    /// The data index at position `global` of the stream.
    pub fn index(&mut self, global: u64) -> usize {
        let (epoch, pos) = (global / self.n as u64, (global % self.n as u64) as usize);
        if self.epoch != Some(epoch) {
            let key = philox::key_of(self.seed);
            let mut keyed: Vec<(u32, usize)> = (0..self.n)
                .map(|i| (philox::philox4x32_10([i as u32, epoch as u32, 0, 3], key)[0], i))
                .collect();
            keyed.sort_unstable();
            self.order = keyed.into_iter().map(|(_, i)| i).collect();
            self.epoch = Some(epoch);
        }
        self.order[pos]
    }
}

/// Refuses an --out that holds another run unless --overwrite (which clears softcot's files there).
pub fn prepare_out(out: &Path, overwrite: bool, outputs: &[&str]) -> Result<()> {
    if out.join("run.json").exists() || !list_checkpoints(out).is_empty() {
        if !overwrite {
            return Err(Error::invalid(format!(
                "--out {}: holds another run (use --resume {} to continue it, or --overwrite)",
                out.display(),
                out.display()
            )));
        }
        for (_, ck) in list_checkpoints(out) {
            remove_dir_atomic(&ck)?;
        }
        for f in ["run.json", "metrics.jsonl", TB_DIR].iter().chain(outputs) {
            let p = out.join(f);
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("{}: cannot create: {e}", out.display())))
}

/// The flags (clap ids) that go with `--resume` in `train` and `sft`: the rest are the run's settings.
const RESUME_FLAGS: &[&str] = &["resume", "backend", "devices", "stop_after"];

/// A resumed run continues with the settings of its run.json: a flag of `A` given beside
/// `--resume` that would change them is refused by name, not silently ignored (`train --resume
/// DIR --steps 5` kept the run's own count).
pub fn refuse_settings_on_resume<A: clap::Args>(matches: &clap::ArgMatches, dir: &Path) -> Result<()> {
    let cmd = A::augment_args(clap::Command::new("resume"));
    let given = cmd.get_arguments().map(|a| a.get_id().as_str()).find(|id| {
        !RESUME_FLAGS.contains(id) && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    });
    match given {
        Some(id) => Err(Error::invalid(format!(
            "--{}: --resume continues {} with the settings of its run.json; only --backend, --devices and --stop-after go with it",
            id.replace('_', "-"),
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// The settings a run saved in `dir/run.json`, for `--resume dir` of `softcot cmd`.
pub fn saved_settings<T: serde::de::DeserializeOwned>(dir: &Path, cmd: &str) -> Result<T> {
    let path = dir.join("run.json");
    if !path.is_file() {
        return Err(Error::invalid(format!(
            "--resume {}: no run.json (not a softcot {cmd} run)",
            dir.display()
        )));
    }
    serde_json::from_value(read_json(&path)?).map_err(|e| Error::format(format!("{}: {e}", path.display())))
}

/// Writes a new run's settings to `out/run.json`, where `--resume` reads them back.
pub fn save_settings<T: serde::Serialize>(out: &Path, settings: &T) -> Result<()> {
    let v = serde_json::to_value(settings).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(
        &out.join("run.json"),
        serde_json::to_string_pretty(&v).unwrap_or_default().as_bytes(),
    )
}

/// Where a run starts: its model, optimizer, step and saved trainer state.
pub struct Start<B: Train> {
    pub md: ModelDir,
    pub model: Model<B>,
    pub opt: AdamW<B>,
    /// Optimizer steps already taken.
    pub step: u64,
    /// `trainer_state.json` of the checkpoint resumed (null for a new run).
    pub state: Value,
}

/// A resumed run starts from the newest complete checkpoint of `out` (its metrics truncated to
/// that step by the `root` rank, in case the run died after logging more), or over again from
/// `model` when it died before its first checkpoint; a new one from `model` with a fresh optimizer.
/// The `root` rank of a resumed run first clears what writes cut short by a kill left in `out`.
pub fn start<B: Train>(
    be: &B,
    out: &Path,
    resume: bool,
    root: bool,
    model: Option<&Path>,
    opt: AdamwConfig,
) -> Result<Start<B>> {
    if resume && root {
        clean_leftovers(out);
    }
    let newest = list_checkpoints(out).pop().filter(|_| resume);
    let Some((step, ck)) = newest else {
        let model = model.unwrap_or(Path::new(""));
        if resume && root {
            eprintln!(
                "resuming {}: no checkpoint yet, starting over from {}",
                out.display(),
                model.display()
            );
            truncate_metrics(&out.join("metrics.jsonl"), None)?;
        }
        let (md, model, opt) = load_fresh(be, model, opt)?;
        return Ok(Start {
            md,
            model,
            opt,
            step: 0,
            state: Value::Null,
        });
    };
    let (md, model, opt, state) = load_checkpoint(be, &ck, opt)?;
    if root {
        eprintln!("resuming {} from step {step}", out.display());
        truncate_metrics(&out.join("metrics.jsonl"), Some(step))?;
    }
    Ok(Start {
        md,
        model,
        opt,
        step,
        state,
    })
}

/// Drops metric lines of steps after `through` (logged by a run that died before its next
/// checkpoint; all of them for `None`), and a line cut short by a kill.
pub fn truncate_metrics(path: &Path, through: Option<u64>) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| through.is_some_and(|t| s <= t))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based) of `total`.
    pub fn lr(self, step: u64, warmup: u64, total: u64, lr: f64, min_lr: f64) -> f64 {
        match self {
            Schedule::Cosine => cosine_lr(step, warmup, total, lr, min_lr),
            Schedule::Constant => cosine_lr(step.min(warmup), warmup, warmup, lr, lr),
        }
    }
}

impl SaveDtype {
    pub fn resolve(self, source: DType) -> DType {
        match self {
            SaveDtype::Source => source,
            SaveDtype::Float32 => DType::F32,
            SaveDtype::Bfloat16 => DType::BF16,
            SaveDtype::Float16 => DType::F16,
        }
    }
}

/// Removes all but the newest `keep` checkpoints of `out` (each out of sight first, so that a kill
/// midway leaves no half-removed checkpoint that looks complete).
pub fn prune_checkpoints(out: &Path, keep: usize) {
    let all = list_checkpoints(out);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        let _ = remove_dir_atomic(old);
    }
}

/// `metrics.jsonl`, one JSON object per optimizer step (appended, so a resumed run continues it),
/// and the same scalars as TensorBoard events in `tb/` (a new event file per invocation).
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
    tb: EventWriter,
}

impl Metrics {
    /// Opens the log of a run whose next optimizer step is `next`.
    pub fn open(out: &Path, next: u64) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("{}: {e}", path.display())))?;
        let tb = EventWriter::create(&out.join(TB_DIR), next)?;
        Ok(Metrics { path, file, tb })
    }

    pub fn log(&mut self, line: &Value) -> Result<()> {
        writeln!(self.file, "{line}").map_err(|e| Error::io(format!("{}: {e}", self.path.display())))?;
        self.tb.log_line(line["step"].as_u64().unwrap_or(0), line)
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler once: the first Ctrl-C sets a flag the training loops poll between
/// steps (they save a checkpoint and stop); a second one ends the process at once.
pub fn catch_interrupt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit now)");
        });
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
