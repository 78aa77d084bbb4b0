//! `softcot init-model`: a randomly initialised Llama or Qwen2 model in HF format.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use softcot_core::dtype::DType;
use softcot_core::io::byte_tokenizer;
use softcot_core::io::config::ids_of;
use softcot_core::io::fsutil::read_json;
use softcot_core::io::save::{write_random_model, ShardSize};
use softcot_core::io::tokenizer::Tokenizer;
use softcot_core::model::init::{preset, PRESETS};
use softcot_core::model::{Arch, ModelConfig, RopeScaling};
use softcot_core::{Error, Result};

use crate::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    Llama,
    Qwen2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    Float32,
    Bfloat16,
    Float16,
}

#[derive(Args)]
pub struct InitArgs {
    /// Architecture family (a preset fixes it).
    #[arg(long, value_enum, default_value = "llama")]
    arch: ArchArg,
    /// A named shape: tiny, bench-125m, llama-3.2-3b, llama-3.1-8b, qwen2.5-3b. Size flags override it.
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Per-head size (default hidden / heads).
    #[arg(long)]
    head_dim: Option<usize>,
    /// MLP width (default 8/3 x hidden, rounded up to a multiple of 64).
    #[arg(long)]
    intermediate: Option<usize>,
    /// Vocabulary size (default: the tokenizer's).
    #[arg(long)]
    vocab: Option<usize>,
    #[arg(long)]
    max_pos: Option<usize>,
    #[arg(long)]
    rope_theta: Option<f64>,
    /// Tie the lm_head to the input embedding.
    #[arg(long)]
    tie: bool,
    /// Take the tokenizer (and BOS/EOS ids) from this HF folder; without it softcot writes a
    /// byte-level tokenizer of its own.
    #[arg(long)]
    vocab_from: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Storage dtype (default: the preset's, else float32).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Largest weight file, as transformers' max_shard_size: 5GB, 500MB, 2GiB or bytes; larger
    /// models are sharded with an index.
    #[arg(long, default_value = "5GB")]
    max_shard_size: ShardSize,
    /// Replace the contents of a non-empty --out.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: InitArgs) -> Result<()> {
    if a.out.exists()
        && !a.overwrite
        && std::fs::read_dir(&a.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Error::invalid(format!(
            "--out {}: folder is not empty (use --overwrite)",
            a.out.display()
        )));
    }
    let (tok_vocab, bos, eos) = match &a.vocab_from {
        Some(dir) => tokenizer_ids(dir)?,
        None => (
            byte_tokenizer::VOCAB,
            Some(byte_tokenizer::BOS_ID),
            vec![byte_tokenizer::EOS_ID],
        ),
    };
    let mut cfg = base_config(&a, tok_vocab)?;
    if cfg.vocab_size < tok_vocab {
        return Err(Error::invalid(format!(
            "--vocab {}: smaller than the tokenizer's {tok_vocab} tokens",
            cfg.vocab_size
        )));
    }
    cfg.bos_token_id = bos;
    cfg.eos_token_ids = eos;
    cfg.validate("init-model")?;

    // One unit: the core draws and writes the tensors in one call (an 8B model takes minutes).
    let progress = Progress::new(1, "init-model", "model");
    progress.set_message(format!("{} into {}", cfg.name_hint(), a.out.display()));
    let n = write_random_model(&a.out, &cfg, a.seed, a.vocab_from.as_deref(), a.max_shard_size)?;
    progress.inc(1);
    progress.finish();
    println!(
        "wrote {} ({}; {:.1}M parameters, {})",
        a.out.display(),
        cfg.name_hint(),
        n as f64 / 1e6,
        cfg.dtype.hf_name()
    );
    Ok(())
}

