//! GGUF -> HF folder: config from the `{arch}.*` metadata, weights dequantized and renamed (Llama's
//! q/k rows put back in HF's order), tokenizer files from the `tokenizer.*` metadata.

use std::path::Path;

use super::names::{permute_rows, to_hf};
use super::reader::{GgufFile, Value};
use super::tokenizer::from_gguf;
use super::LLAMA3_KEYS;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::fsutil::write_dir_atomic;
use crate::io::safetensors::TensorSpec;
use crate::io::save::{save_json, save_model, ShardSize};
use crate::model::{Arch, ModelConfig, RopeScaling};

/// Converts the GGUF file `src` into an HF folder `dst` (replaced whole) with weights stored as
/// `dtype` in shards of at most `max` bytes, dequantized one tensor at a time.
pub fn gguf_to_hf(src: &Path, dst: &Path, dtype: DType, max: ShardSize) -> Result<ModelConfig> {
    let g = GgufFile::open(src)?;
    let tok = from_gguf(&g)?;
    let mut cfg = config_of(&g, &tok.tokenizer_json)?;
    cfg.dtype = dtype;
    cfg.bos_token_id = tok.bos;
    cfg.eos_token_ids = tok.eos.clone();
    let plan = tensor_plan(&g, &cfg)?;
    let specs: Vec<TensorSpec> = plan.iter().map(|(spec, _)| spec.clone()).collect();
    write_dir_atomic(dst, |tmp| {
        save_model(tmp, &cfg, None, &specs, max, |i| {
            tensor_bytes(&g, &cfg, &plan[i].0, plan[i].1)
        })?;
        save_json(&tmp.join("tokenizer.json"), &tok.tokenizer_json)?;
        save_json(&tmp.join("tokenizer_config.json"), &tok.tokenizer_config)
    })?;
    Ok(cfg)
}

