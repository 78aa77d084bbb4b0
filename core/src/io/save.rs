//! Writing HF model folders: `config.json` (hub layout, which both transformers 4 and 5 read),
//! `generation_config.json`, tokenizer files and `model.safetensors`, each written atomically.

use std::path::Path;

use serde_json::{json, Value};

use super::fsutil::write_atomic;
use super::safetensors::{write_safetensors, OutTensor};
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig, RopeScaling};

/// `config.json` of `cfg` in the hub's layout (top-level `rope_theta`, `rope_scaling`, `torch_dtype`).
pub fn config_json(cfg: &ModelConfig) -> Value {
    let rope_scaling = match cfg.rope_scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings as u64,
        }),
    };
    let eos: Value = match cfg.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut v = json!({
        "architectures": [cfg.arch.hf_class()],
        "model_type": cfg.arch.model_type(),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": cfg.dtype.hf_name(),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": eos,
        "use_cache": true,
    });
    if cfg.arch == Arch::Llama {
        v["attention_bias"] = json!(cfg.qkv_bias);
        v["mlp_bias"] = json!(false);
    } else {
        v["use_sliding_window"] = json!(false);
    }
    v
}

/// Writes `v` as pretty JSON atomically.
pub fn save_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Writes config, generation config and weights into `dir` (created if needed). Tokenizer files are
/// the caller's (see [`copy_tokenizer`] and `byte_tokenizer`).
pub fn save_model(dir: &Path, cfg: &ModelConfig, tensors: &[OutTensor]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("{}: cannot create: {e}", dir.display())))?;
    save_json(&dir.join("config.json"), &config_json(cfg))?;
    let eos: Value = match cfg.eos_token_ids.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    save_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": eos}),
    )?;
    write_safetensors(&dir.join("model.safetensors"), tensors, None)
}

/// Copies the tokenizer files of `src` that exist into `dst`.
pub fn copy_tokenizer(src: &Path, dst: &Path) -> Result<()> {
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        let p = src.join(f);
        if p.exists() {
            let bytes = std::fs::read(&p).map_err(|e| Error::io(format!("{}: cannot read: {e}", p.display())))?;
            write_atomic(&dst.join(f), &bytes)?;
        }
    }
    Ok(())
}

/// Writes a randomly initialised model of `cfg` (deterministic in `seed`) as an HF folder, with the
/// tokenizer files of `vocab_from`, or softcot's byte-level tokenizer. Returns the parameter count.
pub fn write_random_model(dir: &Path, cfg: &ModelConfig, seed: u64, vocab_from: Option<&Path>) -> Result<usize> {
    let params = crate::model::init::random_params(cfg, seed)?;
    let n = params.iter().map(|(_, _, v)| v.len()).sum();
    let tensors: Vec<OutTensor> = params
        .into_iter()
        .map(|(name, shape, values)| OutTensor::new(name, shape, cfg.dtype, &values))
        .collect();
    save_model(dir, cfg, &tensors)?;
    match vocab_from {
        Some(src) => copy_tokenizer(src, dir)?,
        None => {
            save_json(&dir.join("tokenizer.json"), &super::byte_tokenizer::tokenizer_json())?;
            save_json(
                &dir.join("tokenizer_config.json"),
                &super::byte_tokenizer::tokenizer_config_json(),
            )?;
        }
    }
    Ok(n)
}
