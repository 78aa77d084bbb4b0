//! `softcot generate`: thinking (hard, soft or fuzzy) then a hard answer, from one prompt.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use softcot_core::io::ModelDir;
use softcot_core::think::{generate, ThinkConfig, Tokens};
use softcot_core::{Backend, Error, Result};

use crate::args::{check_noise, parse_ids, parse_noise_at, BackendKind, ComputeDtype, Format, NoiseKind, Think};
use crate::with_backend;

#[derive(Args)]
pub struct GenerateArgs {
    /// HF model folder.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (tokenized with the model's tokenizer, special tokens as it adds them).
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Wrap the prompt in the model's chat template.
    #[arg(long, conflicts_with = "prompt_ids")]
    chat: bool,
    /// Thinking mode.
    #[arg(long, value_enum, default_value = "soft")]
    think: Think,
    /// Greedy decoding: argmax for hard tokens, no noise for soft/fuzzy, greedy answers.
    #[arg(long, conflicts_with = "seed")]
    greedy: bool,
    /// Seed of the Philox generator for sampling and noise.
    #[arg(long)]
    seed: Option<u64>,
    /// Thinking temperature (default: hard 1, soft 0.5, fuzzy 1e-4).
    #[arg(long)]
    tau: Option<f32>,
    /// Noise scale gamma of soft/fuzzy thinking.
    #[arg(long, default_value_t = 0.33)]
    noise_gamma: f32,
    /// How sigma is derived from gamma and the embedding matrix.
    #[arg(long, value_enum, default_value = "rms")]
    noise_scale: NoiseKind,
    /// Where soft/fuzzy thinking draws its noise: input (the method: the fed embedding), hidden
    /// (the final-normed hidden state) or logits; each with its own scale and log-density
    /// (docs/TRAINING.md, "Noise placement"). Hard and greedy thinking draw no noise and ignore it.
    #[arg(long, default_value = "input")]
    noise_at: String,
    /// Thinking budget (tokens).
    #[arg(long, default_value_t = 128)]
    think_tokens: usize,
    /// Answer budget (hard tokens after the prefill).
    #[arg(long, default_value_t = 32)]
    answer_tokens: usize,
    /// Think exactly --think-tokens steps, ignoring the stop phrase and EOS.
    #[arg(long)]
    no_stop: bool,
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

pub fn run(a: GenerateArgs) -> Result<()> {
    let md = ModelDir::open(&a.model)?;
    let prompt = match (&a.prompt, &a.prompt_ids) {
        (Some(t), _) if a.chat => md.tokenizer.encode_chat(t)?,
        (Some(t), _) => md.tokenizer.encode_with_specials(t)?,
        (None, Some(ids)) => parse_ids(ids, "--prompt-ids")?,
        (None, None) => return Err(Error::invalid("give --prompt or --prompt-ids")),
    };
    if prompt.is_empty() {
        return Err(Error::invalid("the prompt has no tokens"));
    }
    let mode = a.think.mode();
    let mut cfg = ThinkConfig::new(mode);
    cfg.greedy = a.greedy;
    cfg.answer_greedy = a.greedy;
    cfg.seed = a.seed.unwrap_or(0);
    cfg.tau = a.tau.unwrap_or(mode.default_tau());
    cfg.noise = a.noise_scale.with_gamma(a.noise_gamma);
    cfg.noise_at = parse_noise_at(&a.noise_at)?;
    check_noise(cfg.noise_at, a.noise_scale)?;
    cfg.think_tokens = a.think_tokens;
    cfg.answer_tokens = a.answer_tokens;
    cfg.stop = !a.no_stop;
    with_backend!(a.backend, a.device, a.dtype, |be| run_on(
        &be, &md, &prompt, &cfg, a.format
    ))
}

fn run_on<B: Backend>(be: &B, md: &ModelDir, prompt: &[u32], cfg: &ThinkConfig, format: Format) -> Result<()> {
    let model = md.load(be)?;
    let g = generate(be, &model, &[prompt.to_vec()], &[0], cfg, &md.tokenizer)?.remove(0);
    let tok = &md.tokenizer;
    let think_text = tok.decode(&g.think_ids)?;
    let answer_text = tok.decode(&[g.prefill_ids.clone(), g.answer_ids.clone()].concat())?;
    let text = format!("{think_text}{answer_text}");
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "prompt_ids": prompt, "think": cfg.mode.name(),
                "think_ids": g.think_ids, "prefill_ids": g.prefill_ids, "answer_ids": g.answer_ids,
                "think_text": think_text, "answer_text": answer_text, "text": text,
                "stopped_by": g.stopped_by.as_str(), "think_tokens": g.think_ids.len(),
            })
        ),
        Format::Text => {
            println!("{text}");
            eprintln!(
                "[{} thinking tokens, stopped by {}, {} answer tokens]",
                g.think_ids.len(),
                g.stopped_by.as_str(),
                g.answer_ids.len()
            );
        }
    }
    Ok(())
}
