//! The settings of `softcot train`: one struct that is at once the command's flags and the TOML
//! config file's schema (layered by `crate::config_file`). Defaults are the paper's, or the
//! built-in task's when neither a model nor data is given. Unknown keys and impossible values are
//! refused with the key named.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};
use softcot_core::{Error, Result};

use crate::args::{check_noise, parse_noise_at, NoiseKind, Think, MAX_ROWS};
use crate::dataset::PAPER_TEMPLATE;
use crate::training_settings;

training_settings! {
lr = 5e-6;
/// Every setting of a run; written to OUT/run.json and read back by `--resume`.
#[derive(Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// HF model folder to train (with --data; without both, the built-in task runs).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training problems, JSONL: GSM8K, MATH, OlympiadBench or {"prompt", "answer"}.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation problems (default: the last --val-size problems of --data are held out).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Problems in the validation split.
    #[arg(long, default_value_t = 64)]
    pub val_size: usize,
    /// Validate (greedy, in the training mode) every this many steps, and keep the best model.
    #[arg(long, default_value_t = 50)]
    pub val_every: u64,
    /// Thinking mode of validation (greedy): hard by default, the deployment the paper recommends.
    #[arg(long, value_enum, default_value = "hard")]
    pub val_think: Think,
    /// Output folder.
    #[arg(long, default_value = "softcot-run")]
    pub out: PathBuf,
    /// Thinking mode of the rollouts.
    #[arg(long, value_enum, default_value = "soft")]
    pub think: Think,
    /// Optimizer steps.
    #[arg(long, default_value_t = 4000)]
    pub steps: u64,
    /// Prompts per optimizer step.
    #[arg(long, default_value_t = 2)]
    pub prompts_per_step: usize,
    /// Rollouts per prompt (G >= 2: RLOO compares each with the others).
    #[arg(long, default_value_t = 32)]
    pub samples_per_prompt: usize,
    /// Rollouts per forward/backward of the update (gradients accumulate); 0 = all at once.
    #[arg(long, default_value_t = 0)]
    pub micro_batch: usize,
    /// Rows per batched generation call; 0 = all rollouts of the step at once.
    #[arg(long, default_value_t = 0)]
    pub rollout_batch: usize,
    /// Thinking budget L (tokens).
    #[arg(long, default_value_t = 128)]
    pub think_tokens: usize,
    /// Answer budget (hard tokens after the prefill).
    #[arg(long, default_value_t = 32)]
    pub answer_tokens: usize,
    /// Thinking temperature (default: hard 1, soft 0.5, fuzzy 1e-4).
    #[arg(long)]
    pub tau: Option<f32>,
    /// Temperature of the sampled answer tokens.
    #[arg(long, default_value_t = 1.0)]
    pub answer_tau: f32,
    /// Noise scale gamma of soft/fuzzy thinking.
    #[arg(long, default_value_t = 0.33)]
    pub noise_gamma: f32,
    #[arg(long, value_enum, default_value = "rms")]
    pub noise_scale: NoiseKind,
    /// Where soft/fuzzy thinking draws its noise: input (the method: the fed embedding), hidden
    /// (the final-normed hidden state) or logits; each with its own scale and log-density
    /// (docs/TRAINING.md, "Noise placement"). Hard and greedy thinking draw no noise and ignore it.
    #[arg(long, default_value = "input")]
    pub noise_at: String,
    /// Reward of a correct boxed answer.
    #[arg(long, default_value_t = 100.0)]
    pub reward_correct: f64,
    /// Reward of a boxed answer that is wrong.
    #[arg(long, default_value_t = 10.0)]
    pub reward_boxed: f64,
    /// Reward when no boxed answer was given.
    #[arg(long, default_value_t = 0.0)]
    pub reward_none: f64,
    /// Prompt template; `{question}` is replaced by the problem (default: the paper's).
    #[arg(long, default_value = PAPER_TEMPLATE, hide_default_value = true)]
    pub template: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Write the rollouts of every this many steps to OUT/rollouts/ (0: never); see --replay.
    #[arg(long, default_value_t = 0)]
    pub save_rollouts: u64,
}
}

impl Default for TrainConfig {
    /// The flags' defaults: one source of truth for both layers.
    fn default() -> Self {
        crate::config_file::flag_defaults()
    }
}

impl TrainConfig {
    pub fn is_builtin(&self) -> bool {
        self.model.is_none() && self.data.is_none()
    }

    /// Refuses impossible values, naming the key (and its flag).
    pub fn validate(&self) -> Result<()> {
        if self.model.is_some() != self.data.is_some() {
            return bad(
                if self.model.is_none() { "model" } else { "data" },
                "is required with the other (without both, the built-in task runs)",
            );
        }
        self.validate_update()
    }