/// The tokenizer's size and BOS/EOS ids of an HF folder.
fn tokenizer_ids(dir: &Path) -> Result<(usize, Option<u32>, Vec<u32>)> {
    let mut eos = Vec::new();
    let mut bos = None;
    for f in ["config.json", "generation_config.json"] {
        let p = dir.join(f);
        if p.exists() {
            let v = read_json(&p)?;
            bos = bos.or(ids_of(v.get("bos_token_id")).first().copied());
            eos.extend(ids_of(v.get("eos_token_id")));
        }
    }
    let tok = Tokenizer::load_dir(dir, &eos)?;
    Ok((tok.vocab_size(), bos, tok.eos_ids.iter().copied().collect()))
}

fn base_config(a: &InitArgs, tok_vocab: usize) -> Result<ModelConfig> {
    let mut cfg = match &a.preset {
        Some(name) => preset(name)
            .ok_or_else(|| Error::invalid(format!("--preset {name}: unknown (known: {})", PRESETS.join(", "))))?,
        None => {
            let hidden = a
                .hidden
                .ok_or_else(|| Error::invalid("give --preset or --hidden, --layers and --heads"))?;
            let heads = a
                .heads
                .ok_or_else(|| Error::invalid("--heads is required without --preset"))?;
            let layers = a
                .layers
                .ok_or_else(|| Error::invalid("--layers is required without --preset"))?;
            if heads == 0 || hidden % heads != 0 && a.head_dim.is_none() {
                return Err(Error::invalid(
                    "--hidden must be a multiple of --heads (or give --head-dim)",
                ));
            }
            let qwen = a.arch == ArchArg::Qwen2;
            ModelConfig {
                arch: if qwen { Arch::Qwen2 } else { Arch::Llama },
                vocab_size: tok_vocab,
                hidden_size: hidden,
                intermediate_size: (8 * hidden / 3).div_ceil(64) * 64,
                num_hidden_layers: layers,
                num_attention_heads: heads,
                num_key_value_heads: heads,
                head_dim: hidden / heads,
                rms_norm_eps: if qwen { 1e-6 } else { 1e-5 },
                rope_theta: if qwen { 1_000_000.0 } else { 500_000.0 },
                rope_scaling: RopeScaling::None,
                max_position_embeddings: 2048,
                tie_word_embeddings: false,
                qkv_bias: qwen,
                o_bias: false,
                dtype: DType::F32,
                bos_token_id: None,
                eos_token_ids: Vec::new(),
            }
        }
    };
    if let Some(h) = a.hidden {
        cfg.hidden_size = h;
    }
    if let Some(l) = a.layers {
        cfg.num_hidden_layers = l;
    }
    if let Some(h) = a.heads {
        cfg.num_attention_heads = h;
        cfg.num_key_value_heads = a.kv_heads.unwrap_or(h);
    }
    if let Some(k) = a.kv_heads {
        cfg.num_key_value_heads = k;
    }
    if let Some(d) = a.head_dim {
        cfg.head_dim = d;
    } else if a.preset.is_none() || a.hidden.is_some() || a.heads.is_some() {
        cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads.max(1);
    }
    if let Some(i) = a.intermediate {
        cfg.intermediate_size = i;
    }
    match a.vocab {
        Some(v) => cfg.vocab_size = v,
        // A preset's vocabulary grows to fit a larger tokenizer; without a preset it is the tokenizer's.
        None if a.preset.is_none() || cfg.vocab_size < tok_vocab => cfg.vocab_size = tok_vocab,
        None => {}
    }
    if let Some(m) = a.max_pos {
        cfg.max_position_embeddings = m;
    }
    if let Some(t) = a.rope_theta {
        cfg.rope_theta = t;
    }
    if a.tie {
        cfg.tie_word_embeddings = true;
    }
    if let Some(d) = a.dtype {
        cfg.dtype = match d {
            DTypeArg::Float32 => DType::F32,
            DTypeArg::Bfloat16 => DType::BF16,
            DTypeArg::Float16 => DType::F16,
        };
    }
    Ok(cfg)
}
