//! `softcot plan`: the memory per device of a training run with `softcot train`'s settings (the
//! same flags and `--config` file), from the core's accounting (`softcot_core::plan`): each part,
//! the peak, whether it fits a GPU, and the largest rollout batch and micro-batch that fit.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, ValueEnum};
use serde_json::json;
use softcot_core::backend::Moments;
use softcot_core::io::ModelDir;
use softcot_core::model::init::{preset, PRESETS};
use softcot_core::model::ModelConfig;
use softcot_core::plan::{self, Memory, RunShape};
use softcot_core::think::{after_prompt, PREFILL_AFTER_STOP, PREFILL_AT_BUDGET};
use softcot_core::{Error, Result};

use crate::args::{Format, Think, MAX_ROWS};
use crate::train::{config, longest_prompt, TrainConfig};

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cfg: TrainConfig,
    /// TOML file of `softcot train` settings (flags given on the command line override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A named architecture instead of --model (see init-model's presets).
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// Data-parallel ranks, one GPU each.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// 1: the optimizer state sharded over the ranks (ZeRO-1); 0: every rank holds all of it
    /// (default: 1 with several devices).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub zero: Option<u8>,
    /// The GPU whose memory the plan must fit.
    #[arg(long, value_enum)]
    pub gpu: Option<Gpu>,
    /// The memory the plan must fit, e.g. 80GB or 79.6GiB (instead of --gpu).
    #[arg(long, conflicts_with = "gpu")]
    pub gpu_memory: Option<String>,
    /// Compute precision of the CUDA backend (`train --dtype`): f32 stores every buffer in
    /// float32; bf16 weights as bf16 with f32 masters, plus the GEMM scratch.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: PlanDtype,
    /// Tokens of the longest prompt (default: the longest of --data with --model, else 256).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Gpu {
    /// H100 SXM 80 GB (81559 MiB).
    H100,
    /// H200 141 GB (143771 MiB).
    H200,
}

