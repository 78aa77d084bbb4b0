//! `softcot score`: for each JSONL line (`{"ids": [..]}` or `{"text": ".."}`), the log-probability of
//! every token given the ones before it.

use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};
use softcot_core::eval::loglik::{LogLik, Scored};
use softcot_core::io::ModelDir;
use softcot_core::{Backend, Error, Result};

use crate::args::{BackendKind, ComputeDtype, Format};
use crate::jsonl::for_each_object;
use crate::with_backend;

/// Tokens per forward call: long texts are scored in chunks through the KV cache
/// ([`LogLik`]), so the logits buffer stays [CHUNK, V] whatever the length.
const CHUNK: usize = 256;

#[derive(Args)]
pub struct ScoreArgs {
    /// HF model folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// JSONL file: one `{"ids": [..]}` or `{"text": ".."}` object per line.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// The GPU to run on with --backend cuda, as `softcot devices` numbers them.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Compute precision: bf16 (--backend cuda's default: bf16 weights and matmul operands, f32
    /// accumulation) or f32 (the only one of cpu and wgpu).
    #[arg(long, value_enum)]
    dtype: Option<ComputeDtype>,
    /// json: one object per line with ids, logprobs, nll, n_tokens; text: a summary per line.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let md = ModelDir::open(&a.model)?;
    with_backend!(a.backend, a.device, a.dtype, |be| score_all(&be, &md, &a))
}

fn score_all<B: Backend>(be: &B, md: &ModelDir, a: &ScoreArgs) -> Result<()> {
    let model = md.load(be)?;
    let ctx = model.cfg.max_position_embeddings;
    let mut scorer = LogLik::new(be, &model, CHUNK, 1, CHUNK)?;
    let mut longest = CHUNK;
    let (mut total_nll, mut total_tok) = (0f64, 0usize);
    for_each_object(&a.input, false, |_, obj| {
        let ids = match (obj.get("ids"), obj.get("text")) {
            (Some(Value::Array(v)), _) => v
                .iter()
                .map(|x| x.as_u64().filter(|&i| i <= u32::MAX as u64).map(|i| i as u32))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| Error::invalid("`ids` must be a list of non-negative integers"))?,
            (_, Some(Value::String(t))) => md.tokenizer.encode_with_specials(t)?,
            _ => {
                return Err(Error::invalid(
                    "expected `ids` (a list of integers) or `text` (a string)",
                ))
            }
        };
        if ids.is_empty() {
            return Err(Error::invalid("no tokens to score"));
        }
        if ids.len() > ctx {
            return Err(Error::invalid(format!(
                "{} tokens exceed the model's context of {ctx} positions",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= model.cfg.vocab_size) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                model.cfg.vocab_size
            )));
        }
        if longest < ids.len() {
            longest = ids.len().next_power_of_two().min(ctx);
            scorer = LogLik::new(be, &model, CHUNK, 1, longest)?;
        }
        let seq = [Scored { ids: &ids, from: 1 }];
        let logprobs = scorer.logprobs(be, &model, &seq, &|_| ())?.remove(0);
        let nll = if logprobs.is_empty() {
            None
        } else {
            Some(-logprobs.iter().map(|&x| x as f64).sum::<f64>() / logprobs.len() as f64)
        };
        total_nll -= logprobs.iter().map(|&x| x as f64).sum::<f64>();
        total_tok += logprobs.len();
        match a.format {
            Format::Json => println!(
                "{}",
                json!({"ids": ids, "logprobs": logprobs, "nll": nll, "n_tokens": ids.len()})
            ),
            Format::Text => println!(
                "n_tokens {:>6}  nll {}",
                ids.len(),
                nll.map(|x| format!("{x:.6}")).unwrap_or_else(|| "-".into())
            ),
        }
        Ok(())
    })?;
    if a.format == Format::Text && total_tok > 0 {
        println!(
            "total: {total_tok} predicted tokens, mean nll {:.6}",
            total_nll / total_tok as f64
        );
    }
    Ok(())
}