/// The model config the metadata describes (dtype, BOS and EOS are the caller's).
fn config_of(g: &GgufFile, tokenizer_json: &serde_json::Value) -> Result<ModelConfig> {
    let arch_name = g.get_str("general.architecture")?;
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        other => {
            return Err(Error::unsupported(format!(
                "{}: `general.architecture` is `{other}` (supported: llama, qwen2)",
                g.origin
            )))
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let u = |k: &str| -> Result<usize> { g.get_u64(&key(k)).map(|v| v as usize) };
    let opt_u = |k: &str| -> Result<Option<usize>> {
        match g.meta.get(&key(k)) {
            None => Ok(None),
            Some(_) => u(k).map(Some),
        }
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::format(format!("{}: tensor `token_embd.weight` is missing", g.origin)))?;
    let vocab = embd.dims.get(1).copied().unwrap_or(0);
    let has = |n: &str| g.tensor(n).is_some();
    let cfg = ModelConfig {
        arch,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: opt_u("attention.head_count_kv")?.unwrap_or(heads),
        head_dim: opt_u("attention.key_length")?.unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: match g.meta.get(&key("rope.freq_base")) {
            None => 10000.0,
            Some(_) => g.get_f64(&key("rope.freq_base"))?,
        },
        rope_scaling: rope_scaling(g, arch_name)?,
        max_position_embeddings: u("context_length")?,
        tie_word_embeddings: !has("output.weight"),
        qkv_bias: has("blk.0.attn_q.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        dtype: DType::F32,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    };
    if arch == Arch::Qwen2 && !cfg.qkv_bias {
        return Err(Error::format(format!(
            "{}: a qwen2 model needs `blk.0.attn_q.bias`",
            g.origin
        )));
    }
    if (arch == Arch::Qwen2 && cfg.o_bias) || (arch == Arch::Llama && cfg.qkv_bias != cfg.o_bias) {
        return Err(Error::unsupported(format!(
            "{}: `blk.0.attn_output.bias` must be present exactly when llama has q/k/v biases, and never in qwen2",
            g.origin
        )));
    }
    let n_tok = tokenizer_json["model"]["vocab"].as_object().map_or(0, |v| v.len());
    if n_tok > vocab {
        return Err(Error::format(format!(
            "{}: `tokenizer.ggml.tokens` has {n_tok} tokens but `token_embd.weight` only {vocab} rows",
            g.origin
        )));
    }
    cfg.validate(&g.origin)?;
    Ok(cfg)
}

/// Linear scaling from `{arch}.rope.scaling.*`; llama3 scaling from the keys softcot writes beside
/// `rope_freqs.weight` (llama.cpp's own converter stores only the tensor, whose parameters are not
/// recoverable from it, so such a file is refused).
fn rope_scaling(g: &GgufFile, arch: &str) -> Result<RopeScaling> {
    if g.tensor("rope_freqs.weight").is_some() {
        let v = LLAMA3_KEYS.map(|k| g.get_f64(k));
        let missing = LLAMA3_KEYS.iter().zip(&v).find(|(_, r)| r.is_err());
        if let Some((k, _)) = missing {
            return Err(Error::unsupported(format!(
                "{}: `rope_freqs.weight` without `{k}`: llama3 rope scaling cannot be recovered",
                g.origin
            )));
        }
        let [factor, low, high, orig] = v.map(|r| r.unwrap_or(0.0));
        return Ok(RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: orig,
        });
    }
    let ty = format!("{arch}.rope.scaling.type");
    match g.meta.get(&ty).and_then(Value::as_str) {
        None | Some("none") => Ok(RopeScaling::None),
        Some("linear") => Ok(RopeScaling::Linear {
            factor: g.get_f64(&format!("{arch}.rope.scaling.factor"))?,
        }),
        Some(other) => Err(Error::unsupported(format!(
            "{}: `{ty}` is `{other}` (supported: none, linear)",
            g.origin
        ))),
    }
}

/// Every tensor under its HF name as stored (`cfg.dtype`), with its index among the GGUF file's
/// tensors; shapes checked against the config so a file whose tensors disagree with its metadata
/// is refused by name, before anything is written.
fn tensor_plan(g: &GgufFile, cfg: &ModelConfig) -> Result<Vec<(TensorSpec, usize)>> {
    let (specs, _) = crate::model::params::param_specs(cfg);
    let mut out = Vec::with_capacity(specs.len());
    for (k, t) in g.tensors.iter().enumerate() {
        if t.name == "rope_freqs.weight" {
            continue;
        }
        let hf = to_hf(&t.name)
            .ok_or_else(|| Error::unsupported(format!("{}: tensor `{}` has no HF counterpart", g.origin, t.name)))?;
        let shape = t.hf_shape();
        let want = specs.iter().find(|(n, _)| *n == hf).map(|(_, s)| s);
        if want != Some(&shape) {
            return Err(Error::format(format!(
                "{}: tensor `{}` has shape {shape:?}, the metadata implies {}",
                g.origin,
                t.name,
                want.map_or("no such tensor".to_string(), |s| format!("{s:?}"))
            )));
        }
        let spec = TensorSpec {
            name: hf,
            shape,
            dtype: cfg.dtype,
        };
        out.push((spec, k));
    }
    if let Some((missing, _)) = specs.iter().find(|(n, _)| !out.iter().any(|(t, _)| &t.name == n)) {
        let gg = super::names::to_gguf(missing).unwrap_or_default();
        return Err(Error::format(format!("{}: tensor `{gg}` is missing", g.origin)));
    }
    Ok(out)
}

/// The stored bytes of GGUF tensor `k` (HF's `spec`): dequantized to f32, Llama's q/k rows put
/// back in HF's order, encoded as `spec.dtype`.
fn tensor_bytes(g: &GgufFile, cfg: &ModelConfig, spec: &TensorSpec, k: usize) -> Result<Vec<u8>> {
    let mut values = g.dequantize(&g.tensors[k])?;
    if cfg.arch == Arch::Llama {
        let cols = if spec.shape.len() == 2 { spec.shape[1] } else { 1 };
        if spec.name.contains("q_proj") {
            values = permute_rows(&values, cfg.num_attention_heads, cols, false);
        } else if spec.name.contains("k_proj") {
            values = permute_rows(&values, cfg.num_key_value_heads, cols, false);
        }
    }
    Ok(crate::dtype::encode(spec.dtype, &values))
}