impl Gpu {
    /// Total memory as the driver reports it (nvidia-smi's MiB).
    fn bytes(self) -> u64 {
        match self {
            Gpu::H100 => 81559 << 20,
            Gpu::H200 => 143771 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanDtype {
    /// float32 throughout (cpu, wgpu, and cuda's --dtype f32).
    F32,
    /// the CUDA backend's bf16 mode (its default): bf16 weights with f32 masters, f32 gradients
    /// and moments, and a GEMM scratch.
    Bf16,
}

/// Prompt length assumed when neither --prompt-tokens nor --model with --data says it.
const DEFAULT_PROMPT_TOKENS: usize = 256;

pub fn run(a: PlanArgs, matches: &ArgMatches) -> Result<()> {
    if a.devices == 0 || a.devices > MAX_ROWS {
        return Err(Error::invalid(format!("--devices must be between 1 and {MAX_ROWS}")));
    }
    let c = config::resolve(&a.cfg, matches, a.config.as_deref(), |_| TrainConfig::default())?;
    c.validate_update()?;
    let gpu = gpu_bytes(&a)?;
    let (name, model, md) = model_of(&a, &c)?;
    let prompt = match (a.prompt_tokens, &md) {
        (Some(p), _) => p,
        (None, Some(md)) if c.data.is_some() => longest_prompt(&c, md)?,
        (None, _) => DEFAULT_PROMPT_TOKENS,
    };
    let prefix = prefix_tokens(&c, md.as_ref())?;
    let zero = a.zero.map_or(a.devices > 1, |z| z == 1);
    let s = run_shape(&c, prompt, prefix, a.devices, zero, a.dtype == PlanDtype::Bf16);
    check_sizes(&s, &model)?;
    let m = plan::plan(&model, &s);
    let report = Report {
        name,
        cfg: &model,
        s,
        m,
        gpu,
    };
    match a.format {
        Format::Json => println!("{}", report.json()),
        Format::Text => print!("{}", report.text()),
    }
    Ok(())
}

/// The plan's view of a run with settings `c`: `prompt` tokens of the longest prompt, a forced
/// answer prefix of `prefix` tokens, on `devices` ranks.
pub fn run_shape(c: &TrainConfig, prompt: usize, prefix: usize, devices: usize, zero: bool, bf16: bool) -> RunShape {
    RunShape {
        prompts: c.prompts_per_step,
        samples: c.samples_per_prompt,
        micro_batch: c.micro_batch,
        rollout_batch: c.rollout_batch,
        val_size: c.val_size,
        prompt_tokens: prompt,
        think_tokens: c.think_tokens,
        prefix_tokens: prefix,
        answer_tokens: c.answer_tokens,
        continuous: c.think != Think::Hard,
        recompute: c.recompute,
        devices,
        zero,
        moments: c.adam_moments.moments(),
        bf16,
    }
}

/// Refuses what `softcot train` would refuse before sizing a buffer: a rollout longer than the
/// model's context, a rollout batch past [`MAX_ROWS`] (which also keeps every product of the
/// plan within 64 bits).
fn check_sizes(s: &RunShape, cfg: &ModelConfig) -> Result<()> {
    if s.max_t() > cfg.max_position_embeddings {
        return Err(Error::invalid(format!(
            "--prompt-tokens {} + --think-tokens {} + the {}-token answer prefix + --answer-tokens {} exceed the model's context of {} positions",
            s.prompt_tokens, s.think_tokens, s.prefix_tokens, s.answer_tokens, cfg.max_position_embeddings
        )));
    }
    if s.rollout_batch > MAX_ROWS {
        return Err(Error::invalid(format!("--rollout-batch exceeds {MAX_ROWS} rows")));
    }
    Ok(())
}

/// The forced answer prefix's tokens: through the model's tokenizer, or without one its length in
/// bytes (no byte-level tokenizer makes more tokens than bytes).
pub fn prefix_tokens(c: &TrainConfig, md: Option<&ModelDir>) -> Result<usize> {
    if let Some(md) = md {
        return Ok(after_prompt(&md.tokenizer, c.think_tokens, c.answer_tokens)?.1);
    }
    Ok(if c.answer_tokens > 0 {
        PREFILL_AT_BUDGET.len().max(PREFILL_AFTER_STOP.len())
    } else {
        0
    })
}

fn model_of(a: &PlanArgs, c: &TrainConfig) -> Result<(String, ModelConfig, Option<ModelDir>)> {
    match (&a.preset, &c.model) {
        (Some(p), _) => {
            let cfg = preset(p)
                .ok_or_else(|| Error::invalid(format!("--preset `{p}`: unknown (one of {})", PRESETS.join(", "))))?;
            Ok((p.clone(), cfg, None))
        }
        (None, Some(dir)) => {
            let md = ModelDir::open(dir)?;
            Ok((dir.display().to_string(), md.config.clone(), Some(md)))
        }
        (None, None) => Err(Error::invalid("plan: give --model DIR or --preset NAME")),
    }
}

/// `--gpu` or `--gpu-memory`, in bytes.
fn gpu_bytes(a: &PlanArgs) -> Result<Option<u64>> {
    match (a.gpu, &a.gpu_memory) {
        (Some(g), _) => Ok(Some(g.bytes())),
        (None, Some(s)) => parse_size(s).map(Some),
        (None, None) => Ok(None),
    }
}

/// `80GB`, `79.6GiB`, `512MiB`, `1e9` (bytes): decimal (KB, MB, GB, TB) and binary (KiB, MiB, GiB,
/// TiB) units.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|ch: char| ch.is_ascii_alphabetic() && ch != 'e')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => (1u64 << 20) as f64,
        "gib" => (1u64 << 30) as f64,
        "tib" => (1u64 << 40) as f64,
        _ => f64::NAN,
    };
    match num.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && scale.is_finite() => Ok((x * scale) as u64),
        _ => Err(Error::invalid(format!(
            "--gpu-memory `{s}`: expected a size such as 80GB or 79.6GiB"
        ))),
    }
}