    /// The checks that matter to an update alone (`--replay` needs no data).
    pub fn validate_update(&self) -> Result<()> {
        if self.samples_per_prompt < 2 {
            return bad(
                "samples_per_prompt",
                "must be at least 2: RLOO compares each rollout with the others",
            );
        }
        let positive = [
            ("steps", self.steps),
            ("prompts_per_step", self.prompts_per_step as u64),
            ("think_tokens", self.think_tokens as u64),
            ("answer_tokens", self.answer_tokens as u64),
            ("val_every", self.val_every),
            ("save_every", self.save_every),
            ("keep", self.keep as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                return bad(key, "must be positive");
            }
        }
        if let Some(tau) = self.tau {
            if !(tau.is_finite() && tau > 0.0) {
                return bad("tau", "must be a positive number (sampling divides by it)");
            }
        }
        if !(self.answer_tau.is_finite() && self.answer_tau > 0.0) {
            return bad(
                "answer_tau",
                "must be a positive number (answers are sampled in training)",
            );
        }
        let continuous = self.think != Think::Hard;
        if !(self.noise_gamma.is_finite() && self.noise_gamma >= 0.0) || (continuous && self.noise_gamma == 0.0) {
            return bad(
                "noise_gamma",
                "must be positive for soft/fuzzy training: the noise is the exploration",
            );
        }
        let Ok(at) = parse_noise_at(&self.noise_at) else {
            return bad(
                "noise_at",
                &format!("must be input, hidden or logits, not `{}`", self.noise_at),
            );
        };
        check_noise(at, self.noise_scale)?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            return bad("min_lr", "must be in [0, lr]");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1", "and beta2 must be in [0, 1)");
        }
        let rewards = [self.reward_correct, self.reward_boxed, self.reward_none];
        if rewards.iter().any(|r| !r.is_finite()) {
            return bad("reward_correct", "and the other rewards must be finite numbers");
        }
        if !self.template.contains("{question}") {
            return bad("template", "must contain `{question}`");
        }
        let rollouts = self.prompts_per_step.checked_mul(self.samples_per_prompt);
        if rollouts.is_none_or(|n| n > MAX_ROWS) {
            return bad(
                "prompts_per_step",
                &format!("x samples_per_prompt (--samples-per-prompt) exceeds {MAX_ROWS} rollouts a step"),
            );
        }
        if self.micro_batch > self.prompts_per_step * self.samples_per_prompt {
            return bad(
                "micro_batch",
                "cannot exceed the rollouts of a step (prompts_per_step x samples_per_prompt)",
            );
        }
        Ok(())
    }
}

fn bad(key: &str, why: &str) -> Result<()> {
    Err(Error::invalid(format!("`{key}` (--{}) {why}", key.replace('_', "-"))))
}

/// The settings of a run: `defaults(builtin)` under the config file under the flags that were
/// given on the command line (`matches` tells which were); see [`crate::config_file`].
pub fn resolve(
    flags: &TrainConfig,
    matches: &ArgMatches,
    file: Option<&Path>,
    defaults: impl Fn(bool) -> TrainConfig,
) -> Result<TrainConfig> {
    crate::config_file::resolve(flags, matches, file, |set| defaults(!set("model") && !set("data")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        c: TrainConfig,
    }

    fn resolve_args(args: &[&str], file: Option<&str>) -> Result<TrainConfig> {
        let m = Cmd::command().get_matches_from(std::iter::once("t").chain(args.iter().copied()));
        let flags = Cmd::from_arg_matches(&m).unwrap().c;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        resolve(&flags, &m, file.map(|_| path.as_path()), |builtin| {
            let mut d = TrainConfig::default();
            if builtin {
                d.steps = 7;
            }
            d
        })
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let c = resolve_args(&["--lr", "1e-4"], Some("lr = 3e-3\nsamples_per_prompt = 4\n")).unwrap();
        assert_eq!((c.lr, c.samples_per_prompt), (1e-4, 4));
        assert_eq!(c.steps, 7, "no model and no data: the built-in defaults");
        let c = resolve_args(&["--model", "m", "--data", "d"], None).unwrap();
        assert_eq!(c.steps, 4000, "a model and data: the paper's defaults");
        let c = resolve_args(&[], Some("think = \"fuzzy\"\nmodel = \"m\"\ndata = \"d\"\n")).unwrap();
        assert_eq!((c.think, c.steps), (Think::Fuzzy, 4000));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = resolve_args(&[], Some("lr = 1e-4\nsampels_per_prompt = 4\n")).unwrap_err();
        assert!(
            e.msg.contains(":2:1:") && e.msg.contains("sampels_per_prompt"),
            "{}",
            e.msg
        );
        let e = resolve_args(&[], Some("lr = \"fast\"\n")).unwrap_err();
        assert!(e.msg.contains(":1:") && e.msg.contains("invalid type"), "{}", e.msg);
        let check = |args: &[&str], key: &str| {
            let e = resolve_args(args, None).unwrap().validate().unwrap_err();
            assert!(e.msg.contains(key), "{key}: {}", e.msg);
        };
        check(&["--samples-per-prompt", "1"], "samples_per_prompt");
        check(&["--tau", "0"], "tau");
        // Non-finite numbers do not pass through the settings' JSON as "unset" (--tau nan ran
        // the default temperature) nor as a type error.
        for (flag, key) in [
            ("--tau", "`tau` (--tau) must be a finite number"),
            ("--lr", "`lr` (--lr)"),
        ] {
            let e = resolve_args(&[flag, "nan"], None).unwrap_err();
            assert!(e.msg.contains(key), "{flag}: {}", e.msg);
        }
        let e = resolve_args(&[], Some("lr = 1e-4\ntau = inf\n")).unwrap_err();
        assert!(
            e.msg.contains("run.toml: `tau`") && e.msg.contains("finite"),
            "{}",
            e.msg
        );
        // Sizes derived from the rollouts must not overflow (nor abort on allocation).
        check(&["--samples-per-prompt", "100000000000"], "samples-per-prompt");
        check(
            &["--prompts-per-step", "4294967296", "--samples-per-prompt", "4294967296"],
            "prompts_per_step",
        );
        check(&["--noise-gamma", "0"], "noise_gamma");
        check(&["--template", "no placeholder"], "template");
        check(&["--model", "m"], "data");
        assert!(resolve_args(&["--think", "hard", "--noise-gamma", "0"], None)
            .unwrap()
            .validate()
            .is_ok());
    }
}