struct Report<'a> {
    name: String,
    cfg: &'a ModelConfig,
    s: RunShape,
    m: Memory,
    gpu: Option<u64>,
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl Report<'_> {
    fn params(&self) -> u64 {
        plan::param_numels(self.cfg).iter().sum()
    }

    /// The activations the other way (cached if the run recomputes, recomputed if not).
    fn activations(&self, recompute: bool) -> u64 {
        plan::activations_bytes(self.cfg, self.s.micro_rows(), self.s.max_t(), recompute)
    }

    fn fits(&self) -> Option<bool> {
        self.gpu.map(|g| self.m.total() <= g)
    }

    fn largest(&self) -> Option<(Option<usize>, Option<usize>)> {
        let g = self.gpu?;
        Some((
            plan::max_rollout_batch(self.cfg, &self.s, g),
            plan::max_micro_batch(self.cfg, &self.s, g),
        ))
    }

    /// The largest micro-batch that fits with recomputation (when the run does not recompute).
    fn largest_recomputed(&self) -> Option<usize> {
        let s = RunShape {
            recompute: true,
            ..self.s
        };
        plan::max_micro_batch(self.cfg, &s, self.gpu?)
    }

    fn json(&self) -> serde_json::Value {
        let (s, m) = (&self.s, &self.m);
        let (rollout, micro) = self.largest().unzip();
        json!({
            "model": self.name,
            "params": self.params(),
            "dtype": if s.bf16 { "bf16" } else { "f32" },
            "devices": s.devices,
            "zero": u8::from(s.zero),
            "settings": {
                "prompts": s.prompts,
                "samples": s.samples,
                "rollouts_per_device": s.rollouts_per_device(),
                "micro_batch": s.micro_rows(),
                "rollout_batch": s.rollout_rows(),
                "val_rows": s.val_rows(),
                "prompt_tokens": s.prompt_tokens,
                "think_tokens": s.think_tokens,
                "prefix_tokens": s.prefix_tokens,
                "answer_tokens": s.answer_tokens,
                "max_t": s.max_t(),
                "continuous": s.continuous,
                "recompute": s.recompute,
            },
            "bytes": {
                "weights": m.weights,
                "gradients": m.gradients,
                "optimizer": m.optimizer,
                "activations": m.activations,
                "rl_terms": m.rl_terms,
                "kv_cache": m.kv_cache,
                "logits": m.logits,
                "workspace": m.workspace,
                "checkpoint": m.checkpoint,
                "gemm_scratch": m.scratch,
            },
            "activations_cached_bytes": self.activations(false),
            "activations_recompute_bytes": self.activations(true),
            "total_bytes": m.total(),
            "gpu_bytes": self.gpu,
            "fits": self.fits(),
            "max_rollout_batch": rollout.flatten(),
            "max_micro_batch": micro.flatten(),
            "max_micro_batch_recompute": self.largest_recomputed(),
        })
    }

    fn text(&self) -> String {
        let (s, m) = (&self.s, &self.m);
        let mut out = format!(
            "model: {} ({:.2}e9 parameters), {}, AdamW moments {}\n",
            self.name,
            self.params() as f64 / 1e9,
            if s.bf16 {
                "bf16 weights with f32 masters, float32 gradients"
            } else {
                "float32 weights and gradients"
            },
            match s.moments {
                Moments::F32 => "float32",
                Moments::Bf16 => "bfloat16 (--adam-moments bf16)",
            }
        );
        out += &format!(
            "devices: {}, ZeRO-1 {}; {} prompts x {} samples = {} rollouts a step, {} per device\n",
            s.devices,
            if s.zero { "on" } else { "off" },
            s.prompts,
            s.samples,
            s.prompts * s.samples,
            s.rollouts_per_device()
        );
        out += &format!(
            "rows: micro-batch {}, rollout batch {}, validation {}; positions {} = prompt {} + thinking {} + answer prefix {} + answer {}\n\n",
            s.micro_rows(),
            s.rollout_rows(),
            s.val_rows(),
            s.max_t(),
            s.prompt_tokens,
            s.think_tokens,
            s.prefix_tokens,
            s.answer_tokens
        );
        let acts = if s.recompute {
            "activations (recomputed)"
        } else {
            "activations (cached)"
        };
        let other = if s.recompute {
            "  cached instead"
        } else {
            "  with --recompute"
        };
        let rows: [(&str, u64); 12] = [
            ("weights", m.weights),
            ("gemm scratch (bf16)", m.scratch),
            ("gradients", m.gradients),
            (
                if s.zero {
                    "optimizer (ZeRO-1 shards)"
                } else {
                    "optimizer (AdamW m, v)"
                },
                m.optimizer,
            ),
            (acts, m.activations),
            (other, self.activations(!s.recompute)),
            ("update: rl terms", m.rl_terms),
            ("rollouts: kv cache", m.kv_cache),
            ("rollouts: logits", m.logits),
            ("rollouts: workspace", m.workspace),
            ("checkpoint: whole m, v", m.checkpoint),
            ("peak per device", m.total()),
        ];
        out += &format!("{:<28} {:>10} {:>16}\n", "part", "GiB", "bytes");
        for (name, b) in rows {
            out += &format!("{name:<28} {:>10.2} {b:>16}\n", gib(b));
        }
        out += "(peak = weights + gradients + optimizer + activations + gemm scratch + the largest of the update's rl terms, the rollouts and a checkpoint)\n";
        if let (Some(g), Some((rollout, micro))) = (self.gpu, self.largest()) {
            let verdict = if m.total() <= g {
                format!("fits: yes, {:.2} GiB to spare", gib(g - m.total()))
            } else {
                format!("fits: no, {:.2} GiB over", gib(m.total() - g))
            };
            out += &format!("\ngpu memory {:.2} GiB; {verdict}\n", gib(g));
            let say = |x: Option<usize>| x.map_or("none".to_string(), |r| r.to_string());
            out += &format!(
                "largest --rollout-batch that fits: {} (with --micro-batch {}); largest --micro-batch that fits: {} (with --rollout-batch {})\n",
                say(rollout),
                s.micro_batch,
                say(micro),
                s.rollout_batch
            );
            if !s.recompute {
                out += &format!(
                    "with --recompute, the largest --micro-batch that fits: {}\n",
                    say(self.largest_recomputed())
                );
            }
        }
        out
    }
}

/// The plan of `c` on a device with `free` bytes free: refused, with the plan's numbers, if it
/// does not fit (the CUDA training path's check before it allocates).
pub fn check_run(c: &TrainConfig, model: &Path, free: u64, device: &str, ranks: usize, bf16: bool) -> Result<()> {
    let md = ModelDir::open(model)?;
    let prompt = longest_prompt(c, &md)?;
    let s = run_shape(c, prompt, prefix_tokens(c, Some(&md))?, ranks, ranks > 1, bf16);
    plan::check_fits(&plan::plan(&md.config, &s), free, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check `train --backend cuda` makes, on a fixture model and a small data file: refused
    /// with the plan's numbers below the plan's total, accepted at it.
    #[test]
    fn a_run_is_refused_when_its_plan_exceeds_the_free_memory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d.jsonl");
        std::fs::write(&data, "{\"prompt\": \"What is 2 + 3?\", \"answer\": \"5\"}\n").unwrap();
        for model in softcot_tests::fixtures::discover() {
            let c = TrainConfig {
                model: Some(model.clone()),
                data: Some(data.clone()),
                val_size: 0,
                ..TrainConfig::default()
            };
            let md = ModelDir::open(&model).unwrap();
            let s = run_shape(
                &c,
                longest_prompt(&c, &md).unwrap(),
                prefix_tokens(&c, Some(&md)).unwrap(),
                1,
                false,
                false,
            );
            let total = plan::plan(&md.config, &s).total();
            assert!(check_run(&c, &model, total, "cuda 0", 1, false).is_ok());
            let e = check_run(&c, &model, total - 1, "cuda 0", 1, false).unwrap_err();
            assert!(
                e.msg.starts_with("cuda 0: the run needs") && e.msg.contains("weights"),
                "{}",
                e.msg
            );
            println!("{}: {}", model.display(), e.msg);
        }
    }
}
